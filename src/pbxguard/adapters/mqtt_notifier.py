"""The guard's notifications over MQTT: one publishing method per domain event.

Topics are fixed (``pbxguard/<site>/<kind>``, the link adds the prefix); payloads are built
here and nowhere else, so subscribers see one stable, documented shape per kind
(docs/operations.md). `NoBroker` stands in when MQTT is not configured.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from pbxguard.adapters.emergency_desk import notice_payload
from pbxguard.adapters.mqtt import AlertPublisher
from pbxguard.domain.effects import ClearAlert, RaiseAlert
from pbxguard.domain.emergency import EmergencyNotice
from pbxguard.domain.entries import OffenceEntry
from pbxguard.domain.records import DecisionRecord


class NoBroker:
    """Publishes nothing: MQTT is optional."""

    def decision_made(self, record: DecisionRecord) -> None:
        """Drop it."""

    def offence_recorded(self, entry: OffenceEntry) -> None:
        """Drop it."""

    def call_hung_up(self, channel: str, linkedid: str, rule_id: str) -> None:
        """Drop it."""

    def alert_raised(self, alert: RaiseAlert) -> None:
        """Drop it."""

    def alert_cleared(self, alert: ClearAlert) -> None:
        """Drop it."""


def _iso(at: datetime) -> str:
    return at.isoformat()


class MqttNotifier:
    """Publish the guard's decisions, offences, hangups, alerts and emergency calls."""

    def __init__(
        self, link: AlertPublisher, *, site: str, timezone: ZoneInfo | None = None
    ) -> None:
        self._link = link
        self._site = site
        self._timezone = timezone or ZoneInfo("Asia/Shanghai")

    def emergency_call(self, notice: EmergencyNotice) -> None:
        """Publish an emergency call for the security desk, ahead of anything waiting."""
        self._link.publish("emergency", notice_payload(notice, self._timezone), urgent=True)

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

    def offence_recorded(self, entry: OffenceEntry) -> None:
        """Publish an offence once the ledger has it, priced."""
        self._link.publish(
            "offences",
            {
                "id": entry.key,
                "site": self._site,
                "at": _iso(entry.at),
                "rule": entry.rule_id,
                "citation": entry.citation,
                "title_zh": entry.rule_title_zh,
                "title_en": entry.rule_title_en,
                "person": entry.person_id,
                "person_name": entry.person_name,
                "department": entry.department,
                "extension": entry.extension,
                "number": entry.number,
                "number_class": entry.number_class,
                "outcome": entry.final_outcome.value,
                "amount": str(entry.amount),
                "escalation_step": entry.escalation_step,
                "detail_zh": entry.detail_zh,
                "detail_en": entry.detail_en,
                "linkedid": entry.call.linkedid if entry.call else "",
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
        self._alert(
            alert,
            event_id=f"{alert.key}:{alert.repeat}",
            state="raised",
            repeat=alert.repeat,
            person=alert.person_id,
            person_name=alert.person_name,
            message_zh=alert.message_zh,
            message_en=alert.message_en,
        )

    def alert_cleared(self, alert: ClearAlert) -> None:
        """Publish that a protected line is back."""
        self._alert(
            alert,
            event_id=f"{alert.key}:cleared",
            state="cleared",
            duration_seconds=int(alert.duration.total_seconds()),
        )

    def _alert(
        self, alert: RaiseAlert | ClearAlert, *, event_id: str, state: str, **details: object
    ) -> None:
        # Both states of an alert share one shape, so a subscriber matches them by "alert".
        line = alert.extension or alert.duty_line
        self._link.publish(
            "alerts",
            line=line or None,
            payload={
                "id": event_id,
                "alert": alert.key,
                "state": state,
                "site": self._site,
                "line": line,
                "kind": alert.kind.value,
                "rule": alert.rule_id,
                "name": alert.name,
                "since": _iso(alert.since),
                "at": _iso(alert.at),
                **details,
            },
        )
