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
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any, TypeVar, get_args, get_origin
from zoneinfo import ZoneInfo

T = TypeVar("T")


def to_data(value: Any) -> Any:
    """Return ``value`` (a record, or any value inside one) as JSON-ready data."""
    encode = _ENCODERS.get(type(value))
    if encode is None:
        encode = _ENCODERS[type(value)] = _encoder(type(value))
    return encode(value)


# How to encode a value, by its exact type: worked out once per type from the dataclass's
# fields, not again for every value (the guard encodes every fact on the event loop).
_ENCODERS: dict[type, Callable[[Any], Any]] = {}


def _identity(value: Any) -> Any:
    return value


def _encode_datetime(value: datetime) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"refusing to encode a naive datetime {value.isoformat()}")
    return value.isoformat()


def _encode_sequence(value: Any) -> list[Any]:
    return [to_data(item) for item in value]


def _encode_mapping(value: Mapping[Any, Any]) -> dict[str, Any]:
    return {str(k): to_data(v) for k, v in value.items()}


def _encoder(cls: type) -> Callable[[Any], Any]:
    if dataclasses.is_dataclass(cls):
        names = tuple(f.name for f in dataclasses.fields(cls))
        return lambda value: {name: to_data(getattr(value, name)) for name in names}
    if issubclass(cls, enum.Enum):
        return lambda value: value.value
    if issubclass(cls, datetime):
        return _encode_datetime
    if issubclass(cls, timedelta):
        return lambda value: value // _MICROSECOND
    if issubclass(cls, Decimal):
        return str
    if issubclass(cls, ZoneInfo):
        return lambda value: value.key
    if issubclass(cls, tuple | list | frozenset | set):
        return _encode_sequence
    if issubclass(cls, Mapping):
        return _encode_mapping
    return _identity


_MICROSECOND = timedelta(microseconds=1)


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_data(cls: type[T], data: Any) -> T:
    """Rebuild a value of type ``cls`` from `to_data` output.

    Raises:
        ValueError: the data does not fit the type (a missing field, a wrong value).
    """
    hint: Any = cls
    try:
        return typing.cast("T", _decoder(hint)(data))
    except (KeyError, TypeError, ArithmeticError) as error:
        raise ValueError(f"cannot read a {getattr(cls, '__name__', cls)}: {error}") from error


Decoder = Callable[[Any], Any]


@cache
def _decoder(hint: Any) -> Decoder:
    """Return the function that decodes data of type ``hint`` (worked out once per type)."""
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _union_decoder(get_args(hint))
    if origin in (tuple, list, frozenset, set):
        args = get_args(hint)
        item = _decoder(args[0] if args else Any)
        return lambda data: origin(item(v) for v in data)
    if origin in (Mapping, dict) or hint is dict:
        args = get_args(hint)
        value = _decoder(args[1] if len(args) == 2 else Any)
        return lambda data: {k: value(v) for k, v in data.items()}
    if hint is Any or hint is object:
        return _identity
    if isinstance(hint, type):
        if dataclasses.is_dataclass(hint):
            return _dataclass_decoder(hint)
        if issubclass(hint, enum.Enum):
            return hint
        if hint is datetime:
            return _decode_datetime
        if hint is timedelta:
            return lambda data: timedelta(microseconds=int(data))
        if hint is Decimal:
            return lambda data: Decimal(str(data))
        if hint is ZoneInfo:
            return lambda data: ZoneInfo(str(data))
        if hint in (str, int, bool, float):
            return _primitive_decoder(hint)
    return _undecodable(hint)


def _union_decoder(options: tuple[Any, ...]) -> Decoder:
    optional = type(None) in options
    # As before: a value that is not None is read as the first type the union names.
    first = next((option for option in options if option is not type(None)), None)
    inner = _decoder(first) if first is not None else _undecodable(options)

    def decode(data: Any) -> Any:
        if data is None and optional:
            return None
        return inner(data)

    return decode


def _dataclass_decoder(cls: type) -> Decoder:
    plan: list[tuple[str, bool, Decoder]] | None = None

    def decode(data: Any) -> Any:
        nonlocal plan
        if plan is None:
            # Worked out on first use (a record may refer to its own type), and set whole, so
            # that a thread decoding meanwhile never sees half a plan.
            hints = _hints(cls)
            plan = [
                (
                    f.name,
                    f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
                    _decoder(hints[f.name]),
                )
                for f in dataclasses.fields(cls)
            ]
        fields = {
            name: decode_field(data[name])
            for name, required, decode_field in plan
            if required or name in data
        }
        return cls(**fields)

    return decode


def _decode_datetime(data: Any) -> datetime:
    parsed = datetime.fromisoformat(data)
    if parsed.tzinfo is None:
        raise ValueError(f"datetime {data!r} has no offset")
    return parsed


def _primitive_decoder(hint: type) -> Decoder:
    def decode(data: Any) -> Any:
        if not isinstance(data, hint):
            raise TypeError(f"expected {hint.__name__}, got {type(data).__name__}")
        return data

    return decode


def _undecodable(hint: Any) -> Decoder:
    def decode(_data: Any) -> Any:
        raise TypeError(f"cannot decode {hint!r}")

    return decode
