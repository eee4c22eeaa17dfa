"""Measure pre-dial verdict latency over FastAGI while a flood of idle clients holds connections.

The server under test runs in its own process with the production log set-up (JSON lines at
``info``, written to a temporary file whose lines are counted at the end). A flood process holds
``--idle`` connections that send nothing and ``--half`` that send half an environment and then
nothing, the slowloris pattern that once starved the server of descriptors. When the server
closes one of them (its deadline, the connection cap), the flood opens it again: at once if it
was held for a while, after ``--retry-delay`` if it was turned away at the door, as a client
that backs off after a refusal does. (A client that reconnects in a tight loop is a connect
flood, which only a firewall rate limit stops.) Normal requests come from this process, one
connection per call attempt at ``--rate`` per second (open loop, at most ``--concurrency`` at
once), each answering three ``SET VARIABLE`` commands like res_agi.

Each round measures the same normal load twice against the same server, first alone (the
baseline) and then under the flood, and prints for both: verdicts received, attempts turned
away with ``failure``, p50/p99, the server's worst event-loop stall (how late a 5 ms sleep
woke), its CPU use, how many flood connections were held, and what the server refused and
closed at the deadline; and the load average. Two servers are measured in one run (``--caps``):
one whose connection cap is above the flood, and one with the default cap, which the flood
fills.

Target: normal requests keep p99 under 5 ms while 2,000 idle and 200 half-environment
connections are held open.

    .venv/bin/python bench/bench_fastagi_flood.py
    .venv/bin/python bench/bench_fastagi_flood.py --rounds 1 --seconds 3 --caps 4096
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import errno
import heapq
import json
import multiprocessing
import os
import resource
import selectors
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from bench_fastagi import ENVIRONMENT

from pbxguard.adapters.fastagi import DEFAULT_MAX_CONNECTIONS, AgiChannel, FastAgiServer
from pbxguard.adapters.logs import configure_logging
from pbxguard.protocol.agi import AgiEnvironment

LOOPBACK = "127.0.0.1"
HALF_ENVIRONMENT = ENVIRONMENT[: len(ENVIRONMENT) // 2]
# A flood connection closed sooner than this was turned away at the door, not timed out.
TURNED_AWAY_S = 0.25
# How fast the flood opens its connections at first: the listen backlog (1,024) must not
# overflow, or the kernel drops SYNs and everyone retries a second later.
OPEN_PER_SECOND = 4000


def _raise_nofile(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- the server process --------------------------------------------------------------------


async def _verdict(env: AgiEnvironment, channel: AgiChannel) -> None:
    await channel.set_variable("PBXGUARD_VERDICT", "deny")
    await channel.set_variable("PBXGUARD_REASON", "international call without approval")
    await channel.set_variable("PBXGUARD_RULE", "LD-2")


def _counters(server: FastAgiServer) -> dict[str, float]:
    counters = server.counters()
    fields: dict[str, float] = {name: getattr(counters, name) for name in counters.__slots__}
    fields["cpu_s"] = time.process_time()
    return fields


async def _watch_lag(lags: list[float]) -> None:
    """Record how late the event loop wakes a 5 ms sleep: the server's own stalls."""
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(0.005)
        lags.append(loop.time() - before - 0.005)


async def _serve(max_connections: int, ready: Connection, commands: Connection) -> None:
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    watcher = asyncio.create_task(_watch_lag(lags))
    server = FastAgiServer(
        {"authorize": _verdict}, host=LOOPBACK, port=0, max_connections=max_connections
    )
    ready.send(await server.start())
    received: asyncio.Queue[str] = asyncio.Queue()
    loop.add_reader(commands.fileno(), lambda: received.put_nowait(commands.recv()))
    while await received.get() != "stop":
        fields = _counters(server)
        fields["lag_max_ms"] = max(lags, default=0.0) * 1000
        lags.clear()
        commands.send(fields)
    loop.remove_reader(commands.fileno())
    watcher.cancel()
    await server.close()
    commands.send(_counters(server))


def _server_process(
    max_connections: int, log_path: str, ready: Connection, commands: Connection
) -> None:
    _raise_nofile(8192)
    with Path(log_path).open("w", encoding="utf-8") as log_file:
        sys.stderr = log_file
        configure_logging("info", json=True)
        asyncio.run(_serve(max_connections, ready, commands))


