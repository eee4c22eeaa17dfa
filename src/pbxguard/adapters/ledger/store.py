"""The fine ledger: an append-only record of decisions, offences, calls and the register.

Theory of operation
-------------------
Every write runs in one transaction that only ever INSERTs; the tables carry triggers that make
UPDATE and DELETE fail, so a row, once written, is what the auditor sees. What changes over time
is derived from later rows: an offence's adjustments (waiver, appeal), an approval's events
(grant, use, revoke, expire), a register entry's fills, an authorization code's uses.

An offence is priced when it is recorded, inside the write transaction, from the person's prior
offences under the same ladder in the penalty's window (reckoned in the site's timezone).
Writers are serialised so two offences of the same person never both count zero priors:
SQLite takes its write lock up front (``BEGIN IMMEDIATE``) and one writer per ledger runs at a
time; PostgreSQL takes a transaction-scoped advisory lock per (person, ladder), which also holds
across several pbxguard processes sharing one database.

Library errors never leave this module: a database that is down or locked becomes
`LedgerUnavailable`, a write refused by the append-only triggers `LedgerIntegrityError`, any
other database failure `LedgerError`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import structlog
from alembic import command
from alembic.config import Config
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import event, exc, func, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql.dml import Insert
from sqlmodel import SQLModel, col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from pbxguard.adapters.ledger.entries import (
    Adjustment,
    AdjustmentKind,
    CodeInfo,
    FineTotal,
    OffenceEntry,
    RegisterEntry,
)
from pbxguard.adapters.ledger.tables import (
    APPEND_ONLY_MARKER,
    AdjustmentRow,
    ApprovalEventRow,
    AuthorizationCodeRow,
    CallRow,
    CodeEventRow,
    DecisionRow,
    OffenceRow,
    RegisterEntryRow,
    RegisterFillRow,
)
from pbxguard.domain.approvals import Approval
from pbxguard.domain.numbers import LONG_DISTANCE_CLASSES, NumberClass
from pbxguard.domain.penalties import ZERO, Fine, Sanction, assess, window_bounds
from pbxguard.domain.policy import Rule
from pbxguard.domain.records import (
    CallRef,
    CallSummary,
    DecisionRecord,
    Layer,
    OffenceDraft,
    Outcome,
)
from pbxguard.errors import (
    AuthorizationCodeError,
    LedgerError,
    LedgerIntegrityError,
    LedgerUnavailable,
)

_log = structlog.get_logger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
_WRITE = "pbxguard_write"
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_CODE = re.compile(r"^[0-9]{4,}$")
_EXCUSING = [kind.value for kind in AdjustmentKind if kind.excuses]
_LONG_DISTANCE = {c.value for c in LONG_DISTANCE_CLASSES}

_Row = TypeVar("_Row", bound=SQLModel)


class _ApprovalEvent:
    GRANT = "grant"
    USE = "use"
    REVOKE = "revoke"
    EXPIRE = "expire"


class _CodeEvent:
    USE = "use"
    FAILURE = "failure"
    REVOKE = "revoke"


def _unavailable(error: BaseException) -> bool:
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(
        error,
        exc.OperationalError
        | exc.InterfaceError
        | exc.DisconnectionError
        | exc.TimeoutError
        | OSError
        | TimeoutError,
    ):
        return True
    # asyncpg raises some connection failures (server starting up or shutting down) untranslated.
    return type(error).__module__.startswith("asyncpg")


def translate_error(error: BaseException) -> LedgerError:
    """Return the ledger error that stands for a database library's ``error``."""
    if isinstance(error, LedgerError):
        return error
    message = str(error)
    if APPEND_ONLY_MARKER in message:
        return LedgerIntegrityError(f"ledger entries cannot be changed or deleted: {message}")
    if _unavailable(error):
        return LedgerUnavailable(f"ledger database unavailable: {type(error).__name__}: {message}")
    return LedgerError(f"ledger database error: {type(error).__name__}: {message}")


@asynccontextmanager
async def _translated() -> AsyncIterator[None]:
    try:
        yield
    except LedgerError:
        raise
    except (exc.SQLAlchemyError, OSError, TimeoutError) as error:
        raise translate_error(error) from error
    except Exception as error:
        if type(error).__module__.startswith(("asyncpg", "aiosqlite", "sqlite3")):
            raise translate_error(error) from error
        raise


def _aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise LedgerError(f"{what} must be a timezone-aware datetime")
    return value


def month_bounds(month: str, timezone: ZoneInfo) -> tuple[datetime, datetime]:
    """Return the [start, end) instants of ``month`` ("2026-10") in ``timezone``."""
    match = _MONTH.match(month)
    if match is None or not 1 <= int(match.group(2)) <= 12:
        raise LedgerError(f"month {month!r} is not YYYY-MM")
    year, number = int(match.group(1)), int(match.group(2))
    start = datetime(year, number, 1, tzinfo=timezone)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=timezone)
    return start, end


def _ms(duration: timedelta) -> int:
    return duration // timedelta(milliseconds=1)


def _call_ref(linkedid: str, uniqueid: str, channel: str) -> CallRef | None:
    if not (linkedid or uniqueid or channel):
        return None
    return CallRef(linkedid, uniqueid, channel)


def _sanctions(text_value: str) -> tuple[Sanction, ...]:
    return tuple(Sanction(s) for s in text_value.split(",") if s)


