"""Monthly call budgets (call accounting): what has been spent, and what a new call may spend.

Theory of operation
-------------------
Every outbound call is priced from the tariff when it ends (`CallSummary.charge`). A budget
(`pbxguard.domain.policy.Budget`) caps the month's spend of one person, department or line, or
of the whole company, in yuan or in minutes of talk, for some classes or for all charged ones.

`BudgetBook` knows the month's spend without asking the ledger per call. It keeps three
parts apart: the calls that ended before this run started (`load`: the ledger's totals for the
current and the previous month, the database's rows plus the calls still in the write-ahead
journal, so a restart neither loses nor counts twice; reloaded until it succeeds if the
database was down), the calls this run saw end (`add_call`), and, for a budget kept for every
site of a shared ledger (``all_sites``), the other sites' spend, reloaded now and then
(``load(..., foreign=True)``). Replacing one part never touches the others.

A call counts in the month it started, in the site's timezone. The spend is kept per (month,
person, department, extension, class) and folded into one bucket per (budget, person /
department / line / company, month), so a verdict looks up one bucket per budget that applies.

Live calls count too: a verdict compares the bucket plus what the answered calls in it have
cost so far with the limit, and the tracker asks `next_due` when a live call could cross it
and `over_limit` then. The charge of a live call rises in steps (one billing increment at a
time); between ticks it can rise by at most one step plus its rate per second, which bounds
when to look again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol
from zoneinfo import ZoneInfo

from pbxguard.domain.effects import AlertKind, Effect, RaiseAlert
from pbxguard.domain.evaluate import Decision
from pbxguard.domain.numbers import NumberClass
from pbxguard.domain.penalties import ZERO, yuan
from pbxguard.domain.periods import month_of as _month_of
from pbxguard.domain.policy import CHARGED_CLASSES, Budget, BudgetScope, BudgetUnit, Policy
from pbxguard.domain.records import CallSummary
from pbxguard.domain.restrictions import Restriction, class_words
from pbxguard.domain.tariff import Rate

#: A live call's charge rises right after its increment ends: look a millisecond later.
_AFTER = timedelta(milliseconds=1)
_SIXTY = Decimal(60)


def month_of(at: datetime, policy: Policy) -> str:
    """Return the month (``YYYY-MM``) ``at`` falls in, in the site's timezone."""
    return _month_of(at, policy.timezone)


def budget_months(at: datetime, policy: Policy) -> tuple[str, str]:
    """Return the previous and the current month at ``at`` (what budgets keep)."""
    local = at.astimezone(policy.timezone)
    previous = local.replace(day=1) - timedelta(days=1)
    return _month_of(previous, policy.timezone), _month_of(local, policy.timezone)


@dataclass(frozen=True, slots=True)
class SpendLine:
    """What calls of one person from one phone to one class cost in one month (a ledger total).

    Attributes:
        month: ``YYYY-MM`` in the site's timezone (of the calls' start).
        person_id: who answered for the calls ("" when unknown).
        department: their department.
        extension: the phone.
        number_class: the class called.
        charge: yuan, from the tariff.
        talk: talk time.
        calls: how many calls.
        site: the site they were made at.
    """

    month: str
    person_id: str
    department: str
    extension: str
    number_class: str
    charge: Decimal
    talk: timedelta
    calls: int = 1
    site: str = ""


def spend_line(summary: CallSummary, timezone: ZoneInfo) -> SpendLine:
    """Return what one finished call adds to the month's spend."""
    return SpendLine(
        month=_month_of(summary.started_at, timezone),
        person_id=summary.person_id,
        department=summary.department,
        extension=summary.extension,
        number_class=summary.number_class,
        charge=summary.charge,
        talk=summary.talk_time,
    )


@dataclass(frozen=True, slots=True)
class Totals:
    """Money and talk time spent."""

    charge: Decimal = ZERO
    talk: timedelta = timedelta(0)

    def plus(self, charge: Decimal, talk: timedelta) -> Totals:
        """Return these totals with a call added."""
        return Totals(self.charge + charge, self.talk + talk)


