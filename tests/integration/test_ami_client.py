"""AmiClient against the simulated PBX (and a few hand-written misbehaving servers)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from structlog.testing import capture_logs

from pbxguard.adapters.ami import AmiClient, AmiTiming
from pbxguard.errors import (
    AmiActionError,
    AmiActionTimeout,
    AmiAuthenticationError,
    AmiConnectionError,
    AmiError,
    ConfigError,
    UnsafeActionError,
)
from pbxguard.protocol.ami import AmiMessage, encode_message
from pbxguard.simulator.ami_server import SimulatedPbx, load_recording
from tests.support.ami import TEST_SECRET, WAIT, EventLog, fast_timing, running, started

HK = "hk-call-cut-by-ami-hangup"
HK_OUTBOUND = "Local/0085223456789@pstn-00000007;1"


def client_for(
    pbx: SimulatedPbx,
    sink: Callable[[AmiMessage], None],
    *,
    secret: str = TEST_SECRET,
    on_login: Callable[[AmiClient], Awaitable[None]] | None = None,
    timing: AmiTiming | None = None,
    **options: object,
) -> AmiClient:
    return AmiClient(
        pbx.host,
        pbx.port,
        "pbxguard",
        secret,
        sink=sink,
        on_login=on_login,
        timing=timing or fast_timing(),
        **options,  # type: ignore[arg-type]
    )


def recorded(name: str) -> list[AmiMessage]:
    return [e.message for e in load_recording(name).events if e.message.event != "FullyBooted"]


def replayed(events: EventLog) -> list[AmiMessage]:
    return [m for m in events.events if m.event != "FullyBooted"]


@pytest.fixture
async def hk_pbx() -> AsyncIterator[SimulatedPbx]:
    async with started(SimulatedPbx([HK], secret=TEST_SECRET)) as pbx:
        yield pbx


class Resync:
    """An on_login hook that resynchronises the way the guard does and keeps the results."""

    def __init__(self, before: Callable[[], Awaitable[None]] | None = None) -> None:
        self.before = before
        self.calls = 0
        self.channels: list[list[AmiMessage]] = []
        self.devices: list[list[AmiMessage]] = []
        self.contacts: list[list[AmiMessage] | str] = []

    async def __call__(self, client: AmiClient) -> None:
        self.calls += 1
        if self.before is not None:
            await self.before()
        self.channels.append(await client.send_list_action("CoreShowChannels"))
        self.devices.append(await client.send_list_action("DeviceStateList"))
        try:
            self.contacts.append(await client.send_list_action("PJSIPShowContacts"))
        except AmiActionError as exc:
            self.contacts.append(exc.message)


async def test_login_runs_the_resync_hook_and_delivers_every_event_in_order() -> None:
    expected = recorded("register-and-qualify")
    async with started(SimulatedPbx(["register-and-qualify"], secret=TEST_SECRET)) as pbx:
        pbx.pause_after(lambda m: m.event == "ContactStatus")
        events, resync = EventLog(), Resync(before=pbx.wait_until_paused)
        client = client_for(pbx, events, on_login=resync)
        assert not client.connected
        async with running(client):
            await asyncio.wait_for(client.logged_in.wait(), WAIT)
            await asyncio.wait_for(pbx.wait_for_action("PJSIPShowContacts"), WAIT)
            contacts = await client.send_list_action("PJSIPShowContacts")
            assert [c.get("Status") for c in contacts] == ["NonQualified"]
            pbx.resume()
            await asyncio.wait_for(pbx.finished(), WAIT)
            await events.wait_for(lambda m: m == expected[-1])
            assert client.connected
            assert client.login_count == 1
            assert client.banner is not None
            assert client.banner.version == "11.0.0"
    assert resync.calls == 1
    assert resync.channels == [[]]
    assert [d.get("Device") for d in resync.devices[0]] == []
    (contacts,) = resync.contacts
    assert isinstance(contacts, list)
    assert [(c.get("Endpoint"), c.get("Status")) for c in contacts] == [("2001", "NonQualified")]
    assert events.events[0].event == "FullyBooted"
    assert replayed(events) == expected
    assert not client.connected
    logoff = pbx.actions_named("Logoff")
    assert len(logoff) == 1


async def test_a_dropped_connection_reconnects_resyncs_and_the_stream_goes_on() -> None:
    expected = recorded("staff-international-answered")
    pbx = SimulatedPbx(["staff-international-answered"], secret=TEST_SECRET)
    async with started(pbx):
        pbx.drop_connections_after(20)
        # The resync waits until the call is bridged, so what it sees does not depend on timing.
        pbx.pause_after(
            lambda m: m.event == "BridgeEnter" and m.get("Channel") == "PJSIP/2001-00000000"
        )
        events, resync = EventLog(), Resync(before=pbx.wait_until_paused)
        client = client_for(pbx, events, on_login=resync)
        with capture_logs() as logs:
            async with running(client):
                await asyncio.wait_for(pbx.wait_for_action("PJSIPShowContacts"), WAIT)
                pbx.resume()
                await asyncio.wait_for(pbx.finished(), WAIT)
                await events.wait_for(lambda m: m == expected[-1])
    assert client.login_count == 2
    assert pbx.connections == 2
    assert resync.calls == 2
    (channels,) = resync.channels
    assert [(c.get("Channel"), bool(c.get("BridgeId"))) for c in channels] == [
        ("PJSIP/2001-00000000", True),
        ("Local/00441632960123@pstn-00000000;1", True),
        ("Local/00441632960123@pstn-00000000;2", False),
    ]
    assert {d.get("Device"): d.get("State") for d in resync.devices[0]} == {
        "PJSIP/2001": "INUSE",
        "Local/00441632960123@pstn": "INUSE",
    }
    assert replayed(events) == expected
    assert len(events.named("FullyBooted")) == 2
    lost = [e for e in logs if e["event"] == "ami.connection_lost"]
    assert len(lost) == 1
    assert lost[0]["log_level"] == "warning"


async def test_wrong_secret_raises_once_without_retrying(hk_pbx: SimulatedPbx) -> None:
    client = client_for(hk_pbx, EventLog(), secret="wrong-secret", raise_on_auth_failure=True)
    with capture_logs() as logs, pytest.raises(AmiAuthenticationError, match="refused"):
        await asyncio.wait_for(client.run(), WAIT)
    assert hk_pbx.connections == 1
    assert client.connection_attempts == 1
    refused = [e for e in logs if e["event"] == "ami.login_refused"]
    assert len(refused) == 1
    assert refused[0]["log_level"] == "error"
    assert "wrong-secret" not in repr(logs)
    assert "wrong-secret" not in repr(client)


async def test_wrong_secret_is_retried_only_at_the_slow_interval(hk_pbx: SimulatedPbx) -> None:
    timing = fast_timing(backoff_min=0.01, backoff_max=0.05, login_retry=0.2)
    client = client_for(hk_pbx, EventLog(), secret="wrong-secret", timing=timing)
    with capture_logs() as logs:
        async with running(client):
            await asyncio.wait_for(hk_pbx.wait_for_connections(3), WAIT)
    times = hk_pbx.connection_times
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    # A refused login waits login_retry, not the quick reconnection backoff.
    assert all(gap >= 0.099 for gap in gaps), gaps
    assert hk_pbx.failed_logins >= 3
    assert client.login_count == 0
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [e["event"] for e in errors] == ["ami.login_refused"]
    assert "wrong-secret" not in repr(logs)


async def test_ping_watchdog_drops_a_half_open_connection_and_reconnects(
    hk_pbx: SimulatedPbx,
) -> None:
    timing = fast_timing(ping_interval=0.05, ping_timeout=0.2)
    client = client_for(hk_pbx, EventLog(), timing=timing)
    with capture_logs() as logs:
        async with running(client):
            await asyncio.wait_for(hk_pbx.wait_for_action("Ping"), WAIT)
            hk_pbx.make_half_open()
            await asyncio.wait_for(hk_pbx.wait_for_logins(2), WAIT)
            await asyncio.wait_for(client.logged_in.wait(), WAIT)
    assert client.login_count == 2
    lost = [e for e in logs if e["event"] == "ami.connection_lost"]
    assert len(lost) == 1
    assert "half-open" in lost[0]["error"]


async def test_pending_actions_fail_on_disconnect_and_are_never_replayed(
    hk_pbx: SimulatedPbx,
) -> None:
    client = client_for(hk_pbx, EventLog())
    async with running(client):
        await asyncio.wait_for(client.logged_in.wait(), WAIT)
        hk_pbx.make_half_open()
        hangup = asyncio.create_task(client.hangup("PJSIP/2001-0000000b"))
        listing = asyncio.create_task(client.send_list_action("CoreShowChannels"))
        await asyncio.wait_for(hk_pbx.wait_for_action("CoreShowChannels"), WAIT)
        hk_pbx.drop_connections()
        with pytest.raises(AmiConnectionError, match="lost before the response to Hangup"):
            await asyncio.wait_for(hangup, WAIT)
        with pytest.raises(AmiConnectionError):
            await asyncio.wait_for(listing, WAIT)
        await asyncio.wait_for(hk_pbx.wait_for_logins(2), WAIT)
        await asyncio.wait_for(client.logged_in.wait(), WAIT)
        pong = await client.send_action("Ping")
        assert pong.get("Ping") == "Pong"
    assert [a.session for a in hk_pbx.actions_named("Hangup")] == [1]
    assert [a.session for a in hk_pbx.actions_named("CoreShowChannels")] == [1]


@pytest.mark.parametrize(
    "channel",
    ["", "   ", "/PJSIP/.*/", "/.*/", " PJSIP/2001-0000000b", "PJSIP/2001-0000000b\r\nX: y"],
)
async def test_hangup_refuses_unsafe_channel_names(hk_pbx: SimulatedPbx, channel: str) -> None:
    client = client_for(hk_pbx, EventLog())
    async with running(client):
        await asyncio.wait_for(client.logged_in.wait(), WAIT)
        with pytest.raises(UnsafeActionError):
            await client.hangup(channel)
        with pytest.raises(UnsafeActionError):
            await client.hangup("PJSIP/2001-0000000b", cause=300)
        await client.send_action("Ping")
    assert hk_pbx.actions_named("Hangup") == []


async def test_a_sink_that_raises_does_not_close_the_connection(hk_pbx: SimulatedPbx) -> None:
    delivered = EventLog()

    def sink(message: AmiMessage) -> None:
        delivered(message)
        if message.event == "Newchannel":
            raise RuntimeError("bug in the consumer")

    client = client_for(hk_pbx, sink)
    expected = recorded(HK)
    with capture_logs() as logs:
        async with running(client):
            await asyncio.wait_for(hk_pbx.finished(), WAIT)
            await delivered.wait_for(lambda m: m == expected[-1])
    assert replayed(delivered) == expected
    assert client.login_count == 1
    assert hk_pbx.connections == 1
    failures = [e for e in logs if e["event"] == "ami.sink_failed"]
    assert len(failures) == len(delivered.named("Newchannel")) == 3
    assert {e["ami_event"] for e in failures} == {"Newchannel"}
    assert all(e["log_level"] == "error" and e["exc_info"] for e in failures)


async def test_hangup_of_a_live_recorded_call(hk_pbx: SimulatedPbx) -> None:
    hk_pbx.pause_after(lambda m: m.event == "DialState")
    events = EventLog()
    client = client_for(hk_pbx, events)
    async with running(client):
        await asyncio.wait_for(hk_pbx.wait_until_paused(), WAIT)
        await client.hangup(HK_OUTBOUND)
        await events.wait_for_event("DeviceStateChange", Device="PJSIP/2001", State="NOT_INUSE")
        with pytest.raises(AmiActionError, match="No such channel"):
            await client.hangup(HK_OUTBOUND)
        hk_pbx.resume()
        await asyncio.wait_for(hk_pbx.finished(), WAIT)
        await client.send_action("Ping")
    hangups = events.named("Hangup")
    assert [(h.get("Channel"), h.get("Cause"), h.get("Cause-txt")) for h in hangups] == [
        (HK_OUTBOUND, "21", "Call Rejected"),
        ("Local/0085223456789@pstn-00000007;2", "21", "Call Rejected"),
        ("PJSIP/2001-0000000b", "21", "Call Rejected"),
    ]
    (dial_end,) = events.named("DialEnd")
    assert dial_end.get("DialStatus") == "NOANSWER"
    (request,) = events.named("HangupRequest")
    assert request.get("Cause") == "21"
    action = hk_pbx.actions_named("Hangup")[0].message
    assert (action.get("Channel"), action.get("Cause")) == (HK_OUTBOUND, "21")


async def test_action_errors_and_timeouts(hk_pbx: SimulatedPbx) -> None:
    client = client_for(hk_pbx, EventLog())
    with pytest.raises(AmiConnectionError, match="not connected"):
        await client.send_action("Ping")
    async with running(client):
        await asyncio.wait_for(client.logged_in.wait(), WAIT)
        with pytest.raises(AmiActionError, match="Invalid/unknown command") as error:
            await client.send_action("Reload")
        assert error.value.action == "Reload"
        hk_pbx.make_half_open()
        with pytest.raises(AmiActionTimeout, match="Ping"):
            await client.send_action("Ping", timeout=0.1)
        with pytest.raises(AmiActionTimeout, match="CoreShowChannels"):
            await client.send_list_action("CoreShowChannels", timeout=0.1)


async def test_a_slow_consumer_overflows_the_queue_and_the_client_resyncs() -> None:
    async with started(SimulatedPbx(["burst-mixed-calls"], secret=TEST_SECRET)) as pbx:
        # The PBX writes events in bursts; each read then holds more than five of them.
        resync = Resync()
        client = client_for(pbx, EventLog(), on_login=resync, queue_size=5)
        with capture_logs() as logs:
            async with running(client):
                await asyncio.wait_for(pbx.wait_for_logins(2), WAIT)
    full = [e for e in logs if e["event"] == "ami.event_queue_full"]
    assert full
    assert full[0]["log_level"] == "error"
    assert resync.calls >= 2


async def test_close_logs_off_and_run_returns(hk_pbx: SimulatedPbx) -> None:
    client = client_for(hk_pbx, EventLog())
    task = asyncio.create_task(client.run())
    await asyncio.wait_for(client.logged_in.wait(), WAIT)
    await asyncio.wait_for(client.close(), WAIT)
    assert task.done()
    assert task.exception() is None
    assert not client.connected
    assert [a.name for a in hk_pbx.actions] == ["Login", "Logoff"]
    with pytest.raises(AmiConnectionError):
        await client.send_action("Ping")


async def test_run_twice_and_bad_settings_are_refused(hk_pbx: SimulatedPbx) -> None:
    client = client_for(hk_pbx, EventLog())
    async with running(client):
        await asyncio.wait_for(client.logged_in.wait(), WAIT)
        with pytest.raises(AmiError, match="already running"):
            await client.run()
    with pytest.raises(ConfigError):
        AmiTiming(ping_timeout=0)
    with pytest.raises(ConfigError):
        AmiTiming(backoff_min=2, backoff_max=1)
    with pytest.raises(ConfigError):
        client_for(hk_pbx, EventLog(), queue_size=0)


# --- hand-written servers that misbehave ----------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Connections:
    """Counts the connections a fake server accepted; a test can wait for the n-th."""

    def __init__(self) -> None:
        self.count = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def arrived(self) -> None:
        self.count += 1
        for wanted, future in self._waiters:
            if not future.done() and self.count >= wanted:
                future.set_result(None)

    async def wait_for(self, wanted: int) -> None:
        if self.count >= wanted:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((wanted, future))
        await asyncio.wait_for(future, WAIT)


@contextlib.asynccontextmanager
async def fake_server(handler: Handler) -> AsyncIterator[tuple[str, int, Connections]]:
    """Serve ``handler`` on loopback; yield host, port and the connection counter."""
    connections = Connections()
    tasks: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        connections.arrived()
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield "127.0.0.1", port, connections
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def accept_login(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"Asterisk Call Manager/11.0.0\r\n")
    login = await reader.readuntil(b"\r\n\r\n")
    action_id = next(
        line.split(b": ", 1)[1] for line in login.split(b"\r\n") if line.startswith(b"ActionID")
    )
    writer.write(
        b"Response: Success\r\nActionID: " + action_id + b"\r\nMessage: Authentication accepted"
        b"\r\n\r\n"
    )


async def test_garbage_and_oversized_frames_are_logged_and_skipped() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_login(reader, writer)
        writer.write(b"Event: Before\r\n\r\n")
        writer.write(b"Event: Broken\r\nno colon on this line\r\n\r\n")
        writer.write(b"Event: Huge\r\nData: " + b"x" * 10_000 + b"\r\n\r\n")
        writer.write(encode_message([("Event", "After"), ("CallerIDName", "张伟")]))
        await reader.read()

    events = EventLog()
    async with fake_server(handler) as (host, port, connections):
        client = AmiClient(
            host,
            port,
            "pbxguard",
            TEST_SECRET,
            sink=events,
            timing=fast_timing(),
            max_frame_size=4096,
        )
        with capture_logs() as logs:
            async with running(client):
                after = await events.wait_for_event("After")
        assert connections.count == 1
    assert after.get("CallerIDName") == "张伟"
    assert [m.event for m in events.events] == ["Before", "Broken", "After"]
    kinds = {e["event"]: e["log_level"] for e in logs}
    assert kinds["ami.malformed_message"] == "warning"
    assert kinds["ami.frame_too_large"] == "error"


async def test_an_event_with_a_response_field_is_an_event_not_a_reply() -> None:
    """OriginateResponse carries ``Response:``; it still goes to the sink, in order."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_login(reader, writer)
        writer.write(
            encode_message(
                [
                    ("Event", "OriginateResponse"),
                    ("Privilege", "call,all"),
                    ("ActionID", "pbxguard-1"),
                    ("Response", "Failure"),
                    ("Channel", "PJSIP/2001"),
                    ("Reason", "0"),
                ]
            )
        )
        writer.write(encode_message([("Event", "After")]))
        await reader.read()

    events = EventLog()
    async with fake_server(handler) as (host, port, _):
        client = AmiClient(host, port, "pbxguard", TEST_SECRET, sink=events, timing=fast_timing())
        async with running(client):
            await events.wait_for_event("After")
    assert [m.event for m in events.events] == ["OriginateResponse", "After"]
    assert events.events[0].get("Response") == "Failure"


