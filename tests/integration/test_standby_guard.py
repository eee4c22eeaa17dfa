"""The alarm phone and the duty phones, end to end: recorded outages, alerts over MQTT."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiomqtt

from pbxguard.adapters.settings import MqttSettings
from pbxguard.domain.policy import LineUse
from pbxguard.simulator.ami_server import PlaylistEntry, load_recording
from tests.support.guard import ReplayClock, guard_against, reference_policy, until
from tests.support.mosquitto import MosquittoBroker

SHANGHAI = ZoneInfo("Asia/Shanghai")


def unplugged_at(local: datetime) -> list[PlaylistEntry]:
    """8001 registers, then its softphone is killed, both moved to ``local`` time."""
    return [
        PlaylistEntry(load_recording("register-and-qualify"), local),
        PlaylistEntry(load_recording("duty-phone-unplugged"), local + timedelta(seconds=20)),
    ]


async def test_duty_phone_unplugged_in_working_hours_alerts_and_records_one_dt1(
    tmp_path: Path,
) -> None:
    monday_morning = datetime(2026, 11, 23, 9, 40, tzinfo=SHANGHAI)
    async with guard_against(
        unplugged_at(monday_morning), tmp_path, speed=0.01, clock=ReplayClock(monday_morning)
    ) as run:
        await run.settle()
        watch = run.parts.guard.watch
        await until(lambda: any(a.extension == "8001" for a in watch.open_alerts()))
        [alert] = [a for a in watch.open_alerts() if a.extension == "8001"]
        assert alert.kind.value == "unreachable"
        assert alert.rule_id == "DT-1"
        assert alert.person_id == "duty-wang"
        assert await run.offences() == []  # the outage is still going on
        offences = await run.stop_and_read_offences()
    [offence] = offences
    assert offence.rule_id == "DT-1"
    assert offence.extension == "8001"
    assert offence.person_id == "duty-wang"  # on duty on the hotline per the rota
    assert offence.talk_time > timedelta(0)
    assert offence.amount == 50  # first offence on the DT-4 ladder


async def test_duty_phone_unplugged_at_night_costs_nothing(tmp_path: Path) -> None:
    monday_night = datetime(2026, 11, 23, 23, 10, tzinfo=SHANGHAI)
    async with guard_against(
        unplugged_at(monday_night), tmp_path, speed=0.01, clock=ReplayClock(monday_night)
    ) as run:
        await run.settle()
        offences = await run.stop_and_read_offences()
    assert run.parts.guard.watch.open_alerts() == ()
    assert run.parts.guard.stats.alerts == 0
    assert offences == []


async def test_alarm_phone_unreachable_at_night_alerts_over_mqtt_at_once(tmp_path: Path) -> None:
    """Make 8001 the site's alarm phone: unreachable at 03:00 is an alert at any hour."""
    loaded = reference_policy()
    policy = loaded.policy
    alarm = dataclasses.replace(
        policy.lines["8001"],
        use=LineUse.EMERGENCY_ONLY,
        standby="around_the_clock",
        standby_rule="EM-2",
        coverage=False,
    )
    loaded = dataclasses.replace(
        loaded, policy=dataclasses.replace(policy, lines={**policy.lines, "8001": alarm})
    )
    night = datetime(2026, 11, 24, 3, 0, tzinfo=SHANGHAI)
    async with (
        MosquittoBroker(tmp_path) as broker,
        aiomqtt.Client(broker.host, broker.port) as subscriber,
    ):
        await subscriber.subscribe("pbxguard/reference/alerts/#", qos=1)
        mqtt = MqttSettings(
            enabled=True, host=broker.host, port=broker.port, spool=str(tmp_path / "mq")
        )
        async with guard_against(
            unplugged_at(night),
            tmp_path,
            speed=0.01,
            loaded=loaded,
            mqtt=mqtt,
            clock=ReplayClock(night),
        ) as run:
            async with asyncio.timeout(20):
                message = await anext(aiter(subscriber.messages))
            await run.settle()
            offences = await run.stop_and_read_offences()
    assert str(message.topic) == "pbxguard/reference/alerts/8001"
    payload = json.loads(message.payload)
    assert payload["state"] == "raised"
    assert payload["rule"] == "EM-2"
    assert payload["line"] == "8001"
    assert payload["person"] == "duty-wang"  # on duty on the hotline rota line
    assert [o.rule_id for o in offences] == ["EM-2"]


async def test_enforcement_never_waits_for_a_broker_that_is_down(tmp_path: Path) -> None:
    """The broker is down while a forbidden call is cut; its offence arrives once it is back."""
    async with MosquittoBroker(tmp_path / "broker", persistence=True) as broker:
        # A persistent subscriber session: the broker keeps what arrives while it is away.
        def console_session() -> aiomqtt.Client:
            return aiomqtt.Client(
                broker.host, broker.port, identifier="audit-console", clean_session=False
            )

        async with console_session() as console:
            await console.subscribe("pbxguard/reference/offences", qos=1)
        await broker.stop()
        mqtt = MqttSettings(
            enabled=True, host=broker.host, port=broker.port, spool=str(tmp_path / "mq")
        )
        async with guard_against(["staff-international-answered"], tmp_path, mqtt=mqtt) as run:
            await run.settle()
            # Enforcement went ahead without the broker: the call was cut before it answered.
            assert run.hangups() == ["Local/00441632960123@pstn-00000000;1"]
            link = run.parts.link
            assert link is not None
            assert link.counters.delivered == 0
            await broker.start()
            async with asyncio.timeout(20):
                await link.wait_delivered(link.counters.queued)
        async with console_session() as console, asyncio.timeout(20):
            message = await anext(aiter(console.messages))
    payload = json.loads(message.payload)
    assert payload["rule"] == "LD-2"
    assert payload["amount"] == "500.00"
    assert payload["person"] == "staff-2001"
