"""Per-call duties of special lines: dispatch phones in operating hours (DT-3), the alarm
phone's outbound misuse answered for by the guard on duty (EM-1)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from pbxguard.adapters.policy_file import load_policy
from pbxguard.domain.call_events import (
    ChannelCreated,
    ChannelHungUp,
    DialBegan,
    DialEnded,
    ResyncDone,
    ResyncStarted,
    TrackerEvent,
)
from pbxguard.domain.calls import CallTracker
from pbxguard.domain.effects import HangupChannel, RecordCall, RecordOffence
from pbxguard.domain.policy import Line, Mode, Policy

SHANGHAI = ZoneInfo("Asia/Shanghai")
REFERENCE_SITE = Path(__file__).parents[2] / "src/pbxguard/policies/reference-site.toml"
LOADED = load_policy(REFERENCE_SITE)


def dispatch_policy() -> Policy:
    """Make 2002 a dispatch phone whose business numbers are Shanghai numbers."""
    policy = dataclasses.replace(LOADED.policy, mode=Mode.MONITOR)
    dispatch = Line("2002", "调度电话", operating="operating_hours", business_numbers=("021",))
    return dataclasses.replace(policy, lines={**policy.lines, "2002": dispatch})


def tracker_for(policy: Policy) -> CallTracker:
    return CallTracker(policy, LOADED.channels)


def outbound_call(ext: str, number: str, at: datetime, seq: int) -> list[TrackerEvent]:
    uid = f"1795400000.{seq}"
    phone = f"PJSIP/{ext}-{seq:08x}"
    trunk = f"Local/{number}@pstn-{seq:08x};1"
    return [
        ChannelCreated(at, phone, uid, uid, ext, f"Phone {ext}", number),
        DialBegan(
            at, phone, uid, uid, ext, f"Phone {ext}", number, trunk, f"{uid}1", f"{number}@pstn"
        ),
        DialEnded(at, phone, uid, trunk, "ANSWER"),
        ChannelHungUp(at, trunk, f"{uid}1", uid, "16"),
        ChannelHungUp(at, phone, uid, uid, "16"),
    ]


def offences(effects: Sequence[object]) -> list[RecordOffence]:
    return [e for e in effects if isinstance(e, RecordOffence)]


def test_dispatch_phone_private_call_in_operating_hours_is_dt3() -> None:
    tracker = tracker_for(dispatch_policy())
    at = datetime(2026, 11, 23, 10, 0, tzinfo=SHANGHAI)
    [offence] = offences(tracker.handle_all(outbound_call("2002", "13800138000", at, 1)))
    assert offence.draft.rule_id == "DT-3"
    assert offence.draft.person_id == "staff-2002"
    assert offence.draft.number == "13800138000"
    assert "营运时间" in offence.draft.detail_zh


def test_dispatch_phone_business_call_or_call_after_hours_is_no_offence() -> None:
    tracker = tracker_for(dispatch_policy())
    morning = datetime(2026, 11, 23, 10, 0, tzinfo=SHANGHAI)
    night = datetime(2026, 11, 23, 23, 30, tzinfo=SHANGHAI)
    assert offences(tracker.handle_all(outbound_call("2002", "02112345678", morning, 2))) == []
    assert offences(tracker.handle_all(outbound_call("2002", "13800138000", night, 3))) == []
    assert offences(tracker.handle_all(outbound_call("2002", "110", morning, 4))) == []


def test_alarm_phone_misuse_is_answered_for_by_the_guard_on_duty() -> None:
    policy = LOADED.policy
    tracker = tracker_for(policy)
    at = datetime(2026, 11, 23, 2, 0, tzinfo=SHANGHAI)
    effects = tracker.handle_all(outbound_call("8000", "13800138000", at, 5))
    [offence] = offences(effects)
    assert offence.draft.rule_id == "EM-1"
    assert offence.draft.person_id == "guard-li"
    assert [e.channel for e in effects if isinstance(e, HangupChannel)] == [
        "Local/13800138000@pstn-00000005;1"
    ]


def test_a_call_that_starts_while_the_snapshot_is_taken_is_not_ended_by_it() -> None:
    """Events keep flowing during a resync: the snapshot may predate a call it omits."""
    policy = dataclasses.replace(LOADED.policy, mode=Mode.MONITOR)
    tracker = tracker_for(policy)
    at = datetime(2026, 11, 23, 10, 0, tzinfo=SHANGHAI)
    old = outbound_call("2003", "02112345678", at, 7)[:3]  # its hangup was lost while away
    tracker.handle_all(old)
    tracker.handle(ResyncStarted(at))
    new = outbound_call("2001", "13800138000", at, 8)[:3]  # begins after the request
    tracker.handle_all(new)
    ended = tracker.handle(ResyncDone(at))  # the snapshot listed no channel at all
    assert [e.summary.dialled for e in ended if isinstance(e, RecordCall)] == ["02112345678"]
    assert tracker.live_calls == 1
    assert tracker.call_of("PJSIP/2001-00000008") == "1795400000.8"
