"""Call charges: longest prefix, then class; billed per started increment."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from pbxguard.adapters.policy_file import load_policy
from pbxguard.domain.penalties import ZERO
from pbxguard.domain.tariff import Rate, Tariff

D = Decimal

TARIFF = Tariff(
    version="carrier-2026-03",
    by_prefix={
        "00": Rate(D("3.00"), 6),
        "0044": Rate(D("2.40"), 6),
        "00441632": Rate(D("1.20"), 6),
        "168": Rate(D("2.00"), 60),
    },
    by_class={
        "international": Rate(D("9.99"), 60),
        "domestic_ld": Rate(D("0.30"), 60),
        "mobile": Rate(D("0.10"), 60),
    },
)


@pytest.mark.parametrize(
    ("number", "number_class", "rate"),
    [
        ("00441632960123", "international", Rate(D("1.20"), 6)),
        ("00442071234567", "international", Rate(D("2.40"), 6)),
        ("0033123456789", "international", Rate(D("3.00"), 6)),
        ("16812345678", "premium", Rate(D("2.00"), 60)),
        ("01087654321", "domestic_ld", Rate(D("0.30"), 60)),
        ("13800138000", "mobile", Rate(D("0.10"), 60)),
    ],
)
def test_longest_prefix_then_class(number: str, number_class: str, rate: Rate) -> None:
    assert TARIFF.rate_for(number, number_class) == rate


def test_prefix_wins_over_class() -> None:
    assert TARIFF.rate_for("0033123456789", "international") == Rate(D("3.00"), 6)


def test_no_rate_costs_nothing() -> None:
    assert TARIFF.rate_for("02112345678", "local") is None
    assert TARIFF.charge("02112345678", "local", timedelta(minutes=10)) == ZERO
    assert TARIFF.rate_for("", "") is None


@pytest.mark.parametrize(
    ("seconds", "charge"),
    [(1, "0.12"), (6, "0.12"), (7, "0.24"), (60, "1.20"), (61, "1.32"), (125, "2.52")],
)
def test_six_second_increments(seconds: int, charge: str) -> None:
    assert TARIFF.charge("00441632960123", "international", timedelta(seconds=seconds)) == D(charge)


@pytest.mark.parametrize(
    ("seconds", "charge"), [(1, "2.00"), (5, "2.00"), (60, "2.00"), (61, "4.00"), (181, "8.00")]
)
def test_sixty_second_increments(seconds: int, charge: str) -> None:
    assert TARIFF.charge("16812345678", "premium", timedelta(seconds=seconds)) == D(charge)


@pytest.mark.parametrize("number", ["00441632960123", "16812345678", "01087654321"])
def test_zero_talk_time_costs_nothing(number: str) -> None:
    assert TARIFF.charge(number, "international", timedelta(0)) == ZERO
    assert TARIFF.charge(number, "international", timedelta(seconds=-3)) == ZERO


def test_charge_is_exact_decimal_yuan() -> None:
    tariff = Tariff(by_class={"hk_macau": Rate(D("1.50"), 6)})
    charge = tariff.charge("0085223456789", "hk_macau", timedelta(seconds=6))
    assert charge == D("0.15")
    assert str(charge) == "0.15"
    assert str(tariff.charge("0085223456789", "hk_macau", timedelta(seconds=20))) == "0.60"


def test_default_bundle_prices_premium_per_started_minute() -> None:
    tariff = load_policy().policy.tariff
    assert tariff.version == "default-2026"
    assert tariff.charge("16812345678", "premium", timedelta(seconds=5)) == D("2.00")
    assert tariff.charge("00441632960123", "international", timedelta(seconds=7)) == D("0.60")
    assert tariff.charge("02112345678", "local", timedelta(seconds=61)) == D("0.20")
