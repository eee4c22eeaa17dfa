"""What if: a month recorded by a running guard, judged again from the ledger under candidates.

The ledger is filled the way a site fills it: the guard against the simulated PBX replaying
recorded calls (international, long distance, premium, a local call, the alarm phone), plus a
call the dialplan refused over FastAGI before it rang. The replay reads it back (SQLite and
PostgreSQL), and never writes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from pbxguard.adapters.ledger import LedgerDatabase
from pbxguard.adapters.ledger.replay import RecordedCallLog
from pbxguard.app.replay import WhatIf
from pbxguard.domain.numbers import NumberClass
from pbxguard.domain.policy import Line, Policy
from pbxguard.domain.replay import Change
from tests.support.agi_client import agi_request
from tests.support.guard import ReplayClock, guard_against, reference_policy
from tests.support.postgres import ledger_url, postgres_cluster, postgres_url  # noqa: F401

PBXGUARD = Path(sys.executable).with_name("pbxguard")
RECORDINGS = [
    "staff-international-answered",
    "staff-premium-168",
    "staff-domestic-long-distance",
    "head-domestic-long-distance",
    "guardroom-emergency-110",
    "guardroom-misuse-mobile",
    "chinese-caller-name-local",
    "hk-call-cut-by-ami-hangup",
]
CURRENT = reference_policy().policy


async def seed(tmp_path: Path, url: str) -> None:
    """Record the calls, and one refused over FastAGI before it rang (2002 to Hong Kong)."""
    # The recorded sessions are of 23 November 2026: the refusal happens that morning too.
    morning = ReplayClock(datetime(2026, 11, 23, 9, 45, tzinfo=ZoneInfo("Asia/Shanghai")))
    async with guard_against(RECORDINGS, tmp_path, ledger_url=url, clock=morning) as run:
        await run.settle()
        assert run.parts.agi is not None
        host, port = run.parts.agi.address
        result = await agi_request(
            host,
            port,
            callerid="2002",
            extension="0085223456780",
            args=("2002", "0085223456780", "1795398999.1"),
            uniqueid="1795398999.1",
        )
        assert result.verdict == "deny"
        await run.written()


def candidate(change: str) -> Policy:
    staff = CURRENT.roles["staff"]
    if change == "hk_allowed":
        roles = {
            **CURRENT.roles,
            "staff": dataclasses.replace(staff, allowed=staff.allowed | {NumberClass.HK_MACAU}),
        }
        return dataclasses.replace(CURRENT, roles=roles)
    lines = {**CURRENT.lines, "2003": Line("2003", "推销线路", promotion=True)}
    return dataclasses.replace(CURRENT, lines=lines)


@pytest.mark.postgres
async def test_a_month_replayed_reads_back_what_was_recorded(
    tmp_path: Path,
    ledger_url: str,  # noqa: F811
) -> None:
    await seed(tmp_path, ledger_url)
    with LedgerDatabase.open(ledger_url, site="reference", read_only=True) as database:
        log = RecordedCallLog(database, page=3)  # several pages, both streams
        same = WhatIf(CURRENT, log, month="2026-11")
        assert list(same.changes()) == []
        # Every recorded call that reached a trunk, and the one refused before it rang.
        assert same.tally.calls == len(RECORDINGS) + 1
        # 500 + 50 (premium, cut before answer) + 50 + 50 (alarm phone) + 100 + 100 (FastAGI).
        assert same.tally.fines_before == same.tally.fines_after == Decimal("850.00")

        hk = WhatIf(candidate("hk_allowed"), log, month="2026-11")
        changes = list(hk.changes())
        assert sorted(
            (c.call.number, c.change, c.call.refused_before_ringing) for c in changes
        ) == [
            ("0085223456780", Change.NOW_ALLOWED, True),
            ("0085223456789", Change.NOW_ALLOWED, False),
        ]
        rows = {(r.rule_id, r.department): r for r in hk.tally.rows()}
        assert rows[("LD-2", "工程部")].now_allowed == 2
        assert rows[("LD-2", "工程部")].delta == Decimal("-200.00")

        dnd = WhatIf(candidate("promotion"), log, month="2026-11", dnd=frozenset({"02112345678"}))
        [change] = list(dnd.changes())
        assert (change.call.extension, change.change, change.rule_id) == (
            "2003",
            Change.NOW_REFUSED,
            "DND-1",
        )
        assert list(WhatIf(CURRENT, log, month="2026-10").changes()) == []


async def test_the_command_reports_and_leaves_the_ledger_as_it_was(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    await seed(tmp_path, url)
    policy = tmp_path / "candidate.toml"
    policy.write_text(
        'schema = 1\nextends = "reference-site"\n[roles.staff]\nname_zh = "一般员工"\n'
        'name_en = "Staff"\nallowed = ["internal", "service", "local", "mobile", "feature", '
        '"hk_macau"]\n',
        encoding="utf-8",
    )
    settings = tmp_path / "pbxguard.toml"
    settings.write_text(
        'policy = "reference-site.toml"\n'
        f'state_dir = "{tmp_path / "state"}"\n[ledger]\nurl = "{url}"\n',
        encoding="utf-8",
    )
    (tmp_path / "reference-site.toml").write_text(
        'schema = 1\nextends = "reference-site"\n', encoding="utf-8"
    )
    before = hashlib.sha256((tmp_path / "ledger.sqlite3").read_bytes()).hexdigest()

    def replay(*extra: str) -> subprocess.CompletedProcess[str]:
        command = [str(PBXGUARD), "replay", "--config", str(settings), "--policy", str(policy)]
        return subprocess.run(
            [*command, "--month", "2026-11", *extra],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    table = replay()
    assert table.returncode == 0, table.stderr
    assert "重新判定 calls judged again: 9" in table.stdout
    assert "改为放行 now allowed" in table.stdout
    assert "合计 total fines: 850.00 → 650.00 元 yuan (-200.00)" in table.stdout

    as_json = replay("--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["totals"] == {"calls": 9, "fines_before": "850.00", "fines_after": "650.00"}
    assert sorted(c["number"] for c in report["changes"]) == ["0085223456780", "0085223456789"]
    assert {(s["rule"], s["now_allowed"]) for s in report["summary"]} >= {("LD-2", 2)}

    written = tmp_path / "changes.csv"
    as_csv = replay("--format", "csv", "--output", str(written))
    assert as_csv.returncode == 0, as_csv.stderr
    lines = written.read_text(encoding="utf-8-sig").splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("时间 time,")

    bad_month = replay("--month", "2026-13")
    assert bad_month.returncode == 3
    assert hashlib.sha256((tmp_path / "ledger.sqlite3").read_bytes()).hexdigest() == before
