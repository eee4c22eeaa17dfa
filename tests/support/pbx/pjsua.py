"""pjsua softphones driven through their stdin, watched through their stdout.

pjsua reads keyboard commands from stdin (``m`` and a URI places a call, ``a`` and a code
answers, ``h`` hangs up, ``#`` sends RFC 4733 digits, ``x`` transfers). What it does is read
back from its log lines: every SIP message it sends or receives (``--app-log-level=5`` prints
each in full, between its ``RX``/``TX`` line and ``--end msg--``), call state changes and
registrations.

The lines are read from stdout on a pseudo-terminal, not from ``--log-file``: pjsua writes its
log file through a stdio buffer it does not flush per message (8 KB at a time), so the file is
a record for after the test, not a live feed; on a terminal, stdout is flushed line by line.
Each line carries pjsua's own time of day in milliseconds; intervals between two phones'
messages are taken from those stamps (one clock, no reading delay).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import re
import signal
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tests.support.pbx import processes

T = TypeVar("T")

HOST = "127.0.0.1"
WAIT = 15.0
_STAMP = re.compile(r"(\d\d):(\d\d):(\d\d)\.(\d{3}) ")
_MESSAGE_HEAD = re.compile(
    r"\b(?P<direction>RX|TX) \d+ bytes (?P<kind>Request|Response) msg (?P<what>\S+)"
)
_STATE = re.compile(r"Call (?P<call>\d+) state changed to (?P<state>[A-Z]+)")
_DISCONNECTED = re.compile(
    r"Call (?P<call>\d+) is DISCONNECTED \[reason=(?P<code>\d+) \((?P<text>[^)]*)\)"
)
_END = "--end msg--"


def seconds_of_day(line: str) -> float | None:
    """Read pjsua's ``HH:MM:SS.mmm`` stamp at the start of a log line."""
    match = _STAMP.search(line[:40])
    if match is None:
        return None
    h, m, s, ms = (int(g) for g in match.groups())
    return h * 3600 + m * 60 + s + ms / 1000


def interval(start: float, end: float) -> float:
    """Seconds from one pjsua stamp to a later one (across midnight too)."""
    return (end - start) % 86400


@dataclass(frozen=True, slots=True)
class SipMessage:
    """One SIP message a phone sent (TX) or received (RX)."""

    direction: str
    start_line: str
    headers: dict[str, str]
    stamp: float
    seen: float

    @property
    def is_request(self) -> bool:
        return not self.start_line.startswith("SIP/2.0")

    @property
    def method(self) -> str:
        """The request's method, or the CSeq method of a response."""
        if self.is_request:
            return self.start_line.split(" ", 1)[0]
        return self.headers.get("cseq", " ").split()[-1]

    @property
    def status(self) -> int | None:
        """A response's status code."""
        if self.is_request:
            return None
        return int(self.start_line.split()[1])

    @property
    def call_id(self) -> str:
        return self.headers.get("call-id", "")

    @property
    def user(self) -> str:
        """The user part of a request's URI: the dialled number on an INVITE."""
        if not self.is_request:
            return ""
        uri = self.start_line.split()[1]
        return uri.removeprefix("sip:").split("@", 1)[0] if "@" in uri else ""


@dataclass(frozen=True, slots=True)
class CallState:
    """A call state change pjsua reported (``CALLING``, ``EARLY``, ``CONFIRMED``...)."""

    call: int
    state: str
    stamp: float
    seen: float
    code: int | None = None
    reason: str = ""