# --- the clients: plain non-blocking sockets, so that they cost the machine little -----------


class _Connecting:
    """A non-blocking connection to the server and when it was opened."""

    __slots__ = ("buffer", "commands", "opened", "sock")

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.opened = time.perf_counter()
        self.buffer = b""
        self.commands = 0
        code = self.sock.connect_ex(address)
        if code not in {0, errno.EINPROGRESS}:
            self.sock.close()
            raise OSError(code, os.strerror(code))

    def connected(self) -> bool:
        return self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0

    def receive(self) -> bytes | None:
        """Return what arrived, ``b""`` once the server has closed it, ``None`` if nothing yet."""
        try:
            return self.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return b""


@dataclass(slots=True)
class FloodStats:
    """What the flood saw since it started."""

    held: int = 0
    opened: int = 0
    turned_away: int = 0
    connect_failed: int = 0
    held_samples: list[int] = field(default_factory=list)


def _flood_process(
    address: tuple[str, int], idle: int, half: int, retry_delay: float, commands: Connection
) -> None:
    """Hold ``idle`` + ``half`` connections open until told to stop."""
    _raise_nofile(idle + half + 1024)
    selector = selectors.DefaultSelector()
    selector.register(commands, selectors.EVENT_READ, None)
    stats = FloodStats()
    began = time.perf_counter()
    # (when to open, what to send once connected), earliest first
    due = [(began + i / OPEN_PER_SECOND, b"") for i in range(idle)]
    due += [(began + (idle + i) / OPEN_PER_SECOND, HALF_ENVIRONMENT) for i in range(half)]
    heapq.heapify(due)
    next_sample = began
    commands.send("started")
    while True:
        now = time.perf_counter()
        while due and due[0][0] <= now:
            _, data = heapq.heappop(due)
            try:
                link = _Connecting(address)
            except OSError:
                stats.connect_failed += 1
                heapq.heappush(due, (now + retry_delay, data))
                continue
            selector.register(link.sock, selectors.EVENT_WRITE, (link, data))
        if now >= next_sample:
            stats.held_samples.append(stats.held)
            next_sample = now + 0.1
        timeout = min(due[0][0] - now if due else 0.1, next_sample - now)
        for key, _ in selector.select(max(timeout, 0)):
            if key.data is None:
                command = commands.recv()
                if command == "stop":
                    _report_flood(commands, stats)
                    return
                stats.held_samples.clear()
                commands.send(None)
                continue
            link, data = key.data
            if key.events == selectors.EVENT_WRITE:
                if not link.connected():
                    selector.unregister(link.sock)
                    link.sock.close()
                    stats.connect_failed += 1
                    heapq.heappush(due, (time.perf_counter() + retry_delay, data))
                    continue
                stats.held += 1
                stats.opened += 1
                if data:
                    link.sock.send(data)
                selector.modify(link.sock, selectors.EVENT_READ, key.data)
            elif link.receive() == b"":
                # The server closed it (the deadline, or the cap): open another.
                selector.unregister(link.sock)
                link.sock.close()
                stats.held -= 1
                now = time.perf_counter()
                if now - link.opened < TURNED_AWAY_S:
                    stats.turned_away += 1
                    heapq.heappush(due, (now + retry_delay, data))
                else:
                    heapq.heappush(due, (now, data))


def _report_flood(commands: Connection, stats: FloodStats) -> None:
    samples = stats.held_samples or [0]
    commands.send(
        {
            "held_min": min(samples),
            "held_mean": round(statistics.fmean(samples)),
            "opened": stats.opened,
            "turned_away": stats.turned_away,
            "connect_failed": stats.connect_failed,
        }
    )


# --- normal requests, from this process ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    """Latencies of the normal requests of one measurement."""

    latencies_ms: list[float]
    turned_away: int
    errors: int
    queued: int

    def percentile(self, p: float) -> float:
        """Return the p-th percentile latency in milliseconds."""
        if len(self.latencies_ms) < 2:
            return self.latencies_ms[0] if self.latencies_ms else float("nan")
        return statistics.quantiles(self.latencies_ms, n=1000, method="inclusive")[
            round(p * 10) - 1
        ]


