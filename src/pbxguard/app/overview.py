"""What the console's overview shows: today's decisions, open alerts, the protected lines, who
is on duty, and the guard's health.

Inside the daemon the live parts come from the running guard (`LiveView`); a standalone console
over a ledger has no live state and says so (`NoLiveView`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Protocol

from pbxguard.app.ports import DecisionCountsPort
from pbxguard.app.rota import DutySlot, day_of_duty
from pbxguard.domain.effects import RaiseAlert
from pbxguard.domain.policy import Policy


@dataclass(frozen=True, slots=True)
class GuardHealth:
    """How the running guard stands (every field None when there is no running guard).

    Attributes:
        live: whether this console runs inside the daemon.
        ami_connected: logged in to AMI right now.
        fastagi_listening: the FastAGI server is listening (None when disabled).
        ledger_writable: the writer's last write went through (False while it retries).
        ledger_error: the writer's last error, if any.
        journal_pending: facts waiting for the database.
        broker_connected: the MQTT link is up (None when MQTT is off).
    """

    live: bool
    ami_connected: bool | None = None
    fastagi_listening: bool | None = None
    ledger_writable: bool | None = None
    ledger_error: str = ""
    journal_pending: int | None = None
    broker_connected: bool | None = None

    @property
    def ready(self) -> bool:
        """Tell whether every part that is on works (what /healthz reports as ready)."""
        if not self.live:
            return bool(self.ledger_writable)
        parts = [self.ami_connected, self.ledger_writable]
        parts.extend(p for p in (self.fastagi_listening, self.broker_connected) if p is not None)
        return all(bool(p) for p in parts)


@dataclass(frozen=True, slots=True)
class LineState:
    """A protected phone and its state since when."""

    extension: str
    name: str
    duty_line: str
    availability: str
    since: datetime | None
    device_state: str


@dataclass(frozen=True, slots=True)
class GuardCounters:
    """The counters /metrics exposes, since the daemon started."""

    decisions: dict[tuple[str, str], int] = field(default_factory=dict)
    hangups_sent: int = 0
    hangups_confirmed: int = 0
    hangups_failed: int = 0
    ami_events: int = 0
    ledger_written: int = 0
    ledger_set_aside: int = 0
    journal_pending: int = 0
    alerts_open: int = 0
    fastagi_buckets: tuple[tuple[float, int], ...] = ()
    fastagi_count: int = 0
    fastagi_sum: float = 0.0


class LiveView(Protocol):
    """The running guard, seen from the console."""

    def health(self) -> GuardHealth:
        """Return how the guard stands."""

    def open_alerts(self) -> list[RaiseAlert]:
        """Return the alerts not cleared yet."""

    def lines(self) -> list[LineState]:
        """Return the protected lines' states."""

    def counters(self) -> GuardCounters:
        """Return the counters for /metrics."""


class NoLiveView:
    """A console over a ledger alone: no running guard to look at."""

    def __init__(self, ledger_writable: bool = True) -> None:
        self._writable = ledger_writable

    def health(self) -> GuardHealth:
        """Return a health with no live parts."""
        return GuardHealth(live=False, ledger_writable=self._writable)

    def open_alerts(self) -> list[RaiseAlert]:
        """Return no alerts (nothing watches the lines here)."""
        return []

    def lines(self) -> list[LineState]:
        """Return no line states."""
        return []

    def counters(self) -> GuardCounters:
        """Return empty counters."""
        return GuardCounters()


@dataclass(frozen=True, slots=True)
class TodayDecisions:
    """Today's verdicts, counted."""

    total: int
    blocked: int
    allowed_by_approval: int
    emergency: int
    by_class: dict[str, int]


def day_bounds(policy: Policy, now: datetime) -> tuple[datetime, datetime]:
    """Return the [start, end) of ``now``'s day in the site's timezone."""
    local = now.astimezone(policy.timezone)
    start = datetime.combine(local.date(), time(0, 0), tzinfo=policy.timezone)
    return start, start + timedelta(days=1)


def today_decisions(counts: DecisionCountsPort, policy: Policy, now: datetime) -> TodayDecisions:
    """Count today's verdicts: blocked, allowed by an approval, emergency calls."""
    start, end = day_bounds(policy, now)
    total = blocked = approved = emergency = 0
    by_class: dict[str, int] = {}
    for number_class, verdict, by_approval, count in counts.counts(start, end):
        total += count
        if verdict != "allow":
            blocked += count
            by_class[number_class] = by_class.get(number_class, 0) + count
        elif by_approval:
            approved += count
        if number_class == "emergency":
            emergency += count
    return TodayDecisions(total, blocked, approved, emergency, by_class)


def on_duty_now(policy: Policy, now: datetime) -> list[DutySlot]:
    """Return who holds each rota line at ``now`` (a slot with no person is a gap)."""
    local = now.astimezone(policy.timezone)
    return [s for s in day_of_duty(policy, local.date()) if s.start <= now < s.end]