@dataclass
class _Parser:
    """Turns pjsua's stdout lines into messages, call states and registrations."""

    messages: list[SipMessage] = field(default_factory=list)
    states: list[CallState] = field(default_factory=list)
    registrations: int = 0
    lines: list[str] = field(default_factory=list)
    _pending: tuple[str, float, list[str]] | None = None
    _last_stamp: float = 0.0

    def feed(self, raw: str, seen: float) -> None:
        line = raw.rstrip("\r")
        self.lines.append(line)
        stamp = seconds_of_day(line)
        if stamp is not None:
            self._last_stamp = stamp
        if self._pending is not None:
            direction, started, body = self._pending
            if line.strip() == _END:
                self._pending = None
                self._finish(direction, started, body, seen)
            else:
                body.append(line)
            return
        head = _MESSAGE_HEAD.search(line)
        if head is not None:
            self._pending = (head["direction"], self._last_stamp, [])
            return
        if (found := _DISCONNECTED.search(line)) is not None:
            self.states.append(
                CallState(
                    int(found["call"]),
                    "DISCONNECTED",
                    self._last_stamp,
                    seen,
                    int(found["code"]),
                    found["text"],
                )
            )
        elif (found := _STATE.search(line)) is not None:
            self.states.append(
                CallState(int(found["call"]), found["state"], self._last_stamp, seen)
            )
        elif "registration success" in line:
            self.registrations += 1

    def _finish(self, direction: str, stamp: float, body: list[str], seen: float) -> None:
        lines = [b for b in body if b.strip()]
        if not lines:
            return
        headers: dict[str, str] = {}
        for text in lines[1:]:
            name, sep, value = text.partition(":")
            if sep and name.strip().lower() not in headers:
                headers[name.strip().lower()] = value.strip()
        self.messages.append(SipMessage(direction, lines[0].strip(), headers, stamp, seen))


