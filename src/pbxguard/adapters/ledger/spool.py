"""Keep the guard's ledger writes when the database is down or locked.

Theory of operation
-------------------
`SpoolingLedger` stands in front of a `FineLedger` for the three writes the guard makes on its
hot path. A write goes straight to the database while the spool is empty. When the database
reports itself unavailable, the write is appended to a JSON-lines spool file (flushed and
fsynced before the call returns) and the caller carries on. Once anything is spooled, later
writes join the end of the spool too, so the database receives them in the order they were
made.

`run()` drains the spool: it replays the oldest line, and only after the database accepted it
moves on; while the database is unavailable it retries with jittered exponential backoff. When
every line is replayed the file is truncated. Replaying is safe to repeat because every write is
idempotent (decision key, offence key, Linkedid + Uniqueid), so a crash half-way through a drain
only means some lines are replayed again on the next start, which finds the file and drains it.

A line the ledger refuses for a reason other than unavailability (it can never succeed) is moved
to ``<spool>.rejected`` with the error, and logged: nothing is ever dropped.

Values are serialised exactly: Decimal as its string, datetimes in ISO 8601 with their offset,
durations in microseconds, timezones by their IANA key.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import structlog

from pbxguard.adapters.ledger.entries import OffenceEntry
from pbxguard.adapters.ledger.store import FineLedger
from pbxguard.domain.penalties import CountWindow, PenaltySpec, RepeatOffender, Sanction, Step
from pbxguard.domain.policy import Rule
from pbxguard.domain.records import (
    CallRef,
    CallSummary,
    DecisionRecord,
    Layer,
    OffenceDraft,
    Outcome,
)
from pbxguard.errors import LedgerError, LedgerUnavailable

_log = structlog.get_logger(__name__)

SPOOL_VERSION = 1
_T = TypeVar("_T")

# -- exact JSON encoding of the spooled values ----------------------------------------------


def _dt(value: datetime) -> str:
    return value.isoformat()


def _parse_dt(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"spooled datetime {value!r} has no offset")
    return parsed


def _opt_dt(value: datetime | None) -> str | None:
    return None if value is None else _dt(value)


def _call(ref: CallRef) -> dict[str, str]:
    return {"linkedid": ref.linkedid, "uniqueid": ref.uniqueid, "channel": ref.channel}


def _parse_call(data: Mapping[str, str]) -> CallRef:
    return CallRef(data["linkedid"], data["uniqueid"], data["channel"])


def encode_decision(rec: DecisionRecord) -> dict[str, Any]:
    """Return ``rec`` as JSON-ready data."""
    return {
        "key": rec.key,
        "at": _dt(rec.at),
        "call": _call(rec.call),
        "layer": rec.layer.value,
        "extension": rec.extension,
        "person_id": rec.person_id,
        "dialled": rec.dialled,
        "number": rec.number,
        "number_class": rec.number_class,
        "verdict": rec.verdict,
        "rule_id": rec.rule_id,
        "reason_zh": rec.reason_zh,
        "reason_en": rec.reason_en,
        "approval_id": rec.approval_id,
        "policy_version": rec.policy_version,
    }


def decode_decision(data: Mapping[str, Any]) -> DecisionRecord:
    """Rebuild a `DecisionRecord` from `encode_decision` data."""
    fields = dict(data)
    fields["at"] = _parse_dt(data["at"])
    fields["call"] = _parse_call(data["call"])
    fields["layer"] = Layer(data["layer"])
    return DecisionRecord(**fields)


def encode_draft(draft: OffenceDraft) -> dict[str, Any]:
    """Return ``draft`` as JSON-ready data."""
    return {
        "key": draft.key,
        "rule_id": draft.rule_id,
        "at": _dt(draft.at),
        "call": None if draft.call is None else _call(draft.call),
        "extension": draft.extension,
        "person_id": draft.person_id,
        "person_name": draft.person_name,
        "department": draft.department,
        "number": draft.number,
        "number_class": draft.number_class,
        "charge": str(draft.charge),
        "talk_us": draft.talk_time // timedelta(microseconds=1),
        "outcome": draft.outcome.value,
        "detail_zh": draft.detail_zh,
        "detail_en": draft.detail_en,
        "policy_version": draft.policy_version,
    }


def decode_draft(data: Mapping[str, Any]) -> OffenceDraft:
    """Rebuild an `OffenceDraft` from `encode_draft` data."""
    fields = dict(data)
    fields["at"] = _parse_dt(data["at"])
    fields["call"] = None if data["call"] is None else _parse_call(data["call"])
    fields["charge"] = Decimal(data["charge"])
    fields["talk_time"] = timedelta(microseconds=fields.pop("talk_us"))
    fields["outcome"] = Outcome(data["outcome"])
    return OffenceDraft(**fields)


def _encode_step(step: Step) -> dict[str, Any]:
    return {
        "flat": str(step.flat),
        "charge_multiple": str(step.charge_multiple),
        "sanctions": [s.value for s in step.sanctions],
        "per_class": {k: str(v) for k, v in step.per_class.items()},
    }


def _decode_step(data: Mapping[str, Any]) -> Step:
    return Step(
        flat=Decimal(data["flat"]),
        charge_multiple=Decimal(data["charge_multiple"]),
        sanctions=tuple(Sanction(s) for s in data["sanctions"]),
        per_class={k: Decimal(v) for k, v in data["per_class"].items()},
    )


def encode_rule(rule: Rule) -> dict[str, Any]:
    """Return ``rule`` (with its penalty) as JSON-ready data."""
    penalty: dict[str, Any] | None = None
    if rule.penalty is not None:
        spec = rule.penalty
        repeat = spec.repeat_offender
        penalty = {
            "steps": [_encode_step(s) for s in spec.steps],
            "window": spec.window.value,
            "ladder": spec.ladder,
            "repeat_offender": None
            if repeat is None
            else {"threshold": repeat.threshold, "sanctions": [s.value for s in repeat.sanctions]},
            "department_head_share": str(spec.department_head_share),
        }
    return {
        "id": rule.id,
        "title_zh": rule.title_zh,
        "title_en": rule.title_en,
        "citation": rule.citation,
        "penalty": penalty,
    }


def decode_rule(data: Mapping[str, Any]) -> Rule:
    """Rebuild a `Rule` from `encode_rule` data."""
    spec: PenaltySpec | None = None
    penalty = data["penalty"]
    if penalty is not None:
        repeat = penalty["repeat_offender"]
        spec = PenaltySpec(
            steps=tuple(_decode_step(s) for s in penalty["steps"]),
            window=CountWindow(penalty["window"]),
            ladder=penalty["ladder"],
            repeat_offender=None
            if repeat is None
            else RepeatOffender(
                threshold=int(repeat["threshold"]),
                sanctions=tuple(Sanction(s) for s in repeat["sanctions"]),
            ),
            department_head_share=Decimal(penalty["department_head_share"]),
        )
    return Rule(
        id=data["id"],
        title_zh=data["title_zh"],
        title_en=data["title_en"],
        citation=data["citation"],
        penalty=spec,
    )


def encode_call(summary: CallSummary) -> dict[str, Any]:
    """Return ``summary`` as JSON-ready data."""
    return {
        "call": _call(summary.call),
        "extension": summary.extension,
        "person_id": summary.person_id,
        "person_name": summary.person_name,
        "department": summary.department,
        "caller_name": summary.caller_name,
        "dialled": summary.dialled,
        "number": summary.number,
        "number_class": summary.number_class,
        "direction": summary.direction,
        "started_at": _dt(summary.started_at),
        "answered_at": _opt_dt(summary.answered_at),
        "ended_at": _dt(summary.ended_at),
        "verdict": summary.verdict,
        "rule_id": summary.rule_id,
        "outcome": summary.outcome,
    }


def decode_call(data: Mapping[str, Any]) -> CallSummary:
    """Rebuild a `CallSummary` from `encode_call` data."""
    fields = dict(data)
    fields["call"] = _parse_call(data["call"])
    fields["started_at"] = _parse_dt(data["started_at"])
    answered = data["answered_at"]
    fields["answered_at"] = None if answered is None else _parse_dt(answered)
    fields["ended_at"] = _parse_dt(data["ended_at"])
    return CallSummary(**fields)


# -- the spool file -------------------------------------------------------------------------


def _append_line(path: Path, line: bytes) -> None:
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _scan(path: Path) -> int:
    """Count the spooled lines, ending a line torn by a crash so it is kept, not glued on."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    if data and not data.endswith(b"\n"):
        _append_line(path, b"\n")
        data += b"\n"
    return sum(1 for line in data.split(b"\n") if line.strip())


