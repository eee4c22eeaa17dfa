"""Measure the console: ledger page and API latency on a big ledger, and the memory it adds.

Run: ``.venv/bin/python bench/bench_console.py [--offences 100000] [--calls 1000000]``.
The ledger (SQLite, in a temporary directory) is seeded in bulk through the ledger's own
books: offences priced by ``record_offences`` and calls (with their register entries) by
``record_calls``, in large transactions. The console then serves it standalone on loopback,
as ``pbxguard console`` does, and an auditor's client asks for:

- the ledger page (HTML) and ``GET /api/v1/offences`` for one month (about 1/12 of them);
- the same for the whole ledger (the count runs over every offence);
- the baseline, in the same run: ``GET /healthz`` on the same server (HTTP, no ledger work),
  and the same month's query through the book directly (ledger work, no HTTP).

Memory: RSS of the process with the guard's stack imported and the ledger open (the baseline),
then after the web stack is imported, the console built and every measured request served.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx

from pbxguard.adapters.ledger import LedgerDatabase, OffenceBook
from pbxguard.adapters.ledger.calls import record_calls
from pbxguard.adapters.ledger.console import UserBook
from pbxguard.adapters.ledger.offences import record_offences
from pbxguard.adapters.passwords import Argon2Passwords
from pbxguard.adapters.policy_file import load_policy
from pbxguard.adapters.settings import ConsoleSettings, LedgerSettings, Settings
from pbxguard.app.access import NewUser, add_user
from pbxguard.domain.entries import OffenceFilter
from pbxguard.domain.periods import month_bounds
from pbxguard.domain.records import CallRef, CallSummary, OffenceDraft, OffenceFact, Outcome

START = datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
DEPARTMENTS = ("工程部", "市场部", "客服部", "财务部", "行政部", "销售部", "保卫部", "调度室")
PASSWORD = "bench password 1"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def seed(database: LedgerDatabase, offences: int, calls: int) -> None:
    loaded = load_policy(None)
    policy = loaded.policy
    rule = policy.rules["LD-2"]
    span = timedelta(days=360)
    batch = 5000
    started = time.perf_counter()
    for first in range(0, offences, batch):
        items = []
        for i in range(first, min(first + batch, offences)):
            person = i % 2000
            at = START + span * (i / offences)
            items.append(
                OffenceFact(
                    OffenceDraft(
                        key=f"bench:{i}:LD-2:01087654321",
                        rule_id="LD-2",
                        at=at,
                        call=CallRef(f"o{i}", f"o{i}", f"PJSIP/{person}-{i:08x}"),
                        extension=str(2000 + person % 1000),
                        person_id=f"p-{person}",
                        person_name=f"员工{person}",
                        department=DEPARTMENTS[person % len(DEPARTMENTS)],
                        number="01087654321",
                        number_class="domestic_ld",
                        outcome=Outcome.REFUSED,
                        detail_zh="未经批准拨打国内长途",
                        detail_en="domestic long distance without approval",
                        policy_version=policy.version,
                    ),
                    rule,
                    policy.timezone,
                )
            )
        with database.write() as session:
            record_offences(session, items)
    print(f"seeded {offences:,} offences in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    for first in range(0, calls, batch * 4):
        summaries = []
        for i in range(first, min(first + batch * 4, calls)):
            at = START + span * (i / calls)
            long_distance = i % 50 == 0
            summaries.append(
                CallSummary(
                    call=CallRef(f"c{i}", f"c{i}", f"PJSIP/{i % 3000}-{i:08x}"),
                    extension=str(2000 + i % 1000),
                    person_id=f"p-{i % 2000}",
                    person_name="",
                    department=DEPARTMENTS[i % len(DEPARTMENTS)],
                    caller_name="",
                    dialled="01087654321" if long_distance else "62345678",
                    number="01087654321" if long_distance else "62345678",
                    number_class="domestic_ld" if long_distance else "local",
                    direction="outbound",
                    started_at=at,
                    answered_at=at + timedelta(seconds=3),
                    ended_at=at + timedelta(seconds=90),
                    verdict="allow",
                    rule_id="",
                    outcome="answered",
                    charge=Decimal("0.30"),
                )
            )
        with database.write() as session:
            record_calls(session, summaries)
    print(f"seeded {calls:,} calls in {time.perf_counter() - started:.1f} s")


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    return f"p50 {p50:8.2f} ms   p99 {p99:8.2f} ms"


def timed(client: httpx.Client, path: str, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        answer = client.get(path)
        samples.append(time.perf_counter() - started)
        assert answer.status_code in (200, 503), (path, answer.status_code)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offences", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{directory}/ledger.sqlite3"
        database = LedgerDatabase.open(url, site="reference")
        database.migrate()
        seed(database, args.offences, args.calls)
        policy = load_policy(None)
        add_user(
            UserBook(database),
            Argon2Passwords(),
            policy.policy,
            NewUser("auditor", PASSWORD, "auditor"),
            by="bench",
            now=datetime.now(UTC),
        )
        gc.collect()
        baseline_rss = rss_mb()

        from pbxguard.adapters.clock import SystemClock
        from pbxguard.bootstrap import build_console
        from pbxguard.entrypoints.web import ConsoleServer, create_app

        settings = Settings(
            state_dir=directory,
            ledger=LedgerSettings(url=url),
            console=ConsoleSettings(enabled=True, port=0),
        )
        console = build_console(settings, database, lambda: policy, SystemClock())
        server = ConsoleServer(
            create_app(console, settings.console), host="127.0.0.1", port=0, trusted_proxies=""
        )
        host, port = server.bind()
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever)
        thread.start()
        serving = asyncio.run_coroutine_threadsafe(server.serve(), loop)
        month = "2026-06"
        start, end = month_bounds(month, policy.policy.timezone)
        book = OffenceBook(database)
        try:
            with httpx.Client(base_url=f"http://{host}:{port}", timeout=60) as client:
                for _ in range(50):
                    try:
                        client.get("/healthz")
                        break
                    except httpx.TransportError:
                        time.sleep(0.1)
                signed = client.post(
                    "/api/v1/session", json={"username": "auditor", "password": PASSWORD}
                )
                assert signed.status_code == 200, signed.text
                n = args.requests
                rows = [
                    ("baseline: GET /healthz (HTTP only)", timed(client, "/healthz", n)),
                ]
                direct = []
                where = OffenceFilter(start=start, end=end)
                for _ in range(n):
                    began = time.perf_counter()
                    book.latest(where, limit=100)
                    book.count(where)
                    direct.append(time.perf_counter() - began)
                rows.append(("baseline: month page via the book (no HTTP)", direct))
                rows.append(
                    ("GET /ledger?month (HTML page)", timed(client, f"/ledger?month={month}", n))
                )
                rows.append(
                    (
                        "GET /api/v1/offences?month",
                        timed(client, f"/api/v1/offences?month={month}", n),
                    )
                )
                rows.append(("GET /ledger (all offences)", timed(client, "/ledger", n)))
                rows.append(("GET /api/v1/offences (all)", timed(client, "/api/v1/offences", n)))
                rows.append(
                    (
                        "GET /api/v1/offences?outcome=refused&month",
                        timed(
                            client,
                            f"/api/v1/offences?outcome=refused&month={month}",
                            max(n // 10, 5),
                        ),
                    )
                )
                in_month = book.count(where)
            gc.collect()
            console_rss = rss_mb()
        finally:
            asyncio.run_coroutine_threadsafe(server.close(), loop).result(30)
            serving.result(30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)
            database.close()
        print(f"\nledger: {args.offences:,} offences, {args.calls:,} calls; {month}: {in_month:,}")
        print(f"{'request':<46} latency ({args.requests} requests)")
        for name, samples in rows:
            print(f"{name:<46} {percentiles(samples)}")
        print(
            f"\nmemory: {baseline_rss:.1f} MB with the ledger open (baseline); "
            f"{console_rss:.1f} MB with the console serving: +{console_rss - baseline_rss:.1f} MB"
        )


if __name__ == "__main__":
    main()
