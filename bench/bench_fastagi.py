"""Measure pre-dial verdict latency over FastAGI on loopback, against a bare TCP echo baseline.

The server under test runs in its own process, as it does beside a real Asterisk, with a
handler that sets three variables (verdict, reason, rule). A client in this process plays
res_agi: it opens one connection per call attempt at a fixed arrival rate (open loop, at most
``--concurrency`` connections at once), sends a realistic environment, answers each command
``200 result=1`` and waits for the server to close. Latency runs from the attempt's scheduled
start to that close, so time spent waiting for a free connection counts too.

The baseline, measured in the same run at the same rate, is a bare asyncio TCP echo server in
its own process: connect, send the same environment, read it back, close. The ratio is what
FastAGI parsing, the handler and three command round trips add to the cost of a connection.

Target (docs: DESIGN.md): p99 under 5 ms at 500 call attempts per second.

    .venv/bin/python bench/bench_fastagi.py                      # 100/s and 500/s, 4 s each
    .venv/bin/python bench/bench_fastagi.py --rates 500 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from pbxguard.adapters.fastagi import AgiChannel, FastAgiServer
from pbxguard.adapters.logs import configure_logging
from pbxguard.protocol.agi import AgiEnvironment

LOOPBACK = "127.0.0.1"
MAX_REQUESTS = 20_000  # per rate, whatever --seconds says

ENVIRONMENT = (
    b"agi_network: yes\n"
    b"agi_network_script: authorize\n"
    b"agi_request: agi://127.0.0.1:4573/authorize\n"
    b"agi_channel: PJSIP/2001-0000002a\n"
    b"agi_language: en\n"
    b"agi_type: PJSIP\n"
    b"agi_uniqueid: 1795397584.42\n"
    b"agi_version: 22.5.2\n"
    b"agi_callerid: 2001\n"
    b"agi_calleridname: Staff 2001\n"
    b"agi_callingpres: 0\n"
    b"agi_callingani2: 0\n"
    b"agi_callington: 0\n"
    b"agi_callingtns: 0\n"
    b"agi_dnid: 00441632960123\n"
    b"agi_rdnis: unknown\n"
    b"agi_context: pbxguard-check\n"
    b"agi_extension: s\n"
    b"agi_priority: 6\n"
    b"agi_enhanced: 0.0\n"
    b"agi_accountcode: \n"
    b"agi_threadid: 140536227473088\n"
    b"agi_arg_1: 2001\n"
    b"agi_arg_2: 00441632960123\n"
    b"\n"
)


async def _verdict(env: AgiEnvironment, channel: AgiChannel) -> None:
    await channel.set_variable("PBXGUARD_VERDICT", "deny")
    await channel.set_variable("PBXGUARD_REASON", "international call without approval")
    await channel.set_variable("PBXGUARD_RULE", "LD-2")


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        writer.write(await reader.readuntil(b"\n\n"))
        await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _serve(kind: str, ready: Connection, stop: Connection) -> None:
    loop = asyncio.get_running_loop()
    if kind == "fastagi":
        fastagi = FastAgiServer({"authorize": _verdict}, host=LOOPBACK, port=0)
        ready.send(await fastagi.start())
        await loop.run_in_executor(None, stop.recv)
        await fastagi.close()
        return
    echo = await asyncio.start_server(_echo, LOOPBACK, 0, backlog=1024)
    ready.send(echo.sockets[0].getsockname()[:2])
    await loop.run_in_executor(None, stop.recv)
    echo.close()
    await echo.wait_closed()


def _server_process(kind: str, ready: Connection, stop: Connection) -> None:
    configure_logging("warning", json=True)
    asyncio.run(_serve(kind, ready, stop))


async def _agi_attempt(host: str, port: int) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(ENVIRONMENT)
        while line := await reader.readline():
            if line.startswith(b"failure"):
                raise RuntimeError("the server answered failure")
            writer.write(b"200 result=1\n")
    finally:
        writer.close()


async def _echo_attempt(host: str, port: int) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(ENVIRONMENT)
        await reader.readuntil(b"\n\n")
    finally:
        writer.close()


@dataclass(frozen=True, slots=True)
class Run:
    """Latencies of one workload at one arrival rate."""

    latencies_ms: list[float]
    errors: int
    achieved_rate: float
    queued: int

    def percentile(self, p: float) -> float:
        """Return the p-th percentile latency in milliseconds."""
        if not self.latencies_ms:
            return float("nan")
        if len(self.latencies_ms) == 1:
            return self.latencies_ms[0]
        return statistics.quantiles(self.latencies_ms, n=1000, method="inclusive")[
            round(p * 10) - 1
        ]


async def _drive(
    attempt: Callable[[str, int], Awaitable[None]],
    address: tuple[str, int],
    *,
    rate: float,
    seconds: float,
    concurrency: int,
) -> Run:
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    errors = queued = 0
    total = min(MAX_REQUESTS, max(1, round(rate * seconds)))

    async def one() -> None:
        nonlocal errors, queued
        queued += slots.locked()
        async with slots:
            started = time.perf_counter()
            try:
                await attempt(*address)
            except (OSError, RuntimeError, asyncio.IncompleteReadError):
                errors += 1
                return
            latencies.append((time.perf_counter() - started) * 1000)

    began = loop.time()
    tasks = []
    for i in range(total):
        scheduled = began + i / rate
        if (delay := scheduled - loop.time()) > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    async with asyncio.timeout(seconds + 30):
        await asyncio.gather(*tasks)
    return Run(latencies, errors, total / (loop.time() - began), queued)


def _start(kind: str) -> tuple[BaseProcess, Connection, tuple[str, int]]:
    context = multiprocessing.get_context("spawn")
    ready_recv, ready_send = context.Pipe(duplex=False)
    stop_recv, stop_send = context.Pipe(duplex=False)
    process = context.Process(target=_server_process, args=(kind, ready_send, stop_recv))
    process.start()
    if not ready_recv.poll(30):
        process.terminate()
        raise SystemExit(f"the {kind} server did not start")
    host, port = ready_recv.recv()
    return process, stop_send, (host, port)


def _stop(process: BaseProcess, stop: Connection) -> None:
    stop.send(None)
    process.join(10)
    if process.is_alive():
        process.terminate()
        process.join()


def main() -> int:
    """Run the benchmark and print one line per rate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[100.0, 500.0])
    parser.add_argument("--seconds", type=float, default=4.0, help="duration per rate and kind")
    parser.add_argument("--concurrency", type=int, default=50)
    options = parser.parse_args()

    servers = {kind: _start(kind) for kind in ("echo", "fastagi")}
    try:
        print(
            f"FastAGI verdict (3 x SET VARIABLE) vs TCP echo, loopback, "
            f"<= {options.concurrency} connections, {options.seconds:g} s per rate"
        )
        print(
            f"{'rate':>7} {'requests':>8} {'achieved':>9} {'errors':>6} {'queued':>6}"
            f" {'echo p50':>9} {'echo p99':>9} {'agi p50':>9} {'agi p99':>9} {'p99 ratio':>9}"
        )
        for rate in options.rates:
            runs = {
                kind: asyncio.run(
                    _drive(
                        _echo_attempt if kind == "echo" else _agi_attempt,
                        address,
                        rate=rate,
                        seconds=options.seconds,
                        concurrency=options.concurrency,
                    )
                )
                for kind, (_, _, address) in servers.items()
            }
            echo, agi = runs["echo"], runs["fastagi"]
            print(
                f"{rate:>5g}/s {len(agi.latencies_ms) + agi.errors:>8} "
                f"{agi.achieved_rate:>7.1f}/s {agi.errors + echo.errors:>6} {agi.queued:>6}"
                f" {echo.percentile(50):>7.3f}ms {echo.percentile(99):>7.3f}ms"
                f" {agi.percentile(50):>7.3f}ms {agi.percentile(99):>7.3f}ms"
                f" {agi.percentile(99) / echo.percentile(99):>8.2f}x"
            )
        print("target: FastAGI p99 under 5 ms at 500/s")
    finally:
        for process, stop, _ in servers.values():
            _stop(process, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
