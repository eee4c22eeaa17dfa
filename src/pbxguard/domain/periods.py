"""Reporting periods: a month as the site reckons it ("2026-11" in Asia/Shanghai)."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from pbxguard.errors import ConfigError

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def month_bounds(month: str, timezone: ZoneInfo) -> tuple[datetime, datetime]:
    """Return the [start, end) instants of ``month`` ("2026-10") in ``timezone``.

    Raises:
        ConfigError: ``month`` is not YYYY-MM.
    """
    match = _MONTH.match(month)
    if match is None or not 1 <= int(match.group(2)) <= 12:
        raise ConfigError(f"月份格式应为 YYYY-MM — month {month!r} is not YYYY-MM")
    year, number = int(match.group(1)), int(match.group(2))
    start = datetime(year, number, 1, tzinfo=timezone)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=timezone)
    return start, end


def month_of(at: datetime, timezone: ZoneInfo) -> str:
    """Return the month ("2026-11") ``at`` falls in, in ``timezone``."""
    return at.astimezone(timezone).strftime("%Y-%m")
