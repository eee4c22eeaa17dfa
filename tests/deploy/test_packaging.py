"""The package as an administrator gets it: the wheel the image builds, the licence, ``-m``."""

from __future__ import annotations

import email.parser
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# SHA-256 of the Apache License 2.0 as published at https://www.apache.org/licenses/LICENSE-2.0.txt
APACHE_2_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


def test_python_dash_m_pbxguard_prints_the_installed_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pbxguard", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"pbxguard {importlib.metadata.version('pbxguard')}"


def test_python_dash_m_pbxguard_is_the_command_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pbxguard", "policy", "validate", "no-such-policy.toml"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3
    assert "策略文件无效 invalid policy: no-such-policy.toml: file not found" in result.stderr


def test_the_licence_is_the_full_apache_2_text() -> None:
    text = (ROOT / "LICENSE").read_bytes()
    assert hashlib.sha256(text).hexdigest() == APACHE_2_SHA256


def build_stage_sources() -> list[str]:
    """Return what the Dockerfile's build stage copies into /src (the wheel's sources)."""
    sources: list[str] = []
    for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if line.startswith("FROM") and sources:
            break
        if line.startswith("COPY "):
            sources.extend(line.split()[1:-1])
    return sources


def test_the_wheel_builds_from_the_images_sources_without_deprecation_warnings(
    tmp_path: Path,
) -> None:
    source = tmp_path / "src-tree"
    source.mkdir()
    for name in build_stage_sources():
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("*.pyc"))
        else:
            shutil.copy(ROOT / name, source / name)
    out = tmp_path / "wheels"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--wheel-dir", str(out), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    warnings = [line for line in output.splitlines() if "deprecat" in line.lower()]
    assert warnings == []

    [wheel] = out.glob("pbxguard-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(
            archive.read(f"{dist_info}/METADATA").decode("utf-8")
        )
        licence = archive.read(f"{dist_info}/licenses/LICENSE")
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert licence == (ROOT / "LICENSE").read_bytes()
    for packaged in (
        "pbxguard/__main__.py",
        "pbxguard/py.typed",
        "pbxguard/policies/default.toml",
        "pbxguard/adapters/ledger/migrations/versions/0001_ledger_tables.py",
        "pbxguard/adapters/systemd.py",
    ):
        assert packaged in names, packaged
