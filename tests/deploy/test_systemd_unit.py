"""deploy/pbxguard.service and its sysusers.d file, checked by systemd's own tools.

``systemd-analyze verify`` loads the unit as systemd would, in a throwaway root that holds
the distribution's units and the daemon's entry point at the unit's ExecStart path, and must
print nothing at all (an unknown or misplaced key is only a warning there). ``systemd-analyze
security --offline`` scores the sandbox; ``systemd-sysusers --dry-run`` reads the user file.
Nothing here needs a running systemd.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "pbxguard.service"
SYSUSERS = ROOT / "deploy" / "pbxguard.sysusers"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None or not SYSTEM_UNITS.is_dir():
        pytest.fail(f"{name} is missing: apt-get install systemd (.ci/run does)", pytrace=False)
    return found


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Return section -> key -> values (a key may repeat, as SystemCallFilter= does)."""
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    section = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        sections[section][key.strip()].append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return read_unit(UNIT)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, unit: dict[str, dict[str, list[str]]]) -> Path:
    """A filesystem root where the unit is installed as the deployment guide installs it."""
    analyze = tool("systemd-analyze")
    assert analyze
    root = tmp_path_factory.mktemp("root")
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system/pbxguard.service")
    executable = shlex.split(unit["Service"]["ExecStart"][0])[0]
    target = root / executable.lstrip("/")
    target.parent.mkdir(parents=True)
    # The real entry point the virtualenv's pip wrote, as an install into /opt/pbxguard does.
    shutil.copy(Path(sys.executable).with_name("pbxguard"), target)
    (root / "etc/pbxguard").mkdir(parents=True)
    return root


def test_systemd_analyze_verify_accepts_the_unit_without_a_warning(root: Path) -> None:
    result = subprocess.run(
        [tool("systemd-analyze"), "verify", f"--root={root}", "pbxguard.service"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == ""


def test_the_sandbox_scores_as_well_exposed_at_most_two(root: Path) -> None:
    """systemd's exposure score, 0 (locked down) to 10; --threshold takes it times ten."""
    result = subprocess.run(
        [
            tool("systemd-analyze"),
            "security",
            "--offline=yes",
            f"--root={root}",
            "--threshold=20",
            "pbxguard.service",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    score = re.search(r"Overall exposure level for pbxguard.service: ([0-9.]+)", result.stdout)
    assert score is not None, result.stdout[-2000:]
    assert float(score.group(1)) <= 2.0


def test_the_unit_is_a_notify_service_with_a_watchdog_that_restarts_it(
    unit: dict[str, dict[str, list[str]]],
) -> None:
    service = unit["Service"]
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    [watchdog] = service["WatchdogSec"]
    assert re.fullmatch(r"\d+s?", watchdog)
    assert 0 < int(watchdog.rstrip("s")) <= 30
    assert service["Restart"][-1] in ("on-failure", "on-watchdog")
    assert shlex.split(service["ExecStart"][0])[1:] == [
        "run",
        "--config",
        "/etc/pbxguard/pbxguard.toml",
    ]


def test_state_config_and_secrets_go_where_systemd_puts_them(
    unit: dict[str, dict[str, list[str]]],
) -> None:
    service = unit["Service"]
    assert service["StateDirectory"] == ["pbxguard"]
    assert service["ConfigurationDirectory"] == ["pbxguard"]
    assert service["WorkingDirectory"] == ["%S/pbxguard"]
    # The AMI secret and the database password: a root-only file systemd reads for the daemon.
    assert service["EnvironmentFile"] == ["/etc/pbxguard/secrets.env"]
    assert not any("SECRET" in value or "PASSWORD" in value for value in service["Environment"])


def test_the_sandbox_directives_are_set(unit: dict[str, dict[str, list[str]]]) -> None:
    service = unit["Service"]
    expected = {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
    }
    for key, value in expected.items():
        assert service[key] == [value], key
    assert service["SystemCallFilter"][0] == "@system-service"


def test_the_ledger_writer_may_lower_its_own_priority(
    unit: dict[str, dict[str, list[str]]],
) -> None:
    """@resources is denied, but the writer process's SCHED_IDLE needs sched_setscheduler."""
    filters = unit["Service"]["SystemCallFilter"]
    assert "~@privileged @resources" in filters
    assert filters.index("sched_setscheduler") > filters.index("~@privileged @resources")
    assert unit["Service"]["RestrictRealtime"] == ["yes"]


def test_the_user_comes_from_the_sysusers_file(unit: dict[str, dict[str, list[str]]]) -> None:
    assert "DynamicUser" not in unit["Service"]
    [user] = unit["Service"]["User"]
    lines = [
        shlex.split(line)
        for line in SYSUSERS.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert [line[:2] for line in lines] == [["u", user]]
    assert lines[0][4] == "/var/lib/pbxguard"  # home: the state directory


def test_systemd_sysusers_would_create_the_user(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n", encoding="utf-8")
    (tmp_path / "etc" / "group").write_text("root:x:0:\n", encoding="utf-8")
    result = subprocess.run(
        [tool("systemd-sysusers"), f"--root={tmp_path}", "--dry-run", str(SYSUSERS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "Creating user 'pbxguard' (pbxguard telephone regulations guard)" in output
    assert "Would write /etc/passwd" in output
