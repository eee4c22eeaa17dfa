"""Hours and country lists: permissions narrowed by schedule and by country, in `evaluate`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from pbxguard.adapters.policy_file import load_policy
from pbxguard.domain.approvals import Approval
from pbxguard.domain.evaluate import CallAttempt, Decision, Verdict, evaluate
from pbxguard.domain.numbers import NumberClass
from pbxguard.domain.policy import Policy

SHANGHAI = ZoneInfo("Asia/Shanghai")
REFERENCE_SITE = Path(__file__).parents[2] / "src/pbxguard/policies/reference-site.toml"

HOURS = f"""
schema = 1
extends = "{REFERENCE_SITE}"

# Office hours without the Golden Week extension the default working_hours has for DT-1.
[schedules.office_hours]
kind = "working_hours"
hours = ["08:30-17:30"]

[schedules.night_desk]
kind = "daily"
hours = ["22:00-06:00"]

# International only in office hours, even for department heads.
[[hours]]
schedule = "office_hours"
classes = ["international"]

# The hotline may call long distance only while the night desk is staffed.
[[hours]]
schedule = "night_desk"
classes = ["domestic_ld"]
lines = ["8001"]
label_zh = "夜班"
label_en = "the night desk's hours"
"""

COUNTRIES = f"""
schema = 1
extends = "{REFERENCE_SITE}"

[[people]]
id = "sales-li"
name = "李销售"
department = "销售部"
role = "department_head"
extensions = ["2100"]

[[people]]
id = "head-9001"
name = "Department head"
department = "工程部"
role = "department_head"
extensions = ["9001"]

[[people]]
id = "staff-2001"
name = "Staff 2001"
department = "工程部"
role = "staff"
extensions = ["2001"]

# Sales may call the UK and Germany only.
[[countries]]
departments = ["销售部"]
allow = ["+44", "49"]

