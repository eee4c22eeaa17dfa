"""Offences: priced when stored, excused by adjustments, completed by how the call ended.

An offence is priced when it is stored, from the person's prior offences under the same ladder
in the penalty's window (reckoned in the site's timezone), at or before the offence, not
excused. A batch of offences costs, per (person, ladder), a count of the priors older than
its earliest offence (per penalty window) and one query for the few stored from then on,
whatever its size and however long the person's history. Writers are serialised by the chain
(SQLite's write lock; PostgreSQL's advisory lock per stream), so two offences of one person
never both count zero priors, across several pbxguard processes too.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Row, Select, and_, bindparam, func, select

from pbxguard.adapters.ledger.database import LedgerDatabase, LedgerSession, aware
from pbxguard.adapters.ledger.schema import adjustments, offence_outcomes, offences
from pbxguard.domain.entries import (
    Adjustment,
    AdjustmentKind,
    FineTotal,
    OffenceEntry,
    OffenceFilter,
)
from pbxguard.domain.penalties import ZERO, Fine, Sanction, assess, window_bounds, yuan
from pbxguard.domain.policy import Rule
from pbxguard.domain.records import (
    CallRef,
    Ending,
    OffenceDraft,
    OffenceFact,
    OffenceOutcome,
    Outcome,
)
from pbxguard.errors import LedgerError

_EXCUSING = [kind.value for kind in AdjustmentKind if kind.excuses]
EVERY_OFFENCE = OffenceFilter()
_PAGE = 1000


def _ms(duration: timedelta) -> int:
    return duration // timedelta(milliseconds=1)


def _call_ref(linkedid: str, uniqueid: str, channel: str) -> CallRef | None:
    if not (linkedid or uniqueid or channel):
        return None
    return CallRef(linkedid, uniqueid, channel)


def _adjustment(row: Any) -> Adjustment:
    return Adjustment(
        id=row.id,
        offence_id=row.offence_id,
        kind=AdjustmentKind(row.kind),
        by=row.actor,
        reason=row.reason,
        at=row.at,
    )


def _ending(row: Mapping[str, Any]) -> OffenceOutcome | None:
    if row.get("o_ending") is None:
        return None
    return OffenceOutcome(
        key=row["key"],
        at=row["o_at"],
        ending=Ending(row["o_ending"]),
        answered_at=row["o_answered_at"],
        ended_at=row["o_ended_at"],
        talk_time=timedelta(milliseconds=row["o_talk_ms"]),
        charge=row["o_charge"],
        answer_estimated=bool(row["o_answer_estimated"]),
        cause=row["o_cause"],
    )


def offence_entry(row: Any, found: Sequence[Adjustment] = ()) -> OffenceEntry:
    """Build an `OffenceEntry` from a row of `_listing` (the offence and its ending).

    ``row`` is a database row, or a mapping of the same columns (an offence just written, with
    no ending yet).
    """
    # Columns are read through the row's mapping: an attribute look-up on a SQLAlchemy row
    # costs ten times as much, and an export builds a hundred thousand entries.
    r: Mapping[Any, Any] = row._mapping if isinstance(row, Row) else row
    sanctions = r["sanctions"]
    return OffenceEntry(
        id=r["id"],
        key=r["key"],
        rule_id=r["rule_id"],
        ladder=r["ladder"],
        rule_title_zh=r["rule_title_zh"],
        rule_title_en=r["rule_title_en"],
        citation=r["citation"],
        at=r["at"],
        call=_call_ref(r["linkedid"], r["uniqueid"], r["channel"]),
        extension=r["extension"],
        person_id=r["person_id"],
        person_name=r["person_name"],
        department=r["department"],
        number=r["number"],
        number_class=r["number_class"],
        talk_time=timedelta(milliseconds=r["talk_ms"]),
        outcome=Outcome(r["outcome"]),
        fine=Fine(
            amount=r["amount"],
            sanctions=tuple(Sanction(s) for s in sanctions.split(",")) if sanctions else (),
            escalation_step=r["escalation_step"],
            repeat_offender=bool(r["repeat_offender"]),
            charge=r["charge"],
            department_head_amount=r["department_head_amount"],
        ),
        detail_zh=r["detail_zh"],
        detail_en=r["detail_en"],
        policy_version=r["policy_version"],
        adjustments=tuple(found),
        ending=_ending(r),
        charge_multiple=r["charge_multiple"],
        head_share=r["head_share"],
        site=r["site"],
        units=r["units"],
    )


def _listing() -> Select[Any]:
    o = offence_outcomes.c
    return select(
        offences,
        o.at.label("o_at"),
        o.ending.label("o_ending"),
        o.answered_at.label("o_answered_at"),
        o.ended_at.label("o_ended_at"),
        o.talk_ms.label("o_talk_ms"),
        o.charge.label("o_charge"),
        o.answer_estimated.label("o_answer_estimated"),
        o.cause.label("o_cause"),
    ).select_from(offences.outerjoin(offence_outcomes, offence_outcomes.c.key == offences.c.key))


def _filtered(query: Select[Any], where: OffenceFilter) -> Select[Any]:
    c = offences.c
    if where.person is not None:
        query = query.where(c.person_id == where.person)
    if where.department is not None:
        query = query.where(c.department == where.department)
    if where.rule is not None:
        query = query.where(c.rule_id == where.rule)
    if where.start is not None:
        query = query.where(c.at >= aware(where.start, "start"))
    if where.end is not None:
        query = query.where(c.at < aware(where.end, "end"))
    if where.site is not None:
        query = query.where(c.site == where.site)
    if where.offence_id is not None:
        query = query.where(c.id == where.offence_id)
    return query


# -- writing ---------------------------------------------------------------------------------


def _ladder(rule: Rule) -> str:
    return (rule.penalty.ladder if rule.penalty is not None else "") or rule.id


def _subject(draft: OffenceDraft) -> tuple[str, str]:
    """Whose priors count: the person, or for an unknown person the extension."""
    return (draft.person_id, "") if draft.person_id else ("", draft.extension)


@cache
def _priors(*, by_extension: bool, count: bool, since: bool, before: bool) -> Select[Any]:
    """The subject's offences under a ladder that count (none excused): times or a count.

    A person id names one person across the company, so a person's priors are counted at
    every site. An extension is one phone at one PBX: the same number at another site (several
    PBXes, one ledger) is another phone, so an unknown caller's priors are its own site's.

    Built once per shape (the writer asks for priors in every batch with offences); the
    values are bound when it runs: person, ladder, extension, since, before.
    """
    c = offences.c
    excused = select(adjustments.c.offence_id).where(adjustments.c.kind.in_(_EXCUSING))
    query = select(func.count() if count else c.at).where(
        c.person_id == bindparam("person"), c.ladder == bindparam("ladder"), c.id.not_in(excused)
    )
    if by_extension:
        query = query.where(c.extension == bindparam("extension"), c.site == bindparam("site"))
    if since:
        query = query.where(c.at >= bindparam("since"))
    if before:
        query = query.where(c.at < bindparam("before"))
    return query


def _prior_values(
    site: str, key: tuple[str, str, str], since: datetime | None, before: datetime | None
) -> dict[str, Any]:
    person, extension, ladder = key
    values: dict[str, Any] = {"person": person, "ladder": ladder}
    if not person:
        values["extension"] = extension
        values["site"] = site
    if since is not None:
        values["since"] = since
    if before is not None:
        values["before"] = before
    return values


def _prior_count(
    session: LedgerSession,
    key: tuple[str, str, str],
    since: datetime | None,
    before: datetime,
) -> int:
    query = _priors(by_extension=not key[0], count=True, since=since is not None, before=True)
    return int(session.execute(query, _prior_values(session.site, key, since, before)).scalar_one())


def _prior_times(
    session: LedgerSession, key: tuple[str, str, str], since: datetime
) -> list[datetime]:
    query = _priors(by_extension=not key[0], count=False, since=True, before=False)
    return sorted(
        row.at for row in session.execute(query, _prior_values(session.site, key, since, None))
    )


@dataclass(slots=True)
class _Priors:
    """A batch's view of one subject's priors under one ladder.

    ``before`` counts the stored offences older than the batch's earliest, per window start
    (SQL counts them: a heavy offender's history is never fetched row by row); ``times`` are the
    stored offences from the batch's earliest on (usually none) and those of the batch priced
    so far, sorted.
    """

    before: dict[datetime | None, int]
    times: list[datetime]

    def count(self, start: datetime | None, at: datetime) -> int:
        first = 0 if start is None else bisect.bisect_left(self.times, start)
        return self.before.get(start, 0) + max(bisect.bisect_right(self.times, at) - first, 0)


def record_offences(session: LedgerSession, items: Sequence[OffenceFact]) -> list[OffenceEntry]:
    """Price and store offences not stored yet (by key); return the new entries, in order."""
    for item in items:
        if item.draft.rule_id != item.rule.id:
            raise LedgerError(
                f"offence {item.draft.key} is for {item.draft.rule_id}, not {item.rule.id}"
            )
        aware(item.draft.at, "offence time")
    done = session.existing("offences", "key", [i.draft.key for i in items])
    fresh: list[OffenceFact] = []
    for item in items:
        if item.draft.key not in done:
            done.add(item.draft.key)
            fresh.append(item)
    if not fresh:
        return []
    # Claim the stream before counting priors: another writer of the same site waits here.
    session.head("offences")
    earliest: dict[tuple[str, str, str], datetime] = {}
    starts: dict[tuple[str, str, str], set[datetime | None]] = {}
    for item in fresh:
        penalty = item.rule.penalty
        if penalty is None:
            continue
        start, _ = window_bounds(penalty.window, item.draft.at.astimezone(item.timezone))
        key = (*_subject(item.draft), _ladder(item.rule))
        earliest[key] = min(earliest.get(key, item.draft.at), item.draft.at)
        starts.setdefault(key, set()).add(start)
    priors = {
        key: _Priors(
            {start: _prior_count(session, key, start, first) for start in starts[key]},
            _prior_times(session, key, first),
        )
        for key, first in earliest.items()
    }
    rows = [_priced_row(item, priors) for item in sorted(fresh, key=lambda i: i.draft.at)]
    ids = session.append("offences", rows)
    return [offence_entry(dict(row, id=row_id)) for row, row_id in zip(rows, ids, strict=True)]


def _priced_row(item: OffenceFact, priors: dict[tuple[str, str, str], _Priors]) -> dict[str, Any]:
    draft, rule = item.draft, item.rule
    penalty = rule.penalty
    ladder = _ladder(rule)
    multiple = head_share = ZERO
    if penalty is None:
        fine = Fine(amount=ZERO, sanctions=(), escalation_step=1, charge=draft.charge)
    else:
        key = (*_subject(draft), ladder)
        start, _ = window_bounds(penalty.window, draft.at.astimezone(item.timezone))
        seen = priors[key]
        prior = seen.count(start, draft.at)
        fine = assess(
            penalty,
            prior_offences=prior,
            charge=draft.charge,
            number_class=draft.number_class,
            units=draft.units,
        )
        bisect.insort(seen.times, draft.at)
        step = penalty.steps[min(prior, len(penalty.steps) - 1)]
        multiple = step.charge_multiple
        head_share = penalty.department_head_share
    call = draft.call
    return {
        "key": draft.key,
        "rule_id": rule.id,
        "ladder": ladder,
        "rule_title_zh": rule.title_zh,
        "rule_title_en": rule.title_en,
        "citation": rule.citation,
        "person_id": draft.person_id,
        "person_name": draft.person_name,
        "department": draft.department,
        "extension": draft.extension,
        "number": draft.number,
        "number_class": draft.number_class,
        "amount": fine.amount,
        "sanctions": ",".join(s.value for s in fine.sanctions),
        "escalation_step": fine.escalation_step,
        "repeat_offender": fine.repeat_offender,
        "department_head_amount": fine.department_head_amount,
        "charge": fine.charge,
        "talk_ms": _ms(draft.talk_time),
        "outcome": draft.outcome.value,
        "linkedid": call.linkedid if call else "",
        "uniqueid": call.uniqueid if call else "",
        "channel": call.channel if call else "",
        "detail_zh": draft.detail_zh,
        "detail_en": draft.detail_en,
        "policy_version": draft.policy_version,
        "at": draft.at,
        "charge_multiple": yuan(multiple),
        "head_share": yuan(head_share),
        "units": draft.units,
    }


def record_outcomes(session: LedgerSession, outcomes: Sequence[OffenceOutcome]) -> int:
    """Store how offences' calls ended (once per offence key); return how many were new."""
    done = session.existing("offence_outcomes", "key", [o.key for o in outcomes])
    rows: list[dict[str, Any]] = []
    for outcome in outcomes:
        if outcome.key in done:
            continue
        done.add(outcome.key)
        rows.append(
            {
                "key": outcome.key,
                "at": aware(outcome.at, "outcome time"),
                "ending": outcome.ending.value,
                "answered_at": outcome.answered_at,
                "ended_at": outcome.ended_at,
                "talk_ms": _ms(outcome.talk_time),
                "charge": yuan(outcome.charge),
                "answer_estimated": outcome.answer_estimated,
                "cause": outcome.cause,
            }
        )
    session.append("offence_outcomes", rows, ids=False)
    return len(rows)


# -- the book ----------------------------------------------------------------------------------


class OffenceBook:
    """The offences of the ledger: store, adjust, list, total."""

    def __init__(self, database: LedgerDatabase) -> None:
        self._db = database

    def record(self, draft: OffenceDraft, rule: Rule, *, timezone: ZoneInfo) -> OffenceEntry:
        """Price and store one offence (once per key); return it as stored."""
        with self._db.write() as session:
            record_offences(session, [OffenceFact(draft, rule, timezone)])
            found = self._by_key(session, draft.key)
        assert found is not None
        return found

    def record_outcome(self, outcome: OffenceOutcome) -> bool:
        """Store how an offence's call ended; return True when it was new."""
        with self._db.write() as session:
            return record_outcomes(session, [outcome]) == 1

    def by_key(self, key: str) -> OffenceEntry | None:
        """Return the offence stored under ``key``, if any."""
        with self._db.read() as session:
            return self._by_key(session, key)

    def by_id(self, offence_id: int) -> OffenceEntry | None:
        """Return offence number ``offence_id``, if any."""
        with self._db.read() as session:
            row = session.execute(_listing().where(offences.c.id == offence_id)).first()
            if row is None:
                return None
            return offence_entry(row, self._adjustments(session, [row.id]).get(row.id, ()))

    def _by_key(self, session: LedgerSession, key: str) -> OffenceEntry | None:
        row = session.execute(_listing().where(offences.c.key == key)).first()
        if row is None:
            return None
        return offence_entry(row, self._adjustments(session, [row.id]).get(row.id, ()))

    @staticmethod
    def _adjustments(session: LedgerSession, ids: Sequence[int]) -> dict[int, list[Adjustment]]:
        found: dict[int, list[Adjustment]] = {}
        if not ids:
            return found
        rows = session.execute(
            select(adjustments).where(adjustments.c.offence_id.in_(ids)).order_by(adjustments.c.id)
        )
        for row in rows:
            found.setdefault(row.offence_id, []).append(_adjustment(row))
        return found

    def add_adjustment(
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
        aware(at, "adjustment time")
        if not reason.strip():
            raise LedgerError("an adjustment needs a reason")
        if not by.strip():
            raise LedgerError("an adjustment needs the name of who made it")
        with self._db.write() as session:
            row = session.execute(_listing().where(offences.c.id == offence_id)).first()
            if row is None:
                raise LedgerError(f"no offence {offence_id} in the ledger")
            before = offence_entry(
                row, self._adjustments(session, [offence_id]).get(offence_id, ())
            )
            decides = kind in (AdjustmentKind.APPEAL_ALLOWED, AdjustmentKind.APPEAL_DISMISSED)
            if decides and not before.appeal_pending:
                raise LedgerError(f"offence {offence_id} has no open appeal to decide")
            session.append(
                "adjustments",
                [
                    {
                        "offence_id": offence_id,
                        "kind": kind.value,
                        "actor": by,
                        "reason": reason,
                        "at": at,
                        "site": row.site,
                    }
                ],
            )
            return offence_entry(row, self._adjustments(session, [offence_id]).get(offence_id, ()))

    def iter_offences(self, where: OffenceFilter = EVERY_OFFENCE) -> Iterator[OffenceEntry]:
        """Yield offences, oldest first, page by page (bounded memory for any ledger size)."""
        after: tuple[datetime, int] | None = None
        while True:
            with self._db.read() as session:
                query = _filtered(_listing(), where).order_by(offences.c.at, offences.c.id)
                if after is not None:
                    # The plain bound lets the index on `at` start at the page's first row
                    # instead of scanning every earlier one again.
                    query = query.where(
                        offences.c.at >= after[0],
                        (offences.c.at > after[0])
                        | and_(offences.c.at == after[0], offences.c.id > after[1]),
                    )
                rows = session.execute(query.limit(_PAGE)).all()
                found = self._adjustments(session, [r.id for r in rows])
            for row in rows:
                entry = offence_entry(row, found.get(row.id, ()))
                if where.outcome is None or entry.final_outcome is where.outcome:
                    yield entry
            if len(rows) < _PAGE:
                return
            after = (rows[-1].at, rows[-1].id)

    def offences(self, where: OffenceFilter = EVERY_OFFENCE) -> list[OffenceEntry]:
        """Return offences, oldest first, with their adjustments and endings."""
        return list(self.iter_offences(where))

    def totals_by_person(self, where: OffenceFilter) -> list[FineTotal]:
        """Return what each person owes, largest amount first."""
        return _totals(self.iter_offences(where), lambda e: e.person_id)

    def totals_by_department(self, where: OffenceFilter) -> list[FineTotal]:
        """Return what each department's staff owe, largest amount first."""
        return _totals(self.iter_offences(where), lambda e: e.department)

    def fund_balance(self, where: OffenceFilter = EVERY_OFFENCE) -> Decimal:
        """Return the fines not excused, joint shares included: the staff fund (000 L337)."""
        total = ZERO
        for entry in self.iter_offences(where):
            total += entry.amount + entry.department_head_amount
        return total

    def open_cuts(self, since: datetime) -> list[OffenceEntry]:
        """Return offences whose hangup was ordered since ``since`` and whose ending is unknown."""
        query = (
            _listing()
            .where(
                offences.c.site == self._db.site,
                offences.c.outcome == Outcome.CUT_ORDERED.value,
                offences.c.at >= aware(since, "since"),
                offence_outcomes.c.id.is_(None),
            )
            .order_by(offences.c.at)
        )
        with self._db.read() as session:
            return [offence_entry(row) for row in session.execute(query)]

    def latest(self, where: OffenceFilter, *, limit: int, offset: int = 0) -> list[OffenceEntry]:
        """Return a page of offences, newest first (what a screen shows)."""
        if where.outcome is not None:
            # The final outcome depends on the call's ending: filtered here, not in SQL.
            matching = list(self.iter_offences(where))
            matching.reverse()
            return matching[offset : offset + limit]
        query = (
            _filtered(_listing(), where)
            .order_by(offences.c.at.desc(), offences.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self._db.read() as session:
            rows = list(session.execute(query))
            found = self._adjustments(session, [r.id for r in rows])
        return [offence_entry(row, found.get(row.id, ())) for row in rows]

    def count(self, where: OffenceFilter = EVERY_OFFENCE) -> int:
        """Return how many offences match (SQL-side, for pages and health)."""
        with self._db.read() as session:
            query = _filtered(select(func.count()).select_from(offences), where)
            return int(session.execute(query).scalar_one())


@dataclass(slots=True)
class _Sum:
    offences: int = 0
    amount: Decimal = ZERO
    head: Decimal = ZERO
    excused: int = 0


def _totals(
    entries: Iterator[OffenceEntry], subject_of: Callable[[OffenceEntry], str]
) -> list[FineTotal]:
    sums: dict[str, _Sum] = {}
    for entry in entries:
        total = sums.setdefault(subject_of(entry), _Sum())
        total.offences += 1
        total.amount += entry.amount
        total.head += entry.department_head_amount
        total.excused += 1 if entry.excused else 0
    return sorted(
        (
            FineTotal(subject, t.offences, t.amount, t.head, t.excused)
            for subject, t in sums.items()
        ),
        key=lambda t: (-t.amount, t.subject),
    )
