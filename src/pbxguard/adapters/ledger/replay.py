"""The ledger as ``pbxguard replay`` reads it: recorded calls, prior offences, approvals.

Read-only. A month is read a page at a time in two streams merged by time: the calls table
(every call that reached a trunk) and the pre-dial verdicts of calls that never did (refused
before they rang). The fine of each page's calls comes with it, in one query per page, by the
offence key both layers record a call's offence under (``site:Linkedid:rule:number``).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, func, select

from pbxguard.adapters.ledger.approvals import EXPIRE, GRANT, REVOKE
from pbxguard.adapters.ledger.database import LedgerDatabase
from pbxguard.adapters.ledger.schema import (
    adjustments,
    approvals,
    calls,
    decisions,
    offence_outcomes,
    offences,
)
from pbxguard.domain.approvals import Approval
from pbxguard.domain.enforcement import call_offence_key
from pbxguard.domain.entries import AdjustmentKind
from pbxguard.domain.numbers import NumberClass
from pbxguard.domain.penalties import ZERO, yuan
from pbxguard.domain.records import Layer
from pbxguard.domain.replay import RecordedCall

PAGE = 2000
_EXCUSING = [kind.value for kind in AdjustmentKind if kind.excuses]
_DENY = "deny"


class RecordedCallLog:
    """Recorded calls, prior offences and approvals, for judging a month again."""

    def __init__(self, database: LedgerDatabase, *, page: int = PAGE) -> None:
        self._db = database
        self._page = page

    def iter_recorded(self, start: datetime, end: datetime, *, site: str) -> Iterator[RecordedCall]:
        """Yield the call attempts recorded in [start, end), oldest first, page by page."""
        yield from heapq.merge(
            self._trunk_calls(start, end, site),
            self._refused_calls(start, end, site),
            key=lambda call: call.at,
        )

    def _trunk_calls(self, start: datetime, end: datetime, site: str) -> Iterator[RecordedCall]:
        c = calls.c
        base = (
            select(
                c.id,
                c.started_at,
                c.answered_at,
                c.ended_at,
                c.linkedid,
                c.extension,
                c.person_id,
                c.department,
                c.dialled,
                c.number,
                c.number_class,
                c.verdict,
                c.rule_id,
            )
            .where(c.site == site, c.started_at >= start, c.started_at < end)
            .order_by(c.started_at, c.id)
        )
        after: tuple[datetime, int] | None = None
        while True:
            query = base
            if after is not None:
                query = query.where(
                    (c.started_at > after[0]) | and_(c.started_at == after[0], c.id > after[1])
                )
            with self._db.read() as session:
                rows = list(session.execute(query.limit(self._page)))
                fines = self._fines(session, site, rows)
            for row in rows:
                talk = (
                    max(row.ended_at - row.answered_at, timedelta(0))
                    if row.answered_at is not None
                    else timedelta(0)
                )
                yield RecordedCall(
                    at=row.started_at,
                    linkedid=row.linkedid,
                    extension=row.extension,
                    person_id=row.person_id,
                    department=row.department,
                    dialled=row.dialled,
                    number=row.number,
                    number_class=row.number_class,
                    verdict=row.verdict,
                    rule_id=row.rule_id,
                    fine=fines.get(_key(site, row), ZERO),
                    talk_time=talk,
                )
            if len(rows) < self._page:
                return
            after = (rows[-1].started_at, rows[-1].id)

    def _refused_calls(self, start: datetime, end: datetime, site: str) -> Iterator[RecordedCall]:
        d = decisions.c
        reached_a_trunk = (
            select(calls.c.id)
            .where(calls.c.site == d.site, calls.c.linkedid == d.linkedid)
            .exists()
        )
        base = (
            select(
                d.id,
                d.at,
                d.linkedid,
                d.extension,
                d.person_id,
                d.dialled,
                d.number,
                d.number_class,
                d.verdict,
                d.rule_id,
            )
            .where(
                d.site == site,
                d.layer == Layer.AGI.value,
                d.at >= start,
                d.at < end,
                ~reached_a_trunk,
            )
            .order_by(d.at, d.id)
        )
        after: tuple[datetime, int] | None = None
        while True:
            query = base
            if after is not None:
                query = query.where((d.at > after[0]) | and_(d.at == after[0], d.id > after[1]))
            with self._db.read() as session:
                rows = list(session.execute(query.limit(self._page)))
                fines = self._fines(session, site, rows)
            for row in rows:
                yield RecordedCall(
                    at=row.at,
                    linkedid=row.linkedid,
                    extension=row.extension,
                    person_id=row.person_id,
                    department="",
                    dialled=row.dialled,
                    number=row.number,
                    number_class=row.number_class,
                    verdict=row.verdict,
                    rule_id=row.rule_id,
                    fine=fines.get(_key(site, row), ZERO),
                    refused_before_ringing=row.verdict == _DENY,
                )
            if len(rows) < self._page:
                return
            after = (rows[-1].at, rows[-1].id)

    @staticmethod
    def _fines(session: Any, site: str, rows: Sequence[Any]) -> dict[str, Decimal]:
        """Return the fine assessed for the offence of each refused call of a page, by key."""
        keys = [_key(site, row) for row in rows if row.verdict == _DENY and row.rule_id]
        if not keys:
            return {}
        o = offences.c
        query = (
            select(o.key, o.amount, o.charge_multiple, offence_outcomes.c.charge)
            .select_from(
                offences.outerjoin(offence_outcomes, offence_outcomes.c.key == offences.c.key)
            )
            .where(o.key.in_(keys))
        )
        found: dict[str, Decimal] = {}
        for row in session.execute(query):
            extra = yuan(row.charge_multiple * row.charge) if row.charge is not None else ZERO
            found[row.key] = row.amount + extra
        return found

    def prior_offences(
        self,
        *,
        person_id: str,
        extension: str,
        ladder: str,
        since: datetime | None,
        until: datetime,
    ) -> int:
        """Count the offences not excused of a person (or an extension) under ``ladder``."""
        o = offences.c
        excused = select(adjustments.c.offence_id).where(adjustments.c.kind.in_(_EXCUSING))
        query = (
            select(func.count())
            .select_from(offences)
            .where(
                o.person_id == person_id,
                o.ladder == ladder,
                o.at < until,
                o.id.not_in(excused),
            )
        )
        if not person_id:
            query = query.where(o.extension == extension)
        if since is not None:
            query = query.where(o.at >= since)
        with self._db.read() as session:
            return int(session.execute(query).scalar_one())

    def approvals_granted(self, site: str) -> list[Approval]:
        """Return every approval for ``site``, valid until it was revoked or expired, unused."""
        a = approvals.c
        query = select(approvals).where(a.kind.in_([GRANT, REVOKE, EXPIRE])).order_by(a.id)
        found: dict[str, Approval] = {}
        with self._db.read() as session:
            rows = list(session.execute(query))
        for row in rows:
            if row.kind == GRANT:
                found[row.approval_id] = Approval(
                    id=row.approval_id,
                    person_id=row.person_id,
                    granted_by=row.actor,
                    valid_from=row.valid_from,
                    valid_until=row.valid_until,
                    number_class=NumberClass(row.number_class) if row.number_class else None,
                    prefix=row.prefix,
                    max_calls=row.max_calls,
                    reason=row.reason,
                    site=row.site,
                )
                continue
            current = found.get(row.approval_id)
            if current is not None:
                found[row.approval_id] = replace(
                    current, valid_until=min(current.valid_until, row.at)
                )
        return [approval for approval in found.values() if approval.site in ("", site)]


def _key(site: str, row: Any) -> str:
    return call_offence_key(site, row.linkedid, row.rule_id, row.number)
