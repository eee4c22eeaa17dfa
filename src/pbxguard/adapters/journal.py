"""The write-ahead journal: every ledger fact reaches a local file before the guard acts on it.

Theory of operation
-------------------
The guard appends each fact (a decision, an offence, how a call ended …) to the journal on the
event loop, in the same turn that produced it and *before* it sends the hangup the fact
justifies. Appending is one ``write(2)`` of a few hundred bytes: the data is in the kernel's
page cache when ``append`` returns, so a ``kill -9`` of pbxguard a microsecond later loses
nothing. A *sync thread* makes the appends durable against a power cut with ``fsync`` in group
commits (every append that arrived during one fsync shares the next); the window is one fsync,
and ``sync="always"`` closes it at the cost of an fsync on the event loop.

The *ledger writer* (`pbxguard.adapters.ledger.writer`) reads the journal in order from its
checkpoint, writes the facts to the database in batches, and moves the checkpoint on after each
commit. Everything it writes is idempotent by key, so a crash between a commit and the
checkpoint only means a few facts are offered to the database twice. The journal is thus also
the spool for a database that is down: it grows on disk, never in memory, and drains when the
database is back, across restarts.

Files: segments ``<first seq, 20 digits>.log`` in the journal directory, one entry per line::

    {"seq":12,"op":"offence",...}\\t<crc32 of the JSON, 8 hex digits>\\n

A segment rolls over past ``segment_bytes``; a segment wholly before the checkpoint is deleted.
The checkpoint is ``checkpoint.json`` (seq, segment, offset), replaced atomically. At start-up
the newest segment is scanned and a torn last line (a write cut by a power loss) is cut off; a
damaged line anywhere else is set aside to ``damaged.log`` with its position, never dropped
silently.
"""

from __future__ import annotations

import json
import os
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog

from pbxguard.errors import ConfigError, JournalError

_log = structlog.get_logger(__name__)

SyncMode = Literal["group", "always", "none"]

DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024
_SUFFIX = ".log"
_CHECKPOINT = "checkpoint.json"
_DAMAGED = "damaged.log"


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One fact read back from the journal: its sequence number and its data."""

    seq: int
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in the journal: after entry ``seq``, at ``offset`` of ``segment``."""

    segment: Path
    offset: int
    seq: int


def _encode(seq: int, data: Mapping[str, Any]) -> bytes:
    body = json.dumps(
        {"seq": seq, **data}, ensure_ascii=False, separators=(",", ":"), sort_keys=False
    ).encode("utf-8")
    return body + b"\t" + f"{zlib.crc32(body):08x}".encode() + b"\n"


