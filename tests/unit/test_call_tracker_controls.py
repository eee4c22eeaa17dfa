"""The call tracker's controls with memory: velocity locks, budgets and call durations.

Calls are built the way the recorded captures show them (a PJSIP phone dialling a Local
``@pstn`` trunk leg), at times chosen around the controls' edges: the Nth attempt, a lock's end,
a billing increment, a month's end.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

import pytest

from pbxguard.adapters.policy_file import load_policy
from pbxguard.domain.budgets import SpendLine
from pbxguard.domain.call_events import (
    ChannelCreated,
    ChannelHungUp,
    DialBegan,
    DialEnded,
    LocksLoaded,
    SpendLoaded,
    Tick,
    TrackerEvent,
    VerdictGiven,
)
from pbxguard.domain.calls import CUT_IN_CALL, CallTracker
from pbxguard.domain.effects import (
    AlertKind,
    ClearAlert,
    Effect,
    HangupChannel,
    RaiseAlert,
    RecordCall,
    RecordDecision,
    RecordLock,
    RecordOffence,
    WarnCaller,
)
from pbxguard.domain.evaluate import CallAttempt, Verdict
from pbxguard.domain.judging import judge
from pbxguard.domain.numbers import NumberClass
from pbxguard.domain.policy import (
    CHARGED_CLASSES,
    Audience,
    Budget,
    BudgetScope,
    BudgetUnit,
    Direction,
    DurationLimit,
    Mode,
    Policy,
    SimultaneousRule,
    VelocityRule,
)
from pbxguard.domain.records import CallRef, Layer, LockScope, Outcome

SHANGHAI = ZoneInfo("Asia/Shanghai")
REFERENCE_SITE = Path(__file__).parents[2] / "src/pbxguard/policies/reference-site.toml"
LOADED = load_policy(REFERENCE_SITE)
MONDAY = datetime(2026, 11, 23, 10, 0, tzinfo=SHANGHAI)
UK = "00441632960123"
WUHAN = "02787654321"
MOBILE = "13800138000"

E = TypeVar("E")
_numbers = itertools.count(1)


def only(effects: list[Effect], kind: type[E]) -> list[E]:
    return [e for e in effects if isinstance(e, kind)]


def policy(**controls: object) -> Policy:
    """The reference site with only the controls given (none of the bundle's defaults)."""
    base = dataclasses.replace(LOADED.policy, velocity=(), durations=())
    return dataclasses.replace(base, **controls)  # type: ignore[arg-type]


def tracker(p: Policy) -> CallTracker:
    return CallTracker(p, LOADED.channels)


@dataclass
class Call:
    """One outbound call from a phone through a Local trunk leg, as Asterisk reports it."""

    extension: str
    number: str
    n: int = dataclasses.field(default_factory=lambda: next(_numbers))

    @property
    def uniqueid(self) -> str:
        return f"1795400000.{self.n * 10}"

    @property
    def phone(self) -> str:
        return f"PJSIP/{self.extension}-{self.n:08x}"

    @property
    def trunk(self) -> str:
        return f"Local/{self.number}@pstn-{self.n:08x};1"

    def dial(self, at: datetime) -> list[TrackerEvent]:
        uid = self.uniqueid
        return [
            ChannelCreated(at, self.phone, uid, uid, self.extension, "", self.number),
            DialBegan(
                at,
                self.phone,
                uid,
                uid,
                self.extension,
                "",
                self.number,
                self.trunk,
                f"1795400000.{self.n * 10 + 1}",
                f"{self.number}@pstn",
            ),
        ]

    def answer(self, at: datetime) -> list[TrackerEvent]:
        return [DialEnded(at, self.phone, self.uniqueid, self.trunk, "ANSWER")]

    def hang_up(self, at: datetime) -> list[TrackerEvent]:
        uid = self.uniqueid
        return [
            ChannelHungUp(at, self.trunk, f"1795400000.{self.n * 10 + 1}", uid, "16"),
            ChannelHungUp(at, self.phone, uid, uid, "16"),
        ]

    def whole(self, at: datetime, talk: timedelta = timedelta(seconds=5)) -> list[TrackerEvent]:
        answered = at + timedelta(seconds=3)
        return [*self.dial(at), *self.answer(answered), *self.hang_up(answered + talk)]


def ami_verdicts(effects: list[Effect]) -> list[tuple[str, str]]:
    return [
        (d.record.verdict, d.record.rule_id)
        for d in only(effects, RecordDecision)
        if d.record.layer is Layer.AMI
    ]


# --- velocity locks --------------------------------------------------------------------------

BURST = VelocityRule("international-burst", frozenset({NumberClass.INTERNATIONAL}))


def test_the_fifth_attempt_in_ten_minutes_locks_the_extensions_dear_classes() -> None:
    guard = tracker(policy(velocity=(BURST,)))
    locks: list[RecordLock] = []
    for minute in range(5):
        effects = guard.handle_all(Call("9001", UK).whole(MONDAY + timedelta(minutes=minute)))
        assert ami_verdicts(effects) == [("allow", "")]  # the Nth attempt itself goes ahead
        locks.extend(only(effects, RecordLock))
        if minute < 4:
            assert not locks
    [record] = locks
    lock = record.lock
    assert lock.scope is LockScope.EXTENSION
    assert lock.extension == "9001"
    assert lock.person_id == "head-9001"
    assert lock.rule_id == "VL-1"
    assert lock.until - lock.at == timedelta(minutes=60)
    assert NumberClass.EMERGENCY not in lock.classes
    assert {NumberClass.INTERNATIONAL, NumberClass.DOMESTIC_LD} <= lock.classes

    after = MONDAY + timedelta(minutes=6)
    refused = guard.handle_all(Call("9001", UK).dial(after))
    assert ami_verdicts(refused) == [("deny", "VL-1")]
    [decision] = only(refused, RecordDecision)
    assert decision.record.reason_en == (
        "extension 9001 made too many calls: international calls are locked until 11:04"
    )
    assert decision.record.reason_zh == "分机 9001 呼叫过于频繁，国际长途已锁定至 11:04"
    assert [h.rule_id for h in only(refused, HangupChannel)] == ["VL-1"]
    # Long distance is dear too; a mobile call and an emergency call are not locked.
    assert ami_verdicts(guard.handle_all(Call("9001", WUHAN).dial(after))) == [("deny", "VL-1")]
    assert ami_verdicts(guard.handle_all(Call("9001", MOBILE).dial(after))) == [("allow", "")]
    assert ami_verdicts(guard.handle_all(Call("9001", "110").dial(after))) == [("allow", "")]
    # Another extension is not locked.
    assert ami_verdicts(guard.handle_all(Call("2001", "110").dial(after))) == [("allow", "")]


def test_the_lock_raises_an_alert_and_clears_it_when_it_ends() -> None:
    guard = tracker(policy(velocity=(BURST,)))
    effects: list[Effect] = []
    for minute in range(5):
        effects += guard.handle_all(Call("9001", UK).whole(MONDAY + timedelta(minutes=minute)))
    [alert] = only(effects, RaiseAlert)
    assert alert.kind is AlertKind.LOCKED
    assert alert.extension == "9001"
    assert alert.person_name == "Department head"
    assert alert.message_en == (
        "extension 9001 made 5 attempts at international calls within 10 min: its dear "
        "outside calls are locked for 60 min"
    )
    lock_end = alert.at + timedelta(minutes=60)
    assert guard.next_due() == lock_end
    assert guard.handle(Tick(lock_end - timedelta(seconds=1))) == []
    [cleared] = only(guard.handle(Tick(lock_end)), ClearAlert)
    assert cleared.key == alert.key
    assert ami_verdicts(guard.handle_all(Call("9001", UK).dial(lock_end))) == [("allow", "")]


def test_attempts_outside_the_window_do_not_lock() -> None:
    guard = tracker(policy(velocity=(BURST,)))
    effects: list[Effect] = []
    for index in range(8):
        effects += guard.handle_all(Call("9001", UK).whole(MONDAY + timedelta(minutes=3 * index)))
    assert not only(effects, RecordLock)  # never 5 within 10 minutes


def test_refused_attempts_count_too_and_emergency_calls_never() -> None:
    """Staff may not dial abroad (LD-2), but five tries still lock the phone."""
    guard = tracker(policy(velocity=(BURST,)))
    effects: list[Effect] = []
    for minute in range(4):
        effects += guard.handle_all(Call("2001", UK).dial(MONDAY + timedelta(minutes=minute)))
        effects += guard.handle_all(Call("2001", "110").dial(MONDAY + timedelta(minutes=minute)))
    assert not only(effects, RecordLock)
    effects = guard.handle_all(Call("2001", UK).dial(MONDAY + timedelta(minutes=5)))
    [lock] = only(effects, RecordLock)
    assert lock.lock.extension == "2001"
    # The fined denial stays what it was: LD-2, not the lock.
    assert ami_verdicts(effects) == [("deny", "LD-2")]


def test_a_call_judged_before_it_rings_and_seen_again_on_ami_counts_once() -> None:
    p = policy(velocity=(BURST,))
    guard = tracker(p)
    effects: list[Effect] = []
    for minute in range(4):
        call = Call("9001", UK)
        at = MONDAY + timedelta(minutes=minute)
        decision = judge(CallAttempt("9001", UK), p, now=at, controls=guard.controls)
        effects += guard.handle(
            VerdictGiven(at, CallRef(call.uniqueid, call.uniqueid, call.phone), decision)
        )
        effects += guard.handle_all(call.whole(at))
    assert not only(effects, RecordLock)  # four calls, each seen by both layers


def test_locks_from_the_ledger_are_restored_and_a_lift_ends_one() -> None:
    first = tracker(policy(velocity=(BURST,)))
    effects: list[Effect] = []
    for minute in range(5):
        effects += first.handle_all(Call("9001", UK).whole(MONDAY + timedelta(minutes=minute)))
    [record] = only(effects, RecordLock)
    later = MONDAY + timedelta(minutes=20)

    restarted = tracker(policy(velocity=(BURST,)))
    assert restarted.handle(LocksLoaded(later, (record.lock,))) == []
    assert ami_verdicts(restarted.handle_all(Call("9001", UK).dial(later))) == [("deny", "VL-1")]

    cleared = restarted.handle(LocksLoaded(later, (), frozenset({record.lock.id})))
    assert [c.key for c in only(cleared, ClearAlert)] == [record.lock.id]
    assert ami_verdicts(restarted.handle_all(Call("9001", UK).dial(later))) == [("allow", "")]


AT_ONCE = SimultaneousRule(
    "international-at-once", frozenset({NumberClass.INTERNATIONAL}), max_calls=2
)


def test_more_than_k_calls_at_once_locks_the_site() -> None:
    guard = tracker(policy(simultaneous=(AT_ONCE,)))
    first, third = Call("9001", UK), Call("9001", "0033123456789")
    effects = guard.handle_all([*first.dial(MONDAY), *first.answer(MONDAY)])
    effects += guard.handle_all(Call("2001", UK).dial(MONDAY))  # refused (LD-2): not under way
    assert not only(effects, RecordLock)
    second = Call("9001", "004930123456")
    effects = guard.handle_all(second.dial(MONDAY + timedelta(seconds=1)))
    assert ami_verdicts(effects) == [("allow", "")]
    assert not only(effects, RecordLock)
    effects = guard.handle_all(third.dial(MONDAY + timedelta(seconds=2)))
    assert ami_verdicts(effects) == [("deny", "VL-2")]
    [lock] = only(effects, RecordLock)
    assert lock.lock.scope is LockScope.SITE
    assert [h.channel for h in only(effects, HangupChannel)] == [third.trunk]
    assert [a.kind for a in only(effects, RaiseAlert)] == [AlertKind.LOCKED]
    # The site stays locked after the calls end, for every extension; emergency goes through.
    later = MONDAY + timedelta(minutes=5)
    guard.handle_all([*first.hang_up(later), *second.hang_up(later)])
    assert ami_verdicts(guard.handle_all(Call("9001", WUHAN).dial(later))) == [("deny", "VL-2")]
    assert ami_verdicts(guard.handle_all(Call("8001", WUHAN).dial(later))) == [("deny", "VL-2")]
    assert ami_verdicts(guard.handle_all(Call("8001", MOBILE).dial(later))) == [("allow", "")]
    assert ami_verdicts(guard.handle_all(Call("2003", "119").dial(later))) == [("allow", "")]


# --- budgets -----------------------------------------------------------------------------------


def intl_budget(limit: str, **fields: object) -> Budget:
    values: dict[str, object] = {
        "name": "intl",
        "per": BudgetScope.PERSON,
        "unit": BudgetUnit.MONEY,
        "limit": Decimal(limit),
        "classes": frozenset({NumberClass.INTERNATIONAL}),
    }
    values.update(fields)
    return Budget(**values)  # type: ignore[arg-type]


def spent(month: str, amount: str, *, person: str = "head-9001") -> SpendLine:
    return SpendLine(
        month=month,
        person_id=person,
        department="工程部",
        extension="9001",
        number_class="international",
        charge=Decimal(amount),
        talk=timedelta(minutes=1),
    )


def test_a_live_call_is_cut_when_its_budget_runs_out() -> None:
    """International is 3.00 yuan a minute billed per 6 s: 0.30 per started increment."""
    guard = tracker(policy(budgets=(intl_budget("1.00"),)))
    effects = guard.handle(SpendLoaded(MONDAY, (spent("2026-11", "0.50"),)))
    assert effects == []  # 50 %: below the alert share
    call = Call("9001", UK)
    answered = MONDAY + timedelta(seconds=3)
    effects = guard.handle_all([*call.dial(MONDAY), *call.answer(answered)])
    assert ami_verdicts(effects) == [("allow", "")]
    # 0.50 left: no call can spend more than one increment (0.30) plus 0.05 a second before
    # 4 s from now, so that is when to look again.
    assert guard.next_due() == answered + timedelta(seconds=4)
    effects = guard.handle(Tick(answered + timedelta(seconds=4)))
    # 0.50 + 0.30 (the first increment) is 80 %: one alert, once.
    [alert] = only(effects, RaiseAlert)
    assert alert.kind is AlertKind.BUDGET
    assert alert.person_id == "head-9001"
    assert "80%" in alert.message_en
    assert not only(effects, HangupChannel)
    # The second increment starts right after 6 s: 0.50 + 0.60 is over 1.00.
    due = guard.next_due()
    assert due == answered + timedelta(seconds=6, milliseconds=1)
    assert not only(guard.handle(Tick(answered + timedelta(seconds=6))), HangupChannel)
    effects = guard.handle(Tick(due))
    kinds = [type(e) for e in effects]
    assert kinds.index(RecordDecision) < kinds.index(HangupChannel)  # written ahead
    [decision] = only(effects, RecordDecision)
    assert decision.record.layer is Layer.AMI
    assert decision.record.verdict == "deny"
    assert decision.record.rule_id == "BU-1"
    assert decision.record.reason_en == (
        "Department head has used up this month's international calls budget 'intl' "
        "(1.10 of 1.00 yuan)"
    )
    assert decision.record.reason_zh == "Department head本月国际长途预算已用完（1.10/1.00 元）"
    [hangup] = only(effects, HangupChannel)
    assert (hangup.channel, hangup.rule_id) == (call.trunk, "BU-1")
    [used_up] = only(effects, RaiseAlert)
    assert "used up" in used_up.message_en
    # The cut is decided once (the hangup is sent again until the leg is gone), and the
    # call's record says it was cut while talking.
    again = guard.handle(Tick(due + timedelta(seconds=7)))
    assert ami_verdicts(again) == []
    assert [(h.channel, h.attempt) for h in only(again, HangupChannel)] == [(call.trunk, 2)]
    [record] = only(guard.handle_all(call.hang_up(due + timedelta(seconds=1))), RecordCall)
    assert record.summary.outcome == CUT_IN_CALL
    assert record.summary.charge == Decimal("0.60")


def test_a_finished_call_that_takes_a_budget_past_its_share_raises_the_alert_once() -> None:
    guard = tracker(policy(budgets=(intl_budget("10.00"),)))
    guard.handle(SpendLoaded(MONDAY, (spent("2026-11", "7.50"),)))
    first = guard.handle_all(Call("9001", UK).whole(MONDAY, talk=timedelta(seconds=5)))
    assert not only(first, RaiseAlert)  # 7.80: below 80 %
    second = guard.handle_all(
        Call("9001", UK).whole(MONDAY + timedelta(minutes=1), talk=timedelta(seconds=10))
    )
    [record] = only(second, RecordCall)
    assert record.summary.charge == Decimal("0.60")
    [alert] = only(second, RaiseAlert)
    assert alert.kind is AlertKind.BUDGET
    assert alert.message_zh == ("Department head本月国际长途已用预算的80%以上（8.40/10.00 元）")
    third = guard.handle_all(
        Call("9001", UK).whole(MONDAY + timedelta(minutes=2), talk=timedelta(seconds=5))
    )
    assert not only(third, RaiseAlert)  # once a month


def test_a_used_up_budget_refuses_new_calls_of_its_classes_only() -> None:
    p = policy(budgets=(intl_budget("1.00"),))
    guard = tracker(p)
    guard.handle(SpendLoaded(MONDAY, (spent("2026-11", "1.00"),)))
    refused = judge(CallAttempt("9001", UK), p, now=MONDAY, controls=guard.controls)
    assert refused.verdict is Verdict.DENY
    assert refused.rule_id == "BU-1"
    assert not refused.offence  # BU-1 has no fine in the default bundle
    for number in (WUHAN, MOBILE, "110"):
        assert judge(CallAttempt("9001", number), p, now=MONDAY, controls=guard.controls).allowed
    # Another person's budget is their own.
    assert judge(CallAttempt("2001", MOBILE), p, now=MONDAY, controls=guard.controls).allowed
    # The AMI layer refuses the same call.
    assert ami_verdicts(guard.handle_all(Call("9001", UK).dial(MONDAY))) == [("deny", "BU-1")]


def test_a_new_call_counts_what_the_talking_calls_of_its_budget_have_cost_so_far() -> None:
    company = intl_budget("1.00", name="company", per=BudgetScope.COMPANY)
    p = policy(budgets=(company,))
    guard = tracker(p)
    guard.handle(SpendLoaded(MONDAY, (spent("2026-11", "0.50", person="someone-else"),)))
    other = Call("9001", "004930123456")
    guard.handle_all([*other.dial(MONDAY), *other.answer(MONDAY)])
    # 0.50 spent; the live call costs 0.30 a started 6 s.
    for seconds, allowed in ((0, True), (5, True), (6.5, False), (30, False)):
        at = MONDAY + timedelta(seconds=seconds)
        decision = judge(CallAttempt("9001", UK), p, now=at, controls=guard.controls)
        assert decision.allowed is allowed, seconds
        if not allowed:
            assert decision.rule_id == "BU-1"
    # Once the live call is gone (its 0.60 now counted as spent), 1.10 stays over the limit.
    guard.handle_all(other.hang_up(MONDAY + timedelta(seconds=7)))
    later = MONDAY + timedelta(minutes=1)
    assert judge(CallAttempt("9001", UK), p, now=later, controls=guard.controls).rule_id == ("BU-1")


def test_budgets_start_afresh_each_month_and_a_call_counts_in_the_month_it_started() -> None:
    p = policy(budgets=(intl_budget("1.00"),))
    guard = tracker(p)
    october_end = datetime(2026, 10, 31, 23, 59, 45, tzinfo=SHANGHAI)
    guard.handle(SpendLoaded(october_end, (spent("2026-10", "0.50"),)))
    # A call started in October talks past midnight: it is October's, and October runs out.
    call = Call("9001", UK)
    answered = october_end + timedelta(seconds=11)
    guard.handle_all([*call.dial(october_end), *call.answer(answered)])
    guard.handle(Tick(answered + timedelta(seconds=4)))
    due = guard.next_due()
    assert due == answered + timedelta(seconds=6, milliseconds=1)
    assert due.astimezone(SHANGHAI).month == 11
    effects = guard.handle(Tick(due))
    assert [h.rule_id for h in only(effects, HangupChannel)] == ["BU-1"]
    # November's budget is untouched by October: a new call on 1 November goes ahead.
    november = datetime(2026, 11, 1, 0, 0, 10, tzinfo=SHANGHAI)
    assert judge(CallAttempt("9001", UK), p, now=november, controls=guard.controls).allowed
    [record] = only(guard.handle_all(call.hang_up(due + timedelta(milliseconds=5))), RecordCall)
    assert record.summary.charge == Decimal("0.60")
    october = [line for line in guard.controls.budgets.lines() if line.month == "2026-10"]
    assert sum((line.charge for line in october), Decimal(0)) == Decimal("1.10")
    assert judge(CallAttempt("9001", UK), p, now=november, controls=guard.controls).allowed


def test_a_restart_keeps_the_month_and_a_reload_never_counts_twice() -> None:
    p = policy(budgets=(intl_budget("1.00"),))
    guard = tracker(p)
    guard.handle(SpendLoaded(MONDAY, (spent("2026-11", "0.40"),)))
    guard.handle_all(Call("9001", UK).whole(MONDAY, talk=timedelta(seconds=10)))  # 0.60
    assert not judge(CallAttempt("9001", UK), p, now=MONDAY, controls=guard.controls).allowed
    # The ledger's snapshot of the calls before the start is replaced, not added to: the
    # call this run saw end stays counted once.
    guard.handle(SpendLoaded(MONDAY, (spent("2026-11", "0.40"),)))
    assert not judge(CallAttempt("9001", UK), p, now=MONDAY, controls=guard.controls).allowed
    guard.handle(SpendLoaded(MONDAY, (spent("2026-11", "0.30"),)))
    assert judge(CallAttempt("9001", UK), p, now=MONDAY, controls=guard.controls).allowed


def test_a_company_wide_budget_counts_the_other_sites_and_this_sites_only_its_own() -> None:
    shared = intl_budget("1.00", name="everyone", per=BudgetScope.COMPANY, all_sites=True)
    local = intl_budget("1.00", name="here", per=BudgetScope.COMPANY)
    p = policy(budgets=(shared,))
    guard = tracker(p)
    guard.handle(SpendLoaded(MONDAY, (spent("2026-11", "0.90", person="someone-else"),), True))
    assert judge(CallAttempt("9001", UK), p, now=MONDAY, controls=guard.controls).allowed
    guard.handle(SpendLoaded(MONDAY, (spent("2026-11", "1.00", person="x"),), foreign=True))
    assert judge(CallAttempt("9001", UK), p, now=MONDAY, controls=guard.controls).rule_id == (
        "BU-1"
    )
    p = policy(budgets=(local,))
    guard = tracker(p)
    guard.handle(SpendLoaded(MONDAY, (spent("2026-11", "1.00", person="x"),), foreign=True))
    assert judge(CallAttempt("9001", UK), p, now=MONDAY, controls=guard.controls).allowed


def test_a_minutes_budget_shared_by_two_live_calls_runs_out_twice_as_fast() -> None:
    budget = Budget(
        "mobile-minutes",
        BudgetScope.DEPARTMENT,
        BudgetUnit.MINUTES,
        Decimal(2),
        classes=frozenset({NumberClass.MOBILE}),
    )
    guard = tracker(policy(budgets=(budget,)))
    one, two = Call("9001", MOBILE), Call("2001", "13900139000")
    guard.handle_all([*one.dial(MONDAY), *two.dial(MONDAY)])
    guard.handle_all([*one.answer(MONDAY), *two.answer(MONDAY)])
    assert guard.next_due() == MONDAY + timedelta(minutes=1)
    effects = guard.handle(Tick(MONDAY + timedelta(minutes=1)))
    assert sorted(h.channel for h in only(effects, HangupChannel)) == sorted([one.trunk, two.trunk])
    assert {d.record.reason_zh for d in only(effects, RecordDecision)} == {
        "工程部本月手机预算已用完（2.0/2 分钟）"
    }


def test_monitor_mode_records_a_used_up_budget_without_cutting() -> None:
    p = dataclasses.replace(policy(budgets=(intl_budget("0.50"),)), mode=Mode.MONITOR)
    guard = tracker(p)
    call = Call("9001", UK)
    guard.handle_all([*call.dial(MONDAY), *call.answer(MONDAY)])
    effects = guard.handle(Tick(MONDAY + timedelta(seconds=7)))
    assert ami_verdicts(effects) == [("deny", "BU-1")]
    assert not only(effects, HangupChannel)
    assert ami_verdicts(guard.handle(Tick(MONDAY + timedelta(seconds=20)))) == []


def test_every_outbound_call_is_priced_at_its_end() -> None:
    guard = tracker(policy())
    [local] = only(guard.handle_all(Call("2003", "02112345678").whole(MONDAY)), RecordCall)
    assert local.summary.charge == Decimal("0.10")  # one started minute at 0.10
    [abroad] = only(
        guard.handle_all(Call("9001", UK).whole(MONDAY, talk=timedelta(seconds=61))), RecordCall
    )
    assert abroad.summary.charge == Decimal("3.30")  # 11 started 6-second increments
    unanswered = Call("2003", MOBILE)
    effects = guard.handle_all([*unanswered.dial(MONDAY), *unanswered.hang_up(MONDAY)])
    [record] = only(effects, RecordCall)
    assert record.summary.answered_at is None
    assert record.summary.charge == Decimal("0.00")


# --- durations (DU-1, DU-4) --------------------------------------------------------------------

DU1 = DurationLimit(frozenset(CHARGED_CLASSES), limit=timedelta(minutes=3))


def test_a_business_call_past_three_minutes_is_recorded_as_du1_not_cut() -> None:
    guard = tracker(policy(durations=(DU1,)))
    call = Call("9001", WUHAN)
    answered = MONDAY + timedelta(seconds=3)
    guard.handle_all([*call.dial(MONDAY), *call.answer(answered)])
    assert guard.next_due() == answered + timedelta(minutes=3)
    assert guard.handle(Tick(answered + timedelta(minutes=3) - timedelta(seconds=1))) == []
    effects = guard.handle(Tick(answered + timedelta(minutes=3)))
    [offence] = only(effects, RecordOffence)
    draft = offence.draft
    assert draft.rule_id == "DU-1"
    assert draft.outcome is Outcome.MONITORED
    assert draft.person_id == "head-9001"
    assert draft.talk_time == timedelta(minutes=3)
    assert draft.detail_zh == f"9001 拨打 {WUHAN} 通话超过3分钟（已通话3.0分钟）"
    assert not only(effects, HangupChannel)
    # Recorded once, whatever happens next.
    assert not only(guard.handle_all(call.hang_up(answered + timedelta(minutes=9))), RecordOffence)


def test_an_overlong_call_seen_only_at_its_end_is_recorded_then() -> None:
    guard = tracker(policy(durations=(DU1,)))
    effects = guard.handle_all(Call("9001", WUHAN).whole(MONDAY, talk=timedelta(minutes=4)))
    [offence] = only(effects, RecordOffence)
    assert offence.draft.talk_time == timedelta(minutes=4)
    short = guard.handle_all(Call("9001", WUHAN).whole(MONDAY, talk=timedelta(minutes=3)))
    assert not only(short, RecordOffence)  # exactly three minutes is within the limit


def test_a_hard_limit_warns_then_cuts_the_call() -> None:
    limit = dataclasses.replace(
        DU1, cut_after=timedelta(minutes=5), warn_before=timedelta(seconds=30)
    )
    guard = tracker(policy(durations=(limit,)))
    call = Call("9001", WUHAN)
    guard.handle_all([*call.dial(MONDAY), *call.answer(MONDAY)])
    guard.handle(Tick(MONDAY + timedelta(minutes=3)))
    assert guard.next_due() == MONDAY + timedelta(minutes=4, seconds=30)
    [warning] = only(guard.handle(Tick(MONDAY + timedelta(minutes=4, seconds=30))), WarnCaller)
    assert warning.channel == call.phone  # the caller's own channel, not the trunk
    assert warning.seconds_left == 30
    effects = guard.handle(Tick(MONDAY + timedelta(minutes=5)))
    assert ami_verdicts(effects) == [("deny", "DU-1")]
    [decision] = only(effects, RecordDecision)
    assert decision.record.reason_en == "the call reached its 5-minute limit and was hung up"
    [hangup] = only(effects, HangupChannel)
    assert (hangup.channel, hangup.rule_id) == (call.trunk, "DU-1")


def test_monitor_mode_neither_warns_nor_cuts() -> None:
    limit = dataclasses.replace(
        DU1, cut_after=timedelta(minutes=5), warn_before=timedelta(seconds=30)
    )
    p = dataclasses.replace(policy(durations=(limit,)), mode=Mode.MONITOR)
    guard = tracker(p)
    call = Call("9001", WUHAN)
    effects = guard.handle_all([*call.dial(MONDAY), *call.answer(MONDAY)])
    effects += guard.handle(Tick(MONDAY + timedelta(minutes=6)))
    assert [o.draft.rule_id for o in only(effects, RecordOffence)] == ["DU-1"]
    assert not only(effects, WarnCaller)
    assert not only(effects, HangupChannel)


def test_limits_follow_class_and_audience_and_never_time_forbidden_or_emergency_calls() -> None:
    heads = DurationLimit(
        frozenset({NumberClass.DOMESTIC_LD}),
        audience=Audience(roles=frozenset({"department_head"})),
        limit=timedelta(minutes=1),
    )
    guard = tracker(policy(durations=(heads,)))
    long_talk = timedelta(minutes=10)
    assert only(guard.handle_all(Call("9001", WUHAN).whole(MONDAY, long_talk)), RecordOffence)
    assert not only(guard.handle_all(Call("9001", MOBILE).whole(MONDAY, long_talk)), RecordOffence)
    guard = tracker(policy(durations=(DU1,)))
    forbidden = guard.handle_all(Call("2001", UK).whole(MONDAY, long_talk))
    assert [o.draft.rule_id for o in only(forbidden, RecordOffence)] == ["LD-2"]
    emergency = guard.handle_all(Call("8000", "110").whole(MONDAY, long_talk))
    assert not only(emergency, RecordOffence)


def test_a_private_incoming_call_past_two_minutes_is_recorded_as_du4() -> None:
    du4 = DurationLimit(
        frozenset(),
        audience=Audience(lines=frozenset({"2001"})),
        limit=timedelta(minutes=2),
        direction=Direction.INBOUND,
        rule_id="DU-4",
    )
    guard = tracker(policy(durations=(du4,)))
    carrier, phone = "PJSIP/carrier-00000001", "PJSIP/2001-00000002"
    events: list[TrackerEvent] = [
        ChannelCreated(MONDAY, carrier, "1795401000.1", "1795401000.1", "13912345678", "", "2001"),
        DialBegan(
            MONDAY,
            carrier,
            "1795401000.1",
            "1795401000.1",
            "13912345678",
            "",
            "2001",
            phone,
            "1795401000.2",
            "2001",
        ),
        DialEnded(MONDAY + timedelta(seconds=4), carrier, "1795401000.1", phone, "ANSWER"),
    ]
    guard.handle_all(events)
    assert guard.next_due() == MONDAY + timedelta(seconds=4, minutes=2)
    [offence] = only(guard.handle(Tick(MONDAY + timedelta(minutes=3))), RecordOffence)
    assert offence.draft.rule_id == "DU-4"
    assert offence.draft.person_id == "staff-2001"
    assert offence.draft.number == "13912345678"
    assert offence.draft.detail_en.startswith("2001 took a call from 13912345678")
    # An internal call to the same phone is not an incoming call from outside.
    internal = tracker(policy(durations=(du4,)))
    events = [
        ChannelCreated(MONDAY, "PJSIP/2002-00000003", "1.3", "1.3", "2002", "", "2001"),
        DialBegan(
            MONDAY,
            "PJSIP/2002-00000003",
            "1.3",
            "1.3",
            "2002",
            "",
            "2001",
            "PJSIP/2001-00000004",
            "1.4",
            "PJSIP/2001",
        ),
        DialEnded(MONDAY, "PJSIP/2002-00000003", "1.3", "PJSIP/2001-00000004", "ANSWER"),
    ]
    internal.handle_all(events)
    assert not internal.handle(Tick(MONDAY + timedelta(minutes=3)))


@pytest.mark.parametrize("minutes", [2, 3])
def test_the_default_bundle_records_du1_after_three_minutes(minutes: int) -> None:
    guard = tracker(LOADED.policy)
    effects = guard.handle_all(
        Call("9001", WUHAN).whole(MONDAY, talk=timedelta(minutes=minutes, seconds=30))
    )
    assert [o.draft.rule_id for o in only(effects, RecordOffence)] == (
        ["DU-1"] if minutes == 3 else []
    )
