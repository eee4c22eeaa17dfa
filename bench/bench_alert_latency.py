"""Measure alert latency: an AMI reachability event -> the MQTT alert received by a subscriber.

Run: ``.venv/bin/python bench/bench_alert_latency.py`` (needs the mosquitto binary; it starts a
private broker on loopback). A stand-in PBX on loopback logs the guard in and then, N times,
reports the guard-room alarm phone Unreachable (the alert must go out at once, EM-2) and
Reachable again. A subscriber on the broker timestamps each raised alert. The baseline,
measured in the same run through the same broker, is a bare aiomqtt publish from the moment
the PBX writes its event to the subscriber receiving it: what the broker round trip costs
before any of pbxguard's work. Goal: far inside the 30 s the regulations allow (EM-2).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import aiomqtt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _fakes import NullFacts, NullPbx, WallClock
from tests.support.mosquitto import MosquittoBroker

from pbxguard.adapters.ami import AmiClient
from pbxguard.adapters.logs import configure_logging
from pbxguard.adapters.mqtt import BrokerLink, BrokerSettings
from pbxguard.adapters.mqtt_notifier import MqttNotifier
from pbxguard.adapters.policy_file import load_policy
from pbxguard.app.guard import Guard

ROUNDS = 300


def status_events(state: str, round_no: int) -> bytes:
    stamp = time.time()
    peer = "Reachable" if state == "up" else "Unreachable"
    device = "NOT_INUSE" if state == "up" else "UNAVAILABLE"
    return (
        f"Event: PeerStatus\r\nPrivilege: system,all\r\nTimestamp: {stamp:.6f}\r\n"
        f"ChannelType: PJSIP\r\nPeer: PJSIP/8000\r\nPeerStatus: {peer}\r\n\r\n"
        f"Event: DeviceStateChange\r\nPrivilege: call,all\r\nTimestamp: {stamp:.6f}\r\n"
        f"Device: PJSIP/8000\r\nState: {device}\r\n\r\n"
        f"Event: ContactStatus\r\nPrivilege: system,all\r\nTimestamp: {stamp:.6f}\r\n"
        f"URI: sip:8000@127.0.0.1:48000;ob\r\nContactStatus: {peer}\r\nAOR: 8000\r\n"
        f"EndpointName: 8000\r\nRoundtripUsec: {round_no}\r\n\r\n"
    ).encode()


async def read_action(reader: asyncio.StreamReader) -> dict[str, str]:
    frame = await reader.readuntil(b"\r\n\r\n")
    return dict(line.split(": ", 1) for line in frame.decode().split("\r\n") if ": " in line)


async def measure_guard(broker: MosquittoBroker, workdir: Path) -> list[float]:
    sent: dict[int, float] = {}
    latencies: list[float] = []
    go = asyncio.Event()
    received = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        while True:
            try:
                action = await read_action(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            name, action_id = action.get("Action", "").lower(), action.get("ActionID", "")
            if name == "login":
                writer.write(f"Response: Success\r\nActionID: {action_id}\r\n\r\n".encode())
            elif name in ("coreshowchannels", "devicestatelist", "pjsipshowcontacts"):
                writer.write(
                    f"Response: Success\r\nActionID: {action_id}\r\nEventList: start\r\n\r\n"
                    f"Event: Done\r\nActionID: {action_id}\r\nEventList: Complete\r\n\r\n".encode()
                )
                if name == "pjsipshowcontacts":
                    go.set()
            else:
                writer.write(f"Response: Success\r\nActionID: {action_id}\r\n\r\n".encode())

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    path = resources.files("pbxguard.policies").joinpath("reference-site.toml")
    loaded = load_policy(str(path))
    link = BrokerLink(BrokerSettings(host=broker.host, port=broker.port, site="reference"))
    guard = Guard(
        loaded.policy,
        loaded.channels,
        pbx=NullPbx(),
        facts=NullFacts(),
        notifier=MqttNotifier(link, site="reference"),
        clock=WallClock(),
    )
    client = AmiClient(
        "127.0.0.1",
        port,
        "pbxguard",
        "secret",
        sink=guard.on_ami_message,
        on_login=lambda c: guard.resync(c.send_list_action),
    )
    writers: list[asyncio.StreamWriter] = []

    async def capture(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await serve(reader, writer)

    server.close()
    server = await asyncio.start_server(capture, "127.0.0.1", port)
    tasks = [asyncio.create_task(t) for t in (client.run(), link.run(), guard.run_timers())]
    async with aiomqtt.Client(broker.host, broker.port) as subscriber:
        await subscriber.subscribe("pbxguard/reference/alerts/8000", qos=1)
        await go.wait()
        await asyncio.wait_for(_connected(link), 10)

        async def listen() -> None:
            async for message in subscriber.messages:
                payload = message.payload
                if isinstance(payload, bytes) and json.loads(payload).get("state") == "raised":
                    now = time.perf_counter()
                    latencies.append(now - sent[len(latencies)])
                    received.set()

        listener = asyncio.create_task(listen())
        writer = writers[0]
        for i in range(ROUNDS):
            received.clear()
            sent[i] = time.perf_counter()
            writer.write(status_events("down", i))
            await asyncio.wait_for(received.wait(), 10)
            writer.write(status_events("up", i))
        listener.cancel()
    await client.close()
    await link.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    server.close()
    return latencies


async def _connected(link: BrokerLink) -> None:
    # The link exposes its state, not an event to wait on: look every 10 ms.
    while not link.connected:  # noqa: ASYNC110
        await asyncio.sleep(0.01)


async def measure_bare(broker: MosquittoBroker) -> list[float]:
    latencies: list[float] = []
    async with (
        aiomqtt.Client(broker.host, broker.port) as publisher,
        aiomqtt.Client(broker.host, broker.port) as subscriber,
    ):
        await subscriber.subscribe("bench/bare", qos=1)
        messages = aiter(subscriber.messages)
        for _ in range(ROUNDS):
            started = time.perf_counter()
            await publisher.publish("bench/bare", b'{"state": "raised"}', qos=1)
            await anext(messages)
            latencies.append(time.perf_counter() - started)
    return latencies


def summary(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    return (
        f"{name:<40}: p50 {statistics.median(ordered) * 1000:.3f} ms   "
        f"p99 {p99 * 1000:.3f} ms   ({len(values)} alerts)"
    )


async def main() -> None:
    configure_logging("error")
    with tempfile.TemporaryDirectory() as tmp:
        async with MosquittoBroker(Path(tmp)) as broker:
            bare = await measure_bare(broker)
            guard = await measure_guard(broker, Path(tmp))
    print(summary("bare MQTT publish -> subscriber (baseline)", bare))
    print(summary("AMI Unreachable -> MQTT alert received", guard))


if __name__ == "__main__":
    asyncio.run(main())
