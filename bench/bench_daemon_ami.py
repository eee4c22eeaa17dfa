"""Measure the daemon's AMI side whole: a burst of events from a PBX that writes as Asterisk does.

A stand-in PBX in a process of its own sends ``--events`` AMI events of calls with distinct ids,
built from the recordings in ``src/pbxguard/simulator/recordings``: copy after copy of every
recording, each copy's Uniqueid, Linkedid, channel names and bridge ids rewritten to its own and
its timestamps moved a little later than the previous copy's, all of them merged in timestamp
order, so that a couple of thousand calls overlap as in a busy hour compressed into seconds.

It writes as Asterisk's manager does: one ``send`` per event on a non-blocking socket, and when
the socket is full it waits for it to drain, which Asterisk allows for ``writetimeout`` (100 ms
by default) before it drops the session. The time each write waits is what this measures: the
goal is that none waits over 50 ms. It answers the daemon's actions as Asterisk does (login,
the resync lists, Ping) and a ``Hangup`` as Asterisk carries it out: the call's channels that
are up end with ``Cause: 21`` and the rest of that call is not sent.

The daemon is ``pbxguard run`` with the reference-site policy, its journal and SQLite ledger,
FastAGI off. After the burst the PBX sends one more forbidden call and waits for its Hangup:
every event before it has then been consumed. Printed: events consumed per second, the longest
write wait and how many waited over 50 ms and 100 ms, the sessions the daemon dropped, the
forbidden calls (their DialBegin judged by the policy, as ``pbxguard check`` does) and the
Hangups received for them, the daemon's CPU and peak RSS, and the load average.

The baseline, measured in the same round, is a bare asyncio reader of the same stream in a
process of its own: it reads 64 KiB at a time, splits the frames and sends a Hangup for each
forbidden call's DialBegin, which it knows in advance.

With ``--live N`` (a second variant) the PBX first sends the start of at least N calls that
stay up (everything before their first hangup), waits until the daemon has read it all, and the
daemon's RSS is taken with every one of them live; then it sends the rest.

Goals (2 cores): 200k events consumed at >= 100k events/s with no write waiting over 50 ms;
under 150 MB RSS with 10k calls live.

    .venv/bin/python bench/bench_daemon_ami.py                        # 3 rounds of 200k events
    .venv/bin/python bench/bench_daemon_ami.py --rounds 1 --events 20000
    .venv/bin/python bench/bench_daemon_ami.py --rounds 1 --live 10000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from _daemon import Daemon, action_fields, action_reply, free_port, load, percentile

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
# A copy of a recording starts this long after the one before it (in the PBX's time).
SPACING_US = 1_000
LIVE_SPACING_US = 100
WARN_MS = 50.0
RECORDED = 1795397584.0  # when the recordings were made (23 November 2026, 09:33 Shanghai)
WRITETIMEOUT_MS = 100.0
READ = 65536

_UNIQUEID = re.compile(rb"(?<!Timestamp: )\b(\d{10})\.(\d+)\b")
_CHANNEL = re.compile(rb"((?:PJSIP|Local)/[\w.@]+)-([0-9a-f]{8})\b")
_UUID = re.compile(rb"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-)([0-9a-f]{12})")
_HANGUP_LIKE = (b"Event: Hangup\r\n", b"Event: HangupRequest\r\n", b"Event: SoftHangupRequest\r\n")


# --- the stream -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    """One event of the stream and what the stand-in PBX needs to know about it."""

    at_us: int
    data: bytes
    linkedid: bytes
    newchannel: tuple[bytes, bytes] | None  # (channel, uniqueid)
    hangup: bytes | None  # the channel it ends


def _header(frame: bytes, key: bytes) -> bytes:
    start = frame.find(b"\r\n" + key + b": ")
    if start < 0:
        return b""
    start += len(key) + 4
    return frame[start : frame.index(b"\r\n", start)]


def _recordings() -> list[tuple[str, list[bytes]]]:
    root = resources.files("pbxguard.simulator").joinpath("recordings")
    found = []
    for name in sorted(p.name for p in root.iterdir() if p.name.endswith(".ami")):
        data = root.joinpath(name).read_bytes().split(b"\r\n", 1)[1]
        frames = [f + b"\r\n\r\n" for f in data.split(b"\r\n\r\n") if f.startswith(b"Event: ")]
        # The recorded client's own FullyBooted: the stand-in sends its own after each login.
        frames = [f for f in frames if not f.startswith(b"Event: FullyBooted")]
        found.append((name.removesuffix(".ami"), frames))
    return found


def _rewrite(frame: bytes, copy: int, shift_us: int) -> tuple[int, bytes]:
    at_us = 0
    lines = frame.split(b"\r\n")
    for i, line in enumerate(lines):
        if line.startswith(b"Timestamp: "):
            seconds, _, micros = line[11:].partition(b".")
            at_us = int(seconds) * 1_000_000 + int(micros.ljust(6, b"0")) + shift_us
            lines[i] = b"Timestamp: %d.%06d" % divmod(at_us, 1_000_000)
    text = b"\r\n".join(lines)
    text = _UNIQUEID.sub(lambda m: b"%d.%s" % (1_900_000_000 + copy, m.group(2)), text)
    text = _CHANNEL.sub(
        lambda m: b"%s-%08x" % (m.group(1), (copy << 8 | int(m.group(2), 16)) & 0xFFFFFFFF), text
    )
    text = _UUID.sub(
        lambda m: m.group(1) + b"%012x" % ((int(m.group(2), 16) ^ copy * 0x9E3779B1) & (2**48 - 1)),
        text,
    )
    return at_us, text


def _frame(at_us: int, data: bytes) -> Frame:
    newchannel = hangup = None
    if data.startswith(b"Event: Newchannel\r\n"):
        newchannel = (_header(data, b"Channel"), _header(data, b"Uniqueid"))
    elif data.startswith(b"Event: Hangup\r\n"):
        hangup = _header(data, b"Channel")
    return Frame(at_us, data, _header(data, b"Linkedid"), newchannel, hangup)


@dataclass(slots=True)
class Stream:
    """The events to send (in one or two parts) and the forbidden calls among them."""

    parts: list[list[Frame]]
    calls: int
    forbidden: set[bytes] = field(default_factory=set)  # their trunk legs (DestChannel)

    @property
    def events(self) -> int:
        """Events in every part."""
        return sum(len(p) for p in self.parts)


def build_stream(events: int, live: int) -> Stream:
    """Copy the recordings until ``events`` (or ``live`` calls that stay up) are reached."""
    recordings = _recordings()
    if live:
        # Allowed calls only (a forbidden one is hung up at once), cut before their first
        # hangup: every one stays up until the second part.
        recordings = [
            (name, frames)
            for name, frames in recordings
            if any(b"Event: DialBegin" in x for x in frames)
            and not _forbidden([[_frame(0, x) for x in frames]])
        ]
    first: list[Frame] = []
    second: list[Frame] = []
    copy = calls = held = 0
    while (held < live) if live else (len(first) < events):
        for _name, frames in recordings:
            shift = copy * (LIVE_SPACING_US if live else SPACING_US)
            rewritten = [_rewrite(f, copy, shift) for f in frames]
            rewritten.sort(key=lambda item: item[0])
            linkedids = {_header(d, b"Linkedid") for _, d in rewritten if b"\r\nLinkedid: " in d}
            calls += len(linkedids)
            if live:
                ended = next(
                    (i for i, (_, d) in enumerate(rewritten) if d.startswith(_HANGUP_LIKE)),
                    len(rewritten),
                )
                first.extend(_frame(at, d) for at, d in rewritten[:ended])
                second.extend(_frame(at, d) for at, d in rewritten[ended:])
                held += len(linkedids)
            else:
                first.extend(_frame(at, d) for at, d in rewritten)
            copy += 1
            if not live and len(first) >= events:
                break
    first.sort(key=lambda f: f.at_us)
    second.sort(key=lambda f: f.at_us)
    stream = Stream([first, second] if live else [first], calls)
    stream.forbidden = _forbidden(stream.parts)
    return stream


def _forbidden(parts: list[list[Frame]]) -> set[bytes]:
    """The trunk legs of the calls the policy refuses (what `pbxguard check` says of them)."""
    from _daemon import REFERENCE

    from pbxguard.adapters.policy_file import load_policy
    from pbxguard.app.checks import check_call
    from pbxguard.domain.evaluate import CallAttempt, Verdict

    policy = load_policy(str(REFERENCE)).policy
    verdicts: dict[tuple[bytes, bytes], bool] = {}
    found = set()
    for part in parts:
        for frame in part:
            if not frame.data.startswith(b"Event: DialBegin\r\n"):
                continue
            caller = _header(frame.data, b"CallerIDNum")
            number = _header(frame.data, b"DialString").split(b"@")[0]
            if (caller, number) not in verdicts:
                at = datetime.fromtimestamp(frame.at_us / 1e6 or RECORDED, UTC)
                decision = check_call(
                    CallAttempt(caller.decode(), number.decode()),
                    policy=policy,
                    approvals=(),
                    now=at,
                )
                verdicts[caller, number] = decision.verdict is Verdict.DENY
            if verdicts[caller, number]:
                found.add(_header(frame.data, b"DestChannel"))
    return found


def sentinel(n: int, at_us: int) -> tuple[bytes, bytes]:
    """A forbidden call's Newchannel and DialBegin with ids of its own; return it and its leg."""
    uid = f"1999999999.{n}"
    caller = f"PJSIP/2001-f{n:07x}"
    trunk = f"Local/00441632960123@pstn-f{n:07x};1"
    seconds, micros = divmod(at_us, 1_000_000)
    stamp = f"{seconds}.{micros:06d}"
    common = (
        f"Timestamp: {stamp}\r\nChannel: {caller}\r\nChannelState: 4\r\nChannelStateDesc: Ring\r\n"
        "CallerIDNum: 2001\r\nCallerIDName: Staff 2001\r\nConnectedLineNum: <unknown>\r\n"
        "Context: internal\r\nExten: 00441632960123\r\nPriority: 1\r\n"
        f"Uniqueid: {uid}\r\nLinkedid: {uid}\r\n"
    )
    data = (
        f"Event: Newchannel\r\nPrivilege: call,all\r\n{common}\r\n"
        f"Event: DialBegin\r\nPrivilege: call,all\r\n{common}"
        f"DestChannel: {trunk}\r\nDestUniqueid: {uid}1\r\nDestLinkedid: {uid}\r\n"
        "DialString: 00441632960123@pstn\r\n\r\n"
    )
    return data.encode(), trunk.encode()


