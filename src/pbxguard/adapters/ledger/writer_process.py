"""The ledger writer in a process of its own, off the interpreter that answers the PBX.

Theory of operation
-------------------
`LedgerWriter` as a thread shares the interpreter lock with the event loop that answers
FastAGI: every statement it builds, every row it hashes, is time the loop may wait for. Measured
on the whole daemon (`bench/bench_daemon_fastagi.py`, docs/decisions/0019), that wait was most
of the pre-dial verdicts' tail. `ProcessLedgerWriter` runs the same `LedgerWriter` loop in a
child process (``python -m pbxguard.adapters.ledger.writer_process``: a fresh interpreter that
inherits nothing but one socket pair and the standard streams, and never imports the daemon's
own main module) and keeps, in the guard's process, only what the guard needs:

* the child reads the journal's files from the checkpoint the guard gives it (it never appends,
  never moves the checkpoint, never deletes a segment), writes batches to the database exactly
  as the thread does (idempotent by key, retries a database that is down for ever, sets aside
  only facts that can never be written), and after each commit sends ``written`` with the
  journal position and the offences it priced;
* a thread in the guard's process (``ledger-writer``) receives those messages: it moves the
  journal's checkpoint, hands the priced offences to ``on_written``, the set-aside messages to
  ``on_set_aside``, keeps `status` for health checks, and wakes `wait_idle`. It wakes a few
  dozen times a second at most, where the thread it replaces ran every statement.

Promises kept:

* ``kill -9`` of the guard: the child's end of the pipe reads end-of-file; it stops after the
  statement under way (a transaction either commits or is rolled back by the database) and
  exits. The checkpoint only ever moves in the guard's process after a commit, so the next
  start replays what the database has not confirmed, as before.
* A clean stop (SIGTERM): the guard asks the child to drain for ``drain`` seconds, then waits
  for it to end. The child ignores SIGTERM and SIGINT itself (systemd and a terminal signal the
  whole group): it stops when its guard says so, or when its guard is gone.
* A child that dies (killed, out of memory) is started again from the checkpoint after a
  second, with an error logged; the journal holds everything meanwhile.

The child polls the journal's files (every ``POLL`` seconds when nothing waits), so the guard
never spends a system call per fact on waking it, and it runs under Linux's ``SCHED_IDLE``
policy (`_yield_the_cpus`): on a machine of two cores, its batches at normal priority still
delayed the event loop's wake-ups.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import structlog

from pbxguard.adapters.journal import Cursor, Journal
from pbxguard.adapters.ledger.database import LedgerDatabase
from pbxguard.adapters.ledger.writer import LINGER, SET_ASIDE, LedgerWriter, WriterStatus
from pbxguard.adapters.logs import configure_logging
from pbxguard.domain.entries import OffenceEntry

_log = structlog.get_logger(__name__)

#: How long the guard waits before starting a writer process that ended on its own again.
RESTART_DELAY = 1.0
#: How often the child looks at the journal's files while nothing waits there (seconds).
POLL = 0.02
#: How long a child whose guard is gone may take to end its statement before it exits anyway.
ORPHAN_GRACE = 10.0


@dataclass(frozen=True, slots=True)
class WriterConfig:
    """Everything the child needs to write the journal into the database (pickled once)."""

    directory: Path
    url: str
    site: str
    busy_timeout: float
    batch_size: int
    linger: float
    retry_initial: float
    retry_max: float
    prepare: Callable[[LedgerDatabase], None] | None
    log_level: str
    start_at: Cursor


class ProcessLedgerWriter:
    """The ledger writer as a child process; same interface as `LedgerWriter`."""

    def __init__(
        self,
        journal: Journal,
        url: str,
        *,
        site: str = "",
        busy_timeout: float = 5.0,
        batch_size: int = 500,
        linger: float = LINGER,
        retry_initial: float = 0.2,
        retry_max: float = 10.0,
        on_written: Callable[[list[OffenceEntry]], None] | None = None,
        on_set_aside: Callable[[str], None] | None = None,
        prepare: Callable[[LedgerDatabase], None] | None = None,
        log_level: str = "info",
        restart_delay: float = RESTART_DELAY,
    ) -> None:
        """Configure the writer; nothing runs until `start`.

        ``prepare`` (picklable: a module-level function or a partial of one) runs in the child
        before its first write until it succeeds, with the child's database.
        """
        self._journal = journal
        self._config = WriterConfig(
            directory=journal.directory,
            url=url,
            site=site,
            busy_timeout=busy_timeout,
            batch_size=batch_size,
            linger=linger,
            retry_initial=retry_initial,
            retry_max=retry_max,
            prepare=prepare,
            log_level=log_level,
            start_at=journal.checkpoint_cursor,
        )
        self._on_written = on_written
        self._on_set_aside = on_set_aside
        self._restart_delay = restart_delay
        self._idle = threading.Condition()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._connection: Connection | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._supervisor: threading.Thread | None = None
        self.status = WriterStatus()
        self.restarts = 0

    @property
    def set_aside_path(self) -> Path:
        """Where facts that can never be written are kept."""
        return self._journal.directory / SET_ASIDE

    @property
    def pid(self) -> int | None:
        """The writer process's id, while it runs."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def start(self) -> None:
        """Start the writer process and the thread that listens to it."""
        if self._supervisor is not None:
            return
        self._stopping.clear()
        self._launch()
        self._supervisor = threading.Thread(
            target=self._supervise, name="ledger-writer", daemon=True
        )
        self._supervisor.start()

    def stop(self, *, drain: float = 5.0) -> bool:
        """Stop after writing what the journal holds (for at most ``drain`` seconds).

        Returns whether everything was written; what was not stays in the journal for the next
        start.
        """
        with self._lock:
            self._stopping.set()
            self._send(("stop", drain))
        supervisor = self._supervisor
        if supervisor is not None:
            supervisor.join(drain + 5.0)
            if supervisor.is_alive():
                # Stuck in a statement past the drain: end it; the journal keeps its facts.
                process = self._process
                if process is not None:
                    process.kill()  # the supervisor reaps it
                supervisor.join(5.0)
            self._supervisor = None
        return self._journal.pending == 0

    def wait_idle(self, timeout: float) -> bool:
        """Block until the journal is empty (everything written); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._journal.pending == 0, timeout)

    # -- the guard's side ---------------------------------------------------------------------

    def _launch(self) -> None:
        # Every start, the first and after the child ended, resumes at the checkpoint.
        config = replace(self._config, start_at=self._journal.checkpoint_cursor)
        mine, theirs = socket.socketpair()
        with mine, theirs:
            process = subprocess.Popen(  # noqa: S603 - this interpreter, this module
                [sys.executable, "-m", __name__, str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
            )
            ours = Connection(os.dup(mine.fileno()))
        ours.send(config)
        with self._lock:
            self._connection, self._process = ours, process
            if self._stopping.is_set():
                self._send(("stop", 0.0))

    def _send(self, message: tuple[Any, ...]) -> None:
        connection = self._connection
        if connection is None:
            return
        with contextlib.suppress(OSError):  # the child is gone; the supervisor sees it
            connection.send(message)

    def _supervise(self) -> None:
        while True:
            connection, process = self._connection, self._process
            assert connection is not None
            assert process is not None
            self._listen(connection)
            try:
                process.wait(ORPHAN_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            connection.close()
            if self._stopping.is_set():
                return
            self.restarts += 1
            _log.error(
                "ledger writer process ended; starting it again",
                exit_code=process.returncode,
                pending=self._journal.pending,
            )
            if self._stopping.wait(self._restart_delay):
                return
            self._launch()

    def _listen(self, connection: Connection) -> None:
        while True:
            try:
                message = connection.recv()
            except (EOFError, OSError):
                return
            self._handle(message)

    def _handle(self, message: tuple[Any, ...]) -> None:
        # Every message ends with the child's WriterStatus as it stands (a pickled copy).
        kind = message[0]
        if kind == "written":
            _, cursor, new, self.status = message
            self._journal.checkpoint(cursor)
            if new and self._on_written is not None:
                self._on_written(new)
            with self._idle:
                self._idle.notify_all()
        elif kind == "set_aside":
            _, text, self.status = message
            if self._on_set_aside is not None:
                self._on_set_aside(text)
        elif kind == "status":
            self.status = message[1]


# -- the child's side -------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    """The writer process's entry: its end of the socket pair is the descriptor ``argv[1]``."""
    connection = Connection(int(argv[1]))
    config: WriterConfig = connection.recv()
    child_main(connection, config)
    return 0