async def test_a_burst_is_read_no_faster_than_the_sink_takes_it() -> None:
    """The client stops reading while ``read_ahead`` events wait (the kernel holds the rest)."""
    padding = "x" * 500
    burst = 20_000

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_login(reader, writer)
        for n in range(burst):
            writer.write(encode_message([("Event", "Burst"), ("N", str(n)), ("Pad", padding)]))
            if n % 1000 == 0:
                await writer.drain()
        writer.write(encode_message([("Event", "End")]))
        await writer.drain()
        await reader.read()

    waiting: list[int] = []
    events = EventLog()
    client: AmiClient | None = None

    def sink(message: AmiMessage) -> None:
        assert client is not None
        waiting.append(client.queued)
        events(message)

    async with fake_server(handler) as (host, port, _):
        client = AmiClient(
            host, port, "pbxguard", TEST_SECRET, sink=sink, timing=fast_timing(), read_ahead=100
        )
        async with running(client):
            await events.wait_for_event("End")
    assert [m.get("N") for m in events.named("Burst")] == [str(n) for n in range(burst)]
    # One read (64 KiB) holds at most 64 KiB / 540 bytes of these events beyond the 100.
    assert max(waiting) < 100 + 65536 // 540
    assert client.queued == 0


async def test_a_server_that_does_not_speak_ami_is_retried() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n")
        await reader.read()

    async with fake_server(handler) as (host, port, connections):
        client = AmiClient(
            host, port, "pbxguard", TEST_SECRET, sink=EventLog(), timing=fast_timing()
        )
        with capture_logs() as logs:
            async with running(client):
                await connections.wait_for(2)
    lost = [e for e in logs if e["event"] == "ami.connection_lost"]
    assert lost
    assert "does not speak AMI" in lost[0]["error"]
    assert client.login_count == 0


