"""The telesales quota (QU-1): assessed once a day by the daemon, shown by ``pbxguard quota``.

`QuotaWatch` is a task of the daemon, like the register watch: every ``interval`` it looks
for days that are over (by ``settle``, so calls that ran past midnight are in the ledger),
counts each telesales person's effective calls from the ledger (in a worker thread: never SQL
on the event loop) and hands the offences of the days short of their quota to the guard, which
writes them ahead like every other fact. Keys are per person and day: a day assessed twice, by
two passes or after a restart, is recorded once. A day is not assessed while facts still wait
in the journal for the database: they may be that day's calls.

`quota_for_day` answers ``pbxguard quota --day``: every telesales person's count for a day,
whether or not it was short, and the fine recorded for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

import structlog

from pbxguard.app.offence_watch import OffenceWatch
from pbxguard.app.ports import CallLogPort, Clock, OffenceListing
from pbxguard.domain.effects import Effect
from pbxguard.domain.entries import OffenceFilter
from pbxguard.domain.policy import Policy, Telesales
from pbxguard.domain.quota import (
    QuotaDay,
    assessed,
    count_effective,
    day_bounds,
    days_due,
    quota_day,
    quota_key,
    quota_offence,
)
from pbxguard.domain.records import OffenceDraft
from pbxguard.errors import RequestError

log = structlog.get_logger(__name__)

#: How often the running daemon looks for days to assess.
QUOTA_CHECK_SECONDS = 600.0
#: How long after midnight a day is assessed (calls still running at midnight end first).
SETTLE = timedelta(hours=1)
#: How many days back a pass looks (a daemon that was down a few days catches up).
LOOK_BACK_DAYS = 7


@dataclass(frozen=True, slots=True)
class QuotaLine:
    """One person's day for ``pbxguard quota``: the count, and the fine recorded for it.

    Attributes:
        result: required and effective calls.
        assessed: whether the day counts at all (on or after the start; a working day).
        recorded: whether the ledger holds the day's QU-1 offence.
        amount: the fine recorded (0 when none).
    """

    result: QuotaDay
    assessed: bool
    recorded: bool
    amount: Decimal


def _effective_calls(
    calls: CallLogPort, policy: Policy, telesales: Telesales, person: str, day: date
) -> int:
    start, end = day_bounds(day, policy.timezone)
    found = calls.iter_calls(person=person, start=start, end=end, site=policy.site)
    return count_effective(found, telesales)


def quota_for_day(
    policy: Policy, day: date, *, calls: CallLogPort, offences: OffenceListing
) -> list[QuotaLine]:
    """Return every telesales person's quota for ``day`` as the ledger has it.

    Raises:
        RequestError: the policy names no telesales people.
        ConfigError: the holiday table does not cover the day's year.
    """
    telesales = policy.telesales
    if telesales is None:
        raise RequestError(
            "制度中没有电话销售定额 — the policy names no telesales people ([telesales] people)"
        )
    start, end = day_bounds(day, policy.timezone)
    recorded = {
        entry.key: entry.amount
        for entry in offences.iter_offences(
            OffenceFilter(rule=telesales.rule_id, start=start, end=end, site=policy.site)
        )
    }
    counts = assessed(telesales, day)
    lines: list[QuotaLine] = []
    for person in telesales.people:
        effective = _effective_calls(calls, policy, telesales, person, day)
        result = quota_day(policy, telesales, person, day, effective)
        key = quota_key(policy.site, telesales.rule_id, person, day)
        lines.append(QuotaLine(result, counts, key in recorded, recorded.get(key, Decimal("0.00"))))
    return lines


class QuotaWatch(OffenceWatch):
    """Record a QU-1 offence for each telesales person's day short of its quota."""

    failed_event = "quota check failed; will retry"

    def __init__(
        self,
        calls: CallLogPort,
        offences: OffenceListing,
        emit: Callable[[Sequence[Effect]], None],
        policy: Callable[[], Policy],
        clock: Clock,
        *,
        journal_pending: Callable[[], int],
        interval: float = QUOTA_CHECK_SECONDS,
        settle: timedelta = SETTLE,
        look_back: int = LOOK_BACK_DAYS,
    ) -> None:
        super().__init__(emit, policy, clock, interval=interval)
        self._calls = calls
        self._offences = offences
        self._pending = journal_pending
        self._settle = settle
        self._look_back = look_back

    async def check_once(self) -> list[OffenceDraft]:
        """Assess the days that are due; emit and return the offences not recorded before."""
        policy = self._policy()
        telesales = policy.telesales
        if telesales is None:
            return []
        if telesales.rule_id not in policy.rules:
            log.warning("quota watch idle: the policy has no rule", rule=telesales.rule_id)
            return []
        now = self._clock.now()
        due = days_due(
            telesales,
            now=now,
            timezone=policy.timezone,
            settle=self._settle,
            look_back=self._look_back,
        )
        if not due:
            return []
        waiting = self._pending()
        if waiting:
            # Those facts may be calls of the days due: a day is assessed on complete data only.
            log.info(
                "quota check postponed: the journal has facts not in the ledger yet",
                waiting=waiting,
            )
            return []
        recorded = await self._recorded_keys(lambda: self._quota_keys(policy, telesales))
        drafts: list[OffenceDraft] = []
        for day in due:
            for person in telesales.people:
                key = quota_key(policy.site, telesales.rule_id, person, day)
                if key in recorded:
                    continue
                effective = await asyncio.to_thread(
                    _effective_calls, self._calls, policy, telesales, person, day
                )
                result = quota_day(policy, telesales, person, day, effective)
                draft = quota_offence(policy, telesales, result)
                if draft is not None:
                    drafts.append(draft)
                # Assessed on complete data: a day met is not counted again by later passes.
                recorded.add(key)
                log.info(
                    "telesales quota assessed",
                    person_id=person,
                    day=day.isoformat(),
                    required=result.required,
                    effective=result.effective,
                    missing=result.missing,
                )
        self._record(drafts)
        return drafts

    def _quota_keys(self, policy: Policy, telesales: Telesales) -> list[str]:
        since, _ = day_bounds(
            self._clock.now().astimezone(policy.timezone).date()
            - timedelta(days=self._look_back + 1),
            policy.timezone,
        )
        return [
            entry.key
            for entry in self._offences.iter_offences(
                OffenceFilter(rule=telesales.rule_id, start=since, site=policy.site)
            )
        ]
