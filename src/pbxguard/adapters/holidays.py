"""China's public holidays and adjusted working days, from the `chinese_calendar` library.

The State Council publishes each year's arrangement (放假安排) late in the previous year, and
`chinese_calendar` releases follow it. Nothing here is typed by hand: the table is read from
the library, and a year the installed release does not know is a `ConfigError` naming the
year, never an empty table that would silently treat holidays as working days.
"""

from __future__ import annotations

from datetime import date, timedelta
from importlib.metadata import PackageNotFoundError, version

import chinese_calendar

from pbxguard.domain.calendars import HolidayTable, SpecialPeriod, holiday_runs
from pbxguard.errors import ConfigError

SPRING_FESTIVAL = "Spring Festival"
_ONE_DAY = timedelta(days=1)


def _library_label() -> str:
    try:
        return f"chinese_calendar {version('chinese_calendar')}"
    except PackageNotFoundError:
        return "chinese_calendar"


def supported_years() -> range:
    """Return the years the installed `chinese_calendar` release has data for."""
    known: list[date] = list(chinese_calendar.holidays)
    return range(min(known).year, max(known).year + 1)


def _check_years(first_year: int, last_year: int) -> None:
    if last_year < first_year:
        raise ConfigError(f"holiday years run backwards: {first_year} to {last_year}")
    supported = supported_years()
    for year in (first_year, last_year):
        if year not in supported:
            raise ConfigError(
                f"no public-holiday data for {year} in {_library_label()} (it covers "
                f"{supported.start}-{supported.stop - 1}); upgrade chinese_calendar or leave "
                f"{year} out of the calendar"
            )


def _detail(day: date) -> tuple[bool, str | None]:
    try:
        is_holiday, name = chinese_calendar.get_holiday_detail(day)
    except NotImplementedError as exc:
        raise ConfigError(f"no public-holiday data for {day.year}: {exc}") from exc
    return bool(is_holiday), None if name is None else str(name)


def holiday_table(first_year: int, last_year: int | None = None) -> HolidayTable:
    """Build the public-holiday table for ``first_year..last_year`` (default: one year).

    Weekend days inside a holiday count as public holidays; a year the installed library
    does not know raises `ConfigError` naming it.
    """
    last = first_year if last_year is None else last_year
    _check_years(first_year, last)
    named_holidays: dict[date, str] = {}
    working: set[date] = set()
    day = date(first_year, 1, 1)
    end = date(last, 12, 31)
    while day <= end:
        is_holiday, name = _detail(day)
        # The library names a date only when the holiday arrangement touches it: a named
        # rest day is a public holiday, a named working day is a swapped (调休) working day.
        if name is not None:
            if is_holiday:
                named_holidays[day] = name
            else:
                working.add(day)
        day += _ONE_DAY
    return HolidayTable(
        first_year=first_year,
        last_year=last,
        public_holidays=frozenset(named_holidays),
        adjusted_working_days=frozenset(working),
        periods=holiday_runs(named_holidays),
        source=_library_label(),
    )


def golden_weeks(
    first_year: int, last_year: int | None = None, *, spring_festival: bool = False
) -> tuple[SpecialPeriod, ...]:
    """Return the Golden Week runs (those containing 1 May and 1 October), in date order.

    Each run is named after its holiday ("Labour Day", "National Day"); ``spring_festival``
    adds each year's "Spring Festival" run.
    """
    last = first_year if last_year is None else last_year
    table = holiday_table(first_year, last)
    found: list[SpecialPeriod] = []
    for year in range(first_year, last + 1):
        for anchor in (date(year, 5, 1), date(year, 10, 1)):
            period = table.period_containing(anchor)
            if period is None:
                raise ConfigError(f"{table.source} has no public holiday on {anchor}")
            found.append(period)
        if spring_festival:
            found.extend(
                p for p in table.periods if p.name == SPRING_FESTIVAL and p.first.year == year
            )
    return tuple(sorted(set(found), key=lambda p: p.first))
