"""The telesales quota assessed from the calls a running guard recorded, once, and reported.

The simulated PBX replays a working Monday (23 November 2026): 张伟 (2003) makes one answered
local call of about three seconds, 2002 a premium-rate call the guard cuts. The quota counts
calls that talked two seconds or more; the day is assessed the next night.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from pbxguard.adapters.ledger import CallLog
from pbxguard.adapters.policy_file import load_policy
from pbxguard.app.quota import QuotaWatch
from tests.support.guard import GuardRun, ReplayClock, guard_against

SHANGHAI = ZoneInfo("Asia/Shanghai")
PBXGUARD = Path(sys.executable).with_name("pbxguard")
TELESALES = """schema = 1
extends = "reference-site"

[telesales]
people = ["zhang-wei", "staff-2002"]
starts = 2026-11-23
min_talk_seconds = 2
"""


class FixedClock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


def next_night(run: GuardRun, at: datetime) -> QuotaWatch:
    """The daemon's quota job as it runs the next night (a fresh one: as after a restart)."""
    parts = run.parts
    return QuotaWatch(
        CallLog(parts.database),
        parts.offences,
        parts.guard.carry_out,
        lambda: parts.guard.policy,
        FixedClock(at),
        journal_pending=lambda: parts.journal.pending,
    )


async def test_a_short_day_is_fined_per_missing_call_once_and_shown(tmp_path: Path) -> None:
    policy_file = tmp_path / "site-policy.toml"
    policy_file.write_text(TELESALES, encoding="utf-8")
    loaded = load_policy(policy_file)
    during_the_day = ReplayClock(datetime(2026, 11, 23, 9, 40, tzinfo=SHANGHAI))
    async with guard_against(
        ["chinese-caller-name-local", "staff-premium-168"],
        tmp_path,
        loaded=loaded,
        clock=during_the_day,
    ) as run:
        await run.settle()
        # The daemon's own job has run: the day is not over, nothing is due.
        await run.parts.quota_watch.wait_for_passes(1)
        assert [o for o in await run.offences() if o.rule_id == "QU-1"] == []

        too_early = next_night(run, datetime(2026, 11, 24, 0, 30, tzinfo=SHANGHAI))
        assert await too_early.check_once() == []
        drafts = await next_night(run, datetime(2026, 11, 24, 2, 0, tzinfo=SHANGHAI)).check_once()
        assert [(d.person_id, d.units) for d in drafts] == [("zhang-wei", 119), ("staff-2002", 120)]
        await run.written()
        # Later that night, another process: the day is recorded already.
        again = next_night(run, datetime(2026, 11, 24, 3, 0, tzinfo=SHANGHAI))
        assert [d.key for d in await again.check_once()] == []
        await run.written()
        offences = [o for o in await run.offences() if o.rule_id == "QU-1"]
        ledger_url = run.parts.settings.ledger_url
    assert [(o.person_id, o.units, o.amount, o.citation) for o in offences] == [
        ("zhang-wei", 119, Decimal("595.00"), "001 L519-527"),
        ("staff-2002", 120, Decimal("600.00"), "001 L519-527"),
    ]
    assert offences[0].detail_en == "2026-11-23: 1 effective calls of 120 required, 119 missing"
    assert offences[0].at.astimezone(SHANGHAI) == datetime(
        2026, 11, 23, 23, 59, 59, tzinfo=SHANGHAI
    )

    settings = tmp_path / "pbxguard.toml"
    settings.write_text(
        f'policy = "{policy_file}"\nstate_dir = "{tmp_path / "cli-state"}"\n'
        f'[ledger]\nurl = "{ledger_url}"\n',
        encoding="utf-8",
    )

    def quota(*extra: str) -> subprocess.CompletedProcess[str]:
        command = [str(PBXGUARD), "quota", "--day", "2026-11-23", "--config", str(settings)]
        return subprocess.run(
            [*command, *extra], capture_output=True, text=True, timeout=60, check=False
        )

    shown = await asyncio.to_thread(quota, "--format", "json")
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)
    assert [(r["person"], r["effective"], r["missing"], r["fine"]) for r in rows] == [
        ("zhang-wei", 1, 119, "595.00"),
        ("staff-2002", 0, 120, "600.00"),
    ]
    assert {r["state"] for r in rows} == {"已记入台账 recorded"}
    table = await asyncio.to_thread(quota)
    assert table.returncode == 0, table.stderr
    assert "合计罚款 fines recorded: 1195.00 元 yuan" in table.stdout
