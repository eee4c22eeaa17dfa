"""The ports the guard talks through; adapters implement them, tests use small fakes."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from pbxguard.domain.policy import Rule
from pbxguard.domain.records import CallSummary, DecisionRecord, OffenceDraft


class Clock(Protocol):
    """Tells the time; the only way the application reads the clock."""

    def now(self) -> datetime:
        """Return the current time, timezone-aware (UTC)."""


class PbxControl(Protocol):
    """Acts on the PBX."""

    async def hangup(self, channel: str, cause: int = 21) -> None:
        """Hang up exactly ``channel`` with ``cause``."""


class LedgerWriter(Protocol):
    """Writes the guard's facts to the fine ledger (idempotent by key)."""

    async def record_decision(self, rec: DecisionRecord) -> Any:
        """Store a decision."""

    async def record_offence(self, draft: OffenceDraft, rule: Rule, *, timezone: ZoneInfo) -> Any:
        """Price and store an offence."""

    async def record_call(self, summary: CallSummary) -> Any:
        """Store a finished call."""


class EventPublisher(Protocol):
    """Publishes what the guard decided and found (MQTT, or nothing)."""

    def publish(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Queue one message; never blocks, never raises."""
