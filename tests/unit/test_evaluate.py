"""The verdict for one call attempt: permissions, lines, approvals, authorization codes."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbxguard.adapters.policy_file import load_policy
from pbxguard.domain.approvals import Approval, find_covering_approval
from pbxguard.domain.evaluate import CallAttempt, Decision, Verdict, class_label, evaluate
from pbxguard.domain.numbers import NumberClass, NumberClassifier
from pbxguard.domain.policy import Line, LineUse, Policy
from pbxguard.protocol.agi import AgiCommand

REFERENCE_SITE = Path(__file__).parents[2] / "src/pbxguard/policies/reference-site.toml"
NOW = datetime(2026, 3, 16, 10, 30, tzinfo=UTC)

C = NumberClass

# Numbers of every class at the reference site (no access code, local area 021).
NUMBERS: dict[NumberClass, str] = {
    C.EMERGENCY: "110",
    C.INTERNAL: "2002",
    C.SERVICE: "95588",
    C.LOCAL: "02112345678",
    C.MOBILE: "13800138000",
    C.DOMESTIC_LD: "01087654321",
    C.HK_MACAU: "0085223456789",
    C.TAIWAN: "00886223456789",
    C.INTERNATIONAL: "00441632960123",
    C.PREMIUM: "16812345678",
    C.FEATURE: "*72",
    C.INVALID: "sip:2002@pbx",
}
EVERYDAY = (C.INTERNAL, C.SERVICE, C.LOCAL, C.MOBILE, C.FEATURE)
LONG_DISTANCE = (C.DOMESTIC_LD, C.HK_MACAU, C.TAIWAN, C.INTERNATIONAL)
RECEIVE_ONLY_EXT = "2100"


def _reference_policy() -> Policy:
    policy = load_policy(REFERENCE_SITE).policy
    front_desk = Line(RECEIVE_ONLY_EXT, "前台电话", use=LineUse.RECEIVE_ONLY)
    return dataclasses.replace(policy, lines={**policy.lines, RECEIVE_ONLY_EXT: front_desk})


POLICY = _reference_policy()
PIN_POLICY = dataclasses.replace(POLICY, pin_classes=frozenset({C.DOMESTIC_LD}))
POLICY_LOADED_AGAIN = _reference_policy()


def decide(
    extension: str,
    dialled: str,
    *,
    policy: Policy = POLICY,
    approvals: tuple[Approval, ...] = (),
    allow_pin: bool = False,
    on_duty: str | None = None,
    code_owner: str | None = None,
) -> Decision:
    return evaluate(
        CallAttempt(extension, dialled, on_duty=on_duty, code_owner=code_owner),
        policy,
        now=NOW,
        approvals=approvals,
        allow_pin=allow_pin,
    )


def grant(
    person_id: str = "staff-2001",
    *,
    id: str = "ap-1",
    number_class: NumberClass | None = C.DOMESTIC_LD,
    prefix: str = "",
    valid_from: datetime = NOW - timedelta(hours=1),
    valid_until: datetime = NOW + timedelta(hours=1),
    max_calls: int | None = None,
    used_calls: int = 0,
    revoked: bool = False,
) -> Approval:
    return Approval(
        id=id,
        person_id=person_id,
        granted_by="head-9001",
        valid_from=valid_from,
        valid_until=valid_until,
        number_class=number_class,
        prefix=prefix,
        max_calls=max_calls,
        used_calls=used_calls,
        revoked=revoked,
        reason="客户联络",
    )


def test_every_class_has_a_number_here() -> None:
    for number_class, number in NUMBERS.items():
        assert POLICY.classifier.classify(number).number_class is number_class


# --- emergency -----------------------------------------------------------------------------


@pytest.mark.parametrize("number", ["110", "119", "120", "122", "112", "12110", "1 1 0"])
@pytest.mark.parametrize(
    "extension",
    ["2001", "9001", "8000", "8001", RECEIVE_ONLY_EXT, "7777", "", "PJSIP/x"],
    ids=["staff", "head", "alarm", "hotline", "receive-only", "unknown", "empty", "junk"],
)
def test_emergency_is_allowed_from_every_phone(extension: str, number: str) -> None:
    for allow_pin in (False, True):
        decision = decide(extension, number, policy=PIN_POLICY, allow_pin=allow_pin)
        assert decision.verdict is Verdict.ALLOW
        assert decision.number_class is C.EMERGENCY
        assert decision.rule_id == ""
        assert not decision.offence


def test_emergency_cannot_be_unlocked_by_a_pin_policy_either() -> None:
    every_class = dataclasses.replace(POLICY, pin_classes=frozenset(NumberClass))
    decision = decide("8000", "119", policy=every_class, allow_pin=True)
    assert decision.verdict is Verdict.ALLOW


# --- roles and lines ---------------------------------------------------------------------


@pytest.mark.parametrize("number_class", EVERYDAY)
@pytest.mark.parametrize("extension", ["2001", "9001", "8001"])
def test_everyday_classes_are_allowed(extension: str, number_class: NumberClass) -> None:
    decision = decide(extension, NUMBERS[number_class])
    assert decision.verdict is Verdict.ALLOW
    assert decision.rule_id == ""
    assert not decision.offence


@pytest.mark.parametrize("number_class", LONG_DISTANCE)
def test_staff_long_distance_is_denied_under_ld2(number_class: NumberClass) -> None:
    decision = decide("2001", NUMBERS[number_class])
    assert decision.verdict is Verdict.DENY
    assert decision.rule_id == "LD-2"
    assert decision.citation == "000 L19"
    assert decision.offence
    assert (decision.person_id, decision.department, decision.role) == (
        "staff-2001",
        "工程部",
        "staff",
    )
    assert "部门负责人" in decision.reason_zh
    assert "approval" in decision.reason_en


@pytest.mark.parametrize("number_class", LONG_DISTANCE)
def test_department_head_may_dial_long_distance(number_class: NumberClass) -> None:
    decision = decide("9001", NUMBERS[number_class])
    assert decision.verdict is Verdict.ALLOW
    assert (decision.person_id, decision.role) == ("head-9001", "department_head")


@pytest.mark.parametrize("extension", ["2001", "9001", "8001"])
def test_premium_is_denied_for_everyone_under_pr1(extension: str) -> None:
    for number in ("16812345678", "1601234567", "9123456"):
        decision = decide(extension, number)
        assert decision.verdict is Verdict.DENY
        assert decision.rule_id == "PR-1"
        assert decision.citation == "000 L125"
        assert decision.offence
        assert decision.reason_zh == "禁止拨打声讯电话"


def test_hotline_line_allows_domestic_long_distance_only() -> None:
    """LD-11: long distance is enabled on the service hotline, whoever holds it."""
    assert decide("8001", NUMBERS[C.DOMESTIC_LD]).verdict is Verdict.ALLOW
    assert decide("8002", NUMBERS[C.DOMESTIC_LD], on_duty="duty-wang").verdict is Verdict.ALLOW
    international = decide("8001", NUMBERS[C.INTERNATIONAL], on_duty="duty-wang")
    assert international.verdict is Verdict.DENY
    assert international.rule_id == "LD-2"
    assert (international.person_id, international.role) == ("duty-wang", "duty")


def test_an_ordinary_phone_gets_no_line_permission() -> None:
    assert decide("2002", NUMBERS[C.DOMESTIC_LD]).verdict is Verdict.DENY


@pytest.mark.parametrize(
    "number_class",
    [c for c in NumberClass if c not in (C.EMERGENCY, C.INVALID)],
)
def test_alarm_line_is_for_emergencies_only(number_class: NumberClass) -> None:
    """EM-1: nobody may use the guard-room alarm phone, whatever their role."""
    decision = decide("8000", NUMBERS[number_class])
    assert decision.verdict is Verdict.DENY
    assert decision.rule_id == "EM-1"
    assert decision.citation == "000 L127"
    assert decision.offence
    assert "门卫室报警电话" in decision.reason_zh


def test_alarm_line_misuse_is_charged_to_the_guard_on_duty() -> None:
    decision = decide("8000", NUMBERS[C.MOBILE], on_duty="guard-li")
    assert decision.rule_id == "EM-1"
    assert (decision.person_id, decision.person_name, decision.department) == (
        "guard-li",
        "李保安",
        "保卫部",
    )


def test_alarm_line_misuse_is_not_lifted_by_an_approval_or_a_head() -> None:
    approval = grant("head-9001", number_class=None)
    decision = decide("8000", NUMBERS[C.MOBILE], code_owner="head-9001", approvals=(approval,))
    assert decision.verdict is Verdict.DENY
    assert decision.rule_id == "EM-1"


@pytest.mark.parametrize(
    "number_class",
    [C.SERVICE, C.LOCAL, C.MOBILE, C.DOMESTIC_LD, C.INTERNATIONAL, C.PREMIUM],
)
def test_receive_only_line_cannot_dial_out(number_class: NumberClass) -> None:
    """OT-4: publicity and front-desk phones only answer."""
    decision = decide(RECEIVE_ONLY_EXT, NUMBERS[number_class])
    assert decision.verdict is Verdict.DENY
    assert decision.rule_id == "OT-4"
    assert decision.citation == "000 L853"
    assert not decision.offence  # the default bundle sets no penalty for OT-4
    assert "只能接听" in decision.reason_zh


@pytest.mark.parametrize("number_class", [C.INTERNAL, C.FEATURE, C.EMERGENCY])
def test_receive_only_line_may_still_call_inside(number_class: NumberClass) -> None:
    assert decide(RECEIVE_ONLY_EXT, NUMBERS[number_class]).verdict is Verdict.ALLOW


def test_unknown_extension_gets_the_default_role() -> None:
    local = decide("7777", NUMBERS[C.LOCAL])
    assert local.verdict is Verdict.ALLOW
    assert (local.person_id, local.role) == ("", "staff")
    long_distance = decide("7777", NUMBERS[C.DOMESTIC_LD])
    assert long_distance.verdict is Verdict.DENY
    assert long_distance.rule_id == "LD-2"
    assert long_distance.person_id == ""


def test_person_with_a_role_missing_from_the_policy_gets_the_default_role() -> None:
    person = dataclasses.replace(POLICY.people["head-9001"], role="no-such-role")
    policy = dataclasses.replace(POLICY, people={**POLICY.people, "head-9001": person})
    decision = decide("9001", NUMBERS[C.DOMESTIC_LD], policy=policy)
    assert decision.verdict is Verdict.DENY
    assert decision.role == "staff"


def test_invalid_number_is_denied_without_an_offence() -> None:
    decision = decide("2001", "sip:2002@pbx")
    assert decision.verdict is Verdict.DENY
    assert decision.rule_id == ""
    assert not decision.offence
    assert "URI" in decision.reason_en


def test_decision_carries_the_policy_version_and_labels() -> None:
    decision = decide("2001", NUMBERS[C.INTERNATIONAL])
    assert decision.policy_version == POLICY.version
    assert decision.classification.number == "00441632960123"
    assert class_label(C.INTERNATIONAL) == ("国际长途", "international")
    assert all(class_label(c)[0] and class_label(c)[1] for c in NumberClass)


# --- approvals -----------------------------------------------------------------------------


def test_class_approval_allows_the_call() -> None:
    decision = decide("2001", NUMBERS[C.DOMESTIC_LD], approvals=(grant(),))
    assert decision.verdict is Verdict.ALLOW
    assert decision.approval_id == "ap-1"
    assert "head-9001" in decision.reason_en
    assert not decision.offence


def test_class_approval_covers_only_its_class() -> None:
    decision = decide("2001", NUMBERS[C.INTERNATIONAL], approvals=(grant(),))
    assert decision.verdict is Verdict.DENY
    assert decision.approval_id == ""


def test_prefix_approval_covers_numbers_under_the_prefix() -> None:
    uk = grant(number_class=None, prefix="0044")
    assert decide("2001", "00441632960123", approvals=(uk,)).verdict is Verdict.ALLOW
    assert decide("2001", "+44 1632 960123", approvals=(uk,)).verdict is Verdict.ALLOW
    assert decide("2001", "0033123456789", approvals=(uk,)).verdict is Verdict.DENY


def test_prefix_approval_matches_the_normalised_number() -> None:
    beijing = grant(prefix="010")
    assert decide("2001", "17909 010 8765 4321", approvals=(beijing,)).allowed
    assert not decide("2001", "02787654321", approvals=(beijing,)).allowed


@pytest.mark.parametrize(
    "approval",
    [
        grant(valid_until=NOW),
        grant(valid_until=NOW - timedelta(seconds=1)),
        grant(valid_from=NOW + timedelta(seconds=1)),
        grant(revoked=True),
        grant(max_calls=2, used_calls=2),
        grant(max_calls=0),
        grant("staff-2002"),
    ],
    ids=["ends-now", "expired", "not-yet", "revoked", "used-up", "zero-calls", "someone-else"],
)
def test_approval_that_does_not_apply(approval: Approval) -> None:
    decision = decide("2001", NUMBERS[C.DOMESTIC_LD], approvals=(approval,))
    assert decision.verdict is Verdict.DENY
    assert decision.rule_id == "LD-2"
    assert decision.offence


def test_approval_with_calls_left_applies() -> None:
    approval = grant(max_calls=2, used_calls=1)
    assert decide("2001", NUMBERS[C.DOMESTIC_LD], approvals=(approval,)).allowed
    assert not approval.used().is_active(NOW)
    assert approval.used().used_calls == 2


def test_approval_starting_now_applies() -> None:
    assert decide("2001", NUMBERS[C.DOMESTIC_LD], approvals=(grant(valid_from=NOW),)).allowed


def test_unknown_caller_cannot_use_anyones_approval() -> None:
    blanket = grant("", number_class=None)
    assert not decide("7777", NUMBERS[C.DOMESTIC_LD], approvals=(blanket,)).allowed


def test_most_specific_approval_is_used_first() -> None:
    by_class = grant(id="class", valid_until=NOW + timedelta(minutes=5))
    by_prefix = grant(id="prefix", prefix="010", valid_until=NOW + timedelta(days=5))
    later = grant(id="later", valid_until=NOW + timedelta(days=1))
    decision = decide("2001", NUMBERS[C.DOMESTIC_LD], approvals=(later, by_class, by_prefix))
    assert decision.approval_id == "prefix"
    found = find_covering_approval(
        (later, by_class),
        person_id="staff-2001",
        number="01087654321",
        number_class=C.DOMESTIC_LD,
        now=NOW,
    )
    assert found is by_class


# --- authorization codes and responsibility ------------------------------------------------


def test_pin_is_asked_only_when_the_layer_can_ask() -> None:
    asked = decide("2001", NUMBERS[C.DOMESTIC_LD], policy=PIN_POLICY, allow_pin=True)
    assert asked.verdict is Verdict.PIN
    assert not asked.offence
    refused = decide("2001", NUMBERS[C.DOMESTIC_LD], policy=PIN_POLICY, allow_pin=False)
    assert refused.verdict is Verdict.DENY
    assert refused.rule_id == "LD-2"


def test_pin_is_asked_only_for_pin_classes() -> None:
    international = decide("2001", NUMBERS[C.INTERNATIONAL], policy=PIN_POLICY, allow_pin=True)
    assert international.verdict is Verdict.DENY
    premium = decide("2001", NUMBERS[C.PREMIUM], policy=PIN_POLICY, allow_pin=True)
    assert premium.verdict is Verdict.DENY
    assert premium.rule_id == "PR-1"


def test_pin_is_not_asked_when_the_bundle_has_no_pin_classes() -> None:
    decision = decide("2001", NUMBERS[C.DOMESTIC_LD], allow_pin=True)
    assert decision.verdict is Verdict.DENY


def test_permitted_call_needs_no_pin() -> None:
    decision = decide("9001", NUMBERS[C.DOMESTIC_LD], policy=PIN_POLICY, allow_pin=True)
    assert decision.verdict is Verdict.ALLOW


def test_code_owner_answers_for_the_call() -> None:
    """A head's authorization code entered on a staff phone: the head's permissions apply."""
    decision = decide(
        "2001", NUMBERS[C.DOMESTIC_LD], policy=PIN_POLICY, allow_pin=True, code_owner="head-9001"
    )
    assert decision.verdict is Verdict.ALLOW
    assert (decision.person_id, decision.role, decision.extension) == (
        "head-9001",
        "department_head",
        "2001",
    )


def test_code_owner_without_permission_is_denied_not_asked_again() -> None:
    decision = decide(
        "2001", NUMBERS[C.DOMESTIC_LD], policy=PIN_POLICY, allow_pin=True, code_owner="staff-2002"
    )
    assert decision.verdict is Verdict.DENY
    assert decision.person_id == "staff-2002"


def test_code_owner_uses_their_own_approvals() -> None:
    mine = grant("staff-2002")
    assert decide(
        "2001", NUMBERS[C.DOMESTIC_LD], code_owner="staff-2002", approvals=(mine,)
    ).allowed
    assert not decide("2001", NUMBERS[C.DOMESTIC_LD], approvals=(mine,)).allowed


def test_person_on_duty_answers_for_a_shared_line() -> None:
    decision = decide("8001", NUMBERS[C.PREMIUM], on_duty="duty-wang")
    assert (decision.person_id, decision.person_name, decision.department) == (
        "duty-wang",
        "王值班",
        "客服部",
    )


def test_code_owner_comes_before_the_person_on_duty() -> None:
    decision = decide("8001", NUMBERS[C.PREMIUM], on_duty="duty-wang", code_owner="staff-2002")
    assert decision.person_id == "staff-2002"


def test_unknown_ids_fall_back_to_the_phone_owner() -> None:
    decision = decide("2001", NUMBERS[C.DOMESTIC_LD], on_duty="nobody", code_owner="ghost")
    assert decision.person_id == "staff-2001"


# --- totality and determinism --------------------------------------------------------------

_extensions = st.one_of(st.sampled_from(["2001", "9001", "8000", "8001", "7777"]), st.text())
_dialled = st.one_of(st.sampled_from(list(NUMBERS.values())), st.text())
_people = st.one_of(st.none(), st.sampled_from([*POLICY.people, "ghost"]), st.text())
_approvals = st.lists(
    st.builds(
        grant,
        st.sampled_from([*POLICY.people, ""]),
        number_class=st.one_of(st.none(), st.sampled_from(NumberClass)),
        prefix=st.text(alphabet="0123456789", max_size=4),
        max_calls=st.one_of(st.none(), st.integers(0, 3)),
        used_calls=st.integers(0, 3),
        revoked=st.booleans(),
    ),
    max_size=3,
)


_attempts = st.builds(CallAttempt, _extensions, _dialled, st.booleans(), _people, _people)


@given(call=_attempts, allow_pin=st.booleans(), approvals=_approvals)
def test_evaluate_is_total(
    *, call: CallAttempt, allow_pin: bool, approvals: list[Approval]
) -> None:
    extension, code_owner = call.extension, call.code_owner
    decision = evaluate(call, PIN_POLICY, now=NOW, approvals=approvals, allow_pin=allow_pin)
    assert decision.verdict in set(Verdict)
    assert decision.extension == extension
    assert decision.reason_zh
    assert decision.reason_en
    if decision.number_class is C.EMERGENCY:
        assert decision.verdict is Verdict.ALLOW
    if decision.verdict is Verdict.PIN:
        assert allow_pin
        assert code_owner is None
    if decision.offence:
        assert decision.verdict is Verdict.DENY
        assert decision.rule_id in PIN_POLICY.rules
    again = evaluate(call, PIN_POLICY, now=NOW, approvals=approvals, allow_pin=allow_pin)
    assert again == decision


@given(_extensions, _dialled, _people)
def test_same_inputs_give_equal_decisions(
    extension: str, dialled: str, on_duty: str | None
) -> None:
    first = decide(extension, dialled, on_duty=on_duty, approvals=(grant(),))
    second = evaluate(
        CallAttempt(extension, dialled, on_duty=on_duty),
        POLICY_LOADED_AGAIN,
        now=NOW,
        approvals=[grant()],
    )
    assert second == first


# A dialled string as hostile as it gets: digits of any script, dialling symbols, formatting
# and invisible characters, controls, lone surrogates, long runs.
_HOSTILE_CHARS = st.one_of(
    st.sampled_from([*"0123456789+*#", *"１１０＊＃＋", *"\u200b\u202e\ufeff\u00a0 -.()", "\x00"]),
    st.characters(categories=["Nd", "No", "Zs", "Pd", "Cf", "Cc", "Cs"]),
    st.characters(),
)
_HOSTILE = st.one_of(
    st.lists(_HOSTILE_CHARS, max_size=40).map("".join),
    st.builds(
        "{}{}{}".format,
        st.sampled_from(["", "0", "9", "+", "00", "17951", "*", "#"]),
        st.sampled_from(list(NUMBERS.values())),
        st.lists(_HOSTILE_CHARS, max_size=4).map("".join),
    ),
    st.integers(1, 400).map(lambda n: "0" * n),
)
_ACCESS_0_POLICY = dataclasses.replace(
    PIN_POLICY,
    plan=dataclasses.replace(PIN_POLICY.plan, access_code="0"),
    classifier=NumberClassifier.compile(dataclasses.replace(PIN_POLICY.plan, access_code="0")),
)


@given(
    dialled=_HOSTILE,
    extension=_extensions,
    policy=st.sampled_from([POLICY, PIN_POLICY, _ACCESS_0_POLICY]),
    allow_pin=st.booleans(),
    with_access_code=st.booleans(),
)
def test_fuzz_evaluate_is_total_on_hostile_dialled_strings(
    *, dialled: str, extension: str, policy: Policy, allow_pin: bool, with_access_code: bool
) -> None:
    """Never raises, emergency always allowed, and every answer can be sent to the dialplan."""
    call = CallAttempt(extension, dialled, with_access_code=with_access_code)
    decision = evaluate(call, policy, now=NOW, allow_pin=allow_pin)
    assert decision.verdict in set(Verdict)
    assert decision.reason_zh
    assert decision.reason_en
    if decision.number_class is C.EMERGENCY:
        assert decision.verdict is Verdict.ALLOW
    if decision.number_class is C.INVALID:
        assert decision.verdict is Verdict.DENY
        assert not decision.offence
    if decision.verdict is Verdict.ALLOW and decision.number_class is not C.FEATURE:
        assert decision.classification.number.isdigit()
    for name, value in (
        ("PBXGUARD_VERDICT", decision.verdict.value),
        ("PBXGUARD_REASON", decision.reason_en),
        ("PBXGUARD_REASON_ZH", decision.reason_zh),
        ("PBXGUARD_RULE", decision.rule_id),
    ):
        AgiCommand.set_variable(name, value)
    assert evaluate(call, policy, now=NOW, allow_pin=allow_pin) == decision
