"""The FastAGI server over real loopback sockets, driven by a client that behaves like res_agi."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any

import pytest

from pbxguard.adapters.fastagi import AgiChannel, AgiHandler, FastAgiServer
from pbxguard.errors import AgiProtocolError, ConfigError
from pbxguard.protocol.agi import AgiEnvironment
from tests.support.agi_client import (
    AgiResult,
    abandon_request,
    agi_request,
    environment_bytes,
    raw_exchange,
    silent_request,
)
from tests.support.log_watch import LogWatch, watching_logs

LOCALHOST = "127.0.0.1"


@pytest.fixture
def logs() -> Iterator[LogWatch]:
    with watching_logs() as watch:
        yield watch


async def authorize(env: AgiEnvironment, channel: AgiChannel) -> None:
    """Stand in for the real verdict: deny international, PIN for premium, allow the rest."""
    _caller, number = env.args
    if number.startswith(("00", "+")):
        verdict, reason, rule = "deny", '国际长途未经部门负责人同意 "LD-2"', "LD-2"
    elif number.startswith("168"):
        verdict, reason, rule = "pin", "premium-rate number", "PR-1"
    else:
        verdict, reason, rule = "allow", "", ""
    await channel.set_variable("PBXGUARD_VERDICT", verdict)
    await channel.set_variable("PBXGUARD_REASON", reason)
    await channel.set_variable("PBXGUARD_RULE", rule)


async def pin(env: AgiEnvironment, channel: AgiChannel) -> None:
    _caller, _number, code = env.args
    await channel.set_variable("PBXGUARD_VERDICT", "allow" if code == "7310" else "deny")


def _server(
    routes: dict[str, AgiHandler] | None = None, *, request_timeout: float = 1.5
) -> FastAgiServer:
    return FastAgiServer(
        routes if routes is not None else {"authorize": authorize, "pin": pin},
        host=LOCALHOST,
        port=0,
        request_timeout=request_timeout,
    )


@pytest.fixture
async def server() -> AsyncIterator[FastAgiServer]:
    async with _server() as running:
        yield running


async def test_authorize_sets_verdict_reason_and_rule(server: FastAgiServer) -> None:
    host, port = server.address

    result = await agi_request(host, port, callerid="2001", extension="00441632960123")

    assert result.variables == {
        "PBXGUARD_VERDICT": "deny",
        "PBXGUARD_REASON": '国际长途未经部门负责人同意 "LD-2"',
        "PBXGUARD_RULE": "LD-2",
    }
    assert result.agistatus == "SUCCESS"
    assert result.commands[0] == 'SET VARIABLE PBXGUARD_VERDICT "deny"'
    counters = server.counters()
    assert (counters.accepted, counters.served, counters.failed) == (1, 1, 0)


@pytest.mark.parametrize(
    ("extension", "verdict"),
    [("02112345678", "allow"), ("16812345678", "pin"), ("+85223456789", "deny")],
)
async def test_each_dialled_number_gets_its_own_verdict(
    server: FastAgiServer, extension: str, verdict: str
) -> None:
    result = await agi_request(*server.address, extension=extension)

    assert result.verdict == verdict


async def test_pin_route_gets_the_pin_as_an_argument_and_never_logs_it(
    server: FastAgiServer, logs: LogWatch
) -> None:
    result = await agi_request(*server.address, script="pin", args=("2002", "16812345678", "7310"))

    assert result.verdict == "allow"
    assert "7310" not in repr(logs.entries)
    assert logs.entries  # the request did log, just not the PIN


async def test_get_variable_reads_the_channel(logs: LogWatch) -> None:
    seen: list[str | None] = []

    async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
        seen.append(await channel.get_variable("PBXGUARD_PIN_TRIES"))
        seen.append(await channel.get_variable("NOT_SET"))
        await channel.verbose(f"pbxguard checked {env.uniqueid}")

    async with _server({"authorize": handler}) as running:
        result = await agi_request(*running.address, channel_variables={"PBXGUARD_PIN_TRIES": "2"})

    assert seen == ["2", None]
    assert result.verbose == ["pbxguard checked 1795397584.0"]


async def test_unknown_route_is_logged_and_answered_with_failure(
    server: FastAgiServer, logs: LogWatch
) -> None:
    result = await agi_request(*server.address, script="authorise")

    assert result.agistatus == "FAILURE"
    assert result.variables == {}
    [entry] = logs.named("fastagi.request.unknown_route")
    assert entry["agi_route"] == "authorise"
    assert entry["uniqueid"] == "1795397584.0"
    assert server.counters().unknown_route == 1


async def test_a_failing_handler_costs_one_request_and_the_server_keeps_serving(
    logs: LogWatch,
) -> None:
    async def broken(env: AgiEnvironment, channel: AgiChannel) -> None:
        await channel.set_variable("PBXGUARD_VERDICT", "allow")
        raise RuntimeError("policy store unreachable")

    async with _server({"authorize": authorize, "broken": broken}) as running:
        failed = await agi_request(*running.address, script="broken")
        served = await agi_request(*running.address, extension="02112345678")
        counters = running.counters()

    assert failed.agistatus == "FAILURE"
    assert served.verdict == "allow"
    assert (counters.handler_error, counters.served) == (1, 1)
    [entry] = logs.named("fastagi.request.handler_failed")
    assert entry["log_level"] == "error"
    assert entry["agi_route"] == "broken"


@pytest.mark.parametrize("code", [510, 511, 520])
async def test_a_command_asterisk_refuses_raises_in_the_handler(code: int) -> None:
    errors: list[AgiProtocolError] = []
    hung_up: list[bool] = []

    async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
        try:
            await channel.set_variable("PBXGUARD_VERDICT", "allow")
        except AgiProtocolError as exc:
            errors.append(exc)
        hung_up.append(channel.hung_up)
        if not channel.hung_up:
            await channel.verbose("still talking")

    async with _server({"authorize": handler}) as running:
        result = await agi_request(*running.address, refuse={"SET VARIABLE": code})

    [error] = errors
    assert f"Asterisk refused SET VARIABLE: {code}" in str(error)
    # 511 is only ever sent for a dead channel: nothing more is worth sending.
    assert hung_up == [code == 511]
    assert result.verbose == ([] if code == 511 else ["still talking"])
    assert result.variables == {}
    assert result.agistatus == "SUCCESS"


async def test_an_uncaught_refusal_fails_the_request(server: FastAgiServer, logs: LogWatch) -> None:
    result = await agi_request(*server.address, refuse={"SET VARIABLE": 520})

    assert result.agistatus == "FAILURE"
    assert server.counters().protocol_error == 1
    [entry] = logs.named("fastagi.request.protocol_error")
    assert "520" in entry["error"]


@pytest.mark.parametrize("commands_before_hangup", [0, 1])
async def test_a_caller_hanging_up_stops_the_handler(commands_before_hangup: int) -> None:
    seen: list[bool] = []

    async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
        try:
            await authorize(env, channel)
        finally:
            seen.append(channel.hung_up)

    async with _server({"authorize": handler}) as running:
        result = await agi_request(*running.address, hangup_after=commands_before_hangup)
        counters = running.counters()

    assert seen == [True]
    # The command in flight when HANGUP arrived is the last one sent (a dead channel still
    # runs SET VARIABLE, so Asterisk answers it); the handler stops there.
    assert len(result.commands) == commands_before_hangup + 1
    assert "PBXGUARD_RULE" not in result.variables
    assert result.agistatus == "HANGUP"
    assert (counters.hung_up, counters.failed) == (1, 0)


async def test_a_slow_handler_is_cut_at_the_deadline(logs: LogWatch) -> None:
    never = asyncio.Event()

    async def stuck(env: AgiEnvironment, channel: AgiChannel) -> None:
        await channel.set_variable("PBXGUARD_VERDICT", "allow")
        await never.wait()

    async with _server({"authorize": stuck}, request_timeout=0.2) as running:
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await agi_request(*running.address)
        elapsed = loop.time() - started
        counters = running.counters()

    assert result.agistatus == "FAILURE"
    assert 0.2 <= elapsed < 1.5
    assert counters.timed_out == 1
    [entry] = logs.named("fastagi.request.timed_out")
    assert entry["phase"] == "handler"


async def test_a_silent_client_is_closed_at_the_deadline() -> None:
    async with _server(request_timeout=0.2) as running:
        loop = asyncio.get_running_loop()
        started = loop.time()
        answer = await silent_request(*running.address)
        elapsed = loop.time() - started
        counters = running.counters()

    assert answer == b"failure\n"
    assert 0.2 <= elapsed < 1.5
    assert counters.timed_out == 1


async def test_half_an_environment_then_eof_ends_the_request_at_once(
    logs: LogWatch,
) -> None:
    async with _server(request_timeout=30) as running:
        async with asyncio.timeout(5):
            answer = await abandon_request(*running.address, after_bytes=200)
        served = await agi_request(*running.address, extension="02112345678")

    assert answer == b"failure\n"
    assert served.verdict == "allow"
    [entry] = logs.named("fastagi.request.protocol_error")
    assert "middle of the AGI environment" in entry["error"]


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: pbx\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n",
    ],
)
async def test_garbage_is_refused_without_waiting_for_the_deadline(garbage: bytes) -> None:
    async with _server(request_timeout=30) as running:
        async with asyncio.timeout(5):
            answer = await raw_exchange(*running.address, garbage)
        counters = running.counters()

    assert answer == b"failure\n"
    assert counters.protocol_error == 1


async def test_an_endless_environment_is_cut_at_the_size_cap(logs: LogWatch) -> None:
    async with _server(request_timeout=30) as running:
        async with asyncio.timeout(5):
            # The server closes with bytes unread, so the kernel may reset the connection
            # before "failure" reaches the client: only the server's side is certain.
            await raw_exchange(*running.address, b"agi_network: yes\n" + b"x" * 40000)
            [entry] = await logs.wait_for("fastagi.request.protocol_error")

    assert "larger than 16384 bytes" in entry["error"]


async def test_a_client_that_connects_and_leaves_is_not_a_failure(logs: LogWatch) -> None:
    async with _server() as running:
        assert await raw_exchange(*running.address, b"") == b""
        await logs.wait_for("fastagi.request.abandoned")
        counters = running.counters()

    assert (counters.abandoned, counters.failed) == (1, 0)


VERDICT_OF = {
    "02112345678": "allow",
    "13800138000": "allow",
    "16812345678": "pin",
    "00441632960123": "deny",
    "+85223456789": "deny",
}


async def _good_request(host: str, port: int, number: str) -> tuple[str, float, AgiResult]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await agi_request(host, port, extension=number)
    return number, loop.time() - started, result


async def test_event_loop_stays_responsive_while_clients_misbehave(logs: LogWatch) -> None:
    """Half-way closes and silent clients cost a task each; good requests are still answered."""
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    storm_over = asyncio.Event()

    async def heartbeat() -> None:
        last = loop.time()
        while not storm_over.is_set():
            await asyncio.sleep(0.005)
            now = loop.time()
            gaps.append(now - last)
            last = now

    half = len(environment_bytes()) // 2
    numbers = list(VERDICT_OF)

    async with _server(request_timeout=0.3) as running:
        host, port = running.address
        jobs: list[Coroutine[Any, Any, object]] = []
        jobs += [abandon_request(host, port, after_bytes=half) for _ in range(50)]
        jobs += [
            abandon_request(host, port, after_bytes=half, wait_for_answer=False) for _ in range(50)
        ]
        jobs += [silent_request(host, port) for _ in range(20)]
        jobs += [_good_request(host, port, numbers[i % len(numbers)]) for i in range(50)]
        random.Random(7).shuffle(jobs)

        ticker = asyncio.create_task(heartbeat())
        try:
            async with asyncio.timeout(10):
                results = await asyncio.gather(*jobs)
                await logs.wait_for("fastagi.request.protocol_error", count=100)
        finally:
            storm_over.set()
            await ticker
        counters = running.counters()

    answered = [r for r in results if isinstance(r, tuple)]
    assert len(answered) == 50
    assert all(result.verdict == VERDICT_OF[number] for number, _, result in answered)
    assert results.count(b"failure\n") == 50 + 20  # the answered abandons and the silent
    assert max(gaps) < 0.5
    # A connection the listen backlog dropped would be retried by the kernel a second later.
    assert max(elapsed for _, elapsed, _ in answered) < 1.0
    assert (counters.served, counters.timed_out, counters.protocol_error) == (50, 20, 100)


async def test_close_cancels_requests_in_flight() -> None:
    started = asyncio.Event()
    cancelled: list[bool] = []

    async def waiting(env: AgiEnvironment, channel: AgiChannel) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    running = _server({"authorize": waiting}, request_timeout=30)
    await running.start()
    client = asyncio.create_task(agi_request(*running.address))
    async with asyncio.timeout(5):
        await started.wait()
        await running.close()
        result = await client

    assert cancelled == [True]
    assert result.variables == {}
    assert running.counters().active == 0


async def test_serve_runs_in_a_task_group_until_cancelled() -> None:
    running = _server()
    host, port = await running.start()

    async with asyncio.TaskGroup() as group:
        serving = group.create_task(running.serve())
        result = await agi_request(host, port, extension="02112345678")
        serving.cancel()

    assert result.verdict == "allow"
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(host, port)


async def test_a_port_already_taken_is_a_config_error(server: FastAgiServer) -> None:
    _host, port = server.address
    second = FastAgiServer({}, host=LOCALHOST, port=port)

    with pytest.raises(ConfigError, match=f"cannot listen on {LOCALHOST}:{port}"):
        await second.start()
