"""`pbxguard run` that cannot start says why in one line and exits 3, never with a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PBXGUARD = [sys.executable, "-m", "pbxguard"]
EXIT_CONFIG = 3


def run(config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PBXGUARD_")}
    return subprocess.run(
        [*PBXGUARD, "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def settings(tmp_path: Path, body: str, *, state_dir: Path | None = None) -> Path:
    config = tmp_path / "pbxguard.toml"
    state = state_dir or tmp_path / "state"
    config.write_text(f'state_dir = "{state}"\n{body}', encoding="utf-8")
    return config


def refused_with(result: subprocess.CompletedProcess[str]) -> str:
    """Check the shape of a refused start and return its one message line."""
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "Traceback" not in result.stderr
    assert "ExceptionGroup" not in result.stderr
    # Log lines (JSON) may come first; the message is one line of its own, not JSON.
    messages = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert len(messages) == 1, result.stderr
    return messages[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        yield holder.getsockname()[1]
    finally:
        holder.close()


def test_a_busy_fastagi_port(tmp_path: Path, busy_port: int) -> None:
    message = refused_with(run(settings(tmp_path, f"[ami]\nport = 1\n[agi]\nport = {busy_port}\n")))
    assert message.startswith("配置错误 configuration error: ")
    assert f"127.0.0.1:{busy_port}" in message
    assert "Address already in use" in message


def test_an_invalid_policy_names_its_file_and_line(tmp_path: Path) -> None:
    policy = tmp_path / "site-policy.toml"
    policy.write_text('schema = 1\n[site]\nname = "hq"\nmode = "bogus"\n', encoding="utf-8")
    message = refused_with(run(settings(tmp_path, f'policy = "{policy.name}"\n')))
    assert message.startswith("策略文件无效 invalid policy: ")
    assert f"{policy}:4: site.mode" in message


def test_a_missing_policy_file(tmp_path: Path) -> None:
    message = refused_with(run(settings(tmp_path, 'policy = "nowhere.toml"\n')))
    assert "nowhere.toml" in message
    assert "not found" in message


def test_a_state_directory_it_cannot_write(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    config = settings(tmp_path, "[ami]\nport = 1\n[agi]\nport = 0\n", state_dir=blocker / "state")
    message = refused_with(run(config))
    assert "状态目录不可写" in message
    assert str(blocker / "state") in message
    assert "could lose offences" in message


def test_a_settings_file_with_an_unknown_key(tmp_path: Path) -> None:
    message = refused_with(run(settings(tmp_path, "[agi]\nprot = 4573\n")))
    assert "agi.prot" in message