def _drive(address: tuple[str, int], *, rate: float, seconds: float, concurrency: int) -> Run:
    """Play res_agi for ``rate`` call attempts a second, one connection each (open loop).

    Each attempt sends the environment, answers every command ``200 result=1`` and ends when
    the server closes; its latency runs from the connect to that close. An attempt that finds
    ``concurrency`` others in flight waits for one to end, and the wait counts as ``queued``.
    """
    selector = selectors.DefaultSelector()
    latencies: list[float] = []
    turned_away = errors = queued = 0
    total = max(1, round(rate * seconds))
    began = time.perf_counter()
    started = 0
    waiting = 0
    in_flight = 0
    while started < total or waiting or in_flight:
        now = time.perf_counter()
        while started < total and began + started / rate <= now:
            started += 1
            waiting += 1
        queued += waiting > 0 and in_flight >= concurrency
        while waiting and in_flight < concurrency:
            waiting -= 1
            try:
                link = _Connecting(address)
            except OSError:
                errors += 1
                continue
            in_flight += 1
            selector.register(link.sock, selectors.EVENT_WRITE, link)
        timeout = began + started / rate - now if started < total else 0.05
        for key, _ in selector.select(max(timeout, 0)):
            link = key.data
            if key.events == selectors.EVENT_WRITE:
                if link.connected():
                    link.sock.send(ENVIRONMENT)
                    selector.modify(link.sock, selectors.EVENT_READ, link)
                    continue
                outcome = "error"
            else:
                data = link.receive()
                if data is None:
                    continue
                if data:
                    link.buffer += data
                    *lines, link.buffer = link.buffer.split(b"\n")
                    for line in lines:
                        if line.startswith(b"failure"):
                            link.commands = -1
                        elif link.commands >= 0:
                            link.commands += 1
                            link.sock.send(b"200 result=1\n")
                    continue
                outcome = "served" if link.commands == 3 else "turned away"
            selector.unregister(link.sock)
            link.sock.close()
            in_flight -= 1
            if outcome == "served":
                latencies.append((time.perf_counter() - link.opened) * 1000)
            elif outcome == "error":
                errors += 1
            else:
                turned_away += 1
    return Run(latencies, turned_away, errors, queued)


# --- orchestration -------------------------------------------------------------------------


def _spawn(target: Any, *args: Any) -> tuple[BaseProcess, Connection]:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=target, args=(*args, theirs), daemon=True)
    process.start()
    return process, ours


def _ask(pipe: Connection, command: str, timeout: float = 30) -> Any:
    pipe.send(command)
    if not pipe.poll(timeout):
        raise SystemExit(f"no answer to {command!r}")
    return pipe.recv()


def _end(process: BaseProcess) -> None:
    process.join(15)
    if process.is_alive():
        process.terminate()
        process.join()


@contextlib.contextmanager
def _server(max_connections: int, log_path: str) -> Iterator[tuple[Any, Connection]]:
    context = multiprocessing.get_context("spawn")
    ready_recv, ready_send = context.Pipe(duplex=False)
    process, commands = _spawn(_server_process, max_connections, log_path, ready_send)
    try:
        if not ready_recv.poll(30):
            raise SystemExit("the FastAGI server did not start")
        yield ready_recv.recv(), commands
    finally:
        if process.is_alive():
            commands.send("stop")
            if commands.poll(15):
                commands.recv()
        _end(process)


def _settle(commands: Connection, timeout: float) -> None:
    """Wait until the server holds no connection (the flood's have reached their deadline)."""
    deadline = time.monotonic() + timeout
    while _ask(commands, "counters")["active"] > 0 and time.monotonic() < deadline:
        time.sleep(0.1)


@dataclass(frozen=True, slots=True)
class Measurement:
    """Normal requests measured once, with what the server did meanwhile."""

    run: Run
    server: dict[str, float]
    flood: dict[str, int] | None = None

    def line(self, label: str) -> str:
        """Format one row of the table."""
        run, server = self.run, self.server
        held = f"{self.flood['held_min']}/{self.flood['held_mean']}" if self.flood else "-"
        return (
            f"{label:<8} {len(run.latencies_ms):>6} {run.turned_away:>6} {run.errors:>4}"
            f" {run.queued:>6}"
            f" {run.percentile(50):>7.2f}ms {run.percentile(99):>7.2f}ms"
            f" {server['lag_max_ms']:>7.1f}ms {server['cpu_pct']:>4.0f}%"
            f" {held:>9} {server['refused']:>6.0f} {server['timed_out']:>6.0f}"
        )


