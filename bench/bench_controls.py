"""Measure the pre-dial verdict with budgets, velocity locks and country lists, against none.

Two FastAGI servers run the real pre-dial gate (`PreDialGate` over a `Guard`, the journal,
notifier and PBX left out), each in its own process as beside a real Asterisk:

- ``plain``: the reference site's policy with no controls at all;
- ``controls``: the same site with 600 people in 20 departments, monthly budgets per person,
  per department, per line and company-wide (money and minutes), country lists for every
  department, a working-hours rule, the fraud-sized velocity rule and a cap on simultaneous
  international calls; the month's spend preloaded (12,000 ledger lines), 60 extensions
  locked and 150 answered calls live on the tracker (budgets count what they cost so far).

A client in this process plays res_agi as ``bench_fastagi.py`` does: one connection per call
attempt at a fixed arrival rate (open loop, at most ``--concurrency`` at once), latency from
the attempt's scheduled start to the server's close. Callers and numbers rotate over the
people and a mix of local, mobile, long-distance and international numbers, so verdicts are
allowed and refused, locks fire and budgets are looked up. Both servers get the same attempts
in the same run, taking turns every ``--block`` seconds (half a second by default: a burst of
load from elsewhere on the machine falls on both alike). The servers' CPU time per verdict is
printed too: on a shared machine it moves less than the latencies.

Target (docs: DESIGN.md): p99 under 5 ms at 500 call attempts per second.

    .venv/bin/python bench/bench_controls.py                    # 500/s, 4 s per server
    .venv/bin/python bench/bench_controls.py --rates 100 500 --seconds 6
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import multiprocessing
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

LOOPBACK = "127.0.0.1"
MAX_REQUESTS = 20_000
PEOPLE = 600
DEPARTMENTS = 20
NUMBERS = (
    "00441632960123",  # United Kingdom
    "004930123456",  # Germany
    "0033123456789",  # France
    "0012025550123",  # United States
    "02787654321",  # Wuhan
    "13800138000",  # mobile
    "62345678",  # local
    "0085223456789",  # Hong Kong
)


def extension_of(index: int) -> str:
    return f"{3000 + index}"


def _policy(with_controls: bool) -> tuple[object, object]:
    """Return the benchmark site's policy and channel plan, with or without controls."""
    from importlib import resources

    from pbxguard.adapters.countries import country_book
    from pbxguard.adapters.policy_file import load_policy
    from pbxguard.domain.numbers import NumberClass
    from pbxguard.domain.policy import (
        Audience,
        Budget,
        BudgetScope,
        BudgetUnit,
        CountryList,
        HoursRule,
        Person,
        SimultaneousRule,
        VelocityRule,
    )

    path = resources.files("pbxguard.policies").joinpath("reference-site.toml")
    loaded = load_policy(str(path))
    policy = loaded.policy
    people = dict(policy.people)
    for index in range(PEOPLE):
        person_id = f"p-{index}"
        people[person_id] = Person(
            person_id,
            f"Person {index}",
            f"dept-{index % DEPARTMENTS}",
            "department_head" if index % 3 else "staff",
            (extension_of(index),),
        )
    base = dataclasses.replace(policy, people=people, velocity=(), durations=())
    if not with_controls:
        return base, loaded.channels
    intl = frozenset({NumberClass.INTERNATIONAL})
    budgets = (
        Budget("intl-person", BudgetScope.PERSON, BudgetUnit.MONEY, Decimal(300), classes=intl),
        Budget("dept-total", BudgetScope.DEPARTMENT, BudgetUnit.MONEY, Decimal(5000)),
        Budget(
            "line-minutes",
            BudgetScope.LINE,
            BudgetUnit.MINUTES,
            Decimal(900),
            who=frozenset(extension_of(i) for i in range(0, PEOPLE, 2)),
        ),
        Budget(
            "company-intl",
            BudgetScope.COMPANY,
            BudgetUnit.MONEY,
            Decimal(100_000),
            classes=intl,
            all_sites=True,
        ),
    )
    allowed = [frozenset({"44", "49"}), frozenset({"44", "49", "33", "1"})]
    by_department = [
        CountryList(Audience(departments=frozenset({f"dept-{d}"})), allow=allowed[d % 2])
        for d in range(DEPARTMENTS)
    ]
    lists = (*by_department, CountryList(Audience(), deny=frozenset({"882", "883"})))
    controlled = dataclasses.replace(
        base,
        budgets=budgets,
        country_lists=lists,
        countries=country_book(),
        hours=(
            HoursRule(
                "working_hours",
                frozenset({NumberClass.DOMESTIC_LD}),
                label_zh="工作时间",
                label_en="working hours",
            ),
        ),
        velocity=(VelocityRule("international-burst", intl),),
        simultaneous=(SimultaneousRule("international-at-once", intl, max_calls=5000),),
    )
    return controlled, loaded.channels


