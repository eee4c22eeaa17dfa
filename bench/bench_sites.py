"""Measure the shared ledger: write rate and latency with 1, 4 and 16 guards on one PostgreSQL.

Run: ``.venv/bin/python bench/bench_sites.py`` (about five minutes; ``--rounds 1`` for one).

Each guard is a process of its own, as each PBX's pbxguard is: a site name of its own, a
write-ahead journal of its own (group-commit fsync, as shipped) and a `LedgerWriter` thread
draining it into the one PostgreSQL all guards share. Its facts are what a real `Guard` makes
of the recorded captures (13 calls, 42 facts: decisions, offences with their outcomes, call
summaries): the captures are replayed through a guard once, then appended call by call at the
offered rate, each time with fresh ids (the Linkedid and Uniqueid of every channel, and so
every key, carry a per-replay system-name prefix, as Asterisk's ``systemname`` makes them) and
with the callers spread over 500 people per site, so that nobody's earlier offences grow beyond
what a real quarter holds. A fact's write latency is from its append to the journal (where the
guard's part ends) to the commit that put it in PostgreSQL.

For 1, 4 and 16 guards the total offered load climbs a ladder of call rates, split evenly
between the guards, each step for a few seconds with time to drain after it. A step is
saturated when what it offered is not all in the ledger by the end of its drain time, or the
p99 latency passes a second; "written" is the rate of commits while the step's load ran (at
saturation, the ledger's ceiling). The baseline, measured in the same round with the same number of
processes, is what the database takes without the ledger: bare INSERTs of rows of the same
size, 500 to a transaction, into an unindexed table, as fast as they go.

The PostgreSQL is a throwaway cluster with durable commits (fsync and synchronous_commit on),
unlike the test suite's. Figures from a shared two-core machine are noisy: the load average is
printed with each round, and the three rounds show the spread.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support.postgres

from tests.support.postgres import PostgresCluster

GUARDS = (1, 4, 16)
#: Total offered load, calls per second, split between the guards.
LADDER = (50, 100, 200, 400, 800)
STEP = 2.0  # seconds of load per step
DRAIN = 2.0  # seconds after each step for the backlog to drain
PEOPLE = 500  # callers per site
BARE_SECONDS = 2.0
FACT_BYTES = 725  # a fact's size in the journal, on average over the captures
SATURATED_P99 = 1.0


class DurableCluster(PostgresCluster):
    """The test suite's throwaway cluster, with commits as durable as a production ledger's."""

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.root} -c fsync=on "
            "-c synchronous_commit=on -c full_page_writes=on -c max_connections=200"
        )
        self._run(
            "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log),
            "-o", options,
        )  # fmt: skip
        self.running = True


# -- the facts of one call ---------------------------------------------------------------------


def site_policy(directory: Path, site: str) -> Path:
    """A policy for one site: the reference site under another name."""
    reference = resources.files("pbxguard.policies").joinpath("reference-site.toml")
    path = directory / f"{site}.toml"
    path.write_text(
        f'schema = 1\nextends = {json.dumps(str(reference))}\n[site]\nname = "{site}"\n', "utf-8"
    )
    return path


def call_templates(policy: Path) -> tuple[list[str], re.Pattern[str]]:
    """Replay the captures through a guard; return each call's journal entries as JSON text.

    Also returns a pattern matching every channel id (Uniqueid, Linkedid) in them.
    """
    import asyncio

    from _fakes import NullNotifier, NullPbx, WallClock

    from pbxguard.adapters.ledger.writer import encode_fact
    from pbxguard.adapters.policy_file import load_policy
    from pbxguard.app.guard import Guard
    from pbxguard.domain.records import LedgerFact
    from pbxguard.simulator.ami_server import load_recording, recording_names

    class Keep:
        def __init__(self) -> None:
            self.facts: list[LedgerFact] = []

        def append(self, facts: Sequence[LedgerFact]) -> None:
            self.facts.extend(facts)

        @property
        def pending(self) -> int:
            return 0

    async def replay() -> tuple[list[LedgerFact], set[str]]:
        loaded = load_policy(policy)
        keep = Keep()
        guard = Guard(
            loaded.policy,
            loaded.channels,
            pbx=NullPbx(),
            facts=keep,
            notifier=NullNotifier(),
            clock=WallClock(),
        )
        ids: set[str] = set()
        for name in recording_names():
            for event in load_recording(name).events:
                for key, value in event.message.fields:
                    if key.endswith(("Uniqueid", "Linkedid")) and value:
                        ids.add(value)
                guard.on_ami_message(event.message)
        await guard.settled()
        return keep.facts, ids

    facts, ids = asyncio.run(replay())
    by_call: dict[str, list[dict[str, Any]]] = {}
    for fact in facts:
        by_call.setdefault(_linkedid(fact), []).append(encode_fact(fact))
    alternatives = "|".join(re.escape(i) for i in sorted(ids, key=len, reverse=True))
    pattern = re.compile(rf"(?<![0-9.])({alternatives})(?![0-9.])")
    return [json.dumps(g, ensure_ascii=False) for g in by_call.values()], pattern


def _linkedid(fact: Any) -> str:
    """The call a fact belongs to (an outcome's is in its offence's key, site:Linkedid:...)."""
    call = getattr(fact, "call", None) or getattr(getattr(fact, "draft", None), "call", None)
    if call is not None:
        return str(call.linkedid)
    key = str(getattr(fact, "key", ""))
    return key.split(":")[1] if key.count(":") >= 3 else key


_PERSON = re.compile(r'("person_id": ")([^"]+)(")')


# -- one guard ---------------------------------------------------------------------------------


@dataclass
class StepResult:
    """What one guard did in one step of the ladder."""

    offered_calls: int = 0
    offered_facts: int = 0
    written_facts: int = 0
    """Facts committed while the step's load ran (any step's: at saturation, the backlog)."""
    latencies: list[float] = field(default_factory=list)
    """Append -> commit of every fact the step offered."""
    unwritten: int = 0
    """Facts the step offered that were not committed by the end of its drain time."""


def guard_process(index: int, url: str, rates: list[float], link: tuple[Any, Any, Any]) -> None:
    """One site's guard: journal, ledger writer, and calls appended at each step's rate.

    ``link``: the queues to say it is ready, to learn when to begin, and to report.
    """
    ready, start, results = link
    from pbxguard.adapters.journal import Cursor, Journal
    from pbxguard.adapters.ledger import LedgerDatabase, LedgerWriter
    from pbxguard.adapters.logs import configure_logging

    configure_logging("error")
    site = f"site-{index:02d}"
    work = Path(tempfile.mkdtemp(prefix=f"bench-sites-{site}-"))
    templates, ids = call_templates(site_policy(work, site))

    commits: list[tuple[int, float]] = []

    class TimedJournal(Journal):
        def checkpoint(self, cursor: Cursor) -> None:
            # Called right after the commit; noted before the journal says it is drained.
            commits.append((cursor.seq, time.monotonic()))
            super().checkpoint(cursor)

    journal = TimedJournal(work / "journal").open()
    database = LedgerDatabase.open(url, site=site)
    writer = LedgerWriter(journal, database, batch_size=500)
    writer.start()
    appended: list[tuple[int, int, float]] = []  # (first seq, last seq, when)
    replay = 0

    def append_call(number: int) -> None:
        nonlocal replay
        template = templates[number % len(templates)]
        if number % len(templates) == 0:
            replay += 1
        prefix = f"g{index:02d}r{replay:07d}-"
        text = ids.sub(lambda m: prefix + m.group(1), template)
        text = _PERSON.sub(
            lambda m: f"{m.group(1)}{m.group(2)}~{replay % PEOPLE}{m.group(3)}", text
        )
        entries = json.loads(text)
        last = journal.append(entries)
        appended.append((last - len(entries) + 1, last, time.monotonic()))

    ready.put(index)
    begin = start.get()
    step_results: list[StepResult] = []
    number = 0
    for step, rate in enumerate(rates):
        step_start = begin + step * (STEP + DRAIN)
        step_end = step_start + STEP
        first_append = len(appended)
        time.sleep(max(0.0, step_start - time.monotonic()))
        sent = 0
        while (now := time.monotonic()) < step_end:
            due = int((now - step_start) * rate) + 1
            while sent < due:
                append_call(number)
                number += 1
                sent += 1
            time.sleep(min(0.005, max(0.0, step_start + sent / rate - time.monotonic())))
        writer.wait_idle(max(0.0, step_end + DRAIN - 0.2 - time.monotonic()))
        done = list(commits)
        result = StepResult(offered_calls=sent)
        cursor = 0
        for first, last, at in appended[first_append:]:
            result.offered_facts += last - first + 1
            while cursor < len(done) and done[cursor][0] < last:
                cursor += 1
            if cursor == len(done):
                result.unwritten += last - first + 1
            else:
                result.latencies.extend([done[cursor][1] - at] * (last - first + 1))
        before = [seq for seq, at in done if at < step_start]
        during = [seq for seq, at in done if at <= step_end]
        result.written_facts = max(during, default=0) - max(before, default=0)
        step_results.append(result)
        time.sleep(max(0.0, step_start + STEP + DRAIN - time.monotonic()))
    writer.stop(drain=10.0)
    journal.close()
    database.close()
    shutil.rmtree(work, ignore_errors=True)
    results.put((index, [r.__dict__ for r in step_results]))


def bare_process(index: int, url: str, width: int, link: tuple[Any, Any, Any]) -> None:
    """The baseline: bare INSERTs of rows as wide as the facts, 500 to a transaction."""
    ready, start, results = link
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    row = {"site": f"site-{index:02d}", "data": "x" * width}
    ready.put(index)
    begin = start.get()
    time.sleep(max(0.0, begin - time.monotonic()))
    rows = 0
    with engine.connect() as connection:
        while time.monotonic() < begin + BARE_SECONDS:
            with connection.begin():
                connection.execute(
                    text("INSERT INTO bench_bare (site, data) VALUES (:site, :data)"),
                    [row] * 500,
                )
            rows += 500
    engine.dispose()
    results.put((index, rows))


def bare_table(url: str) -> None:
    """Create the baseline's table: no key, no index, no chain."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE bench_bare (site text, data text)"))
    engine.dispose()


