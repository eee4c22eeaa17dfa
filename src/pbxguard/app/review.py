"""The month's review: the long-distance register as each viewer may see it, filling entries
in, and the general manager's sign-off of the register and the unreasonable-charges report.

The general manager reviews the register monthly (000 L711, every call: L817-819) and the
unreasonable-charges report (000 L333). A sign-off records who signed which report of which
month, when, and what it held at that moment (its summary), once per month and report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from pbxguard.app.access import record_change, require, scoped_filter, visible_person
from pbxguard.app.ports import AuditTrailPort, OffenceBookPort, RegisterBookPort, SignOffBookPort
from pbxguard.app.register import fill_entry
from pbxguard.domain.access import Permission, Scope, SignedReport, SignOff, Viewer
from pbxguard.domain.entries import OffenceFilter, RegisterEntry
from pbxguard.domain.penalties import ZERO
from pbxguard.domain.periods import month_bounds, month_of
from pbxguard.domain.policy import Policy
from pbxguard.domain.register import FillState, fill_state
from pbxguard.errors import LedgerError, NotFound, NotPermitted, RequestError


@dataclass(frozen=True, slots=True)
class RegisterMonth:
    """A month of the register as one viewer sees it, with where each entry stands."""

    month: str
    entries: tuple[tuple[RegisterEntry, FillState], ...]

    def count(self, state: FillState) -> int:
        """Return how many entries stand at ``state``."""
        return sum(1 for _, s in self.entries if s is state)


@dataclass(frozen=True, slots=True)
class ChargesMonth:
    """The month's fines (the unreasonable-charges report), as one viewer sees it."""

    month: str
    offences: int
    amount: Decimal
    excused: int


def register_month(
    book: RegisterBookPort, policy: Policy, viewer: Viewer, month: str, *, now: datetime
) -> RegisterMonth:
    """Return ``month``'s register within ``viewer``'s scope (the query carries it).

    Raises:
        NotPermitted: the viewer does not see the register.
        ConfigError: the month is not YYYY-MM.
    """
    require(viewer, Permission.VIEW_LEDGER)
    start, end = month_bounds(month, policy.timezone)
    scope = viewer.scope
    if scope is Scope.ALL:
        entries = book.entries(start, end)
    elif scope is Scope.DEPARTMENT and viewer.department:
        entries = book.entries(start, end, department=viewer.department)
    elif scope is Scope.PERSON and viewer.person_id:
        entries = book.entries(start, end, person=viewer.person_id)
    else:
        raise NotPermitted("无权查看长话登记表 — this account does not see the register")
    within = timedelta(hours=policy.register_fill_hours)
    return RegisterMonth(
        month, tuple((e, fill_state(e, now=now, fill_within=within)) for e in entries)
    )


def fill_own_entry(
    book: RegisterBookPort,
    trail: AuditTrailPort,
    policy: Policy,
    viewer: Viewer,
    entry_id: int,
    *,
    subject: str,
    outcome: str,
    callee_name: str,
    now: datetime,
) -> RegisterEntry:
    """Fill in a register entry the viewer may fill (their own; their department's for a head).

    Raises:
        NotFound: no such entry within the viewer's scope.
        RequestError: an empty subject or outcome.
    """
    require(viewer, Permission.FILL_REGISTER)
    entry = book.by_id(entry_id)
    if entry is None or not visible_person(
        viewer, policy, entry.caller_person_id, entry.department
    ):
        raise NotFound(f"没有登记编号 {entry_id} — no register entry {entry_id}")
    try:
        filled = fill_entry(
            book,
            entry_id=entry_id,
            subject=subject,
            outcome=outcome,
            by=viewer.actor,
            now=now,
            callee_name=callee_name,
        )
    except LedgerError as error:
        raise RequestError(str(error)) from error
    record_change(
        trail, viewer, action="register_filled", target=str(entry_id), detail=subject, now=now
    )
    return filled


def charges_month(
    book: OffenceBookPort, policy: Policy, viewer: Viewer, month: str
) -> ChargesMonth:
    """Return the month's fines within ``viewer``'s scope."""
    start, end = month_bounds(month, policy.timezone)
    where = scoped_filter(viewer, OffenceFilter(start=start, end=end))
    count = excused = 0
    amount = ZERO
    for entry in book.iter_offences(where):
        count += 1
        amount += entry.amount + entry.department_head_amount
        excused += 1 if entry.excused else 0
    return ChargesMonth(month, count, amount, excused)


def sign_month(
    signoffs: SignOffBookPort,
    register: RegisterBookPort,
    offences: OffenceBookPort,
    trail: AuditTrailPort,
    *,
    policy: Policy,
    viewer: Viewer,
    month: str,
    report: str,
    note: str,
    now: datetime,
) -> SignOff:
    """Sign ``month``'s register or charges report (the general manager's review).

    Raises:
        NotPermitted: the viewer may not sign.
        RequestError: an unknown report, a month not begun, or signed already.
    """
    require(viewer, Permission.SIGN_OFF)
    try:
        which = SignedReport(report)
    except ValueError as error:
        raise RequestError(f"unknown report {report!r}: register or charges") from error
    start, _ = month_bounds(month, policy.timezone)
    if start > now:
        raise RequestError(f"月份未到 — {month} has not begun")
    if which is SignedReport.REGISTER:
        seen = register_month(register, policy, viewer, month, now=now)
        summary = (
            f"entries {len(seen.entries)}, filled {seen.count(FillState.FILLED)}, "
            f"unfilled {seen.count(FillState.UNFILLED)}, overdue {seen.count(FillState.OVERDUE)}"
        )
    else:
        charges = charges_month(offences, policy, viewer, month)
        summary = (
            f"offences {charges.offences}, fines {charges.amount} yuan, excused {charges.excused}"
        )
    try:
        signed = signoffs.sign(
            SignOff(month=month, report=which, by=viewer.actor, at=now, note=note, summary=summary)
        )
    except LedgerError as error:
        raise RequestError(str(error)) from error
    record_change(
        trail,
        viewer,
        action="signed_off",
        target=f"{which.value} {month}",
        detail=summary,
        now=now,
    )
    return signed


def current_month(policy: Policy, now: datetime) -> str:
    """Return the month ``now`` falls in, in the site's timezone."""
    return month_of(now, policy.timezone)
