"""Every command of the README's "Everyday commands" block, run as written against the sample site.

The commands run through bash, from a temporary directory that holds a copy of
``examples/site`` at the same relative path, so they read exactly as in the README and
nothing they write (the ledger, the register workbook, the rota) lands in the repository.
The environment is a user's: no ``PBXGUARD_*`` variable is inherited; the only ones set say
where the PBX is (a socket of the test's own, as the machine is shared) and to bind FastAGI
on a free port.

``register fill 1`` needs a register entry: the site's ledger first receives the demo's
working day (2026-11-23), as a site's ledger holds its answered long-distance calls.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SITE = "examples/site"
SETTINGS = f"{SITE}/pbxguard.toml"
BIN = Path(sys.executable).parent


def everyday_commands() -> list[str]:
    """Return the commands of the README's "Everyday commands" block, continuations joined."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    _, found, section = readme.partition("\n## Everyday commands\n")
    assert found, "README.md has no '## Everyday commands' section"
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block is not None, "the 'Everyday commands' section has no ```sh block"
    joined = block.group(1).replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        text = line.strip()
        if text and not text.startswith("#"):
            commands.append(" ".join(text.split()))
    return commands


def words(command: str) -> list[str]:
    """Return the command's first words up to the first option (``pbxguard register fill``)."""
    head = []
    for word in command.split():
        if word.startswith("-"):
            break
        head.append(word)
    return head


def test_the_block_uses_the_sample_site_and_covers_every_command() -> None:
    commands = everyday_commands()
    assert len(commands) >= 11
    assert all(c.startswith("pbxguard ") for c in commands), commands
    for command in commands:
        if words(command)[:3] == ["pbxguard", "policy", "validate"]:
            assert f"{SITE}/" in command
        else:
            assert f"--config {SETTINGS}" in command, command
    verbs = {" ".join(words(c)[1:2]) for c in commands}
    expected = {"check", "policy", "ledger", "approve", "code", "register", "rota", "run"}
    assert expected <= verbs


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A directory laid out like the repository root, holding a copy of the sample site."""
    root = tmp_path / "repo"
    shutil.copytree(ROOT / SITE, root / SITE)
    return root


@pytest.fixture
def ami_listener() -> Iterator[socket.socket]:
    """A TCP socket where the settings' PBX would be: it takes connections and drops them."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(30)
        yield server


def user_environment(tmp_path: Path, ami_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PBXGUARD_")}
    home = tmp_path / "home"
    state = tmp_path / "state"
    home.mkdir()
    state.mkdir()
    env.pop("XDG_STATE_HOME", None)
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        HOME=str(home),
        STATE_DIRECTORY=str(state),
        PBXGUARD_AMI__PORT=str(ami_port),
        PBXGUARD_AGI__PORT="0",
    )
    return env


def snapshot(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def bash(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def describe(command: str, result: subprocess.CompletedProcess[str]) -> str:
    return (
        f"README command failed (exit {result.returncode}):\n  {command}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )


def check_verdict(command: str, result: subprocess.CompletedProcess[str]) -> None:
    """`check` exits 0 when the call is allowed and 1 when not; anything else is a failure."""
    assert result.returncode in (0, 1), describe(command, result)
    if "--json" in command:
        allowed = json.loads(result.stdout)["verdict"] == "allow"
    else:
        allowed = "放行 ALLOW" in result.stdout
        assert allowed or "LD-2" in result.stdout, describe(command, result)
    assert (result.returncode == 0) == allowed, describe(command, result)


def seed_the_ledger(workspace: Path, env: dict[str, str]) -> None:
    """Write the demo's working day into the ledger the sample site's settings name."""
    resolve = (
        "from pbxguard.adapters.settings import load_settings; "
        f"print(load_settings({SETTINGS!r}).ledger_url)"
    )
    found = subprocess.run(
        [sys.executable, "-c", resolve],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    url = found.stdout.strip()
    # The demo builds its own settings, which PBXGUARD_* variables would override.
    demo_env = {k: v for k, v in env.items() if not k.startswith("PBXGUARD_")}
    demo = subprocess.run(
        [str(BIN / "pbxguard"), "demo", "--speed", "0", "--ledger", url],
        cwd=workspace,
        env=demo_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert demo.returncode == 0, demo.stderr


def run_the_daemon(
    command: str, workspace: Path, env: dict[str, str], ami: socket.socket, logs: Path
) -> None:
    """Start `pbxguard run`, see it try AMI twice (it keeps retrying), stop it with SIGTERM."""
    with logs.open("w") as log:
        process = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=workspace,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    exited = os.pidfd_open(process.pid)
    try:
        for attempt in (1, 2):
            # Wait for a connection or for the daemon's exit, whichever comes first.
            ready, _, _ = select.select([ami, exited], [], [], 30)
            assert exited not in ready, (
                f"README command failed (exit {process.wait()}):\n  {command}\n{logs.read_text()}"
            )
            assert ami in ready, f"no AMI connection attempt {attempt} within 30 s"
            # The PBX is "there" but drops the connection: the daemon must come back.
            connection, _ = ami.accept()
            connection.close()
    finally:
        os.close(exited)
        process.send_signal(signal.SIGTERM)
        try:
            returncode = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            raise
    output = logs.read_text()
    assert returncode == 0, f"README command failed (exit {returncode}):\n  {command}\n{output}"
    events = [json.loads(line)["event"] for line in output.splitlines() if line.startswith("{")]
    assert "pbxguard starting" in events
    assert events[-1] == "pbxguard stopped"


def test_every_readme_command_runs_as_written(
    workspace: Path, ami_listener: socket.socket, tmp_path: Path
) -> None:
    commands = everyday_commands()
    before = snapshot(ROOT / SITE)
    env = user_environment(tmp_path, ami_listener.getsockname()[1])
    seed_the_ledger(workspace, env)

    ran = []
    for command in commands:
        verb = words(command)[1:]
        if verb == ["run"]:
            run_the_daemon(command, workspace, env, ami_listener, tmp_path / "run.log")
        else:
            result = bash(command, workspace, env)
            if verb == ["check"]:
                check_verdict(command, result)
            else:
                assert result.returncode == 0, describe(command, result)
        ran.append(verb[0])

    assert ran[-1] == "run"
    # What the commands wrote went to the copy, as the README says.
    assert list(workspace.glob("register-*.xlsx")), "no register workbook was written"
    rota = (workspace / SITE / "rota.csv").read_text(encoding="utf-8-sig")
    assert "guard_room,guard-li,Mon,08:00,20:00" in rota.splitlines()
    assert snapshot(ROOT / SITE) == before, "a README command changed the repository's files"