def _preload(guard: object, now: datetime) -> None:
    """Give the controls a month of spend, some locks and live answered calls."""
    from pbxguard.domain.budgets import SpendLine
    from pbxguard.domain.call_events import ChannelCreated, DialBegan, DialEnded
    from pbxguard.domain.locks import extension_lock
    from pbxguard.domain.numbers import NumberClass
    from pbxguard.domain.policy import VelocityRule

    month = now.strftime("%Y-%m")
    lines = [
        SpendLine(
            month=month,
            person_id=f"p-{index}",
            department=f"dept-{index % DEPARTMENTS}",
            extension=extension_of(index),
            number_class=number_class,
            charge=Decimal("3.30"),
            talk=timedelta(minutes=2),
        )
        for index in range(PEOPLE)
        for number_class in ("local", "mobile", "domestic_ld", "international")
        for _ in range(5)
    ]
    guard.load_spend(lines, foreign=False)  # type: ignore[attr-defined]
    policy = guard.policy  # type: ignore[attr-defined]
    rule = VelocityRule("bench", frozenset({NumberClass.INTERNATIONAL}))
    locks = [
        extension_lock(policy, rule, extension_of(i), f"p-{i}", now) for i in range(0, 600, 10)
    ]
    guard.load_locks(locks, ())  # type: ignore[attr-defined]
    for index in range(150):
        extension = extension_of(index * 3 + 1)
        phone = f"PJSIP/{extension}-{index:08x}"
        trunk = f"Local/{NUMBERS[index % 2]}@pstn-{index:08x};1"
        uid = f"1795700000.{index}"
        guard.handle(ChannelCreated(now, phone, uid, uid, extension, "", NUMBERS[index % 2]))  # type: ignore[attr-defined]
        guard.handle(  # type: ignore[attr-defined]
            DialBegan(
                now, phone, uid, uid, extension, "", NUMBERS[index % 2], trunk, uid + "1",
                f"{NUMBERS[index % 2]}@pstn",
            )
        )  # fmt: skip
        guard.handle(DialEnded(now, phone, uid, trunk, "ANSWER"))  # type: ignore[attr-defined]


class _NoCodes:
    def check(self, code: str, now: datetime, **_: object) -> str | None:
        return None


async def _serve(kind: str, ready: Connection, stop: Connection) -> None:
    from _fakes import NullFacts, NullNotifier, NullPbx, WallClock

    from pbxguard.adapters.fastagi import FastAgiServer
    from pbxguard.app.guard import Guard
    from pbxguard.app.predial import PreDialGate

    policy, channels = _policy(kind == "controls")
    clock = WallClock()
    guard = Guard(
        policy,  # type: ignore[arg-type]
        channels,  # type: ignore[arg-type]
        pbx=NullPbx(),
        facts=NullFacts(),
        notifier=NullNotifier(),
        clock=clock,
    )
    if kind == "controls":
        _preload(guard, clock.now())
    gate = PreDialGate(guard, _NoCodes(), clock)
    server = FastAgiServer(gate.routes, host=LOOPBACK, port=0)
    ready.send(await server.start())
    cpu = time.process_time()
    await asyncio.get_running_loop().run_in_executor(None, stop.recv)
    cpu = time.process_time() - cpu
    stats = guard.stats
    await server.close()
    stop.send((stats.decisions, len(guard.tracker.controls.locks.locks), cpu))