def _read_line(path: Path, offset: int) -> tuple[bytes, int] | None:
    """Return the line at ``offset`` and the offset after it, or None at the end."""
    try:
        with path.open("rb") as spool:
            spool.seek(offset)
            while True:
                line = spool.readline()
                if not line:
                    return None
                offset += len(line)
                if line.strip():
                    return line, offset
    except FileNotFoundError:
        return None


def _truncate(path: Path) -> None:
    try:
        with path.open("r+b") as spool:
            spool.truncate(0)
            spool.flush()
            os.fsync(spool.fileno())
    except FileNotFoundError:
        return


class SpoolingLedger:
    """The ledger's hot-path writes, kept in a spool file while the database is unavailable.

    Run `run()` as a task of the supervisor; it drains a spool left by a previous process too.
    """

    def __init__(
        self,
        ledger: FineLedger,
        spool_path: Path,
        *,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self._ledger = ledger
        self._path = spool_path
        self._rejected = spool_path.with_name(spool_path.name + ".rejected")
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not cryptography)
        self._lock = asyncio.Lock()
        self._loaded = False
        self._pending = 0
        self._offset = 0
        self._wake = asyncio.Event()
        self._empty = asyncio.Event()
        self._retrying = asyncio.Event()

    @property
    def ledger(self) -> FineLedger:
        """Return the ledger behind the spool (for reads)."""
        return self._ledger

    @property
    def pending(self) -> int:
        """Return how many writes wait in the spool."""
        return self._pending

    async def record_decision(self, rec: DecisionRecord) -> bool | None:
        """Store a verdict; return whether it was new, or None when it was spooled."""
        return await self._write(
            {"op": "decision", "decision": encode_decision(rec)},
            lambda: self._ledger.record_decision(rec),
        )

    async def record_offence(
        self, draft: OffenceDraft, rule: Rule, *, timezone: ZoneInfo
    ) -> OffenceEntry | None:
        """Price and store an offence; return the entry, or None when it was spooled."""
        return await self._write(
            {
                "op": "offence",
                "draft": encode_draft(draft),
                "rule": encode_rule(rule),
                "timezone": timezone.key,
            },
            lambda: self._ledger.record_offence(draft, rule, timezone=timezone),
        )

    async def record_call(self, summary: CallSummary) -> bool | None:
        """Store a finished call; return whether it was new, or None when it was spooled."""
        return await self._write(
            {"op": "call", "call": encode_call(summary)},
            lambda: self._ledger.record_call(summary),
        )

    @property
    def retrying(self) -> bool:
        """Tell whether the last attempt to drain the spool found the database unavailable."""
        return self._retrying.is_set()

    async def wait_drained(self) -> None:
        """Return once the spool is empty."""
        await self._load()
        await self._empty.wait()

    async def wait_retrying(self) -> None:
        """Return once an attempt to drain the spool has failed and a retry is scheduled."""
        await self._retrying.wait()

    async def run(self) -> None:
        """Drain the spool whenever it has lines, retrying with jittered backoff; never returns."""
        await self._load()
        delay = self._retry_initial
        while True:
            await self._wake.wait()
            try:
                await self._drain()
            except LedgerUnavailable as error:
                self._retrying.set()
                pause = self._rng.uniform(delay / 2, delay)
                _log.warning(
                    "ledger_spool_retry", pending=self._pending, retry_in=pause, error=str(error)
                )
                await asyncio.sleep(pause)
                delay = min(delay * 2, self._retry_max)
            else:
                self._retrying.clear()
                delay = self._retry_initial

    # -- internals ---------------------------------------------------------------------------

    async def _load(self) -> None:
        async with self._lock:
            if self._loaded:
                return
            self._pending = await asyncio.to_thread(_scan, self._path)
            self._loaded = True
            if self._pending:
                _log.warning("ledger_spool_found", pending=self._pending, path=str(self._path))
                self._wake.set()
            else:
                self._empty.set()

    async def _write(self, entry: dict[str, Any], direct: Callable[[], Awaitable[_T]]) -> _T | None:
        await self._load()
        if not self._pending:
            try:
                return await direct()
            except LedgerUnavailable as error:
                _log.warning("ledger_unavailable_spooling", op=entry["op"], error=str(error))
        entry["v"] = SPOOL_VERSION
        line = json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n"
        async with self._lock:
            try:
                await asyncio.to_thread(_append_line, self._path, line.encode())
            except OSError as error:
                raise LedgerError(
                    f"the ledger is unavailable and the spool {self._path} cannot be written: "
                    f"{error}"
                ) from error
            self._pending += 1
            self._empty.clear()
            self._wake.set()
        return None

    async def _drain(self) -> None:
        while True:
            async with self._lock:
                found = await asyncio.to_thread(_read_line, self._path, self._offset)
                if found is None:
                    await asyncio.to_thread(_truncate, self._path)
                    self._offset = 0
                    self._pending = 0
                    self._wake.clear()
                    self._empty.set()
                    _log.info("ledger_spool_drained")
                    return
            line, next_offset = found
            await self._replay(line)
            async with self._lock:
                self._offset = next_offset
                self._pending = max(self._pending - 1, 0)

    async def _replay(self, line: bytes) -> None:
        try:
            entry = json.loads(line)
            write = self._decode(entry)
            await write()
        except LedgerUnavailable:
            raise
        except (LedgerError, ValueError, KeyError, TypeError) as error:
            await self._reject(line, error)

    def _decode(self, entry: Mapping[str, Any]) -> Callable[[], Awaitable[object]]:
        """Return the ledger write a spooled line stands for."""
        op = entry["op"]
        if op == "decision":
            rec = decode_decision(entry["decision"])
            return lambda: self._ledger.record_decision(rec)
        if op == "offence":
            draft = decode_draft(entry["draft"])
            rule = decode_rule(entry["rule"])
            zone = ZoneInfo(entry["timezone"])
            return lambda: self._ledger.record_offence(draft, rule, timezone=zone)
        if op == "call":
            summary = decode_call(entry["call"])
            return lambda: self._ledger.record_call(summary)
        raise LedgerError(f"unknown spooled operation {op!r}")

    async def _reject(self, line: bytes, error: Exception) -> None:
        record = {
            "error": f"{type(error).__name__}: {error}",
            "line": line.decode(errors="replace"),
        }
        data = json.dumps(record, ensure_ascii=False) + "\n"
        await asyncio.to_thread(_append_line, self._rejected, data.encode())
        _log.error("ledger_spool_rejected", path=str(self._rejected), error=str(error))