def _measure(
    address: tuple[str, int], commands: Connection, options: argparse.Namespace
) -> tuple[Run, dict[str, float]]:
    before = _ask(commands, "counters")
    began = time.monotonic()
    run = _drive(
        address, rate=options.rate, seconds=options.seconds, concurrency=options.concurrency
    )
    after = _ask(commands, "counters")
    wall = time.monotonic() - began
    server = {
        "lag_max_ms": after["lag_max_ms"],
        "cpu_pct": 100 * (after["cpu_s"] - before["cpu_s"]) / wall,
        "refused": after.get("refused", 0) - before.get("refused", 0),
        "timed_out": after["timed_out"] - before["timed_out"],
    }
    return run, server


def _measure_flooded(
    address: tuple[str, int], commands: Connection, options: argparse.Namespace
) -> Measurement:
    process, flood = _spawn(
        _flood_process, address, options.idle, options.half, options.retry_delay
    )
    try:
        if not flood.poll(30) or flood.recv() != "started":
            raise SystemExit("the flood did not start")
        target = options.idle + options.half
        # Let every flood connection try once (and a few deadlines pass) before measuring.
        deadline = time.monotonic() + target / OPEN_PER_SECOND + 2.0
        while time.monotonic() < deadline:
            time.sleep(0.1)
        _ask(flood, "reset")
        run, server = _measure(address, commands, options)
        seen = _ask(flood, "stop")
    finally:
        _end(process)
    return Measurement(run, server, seen)


def main() -> int:
    """Run the benchmark and print one block per connection cap."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=2000, help="idle flood connections")
    parser.add_argument("--half", type=int, default=200, help="half-environment connections")
    parser.add_argument("--rate", type=float, default=500.0, help="normal call attempts per s")
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--retry-delay", type=float, default=1.0)
    parser.add_argument(
        "--caps",
        type=int,
        nargs="+",
        default=[4096, DEFAULT_MAX_CONNECTIONS],
        help="max_connections of the servers to measure (default: 4096, and the default)",
    )
    options = parser.parse_args()
    _raise_nofile(4096)

    print(
        f"FastAGI verdicts (3 x SET VARIABLE) at {options.rate:g}/s, <= {options.concurrency}"
        f" at once, {options.seconds:g} s per measurement; flood: {options.idle} idle +"
        f" {options.half} half-environment connections, from a process of its own"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for cap in options.caps:
            log_path = os.path.join(tmp, f"server-{cap}.log")
            fits = "above" if cap > options.idle + options.half else "below"
            print(f"\nmax_connections={cap} ({fits} the flood)")
            print(
                f"{'round':<5} {'load':>4} {'':<8} {'verdicts':>6} {'turned':>6} {'err':>4}"
                f" {'queued':>6}"
                f" {'p50':>9} {'p99':>9} {'loop lag':>9} {'cpu':>5} {'held':>9}"
                f" {'refused':>6} {'timed out':>6}"
            )
            alone_p99: list[float] = []
            flooded_p99: list[float] = []
            with _server(cap, log_path) as (address, commands):
                for round_no in range(1, options.rounds + 1):
                    _settle(commands, 10)
                    alone = Measurement(*_measure(address, commands, options))
                    flooded = _measure_flooded(address, commands, options)
                    load = os.getloadavg()[0]
                    print(f"{round_no:<5} {load:>4.1f} {alone.line('alone')}")
                    print(f"{'':<5} {'':>4} {flooded.line('flooded')}")
                    alone_p99.append(alone.run.percentile(99))
                    flooded_p99.append(flooded.run.percentile(99))
            events = collections.Counter(
                json.loads(line).get("event", "?")
                for line in Path(log_path).read_text("utf-8").splitlines()
                if line.startswith("{")
            )
            print(
                f"median p99: alone {statistics.median(alone_p99):.2f} ms,"
                f" flooded {statistics.median(flooded_p99):.2f} ms;"
                f" server log: {sum(events.values())} lines {dict(events.most_common(4))}"
            )
    print("\ntarget: p99 under 5 ms under the flood, with max_connections above it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