class Phone:
    """One pjsua process: a registered phone, or the carrier (no registration)."""

    def __init__(
        self,
        name: str,
        runtime: Path,
        workdir: Path,
        *,
        local_port: int,
        rtp_port: int,
        identity: str,
        registrar: str | None = None,
        password: str = "",
        auto_answer: int = 180,
    ) -> None:
        self.name = name
        self.runtime = runtime
        self.workdir = workdir
        self.local_port = local_port
        self.rtp_port = rtp_port
        self.identity = identity
        self.registrar = registrar
        self.password = password
        self.auto_answer = auto_answer
        self.log_file = workdir / f"pjsua-{name}.log"
        self.stdout_file = workdir / f"pjsua-{name}.out"
        self._process: asyncio.subprocess.Process | None = None
        self._parser = _Parser()
        self._changed = asyncio.Event()
        self._transport: asyncio.ReadTransport | None = None
        self._buffer = ""
        self._out: list[str] = []

    # -- life ---------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def _argv(self) -> list[str]:
        argv = [
            str(self.runtime / "pjsua.sh"),
            "--null-audio",
            "--no-vad",
            "--no-tcp",
            "--no-color",
            f"--bound-addr={HOST}",
            f"--ip-addr={HOST}",
            f"--local-port={self.local_port}",
            f"--rtp-port={self.rtp_port}",
            "--max-calls=4",  # the bundled build's limit (PJSUA_MAX_CALLS)
            f"--auto-answer={self.auto_answer}",
            f"--log-file={self.log_file}",
            "--log-level=5",
            "--app-log-level=5",
            f"--id={self.identity}",
        ]
        if self.registrar is not None:
            user = self.identity.removeprefix("sip:").split("@", 1)[0]
            argv += [
                f"--registrar={self.registrar}",
                "--realm=*",
                f"--username={user}",
                f"--password={self.password}",
                "--reg-timeout=300",
            ]
        return argv

    async def start(self) -> None:
        """Start pjsua (a phone waits for its registration: see :meth:`wait_registered`)."""
        self._parser = _Parser()
        master, slave = pty.openpty()
        attributes = termios.tcgetattr(slave)
        attributes[3] &= ~termios.ECHO  # the commands written to stdin are not echoed back
        termios.tcsetattr(slave, termios.TCSANOW, attributes)
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self._argv(),
                stdin=asyncio.subprocess.PIPE,
                stdout=slave,
                stderr=slave,
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=processes.die_with_parent,
            )
        finally:
            os.close(slave)
        processes.started(self._process.pid)
        loop = asyncio.get_running_loop()
        reader = os.fdopen(master, "rb", buffering=0)
        transport, _ = await loop.connect_read_pipe(lambda: _PtyProtocol(self), reader)
        self._transport = transport

    def _receive(self, data: bytes) -> None:
        seen = time.monotonic()
        text = self._buffer + data.decode("utf-8", "replace")
        *complete, self._buffer = text.split("\n")
        for line in complete:
            self._parser.feed(line.removeprefix(">>> "), seen)
        self._out.extend(complete)
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_registered(self, count: int = 1, within: float = WAIT) -> None:
        """Wait for the ``count``-th successful registration since the start."""
        await self.wait_until(lambda: self._parser.registrations >= count or None, within)

    def kill(self) -> None:
        """SIGKILL pjsua: the phone vanishes without unregistering (a phone unplugged)."""
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        """Quit pjsua (``q``); SIGKILL it by PID if it does not go."""
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                self._send("ha", "q")
            try:
                async with asyncio.timeout(5):
                    await process.wait()
            except TimeoutError:
                self.kill()
                await process.wait()
        else:
            await process.wait()
        processes.reaped(process.pid)
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self.stdout_file.write_text("\n".join(self._out), "utf-8")

    async def wait_exited(self, within: float = WAIT) -> None:
        """Wait for the pjsua process to be gone."""
        assert self._process is not None
        async with asyncio.timeout(within):
            await self._process.wait()

    # -- commands -------------------------------------------------------------------------

    def _send(self, *lines: str) -> None:
        process = self._process
        if process is None or process.returncode is not None or process.stdin is None:
            raise RuntimeError(f"pjsua {self.name} is not running")
        process.stdin.write("".join(f"{line}\n" for line in lines).encode())

    def call(self, uri: str) -> float:
        """Place a call to ``uri``; return the monotonic time the command was given."""
        at = time.monotonic()
        self._send("m", uri)
        return at

    async def ringing(self, *, since: float, within: float = WAIT) -> CallState:
        """Wait for an incoming call to ring here (its 180 sent): it can then be answered."""
        return await self.wait_until(
            lambda: next((s for s in self.states if s.seen >= since and s.state == "EARLY"), None),
            within,
        )

    def answer(self, code: int = 200) -> None:
        """Answer the current incoming call with ``code``."""
        self._send("a", str(code))

    def hangup(self) -> None:
        """Hang up the current call."""
        self._send("h")

    def hangup_all(self) -> None:
        """Hang up every call."""
        self._send("ha")

    def send_dtmf(self, digits: str) -> None:
        """Send ``digits`` as RFC 4733 (RFC 2833) telephone events on the current call."""
        self._send("#", digits)

    def transfer(self, uri: str) -> None:
        """Blind-transfer the current call to ``uri`` (a REFER)."""
        self._send("x", uri)

    # -- what happened --------------------------------------------------------------------

    @property
    def messages(self) -> list[SipMessage]:
        return self._parser.messages

    @property
    def states(self) -> list[CallState]:
        return self._parser.states

    @property
    def lines(self) -> list[str]:
        return self._parser.lines

    def requests(
        self, method: str, direction: str = "RX", *, since: float = 0.0
    ) -> list[SipMessage]:
        """Requests of one method, the first of each transaction (retransmissions dropped)."""
        seen: set[tuple[str, str]] = set()
        found: list[SipMessage] = []
        for message in self.messages:
            if (
                message.direction != direction
                or not message.is_request
                or message.method != method
                or message.seen < since
            ):
                continue
            key = (message.call_id, message.headers.get("cseq", ""))
            if key in seen:
                continue
            seen.add(key)
            found.append(message)
        return found

    def calls_received(self, *, since: float = 0.0) -> list[SipMessage]:
        """The INVITEs of new calls received (one per Call-ID), oldest first."""
        first: dict[str, SipMessage] = {}
        for message in self.requests("INVITE", since=since):
            if "tag=" in message.headers.get("to", ""):
                continue  # a re-INVITE inside a dialog, not a new call
            first.setdefault(message.call_id, message)
        return list(first.values())

    async def wait_until(self, probe: Callable[[], T | None], within: float = WAIT) -> T:
        """Wait until ``probe()`` returns something other than None (or False); return it."""
        async with asyncio.timeout(within):
            while True:
                result = probe()
                if result is not None and result is not False:
                    return result
                process = self._process
                if process is None or process.returncode is not None:
                    raise RuntimeError(f"pjsua {self.name} is not running; it said: {self.tail()}")
                changed = asyncio.ensure_future(self._changed.wait())
                exited = asyncio.ensure_future(process.wait())
                try:
                    await asyncio.wait((changed, exited), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    changed.cancel()
                    exited.cancel()

    def tail(self, lines: int = 15) -> str:
        """The last lines pjsua printed, for failure messages."""
        return "\n".join(self._parser.lines[-lines:])


class _PtyProtocol(asyncio.Protocol):
    def __init__(self, phone: Phone) -> None:
        self._phone = phone

    def data_received(self, data: bytes) -> None:
        self._phone._receive(data)

    def connection_lost(self, exc: Exception | None) -> None:
        # A pty reports EIO once the last writer (pjsua) is gone: that is the end of output.
        self._phone._changed.set()