def _adjustment(row: AdjustmentRow) -> Adjustment:
    assert row.id is not None
    return Adjustment(
        id=row.id,
        offence_id=row.offence_id,
        kind=AdjustmentKind(row.kind),
        by=row.actor,
        reason=row.reason,
        at=row.at,
    )


def _offence_entry(row: OffenceRow, adjustments: Iterable[Adjustment] = ()) -> OffenceEntry:
    assert row.id is not None
    return OffenceEntry(
        id=row.id,
        key=row.key,
        rule_id=row.rule_id,
        ladder=row.ladder,
        rule_title_zh=row.rule_title_zh,
        rule_title_en=row.rule_title_en,
        citation=row.citation,
        at=row.at,
        call=_call_ref(row.linkedid, row.uniqueid, row.channel),
        extension=row.extension,
        person_id=row.person_id,
        person_name=row.person_name,
        department=row.department,
        number=row.number,
        number_class=row.number_class,
        talk_time=timedelta(milliseconds=row.talk_ms),
        outcome=Outcome(row.outcome),
        fine=Fine(
            amount=row.amount,
            sanctions=_sanctions(row.sanctions),
            escalation_step=row.escalation_step,
            repeat_offender=row.repeat_offender,
            charge=row.charge,
            department_head_amount=row.department_head_amount,
        ),
        detail_zh=row.detail_zh,
        detail_en=row.detail_en,
        policy_version=row.policy_version,
        adjustments=tuple(adjustments),
    )


def _register_entry(row: RegisterEntryRow, fill: RegisterFillRow | None) -> RegisterEntry:
    assert row.id is not None
    return RegisterEntry(
        id=row.id,
        call=CallRef(row.linkedid, row.uniqueid, row.channel),
        caller_person_id=row.caller_person_id,
        caller_name=row.caller_name,
        department=row.department,
        extension=row.extension,
        callee_number=row.callee_number,
        callee_name=fill.callee_name if fill is not None else "",
        number_class=row.number_class,
        started_at=row.started_at,
        ended_at=row.ended_at,
        duration=timedelta(milliseconds=row.duration_ms),
        subject=fill.subject if fill is not None else "",
        outcome=fill.outcome if fill is not None else "",
        filled_by=fill.actor if fill is not None else "",
        filled_at=fill.at if fill is not None else None,
    )


def _fold_approvals(events: Sequence[ApprovalEventRow]) -> dict[str, Approval]:
    """Derive each approval's current state from its events, oldest first."""
    approvals: dict[str, Approval] = {}
    for ev in sorted(events, key=lambda e: e.id or 0):
        if ev.kind == _ApprovalEvent.GRANT:
            assert ev.valid_from is not None
            assert ev.valid_until is not None
            approvals[ev.approval_id] = Approval(
                id=ev.approval_id,
                person_id=ev.person_id,
                granted_by=ev.actor,
                valid_from=ev.valid_from,
                valid_until=ev.valid_until,
                number_class=NumberClass(ev.number_class) if ev.number_class else None,
                prefix=ev.prefix,
                max_calls=ev.max_calls,
                reason=ev.reason,
            )
    for ev in sorted(events, key=lambda e: e.id or 0):
        current = approvals.get(ev.approval_id)
        if current is None:
            continue
        if ev.kind == _ApprovalEvent.USE:
            approvals[ev.approval_id] = current.used()
        elif ev.kind == _ApprovalEvent.REVOKE:
            approvals[ev.approval_id] = replace(current, revoked=True)
        elif ev.kind == _ApprovalEvent.EXPIRE:
            until = min(current.valid_until, ev.at)
            approvals[ev.approval_id] = replace(current, valid_until=until)
    return approvals


@dataclass(frozen=True, slots=True)
class _Candidate:
    id: int
    person_id: str
    one_time: bool
    code_hash: str


def code_hasher() -> PasswordHasher:
    """Return the hasher for authorization codes: Argon2id, cheap enough for the dialplan.

    A code is checked against every live code while the caller waits and Asterisk gives the
    FastAGI request about two seconds; argon2-cffi's defaults cost ~150 ms a check here, so a
    site with ten live codes would time out. One pass over 8 MiB costs ~4 ms. A 4-8 digit code
    cannot resist an offline search whatever the cost: the ledger database must stay private.
    Hashes made with other parameters still verify (Argon2 stores them in the hash).
    """
    return PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)


def _matching_code(hasher: PasswordHasher, code: str, candidates: Sequence[_Candidate]) -> int:
    """Return the index of the candidate whose hash matches ``code``, or -1."""
    for index, candidate in enumerate(candidates):
        try:
            if hasher.verify(candidate.code_hash, code):
                return index
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            continue
    return -1


