"""Duty rota: who answers each shared line (guard room, hotline, dispatch) at any instant.

Shared phones map to whoever the rota has on duty at the moment of the call (谁值班、谁负责,
EM-3/4), and a 24/7 line needs someone on every slot (AN-2).

A rota holds two kinds of shift for each line id:

- `DatedShift`: a person from one instant to another (crossing midnight freely);
- `WeeklyShift`: a person on a weekday in a wall-clock `TimeWindow` that recurs every week
  (a window ending at or before its start runs into the next date).

When shifts overlap, the rule is: a dated shift beats a weekly one, and within each kind the
shift added last wins (later in the rota's tuples, i.e. later in the rota file). So a swap or
a stand-in is recorded by adding a dated shift over the weekly pattern, and undone by
removing it again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

from pbxguard.domain.calendars import (
    Interval,
    Schedule,
    TimeWindow,
    Weekday,
    local_date,
    require_aware,
)
from pbxguard.errors import ConfigError

_ONE_DAY = timedelta(days=1)
DEFAULT_HANDOVER_HORIZON = timedelta(days=8)


def _check_ids(line: str, person: str) -> None:
    for what, value in (("line", line), ("person", person)):
        if not value or value != value.strip() or any(c.isspace() for c in value):
            raise ConfigError(f"a shift's {what} must be a non-empty id without spaces: {value!r}")


@dataclass(frozen=True, slots=True)
class DatedShift:
    """A person on duty on a line from ``start`` to ``end`` (half-open, aware datetimes)."""

    line: str
    person: str
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        _check_ids(self.line, self.person)
        for what, value in (("start", self.start), ("end", self.end)):
            if value.tzinfo is None or value.utcoffset() is None:
                raise ConfigError(f"a dated shift's {what} needs a timezone: {value.isoformat()}")
        if self.end <= self.start:
            raise ConfigError(
                f"shift of {self.person} on {self.line} ends ({self.end.isoformat()}) "
                f"at or before it starts ({self.start.isoformat()})"
            )

    @property
    def interval(self) -> Interval:
        """Return the time the shift covers, in UTC."""
        return Interval(self.start.astimezone(UTC), self.end.astimezone(UTC))


@dataclass(frozen=True, slots=True)
class WeeklyShift:
    """A person on duty on a line every week, on ``weekday`` during ``window``."""

    line: str
    person: str
    weekday: Weekday
    window: TimeWindow

    def __post_init__(self) -> None:
        _check_ids(self.line, self.person)
        if self.weekday not in range(7):
            raise ConfigError(f"weekday runs 0 (Monday) to 6 (Sunday), got {self.weekday}")

    def interval_on(self, day: date, tz: ZoneInfo) -> Interval | None:
        """Return the occurrence starting on a local date, or None if it is not that weekday.

        Args:
            day: the local date.
            tz: the site's timezone.

        Returns:
            The occurrence, or None.
        """
        if day.weekday() != self.weekday:
            return None
        return self.window.interval_on(day, tz)


Shift = DatedShift | WeeklyShift


@dataclass(frozen=True, slots=True)
class DutyPeriod:
    """A stretch of time during which one person (or nobody) holds a line."""

    person: str | None
    start: datetime
    end: datetime

    @property
    def interval(self) -> Interval:
        """Return the stretch as an interval."""
        return Interval(self.start, self.end)


@dataclass(frozen=True, slots=True)
class _Candidate:
    person: str
    interval: Interval
    rank: tuple[int, int]


@dataclass(frozen=True, slots=True)
class Rota:
    """The duty rota of the site's shared lines, in the site's timezone ``tz``."""

    tz: ZoneInfo
    dated: tuple[DatedShift, ...] = ()
    weekly: tuple[WeeklyShift, ...] = ()

    @property
    def lines(self) -> tuple[str, ...]:
        """Return the line ids that have at least one shift, sorted."""
        return tuple(sorted({s.line for s in self.dated} | {s.line for s in self.weekly}))

    def with_shift(self, shift: Shift) -> Rota:
        """Return a rota with one more shift, which wins over the earlier ones of its kind.

        Args:
            shift: the shift to add.

        Returns:
            A new rota.
        """
        if isinstance(shift, DatedShift):
            return Rota(self.tz, (*self.dated, shift), self.weekly)
        return Rota(self.tz, self.dated, (*self.weekly, shift))

    def without_shift(self, shift: Shift) -> Rota:
        """Return a rota without a shift (every copy of it).

        Args:
            shift: the shift to remove, equal field by field to one in the rota.

        Returns:
            A new rota.

        Raises:
            ConfigError: the rota has no such shift.
        """
        if isinstance(shift, DatedShift):
            dated = tuple(s for s in self.dated if s != shift)
            if len(dated) == len(self.dated):
                raise ConfigError(f"the rota has no such shift: {shift}")
            return Rota(self.tz, dated, self.weekly)
        weekly = tuple(s for s in self.weekly if s != shift)
        if len(weekly) == len(self.weekly):
            raise ConfigError(f"the rota has no such shift: {shift}")
        return Rota(self.tz, self.dated, weekly)

    def shifts_of(self, line: str) -> tuple[Shift, ...]:
        """Return every shift of a line, dated ones first, each kind in the order added.

        Args:
            line: the line id.

        Returns:
            The shifts.
        """
        return (
            *(s for s in self.dated if s.line == line),
            *(s for s in self.weekly if s.line == line),
        )

    def _candidates(self, line: str, first_day: date, last_day: date) -> Iterator[_Candidate]:
        # Rank: dated shifts (kind 1) beat weekly ones (kind 0); then the later one wins.
        for index, dated in enumerate(self.dated):
            if dated.line == line:
                yield _Candidate(dated.person, dated.interval, (1, index))
        day = first_day
        while day <= last_day:
            for index, weekly in enumerate(self.weekly):
                if weekly.line != line:
                    continue
                occurrence = weekly.interval_on(day, self.tz)
                if occurrence is not None:
                    yield _Candidate(weekly.person, occurrence, (0, index))
            day += _ONE_DAY

    def on_duty(self, line: str, at: datetime) -> str | None:
        """Return who is on duty on a line at an instant.

        Args:
            line: the line id (e.g. ``guard_room``, ``hotline``, ``dispatch``).
            at: a timezone-aware instant.

        Returns:
            The person id, or None when nobody is.

        Raises:
            ValueError: ``at`` is naive.
        """
        require_aware(at, "at")
        today = local_date(at, self.tz)
        best: _Candidate | None = None
        for candidate in self._candidates(line, today - _ONE_DAY, today):
            if candidate.interval.contains(at) and (best is None or candidate.rank > best.rank):
                best = candidate
        return None if best is None else best.person

    def timeline(self, line: str, start: datetime, end: datetime) -> tuple[DutyPeriod, ...]:
        """Return who holds a line over ``[start, end)``, gaps included as ``person=None``.

        Args:
            line: the line id.
            start: timezone-aware lower bound (inclusive).
            end: timezone-aware upper bound (exclusive).

        Returns:
            Consecutive periods covering ``[start, end)`` exactly, in time order, in the
            site's timezone; neighbours always differ in person.

        Raises:
            ValueError: a bound is naive.
        """
        require_aware(start, "start")
        require_aware(end, "end")
        # Cut points are compared and sorted in UTC: two datetimes sharing a tzinfo compare
        # by wall clock, which misorders instants around a clock change.
        start = start.astimezone(UTC)
        end = end.astimezone(UTC)
        if end <= start:
            return ()
        candidates = [
            c
            for c in self._candidates(
                line, local_date(start, self.tz) - _ONE_DAY, local_date(end, self.tz)
            )
            if c.interval.clip(start, end) is not None
        ]
        cuts = {start, end}
        for c in candidates:
            cuts.update(t for t in (c.interval.start, c.interval.end) if start < t < end)
        periods: list[DutyPeriod] = []
        for lo, hi in pairwise(sorted(cuts)):
            holders = [c for c in candidates if c.interval.start <= lo and hi <= c.interval.end]
            person = max(holders, key=lambda c: c.rank).person if holders else None
            if periods and periods[-1].person == person:
                periods[-1] = DutyPeriod(person, periods[-1].start, hi.astimezone(self.tz))
            else:
                periods.append(DutyPeriod(person, lo.astimezone(self.tz), hi.astimezone(self.tz)))
        return tuple(periods)

    def slots_without_cover(
        self,
        line: str,
        start: datetime,
        end: datetime,
        *,
        required: Schedule | None = None,
    ) -> tuple[Interval, ...]:
        """Return the stretches of ``[start, end)`` when nobody is on duty on a line (AN-2).

        Args:
            line: the line id.
            start: timezone-aware lower bound (inclusive).
            end: timezone-aware upper bound (exclusive).
            required: when the line must be covered; around the clock when omitted.

        Returns:
            Uncovered intervals in time order, in the site's timezone.

        Raises:
            ValueError: a bound is naive.
            ConfigError: ``required`` needs holiday data its table lacks.
        """
        gaps = [p.interval for p in self.timeline(line, start, end) if p.person is None]
        if required is None:
            return tuple(gaps)
        found: list[Interval] = []
        for gap in gaps:
            found.extend(required.active_intervals(gap.start, gap.end))
        return tuple(i.astimezone(self.tz) for i in found)

    def next_handover(
        self, line: str, at: datetime, *, horizon: timedelta = DEFAULT_HANDOVER_HORIZON
    ) -> datetime | None:
        """Return the next instant after ``at`` when `on_duty` gives another answer.

        Args:
            line: the line id.
            at: a timezone-aware instant.
            horizon: how far ahead to look; the default spans a week of weekly shifts.

        Returns:
            The instant, or None when nothing changes within ``horizon``.

        Raises:
            ValueError: ``at`` is naive.
        """
        periods = self.timeline(line, at, at + horizon)
        return periods[1].start if len(periods) > 1 else None
