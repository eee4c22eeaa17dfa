"""The console's reports: fines per department per month, blocked calls by class, the fine
fund's balance, and repeat offenders, each computed in one pass within the viewer's scope.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from pbxguard.app.access import require, scoped_filter
from pbxguard.app.ports import DecisionCountsPort, OffenceBookPort
from pbxguard.domain.access import Permission, Scope, Viewer
from pbxguard.domain.entries import OffenceFilter
from pbxguard.domain.penalties import ZERO
from pbxguard.domain.periods import month_bounds, month_of
from pbxguard.domain.policy import Policy
from pbxguard.domain.records import Outcome

_STOPPED = (Outcome.REFUSED, Outcome.HUNG_UP, Outcome.CUT_ORDERED)


@dataclass(frozen=True, slots=True)
class Offender:
    """Someone with several offences in the period."""

    person_id: str
    name: str
    department: str
    offences: int
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Reports:
    """The figures behind the reports page.

    Attributes:
        months: the months covered, oldest first.
        fines: what each department owes per month (month -> department -> yuan).
        fund: the fine fund's balance at the end of each month (cumulative over the period).
        blocked: calls blocked per number class over the period.
        offenders: people with at least ``repeat_at`` offences, most first.
    """

    months: tuple[str, ...]
    fines: dict[str, dict[str, Decimal]]
    fund: dict[str, Decimal]
    blocked: dict[str, int]
    offenders: tuple[Offender, ...]
    repeat_at: int


def months_back(policy: Policy, now: datetime, count: int) -> tuple[str, ...]:
    """Return the ``count`` months up to ``now``'s, oldest first."""
    year, month = (int(x) for x in month_of(now, policy.timezone).split("-"))
    found = []
    for _ in range(count):
        found.append(f"{year:04d}-{month:02d}")
        month -= 1
        if month == 0:
            year, month = year - 1, 12
    return tuple(reversed(found))


def build_reports(
    offences: OffenceBookPort,
    counts: DecisionCountsPort,
    policy: Policy,
    viewer: Viewer,
    months: tuple[str, ...],
    *,
    repeat_at: int = 3,
) -> Reports:
    """Compute every report for ``months`` within ``viewer``'s scope, in one pass."""
    require(viewer, Permission.VIEW_REPORTS)
    start, _ = month_bounds(months[0], policy.timezone)
    _, end = month_bounds(months[-1], policy.timezone)
    where = scoped_filter(viewer, OffenceFilter(start=start, end=end))
    fines: dict[str, dict[str, Decimal]] = {m: {} for m in months}
    monthly: dict[str, Decimal] = dict.fromkeys(months, ZERO)
    blocked: dict[str, int] = {}
    people: dict[str, list[int | Decimal | str]] = {}
    for entry in offences.iter_offences(where):
        month = month_of(entry.at, policy.timezone)
        owed = entry.amount + entry.department_head_amount
        department = entry.department or "-"
        row = fines.setdefault(month, {})
        row[department] = row.get(department, ZERO) + entry.amount
        monthly[month] = monthly.get(month, ZERO) + owed
        if viewer.scope is not Scope.ALL and entry.final_outcome in _STOPPED:
            blocked[entry.number_class] = blocked.get(entry.number_class, 0) + 1
        if entry.person_id:
            found = people.setdefault(entry.person_id, [entry.person_name, department, 0, ZERO])
            found[2] = int(found[2]) + 1
            found[3] = Decimal(found[3]) + entry.amount
    if viewer.scope is Scope.ALL:
        for number_class, verdict, _approved, count in counts.counts(start, end):
            if verdict != "allow":
                blocked[number_class] = blocked.get(number_class, 0) + count
    fund: dict[str, Decimal] = {}
    running = ZERO
    for month in months:
        running += monthly.get(month, ZERO)
        fund[month] = running
    offenders = sorted(
        (
            Offender(pid, str(v[0]), str(v[1]), int(v[2]), Decimal(v[3]))
            for pid, v in people.items()
            if int(v[2]) >= repeat_at
        ),
        key=lambda o: (-o.offences, -o.amount, o.person_id),
    )
    return Reports(months, fines, fund, blocked, tuple(offenders[:20]), repeat_at)
