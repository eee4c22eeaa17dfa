"""China's public holidays and adjusted working days, from the `chinese_calendar` library.

The State Council publishes each year's arrangement (放假安排) late in the previous year, and
`chinese_calendar` releases follow it. Nothing here is typed by hand: the table is read from
the library, and a year the installed release does not know is a `ConfigError` naming the
year, never an empty table that would silently treat holidays as working days.

`site_holiday_table` is what a running site uses: the years `chinese_calendar` knows, and for
the years after them (a release lags the announcement by weeks) the public holidays of the
`holidays` library's China calendar, which follows the statutory rules. Such a year has no
adjusted working days until `chinese_calendar` catches up; its table says so in ``source``
and the loader logs it, so nobody mistakes an estimate for the official arrangement.
"""

from __future__ import annotations

from datetime import date, timedelta
from importlib.metadata import PackageNotFoundError, version

import chinese_calendar
import holidays as holiday_rules

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
    return golden_weeks_in(holiday_table(first_year, last), spring_festival=spring_festival)


def golden_weeks_in(
    table: HolidayTable, *, spring_festival: bool = False
) -> tuple[SpecialPeriod, ...]:
    """Return the Golden Week runs of every year ``table`` covers, in date order."""
    found: list[SpecialPeriod] = []
    for year in range(table.first_year, table.last_year + 1):
        for anchor in (date(year, 5, 1), date(year, 10, 1)):
            period = table.period_containing(anchor)
            if period is None:
                raise ConfigError(f"{table.source} has no public holiday on {anchor}")
            found.append(period)
        if spring_festival:
            found.extend(
                p for p in table.periods if SPRING_FESTIVAL in p.name and p.first.year == year
            )
    return tuple(sorted(set(found), key=lambda p: p.first))


def _rules_label() -> str:
    try:
        return f"holidays {version('holidays')}"
    except PackageNotFoundError:
        return "holidays"


def _statutory_holidays(year: int) -> dict[date, str]:
    """Return the China public holidays the `holidays` library derives for ``year``."""
    calendar = holiday_rules.country_holidays("CN", years=[year], language="en_US")
    return {day: str(name) for day, name in calendar.items() if day.year == year}


def site_holiday_table(*, recent_years: int = 2, years_ahead: int = 2) -> HolidayTable:
    """Build the table a running site needs: recent official years plus the years ahead.

    Args:
        recent_years: how many of the newest years `chinese_calendar` knows to include.
        years_ahead: how many years after those to fill from the statutory rules.

    Returns:
        One table; ``source`` names both libraries when the statutory fallback is used.
    """
    known = supported_years()
    last_known = known.stop - 1
    official = holiday_table(max(known.start, last_known - recent_years + 1), last_known)
    if years_ahead <= 0:
        return official
    named = dict.fromkeys(official.public_holidays, "")
    for period in official.periods:
        day = period.first
        while day <= period.last:
            named[day] = period.name
            day += _ONE_DAY
    ahead = range(last_known + 1, last_known + 1 + years_ahead)
    for year in ahead:
        named.update(_statutory_holidays(year))
    return HolidayTable(
        first_year=official.first_year,
        last_year=ahead.stop - 1,
        public_holidays=frozenset(named),
        adjusted_working_days=official.adjusted_working_days,
        periods=holiday_runs({d: n for d, n in named.items() if n}),
        source=(
            f"{official.source} (official, to {last_known}); {_rules_label()} statutory "
            f"holidays for {ahead.start}-{ahead.stop - 1} without adjusted working days"
        ),
    )
