"""Budgets and velocity locks in a running guard: the simulated PBX, FastAGI, the SQLite ledger."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from pbxguard.adapters.ledger import CallLog, LedgerDatabase, LockBook
from pbxguard.adapters.policy_file import LoadedPolicy, load_policy
from pbxguard.bootstrap import Parts, build
from pbxguard.domain.records import CallRef, CallSummary, Layer
from pbxguard.entrypoints.daemon import Daemon
from pbxguard.protocol.ami import AmiMessage
from pbxguard.simulator.ami_server import SimulatedPbx
from tests.support.agi_client import AgiResult, agi_request
from tests.support.cli import Done, run_pbxguard
from tests.support.guard import (
    SECRET,
    ReplayClock,
    guard_against,
    reference_policy,
    settings_for,
    until,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
REFERENCE_SITE = Path(__file__).parents[2] / "src/pbxguard/policies/reference-site.toml"
# The recordings were made on Monday 23 November 2026 from 09:32 (Shanghai).
RECORDED = datetime(2026, 11, 23, 9, 30, tzinfo=SHANGHAI)
UK = "00441632960123"
# head-domestic-long-distance: 9001 dials 02787654321 (Wuhan), answered after 3 s.
HEAD_TRUNK = "Local/02787654321@pstn-00000003;1"

# 6.00 yuan a minute billed per second for Wuhan: 0.10 a second, so the budget's end falls
# inside the recorded call's four seconds of talk.
BUDGET = f"""
schema = 1
extends = "{REFERENCE_SITE}"

[tariff.by_prefix]
"027" = {{ per_minute = "6.00", increment_seconds = 1 }}

[[budgets]]
name = "long-distance"
per = "person"
money = "0.25"
classes = ["domestic_ld"]
"""


def budget_policy(tmp_path: Path) -> LoadedPolicy:
    path = tmp_path / "site-policy.toml"
    path.write_text(BUDGET, "utf-8")
    return load_policy(path)


def earlier_call(at: datetime, charge: str) -> CallSummary:
    """A long-distance call 9001 made before the guard started (in the ledger already)."""
    return CallSummary(
        call=CallRef("1795000000.1", "1795000000.1", "PJSIP/9001-00000001"),
        extension="9001",
        person_id="head-9001",
        person_name="Department head",
        department="工程部",
        caller_name="Department head",
        dialled="02787654321",
        number="02787654321",
        number_class="domestic_ld",
        direction="outbound",
        started_at=at,
        answered_at=at + timedelta(seconds=3),
        ended_at=at + timedelta(seconds=4),
        verdict="allow",
        rule_id="",
        outcome="answered",
        charge=Decimal(charge),
    )


def answered(message: AmiMessage) -> bool:
    return message.event == "DialEnd" and message.get("DialStatus") == "ANSWER"


async def test_a_live_call_is_cut_when_its_budget_runs_out(tmp_path: Path) -> None:
    """0.10 spent before the start leaves 0.15: the call is cut in its second second of talk."""
    loaded = budget_policy(tmp_path)
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    with LedgerDatabase.open(url, site=loaded.policy.site) as database:
        database.migrate()
        CallLog(database).record_call(earlier_call(RECORDED - timedelta(days=3), "0.10"))

    async with guard_against(
        ["head-domestic-long-distance"],
        tmp_path,
        loaded=loaded,
        speed=1.0,
        clock=ReplayClock(RECORDED),
        pause_after=answered,
    ) as run:
        await run.pbx.wait_until_paused()
        # Nothing but the guard's own timer can end the call now: the replay holds.
        async with asyncio.timeout(10):
            await run.pbx.wait_for_action("Hangup")
        # While it was cut, a new long-distance call of 9001 is refused before it rings.
        assert run.parts.agi is not None
        host, port = run.parts.agi.address
        refused = await agi_request(
            host,
            port,
            script="authorize",
            callerid="9001",
            extension="02787654321",
            args=("9001", "02787654321"),
            uniqueid="1795500000.7",
        )
        run.pbx.resume()
        await run.settle()
        calls = await run.calls()
        decisions = await asyncio.to_thread(CallLog(run.database).decisions)

    assert run.hangups() == [HEAD_TRUNK]
    [call] = [c for c in calls if c.call.linkedid != "1795000000.1"]
    assert call.outcome == "cut_in_call"
    assert call.answered_at is not None
    # Cut after the first second (0.10 + 0.20 reaches 0.25) and long before the recorded
    # hangup four seconds in; priced per started second.
    assert timedelta(seconds=1) <= call.talk_time < timedelta(seconds=2)
    assert call.charge == Decimal("0.20")
    ami = [(d.verdict, d.rule_id) for d in decisions if d.call.linkedid == call.call.linkedid]
    assert ami == [("allow", ""), ("deny", "BU-1")]
    [cut] = [d for d in decisions if d.rule_id == "BU-1" and d.layer is Layer.AMI]
    assert cut.reason_zh == "Department head本月国内长途预算已用完（0.30/0.25 元）"
    assert refused.variables["PBXGUARD_VERDICT"] == "deny"
    assert refused.variables["PBXGUARD_RULE"] == "BU-1"
    assert (
        "used up this month's domestic long-distance calls budget"
        in (refused.variables["PBXGUARD_REASON"])
    )


# -- velocity locks over FastAGI ---------------------------------------------------------------


class FakeClock:
    """A clock the test sets by hand."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


