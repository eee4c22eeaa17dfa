"""Fixtures of the real-PBX tier: one Asterisk site per session, a fresh pbxguard per test."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.support.pbx.bundle import BundleBroken, bundle_or_skip, unpack
from tests.support.pbx.daemon import PbxGuardProcess
from tests.support.pbx.measure import figures, tallies
from tests.support.pbx.site import PbxSite

#: Set to a directory to keep each run's files (logs of Asterisk, pjsua and pbxguard) there.
KEEP_ENV = "PBXGUARD_PBX_KEEP"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def site() -> AsyncIterator[PbxSite]:
    """Asterisk 22 with the project's dialplan, its AMI proxy, the phones and the carrier."""
    archive = bundle_or_skip()
    keep = os.environ.get(KEEP_ENV)
    with contextlib.ExitStack() as stack:
        if keep:
            # Kept for a post-mortem: Asterisk's logs, every pjsua's output, pbxguard's logs.
            workdir = Path(tempfile.mkdtemp(prefix="pbxguard-pbx-", dir=keep))
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pbxguard-pbx-")))
        try:
            runtime = unpack(archive, workdir / "bundle")
        except BundleBroken as exc:
            pytest.fail(f"the Asterisk bundle {archive} cannot be used: {exc}", pytrace=False)
        async with PbxSite.running(runtime, workdir) as running:
            yield running


@pytest_asyncio.fixture(loop_scope="session")
async def pbx(site: PbxSite) -> AsyncIterator[PbxSite]:
    """The site, idle: no call left over from an earlier test, every phone registered."""
    await _reset(site)
    yield site
    await _reset(site)


async def _reset(site: PbxSite) -> None:
    await site.quiesce()
    for ext, phone in site.phones.items():
        if not phone.running:
            await site.restart_phone(ext)


@pytest_asyncio.fixture(loop_scope="session")
async def guard(pbx: PbxSite) -> AsyncIterator[PbxGuardProcess]:
    """``pbxguard run`` beside the site, with a fresh ledger; stopped (by PID) afterwards."""
    async with pbx.guard() as process:
        yield process


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print what the tier measured and counted on the real PBX."""
    found = figures()
    if found:
        terminalreporter.section("measured on the real Asterisk")
        width = max(len(f.what) for f in found)
        for figure in found:
            terminalreporter.write_line(
                f"{figure.what:<{width}}  {figure.seconds * 1000:8.0f} ms   ({figure.expected})"
            )
    for kept in tallies():
        terminalreporter.section(kept.title)
        width = max((len(what) for what, _ in kept.lines), default=0)
        for what, value in kept.lines:
            terminalreporter.write_line(f"{what:<{width}}  {value}")
