"""A FastAGI server in a process of its own with a small descriptor limit, for tests that use it up.

Run it as ``python -m tests.support.fastagi_process --open-files 32 …``. It logs JSON lines on
stderr (the daemon's own set-up; ``fastagi.listening`` says where it listens) and obeys lines
on stdin: ``hog`` opens descriptors until there is none left, as another part of the daemon
leaking them would; ``release`` closes them. The end of stdin stops the server, which then logs
its counters in ``fastagi.closed``.

`FastAgiProcess` starts it from a test and reads its log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sys
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import structlog

from pbxguard.adapters.fastagi import AgiChannel, FastAgiServer
from pbxguard.adapters.logs import configure_logging
from pbxguard.protocol.agi import AgiEnvironment
from tests.support.log_watch import LogWatch

log = structlog.get_logger(__name__)
REPOSITORY = Path(__file__).resolve().parents[2]


async def authorize(env: AgiEnvironment, channel: AgiChannel) -> None:
    """Ask the channel something, then set the verdict: the client may hold its answer."""
    await channel.get_variable("PBXGUARD_PIN_TRIES")
    _caller, number = env.args
    await channel.set_variable("PBXGUARD_VERDICT", "deny" if number.startswith("00") else "allow")


async def _serve(options: argparse.Namespace) -> None:
    server = FastAgiServer(
        {"authorize": authorize},
        host="127.0.0.1",
        port=0,
        request_timeout=options.request_timeout,
        max_connections=options.max_connections,
    )
    await server.start()
    loop = asyncio.get_running_loop()
    hogged: list[int] = []
    stdin_closed = asyncio.Event()

    def obey() -> None:
        data = os.read(0, 4096)
        if not data:
            loop.remove_reader(0)
            stdin_closed.set()
            return
        for command in data.decode().split():
            if command == "hog":
                with contextlib.suppress(OSError):
                    while True:
                        hogged.append(os.open(os.devnull, os.O_RDONLY))
                log.info("test.hogged", descriptors=len(hogged))
            elif command == "release":
                for fd in hogged:
                    os.close(fd)
                hogged.clear()
                log.info("test.released")

    loop.add_reader(0, obey)
    await stdin_closed.wait()
    for fd in hogged:
        os.close(fd)
    await server.close()


def main() -> None:
    """Limit the descriptors, then serve until stdin ends."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--open-files", type=int, required=True)
    parser.add_argument("--request-timeout", type=float, default=20.0)
    parser.add_argument("--max-connections", type=int, default=1000)
    options = parser.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (options.open_files, hard))
    configure_logging("info", json=True)
    asyncio.run(_serve(options))


class FastAgiProcess:
    """The server process seen from a test: its address, its log, and its commands."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self.logs = LogWatch()
        self.stderr: list[str] = []
        self._reading = asyncio.create_task(self._read_log())
        self.address: tuple[str, int] = ("", 0)

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls, *, open_files: int, request_timeout: float = 20.0
    ) -> AsyncIterator[FastAgiProcess]:
        """Start the server, wait until it listens, and stop it when the block ends."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.fastagi_process",
            "--open-files",
            str(open_files),
            "--request-timeout",
            str(request_timeout),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            cwd=REPOSITORY,
        )
        running = cls(process)
        try:
            async with asyncio.timeout(30):
                [listening] = await running.logs.wait_for("fastagi.listening")
            running.address = (listening["host"], listening["port"])
            yield running
        finally:
            await running.stop()

    async def command(self, command: str) -> None:
        """Send one command line (``hog``, ``release``)."""
        assert self._process.stdin is not None
        self._process.stdin.write(f"{command}\n".encode())
        await self._process.stdin.drain()

    async def stop(self) -> None:
        """End stdin, wait for the server to close and the process to exit."""
        assert self._process.stdin is not None
        if not self._process.stdin.is_closing():
            self._process.stdin.close()
        try:
            async with asyncio.timeout(30):
                await self._process.wait()
                await self._reading
        finally:
            if self._process.returncode is None:
                self._process.kill()
                await self._process.wait()

    async def _read_log(self) -> None:
        assert self._process.stderr is not None
        async for raw in self._process.stderr:
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            self.stderr.append(line)
            with contextlib.suppress(ValueError):
                entry: MutableMapping[str, Any] = json.loads(line)
                if isinstance(entry, dict) and "event" in entry:
                    entry["log_level"] = entry.get("level", "")
                    self.logs.entries.append(entry)
                    self.logs.notify(None, "", entry)


if __name__ == "__main__":
    main()
