"""Measure ``pbxguard replay``: recorded calls judged again per second, over a million of them.

The ledger (SQLite in a temporary directory, created by the migrations) is seeded in bulk with
``--calls`` calls of November 2026 from the reference site's phones: local, mobile, long
distance, Hong Kong, international and premium numbers, at random times. Calls the reference
policy refuses carry their verdict, rule and fine (an offence row under the key both layers
use); one refused call in twenty is a pre-dial refusal that never reached a trunk (a verdict
only). As in a site's ledger, every call that reached a trunk also has its safety net's
verdict, and every other one the dialplan's pre-dial verdict, in the decisions table.

Then, in the same run:

* **baseline**: the month read back through the replay's own reader (`RecordedCallLog`, two
  paged streams merged by time, fines joined) without judging anything;
* **replay**: the same month judged again under a candidate policy (staff may dial Hong Kong
  and international numbers; long distance costs 80 yuan) with `WhatIf`, every change counted.

Printed: calls per second for both, the ratio, the changes found, and the process's RSS before
and after (the replay streams: its memory does not grow with the month).

    .venv/bin/python bench/bench_replay.py                   # 1,000,000 calls
    .venv/bin/python bench/bench_replay.py --calls 100000
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert

from pbxguard.adapters.ledger import LedgerDatabase
from pbxguard.adapters.ledger.replay import RecordedCallLog
from pbxguard.adapters.ledger.schema import calls, decisions, offences
from pbxguard.adapters.logs import configure_logging
from pbxguard.adapters.policy_file import load_policy
from pbxguard.app.replay import WhatIf
from pbxguard.domain.enforcement import call_offence_key
from pbxguard.domain.evaluate import CallAttempt
from pbxguard.domain.judging import judge
from pbxguard.domain.numbers import NumberClass
from pbxguard.domain.penalties import Step

SHANGHAI = ZoneInfo("Asia/Shanghai")
SITE = "reference"
BATCH = 20_000
EXTENSIONS = ("2001", "2002", "2003", "9001", "8001")
NUMBERS = (
    "62345678",
    "02112345678",
    "13800138000",
    "01087654321",
    "02787654321",
    "0085223456789",
    "00441632960123",
    "16812345678",
    "95588",
)


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def seed(database: LedgerDatabase, count: int) -> None:
    """Write ``count`` recorded call attempts of November 2026 in bulk."""
    policy = load_policy(Path(__file__).parents[1] / "src/pbxguard/policies/reference-site.toml")
    policy_ = policy.policy
    generator = random.Random(7)
    start = datetime(2026, 11, 1, tzinfo=SHANGHAI)
    month = 30 * 24 * 3600
    verdicts: dict[tuple[str, str], Any] = {}
    for extension in EXTENSIONS:
        for number in NUMBERS:
            verdicts[extension, number] = judge(
                CallAttempt(extension, number, with_access_code=False), policy_, now=start
            )
    call_rows: list[dict[str, Any]] = []
    decision_rows: list[dict[str, Any]] = []
    offence_rows: list[dict[str, Any]] = []

    def flush() -> None:
        with database.write() as session:
            for table, rows in ((calls, call_rows), (decisions, decision_rows),
                                (offences, offence_rows)):  # fmt: skip
                if rows:
                    session.execute(insert(table), rows)
        call_rows.clear()
        decision_rows.clear()
        offence_rows.clear()

    for i in range(count):
        extension = generator.choice(EXTENSIONS)
        number = generator.choice(NUMBERS)
        decision = verdicts[extension, number]
        at = start + timedelta(seconds=generator.randrange(month))
        linkedid = f"{1795000000 + i}.{i}"
        refused_before_ringing = not decision.allowed and i % 20 == 0
        common = {
            "site": SITE,
            "linkedid": linkedid,
            "uniqueid": linkedid,
            "channel": f"PJSIP/{extension}-{i:08x}",
            "extension": extension,
            "person_id": decision.person_id,
            "dialled": number,
            "number": decision.classification.number,
            "number_class": decision.number_class.value,
            "verdict": decision.verdict.value,
            "rule_id": decision.rule_id,
        }
        verdict = common | {
            "at": at,
            "reason_zh": decision.reason_zh,
            "reason_en": decision.reason_en,
            "approval_id": "",
            "policy_version": policy_.version,
        }
        if refused_before_ringing or i % 2:
            decision_rows.append(verdict | {"key": f"{SITE}:{linkedid}:agi", "layer": "agi"})
        if not refused_before_ringing:
            trunk = f"Local/{number}@pstn-{i:08x};1"
            decision_rows.append(
                verdict | {"key": f"{SITE}:{linkedid}:ami:{trunk}", "layer": "ami"}
            )
            answered = at + timedelta(seconds=3) if decision.allowed else None
            call_rows.append(
                common
                | {
                    "person_name": decision.person_name,
                    "department": decision.department,
                    "caller_name": "",
                    "direction": "outbound",
                    "started_at": at,
                    "answered_at": answered,
                    "ended_at": at + timedelta(seconds=3 + generator.randrange(300)),
                    "outcome": "answered" if answered else "hung_up",
                    "charge": Decimal("0.00"),
                }
            )
        if decision.offence:
            rule = policy_.rules[decision.rule_id]
            assert rule.penalty is not None
            step = rule.penalty.steps[0]
            amount = step.per_class.get(decision.number_class.value, step.flat)
            offence_rows.append(
                {
                    "site": SITE,
                    "key": call_offence_key(
                        SITE, linkedid, decision.rule_id, decision.classification.number
                    ),
                    "rule_id": decision.rule_id,
                    "ladder": rule.penalty.ladder or rule.id,
                    "rule_title_zh": rule.title_zh,
                    "rule_title_en": rule.title_en,
                    "citation": rule.citation,
                    "person_id": decision.person_id,
                    "person_name": decision.person_name,
                    "department": decision.department,
                    "extension": extension,
                    "number": decision.classification.number,
                    "number_class": decision.number_class.value,
                    "amount": amount,
                    "sanctions": "",
                    "escalation_step": 1,
                    "repeat_offender": False,
                    "department_head_amount": Decimal("0.00"),
                    "charge": Decimal("0.00"),
                    "talk_ms": 0,
                    "outcome": "refused" if refused_before_ringing else "hung_up",
                    "linkedid": linkedid,
                    "uniqueid": linkedid,
                    "channel": common["channel"],
                    "detail_zh": "",
                    "detail_en": "",
                    "policy_version": policy_.version,
                    "at": at,
                    "charge_multiple": step.charge_multiple,
                    "head_share": Decimal("0.00"),
                    "units": 0,
                }
            )
        if len(call_rows) + len(decision_rows) >= BATCH:
            flush()
    flush()


def main() -> int:
    """Seed the ledger, read it back, replay it; print calls per second for both."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    options = parser.parse_args()
    configure_logging("warning", json=True)
    reference = load_policy(Path(__file__).parents[1] / "src/pbxguard/policies/reference-site.toml")
    current = reference.policy
    staff = current.roles["staff"]
    ld2 = current.rules["LD-2"]
    assert ld2.penalty is not None
    dearer = dataclasses.replace(
        ld2.penalty,
        steps=(Step(per_class={**ld2.penalty.steps[0].per_class, "domestic_ld": Decimal(80)}),),
    )
    candidate = dataclasses.replace(
        current,
        roles={
            **current.roles,
            "staff": dataclasses.replace(
                staff,
                allowed=staff.allowed | {NumberClass.HK_MACAU, NumberClass.INTERNATIONAL},
            ),
        },
        rules={**current.rules, "LD-2": dataclasses.replace(ld2, penalty=dearer)},
    )

    with tempfile.TemporaryDirectory(prefix="bench-replay-") as directory:
        url = f"sqlite:///{Path(directory) / 'ledger.sqlite3'}"
        with LedgerDatabase.open(url, site=SITE) as database:
            database.migrate()
            started = time.perf_counter()
            seed(database, options.calls)
            seeded = time.perf_counter() - started
        size = (Path(directory) / "ledger.sqlite3").stat().st_size
        print(
            f"seeded {options.calls:,} recorded calls of 2026-11 in {seeded:.1f} s "
            f"({size / 2**20:.0f} MiB of SQLite)"
        )
        with LedgerDatabase.open(url, site=SITE, read_only=True) as database:
            log = RecordedCallLog(database)
            month = WhatIf(current, log, month="2026-11")
            rss_before = _status_mb("VmRSS")
            started = time.perf_counter()
            read = sum(1 for _ in log.iter_recorded(month.start, month.end, site=SITE))
            reading = time.perf_counter() - started
            rss_read = _status_mb("VmRSS")

            what_if = WhatIf(candidate, log, month="2026-11")
            started = time.perf_counter()
            changed = sum(1 for _ in what_if.changes())
            replaying = time.perf_counter() - started
            rss_after = _status_mb("VmRSS")
            peak = _status_mb("VmHWM")
        tally = what_if.tally
        print(
            f"baseline, read back without judging: {read:,} calls in {reading:.1f} s = "
            f"{read / reading:,.0f} calls/s"
        )
        print(
            f"replay under the candidate: {tally.calls:,} calls in {replaying:.1f} s = "
            f"{tally.calls / replaying:,.0f} calls/s ({reading / replaying:.2f}x the baseline's "
            "rate)"
        )
        print(f"changes: {changed:,} calls; fines {tally.fines_before} -> {tally.fines_after} yuan")
        for row in tally.rows():
            print(
                f"  {row.rule_id or '-':<6} {row.department or '-':<8}"
                f" refused {row.now_refused:>7,} allowed {row.now_allowed:>7,}"
                f" fine changed {row.fine_changed:>7,}"
                f" {row.fines_before:>12} -> {row.fines_after:>12}"
            )
        print(
            f"RSS: {rss_before:.1f} MB before reading, {rss_read:.1f} MB after reading, "
            f"{rss_after:.1f} MB after the replay; peak {peak:.1f} MB (seeding included)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