class FineLedger:
    """The append-only fine ledger over SQLite (embedded) or PostgreSQL."""

    def __init__(self, engine: AsyncEngine, *, password_hasher: PasswordHasher) -> None:
        self._engine = engine
        self._hasher = password_hasher
        self._sqlite = engine.dialect.name == "sqlite"
        # SQLite allows one writer at a time anyway; queueing here avoids busy-waiting on it.
        self._sqlite_writer = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        busy_timeout: float = 5.0,
        password_hasher: PasswordHasher | None = None,
    ) -> FineLedger:
        """Open a ledger at ``url`` without connecting yet (the database may still be down).

        ``url`` is ``sqlite+aiosqlite:///path`` or ``postgresql+asyncpg://user@host/db``.
        ``busy_timeout`` (seconds) bounds how long a write waits for SQLite's lock or for a
        PostgreSQL connection before the ledger reports itself unavailable.
        """
        try:
            parsed = make_url(url)
        except exc.ArgumentError as error:
            raise LedgerError(f"not a database URL: {error}") from error
        engine = _create_engine(parsed, busy_timeout)
        return cls(engine, password_hasher=password_hasher or code_hasher())

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._engine.dispose()

    async def __aenter__(self) -> FineLedger:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    @property
    def backend(self) -> str:
        """Return the database backend's name: "sqlite" or "postgresql"."""
        return str(self._engine.dialect.name)

    async def migrate(self) -> None:
        """Bring the schema up to the newest migration shipped with pbxguard."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))

        def upgrade(connection: Connection) -> None:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

        async with self._writer(), _translated(), self._engine.connect() as plain:
            conn = await plain.execution_options(**{_WRITE: True})
            async with conn.begin():
                await conn.run_sync(upgrade)
        _log.info("ledger_migrated", backend=self.backend)

    # -- sessions ----------------------------------------------------------------------------

    @asynccontextmanager
    async def _writer(self) -> AsyncIterator[None]:
        if self._sqlite:
            async with self._sqlite_writer:
                yield
        else:
            yield

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncSession]:
        async with (
            self._writer(),
            _translated(),
            AsyncSession(self._engine, expire_on_commit=False) as session,
        ):
            await session.connection(execution_options={_WRITE: True})
            yield session
            await session.commit()

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncSession]:
        async with _translated(), AsyncSession(self._engine, expire_on_commit=False) as session:
            yield session
            await session.commit()

    def _insert(self, model: type[SQLModel], values: dict[str, Any], *keys: str) -> Insert:
        """Build an INSERT that does nothing when a row with the same ``keys`` exists."""
        if self._sqlite:
            return (
                sqlite_insert(model)
                .values(values)
                .on_conflict_do_nothing(index_elements=list(keys))
            )
        return pg_insert(model).values(values).on_conflict_do_nothing(index_elements=list(keys))

    async def _insert_new(
        self,
        session: AsyncSession,
        model: type[SQLModel],
        values: dict[str, Any],
        *keys: str,
    ) -> int | None:
        """Insert a row unless one with the same ``keys`` exists; return the new id or None."""
        statement = self._insert(model, values, *keys).returning(text("id"))
        result = await session.exec(statement)
        new_id = result.scalar_one_or_none()
        return int(new_id) if new_id is not None else None

    # -- decisions and calls -----------------------------------------------------------------

    async def record_decision(self, rec: DecisionRecord) -> bool:
        """Store a verdict once per ``rec.key``; return True when it was new."""
        values = {
            "key": rec.key,
            "at": _aware(rec.at, "decision time"),
            "linkedid": rec.call.linkedid,
            "uniqueid": rec.call.uniqueid,
            "channel": rec.call.channel,
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
        async with self._write() as session:
            new_id = await self._insert_new(session, DecisionRow, values, "key")
        return new_id is not None

    async def decisions(self, *, linkedid: str | None = None) -> list[DecisionRecord]:
        """Return stored verdicts, oldest first, optionally for one call."""
        statement = select(DecisionRow).order_by(col(DecisionRow.at), col(DecisionRow.id))
        if linkedid is not None:
            statement = statement.where(DecisionRow.linkedid == linkedid)
        async with self._read() as session:
            rows = (await session.exec(statement)).all()
        return [_decision_record(row) for row in rows]

    async def record_call(self, summary: CallSummary) -> bool:
        """Store a finished call once per (Linkedid, Uniqueid); return True when it was new.

        An answered outbound call to a long-distance, Hong Kong/Macau, Taiwan or international
        number also gets its line in the long-distance register (LD-4), once.
        """
        call = summary.call
        values = {
            "linkedid": call.linkedid,
            "uniqueid": call.uniqueid,
            "channel": call.channel,
            "extension": summary.extension,
            "person_id": summary.person_id,
            "person_name": summary.person_name,
            "department": summary.department,
            "caller_name": summary.caller_name,
            "dialled": summary.dialled,
            "number": summary.number,
            "number_class": summary.number_class,
            "direction": summary.direction,
            "started_at": _aware(summary.started_at, "call start"),
            "answered_at": summary.answered_at,
            "ended_at": _aware(summary.ended_at, "call end"),
            "verdict": summary.verdict,
            "rule_id": summary.rule_id,
            "outcome": summary.outcome,
        }
        if summary.answered_at is not None:
            _aware(summary.answered_at, "answer time")
        async with self._write() as session:
            new_id = await self._insert_new(session, CallRow, values, "linkedid", "uniqueid")
            if summary.answered_at is not None and self._registrable(summary):
                await self._insert_new(
                    session,
                    RegisterEntryRow,
                    {
                        "linkedid": call.linkedid,
                        "uniqueid": call.uniqueid,
                        "channel": call.channel,
                        "caller_person_id": summary.person_id,
                        "caller_name": summary.person_name or summary.caller_name,
                        "department": summary.department,
                        "extension": summary.extension,
                        "callee_number": summary.number,
                        "number_class": summary.number_class,
                        "started_at": summary.answered_at,
                        "ended_at": summary.ended_at,
                        "duration_ms": _ms(summary.talk_time),
                    },
                    "linkedid",
                    "uniqueid",
                )
        return new_id is not None

    @staticmethod
    def _registrable(summary: CallSummary) -> bool:
        return summary.direction != "inbound" and summary.number_class in _LONG_DISTANCE

    async def calls(self, *, person: str | None = None) -> list[CallSummary]:
        """Return stored calls, oldest first, optionally of one person."""
        statement = select(CallRow).order_by(col(CallRow.started_at), col(CallRow.id))
        if person is not None:
            statement = statement.where(CallRow.person_id == person)
        async with self._read() as session:
            rows = (await session.exec(statement)).all()
        return [_call_summary(row) for row in rows]

    # -- offences ----------------------------------------------------------------------------

    async def record_offence(
        self, draft: OffenceDraft, rule: Rule, *, timezone: ZoneInfo
    ) -> OffenceEntry:
        """Price and store an offence once per ``draft.key``; return the stored entry.

        Prior offences are those of the same person (or, for an unknown person, the same
        extension) under the same ladder, inside the penalty's window around ``draft.at`` in the
        site's ``timezone``, at or before ``draft.at``, and not excused. A rule without a penalty
        is stored with amount 0.
        """
        if draft.rule_id != rule.id:
            raise LedgerError(f"offence {draft.key} is for {draft.rule_id}, not {rule.id}")
        at = _aware(draft.at, "offence time")
        penalty = rule.penalty
        ladder = (penalty.ladder if penalty is not None else "") or rule.id
        async with self._write() as session:
            existing = await self._offence_by_key(session, draft.key)
            if existing is not None:
                return existing
            if not self._sqlite:
                lock_key = f"offence:{draft.person_id or 'ext:' + draft.extension}:{ladder}"
                conn = await session.connection()
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                    {"key": lock_key},
                )
                existing = await self._offence_by_key(session, draft.key)
                if existing is not None:
                    return existing
            if penalty is None:
                fine = Fine(amount=ZERO, sanctions=(), escalation_step=1, charge=draft.charge)
            else:
                start, _ = window_bounds(penalty.window, at.astimezone(timezone))
                prior = await self._prior_offences(session, draft, ladder, start, at)
                fine = assess(
                    penalty,
                    prior_offences=prior,
                    charge=draft.charge,
                    number_class=draft.number_class,
                )
            call = draft.call
            row = OffenceRow(
                key=draft.key,
                rule_id=rule.id,
                ladder=ladder,
                rule_title_zh=rule.title_zh,
                rule_title_en=rule.title_en,
                citation=rule.citation,
                person_id=draft.person_id,
                person_name=draft.person_name,
                department=draft.department,
                extension=draft.extension,
                number=draft.number,
                number_class=draft.number_class,
                amount=fine.amount,
                sanctions=",".join(s.value for s in fine.sanctions),
                escalation_step=fine.escalation_step,
                repeat_offender=fine.repeat_offender,
                department_head_amount=fine.department_head_amount,
                charge=fine.charge,
                talk_ms=_ms(draft.talk_time),
                outcome=draft.outcome.value,
                linkedid=call.linkedid if call else "",
                uniqueid=call.uniqueid if call else "",
                channel=call.channel if call else "",
                detail_zh=draft.detail_zh,
                detail_en=draft.detail_en,
                policy_version=draft.policy_version,
                at=at,
            )
            session.add(row)
            await session.flush()
            entry = _offence_entry(row)
        _log.info(
            "offence_recorded",
            offence_id=entry.id,
            rule_id=entry.rule_id,
            person_id=entry.person_id,
            amount=str(entry.fine.amount),
            step=entry.escalation_step,
        )
        return entry

    async def _offence_by_key(self, session: AsyncSession, key: str) -> OffenceEntry | None:
        row = (await session.exec(select(OffenceRow).where(OffenceRow.key == key))).first()
        if row is None:
            return None
        return _offence_entry(row, await self._adjustments_of(session, [row]))

    async def _prior_offences(
        self,
        session: AsyncSession,
        draft: OffenceDraft,
        ladder: str,
        start: datetime | None,
        at: datetime,
    ) -> int:
        excused = select(AdjustmentRow.offence_id).where(col(AdjustmentRow.kind).in_(_EXCUSING))
        statement = (
            select(func.count())
            .select_from(OffenceRow)
            .where(
                OffenceRow.person_id == draft.person_id,
                OffenceRow.ladder == ladder,
                col(OffenceRow.at) <= at,
                col(OffenceRow.id).not_in(excused),
            )
        )
        if not draft.person_id:
            statement = statement.where(OffenceRow.extension == draft.extension)
        if start is not None:
            statement = statement.where(col(OffenceRow.at) >= start)
        return int((await session.exec(statement)).one())

    async def _adjustments_of(
        self, session: AsyncSession, rows: Sequence[OffenceRow]
    ) -> list[Adjustment]:
        ids = [row.id for row in rows]
        statement = (
            select(AdjustmentRow)
            .where(col(AdjustmentRow.offence_id).in_(ids))
            .order_by(col(AdjustmentRow.id))
        )
        return [_adjustment(a) for a in (await session.exec(statement)).all()]

    async def add_adjustment(
        self,
        offence_id: int,
        kind: AdjustmentKind,
        *,
        by: str,
        reason: str,
        at: datetime,
    ) -> OffenceEntry:
        """Record a waiver, an appeal or an appeal decision; return the offence as it now stands.

        Raises:
            LedgerError: the offence does not exist, the reason is empty, or an appeal decision
                has no open appeal to decide.
        """
        _aware(at, "adjustment time")
        if not reason.strip():
            raise LedgerError("an adjustment needs a reason")
        if not by.strip():
            raise LedgerError("an adjustment needs the name of who made it")
        async with self._write() as session:
            row = await session.get(OffenceRow, offence_id)
            if row is None:
                raise LedgerError(f"no offence {offence_id} in the ledger")
            before = _offence_entry(row, await self._adjustments_of(session, [row]))
            decides = kind in (AdjustmentKind.APPEAL_ALLOWED, AdjustmentKind.APPEAL_DISMISSED)
            if decides and not before.appeal_pending:
                raise LedgerError(f"offence {offence_id} has no open appeal to decide")
            adjustment = AdjustmentRow(
                offence_id=offence_id, kind=kind.value, actor=by, reason=reason, at=at
            )
            session.add(adjustment)
            await session.flush()
            after = _offence_entry(row, await self._adjustments_of(session, [row]))
        _log.info("offence_adjusted", offence_id=offence_id, kind=kind.value, by=by)
        return after

    async def offences(
        self,
        *,
        timezone: ZoneInfo,
        person: str | None = None,
        department: str | None = None,
        month: str | None = None,
        rule: str | None = None,
    ) -> list[OffenceEntry]:
        """Return offences, oldest first, with their adjustments applied.

        ``month`` is "YYYY-MM" in the site's ``timezone``.
        """
        statement = select(OffenceRow).order_by(col(OffenceRow.at), col(OffenceRow.id))
        if person is not None:
            statement = statement.where(OffenceRow.person_id == person)
        if department is not None:
            statement = statement.where(OffenceRow.department == department)
        if rule is not None:
            statement = statement.where(OffenceRow.rule_id == rule)
        if month is not None:
            start, end = month_bounds(month, timezone)
            statement = statement.where(col(OffenceRow.at) >= start, col(OffenceRow.at) < end)
        async with self._read() as session:
            rows = (await session.exec(statement)).all()
            ids = statement.with_only_columns(col(OffenceRow.id)).order_by(None)
            adjustments = (
                await session.exec(
                    select(AdjustmentRow)
                    .where(col(AdjustmentRow.offence_id).in_(ids))
                    .order_by(col(AdjustmentRow.id))
                )
            ).all()
        by_offence: dict[int, list[Adjustment]] = {}
        for adjustment in adjustments:
            by_offence.setdefault(adjustment.offence_id, []).append(_adjustment(adjustment))
        return [_offence_entry(row, by_offence.get(row.id or 0, ())) for row in rows]

    async def totals_by_person(self, month: str, *, timezone: ZoneInfo) -> list[FineTotal]:
        """Return what each person owes for ``month``, largest amount first."""
        entries = await self.offences(month=month, timezone=timezone)
        return _totals(entries, lambda e: e.person_id)

    async def totals_by_department(self, month: str, *, timezone: ZoneInfo) -> list[FineTotal]:
        """Return what each department's staff owe for ``month``, largest amount first."""
        entries = await self.offences(month=month, timezone=timezone)
        return _totals(entries, lambda e: e.department)

    async def fund_balance(self) -> Decimal:
        """Return the fines not excused, joint shares included: the staff fund (000 L337)."""
        excused = select(AdjustmentRow.offence_id).where(col(AdjustmentRow.kind).in_(_EXCUSING))
        statement = select(
            func.sum(OffenceRow.amount), func.sum(OffenceRow.department_head_amount)
        ).where(col(OffenceRow.id).not_in(excused))
        async with self._read() as session:
            amount, joint = (await session.exec(statement)).one()
        total: Decimal = (amount or ZERO) + (joint or ZERO)
        return total

    # -- the long-distance register ----------------------------------------------------------

    async def fill_register(
        self,
        entry_id: int,
        *,
        subject: str,
        outcome: str,
        by: str,
        at: datetime,
        callee_name: str = "",
    ) -> RegisterEntry:
        """Write the subject (联络事项) and outcome (交涉结果) into a register entry.

        A later fill supersedes an earlier one; both stay in the ledger.
        """
        _aware(at, "fill time")
        if not subject.strip():
            raise LedgerError("a register entry needs its subject (联络事项)")
        async with self._write() as session:
            row = await session.get(RegisterEntryRow, entry_id)
            if row is None:
                raise LedgerError(f"no register entry {entry_id}")
            if not callee_name:
                # A fill that does not name the callee keeps the name an earlier fill gave.
                earlier = (
                    await session.exec(
                        select(RegisterFillRow)
                        .where(RegisterFillRow.entry_id == entry_id)
                        .order_by(col(RegisterFillRow.id).desc())
                        .limit(1)
                    )
                ).first()
                callee_name = earlier.callee_name if earlier is not None else ""
            fill = RegisterFillRow(
                entry_id=entry_id,
                subject=subject,
                outcome=outcome,
                callee_name=callee_name,
                actor=by,
                at=at,
            )
            session.add(fill)
            await session.flush()
        return _register_entry(row, fill)

    async def register(self, month: str, *, timezone: ZoneInfo) -> list[RegisterEntry]:
        """Return the month's register ("2026-10" in the site's timezone), by start time."""
        start, end = month_bounds(month, timezone)
        return await self._register_where(
            col(RegisterEntryRow.started_at) >= start, col(RegisterEntryRow.started_at) < end
        )

    async def unfilled_register_entries(self, older_than: datetime) -> list[RegisterEntry]:
        """Return register entries started before ``older_than`` that nobody has filled in."""
        filled = select(RegisterFillRow.entry_id)
        return [
            entry
            for entry in await self._register_where(
                col(RegisterEntryRow.started_at) < _aware(older_than, "older_than"),
                col(RegisterEntryRow.id).not_in(filled),
            )
            if not entry.filled
        ]

    async def _register_where(self, *conditions: Any) -> list[RegisterEntry]:
        statement = (
            select(RegisterEntryRow)
            .where(*conditions)
            .order_by(col(RegisterEntryRow.started_at), col(RegisterEntryRow.id))
        )
        ids = statement.with_only_columns(col(RegisterEntryRow.id)).order_by(None)
        async with self._read() as session:
            rows = (await session.exec(statement)).all()
            fills = (
                await session.exec(
                    select(RegisterFillRow)
                    .where(col(RegisterFillRow.entry_id).in_(ids))
                    .order_by(col(RegisterFillRow.id))
                )
            ).all()
        latest = {fill.entry_id: fill for fill in fills}
        return [_register_entry(row, latest.get(row.id or 0)) for row in rows]

    # -- approvals ---------------------------------------------------------------------------

    async def grant_approval(self, approval: Approval) -> bool:
        """Store a grant once per approval id; return True when it was new.

        The ledger derives ``used_calls`` and ``revoked`` from its own events; the values given
        here are ignored.
        """
        _aware(approval.valid_from, "valid_from")
        _aware(approval.valid_until, "valid_until")
        if approval.valid_until <= approval.valid_from:
            raise LedgerError(f"approval {approval.id} ends before it starts")
        values = {
            "approval_id": approval.id,
            "kind": _ApprovalEvent.GRANT,
            "ref": "",
            "at": approval.valid_from,
            "actor": approval.granted_by,
            "person_id": approval.person_id,
            "valid_from": approval.valid_from,
            "valid_until": approval.valid_until,
            "number_class": approval.number_class.value if approval.number_class else None,
            "prefix": approval.prefix,
            "max_calls": approval.max_calls,
            "reason": approval.reason,
            "linkedid": "",
            "uniqueid": "",
            "channel": "",
        }
        async with self._write() as session:
            new_id = await self._insert_new(
                session, ApprovalEventRow, values, "approval_id", "kind", "ref"
            )
        if new_id is not None:
            _log.info("approval_granted", approval_id=approval.id, person_id=approval.person_id)
        return new_id is not None

    async def use_approval(self, approval_id: str, call: CallRef, at: datetime) -> Approval:
        """Count one call against an approval (once per call); return the approval now."""
        return await self._approval_event(
            approval_id, _ApprovalEvent.USE, ref=call.linkedid, at=at, call=call
        )

    async def revoke_approval(
        self, approval_id: str, *, by: str, at: datetime, reason: str
    ) -> Approval:
        """Revoke an approval; return it as it now stands."""
        return await self._approval_event(
            approval_id, _ApprovalEvent.REVOKE, at=at, by=by, reason=reason
        )

    async def expire_approval(
        self, approval_id: str, *, at: datetime, by: str = "", reason: str = ""
    ) -> Approval:
        """Close an approval's window at ``at`` (if it was still open); return it now."""
        return await self._approval_event(
            approval_id, _ApprovalEvent.EXPIRE, at=at, by=by, reason=reason
        )

    async def _approval_event(
        self,
        approval_id: str,
        kind: str,
        *,
        at: datetime,
        ref: str = "",
        by: str = "",
        reason: str = "",
        call: CallRef | None = None,
    ) -> Approval:
        _aware(at, "event time")
        async with self._write() as session:
            events = await self._events_of(session, [approval_id])
            grant = next((e for e in events if e.kind == _ApprovalEvent.GRANT), None)
            if grant is None:
                raise LedgerError(f"no approval {approval_id} in the ledger")
            await self._insert_new(
                session,
                ApprovalEventRow,
                {
                    "approval_id": approval_id,
                    "kind": kind,
                    "ref": ref,
                    "at": at,
                    "actor": by,
                    "person_id": grant.person_id,
                    "prefix": "",
                    "reason": reason,
                    "linkedid": call.linkedid if call else "",
                    "uniqueid": call.uniqueid if call else "",
                    "channel": call.channel if call else "",
                },
                "approval_id",
                "kind",
                "ref",
            )
            events = await self._events_of(session, [approval_id])
        _log.info("approval_event", approval_id=approval_id, kind=kind)
        return _fold_approvals(events)[approval_id]

    @staticmethod
    async def _events_of(session: AsyncSession, ids: Any) -> list[ApprovalEventRow]:
        statement = (
            select(ApprovalEventRow)
            .where(col(ApprovalEventRow.approval_id).in_(ids))
            .order_by(col(ApprovalEventRow.id))
        )
        return list((await session.exec(statement)).all())

    async def active_approvals(self, now: datetime) -> list[Approval]:
        """Return the approvals usable at ``now``, derived from their events."""
        _aware(now, "now")
        open_grants = select(ApprovalEventRow.approval_id).where(
            ApprovalEventRow.kind == _ApprovalEvent.GRANT,
            col(ApprovalEventRow.valid_from) <= now,
            col(ApprovalEventRow.valid_until) > now,
        )
        async with self._read() as session:
            events = await self._events_of(session, open_grants)
        folded = _fold_approvals(events).values()
        return sorted((a for a in folded if a.is_active(now)), key=lambda a: a.id)

    async def approvals(self, person: str | None = None) -> list[Approval]:
        """Return every approval ever granted (to ``person``), in the order granted."""
        statement = select(ApprovalEventRow).order_by(col(ApprovalEventRow.id))
        if person is not None:
            statement = statement.where(ApprovalEventRow.person_id == person)
        async with self._read() as session:
            events = list((await session.exec(statement)).all())
        return list(_fold_approvals(events).values())

    # -- authorization codes -----------------------------------------------------------------

    async def issue_code(
        self,
        person_id: str,
        code: str,
        *,
        one_time: bool,
        expires_at: datetime | None,
        by: str,
        at: datetime,
    ) -> int:
        """Store an authorization code for ``person_id`` as an argon2 hash; return its id.

        Raises:
            AuthorizationCodeError: the code is not at least 4 digits, has already expired, or
                is the same as another code still in force.
        """
        _aware(at, "issue time")
        if not _CODE.match(code):
            raise AuthorizationCodeError("an authorization code must be at least 4 digits")
        if expires_at is not None and _aware(expires_at, "expiry") <= at:
            raise AuthorizationCodeError("an authorization code cannot expire before it is issued")
        if not person_id:
            raise AuthorizationCodeError("an authorization code belongs to a person")
        candidates = await self._live_codes(at)
        clash = await asyncio.to_thread(_matching_code, self._hasher, code, candidates)
        if clash >= 0:
            raise AuthorizationCodeError("that code is already in force; choose another")
        code_hash = await asyncio.to_thread(self._hasher.hash, code)
        row = AuthorizationCodeRow(
            person_id=person_id,
            code_hash=code_hash,
            one_time=one_time,
            expires_at=expires_at,
            created_by=by,
            created_at=at,
        )
        async with self._write() as session:
            session.add(row)
            await session.flush()
        assert row.id is not None
        _log.info("authorization_code_issued", code_id=row.id, person_id=person_id, by=by)
        return row.id

    async def check_code(
        self,
        code: str,
        now: datetime,
        *,
        person_id: str | None = None,
        extension: str = "",
        call: CallRef | None = None,
    ) -> str | None:
        """Return the person an authorization code belongs to, or None if it is not valid now.

        A one-time code is consumed by a successful check; a used or expired code fails.
        Each live code costs one argon2 verification: pass ``person_id`` when the caller is
        known to check only that person's codes.
        """
        _aware(now, "now")
        if not _CODE.match(code):
            return None
        candidates = await self._live_codes(now, person_id=person_id)
        index = await asyncio.to_thread(_matching_code, self._hasher, code, candidates)
        if index < 0:
            return None
        found = candidates[index]
        async with self._write() as session:
            new_id = await self._insert_new(
                session,
                CodeEventRow,
                {
                    "kind": _CodeEvent.USE,
                    "code_id": found.id,
                    "consumed_code_id": found.id if found.one_time else None,
                    "at": now,
                    "extension": extension,
                    "person_id": found.person_id,
                    "linkedid": call.linkedid if call else "",
                    "reason": "",
                },
                "consumed_code_id",
            )
        if new_id is None:
            # Another check consumed the one-time code between our read and our write.
            return None
        _log.info("authorization_code_used", code_id=found.id, person_id=found.person_id)
        return found.person_id

    async def _live_codes(self, now: datetime, *, person_id: str | None = None) -> list[_Candidate]:
        consumed = select(CodeEventRow.consumed_code_id).where(
            col(CodeEventRow.consumed_code_id).is_not(None)
        )
        statement = (
            select(AuthorizationCodeRow)
            .where(
                col(AuthorizationCodeRow.created_at) <= now,
                or_(
                    col(AuthorizationCodeRow.expires_at).is_(None),
                    col(AuthorizationCodeRow.expires_at) > now,
                ),
                col(AuthorizationCodeRow.id).not_in(consumed),
            )
            .order_by(col(AuthorizationCodeRow.id))
        )
        if person_id is not None:
            statement = statement.where(AuthorizationCodeRow.person_id == person_id)
        async with self._read() as session:
            rows = (await session.exec(statement)).all()
        return [_Candidate(r.id or 0, r.person_id, r.one_time, r.code_hash) for r in rows]

    async def record_code_failure(
        self,
        *,
        at: datetime,
        extension: str = "",
        person_id: str = "",
        call: CallRef | None = None,
        reason: str = "",
    ) -> None:
        """Record a failed authorization code attempt (never the digits tried)."""
        _aware(at, "failure time")
        async with self._write() as session:
            session.add(
                CodeEventRow(
                    kind=_CodeEvent.FAILURE,
                    at=at,
                    extension=extension,
                    person_id=person_id,
                    linkedid=call.linkedid if call else "",
                    reason=reason,
                )
            )
        _log.warning("authorization_code_failed", extension=extension, reason=reason)

    async def revoke_code(self, code_id: int, *, by: str, at: datetime, reason: str) -> CodeInfo:
        """Withdraw a code (a leaked one, a person who left): it stops working at once.

        Raises:
            LedgerError: there is no such code, or it had already stopped working.
        """
        _aware(at, "revocation time")
        if not by.strip():
            raise LedgerError("a revocation needs to say who revokes the code")
        async with self._write() as session:
            row = await session.get(AuthorizationCodeRow, code_id)
            if row is None:
                raise LedgerError(f"no authorization code {code_id}")
            # Revoking spends the code the way its single use spends a one-time code: the
            # unique constraint then keeps every later check from finding it.
            new_id = await self._insert_new(
                session,
                CodeEventRow,
                {
                    "kind": _CodeEvent.REVOKE,
                    "code_id": code_id,
                    "consumed_code_id": code_id,
                    "at": at,
                    "extension": "",
                    "person_id": by,
                    "linkedid": "",
                    "reason": reason,
                },
                "consumed_code_id",
            )
            if new_id is None:
                raise LedgerError(f"authorization code {code_id} had already stopped working")
        _log.info("authorization_code_revoked", code_id=code_id, by=by)
        [info] = [c for c in await self.codes(now=at) if c.id == code_id]
        return info

    async def codes(self, *, now: datetime, person: str | None = None) -> list[CodeInfo]:
        """Return the codes issued (to ``person``), oldest first, with how each one stands."""
        _aware(now, "now")
        statement = select(AuthorizationCodeRow).order_by(col(AuthorizationCodeRow.id))
        if person is not None:
            statement = statement.where(AuthorizationCodeRow.person_id == person)
        async with self._read() as session:
            rows = (await session.exec(statement)).all()
            events = (
                await session.exec(
                    select(CodeEventRow).where(col(CodeEventRow.code_id).is_not(None))
                )
            ).all()
        uses: dict[int, int] = {}
        revoked: set[int] = set()
        for happening in events:
            if happening.code_id is None:
                continue
            if happening.kind == _CodeEvent.USE:
                uses[happening.code_id] = uses.get(happening.code_id, 0) + 1
            elif happening.kind == _CodeEvent.REVOKE:
                revoked.add(happening.code_id)
        found = []
        for row in rows:
            code_id = row.id or 0
            used = uses.get(code_id, 0)
            ended = ""
            if code_id in revoked:
                ended = "revoked"
            elif row.one_time and used:
                ended = "used"
            elif row.expires_at is not None and row.expires_at <= now:
                ended = "expired"
            found.append(
                CodeInfo(
                    code_id,
                    row.person_id,
                    row.one_time,
                    row.created_at,
                    row.created_by,
                    row.expires_at,
                    used,
                    ended,
                )
            )
        return found

    async def code_failures(self, *, extension: str, since: datetime) -> int:
        """Return how many failed code attempts ``extension`` made since ``since``."""
        statement = (
            select(func.count())
            .select_from(CodeEventRow)
            .where(
                CodeEventRow.kind == _CodeEvent.FAILURE,
                CodeEventRow.extension == extension,
                col(CodeEventRow.at) >= _aware(since, "since"),
            )
        )
        async with self._read() as session:
            return int((await session.exec(statement)).one())


