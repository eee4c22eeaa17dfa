"""``pbxguard demo``: a simulated PBX plays a working day; the guard enforces; the ledger shows.

No PBX, database server or broker is needed: the simulator replays calls recorded on a real
Asterisk 22, the ledger is a new SQLite file in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import secrets
import tempfile
from collections.abc import Sequence
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import SecretStr

from pbxguard.adapters.clock import ShiftedClock
from pbxguard.adapters.ledger import CallLog, LedgerDatabase, OffenceBook
from pbxguard.adapters.logs import configure_logging
from pbxguard.adapters.policy_file import LoadedPolicy, load_policy
from pbxguard.adapters.settings import AgiSettings, AmiSettings, LedgerSettings, Settings
from pbxguard.bootstrap import build
from pbxguard.domain.effects import RaiseAlert
from pbxguard.domain.entries import OffenceEntry
from pbxguard.domain.policy import Mode
from pbxguard.domain.records import CallSummary
from pbxguard.entrypoints.daemon import Daemon
from pbxguard.entrypoints.render import OFFENCE_COLUMNS, offence_row, render_table
from pbxguard.simulator.ami_server import SimulatedPbx, back_to_back

#: What the simulated PBX plays in the demo: a short working day at the reference site.
DEMO_DAY = (
    "register-and-qualify",
    "staff-international-answered",
    "head-domestic-long-distance",
    "staff-premium-168",
    "chinese-caller-name-local",
    "guardroom-emergency-110",
    "guardroom-misuse-mobile",
    "staff-domestic-long-distance",
    "hotline-unanswered",
    "hotline-answered-after-18s",
    "hk-call-cut-by-ami-hangup",
    "burst-mixed-calls",
    "duty-phone-unplugged",
)


def _demo_policy(mode: str) -> LoadedPolicy:
    path = Path(str(resources.files("pbxguard.policies").joinpath("reference-site.toml")))
    loaded = load_policy(path)
    return dataclasses.replace(loaded, policy=dataclasses.replace(loaded.policy, mode=Mode(mode)))


async def demo(args: argparse.Namespace) -> int:
    """Play a working day on a simulated PBX, enforce the regulations, print the ledger."""
    if not args.json_logs:
        configure_logging("warning")
    loaded = _demo_policy(args.mode)
    tz = loaded.policy.timezone
    workdir = Path(tempfile.mkdtemp(prefix="pbxguard-demo-"))
    url = args.ledger or f"sqlite:///{workdir / 'ledger.sqlite3'}"
    secret = secrets.token_urlsafe(12)
    start = datetime(2026, 11, 23, 9, 0, tzinfo=tz)
    playlist = back_to_back(DEMO_DAY, start=start, gap=timedelta(seconds=2))
    speed = 0.0 if args.speed <= 0 else 1.0 / args.speed
    print("模拟电话交换机正在播放一个工作日的通话 — a simulated PBX plays a working day of calls")
    print(f"  site {loaded.policy.site} · mode {loaded.policy.mode.value} · ledger {url}\n")
    async with SimulatedPbx(playlist, secret=secret, speed=speed) as pbx:
        settings = Settings(
            state_dir=str(workdir),
            ami=AmiSettings(
                host=pbx.host, port=pbx.port, secret=SecretStr(secret), ping_interval=5
            ),
            agi=AgiSettings(enabled=False),
            ledger=LedgerSettings(url=url),
        )
        parts = build(
            settings,
            loaded,
            clock=ShiftedClock(start),
            raise_on_auth_failure=True,
            loop=asyncio.get_running_loop(),
        )
        daemon = Daemon(parts)
        stop = asyncio.Event()
        runner = asyncio.create_task(daemon.run(stop))
        done, _ = await asyncio.wait(
            [runner, asyncio.ensure_future(pbx.finished())], return_when=asyncio.FIRST_COMPLETED
        )
        if runner in done:
            runner.result()
            return 1
        await parts.guard.settled()
        alerts = parts.guard.watch.open_alerts()
        stats = parts.guard.stats
        # Stopping records the outages still under way (the unplugged duty phone) and drains
        # the journal into the ledger.
        stop.set()
        await runner
    with LedgerDatabase.open(url, site=loaded.policy.site, read_only=True) as database:
        entries = OffenceBook(database).offences()
        calls = CallLog(database).calls()
    _print_demo(entries, calls, stats.hangups_accepted, tz, url)
    _print_alerts(alerts, stats.alerts, tz)
    return 0


def _print_alerts(alerts: Sequence[RaiseAlert], raised: int, zone: ZoneInfo) -> None:
    print(f"\n告警 alerts raised: {raised}; still open when the day ended: {len(alerts)}")
    for alert in alerts:
        since = alert.since.astimezone(zone).strftime("%H:%M:%S")
        print(f"  {since}  {alert.rule_id}  {alert.message_zh}")
        print(f"            {alert.message_en}")


def _print_demo(
    entries: Sequence[OffenceEntry],
    calls: Sequence[CallSummary],
    hangups: int,
    zone: ZoneInfo,
    url: str,
) -> None:
    call_rows = [
        {
            "at": c.started_at.astimezone(zone).strftime("%H:%M:%S"),
            "ext": c.extension,
            "who": c.person_name or c.caller_name or "-",
            "number": c.dialled,
            "class": c.number_class,
            "verdict": c.verdict,
            "rule": c.rule_id or "-",
            "outcome": c.outcome,
            "charge": str(c.charge),
        }
        for c in sorted(calls, key=lambda c: c.started_at)
    ]
    print("外呼 outbound calls")
    print(
        render_table(
            call_rows,
            (
                ("at", "时间", "time"),
                ("ext", "分机", "ext"),
                ("who", "主叫", "caller"),
                ("number", "号码", "number"),
                ("class", "类别", "class"),
                ("verdict", "判定", "verdict"),
                ("rule", "规则", "rule"),
                ("outcome", "结果", "outcome"),
                ("charge", "话费", "charge"),
            ),
        )
    )
    print(f"\n挂断 hung up by the guard: {hangups}\n")
    print("罚款台账 fine ledger")
    if entries:
        print(render_table([offence_row(e, zone) for e in entries], OFFENCE_COLUMNS))
    else:
        print("台账中没有符合条件的记录 — no offences match.")
    print(f"\n台账数据库 ledger database: {url}")
