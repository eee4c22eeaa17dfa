"""Emergency calls are told to the security desk once, and never touched (the tracker's part)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from pbxguard.adapters.emergency_desk import notice_payload
from pbxguard.adapters.policy_file import load_policy
from pbxguard.app.ami_events import translate
from pbxguard.domain.call_events import ChannelEvent, VerdictGiven
from pbxguard.domain.calls import CallTracker
from pbxguard.domain.effects import Effect, HangupChannel, NotifyEmergency, RecordOffence
from pbxguard.domain.evaluate import CallAttempt
from pbxguard.domain.judging import judge
from pbxguard.domain.policy import Mode
from pbxguard.domain.records import CallRef, Layer
from pbxguard.domain.rota import DatedShift, Rota
from pbxguard.simulator.ami_server import load_recording

REFERENCE_SITE = Path(__file__).parents[2] / "src/pbxguard/policies/reference-site.toml"
LOADED = load_policy(REFERENCE_SITE)
SHANGHAI = ZoneInfo("Asia/Shanghai")
GUARD_ROOM = "门卫室（1号门）Guard room, gate 1"


def policy_with_locations(mode: Mode = Mode.ENFORCE) -> CallTracker:
    zone = LOADED.policy.timezone
    rota = Rota(zone).with_shift(
        DatedShift(
            "guard_room",
            "guard-li",
            datetime(2026, 1, 1, tzinfo=zone),
            datetime(2028, 1, 1, tzinfo=zone),
        )
    )
    policy = dataclasses.replace(
        LOADED.policy, mode=mode, rota=rota, locations={"8000": GUARD_ROOM}
    )
    return CallTracker(policy, LOADED.channels)


def events_of(recording: str) -> list[ChannelEvent]:
    """The tracker's events of a recorded session, as the guard translates them."""

    def never() -> datetime:
        raise AssertionError("every recorded event carries its Timestamp")

    found = (translate(e.message, never) for e in load_recording(recording).events)
    return [event for event in found if event is not None]


def notices(effects: list[Effect]) -> list[NotifyEmergency]:
    return [e for e in effects if isinstance(e, NotifyEmergency)]


@pytest.mark.parametrize("mode", [Mode.ENFORCE, Mode.MONITOR])
def test_the_guard_room_calling_110_is_told_once_and_left_alone(mode: Mode) -> None:
    tracker = policy_with_locations(mode)
    effects = tracker.handle_all(events_of("guardroom-emergency-110"))
    [notice] = [n.notice for n in notices(effects)]
    assert not [e for e in effects if isinstance(e, HangupChannel | RecordOffence)]
    assert notice.extension == "8000"
    assert notice.number == "110"
    assert notice.location == GUARD_ROOM
    # The guard-room phone is shared: the guard on duty answers for it.
    assert (notice.person_id, notice.person_name, notice.department) == (
        "guard-li",
        "李保安",
        "保卫部",
    )
    assert notice.caller_name == "Guard room alarm"
    assert notice.layer is Layer.AMI
    assert notice.key == "reference:emergency:1795397626.12"
    # The time the call reached the trunk, as Asterisk stamped it (09:33:46 in Shanghai).
    assert notice.at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S") == "2026-11-23 09:33:46"


def test_an_emergency_call_in_a_burst_is_told_and_the_others_are_not() -> None:
    tracker = policy_with_locations()
    effects = tracker.handle_all(events_of("burst-mixed-calls"))
    assert [(n.notice.extension, n.notice.number) for n in notices(effects)] == [("8000", "119")]
    hung_up = [e.channel for e in effects if isinstance(e, HangupChannel)]
    assert hung_up
    assert not any("119" in channel for channel in hung_up)


def test_no_notice_for_ordinary_calls() -> None:
    tracker = policy_with_locations()
    for recording in ("staff-international-answered", "guardroom-misuse-mobile"):
        assert notices(tracker.handle_all(events_of(recording))) == []


def test_the_pre_dial_verdict_and_the_trunk_leg_of_one_call_notify_once() -> None:
    tracker = policy_with_locations()
    policy = tracker.policy
    events = events_of("guardroom-emergency-110")
    first = events[0]
    at = first.at
    decision = judge(CallAttempt("8000", "110"), policy, now=at)
    ref = CallRef("1795397626.12", "1795397626.12", "PJSIP/8000-00000004")
    from_agi = tracker.handle(VerdictGiven(at, ref, decision))
    [notice] = [n.notice for n in notices(from_agi)]
    assert notice.layer is Layer.AGI
    assert notice.location == GUARD_ROOM
    assert notices(tracker.handle_all(events)) == []


def test_the_payload_names_the_phone_the_place_and_the_local_time() -> None:
    tracker = policy_with_locations()
    [effect] = notices(tracker.handle_all(events_of("guardroom-emergency-110")))
    payload = notice_payload(effect.notice, SHANGHAI)
    assert payload["id"] == "reference:emergency:1795397626.12"
    assert payload["local_time"] == "2026-11-23 09:33:46"
    assert payload["extension"] == "8000"
    assert payload["location"] == GUARD_ROOM
    assert payload["number"] == "110"
    assert payload["message_zh"] == (
        f"紧急呼叫：李保安，分机 8000，{GUARD_ROOM} 于 2026-11-23 09:33:46 拨打 110"
    )
    assert payload["message_en"] == (
        f"emergency call: 李保安, ext. 8000, {GUARD_ROOM} dialled 110 at 2026-11-23 09:33:46"
    )
    assert str(payload["at"]).endswith("+00:00")
    assert datetime.fromisoformat(str(payload["at"])).astimezone(UTC) == effect.notice.at


def test_a_phone_without_a_location_or_owner_still_says_which_extension() -> None:
    tracker = CallTracker(LOADED.policy, LOADED.channels)
    policy = tracker.policy
    at = datetime(2026, 11, 23, 9, 0, tzinfo=SHANGHAI)
    decision = judge(CallAttempt("2999", "120"), policy, now=at)
    effects = tracker.handle(VerdictGiven(at, CallRef("1.1", "1.1", "PJSIP/2999-1"), decision))
    [effect] = notices(effects)
    payload = notice_payload(effect.notice, SHANGHAI)
    assert payload["location"] == ""
    assert payload["message_en"] == "emergency call: unknown caller, ext. 2999 dialled 120 at " + (
        "2026-11-23 09:00:00"
    )


def test_the_policy_file_says_where_each_phone_is(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(
        'schema = 1\nextends = "reference-site"\n[locations]\n'
        f'"8000" = "{GUARD_ROOM}"\n"2001" = "3楼 301室"\n',
        encoding="utf-8",
    )
    policy = load_policy(path).policy
    assert policy.location_of("8000") == GUARD_ROOM
    assert policy.location_of("2001") == "3楼 301室"
    assert policy.location_of("2002") == ""


@pytest.mark.parametrize(
    ("text", "problem"),
    [('"80a0" = "x"', "locations"), ('"8000" = ""', "locations.8000")],
)
def test_a_location_must_name_an_extension_and_a_place(
    tmp_path: Path, text: str, problem: str
) -> None:
    from pbxguard.errors import PolicyError

    path = tmp_path / "site.toml"
    path.write_text(f'schema = 1\nextends = "reference-site"\n[locations]\n{text}\n', "utf-8")
    with pytest.raises(PolicyError, match=problem) as raised:
        load_policy(path)
    assert "site.toml:4" in str(raised.value)
