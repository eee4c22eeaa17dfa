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

from collections import OrderedDict
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
        self._pending: OrderedDict[str, tuple[NumberClass, datetime]] = OrderedDict()
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
        return self.budgets.refusal(decision, now, self._legs.values())

    def under_way(
        self, classes: frozenset[NumberClass], now: datetime, *, besides: str = ""
    ) -> int:
        """Count the allowed calls of ``classes`` under way, and those just allowed to dial.

        ``besides`` leaves one call (a Linkedid) out of the count.
        """
        legs = {
            leg.linkedid
            for leg in self._legs.values()
            if leg.decision.allowed and leg.decision.number_class in classes
        }
        legs.discard(besides)
        horizon = now - PENDING_DIAL
        pending = sum(
            1
            for key, (number_class, at) in self._pending.items()
            if number_class in classes and at > horizon and key not in legs and key != besides
        )
        return len(legs) + pending

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
        if not decision.allowed or not self.policy.simultaneous:
            return
        self._pending[call_key] = (decision.number_class, at)
        self._pending.move_to_end(call_key)
        horizon = at - PENDING_DIAL
        while self._pending and next(iter(self._pending.values()))[1] <= horizon:
            self._pending.popitem(last=False)

    def leg_opened(self, leg: Leg) -> None:
        """A trunk leg opened (the tracker's attempt, read live: answered or not)."""
        self._legs[leg.trunk] = leg
        self._pending.pop(leg.linkedid, None)

    def leg_ended(self, trunk: str) -> None:
        """A trunk leg is gone."""
        self._legs.pop(trunk, None)
        self.cut.discard(trunk)

    def call_ended(self, call_key: str, summary: CallSummary | None) -> None:
        """A call is over: count what it cost."""
        self._pending.pop(call_key, None)
        if summary is not None:
            self.budgets.add_call(summary)

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

    def next_due(self, now: datetime) -> datetime | None:
        """Return when `tick` is next needed (a lock ending, a live call reaching its budget)."""
        due = [
            d
            for d in (
                self.locks.next_end(),
                self.budgets.next_due(self._legs.values(), now, skip=self.cut)
                if self.policy.budgets and self._legs
                else None,
            )
            if d is not None
        ]
        return min(due) if due else None

    def tick(self, now: datetime) -> tuple[list[Effect], list[Overrun]]:
        """Apply what is due: ended locks, budget alerts, and the live calls to cut."""
        effects = self.locks.expired(now)
        self.velocity.forget_idle(now)
        if not self.policy.budgets or not self._legs:
            return effects, []
        alerts, overruns = self.budgets.over_limit(self._legs.values(), now, skip=self.cut)
        effects.extend(alerts)
        self.cut.update(o.trunk for o in overruns)
        return effects, overruns
