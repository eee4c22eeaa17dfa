"""The policy file's controls: hours, countries, budgets, velocity locks and call durations."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from pbxguard.adapters.policy_file import load_policy
from pbxguard.domain.numbers import NumberClass
from pbxguard.domain.policy import (
    CHARGED_CLASSES,
    DEAR_CLASSES,
    BudgetScope,
    BudgetUnit,
    Direction,
    Policy,
)
from pbxguard.errors import PolicyError

REFERENCE_SITE = Path(__file__).parents[2] / "src/pbxguard/policies/reference-site.toml"
HEAD = f'schema = 1\nextends = "{REFERENCE_SITE}"\n'


def load(tmp_path: Path, body: str) -> Policy:
    path = tmp_path / "site.toml"
    path.write_text(HEAD + body, "utf-8")
    return load_policy(path).policy


def test_the_default_bundle_records_du1_and_locks_bursts_of_international_calls() -> None:
    policy = load_policy().policy
    [burst] = policy.velocity
    assert burst.classes == frozenset({NumberClass.INTERNATIONAL})
    assert (burst.attempts, burst.within, burst.lock_for) == (
        5,
        timedelta(minutes=10),
        timedelta(minutes=60),
    )
    assert burst.lock_classes == DEAR_CLASSES
    [du1] = policy.durations
    assert du1.rule_id == "DU-1"
    assert du1.limit == timedelta(minutes=3)
    assert du1.cut_after is None  # recorded, not cut
    assert NumberClass.EMERGENCY not in du1.classes
    assert policy.budgets == ()
    assert policy.hours == ()
    assert policy.country_lists == ()
    for rule_id in ("DU-1", "DU-4", "HO-1", "CL-1", "BU-1", "VL-1", "VL-2"):
        assert rule_id in policy.rules
        assert not policy.rules[rule_id].has_penalty


def test_every_control_is_read_with_its_values(tmp_path: Path) -> None:
    policy = load(
        tmp_path,
        """
[[budgets]]
name = "intl-per-person"
per = "person"
money = "200"
classes = ["international", "hk_macau"]
alert_at = "0.9"

[[budgets]]
name = "hotline-minutes"
per = "line"
minutes = 600
who = ["8001", "8002"]
sites = "all"

[[simultaneous]]
name = "at-once"
max_calls = 3
lock_minutes = 30

[[durations]]
classes = ["domestic_ld"]
roles = ["department_head"]
limit_minutes = 5
cut_after_minutes = 15
warn_before_seconds = 30

[[durations]]
direction = "inbound"
lines = ["8001"]
limit_minutes = 2

[[countries]]
roles = ["department_head"]
allow = ["+44", "0049", "33"]
""",
    )
    per_person, hotline = policy.budgets
    assert (per_person.per, per_person.unit, per_person.limit) == (
        BudgetScope.PERSON,
        BudgetUnit.MONEY,
        Decimal("200"),
    )
    assert per_person.classes == frozenset({NumberClass.INTERNATIONAL, NumberClass.HK_MACAU})
    assert per_person.alert_at == Decimal("0.9")
    assert not per_person.all_sites
    assert (hotline.per, hotline.unit, hotline.limit) == (
        BudgetScope.LINE,
        BudgetUnit.MINUTES,
        Decimal(600),
    )
    assert hotline.who == frozenset({"8001", "8002"})
    assert hotline.classes == CHARGED_CLASSES
    assert hotline.all_sites
    assert hotline.alert_at == Decimal("0.8")
    [at_once] = policy.simultaneous
    assert (at_once.max_calls, at_once.lock_for, at_once.rule_id) == (
        3,
        timedelta(minutes=30),
        "VL-2",
    )
    business, incoming = policy.durations
    assert business.audience.roles == frozenset({"department_head"})
    assert (business.limit, business.cut_after, business.warn_before) == (
        timedelta(minutes=5),
        timedelta(minutes=15),
        timedelta(seconds=30),
    )
    assert (incoming.direction, incoming.rule_id) == (Direction.INBOUND, "DU-4")
    [heads] = policy.country_lists
    assert heads.allow == frozenset({"44", "49", "33"})
    assert policy.countries.label("44") == ("英国（+44）", "United Kingdom (+44)")
    # A site list replaces the bundle's: this site set no velocity rule of its own.
    assert len(policy.velocity) == 1


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (
            '[[hours]]\nschedule = "working_hours"\nclasses = ["emergency", "international"]\n',
            "site.toml:5: hours.0.classes: emergency numbers can never be restricted by hours",
        ),
        (
            '[[hours]]\nschedule = "office"\nclasses = ["international"]\n',
            "site.toml:4: hours[0].schedule: no schedule named 'office'",
        ),
        (
            '[[hours]]\nschedule = "working_hours"\nclasses = ["international"]\n'
            'roles = ["boss"]\n',
            "site.toml:6: hours.0.roles: no role 'boss'",
        ),
        (
            '[[countries]]\nallow = ["+44"]\ndeny = ["+1"]\n',
            "site.toml:3: countries[0]: give either `allow` or `deny`",
        ),
        (
            '[[countries]]\nallow = ["+999"]\n',
            "site.toml:4: countries[0].allow: no country has the calling code +999",
        ),
        (
            '[[countries]]\nallow = ["UK"]\n',
            "countries.0.allow.0: 取值无效 — 'UK' is not a calling code (+44, 49, +1)",
        ),
        (
            '[[budgets]]\nname = "b"\nper = "person"\nmoney = "10"\nminutes = 5\n',
            "site.toml:3: budgets[0]: give either `money` (yuan) or `minutes` per month",
        ),
        (
            '[[budgets]]\nname = "b"\nper = "person"\nmoney = "10"\nwho = ["nobody"]\n',
            "site.toml:7: budgets[0].who: no person 'nobody'",
        ),
        (
            '[[budgets]]\nname = "b"\nper = "department"\nmoney = "10"\nrule = "XX-1"\n',
            "site.toml:7: budgets.0.rule: no rule named 'XX-1'",
        ),
        (
            '[[budgets]]\nname = "b"\nper = "company"\nmoney = "1"\n'
            '[[budgets]]\nname = "b"\nper = "company"\nmoney = "2"\n',
            "budgets[1].name: 'b' is used twice",
        ),
        (
            '[[velocity]]\nname = "v"\nlock_classes = ["emergency"]\n',
            "velocity.0.lock_classes: emergency numbers can never be locked",
        ),
        (
            "[[durations]]\nlimit_minutes = 5\ncut_after_minutes = 3\n",
            "durations[0].cut_after_minutes must not be below limit_minutes",
        ),
        (
            "[[durations]]\nwarn_before_seconds = 30\n",
            "durations[0].warn_before_seconds needs cut_after_minutes, and less time",
        ),
    ],
)
def test_a_wrong_control_names_its_line_and_the_problem(
    tmp_path: Path, body: str, problem: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        load(tmp_path, body)
    assert problem in str(caught.value)
