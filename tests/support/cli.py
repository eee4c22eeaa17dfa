"""Run the ``pbxguard`` command as a user does, against a settings file."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

PBXGUARD = Path(sys.executable).with_name("pbxguard")


@dataclass(frozen=True)
class Done:
    """How a command ended."""

    returncode: int
    stdout: str
    stderr: str


async def run_pbxguard(settings: Path, *args: str) -> Done:
    """Run ``pbxguard ARGS --config SETTINGS`` with no ``PBXGUARD_*`` variables inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PBXGUARD_")}
    process = await asyncio.create_subprocess_exec(
        str(PBXGUARD),
        *args,
        "--config",
        str(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return Done(process.returncode, out.decode("utf-8"), err.decode("utf-8"))
