"""The ledger writer: the journal's facts into the database, off the event loop, in batches.

Theory of operation
-------------------
The guard never waits for SQL: it appends facts to the write-ahead journal
(`FactJournal.append`, a ``write(2)`` on the event loop) and goes on. `LedgerWriter` is a thread
of its own with its own database connection. It reads the journal from its checkpoint in
batches (up to ``batch_size`` facts), writes each batch in one transaction (one commit, one
fsync, however many facts: a group commit), then moves the checkpoint on. Everything it writes
is idempotent by key, so a batch offered twice after a crash is stored once. While less than a
full batch waits, a transaction begins no sooner than ``linger`` (50 ms) after the one before:
at a thousand verdicts a second that is twenty transactions of fifty facts rather than a
transaction for every few facts, each costing a commit, an fsync and a dozen statements of
the thread's time (which the event loop waits for, the interpreter being shared). Nothing
waits for the database meanwhile: the facts are in the journal already. The daemon runs this
same loop in a process of its own by default (`pbxguard.adapters.ledger.writer_process`), off
the event loop's interpreter altogether.

Failures are classified by what they mean (`pbxguard.adapters.ledger.database.classify`):

* the database is unavailable (down, restarting, locked, out of connections): wait with
  jittered exponential backoff and try the same batch again, for ever; the journal keeps
  growing on disk meanwhile, never in memory;
* a fact can never be written (a constraint that proves a bug, a fact that cannot be decoded):
  the batch is split until that one fact is found; it goes to ``set-aside.jsonl`` next to the
  journal with the error (once, however often its batch is offered again), the error is
  logged and ``on_set_aside`` raises an alert; the rest of the batch is written.
  ``pbxguard ledger set-aside`` shows and replays those facts.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from pbxguard.adapters.backoff import Backoff
from pbxguard.adapters.codec import from_data, to_data
from pbxguard.adapters.journal import Cursor, Journal, JournalEntry
from pbxguard.adapters.ledger.approvals import record_uses
from pbxguard.adapters.ledger.calls import record_calls, record_decisions
from pbxguard.adapters.ledger.codes import record_failures
from pbxguard.adapters.ledger.database import LedgerDatabase, LedgerSession
from pbxguard.adapters.ledger.locks import record_locks
from pbxguard.adapters.ledger.offences import record_offences, record_outcomes
from pbxguard.domain.entries import OffenceEntry
from pbxguard.domain.records import (
    ApprovalUse,
    CallSummary,
    CodeFailure,
    DecisionRecord,
    LedgerFact,
    Lock,
    OffenceFact,
    OffenceOutcome,
)
from pbxguard.errors import LedgerConflict, LedgerError, LedgerUnavailable

_log = structlog.get_logger(__name__)

SET_ASIDE = "set-aside.jsonl"
#: The shortest time between the starts of two transactions that are not full batches (seconds).
LINGER = 0.05

_OPS: dict[str, type[Any]] = {
    "decision": DecisionRecord,
    "offence": OffenceFact,
    "outcome": OffenceOutcome,
    "call": CallSummary,
    "approval_use": ApprovalUse,
    "code_failure": CodeFailure,
    "lock": Lock,
}
_NAMES = {kind: op for op, kind in _OPS.items()}


def encode_fact(fact: LedgerFact) -> dict[str, Any]:
    """Return a fact as a journal entry: its kind and its data."""
    return {"op": _NAMES[type(fact)], "fact": to_data(fact)}


def decode_fact(entry: Mapping[str, Any]) -> LedgerFact:
    """Rebuild a fact from a journal entry.

    Raises:
        ValueError: the entry is not a fact this pbxguard knows.
    """
    kind = _OPS.get(str(entry.get("op")))
    if kind is None:
        raise ValueError(f"unknown journal entry {entry.get('op')!r}")
    fact: LedgerFact = from_data(kind, entry["fact"])
    return fact


class FactJournal:
    """The guard's side of the journal: append facts in order, before acting on them."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    def append(self, facts: Sequence[LedgerFact]) -> None:
        """Write ``facts`` to the journal (one write(2); durable by the next group commit)."""
        self._journal.append([encode_fact(f) for f in facts])

    @property
    def pending(self) -> int:
        """How many facts wait for the database."""
        return self._journal.pending


