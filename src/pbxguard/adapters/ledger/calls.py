"""Decisions and calls: what each layer decided, and every outbound call with its charge.

An answered outbound call to a long-distance, Hong Kong/Macau, Taiwan or international number
also gets its line in the long-distance register (LD-4), once, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Select, bindparam, select

from pbxguard.adapters.ledger.database import LedgerDatabase, LedgerSession, aware
from pbxguard.adapters.ledger.schema import calls, decisions
from pbxguard.domain.numbers import LONG_DISTANCE_CLASSES
from pbxguard.domain.records import CallRef, CallSummary, DecisionRecord, Layer

_LONG_DISTANCE = {c.value for c in LONG_DISTANCE_CLASSES}
_PAGE = 1000


def _ms(duration: timedelta) -> int:
    return duration // timedelta(milliseconds=1)


def record_decisions(session: LedgerSession, records: Sequence[DecisionRecord]) -> int:
    """Store verdicts not stored yet (by key); return how many were new."""
    done = session.existing("decisions", "key", [r.key for r in records])
    rows: list[dict[str, Any]] = []
    for rec in records:
        if rec.key in done:
            continue
        done.add(rec.key)
        rows.append(
            {
                "key": rec.key,
                "at": aware(rec.at, "decision time"),
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
        )
    session.append("decisions", rows, ids=False)
    return len(rows)


def _registrable(summary: CallSummary) -> bool:
    return (
        summary.answered_at is not None
        and summary.direction != "inbound"
        and summary.number_class in _LONG_DISTANCE
    )


@cache
def _stored_calls() -> Select[Any]:
    c = calls.c
    return select(c.linkedid, c.uniqueid).where(
        c.site == bindparam("site"), c.linkedid.in_(bindparam("linkedids", expanding=True))
    )


def record_calls(session: LedgerSession, summaries: Sequence[CallSummary]) -> int:
    """Store finished calls not stored yet (by site, Linkedid, Uniqueid); return how many."""
    if not summaries:
        return 0
    linkedids = list(dict.fromkeys(s.call.linkedid for s in summaries))
    stored: set[tuple[str, str]] = set()
    for start in range(0, len(linkedids), 500):
        found = session.execute(
            _stored_calls(), {"site": session.site, "linkedids": linkedids[start : start + 500]}
        )
        stored.update((row.linkedid, row.uniqueid) for row in found)
    rows: list[dict[str, Any]] = []
    register: list[dict[str, Any]] = []
    for summary in summaries:
        ref = summary.call
        if (ref.linkedid, ref.uniqueid) in stored:
            continue
        stored.add((ref.linkedid, ref.uniqueid))
        if summary.answered_at is not None:
            aware(summary.answered_at, "answer time")
        rows.append(
            {
                "linkedid": ref.linkedid,
                "uniqueid": ref.uniqueid,
                "channel": ref.channel,
                "extension": summary.extension,
                "person_id": summary.person_id,
                "person_name": summary.person_name,
                "department": summary.department,
                "caller_name": summary.caller_name,
                "dialled": summary.dialled,
                "number": summary.number,
                "number_class": summary.number_class,
                "direction": summary.direction,
                "started_at": aware(summary.started_at, "call start"),
                "answered_at": summary.answered_at,
                "ended_at": aware(summary.ended_at, "call end"),
                "verdict": summary.verdict,
                "rule_id": summary.rule_id,
                "outcome": summary.outcome,
                "charge": summary.charge,
            }
        )
        if _registrable(summary):
            assert summary.answered_at is not None
            register.append(
                {
                    "linkedid": ref.linkedid,
                    "uniqueid": ref.uniqueid,
                    "channel": ref.channel,
                    "caller_person_id": summary.person_id,
                    "caller_name": summary.person_name or summary.caller_name,
                    "department": summary.department,
                    "extension": summary.extension,
                    "callee_number": summary.number,
                    "number_class": summary.number_class,
                    "started_at": summary.answered_at,
                    "ended_at": summary.ended_at,
                    "duration_ms": _ms(summary.talk_time),
                }
            )
    session.append("calls", rows, ids=False)
    session.append("register_entries", register, ids=False)
    return len(rows)


def _decision(row: Any) -> DecisionRecord:
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


def call_summary(row: Any) -> CallSummary:
    """Build a `CallSummary` from a row of the calls table."""
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
        charge=row.charge,
    )


class CallLog:
    """The decisions and calls of the ledger."""

    def __init__(self, database: LedgerDatabase) -> None:
        self._db = database

    def record_decision(self, rec: DecisionRecord) -> bool:
        """Store a verdict once per key; return True when it was new."""
        with self._db.write() as session:
            return record_decisions(session, [rec]) == 1

    def record_call(self, summary: CallSummary) -> bool:
        """Store a finished call once; return True when it was new."""
        with self._db.write() as session:
            return record_calls(session, [summary]) == 1

    def decisions(self, *, linkedid: str | None = None) -> list[DecisionRecord]:
        """Return stored verdicts, oldest first, optionally for one call."""
        query = select(decisions).order_by(decisions.c.at, decisions.c.id)
        if linkedid is not None:
            query = query.where(decisions.c.linkedid == linkedid)
        with self._db.read() as session:
            return [_decision(row) for row in session.execute(query)]

    def iter_calls(
        self,
        *,
        person: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        site: str | None = None,
    ) -> Iterator[CallSummary]:
        """Yield stored calls, oldest first, page by page."""
        after: tuple[datetime, int] | None = None
        while True:
            query: Select[Any] = select(calls).order_by(calls.c.started_at, calls.c.id)
            if person is not None:
                query = query.where(calls.c.person_id == person)
            if start is not None:
                query = query.where(calls.c.started_at >= aware(start, "start"))
            if end is not None:
                query = query.where(calls.c.started_at < aware(end, "end"))
            if site is not None:
                query = query.where(calls.c.site == site)
            if after is not None:
                query = query.where(
                    (calls.c.started_at > after[0])
                    | ((calls.c.started_at == after[0]) & (calls.c.id > after[1]))
                )
            with self._db.read() as session:
                rows = list(session.execute(query.limit(_PAGE)))
            yield from (call_summary(row) for row in rows)
            if len(rows) < _PAGE:
                return
            after = (rows[-1].started_at, rows[-1].id)

    def calls(self, *, person: str | None = None) -> list[CallSummary]:
        """Return stored calls, oldest first, optionally of one person."""
        return list(self.iter_calls(person=person))
