"""The FastAGI server under a flood: the connection cap, the deadline, aggregated warnings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from pbxguard.adapters.fastagi import AgiChannel, AgiHandler, FastAgiServer
from pbxguard.adapters.settings import load_settings
from pbxguard.errors import ConfigError
from pbxguard.protocol.agi import AgiEnvironment
from tests.support.agi_client import (
    HeldConnection,
    agi_request,
    blunt_request,
    environment_bytes,
)
from tests.support.log_watch import LogWatch, watching_logs

LOCALHOST = "127.0.0.1"
HALF_ENVIRONMENT = environment_bytes()[: len(environment_bytes()) // 2]


@pytest.fixture
def logs() -> Iterator[LogWatch]:
    with watching_logs() as watch:
        yield watch


async def authorize(env: AgiEnvironment, channel: AgiChannel) -> None:
    _caller, number = env.args
    await channel.set_variable("PBXGUARD_VERDICT", "deny" if number.startswith("00") else "allow")


class Gate:
    """A handler that holds every request until opened, and says how many it holds."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.held = 0
        self._arrived = asyncio.Event()

    async def handler(self, env: AgiEnvironment, channel: AgiChannel) -> None:
        self.held += 1
        self._arrived.set()
        await self.opened.wait()
        await authorize(env, channel)

    async def wait_until_holding(self, count: int) -> None:
        while self.held < count:
            self._arrived.clear()
            await self._arrived.wait()


def _server(
    handler: AgiHandler = authorize,
    *,
    max_connections: int = 512,
    request_timeout: float = 30,
    summary_interval: float = 60,
) -> FastAgiServer:
    return FastAgiServer(
        {"authorize": handler},
        host=LOCALHOST,
        port=0,
        request_timeout=request_timeout,
        max_connections=max_connections,
        summary_interval=summary_interval,
    )


@pytest.fixture
async def flood() -> AsyncIterator[list[HeldConnection]]:
    held: list[HeldConnection] = []
    yield held
    await asyncio.gather(*(connection.close() for connection in held))


async def test_connections_over_the_cap_are_answered_failure_at_once_and_counted(
    logs: LogWatch,
) -> None:
    gate = Gate()
    async with _server(gate.handler, max_connections=3) as server:
        host, port = server.address
        admitted = [asyncio.create_task(agi_request(host, port)) for _ in range(3)]
        async with asyncio.timeout(5):
            await gate.wait_until_holding(3)
            # The deadline is 30 s: only the cap can answer these two this soon. It answers
            # before reading, so the connection is reset: read it as res_agi would.
            refused = await asyncio.gather(blunt_request(host, port), blunt_request(host, port))
        gate.opened.set()
        served = await asyncio.gather(*admitted)
        after = await agi_request(host, port, extension="02112345678")
        counters = server.counters()

    assert list(refused) == [b"failure\n", b"failure\n"]
    assert [result.verdict for result in served] == ["deny", "deny", "deny"]
    assert after.verdict == "allow"
    assert (counters.accepted, counters.refused, counters.served) == (4, 2, 4)
    assert [entry["log_level"] for entry in logs.named("fastagi.connection.refused")] == [
        "debug",
        "debug",
    ]
    [summary] = logs.named("fastagi.clients_misbehaving")
    assert (summary["refused"], summary["timed_out"], summary["protocol_error"]) == (2, 0, 0)


async def test_idle_connections_count_against_the_cap(
    flood: list[HeldConnection],
) -> None:
    async with _server(max_connections=2) as server:
        host, port = server.address
        flood += [await HeldConnection.open(host, port) for _ in range(2)]
        answer = await blunt_request(host, port)
        counters = server.counters()

    assert answer == b"failure\n"
    assert (counters.active, counters.refused) == (2, 1)


async def test_a_flood_of_idle_and_half_sent_clients_does_not_stop_a_verdict(
    logs: LogWatch, flood: list[HeldConnection]
) -> None:
    async with _server(max_connections=1000) as server:
        host, port = server.address
        flood += await asyncio.gather(*(HeldConnection.open(host, port) for _ in range(200)))
        flood += await asyncio.gather(
            *(HeldConnection.open(host, port, HALF_ENVIRONMENT) for _ in range(50))
        )
        numbers = ["00441632960123", "02112345678", "13800138000", "0085223456789"]
        async with asyncio.timeout(10):
            results = await asyncio.gather(
                *(agi_request(host, port, extension=number) for number in numbers)
            )
        # Connections are accepted in order: every flood connection was in before these.
        during = server.counters()
        await asyncio.gather(*(connection.close() for connection in flood))
        async with asyncio.timeout(10):
            await logs.wait_for("fastagi.request.abandoned", 200)
            await logs.wait_for("fastagi.request.protocol_error", 50)
        after = server.counters()
        warnings_before_close = logs.at_least("warning")

    assert [result.verdict for result in results] == ["deny", "allow", "allow", "deny"]
    assert (during.active, during.served, during.refused) == (250, 4, 0)
    assert (after.active, after.abandoned, after.protocol_error) == (0, 200, 50)
    # Not one warning for 250 misbehaving clients until the summary is due (or the server
    # closes, which writes it early).
    assert warnings_before_close == []
    [summary] = logs.at_least("warning")
    assert (summary["event"], summary["protocol_error"], summary["timed_out"]) == (
        "fastagi.clients_misbehaving",
        50,
        0,
    )


