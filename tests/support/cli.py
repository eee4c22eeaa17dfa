"""Run the ``pbxguard`` command against a settings file: in this process, or as a process.

Most tests run it in-process (`run_pbxguard`): the same ``main()`` a user's shell reaches,
with stdout and stderr captured and no ``PBXGUARD_*`` variables in the environment, at a
fraction of a subprocess's cost. `run_pbxguard_process` runs the installed entry point as a
user would, for the smoke tests that must see a real process (its exit status, its encoding).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pbxguard.entrypoints.cli import main

PBXGUARD = Path(sys.executable).with_name("pbxguard")


@dataclass(frozen=True)
class Done:
    """How a command ended."""

    returncode: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def _without_pbxguard_variables() -> Iterator[None]:
    saved = {k: v for k, v in os.environ.items() if k.startswith("PBXGUARD_")}
    for key in saved:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(saved)


async def run_pbxguard(settings: Path, *args: str) -> Done:
    """Run ``pbxguard ARGS --config SETTINGS`` in this process; return how it ended.

    Synchronous on purpose: the command's output must not mix with log lines of anything else
    running on the loop.
    """
    out, err = io.StringIO(), io.StringIO()
    with (
        _without_pbxguard_variables(),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            status = main([*args, "--config", str(settings)])
        except SystemExit as exit_:  # argparse: a usage error or --help
            status = exit_.code if isinstance(exit_.code, int) else 2
    return Done(status, out.getvalue(), err.getvalue())


async def run_pbxguard_process(settings: Path, *args: str) -> Done:
    """Run ``pbxguard ARGS --config SETTINGS`` as a process with no ``PBXGUARD_*`` variables."""
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
