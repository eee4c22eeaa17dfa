"""The controls with memory: velocity locks and budgets, as both layers consult them.

`evaluate` decides from the policy alone (roles, lines, approvals, hours, countries). Some
controls need to know what happened before: how many calls an extension just made, how many
are under way site-wide, what a department has spent this month. `CallControls` holds that
state inside the call tracker, which feeds it (legs opening and ending, calls counted, spend
snapshots, locks from the ledger) and asks it for effects (locks imposed, alerts, live calls
to cut). `judge` consults it through `refusal` for a call that would otherwise go ahead, on
the pre-dial layer and on the AMI layer alike. It never refuses an emergency call.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable
from datetime import datetime, timedelta

from pbxguard.domain.budgets import BudgetBook, Leg, Overrun, SpendLine
from pbxguard.domain.effects import Effect, RecordLock
from pbxguard.domain.evaluate import Decision
from pbxguard.domain.locks import (
    LockBook,
    VelocityWatch,
    lock_alert,
    lock_refusal,
    simultaneous_refusal,
    site_lock,
)
from pbxguard.domain.numbers import NumberClass
from pbxguard.domain.policy import Policy
from pbxguard.domain.records import CallSummary, Lock, LockScope
from pbxguard.domain.restrictions import Restriction

#: How long an allowed pre-dial verdict counts as a call about to start (the dialplan dials
#: at once; after this it is taken to have given up).
PENDING_DIAL = timedelta(minutes=2)


class CallControls:
    """Locks, attempt counts, simultaneous calls and budgets: what `judge` asks beyond policy."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.locks = LockBook()
        self.velocity = VelocityWatch(policy)
        self.budgets = BudgetBook(policy)
        self._legs: dict[str, Leg] = {}
        # Calls under way, each once whatever its legs (by Linkedid): those with an allowed
        # leg live, and those allowed before they ring whose leg has not shown up yet.
        self._live_calls: dict[str, NumberClass] = {}
        self._legs_of: dict[str, set[str]] = {}
        self._pending: OrderedDict[str, tuple[NumberClass, datetime]] = OrderedDict()
        self._counts: Counter[NumberClass] = Counter()
        self.cut: set[str] = set()

    def set_policy(self, policy: Policy) -> None:
        """Use a newly loaded policy (locks in force stay; budgets are folded again)."""
        self.policy = policy
        self.velocity.set_policy(policy)
        self.budgets.set_policy(policy)

    # -- the verdict --------------------------------------------------------------------------

    def refusal(self, decision: Decision, now: datetime) -> Restriction | None:
        """Return why a call that would otherwise go ahead is refused now, or None."""
        number_class = decision.number_class
        if number_class is NumberClass.EMERGENCY:
            return None
        lock = self.locks.covering(decision.extension, number_class, now)
        if lock is not None:
            return lock_refusal(lock, number_class, self.policy.timezone)
        for rule in self.policy.simultaneous:
            if number_class in rule.classes and self.under_way(rule.classes, now) >= rule.max_calls:
                return simultaneous_refusal(rule, number_class)
        return self.budgets.refusal(decision, now)

    def under_way(
        self, classes: frozenset[NumberClass], now: datetime, *, besides: str = ""
    ) -> int:
        """Count the allowed calls of ``classes`` under way, and those just allowed to dial.

        ``besides`` leaves one call (a Linkedid) out of the count.
        """
        self._expire_pending(now)
        count = sum(self._counts[number_class] for number_class in classes)
        own = self._live_calls.get(besides) or (
            self._pending[besides][0] if besides in self._pending else None
        )
        if own is not None and own in classes:
            count -= 1
        return count

    def _expire_pending(self, now: datetime) -> None:
        horizon = now - PENDING_DIAL
        while self._pending:
            key, (number_class, at) = next(iter(self._pending.items()))
            if at > horizon:
                return
            del self._pending[key]
            self._counts[number_class] -= 1

    # -- what the tracker tells it ------------------------------------------------------------

    def attempted(self, call_key: str, decision: Decision, at: datetime) -> list[Effect]:
        """Count one call attempt (once per call); return the locks it imposes, with alerts."""
        number_class = decision.number_class
        if number_class in (NumberClass.EMERGENCY, NumberClass.INVALID):
            return []
        imposed = self.velocity.attempt(
            call_key=call_key,
            extension=decision.extension,
            person_id=decision.person_id,
            number_class=number_class,
            at=at,
            locks=self.locks,
        )
        for rule in self.policy.simultaneous:
            if number_class not in rule.classes:
                continue
            if self.locks.holds(LockScope.SITE, "", rule.rule_id, at):
                continue
            if self.under_way(rule.classes, at, besides=call_key) >= rule.max_calls:
                lock = site_lock(self.policy, rule, at)
                self.locks.add(lock)
                imposed.append(lock)
        effects: list[Effect] = []
        for lock in imposed:
            effects.append(RecordLock(lock))
            effects.append(lock_alert(lock, self.policy))
        return effects

    def dial_allowed(self, call_key: str, decision: Decision, at: datetime) -> None:
        """Note a pre-dial allow: the call counts as under way until its leg shows up."""
        if not decision.allowed or call_key in self._live_calls or call_key in self._pending:
            return
        self._pending[call_key] = (decision.number_class, at)
        self._counts[decision.number_class] += 1
        self._expire_pending(at)

    def leg_opened(self, leg: Leg) -> None:
        """A trunk leg opened (the tracker's attempt, read live: answered or not)."""
        self._legs[leg.trunk] = leg
        decision = leg.decision
        if not decision.allowed:
            return
        pending = self._pending.pop(leg.linkedid, None)
        if pending is not None:
            self._counts[pending[0]] -= 1
        if leg.linkedid not in self._live_calls:
            self._live_calls[leg.linkedid] = decision.number_class
            self._counts[decision.number_class] += 1
        self._legs_of.setdefault(leg.linkedid, set()).add(leg.trunk)

    def leg_answered(self, leg: Leg) -> None:
        """A trunk leg was answered: from now on it spends."""
        self.budgets.leg_answered(leg)

    def leg_ended(self, trunk: str) -> None:
        """A trunk leg is gone."""
        leg = self._legs.pop(trunk, None)
        self.budgets.leg_ended(trunk)
        self.cut.discard(trunk)
        if leg is None:
            return
        legs = self._legs_of.get(leg.linkedid)
        if legs is None:
            return
        legs.discard(trunk)
        if not legs:
            del self._legs_of[leg.linkedid]
            number_class = self._live_calls.pop(leg.linkedid, None)
            if number_class is not None:
                self._counts[number_class] -= 1

    def call_ended(self, call_key: str, summary: CallSummary | None) -> list[Effect]:
        """A call is over: count what it cost; return the budget alerts that calls for."""
        pending = self._pending.pop(call_key, None)
        if pending is not None:
            self._counts[pending[0]] -= 1
        return self.budgets.add_call(summary) if summary is not None else []

    def spend_loaded(
        self, lines: Iterable[SpendLine], at: datetime, *, foreign: bool
    ) -> list[Effect]:
        """Take in a spend snapshot from the ledger; return alerts for budgets past their share."""
        self.budgets.load(lines, at=at, foreign=foreign)
        return self.budgets.alerts_due(at)

    def locks_loaded(
        self, active: Iterable[Lock], lifted: Iterable[str], at: datetime
    ) -> list[Effect]:
        """Take in the ledger's locks: restored ones, and those an administrator lifted."""
        return self.locks.refresh(active, lifted, at)

    # -- time -------------------------------------------------------------------------------------

    def budget_due(self, now: datetime) -> datetime | None:
        """Return when a live call could next use up its budget (when `tick` is needed)."""
        return self.budgets.next_due(now, skip=self.cut) if self.policy.budgets else None

    def lock_due(self) -> datetime | None:
        """Return when the next lock ends (when `tick` clears its alert)."""
        return self.locks.next_end()

    def tick(self, now: datetime) -> tuple[list[Effect], list[Overrun]]:
        """Apply what is due: ended locks, budget alerts, and the live calls to cut."""
        effects = self.locks.expired(now)
        self.velocity.forget_idle(now)
        if not self.policy.budgets:
            return effects, []
        alerts, overruns = self.budgets.over_limit(now, skip=self.cut)
        effects.extend(alerts)
        self.cut.update(o.trunk for o in overruns)
        return effects, overruns