# Nobody calls these premium-fraud destinations.
[[countries]]
deny = ["+882", "00883"]
"""


def load(tmp_path: Path, text: str) -> Policy:
    path = tmp_path / "site.toml"
    path.write_text(text, "utf-8")
    return load_policy(path).policy


def at(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI)


def decide(policy: Policy, extension: str, number: str, when: datetime) -> Decision:
    return evaluate(CallAttempt(extension, number), policy, now=when)


@pytest.fixture
def hours(tmp_path: Path) -> Policy:
    return load(tmp_path, HOURS)


@pytest.mark.parametrize(
    ("when", "allowed"),
    [
        (at(2026, 11, 23, 10), True),  # Monday morning
        (at(2026, 11, 23, 8, 29), False),  # before office hours
        (at(2026, 11, 23, 17, 30), False),  # the window is half-open: 17:30 is outside
        (at(2026, 11, 21, 10), False),  # an ordinary Saturday
        (at(2026, 10, 2, 10), False),  # Friday of the National Day holiday
        (at(2026, 10, 10, 10), True),  # Saturday worked instead (调休上班)
        (at(2026, 5, 4, 10), False),  # a Golden Week day: office hours do not run round the clock
    ],
)
def test_international_only_in_office_hours_even_for_a_department_head(
    hours: Policy, when: datetime, allowed: bool
) -> None:
    decision = decide(hours, "9001", "00441632960123", when)
    if allowed:
        assert decision.verdict is Verdict.ALLOW
        assert decision.rule_id == ""
    else:
        assert decision.verdict is Verdict.DENY
        assert decision.rule_id == "HO-1"
        assert decision.reason_zh == "工作时间以外不得拨打国际长途"
        assert decision.reason_en == "international calls are not allowed outside working hours"
        assert not decision.offence  # HO-1 carries no fine in the default bundle


@pytest.mark.parametrize(
    ("when", "allowed"),
    [
        (at(2026, 11, 23, 21, 59), False),
        (at(2026, 11, 23, 22, 0), True),
        (at(2026, 11, 23, 23, 59), True),
        (at(2026, 11, 24, 0, 0), True),  # after midnight: the window began the day before
        (at(2026, 11, 24, 5, 59), True),
        (at(2026, 11, 24, 6, 0), False),
        (at(2026, 10, 3, 2, 0), True),  # a daily window runs on holidays too
    ],
)
def test_a_night_window_runs_across_midnight(hours: Policy, when: datetime, allowed: bool) -> None:
    decision = decide(hours, "8001", "02787654321", when)
    assert decision.allowed is allowed
    if not allowed:
        assert decision.rule_id == "HO-1"
        assert decision.reason_en == (
            "domestic long-distance calls are not allowed outside the night desk's hours"
        )
        assert decision.reason_zh == "夜班以外不得拨打国内长途"


def test_the_hours_of_a_line_do_not_bind_other_lines(hours: Policy) -> None:
    # 9001 (a department head) may dial long distance at any hour: only 8001 is restricted.
    assert decide(hours, "9001", "02787654321", at(2026, 11, 23, 10)).allowed


def test_emergency_numbers_go_through_at_any_hour(hours: Policy) -> None:
    for when in (at(2026, 10, 2, 3), at(2026, 11, 21, 23)):
        for extension in ("9001", "8001", "2001", "8000"):
            decision = decide(hours, extension, "110", when)
            assert decision.verdict is Verdict.ALLOW
            assert decision.rule_id == ""


def test_hours_never_replace_a_fined_denial(hours: Policy) -> None:
    """Staff dialling abroad at night still break LD-2 (a fine), not only the hours rule."""
    decision = decide(hours, "2001", "00441632960123", at(2026, 11, 21, 23))
    assert decision.rule_id == "LD-2"
    assert decision.offence


def test_an_approved_call_outside_hours_is_refused_and_uses_no_approval(
    hours: Policy,
) -> None:
    approval = Approval(
        "ap-1",
        "staff-2001",
        "head-9001",
        at(2026, 11, 1, 0),
        at(2026, 12, 1, 0),
        number_class=NumberClass.INTERNATIONAL,
    )
    inside = evaluate(
        CallAttempt("2001", "00441632960123"),
        hours,
        now=at(2026, 11, 23, 10),
        approvals=[approval],
    )
    assert inside.allowed
    assert inside.approval_id == "ap-1"
    outside = evaluate(
        CallAttempt("2001", "00441632960123"),
        hours,
        now=at(2026, 11, 23, 20),
        approvals=[approval],
    )
    assert outside.rule_id == "HO-1"
    assert outside.approval_id == ""


@pytest.fixture
def countries(tmp_path: Path) -> Policy:
    return load(tmp_path, COUNTRIES)


MONDAY = at(2026, 11, 23, 10)


@pytest.mark.parametrize(
    ("number", "allowed", "reason_zh", "reason_en"),
    [
        ("00441632960123", True, "", ""),
        ("+4930123456", True, "", ""),
        (
            "0033123456789",
            False,
            "不允许拨打法国（+33）的国际电话",
            "international calls to France (+33) are not allowed",
        ),
        (
            "+12025550123",
            False,
            "不允许拨打美国（+1）的国际电话",
            "international calls to United States (+1) are not allowed",
        ),
    ],
)
def test_sales_may_call_the_uk_and_germany_only(
    countries: Policy, number: str, allowed: bool, reason_zh: str, reason_en: str
) -> None:
    decision = decide(countries, "2100", number, MONDAY)
    assert decision.allowed is allowed
    if not allowed:
        assert decision.rule_id == "CL-1"
        assert (decision.reason_zh, decision.reason_en) == (reason_zh, reason_en)


def test_other_departments_call_any_country_but_the_denied_ones(countries: Policy) -> None:
    assert decide(countries, "9001", "0033123456789", MONDAY).allowed
    assert decide(countries, "9001", "+12025550123", MONDAY).allowed
    denied = decide(countries, "9001", "00882123456789", MONDAY)
    assert denied.rule_id == "CL-1"
    assert "+882" in denied.reason_en
    # Sales match both lists: the deny list still applies on top of their allow list.
    assert decide(countries, "2100", "00882123456789", MONDAY).rule_id == "CL-1"


def test_country_lists_leave_hong_kong_and_fined_denials_alone(countries: Policy) -> None:
    # Hong Kong/Macau is its own class, governed by the role's permissions.
    assert decide(countries, "2100", "0085223456789", MONDAY).allowed
    # Staff may not dial abroad at all: LD-2 with its fine, whatever the lists say.
    staff = decide(countries, "2001", "0033123456789", MONDAY)
    assert staff.rule_id == "LD-2"
    assert staff.offence


def test_a_number_with_an_unknown_calling_code_is_refused_by_an_allow_list(
    countries: Policy,
) -> None:
    decision = decide(countries, "2100", "0099912345", MONDAY)
    assert decision.rule_id == "CL-1"
    assert decision.reason_en.startswith("the country called is not known")
    # A deny list lets an unknown code through (it names what to refuse).
    assert decide(countries, "9001", "0099912345", MONDAY).allowed
