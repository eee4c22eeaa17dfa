"""What calls cost, summed per month from the calls table (budgets and the costs report).

Every outbound call is stored with its charge when it ends (`calls.charge`); talk time is the
span from its answer to its end. A month is the span of local calendar days the caller passes
(``[start, end)``), the call counting in the month it started.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Float, and_, case, cast, func, select, tuple_

from pbxguard.adapters.ledger.database import LedgerDatabase, aware
from pbxguard.adapters.ledger.schema import Money, calls
from pbxguard.domain.budgets import SpendLine, spend_line
from pbxguard.domain.periods import month_bounds, month_of
from pbxguard.domain.records import CallSummary


def _talk_ms(backend: str) -> Any:
    """Milliseconds from answer to end, per row (0 for a call never answered)."""
    c = calls.c
    if backend == "sqlite":
        # Stored as naive UTC text; julianday() reads it (microsecond precision survives).
        span = (func.julianday(c.ended_at) - func.julianday(c.answered_at)) * 86_400_000.0
    else:
        span = func.extract("epoch", c.ended_at - c.answered_at) * 1000.0
    return case((c.answered_at.is_(None), 0.0), else_=cast(span, Float()))


def month_spend(
    database: LedgerDatabase,
    *,
    month: str,
    start: datetime,
    end: datetime,
    site: str | None = None,
    other_sites_than: str | None = None,
    ended_before: datetime | None = None,
) -> list[SpendLine]:
    """Return the spend of outbound calls started in ``[start, end)``, labelled ``month``.

    ``site`` keeps one site's calls; ``other_sites_than`` every site's but one (for budgets
    kept for the whole company); ``ended_before`` only calls that ended before then.
    """
    c = calls.c
    charge = func.sum(c.charge, type_=Money()).label("charge")
    talk = func.sum(_talk_ms(database.backend)).label("talk_ms")
    query = (
        select(
            c.site,
            c.person_id,
            c.department,
            c.extension,
            c.number_class,
            func.count().label("calls"),
            charge,
            talk,
        )
        .where(
            c.direction == "outbound",
            c.started_at >= aware(start, "start"),
            c.started_at < aware(end, "end"),
        )
        .group_by(c.site, c.person_id, c.department, c.extension, c.number_class)
    )
    if site is not None:
        query = query.where(c.site == site)
    if other_sites_than is not None:
        query = query.where(c.site != other_sites_than)
    if ended_before is not None:
        query = query.where(c.ended_at < aware(ended_before, "ended_before"))
    with database.read() as session:
        rows = list(session.execute(query))
    return [
        SpendLine(
            month=month,
            person_id=row.person_id,
            department=row.department,
            extension=row.extension,
            number_class=row.number_class,
            charge=row.charge,
            talk=timedelta(milliseconds=round(float(row.talk_ms or 0))),
            calls=int(row.calls),
            site=row.site,
        )
        for row in rows
    ]


def stored_calls(
    database: LedgerDatabase, refs: Iterable[tuple[str, str]], *, site: str
) -> set[tuple[str, str]]:
    """Return which (Linkedid, Uniqueid) of ``refs`` the calls table holds for ``site``."""
    wanted = list(dict.fromkeys(refs))
    found: set[tuple[str, str]] = set()
    c = calls.c
    with database.read() as session:
        for index in range(0, len(wanted), 500):
            chunk = wanted[index : index + 500]
            query = select(c.linkedid, c.uniqueid).where(
                and_(c.site == site, tuple_(c.linkedid, c.uniqueid).in_(chunk))
            )
            found.update((row.linkedid, row.uniqueid) for row in session.execute(query))
    return found


def budget_months(at: datetime, timezone: ZoneInfo) -> list[tuple[str, datetime, datetime]]:
    """Return the previous and the current month at ``at``, with their bounds."""
    local = at.astimezone(timezone)
    previous = month_of(local.replace(day=1) - timedelta(days=1), timezone)
    return [(m, *month_bounds(m, timezone)) for m in (previous, month_of(local, timezone))]


class SpendLedger:
    """The spend budgets start from: the ledger's calls, and the journal's not yet in it.

    ``pending`` are the calls the write-ahead journal held at start-up (some may already be in
    the database: those are counted once). Only calls that ended before ``started_at`` are
    read: the running guard counts the later ones itself.
    """

    def __init__(
        self,
        database: LedgerDatabase,
        *,
        site: str,
        timezone: ZoneInfo,
        started_at: datetime,
        pending: Sequence[CallSummary] = (),
    ) -> None:
        self._db = database
        self._site = site
        self._zone = timezone
        self._started = started_at
        self._pending = [
            call for call in pending if call.direction == "outbound" and call.ended_at < started_at
        ]

    def before_start(self) -> list[SpendLine]:
        """Return this site's spend of the previous and the current month, before the start.

        Raises:
            LedgerError: the database could not be read (the guard tries again later).
        """
        lines: list[SpendLine] = []
        months = budget_months(self._started, self._zone)
        for month, start, end in months:
            lines.extend(
                month_spend(
                    self._db,
                    month=month,
                    start=start,
                    end=end,
                    site=self._site,
                    ended_before=self._started,
                )
            )
        stored = stored_calls(
            self._db,
            [(c.call.linkedid, c.call.uniqueid) for c in self._pending],
            site=self._site,
        )
        first = months[0][1]
        lines.extend(
            spend_line(call, self._zone)
            for call in self._pending
            if (call.call.linkedid, call.call.uniqueid) not in stored and call.started_at >= first
        )
        return lines

    def other_sites(self, now: datetime) -> list[SpendLine]:
        """Return the other sites' spend of the previous and the current month.

        Raises:
            LedgerError: the database could not be read.
        """
        lines: list[SpendLine] = []
        for month, start, end in budget_months(now, self._zone):
            lines.extend(
                month_spend(
                    self._db, month=month, start=start, end=end, other_sites_than=self._site
                )
            )
        return lines
