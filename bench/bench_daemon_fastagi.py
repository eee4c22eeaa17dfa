"""Measure pre-dial verdicts of the whole daemon: ``pbxguard run`` driven over FastAGI by a PBX.

The daemon runs as a process of its own, exactly as installed: the reference-site policy, a
settings file in a temporary directory, its write-ahead journal and its SQLite ledger (or a
throwaway PostgreSQL with ``--postgres``), logging JSON lines at ``info`` to a file, and an AMI
session to a minimal AMI server in this process (login, resync, Ping), so that it runs normally.

A client in this process plays res_agi for ``--rates`` call attempts a second (open loop: an
attempt starts at its scheduled time whatever the others are doing). Each attempt opens a
connection, writes the environment as res_agi does (one ``write`` per line, the arguments the
shipped dialplan passes: caller and number), answers every command ``200 result=1`` as Asterisk
22 does, and ends when the server closes. Latency runs from the attempt's *scheduled* start to
that close, so a client that falls behind shows as latency too (its own lateness is printed
beside it). The mix is 17 allowed attempts in 20 (local, mobile, internal, a head's long
distance, the hotline's long distance, an emergency number) and 3 refused offences (LD-2,
PR-1, EM-1); every verdict the daemon sets is checked against the one expected.

The baseline, measured in the same round at the same rate with the same client, is a trivial
asyncio FastAGI server in a process of its own: it reads the environment and sets the same four
variables. The difference is what judging, writing ahead and logging cost.

After each rate the client waits for the journal to drain, then prints the daemon's CPU per
verdict (every thread: the event loop, the journal's sync thread, the ledger writer), how many
decision rows reached the ledger against the verdicts given (cumulative; no loss means equal),
and the journal's backlog: its peak during the rate and how long it took to drain.

Goals (2 cores): p99 < 5 ms at 500/s; the highest rate with p99 < 5 ms at least 1,000/s; the
ledger keeps up with 1,000 verdicts/s with no loss.

    .venv/bin/python bench/bench_daemon_fastagi.py                  # 3 rounds, 4 rates, 5 s each
    .venv/bin/python bench/bench_daemon_fastagi.py --rounds 1 --seconds 2 --rates 200 500
    .venv/bin/python bench/bench_daemon_fastagi.py --postgres
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from _daemon import (
    REPOSITORY,
    Daemon,
    IdleAmi,
    cpu_seconds,
    free_port,
    journal_state,
    ledger_rows,
    load,
    percentile,
    wait_drained,
)

sys.path.insert(0, str(REPOSITORY))
from tests.support.agi_client import environment_bytes, parse_agi_args

GOAL_MS = 5.0
# (caller, number, expected verdict): 17 allowed, 3 refused offences in every 20 attempts.
MIX: tuple[tuple[str, str, str], ...] = (
    *[("2001", "02112345678", "allow")] * 4,
    *[("2002", "13800138000", "allow")] * 3,
    *[("2003", "2002", "allow")] * 3,
    *[("9001", "01087654321", "allow")] * 2,
    *[("8001", "02787654321", "allow")] * 2,
    *[("2003", "02112345678", "allow")] * 2,
    ("2001", "110", "allow"),
    ("2001", "00441632960123", "deny"),
    ("2002", "16812345678", "deny"),
    ("8000", "13800138000", "deny"),
)
REFUSED_SHARE = sum(1 for *_, v in MIX if v == "deny") / len(MIX)


# --- the baseline server --------------------------------------------------------------------


async def _trivial_agi(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\n\n")
        for name, value in (
            ("PBXGUARD_VERDICT", "allow"),
            ("PBXGUARD_RULE", ""),
            ("PBXGUARD_REASON", "local call"),
            ("PBXGUARD_REASON_ZH", "本地电话"),
        ):
            writer.write(f'SET VARIABLE {name} "{value}"\n'.encode())
            await reader.readline()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _serve_baseline() -> None:
    server = await asyncio.start_server(_trivial_agi, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    server.close()


@contextlib.contextmanager
def baseline_server() -> Iterator[tuple[int, int]]:
    """Start the trivial FastAGI server in a process of its own; yield its port and pid."""
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve-baseline"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline()), process.pid
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(10)


# --- the client -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Attempt:
    sock: socket.socket
    scheduled: float
    expected: str | None
    lines: list[bytes]
    connected: bool = False
    buffer: bytes = b""
    verdict: str | None = None
    failed: bool = False


@dataclass(slots=True)
class Run:
    """What one rate did against one server."""

    latencies_ms: list[float] = field(default_factory=list)
    lateness_ms: list[float] = field(default_factory=list)
    attempts: int = 0
    errors: int = 0
    failures: int = 0
    wrong: int = 0
    refused: int = 0
    seconds: float = 0.0

    @property
    def answered(self) -> int:
        """Attempts that got a verdict."""
        return len(self.latencies_ms)

    def p(self, q: float) -> float:
        """The q-th percentile latency in ms."""
        return percentile(self.latencies_ms, q)


def _environment_lines(port: int, uid: str, caller: str, number: str) -> list[bytes]:
    env = environment_bytes(
        port=port,
        callerid=caller,
        calleridname=f"Staff {caller}",
        extension=number,
        context="pbxguard-check",
        uniqueid=uid,
        channel=f"PJSIP/{caller}-{int(uid.rsplit('.', 1)[1]):08x}",
        args=(caller, number),
    )
    return env.splitlines(keepends=True)


def drive(
    port: int,
    *,
    rate: float,
    seconds: float,
    uid_base: int,
    check: bool,
    one_write: bool = False,
    every_100ms: Callable[[], None] | None = None,
) -> Run:
    """Play res_agi at ``rate`` attempts a second for ``seconds`` (open loop)."""
    selector = selectors.DefaultSelector()
    run = Run()
    total = max(1, round(rate * seconds))
    environments = [
        _environment_lines(port, f"{uid_base}.{i}", caller, number)
        for i, (caller, number, _) in ((i, MIX[i % len(MIX)]) for i in range(total))
    ]
    began = time.perf_counter() + 0.005
    started = in_flight = 0
    next_sample = began
    while started < total or in_flight:
        now = time.perf_counter()
        while started < total and began + started / rate <= now:
            scheduled = began + started / rate
            expected = MIX[started % len(MIX)][2] if check else None
            lines = environments[started]
            started += 1
            run.lateness_ms.append((now - scheduled) * 1000)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            code = sock.connect_ex(("127.0.0.1", port))
            if code not in (0, errno.EINPROGRESS):
                sock.close()
                run.errors += 1
                continue
            selector.register(
                sock, selectors.EVENT_WRITE, _Attempt(sock, scheduled, expected, lines)
            )
            in_flight += 1
        if every_100ms is not None and now >= next_sample:
            every_100ms()
            next_sample = now + 0.1
        wait = began + started / rate - now if started < total else 0.05
        for key, _ in selector.select(max(0.0, min(wait, 0.05))):
            attempt: _Attempt = key.data
            sock = attempt.sock
            if not attempt.connected:
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    outcome = "error"
                else:
                    attempt.connected = True
                    try:
                        if one_write:
                            sock.send(b"".join(attempt.lines))
                        else:
                            for line in attempt.lines:  # res_agi: one write(2) per line
                                sock.send(line)
                    except OSError:
                        outcome = "error"
                    else:
                        selector.modify(sock, selectors.EVENT_READ, attempt)
                        continue
            else:
                try:
                    data = sock.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if data:
                    attempt.buffer += data
                    *lines, attempt.buffer = attempt.buffer.split(b"\n")
                    for line in lines:
                        if line.startswith(b"failure"):
                            attempt.failed = True
                            continue
                        words = parse_agi_args(line.decode())
                        if words[:3] == ["SET", "VARIABLE", "PBXGUARD_VERDICT"] and len(words) > 3:
                            attempt.verdict = words[3]
                        with contextlib.suppress(OSError):
                            sock.send(b"200 result=1\n")
                    continue
                outcome = "failure" if attempt.failed or attempt.verdict is None else "served"
            selector.unregister(sock)
            sock.close()
            in_flight -= 1
            if outcome == "served":
                run.latencies_ms.append((time.perf_counter() - attempt.scheduled) * 1000)
                run.refused += attempt.verdict == "deny"
                if attempt.expected is not None and attempt.verdict != attempt.expected:
                    run.wrong += 1
            elif outcome == "failure":
                run.failures += 1
            else:
                run.errors += 1
    run.attempts = total
    run.seconds = time.perf_counter() - began
    return run


# --- orchestration --------------------------------------------------------------------------


def _py_spy(
    directory: str | None, pid: int, name: str, seconds: float
) -> subprocess.Popen[bytes] | None:
    """Sample ``pid`` with py-spy for ``seconds`` (all threads, idle ones left out)."""
    if directory is None:
        return None
    Path(directory).mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            str(Path(sys.executable).with_name("py-spy")),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            "250",
            *(["--gil"] if os.environ.get("PBXGUARD_BENCH_GIL") else []),
            "--format",
            "raw",
            "--threads",
            "--output",
            f"{directory}/{name}.txt",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def ledger_database(postgres: bool) -> Iterator[str | None]:
    """Yield a PostgreSQL ledger URL (a throwaway cluster), or None for the SQLite default."""
    if not postgres:
        yield None
        return
    from tests.support.postgres import PostgresCluster

    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster.url(cluster.create_database())
    finally:
        cluster.destroy()


def main() -> int:
    """Run the benchmark and print one block per round."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[200.0, 500.0, 1000.0, 2000.0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per rate and server")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", action="store_true", help="ledger on PostgreSQL 15")
    parser.add_argument(
        "--one-write", action="store_true", help="send the environment in one write, not per line"
    )
    parser.add_argument(
        "--py-spy",
        metavar="DIR",
        help="sample the daemon with py-spy during each rate (DIR/<rate>.txt, collapsed stacks)",
    )
    parser.add_argument("--serve-baseline", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve_baseline:
        asyncio.run(_serve_baseline())
        return 0

    with (
        tempfile.TemporaryDirectory(prefix="bench-daemon-agi-") as tmp,
        IdleAmi() as ami,
        ledger_database(options.postgres) as url,
        baseline_server() as (baseline_port, baseline_pid),
    ):
        daemon = Daemon(Path(tmp), ami_port=ami.port, agi_port=free_port(), ledger_url=url)
        daemon.start()
        try:
            daemon.wait_for_agi()
            deadline = time.monotonic() + 30
            while ami.logins < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            backend = "PostgreSQL" if options.postgres else "SQLite"
            print(
                f"pbxguard run (reference-site policy, {backend} ledger, journal sync=group, "
                f"log info to a file) vs a trivial asyncio FastAGI server; res_agi client, "
                f"open loop, {options.seconds:g} s per rate; mix {1 - REFUSED_SHARE:.0%} allowed, "
                f"{REFUSED_SHARE:.0%} refused offences"
            )
            # Warm-up: imports, caches, the ledger's first transactions.
            drive(daemon.agi_port, rate=200, seconds=1.0, uid_base=1796000000, check=True)
            wait_drained(daemon.journal, 30)
            best = [
                _round(round_no, options, daemon, (baseline_port, baseline_pid))
                for round_no in range(1, options.rounds + 1)
            ]
            rounds = ", ".join(f"{b:g}/s" if b else "none" for b in best)
            print(f"\nhighest rate with p99 < {GOAL_MS:g} ms, per round: {rounds}")
            print(
                "goals: p99 < 5 ms at 500/s; highest rate under 5 ms >= 1,000/s; "
                "decision rows = verdicts (no loss)"
            )
        finally:
            status = daemon.stop()
            events = daemon.log_events()
            print(f"daemon: {daemon.stalls()}")
            print(
                f"daemon exit status {status}; log: {sum(events.values())} lines "
                f"{dict(events.most_common(5))}"
            )
    return 0


def _round(
    round_no: int, options: argparse.Namespace, daemon: Daemon, baseline: tuple[int, int]
) -> float:
    baseline_port, baseline_pid = baseline
    print(f"\nround {round_no}, load average {load()}")
    print(
        f"{'rate':>6} {'sent':>6} {'ok':>6} {'fail':>4} {'err':>4} {'wrong':>5}"
        f" {'base p50':>8} {'p99':>6} {'daemon p50':>10} {'p99':>6} {'max':>6} {'x p99':>6}"
        f" {'late p99':>8} {'cpu/verdict':>11} {'rows/given':>15} {'peak':>5} {'drain':>6}"
    )
    best = 0.0
    for index, rate in enumerate(options.rates):
        base_cpu = cpu_seconds(baseline_pid)
        base = drive(
            baseline_port,
            rate=rate,
            seconds=options.seconds,
            uid_base=1797000000 + round_no * 100 + index,
            check=False,
            one_write=options.one_write,
        )
        base_cpu = (cpu_seconds(baseline_pid) - base_cpu) / max(base.answered, 1)
        peak = 0

        def sample() -> None:
            nonlocal peak
            last, done = journal_state(daemon.journal)
            peak = max(peak, last - done)

        cpu_before = daemon.cpu_seconds()
        threads_before = daemon.thread_cpu()
        waited_before = daemon.run_queue_wait()
        began = time.monotonic()
        spy = _py_spy(options.py_spy, daemon.pid, f"r{round_no}-{rate:g}", options.seconds)
        run = drive(
            daemon.agi_port,
            rate=rate,
            seconds=options.seconds,
            uid_base=1798000000 + round_no * 100 + index,
            check=True,
            one_write=options.one_write,
            every_100ms=sample,
        )
        sample()
        if spy is not None:
            spy.wait(30)
        drained, waited = wait_drained(daemon.journal, 60)
        cpu = daemon.cpu_seconds() - cpu_before
        split = daemon.cpu_split(threads_before, max(run.answered, 1))
        runnable = (daemon.run_queue_wait() - waited_before) / (time.monotonic() - began)
        # Every verdict the daemon gave (its log says which) must be in the ledger, with an
        # offence for each refusal; a verdict given too late for the client counts too.
        given = daemon.log_lines("pre-dial verdict")
        refused = sum(1 for line in given if line.get("verdict") == "deny")
        rows = ledger_rows(daemon.ledger_url, "decisions", "layer = 'agi'")
        offences = ledger_rows(daemon.ledger_url, "offences")
        p99 = run.p(99)
        if p99 < GOAL_MS:
            best = max(best, rate)
        # A verdict is written ahead before it is answered and logged after: a request that
        # timed out in between has its row and no log line.
        lost = "" if rows >= len(given) and offences >= refused else " LOSS"
        drain = f"{waited:.2f}s" if drained else "never"
        print(
            f"{rate:>4g}/s {run.attempts:>6} {run.answered:>6} {run.failures:>4} {run.errors:>4}"
            f" {run.wrong:>5} {base.p(50):>6.2f}ms {base.p(99):>6.2f}"
            f" {run.p(50):>8.2f}ms {p99:>6.2f} {max(run.latencies_ms, default=0):>6.1f}"
            f" {p99 / base.p(99):>5.1f}x {percentile(run.lateness_ms, 99):>6.2f}ms"
            f" {cpu / max(run.answered, 1) * 1e6:>8.0f} µs"
            f" {rows:>7}/{len(given):<7} {peak:>5} {drain:>6}"
            f"{lost}"
        )
        print(
            f"{'':>7}CPU per verdict by thread: {split}; the baseline server's CPU per attempt:"
            f" {base_cpu * 1e6:.0f} µs"
        )
        print(
            f"{'':>7}the event loop waited, ready to run, for a CPU the machine's other work"
            f" held: {runnable:.0%} of the time"
        )
    return best


if __name__ == "__main__":
    sys.exit(main())
