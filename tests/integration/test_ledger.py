"""The fine ledger on SQLite and PostgreSQL: idempotency, pricing, append-only, audit queries."""

from __future__ import annotations

import socket
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from argon2 import PasswordHasher
from sqlalchemy import create_engine, text
from structlog.testing import capture_logs

from pbxguard.adapters.ledger import (
    ApprovalBook,
    CallLog,
    CodeBook,
    LedgerDatabase,
    LockBook,
    OffenceBook,
    RegisterBook,
)
from pbxguard.adapters.ledger.console import (
    ApprovalRequestBook,
    AuditTrail,
    SignOffBook,
    UserBook,
)
from pbxguard.adapters.ledger.database import sync_url, translate_error
from pbxguard.adapters.ledger.offences import record_offences
from pbxguard.adapters.ledger.schema import LEDGER_TABLES, metadata
from pbxguard.adapters.policy_file import load_policy
from pbxguard.app.ledger import offence_filter
from pbxguard.domain.access import AccountEvent, ApprovalRequest, SignedReport, SignOff
from pbxguard.domain.approvals import Approval
from pbxguard.domain.entries import AdjustmentKind, OffenceEntry, OffenceFilter
from pbxguard.domain.numbers import NumberClass
from pbxguard.domain.penalties import CountWindow, PenaltySpec, RepeatOffender, Sanction, Step
from pbxguard.domain.periods import month_bounds
from pbxguard.domain.policy import Rule
from pbxguard.domain.records import (
    CallRef,
    CallSummary,
    CodeFailure,
    DecisionRecord,
    Ending,
    Layer,
    Lock,
    LockScope,
    OffenceDraft,
    OffenceFact,
    OffenceOutcome,
    Outcome,
)
from pbxguard.errors import (
    AuthorizationCodeError,
    ConfigError,
    LedgerError,
    LedgerIntegrityError,
    LedgerUnavailable,
)
from tests.support.postgres import ledger_url, postgres_cluster, postgres_url  # noqa: F401

SHANGHAI = ZoneInfo("Asia/Shanghai")
UTC_ZONE = ZoneInfo("UTC")
# Cheap parameters: the tests exercise hashing, not its cost.
HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)

DT4 = PenaltySpec(
    steps=(
        Step(flat=Decimal(50)),
        Step(flat=Decimal(200)),
        Step(sanctions=(Sanction.REIMBURSEMENT_LOST,)),
    ),
    window=CountWindow.QUARTER,
    ladder="DT-4",
)
DT1 = Rule("DT-1", "报销电话工作时间不得关机", "reimbursed phone switched off", "000 L1113", DT4)
DT3 = Rule("DT-3", "营运时间不得私用调度电话", "private use of dispatch phone", "000 L1117", DT4)
PR1 = Rule(
    "PR-1",
    "禁止拨打声讯电话",
    "premium-rate call",
    "000 L125",
    PenaltySpec(steps=(Step(flat=Decimal(50), charge_multiple=Decimal(20)),)),
)
LD2 = Rule(
    "LD-2",
    "未经同意拨打长途",
    "long distance without consent",
    "000 L19",
    PenaltySpec(
        steps=(
            Step(
                per_class={
                    "domestic_ld": Decimal(50),
                    "hk_macau": Decimal(100),
                    "international": Decimal(500),
                }
            ),
        ),
        window=CountWindow.YEAR,
        repeat_offender=RepeatOffender(threshold=3, sanctions=(Sanction.BONUS_WITHHELD,)),
        department_head_share=Decimal("0.2"),
    ),
)
AN1 = Rule("AN-1", "三声内接听", "answer within three rings", "000 L39")


def local(year: int, month: int, day: int, hour: int = 12, minute: int = 0) -> datetime:
    """Return a time on the site's clock (Asia/Shanghai)."""
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI)


def draft(
    key: str,
    rule: Rule,
    at: datetime,
    *,
    person: str = "p-zhang",
    department: str = "ops",
    **fields: Any,
) -> OffenceDraft:
    return OffenceDraft(
        key=key,
        rule_id=rule.id,
        at=at,
        call=CallRef(f"L-{key}", f"U-{key}", f"PJSIP/2001-{key}"),
        extension="2001",
        person_id=person,
        person_name="张三" if person == "p-zhang" else person,
        department=department,
        outcome=Outcome.CUT_ORDERED,
        policy_version="v1",
        **fields,
    )


def decision(key: str, at: datetime) -> DecisionRecord:
    return DecisionRecord(
        key=key,
        at=at,
        call=CallRef(f"L-{key}", f"U-{key}", "PJSIP/2001-00000001"),
        layer=Layer.AGI,
        extension="2001",
        person_id="p-zhang",
        dialled="9010 8888 1234",
        number="01088881234",
        number_class="domestic_ld",
        verdict="deny",
        rule_id="LD-2",
        reason_zh="未经批准的长途",
        reason_en="long distance without approval",
        approval_id="",
        policy_version="v1",
    )