async def test_the_deadline_closes_idle_and_half_sent_connections_with_one_summary(
    logs: LogWatch,
) -> None:
    server = _server(request_timeout=0.3)
    host, port = await server.start()
    idle = [await HeldConnection.open(host, port) for _ in range(20)]
    half = [await HeldConnection.open(host, port, HALF_ENVIRONMENT) for _ in range(10)]
    answers = await asyncio.gather(*(connection.answer() for connection in idle + half))
    served = await agi_request(host, port)
    counters = server.counters()
    await server.close()
    await asyncio.gather(*(connection.close() for connection in idle + half))

    assert answers == [b"failure\n"] * 30
    assert served.verdict == "deny"
    assert (counters.timed_out, counters.served, counters.active) == (30, 1, 0)
    closed = logs.named("fastagi.request.timed_out")
    assert {entry["log_level"] for entry in closed} == {"debug"}
    assert {entry["phase"] for entry in closed} == {"environment"}
    assert (
        sorted(entry["received_bytes"] for entry in closed)
        == [0] * 20 + [len(HALF_ENVIRONMENT)] * 10
    )
    # One line for the thirty, written when the server closed before the minute was up.
    assert [entry["event"] for entry in logs.at_least("warning")] == ["fastagi.clients_misbehaving"]
    [summary] = logs.named("fastagi.clients_misbehaving")
    assert (summary["timed_out"], summary["protocol_error"], summary["refused"]) == (30, 0, 0)


async def test_the_summary_comes_once_per_interval_with_what_happened_in_it(
    logs: LogWatch,
) -> None:
    async with _server(request_timeout=0.1, summary_interval=0.5) as server:
        host, port = server.address
        first = [await HeldConnection.open(host, port) for _ in range(5)]
        await asyncio.gather(*(connection.answer() for connection in first))
        async with asyncio.timeout(5):
            [one] = await logs.wait_for("fastagi.clients_misbehaving")
        second = [await HeldConnection.open(host, port, b"GET / HTTP/1.1\n") for _ in range(3)]
        await asyncio.gather(*(connection.answer() for connection in second))
        async with asyncio.timeout(5):
            _, two = await logs.wait_for("fastagi.clients_misbehaving", 2)
    await asyncio.gather(*(connection.close() for connection in first + second))

    assert (one["timed_out"], one["protocol_error"], one["log_level"]) == (5, 0, "warning")
    assert (two["timed_out"], two["protocol_error"]) == (0, 3)
    assert len(logs.named("fastagi.clients_misbehaving")) == 2


async def test_a_slow_handler_is_still_a_warning_of_its_own(logs: LogWatch) -> None:
    never = asyncio.Event()

    async def stuck(env: AgiEnvironment, channel: AgiChannel) -> None:
        await never.wait()

    async with _server(stuck, request_timeout=0.2) as server:
        result = await agi_request(*server.address)

    assert result.agistatus == "FAILURE"
    [entry] = logs.named("fastagi.request.timed_out")
    assert (entry["log_level"], entry["phase"], entry["uniqueid"]) == (
        "warning",
        "handler",
        "1795397584.0",
    )
    assert logs.named("fastagi.clients_misbehaving") == []


async def test_a_hangup_sent_between_commands_is_noticed_at_the_next_command() -> None:
    """Bytes that arrive while the handler is busy elsewhere wait for it, as in a stream."""
    seen: list[bool] = []
    parked = asyncio.Event()
    resume = asyncio.Event()

    async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
        await channel.set_variable("PBXGUARD_VERDICT", "allow")
        parked.set()
        await resume.wait()
        try:
            await channel.set_variable("PBXGUARD_RULE", "")
        finally:
            seen.append(channel.hung_up)

    async with _server(handler) as server:
        request = asyncio.create_task(agi_request(*server.address, hangup_after=1))
        async with asyncio.timeout(5):
            await parked.wait()
        resume.set()
        result = await request

    assert seen == [True]
    # The second command went out before the HANGUP line was read (a dead channel still
    # runs SET VARIABLE); the handler learnt of the hang-up from the reply it waited for.
    assert result.commands == [
        'SET VARIABLE PBXGUARD_VERDICT "allow"',
        'SET VARIABLE PBXGUARD_RULE ""',
    ]
    assert result.agistatus == "HANGUP"


def test_max_connections_is_read_from_the_settings_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PBXGUARD_AGI__MAX_CONNECTIONS", raising=False)
    file = tmp_path / "pbxguard.toml"
    file.write_text("[agi]\nmax_connections = 900\n", "utf-8")

    assert load_settings(None).agi.max_connections == 512
    assert load_settings(file).agi.max_connections == 900
    monkeypatch.setenv("PBXGUARD_AGI__MAX_CONNECTIONS", "64")
    assert load_settings(file).agi.max_connections == 64
    monkeypatch.delenv("PBXGUARD_AGI__MAX_CONNECTIONS")
    file.write_text("[agi]\nmax_connections = 0\n", "utf-8")
    with pytest.raises(ConfigError, match=r"agi\.max_connections"):
        load_settings(file)


def test_a_cap_below_one_is_refused() -> None:
    with pytest.raises(ConfigError, match="max_connections must be at least 1"):
        _server(max_connections=0)
