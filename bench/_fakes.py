"""Stand-ins for the journal, the notifier and the PBX, for benchmarks of the guard alone."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any


class NullFacts:
    """Accepts every fact and keeps none (the journal left out of the measurement)."""

    def append(self, facts: Sequence[Any]) -> None:
        return None

    @property
    def pending(self) -> int:
        return 0


class NullNotifier:
    """Publishes nothing."""

    def decision_made(self, record: Any) -> None:
        return None

    def offence_recorded(self, entry: Any) -> None:
        return None

    def call_hung_up(self, channel: str, linkedid: str, rule_id: str) -> None:
        return None

    def alert_raised(self, alert: Any) -> None:
        return None

    def alert_cleared(self, alert: Any) -> None:
        return None


class NullPbx:
    """Accepts every hangup and does nothing."""

    async def hangup(self, channel: str, cause: int = 21) -> None:
        return None


class WallClock:
    """The system clock in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)
