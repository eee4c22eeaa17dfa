"""The guard against the simulated PBX replaying recorded Asterisk sessions."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from pbxguard.domain.penalties import Sanction
from pbxguard.domain.policy import Mode
from pbxguard.domain.records import Outcome
from tests.support.guard import guard_against

# recording -> (trunk leg the guard must hang up in enforce mode, rule, amount) or None
FORBIDDEN = {
    "staff-international-answered": (
        "Local/00441632960123@pstn-00000000;1",
        "LD-2",
        Decimal("500.00"),
    ),
    "staff-premium-168": ("Local/16812345678@pstn-00000001;1", "PR-1", Decimal("50.00")),
    "staff-domestic-long-distance": (
        "Local/01087654321@pstn-00000002;1",
        "LD-2",
        Decimal("50.00"),
    ),
    "guardroom-misuse-mobile": ("Local/13800138000@pstn-00000005;1", "EM-1", Decimal("50.00")),
    "hk-call-cut-by-ami-hangup": (
        "Local/0085223456789@pstn-00000007;1",
        "LD-2",
        Decimal("100.00"),
    ),
}
ALLOWED = ["head-domestic-long-distance", "guardroom-emergency-110", "chinese-caller-name-local"]


@pytest.mark.parametrize("recording", sorted(FORBIDDEN))
async def test_enforce_mode_hangs_up_the_forbidden_trunk_leg_and_fines_once(
    recording: str, tmp_path: Path
) -> None:
    channel, rule, amount = FORBIDDEN[recording]
    async with guard_against([recording], tmp_path) as run:
        await run.settle()
        offences = await run.offences()
        calls = await run.calls()
    assert run.hangups() == [channel]
    assert [(o.rule_id, o.amount, o.final_outcome) for o in offences] == [
        (rule, amount, Outcome.HUNG_UP)
    ]
    assert offences[0].call is not None
    assert offences[0].citation
    # The call was cut before the far end answered: no talk time, no charge.
    [call] = calls
    assert call.answered_at is None
    assert call.outcome == "hung_up"


@pytest.mark.parametrize("recording", ALLOWED)
async def test_allowed_calls_are_never_touched(recording: str, tmp_path: Path) -> None:
    async with guard_against([recording], tmp_path) as run:
        await run.settle()
        offences = await run.offences()
        calls = await run.calls()
    assert run.hangups() == []
    assert offences == []
    [call] = calls
    assert call.verdict == "allow"
    assert call.answered_at is not None


async def test_no_emergency_call_is_ever_hung_up_in_a_burst(tmp_path: Path) -> None:
    """Five concurrent calls: the international and premium ones are cut, 119 goes through."""
    async with guard_against(["burst-mixed-calls"], tmp_path) as run:
        await run.settle()
        offences = await run.offences()
        calls = await run.calls()
    hung_up = run.hangups()
    assert sorted(hung_up) == sorted(
        ["Local/00441632960123@pstn-00000018;1", "Local/16812345678@pstn-0000001b;1"]
    )
    assert not any("119" in channel for channel in hung_up)
    by_number = {c.dialled: c for c in calls}
    assert by_number["119"].verdict == "allow"
    assert by_number["119"].answered_at is not None
    assert by_number["01087654321"].verdict == "allow"  # the department head
    assert sorted(o.rule_id for o in offences) == ["LD-2", "PR-1"]


async def test_monitor_mode_records_without_hanging_up_and_prices_premium_by_talk_time(
    tmp_path: Path,
) -> None:
    async with guard_against(
        ["staff-premium-168", "staff-international-answered"], tmp_path, mode=Mode.MONITOR
    ) as run:
        await run.settle()
        offences = await run.offences()
    assert run.hangups() == []
    by_rule = {o.rule_id: o for o in offences}
    premium = by_rule["PR-1"]
    # Answered for about 5 s, billed as one started minute at 2.00 yuan: 20 x 2.00 + 50.
    assert premium.charge == Decimal("2.00")
    assert premium.amount == Decimal("90.00")
    assert premium.final_outcome is Outcome.MONITORED
    assert 4 < premium.call_talk_time.total_seconds() < 6
    assert by_rule["LD-2"].amount == Decimal("500.00")


async def test_chinese_caller_name_arrives_intact(tmp_path: Path) -> None:
    async with guard_against(["chinese-caller-name-local"], tmp_path) as run:
        await run.settle()
        [call] = await run.calls()
    assert call.caller_name == "张伟"
    assert call.person_name == "张伟"


async def test_hotline_rings_are_timed_against_three_rings(tmp_path: Path) -> None:
    async with guard_against(["hotline-unanswered", "hotline-answered-after-18s"], tmp_path) as run:
        await run.settle()
        offences = await run.offences()
    assert [o.rule_id for o in offences] == ["AN-1", "AN-1"]
    assert all(o.extension == "8001" for o in offences)
    assert all(Sanction.ASSESSMENT_POINTS in o.sanctions for o in offences)
    assert "无人接听" in offences[0].detail_zh
    assert "后才接听" in offences[1].detail_zh


async def test_repeat_offences_climb_the_ladder(tmp_path: Path) -> None:
    """Three unapproved long-distance calls by one person: the third flags a repeat offender."""
    async with guard_against(
        [
            "staff-international-answered",
            "staff-domestic-long-distance",
            "hk-call-cut-by-ami-hangup",
        ],
        tmp_path,
    ) as run:
        await run.settle()
        offences = await run.offences()
    assert [(o.escalation_step, o.amount) for o in offences] == [
        (1, Decimal("500.00")),
        (2, Decimal("50.00")),
        (3, Decimal("100.00")),
    ]
    assert offences[2].fine.repeat_offender
    assert Sanction.BONUS_WITHHELD in offences[2].sanctions
