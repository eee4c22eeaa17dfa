"""The write-ahead journal and the ledger writer: facts survive kills, outages and damage."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from pbxguard.adapters.codec import from_data, to_data
from pbxguard.adapters.journal import Journal
from pbxguard.adapters.ledger import CallLog, LedgerDatabase, LedgerWriter, OffenceBook
from pbxguard.adapters.ledger.writer import (
    SET_ASIDE,
    FactJournal,
    decode_fact,
    encode_fact,
    read_set_aside,
    replay_set_aside,
)
from pbxguard.adapters.policy_file import load_policy
from pbxguard.bootstrap import prepare_state_dir
from pbxguard.domain.policy import Rule
from pbxguard.domain.records import (
    CallRef,
    DecisionRecord,
    Ending,
    Layer,
    OffenceDraft,
    OffenceFact,
    OffenceOutcome,
    Outcome,
)
from pbxguard.errors import ConfigError, JournalError
from tests.support.guard import holds_within
from tests.support.postgres import PostgresCluster, stoppable_postgres  # noqa: F401

SHANGHAI = ZoneInfo("Asia/Shanghai")
POLICY = load_policy(None).policy
AT = datetime(2026, 11, 23, 9, 0, tzinfo=SHANGHAI)


def decision(n: int) -> DecisionRecord:
    return DecisionRecord(
        key=f"hq:{n}:agi",
        at=AT + timedelta(seconds=n),
        call=CallRef(f"L{n}", f"L{n}", f"PJSIP/2001-{n:08x}"),
        layer=Layer.AGI,
        extension="2001",
        person_id="p-zhang",
        dialled="00441632960123",
        number="00441632960123",
        number_class="international",
        verdict="deny",
        rule_id="LD-2",
        reason_zh="国际长途须事先经部门负责人同意",
        reason_en="international needs the department head's prior approval",
        approval_id="",
        policy_version="v1",
    )


def offence(n: int, *, rule: str = "LD-2") -> OffenceFact:
    draft = OffenceDraft(
        key=f"hq:L{n}:{rule}:00441632960123",
        rule_id=rule,
        at=AT + timedelta(seconds=n),
        call=CallRef(f"L{n}", f"L{n}", f"PJSIP/2001-{n:08x}"),
        extension="2001",
        person_id="p-zhang",
        person_name="张三",
        department="工程部",
        number="00441632960123",
        number_class="international",
        outcome=Outcome.CUT_ORDERED,
        policy_version="v1",
    )
    return OffenceFact(draft, POLICY.rules[rule], SHANGHAI)


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    opened = Journal(tmp_path / "journal").open()
    yield opened
    opened.close()


def database(path: Path) -> LedgerDatabase:
    db = LedgerDatabase.open(f"sqlite:///{path}", site="hq", busy_timeout=0.2)
    db.migrate()
    return db


# -- encoding ---------------------------------------------------------------------------------


def test_every_kind_of_fact_round_trips_exactly() -> None:
    facts = [
        decision(1),
        offence(2),
        OffenceOutcome(
            key="k",
            at=AT,
            ending=Ending.ANSWERED,
            answered_at=AT,
            ended_at=AT + timedelta(seconds=7, microseconds=5),
            talk_time=timedelta(seconds=7, microseconds=5),
            charge=Decimal("2.00"),
            answer_estimated=True,
            cause="16",
        ),
    ]
    for fact in facts:
        entry = json.loads(json.dumps(encode_fact(fact)))
        assert decode_fact(entry) == fact
    rule = POLICY.rules["PR-1"]
    assert from_data(type(rule), json.loads(json.dumps(to_data(rule)))) == rule


def test_a_naive_datetime_is_refused_not_guessed() -> None:
    with pytest.raises(ValueError, match="naive"):
        to_data(datetime(2026, 1, 1))  # noqa: DTZ001


# -- the journal ------------------------------------------------------------------------------


def test_appended_entries_read_back_in_order_from_the_checkpoint(journal: Journal) -> None:
    journal.append([encode_fact(decision(n)) for n in range(3)])
    journal.append([encode_fact(decision(3))])
    entries, cursor = journal.read(None, 10)
    assert [e.seq for e in entries] == [1, 2, 3, 4]
    assert [decode_fact(e.data) for e in entries] == [decision(n) for n in range(4)]
    journal.checkpoint(cursor)
    assert journal.pending == 0
    assert journal.read(None, 10)[0] == []


def test_a_journal_survives_a_reopen_and_keeps_counting(tmp_path: Path) -> None:
    first = Journal(tmp_path / "j").open()
    first.append([encode_fact(decision(n)) for n in range(5)])
    _, cursor = first.read(None, 2)
    first.checkpoint(cursor)
    first.close()
    second = Journal(tmp_path / "j").open()
    try:
        assert second.pending == 3
        assert [e.seq for e in second.read(None, 10)[0]] == [3, 4, 5]
        assert second.append([encode_fact(decision(9))]) == 6
    finally:
        second.close()


def test_a_torn_last_line_is_cut_off_and_a_damaged_line_is_set_aside(tmp_path: Path) -> None:
    directory = tmp_path / "j"
    first = Journal(directory).open()
    first.append([encode_fact(decision(n)) for n in range(3)])
    first.close()
    [segment] = sorted(directory.glob("*.log"))
    lines = segment.read_bytes().split(b"\n")
    # Damage the middle entry and tear the last one, as a bad disk and a power cut would.
    lines[1] = lines[1].replace(b"2001", b"2009")
    segment.write_bytes(b"\n".join(lines[:2]) + b"\n" + lines[2][:40])
    second = Journal(directory).open()
    try:
        entries, _ = second.read(None, 10)
        assert [decode_fact(e.data) for e in entries] == [decision(0)]
        damaged = (directory / "damaged.log").read_text("utf-8")
        assert '"offset"' in damaged
        # Appending goes on after the good data.
        assert second.append([encode_fact(decision(7))]) >= 2
    finally:
        second.close()


def test_segments_roll_over_and_old_ones_go_once_written(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j", segment_bytes=2048).open()
    try:
        journal.append([encode_fact(decision(n)) for n in range(4)])
        for n in range(4, 30):
            journal.append([encode_fact(decision(n))])
        assert len(list((tmp_path / "j").glob("*.log"))) > 3
        entries, cursor = journal.read(None, 100)
        assert [e.seq for e in entries] == list(range(1, 31))
        journal.checkpoint(cursor)
        assert len(list((tmp_path / "j").glob("*.log"))) == 1
    finally:
        journal.close()


def test_one_process_at_a_time(tmp_path: Path) -> None:
    owner = Journal(tmp_path / "j").open()
    try:
        with pytest.raises(JournalError, match="another pbxguard"):
            Journal(tmp_path / "j").open()
    finally:
        owner.close()


def test_an_unwritable_journal_directory_says_so(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    with pytest.raises(JournalError, match="cannot be written"):
        Journal(blocked / "journal").open()


def test_group_commit_makes_appends_durable(journal: Journal) -> None:
    last = journal.append([encode_fact(decision(n)) for n in range(50)])
    assert journal.wait_durable(last, timeout=5)
    assert journal.durable_seq >= last
    assert journal.fsyncs >= 1


_KILL_WHILE_APPENDING = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from pbxguard.adapters.journal import Journal
    journal = Journal(Path(sys.argv[1])).open()
    for n in range(int(sys.argv[2])):
        journal.append([{"op": "probe", "n": n}])
    print("appended", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_what_was_appended_survives_kill_9_before_any_fsync(tmp_path: Path) -> None:
    directory = tmp_path / "j"
    done = subprocess.run(
        [sys.executable, "-c", _KILL_WHILE_APPENDING, str(directory), "500"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout.strip() == "appended"
    assert done.returncode == -9
    reopened = Journal(directory).open()
    try:
        entries, _ = reopened.read(None, 1000)
    finally:
        reopened.close()
    assert [e.data["n"] for e in entries] == list(range(500))


# -- the writer -------------------------------------------------------------------------------


def test_the_writer_stores_every_fact_once_in_order(tmp_path: Path, journal: Journal) -> None:
    db = database(tmp_path / "ledger.sqlite3")
    facts = FactJournal(journal)
    writer = LedgerWriter(journal, db, batch_size=7)
    writer.start()
    try:
        for n in range(20):
            facts.append([decision(n), offence(n)])
        facts.append([offence(3)])  # the same offence again (a resync, a restart)
        assert writer.wait_idle(10)
    finally:
        assert writer.stop(drain=5)
    assert len(CallLog(db).decisions()) == 20
    stored = OffenceBook(db).offences()
    assert len(stored) == 20
    # Priced in order: the ladder of LD-2 counts each earlier offence of the year.
    assert [e.escalation_step for e in stored] == list(range(1, 21))
    assert writer.status.batches >= 3
    db.close()


def test_facts_that_come_one_by_one_share_a_transaction_and_a_stop_does_not_wait(
    tmp_path: Path, journal: Journal
) -> None:
    """Facts that follow each other closely share a transaction; a stop cuts the wait short."""
    db = database(tmp_path / "ledger.sqlite3")
    facts = FactJournal(journal)
    writer = LedgerWriter(journal, db, linger=30.0)
    facts.append([decision(0)])
    writer.start()
    try:
        # What the journal held at the start is written at once; then the writer waits.
        assert writer.wait_idle(10)
        for n in range(1, 21):
            facts.append([decision(n)])  # one write(2) and one wake-up each
    finally:
        # The linger (30 s) is longer than the stop waits for the thread (drain + 5 s).
        assert writer.stop(drain=5)
    assert len(CallLog(db).decisions()) == 21
    assert writer.status.batches == 2
    db.close()


def test_a_locked_database_delays_facts_and_loses_none(tmp_path: Path, journal: Journal) -> None:
    path = tmp_path / "ledger.sqlite3"
    db = database(path)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    writer = LedgerWriter(journal, db, retry_initial=0.05, retry_max=0.2)
    writer.start()
    try:
        FactJournal(journal).append([decision(n) for n in range(5)])
        assert holds_within(lambda: writer.status.retrying_since is not None)
        assert journal.pending == 5
        blocker.execute("COMMIT")
        assert writer.wait_idle(10)
    finally:
        blocker.close()
        writer.stop()
    assert len(CallLog(db).decisions()) == 5
    assert writer.status.retrying_since is None
    db.close()


def test_a_fact_that_can_never_be_written_is_set_aside_and_the_rest_go_on(
    tmp_path: Path, journal: Journal
) -> None:
    db = database(tmp_path / "ledger.sqlite3")
    alerts: list[str] = []
    writer = LedgerWriter(journal, db, on_set_aside=alerts.append)
    # The draft names LD-2 but comes with another rule: refused every time it is offered.
    bad = OffenceFact(offence(1).draft, Rule("XX-9", "x", "x", "x"), SHANGHAI)
    writer.start()
    try:
        FactJournal(journal).append([decision(1), bad, decision(2)])
        journal.append([{"op": "from-a-newer-version", "fact": {}}])
        FactJournal(journal).append([decision(3)])
        assert writer.wait_idle(10)
    finally:
        writer.stop()
    assert [d.key for d in CallLog(db).decisions()] == ["hq:1:agi", "hq:2:agi", "hq:3:agi"]
    aside = read_set_aside(journal.directory / SET_ASIDE)
    errors = {record["entry"]["op"]: record["error"] for record in aside}
    assert sorted(errors) == ["from-a-newer-version", "offence"]
    assert "XX-9" in errors["offence"]
    assert len(alerts) == 2
    # After a fix, replaying keeps what still fails and writes the rest.
    written, kept = replay_set_aside(journal.directory / SET_ASIDE, db)
    assert (written, kept) == (0, 2)
    db.close()


class _FailureCountingWriter(LedgerWriter):
    """A writer that counts the batches the database turned away."""

    def __init__(self, journal: Journal, db: LedgerDatabase, **options: Any) -> None:
        super().__init__(journal, db, **options)
        self.turned_away = threading.Semaphore(0)

    def _status_changed(self) -> None:
        self.turned_away.release()


def test_a_fact_set_aside_is_set_aside_once_however_often_its_batch_is_retried(
    tmp_path: Path, journal: Journal
) -> None:
    path = tmp_path / "ledger.sqlite3"
    db = database(path)
    alerts: list[str] = []
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    writer = _FailureCountingWriter(
        journal, db, retry_initial=0.01, retry_max=0.02, on_set_aside=alerts.append
    )
    writer.start()
    try:
        FactJournal(journal).append([decision(1)])
        journal.append([{"op": "from-a-newer-version", "fact": {}}])
        FactJournal(journal).append([decision(2)])
        for _ in range(3):  # the batch, with the fact that can never be written, offered again
            assert writer.turned_away.acquire(timeout=10)
        blocker.execute("COMMIT")
        assert writer.wait_idle(10)
    finally:
        blocker.close()
        writer.stop()
    assert [d.key for d in CallLog(db).decisions()] == ["hq:1:agi", "hq:2:agi"]
    aside = read_set_aside(journal.directory / SET_ASIDE)
    assert [record["seq"] for record in aside] == [2]
    assert writer.status.set_aside == 1
    assert len(alerts) == 1
    db.close()


def test_facts_left_in_the_journal_are_written_by_the_next_process(tmp_path: Path) -> None:
    first = Journal(tmp_path / "j").open()
    FactJournal(first).append([decision(n) for n in range(4)])
    first.close()  # stopped before anything reached the database
    db = database(tmp_path / "ledger.sqlite3")
    second = Journal(tmp_path / "j").open()
    writer = LedgerWriter(second, db)
    writer.start()
    try:
        assert writer.wait_idle(10)
    finally:
        writer.stop()
        second.close()
    assert len(CallLog(db).decisions()) == 4
    db.close()


@pytest.mark.postgres
def test_postgres_stopped_and_started_loses_nothing(
    tmp_path: Path,
    stoppable_postgres: PostgresCluster,  # noqa: F811
) -> None:
    name = stoppable_postgres.create_database()
    url = stoppable_postgres.url(name)
    db = LedgerDatabase.open(url, site="hq", busy_timeout=1)
    db.migrate()
    journal = Journal(tmp_path / "j").open()
    writer = LedgerWriter(journal, db, retry_initial=0.05, retry_max=0.3)
    writer.start()
    facts = FactJournal(journal)
    try:
        facts.append([decision(n) for n in range(3)])
        assert writer.wait_idle(10)
        stoppable_postgres.stop()
        facts.append([decision(n) for n in range(3, 10)] + [offence(1)])
        assert holds_within(lambda: writer.status.retrying_since is not None, within=15)
        assert "unavailable" in writer.status.last_error
        stoppable_postgres.start()
        assert writer.wait_idle(20)
    finally:
        writer.stop()
        journal.close()
    assert len(CallLog(db).decisions()) == 10
    assert len(OffenceBook(db).offences()) == 1
    assert not (tmp_path / "j" / SET_ASIDE).exists()
    db.close()


def test_a_state_directory_that_cannot_be_written_is_refused() -> None:
    """The guard refuses to start where it could lose offences (even as root, /proc is no place)."""
    with pytest.raises(ConfigError, match="not writable"):
        prepare_state_dir(Path("/proc/self/pbxguard-state"))
