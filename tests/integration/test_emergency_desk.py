"""Emergency calls reach the security desk at once, by MQTT, webhook and e-mail, untouched.

The simulated PBX replays the guard-room phone calling 110 and holds still right after the
call reaches the trunk (its ``DialBegin``): the notice must arrive while the call is still
ringing, and the call must never see a Hangup. Desks that are down cost retries in the log,
nothing else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import aiomqtt
import pytest
from structlog.testing import capture_logs

from pbxguard.adapters.emergency_desk import MailDesk, Retry, WebhookDesk
from pbxguard.adapters.policy_file import LoadedPolicy
from pbxguard.adapters.settings import (
    EmergencySettings,
    MailSettings,
    MqttSettings,
    WebhookSettings,
)
from pbxguard.domain.policy import Mode
from pbxguard.protocol.ami import AmiMessage
from tests.support.desk import MailServer, WebhookEndpoint
from tests.support.guard import guard_against, reference_policy, until
from tests.support.mosquitto import MosquittoBroker, free_port

pytestmark = pytest.mark.mosquitto

GUARD_ROOM = "门卫室（1号门）Guard room, gate 1"
EMERGENCY_TRUNK = "Local/110@pstn-00000004;1"
#: How soon the security desk must hear of an emergency call (the brief's bound).
WITHIN = 1.0
#: Retries in tests: quick, so a test that plays a desk that is down stays short.
QUICK = EmergencySettings(attempts=4, backoff_min=0.05, backoff_max=0.2)


def located(mode: Mode = Mode.ENFORCE) -> LoadedPolicy:
    loaded = reference_policy(mode)
    policy = dataclasses.replace(loaded.policy, locations={"8000": GUARD_ROOM})
    return dataclasses.replace(loaded, policy=policy)


def at_the_trunk(message: AmiMessage) -> bool:
    """The emergency call has reached the trunk: the replay holds still here."""
    return message.event == "DialBegin" and message.get("DestChannel") == EMERGENCY_TRUNK


def desks(webhook: str = "", mail_port: int = 0, **overrides: object) -> EmergencySettings:
    mail = (
        MailSettings(
            host="127.0.0.1",
            port=mail_port,
            sender="pbxguard@site.test",
            to=["security-desk@site.test", "duty@site.test"],
        )
        if mail_port
        else MailSettings()
    )
    return QUICK.model_copy(
        update={"webhook": WebhookSettings(url=webhook, token="s3cret"), "mail": mail, **overrides}
    )


async def first_message(subscriber: aiomqtt.Client) -> aiomqtt.Message:
    return await anext(aiter(subscriber.messages))


@pytest.mark.parametrize("mode", [Mode.ENFORCE, Mode.MONITOR])
async def test_the_desk_hears_of_110_within_a_second_and_the_call_goes_on(
    tmp_path: Path, mode: Mode
) -> None:
    async with (
        MosquittoBroker(tmp_path / "broker") as broker,
        aiomqtt.Client(broker.host, broker.port) as subscriber,
        WebhookEndpoint() as webhook,
        MailServer() as mail,
    ):
        await subscriber.subscribe("pbxguard/reference/emergency", qos=1)
        mqtt = MqttSettings(
            enabled=True, host=broker.host, port=broker.port, spool=str(tmp_path / "mq")
        )
        async with guard_against(
            ["guardroom-emergency-110"],
            tmp_path,
            mode=mode,
            loaded=located(mode),
            mqtt=mqtt,
            emergency=desks(webhook.url, mail.port),
            pause_after=at_the_trunk,
        ) as run:
            link = run.parts.link
            assert link is not None
            await run.pbx.wait_until_paused()
            # The call is ringing at the trunk, the replay holds it there.
            async with asyncio.timeout(WITHIN):
                message = await first_message(subscriber)
            assert EMERGENCY_TRUNK in run.pbx.live_channels
            async with asyncio.timeout(10):
                posted = await webhook.received.get()
                envelope, email = await mail.inbox.get()
            run.pbx.resume()
            await run.settle()
            calls = await run.calls()
            offences = await run.offences()
    assert run.hangups() == []
    assert offences == []
    [call] = calls
    assert call.verdict == "allow"
    assert call.answered_at is not None
    assert call.number == "110"

    assert str(message.topic) == "pbxguard/reference/emergency"
    payload = json.loads(message.payload)
    assert payload["id"] == "reference:emergency:1795397626.12"
    assert payload["extension"] == "8000"
    assert payload["location"] == GUARD_ROOM
    assert payload["person"] == "guard-li"
    assert payload["person_name"] == "李保安"
    assert payload["number"] == "110"
    assert payload["local_time"] == "2026-11-23 09:33:46"
    assert payload["layer"] == "ami"
    assert payload["message_zh"].startswith("紧急呼叫：李保安，分机 8000，门卫室")

    assert posted.method == "POST"
    assert posted.path == "/hooks/emergency"
    assert posted.headers["content-type"] == "application/json; charset=utf-8"
    assert posted.headers["authorization"] == "Bearer s3cret"
    assert posted.headers["idempotency-key"] == payload["id"]
    assert posted.json() == payload

    assert envelope.mail_from == "pbxguard@site.test"
    assert sorted(envelope.rcpt_tos) == ["duty@site.test", "security-desk@site.test"]
    assert email["Subject"] == "紧急呼叫 Emergency call: 8000 → 110 (2026-11-23 09:33:46)"
    body = email.get_content()
    assert payload["message_zh"] in body
    assert payload["message_en"] in body
    assert f"位置 location: {GUARD_ROOM}" in body
    assert run.parts.guard.stats.emergency_calls == 1


async def test_desks_that_are_down_are_retried_and_never_touch_the_call(tmp_path: Path) -> None:
    """The webhook answers 503 twice, then 200; the SMTP server is not there at all."""
    async with WebhookEndpoint(statuses=[503, 503]) as webhook:
        with capture_logs() as logs:
            async with guard_against(
                ["guardroom-emergency-110"],
                tmp_path,
                loaded=located(),
                emergency=desks(webhook.url, free_port()),
            ) as run:
                async with asyncio.timeout(15):
                    for _ in range(3):
                        await webhook.received.get()
                mail_desk = next(d for d in run.parts.emergency_desks if isinstance(d, MailDesk))
                await until(lambda: mail_desk.counters.given_up == 1, within=15)
                await run.settle()
                calls = await run.calls()
    assert webhook.answered == [503, 503, 200]
    assert run.hangups() == []
    [call] = calls
    assert call.verdict == "allow"
    assert call.answered_at is not None
    webhook_desk = next(d for d in run.parts.emergency_desks if isinstance(d, WebhookDesk))
    assert webhook_desk.counters.delivered == 1
    assert webhook_desk.counters.failed_attempts == 2
    assert mail_desk.counters.failed_attempts == QUICK.attempts
    events = [entry["event"] for entry in logs]
    assert events.count("emergency.delivery_failed") == 2 + QUICK.attempts - 1
    assert "emergency.given_up" in events
    assert "emergency call" in events


async def test_a_broker_that_is_down_delivers_the_notice_when_it_is_back(tmp_path: Path) -> None:
    async with MosquittoBroker(tmp_path / "broker", persistence=True) as broker:

        def desk_session() -> aiomqtt.Client:
            return aiomqtt.Client(
                broker.host, broker.port, identifier="security-desk", clean_session=False
            )

        async with desk_session() as desk:
            await desk.subscribe("pbxguard/reference/emergency", qos=1)
        await broker.stop()
        mqtt = MqttSettings(
            enabled=True, host=broker.host, port=broker.port, spool=str(tmp_path / "mq")
        )
        async with guard_against(
            ["guardroom-emergency-110"], tmp_path, loaded=located(), mqtt=mqtt
        ) as run:
            await run.settle()
            assert run.hangups() == []
            [call] = await run.calls()
            assert call.answered_at is not None
            link = run.parts.link
            assert link is not None
            assert link.counters.delivered == 0
            await broker.start()
            async with asyncio.timeout(20):
                await link.wait_delivered(link.counters.queued)
        async with desk_session() as desk, asyncio.timeout(20):
            message = await first_message(desk)
    assert json.loads(message.payload)["number"] == "110"


def test_retry_delays_grow_and_stay_bounded() -> None:
    retry = Retry(attempts=8, backoff_min=0.5, backoff_max=4.0)
    for attempt in range(1, 9):
        delay = retry.delay(attempt)
        assert 0.25 <= delay <= min(0.5 * 2 ** (attempt - 1), 4.0)


async def test_a_notice_still_retrying_when_pbxguard_stops_is_logged_as_dropped(
    tmp_path: Path,
) -> None:
    slow = desks(free_port_url(), backoff_min=30.0, backoff_max=60.0)
    with capture_logs() as logs:
        async with guard_against(
            ["guardroom-emergency-110"], tmp_path, loaded=located(), emergency=slow
        ) as run:
            desk = next(d for d in run.parts.emergency_desks if isinstance(d, WebhookDesk))
            await until(lambda: desk.counters.failed_attempts >= 1, within=15)
            await run.settle()
    assert run.hangups() == []
    assert desk.counters.delivered == 0
    assert desk.counters.dropped == 1
    dropped = [e for e in logs if e["event"] == "emergency.pending_dropped"]
    assert [e["notice"] for e in dropped] == ["reference:emergency:1795397626.12"]


def free_port_url() -> str:
    """A webhook URL where nothing listens (connection refused)."""
    return f"http://127.0.0.1:{free_port()}/hooks/emergency"
