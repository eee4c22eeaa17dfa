"""The MQTT link against a real mosquitto on loopback: topics, payloads, status, outages."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar, cast

import aiomqtt
import pytest
from structlog.testing import capture_logs

from pbxguard.adapters.mqtt import (
    BrokerLink,
    BrokerSettings,
    EventKind,
    LinkCounters,
    NullLink,
    PublisherLink,
)
from pbxguard.errors import ConfigError, PublisherError
from tests.support.loopback import LoopbackServer
from tests.support.mosquitto import HOST, MosquittoBroker, free_port

pytestmark = pytest.mark.mosquitto

SITE = "hq"
WAIT = 15.0
T = TypeVar("T")


def make_settings(port: int, tmp_path: Path, **overrides: Any) -> BrokerSettings:
    values: dict[str, Any] = {
        "host": HOST,
        "port": port,
        "site": SITE,
        "keepalive": 10,
        "backoff_min": 0.05,
        "backoff_max": 0.2,
        "connect_timeout": 5.0,
        "publish_timeout": 5.0,
        "close_timeout": 5.0,
        "spool_path": tmp_path / "spool" / "outbox.jsonl",
    }
    values.update(overrides)
    return BrokerSettings(**values)


def spooled_lines(settings: BrokerSettings) -> list[bytes]:
    assert settings.spool_path is not None
    if not settings.spool_path.exists():
        return []
    return settings.spool_path.read_bytes().splitlines()


def decode(message: aiomqtt.Message) -> dict[str, Any]:
    assert isinstance(message.payload, bytes)
    payload: dict[str, Any] = json.loads(message.payload.decode("utf-8"))
    return payload


def first_of_each_seq(payloads: list[dict[str, Any]]) -> list[int]:
    seen: dict[int, None] = {}
    for payload in payloads:
        seen.setdefault(payload["seq"], None)
    return list(seen)


class Inbox:
    """Everything one subscriber received, with waits on what it is expecting."""

    def __init__(self) -> None:
        self.messages: list[aiomqtt.Message] = []
        self._arrived = asyncio.Event()

    async def fill(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            self.messages.append(message)
            self._arrived.set()

    async def wait_until(self, found: Callable[[], T | None]) -> T:
        async with asyncio.timeout(WAIT):
            while True:
                result = found()
                if result is not None:
                    return result
                self._arrived.clear()
                await self._arrived.wait()

    def on(self, topic: str) -> list[aiomqtt.Message]:
        return [message for message in self.messages if message.topic.value == topic]

    async def events(self, topic: str, distinct: int) -> list[aiomqtt.Message]:
        """Wait until ``distinct`` different sequence numbers arrived on ``topic``."""

        def enough() -> list[aiomqtt.Message] | None:
            received = self.on(topic)
            seqs = {decode(message)["seq"] for message in received}
            return received if len(seqs) >= distinct else None

        return await self.wait_until(enough)

    async def status(
        self, state: str, *, client_id: str = f"pbxguard-{SITE}", after: int = 0
    ) -> tuple[int, aiomqtt.Message]:
        """Wait for a status message in ``state`` from ``client_id`` at index ``after`` or later."""
        topic = f"pbxguard/{SITE}/status"

        def match() -> tuple[int, aiomqtt.Message] | None:
            for index in range(after, len(self.messages)):
                message = self.messages[index]
                if message.topic.value != topic:
                    continue
                payload = decode(message)
                if payload["state"] == state and payload["client_id"] == client_id:
                    return index, message
            return None

        return await self.wait_until(match)


@contextlib.asynccontextmanager
async def subscribed(
    broker: MosquittoBroker, *, topic: str = "pbxguard/#", **client_options: Any
) -> AsyncIterator[Inbox]:
    inbox = Inbox()
    async with aiomqtt.Client(broker.host, broker.port, **client_options) as client:
        # QoS 2 on the subscription, so a message arrives with exactly the QoS it was sent with.
        await client.subscribe(topic, qos=2)
        filling = asyncio.create_task(inbox.fill(client))
        try:
            yield inbox
        finally:
            filling.cancel()
            await asyncio.wait([filling])


@contextlib.asynccontextmanager
async def running(link: BrokerLink) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(link.run())
    try:
        yield task
    finally:
        await asyncio.wait_for(link.close(), WAIT)
        done, _ = await asyncio.wait([task], timeout=WAIT)
        assert task in done, "run() did not return after close()"
        if not task.cancelled():
            task.result()


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[MosquittoBroker]:
    async with MosquittoBroker(tmp_path / "broker") as running_broker:
        yield running_broker


async def _pump(
    source: asyncio.StreamReader,
    sink: asyncio.StreamWriter,
    forwarding: Callable[[], bool] = lambda: True,
) -> None:
    try:
        while chunk := await source.read(65536):
            if forwarding():
                sink.write(chunk)
                await sink.drain()
    except ConnectionError:
        pass
    finally:
        sink.transport.abort()


class Relay:
    """A TCP relay to the broker whose connections the test can drop without a goodbye.

    With ``swallow_replies`` set, what the broker sends back (CONNACK, PUBACK...) is discarded.
    """

    def __init__(self, target_port: int) -> None:
        self.swallow_replies = False
        self._target_port = target_port
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        self.cut()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=WAIT)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                HOST, self._target_port
            )
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, upstream_writer}
        try:
            await asyncio.gather(
                _pump(reader, upstream_writer),
                _pump(upstream_reader, writer, lambda: not self.swallow_replies),
            )
        finally:
            self._writers -= {writer, upstream_writer}

    def cut(self) -> int:
        """Reset every relayed connection at both ends; return how many sockets were cut."""
        writers = list(self._writers)
        for writer in writers:
            writer.transport.abort()
        return len(writers)


class RefusingBroker(LoopbackServer):
    """Answer every MQTT CONNECT with CONNACK "not authorised" (return code 5) and hang up."""

    def __init__(self) -> None:
        self.connect_packets: list[bytes] = []
        self._answered = asyncio.Event()

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._handle, HOST, 0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            packet = await reader.read(4096)
            writer.write(b"\x20\x02\x00\x05")
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        self.connect_packets.append(packet)
        self._answered.set()

    async def wait_attempts(self, count: int) -> None:
        async with asyncio.timeout(WAIT):
            while len(self.connect_packets) < count:
                self._answered.clear()
                await self._answered.wait()


async def test_events_arrive_on_their_topics_as_utf8_json_with_qos_1(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    link = BrokerLink(make_settings(broker.port, tmp_path))
    called_at = dt.datetime(2025, 3, 4, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    async with subscribed(broker) as inbox, running(link):
        link.publish("decisions", {"seq": 1, "verdict": "deny", "caller": "张三"})
        link.publish("offences", {"seq": 2, "fine": Decimal("50.00"), "at": called_at})
        link.publish("alerts", {"seq": 3, "line": "门卫室"}, line="门卫室")
        link.publish("alerts", {"seq": 4}, line="a/b+c#")
        link.publish("alerts", {"seq": 5})
        await asyncio.wait_for(link.wait_delivered(5), WAIT)
        decision = (await inbox.events("pbxguard/hq/decisions", 1))[0]
        offence = (await inbox.events("pbxguard/hq/offences", 1))[0]
        guard_room = (await inbox.events("pbxguard/hq/alerts/门卫室", 1))[0]
        sanitised = (await inbox.events("pbxguard/hq/alerts/a_b_c_", 1))[0]
        site_wide = (await inbox.events("pbxguard/hq/alerts", 1))[0]

    assert isinstance(decision.payload, bytes)
    assert "张三".encode() in decision.payload
    assert decode(decision) == {"seq": 1, "verdict": "deny", "caller": "张三"}
    assert decode(offence) == {"seq": 2, "fine": "50.00", "at": "2025-03-04T09:30:00+08:00"}
    assert decode(guard_room) == {"seq": 3, "line": "门卫室"}
    assert decode(sanitised) == {"seq": 4}
    assert decode(site_wide) == {"seq": 5}
    for message in (decision, offence, guard_room, sanitised, site_wide):
        assert message.qos == 1
        assert not message.retain
    assert link.counters == LinkCounters(queued=5, delivered=5)


def test_topics_follow_the_fixed_scheme(tmp_path: Path) -> None:
    link = BrokerLink(make_settings(free_port(), tmp_path))
    assert link.topic_for("decisions") == "pbxguard/hq/decisions"
    assert link.topic_for("offences") == "pbxguard/hq/offences"
    assert link.topic_for("alerts") == "pbxguard/hq/alerts"
    assert link.topic_for("alerts", "值班室") == "pbxguard/hq/alerts/值班室"
    assert link.topic_for("alerts", "  ") == "pbxguard/hq/alerts"
    assert link.topic_for("alerts", cast(str, 8001)) == "pbxguard/hq/alerts/8001"
    with capture_logs() as logs:
        assert link.topic_for("decisions", "8001") == "pbxguard/hq/decisions"
    assert [entry["event"] for entry in logs] == ["mqtt.line_ignored"]


async def test_status_is_retained_online_while_connected_and_offline_after_close(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    clock_reading = dt.datetime(2025, 3, 4, 1, 0, tzinfo=dt.UTC)
    link = BrokerLink(make_settings(broker.port, tmp_path), clock=lambda: clock_reading)
    async with subscribed(broker) as watcher:
        async with running(link) as task:
            await watcher.status("online")
            assert link.connected
            async with subscribed(broker, topic="pbxguard/hq/status") as latecomer:
                _, retained = await latecomer.status("online")
            assert retained.retain
            assert retained.qos == 1
            assert decode(retained) == {
                "state": "online",
                "site": "hq",
                "client_id": "pbxguard-hq",
                "at": "2025-03-04T01:00:00+00:00",
            }
        assert task.done()
        assert not task.cancelled()
        _, offline = await watcher.status("offline")
        assert decode(offline)["reason"] == "shutdown"
        assert not link.connected
    async with subscribed(broker, topic="pbxguard/hq/status") as latecomer:
        _, retained = await latecomer.status("offline")
    assert retained.retain
    assert decode(retained)["reason"] == "shutdown"


async def test_will_marks_status_offline_when_the_connection_is_cut_and_the_link_reconnects(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    async with Relay(broker.port) as relay, subscribed(broker) as inbox:
        link = BrokerLink(make_settings(relay.port, tmp_path))
        async with running(link):
            first_online, _ = await inbox.status("online")
            assert relay.cut() == 2
            gone, offline = await inbox.status("offline", after=first_online + 1)
            assert decode(offline)["reason"] == "connection lost"
            await inbox.status("online", after=gone + 1)
            async with subscribed(broker, topic="pbxguard/hq/status") as latecomer:
                _, retained = await latecomer.status("online")
            assert retained.retain
            link.publish("alerts", {"seq": 7}, line="门卫室")
            received = await inbox.events("pbxguard/hq/alerts/门卫室", 1)
            assert decode(received[0]) == {"seq": 7}
            assert link.counters.reconnects == 1


async def test_a_publish_cut_off_before_its_acknowledgement_is_sent_again(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    topic = "pbxguard/hq/offences"
    async with Relay(broker.port) as relay, subscribed(broker) as inbox:
        link = BrokerLink(make_settings(relay.port, tmp_path))
        async with running(link):
            await inbox.status("online")
            relay.swallow_replies = True
            link.publish("offences", {"seq": 1})
            await inbox.events(topic, 1)
            assert link.counters.delivered == 0
            assert link.counters.pending == 1
            relay.swallow_replies = False
            relay.cut()
            await asyncio.wait_for(link.wait_delivered(1), WAIT)
            await inbox.wait_until(lambda: inbox.on(topic)[1:] or None)
    assert [decode(message) for message in inbox.on(topic)] == [{"seq": 1}, {"seq": 1}]
    assert link.counters == LinkCounters(queued=1, delivered=1, reconnects=1)


async def test_will_marks_status_offline_when_the_process_is_killed(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    doomed = (
        "import asyncio, sys\n"
        "from pbxguard.adapters.mqtt import BrokerLink, BrokerSettings\n"
        "settings = BrokerSettings(host=sys.argv[1], port=int(sys.argv[2]), site=sys.argv[3],"
        " client_id=sys.argv[4])\n"
        "asyncio.run(BrokerLink(settings).run())\n"
    )
    stderr_path = tmp_path / "doomed.stderr"
    async with subscribed(broker) as inbox:
        with stderr_path.open("wb") as stderr:
            process = await asyncio.to_thread(
                subprocess.Popen,
                [sys.executable, "-c", doomed, HOST, str(broker.port), SITE, "pbxguard-doomed"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
            try:
                online, _ = await inbox.status("online", client_id="pbxguard-doomed")
                process.kill()
                await asyncio.to_thread(process.wait)
                _, offline = await inbox.status(
                    "offline", client_id="pbxguard-doomed", after=online + 1
                )
            finally:
                if process.poll() is None:
                    process.kill()
                await asyncio.to_thread(process.wait)
    async with subscribed(broker, topic="pbxguard/hq/status") as latecomer:
        _, retained = await latecomer.status("offline", client_id="pbxguard-doomed")
    assert retained.retain
    assert decode(offline) == {
        "state": "offline",
        "site": "hq",
        "client_id": "pbxguard-doomed",
        "reason": "connection lost",
    }, stderr_path.read_text(errors="replace")


async def test_cancelled_run_still_announces_offline(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    link = BrokerLink(make_settings(broker.port, tmp_path))
    async with subscribed(broker) as inbox, running(link) as task:
        online, _ = await inbox.status("online")
        task.cancel()
        await asyncio.wait([task], timeout=WAIT)
        assert task.cancelled()
        _, offline = await inbox.status("offline", after=online + 1)
    assert decode(offline)["reason"] == "shutdown"


async def test_broker_outage_loses_nothing_and_keeps_order(tmp_path: Path) -> None:
    count = 200
    topic = "pbxguard/hq/offences"
    # The audit console keeps a persistent session, so the broker holds (and saves across its
    # restart) whatever arrives while the console is away.
    console: dict[str, Any] = {"identifier": "audit-console", "clean_session": False}
    async with MosquittoBroker(tmp_path / "broker", persistence=True) as broker:
        settings = make_settings(broker.port, tmp_path, outbox_limit=16)
        async with subscribed(broker, **console):
            pass
        link = BrokerLink(settings)
        async with running(link):
            link.publish("offences", {"seq": -1})
            await asyncio.wait_for(link.wait_delivered(1), WAIT)
            port = broker.port
            await broker.stop()

            before = link.counters
            for seq in range(count):
                link.publish("offences", {"seq": seq, "extension": "8001", "name": "李四"})
            during = link.counters
            assert during.queued == before.queued + count
            assert during.delivered == before.delivered
            assert during.spilled == count - 16
            assert during.pending == count
            assert len(spooled_lines(settings)) == count - 16

            await broker.start()
            assert broker.port == port
            await asyncio.wait_for(link.wait_delivered(1 + count), WAIT)
            assert link.counters.pending == 0
        async with subscribed(broker, **console) as inbox:
            received = await inbox.events(topic, 1 + count)

    seqs = [decode(message)["seq"] for message in received]
    assert seqs == sorted(seqs)
    assert first_of_each_seq([decode(message) for message in received]) == list(range(-1, count))
    assert all(message.qos == 1 for message in received)
    assert spooled_lines(settings) == []


async def test_outbox_overflow_spills_to_disk_and_is_still_delivered_in_order(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    settings = make_settings(broker.port, tmp_path, outbox_limit=4)
    link = BrokerLink(settings)
    for seq in range(25):
        link.publish("decisions", {"seq": seq})
    assert link.counters == LinkCounters(queued=25, spilled=21, pending=25)
    assert len(spooled_lines(settings)) == 21

    async with subscribed(broker) as inbox, running(link):
        received = await inbox.events("pbxguard/hq/decisions", 25)
        await asyncio.wait_for(link.wait_delivered(25), WAIT)

    assert [decode(message)["seq"] for message in received] == list(range(25))
    assert spooled_lines(settings) == []
    assert link.counters.pending == 0


async def test_events_pending_at_shutdown_are_delivered_by_the_next_start(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    unreachable = make_settings(free_port(), tmp_path, outbox_limit=10)
    first = BrokerLink(unreachable)
    async with running(first):
        for seq in range(30):
            first.publish("alerts", {"seq": seq}, line="值班室")
    assert first.counters.delivered == 0
    assert first.counters.dropped == 0
    on_disk = [json.loads(line) for line in spooled_lines(unreachable)]
    assert [record["payload"]["seq"] for record in on_disk] == list(range(30))
    assert {record["topic"] for record in on_disk} == {"pbxguard/hq/alerts/值班室"}

    second = BrokerLink(make_settings(broker.port, tmp_path, outbox_limit=10))
    for seq in range(30, 33):
        second.publish("alerts", {"seq": seq}, line="值班室")
    assert second.counters.spilled == 3
    async with subscribed(broker) as inbox, running(second):
        received = await inbox.events("pbxguard/hq/alerts/值班室", 33)
    assert [decode(message)["seq"] for message in received] == list(range(33))


async def test_damaged_spool_lines_are_skipped_and_the_rest_delivered(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    settings = make_settings(broker.port, tmp_path)
    assert settings.spool_path is not None
    settings.spool_path.parent.mkdir(parents=True)
    settings.spool_path.write_bytes(
        b'{"topic":"pbxguard/hq/offences","payload":{"seq":0}}\n'
        b"not json at all\n"
        b'{"topic":"pbxguard/hq/#","payload":{"seq":9}}\n'
        b'["pbxguard/hq/offences",{"seq":9}]\n'
        b'{"topic":"pbxguard/hq/offences","payload":{"seq":1}}\n'
        b'{"topic":"pbxguard/hq/offences","payl'
    )
    link = BrokerLink(settings)
    link.publish("offences", {"seq": 2})
    async with subscribed(broker) as inbox, running(link):
        received = await inbox.events("pbxguard/hq/offences", 3)
    assert [decode(message)["seq"] for message in received] == [0, 1, 2]
    assert link.counters.dropped == 4
    assert spooled_lines(settings) == []


def test_publish_never_raises_on_bad_events(tmp_path: Path) -> None:
    link = BrokerLink(make_settings(free_port(), tmp_path))
    with capture_logs() as logs:
        link.publish("offences", {"when": object()})
        link.publish("offences", {"amount": float("nan")})
        link.publish(cast(EventKind, "gossip"), {"seq": 1})
        link.publish("alerts", {"seq": 1}, line="\ud800")
        link.publish("alerts", {"name": "\udcff"})
        link.publish("alerts", cast(dict[str, object], ["not", "a", "mapping"]))
    assert link.counters == LinkCounters(dropped=6)
    assert [entry["event"] for entry in logs] == ["mqtt.event_rejected"] * 6


def test_publish_without_a_spool_drops_overflow_and_counts_it(tmp_path: Path) -> None:
    link = BrokerLink(make_settings(free_port(), tmp_path, outbox_limit=2, spool_path=None))
    with capture_logs() as logs:
        for seq in range(5):
            link.publish("decisions", {"seq": seq})
    assert link.counters == LinkCounters(queued=5, dropped=3, pending=2)
    assert [entry["event"] for entry in logs] == ["mqtt.outbox_full"] * 3


async def test_run_keeps_retrying_a_refusing_broker_and_never_logs_the_password(
    tmp_path: Path,
) -> None:
    secret = "s3cret-Pa55"
    async with RefusingBroker() as fake:
        link = BrokerLink(make_settings(fake.port, tmp_path, username="pbxguard", password=secret))
        with capture_logs() as logs:
            async with running(link):
                link.publish("alerts", {"seq": 0})
                await fake.wait_attempts(3)
                assert not link.connected
    assert secret.encode() in fake.connect_packets[0]
    failures = [entry for entry in logs if entry["event"] == "mqtt.broker_unavailable"]
    assert len(failures) >= 2
    assert all(entry["retry_in"] <= 0.2 for entry in failures)
    assert secret not in repr(logs)
    assert link.counters.reconnects == 0
    assert link.counters.delivered == 0
    assert len(spooled_lines(link.settings)) == 1


async def test_probe_succeeds_against_the_broker_and_reports_an_absent_one(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    await BrokerLink(make_settings(broker.port, tmp_path)).probe()
    absent = BrokerLink(make_settings(free_port(), tmp_path, password="hunter2"))
    with pytest.raises(PublisherError, match=r"127\.0\.0\.1:\d+ unavailable") as raised:
        await absent.probe()
    assert "hunter2" not in str(raised.value)


async def test_run_refuses_to_run_twice(broker: MosquittoBroker, tmp_path: Path) -> None:
    link = BrokerLink(make_settings(broker.port, tmp_path))
    async with running(link):
        link.publish("decisions", {"seq": 0})
        await asyncio.wait_for(link.wait_delivered(1), WAIT)
        with pytest.raises(PublisherError, match="already running"):
            await link.run()


@pytest.mark.parametrize("site", ["", "a/b", "+", "#", "$SYS"])
def test_settings_reject_a_site_that_is_not_one_topic_level(site: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="site"):
        make_settings(1883, tmp_path, site=site)


def test_settings_never_show_the_password(tmp_path: Path) -> None:
    settings = make_settings(1883, tmp_path, username="pbxguard", password="hunter2")
    assert "hunter2" not in repr(settings)
    assert settings.effective_client_id == "pbxguard-hq"


async def test_null_link_accepts_everything_and_stops_when_closed() -> None:
    link: PublisherLink = NullLink()
    task = asyncio.create_task(link.run())
    for seq in range(1000):
        link.publish("offences", {"seq": seq, "anything": object()})
    link.publish(cast(EventKind, "gossip"), {})
    assert not link.connected
    assert link.counters == LinkCounters(queued=1001)
    assert not task.done()
    await link.close()
    await asyncio.wait_for(task, WAIT)


def test_broker_link_implements_the_publisher_port(tmp_path: Path) -> None:
    link: PublisherLink = BrokerLink(make_settings(free_port(), tmp_path))
    assert link.counters == LinkCounters()


def test_mosquitto_fixture_fails_clearly_when_the_binary_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOSQUITTO", str(tmp_path / "no-such-mosquitto"))
    with pytest.raises(pytest.fail.Exception, match="does not name a file"):
        MosquittoBroker(tmp_path)
