"""The Asterisk image's entrypoint: the site's files in place, the AMI secret from the environment.

The script runs for real (``sh``), on directories of the test's own; in place of Asterisk it
starts a small program that records its arguments. That Asterisk 22 takes the appended
``[pbxguard](+)`` secret (and refuses the sample one) was checked against the Asterisk
22.10.1 runtime the project's PBX tests use; docs/deployment.md says how.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "deploy" / "asterisk" / "docker-entrypoint.sh"
EX_CONFIG = 78


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    site = tmp_path / "asterisk-site"
    etc = tmp_path / "etc-asterisk"
    shutil.copytree(ROOT / "asterisk-config", site)
    etc.mkdir()
    (etc / "asterisk.conf").write_text("[directories]\n", encoding="utf-8")
    (etc / "manager.conf").write_text("; the sample, replaced by the site's\n", encoding="utf-8")
    fake = tmp_path / "asterisk"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{tmp_path}/asterisk-args"\n')
    fake.chmod(0o755)
    return {"site": site, "etc": etc, "asterisk": fake, "root": tmp_path}


def start(dirs: dict[str, Path], secret: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PBXGUARD_AMI_SECRET"}
    env.update(
        ASTERISK_SITE_DIR=str(dirs["site"]),
        ASTERISK_ETC_DIR=str(dirs["etc"]),
        ASTERISK_BINARY=str(dirs["asterisk"]),
    )
    if secret is not None:
        env["PBXGUARD_AMI_SECRET"] = secret
    return subprocess.run(
        ["sh", str(ENTRYPOINT), "-f", "-n", "-vvv"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_site_is_installed_and_the_ami_account_gets_the_secret(dirs: dict[str, Path]) -> None:
    secret = "Zm9vYmFy+/=-s3cret_42"
    result = start(dirs, secret)
    assert result.returncode == 0, result.stderr
    assert (dirs["root"] / "asterisk-args").read_text().split() == ["-f", "-n", "-vvv"]
    for name in ("extensions.conf", "pjsip.conf"):
        assert (dirs["etc"] / name).read_bytes() == (dirs["site"] / name).read_bytes()
    assert (dirs["etc"] / "asterisk.conf").read_text() == "[directories]\n"  # kept
    manager = (dirs["etc"] / "manager.conf").read_text(encoding="utf-8")
    site_manager = (dirs["site"] / "manager.conf").read_text(encoding="utf-8")
    assert manager.startswith(site_manager)  # the account's permissions as the site has them
    added = manager[len(site_manager) :].strip().splitlines()
    assert added[-2:] == ["[pbxguard](+)", f"secret = {secret}"]
    assert stat.S_IMODE((dirs["etc"] / "manager.conf").stat().st_mode) == 0o600
    assert secret not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("secret", "complaint"),
    [
        (None, "PBXGUARD_AMI_SECRET is not set"),
        ("", "PBXGUARD_AMI_SECRET is not set"),
        ("abc;def", "without ';'"),
        ("two\nlines", "must be one line"),
        (" padded", "surrounding spaces"),
        ("CHANGE-ME-to-a-long-random-secret", "still the sample value"),
    ],
)
def test_a_missing_or_unusable_secret_stops_the_start(
    dirs: dict[str, Path], secret: str | None, complaint: str
) -> None:
    result = start(dirs, secret)
    assert result.returncode == EX_CONFIG
    assert complaint in result.stderr
    assert not (dirs["root"] / "asterisk-args").exists()
    assert "[pbxguard](+)" not in (dirs["etc"] / "manager.conf").read_text(encoding="utf-8")


def test_without_the_sites_files_asterisk_does_not_start(dirs: dict[str, Path]) -> None:
    for conf in dirs["site"].glob("*.conf"):
        conf.unlink()
    result = start(dirs, "a-good-secret")
    assert result.returncode == EX_CONFIG
    assert "no *.conf files" in result.stderr
    assert not (dirs["root"] / "asterisk-args").exists()


def test_a_manager_conf_without_the_pbxguard_account_is_refused(dirs: dict[str, Path]) -> None:
    (dirs["site"] / "manager.conf").write_text("[general]\nenabled = yes\n", encoding="utf-8")
    result = start(dirs, "a-good-secret")
    assert result.returncode == EX_CONFIG
    assert "no [pbxguard] account" in result.stderr
