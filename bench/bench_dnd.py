"""Measure FastAGI verdicts at 500/s with a 10-million-number do-not-disturb list, against none.

One run, three parts:

1. **Build.** A child process writes ``--numbers`` random mobile numbers to a text file and
   imports it exactly as ``pbxguard dnd import`` does (`DndStore.import_lines`: classify,
   external sort, merge, atomic swap). Printed: the build time, numbers per second, the list's
   size on disk and the builder's peak RSS.
2. **Verdicts.** Servers in processes of their own answer FastAGI, with the list in force and
   without (the baseline), in two shapes: the pre-dial gate alone (`PreDialGate` and the
   `Guard` over a journal that keeps nothing: the verdict itself, as ``bench_fastagi.py``
   measures it) and the whole daemon (`Daemon` built by `bootstrap.build`: journal, ledger
   writer thread; its AMI pointing at a closed port). Extension 2001 is a promotion line. A
   client plays res_agi at ``--rate`` attempts a second (open loop, one connection per
   attempt) to numbers all unlisted, or half on the list; the workloads take turns for
   ``--rounds`` rounds. Printed: p50/p99 per workload and round, the worst p99 against its
   baseline's, and the verdicts (every listed number refused with the list, none without).
3. **Memory.** Each daemon's RSS after its last round: VmRSS, and how much of it is the list's
   pages (RssFile, the kernel's page cache, shared and reclaimable) against the heap
   (RssAnon). Also the cost of one lookup in process, in microseconds.

Goal (DESIGN.md): FastAGI p99 under 5 ms at 500 call attempts per second.

    .venv/bin/python bench/bench_dnd.py                       # 10 M numbers, 2 rounds of 10 s
    .venv/bin/python bench/bench_dnd.py --numbers 1000000 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import multiprocessing
import random
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

from _fakes import NullFacts, NullNotifier, NullPbx, WallClock
from bench_fastagi import Run, _drive

from pbxguard.adapters.dnd_file import DndStore
from pbxguard.adapters.fastagi import FastAgiServer
from pbxguard.adapters.logs import configure_logging
from pbxguard.adapters.policy_file import LoadedPolicy, load_policy
from pbxguard.adapters.settings import (
    AgiSettings,
    AmiSettings,
    DndSettings,
    LedgerSettings,
    Settings,
)
from pbxguard.app.guard import Guard
from pbxguard.app.predial import PreDialGate
from pbxguard.bootstrap import build
from pbxguard.domain.policy import Line
from pbxguard.entrypoints.daemon import Daemon

SAMPLE = 20_000  # listed numbers the client dials (and as many unlisted ones)


def _numbers(count: int, seed: int) -> Iterator[str]:
    generator = random.Random(seed)
    for _ in range(count):
        # 13x, 15x, 17x, 18x: the list (16x holds premium numbers); the client dials 19x to miss.
        yield f"1{generator.choice('3578')}{generator.randrange(1_000_000_000):09d}"


def _build(directory: str, count: int, report: Connection) -> None:
    configure_logging("warning", json=True)
    work = Path(directory)
    source = work / "dnd.txt"
    started = time.perf_counter()
    with source.open("w", encoding="utf-8") as out:
        out.writelines(f"{n}\n" for n in _numbers(count, seed=1))
    written = time.perf_counter() - started
    policy = load_policy(None).policy
    started = time.perf_counter()
    with source.open(encoding="utf-8") as lines:
        result = DndStore(work / "dnd").import_lines(
            lines, policy.classifier, now=datetime.now(UTC)
        )
    built = time.perf_counter() - started
    source.unlink()
    assert result.info is not None
    report.send(
        {
            "written_s": written,
            "built_s": built,
            "unique": result.unique,
            "size": result.info.size,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _memory(decisions: int) -> dict[str, float]:
    return {
        "rss": _status_mb("VmRSS"),
        "anon": _status_mb("RssAnon"),
        "file": _status_mb("RssFile"),
        "decisions": decisions,
    }


def _promotion_policy() -> LoadedPolicy:
    loaded = load_policy(Path(__file__).parents[1] / "src/pbxguard/policies/reference-site.toml")
    policy = loaded.policy
    lines = {**policy.lines, "2001": Line("2001", "推销线路", promotion=True)}
    return dataclasses.replace(loaded, policy=dataclasses.replace(policy, lines=lines))


class _NoCodes:
    def check(self, code: str, now: datetime, **_: object) -> str | None:
        return None


async def _gate(directory: str, with_list: bool, ready: Connection, control: Connection) -> None:
    """The pre-dial gate alone: the guard's verdict over FastAGI, a journal that keeps nothing."""
    loaded = _promotion_policy()
    numbers = DndStore(Path(directory) / "dnd").open_current() if with_list else None
    clock = WallClock()
    guard = Guard(
        loaded.policy,
        loaded.channels,
        pbx=NullPbx(),
        facts=NullFacts(),
        notifier=NullNotifier(),
        clock=clock,
        dnd=numbers,
    )
    gate = PreDialGate(guard, _NoCodes(), clock)
    server = FastAgiServer(gate.routes, host="127.0.0.1", port=0, max_connections=1024)
    address = await server.start()
    serving = asyncio.create_task(server.serve())
    ready.send((address, len(numbers) if numbers else 0, _status_mb("VmRSS")))
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, control.recv) == "report":
        control.send(_memory(guard.stats.decisions))
    await server.close()
    serving.cancel()


