"""Fines, ladders, repeat offenders, co-liability and counting windows (REGULATIONS.md §7)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbxguard.adapters.policy_file import load_policy
from pbxguard.domain.penalties import (
    SANCTION_LABELS,
    ZERO,
    CountWindow,
    PenaltySpec,
    RepeatOffender,
    Sanction,
    Step,
    assess,
    billed_seconds,
    window_bounds,
    window_start,
    yuan,
)

D = Decimal
DEFAULT = load_policy().policy


def spec(rule_id: str) -> PenaltySpec:
    penalty = DEFAULT.rules[rule_id].penalty
    assert penalty is not None
    return penalty


def test_yuan_rounds_half_up_to_the_cent() -> None:
    assert yuan(50) == D("50.00")
    assert str(yuan(50)) == "50.00"
    assert yuan("0.125") == D("0.13")
    assert yuan(D("0.124")) == D("0.12")


def test_flat_fine() -> None:
    """EM-1: 50 yuan per occurrence."""
    fine = assess(spec("EM-1"), prior_offences=0)
    assert fine.amount == D("50.00")
    assert str(fine.amount) == "50.00"
    assert fine.sanctions == ()
    assert fine.escalation_step == 1
    assert not fine.repeat_offender
    assert fine.charge == ZERO
    assert fine.department_head_amount == ZERO


@pytest.mark.parametrize(
    ("number_class", "amount"),
    [
        ("domestic_ld", "50.00"),
        ("hk_macau", "100.00"),
        ("taiwan", "100.00"),
        ("international", "500.00"),
    ],
)
def test_ld2_amount_depends_on_the_class(number_class: str, amount: str) -> None:
    fine = assess(spec("LD-2"), prior_offences=0, number_class=number_class)
    assert fine.amount == D(amount)


def test_per_class_falls_back_to_the_flat_amount() -> None:
    step = Step(flat=D("30"), per_class={"international": D("500")})
    penalty = PenaltySpec(steps=(step,))
    assert assess(penalty, prior_offences=0, number_class="premium").amount == D("30.00")
    assert assess(penalty, prior_offences=0, number_class="").amount == D("30.00")
    assert assess(penalty, prior_offences=0, number_class="international").amount == D("500.00")


@pytest.mark.parametrize(
    ("charge", "amount"),
    [
        ("0", "50.00"),
        ("0.10", "52.00"),
        ("0.30", "56.00"),
        ("2.00", "90.00"),
        ("6.60", "182.00"),
        ("123.45", "2519.00"),
    ],
)
def test_pr1_is_twenty_times_the_charge_plus_fifty(charge: str, amount: str) -> None:
    fine = assess(spec("PR-1"), prior_offences=0, charge=D(charge))
    assert fine.amount == D(amount)
    assert str(fine.amount) == amount
    assert fine.charge == D(charge)
    assert spec("PR-1").needs_charge


def test_pr2_is_the_charge_plus_fifty() -> None:
    assert assess(spec("PR-2"), prior_offences=0, charge=D("3.70")).amount == D("53.70")


def test_flat_rules_do_not_need_a_charge() -> None:
    for rule_id in ("LD-2", "EM-1", "PR-3", "LD-7"):
        assert not spec(rule_id).needs_charge


@given(st.decimals(min_value=0, max_value=10_000, places=4, allow_nan=False, allow_infinity=False))
def test_fine_is_reproducible_from_the_stored_charge(charge: Decimal) -> None:
    """An auditor recomputes PR-1 from the ledger row: 20 x stored charge + 50."""
    fine = assess(spec("PR-1"), prior_offences=0, charge=charge)
    assert fine.charge == yuan(charge)
    assert fine.amount == 20 * fine.charge + 50
    assert fine.amount.as_tuple().exponent == -2


DT4 = PenaltySpec(
    steps=(
        Step(flat=D("50")),
        Step(flat=D("200")),
        Step(sanctions=(Sanction.REIMBURSEMENT_LOST,)),
    ),
    window=CountWindow.QUARTER,
    ladder="DT-4",
)


@pytest.mark.parametrize(
    ("prior", "amount", "sanctions"),
    [
        (0, "50.00", ()),
        (1, "200.00", ()),
        (2, "0.00", (Sanction.REIMBURSEMENT_LOST,)),
        (3, "0.00", (Sanction.REIMBURSEMENT_LOST,)),
        (10, "0.00", (Sanction.REIMBURSEMENT_LOST,)),
    ],
)
def test_dt4_ladder(prior: int, amount: str, sanctions: tuple[Sanction, ...]) -> None:
    """DT-4: first offence 50, second 200, third and later: the quarter's reimbursement."""
    fine = assess(DT4, prior_offences=prior)
    assert fine.amount == D(amount)
    assert fine.sanctions == sanctions
    assert fine.escalation_step == prior + 1


def test_negative_prior_count_is_treated_as_a_first_offence() -> None:
    assert assess(DT4, prior_offences=-1).amount == D("50.00")


def test_repeat_offender_threshold() -> None:
    """LD-2: from the third offence on, the bonus is withheld as well."""
    ld2 = spec("LD-2")
    assert ld2.repeat_offender == RepeatOffender(3, (Sanction.BONUS_WITHHELD,))
    first = assess(ld2, prior_offences=0, number_class="domestic_ld")
    second = assess(ld2, prior_offences=1, number_class="domestic_ld")
    third = assess(ld2, prior_offences=2, number_class="domestic_ld")
    later = assess(ld2, prior_offences=7, number_class="international")
    assert not first.repeat_offender
    assert not second.repeat_offender
    assert second.sanctions == ()
    assert third.repeat_offender
    assert third.sanctions == (Sanction.BONUS_WITHHELD,)
    assert third.amount == D("50.00")
    assert later.repeat_offender
    assert later.amount == D("500.00")


