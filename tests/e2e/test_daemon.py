"""The pbxguard command as a user runs it: the daemon, the demo, check, policy, ledger."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

import pytest

from pbxguard.simulator.ami_server import SimulatedPbx
from tests.support.guard import until

PBXGUARD = [sys.executable, "-m", "pbxguard"]
REFERENCE = str(resources.files("pbxguard.policies").joinpath("reference-site.toml"))


def pbxguard(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PBXGUARD, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def write_settings(tmp_path: Path, port: int) -> Path:
    config = tmp_path / "pbxguard.toml"
    config.write_text(
        f'policy = "{REFERENCE}"\n'
        'log_level = "info"\n'
        f'state_dir = "{tmp_path / "state"}"\n'
        "[ami]\n"
        f"port = {port}\n"
        "ping_interval = 1\n"
        "[agi]\n"
        "port = 0\n"
        "[ledger]\n"
        f'url = "sqlite:///{tmp_path / "ledger.sqlite3"}"\n',
        encoding="utf-8",
    )
    return config


async def test_daemon_enforces_logs_json_keeps_the_secret_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    secret = "s3cret-from-the-environment"
    async with SimulatedPbx(["staff-international-answered"], secret=secret, speed=0.05) as pbx:
        config = write_settings(tmp_path, pbx.port)
        process = await asyncio.create_subprocess_exec(
            *PBXGUARD,
            "run",
            "--config",
            str(config),
            env={**os.environ, "PBXGUARD_AMI__SECRET": secret},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(30):
                await pbx.wait_for_logins(1)
                await pbx.finished()
                await pbx.wait_for_action("Hangup")
        finally:
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(20):
                stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    lines = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    assert "pbxguard starting" in events
    assert "hangup accepted" in events
    assert events[-1] == "pbxguard stopped"
    # The stop says how long the event loop stalled at worst, and the collector's worst pause.
    assert lines[-1]["loop_worst_stall_ms"] >= 0
    assert lines[-1]["gc_worst_ms"] >= 0
    assert secret not in stderr.decode() + stdout.decode()
    [hangup] = pbx.actions_named("Hangup")
    assert hangup.message.get("Channel") == "Local/00441632960123@pstn-00000000;1"
    assert hangup.message.get("Cause") == "21"

    ledger = pbxguard("ledger", "--config", str(config), "--format", "json")
    assert ledger.returncode == 0, ledger.stderr
    [row] = json.loads(ledger.stdout)
    assert row["rule"] == "LD-2"
    assert row["amount"] == "500.00"
    assert row["person"] == "Staff 2001"


def test_a_refused_ami_login_is_logged_once_and_not_retried_in_a_loop(tmp_path: Path) -> None:
    """`pbxguard run` with a refused login logs one clear error and retries only slowly."""

    async def scenario() -> tuple[int | None, str]:
        async with SimulatedPbx([], secret="right") as pbx:
            config = write_settings(tmp_path, pbx.port)
            process = await asyncio.create_subprocess_exec(
                *PBXGUARD,
                "run",
                "--config",
                str(config),
                env={**os.environ, "PBXGUARD_AMI__SECRET": "not-the-secret-42"},
                stderr=asyncio.subprocess.PIPE,
            )
            await until(lambda: pbx.failed_logins >= 1, within=20)
            # A refused login must not be retried in a loop: over the next two seconds the
            # PBX sees no further attempt (the retry waits for the slow maximum backoff).
            await asyncio.sleep(2)
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(20):
                _, stderr = await process.communicate()
            return pbx.failed_logins, stderr.decode()

    failed, stderr = asyncio.run(scenario())
    assert failed == 1  # no tight loop
    assert "ami.login_refused" in stderr
    assert "not-the-secret-42" not in stderr


def test_demo_plays_a_working_day_and_prints_the_ledger() -> None:
    result = pbxguard("demo", "--speed", "60", timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "罚款台账 fine ledger" in out
    assert "LD-2" in out
    assert "PR-1" in out
    assert "EM-1" in out
    assert "张伟" in out
    # The duty phone unplugged in working hours: an open alert, and DT-1 recorded at the stop.
    assert "DT-1" in out
    assert "热线值班1（8001）不可达" in out
    # Emergency calls went through and were not fined.
    emergency_rows = [line for line in out.splitlines() if " 110 " in line or " 119 " in line]
    assert emergency_rows
    assert all("allow" in row for row in emergency_rows)


@pytest.mark.parametrize(
    ("extension", "number", "verdict", "rule", "amount"),
    [
        ("2001", "00441632960123", "deny", "LD-2", "500.00"),
        ("2001", "0085223456789", "deny", "LD-2", "100.00"),
        ("2001", "01087654321", "deny", "LD-2", "50.00"),
        ("2002", "16812345678", "deny", "PR-1", "50.00"),
        ("9001", "02787654321", "allow", "", None),
        ("8000", "110", "allow", "", None),
        ("8000", "13800138000", "deny", "EM-1", "50.00"),
        ("7777", "119", "allow", "", None),
    ],
)
def test_check_gives_the_verdict_with_rule_citation_and_fine(
    extension: str, number: str, verdict: str, rule: str, amount: str | None
) -> None:
    result = pbxguard("check", "--from", extension, number, "--policy", REFERENCE, "--json")
    assert result.returncode == (0 if verdict == "allow" else 1), result.stderr
    data = json.loads(result.stdout)
    assert data["verdict"] == verdict
    assert data["rule"] == rule
    assert (data["fine"]["amount"] if data["fine"] else None) == amount
    if rule:
        assert data["citation"].startswith("000 L")


def test_check_without_config_treats_an_unknown_extension_as_staff() -> None:
    result = pbxguard("check", "--from", "2999", "021 1234 5678")
    assert result.returncode == 0
    assert "放行 ALLOW" in result.stdout
    assert "本地电话 local" in result.stdout
    denied = pbxguard("check", "--from", "2999", "+44 1632 960123")
    assert denied.returncode == 1
    assert "LD-2" in denied.stdout
    assert "500.00" in denied.stdout


def test_check_rejects_garbage_with_a_reason() -> None:
    result = pbxguard("check", "--from", "2001", "sip:bob@example.com", "--json")
    data = json.loads(result.stdout)
    assert data["verdict"] == "deny"
    assert data["number_class"] == "invalid"
    assert "SIP URI" in data["class_note"]
    assert data["offence"] is False


def test_policy_validate_names_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "site.toml"
    bad.write_text(
        'schema = 1\nextends = "default"\n\n[site]\nname = "x"\n\n'
        '[[people]]\nid = "a"\nname = "A"\ndepartment = "D"\nrole = "boss"\n',
        encoding="utf-8",
    )
    result = pbxguard("policy", "validate", str(bad))
    assert result.returncode == 3
    assert f"{bad}:11" in result.stderr
    assert "no role named 'boss'" in result.stderr
    ok = pbxguard("policy", "validate", REFERENCE)
    assert ok.returncode == 0
    assert "OK" in ok.stdout


async def test_daemon_tells_systemd_it_is_ready_pings_the_watchdog_and_says_it_stops(
    tmp_path: Path,
) -> None:
    """Under ``Type=notify``: READY=1 once FastAGI listens, WATCHDOG=1 pings, STOPPING=1."""
    sockets = Path(tempfile.mkdtemp(prefix="sd-", dir="/tmp"))  # unix paths are short
    address = sockets / "notify"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(address))
    receiver.setblocking(False)
    loop = asyncio.get_running_loop()

    async def next_datagram() -> str:
        async with asyncio.timeout(20):
            data = await loop.sock_recv(receiver, 4096)
        return data.decode()

    try:
        # No AMI: the PBX is down, which must not hold the start back.
        config = write_settings(tmp_path, 1)
        process = await asyncio.create_subprocess_exec(
            *PBXGUARD,
            "run",
            "--config",
            str(config),
            env={**os.environ, "NOTIFY_SOCKET": str(address), "WATCHDOG_USEC": "400000"},
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            received = [await next_datagram()]
            while not any(m.startswith("READY=1") for m in received):
                received.append(await next_datagram())
            ready = next(m for m in received if m.startswith("READY=1"))
            assert "STATUS=运行中 running: site" in ready
            assert "FastAGI 127.0.0.1:" in ready
            pings = 0
            while pings < 3:  # every 0.2 s (half of WATCHDOG_USEC)
                pings += (await next_datagram()) == "WATCHDOG=1"
        finally:
            process.send_signal(signal.SIGTERM)
        stopping = await next_datagram()
        while stopping == "WATCHDOG=1":
            stopping = await next_datagram()
        assert stopping.startswith("STOPPING=1\nSTATUS=")
        async with asyncio.timeout(20):
            _, stderr = await process.communicate()
        assert process.returncode == 0, stderr.decode()
    finally:
        receiver.close()
        shutil.rmtree(sockets)