def call(
    linkedid: str,
    started: datetime,
    *,
    number_class: str = "domestic_ld",
    answered: bool = True,
    talk: timedelta = timedelta(minutes=3, seconds=7),
) -> CallSummary:
    answered_at = started + timedelta(seconds=9) if answered else None
    ended = (answered_at + talk) if answered_at else started + timedelta(seconds=30)
    return CallSummary(
        call=CallRef(linkedid, f"{linkedid}.1", "PJSIP/2001-00000001"),
        extension="2001",
        person_id="p-zhang",
        person_name="张三",
        department="ops",
        caller_name="Zhang San",
        dialled="901088881234",
        number="01088881234",
        number_class=number_class,
        direction="outbound",
        started_at=started,
        answered_at=answered_at,
        ended_at=ended,
        verdict="allow",
        rule_id="",
        outcome="answered" if answered else "unanswered",
    )


@dataclass
class Ledger:
    """The ledger's books over one database, as the daemon and the commands use them."""

    db: LedgerDatabase
    offences: OffenceBook
    calls: CallLog
    approvals: ApprovalBook
    codes: CodeBook
    register: RegisterBook

    @property
    def backend(self) -> str:
        return self.db.backend

    def month(self, month: str, *, timezone: ZoneInfo = SHANGHAI, **where: str) -> OffenceFilter:
        start, end = month_bounds(month, timezone)
        return OffenceFilter(start=start, end=end, **where)

    def register_of(self, month: str) -> list[Any]:
        start, end = month_bounds(month, SHANGHAI)
        return self.register.entries(start, end)


def books(url: str) -> Ledger:
    db = LedgerDatabase.open(url, site="hq")
    return Ledger(
        db,
        OffenceBook(db),
        CallLog(db),
        ApprovalBook(db),
        CodeBook(db, hasher=HASHER),
        RegisterBook(db),
    )


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:  # noqa: F811
    opened = books(ledger_url)
    opened.db.migrate()
    yield opened
    opened.db.close()


def raw_sql(url: str, sql: str) -> list[Any]:
    """Run SQL on a connection of its own, as someone bypassing the ledger would."""
    engine = create_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            result = conn.execute(text(sql))
            return list(result.all()) if result.returns_rows else []
    except Exception as error:
        raise translate_error(error) from error
    finally:
        engine.dispose()


def database_files(directory: Path) -> dict[Path, bytes]:
    """Return the bytes of the SQLite database and its journal files."""
    return {path: path.read_bytes() for path in directory.glob("ledger.db*")}


# -- schema ---------------------------------------------------------------------------------


def test_migration_creates_exactly_the_tables_the_models_describe(
    ledger: Ledger,
    ledger_url: str,  # noqa: F811
) -> None:
    ledger.db.migrate()  # a second run is a no-op
    engine = create_engine(sync_url(ledger_url))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = list(compare_metadata(context, metadata))
    finally:
        engine.dispose()
    assert diff == []
    version = raw_sql(ledger_url, "SELECT version_num FROM alembic_version")
    assert version == [("0005_controls",)]


# -- idempotency ----------------------------------------------------------------------------


def test_a_decision_recorded_twice_is_stored_once(ledger: Ledger) -> None:
    rec = decision("agi-1", local(2026, 10, 8, 9, 30))
    assert ledger.calls.record_decision(rec) is True
    assert ledger.calls.record_decision(rec) is False
    stored = ledger.calls.decisions()
    assert stored == [rec]
    assert stored[0].at.tzinfo is not None
    assert stored[0].at.utcoffset() == timedelta(0)


def test_an_offence_recorded_twice_is_stored_and_priced_once(ledger: Ledger) -> None:
    offence = draft("off-1", DT1, local(2026, 1, 5))
    first = ledger.offences.record(offence, DT1, timezone=SHANGHAI)
    again = ledger.offences.record(offence, DT1, timezone=SHANGHAI)
    assert again == first
    assert again.escalation_step == 1
    assert len(ledger.offences.offences()) == 1


def test_a_call_recorded_twice_is_stored_once(ledger: Ledger) -> None:
    summary = call("1700000000.1", local(2026, 10, 9, 10))
    assert ledger.calls.record_call(summary) is True
    assert ledger.calls.record_call(summary) is False
    assert ledger.calls.calls() == [summary]
    assert len(ledger.register_of("2026-10")) == 1


# -- pricing --------------------------------------------------------------------------------


