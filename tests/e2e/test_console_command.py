"""``pbxguard user`` and ``pbxguard console`` as processes, as an administrator runs them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

PBXGUARD = Path(sys.executable).with_name("pbxguard")
REFERENCE_POLICY = Path(__file__).parents[2] / "src/pbxguard/policies/reference-site.toml"
LISTENING = re.compile(r"http://(127\.0\.0\.1):(\d+)/")


def pbxguard(settings: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PBXGUARD_")}
    return subprocess.run(
        [str(PBXGUARD), *args, "--config", str(settings)],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_an_administrator_creates_accounts_and_serves_the_console(tmp_path: Path) -> None:
    settings = tmp_path / "pbxguard.toml"
    settings.write_text(
        f'policy = "{REFERENCE_POLICY}"\nstate_dir = "{tmp_path / "state"}"\n',
        encoding="utf-8",
    )
    added = pbxguard(
        settings, "user", "add", "admin", "--role", "administrator", stdin="a long password\n"
    )
    assert added.returncode == 0, added.stderr
    assert "admin" in added.stdout
    short = pbxguard(settings, "user", "add", "gm", "--role", "general_manager", stdin="short\n")
    assert short.returncode == 3
    assert "at least 10" in short.stderr
    nobody = pbxguard(
        settings,
        "user",
        "add",
        "head",
        "--role",
        "department_head",
        "--person",
        "nobody",
        stdin="a long password\n",
    )
    assert nobody.returncode == 3
    assert "nobody" in nobody.stderr
    listed = pbxguard(settings, "user", "list")
    assert listed.returncode == 0
    assert re.search(r"admin\s+administrator", listed.stdout)
    assert "a long password" not in listed.stdout

    env = {k: v for k, v in os.environ.items() if not k.startswith("PBXGUARD_")}
    process = subprocess.Popen(
        [str(PBXGUARD), "console", "--config", str(settings), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = LISTENING.search(line)
        assert found is not None, line
        base = f"http://{found.group(1)}:{found.group(2)}"
        assert httpx.get(f"{base}/healthz", timeout=10).json()["standalone"] is True
        with httpx.Client(base_url=base, timeout=10) as client:
            signed = client.post(
                "/api/v1/session", json={"username": "admin", "password": "a long password"}
            )
            assert signed.status_code == 200, signed.text
            users = client.get("/api/v1/users").json()["users"]
            assert [u["username"] for u in users] == ["admin"]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        if process.stdout is not None:
            process.stdout.close()
        if process.stderr is not None:
            process.stderr.close()
    disabled = pbxguard(settings, "user", "disable", "admin")
    assert disabled.returncode == 0
    assert "停用" in pbxguard(settings, "user", "list").stdout
