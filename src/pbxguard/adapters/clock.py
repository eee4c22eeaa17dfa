"""The clock: the only place pbxguard reads the time."""

from __future__ import annotations

from datetime import UTC, datetime


class SystemClock:
    """Reads the system clock, in UTC."""

    def now(self) -> datetime:
        """Return the current time, timezone-aware."""
        return datetime.now(UTC)


class ShiftedClock:
    """Runs at the system clock's pace from a chosen instant (the simulated PBX's day)."""

    def __init__(self, start: datetime) -> None:
        self._offset = start.astimezone(UTC) - datetime.now(UTC)

    def now(self) -> datetime:
        """Return the shifted time, timezone-aware."""
        return datetime.now(UTC) + self._offset