class Leg(Protocol):
    """A live outbound call leg as the budgets see it (the tracker's attempts satisfy this)."""

    trunk: str
    linkedid: str
    number: str
    decision: Decision
    answered_at: datetime | None
    started_at: datetime


_SpendKey = tuple[str, str, str, str, str]  # month, person, department, extension, class
_Bucket = tuple[str, str, str]  # budget name, scope value, month


@dataclass(frozen=True, slots=True)
class Overrun:
    """A live call to cut: its budget is used up (with what the live calls cost so far)."""

    trunk: str
    budget: Budget
    why: Restriction


@dataclass(slots=True)
class _Live:
    """An answered leg with what the budgets need of it, worked out once."""

    leg: Leg
    month: str
    rate: Rate | None
    buckets: list[_Bucket] = field(default_factory=list)

    def cost(self, now: datetime) -> Totals:
        answered = self.leg.answered_at
        if answered is None:
            return Totals()
        talk = max(now - answered, timedelta(0))
        return Totals(self.rate.charge(talk) if self.rate is not None else ZERO, talk)


def _crossing(
    budget: Budget, legs: Sequence[_Live], remaining: Decimal, now: datetime
) -> datetime | None:
    """Return the earliest moment the legs could use up ``remaining`` (a safe time to look)."""
    if remaining <= 0:
        return now
    if budget.unit is BudgetUnit.MINUTES:
        seconds = float(remaining * _SIXTY) / len(legs)
        return now + timedelta(seconds=seconds)
    steps = ZERO
    per_second = Decimal(0)
    jumps: list[datetime] = []
    for live in legs:
        rate, answered = live.rate, live.leg.answered_at
        if rate is None or rate.per_minute <= 0 or answered is None:
            continue
        increment = timedelta(seconds=rate.increment_seconds)
        steps += rate.per_minute * rate.increment_seconds / _SIXTY
        per_second += rate.per_minute / _SIXTY
        blocks = -(-(now - answered) // increment)
        jumps.append(answered + blocks * increment + _AFTER)
    if not jumps:
        return None
    if remaining > steps:
        # Until then no call can have risen by more than one step plus its rate.
        return now + timedelta(seconds=float((remaining - steps) / per_second))
    return max(min(jumps), now + _AFTER)


@dataclass(slots=True)
class _BucketLive:
    """The answered legs of one bucket, with sums that bound what they cost in O(1).

    A leg's charge at ``t`` is at most its rate times its talk time plus one increment's
    price, so ``per_second * t - weighted + steps`` bounds the whole bucket's live charge and
    ``len(legs) * t - answered`` is its exact talk time (times in epoch seconds). A verdict
    adds the legs up one by one only when that bound comes near the limit.
    """

    legs: dict[str, _Live] = field(default_factory=dict)
    per_second: float = 0.0
    steps: float = 0.0
    weighted: float = 0.0
    answered: float = 0.0

    def add(self, live: _Live) -> None:
        self.legs[live.leg.trunk] = live
        self._count(live, 1)

    def remove(self, trunk: str) -> None:
        live = self.legs.pop(trunk, None)
        if live is not None:
            self._count(live, -1)

    def _count(self, live: _Live, sign: int) -> None:
        answered = live.leg.answered_at
        assert answered is not None
        at = answered.timestamp()
        self.answered += sign * at
        if live.rate is not None:
            rate = float(live.rate.per_minute) / 60
            self.per_second += sign * rate
            self.weighted += sign * rate * at
            self.steps += sign * rate * live.rate.increment_seconds

    def bound(self, unit: BudgetUnit, now: datetime) -> float:
        """Return at least what the legs have spent by ``now`` (yuan, or minutes)."""
        if not self.legs:
            return 0.0
        at = now.timestamp()
        if unit is BudgetUnit.MINUTES:
            return (len(self.legs) * at - self.answered) / 60
        return self.per_second * at - self.weighted + self.steps


#: Room left for the float sums' rounding before a verdict adds the legs up exactly.
_MARGIN = 0.01


@dataclass(slots=True)
class _Group:
    budget: Budget
    scope: str
    month: str
    legs: list[Leg] = field(default_factory=list)


def scope_value(budget: Budget, *, person_id: str, department: str, extension: str) -> str | None:
    """Return whose bucket of ``budget`` a call counts in, or None when it does not count."""
    if budget.per is BudgetScope.COMPANY:
        return "*"
    if budget.per is BudgetScope.PERSON:
        value = person_id
    elif budget.per is BudgetScope.DEPARTMENT:
        value = department
    else:
        value = extension
    if not value or (budget.who and value not in budget.who):
        return None
    return value


def used(budget: Budget, totals: Totals) -> Decimal:
    """Return how much of ``budget`` ``totals`` use (yuan, or minutes)."""
    if budget.unit is BudgetUnit.MONEY:
        return totals.charge
    return Decimal(totals.talk // timedelta(milliseconds=1)) / 60_000


class BudgetBook:
    """The month's spend per budget, and the verdicts and cuts budgets call for."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._before: dict[_SpendKey, Totals] = {}
        self._own: dict[_SpendKey, Totals] = {}
        self._foreign: dict[_SpendKey, Totals] = {}
        self._buckets: dict[_Bucket, Totals] = {}
        self._alerted: set[tuple[str, str, str, str]] = set()
        self._month = ""
        self._answered: dict[str, _Live] = {}
        self._live_in: dict[_Bucket, _BucketLive] = {}

    # -- spend -------------------------------------------------------------------------------

    def set_policy(self, policy: Policy) -> None:
        """Use a new policy's budgets: the buckets are folded again from the spend."""
        self.policy = policy
        self._fold()
        for live in self._answered.values():
            decision = live.leg.decision
            live.rate = policy.tariff.rate_for(
                decision.classification.number, decision.number_class.value
            )
        self._reindex()

    def load(self, lines: Iterable[SpendLine], *, at: datetime, foreign: bool = False) -> None:
        """Replace the spend of this site's calls that ended before this run started (or, with
        ``foreign``, the other sites' spend) by a snapshot from the ledger."""
        target: dict[_SpendKey, Totals] = {}
        for line in lines:
            key = (line.month, line.person_id, line.department, line.extension, line.number_class)
            target[key] = target.get(key, Totals()).plus(line.charge, line.talk)
        if foreign:
            self._foreign = target
        else:
            self._before = target
        self._prune(at)
        self._fold()

    def add_call(self, summary: CallSummary) -> list[Effect]:
        """Count a finished outbound call (the tracker's own: this site's); return the alerts
        of the budgets it took past their share or used up."""
        if summary.direction != "outbound":
            return []
        month = month_of(summary.started_at, self.policy)
        if month > self._month:
            self._prune(summary.ended_at)
        key = (
            month,
            summary.person_id,
            summary.department,
            summary.extension,
            summary.number_class,
        )
        self._own[key] = self._own.get(key, Totals()).plus(summary.charge, summary.talk_time)
        effects: list[Effect] = []
        for budget in self.policy.budgets:
            bucket = self._bucket_of(budget, key)
            if bucket is None:
                continue
            totals = self._buckets.get(bucket, Totals()).plus(summary.charge, summary.talk_time)
            self._buckets[bucket] = totals
            group = _Group(budget, bucket[1], bucket[2])
            effects.extend(
                self._alerts(group, self._in_use(group, summary.ended_at), summary.ended_at)
            )
        return effects

    def spent(self, budget: Budget, scope: str, month: str) -> Totals:
        """Return what the finished calls of one bucket have spent."""
        return self._buckets.get((budget.name, scope, month), Totals())

    def lines(self) -> list[SpendLine]:
        """Return this site's spend as lines, before this run and since (for tests)."""
        merged: dict[_SpendKey, Totals] = dict(self._before)
        for key, totals in self._own.items():
            merged[key] = merged.get(key, Totals()).plus(totals.charge, totals.talk)
        return [
            SpendLine(*key, charge=totals.charge, talk=totals.talk)
            for key, totals in sorted(merged.items())
        ]

    def _bucket_of(self, budget: Budget, key: _SpendKey) -> _Bucket | None:
        month, person_id, department, extension, number_class = key
        try:
            if NumberClass(number_class) not in budget.classes:
                return None
        except ValueError:
            return None
        scope = scope_value(budget, person_id=person_id, department=department, extension=extension)
        return None if scope is None else (budget.name, scope, month)

    def _fold(self) -> None:
        buckets: dict[_Bucket, Totals] = {}
        for budget in self.policy.budgets:
            sources = [self._before, self._own]
            if budget.all_sites:
                sources.append(self._foreign)
            for source in sources:
                for key, totals in source.items():
                    bucket = self._bucket_of(budget, key)
                    if bucket is not None:
                        buckets[bucket] = buckets.get(bucket, Totals()).plus(
                            totals.charge, totals.talk
                        )
        self._buckets = buckets

    def _prune(self, at: datetime) -> None:
        """Forget months before the previous one (a call lives at most across one month end)."""
        previous, current = budget_months(at, self.policy)
        self._month = current
        for source in (self._before, self._own, self._foreign):
            for key in [k for k in source if k[0] < previous]:
                del source[key]
        for bucket in [b for b in self._buckets if b[2] < previous]:
            del self._buckets[bucket]
        self._alerted = {a for a in self._alerted if a[2] >= previous}

    # -- live calls ----------------------------------------------------------------------------

    def leg_answered(self, leg: Leg) -> None:
        """Count an answered outbound leg while it talks, in the buckets it belongs to."""
        decision = leg.decision
        if leg.answered_at is None or decision.number_class is NumberClass.EMERGENCY:
            return
        rate = self.policy.tariff.rate_for(
            decision.classification.number, decision.number_class.value
        )
        live = _Live(leg, month_of(leg.started_at, self.policy), rate)
        self._unindex(leg.trunk)
        self._answered[leg.trunk] = live
        self._index(live)

    def leg_ended(self, trunk: str) -> None:
        """A leg stopped talking (its charge comes with its call's end)."""
        self._unindex(trunk)
        self._answered.pop(trunk, None)

    def _scopes(self, decision: Decision) -> Iterator[tuple[Budget, str]]:
        """Yield the budgets a call of ``decision`` counts against, each with its bucket's scope."""
        for budget in self.policy.budgets:
            if decision.number_class not in budget.classes:
                continue
            scope = scope_value(
                budget,
                person_id=decision.person_id,
                department=decision.department,
                extension=decision.extension,
            )
            if scope is not None:
                yield budget, scope

    def _index(self, live: _Live) -> None:
        for budget, scope in self._scopes(live.leg.decision):
            bucket = (budget.name, scope, live.month)
            live.buckets.append(bucket)
            self._live_in.setdefault(bucket, _BucketLive()).add(live)

    def _unindex(self, trunk: str) -> None:
        live = self._answered.get(trunk)
        if live is None:
            return
        for bucket in live.buckets:
            legs = self._live_in.get(bucket)
            if legs is not None:
                legs.remove(trunk)
                if not legs.legs:
                    del self._live_in[bucket]
        live.buckets.clear()

    def _reindex(self) -> None:
        self._live_in = {}
        for live in self._answered.values():
            live.buckets.clear()
            self._index(live)

    def _in_use(
        self, group: _Group, now: datetime, costs: dict[str, Totals] | None = None
    ) -> Decimal:
        totals = self.spent(group.budget, group.scope, group.month)
        bucket = self._live_in.get((group.budget.name, group.scope, group.month))
        for trunk, live in bucket.legs.items() if bucket is not None else ():
            cost = costs[trunk] if costs is not None else live.cost(now)
            totals = totals.plus(cost.charge, cost.talk)
        return used(group.budget, totals)

    def _surely_below(self, group: _Group, now: datetime) -> bool:
        """Tell, without adding the live legs up, that the bucket is below its limit."""
        budget = group.budget
        bucket = self._live_in.get((budget.name, group.scope, group.month))
        if bucket is None:
            return False  # nothing to add up: the exact figure is as cheap
        finished = used(budget, self.spent(budget, group.scope, group.month))
        bound = float(finished) + bucket.bound(budget.unit, now)
        return bound + _MARGIN * (1 + abs(bound)) < float(budget.limit)

    def _costs(self, now: datetime) -> dict[str, Totals]:
        """What every answered leg has cost so far (once each, however many budgets count it)."""
        return {trunk: live.cost(now) for trunk, live in self._answered.items()}

    def _live_groups(self) -> list[_Group]:
        budgets = {budget.name: budget for budget in self.policy.budgets}
        groups = []
        for (name, scope, month), legs in self._live_in.items():
            budget = budgets.get(name)
            if budget is not None:
                groups.append(
                    _Group(budget, scope, month, [live.leg for live in legs.legs.values()])
                )
        return groups

    # -- verdicts, cuts, alerts --------------------------------------------------------------

    def refusal(self, decision: Decision, now: datetime) -> Restriction | None:
        """Return why a new call is refused for a used-up budget, or None.

        Args:
            decision: the verdict so far (an allow, or a request for a code).
            now: the time of the attempt (its month is the call's); answered calls in the same
                buckets count what they have cost so far.
        """
        number_class = decision.number_class
        if not self.policy.budgets or number_class is NumberClass.EMERGENCY:
            return None
        month = month_of(now, self.policy)
        for budget, scope in self._scopes(decision):
            group = _Group(budget, scope, month)
            if self._surely_below(group, now):
                continue
            in_use = self._in_use(group, now)
            if in_use >= budget.limit:
                return self._exhausted(group, in_use)
        return None

    def over_limit(self, now: datetime, *, skip: set[str]) -> tuple[list[Effect], list[Overrun]]:
        """Return the alerts due and the live calls to cut, their budget being used up.

        ``skip`` names legs already cut: they still count, but are not cut again.
        """
        effects: list[Effect] = []
        overruns: list[Overrun] = []
        costs = self._costs(now)
        for group in self._live_groups():
            in_use = self._in_use(group, now, costs)
            effects.extend(self._alerts(group, in_use, now))
            if in_use < group.budget.limit:
                continue
            why = self._exhausted(group, in_use)
            overruns.extend(
                Overrun(leg.trunk, group.budget, why)
                for leg in group.legs
                if leg.trunk not in skip and leg.decision.allowed
            )
        return effects, overruns

    def alerts_due(self, now: datetime) -> list[Effect]:
        """Return the alerts of buckets past their share by finished calls alone."""
        effects: list[Effect] = []
        budgets = {b.name: b for b in self.policy.budgets}
        for (name, scope, month), totals in sorted(self._buckets.items()):
            budget = budgets.get(name)
            if budget is not None:
                group = _Group(budget, scope, month)
                effects.extend(self._alerts(group, used(budget, totals), now))
        return effects

    def next_due(self, now: datetime, *, skip: set[str]) -> datetime | None:
        """Return when a live call could next use up its budget (when to look again)."""
        due: datetime | None = None
        costs = self._costs(now)
        for group in self._live_groups():
            legs = [self._answered[leg.trunk] for leg in group.legs if leg.trunk not in skip]
            if not legs:
                continue
            remaining = group.budget.limit - self._in_use(group, now, costs)
            at = _crossing(group.budget, legs, remaining, now)
            if at is not None and (due is None or at < due):
                due = at
        return due

    def _exhausted(self, group: _Group, in_use: Decimal) -> Restriction:
        budget = group.budget
        who_zh, who_en = self._whose(group)
        what_zh, what_en = self._what(budget)
        if budget.unit is BudgetUnit.MONEY:
            amount_zh = f"{yuan(in_use)}/{yuan(budget.limit)} 元"
            amount_en = f"{yuan(in_use)} of {yuan(budget.limit)} yuan"
        else:
            amount_zh = f"{in_use:.1f}/{budget.limit} 分钟"
            amount_en = f"{in_use:.1f} of {budget.limit} minutes"
        return Restriction(
            budget.rule_id,
            f"{who_zh}本月{what_zh}预算已用完（{amount_zh}）",
            f"{who_en} has used up this month's {what_en} budget {budget.name!r} ({amount_en})",
        )

    def _alerts(self, group: _Group, in_use: Decimal, now: datetime) -> list[Effect]:
        budget = group.budget
        effects: list[Effect] = []
        levels = [("used_up", budget.limit)]
        if budget.limit > 0:
            levels.insert(0, ("share", budget.limit * budget.alert_at))
        for level, threshold in levels:
            marker = (budget.name, group.scope, group.month, level)
            if in_use < threshold or marker in self._alerted:
                continue
            self._alerted.add(marker)
            effects.append(self._alert(group, level, in_use, now))
        return effects

    def _alert(self, group: _Group, level: str, in_use: Decimal, now: datetime) -> RaiseAlert:
        budget = group.budget
        who_zh, who_en = self._whose(group)
        what_zh, what_en = self._what(budget)
        unit_zh, unit_en = (
            ("元", "yuan") if budget.unit is BudgetUnit.MONEY else ("分钟", "minutes")
        )
        shown = yuan(in_use) if budget.unit is BudgetUnit.MONEY else f"{in_use:.1f}"
        if level == "share":
            share = int(budget.alert_at * 100)
            zh = f"{who_zh}本月{what_zh}已用预算的{share}%以上（{shown}/{budget.limit} {unit_zh}）"
            en = (
                f"{who_en} has used over {share}% of this month's {what_en} budget "
                f"{budget.name!r} ({shown} of {budget.limit} {unit_en})"
            )
        else:
            zh = (
                f"{who_zh}本月{what_zh}预算已用完（{shown}/{budget.limit} {unit_zh}），"
                "新呼叫将被拒绝"
            )
            en = (
                f"{who_en} has used up this month's {what_en} budget {budget.name!r} "
                f"({shown} of {budget.limit} {unit_en}): new calls are refused"
            )
        person = self.policy.people.get(group.scope) if budget.per is BudgetScope.PERSON else None
        extension = group.scope if budget.per is BudgetScope.LINE else ""
        return RaiseAlert(
            key=f"{self.policy.site}:budget:{budget.name}:{group.scope}:{group.month}:{level}",
            kind=AlertKind.BUDGET,
            rule_id=budget.rule_id,
            extension=extension,
            duty_line="",
            name=budget.name,
            since=now,
            at=now,
            repeat=0,
            person_id=person.id if person else "",
            person_name=person.name if person else "",
            message_zh=zh,
            message_en=en,
        )

    def _whose(self, group: _Group) -> tuple[str, str]:
        per = group.budget.per
        if per is BudgetScope.COMPANY:
            return "公司", "the company"
        if per is BudgetScope.DEPARTMENT:
            return group.scope, f"department {group.scope}"
        if per is BudgetScope.LINE:
            return f"分机 {group.scope}", f"extension {group.scope}"
        person = self.policy.people.get(group.scope)
        name = person.name if person else group.scope
        return name, name

    @staticmethod
    def _what(budget: Budget) -> tuple[str, str]:
        if budget.classes == CHARGED_CLASSES:
            return "话费", "call"
        words = [class_words(c) for c in sorted(budget.classes)]
        return "、".join(w[0] for w in words), "/".join(w[1] for w in words)
