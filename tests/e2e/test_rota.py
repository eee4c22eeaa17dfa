"""The duty rota changed from the command line, and a running guard picking it up."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import datetime
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import SecretStr

from pbxguard.adapters.policy_file import load_policy
from pbxguard.adapters.settings import AgiSettings, AmiSettings, LedgerSettings, Settings
from pbxguard.bootstrap import build
from pbxguard.entrypoints.daemon import Daemon
from pbxguard.simulator.ami_server import SimulatedPbx
from tests.support.guard import SECRET, until

REFERENCE = str(resources.files("pbxguard.policies").joinpath("reference-site.toml"))
SHANGHAI = ZoneInfo("Asia/Shanghai")


def site_with_rota_file(tmp_path: Path) -> Path:
    """A site policy that keeps its rota in a CSV file (and no inline shifts)."""
    policy = tmp_path / "site.toml"
    policy.write_text(
        f'schema = 1\nextends = "{REFERENCE}"\n\n[rota]\nfile = "rota.csv"\nweekly = []\n',
        encoding="utf-8",
    )
    return policy


def rota(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pbxguard", "rota", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_shifts_are_added_shown_and_removed(tmp_path: Path) -> None:
    policy = site_with_rota_file(tmp_path)
    added = rota(
        "add", "--policy", str(policy), "--line", "guard_room", "--person", "guard-li",
        "--weekday", "1", "--hours", "08:00-20:00",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    night = rota(
        "add", "--policy", str(policy), "--line", "guard_room", "--person", "zhang-wei",
        "--start", "2026-11-23T20:00", "--end", "2026-11-24T08:00",
    )  # fmt: skip
    assert night.returncode == 0, night.stderr
    shown = rota("show", "--policy", str(policy), "--date", "2026-11-23")
    assert shown.returncode == 0, shown.stderr
    rows = [line.split() for line in shown.stdout.splitlines() if line.startswith("guard_room")]
    assert rows == [
        ["guard_room", "00:00", "08:00", "无人", "nobody"],
        ["guard_room", "08:00", "20:00", "李保安"],
        ["guard_room", "20:00", "00:00", "张伟"],
    ]
    removed = rota(
        "remove", "--policy", str(policy), "--line", "guard_room", "--person", "zhang-wei",
        "--start", "2026-11-23T20:00", "--end", "2026-11-24T08:00",
    )  # fmt: skip
    assert removed.returncode == 0, removed.stderr
    loaded = load_policy(policy)
    assert loaded.policy.rota is not None
    assert (
        loaded.policy.rota.on_duty("guard_room", datetime(2026, 11, 23, 21, tzinfo=SHANGHAI))
        is None
    )


def test_unknown_person_and_inline_rota_are_clear_errors(tmp_path: Path) -> None:
    policy = site_with_rota_file(tmp_path)
    unknown = rota(
        "add", "--policy", str(policy), "--line", "guard_room", "--person", "nobody",
        "--weekday", "1", "--hours", "08:00-20:00",
    )  # fmt: skip
    assert unknown.returncode == 3
    assert "no person 'nobody'" in unknown.stderr
    inline = rota(
        "add", "--policy", REFERENCE, "--line", "guard_room", "--person", "guard-li",
        "--weekday", "1", "--hours", "08:00-20:00",
    )  # fmt: skip
    assert inline.returncode == 3
    assert "[rota] file" in inline.stderr


async def test_a_running_guard_reloads_the_rota_when_the_file_changes(tmp_path: Path) -> None:
    policy = site_with_rota_file(tmp_path)
    (tmp_path / "rota.csv").write_text("line,person,weekday,start,end\n", encoding="utf-8")
    async with SimulatedPbx([], secret=SECRET) as pbx:
        settings = Settings(
            policy=str(policy),
            ami=AmiSettings(host=pbx.host, port=pbx.port, secret=SecretStr(SECRET)),
            agi=AgiSettings(port=0),
            ledger=LedgerSettings(url=f"sqlite:///{tmp_path / 'l.sqlite3'}"),
            state_dir=str(tmp_path / "state"),
        )
        parts = build(
            settings,
            load_policy(policy),
            raise_on_auth_failure=True,
            loop=asyncio.get_running_loop(),
        )
        stop = asyncio.Event()
        task = asyncio.create_task(Daemon(parts, policy_check=0.05).run(stop))
        at = datetime(2026, 11, 23, 10, tzinfo=SHANGHAI)
        try:
            assert parts.guard.policy.rota is not None
            assert parts.guard.policy.rota.on_duty("hotline", at) is None
            changed = await asyncio.to_thread(
                rota,
                "add", "--policy", str(policy), "--line", "hotline", "--person", "duty-wang",
                "--weekday", "1", "--hours", "00:00-24:00",
            )  # fmt: skip
            assert changed.returncode == 0, changed.stderr

            def reloaded() -> bool:
                current = parts.guard.policy.rota
                return current is not None and current.on_duty("hotline", at) == "duty-wang"

            await until(reloaded, within=10)
        finally:
            stop.set()
            await task