# --- the stand-in PBX (a process of its own) -------------------------------------------------


class Pbx:
    """Serve one client at a time and write the stream to it as Asterisk's manager does."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=16)
        self.sock: socket.socket | None = None
        self.poll = select.poll()
        self.inbox = b""
        self.waits: list[float] = []  # seconds each write that had to wait waited
        self.writes = 0
        self.sessions = 0
        self.dropped: list[int] = []  # events sent when a session ended
        self.hangups: list[bytes] = []
        self.actions = 0
        self.cut: set[bytes] = set()
        self.live: dict[bytes, dict[bytes, bytes]] = {}  # linkedid -> {channel: uniqueid}
        self.linkedid_of: dict[bytes, bytes] = {}
        self.now_us = 0
        self.sent = 0
        self.outbox: list[bytes] = []  # replies and hangups to write once the current frame is out
        self.writing = False

    # -- sessions ------------------------------------------------------------------------------

    def accept(self, quiet: float = 1.0) -> None:
        """Take the next client, log it in, answer its resync; return once it has been quiet."""
        if self.sock is not None:
            self.sock.close()
        self.sock, _ = self.listener.accept()
        self.sock.setblocking(False)
        self.poll = select.poll()
        self.poll.register(self.sock, select.POLLIN)
        self.inbox = b""
        self.outbox.clear()
        self.sessions += 1
        self._write(BANNER)
        last = time.monotonic()
        logged_in = False
        while not logged_in or time.monotonic() - last < quiet:
            if self.poll.poll(50) and self._read():
                self.flush()
                if self.actions:
                    last = time.monotonic()
                    logged_in = True

    def _read(self) -> bool:
        assert self.sock is not None
        try:
            data = self.sock.recv(READ)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        if not data:
            raise ConnectionError("the client closed the AMI session")
        self.inbox += data
        while b"\r\n\r\n" in self.inbox:
            frame, self.inbox = self.inbox.split(b"\r\n\r\n", 1)
            self._act(action_fields(frame))
        return True

    def _act(self, action: dict[str, str]) -> None:
        self.actions += 1
        self.outbox.append(action_reply(action))
        if action.get("action", "").lower() == "hangup":
            channel = action.get("channel", "").encode()
            self.hangups.append(channel)
            self._cut(channel)

    def _cut(self, channel: bytes) -> None:
        """End a call as Asterisk ends it when asked: its channels hang up, cause 21."""
        linkedid = self.linkedid_of.get(channel)
        if linkedid is None or linkedid in self.cut:
            return
        self.cut.add(linkedid)
        stamp = b"%d.%06d" % divmod(self.now_us, 1_000_000)
        for name, uniqueid in list(self.live.pop(linkedid, {}).items()):
            self.outbox.append(
                b"Event: Hangup\r\nPrivilege: call,all\r\nTimestamp: " + stamp
                + b"\r\nChannel: " + name + b"\r\nUniqueid: " + uniqueid
                + b"\r\nLinkedid: " + linkedid
                + b"\r\nCause: 21\r\nCause-txt: Call Rejected\r\n\r\n"
            )  # fmt: skip

    # -- writing -------------------------------------------------------------------------------

    def _write(self, data: bytes, *, measured: bool = True) -> None:
        """Write one frame with one send, waiting for the socket to drain when it is full.

        Actions read while waiting are answered after this frame (a frame is never split by
        another), as Asterisk's manager serialises its writes to a session.
        """
        assert self.sock is not None
        view = memoryview(data)
        waited_since = 0.0
        self.writing = True
        try:
            while view:
                try:
                    sent = self.sock.send(view)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError as error:
                    raise ConnectionError(f"send failed: {error}") from error
                view = view[sent:]
                if view:
                    if not waited_since:
                        waited_since = time.perf_counter()
                    self.poll.modify(self.sock, select.POLLIN | select.POLLOUT)
                    for _, mask in self.poll.poll(1000):
                        if mask & select.POLLIN:
                            self._read()
                    self.poll.modify(self.sock, select.POLLIN)
        finally:
            self.writing = False
        self.writes += 1
        if waited_since and measured:
            self.waits.append(time.perf_counter() - waited_since)
        self.flush()

    def flush(self) -> None:
        """Write the replies and hangup events waiting in the outbox."""
        while self.outbox and not self.writing:
            self._write(self.outbox.pop(0), measured=False)

    def send(self, frames: list[Frame]) -> None:
        """Send a part of the stream (a session lost on the way is taken up by the next)."""
        for i, frame in enumerate(frames):
            self.now_us = frame.at_us
            if frame.linkedid in self.cut:
                continue
            if frame.newchannel is not None:
                channel, uniqueid = frame.newchannel
                self.live.setdefault(frame.linkedid, {})[channel] = uniqueid
                self.linkedid_of[channel] = frame.linkedid
            elif frame.hangup is not None:
                self.live.get(frame.linkedid, {}).pop(frame.hangup, None)
            while True:
                try:
                    self._write(frame.data)
                    break
                except ConnectionError:
                    self.dropped.append(self.sent)
                    self.accept()
            self.sent += 1
            if i % 64 == 0 and self.poll.poll(0):
                with contextlib.suppress(ConnectionError):
                    self._read()
                    self.flush()

    def wait_for_hangup(self, channel: bytes, timeout: float) -> bool:
        """Answer actions until a Hangup for ``channel`` arrives; False on timeout."""
        deadline = time.monotonic() + timeout
        while channel not in self.hangups and time.monotonic() < deadline:
            if self.poll.poll(20):
                try:
                    self._read()
                    self.flush()
                except ConnectionError:
                    self.dropped.append(self.sent)
                    self.accept()
        return channel in self.hangups


def serve(options: argparse.Namespace) -> None:
    """The stand-in PBX: build, listen, tell the parent, send, report (JSON lines on stdout)."""
    stream = build_stream(options.events, options.live)
    pbx = Pbx(stream)
    report: dict[str, Any] = {
        "port": pbx.listener.getsockname()[1],
        "events": stream.events,
        "calls": stream.calls,
        "forbidden": len(stream.forbidden),
    }
    sentinels = {sentinel(n, 0)[1] for n in range(len(stream.parts))}
    Path(options.forbidden_file).write_text(
        json.dumps(sorted(c.decode() for c in stream.forbidden | sentinels))
    )
    print(json.dumps(report), flush=True)
    pbx.accept()
    print(json.dumps({"logged_in": True}), flush=True)
    sys.stdin.readline()  # "go"
    results = []
    for n, part in enumerate(stream.parts):
        pbx.waits.clear()
        sent_before = pbx.sent
        began = time.perf_counter()
        pbx.send(part)
        data, trunk = sentinel(n, part[-1].at_us if part else 0)
        pbx._write(data)
        consumed = pbx.wait_for_hangup(trunk, 300)
        elapsed = time.perf_counter() - began
        waits = pbx.waits
        results.append(
            {
                "sent": pbx.sent - sent_before,
                "seconds": elapsed,
                "consumed": consumed,
                "waits": len(waits),
                "wait_max_ms": max(waits, default=0) * 1000,
                "wait_p99_ms": percentile(waits, 99) * 1000,
                "over_warn": sum(1 for w in waits if w * 1000 > WARN_MS),
                "over_timeout": sum(1 for w in waits if w * 1000 > WRITETIMEOUT_MS),
            }
        )
        print(json.dumps({"part": n, **results[-1]}), flush=True)
        if n + 1 < len(stream.parts):
            sys.stdin.readline()  # "go on"
    wanted = stream.forbidden
    got = set(pbx.hangups)
    print(
        json.dumps(
            {
                "done": True,
                "hangups": len(pbx.hangups),
                "forbidden_hung_up": len(wanted & got),
                "unexpected_hangups": len(got - wanted) - len(stream.parts),
                "sessions": pbx.sessions,
                "dropped_at": pbx.dropped,
            }
        ),
        flush=True,
    )
    sys.stdin.readline()
    if pbx.sock is not None:
        pbx.sock.close()


# --- the baseline: a bare asyncio reader ------------------------------------------------------


async def bare_reader(port: int, forbidden_file: str) -> None:
    """Log in, read 64 KiB at a time, split frames, hang up the forbidden calls."""
    with open(forbidden_file, encoding="utf-8") as file:  # noqa: ASYNC230 - before any I/O
        forbidden = {c.encode() for c in json.load(file)}
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readline()
    writer.write(b"Action: Login\r\nActionID: 1\r\nUsername: bench\r\nSecret: bench\r\n\r\n")
    buffer = b""
    action = 1
    while data := await reader.read(READ):
        buffer += data
        *frames, buffer = buffer.split(b"\r\n\r\n")
        for frame in frames:
            if frame.startswith(b"Event: DialBegin\r\n"):
                channel = _header(frame + b"\r\n", b"DestChannel")
                if channel in forbidden:
                    action += 1
                    writer.write(
                        b"Action: Hangup\r\nActionID: %d\r\nChannel: %s\r\nCause: 21\r\n\r\n"
                        % (action, channel)
                    )


# --- orchestration ----------------------------------------------------------------------------

# What the daemon logs as a matter of course in this benchmark (the PBX's alerts are recorded
# events of the recordings; hangups are resent while a burst is read).
_ROUTINE = {"alert", "alert cleared", "hangup failed; will send it again", "event loop stalled"}


def _troubles(daemon: Daemon) -> list[str]:
    """The first line of each kind of warning or error the daemon logged, with its count."""
    seen: dict[str, tuple[int, str]] = {}
    for line in daemon.log_path.read_text("utf-8", errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        data = json.loads(line)
        event = str(data.get("event"))
        if data.get("level") not in ("warning", "error", "critical") or event in _ROUTINE:
            continue
        count, first = seen.get(event, (0, line[:300]))
        seen[event] = (count + 1, first)
    return [f"{count} x {first}" for count, first in seen.values()]


@dataclass(slots=True)
class Outcome:
    """One client's run against the stand-in PBX."""

    setup: dict[str, Any]
    parts: list[dict[str, Any]]
    done: dict[str, Any]
    cpu: float = 0.0
    rss: list[tuple[float, float]] = field(default_factory=list)  # (now, peak) after each part
    log: dict[str, int] = field(default_factory=dict)
    split: str = ""
    stalls: str = ""
    runnable: float = 0.0
    troubles: list[str] = field(default_factory=list)


