"""The do-not-disturb list on disk: a sorted array of 64-bit numbers, memory-mapped.

Theory of operation
-------------------
A site's list (免打扰数据库) holds millions of numbers. The daemon must look one up on every call
of a promotion line without holding them all as Python objects, and must take a new version
without a restart. So the list is a file:

* 64 bytes of header (magic, byte order, count, build time, SHA-256 of the data), then
* ``count`` unsigned 64-bit integers in the machine's byte order, sorted, without repeats:
  each is a canonical number (`pbxguard.domain.dnd.dnd_number`) encoded by `encode_number`.

`NumberFile` maps it read-only and answers ``number in list`` with a binary search
(`bisect` over a ``memoryview`` cast to ``Q``: C speed, about 24 probes for ten million
numbers). Only the pages the searches touch are read in; they are the kernel's page cache,
shared and reclaimable, not the daemon's heap.

`DndStore` keeps the lists of a site in one directory::

    CURRENT                          the name of the list in force (one line)
    dnd-20261210T101500Z-1a2b3c4d.bin

``pbxguard dnd import FILE`` reads the site's text file (one number a line; a CSV's first
column; ``#`` comments), classifies every number with the site's numbering plan, sorts them in
bounded memory (sorted runs of a million numbers on disk, then a k-way merge), writes the new
list under a temporary name, fsyncs it, renames it into place and then replaces ``CURRENT``
the same way: a reader sees the old list or the new one, never half of one. A running daemon
notices ``CURRENT`` changing and maps the new list. A file with lines that are no number is
refused (nothing changes) unless the import is told to skip them.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import hashlib
import heapq
import mmap
import os
import re
import secrets
import struct
import tempfile
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from pbxguard.domain.dnd import dnd_number, encode_number
from pbxguard.domain.numbers import NumberClass, NumberClassifier
from pbxguard.errors import ConfigError

MAGIC = b"PBXDND\x00\x01"
_HEADER = struct.Struct("=8sIIQQ32s")
HEADER_SIZE = 64
_BYTE_ORDER_MARK = 0x01020304
_ITEM = 8
#: Numbers sorted in memory at once while importing (8 MB of integers, plus Python's list).
RUN_SIZE = 1_000_000
#: Numbers read back from each sorted run at a time while merging.
_MERGE_BLOCK = 65_536
CURRENT = "CURRENT"
_LIST_NAME = re.compile(r"^dnd-[0-9TZ]+-[0-9a-f]{8}\.bin$")
#: Invalid lines named in an error message (the rest are counted).
SHOWN_PROBLEMS = 10

assert _HEADER.size <= HEADER_SIZE
assert array.array("Q").itemsize == _ITEM


@dataclass(frozen=True, slots=True)
class ListInfo:
    """What a list file holds."""

    name: str
    count: int
    built_at: datetime
    digest: str
    size: int


class NumberFile:
    """A do-not-disturb list file, mapped read-only: ``canonical_number in NumberFile``."""

    def __init__(self, path: Path) -> None:
        """Map ``path``.

        Raises:
            ConfigError: it is missing, unreadable, or not a list this pbxguard wrote.
        """
        self.path = path
        try:
            with path.open("rb") as file:
                size = os.fstat(file.fileno()).st_size
                if size < HEADER_SIZE:
                    raise ConfigError(f"{path}: not a do-not-disturb list (too short)")
                self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as error:
            raise ConfigError(f"{path}: cannot read the do-not-disturb list: {error}") from error
        magic, mark, _version, count, built, digest = _HEADER.unpack_from(self._map, 0)
        problem = ""
        if magic != MAGIC:
            problem = "not a do-not-disturb list"
        elif mark != _BYTE_ORDER_MARK:
            problem = "written on a machine of another byte order; import it again here"
        elif size != HEADER_SIZE + count * _ITEM:
            problem = f"{size} bytes, but the header says {count} numbers: the file is damaged"
        if problem:
            self._map.close()
            raise ConfigError(f"{path}: {problem}")
        with contextlib.suppress(AttributeError, OSError, ValueError):
            # Searches jump around the file: read-ahead would only fill memory.
            self._map.madvise(mmap.MADV_RANDOM)
        self._view = memoryview(self._map)[HEADER_SIZE:].cast("Q")
        self._count = int(count)
        self.info = ListInfo(
            path.name, count, datetime.fromtimestamp(built, UTC), digest.hex(), size
        )

    def __len__(self) -> int:
        return self._count

    def __contains__(self, number: object) -> bool:
        """Tell whether the canonical ``number`` is on the list (False for anything else)."""
        if not isinstance(number, str):
            return False
        try:
            value = encode_number(number)
        except ValueError:
            return False
        view = self._view
        index = bisect_left(view, value)
        return index < self._count and bool(view[index] == value)

    def close(self) -> None:
        """Unmap the file (after the last lookup)."""
        self._view.release()
        self._map.close()


@dataclass(slots=True)
class ImportReport:
    """What an import read and wrote.

    Attributes:
        lines: lines read (blank and comment lines included).
        numbers: numbers accepted (repeats included).
        unique: numbers in the list written.
        invalid: lines that hold no number that can be listed.
        problems: the first few invalid lines: (line number, text, reason).
        info: the list written (None when the import was refused).
    """

    lines: int = 0
    numbers: int = 0
    unique: int = 0
    invalid: int = 0
    problems: list[tuple[int, str, str]] = field(default_factory=list)
    info: ListInfo | None = None


def parse_line(text: str) -> str:
    """Return the number field of one line of a list: its first column, comments removed."""
    text = text.split("#", 1)[0].strip().lstrip("\ufeff")
    for separator in (",", "\t", ";"):
        text = text.split(separator, 1)[0]
    return text.strip().strip('"').strip()


def canonical_numbers(
    lines: Iterable[str], classifier: NumberClassifier, report: ImportReport
) -> Iterator[int]:
    """Yield the encoded canonical number of every valid line; count the rest in ``report``."""
    plan = classifier.plan
    for number, line in enumerate(lines, start=1):
        report.lines = number
        text = parse_line(line)
        if not text:
            continue
        found = classifier.classify(text, with_access_code=False)
        canonical = dnd_number(found, plan)
        if canonical is None:
            report.invalid += 1
            if len(report.problems) < SHOWN_PROBLEMS:
                why = (
                    found.reason
                    if found.number_class is NumberClass.INVALID
                    else f"a {found.number_class.value} number cannot be on the list"
                )
                report.problems.append((number, text[:60], why))
            continue
        report.numbers += 1
        yield encode_number(canonical)


def _write_run(values: list[int], directory: Path) -> Path:
    values.sort()
    fd, name = tempfile.mkstemp(prefix=".run-", dir=directory)
    with os.fdopen(fd, "wb") as out:
        array.array("Q", values).tofile(out)
    return Path(name)


def _read_run(path: Path) -> Iterator[int]:
    with path.open("rb") as run:
        while True:
            block = array.array("Q")
            try:
                block.fromfile(run, _MERGE_BLOCK)
            except EOFError:
                yield from block  # the last, shorter block
                return
            yield from block


def _unique(values: Iterable[int]) -> Iterator[int]:
    previous = -1
    for value in values:
        if value != previous:
            yield value
            previous = value


def _write_list(values: Iterable[int], out: BinaryIO, built: datetime) -> tuple[int, str]:
    out.write(b"\x00" * HEADER_SIZE)
    digest = hashlib.sha256()
    count = 0
    block = array.array("Q")
    for value in values:
        block.append(value)
        if len(block) == _MERGE_BLOCK:
            data = block.tobytes()
            out.write(data)
            digest.update(data)
            count += len(block)
            block = array.array("Q")
    data = block.tobytes()
    out.write(data)
    digest.update(data)
    count += len(block)
    header = _HEADER.pack(
        MAGIC, _BYTE_ORDER_MARK, 1, count, int(built.timestamp()), digest.digest()
    )
    out.seek(0)
    out.write(header.ljust(HEADER_SIZE, b"\x00"))
    return count, digest.hexdigest()


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DndStore:
    """The do-not-disturb lists of a site: import a new version, open the one in force."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def current_file(self) -> Path:
        """The file that names the list in force."""
        return self.directory / CURRENT

    def stamp(self) -> tuple[int, int] | None:
        """Return what changes when a new list is put in force (None when there is none)."""
        try:
            found = self.current_file.stat()
        except FileNotFoundError:
            return None
        return (found.st_ino, found.st_mtime_ns)

    def current_path(self) -> Path | None:
        """Return the list in force, or None when no list was ever imported.

        Raises:
            ConfigError: ``CURRENT`` names something that is not a list of this store.
        """
        try:
            name = self.current_file.read_text("utf-8").strip()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise ConfigError(f"{self.current_file}: cannot read: {error}") from error
        if not _LIST_NAME.match(name):
            raise ConfigError(f"{self.current_file}: names no do-not-disturb list ({name!r})")
        return self.directory / name

    def open_current(self) -> NumberFile | None:
        """Map the list in force (None when there is none).

        Raises:
            ConfigError: it cannot be read or is damaged.
        """
        path = self.current_path()
        return NumberFile(path) if path is not None else None

    def import_lines(
        self,
        lines: Iterable[str],
        classifier: NumberClassifier,
        *,
        skip_invalid: bool = False,
        now: datetime,
    ) -> ImportReport:
        """Build a list from ``lines`` and put it in force, atomically.

        With invalid lines and no ``skip_invalid`` nothing changes: the report says which.

        Raises:
            ConfigError: the store's directory cannot be written, or another import runs.
        """
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o755)
            lock = (self.directory / ".import.lock").open("a")
        except OSError as error:
            raise ConfigError(f"{self.directory}: cannot write the lists here: {error}") from error
        with lock:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as error:
                raise ConfigError(
                    f"另一个导入正在进行 — another import into {self.directory} is running"
                ) from error
            try:
                return self._import(lines, classifier, skip_invalid=skip_invalid, now=now)
            except OSError as error:
                raise ConfigError(f"{self.directory}: import failed: {error}") from error

    def _import(
        self,
        lines: Iterable[str],
        classifier: NumberClassifier,
        *,
        skip_invalid: bool,
        now: datetime,
    ) -> ImportReport:
        report = ImportReport()
        runs: list[Path] = []
        try:
            chunk: list[int] = []
            for value in canonical_numbers(lines, classifier, report):
                chunk.append(value)
                if len(chunk) >= RUN_SIZE:
                    runs.append(_write_run(chunk, self.directory))
                    chunk = []
            if report.invalid and not skip_invalid:
                return report
            runs.append(_write_run(chunk, self.directory))
            del chunk
            name = f"dnd-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}.bin"
            target = self.directory / name
            fd, temporary = tempfile.mkstemp(prefix=".list-", dir=self.directory)
            try:
                with os.fdopen(fd, "w+b") as out:
                    merged = _unique(heapq.merge(*(_read_run(run) for run in runs)))
                    count, digest = _write_list(merged, out, now)
                    out.flush()
                    os.fsync(out.fileno())
                    size = out.seek(0, os.SEEK_END)
                os.chmod(temporary, 0o644)
                os.replace(temporary, target)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
            self._put_in_force(name)
            report.unique = count
            report.info = ListInfo(name, count, now.astimezone(UTC), digest, size)
            self._remove_old(keep=name)
            return report
        finally:
            for run in runs:
                run.unlink(missing_ok=True)

    def _put_in_force(self, name: str) -> None:
        fd, temporary = tempfile.mkstemp(prefix=".current-", dir=self.directory)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(name + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, self.current_file)
        _fsync_directory(self.directory)

    def _remove_old(self, *, keep: str) -> None:
        # A daemon still searching an old list keeps its mapping: unlinking never pulls a
        # mapped file from under it.
        for path in self.directory.iterdir():
            if _LIST_NAME.match(path.name) and path.name != keep:
                with contextlib.suppress(OSError):
                    path.unlink()