async def _daemon(directory: str, with_list: bool, ready: Connection, control: Connection) -> None:
    """The whole daemon, as `pbxguard run` builds it (its AMI points at a closed port)."""
    work = Path(directory) / ("with-list" if with_list else "without")
    settings = Settings(
        state_dir=str(work / "state"),
        ami=AmiSettings(host="127.0.0.1", port=9, ping_interval=30),
        agi=AgiSettings(port=0, max_connections=1024),
        ledger=LedgerSettings(url=f"sqlite:///{work / 'ledger.sqlite3'}"),
        dnd=DndSettings(dir=str(Path(directory) / "dnd") if with_list else str(work / "none")),
    )
    parts = build(settings, _promotion_policy(), loop=asyncio.get_running_loop())
    stop = asyncio.Event()
    daemon = Daemon(parts)
    task = asyncio.create_task(daemon.run(stop))
    await daemon.started.wait()
    assert parts.agi is not None
    listed = len(parts.dnd) if parts.dnd is not None else 0
    ready.send((parts.agi.address, listed, _status_mb("VmRSS")))
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, control.recv) == "report":
        control.send(_memory(parts.guard.stats.decisions))
    stop.set()
    await task


def _server_process(
    kind: str, directory: str, with_list: bool, ready: Connection, control: Connection
) -> None:
    configure_logging("error", json=True)
    serve = _daemon if kind == "daemon" else _gate
    asyncio.run(serve(directory, with_list, ready, control))


def _environment(number: str, uniqueid: str) -> bytes:
    return (
        "agi_network: yes\nagi_network_script: authorize\n"
        "agi_request: agi://127.0.0.1:4573/authorize\n"
        f"agi_channel: PJSIP/2001-{uniqueid[-8:]}\nagi_language: en\nagi_type: PJSIP\n"
        f"agi_uniqueid: {uniqueid}\nagi_version: 22.5.2\nagi_callerid: 2001\n"
        f"agi_calleridname: Staff 2001\nagi_dnid: {number}\nagi_context: pbxguard-check\n"
        "agi_extension: s\nagi_priority: 6\nagi_enhanced: 0.0\nagi_accountcode: \n"
        f"agi_threadid: 1\nagi_arg_1: 2001\nagi_arg_2: {number}\nagi_arg_3: {uniqueid}\n\n"
    ).encode()


class Caller:
    """Dials listed and unlisted numbers in turn, and counts the verdicts it hears."""

    def __init__(self, listed: list[str], unlisted: list[str]) -> None:
        mixed = [(n, True) for n in listed] + [(n, False) for n in unlisted]
        mixed.sort(key=lambda item: item[0][3:])  # listed and unlisted, shuffled together
        self._numbers = itertools.cycle(mixed)
        self._ids = itertools.count(1)
        self.refused = {True: 0, False: 0}
        self.asked = {True: 0, False: 0}

    async def attempt(self, host: str, port: int) -> None:
        number, listed = next(self._numbers)
        uniqueid = f"1795400000.{next(self._ids)}"
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(_environment(number, uniqueid))
            self.asked[listed] += 1
            while line := await reader.readline():
                if line.startswith(b"failure"):
                    raise RuntimeError("the server answered failure")
                if line.startswith(b'SET VARIABLE PBXGUARD_VERDICT "deny"'):
                    self.refused[listed] += 1
                writer.write(b"200 result=1\n")
        finally:
            writer.close()


def _start_server(
    kind: str, directory: str, with_list: bool
) -> tuple[BaseProcess, Connection, tuple[str, int], int, float]:
    context = multiprocessing.get_context("spawn")
    ready_recv, ready_send = context.Pipe(duplex=False)
    control_here, control_there = context.Pipe()
    process = context.Process(
        target=_server_process, args=(kind, directory, with_list, ready_send, control_there)
    )
    process.start()
    if not ready_recv.poll(120):
        process.terminate()
        raise SystemExit(f"the {kind} server did not start")
    address, listed, rss = ready_recv.recv()
    return process, control_here, tuple(address), listed, rss