@contextlib.contextmanager
def pbx_process(
    options: argparse.Namespace, forbidden_file: str
) -> Iterator[subprocess.Popen[str]]:
    """Start the stand-in PBX (it builds the stream first) and stop it at the end."""
    process = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            "--events",
            str(options.events),
            "--live",
            str(options.live),
            "--forbidden-file",
            forbidden_file,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            with contextlib.suppress(BrokenPipeError):
                assert process.stdin is not None
                process.stdin.write("\n")
                process.stdin.close()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _line(process: subprocess.Popen[str]) -> dict[str, Any]:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise SystemExit("the stand-in PBX stopped")
    data: dict[str, Any] = json.loads(line)
    return data


def _tell(process: subprocess.Popen[str], text: str) -> None:
    assert process.stdin is not None
    process.stdin.write(text + "\n")
    process.stdin.flush()


def run_client(kind: str, options: argparse.Namespace, tmp: Path) -> Outcome:
    """Run the stand-in PBX against one client: ``daemon`` or ``bare``."""
    forbidden_file = str(tmp / f"forbidden-{kind}.json")
    with pbx_process(options, forbidden_file) as pbx:
        setup = _line(pbx)
        daemon: Daemon | None = None
        bare: subprocess.Popen[bytes] | None = None
        outcome = Outcome(setup, [], {})
        if kind == "daemon":
            directory = tmp / f"daemon-{time.monotonic_ns()}"
            directory.mkdir()
            daemon = Daemon(
                directory, ami_port=setup["port"], agi_port=free_port(), agi_enabled=False
            )
            daemon.start()
        else:
            bare = subprocess.Popen(
                [sys.executable, __file__, "--bare-reader", str(setup["port"]), forbidden_file]
            )
        try:
            _line(pbx)  # logged in and resynchronised
            cpu_before = daemon.cpu_seconds() if daemon else 0.0
            threads_before = daemon.thread_cpu() if daemon else {}
            waited_before = daemon.run_queue_wait() if daemon else 0.0
            began = time.monotonic()
            spy = None
            if daemon is not None and options.py_spy:
                Path(options.py_spy).mkdir(parents=True, exist_ok=True)
                spy = subprocess.Popen(
                    [
                        str(Path(sys.executable).with_name("py-spy")),
                        "record",
                        "--pid",
                        str(daemon.pid),
                        "--rate",
                        "250",
                        *(["--gil"] if os.environ.get("PBXGUARD_BENCH_GIL") else []),
                        "--format",
                        "raw",
                        "--threads",
                        "--output",
                        f"{options.py_spy}/ami-{time.monotonic_ns()}.txt",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            _tell(pbx, "go")
            for n in range(2 if options.live else 1):
                outcome.parts.append(_line(pbx))
                if daemon is not None:
                    outcome.rss.append(daemon.memory_mb())
                if n == 0 and options.live:
                    _tell(pbx, "go on")
            outcome.done = _line(pbx)
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
            if daemon is not None:
                outcome.cpu = daemon.cpu_seconds() - cpu_before
                sent = sum(p["sent"] for p in outcome.parts)
                outcome.split = daemon.cpu_split(threads_before, sent)
                outcome.runnable = (daemon.run_queue_wait() - waited_before) / (
                    time.monotonic() - began
                )
        finally:
            if daemon is not None:
                daemon.stop()
                outcome.log = dict(daemon.log_events().most_common(6))
                outcome.stalls = daemon.stalls()
                outcome.troubles = _troubles(daemon)
            if bare is not None:
                bare.terminate()
                bare.wait(10)
    return outcome


def main() -> int:
    """Run the benchmark and print one block per round."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--live", type=int, default=0, help="hold this many calls up (variant)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--py-spy",
        metavar="DIR",
        help="sample the daemon with py-spy during the burst (DIR/ami-<round>.txt)",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--forbidden-file", help=argparse.SUPPRESS)
    parser.add_argument("--bare-reader", nargs=2, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve:
        serve(options)
        return 0
    if options.bare_reader:
        with contextlib.suppress(ConnectionError, KeyboardInterrupt):
            asyncio.run(bare_reader(int(options.bare_reader[0]), options.bare_reader[1]))
        return 0

    what = (
        f"{options.live:,} calls held live, then ended"
        if options.live
        else f"{options.events:,} events"
    )
    print(
        f"AMI burst of {what}, one send per event, against pbxguard run (reference-site policy, "
        "journal, SQLite ledger, log info to a file) and a bare asyncio reader"
    )
    with tempfile.TemporaryDirectory(prefix="bench-daemon-ami-") as name:
        tmp = Path(name)
        for round_no in range(1, options.rounds + 1):
            print(f"\nround {round_no}, load average {load()}")
            bare = run_client("bare", options, tmp)
            guard = run_client("daemon", options, tmp)
            _print(bare, guard, options)
    print(
        "\ngoals: >= 100,000 events/s consumed, no write waiting over 50 ms (Asterisk drops the "
        "session past writetimeout, 100 ms), every forbidden call hung up; < 150 MB RSS with "
        "10k calls live"
    )
    return 0


def _print(bare: Outcome, guard: Outcome, options: argparse.Namespace) -> None:
    setup = guard.setup
    print(
        f"stream: {setup['events']:,} events, {setup['calls']:,} calls, "
        f"{setup['forbidden']:,} forbidden"
    )
    print(
        f"{'client':<8} {'part':<6} {'sent':>8} {'events/s':>9} {'waits':>7} {'max wait':>9}"
        f" {'p99 wait':>9} {'>50ms':>6} {'>100ms':>6}"
    )
    labels = ["starts", "ends"] if options.live else ["burst"]
    for name, outcome in (("bare", bare), ("pbxguard", guard)):
        for label, part in zip(labels, outcome.parts, strict=False):
            rate = part["sent"] / part["seconds"] if part["consumed"] else float("nan")
            print(
                f"{name:<8} {label:<6} {part['sent']:>8,} {rate:>9,.0f} {part['waits']:>7,}"
                f" {part['wait_max_ms']:>7.1f}ms {part['wait_p99_ms']:>7.2f}ms"
                f" {part['over_warn']:>6} {part['over_timeout']:>6}"
            )
    done = guard.done
    sent = sum(p["sent"] for p in guard.parts)
    print(
        f"pbxguard: forbidden calls hung up {done['forbidden_hung_up']:,}/{setup['forbidden']:,}"
        f" (Hangup actions {done['hangups']:,}, for other channels {done['unexpected_hangups']});"
        f" sessions {done['sessions']} (dropped after event {done['dropped_at'] or '-'});"
        f" CPU {guard.cpu / max(sent, 1) * 1e6:.1f} µs/event ({guard.split})"
    )
    for label, (now, peak) in zip(labels, guard.rss, strict=False):
        print(f"pbxguard RSS after {label}: {now:.1f} MB (peak so far {peak:.1f} MB)")
    print(f"pbxguard: {guard.stalls}")
    print(
        f"pbxguard: its event loop waited, ready to run, for a CPU the machine's other work held:"
        f" {guard.runnable:.0%} of the time"
    )
    print(f"pbxguard log: {guard.log}")
    for trouble in guard.troubles:
        print(f"pbxguard said: {trouble}")


if __name__ == "__main__":
    sys.exit(main())