def _decode(line: bytes) -> dict[str, Any] | None:
    """Return the entry a line holds, or None when the line is damaged."""
    body, tab, crc = line.rstrip(b"\n").rpartition(b"\t")
    if not tab or len(crc) != 8:
        return None
    try:
        if int(crc, 16) != zlib.crc32(body):
            return None
        entry = json.loads(body)
    except ValueError:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("seq"), int):
        return None
    return entry


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """An append-only, segmented, checksummed log of ledger facts, safe across kills.

    One process owns a journal directory at a time (an exclusive lock file says so).
    """

    def __init__(
        self,
        directory: Path,
        *,
        sync: SyncMode = "group",
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> None:
        if sync not in ("group", "always", "none"):
            raise ConfigError(f"journal sync must be group, always or none, not {sync!r}")
        self.directory = directory
        self._sync = sync
        self._segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._appended = threading.Condition(self._lock)
        self._durable = threading.Condition(threading.Lock())
        self._fd = -1
        self._segment: Path | None = None
        self._segment_size = 0
        self._last_seq = 0
        self._durable_seq = 0
        self._checkpoint = Cursor(Path(), 0, 0)
        self._lock_fd = -1
        self._sync_thread: threading.Thread | None = None
        self._closing = False
        self.appends = 0
        self.fsyncs = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> Journal:
        """Create or recover the journal; start the sync thread.

        Raises:
            JournalError: the directory cannot be created or written, or another process holds
                the journal.
        """
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._lock_fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise JournalError(
                f"日志目录不可写 — the journal directory {self.directory} cannot be written: "
                f"{error.strerror or error}"
            ) from error
        try:
            import fcntl  # noqa: PLC0415 - POSIX only, like the rest of the daemon

            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise JournalError(
                f"another pbxguard is using the journal in {self.directory}"
            ) from error
        self._checkpoint = self._read_checkpoint()
        self._recover()
        if self._sync == "group":
            self._sync_thread = threading.Thread(
                target=self._sync_loop, name="journal-sync", daemon=True
            )
            self._sync_thread.start()
        return self

    def close(self) -> None:
        """Make everything appended durable and close the files."""
        with self._lock:
            self._closing = True
            self._appended.notify_all()
        if self._sync_thread is not None:
            self._sync_thread.join()
            self._sync_thread = None
        with self._lock:
            if self._fd >= 0:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # -- appending (the event loop) -------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest entry."""
        return self._last_seq

    @property
    def durable_seq(self) -> int:
        """The newest entry known to be on disk (fsynced)."""
        return self._durable_seq

    @property
    def checkpoint_seq(self) -> int:
        """The newest entry the ledger writer has stored in the database."""
        return self._checkpoint.seq

    @property
    def checkpoint_cursor(self) -> Cursor:
        """Where the ledger writer resumes: just after the newest entry in the database."""
        return self._checkpoint

    @property
    def pending(self) -> int:
        """How many entries wait for the database."""
        return self._last_seq - self._checkpoint.seq

    def append(self, entries: Sequence[Mapping[str, Any]]) -> int:
        """Append entries in order with one write; return the last sequence number.

        Raises:
            JournalError: the write failed (disk full, I/O error); nothing was appended.
        """
        if not entries:
            return self._last_seq
        with self._lock:
            if self._fd < 0:
                raise JournalError("the journal is not open")
            first = self._last_seq + 1
            data = b"".join(_encode(first + i, entry) for i, entry in enumerate(entries))
            if self._segment_size + len(data) > self._segment_bytes and self._segment_size:
                self._roll(first)
            self._write_all(data)
            self._segment_size += len(data)
            self._last_seq = first + len(entries) - 1
            self.appends += len(entries)
            if self._sync == "always":
                os.fsync(self._fd)
                self.fsyncs += 1
                self._mark_durable(self._last_seq)
            elif self._sync == "none":
                self._mark_durable(self._last_seq)
            self._appended.notify_all()
            return self._last_seq

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        written = 0
        try:
            while written < len(view):
                written += os.write(self._fd, view[written:])
        except OSError as error:
            if written:
                # Undo a partial write so that no torn line sits before the next entry.
                os.ftruncate(self._fd, self._segment_size)
                os.lseek(self._fd, self._segment_size, os.SEEK_SET)
            raise JournalError(f"cannot write the journal: {error.strerror or error}") from error

    def _roll(self, first_seq: int) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._mark_durable(self._last_seq)
        self._open_segment(self.directory / f"{first_seq:020d}{_SUFFIX}")

    def _open_segment(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._segment = path
        self._segment_size = os.fstat(self._fd).st_size
        _fsync_dir(self.directory)

    # -- durability (the sync thread) -----------------------------------------------------------

    def _mark_durable(self, seq: int) -> None:
        with self._durable:
            if seq > self._durable_seq:
                self._durable_seq = seq
                self._durable.notify_all()

    def _sync_loop(self) -> None:
        while True:
            with self._lock:
                while self._last_seq <= self._durable_seq and not self._closing:
                    self._appended.wait()
                if self._closing and self._last_seq <= self._durable_seq:
                    return
                fd, target = self._fd, self._last_seq
                # Duplicate the descriptor so a roll-over cannot close it under the fsync.
                fd = os.dup(fd)
            try:
                os.fsync(fd)
                self.fsyncs += 1
            except OSError as error:
                _log.error("journal_fsync_failed", error=str(error))
                time.sleep(0.1)
                continue
            finally:
                os.close(fd)
            self._mark_durable(target)

    def wait_durable(self, seq: int, timeout: float | None = None) -> bool:
        """Block until entry ``seq`` is on disk; return False on timeout."""
        with self._durable:
            return self._durable.wait_for(lambda: self._durable_seq >= seq, timeout)

    # -- reading (the ledger writer's thread) ---------------------------------------------------

    def wait_for_entries(self, after: int, timeout: float) -> bool:
        """Block until an entry newer than ``after`` exists; return False on timeout."""
        with self._lock:
            return self._appended.wait_for(lambda: self._last_seq > after or self._closing, timeout)

    def read(self, cursor: Cursor | None, limit: int) -> tuple[list[JournalEntry], Cursor]:
        """Return up to ``limit`` entries after ``cursor`` (the checkpoint when None)."""
        position = cursor or self._checkpoint
        entries: list[JournalEntry] = []
        for segment in self._segments():
            if position.segment != Path() and segment < position.segment:
                continue
            offset = position.offset if segment == position.segment else 0
            with segment.open("rb") as file:
                file.seek(offset)
                while len(entries) < limit:
                    line = file.readline()
                    if not line.endswith(b"\n"):
                        break  # the end, or a line still being written
                    where, offset = offset, offset + len(line)
                    entry = _decode(line)
                    if entry is None:
                        self._set_aside(segment, where, line)
                    else:
                        seq = entry.pop("seq")
                        if seq > position.seq:
                            entries.append(JournalEntry(seq, entry))
                            position = Cursor(segment, offset, seq)
                            continue
                    position = Cursor(segment, offset, position.seq)
            if len(entries) >= limit:
                break
            position = Cursor(segment, offset, position.seq)
        return entries, position

    def checkpoint(self, cursor: Cursor) -> None:
        """Record that everything up to ``cursor`` is in the database; drop old segments."""
        if cursor.seq <= self._checkpoint.seq:
            return
        data = json.dumps(
            {"seq": cursor.seq, "segment": cursor.segment.name, "offset": cursor.offset}
        ).encode()
        temporary = self.directory / f"{_CHECKPOINT}.tmp"
        with temporary.open("wb") as file:
            file.write(data)
            file.flush()
            # On disk before the rename: a power cut leaves the old checkpoint or the new one,
            # never an empty file that would keep the journal from opening.
            os.fsync(file.fileno())
        os.replace(temporary, self.directory / _CHECKPOINT)
        self._checkpoint = cursor
        with self._lock:
            current = self._segment
        for segment in self._segments():
            if segment >= cursor.segment or segment == current:
                break
            segment.unlink(missing_ok=True)

    def _segments(self) -> list[Path]:
        return sorted(self.directory.glob(f"*{_SUFFIX}"))

    def _set_aside(self, segment: Path, offset: int, line: bytes) -> None:
        record = {"segment": segment.name, "offset": offset, "line": line.decode(errors="replace")}
        with (self.directory / _DAMAGED).open("a", encoding="utf-8") as damaged:
            damaged.write(json.dumps(record, ensure_ascii=False) + "\n")
        _log.error("journal_line_damaged", segment=segment.name, offset=offset)

    # -- recovery ----------------------------------------------------------------------------

    def _read_checkpoint(self) -> Cursor:
        path = self.directory / _CHECKPOINT
        try:
            data = json.loads(path.read_bytes())
            return Cursor(
                self.directory / str(data["segment"]), int(data["offset"]), int(data["seq"])
            )
        except FileNotFoundError:
            return Cursor(Path(), 0, 0)
        except (ValueError, KeyError, TypeError) as error:
            raise JournalError(f"the journal checkpoint {path} is damaged: {error}") from error

    def _recover(self) -> None:
        segments = self._segments()
        if not segments:
            self._last_seq = self._checkpoint.seq
            self._open_segment(self.directory / f"{self._last_seq + 1:020d}{_SUFFIX}")
            self._mark_durable(self._last_seq)
            return
        newest = segments[-1]
        last_seq, good_size = self._scan(newest)
        if good_size != newest.stat().st_size:
            _log.warning(
                "journal_torn_tail_cut",
                segment=newest.name,
                kept_bytes=good_size,
                cut_bytes=newest.stat().st_size - good_size,
            )
            with newest.open("r+b") as file:
                file.truncate(good_size)
                os.fsync(file.fileno())
        if last_seq == 0:
            last_seq = _first_seq(newest) - 1
        self._last_seq = max(last_seq, self._checkpoint.seq)
        self._open_segment(newest)
        self._mark_durable(self._last_seq)
        if self.pending:
            _log.warning("journal_entries_waiting", pending=self.pending)

    def _scan(self, segment: Path) -> tuple[int, int]:
        """Return the last good sequence number in ``segment`` and where its good data ends.

        A last line without its newline, or a damaged last line, is what a power cut leaves
        of a write: it is cut off. A damaged line with more data after it stays where it is;
        the writer sets it aside when it reaches it.
        """
        last_seq, good = 0, 0
        data = segment.read_bytes()
        offset = 0
        while offset < len(data):
            end = data.find(b"\n", offset)
            if end < 0:
                break
            entry = _decode(data[offset : end + 1])
            if entry is None and end + 1 == len(data):
                break
            if entry is not None:
                last_seq = int(entry["seq"])
            offset = good = end + 1
        return last_seq, good


def _first_seq(segment: Path) -> int:
    try:
        return int(segment.name.removesuffix(_SUFFIX))
    except ValueError:
        return 0
