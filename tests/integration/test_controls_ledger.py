"""Locks, the month's spend and the costs report in the ledger, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from pbxguard.adapters.countries import country_book
from pbxguard.adapters.ledger import CallLog, LedgerDatabase, LockBook, verify_ledger
from pbxguard.adapters.ledger.spend import SpendLedger, month_spend
from pbxguard.adapters.ledger.writer import decode_fact, encode_fact
from pbxguard.adapters.policy_file import load_policy
from pbxguard.app.costs import month_costs
from pbxguard.domain.numbers import NumberClass
from pbxguard.domain.records import CallRef, CallSummary, Lock, LockScope
from pbxguard.errors import NotFound, RequestError
from tests.support.postgres import ledger_url, postgres_cluster, postgres_url  # noqa: F401

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOV_23 = datetime(2026, 11, 23, 10, 0, tzinfo=SHANGHAI)


@pytest.fixture
def database(ledger_url: str) -> Iterator[LedgerDatabase]:  # noqa: F811
    db = LedgerDatabase.open(ledger_url, site="hq")
    db.migrate()
    yield db
    db.close()


def lock(extension: str, at: datetime, minutes: int = 60) -> Lock:
    return Lock(
        id=f"hq:lock:{extension}:burst:{at.isoformat()}",
        scope=LockScope.EXTENSION,
        extension=extension,
        person_id=f"p-{extension}",
        classes=frozenset({NumberClass.INTERNATIONAL, NumberClass.PREMIUM}),
        rule_id="VL-1",
        at=at,
        until=at + timedelta(minutes=minutes),
        reason_zh="呼叫过于频繁",
        reason_en="too many calls",
    )


def call(
    n: int,
    started: datetime,
    *,
    number: str = "00441632960123",
    number_class: str = "international",
    talk: timedelta | None = timedelta(seconds=61),
    charge: str = "3.30",
    person: str = "head-9001",
    department: str = "工程部",
) -> CallSummary:
    answered = started + timedelta(seconds=3) if talk is not None else None
    ended = answered + talk if answered is not None and talk is not None else started
    return CallSummary(
        call=CallRef(f"1795.{n}", f"1795.{n}", f"PJSIP/9001-{n:08x}"),
        extension="9001",
        person_id=person,
        person_name="Department head",
        department=department,
        caller_name="Department head",
        dialled=number,
        number=number,
        number_class=number_class,
        direction="outbound",
        started_at=started,
        answered_at=answered,
        ended_at=ended if answered is not None else started + timedelta(seconds=20),
        verdict="allow",
        rule_id="",
        outcome="answered" if answered else "unanswered",
        charge=Decimal(charge),
    )


def test_a_lock_is_stored_once_listed_while_in_force_and_lifted_once(
    database: LedgerDatabase,
) -> None:
    book = LockBook(database)
    first = lock("9001", NOV_23)
    assert book.record(first) is True
    assert book.record(first) is False  # the journal may offer it twice
    book.record(lock("2001", NOV_23 - timedelta(hours=3)))  # over by now
    assert [entry.id for entry in book.active(NOV_23 + timedelta(minutes=1))] == [first.id]
    [stored] = book.active(NOV_23 + timedelta(minutes=1), site="hq")
    assert stored == first
    assert book.active(NOV_23, site="elsewhere") == []

    entry = book.get(first.id)
    assert entry is not None
    number = entry.number
    assert book.lifted([first.id]) == frozenset()
    lifted = book.lift(str(number), by="admin", at=NOV_23 + timedelta(minutes=5), reason="核实")
    assert lifted.lift is not None
    assert (lifted.lift.by, lifted.lift.reason) == ("admin", "核实")
    assert book.lifted([first.id, "no-such-lock"]) == frozenset({first.id})
    assert book.active(NOV_23 + timedelta(minutes=6)) == []
    with pytest.raises(RequestError, match="already lifted"):
        book.lift(first.id, by="admin", at=NOV_23 + timedelta(minutes=7), reason="again")
    with pytest.raises(RequestError, match="has already ended"):
        book.lift(
            lock("2001", NOV_23 - timedelta(hours=3)).id,
            by="admin",
            at=NOV_23,
            reason="late",
        )
    with pytest.raises(NotFound):
        book.lift("999", by="admin", at=NOV_23, reason="none")
    # Lifting appends a row: the chain still verifies.
    assert verify_ledger(database).intact


def test_a_lock_travels_through_the_journal_encoding_intact() -> None:
    original = lock("9001", NOV_23)
    assert decode_fact(encode_fact(original)) == original


def test_the_months_spend_sums_calls_by_person_phone_and_class(
    database: LedgerDatabase,
) -> None:
    log = CallLog(database)
    log.record_call(call(1, NOV_23))
    log.record_call(call(2, NOV_23 + timedelta(hours=1), talk=timedelta(seconds=30)))
    log.record_call(call(3, NOV_23, talk=None, charge="0.00"))  # never answered
    log.record_call(
        call(4, NOV_23, number="02787654321", number_class="domestic_ld", charge="0.60")
    )
    log.record_call(call(5, datetime(2026, 10, 31, 23, 59, tzinfo=SHANGHAI)))  # October's
    start = datetime(2026, 11, 1, tzinfo=SHANGHAI)
    end = datetime(2026, 12, 1, tzinfo=SHANGHAI)
    lines = month_spend(database, month="2026-11", start=start, end=end, site="hq")
    by_class = {line.number_class: line for line in lines}
    assert set(by_class) == {"international", "domestic_ld"}
    intl = by_class["international"]
    assert (intl.calls, intl.charge) == (3, Decimal("6.60"))
    assert intl.talk == timedelta(seconds=61 + 30)
    assert (intl.person_id, intl.department, intl.extension, intl.site) == (
        "head-9001",
        "工程部",
        "9001",
        "hq",
    )
    assert by_class["domestic_ld"].charge == Decimal("0.60")
    # Only the calls that ended before a moment (a guard's start).
    early = month_spend(
        database, month="2026-11", start=start, end=end, ended_before=NOV_23 + timedelta(minutes=30)
    )
    assert sum(line.calls for line in early) == 3
    assert month_spend(database, month="2026-11", start=start, end=end, other_sites_than="hq") == []


def test_the_spend_at_start_up_counts_the_journals_calls_once(database: LedgerDatabase) -> None:
    log = CallLog(database)
    stored, pending = call(1, NOV_23), call(2, NOV_23 + timedelta(minutes=5))
    log.record_call(stored)
    # The journal held both (the first was written just before the stop); the second is not
    # in the database yet. A call that ended after the start is the running guard's own.
    started = NOV_23 + timedelta(hours=1)
    after = call(3, started + timedelta(minutes=1))
    ledger = SpendLedger(
        database,
        site="hq",
        timezone=SHANGHAI,
        started_at=started,
        pending=[stored, pending, after],
    )
    lines = ledger.before_start()
    assert sum(line.calls for line in lines) == 2
    assert sum((line.charge for line in lines), Decimal(0)) == Decimal("6.60")
    assert {line.month for line in lines} == {"2026-11"}


def test_the_costs_report_sums_per_department_person_class_and_country(
    database: LedgerDatabase,
) -> None:
    log = CallLog(database)
    log.record_call(call(1, NOV_23))
    log.record_call(call(2, NOV_23, number="004930123456", charge="1.50"))
    log.record_call(call(3, NOV_23, talk=None, charge="0.00"))
    log.record_call(call(4, NOV_23, number="0085223456789", number_class="hk_macau", charge="0.75"))
    log.record_call(
        call(
            5,
            NOV_23,
            number="13800138000",
            number_class="mobile",
            charge="0.10",
            person="liu-fang",
            department="市场部",
        )
    )
    log.record_call(call(6, datetime(2026, 12, 1, 0, 0, 1, tzinfo=SHANGHAI)))  # December
    policy = load_policy().policy
    lines = month_costs(CallLog(database), policy, country_book(), month="2026-11")
    assert [
        (line.department, line.number_class, line.country, line.calls, line.answered, line.charge)
        for line in lines
    ] == [
        ("工程部", "hk_macau", "852", 1, 1, Decimal("0.75")),
        ("工程部", "international", "44", 2, 1, Decimal("3.30")),
        ("工程部", "international", "49", 1, 1, Decimal("1.50")),
        ("市场部", "mobile", "", 1, 1, Decimal("0.10")),
    ]
    uk = lines[1]
    assert uk.talk == timedelta(seconds=61)
    assert uk.person_name == "Department head"