def child_main(connection: Connection, config: WriterConfig) -> None:
    """The writer process: drain the journal into the database until told to stop, or orphaned."""
    # systemd (KillMode=control-group) and a terminal's ^C signal every process of the group:
    # the guard decides when its writer stops, after the drain.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(config.log_level)
    _yield_the_cpus()
    database = LedgerDatabase.open(config.url, site=config.site, busy_timeout=config.busy_timeout)
    writer = _ChildWriter(connection, Journal(config.directory), database, config)
    threading.Thread(target=writer.listen, name="guard-pipe", daemon=True).start()
    try:
        writer.run(config.start_at)
    finally:
        database.close()


def _yield_the_cpus() -> None:
    """Run only on a CPU nothing else wants (Linux ``SCHED_IDLE``).

    The writer is never in a hurry: the journal holds every fact until it gets there. The guard
    answering a PBX is: on two cores, a batch's few milliseconds of SQL and hashing at normal
    priority delay the event loop's wake-ups (docs/decisions/0019). A normal task that wakes
    preempts an idle-policy one at once; an idle one still gets a small share when the machine
    is saturated, and catches up as soon as it is not.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError) as error:  # not Linux, or a seccomp filter says no
        _log.warning(
            "ledger writer runs at normal CPU priority (SCHED_IDLE refused)", error=str(error)
        )


class _ChildWriter(LedgerWriter):
    """`LedgerWriter`'s loop, reporting to the guard over the pipe instead of to callbacks."""

    def __init__(
        self,
        connection: Connection,
        journal: Journal,
        database: LedgerDatabase,
        config: WriterConfig,
    ) -> None:
        prepare = config.prepare
        super().__init__(
            journal,
            database,
            batch_size=config.batch_size,
            linger=config.linger,
            retry_initial=config.retry_initial,
            retry_max=config.retry_max,
            on_set_aside=self._report_set_aside,
            prepare=None if prepare is None else functools.partial(prepare, database),
        )
        self._connection = connection
        self._sending = threading.Lock()

    def listen(self) -> None:
        """Follow the guard's messages; stop when it says so or when it is gone."""
        while True:
            try:
                message = self._connection.recv()
            except (EOFError, OSError):
                # The guard is gone (a kill -9): what is not committed stays in its journal.
                self.request_stop(0.0)
                _orphaned_exit()
                return
            if message[0] == "stop":
                self.request_stop(float(message[1]))

    def _send(self, message: tuple[Any, ...]) -> None:
        with self._sending:
            try:
                self._connection.send(message)
            except OSError:
                self.request_stop(0.0)  # the guard is gone; the listener ends us

    def _wait_for_entries(self, after: int) -> None:
        self._stop.wait(POLL)

    def _committed(self, cursor: Cursor, new: list[OffenceEntry]) -> None:
        self._send(("written", cursor, new, self.status))

    def _status_changed(self) -> None:
        self._send(("status", self.status))

    def _report_set_aside(self, message: str) -> None:
        self._send(("set_aside", message, self.status))


def _orphaned_exit() -> None:
    """Give the statement under way a moment to end, then leave whatever it is doing."""
    main = threading.main_thread()
    main.join(ORPHAN_GRACE)
    if main.is_alive():
        os._exit(1)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
