"""Ledger queries as the auditors ask them: by person, department, month, rule, outcome, site."""

from __future__ import annotations

from collections.abc import Iterator

from pbxguard.app.access import require, scoped_filter
from pbxguard.app.ports import CallLogPort, OffenceBookPort
from pbxguard.domain.access import Permission, Scope, Viewer
from pbxguard.domain.entries import OffenceEntry, OffenceFilter
from pbxguard.domain.periods import month_bounds
from pbxguard.domain.policy import Policy
from pbxguard.domain.records import CallSummary, Outcome
from pbxguard.errors import NotPermitted, RequestError


def offence_filter(
    policy: Policy,
    *,
    person: str | None = None,
    department: str | None = None,
    month: str | None = None,
    rule: str | None = None,
    outcome: str | None = None,
    site: str | None = None,
) -> OffenceFilter:
    """Build the filter for a listing; ``month`` is "YYYY-MM" in the site's timezone.

    Raises:
        ConfigError: the month is not YYYY-MM.
        RequestError: the outcome is not one pbxguard records.
    """
    start = end = None
    if month is not None:
        start, end = month_bounds(month, policy.timezone)
    wanted: Outcome | None = None
    if outcome is not None:
        try:
            wanted = Outcome(outcome)
        except ValueError as error:
            known = ", ".join(o.value for o in Outcome)
            raise RequestError(f"--outcome {outcome!r}: one of {known}") from error
    return OffenceFilter(
        person=person,
        department=department,
        rule=rule,
        start=start,
        end=end,
        site=site,
        outcome=wanted,
    )


def ledger_page(
    book: OffenceBookPort, viewer: Viewer, where: OffenceFilter, *, limit: int, offset: int
) -> tuple[list[OffenceEntry], int]:
    """Return one page of the offences ``viewer`` may see (newest first) and how many match.

    Raises:
        NotPermitted: the viewer sees no offences, or asked outside their scope.
    """
    require(viewer, Permission.VIEW_LEDGER)
    scoped = scoped_filter(viewer, where)
    return book.latest(scoped, limit=limit, offset=offset), book.count(scoped)


def export_offences(
    book: OffenceBookPort, viewer: Viewer, where: OffenceFilter
) -> Iterator[OffenceEntry]:
    """Yield every offence ``viewer`` may see under ``where``, oldest first (for an export).

    Raises:
        NotPermitted: the viewer may not export, or asked outside their scope.
    """
    require(viewer, Permission.EXPORT)
    return book.iter_offences(scoped_filter(viewer, where))


def visible_calls(
    calls: CallLogPort,
    viewer: Viewer,
    policy: Policy,
    month: str,
    *,
    limit: int,
) -> list[CallSummary]:
    """Return up to ``limit`` calls of ``month`` that ``viewer`` may see, oldest first.

    Staff see their own calls (the query carries the person), a department head their
    department's, roles that see everything every call.

    Raises:
        NotPermitted: the viewer sees no calls.
        ConfigError: the month is not YYYY-MM.
    """
    require(viewer, Permission.VIEW_LEDGER)
    start, end = month_bounds(month, policy.timezone)
    scope = viewer.scope
    if scope is Scope.PERSON and viewer.person_id:
        found = calls.iter_calls(person=viewer.person_id, start=start, end=end)
    elif scope is Scope.ALL or (scope is Scope.DEPARTMENT and viewer.department):
        found = calls.iter_calls(start=start, end=end)
    else:
        raise NotPermitted("无权查看通话 — this account does not see calls")
    picked: list[CallSummary] = []
    for call in found:
        if scope is Scope.DEPARTMENT and call.department != viewer.department:
            continue
        picked.append(call)
        if len(picked) >= limit:
            break
    return picked
