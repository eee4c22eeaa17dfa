"""Schedules, windows across midnight, holidays, special periods and counting windows."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pbxguard.adapters.holidays import golden_weeks, holiday_table
from pbxguard.domain.calendars import (
    ALL_DAY,
    MONDAY_TO_FRIDAY,
    AlwaysOn,
    DailyWindow,
    DateSpan,
    HolidayTable,
    Interval,
    OperatingHours,
    Schedule,
    SpecialPeriod,
    TimeWindow,
    Weekday,
    WeeklyHours,
    WorkingHours,
    holiday_runs,
    local_date,
    month_of,
    quarter_of,
)
from pbxguard.errors import ConfigError

SHANGHAI = ZoneInfo("Asia/Shanghai")
OFFICE = TimeWindow(time(8, 30), time(17, 30))


def sh(year: int, month: int, day: int, hour: int = 0, minute: int = 0, *more: int) -> datetime:
    second = more[0] if more else 0
    return datetime(year, month, day, hour, minute, second, tzinfo=SHANGHAI)


@pytest.fixture(scope="module")
def table_2026() -> HolidayTable:
    return holiday_table(2026)


@pytest.fixture(scope="module")
def office_hours(table_2026: HolidayTable) -> Schedule:
    return Schedule(WorkingHours(WeeklyHours.on(MONDAY_TO_FRIDAY, OFFICE), table_2026), SHANGHAI)


# --- windows -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "t", "inside"),
    [
        (TimeWindow(time(7, 30), time(22)), time(7, 29, 59), False),
        (TimeWindow(time(7, 30), time(22)), time(7, 30), True),
        (TimeWindow(time(7, 30), time(22)), time(21, 59, 59), True),
        (TimeWindow(time(7, 30), time(22)), time(22), False),
        (TimeWindow(time(22), time(6)), time(23), True),
        (TimeWindow(time(22), time(6)), time(0), True),
        (TimeWindow(time(22), time(6)), time(5, 59), True),
        (TimeWindow(time(22), time(6)), time(6), False),
        (TimeWindow(time(22), time(6)), time(12), False),
        (ALL_DAY, time(0), True),
        (TimeWindow(time(9), time(9)), time(8, 59), True),
    ],
)
def test_time_of_day_membership(window: TimeWindow, t: time, inside: bool) -> None:
    assert window.contains_time(t) is inside


def test_crossing_midnight_is_about_the_next_date() -> None:
    assert TimeWindow(time(22), time(6)).crosses_midnight
    assert TimeWindow(time(9), time(9)).crosses_midnight
    assert not TimeWindow(time(22), time(0)).crosses_midnight
    assert not ALL_DAY.crosses_midnight
    assert not OFFICE.crosses_midnight


def test_window_rejects_times_with_a_timezone() -> None:
    with pytest.raises(ConfigError, match="wall-clock"):
        TimeWindow(time(8, tzinfo=UTC), time(9))


def test_weekly_hours_need_seven_days_and_valid_weekdays() -> None:
    with pytest.raises(ConfigError, match="7 days"):
        WeeklyHours(((OFFICE,),))
    with pytest.raises(ConfigError, match="0 \\(Monday\\) to 6"):
        WeeklyHours.on([7], OFFICE)


def test_night_shift_of_friday_covers_saturday_morning() -> None:
    night = Schedule(
        OperatingHours(WeeklyHours.on([Weekday.FRIDAY], TimeWindow(time(22), time(6)))), SHANGHAI
    )
    assert not night.is_active(sh(2026, 11, 27, 21, 59))  # Friday
    assert night.is_active(sh(2026, 11, 27, 22, 0))
    assert night.is_active(sh(2026, 11, 28, 0, 0))  # Saturday
    assert night.is_active(sh(2026, 11, 28, 5, 59, 59))
    assert not night.is_active(sh(2026, 11, 28, 6, 0))
    assert not night.is_active(sh(2026, 11, 28, 23, 0))  # Saturday night has no shift
    assert night.next_change(sh(2026, 11, 27, 12)) == sh(2026, 11, 27, 22)
    assert night.next_change(sh(2026, 11, 28, 1)) == sh(2026, 11, 28, 6)
    assert night.next_change(sh(2026, 11, 28, 6)) == sh(2026, 12, 4, 22)


def test_daily_standby_window_uses_the_site_timezone() -> None:
    standby = Schedule(DailyWindow(TimeWindow(time(7, 30), time(22))), SHANGHAI)
    # 23:30 UTC is 07:30 the next morning in Shanghai.
    assert standby.is_active(datetime(2026, 11, 22, 23, 30, tzinfo=UTC))
    assert not standby.is_active(datetime(2026, 11, 22, 23, 29, 59, tzinfo=UTC))
    assert not standby.is_active(datetime(2026, 11, 23, 14, 0, tzinfo=UTC))  # 22:00 local
    assert standby.next_change(datetime(2026, 11, 23, 1, 32, tzinfo=UTC)) == sh(2026, 11, 23, 22)
    assert standby.next_change(sh(2026, 11, 23, 22)) == sh(2026, 11, 24, 7, 30)


def test_daily_window_is_not_a_fixed_offset_across_a_clock_change() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    early = Schedule(DailyWindow(TimeWindow(time(1), time(4))), berlin)
    # 2026-03-29: clocks go from 02:00 CET to 03:00 CEST, so 01:00-04:00 lasts two hours.
    day = Interval(datetime(2026, 3, 29, tzinfo=berlin), datetime(2026, 3, 30, tzinfo=berlin))
    assert early.active_time(day.start, day.end) == timedelta(hours=2)
    assert early.next_change(day.start) == datetime(2026, 3, 29, 0, 0, tzinfo=UTC)
    assert early.next_change(datetime(2026, 3, 29, 0, 30, tzinfo=UTC)) == datetime(
        2026, 3, 29, 2, 0, tzinfo=UTC
    )


def test_always_on_never_changes() -> None:
    schedule = Schedule.always(SHANGHAI)
    assert schedule.is_active(sh(2026, 1, 1))
    assert schedule.next_change(sh(2026, 1, 1)) is None
    assert schedule.active_intervals(sh(2026, 1, 1), sh(2026, 1, 3)) == (
        Interval(sh(2026, 1, 1), sh(2026, 1, 3)),
    )


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Schedule.always(SHANGHAI).is_active(datetime(2026, 1, 1))  # noqa: DTZ001


# --- working hours and holidays -----------------------------------------------------------


def test_working_hours_on_an_ordinary_week(office_hours: Schedule) -> None:
    assert not office_hours.is_active(sh(2026, 11, 23, 8, 29))  # Monday
    assert office_hours.is_active(sh(2026, 11, 23, 8, 30))
    assert not office_hours.is_active(sh(2026, 11, 23, 17, 30))
    assert not office_hours.is_active(sh(2026, 11, 28, 10))  # Saturday
    assert office_hours.next_change(sh(2026, 11, 27, 17, 30)) == sh(2026, 11, 30, 8, 30)


def test_public_holidays_have_no_working_hours(office_hours: Schedule) -> None:
    # National Day 2026 runs Thursday 1 October to Wednesday 7 October.
    for day in range(1, 8):
        assert not office_hours.is_active(sh(2026, 10, day, 10)), day
    assert office_hours.is_active(sh(2026, 10, 8, 10))
    assert office_hours.next_change(sh(2026, 9, 30, 17, 30)) == sh(2026, 10, 8, 8, 30)


def test_adjusted_working_weekend_days_have_working_hours(office_hours: Schedule) -> None:
    assert office_hours.is_active(sh(2026, 9, 20, 9))  # Sunday, worked for National Day
    assert office_hours.is_active(sh(2026, 10, 10, 9))  # Saturday, worked for National Day
    assert not office_hours.is_active(sh(2026, 10, 11, 9))  # an ordinary Sunday
    assert office_hours.next_change(sh(2026, 10, 9, 17, 30)) == sh(2026, 10, 10, 8, 30)


def test_adjusted_day_takes_the_hours_of_the_chosen_weekday(table_2026: HolidayTable) -> None:
    weekly = WeeklyHours.from_mapping({Weekday.MONDAY: [OFFICE], Weekday.FRIDAY: [ALL_DAY]})
    friday_like = Schedule(WorkingHours(weekly, table_2026, Weekday.FRIDAY), SHANGHAI)
    assert friday_like.is_active(sh(2026, 10, 10, 3))


def test_golden_week_makes_the_duty_phone_required_around_the_clock(
    table_2026: HolidayTable,
) -> None:
    duty = Schedule(
        WorkingHours(WeeklyHours.on(MONDAY_TO_FRIDAY, OFFICE), table_2026),
        SHANGHAI,
        golden_weeks(2026),
    )
    assert not duty.is_active(sh(2026, 9, 30, 23, 59, 59))
    assert duty.next_change(sh(2026, 9, 30, 17, 30)) == sh(2026, 10, 1)
    assert duty.is_active(sh(2026, 10, 1, 0, 0))
    assert duty.is_active(sh(2026, 10, 4, 3, 0))
    assert duty.is_active(sh(2026, 10, 7, 23, 59, 59))
    assert duty.next_change(sh(2026, 10, 1, 0, 0)) == sh(2026, 10, 8)
    assert not duty.is_active(sh(2026, 10, 8, 0, 0))
    assert duty.is_active(sh(2026, 10, 8, 9))  # back to ordinary office hours
    assert duty.active_intervals(sh(2026, 9, 30, 12), sh(2026, 10, 8, 12)) == (
        Interval(sh(2026, 9, 30, 12), sh(2026, 9, 30, 17, 30)),
        Interval(sh(2026, 10, 1), sh(2026, 10, 8)),
        Interval(sh(2026, 10, 8, 8, 30), sh(2026, 10, 8, 12)),
    )


def test_special_period_keeps_a_night_window_that_runs_past_it() -> None:
    night = OperatingHours(WeeklyHours.on([Weekday.WEDNESDAY], TimeWindow(time(22), time(6))))
    schedule = Schedule(
        night, SHANGHAI, (SpecialPeriod("drill", date(2026, 10, 7), date(2026, 10, 7)),)
    )
    assert schedule.next_change(sh(2026, 10, 7, 12)) == sh(2026, 10, 8, 6)


def test_outage_time_inside_working_hours(office_hours: Schedule) -> None:
    # Down from Friday 17:00 to Monday 09:00: half an hour on Friday, half an hour on Monday.
    assert office_hours.active_time(sh(2026, 11, 27, 17), sh(2026, 11, 30, 9)) == timedelta(hours=1)


def test_a_year_without_holiday_data_is_an_error_not_an_ordinary_year(
    office_hours: Schedule,
) -> None:
    with pytest.raises(ConfigError, match="2027"):
        office_hours.is_active(sh(2027, 1, 4, 10))
    with pytest.raises(ConfigError, match="2027"):
        office_hours.next_change(sh(2026, 12, 31, 18))


def test_a_site_without_holidays_covers_every_year() -> None:
    plain = Schedule(
        WorkingHours(WeeklyHours.on(MONDAY_TO_FRIDAY, OFFICE), HolidayTable.without_holidays()),
        SHANGHAI,
    )
    assert plain.is_active(sh(2040, 10, 1, 10))  # a Monday


def test_holiday_table_rejects_inconsistent_data() -> None:
    with pytest.raises(ConfigError, match="covers no year"):
        HolidayTable(2027, 2026)
    with pytest.raises(ConfigError, match="outside the years"):
        HolidayTable(2026, 2026, public_holidays=frozenset({date(2025, 12, 31)}))
    day = date(2026, 6, 1)
    with pytest.raises(ConfigError, match="both"):
        HolidayTable(
            2026, 2026, public_holidays=frozenset({day}), adjusted_working_days=frozenset({day})
        )


def test_special_period_dates_must_be_in_order() -> None:
    with pytest.raises(ConfigError, match="ends"):
        SpecialPeriod("backwards", date(2026, 10, 7), date(2026, 10, 1))


def test_holiday_runs_take_the_name_most_of_their_dates_carry() -> None:
    names = {date(2026, 1, 1) + timedelta(days=i): "A" for i in range(3)}
    names[date(2026, 1, 2)] = "B"
    names[date(2026, 1, 9)] = "C"
    assert holiday_runs(names) == (
        SpecialPeriod("A", date(2026, 1, 1), date(2026, 1, 3)),
        SpecialPeriod("C", date(2026, 1, 9), date(2026, 1, 9)),
    )


# --- counting windows ----------------------------------------------------------------------


def test_quarter_boundary_in_local_time() -> None:
    q1 = DateSpan(date(2026, 1, 1), date(2026, 3, 31))
    q2 = DateSpan(date(2026, 4, 1), date(2026, 6, 30))
    assert quarter_of(sh(2026, 3, 31, 23, 59), SHANGHAI) == q1
    assert quarter_of(sh(2026, 4, 1, 0, 0), SHANGHAI) == q2
    # 16:00 UTC on 31 March is already 1 April in Shanghai.
    assert quarter_of(datetime(2026, 3, 31, 16, 0, tzinfo=UTC), SHANGHAI) == q2
    assert quarter_of(datetime(2026, 3, 31, 15, 59, tzinfo=UTC), SHANGHAI) == q1
    assert q2.bounds(SHANGHAI) == Interval(sh(2026, 4, 1), sh(2026, 7, 1))


@pytest.mark.parametrize(
    ("day", "first", "last"),
    [
        (date(2026, 1, 15), date(2026, 1, 1), date(2026, 3, 31)),
        (date(2026, 5, 1), date(2026, 4, 1), date(2026, 6, 30)),
        (date(2026, 9, 30), date(2026, 7, 1), date(2026, 9, 30)),
        (date(2026, 12, 31), date(2026, 10, 1), date(2026, 12, 31)),
    ],
)
def test_quarters(day: date, first: date, last: date) -> None:
    assert quarter_of(day) == DateSpan(first, last)


def test_months() -> None:
    assert month_of(date(2024, 2, 10)) == DateSpan(date(2024, 2, 1), date(2024, 2, 29))
    assert month_of(date(2026, 12, 31)) == DateSpan(date(2026, 12, 1), date(2026, 12, 31))
    assert month_of(sh(2026, 11, 30, 23, 59), SHANGHAI).last == date(2026, 11, 30)


def test_a_datetime_needs_the_site_timezone_to_pick_its_quarter() -> None:
    with pytest.raises(ValueError, match="timezone"):
        quarter_of(sh(2026, 3, 31, 23, 59))


# --- properties ----------------------------------------------------------------------------

ZONES = st.sampled_from(
    [SHANGHAI, ZoneInfo("UTC"), ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")]
)
INSTANTS = st.datetimes(
    min_value=datetime(2020, 1, 1),  # noqa: DTZ001
    max_value=datetime(2030, 12, 31),  # noqa: DTZ001
    timezones=st.just(UTC),
)
TIMES = st.times().map(lambda t: t.replace(second=0, microsecond=0))
WINDOWS = st.builds(TimeWindow, TIMES, TIMES)
WEEKLY = st.lists(st.lists(WINDOWS, max_size=3).map(tuple), min_size=7, max_size=7).map(
    lambda days: WeeklyHours(tuple(days))
)
RULES = st.one_of(
    st.builds(DailyWindow, WINDOWS),
    st.builds(OperatingHours, WEEKLY),
    st.just(AlwaysOn()),
)
SCHEDULES = st.builds(Schedule, RULES, ZONES)


@given(start=TIMES, tz=ZONES, at=INSTANTS)
def test_a_24_hour_window_is_always_active(start: time, tz: ZoneInfo, at: datetime) -> None:
    assert Schedule(DailyWindow(TimeWindow(start, start)), tz).is_active(at)
    assert Schedule.always(tz).is_active(at)


@settings(max_examples=300)
@given(schedule=SCHEDULES, at=INSTANTS)
# An interval ending in the repeated hour of a DST change must equal the same instant in UTC.
@example(
    schedule=Schedule.always(ZoneInfo("Europe/Berlin")),
    at=datetime(2028, 10, 14, 0, 0, tzinfo=UTC),
)
def test_next_change_really_flips(schedule: Schedule, at: datetime) -> None:
    now = schedule.is_active(at)
    change = schedule.next_change(at, horizon=timedelta(days=15))
    if change is None:
        assert schedule.active_intervals(at, at + timedelta(days=15)) in (
            (),
            (Interval(at, at + timedelta(days=15)),),
        )
        return
    assert change > at
    assert schedule.is_active(change) is not now
    just_before = change.astimezone(UTC) - timedelta(microseconds=1)
    assert schedule.is_active(just_before) is now
    assert schedule.active_intervals(at, change) == ((Interval(at, change),) if now else ())


@given(schedule=SCHEDULES, at=INSTANTS)
def test_active_intervals_agree_with_is_active(schedule: Schedule, at: datetime) -> None:
    intervals = schedule.active_intervals(at - timedelta(days=2), at + timedelta(days=2))
    assert any(i.contains(at) for i in intervals) is schedule.is_active(at)
    assert all(a.end < b.start for a, b in pairwise(intervals))


@given(at=INSTANTS, tz=ZONES)
def test_quarter_contains_its_local_date(at: datetime, tz: ZoneInfo) -> None:
    quarter = quarter_of(at, tz)
    assert quarter.contains(local_date(at, tz))
    assert quarter.bounds(tz).contains(at)
    assert quarter.first.month in (1, 4, 7, 10)
    assert quarter.first.day == 1
    assert (quarter.last + timedelta(days=1)).month in (1, 4, 7, 10)