def _server_process(kind: str, ready: Connection, stop: Connection) -> None:
    from pbxguard.adapters.logs import configure_logging

    configure_logging("error", json=True)
    asyncio.run(_serve(kind, ready, stop))


def _environment(extension: str, number: str, uniqueid: str) -> bytes:
    return (
        "agi_network: yes\n"
        "agi_network_script: authorize\n"
        "agi_request: agi://127.0.0.1:4573/authorize\n"
        f"agi_channel: PJSIP/{extension}-0000002a\n"
        "agi_language: en\n"
        "agi_type: PJSIP\n"
        f"agi_uniqueid: {uniqueid}\n"
        "agi_version: 22.5.2\n"
        f"agi_callerid: {extension}\n"
        "agi_calleridname: Bench\n"
        f"agi_dnid: {number}\n"
        "agi_context: pbxguard-check\n"
        "agi_extension: s\n"
        "agi_priority: 6\n"
        f"agi_arg_1: {extension}\n"
        f"agi_arg_2: {number}\n"
        f"agi_arg_3: {uniqueid}\n"
        "\n"
    ).encode()


async def _attempt(host: str, port: int, environment: bytes) -> str:
    reader, writer = await asyncio.open_connection(host, port)
    verdict = ""
    try:
        writer.write(environment)
        while line := await reader.readline():
            if line.startswith(b"failure"):
                raise RuntimeError("the server answered failure")
            if line.startswith(b"SET VARIABLE PBXGUARD_VERDICT"):
                verdict = line.split()[-1].decode().strip('"')
            writer.write(b"200 result=1\n")
    finally:
        writer.close()
    return verdict


@dataclass(frozen=True, slots=True)
class Run:
    latencies_ms: list[float]
    errors: int
    achieved_rate: float
    verdicts: dict[str, int]

    def percentile(self, p: float) -> float:
        if len(self.latencies_ms) < 2:
            return float("nan")
        return statistics.quantiles(self.latencies_ms, n=1000, method="inclusive")[
            round(p * 10) - 1
        ]


def _attempts(total: int, salt: int) -> list[bytes]:
    people = itertools.cycle(range(PEOPLE))
    numbers = itertools.cycle(NUMBERS)
    return [
        _environment(extension_of(next(people)), next(numbers), f"17958{salt:05d}.{i}")
        for i in range(total)
    ]


async def _drive(
    address: tuple[str, int], environments: Sequence[bytes], *, rate: float, concurrency: int
) -> Run:
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    verdicts: dict[str, int] = {}
    errors = 0

    async def one(environment: bytes) -> None:
        nonlocal errors
        async with slots:
            started = time.perf_counter()
            try:
                verdict = await _attempt(*address, environment)
            except (OSError, RuntimeError, asyncio.IncompleteReadError):
                errors += 1
                return
            latencies.append((time.perf_counter() - started) * 1000)
            verdicts[verdict] = verdicts.get(verdict, 0) + 1

    began = loop.time()
    tasks = []
    for index, environment in enumerate(environments):
        scheduled = began + index / rate
        if (delay := scheduled - loop.time()) > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(environment)))
    # The rate the attempts were started at (the client keeping up), not when they finished.
    issued = loop.time() - began + 1 / rate
    async with asyncio.timeout(len(environments) / rate + 30):
        await asyncio.gather(*tasks)
    return Run(latencies, errors, len(environments) / issued, verdicts)