def test_dt4_ladder_escalates_across_rules_and_resets_at_the_shanghai_quarter(
    ledger: Ledger,
) -> None:
    first = ledger.offences.record(draft("a", DT1, local(2026, 1, 10)), DT1, timezone=SHANGHAI)
    second = ledger.offences.record(draft("b", DT3, local(2026, 2, 3)), DT3, timezone=SHANGHAI)
    third = ledger.offences.record(draft("c", DT1, local(2026, 3, 31, 20)), DT1, timezone=SHANGHAI)
    # 01:00 on 1 April in Shanghai is still 31 March in UTC: a new quarter only on the site clock.
    fourth = ledger.offences.record(draft("d", DT3, local(2026, 4, 1, 1)), DT3, timezone=SHANGHAI)
    someone_else = ledger.offences.record(
        draft("e", DT1, local(2026, 3, 31, 21), person="p-li"), DT1, timezone=SHANGHAI
    )
    assert [e.escalation_step for e in (first, second, third, fourth)] == [1, 2, 3, 1]
    assert [e.amount for e in (first, second, third, fourth)] == [
        Decimal("50.00"),
        Decimal("200.00"),
        Decimal("0.00"),
        Decimal("50.00"),
    ]
    assert third.sanctions == (Sanction.REIMBURSEMENT_LOST,)
    assert fourth.at.astimezone(UTC).month == 3
    assert someone_else.escalation_step == 1
    assert {e.ladder for e in (first, second, third, fourth)} == {"DT-4"}


def test_a_batch_across_a_quarter_is_priced_against_earlier_later_and_excused_offences(
    ledger: Ledger,
) -> None:
    """One transaction of offences (as the writer stores them) counts each one's own priors."""
    waived = ledger.offences.record(draft("s0", DT1, local(2026, 3, 1)), DT1, timezone=SHANGHAI)
    ledger.offences.add_adjustment(
        waived.id, AdjustmentKind.WAIVER, by="head", reason="line fault", at=local(2026, 3, 2)
    )
    ledger.offences.record(draft("s1", DT1, local(2026, 3, 20)), DT1, timezone=SHANGHAI)
    # Stored before the batch, but later than two of its offences.
    ledger.offences.record(draft("s2", DT1, local(2026, 4, 10)), DT1, timezone=SHANGHAI)
    batch = [
        OffenceFact(draft("b3", DT3, local(2026, 4, 12)), DT3, SHANGHAI),
        OffenceFact(draft("b1", DT3, local(2026, 3, 25)), DT3, SHANGHAI),
        OffenceFact(draft("b4", DT1, local(2026, 4, 5)), DT1, SHANGHAI),
        OffenceFact(draft("b2", DT1, local(2026, 3, 31, 20)), DT1, SHANGHAI),
    ]
    with ledger.db.write() as session:
        stored = record_offences(session, batch)
    steps = {entry.key: entry.escalation_step for entry in stored}
    # Q1: s1 (s0 waived), then b1, b2. Q2 up to 5 April: nothing; up to 12 April: b4 and s2.
    assert steps == {"b1": 2, "b2": 3, "b4": 1, "b3": 3}
    assert [entry.key for entry in stored] == ["b1", "b2", "b4", "b3"]
    by_key = {entry.key: entry for entry in ledger.offences.offences()}
    assert {key: by_key[key].escalation_step for key in steps} == steps
    assert {key: by_key[key].id for key in steps} == {entry.key: entry.id for entry in stored}


