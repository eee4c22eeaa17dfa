"""China's holidays as the installed chinese_calendar release publishes them."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from pbxguard.adapters.holidays import golden_weeks, holiday_table, supported_years
from pbxguard.domain.calendars import SpecialPeriod
from pbxguard.errors import ConfigError


def test_national_day_2026_is_the_first_to_the_seventh() -> None:
    table = holiday_table(2026)
    holidays = [
        date(2026, 10, d) for d in range(1, 9) if table.is_public_holiday(date(2026, 10, d))
    ]
    assert holidays == [date(2026, 10, d) for d in range(1, 8)]
    assert table.is_workday(date(2026, 10, 8))
    assert table.period_containing(date(2026, 10, 4)) == SpecialPeriod(
        "National Day", date(2026, 10, 1), date(2026, 10, 7)
    )


def test_adjusted_working_days_of_2026() -> None:
    table = holiday_table(2026)
    # Sunday 20 September and Saturday 10 October are worked for National Day.
    assert table.is_adjusted_working_day(date(2026, 9, 20))
    assert table.is_adjusted_working_day(date(2026, 10, 10))
    assert table.is_workday(date(2026, 10, 10))
    assert not table.is_adjusted_working_day(date(2026, 10, 11))
    assert not table.is_workday(date(2026, 10, 11))
    assert all(d.weekday() >= 5 for d in table.adjusted_working_days)


def test_golden_weeks_of_2026() -> None:
    assert golden_weeks(2026) == (
        SpecialPeriod("Labour Day", date(2026, 5, 1), date(2026, 5, 5)),
        SpecialPeriod("National Day", date(2026, 10, 1), date(2026, 10, 7)),
    )


def test_spring_festival_on_request() -> None:
    periods = golden_weeks(2026, spring_festival=True)
    assert periods[0] == SpecialPeriod("Spring Festival", date(2026, 2, 15), date(2026, 2, 23))
    assert len(periods) == 3


def test_a_run_mixing_two_festivals_is_one_golden_week() -> None:
    # In 2025 Mid-autumn (6 October) falls inside the National Day holiday.
    (labour, national) = golden_weeks(2025)
    assert national == SpecialPeriod("National Day", date(2025, 10, 1), date(2025, 10, 8))
    assert labour.first == date(2025, 5, 1)


def test_table_spans_several_years() -> None:
    table = holiday_table(2025, 2026)
    assert (table.first_year, table.last_year) == (2025, 2026)
    assert table.is_public_holiday(date(2025, 1, 1))
    assert table.is_public_holiday(date(2026, 1, 1))
    assert "chinese_calendar" in table.source
    assert [p.first for p in table.periods] == sorted(p.first for p in table.periods)


def test_ordinary_weekends_are_not_public_holidays() -> None:
    table = holiday_table(2026)
    saturday = date(2026, 11, 28)
    assert not table.is_public_holiday(saturday)
    assert not table.is_workday(saturday)


@pytest.mark.parametrize("year", [supported_years().stop, supported_years().start - 1])
def test_a_year_the_library_does_not_know_is_a_clear_error(year: int) -> None:
    with pytest.raises(ConfigError, match=f"no public-holiday data for {year}"):
        holiday_table(year)


def test_a_range_running_past_the_library_names_the_missing_year() -> None:
    last_known = supported_years().stop - 1
    missing = last_known + 1
    with pytest.raises(ConfigError, match=f"for {missing} in chinese_calendar"):
        golden_weeks(last_known, missing)


def test_the_table_refuses_questions_outside_its_years() -> None:
    table = holiday_table(2026)
    with pytest.raises(ConfigError, match="2025"):
        table.is_public_holiday(date(2026, 1, 1) - timedelta(days=1))


def test_years_must_run_forwards() -> None:
    with pytest.raises(ConfigError, match="backwards"):
        holiday_table(2026, 2025)
