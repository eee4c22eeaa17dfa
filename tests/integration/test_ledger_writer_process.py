"""The ledger writer in a process of its own: same promises as the thread, across processes."""

from __future__ import annotations

import os
import select
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbxguard.adapters.journal import Journal
from pbxguard.adapters.ledger import CallLog, OffenceBook
from pbxguard.adapters.ledger.writer import SET_ASIDE, FactJournal, read_set_aside
from pbxguard.adapters.ledger.writer_process import ProcessLedgerWriter
from pbxguard.domain.entries import OffenceEntry
from pbxguard.domain.policy import Rule
from pbxguard.domain.records import OffenceFact
from tests.integration.test_journal import SHANGHAI, database, decision, offence
from tests.support.guard import holds_within

# A spawned interpreter imports SQLAlchemy and the ledger before its first write.
START = 30.0


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    opened = Journal(tmp_path / "journal").open()
    yield opened
    opened.close()


def url(path: Path) -> str:
    return f"sqlite:///{path}"


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait for a process that is not ours to end; True once it has."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(fd)


def test_every_fact_is_stored_once_in_order_and_the_priced_offences_come_back(
    tmp_path: Path, journal: Journal
) -> None:
    db = database(tmp_path / "ledger.sqlite3")
    priced: list[OffenceEntry] = []
    writer = ProcessLedgerWriter(
        journal, url(tmp_path / "ledger.sqlite3"), site="hq", batch_size=7, on_written=priced.extend
    )
    facts = FactJournal(journal)
    writer.start()
    try:
        for n in range(20):
            facts.append([decision(n), offence(n)])
        facts.append([offence(3)])  # the same offence again (a resync, a restart)
        assert writer.wait_idle(START)
        # It runs only on a CPU the guard does not want.
        assert writer.pid is not None
        assert os.sched_getscheduler(writer.pid) == os.SCHED_IDLE
    finally:
        assert writer.stop(drain=5)
    assert writer.pid is None
    assert len(CallLog(db).decisions()) == 20
    stored = OffenceBook(db).offences()
    assert [e.escalation_step for e in stored] == list(range(1, 21))
    # What the guard is told is what the ledger holds: each new offence once, priced.
    assert sorted(e.key for e in priced) == sorted(e.key for e in stored)
    assert sorted(e.escalation_step for e in priced) == list(range(1, 21))
    assert writer.status.offences == 20
    assert writer.status.written == 41
    assert writer.status.batches >= 3
    assert journal.checkpoint_seq == journal.last_seq
    db.close()


def test_a_fact_that_can_never_be_written_is_set_aside_and_the_guard_is_told(
    tmp_path: Path, journal: Journal
) -> None:
    db = database(tmp_path / "ledger.sqlite3")
    alerts: list[str] = []
    writer = ProcessLedgerWriter(
        journal, url(tmp_path / "ledger.sqlite3"), site="hq", on_set_aside=alerts.append
    )
    bad = OffenceFact(offence(1).draft, Rule("XX-9", "x", "x", "x"), SHANGHAI)
    writer.start()
    try:
        FactJournal(journal).append([decision(1), bad, decision(2)])
        journal.append([{"op": "from-a-newer-version", "fact": {}}])
        FactJournal(journal).append([decision(3)])
        assert writer.wait_idle(START)
    finally:
        writer.stop()
    assert [d.key for d in CallLog(db).decisions()] == ["hq:1:agi", "hq:2:agi", "hq:3:agi"]
    aside = read_set_aside(journal.directory / SET_ASIDE)
    assert sorted(record["entry"]["op"] for record in aside) == ["from-a-newer-version", "offence"]
    assert len(alerts) == 2
    assert any("XX-9" in alert for alert in alerts)
    assert writer.status.set_aside == 2
    db.close()


def test_a_locked_database_is_retried_and_the_guard_sees_it(
    tmp_path: Path, journal: Journal
) -> None:
    path = tmp_path / "ledger.sqlite3"
    db = database(path)
    writer = ProcessLedgerWriter(
        journal, url(path), site="hq", busy_timeout=0.2, retry_initial=0.05, retry_max=0.2
    )
    writer.start()
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        FactJournal(journal).append([decision(0)])
        assert writer.wait_idle(START)
        blocker.execute("BEGIN EXCLUSIVE")
        FactJournal(journal).append([decision(n) for n in range(1, 6)])
        assert holds_within(lambda: writer.status.retrying_since is not None)
        assert writer.status.last_error
        assert journal.pending == 5
        blocker.execute("COMMIT")
        assert writer.wait_idle(10)
    finally:
        blocker.close()
        writer.stop()
    assert len(CallLog(db).decisions()) == 6
    assert writer.status.retrying_since is None
    db.close()


def test_a_writer_process_that_dies_is_started_again_and_a_sigterm_does_not_stop_it(
    tmp_path: Path, journal: Journal
) -> None:
    db = database(tmp_path / "ledger.sqlite3")
    writer = ProcessLedgerWriter(
        journal, url(tmp_path / "ledger.sqlite3"), site="hq", restart_delay=0.05
    )
    facts = FactJournal(journal)
    writer.start()
    try:
        facts.append([decision(0)])
        assert writer.wait_idle(START)
        first = writer.pid
        assert first is not None
        # systemd and ^C signal the whole group: only the guard stops its writer.
        os.kill(first, signal.SIGTERM)
        facts.append([decision(1)])
        assert writer.wait_idle(10)
        assert writer.pid == first
        os.kill(first, signal.SIGKILL)
        assert wait_exit(first, 10)
        facts.append([decision(n) for n in range(2, 10)])
        assert writer.wait_idle(START)
        assert writer.restarts == 1
        assert writer.pid not in (None, first)
    finally:
        assert writer.stop(drain=5)
    assert [d.key for d in CallLog(db).decisions()] == [f"hq:{n}:agi" for n in range(10)]
    db.close()


_GUARD_KILLED = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from pbxguard.adapters.journal import Journal
    from pbxguard.adapters.ledger.writer import FactJournal
    from pbxguard.adapters.ledger.writer_process import ProcessLedgerWriter
    from tests.integration.test_journal import decision

    journal = Journal(Path(sys.argv[1])).open()
    writer = ProcessLedgerWriter(journal, sys.argv[2], site="hq")
    writer.start()
    FactJournal(journal).append([decision(n) for n in range(10)])
    assert writer.wait_idle(30)
    print(writer.pid, flush=True)
    FactJournal(journal).append([decision(n) for n in range(10, 20)])
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_kill_9_of_the_guard_ends_its_writer_and_the_next_start_writes_the_rest(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.sqlite3"
    db = database(path)
    done = subprocess.run(
        [sys.executable, "-c", _GUARD_KILLED, str(tmp_path / "journal"), url(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == -9, done.stderr
    child = int(done.stdout.strip())
    # Its guard gone, the writer process ends on its own (it never outlives the guard).
    assert wait_exit(child, 15)
    journal = Journal(tmp_path / "journal").open()
    writer = ProcessLedgerWriter(journal, url(path), site="hq")
    writer.start()
    try:
        assert writer.wait_idle(START)
    finally:
        writer.stop()
        journal.close()
    assert [d.key for d in CallLog(db).decisions()] == [f"hq:{n}:agi" for n in range(20)]
    db.close()
