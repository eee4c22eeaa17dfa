"""Calendars: when a line must be reachable, and what counts as working time.

Theory of operation. A `Schedule` pairs a rule with the site's timezone. The rule says, for
each local calendar date, which wall-clock windows *start* on that date (`windows_on`). A
window whose end is not after its start runs into the next date, so the 22:00-06:00 night
shift of Friday covers Saturday 00:00-06:00; a window whose start equals its end lasts 24 h.
Every window of a date becomes a half-open interval of real instants, ``[start, end)``,
computed through `zoneinfo` so that no fixed UTC offset is ever assumed. "Is the line
required now?" is then "does any interval of yesterday or today contain this instant?", and
the next instant the answer flips is found by merging the intervals that follow.

Rules:

- `AlwaysOn`: 24 h a day (the guard-room alarm phone, EM-2).
- `DailyWindow`: the same window every day (DT-5: 07:30-22:00).
- `OperatingHours`: weekly hours every week, holidays or not (DT-3, 营运时间).
- `WorkingHours`: weekly hours on working days. Public holidays have no hours; an adjusted
  working day (调休上班, usually a weekend day) gets the hours of an ordinary weekday.

A schedule may carry `SpecialPeriod`s (DT-1: 黄金周等特殊时期24小时): on their dates the
schedule is active all day, on top of its ordinary windows.

Public holidays come in as a `HolidayTable` value built by an adapter from a maintained
library, so this module never imports one. A table knows which years it covers; asking it
about a date outside them raises `ConfigError` rather than guessing that the date is an
ordinary day.

Inputs are timezone-aware datetimes; a naive datetime is a programming error (`ValueError`).
Wall-clock times that do not exist (a spring-forward gap) or occur twice (a fall-back fold)
resolve as `zoneinfo` does with ``fold=0``; Asia/Shanghai has neither.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import MAXYEAR, MINYEAR, UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from pbxguard.errors import ConfigError

MIDNIGHT = time(0)
_ONE_DAY = timedelta(days=1)


class Weekday(enum.IntEnum):
    """Day of the week, numbered as `datetime.date.weekday` does (Monday is 0)."""

    MONDAY = 0
    TUESDAY = 1
    WEDNESDAY = 2
    THURSDAY = 3
    FRIDAY = 4
    SATURDAY = 5
    SUNDAY = 6


MONDAY_TO_FRIDAY: tuple[Weekday, ...] = (
    Weekday.MONDAY,
    Weekday.TUESDAY,
    Weekday.WEDNESDAY,
    Weekday.THURSDAY,
    Weekday.FRIDAY,
)
EVERY_DAY: tuple[Weekday, ...] = tuple(Weekday)


def require_aware(at: datetime, what: str = "datetime") -> None:
    """Reject a naive datetime.

    Args:
        at: the value to check.
        what: its name, for the message.

    Raises:
        ValueError: ``at`` has no UTC offset.
    """
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got {at.isoformat()}")


def local_date(at: datetime, tz: ZoneInfo) -> date:
    """Return the calendar date of an instant in the site's timezone.

    Args:
        at: a timezone-aware instant.
        tz: the site's timezone.

    Returns:
        The local date.

    Raises:
        ValueError: ``at`` is naive.
    """
    require_aware(at)
    return at.astimezone(tz).date()


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """Return the instant a local calendar date begins.

    Args:
        day: the date.
        tz: the site's timezone.

    Returns:
        An aware datetime in ``tz``.
    """
    return datetime.combine(day, MIDNIGHT, tzinfo=tz)


@dataclass(frozen=True, slots=True, eq=False)
class Interval:
    """A half-open span of real time, ``[start, end)``, between aware datetimes.

    Arithmetic and comparisons go through UTC: Python compares and subtracts two datetimes
    that share a tzinfo by wall clock, which is wrong across a clock change, and never finds
    a time in a repeated hour (fold) equal to the same instant in another zone (PEP 495).
    """

    start: datetime
    end: datetime

    def _key(self) -> tuple[datetime, datetime]:
        return self.start.astimezone(UTC), self.end.astimezone(UTC)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Interval):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __lt__(self, other: Interval) -> bool:
        return self._key() < other._key()

    def __le__(self, other: Interval) -> bool:
        return self._key() <= other._key()

    def __gt__(self, other: Interval) -> bool:
        return self._key() > other._key()

    def __ge__(self, other: Interval) -> bool:
        return self._key() >= other._key()

    @property
    def duration(self) -> timedelta:
        """Return how long the interval lasts."""
        return self.end.astimezone(UTC) - self.start.astimezone(UTC)

    def contains(self, at: datetime) -> bool:
        """Return whether an instant falls inside the interval.

        Args:
            at: an aware instant.

        Returns:
            True when ``start <= at < end``.
        """
        moment = at.astimezone(UTC)
        return self.start.astimezone(UTC) <= moment < self.end.astimezone(UTC)

    def clip(self, start: datetime, end: datetime) -> Interval | None:
        """Return the part of the interval inside ``[start, end)``, or None if empty.

        Args:
            start: lower bound (inclusive).
            end: upper bound (exclusive).

        Returns:
            The intersection in UTC, or None when it is empty.
        """
        lo = max(self.start.astimezone(UTC), start.astimezone(UTC))
        hi = min(self.end.astimezone(UTC), end.astimezone(UTC))
        return Interval(lo, hi) if lo < hi else None

    def astimezone(self, tz: ZoneInfo) -> Interval:
        """Return the same interval expressed in another timezone.

        Args:
            tz: the timezone to express both ends in.

        Returns:
            An equal interval whose ends carry ``tz``.
        """
        return Interval(self.start.astimezone(tz), self.end.astimezone(tz))


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """A daily wall-clock window that starts at ``start`` and ends at ``end``.

    ``end`` not after ``start`` means the window runs past midnight into the next date;
    ``start == end`` means 24 h (``TimeWindow.all_day()`` runs midnight to midnight).
    """

    start: time
    end: time

    def __post_init__(self) -> None:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ConfigError("a time window takes local wall-clock times without a timezone")

    @classmethod
    def all_day(cls) -> TimeWindow:
        """Return the midnight-to-midnight window."""
        return cls(MIDNIGHT, MIDNIGHT)

    @property
    def is_all_day(self) -> bool:
        """Return whether the window lasts 24 h."""
        return self.start == self.end

    @property
    def crosses_midnight(self) -> bool:
        """Return whether part of the window falls on the next date."""
        return self.end <= self.start and self.end != MIDNIGHT

    def contains_time(self, t: time) -> bool:
        """Return whether a wall-clock time of day falls inside the window.

        Args:
            t: a naive time of day.

        Returns:
            True when ``t`` is inside the window, on whichever date.
        """
        if self.start == self.end:
            return True
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def interval_on(self, day: date, tz: ZoneInfo) -> Interval | None:
        """Return the real-time interval of the window that starts on ``day``.

        Args:
            day: the local date the window starts on.
            tz: the site's timezone.

        Returns:
            The interval in UTC, or None when a clock change leaves it empty.
        """
        end_day = day if self.start < self.end else day + _ONE_DAY
        start = datetime.combine(day, self.start, tzinfo=tz).astimezone(UTC)
        end = datetime.combine(end_day, self.end, tzinfo=tz).astimezone(UTC)
        return Interval(start, end) if start < end else None


ALL_DAY = TimeWindow.all_day()


@dataclass(frozen=True, slots=True)
class WeeklyHours:
    """Windows for each day of the week; ``days[0]`` is Monday."""

    days: tuple[tuple[TimeWindow, ...], ...]

    def __post_init__(self) -> None:
        if len(self.days) != 7:
            raise ConfigError(f"weekly hours need 7 days of windows, got {len(self.days)}")

    @classmethod
    def on(cls, weekdays: Iterable[int], *windows: TimeWindow) -> WeeklyHours:
        """Build weekly hours with the same windows on the given weekdays.

        Args:
            weekdays: weekday numbers (Monday is 0), e.g. `MONDAY_TO_FRIDAY`.
            *windows: the windows each of those days gets.

        Returns:
            The weekly hours; other days have no windows.

        Raises:
            ConfigError: a weekday is outside 0-6.
        """
        return cls.from_mapping(dict.fromkeys(weekdays, windows))

    @classmethod
    def from_mapping(cls, by_weekday: Mapping[int, Sequence[TimeWindow]]) -> WeeklyHours:
        """Build weekly hours from a weekday -> windows mapping.

        Args:
            by_weekday: windows per weekday number (Monday is 0); missing days get none.

        Returns:
            The weekly hours.

        Raises:
            ConfigError: a weekday is outside 0-6.
        """
        bad = sorted(d for d in by_weekday if d not in range(7))
        if bad:
            raise ConfigError(f"weekday numbers run 0 (Monday) to 6 (Sunday), got {bad}")
        return cls(tuple(tuple(by_weekday.get(d, ())) for d in range(7)))

    def windows(self, weekday: int) -> tuple[TimeWindow, ...]:
        """Return the windows of one weekday.

        Args:
            weekday: Monday is 0.

        Returns:
            The windows that start on that weekday.
        """
        return self.days[weekday]

    @property
    def crosses_midnight(self) -> bool:
        """Return whether any window runs into the next date."""
        return any(w.crosses_midnight for day in self.days for w in day)


@dataclass(frozen=True, slots=True)
class DateSpan:
    """Consecutive calendar dates from ``first`` to ``last``, both included."""

    first: date
    last: date

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise ConfigError(f"date span ends ({self.last}) before it starts ({self.first})")

    def contains(self, day: date) -> bool:
        """Return whether a date falls inside the span.

        Args:
            day: the date.

        Returns:
            True when ``first <= day <= last``.
        """
        return self.first <= day <= self.last

    def bounds(self, tz: ZoneInfo) -> Interval:
        """Return the span as real time, from its first midnight to the one after it.

        Args:
            tz: the site's timezone.

        Returns:
            The half-open interval, in ``tz``.
        """
        return Interval(local_midnight(self.first, tz), local_midnight(self.last + _ONE_DAY, tz))


@dataclass(frozen=True, slots=True)
class SpecialPeriod:
    """Named dates (first and last included) on which a schedule is active all day."""

    name: str
    first: date
    last: date

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise ConfigError(
                f"special period {self.name!r} ends ({self.last}) before it starts ({self.first})"
            )

    def contains(self, day: date) -> bool:
        """Return whether a date falls inside the period.

        Args:
            day: the date.

        Returns:
            True when ``first <= day <= last``.
        """
        return self.first <= day <= self.last

    @property
    def days(self) -> int:
        """Return how many dates the period spans."""
        return (self.last - self.first).days + 1


@dataclass(frozen=True, slots=True)
class HolidayTable:
    """Public holidays and adjusted working days for the years ``first_year..last_year``.

    Built by an adapter from a maintained holiday library; ``source`` names it in messages.
    ``periods`` are the named runs of consecutive public holidays (Spring Festival, National
    Day, ...), in date order.
    """

    first_year: int
    last_year: int
    public_holidays: frozenset[date] = frozenset()
    adjusted_working_days: frozenset[date] = frozenset()
    periods: tuple[SpecialPeriod, ...] = ()
    source: str = ""

    def __post_init__(self) -> None:
        if self.last_year < self.first_year:
            raise ConfigError(
                f"holiday table covers no year ({self.first_year} to {self.last_year})"
            )
        outside = sorted(
            d
            for d in self.public_holidays | self.adjusted_working_days
            if not self.first_year <= d.year <= self.last_year
        )
        if outside:
            raise ConfigError(f"holiday table has dates outside the years it covers: {outside}")
        both = sorted(self.public_holidays & self.adjusted_working_days)
        if both:
            raise ConfigError(f"dates both public holidays and adjusted working days: {both}")

    @classmethod
    def without_holidays(cls) -> HolidayTable:
        """Return a table for a site that observes no public holidays: every year, no dates."""
        return cls(MINYEAR, MAXYEAR, source="no public holidays")

    def covers(self, day: date) -> bool:
        """Return whether the table has data for the year of a date.

        Args:
            day: the date.

        Returns:
            True when the year is within ``first_year..last_year``.
        """
        return self.first_year <= day.year <= self.last_year

    def _check(self, day: date) -> None:
        if not self.covers(day):
            source = f" from {self.source}" if self.source else ""
            raise ConfigError(
                f"no public-holiday data for {day.year}: the holiday table{source} covers "
                f"{self.first_year}-{self.last_year}; update the holiday data for {day.year}"
            )

    def is_public_holiday(self, day: date) -> bool:
        """Return whether a date is an official day off (weekends inside a holiday included).

        Args:
            day: the date.

        Returns:
            True for a public holiday.

        Raises:
            ConfigError: the table does not cover the date's year.
        """
        self._check(day)
        return day in self.public_holidays

    def is_adjusted_working_day(self, day: date) -> bool:
        """Return whether a date is a weekend day worked in exchange for a holiday (调休上班).

        Args:
            day: the date.

        Returns:
            True for an adjusted working day.

        Raises:
            ConfigError: the table does not cover the date's year.
        """
        self._check(day)
        return day in self.adjusted_working_days

    def is_workday(self, day: date) -> bool:
        """Return whether a date is an ordinary working day for a Monday-Friday office.

        Args:
            day: the date.

        Returns:
            True for a weekday that is not a holiday, or an adjusted working day.

        Raises:
            ConfigError: the table does not cover the date's year.
        """
        if self.is_adjusted_working_day(day):
            return True
        return day.weekday() < Weekday.SATURDAY and not self.is_public_holiday(day)

    def period_containing(self, day: date) -> SpecialPeriod | None:
        """Return the named holiday run that includes a date, if any.

        Args:
            day: the date.

        Returns:
            The period, or None when the date is in no holiday run.

        Raises:
            ConfigError: the table does not cover the date's year.
        """
        self._check(day)
        for period in self.periods:
            if period.contains(day):
                return period
        return None


def holiday_runs(named_days: Mapping[date, str]) -> tuple[SpecialPeriod, ...]:
    """Group holiday dates into runs of consecutive dates, each named by its commonest name.

    A run such as 2025-10-01..08 mixes "National Day" with one "Mid-autumn Festival" date;
    the run takes the name most of its dates carry (the earliest one on a tie).

    Args:
        named_days: each public-holiday date with the holiday it belongs to.

    Returns:
        The runs in date order.
    """
    runs: list[list[date]] = []
    for day in sorted(named_days):
        if runs and day - runs[-1][-1] == _ONE_DAY:
            runs[-1].append(day)
        else:
            runs.append([day])
    periods = []
    for run in runs:
        name = Counter(named_days[d] for d in run).most_common(1)[0][0]
        periods.append(SpecialPeriod(name, run[0], run[-1]))
    return tuple(periods)


@dataclass(frozen=True, slots=True)
class AlwaysOn:
    """Active 24 hours a day, every day."""

    crosses_midnight = False

    def windows_on(self, day: date) -> tuple[TimeWindow, ...]:
        """Return the all-day window for any date.

        Args:
            day: the local date.

        Returns:
            One all-day window.
        """
        return (ALL_DAY,)


@dataclass(frozen=True, slots=True)
class DailyWindow:
    """The same window every day, holidays included (DT-5: 07:30-22:00)."""

    window: TimeWindow

    @property
    def crosses_midnight(self) -> bool:
        """Return whether the window runs into the next date."""
        return self.window.crosses_midnight

    def windows_on(self, day: date) -> tuple[TimeWindow, ...]:
        """Return the daily window.

        Args:
            day: the local date.

        Returns:
            The one window.
        """
        return (self.window,)


@dataclass(frozen=True, slots=True)
class OperatingHours:
    """Weekly hours every week, whatever the holidays (营运时间)."""

    weekly: WeeklyHours

    @property
    def crosses_midnight(self) -> bool:
        """Return whether any window runs into the next date."""
        return self.weekly.crosses_midnight

    def windows_on(self, day: date) -> tuple[TimeWindow, ...]:
        """Return the windows of the date's weekday.

        Args:
            day: the local date.

        Returns:
            The windows that start on that date.
        """
        return self.weekly.windows(day.weekday())


@dataclass(frozen=True, slots=True)
class WorkingHours:
    """Weekly hours on working days: none on public holidays, weekday hours on adjusted days.

    ``adjusted_day_hours_of`` names the weekday whose windows an adjusted working day gets.
    """

    weekly: WeeklyHours
    holidays: HolidayTable
    adjusted_day_hours_of: Weekday = Weekday.MONDAY

    @property
    def crosses_midnight(self) -> bool:
        """Return whether any window runs into the next date."""
        return self.weekly.crosses_midnight

    def windows_on(self, day: date) -> tuple[TimeWindow, ...]:
        """Return the working windows of a date.

        Args:
            day: the local date.

        Returns:
            The windows that start on that date.

        Raises:
            ConfigError: the holiday table does not cover the date's year.
        """
        if self.holidays.is_adjusted_working_day(day):
            return self.weekly.windows(self.adjusted_day_hours_of)
        if self.holidays.is_public_holiday(day):
            return ()
        return self.weekly.windows(day.weekday())


ScheduleRule = AlwaysOn | DailyWindow | OperatingHours | WorkingHours

DEFAULT_HORIZON = timedelta(days=400)


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a line must be reachable, or when it is working time, at the site."""

    rule: ScheduleRule
    tz: ZoneInfo
    special_periods: tuple[SpecialPeriod, ...] = field(default=())

    @classmethod
    def always(cls, tz: ZoneInfo) -> Schedule:
        """Return a schedule active around the clock.

        Args:
            tz: the site's timezone.

        Returns:
            The schedule.
        """
        return cls(AlwaysOn(), tz)

    def with_special_periods(self, periods: Iterable[SpecialPeriod]) -> Schedule:
        """Return this schedule with extra all-day periods.

        Args:
            periods: the periods to add.

        Returns:
            A new schedule.
        """
        return Schedule(self.rule, self.tz, (*self.special_periods, *periods))

    def windows_on(self, day: date) -> tuple[TimeWindow, ...]:
        """Return the windows that start on a local date, special periods included.

        Args:
            day: the local date.

        Returns:
            The windows.

        Raises:
            ConfigError: the rule needs holiday data the table lacks.
        """
        windows = self.rule.windows_on(day)
        if any(p.contains(day) for p in self.special_periods):
            return (*windows, ALL_DAY)
        return windows

    def _intervals_of(self, day: date) -> list[Interval]:
        found = (w.interval_on(day, self.tz) for w in self.windows_on(day))
        return sorted(i for i in found if i is not None)

    def _intervals_from(self, day: date, until: datetime) -> Iterator[Interval]:
        # Every interval starts on its own date, so walking dates in order yields intervals
        # sorted by start, which is what merging needs. No interval of a date starts before
        # that date's midnight, so the walk ends at the first date beginning at ``until``.
        while local_midnight(day, self.tz) < until:
            yield from self._intervals_of(day)
            day += _ONE_DAY

    def _merged(self, first_day: date, until: datetime) -> Iterator[Interval]:
        current: Interval | None = None
        for interval in self._intervals_from(first_day, until):
            if interval.start >= until:
                break
            if current is None:
                current = interval
            elif interval.start <= current.end:
                if interval.end > current.end:
                    current = Interval(current.start, interval.end)
            else:
                yield current
                current = interval
        if current is not None:
            yield current

    def _first_day(self, at: datetime) -> date:
        today = at.astimezone(self.tz).date()
        return today - _ONE_DAY if self.rule.crosses_midnight else today

    def is_active(self, at: datetime) -> bool:
        """Return whether the schedule is active at an instant.

        Args:
            at: a timezone-aware instant.

        Returns:
            True inside a window (or a special period).

        Raises:
            ValueError: ``at`` is naive.
            ConfigError: the rule needs holiday data the table lacks.
        """
        require_aware(at, "at")
        at = at.astimezone(UTC)
        day = self._first_day(at)
        today = at.astimezone(self.tz).date()
        while day <= today:
            if any(i.contains(at) for i in self._intervals_of(day)):
                return True
            day += _ONE_DAY
        return False

    def next_change(self, at: datetime, *, horizon: timedelta = DEFAULT_HORIZON) -> datetime | None:
        """Return the next instant after ``at`` at which `is_active` gives the other answer.

        Args:
            at: a timezone-aware instant.
            horizon: how far ahead to look.

        Returns:
            The instant, in the site's timezone, or None when the answer does not change
            within ``horizon`` (always for a 24 h schedule).

        Raises:
            ValueError: ``at`` is naive.
            ConfigError: the rule needs holiday data the table lacks.
        """
        require_aware(at, "at")
        if isinstance(self.rule, AlwaysOn):
            return None
        at = at.astimezone(UTC)
        limit = at + horizon
        for interval in self._merged(self._first_day(at), limit):
            if interval.end <= at:
                continue
            change = interval.start if interval.start > at else interval.end
            return change.astimezone(self.tz) if change < limit else None
        return None

    def active_intervals(self, start: datetime, end: datetime) -> tuple[Interval, ...]:
        """Return the maximal intervals inside ``[start, end)`` during which it is active.

        Args:
            start: timezone-aware lower bound (inclusive).
            end: timezone-aware upper bound (exclusive).

        Returns:
            Disjoint, non-touching intervals in time order, expressed in the site's timezone.

        Raises:
            ValueError: a bound is naive.
            ConfigError: the rule needs holiday data the table lacks.
        """
        require_aware(start, "start")
        require_aware(end, "end")
        start = start.astimezone(UTC)
        end = end.astimezone(UTC)
        found = []
        for interval in self._merged(self._first_day(start), end):
            clipped = interval.clip(start, end)
            if clipped is not None:
                found.append(clipped.astimezone(self.tz))
        return tuple(found)

    def active_time(self, start: datetime, end: datetime) -> timedelta:
        """Return how much of ``[start, end)`` the schedule is active (e.g. of an outage).

        Args:
            start: timezone-aware lower bound (inclusive).
            end: timezone-aware upper bound (exclusive).

        Returns:
            The total active time.

        Raises:
            ValueError: a bound is naive.
            ConfigError: the rule needs holiday data the table lacks.
        """
        return sum((i.duration for i in self.active_intervals(start, end)), timedelta())