async def _take_turns(
    addresses: dict[str, tuple[str, int]],
    environments: Sequence[bytes],
    *,
    rate: float,
    concurrency: int,
    block: int,
) -> dict[str, Run]:
    """Drive every server with the same attempts, a block at a time each, in turn."""
    runs: dict[str, Run] = {}
    for start in range(0, len(environments), block):
        for kind, address in addresses.items():
            run = await _drive(
                address, environments[start : start + block], rate=rate, concurrency=concurrency
            )
            runs[kind] = run if kind not in runs else _pooled(runs[kind], run)
    return runs


def _pooled(first: Run, second: Run) -> Run:
    verdicts = dict(first.verdicts)
    for verdict, count in second.verdicts.items():
        verdicts[verdict] = verdicts.get(verdict, 0) + count
    count = len(first.latencies_ms) + first.errors, len(second.latencies_ms) + second.errors
    return Run(
        first.latencies_ms + second.latencies_ms,
        first.errors + second.errors,
        (first.achieved_rate * count[0] + second.achieved_rate * count[1]) / max(sum(count), 1),
        verdicts,
    )


def _start(kind: str) -> tuple[BaseProcess, Connection, Connection, tuple[str, int]]:
    context = multiprocessing.get_context("spawn")
    ready_recv, ready_send = context.Pipe(duplex=False)
    parent, child = context.Pipe(duplex=True)
    process = context.Process(target=_server_process, args=(kind, ready_send, child))
    process.start()
    if not ready_recv.poll(60):
        process.terminate()
        raise SystemExit(f"the {kind} server did not start")
    host, port = ready_recv.recv()
    return process, parent, ready_recv, (host, port)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[500.0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per rate and server")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--block", type=float, default=0.5, help="seconds per turn")
    options = parser.parse_args()

    servers = {kind: _start(kind) for kind in ("plain", "controls")}
    try:
        print(
            f"pre-dial verdict over FastAGI: no controls vs budgets, locks, country lists "
            f"({PEOPLE} people), loopback, <= {options.concurrency} connections, "
            f"{options.seconds:g} s per server in turns of {options.block:g} s, "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        )
        print(
            f"{'rate':>7} {'server':>9} {'requests':>8} {'achieved':>9} {'errors':>6}"
            f" {'p50':>9} {'p99':>9}  verdicts"
        )
        for salt, rate in enumerate(options.rates):
            total = min(MAX_REQUESTS, max(1, round(rate * options.seconds)))
            environments = _attempts(total, salt)
            runs = asyncio.run(
                _take_turns(
                    {kind: server[3] for kind, server in servers.items()},
                    environments,
                    rate=rate,
                    concurrency=options.concurrency,
                    block=max(1, round(rate * options.block)),
                )
            )
            for kind, run in runs.items():
                mix = ", ".join(f"{k or '?'} {v}" for k, v in sorted(run.verdicts.items()))
                print(
                    f"{rate:>5g}/s {kind:>9} {len(run.latencies_ms) + run.errors:>8} "
                    f"{run.achieved_rate:>7.1f}/s {run.errors:>6}"
                    f" {run.percentile(50):>7.3f}ms {run.percentile(99):>7.3f}ms  {mix}"
                )
            ratio = runs["controls"].percentile(99) / runs["plain"].percentile(99)
            print(f"{'':>7} p99 with controls / without: {ratio:.2f}x")
        print("target: p99 under 5 ms at 500/s with the controls active")
    finally:
        for process, control, _, _ in servers.values():
            control.send(None)
            if control.poll(15):
                decisions, locks, cpu = control.recv()
                print(
                    f"  {process.name}: {decisions} decisions, {locks} locks held at the end, "
                    f"server CPU {cpu:.2f} s ({cpu / max(decisions, 1) * 1000:.3f} ms a verdict)"
                )
            process.join(10)
            if process.is_alive():
                process.terminate()
                process.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