def write_facts(session: LedgerSession, facts: Sequence[LedgerFact]) -> list[OffenceEntry]:
    """Write facts in one transaction, each kind in order; return the offences that were new."""
    decisions = [f for f in facts if isinstance(f, DecisionRecord)]
    offences = [f for f in facts if isinstance(f, OffenceFact)]
    outcomes = [f for f in facts if isinstance(f, OffenceOutcome)]
    calls = [f for f in facts if isinstance(f, CallSummary)]
    uses = [f for f in facts if isinstance(f, ApprovalUse)]
    failures = [f for f in facts if isinstance(f, CodeFailure)]
    locks = [f for f in facts if isinstance(f, Lock)]
    record_decisions(session, decisions)
    new = record_offences(session, offences)
    record_outcomes(session, outcomes)
    record_calls(session, calls)
    record_uses(session, uses)
    record_failures(session, failures)
    record_locks(session, locks)
    return new


@dataclass(slots=True)
class WriterStatus:
    """How the writer stands, for health checks and metrics."""

    written: int = 0
    batches: int = 0
    set_aside: int = 0
    retrying_since: datetime | None = None
    last_error: str = ""
    offences: int = 0


class LedgerWriter:
    """A thread that drains the journal into the database, in order, for as long as it runs."""

    def __init__(
        self,
        journal: Journal,
        database: LedgerDatabase,
        *,
        batch_size: int = 500,
        linger: float = LINGER,
        retry_initial: float = 0.2,
        retry_max: float = 10.0,
        on_written: Callable[[list[OffenceEntry]], None] | None = None,
        on_set_aside: Callable[[str], None] | None = None,
        prepare: Callable[[], None] | None = None,
    ) -> None:
        """Configure the writer; nothing runs until `start`.

        ``prepare`` runs before the first write until it succeeds (bringing the schema up to
        date once the database is reachable); while it fails, the journal keeps everything.
        """
        self._journal = journal
        self._db = database
        self._batch_size = batch_size
        self._linger = linger
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._on_written = on_written
        self._on_set_aside = on_set_aside
        self._prepare = prepare
        self._stop = threading.Event()
        self._drain_until = 0.0
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition()
        self._set_aside_entries: dict[int, dict[str, Any]] | None = None
        self.status = WriterStatus()

    @property
    def set_aside_path(self) -> Path:
        """Where facts that can never be written are kept."""
        return self._journal.directory / SET_ASIDE

    def start(self) -> None:
        """Start the thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self.run, name="ledger-writer", daemon=True)
            self._thread.start()

    def stop(self, *, drain: float = 5.0) -> bool:
        """Stop after writing what the journal holds (for at most ``drain`` seconds).

        Returns whether everything was written; what was not stays in the journal for the next
        start.
        """
        self.request_stop(drain)
        if self._thread is not None:
            self._thread.join(drain + 5.0)
            self._thread = None
        return self._journal.pending == 0

    def request_stop(self, drain: float) -> None:
        """Ask `run` to end once the journal is written, or ``drain`` seconds from now."""
        self._drain_until = time.monotonic() + drain
        self._stop.set()

    def wait_idle(self, timeout: float) -> bool:
        """Block until the journal is empty (everything written); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._journal.pending == 0, timeout)

    # -- the thread ---------------------------------------------------------------------------

    def _draining(self) -> bool:
        return not self._stop.is_set() or time.monotonic() < self._drain_until

    def run(self, start_at: Cursor | None = None) -> None:
        """Drain the journal from ``start_at`` (its checkpoint when None) until stopped.

        What the thread runs; the writer's own process (`pbxguard.adapters.ledger.writer_process`)
        runs it too, with its own ways to wait and to report a commit.
        """
        cursor = start_at
        backoff = Backoff(self._retry_initial, self._retry_max)
        began = -self._linger  # when the last transaction began
        while self._draining():
            entries, next_cursor = self._journal.read(cursor, self._batch_size)
            if not entries:
                cursor = next_cursor
                if self._stop.is_set():
                    break
                self._wait_for_entries(next_cursor.seq)
                continue
            pause = self._linger - (time.monotonic() - began)
            if len(entries) < self._batch_size and pause > 0 and not self._stop.is_set():
                # Less than a batch waits: let the guard add the facts of the next moments,
                # so that one transaction (one commit, one fsync) carries them all. A stop
                # ends the wait at once.
                self._stop.wait(pause)
                continue
            began = time.monotonic()
            try:
                new = self._write(entries)
            except LedgerUnavailable as error:
                self._unavailable(error, backoff.next_delay())
                if self._stop.is_set():
                    break
                continue
            backoff.reset()
            self._committed(next_cursor, new)
            cursor = next_cursor

    def _wait_for_entries(self, after: int) -> None:
        """Wait (a while) for an entry newer than ``after``."""
        self._journal.wait_for_entries(after, 0.5)

    def _committed(self, cursor: Cursor, new: list[OffenceEntry]) -> None:
        """Everything up to ``cursor`` is in the database: move the checkpoint, tell the guard."""
        self._journal.checkpoint(cursor)
        if new and self._on_written is not None:
            self._on_written(new)
        with self._idle:
            self._idle.notify_all()

    def _unavailable(self, error: LedgerUnavailable, delay: float) -> None:
        status = self.status
        if status.retrying_since is None:
            status.retrying_since = datetime.now(UTC)
            _log.warning("ledger_unavailable", pending=self._journal.pending, error=str(error))
        status.last_error = str(error)
        self._status_changed()
        self._stop.wait(delay)

    def _status_changed(self) -> None:
        """The status says something new between commits (the writer's process reports it)."""

    def _ready(self) -> None:
        if self._prepare is None:
            return
        try:
            self._prepare()
        except LedgerUnavailable:
            raise
        except LedgerError as error:
            # Not a fact's fault: nothing is set aside; the journal waits for the schema.
            if self.status.last_error != str(error):
                _log.error("ledger not ready for writes", error=str(error))
            raise LedgerUnavailable(str(error)) from error
        self._prepare = None

    def _write(self, entries: Sequence[JournalEntry]) -> list[OffenceEntry]:
        """Write a batch; set aside (one by one) the facts that can never be written.

        Returns the offences that were new (priced).
        """
        self._ready()
        facts: list[tuple[JournalEntry, LedgerFact]] = []
        for entry in entries:
            try:
                facts.append((entry, decode_fact(entry.data)))
            except ValueError as error:
                self._set_aside(entry, error)
        new = self._write_facts(facts)
        status = self.status
        if status.retrying_since is not None:
            _log.info("ledger_available_again", since=status.retrying_since.isoformat())
        status.retrying_since = None
        status.written += len(facts)
        status.batches += 1
        status.offences += len(new)
        return new

    def _write_facts(self, facts: Sequence[tuple[JournalEntry, LedgerFact]]) -> list[OffenceEntry]:
        if not facts:
            return []
        for attempt in range(3):
            try:
                with self._db.write() as session:
                    return write_facts(session, [fact for _, fact in facts])
            except LedgerConflict:
                # Another process wrote one of these keys in between: the retry skips it.
                if attempt == 2:
                    raise
            except LedgerUnavailable:
                raise
            except LedgerError as error:
                if len(facts) == 1:
                    self._set_aside(facts[0][0], error)
                    return []
                middle = len(facts) // 2
                return self._write_facts(facts[:middle]) + self._write_facts(facts[middle:])
        return []

    def _set_aside(self, entry: JournalEntry, error: Exception) -> None:
        # A batch is offered again after the database was unavailable, and after a restart
        # from the checkpoint: an entry set aside then is not set aside (nor alerted) twice.
        if self._set_aside_entries is None:
            self._set_aside_entries = {
                int(r["seq"]): r["entry"] for r in read_set_aside(self.set_aside_path)
            }
        data = dict(entry.data)
        if self._set_aside_entries.get(entry.seq) == data:
            return
        self._set_aside_entries[entry.seq] = data
        record = {
            "seq": entry.seq,
            "at": datetime.now(UTC).isoformat(),
            "error": f"{type(error).__name__}: {error}",
            "entry": data,
        }
        with self.set_aside_path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.status.set_aside += 1
        message = f"journal entry {entry.seq} can never be written: {error}"
        _log.error(
            "ledger_entry_set_aside", seq=entry.seq, error=str(error), path=str(self.set_aside_path)
        )
        if self._on_set_aside is not None:
            self._on_set_aside(message)


def read_set_aside(path: Path) -> list[dict[str, Any]]:
    """Return the facts set aside so far (oldest first)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def replay_set_aside(path: Path, database: LedgerDatabase) -> tuple[int, int]:
    """Try the set-aside facts again, keeping those that still fail; return (written, kept)."""
    kept: list[dict[str, Any]] = []
    written = 0
    for record in read_set_aside(path):
        try:
            fact = decode_fact(record["entry"])
            with database.write() as session:
                write_facts(session, [fact])
            written += 1
        except (LedgerError, ValueError) as error:
            if isinstance(error, LedgerUnavailable):
                raise
            record["error"] = f"{type(error).__name__}: {error}"
            kept.append(record)
    temporary = path.with_suffix(".tmp")
    temporary.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), "utf-8")
    temporary.replace(path)
    return written, len(kept)
