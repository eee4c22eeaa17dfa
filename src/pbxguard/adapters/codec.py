"""Facts as JSON: one exact encoding of every record, read from its dataclass definition.

The journal, the MQTT payloads and the set-aside files all carry domain records (decisions,
offences, calls …) as JSON. Rather than a hand-written field list per record and per place,
`to_data` and `from_data` walk the dataclass's own fields and type hints, so a new field is one
edit to the record (plus a migration for its column), and the encodings cannot drift apart.

Values are exact: ``Decimal`` as its string, datetimes in ISO 8601 with their offset (naive
ones are refused), durations in whole microseconds, enums by value, timezones by IANA key.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any, TypeVar, get_args, get_origin
from zoneinfo import ZoneInfo

T = TypeVar("T")


def to_data(value: Any) -> Any:
    """Return ``value`` (a record, or any value inside one) as JSON-ready data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"refusing to encode a naive datetime {value.isoformat()}")
        return value.isoformat()
    if isinstance(value, timedelta):
        return value // timedelta(microseconds=1)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, ZoneInfo):
        return value.key
    if isinstance(value, tuple | list | frozenset | set):
        return [to_data(item) for item in value]
    if isinstance(value, Mapping):
        return {str(k): to_data(v) for k, v in value.items()}
    return value


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_data(cls: type[T], data: Any) -> T:
    """Rebuild a value of type ``cls`` from `to_data` output.

    Raises:
        ValueError: the data does not fit the type (a missing field, a wrong value).
    """
    try:
        return typing.cast("T", _decode(cls, data))
    except (KeyError, TypeError, ArithmeticError) as error:
        raise ValueError(f"cannot read a {getattr(cls, '__name__', cls)}: {error}") from error


def _decode(hint: Any, data: Any) -> Any:
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = get_args(hint)
        if data is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            return _decode(option, data)
    if origin in (tuple, list, frozenset, set):
        args = get_args(hint)
        item = args[0] if args else Any
        values = [_decode(item, v) for v in data]
        return origin(values)
    if origin in (Mapping, dict) or hint is dict:
        args = get_args(hint)
        value_hint = args[1] if len(args) == 2 else Any
        return {k: _decode(value_hint, v) for k, v in data.items()}
    if hint is Any or hint is object:
        return data
    if isinstance(hint, type):
        if dataclasses.is_dataclass(hint):
            hints = _hints(hint)
            fields: dict[str, Any] = {}
            for f in dataclasses.fields(hint):
                required = f.default is dataclasses.MISSING and (
                    f.default_factory is dataclasses.MISSING
                )
                if f.name in data or required:
                    fields[f.name] = _decode(hints[f.name], data[f.name])
            return hint(**fields)
        if issubclass(hint, enum.Enum):
            return hint(data)
        if hint is datetime:
            parsed = datetime.fromisoformat(data)
            if parsed.tzinfo is None:
                raise ValueError(f"datetime {data!r} has no offset")
            return parsed
        if hint is timedelta:
            return timedelta(microseconds=int(data))
        if hint is Decimal:
            return Decimal(str(data))
        if hint is ZoneInfo:
            return ZoneInfo(str(data))
        if hint in (str, int, bool, float):
            if not isinstance(data, hint):
                raise TypeError(f"expected {hint.__name__}, got {type(data).__name__}")
            return data
    raise TypeError(f"cannot decode {hint!r}")
