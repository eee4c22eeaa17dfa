"""The daemon as a process, for the benchmarks that measure it whole: settings, start, stop, look.

`Daemon` writes a settings file into a directory of its own (the reference-site policy, a state
directory, an SQLite ledger unless told another URL), starts ``pbxguard run`` on it as a user
would, sends its log (JSON lines at ``info``, as in production) to a file, and reads what the
kernel says about the process: CPU time and memory from ``/proc``. `journal_state` reads how far
the write-ahead journal has got from its files, `ledger_rows` counts rows the ledger holds, and
`IdleAmi` is a minimal AMI server (login, the resync lists, Ping, Hangup) so that the daemon runs
normally when a benchmark drives something else.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[1]
REFERENCE = REPOSITORY / "src" / "pbxguard" / "policies" / "reference-site.toml"
SECRET = "bench"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# How the daemon is started; PBXGUARD_BENCH_LAUNCHER (words split on spaces) replaces it, to
# try a variant of the interpreter's settings without changing the code.
LAUNCHER = os.environ.get("PBXGUARD_BENCH_LAUNCHER", f"{sys.executable} -m pbxguard").split()


def free_port() -> int:
    """Return a TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def load() -> str:
    """The load average over 1, 5 and 15 minutes, as ``uptime`` prints it."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def percentile(values: list[float], p: float) -> float:
    """Return the p-th percentile (nearest rank) of ``values``; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, round(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used so far, every thread, user and system."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


# --- the daemon process ---------------------------------------------------------------------


class Daemon:
    """``pbxguard run`` in a directory of its own."""

    def __init__(
        self,
        directory: Path,
        *,
        ami_port: int,
        agi_port: int,
        ledger_url: str | None = None,
        agi_enabled: bool = True,
        extra: str = "",
    ) -> None:
        self.directory = directory
        self.state = directory / "state"
        self.ledger_url = ledger_url or f"sqlite:///{directory / 'ledger.sqlite3'}"
        self.agi_port = agi_port
        self.config = directory / "pbxguard.toml"
        self.log_path = directory / "daemon.log"
        self.config.write_text(
            f'policy = "{REFERENCE}"\n'
            'log_level = "info"\n'
            f'state_dir = "{self.state}"\n'
            "[ami]\n"
            f"port = {ami_port}\n"
            "[agi]\n"
            f"enabled = {'true' if agi_enabled else 'false'}\n"
            f"port = {agi_port}\n"
            "max_connections = 4096\n"
            "[ledger]\n"
            f'url = "{self.ledger_url}"\n' + extra,
            encoding="utf-8",
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.names: dict[int, str] = {}

    @property
    def journal(self) -> Path:
        """The write-ahead journal's directory."""
        return self.state / "journal"

    @property
    def pid(self) -> int:
        """The daemon's process id."""
        assert self.process is not None
        return self.process.pid

    def start(self, env: dict[str, str] | None = None) -> None:
        """Start ``pbxguard run``; its log goes to ``daemon.log``."""
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                [*LAUNCHER, "run", "--config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                env={**os.environ, "PBXGUARD_AMI__SECRET": SECRET, **(env or {})},
            )

    def wait_for_agi(self, timeout: float = 60) -> None:
        """Wait until the FastAGI port accepts connections (the daemon has started)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise SystemExit(f"pbxguard run exited early:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.agi_port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"pbxguard run did not listen on {self.agi_port}:\n{self.log_tail()}")

    def stop(self, timeout: float = 30) -> int:
        """Stop the daemon with SIGTERM (a clean stop drains the journal); return its status."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def children(self) -> list[int]:
        """The daemon's child processes (its ledger writer process), by process id."""
        found: list[int] = []
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found.extend(int(pid) for pid in (task / "children").read_text().split())
        return found

    def cpu_seconds(self) -> float:
        """CPU time the daemon has used so far, every thread and child process, user and system."""
        total = cpu_seconds(self.pid)
        for child in self.children():
            with contextlib.suppress(OSError):
                total += cpu_seconds(child)
        return total

    def thread_cpu(self) -> dict[int, tuple[float, float]]:
        """CPU seconds (user, system) used by each of the daemon's threads, by thread id.

        The threads of its child processes count too (`cpu_split` names them after the
        process: ``writer process``).
        """
        found = {}
        for pid in (self.pid, *self.children()):
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{pid}/task").iterdir():
                    try:
                        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                    except OSError:
                        continue  # the thread ended meanwhile
                    found[int(task.name)] = (
                        int(fields[11]) / CLOCK_TICKS,
                        int(fields[12]) / CLOCK_TICKS,
                    )
        return found

    def cpu_split(self, before: dict[int, tuple[float, float]], per: int) -> str:
        """CPU used by each thread since ``before`` (`thread_cpu`), in µs per ``per`` units."""
        if not self.names:
            self.names = self.thread_names()
        used: dict[str, list[float]] = {}
        for tid, (user, system) in self.thread_cpu().items():
            name = self.names.get(tid, "other")
            name = "executor" if name.startswith("asyncio_") else name
            was = before.get(tid, (0.0, 0.0))
            total = used.setdefault(name, [0.0, 0.0])
            total[0] += user - was[0]
            total[1] += system - was[1]
        scale = 1e6 / max(per, 1)
        return ", ".join(
            f"{name} {(user + system) * scale:.1f} µs (system {system * scale:.1f})"
            for name, (user, system) in sorted(used.items(), key=lambda kv: -sum(kv[1]))
            if user + system > 0
        )

    def run_queue_wait(self, tid: int | None = None) -> float:
        """Seconds a thread (the event loop by default) has waited, runnable, for a CPU.

        From the kernel's schedstat: time the thread was ready to run while other processes
        had the machine's cores. On a shared machine this is latency nobody in the daemon
        caused.
        """
        try:
            fields = Path(f"/proc/{self.pid}/task/{tid or self.pid}/schedstat").read_text()
        except OSError:
            return float("nan")
        return int(fields.split()[1]) / 1e9

    def thread_names(self) -> dict[int, str]:
        """Python's names of the daemon's threads, by thread id (asks py-spy when installed)."""
        names = {self.pid: "loop"}
        for child in self.children():
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{child}/task").iterdir():
                    names[int(task.name)] = "writer process"
        spy = Path(sys.executable).with_name("py-spy")
        if not spy.exists():
            return names
        dump = subprocess.run(
            [str(spy), "dump", "--json", "--pid", str(self.pid)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        with contextlib.suppress(ValueError):
            for thread in json.loads(dump.stdout):
                name = thread.get("thread_name") or "?"
                names[int(thread["os_thread_id"])] = "loop" if name == "MainThread" else name
        return names

    def memory_mb(self) -> tuple[float, float]:
        """The daemon's resident memory now and its peak (VmRSS, VmHWM), in MB."""
        found = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) / 1024
        return found.get("VmRSS", float("nan")), found.get("VmHWM", float("nan"))

    def log_events(self) -> collections.Counter[str]:
        """Count the daemon's log lines by event."""
        counted: collections.Counter[str] = collections.Counter()
        for line in self.log_path.read_text("utf-8", errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    counted[json.loads(line).get("event", "?")] += 1
                except ValueError:
                    counted["(not JSON)"] += 1
        return counted

    def log_lines(self, event: str) -> list[dict[str, Any]]:
        """Return the daemon's log lines of one event."""
        found = []
        for line in self.log_path.read_text("utf-8", errors="replace").splitlines():
            if line.startswith("{") and f'"{event}"' in line:
                data = json.loads(line)
                if data.get("event") == event:
                    found.append(data)
        return found

    def stalls(self) -> str:
        """What the daemon's stop line says of its event loop, and its stall warnings."""
        stopped = self.log_lines("pbxguard stopped")
        warned = len(self.log_lines("event loop stalled"))
        if not stopped or "loop_worst_stall_ms" not in stopped[-1]:
            return f"stall warnings {warned}"
        last = stopped[-1]
        return (
            f"worst event-loop stall {last['loop_worst_stall_ms']} ms"
            f" ({last['loop_stalls']} over 50 ms, {warned} logged),"
            f" worst GC pause {last['gc_worst_ms']} ms"
        )

    def log_tail(self, lines: int = 20) -> str:
        """The end of the daemon's log."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text("utf-8", errors="replace").splitlines()[-lines:])


# --- the journal and the ledger, seen from outside ------------------------------------------


def journal_state(directory: Path) -> tuple[int, int]:
    """Return (newest sequence number appended, sequence number the ledger has confirmed).

    Read from the files as the daemon leaves them: the checkpoint, and the last complete line
    of the newest segment.
    """
    try:
        checkpoint = int(json.loads((directory / "checkpoint.json").read_bytes())["seq"])
    except FileNotFoundError:
        checkpoint = 0
    segments = sorted(directory.glob("*.log"))
    segments = [s for s in segments if s.name[0].isdigit()]
    if not segments:
        return checkpoint, checkpoint
    with segments[-1].open("rb") as file:
        size = file.seek(0, os.SEEK_END)
        file.seek(max(0, size - 65536))
        tail = file.read()
    lines = tail.split(b"\n")[:-1]
    for line in reversed(lines):
        body = line.rpartition(b"\t")[0]
        if body.startswith(b'{"seq":'):
            return int(body[7 : body.index(b",")]), checkpoint
    return int(segments[-1].name.removesuffix(".log")) - 1, checkpoint


def pending(directory: Path) -> int:
    """How many journal entries wait for the database."""
    last, done = journal_state(directory)
    return last - done


def wait_drained(directory: Path, timeout: float) -> tuple[bool, float]:
    """Wait until the journal has nothing pending; return (drained, seconds waited)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if pending(directory) <= 0:
            return True, time.monotonic() - began
        time.sleep(0.02)
    return False, time.monotonic() - began


def ledger_rows(url: str, table: str, where: str = "") -> int:
    """Count the rows of a ledger table (read-only, beside the running daemon)."""
    sql = f"SELECT count(*) FROM {table}" + (f" WHERE {where}" if where else "")
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if not Path(path).exists():
            return 0
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as connection:
            return int(connection.execute(sql).fetchone()[0])
    import psycopg

    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo) as connection:
        row = connection.execute(sql).fetchone()
        assert row is not None
        return int(row[0])


# --- a minimal AMI server -------------------------------------------------------------------


def action_fields(frame: bytes) -> dict[str, str]:
    """Read an action's fields (keys lower-cased)."""
    fields = {}
    for line in frame.decode("utf-8", errors="replace").splitlines():
        key, colon, value = line.partition(":")
        if colon:
            fields[key.strip().lower()] = value.strip()
    return fields


def action_reply(action: dict[str, str]) -> bytes:
    """Answer an action the way Asterisk 22 does (empty lists: no channels, no contacts)."""
    name = action.get("action", "").lower()
    action_id = action.get("actionid", "")
    head = f"ActionID: {action_id}\r\n"
    if name == "login":
        return (
            f"Response: Success\r\n{head}Message: Authentication accepted\r\n\r\n"
            "Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 1\r\nLastReload: 1\r\n"
            "Status: Fully Booted\r\n\r\n"
        ).encode()
    if name in ("coreshowchannels", "devicestatelist"):
        complete = (
            "CoreShowChannelsComplete" if name == "coreshowchannels" else "DeviceStateListComplete"
        )
        return (
            f"Response: Success\r\n{head}EventList: start\r\nMessage: List follows\r\n\r\n"
            f"Event: {complete}\r\n{head}EventList: Complete\r\nListItems: 0\r\n\r\n"
        ).encode()
    if name == "pjsipshowcontacts":
        return f"Response: Error\r\n{head}Message: No Contacts found\r\n\r\n".encode()
    if name == "ping":
        stamp = f"{time.time():.6f}"
        return f"Response: Success\r\n{head}Ping: Pong\r\nTimestamp: {stamp}\r\n\r\n".encode()
    if name == "hangup":
        return f"Response: Success\r\n{head}Message: Channel Hungup\r\n\r\n".encode()
    if name == "logoff":
        return f"Response: Goodbye\r\n{head}Message: Thanks for all the fish.\r\n\r\n".encode()
    return f"Response: Error\r\n{head}Message: Invalid/unknown command\r\n\r\n".encode()


class IdleAmi:
    """An AMI server in a thread of its own that logs clients in and answers, sending no events."""

    def __init__(self) -> None:
        self.port = 0
        self.logins = 0
        self.actions: collections.Counter[str] = collections.Counter()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idle-ami", daemon=True)

    def __enter__(self) -> IdleAmi:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        try:
            while True:
                frame = await reader.readuntil(b"\r\n\r\n")
                action = action_fields(frame)
                name = action.get("action", "").lower()
                self.actions[name] += 1
                self.logins += name == "login"
                writer.write(action_reply(action))
                if name == "logoff":
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
