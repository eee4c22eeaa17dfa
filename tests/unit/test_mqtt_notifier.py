"""The alert payloads subscribers read (docs/operations.md): raised and cleared, one shape."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from pbxguard.adapters.mqtt import EventKind
from pbxguard.adapters.mqtt_notifier import MqttNotifier
from pbxguard.domain.effects import AlertKind, ClearAlert, RaiseAlert

SINCE = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)


class RecordingLink:
    """Keeps what would be published: (kind, payload, line)."""

    def __init__(self) -> None:
        self.sent: list[tuple[EventKind, dict[str, object], str | None]] = []

    def publish(
        self,
        kind: EventKind,
        payload: Mapping[str, object],
        *,
        line: str | None = None,
        urgent: bool = False,
    ) -> None:
        assert not urgent, "only emergency calls jump the queue"
        self.sent.append((kind, dict(payload), line))


def raised(extension: str, duty_line: str) -> RaiseAlert:
    return RaiseAlert(
        key="hq:EM-2:8001",
        kind=AlertKind.UNREACHABLE,
        rule_id="EM-2",
        extension=extension,
        duty_line=duty_line,
        name="门卫室",
        since=SINCE,
        at=SINCE + timedelta(minutes=2),
        repeat=2,
        person_id="wang-qiang",
        person_name="王强",
        message_zh="门卫室电话不可达",
        message_en="the guard room phone is unreachable",
    )


def test_a_raised_alert_carries_who_and_what_and_goes_to_its_line() -> None:
    link = RecordingLink()
    MqttNotifier(link, site="hq").alert_raised(raised("8001", "guard"))
    assert link.sent == [
        (
            "alerts",
            {
                "id": "hq:EM-2:8001:2",
                "alert": "hq:EM-2:8001",
                "state": "raised",
                "site": "hq",
                "line": "8001",
                "kind": "unreachable",
                "rule": "EM-2",
                "name": "门卫室",
                "since": "2026-11-23T01:00:00+00:00",
                "at": "2026-11-23T01:02:00+00:00",
                "repeat": 2,
                "person": "wang-qiang",
                "person_name": "王强",
                "message_zh": "门卫室电话不可达",
                "message_en": "the guard room phone is unreachable",
            },
            "8001",
        )
    ]


def test_a_cleared_alert_shares_the_raised_ones_fields_and_says_how_long() -> None:
    link = RecordingLink()
    alert = raised("", "guard")
    cleared = ClearAlert(
        key=alert.key,
        kind=alert.kind,
        rule_id=alert.rule_id,
        extension="",
        duty_line="guard",
        name=alert.name,
        since=SINCE,
        at=SINCE + timedelta(minutes=5, seconds=30),
    )
    notifier = MqttNotifier(link, site="hq")
    notifier.alert_raised(alert)
    notifier.alert_cleared(cleared)
    (_, first, first_line), (kind, payload, line) = link.sent
    assert (kind, line, first_line) == ("alerts", "guard", "guard")
    assert payload == {
        "id": "hq:EM-2:8001:cleared",
        "alert": "hq:EM-2:8001",
        "state": "cleared",
        "site": "hq",
        "line": "guard",
        "kind": "unreachable",
        "rule": "EM-2",
        "name": "门卫室",
        "since": "2026-11-23T01:00:00+00:00",
        "at": "2026-11-23T01:05:30+00:00",
        "duration_seconds": 330,
    }
    shared = set(payload) - {"id", "state", "at", "duration_seconds"}
    assert {k: first[k] for k in shared} == {k: payload[k] for k in shared}


def test_a_site_wide_alert_has_no_line_level() -> None:
    link = RecordingLink()
    MqttNotifier(link, site="hq").alert_raised(raised("", ""))
    [(_, payload, line)] = link.sent
    assert line is None
    assert payload["line"] == ""
