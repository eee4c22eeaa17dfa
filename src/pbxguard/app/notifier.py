"""One publishing method per domain event, over whatever link is configured.

Topics are fixed (``pbxguard/<site>/<kind>``, the link adds the prefix); payloads are built
here and nowhere else, so subscribers see one stable shape per kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pbxguard.app.ports import EventPublisher
from pbxguard.domain.policy import Rule
from pbxguard.domain.records import DecisionRecord, OffenceDraft
from pbxguard.domain.standby import ClearAlert, RaiseAlert


class NullPublisher:
    """Publishes nothing: MQTT is optional."""

    def publish(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Drop the message."""


def _iso(at: datetime) -> str:
    return at.isoformat()


class Notifier:
    """Publish the guard's decisions, offences, hangups and alerts."""

    def __init__(self, link: EventPublisher, *, site: str) -> None:
        self._link = link
        self._site = site

    def decision_made(self, record: DecisionRecord) -> None:
        """Publish a verdict given by either layer."""
        self._link.publish(
            "decisions",
            {
                "id": record.key,
                "site": self._site,
                "at": _iso(record.at),
                "layer": record.layer.value,
                "linkedid": record.call.linkedid,
                "uniqueid": record.call.uniqueid,
                "extension": record.extension,
                "person": record.person_id,
                "dialled": record.dialled,
                "number_class": record.number_class,
                "verdict": record.verdict,
                "rule": record.rule_id,
                "reason_zh": record.reason_zh,
                "reason_en": record.reason_en,
            },
        )

    def offence_recorded(self, draft: OffenceDraft, rule: Rule, entry: Any) -> None:
        """Publish an offence once the ledger has it (with its amount when priced)."""
        amount = getattr(entry, "amount", None)
        step = getattr(entry, "escalation_step", None)
        self._link.publish(
            "offences",
            {
                "id": draft.key,
                "site": self._site,
                "at": _iso(draft.at),
                "rule": rule.id,
                "citation": rule.citation,
                "title_zh": rule.title_zh,
                "title_en": rule.title_en,
                "person": draft.person_id,
                "person_name": draft.person_name,
                "department": draft.department,
                "extension": draft.extension,
                "number": draft.number,
                "number_class": draft.number_class,
                "outcome": draft.outcome.value,
                "amount": str(amount) if amount is not None else None,
                "escalation_step": step,
                "detail_zh": draft.detail_zh,
                "detail_en": draft.detail_en,
                "linkedid": draft.call.linkedid if draft.call else "",
            },
        )

    def call_hung_up(self, channel: str, linkedid: str, rule_id: str) -> None:
        """Publish that the guard hung up a call."""
        self._link.publish(
            "decisions",
            {
                "id": f"{self._site}:hangup:{channel}",
                "site": self._site,
                "event": "hangup",
                "channel": channel,
                "linkedid": linkedid,
                "rule": rule_id,
            },
        )

    def alert_raised(self, alert: RaiseAlert) -> None:
        """Publish an alert about a protected line (raised, or repeated)."""
        self._link.publish(
            "alerts",
            {
                "id": f"{alert.key}:{alert.repeat}",
                "alert": alert.key,
                "state": "raised",
                "site": self._site,
                "line": alert.extension or alert.duty_line,
                "kind": alert.kind.value,
                "rule": alert.rule_id,
                "name": alert.name,
                "since": _iso(alert.since),
                "at": _iso(alert.at),
                "repeat": alert.repeat,
                "person": alert.person_id,
                "person_name": alert.person_name,
                "message_zh": alert.message_zh,
                "message_en": alert.message_en,
            },
        )

    def alert_cleared(self, alert: ClearAlert) -> None:
        """Publish that a protected line is back."""
        self._link.publish(
            "alerts",
            {
                "id": f"{alert.key}:cleared",
                "alert": alert.key,
                "state": "cleared",
                "site": self._site,
                "line": alert.extension or alert.duty_line,
                "kind": alert.kind.value,
                "rule": alert.rule_id,
                "name": alert.name,
                "since": _iso(alert.since),
                "at": _iso(alert.at),
                "duration_seconds": int(alert.duration.total_seconds()),
            },
        )