def run_processes(target: Any, count: int, args: tuple[Any, ...]) -> list[Any]:
    """Start ``count`` processes of ``target``, start them together, return their results."""
    context = multiprocessing.get_context("spawn")
    ready, results = context.Queue(), context.Queue()
    starts = [context.Queue() for _ in range(count)]
    processes = [
        context.Process(target=target, args=(i, *args, (ready, starts[i], results)))
        for i in range(count)
    ]
    for process in processes:
        process.start()
    try:
        for _ in range(count):
            ready.get(timeout=120)
        begin = time.monotonic() + 0.5
        for start in starts:
            start.put(begin)
        found = [results.get(timeout=600) for _ in range(count)]
    except queue.Empty as error:
        raise SystemExit("a benchmark process did not report in time") from error
    finally:
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()
    return [value for _, value in sorted(found, key=lambda item: item[0])]


# -- a round ----------------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def one_round(cluster: DurableCluster, number: int) -> list[str]:
    """Measure every number of guards once; return the round's lines."""
    from pbxguard.adapters.ledger import LedgerDatabase

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [f"round {number}   (load average {load})"]
    lines.append(
        f"{'guards':>6} {'offered':>9} {'written':>9} {'facts/s':>8} {'p50 ms':>7} "
        f"{'p99 ms':>8}  {'':<9} {'baseline: bare INSERT rows/s':>28}"
    )
    saturation: list[str] = []
    for guards in GUARDS:
        name = cluster.create_database()
        url = cluster.url(name)
        database = LedgerDatabase.open(url, site="bench")
        database.migrate()
        database.close()
        rates = [total / guards for total in LADDER]
        steps = run_processes(guard_process, guards, (url, rates))
        bare_table(url)
        bare = sum(run_processes(bare_process, guards, (url, FACT_BYTES))) / BARE_SECONDS
        cluster.drop_database(name)
        first_saturated = None
        best = 0.0
        for step, total in enumerate(LADDER):
            parts = [StepResult(**s[step]) for s in steps]
            offered = sum(p.offered_calls for p in parts) / STEP
            per_call = sum(p.offered_facts for p in parts) / max(
                1, sum(p.offered_calls for p in parts)
            )
            facts = sum(p.written_facts for p in parts) / STEP
            written = facts / per_call
            best = max(best, written)
            latencies = [x for p in parts for x in p.latencies]
            unwritten = sum(p.unwritten for p in parts)
            p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
            # Kept up: everything the step offered was in the ledger before the next step,
            # and 99 % of it within a second.
            saturated = bool(unwritten) or p99 > SATURATED_P99
            if saturated and first_saturated is None:
                first_saturated = total
            mark = "saturated" if saturated else ""
            tail = f"{bare:>28,.0f}" if step == 0 else ""
            timing = f"{p50 * 1000:>7.1f} {p99 * 1000:>8.1f}" if latencies else f"{'-':>7} {'-':>8}"
            lines.append(
                f"{guards:>6} {offered:>9,.0f} {written:>9,.0f} {facts:>8,.0f} "
                f"{timing}  {mark:<9} {tail}"
            )
        saturation.append(
            f"{guards} guard{'s' if guards > 1 else ''}: "
            + (
                f"saturated at {first_saturated:,} calls/s offered, "
                f"best {best:,.0f} calls/s written"
                if first_saturated is not None
                else f"not saturated up to {LADDER[-1]:,} calls/s (best {best:,.0f})"
            )
        )
    lines.append("  " + "; ".join(saturation))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cluster = DurableCluster()
    try:
        cluster.start()
        print(
            f"{len(GUARDS)} sizes x {len(LADDER)} steps of {STEP:.1f} s (+{DRAIN:.0f} s drain); "
            f"calls offered in total: {', '.join(f'{x:,}' for x in LADDER)} per second; "
            "latency: journal append -> PostgreSQL commit"
        )
        for number in range(1, args.rounds + 1):
            lines = one_round(cluster, number)
            print("\n".join(lines), flush=True)
            print(flush=True)
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