async def test_a_server_that_hangs_up_before_the_banner_is_retried() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        return

    async with fake_server(handler) as (host, port, connections):
        client = AmiClient(
            host, port, "pbxguard", TEST_SECRET, sink=EventLog(), timing=fast_timing()
        )
        with capture_logs() as logs:
            async with running(client):
                await connections.wait_for(3)
    errors = [e["error"] for e in logs if e["event"] == "ami.connection_lost"]
    assert errors
    assert all("closed the AMI connection" in error for error in errors)


class CountingRandom(random.Random):
    """Backoff jitter that counts the retries and always picks the shortest delay."""

    def __init__(self, wanted: int) -> None:
        super().__init__(0)
        self.delays: list[tuple[float, float]] = []
        self.wanted = wanted
        self.reached = asyncio.Event()

    def uniform(self, a: float, b: float) -> float:
        self.delays.append((a, b))
        if len(self.delays) >= self.wanted:
            self.reached.set()
        return a


class NoWait(CountingRandom):
    """Backoff jitter that records the ranges asked for and waits not at all."""

    def uniform(self, a: float, b: float) -> float:
        super().uniform(a, b)
        return 0.0


async def test_however_long_the_pbx_is_away_the_next_attempt_comes_within_a_second() -> None:
    """The wait between attempts grows, but never past a second.

    The guard is blind while it reconnects: a forbidden call that starts during an AMI outage
    is cut only once the guard is back. A wait that kept doubling (to 30 s) left the guard
    blind for seconds after a five-second outage, long enough for the carrier to answer.
    """
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    rng = NoWait(wanted=12)
    client = AmiClient(
        "127.0.0.1", port, "pbxguard", TEST_SECRET, sink=EventLog(), timing=AmiTiming(), rng=rng
    )
    async with running(client):
        await asyncio.wait_for(rng.reached.wait(), WAIT)
    ceilings = [b for _, b in rng.delays[:12]]
    assert ceilings == sorted(ceilings)  # it still backs off, from backoff_min ...
    assert ceilings[0] < ceilings[-1]
    assert max(ceilings) <= 1.0  # ... to a second at most


async def test_nobody_listening_is_retried_with_growing_backoff() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    rng = CountingRandom(wanted=4)
    timing = fast_timing(backoff_min=0.01, backoff_max=0.04)
    client = AmiClient(
        "127.0.0.1", port, "pbxguard", TEST_SECRET, sink=EventLog(), timing=timing, rng=rng
    )
    with capture_logs() as logs:
        async with running(client):
            await asyncio.wait_for(rng.reached.wait(), WAIT)
    assert [b for _, b in rng.delays[:4]] == [0.01, 0.02, 0.04, 0.04]
    assert all(a == b / 2 for a, b in rng.delays)
    lost = [e for e in logs if e["event"] == "ami.connection_lost"]
    assert len(lost) >= 4
    assert all("cannot connect" in e["error"] for e in lost)
