"""Velocity locks: too many calls too fast stop an extension's (or the site's) dear classes.

Toll fraud looks like a burst: a hijacked phone or a cracked account dials abroad again and
again, or many lines at once. Two kinds of rule catch it (policy ``[[velocity]]`` and
``[[simultaneous]]``):

- per extension: the ``attempts``-th attempt at a counted class within ``within`` (allowed or
  refused, each call once whatever the layer) locks that extension's ``lock_classes`` for
  ``lock_for``;
- site-wide: a call that would make more than ``max_calls`` calls of the counted classes at
  once is refused, and the site's ``lock_classes`` are locked for ``lock_for``.

A lock is a ledger fact (`Lock`), written ahead, so it survives a restart; an administrator
ends one early with ``pbxguard lock lift``, which the running guard learns from the ledger
(`LockBook.refresh`). Emergency numbers are never counted and never locked.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from pbxguard.domain.effects import AlertKind, ClearAlert, Effect, RaiseAlert
from pbxguard.domain.numbers import NumberClass
from pbxguard.domain.policy import Policy, SimultaneousRule, VelocityRule
from pbxguard.domain.records import Lock, LockLift, LockScope
from pbxguard.domain.restrictions import Restriction, class_words

#: Calls remembered as counted, so a call judged by both layers counts once.
_COUNTED_CAPACITY = 10_000


def _minutes(span: timedelta) -> int:
    return int(span.total_seconds() // 60)


def _classes_text(classes: Iterable[NumberClass]) -> tuple[str, str]:
    words = [class_words(c) for c in sorted(classes)]
    return "、".join(w[0] for w in words), ", ".join(w[1] for w in words)


def lock_refusal(lock: Lock, number_class: NumberClass, timezone: ZoneInfo) -> Restriction:
    """Return the refusal a lock gives a call (its end in the site's time)."""
    until = lock.until.astimezone(timezone).strftime("%H:%M")
    what_zh, what_en = class_words(number_class)
    if lock.scope is LockScope.SITE:
        return Restriction(
            lock.rule_id,
            f"全站{what_zh}因呼叫异常已锁定至 {until}",
            f"{what_en} are locked site-wide until {until} after a burst of calls",
        )
    return Restriction(
        lock.rule_id,
        f"分机 {lock.extension} 呼叫过于频繁，{what_zh}已锁定至 {until}",
        f"extension {lock.extension} made too many calls: {what_en} are locked until {until}",
    )


def lock_alert(lock: Lock, policy: Policy) -> RaiseAlert:
    """Return the alert raised when a lock is imposed."""
    person = policy.people.get(lock.person_id)
    return RaiseAlert(
        key=lock.id,
        kind=AlertKind.LOCKED,
        rule_id=lock.rule_id,
        extension=lock.extension,
        duty_line="",
        name=lock.extension or policy.site,
        since=lock.at,
        at=lock.at,
        repeat=0,
        person_id=lock.person_id,
        person_name=person.name if person else "",
        message_zh=lock.reason_zh,
        message_en=lock.reason_en,
    )


def lock_cleared(lock: Lock, at: datetime) -> ClearAlert:
    """Return the clearing of a lock's alert (it ended, or was lifted)."""
    return ClearAlert(
        key=lock.id,
        kind=AlertKind.LOCKED,
        rule_id=lock.rule_id,
        extension=lock.extension,
        duty_line="",
        name=lock.extension or "site",
        since=lock.at,
        at=at,
    )


@dataclass(frozen=True, slots=True)
class LockEntry:
    """A lock as the ledger has it, with its lift if an administrator lifted it.

    ``number`` is its 编号 in listings (the ledger row's id), shorter to type than its id.
    """

    lock: Lock
    site: str
    lift: LockLift | None = None
    number: int = 0

    def in_force(self, now: datetime) -> bool:
        """Tell whether the lock still stops calls at ``now``."""
        return self.lift is None and self.lock.at <= now < self.lock.until


class LockBook:
    """The locks in force: imposed here, restored from the ledger, ended or lifted."""

    def __init__(self, locks: Iterable[Lock] = ()) -> None:
        self._locks: dict[str, Lock] = {}
        # Looked up on every verdict: by extension ("" for the site's locks).
        self._by_extension: dict[str, dict[str, Lock]] = {}
        self._next_end: datetime | None = None
        self._changed = True
        for lock in locks:
            self.add(lock)

    @property
    def locks(self) -> tuple[Lock, ...]:
        """The locks held (some may have ended; `expired` takes them out)."""
        return tuple(self._locks.values())

    def covering(self, extension: str, number_class: NumberClass, now: datetime) -> Lock | None:
        """Return a lock that refuses a call of ``number_class`` from ``extension`` now."""
        if not self._locks or number_class is NumberClass.EMERGENCY:
            return None
        for key in (extension, ""):
            for lock in self._by_extension.get(key, {}).values():
                if lock.covers(extension, number_class, now):
                    return lock
        return None

    def holds(self, scope: LockScope, extension: str, rule_id: str, now: datetime) -> bool:
        """Tell whether a lock of ``rule_id`` on this extension (or the site) is in force."""
        key = "" if scope is LockScope.SITE else extension
        return any(
            lock.scope is scope and lock.rule_id == rule_id and lock.at <= now < lock.until
            for lock in self._by_extension.get(key, {}).values()
        )

    def add(self, lock: Lock) -> None:
        """Hold a new lock."""
        self._locks[lock.id] = lock
        key = "" if lock.scope is LockScope.SITE else lock.extension
        self._by_extension.setdefault(key, {})[lock.id] = lock
        self._changed = True

    def _drop(self, lock_id: str) -> Lock | None:
        lock = self._locks.pop(lock_id, None)
        if lock is not None:
            key = "" if lock.scope is LockScope.SITE else lock.extension
            held = self._by_extension.get(key, {})
            held.pop(lock_id, None)
            if not held:
                self._by_extension.pop(key, None)
            self._changed = True
        return lock

    def refresh(self, active: Iterable[Lock], lifted: Iterable[str], at: datetime) -> list[Effect]:
        """Take in the ledger's view: its active locks, and the ids lifted by an administrator.

        Locks imposed here that the ledger does not list yet are kept (they may still be on
        their way through the journal); a lifted one is dropped and its alert cleared.
        """
        effects: list[Effect] = []
        for lock_id in lifted:
            lock = self._drop(lock_id)
            if lock is not None:
                effects.append(lock_cleared(lock, at))
        gone = set(lifted)
        for lock in active:
            if lock.id not in gone and lock.id not in self._locks:
                self.add(lock)
        return effects

    def expired(self, now: datetime) -> list[Effect]:
        """Drop the locks whose time is up; return the clearing of their alerts."""
        if not self._changed and (self._next_end is None or now < self._next_end):
            return []  # no lock added or dropped since the next end was worked out
        ended = [lock for lock in self._locks.values() if lock.until <= now]
        for lock in ended:
            self._drop(lock.id)
        return [lock_cleared(lock, lock.until) for lock in ended]

    def next_end(self) -> datetime | None:
        """Return when the next lock ends by itself (worked out again only after a change)."""
        if self._changed:
            self._next_end = min((lock.until for lock in self._locks.values()), default=None)
            self._changed = False
        return self._next_end


class VelocityWatch:
    """Count attempts per extension (each call once) and impose locks when a rule says so."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._times: dict[tuple[str, str], deque[datetime]] = {}
        self._counted: OrderedDict[str, None] = OrderedDict()

    def set_policy(self, policy: Policy) -> None:
        """Use a new policy's rules (counts of rules still in it are kept)."""
        names = {rule.name for rule in policy.velocity}
        self._times = {key: times for key, times in self._times.items() if key[0] in names}
        self.policy = policy

    def attempt(
        self,
        *,
        call_key: str,
        extension: str,
        person_id: str,
        number_class: NumberClass,
        at: datetime,
        locks: LockBook,
    ) -> list[Lock]:
        """Count one call attempt; return the locks it imposes (none, usually).

        ``call_key`` identifies the call (its Linkedid): the pre-dial layer and the AMI layer
        both report it, and it counts once.
        """
        if number_class is NumberClass.EMERGENCY or not extension:
            return []
        if call_key in self._counted:
            return []
        self._counted[call_key] = None
        while len(self._counted) > _COUNTED_CAPACITY:
            self._counted.popitem(last=False)
        imposed: list[Lock] = []
        for rule in self.policy.velocity:
            if number_class not in rule.classes:
                continue
            times = self._times.setdefault((rule.name, extension), deque())
            times.append(at)
            horizon = at - rule.within
            while times and times[0] <= horizon:
                times.popleft()
            if len(times) < rule.attempts:
                continue
            if locks.holds(LockScope.EXTENSION, extension, rule.rule_id, at):
                continue
            lock = extension_lock(self.policy, rule, extension, person_id, at)
            locks.add(lock)
            imposed.append(lock)
            times.clear()
        return imposed

    def forget_idle(self, now: datetime) -> None:
        """Drop counts that no rule's window still reaches (keeps memory flat)."""
        windows = {rule.name: rule.within for rule in self.policy.velocity}
        for key in [k for k, t in self._times.items() if not t or t[-1] <= now - windows[k[0]]]:
            del self._times[key]


def extension_lock(
    policy: Policy, rule: VelocityRule, extension: str, person_id: str, at: datetime
) -> Lock:
    """Return the lock a velocity rule puts on an extension at ``at``."""
    what_zh, what_en = _classes_text(rule.classes)
    minutes = _minutes(rule.within)
    lock_minutes = _minutes(rule.lock_for)
    return Lock(
        id=f"{policy.site}:lock:{extension}:{rule.name}:{at.isoformat()}",
        scope=LockScope.EXTENSION,
        extension=extension,
        person_id=person_id,
        classes=rule.lock_classes - {NumberClass.EMERGENCY},
        rule_id=rule.rule_id,
        at=at,
        until=at + rule.lock_for,
        reason_zh=(
            f"分机 {extension} 在{minutes}分钟内拨打{what_zh}达{rule.attempts}次，"
            f"外线高价呼叫锁定{lock_minutes}分钟"
        ),
        reason_en=(
            f"extension {extension} made {rule.attempts} attempts at {what_en} within "
            f"{minutes} min: its dear outside calls are locked for {lock_minutes} min"
        ),
    )


def site_lock(policy: Policy, rule: SimultaneousRule, at: datetime) -> Lock:
    """Return the lock a simultaneous-calls rule puts on the whole site at ``at``."""
    what_zh, what_en = _classes_text(rule.classes)
    lock_minutes = _minutes(rule.lock_for)
    return Lock(
        id=f"{policy.site}:lock:site:{rule.name}:{at.isoformat()}",
        scope=LockScope.SITE,
        extension="",
        person_id="",
        classes=rule.lock_classes - {NumberClass.EMERGENCY},
        rule_id=rule.rule_id,
        at=at,
        until=at + rule.lock_for,
        reason_zh=(
            f"全站同时进行的{what_zh}超过{rule.max_calls}路，外线高价呼叫锁定{lock_minutes}分钟"
        ),
        reason_en=(
            f"more than {rule.max_calls} {what_en} at once site-wide: dear outside calls are "
            f"locked for {lock_minutes} min"
        ),
    )


def simultaneous_refusal(rule: SimultaneousRule, number_class: NumberClass) -> Restriction:
    """Return the refusal of a call that would exceed a simultaneous-calls limit."""
    what_zh, what_en = class_words(number_class)
    return Restriction(
        rule.rule_id,
        f"全站同时进行的{what_zh}已达上限（{rule.max_calls}路）",
        f"the site already has {rule.max_calls} {what_en} under way, the most allowed at once",
    )
