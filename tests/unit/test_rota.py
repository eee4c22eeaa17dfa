"""Who is on duty on a shared line, across midnight, with overrides and gaps."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbxguard.domain.calendars import (
    DailyWindow,
    Interval,
    Schedule,
    TimeWindow,
    Weekday,
)
from pbxguard.domain.rota import DatedShift, DutyPeriod, Rota, WeeklyShift
from pbxguard.errors import ConfigError

SHANGHAI = ZoneInfo("Asia/Shanghai")
DAY = TimeWindow(time(8), time(20))
NIGHT = TimeWindow(time(20), time(8))


def sh(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI)


def guard_room_week() -> Rota:
    """Guard room: Wang by day, Li by night, every day of the week."""
    rota = Rota(SHANGHAI)
    for weekday in Weekday:
        rota = rota.with_shift(WeeklyShift("guard_room", "wang", weekday, DAY))
        rota = rota.with_shift(WeeklyShift("guard_room", "li", weekday, NIGHT))
    return rota


def test_night_shift_runs_past_midnight() -> None:
    rota = guard_room_week()
    # Monday 23 November 2026.
    assert rota.on_duty("guard_room", sh(2026, 11, 23, 7, 59)) == "li"  # Sunday's night
    assert rota.on_duty("guard_room", sh(2026, 11, 23, 8, 0)) == "wang"
    assert rota.on_duty("guard_room", sh(2026, 11, 23, 19, 59)) == "wang"
    assert rota.on_duty("guard_room", sh(2026, 11, 23, 20, 0)) == "li"
    assert rota.on_duty("guard_room", sh(2026, 11, 24, 0, 0)) == "li"
    assert rota.on_duty("guard_room", sh(2026, 11, 24, 7, 59)) == "li"


def test_lookup_takes_any_timezone() -> None:
    rota = guard_room_week()
    # 01:32 UTC is 09:32 in Shanghai.
    assert rota.on_duty("guard_room", datetime(2026, 11, 23, 1, 32, tzinfo=UTC)) == "wang"
    assert rota.on_duty("guard_room", datetime(2026, 11, 23, 23, 59, tzinfo=UTC)) == "li"


def test_unknown_line_has_nobody() -> None:
    assert guard_room_week().on_duty("hotline", sh(2026, 11, 23, 9)) is None


def test_a_one_off_night_crossing_midnight() -> None:
    rota = Rota(SHANGHAI).with_shift(
        DatedShift("hotline", "zhao", sh(2026, 10, 1, 22), sh(2026, 10, 2, 6))
    )
    assert rota.on_duty("hotline", sh(2026, 10, 1, 21, 59)) is None
    assert rota.on_duty("hotline", sh(2026, 10, 2, 3)) == "zhao"
    assert rota.on_duty("hotline", sh(2026, 10, 2, 6)) is None


def test_dated_shift_wins_over_weekly_and_later_dated_wins() -> None:
    swap = DatedShift("guard_room", "chen", sh(2026, 11, 23, 12), sh(2026, 11, 23, 22))
    later = DatedShift("guard_room", "zhou", sh(2026, 11, 23, 13), sh(2026, 11, 23, 14))
    rota = guard_room_week().with_shift(swap).with_shift(later)
    assert rota.on_duty("guard_room", sh(2026, 11, 23, 11, 59)) == "wang"
    assert rota.on_duty("guard_room", sh(2026, 11, 23, 12)) == "chen"
    assert rota.on_duty("guard_room", sh(2026, 11, 23, 13, 30)) == "zhou"
    assert rota.on_duty("guard_room", sh(2026, 11, 23, 21)) == "chen"  # over Li's night
    assert rota.on_duty("guard_room", sh(2026, 11, 23, 22)) == "li"
    # Added the other way round, the longer swap hides the short one.
    reversed_rota = guard_room_week().with_shift(later).with_shift(swap)
    assert reversed_rota.on_duty("guard_room", sh(2026, 11, 23, 13, 30)) == "chen"


def test_later_weekly_shift_wins_over_earlier_weekly() -> None:
    rota = guard_room_week().with_shift(
        WeeklyShift("guard_room", "sun", Weekday.MONDAY, TimeWindow(time(9), time(10)))
    )
    assert rota.on_duty("guard_room", sh(2026, 11, 23, 9, 30)) == "sun"
    assert rota.on_duty("guard_room", sh(2026, 11, 30, 9, 30)) == "sun"
    assert rota.on_duty("guard_room", sh(2026, 11, 24, 9, 30)) == "wang"


def test_removing_a_shift_restores_the_pattern() -> None:
    swap = DatedShift("guard_room", "chen", sh(2026, 11, 23, 12), sh(2026, 11, 23, 22))
    base = guard_room_week()
    rota = base.with_shift(swap)
    assert rota.without_shift(swap) == base
    assert base.on_duty("guard_room", sh(2026, 11, 23, 12)) == "wang"  # values never change
    weekly = WeeklyShift("guard_room", "li", Weekday.MONDAY, NIGHT)
    assert base.without_shift(weekly).on_duty("guard_room", sh(2026, 11, 23, 21)) is None


def test_removing_an_absent_shift_is_an_error() -> None:
    absent = DatedShift("hotline", "nobody", sh(2026, 1, 1), sh(2026, 1, 2))
    with pytest.raises(ConfigError, match="no such shift"):
        guard_room_week().without_shift(absent)
    with pytest.raises(ConfigError, match="no such shift"):
        guard_room_week().without_shift(WeeklyShift("hotline", "x", Weekday.MONDAY, DAY))


def test_timeline_and_gaps_of_a_24_7_line() -> None:
    rota = (
        Rota(SHANGHAI)
        .with_shift(DatedShift("hotline", "a", sh(2026, 10, 1, 0), sh(2026, 10, 1, 8)))
        .with_shift(DatedShift("hotline", "b", sh(2026, 10, 1, 9), sh(2026, 10, 1, 20)))
        .with_shift(DatedShift("hotline", "b", sh(2026, 10, 1, 20), sh(2026, 10, 2, 2)))
    )
    start, end = sh(2026, 10, 1), sh(2026, 10, 2)
    assert rota.timeline("hotline", start, end) == (
        DutyPeriod("a", sh(2026, 10, 1, 0), sh(2026, 10, 1, 8)),
        DutyPeriod(None, sh(2026, 10, 1, 8), sh(2026, 10, 1, 9)),
        DutyPeriod("b", sh(2026, 10, 1, 9), sh(2026, 10, 2, 0)),
    )
    assert rota.slots_without_cover("hotline", start, end) == (
        Interval(sh(2026, 10, 1, 8), sh(2026, 10, 1, 9)),
    )
    assert rota.slots_without_cover("hotline", sh(2026, 10, 2), sh(2026, 10, 2, 12)) == (
        Interval(sh(2026, 10, 2, 2), sh(2026, 10, 2, 12)),
    )


def test_gaps_outside_the_required_hours_do_not_count() -> None:
    rota = guard_room_week().without_shift(WeeklyShift("guard_room", "li", Weekday.MONDAY, NIGHT))
    daytime = Schedule(DailyWindow(TimeWindow(time(7, 30), time(22))), SHANGHAI)
    start, end = sh(2026, 11, 23), sh(2026, 11, 25)
    assert rota.slots_without_cover("guard_room", start, end) == (
        Interval(sh(2026, 11, 23, 20), sh(2026, 11, 24, 8)),
    )
    assert rota.slots_without_cover("guard_room", start, end, required=daytime) == (
        Interval(sh(2026, 11, 23, 20), sh(2026, 11, 23, 22)),
        Interval(sh(2026, 11, 24, 7, 30), sh(2026, 11, 24, 8)),
    )


def test_next_handover() -> None:
    rota = guard_room_week()
    assert rota.next_handover("guard_room", sh(2026, 11, 23, 9)) == sh(2026, 11, 23, 20)
    assert rota.next_handover("guard_room", sh(2026, 11, 23, 23)) == sh(2026, 11, 24, 8)
    assert rota.next_handover("hotline", sh(2026, 11, 23, 9)) is None
    assert rota.lines == ("guard_room",)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DatedShift("hotline", "a", sh(2026, 1, 2), sh(2026, 1, 1)), "before it starts"),
        (lambda: DatedShift("hotline", "a", sh(2026, 1, 1), sh(2026, 1, 1)), "before it starts"),
        (
            lambda: DatedShift("hotline", "a", datetime(2026, 1, 1), sh(2026, 1, 2)),  # noqa: DTZ001
            "timezone",
        ),
        (lambda: DatedShift("", "a", sh(2026, 1, 1), sh(2026, 1, 2)), "line"),
        (lambda: DatedShift("hotline", "a b", sh(2026, 1, 1), sh(2026, 1, 2)), "person"),
        (lambda: WeeklyShift("hotline", "a", 7, DAY), "weekday"),  # type: ignore[arg-type]
    ],
)
def test_invalid_shifts_are_refused(make: object, message: str) -> None:
    assert callable(make)
    with pytest.raises(ConfigError, match=message):
        make()


# --- properties ----------------------------------------------------------------------------

HOURS = st.integers(min_value=0, max_value=23)
WEEKLY = st.builds(
    WeeklyShift,
    st.just("line"),
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from(list(Weekday)),
    st.builds(TimeWindow, HOURS.map(time), HOURS.map(time)),
)
BASE = sh(2026, 11, 23)
DATED = st.builds(
    lambda person, start, length: DatedShift(
        "line", person, BASE + timedelta(hours=start), BASE + timedelta(hours=start + length)
    ),
    st.sampled_from(["x", "y"]),
    st.integers(min_value=-48, max_value=200),
    st.integers(min_value=1, max_value=60),
)
ROTAS = st.builds(
    lambda weekly, dated: Rota(SHANGHAI, tuple(dated), tuple(weekly)),
    st.lists(WEEKLY, max_size=6),
    st.lists(DATED, max_size=4),
)


@given(rota=ROTAS, offset=st.integers(min_value=0, max_value=7 * 24 * 60 - 1))
def test_timeline_agrees_with_on_duty(rota: Rota, offset: int) -> None:
    at = BASE + timedelta(minutes=offset)
    periods = rota.timeline("line", BASE, BASE + timedelta(days=7))
    assert periods[0].start == BASE
    assert periods[-1].end == BASE + timedelta(days=7)
    for before, after in pairwise(periods):
        assert before.end == after.start
        assert before.person != after.person
    holding = [p.person for p in periods if p.interval.contains(at)]
    assert holding == [rota.on_duty("line", at)]