def test_repeat_offender_sanction_is_not_listed_twice() -> None:
    penalty = PenaltySpec(
        steps=(Step(flat=D("50"), sanctions=(Sanction.DEMERIT,)),),
        repeat_offender=RepeatOffender(1, (Sanction.DEMERIT, Sanction.DISMISSAL_REFERRAL)),
    )
    fine = assess(penalty, prior_offences=0)
    assert fine.sanctions == (Sanction.DEMERIT, Sanction.DISMISSAL_REFERRAL)


@pytest.mark.parametrize(
    ("amount", "share", "expected"),
    [("50", "0.2", "10.00"), ("500", "0.2", "100.00"), ("52.50", "0.2", "10.50"), ("50", "0", "0")],
)
def test_department_head_share(amount: str, share: str, expected: str) -> None:
    """000 L863: the department head bears a 20% joint penalty."""
    penalty = PenaltySpec(steps=(Step(flat=D(amount)),), department_head_share=D(share))
    fine = assess(penalty, prior_offences=0)
    assert fine.amount == D(amount)
    assert fine.department_head_amount == D(expected)


def test_department_head_share_of_a_charge_based_fine() -> None:
    penalty = PenaltySpec(
        steps=(Step(flat=D("50"), charge_multiple=D("20")),), department_head_share=D("0.2")
    )
    fine = assess(penalty, prior_offences=0, charge=D("2.00"))
    assert fine.amount == D("90.00")
    assert fine.department_head_amount == D("18.00")


def test_sanctions_have_labels() -> None:
    assert set(SANCTION_LABELS) == set(Sanction)
    assert SANCTION_LABELS[Sanction.DEMERIT] == ("记过", "recorded demerit")


# --- windows ------------------------------------------------------------------------------


@pytest.mark.parametrize("month", range(1, 13))
def test_quarter_starts(month: int) -> None:
    first_month = {1: 1, 2: 1, 3: 1, 4: 4, 5: 4, 6: 4, 7: 7, 8: 7, 9: 7, 10: 10, 11: 10, 12: 10}
    for day in (1, 15, 28):
        start = window_start(CountWindow.QUARTER, date(2026, month, day))
        assert start == date(2026, first_month[month], 1)


@pytest.mark.parametrize(
    ("window", "day", "start"),
    [
        (CountWindow.MONTH, date(2026, 5, 17), date(2026, 5, 1)),
        (CountWindow.MONTH, date(2026, 5, 1), date(2026, 5, 1)),
        (CountWindow.MONTH, date(2024, 2, 29), date(2024, 2, 1)),
        (CountWindow.QUARTER, date(2026, 12, 31), date(2026, 10, 1)),
        (CountWindow.QUARTER, date(2026, 9, 30), date(2026, 7, 1)),
        (CountWindow.YEAR, date(2026, 12, 31), date(2026, 1, 1)),
        (CountWindow.YEAR, date(2026, 1, 1), date(2026, 1, 1)),
        (CountWindow.EVER, date(2026, 6, 6), None),
    ],
)
def test_window_start(window: CountWindow, day: date, start: date | None) -> None:
    assert window_start(window, day) == start


def test_window_bounds_start_at_local_midnight() -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    at = datetime(2026, 8, 20, 0, 30, tzinfo=shanghai)
    assert window_bounds(CountWindow.QUARTER, at) == (datetime(2026, 7, 1, tzinfo=shanghai), at)
    assert window_bounds(CountWindow.MONTH, at) == (datetime(2026, 8, 1, tzinfo=shanghai), at)
    assert window_bounds(CountWindow.YEAR, at) == (datetime(2026, 1, 1, tzinfo=shanghai), at)
    assert window_bounds(CountWindow.EVER, at) == (None, at)
    start, _ = window_bounds(CountWindow.QUARTER, at)
    assert start is not None
    assert start.tzinfo is shanghai


def test_window_bounds_use_the_local_date_not_utc() -> None:
    """00:30 on 1 July in Shanghai is still 30 June in UTC: the local quarter counts."""
    shanghai = ZoneInfo("Asia/Shanghai")
    at = datetime(2026, 7, 1, 0, 30, tzinfo=shanghai)
    start, _ = window_bounds(CountWindow.QUARTER, at)
    assert start == datetime(2026, 7, 1, tzinfo=shanghai)
    assert start.astimezone(UTC) == datetime(2026, 6, 30, 16, 0, tzinfo=UTC)


# --- billing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration", "increment", "billed"),
    [
        (timedelta(0), 60, 0),
        (timedelta(seconds=-5), 60, 0),
        (timedelta(milliseconds=500), 6, 6),
        (timedelta(seconds=1), 60, 60),
        (timedelta(seconds=60), 60, 60),
        (timedelta(seconds=61), 60, 120),
        (timedelta(seconds=6), 6, 6),
        (timedelta(seconds=7), 6, 12),
        (timedelta(minutes=5, seconds=2), 6, 306),
        (timedelta(seconds=5, milliseconds=22), 60, 60),
    ],
)
def test_billed_seconds_round_up_to_the_increment(
    duration: timedelta, increment: int, billed: int
) -> None:
    assert billed_seconds(duration, increment) == billed


@given(st.integers(1, 10**7), st.sampled_from([1, 6, 30, 60]))
def test_billed_seconds_cover_the_call_with_less_than_one_extra_increment(
    milliseconds: int, increment: int
) -> None:
    billed = billed_seconds(timedelta(milliseconds=milliseconds), increment)
    assert billed % increment == 0
    assert billed * 1000 >= milliseconds
    assert billed * 1000 < milliseconds + increment * 1000
