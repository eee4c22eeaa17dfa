"""Measure the ledger's exports at scale: the month's offences, the year's, the month's register.

A ledger (SQLite) is seeded through the ledger's own books, in large batches, hash chain and
pricing included: ``--offences`` offences in November 2026 (LD-2, PR-1, EM-1, LD-7 by 500 people
in 20 departments; a tenth of them cut calls with how they ended, a hundred waived) and a fifth
as many again over January to October, then ``--calls`` finished calls in November, of which one
in ten is an answered long-distance call with its line in the register (a tenth of those filled
in). Seeding takes a few minutes; ``--ledger PATH`` keeps the seeded file for the next run.

Each export then runs as a user runs it, ``pbxguard`` in a process of its own, writing to a
file; printed per export: rows, wall time and the process's peak RSS (``wait4``), and the load
average. The baseline, in the same round, is a bare ``sqlite3`` + ``csv`` script in a process
of its own that writes the same rows with the same columns: what reading and writing them
costs before any of pbxguard's work.

Goals (2 cores): the month's 100k offences as CSV in under 3 s and 150 MB RSS; the same for
xlsx, JSON, the yearly CSV and the month's register at 1M calls.

    .venv/bin/python bench/bench_exports.py --ledger /tmp/exports.sqlite3   # seed once, keep
    .venv/bin/python bench/bench_exports.py --offences 10000 --calls 100000 --rounds 1
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from _daemon import REFERENCE, load
from sqlalchemy import select

from pbxguard.adapters.ledger import LedgerDatabase, OffenceBook, RegisterBook
from pbxguard.adapters.ledger.calls import record_calls
from pbxguard.adapters.ledger.offences import record_offences, record_outcomes
from pbxguard.adapters.ledger.schema import register_entries
from pbxguard.adapters.logs import configure_logging
from pbxguard.adapters.policy_file import load_policy
from pbxguard.domain.entries import AdjustmentKind
from pbxguard.domain.periods import month_bounds
from pbxguard.domain.policy import Policy
from pbxguard.domain.records import (
    CallRef,
    CallSummary,
    Ending,
    OffenceDraft,
    OffenceFact,
    OffenceOutcome,
    Outcome,
)

MONTH = "2026-11"
BATCH = 5_000
CSV_GOAL_S = 3.0
RSS_GOAL_MB = 150.0
# (rule, number, number class) of the seeded offences, in turn.
KINDS = (
    ("LD-2", "00441632960123", "international"),
    ("PR-1", "16812345678", "premium"),
    ("EM-1", "13800138000", "mobile"),
    ("LD-2", "01087654321", "domestic_ld"),
    ("LD-7", "0085223456789", "hk_macau"),
)


# --- seeding ------------------------------------------------------------------------------


def _person(n: int) -> tuple[str, str, str, str]:
    """(id, name, department, extension) of seeded person ``n``."""
    k = n % 500
    return f"p{k:03d}", f"员工{k:03d}", f"部门{k % 20:02d}", f"{2000 + k}"


def _offences(
    policy: Policy, start: datetime, end: datetime, count: int, tag: str
) -> list[OffenceFact]:
    step = (end - start) / count
    facts = []
    for i in range(count):
        rule_id, number, number_class = KINDS[i % len(KINDS)]
        person_id, name, department, extension = _person(i * 7)
        at = start + step * i
        cut = i % 10 == 0
        facts.append(
            OffenceFact(
                OffenceDraft(
                    key=f"{policy.site}:{tag}.{i}:{rule_id}:{number}",
                    rule_id=rule_id,
                    at=at,
                    call=CallRef(f"{tag}.{i}", f"{tag}.{i}", f"PJSIP/{extension}-{i:08x}"),
                    extension=extension,
                    person_id=person_id,
                    person_name=name,
                    department=department,
                    number=number,
                    number_class=number_class,
                    charge=Decimal("1.20") if rule_id == "PR-1" else Decimal(0),
                    outcome=Outcome.CUT_ORDERED if cut else Outcome.REFUSED,
                    detail_zh=f"{extension} 拨打 {number}：未经批准",
                    detail_en=f"{extension} dialled {number}: not approved",
                    policy_version="bench",
                ),
                policy.rules[rule_id],
                policy.timezone,
            )
        )
    return facts


def _calls(policy: Policy, start: datetime, end: datetime, count: int) -> list[CallSummary]:
    step = (end - start) / count
    calls = []
    for i in range(count):
        person_id, name, department, extension = _person(i)
        long_distance = i % 10 == 0
        number = "01087654321" if long_distance else "02112345678"
        started = start + step * i
        answered = started + timedelta(seconds=8) if i % 3 != 1 or long_distance else None
        ended = (answered or started) + timedelta(seconds=20 + i % 600)
        calls.append(
            CallSummary(
                call=CallRef(f"c.{i}", f"c.{i}", f"PJSIP/{extension}-{i:08x}"),
                extension=extension,
                person_id=person_id,
                person_name=name,
                department=department,
                caller_name=name,
                dialled=number,
                number=number,
                number_class="domestic_ld" if long_distance else "local",
                direction="outbound",
                started_at=started,
                answered_at=answered,
                ended_at=ended,
                verdict="allow",
                rule_id="",
                outcome="answered" if answered else "unanswered",
                charge=Decimal("0.70") if answered else Decimal(0),
            )
        )
    return calls


def seed(path: Path, offences: int, calls: int) -> None:
    """Fill a new SQLite ledger through the ledger's books (chain and pricing included)."""
    policy = load_policy(str(REFERENCE)).policy
    database = LedgerDatabase.open(f"sqlite:///{path}", site=policy.site, busy_timeout=30)
    database.migrate()
    zone = policy.timezone
    start, end = month_bounds(MONTH, zone)
    year_start, _ = month_bounds("2026-01", zone)
    began = time.monotonic()
    facts = _offences(policy, year_start, start, offences // 5, "y") + _offences(
        policy, start, end, offences, "m"
    )
    for first in range(0, len(facts), BATCH):
        chunk = facts[first : first + BATCH]
        with database.write() as session:
            record_offences(session, chunk)
            record_outcomes(
                session,
                [
                    OffenceOutcome(
                        key=f.draft.key,
                        at=f.draft.at + timedelta(seconds=30),
                        ending=Ending.BEFORE_ANSWER,
                        ended_at=f.draft.at + timedelta(seconds=2),
                        cause="21",
                    )
                    for f in chunk
                    if f.draft.outcome is Outcome.CUT_ORDERED
                ],
            )
    book = OffenceBook(database)
    for n, entry in enumerate(book.iter_offences()):
        if n % (len(facts) // 100) == 0:
            book.add_adjustment(
                entry.id, AdjustmentKind.WAIVER, by="bench", reason="seeded", at=entry.at
            )
    print(f"  {len(facts):,} offences seeded in {time.monotonic() - began:.0f} s", flush=True)
    began = time.monotonic()
    summaries = _calls(policy, start, end, calls)
    for first in range(0, len(summaries), 20_000):
        with database.write() as session:
            record_calls(session, summaries[first : first + 20_000])
    del summaries
    register = RegisterBook(database)
    with database.read() as session:
        ids = [row[0] for row in session.execute(select(register_entries.c.id))]
    for entry_id in ids[::10]:
        register.fill(
            entry_id, subject="项目沟通", outcome="已确认", by="bench", at=end, callee_name="客户"
        )
    print(
        f"  {calls:,} calls ({len(ids):,} in the register) seeded in "
        f"{time.monotonic() - began:.0f} s",
        flush=True,
    )
    database.close()


# --- measuring ----------------------------------------------------------------------------

BASELINE = textwrap.dedent(
    """
    import csv, sqlite3, sys
    path, query, start, end, out = sys.argv[1:6]
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with open(out, "w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file, lineterminator="\\n")
        rows = 0
        for row in connection.execute(query, (start, end)):
            writer.writerow(row)
            rows += 1
    print(rows)
    """
)
OFFENCES_SQL = (
    "SELECT o.id, o.at, o.rule_id, o.citation, o.person_name, o.department, o.extension,"
    " o.number, coalesce(e.ending, o.outcome), o.amount, o.escalation_step, o.sanctions, o.site,"
    " o.charge, o.rule_title_zh, o.detail_zh, o.linkedid"
    " FROM offences o LEFT JOIN offence_outcomes e ON e.key = o.key"
    " WHERE o.at >= ? AND o.at < ? ORDER BY o.at, o.id"
)
REGISTER_SQL = (
    "SELECT r.id, r.caller_name, r.extension, r.callee_number, f.callee_name, r.number_class,"
    " r.started_at, r.ended_at, r.duration_ms, f.subject, f.outcome, f.actor"
    " FROM register_entries r LEFT JOIN register_fills f ON f.id ="
    " (SELECT max(id) FROM register_fills WHERE entry_id = r.id)"
    " WHERE r.started_at >= ? AND r.started_at < ? ORDER BY r.started_at, r.id"
)


# Runs a command and prints its peak RSS (getrusage of the child, in KiB) on stderr's last line.
# A process started with fork and exec begins with the high-water mark of the process that
# forked it, so the command is started from this small one, not from the benchmark itself.
_PEAK = (
    "import resource, subprocess, sys; "
    "status = subprocess.call(sys.argv[1:]); "
    "sys.stderr.write(f'\\n{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n'); "
    "sys.exit(status)"
)


def timed(command: list[str]) -> tuple[float, float, int, str]:
    """Run a command; return (seconds, its peak RSS in MB, exit status, its stdout)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        began = time.perf_counter()
        status = subprocess.call([sys.executable, "-c", _PEAK, *command], stdout=out, stderr=err)
        seconds = time.perf_counter() - began
        out.seek(0)
        err.seek(0)
        printed = out.read().decode()
        *complaint, peak = err.read().decode().rstrip("\n").rsplit("\n", 1)
        if status != 0:
            print(f"    {' '.join(command[-6:])} failed ({status}): {''.join(complaint)[-400:]}")
    return seconds, int(peak) / 1024, status, printed


def _rows_in(path: Path, kind: str) -> int:
    if not path.exists():
        return 0
    if kind == "xlsx":
        from openpyxl import load_workbook

        book = load_workbook(path, read_only=True)
        sheet = book.worksheets[0]
        rows = sum(1 for _ in sheet.iter_rows(values_only=True))
        book.close()
        return rows - 4  # title, headers, blank, digest
    if kind == "json":
        with path.open(encoding="utf-8") as file:
            return sum(1 for line in file if line.startswith("  {"))
    with path.open(encoding="utf-8-sig") as file:
        return sum(1 for _ in file) - 1


def main() -> int:
    """Seed (or reuse) a ledger and time each export against the bare baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offences", type=int, default=100_000, help="in the month")
    parser.add_argument("--calls", type=int, default=1_000_000, help="in the month")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--ledger", type=Path, help="keep the seeded ledger here (reused if there)")
    options = parser.parse_args()
    configure_logging("warning")

    with tempfile.TemporaryDirectory(prefix="bench-exports-") as name:
        tmp = Path(name)
        path = options.ledger or tmp / "ledger.sqlite3"
        if not path.exists():
            earlier = options.offences // 5
            print(
                f"seeding {path}: {options.offences:,} offences in {MONTH} (+{earlier:,} earlier"
                f" in 2026), {options.calls:,} calls in {MONTH}; load average {load()}",
                flush=True,
            )
            seed(path, options.offences, options.calls)
        config = tmp / "pbxguard.toml"
        config.write_text(
            f'policy = "{REFERENCE}"\nstate_dir = "{tmp / "state"}"\n'
            f'[ledger]\nurl = "sqlite:///{path}"\n',
            encoding="utf-8",
        )
        zone = load_policy(str(REFERENCE)).policy.timezone
        start, end = month_bounds(MONTH, zone)
        # The ledger keeps UTC; SQLite holds it as naive ISO text.
        utc_start = start.astimezone(UTC).replace(tzinfo=None).isoformat(" ")
        utc_end = end.astimezone(UTC).replace(tzinfo=None).isoformat(" ")
        pbxguard = [sys.executable, "-m", "pbxguard"]
        exports = [
            ("ledger month csv", "csv", [*pbxguard, "ledger", "--month", MONTH, "--format", "csv"]),
            (
                "ledger month json",
                "json",
                [*pbxguard, "ledger", "--month", MONTH, "--format", "json"],
            ),
            (
                "ledger month xlsx",
                "xlsx",
                [*pbxguard, "ledger", "--month", MONTH, "--format", "xlsx"],
            ),
            ("ledger year csv", "csv", [*pbxguard, "ledger", "--format", "csv"]),
            (
                "register month xlsx",
                "xlsx",
                [*pbxguard, "register", "--month", MONTH, "--format", "xlsx"],
            ),
        ]
        baselines = [
            ("sqlite3+csv offences", OFFENCES_SQL, utc_start, utc_end),
            ("sqlite3+csv register", REGISTER_SQL, utc_start, utc_end),
            ("sqlite3+csv all offences", OFFENCES_SQL, "0000-01-01", "9999-12-31"),
        ]
        for round_no in range(1, options.rounds + 1):
            print(f"\nround {round_no}, load average {load()}")
            print(f"{'export':<26} {'rows':>9} {'seconds':>8} {'peak RSS':>9}")
            for label, query, low, high in baselines:
                out = tmp / "baseline.csv"
                seconds, rss, _, printed = timed(
                    [sys.executable, "-c", BASELINE, str(path), query, low, high, str(out)]
                )
                print(f"{label:<26} {int(printed or 0):>9,} {seconds:>7.2f}s {rss:>6.1f} MB")
            for label, kind, command in exports:
                out = tmp / f"export.{kind}"
                out.unlink(missing_ok=True)
                seconds, rss, status, _ = timed(
                    [*command, "--config", str(config), "--output", str(out)]
                )
                rows = _rows_in(out, kind) if status == 0 else 0
                verdict = (
                    "" if seconds < CSV_GOAL_S and rss < RSS_GOAL_MB else "  (misses the goal)"
                )
                print(f"{label:<26} {rows:>9,} {seconds:>7.2f}s {rss:>6.1f} MB{verdict}")
        print(
            f"\ngoals: each export under {CSV_GOAL_S:g} s (the CSV of the month's 100k offences)"
            f" and under {RSS_GOAL_MB:g} MB RSS"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
