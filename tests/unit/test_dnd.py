"""The do-not-disturb list in the core: one canonical form of a number, DND-1 on promotion lines."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbxguard.adapters.policy_file import load_policy
from pbxguard.domain.approvals import Approval
from pbxguard.domain.call_events import DialBegan, DoNotDisturbChanged
from pbxguard.domain.calls import CallTracker
from pbxguard.domain.dnd import MAX_DIGITS, decode_number, dnd_number, encode_number
from pbxguard.domain.effects import HangupChannel, RecordOffence
from pbxguard.domain.evaluate import CallAttempt, Verdict, evaluate
from pbxguard.domain.numbers import NumberClass
from pbxguard.domain.penalties import assess
from pbxguard.domain.policy import Line, Policy

REFERENCE_SITE = Path(__file__).parents[2] / "src/pbxguard/policies/reference-site.toml"
LOADED = load_policy(REFERENCE_SITE)
SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=SHANGHAI)
LISTED = frozenset({"13800138000", "02162345678", "01087654321", "00441632960123"})


def with_promotion(*extensions: str) -> Policy:
    policy = LOADED.policy
    lines = dict(policy.lines)
    for extension in extensions:
        lines[extension] = Line(extension, f"推销线路 {extension}", promotion=True)
    return dataclasses.replace(policy, lines=lines)


PLAN = LOADED.policy.plan
CLASSIFIER = LOADED.policy.classifier


def canonical(dialled: str) -> str | None:
    return dnd_number(CLASSIFIER.classify(dialled, with_access_code=False), PLAN)


@pytest.mark.parametrize(
    ("written", "number"),
    [
        ("13800138000", "13800138000"),
        ("013800138000", "13800138000"),
        ("+86 138 0013 8000", "13800138000"),
        ("008613800138000", "13800138000"),
        ("138-0013-8000", "13800138000"),
        ("62345678", "02162345678"),
        ("02162345678", "02162345678"),
        ("021-6234 5678", "02162345678"),
        ("01087654321", "01087654321"),
        ("+44 1632 960123", "00441632960123"),
        ("0085223456789", "0085223456789"),
        ("95588", "95588"),
    ],
)
def test_every_way_of_writing_a_number_has_one_canonical_form(written: str, number: str) -> None:
    assert canonical(written) == number


@pytest.mark.parametrize("written", ["110", "119", "2002", "*97", "abc", "", "sip:1@x"])
def test_emergency_numbers_extensions_and_non_numbers_are_never_listed(written: str) -> None:
    assert canonical(written) is None


@given(st.text(alphabet="0123456789", min_size=1, max_size=MAX_DIGITS))
def test_encoding_is_reversible(number: str) -> None:
    assert decode_number(encode_number(number)) == number
    assert 0 < encode_number(number) < 2**64


@given(
    st.text(alphabet="0123456789", min_size=1, max_size=MAX_DIGITS),
    st.text(alphabet="0123456789", min_size=1, max_size=MAX_DIGITS),
)
def test_different_numbers_encode_differently_and_in_a_fixed_order(a: str, b: str) -> None:
    assert (encode_number(a) == encode_number(b)) == (a == b)
    assert (encode_number(a) < encode_number(b)) == ((len(a), int(a)) < (len(b), int(b)))


@pytest.mark.parametrize("bad", ["", "1" * (MAX_DIGITS + 1), "12a", "１２"])
def test_what_is_not_a_canonical_number_cannot_be_encoded(bad: str) -> None:
    with pytest.raises(ValueError, match="not a canonical number"):
        encode_number(bad)


@pytest.mark.parametrize("dialled", ["13800138000", "62345678", "021 6234 5678", "01087654321"])
def test_a_promotion_line_may_not_call_a_listed_number(dialled: str) -> None:
    policy = with_promotion("2003")
    decision = evaluate(CallAttempt("2003", dialled), policy, now=NOW, dnd=LISTED)
    assert decision.verdict is Verdict.DENY
    assert decision.rule_id == "DND-1"
    assert decision.citation == "004 line 12"
    assert decision.offence
    assert "免打扰" in decision.reason_zh
    assert "do-not-disturb" in decision.reason_en


def test_other_lines_unlisted_numbers_and_no_list_are_not_affected() -> None:
    policy = with_promotion("2003")
    assert evaluate(CallAttempt("2002", "13800138000"), policy, now=NOW, dnd=LISTED).allowed
    assert evaluate(CallAttempt("2003", "13800138001"), policy, now=NOW, dnd=LISTED).allowed
    assert evaluate(CallAttempt("2003", "13800138000"), policy, now=NOW, dnd=None).allowed


def test_emergency_numbers_go_through_even_if_someone_listed_them() -> None:
    policy = with_promotion("2003")
    decision = evaluate(CallAttempt("2003", "110"), policy, now=NOW, dnd=frozenset({"110"}))
    assert decision.allowed
    assert decision.number_class is NumberClass.EMERGENCY


def test_no_approval_unlocks_a_listed_number() -> None:
    policy = with_promotion("2003")
    approval = Approval(
        id="a1",
        person_id="zhang-wei",
        granted_by="head-9001",
        valid_from=NOW - timedelta(hours=1),
        valid_until=NOW + timedelta(hours=1),
        number_class=NumberClass.DOMESTIC_LD,
    )
    approved = evaluate(CallAttempt("2003", "01087654322"), policy, now=NOW, approvals=[approval])
    assert approved.allowed
    assert approved.approval_id == "a1"
    refused = evaluate(
        CallAttempt("2003", "01087654321"), policy, now=NOW, approvals=[approval], dnd=LISTED
    )
    assert refused.verdict is Verdict.DENY
    assert refused.rule_id == "DND-1"
    assert refused.approval_id == ""


def test_the_default_fine_is_recorded_at_zero_yuan() -> None:
    penalty = LOADED.policy.rules["DND-1"].penalty
    assert penalty is not None
    assert assess(penalty, prior_offences=0).amount == Decimal("0.00")


def test_the_safety_net_judges_with_the_list_it_was_given_last() -> None:
    policy = with_promotion("2003")
    tracker = CallTracker(policy, LOADED.channels)

    def dial(seq: int) -> DialBegan:
        phone = f"PJSIP/2003-0000000{seq}"
        return DialBegan(
            NOW,
            phone,
            f"1.{seq}",
            f"1.{seq}",
            "2003",
            "张伟",
            "13800138000",
            f"Local/13800138000@pstn-0000000{seq};1",
            f"1.{seq}1",
            "13800138000@pstn",
        )

    assert not [e for e in tracker.handle(dial(1)) if isinstance(e, HangupChannel)]
    tracker.handle(DoNotDisturbChanged(NOW, LISTED))
    effects = tracker.handle(dial(2))
    [offence] = [e.draft for e in effects if isinstance(e, RecordOffence)]
    [hangup] = [e for e in effects if isinstance(e, HangupChannel)]
    assert offence.rule_id == "DND-1"
    assert hangup.channel == "Local/13800138000@pstn-00000002;1"
    tracker.handle(DoNotDisturbChanged(NOW, None))
    assert not [e for e in tracker.handle(dial(3)) if isinstance(e, HangupChannel)]


def test_the_policy_file_marks_promotion_lines(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(
        'schema = 1\nextends = "reference-site"\n'
        '[[lines]]\nextension = "2003"\nname = "推销线路"\npromotion = true\n'
        '[[lines]]\nextension = "8000"\nname = "门卫室报警电话"\nuse = "emergency_only"\n',
        encoding="utf-8",
    )
    lines = load_policy(path).policy.lines
    assert lines["2003"].promotion is True
    assert lines["8000"].promotion is False