def _totals(entries: Iterable[OffenceEntry], subject_of: Any) -> list[FineTotal]:
    groups: dict[str, list[OffenceEntry]] = {}
    for entry in entries:
        groups.setdefault(subject_of(entry), []).append(entry)
    totals = [
        FineTotal(
            subject=subject,
            offences=len(group),
            amount=sum((e.amount for e in group), ZERO),
            department_head_amount=sum((e.department_head_amount for e in group), ZERO),
            excused=sum(1 for e in group if e.excused),
        )
        for subject, group in groups.items()
    ]
    return sorted(totals, key=lambda t: (-t.amount, t.subject))


def _decision_record(row: DecisionRow) -> DecisionRecord:
    return DecisionRecord(
        key=row.key,
        at=row.at,
        call=CallRef(row.linkedid, row.uniqueid, row.channel),
        layer=Layer(row.layer),
        extension=row.extension,
        person_id=row.person_id,
        dialled=row.dialled,
        number=row.number,
        number_class=row.number_class,
        verdict=row.verdict,
        rule_id=row.rule_id,
        reason_zh=row.reason_zh,
        reason_en=row.reason_en,
        approval_id=row.approval_id,
        policy_version=row.policy_version,
    )


def _call_summary(row: CallRow) -> CallSummary:
    return CallSummary(
        call=CallRef(row.linkedid, row.uniqueid, row.channel),
        extension=row.extension,
        person_id=row.person_id,
        person_name=row.person_name,
        department=row.department,
        caller_name=row.caller_name,
        dialled=row.dialled,
        number=row.number,
        number_class=row.number_class,
        direction=row.direction,
        started_at=row.started_at,
        answered_at=row.answered_at,
        ended_at=row.ended_at,
        verdict=row.verdict,
        rule_id=row.rule_id,
        outcome=row.outcome,
    )