def _as_local_date(when: date | datetime, tz: ZoneInfo | None) -> date:
    if isinstance(when, datetime):
        if tz is None:
            raise ValueError("a datetime needs the site's timezone to find its local date")
        return local_date(when, tz)
    return when


def month_of(when: date | datetime, tz: ZoneInfo | None = None) -> DateSpan:
    """Return the calendar month containing a date or an instant.

    Args:
        when: a date, or an aware datetime (then ``tz`` is required).
        tz: the site's timezone, used to find the local date of a datetime.

    Returns:
        The month's first and last dates.

    Raises:
        ValueError: a datetime without ``tz``, or a naive datetime.
    """
    day = _as_local_date(when, tz)
    first = day.replace(day=1)
    following = (
        date(first.year + 1, 1, 1) if first.month == 12 else first.replace(month=first.month + 1)
    )
    return DateSpan(first, following - _ONE_DAY)


def quarter_of(when: date | datetime, tz: ZoneInfo | None = None) -> DateSpan:
    """Return the calendar quarter containing a date or an instant (DT-4 counts per quarter).

    Args:
        when: a date, or an aware datetime (then ``tz`` is required).
        tz: the site's timezone, used to find the local date of a datetime.

    Returns:
        The quarter's first and last dates.

    Raises:
        ValueError: a datetime without ``tz``, or a naive datetime.
    """
    day = _as_local_date(when, tz)
    first_month = 3 * ((day.month - 1) // 3) + 1
    first = date(day.year, first_month, 1)
    last = month_of(date(day.year, first_month + 2, 1)).last
    return DateSpan(first, last)
