"""The clock: the only place pbxguard reads the time."""

from __future__ import annotations

from datetime import UTC, datetime


class SystemClock:
    """Reads the system clock, in UTC."""

    def now(self) -> datetime:
        """Return the current time, timezone-aware."""
        return datetime.now(UTC)