def _create_engine(url: URL, timeout: float) -> AsyncEngine:
    # Errors end up in logs: hide_parameters keeps personal data and code hashes out of them.
    backend = url.get_backend_name()
    if backend == "sqlite":
        if url.get_driver_name() != "aiosqlite":
            raise LedgerError("use sqlite+aiosqlite:///path for an SQLite ledger")
        if url.database in (None, "", ":memory:"):
            raise LedgerError("an SQLite ledger needs a file: sqlite+aiosqlite:///path")
        if not Path(url.database).parent.is_dir():
            raise LedgerError(f"the directory of the SQLite ledger {url.database} does not exist")
        engine = create_async_engine(url, connect_args={"timeout": timeout}, hide_parameters=True)
        _sqlite_transactions(engine)
        return engine
    if backend == "postgresql":
        if url.get_driver_name() != "asyncpg":
            raise LedgerError("use postgresql+asyncpg://... for a PostgreSQL ledger")
        return create_async_engine(
            url,
            pool_pre_ping=True,
            pool_timeout=timeout,
            hide_parameters=True,
            connect_args={"timeout": timeout},
        )
    raise LedgerError(f"unsupported ledger database {backend!r}: use SQLite or PostgreSQL")


def _sqlite_transactions(engine: AsyncEngine) -> None:
    """Let SQLite transactions begin where SQLAlchemy says, taking the write lock for writes."""

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own implicit BEGIN is off; the "begin" hook below emits ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