@dataclass
class Service:
    parts: Parts
    daemon: Daemon

    async def ask(self, extension: str, number: str) -> AgiResult:
        assert self.parts.agi is not None
        host, port = self.parts.agi.address
        return await agi_request(
            host,
            port,
            script="authorize",
            callerid=extension,
            extension=number,
            args=(extension, number),
            uniqueid=f"1795600000.{next(_uniqueids)}",
        )


_uniqueids = itertools.count(1)


@asynccontextmanager
async def running(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Service]:
    """A whole pbxguard (AMI to a simulated PBX, FastAGI on loopback) on ``tmp_path``'s state."""
    async with SimulatedPbx(["register-and-qualify"], secret=SECRET) as pbx:
        parts = build(
            settings_for(tmp_path, pbx),
            reference_policy(),
            clock=clock,
            raise_on_auth_failure=True,
            loop=asyncio.get_running_loop(),
        )
        daemon = Daemon(parts)
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        try:
            await until(lambda: daemon.started.is_set() or task.done())
            assert not task.done()
            yield Service(parts, daemon)
        finally:
            stop.set()
            async with asyncio.timeout(10):
                await task


async def cli(tmp_path: Path, *args: str) -> Done:
    """Run ``pbxguard ARGS`` as a user does, against the service's ledger."""
    settings = tmp_path / "pbxguard.toml"
    settings.write_text(
        f'policy = "{REFERENCE_SITE}"\nstate_dir = "{tmp_path / "state"}"\n'
        f'[ledger]\nurl = "sqlite:///{tmp_path / "ledger.sqlite3"}"\n',
        "utf-8",
    )
    return await run_pbxguard(settings, *args)


async def test_the_fifth_international_attempt_locks_the_phone_across_a_restart(
    tmp_path: Path,
) -> None:
    # The command line reads the real clock: the lock is made to be in force now.
    start = datetime.now(SHANGHAI).replace(second=0, microsecond=0) - timedelta(minutes=30)
    clock = FakeClock(start)
    async with running(tmp_path, clock) as service:
        for attempt in range(5):
            clock.at += timedelta(minutes=1)
            result = await service.ask("9001", UK)
            assert result.verdict == "allow", attempt
        clock.at += timedelta(minutes=1)
        locked = await service.ask("9001", UK)
        # Emergency numbers and other extensions are not locked.
        emergency = await service.ask("9001", "110")
        other = await service.ask("9002", "13800138000")
        guard = service.parts.guard
        assert guard.stats.alerts >= 1
        assert await asyncio.to_thread(service.parts.writer.wait_idle, 10)
        [lock] = LockBook(service.parts.database).active(clock.at, site="reference")

    until = start + timedelta(minutes=5 + 60)  # imposed by the fifth attempt, for an hour
    assert locked.variables == {
        "PBXGUARD_VERDICT": "deny",
        "PBXGUARD_RULE": "VL-1",
        "PBXGUARD_REASON": (
            f"extension 9001 made too many calls: international calls are locked until "
            f"{until:%H:%M}"
        ),
        "PBXGUARD_REASON_ZH": f"分机 9001 呼叫过于频繁，国际长途已锁定至 {until:%H:%M}",
    }
    assert emergency.verdict == "allow"
    assert other.verdict == "allow"
    assert lock.extension == "9001"
    assert lock.until == until

    # The lock survives a restart of the guard.
    clock.at += timedelta(minutes=10)
    async with running(tmp_path, clock) as service:
        still = await service.ask("9001", UK)
        assert still.variables["PBXGUARD_RULE"] == "VL-1"

        listing = await cli(tmp_path, "lock", "list")
        assert listing.returncode == 0, listing.stderr
        assert "分机 ext 9001" in listing.stdout
        assert "生效中 in force" in listing.stdout
        lifted = await cli(
            tmp_path, "lock", "lift", "1", "--by", "admin", "--reason", "已核实为正常业务"
        )
        assert lifted.returncode == 0, lifted.stderr
        assert "已解除锁定 lock lifted: 1" in lifted.stdout
        # Until the guard reads the ledger again the lock holds; then 9001 may dial abroad.
        assert (await service.ask("9001", UK)).verdict == "deny"
        await service.daemon.refresh_controls()
        assert (await service.ask("9001", UK)).verdict == "allow"

    listing = await cli(tmp_path, "lock", "list", "--all")
    assert listing.returncode == 0, listing.stderr
    assert "已解除 lifted" in listing.stdout
    assert "by admin" in listing.stdout
    again = await cli(tmp_path, "lock", "lift", "1", "--by", "admin", "--reason", "再次")
    assert again.returncode == 3
    assert "already lifted" in again.stderr