def _lookup_us(directory: str, listed: list[str], unlisted: list[str]) -> float:
    numbers = DndStore(Path(directory) / "dnd").open_current()
    assert numbers is not None
    try:
        probes = listed + unlisted
        started = time.perf_counter()
        found = sum(1 for n in probes for _ in range(5) if n in numbers)
        elapsed = time.perf_counter() - started
        assert found == 5 * len(listed)
        return elapsed / (5 * len(probes)) * 1e6
    finally:
        numbers.close()


def main() -> int:
    """Build the list, measure both daemons in turn, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=10_000_000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=100)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-dnd-") as directory:
        context = multiprocessing.get_context("spawn")
        report_recv, report_send = context.Pipe(duplex=False)
        builder = context.Process(target=_build, args=(directory, options.numbers, report_send))
        builder.start()
        built = report_recv.recv()
        builder.join()
        print(
            f"list: {options.numbers:,} numbers written in {built['written_s']:.1f} s; "
            f"imported in {built['built_s']:.1f} s "
            f"({options.numbers / built['built_s']:,.0f} numbers/s), {built['unique']:,} unique, "
            f"{built['size'] / 2**20:.1f} MiB on disk; builder peak RSS "
            f"{built['peak_rss_mb']:.0f} MB"
        )
        listed = list(itertools.islice(_numbers(options.numbers, seed=1), 0, None, max(
            1, options.numbers // SAMPLE)))[:SAMPLE]  # fmt: skip
        unlisted = [f"19{n[2:]}" for n in _numbers(SAMPLE, seed=2)]
        print(f"lookup in process: {_lookup_us(directory, listed, unlisted):.2f} µs per number")

        servers = {
            (kind, with_list): _start_server(kind, directory, with_list)
            for kind in ("gate", "daemon")
            for with_list in (False, True)
        }
        try:
            for (kind, with_list), (_, _, _, count, rss) in servers.items():
                if kind == "daemon":
                    print(
                        f"daemon {'with' if with_list else 'without'} the list: {count:,} numbers "
                        f"in force, {rss:.1f} MB RSS at start"
                    )
            print(
                f"FastAGI at {options.rate:g}/s, {options.seconds:g} s a round, 2001 is a "
                "promotion line"
            )
            print(
                f"{'round':>5} {'workload':>25} {'requests':>8} {'errors':>6} {'p50':>8} "
                f"{'p99':>8} {'refused listed':>15} {'refused other':>14}"
            )
            workloads = [
                # (label, server, listed numbers dialled besides as many unlisted ones)
                ("gate, no list", ("gate", False), listed),
                ("gate, list, all unlisted", ("gate", True), []),
                ("gate, list, half listed", ("gate", True), listed),
                ("daemon, no list", ("daemon", False), listed),
                ("daemon, list, half listed", ("daemon", True), listed),
            ]
            p99: dict[str, list[float]] = {label: [] for label, _, _ in workloads}
            for round_number in range(1, options.rounds + 1):
                for label, server, dialled in workloads:
                    caller = Caller(dialled, unlisted)
                    run: Run = asyncio.run(
                        _drive(
                            caller.attempt,
                            servers[server][2],
                            rate=options.rate,
                            seconds=options.seconds,
                            concurrency=options.concurrency,
                        )
                    )
                    p99[label].append(run.percentile(99))
                    print(
                        f"{round_number:>5} {label:>25} {len(run.latencies_ms) + run.errors:>8} "
                        f"{run.errors:>6} {run.percentile(50):>6.2f}ms "
                        f"{run.percentile(99):>6.2f}ms "
                        f"{caller.refused[True]:>7}/{caller.asked[True]:<7} "
                        f"{caller.refused[False]:>6}/{caller.asked[False]:<7}"
                    )
            worst = {label: max(values) for label, values in p99.items()}
            for label, value in worst.items():
                base = worst[label.split(",")[0] + ", no list"]
                print(f"worst p99 {label:>25}: {value:7.2f} ms ({value / base:.2f}x its baseline)")
            print("goal: p99 < 5 ms at 500/s")
            for (kind, with_list), (_, control, _, _, _) in servers.items():
                control.send("report")
                memory = control.recv()
                print(
                    f"{kind} {'with' if with_list else 'without'} the list after "
                    f"{memory['decisions']:,.0f} decisions: {memory['rss']:.1f} MB RSS = "
                    f"{memory['anon']:.1f} MB heap (RssAnon) + {memory['file']:.1f} MB mapped "
                    "files (RssFile)"
                )
        finally:
            for process, control, *_ in servers.values():
                control.send("stop")
                process.join(30)
                if process.is_alive():
                    process.terminate()
                    process.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
