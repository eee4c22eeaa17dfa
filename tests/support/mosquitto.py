"""Run a private mosquitto broker on loopback for integration tests.

Each broker gets its own directory (config, log, optional persistence file) and a free port on
127.0.0.1, and keeps that port across ``stop()``/``start()`` so a test can take the broker away
and bring it back where its clients expect it. A missing ``mosquitto`` binary fails the test with
a message saying how to install it or where to point ``MOSQUITTO``; it never skips.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import pytest

HOST = "127.0.0.1"
_FALLBACK_BINARY = Path("/usr/sbin/mosquitto")
_POLL_INTERVAL = 0.02


def mosquitto_binary() -> str:
    """Return the path of the mosquitto binary, failing the test when there is none."""
    override = os.environ.get("MOSQUITTO")
    if override:
        if not Path(override).is_file():
            pytest.fail(f"MOSQUITTO={override!r} does not name a file", pytrace=False)
        return override
    found = shutil.which("mosquitto")
    if found:
        return found
    if _FALLBACK_BINARY.is_file():
        return str(_FALLBACK_BINARY)
    pytest.fail(
        "the mosquitto broker is needed by this test but was not found on PATH or at "
        f"{_FALLBACK_BINARY}; install it (apt-get install mosquitto) or set MOSQUITTO to its path",
        pytrace=False,
    )


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


class MosquittoBroker:
    """A mosquitto process listening on 127.0.0.1 on a port fixed for the broker's lifetime.

    ``persistence`` is off by default so every test starts from an empty broker; a test that
    needs sessions and queued messages to survive a restart can turn it on.
    """

    def __init__(self, workdir: Path, *, persistence: bool = False) -> None:
        self.binary = mosquitto_binary()
        self.host = HOST
        self.port = free_port()
        self.workdir = workdir
        self.persistence = persistence
        self.config_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        """Tell whether the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "log_dest stdout",
            "connection_messages true",
            # As root, mosquitto would switch to a "mosquitto" user that cannot write here.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
        ]
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/"]
        else:
            lines.append("persistence false")
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def log_tail(self, lines: int = 30) -> str:
        """Return the last lines the broker logged, for failure messages."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    async def start(self, *, ready_within: float = 10.0) -> None:
        """Start the broker and return once it accepts TCP connections on its port."""
        if self.running:
            raise RuntimeError("mosquitto is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._log = self.log_path.open("ab")
        self._process = await asyncio.to_thread(
            subprocess.Popen,
            [self.binary, "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            await self._wait_accepting(ready_within)
        except BaseException:
            await self.stop()
            raise

    async def _wait_accepting(self, ready_within: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ready_within
        while True:
            process = self._process
            if process is None or process.poll() is not None:
                code = None if process is None else process.returncode
                pytest.fail(
                    f"mosquitto exited with status {code} before accepting connections on "
                    f"{self.host}:{self.port}:\n{self.log_tail()}",
                    pytrace=False,
                )
            try:
                _, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                if loop.time() >= deadline:
                    pytest.fail(
                        f"mosquitto did not accept connections on {self.host}:{self.port} "
                        f"within {ready_within} s:\n{self.log_tail()}",
                        pytrace=False,
                    )
                # Polling a port that is not open yet: there is no event to wait on.
                await asyncio.sleep(_POLL_INTERVAL)
                continue
            writer.close()
            await writer.wait_closed()
            return

    async def stop(self, *, grace: float = 10.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``grace`` seconds) and wait for it."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, grace)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)
        if self._log is not None:
            self._log.close()
            self._log = None

    async def restart(self) -> None:
        """Stop the broker and start it again on the same port."""
        await self.stop()
        await self.start()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
