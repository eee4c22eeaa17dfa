"""The Asterisk process of the bundle: start it in the foreground, talk to its CLI, stop it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

from tests.support.pbx import processes

_CLI_TIMEOUT = 20.0
_BOOT_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0


class AsteriskError(Exception):
    """Asterisk did not start, or a CLI command failed."""


class Asterisk:
    """One Asterisk of an unpacked bundle, run with ``-f`` so its PID is the process's own."""

    def __init__(self, runtime: Path) -> None:
        self.runtime = runtime
        self.script = runtime / "asterisk.sh"
        self.log_dir = runtime / "var" / "log" / "asterisk"
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        """The Asterisk process's PID while it runs."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    async def start(self) -> None:
        """Start Asterisk and wait until it reports itself fully booted.

        Raises:
            AsteriskError: it exited or did not boot in time.
        """
        console = (self.runtime / "asterisk-console.log").open("ab")
        try:
            # -f: stay in the foreground (no fork), so the PID is ours to stop; -n: no colours.
            self._process = await asyncio.create_subprocess_exec(
                str(self.script),
                "-f",
                "-n",
                "-vvvvv",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=console,
                stderr=console,
                start_new_session=True,
                preexec_fn=processes.die_with_parent,
            )
        finally:
            console.close()
        processes.started(self._process.pid)
        try:
            async with asyncio.timeout(_BOOT_TIMEOUT):
                while True:
                    if self._process.returncode is not None:
                        raise AsteriskError(
                            f"Asterisk exited at start-up ({self._process.returncode}): "
                            f"{self.tail()}"
                        )
                    # Fails while the control socket is not there yet; blocks until booted once
                    # it is: the boot itself is what is waited on.
                    done = await self._run_cli("core waitfullybooted")
                    if done[0] == 0 and "fully booted" in done[1].lower():
                        return
                    await asyncio.sleep(0.1)
        except TimeoutError as exc:
            raise AsteriskError(
                f"Asterisk did not boot in {_BOOT_TIMEOUT}s: {self.tail()}"
            ) from exc

    async def _run_cli(self, command: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            str(self.script),
            "-rx",
            command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with asyncio.timeout(_CLI_TIMEOUT):
                out, _ = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        assert process.returncode is not None
        return process.returncode, out.decode("utf-8", "replace")

    async def cli(self, command: str) -> str:
        """Run one CLI command (``asterisk -rx``) and return what it printed.

        Raises:
            AsteriskError: the command could not be run.
        """
        code, out = await self._run_cli(command)
        if code != 0:
            raise AsteriskError(f"asterisk -rx {command!r} failed ({code}): {out.strip()}")
        return out

    async def active_channels(self) -> int:
        """Return how many channels Asterisk has right now."""
        out = await self.cli("core show channels count")
        for line in out.splitlines():
            words = line.split()
            if len(words) >= 3 and words[1] == "active" and words[2].startswith("channel"):
                return int(words[0])
        raise AsteriskError(f"cannot read the channel count from {out!r}")

    def tail(self, lines: int = 30) -> str:
        """Return the end of Asterisk's log, for failure messages."""
        path = self.log_dir / "messages"
        if not path.exists():
            return "(no log yet)"
        return "\n".join(path.read_text("utf-8", "replace").splitlines()[-lines:])

    async def stop(self) -> None:
        """Stop Asterisk: ``core stop now``, then SIGKILL by PID if it does not go."""
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(AsteriskError, TimeoutError, OSError):
                await self.cli("core stop now")
        try:
            async with asyncio.timeout(_STOP_TIMEOUT):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)
            await process.wait()
        processes.reaped(process.pid)
