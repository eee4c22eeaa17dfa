"""The telesales call quota (QU-1, 001 L519-527): effective calls a day, 5 yuan per missing one.

A telesales person must make 120 effective calls a day, 80 in the first half of the month. A
call is effective when it was answered and talked at least the policy's ``min_talk``. Each day
is assessed once, after it is over: a day short of its quota is one QU-1 offence whose units
are the missing calls (the rule's penalty prices each, 5 yuan by default), keyed by person and
day, so that assessing a day again records nothing twice. Days before the quota ``starts``,
and days off when it counts working days only, are never assessed.

Everything here is pure: the shell counts the calls (from the ledger) and records the offences.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from pbxguard.domain.policy import Policy, Telesales
from pbxguard.domain.records import CallSummary, OffenceDraft, Outcome


@dataclass(frozen=True, slots=True)
class QuotaDay:
    """One person's quota for one day, and how many effective calls they made.

    Attributes:
        person_id: who.
        person_name: their name.
        department: their department.
        day: the day, in the site's timezone.
        required: effective calls the quota asks for that day.
        effective: effective calls made.
    """

    person_id: str
    person_name: str
    department: str
    day: date
    required: int
    effective: int

    @property
    def missing(self) -> int:
        """Return the calls short of the quota (0 when it was met)."""
        return max(self.required - self.effective, 0)


def required_calls(telesales: Telesales, day: date) -> int:
    """Return the effective calls the quota asks for on ``day``."""
    if day.day <= telesales.first_half_last_day:
        return telesales.first_half
    return telesales.daily


def assessed(telesales: Telesales, day: date) -> bool:
    """Tell whether ``day`` is assessed at all (on or after the start, a working day if so set).

    Raises:
        ConfigError: the holiday table does not cover the day's year.
    """
    if day < telesales.starts:
        return False
    return telesales.workdays is None or telesales.workdays.is_workday(day)


def is_effective(call: CallSummary, telesales: Telesales) -> bool:
    """Tell whether ``call`` counts towards the quota: answered and long enough."""
    return (
        call.direction == "outbound"
        and call.answered_at is not None
        and call.talk_time >= telesales.min_talk
    )


def count_effective(calls: Iterable[CallSummary], telesales: Telesales) -> int:
    """Return how many of ``calls`` are effective."""
    return sum(1 for call in calls if is_effective(call, telesales))


def day_bounds(day: date, timezone: ZoneInfo) -> tuple[datetime, datetime]:
    """Return the [start, end) of ``day`` in ``timezone`` (a call counts on the day it began)."""
    start = datetime.combine(day, time(0), tzinfo=timezone)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=timezone)
    return start, end


def days_due(
    telesales: Telesales,
    *,
    now: datetime,
    timezone: ZoneInfo,
    settle: timedelta,
    look_back: int,
) -> list[date]:
    """Return the days to assess at ``now``: over for ``settle`` at least, at most ``look_back``
    days ago, assessed at all; oldest first.

    Raises:
        ConfigError: the holiday table does not cover a day's year.
    """
    today = now.astimezone(timezone).date()
    days: list[date] = []
    for back in range(look_back, 0, -1):
        day = today - timedelta(days=back)
        if day_bounds(day, timezone)[1] + settle > now:
            continue
        if assessed(telesales, day):
            days.append(day)
    return days


def quota_day(
    policy: Policy, telesales: Telesales, person_id: str, day: date, effective: int
) -> QuotaDay:
    """Return ``person_id``'s quota for ``day`` given the effective calls they made."""
    person = policy.people.get(person_id)
    return QuotaDay(
        person_id=person_id,
        person_name=person.name if person else "",
        department=person.department if person else "",
        day=day,
        required=required_calls(telesales, day),
        effective=effective,
    )


def quota_key(site: str, rule_id: str, person_id: str, day: date) -> str:
    """Return the idempotency key of one person's quota offence for one day."""
    return f"{site}:{rule_id}:{person_id}:{day.isoformat()}"


def quota_offence(policy: Policy, telesales: Telesales, result: QuotaDay) -> OffenceDraft | None:
    """Return the QU-1 offence of a day short of its quota, or None when it was met."""
    if result.missing == 0:
        return None
    # The last moment of the day: the offence belongs to that day (and month) in every report.
    _, end = day_bounds(result.day, policy.timezone)
    at = end - timedelta(seconds=1)
    person = policy.people.get(result.person_id)
    extension = person.extensions[0] if person and person.extensions else ""
    day = result.day.isoformat()
    return OffenceDraft(
        key=quota_key(policy.site, telesales.rule_id, result.person_id, result.day),
        rule_id=telesales.rule_id,
        at=at,
        call=None,
        extension=extension,
        person_id=result.person_id,
        person_name=result.person_name,
        department=result.department,
        outcome=Outcome.MONITORED,
        detail_zh=(
            f"{day} 有效电话 {result.effective} 个，定额 {result.required} 个，"
            f"少 {result.missing} 个"
        ),
        detail_en=(
            f"{day}: {result.effective} effective calls of {result.required} required, "
            f"{result.missing} missing"
        ),
        policy_version=policy.version,
        units=result.missing,
    )
