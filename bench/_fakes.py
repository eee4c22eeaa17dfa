"""Stand-ins for the ledger and the PBX, for benchmarks that measure the guard alone."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


class NullLedger:
    """Accepts every write and stores nothing."""

    async def record_decision(self, rec: Any) -> None:
        return None

    async def record_offence(self, draft: Any, rule: Any, *, timezone: Any) -> None:
        return None

    async def record_call(self, summary: Any) -> None:
        return None


class NullPbx:
    """Accepts every hangup and does nothing."""

    async def hangup(self, channel: str, cause: int = 21) -> None:
        return None


class WallClock:
    """The system clock in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)
