"""Find and unpack the Asterisk runtime bundle the real-PBX tier runs on.

The bundle is a relocatable Asterisk 22 with PJSIP, res_agi and pjsua, packed with zstd. Its
path comes from ``PBXGUARD_ASTERISK_BUNDLE``. Without it the tier is skipped on a developer's
machine, but on CI (``CI`` set) a missing or broken bundle fails the run: a tier that silently
skips there proves nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ENV = "PBXGUARD_ASTERISK_BUNDLE"
_FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})
HOW_TO = (
    f"point {ENV} at an Asterisk 22 runtime bundle, e.g. "
    f"{ENV}=/path/to/asterisk-22.10.1-runtime-debian12-x86_64.tar.zst scripts/test tests/pbx "
    "(it needs zstd: apt-get install zstd)"
)


class BundleBroken(Exception):
    """The bundle exists but cannot be used; the message says why."""


def in_ci() -> bool:
    """Tell whether the tests run on CI, where the tier must never be skipped."""
    return os.environ.get("CI", "").strip().lower() not in _FALSE_WORDS


def bundle_or_skip() -> Path:
    """Return the bundle's path; skip (fail on CI) when none is configured or it is missing."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        message = f"no Asterisk bundle for the real-PBX tier: {HOW_TO}"
        if in_ci():
            pytest.fail(f"{message} (CI is set: the tier must run)", pytrace=False)
        pytest.skip(message)
    path = Path(value)
    if not path.is_file():
        pytest.fail(f"{ENV}={value!r} does not name a file: {HOW_TO}", pytrace=False)
    return path


def unpack(archive: Path, into: Path) -> Path:
    """Unpack ``archive`` under ``into`` and return the runtime's directory.

    Raises:
        BundleBroken: zstd is missing, the archive does not unpack, or it holds no Asterisk 22.
    """
    if shutil.which("zstd") is None:
        raise BundleBroken("the bundle is packed with zstd, which is not installed")
    into.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["tar", "-I", "zstd", "-xf", str(archive), "-C", str(into)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        raise BundleBroken(f"tar could not unpack {archive}: {done.stderr.strip()}")
    runtime = into / "asterisk-runtime"
    for needed in ("asterisk.sh", "pjsua.sh", "VERSION", "etc/asterisk/asterisk.conf.in"):
        if not (runtime / needed).exists():
            raise BundleBroken(f"{archive} holds no asterisk-runtime/{needed}")
    version = (runtime / "VERSION").read_text("utf-8")
    if "Asterisk 22" not in version:
        raise BundleBroken(f"{archive} is not an Asterisk 22 bundle: {version.strip()!r}")
    return runtime