def test_a_listing_pages_through_offences_that_share_a_time_once_each_in_order(
    ledger: Ledger,
) -> None:
    """Pages of 1,000 cut between offences recorded at the same instant lose and repeat none."""
    moments = [local(2026, 9, 1 + n // 700, 10) for n in range(2_500)]  # 700 share each instant
    batch = [
        OffenceFact(draft(f"tie-{n:04d}", AN1, at, person=f"p-{n % 40}"), AN1, SHANGHAI)
        for n, at in enumerate(moments)
    ]
    with ledger.db.write() as session:
        record_offences(session, batch)
    listed = list(ledger.offences.iter_offences(ledger.month("2026-09")))
    assert len(listed) == 2_500
    assert len({entry.id for entry in listed}) == 2_500
    assert [(e.at, e.id) for e in listed] == sorted((e.at, e.id) for e in listed)
    assert {e.key for e in listed} == {f"tie-{n:04d}" for n in range(2_500)}


def test_pr1_is_twenty_times_the_stored_charge_plus_fifty(
    ledger: Ledger,
    ledger_url: str,  # noqa: F811
) -> None:
    offence = draft(
        "pr-1",
        PR1,
        local(2026, 5, 6),
        number="1681234",
        number_class="premium",
        charge=Decimal("1.35"),
        talk_time=timedelta(minutes=2, seconds=10, milliseconds=250),
    )
    entry = ledger.offences.record(offence, PR1, timezone=SHANGHAI)
    assert entry.amount == Decimal("77.00")
    reopened = books(ledger_url)
    try:
        [stored] = reopened.offences.offences(OffenceFilter(rule="PR-1"))
    finally:
        reopened.db.close()
    assert stored.charge == Decimal("1.35")
    assert stored.amount == Decimal("77.00")
    assert stored.amount == Decimal(20) * stored.charge + Decimal(50)
    assert stored.talk_time == timedelta(minutes=2, seconds=10, milliseconds=250)
    assert isinstance(stored.amount, Decimal)
    assert stored.rule_title_zh == "禁止拨打声讯电话"
    assert stored.citation == "000 L125"
    assert stored.call == CallRef("L-pr-1", "U-pr-1", "PJSIP/2001-pr-1")


def test_ld2_prices_each_class_and_flags_the_repeat_offender(ledger: Ledger) -> None:
    entries = [
        ledger.offences.record(
            draft(f"ld-{cls}", LD2, local(2026, 6, day), number_class=cls),
            LD2,
            timezone=SHANGHAI,
        )
        for day, cls in ((1, "domestic_ld"), (2, "hk_macau"), (3, "international"))
    ]
    assert [e.amount for e in entries] == [Decimal("50.00"), Decimal("100.00"), Decimal("500.00")]
    assert [e.department_head_amount for e in entries] == [
        Decimal("10.00"),
        Decimal("20.00"),
        Decimal("100.00"),
    ]
    assert [e.fine.repeat_offender for e in entries] == [False, False, True]
    assert entries[2].sanctions == (Sanction.BONUS_WITHHELD,)


def test_a_rule_without_penalty_is_stored_with_amount_zero(ledger: Ledger) -> None:
    entry = ledger.offences.record(draft("an-1", AN1, local(2026, 7, 1)), AN1, timezone=SHANGHAI)
    assert entry.amount == Decimal("0.00")
    assert entry.sanctions == ()
    assert entry.ladder == "AN-1"


def test_concurrent_offences_of_one_person_get_distinct_steps(ledger: Ledger) -> None:
    at = local(2026, 8, 12, 15)
    # Four writers at once, each with its own connection (as several processes would be).
    url = ledger.db.engine.url.render_as_string(hide_password=False)
    writers = [books(url) for _ in range(4)]
    entries: list[OffenceEntry] = []
    barrier = threading.Barrier(4)

    def write(n: int) -> None:
        barrier.wait()
        entries.append(
            writers[n].offences.record(draft(f"race-{n}", DT1, at), DT1, timezone=SHANGHAI)
        )

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for writer in writers:
        writer.db.close()
    assert sorted(e.escalation_step for e in entries) == [1, 2, 3, 4]
    assert sum((e.amount for e in entries), Decimal(0)) == Decimal("250.00")


def _at_another_site(ledger: Ledger, site: str) -> LedgerDatabase:
    """The same database, opened by the guard of another site (several PBXes, one ledger)."""
    return LedgerDatabase.open(
        ledger.db.engine.url.render_as_string(hide_password=False), site=site
    )


def test_an_unknown_callers_priors_are_the_extensions_at_its_own_site(ledger: Ledger) -> None:
    """Nobody in the directory: the extension's offences count, and 2999 at another PBX is
    another phone, so its first offence there is a first offence."""
    here = [
        ledger.offences.record(
            draft(f"hq-{n}", DT1, local(2026, 8, 3 + n), person=""), DT1, timezone=SHANGHAI
        )
        for n in range(2)
    ]
    other = _at_another_site(ledger, "branch")
    try:
        there = OffenceBook(other).record(
            draft("branch-0", DT1, local(2026, 8, 10), person=""), DT1, timezone=SHANGHAI
        )
    finally:
        other.close()
    assert [e.escalation_step for e in here] == [1, 2]
    assert (there.site, there.extension, there.escalation_step) == ("branch", "2001", 1)


def test_a_persons_priors_count_at_every_site(ledger: Ledger) -> None:
    """A person id names one person across the company: their offences count wherever made."""
    ledger.offences.record(draft("hq-p", DT1, local(2026, 8, 3)), DT1, timezone=SHANGHAI)
    other = _at_another_site(ledger, "branch")
    try:
        there = OffenceBook(other).record(
            draft("branch-p", DT1, local(2026, 8, 10)), DT1, timezone=SHANGHAI
        )
    finally:
        other.close()
    assert (there.site, there.person_id, there.escalation_step) == ("branch", "p-zhang", 2)


def test_the_ledger_refuses_naive_datetimes(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="timezone-aware"):
        ledger.calls.record_decision(decision("naive", datetime(2026, 1, 1, 9)))  # noqa: DTZ001


# -- append-only ----------------------------------------------------------------------------


def _fill_every_table(ledger: Ledger) -> None:
    offence = ledger.offences.record(draft("x", DT1, local(2026, 1, 2)), DT1, timezone=SHANGHAI)
    ledger.offences.add_adjustment(
        offence.id, AdjustmentKind.APPEAL, by="p-zhang", reason="电话没电", at=local(2026, 1, 3)
    )
    ledger.offences.record_outcome(
        OffenceOutcome(key="x", at=local(2026, 1, 2), ending=Ending.BEFORE_ANSWER)
    )
    ledger.calls.record_decision(decision("x", local(2026, 1, 2)))
    ledger.calls.record_call(call("1700000001.5", local(2026, 1, 2)))
    [entry] = ledger.register_of("2026-01")
    ledger.register.fill(
        entry.id, subject="合同", outcome="已确认", by="p-zhang", at=local(2026, 1, 4)
    )
    ledger.approvals.grant(
        Approval("ap-x", "p-zhang", "p-boss", local(2026, 1, 1), local(2026, 2, 1))
    )
    ledger.codes.issue(
        "p-zhang", "48151623", one_time=True, expires_at=None, by="admin", at=local(2026, 1, 1)
    )
    ledger.codes.check("48151623", local(2026, 1, 2))
    _fill_console_tables(ledger.db)
    LockBook(ledger.db).record(
        Lock(
            "site:lock:2001",
            LockScope.EXTENSION,
            "2001",
            "p-zhang",
            frozenset({NumberClass.INTERNATIONAL}),
            "VL-1",
            local(2026, 1, 2),
            local(2026, 1, 2, 13),
            "锁定",
            "locked",
        )
    )


def _fill_console_tables(db: LedgerDatabase) -> None:
    """One row in each of the console's tables (migration 0003_console)."""
    at = local(2026, 1, 5)
    UserBook(db).record(
        "gm", AccountEvent.CREATED, by="admin", at=at, role="general_manager", password_hash="h"
    )
    ApprovalRequestBook(db).submit(
        ApprovalRequest(
            id="rq-x", person_id="p-zhang", department="sales", requested_by="zhang",
            requested_at=at, valid_from=at, valid_until=local(2026, 1, 6),
            number_class=NumberClass.DOMESTIC_LD, prefix="", calls=1, reason="合同",
        )
    )  # fmt: skip
    SignOffBook(db).sign(
        SignOff("2026-01", SignedReport.REGISTER, by="gm", at=at, note="", summary="entries 1")
    )
    AuditTrail(db).record(at=at, actor="gm", role="general_manager", action="signed_off",
                          target="register 2026-01", detail="")  # fmt: skip


def test_update_and_delete_are_refused_on_every_table(
    ledger: Ledger,
    ledger_url: str,  # noqa: F811
) -> None:
    _fill_every_table(ledger)
    for table in LEDGER_TABLES:
        [(count,)] = raw_sql(ledger_url, f"SELECT count(*) FROM {table}")
        assert count >= 1, table
        with pytest.raises(LedgerIntegrityError):
            raw_sql(ledger_url, f"UPDATE {table} SET id = id")
        with pytest.raises(LedgerIntegrityError):
            raw_sql(ledger_url, f"DELETE FROM {table}")
        assert raw_sql(ledger_url, f"SELECT count(*) FROM {table}") == [(count,)]
    if ledger.backend == "postgresql":
        with pytest.raises(LedgerIntegrityError):
            raw_sql(ledger_url, "TRUNCATE offences CASCADE")
    [stored] = ledger.offences.offences(OffenceFilter(rule="DT-1"))
    assert stored.amount == Decimal("50.00")


# -- adjustments and audit queries ----------------------------------------------------------


def test_adjustments_show_in_queries_totals_and_the_fund(ledger: Ledger) -> None:
    zhang_1 = ledger.offences.record(draft("z1", DT1, local(2026, 10, 2)), DT1, timezone=SHANGHAI)
    zhang_2 = ledger.offences.record(draft("z2", DT1, local(2026, 10, 9)), DT1, timezone=SHANGHAI)
    li = ledger.offences.record(
        draft(
            "l1",
            LD2,
            local(2026, 10, 10),
            person="p-li",
            department="sales",
            number_class="hk_macau",
        ),
        LD2,
        timezone=SHANGHAI,
    )
    assert ledger.offences.fund_balance() == Decimal("50.00") + Decimal("200.00") + Decimal(
        "120.00"
    )

    waived = ledger.offences.add_adjustment(
        zhang_2.id,
        AdjustmentKind.WAIVER,
        by="p-boss",
        reason="黄金周值班, 手机故障",
        at=local(2026, 10, 12),
    )
    assert waived.amount == Decimal("0.00")
    assert waived.fine.amount == Decimal("200.00")
    assert waived.excused
    with pytest.raises(LedgerError, match="no open appeal"):
        ledger.offences.add_adjustment(
            li.id, AdjustmentKind.APPEAL_ALLOWED, by="p-boss", reason="-", at=local(2026, 10, 13)
        )
    ledger.offences.add_adjustment(
        li.id, AdjustmentKind.APPEAL, by="p-li", reason="客户来电回拨", at=local(2026, 10, 13)
    )
    dismissed = ledger.offences.add_adjustment(
        li.id, AdjustmentKind.APPEAL_DISMISSED, by="p-boss", reason="无审批", at=local(2026, 10, 14)
    )
    assert dismissed.amount == Decimal("100.00")
    assert not dismissed.appeal_pending
    with pytest.raises(LedgerError):
        ledger.offences.add_adjustment(
            9999, AdjustmentKind.WAIVER, by="p-boss", reason="?", at=local(2026, 10, 14)
        )

    listed = ledger.offences.offences(ledger.month("2026-10", person="p-zhang"))
    assert [e.id for e in listed] == [zhang_1.id, zhang_2.id]
    assert listed[1].amount == Decimal("0.00")
    assert [a.kind for a in listed[1].adjustments] == [AdjustmentKind.WAIVER]
    assert listed[1].adjustments[0].by == "p-boss"
    assert listed[1].adjustments[0].reason == "黄金周值班, 手机故障"
    sales = ledger.offences.offences(OffenceFilter(department="sales"))
    assert [a.kind for a in sales[0].adjustments] == [
        AdjustmentKind.APPEAL,
        AdjustmentKind.APPEAL_DISMISSED,
    ]

    by_person = {t.subject: t for t in ledger.offences.totals_by_person(ledger.month("2026-10"))}
    assert by_person["p-zhang"].amount == Decimal("50.00")
    assert by_person["p-zhang"].offences == 2
    assert by_person["p-zhang"].excused == 1
    assert by_person["p-li"].amount == Decimal("100.00")
    assert by_person["p-li"].department_head_amount == Decimal("20.00")
    by_department = ledger.offences.totals_by_department(ledger.month("2026-10"))
    assert [(t.subject, t.amount) for t in by_department] == [
        ("sales", Decimal("100.00")),
        ("ops", Decimal("50.00")),
    ]
    assert ledger.offences.totals_by_person(ledger.month("2026-09")) == []
    assert ledger.offences.fund_balance() == Decimal("170.00")

    # A waived offence is not a prior offence: the next one is the second rung, not the third.
    third = ledger.offences.record(draft("z3", DT1, local(2026, 11, 2)), DT1, timezone=SHANGHAI)
    assert third.escalation_step == 2
    assert third.amount == Decimal("200.00")


def test_offences_filter_by_month_in_the_site_timezone(ledger: Ledger) -> None:
    # 23:30 on 31 October in Shanghai is October there and in UTC; 00:30 on 1 November in
    # Shanghai is still 31 October in UTC, but November for the site.
    october = ledger.offences.record(
        draft("oct", DT1, local(2026, 10, 31, 23, 30)), DT1, timezone=SHANGHAI
    )
    november = ledger.offences.record(
        draft("nov", AN1, local(2026, 11, 1, 0, 30)), AN1, timezone=SHANGHAI
    )
    assert november.at.astimezone(UTC).day == 31

    def ids(entries: list[OffenceEntry]) -> list[int]:
        return [e.id for e in entries]

    assert ids(ledger.offences.offences(ledger.month("2026-10"))) == [october.id]
    assert ids(ledger.offences.offences(ledger.month("2026-11"))) == [november.id]
    assert ids(ledger.offences.offences(ledger.month("2026-10", timezone=UTC_ZONE))) == [
        october.id,
        november.id,
    ]
    assert ids(ledger.offences.offences(OffenceFilter(rule="AN-1"))) == [november.id]
    policy = load_policy(None).policy
    with pytest.raises(ConfigError, match="YYYY-MM"):
        offence_filter(policy, month="2026-13")


# -- the long-distance register -------------------------------------------------------------


def test_answered_long_distance_calls_fill_the_register(ledger: Ledger) -> None:
    ledger.calls.record_call(call("ld.1", local(2026, 10, 31, 23, 30)))
    ledger.calls.record_call(
        call("intl.1", local(2026, 11, 1, 0, 30), number_class="international")
    )
    ledger.calls.record_call(call("hk.1", local(2026, 11, 2), number_class="hk_macau"))
    ledger.calls.record_call(call("ld.unanswered", local(2026, 11, 3), answered=False))
    ledger.calls.record_call(call("local.1", local(2026, 11, 4), number_class="local"))
    ledger.calls.record_call(call("mobile.1", local(2026, 11, 4), number_class="mobile"))

    october = ledger.register_of("2026-10")
    november = ledger.register_of("2026-11")
    assert [e.call.linkedid for e in october] == ["ld.1"]
    assert [e.call.linkedid for e in november] == ["intl.1", "hk.1"]
    entry = october[0]
    assert entry.caller_person_id == "p-zhang"
    assert entry.caller_name == "张三"
    assert entry.callee_number == "01088881234"
    assert entry.number_class == "domestic_ld"
    assert entry.started_at == local(2026, 10, 31, 23, 30) + timedelta(seconds=9)
    assert entry.ended_at - entry.started_at == timedelta(minutes=3, seconds=7)
    assert entry.duration == timedelta(minutes=3, seconds=7)
    assert not entry.filled

    unfilled = ledger.register.unfilled(local(2026, 11, 2, 23))
    assert [e.call.linkedid for e in unfilled] == ["ld.1", "intl.1", "hk.1"]

    filled = ledger.register.fill(
        entry.id,
        subject="核对合同条款",
        outcome="对方同意修改",
        by="p-zhang",
        at=local(2026, 11, 1, 9),
        callee_name="李经理",
    )
    assert filled.filled
    corrected = ledger.register.fill(
        entry.id,
        subject="核对合同条款",
        outcome="对方同意修改, 下周签字",
        by="p-wang",
        at=local(2026, 11, 2, 9),
    )  # no callee name: the one given earlier stays
    assert corrected.outcome.endswith("下周签字")
    [again] = ledger.register_of("2026-10")
    assert (again.subject, again.outcome, again.callee_name) == (
        "核对合同条款",
        "对方同意修改, 下周签字",
        "李经理",
    )
    assert again.filled_by == "p-wang"
    assert again.filled_at == local(2026, 11, 2, 9)
    unfilled = ledger.register.unfilled(local(2026, 11, 2, 23))
    assert [e.call.linkedid for e in unfilled] == ["intl.1", "hk.1"]
    with pytest.raises(LedgerError):
        ledger.register.fill(9999, subject="x", outcome="y", by="z", at=local(2026, 11, 5))


# -- approvals ------------------------------------------------------------------------------


def test_approval_lifecycle_is_derived_from_events(ledger: Ledger) -> None:
    grant = Approval(
        id="ap-1",
        person_id="p-zhang",
        granted_by="p-boss",
        valid_from=local(2026, 10, 1, 8),
        valid_until=local(2026, 10, 1, 18),
        number_class=NumberClass.DOMESTIC_LD,
        max_calls=2,
        reason="与北京客户核对合同",
    )
    other = Approval(
        "ap-2", "p-zhang", "p-boss", local(2026, 10, 1, 8), local(2026, 10, 31), prefix="00852"
    )
    third = Approval("ap-3", "p-li", "p-boss", local(2026, 10, 1, 8), local(2026, 10, 31))
    assert ledger.approvals.grant(grant) is True
    assert ledger.approvals.grant(grant) is False
    ledger.approvals.grant(other)
    ledger.approvals.grant(third)

    morning = local(2026, 10, 1, 9)
    assert [a.id for a in ledger.approvals.active(morning)] == ["ap-1", "ap-2", "ap-3"]
    assert ledger.approvals.active(local(2026, 10, 1, 7)) == []

    first_call = CallRef("c1", "c1.1", "PJSIP/2001-1")
    used = ledger.approvals.use("ap-1", first_call, morning)
    assert used.used_calls == 1
    assert (ledger.approvals.use("ap-1", first_call, morning)).used_calls == 1
    exhausted = ledger.approvals.use("ap-1", CallRef("c2", "c2.1", "PJSIP/2001-2"), morning)
    assert exhausted.used_calls == 2
    assert not exhausted.is_active(morning)

    revoked = ledger.approvals.revoke("ap-2", by="p-boss", at=morning, reason="项目取消")
    assert revoked.revoked
    expired = ledger.approvals.expire("ap-3", at=local(2026, 10, 2, 8))
    assert expired.valid_until == local(2026, 10, 2, 8)

    assert [a.id for a in ledger.approvals.active(morning)] == ["ap-3"]
    assert ledger.approvals.active(local(2026, 10, 3)) == []
    listed = ledger.approvals.all(person="p-zhang")
    assert [(a.id, a.used_calls, a.revoked) for a in listed] == [
        ("ap-1", 2, False),
        ("ap-2", 0, True),
    ]
    assert listed[0].number_class is NumberClass.DOMESTIC_LD
    assert listed[0].reason == "与北京客户核对合同"
    assert listed[1].prefix == "00852"
    assert len(ledger.approvals.all()) == 3
    with pytest.raises(LedgerError):
        ledger.approvals.use("ap-unknown", first_call, morning)


# -- authorization codes --------------------------------------------------------------------


def test_codes_are_hashed_and_a_one_time_code_works_once(
    ledger: Ledger,
    ledger_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    issued = local(2026, 10, 1, 8)
    with capture_logs() as logs:
        ledger.codes.issue(
            "p-zhang", "73915428", one_time=True, expires_at=None, by="admin", at=issued
        )
        ledger.codes.issue(
            "p-li",
            "26483917",
            one_time=False,
            expires_at=local(2026, 10, 2, 0),
            by="admin",
            at=issued,
        )
        assert ledger.codes.check("73915428", local(2026, 10, 1, 9)) == "p-zhang"
        assert ledger.codes.check("73915428", local(2026, 10, 1, 10)) is None
        assert ledger.codes.check("26483917", local(2026, 10, 1, 9)) == "p-li"
        assert ledger.codes.check("26483917", local(2026, 10, 1, 10)) == "p-li"
        assert ledger.codes.check("26483917", local(2026, 10, 1, 10), person_id="p-x") is None
        assert ledger.codes.check("26483917", local(2026, 10, 2, 0, 1)) is None
        assert ledger.codes.check("11112222", local(2026, 10, 1, 9)) is None
        ledger.codes.record_failure(
            CodeFailure(
                key="2001:1",
                at=local(2026, 10, 1, 9),
                extension="2001",
                person_id="p-zhang",
                call=None,
                reason="wrong code",
            )
        )
    assert "73915428" not in repr(logs)
    assert "26483917" not in repr(logs)
    assert ledger.codes.failure_count(extension="2001", since=issued) == 1
    assert ledger.codes.failure_count(extension="2002", since=issued) == 0

    rows = raw_sql(ledger_url, "SELECT * FROM authorization_codes")
    rows += raw_sql(ledger_url, "SELECT * FROM code_events")
    assert len(rows) == 6
    assert all(str(row[2]).startswith("$argon2") for row in rows[:2])
    assert "73915428" not in repr(rows)
    assert "26483917" not in repr(rows)
    if ledger.backend == "sqlite":
        files = database_files(tmp_path)
        assert files
        for path, data in files.items():
            assert b"73915428" not in data, path
            assert b"26483917" not in data, path

    with pytest.raises(AuthorizationCodeError):
        ledger.codes.issue("p-zhang", "123", one_time=False, expires_at=None, by="admin", at=issued)
    with pytest.raises(AuthorizationCodeError):
        ledger.codes.issue(
            "p-zhang", "12a45", one_time=False, expires_at=None, by="admin", at=issued
        )
    with pytest.raises(AuthorizationCodeError, match="already in force"):
        ledger.codes.issue(
            "p-wang", "26483917", one_time=False, expires_at=None, by="admin", at=issued
        )
    # The used one-time code may be issued again: it no longer opens anything.
    ledger.codes.issue(
        "p-wang", "73915428", one_time=False, expires_at=None, by="admin", at=local(2026, 10, 3)
    )
    assert ledger.codes.check("73915428", local(2026, 10, 3, 13)) == "p-wang"


def test_a_one_time_code_checked_twice_at_once_opens_once(ledger: Ledger) -> None:
    ledger.codes.issue(
        "p-zhang", "55554444", one_time=True, expires_at=None, by="admin", at=local(2026, 10, 1, 8)
    )
    url = ledger.db.engine.url.render_as_string(hide_password=False)
    checkers = [books(url) for _ in range(3)]
    results: list[str | None] = []
    barrier = threading.Barrier(3)

    def check(n: int) -> None:
        barrier.wait()
        results.append(checkers[n].codes.check("55554444", local(2026, 10, 1, 9)))

    threads = [threading.Thread(target=check, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for checker in checkers:
        checker.db.close()
    assert results.count("p-zhang") == 1
    assert results.count(None) == 2


# -- failures -------------------------------------------------------------------------------


def test_an_unreachable_database_is_reported_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = books(f"postgresql://postgres@127.0.0.1:{port}/x")
    try:
        with pytest.raises(LedgerUnavailable):
            down.calls.record_decision(decision("d", local(2026, 1, 1)))
    finally:
        down.db.close()


def test_a_locked_sqlite_database_is_reported_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    db = LedgerDatabase.open(f"sqlite:///{path}", site="hq", busy_timeout=0.1)
    try:
        db.migrate()
        calls, offences = CallLog(db), OffenceBook(db)
        blocker = sqlite3.connect(path, isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            with pytest.raises(LedgerUnavailable, match="locked"):
                calls.record_decision(decision("d", local(2026, 1, 1)))
            with pytest.raises(LedgerUnavailable, match="locked"):
                offences.record(draft("o", DT1, local(2026, 1, 1)), DT1, timezone=SHANGHAI)
            blocker.execute("COMMIT")
        finally:
            blocker.close()
        assert calls.record_decision(decision("d", local(2026, 1, 1))) is True
    finally:
        db.close()


def test_unusable_urls_are_refused(tmp_path: Path) -> None:
    with pytest.raises(LedgerError):
        LedgerDatabase.open("mysql+aiomysql://x@localhost/db")
    with pytest.raises(LedgerError):
        LedgerDatabase.open("not a url")
    with pytest.raises(LedgerError):
        LedgerDatabase.open("sqlite:///:memory:")
    with pytest.raises(LedgerError, match="does not exist"):
        LedgerDatabase.open(f"sqlite:///{tmp_path / 'no' / 'such.db'}")
    # Settings written for earlier versions keep working: the async drivers map to the ones
    # used now.
    assert sync_url("sqlite+aiosqlite:///x.db").drivername == "sqlite"
    assert sync_url("postgresql+asyncpg://u@h/db").drivername == "postgresql+psycopg"
