"""The long-distance register: entries from replayed calls, reports, filling in, and LD-7."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook
from structlog.testing import capture_logs

from pbxguard.adapters.ledger import CallLog, LedgerDatabase, OffenceBook, RegisterBook
from pbxguard.adapters.ledger.calls import record_calls
from pbxguard.adapters.settings import AgiSettings
from pbxguard.app.register_watch import RegisterWatch
from pbxguard.bootstrap import build
from pbxguard.domain.effects import Effect, RecordOffence
from pbxguard.domain.entries import OffenceFilter, RegisterEntry
from pbxguard.domain.penalties import Sanction
from pbxguard.domain.periods import month_bounds
from pbxguard.domain.policy import Policy
from pbxguard.domain.records import CallRef, CallSummary, Outcome
from pbxguard.domain.register import (
    fill_deadline,
    overdue_entries,
    register_offence_draft,
    register_offence_key,
)
from pbxguard.entrypoints.daemon import Daemon
from pbxguard.simulator.ami_server import SimulatedPbx
from tests.support.cli import Done, run_pbxguard
from tests.support.guard import SECRET, guard_against, reference_policy, settings_for, until

SHANGHAI = ZoneInfo("Asia/Shanghai")
REFERENCE_POLICY = Path(__file__).parents[2] / "src/pbxguard/policies/reference-site.toml"
HEADERS = [
    "编号 id",
    "使用人 caller",
    "分机 extension",
    "受话号码 callee number",
    "受话人 callee name",
    "类别 class",
    "开始时间 start",
    "结束时间 end",
    "通话时长 duration",
    "联络事项 subject",
    "交涉结果 outcome",
    "登记状态 filled",
]
THREE_DAYS = timedelta(hours=72)


class FakeClock:
    """A clock the test sets by hand."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


@dataclass(frozen=True)
class Site:
    """A settings file naming the test's SQLite ledger and the reference-site policy."""

    settings: Path
    url: str

    async def run(self, *args: str) -> Done:
        """Run ``pbxguard ARGS --config SETTINGS`` in a clean environment."""
        return await run_pbxguard(self.settings, *args)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    settings = tmp_path / "pbxguard.toml"
    settings.write_text(
        f'policy = "{REFERENCE_POLICY}"\nstate_dir = "{tmp_path / "state"}"\n\n'
        f'[ledger]\nurl = "{url}"\n',
        encoding="utf-8",
    )
    return Site(settings, url)


def fill_status(entry: RegisterEntry) -> str:
    """Return the status the CLI shows today (it reads the real clock)."""
    if entry.filled:
        return "已登记 filled"
    if datetime.now(UTC) >= entry.ended_at + THREE_DAYS:
        return "逾期未登记 overdue"
    return "未登记 unfilled"


def entry(
    entry_id: int,
    ended_at: datetime,
    *,
    filled: bool = False,
    person: str = "head-9001",
) -> RegisterEntry:
    started = ended_at - timedelta(minutes=3)
    return RegisterEntry(
        id=entry_id,
        call=CallRef(f"l.{entry_id}", f"u.{entry_id}", f"PJSIP/9001-{entry_id:08x}"),
        caller_person_id=person,
        caller_name="Department head",
        department="工程部",
        extension="9001",
        callee_number="02787654321",
        callee_name="",
        number_class="domestic_ld",
        started_at=started,
        ended_at=ended_at,
        duration=ended_at - started,
        subject="核对合同" if filled else "",
        outcome="同意" if filled else "",
        filled_by="head-9001" if filled else "",
        filled_at=ended_at + timedelta(hours=1) if filled else None,
    )


def policy() -> Policy:
    return reference_policy().policy


def long_distance_call(linkedid: str, answered_at: datetime) -> CallSummary:
    return CallSummary(
        call=CallRef(linkedid, linkedid, "PJSIP/9001-00000001"),
        extension="9001",
        person_id="head-9001",
        person_name="Department head",
        department="工程部",
        caller_name="Department head",
        dialled="02787654321",
        number="02787654321",
        number_class="domestic_ld",
        direction="outbound",
        started_at=answered_at - timedelta(seconds=3),
        answered_at=answered_at,
        ended_at=answered_at + timedelta(minutes=2),
        verdict="allow",
        rule_id="",
        outcome="",
    )


# -- which entries are overdue: pure decisions ------------------------------------------------


def test_an_entry_is_overdue_once_its_deadline_has_passed_and_only_if_unfilled() -> None:
    ended = datetime(2026, 11, 23, 9, 40, tzinfo=SHANGHAI)
    early, late = entry(1, ended), entry(2, ended + timedelta(hours=2))
    filled = entry(3, ended, filled=True)
    entries = [late, filled, early]
    assert fill_deadline(early, THREE_DAYS) == datetime(2026, 11, 26, 9, 40, tzinfo=SHANGHAI)
    deadline = ended + THREE_DAYS
    assert (
        overdue_entries(entries, now=deadline - timedelta(seconds=1), fill_within=THREE_DAYS) == []
    )
    assert overdue_entries(entries, now=deadline, fill_within=THREE_DAYS) == [early]
    assert overdue_entries(entries, now=deadline + timedelta(days=9), fill_within=THREE_DAYS) == [
        early,
        late,
    ]
    assert overdue_entries(entries, now=deadline, fill_within=timedelta(hours=1)) == [early, late]


def test_the_ld7_draft_is_a_demerit_against_the_caller_at_the_deadline() -> None:
    ended = datetime(2026, 11, 23, 9, 40, tzinfo=SHANGHAI)
    late = entry(7, ended)
    draft = register_offence_draft(late, policy(), fill_within=THREE_DAYS)
    assert draft.key == "reference:register:7:LD-7" == register_offence_key("reference", late)
    assert draft.rule_id == "LD-7"
    assert draft.at == ended + THREE_DAYS
    assert (draft.person_id, draft.person_name, draft.department) == (
        "head-9001",
        "Department head",
        "工程部",
    )
    assert (draft.extension, draft.number, draft.number_class) == (
        "9001",
        "02787654321",
        "domestic_ld",
    )
    assert draft.call == late.call
    assert draft.outcome is Outcome.MONITORED
    assert "2026-11-23 09:37" in draft.detail_zh
    assert "72小时后仍未登记《长话登记表》" in draft.detail_zh
    assert "not entered in the long-distance register within 72 h" in draft.detail_en
    assert draft.policy_version == policy().version


# -- entries from replayed calls, the reports and filling in ----------------------------------


async def test_answered_long_distance_calls_are_entered_reported_and_filled(
    site: Site, tmp_path: Path
) -> None:
    async with guard_against(
        ["head-domestic-long-distance", "burst-mixed-calls", "staff-international-answered"],
        tmp_path,
        ledger_url=site.url,
    ) as run:
        await run.settle()
        entries = run.register().entries(*month_bounds("2026-11", SHANGHAI))

    # The head's two calls were answered; the staff's international calls were cut unanswered.
    assert [(e.extension, e.callee_number) for e in entries] == [
        ("9001", "02787654321"),
        ("9001", "01087654321"),
    ]
    first, second = entries
    assert first.caller_person_id == "head-9001"
    assert first.started_at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M") == "2026-11-23 09:33"
    assert timedelta(seconds=2) < first.duration < timedelta(seconds=10)

    csv_done, json_done, table_done, other_month = await asyncio.gather(
        site.run("register", "--month", "2026-11", "--format", "csv"),
        site.run("register", "--month", "2026-11", "--format", "json"),
        site.run("register", "--month", "2026-11"),
        site.run("register", "--month", "2026-10", "--format", "csv"),
    )
    assert csv_done.returncode == 0, csv_done.stderr
    header, *rows = list(csv.reader(io.StringIO(csv_done.stdout)))
    assert header == HEADERS
    assert rows == [
        [
            str(e.id),
            "Department head",
            "9001",
            e.callee_number,
            "",
            "国内长途",
            e.started_at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S"),
            e.ended_at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S"),
            f"0:00:{int(e.duration.total_seconds()):02d}",
            "",
            "",
            fill_status(e),
        ]
        for e in entries
    ]
    records = json.loads(json_done.stdout)
    assert [(r["id"], r["caller_person_id"], r["is_filled"]) for r in records] == [
        (first.id, "head-9001", False),
        (second.id, "head-9001", False),
    ]
    assert records[0]["started_at"].endswith("+08:00")
    assert all(
        h in table_done.stdout.splitlines()[0] for h in ("使用人 caller", "联络事项 subject")
    )
    assert "合计 total: 2 条 entries, 未登记 unfilled: 2" in table_done.stdout
    assert list(csv.reader(io.StringIO(other_month.stdout))) == [HEADERS]

    filled = await site.run(
        "register",
        "fill",
        str(first.id),
        "--subject",
        "与武汉客户核对合同条款",
        "--outcome",
        "对方同意修改，下周签字",
        "--by",
        "head-9001",
        "--callee-name",
        "王经理",
    )
    assert filled.returncode == 0, filled.stderr
    assert f"已登记 filled: 编号 entry {first.id}" in filled.stdout
    refused = await asyncio.gather(
        site.run("register", "fill", "999", "--subject", "x", "--outcome", "y", "--by", "z"),
        site.run(
            "register", "fill", str(second.id), "--subject", " ", "--outcome", "y", "--by", "z"
        ),
    )
    assert [r.returncode for r in refused] == [3, 3]
    assert "no register entry 999" in refused[0].stderr
    assert "subject (联络事项)" in refused[1].stderr

    after = await site.run("register", "--month", "2026-11", "--format", "csv")
    _, row, untouched = list(csv.reader(io.StringIO(after.stdout)))
    assert row[4] == "王经理"
    assert row[9:] == ["与武汉客户核对合同条款", "对方同意修改，下周签字", "已登记 filled"]
    assert untouched[9:] == ["", "", fill_status(second)]

    book_path = tmp_path / "长话登记表.xlsx"
    written = await site.run(
        "register", "--month", "2026-11", "--format", "xlsx", "--output", str(book_path)
    )
    assert written.returncode == 0, written.stderr
    assert "(2 条 entries)" in written.stdout
    book = await asyncio.to_thread(load_workbook, book_path)
    sheet = book.active
    assert sheet.title == "长话登记表 2026-11"
    assert sheet["A1"].value == "长话登记表 Long-distance register · 2026-11 · reference"
    assert sheet["A1"].font.bold
    assert [c.value for c in sheet[2]] == HEADERS
    assert all(c.font.bold for c in sheet[2])
    values = [[c.value for c in r] for r in sheet.iter_rows(min_row=3)]
    # The two entries, a blank row, then the chain digest the report is anchored to.
    *values, blank, anchor = values
    assert set(blank) == {None}
    assert str(anchor[0]).startswith("链头摘要 chain digest")
    assert len(values) == 2
    book_first, book_second = values
    assert book_first[:6] == [
        first.id,
        "Department head",
        "9001",
        "02787654321",
        "王经理",
        "国内长途",
    ]
    # Excel date-times in site time, to the second as in the CSV.
    assert book_first[6].strftime("%Y-%m-%d %H:%M:%S") == row[6]
    assert book_first[7].strftime("%Y-%m-%d %H:%M:%S") == row[7]
    assert book_first[8] == timedelta(seconds=int(first.duration.total_seconds()))
    assert book_first[9:] == ["与武汉客户核对合同条款", "对方同意修改，下周签字", "已登记 filled"]
    assert book_second[0] == second.id
    assert book_second[4] is None
    assert sheet.freeze_panes == "A3"
    subject_width = sheet.column_dimensions["J"].width
    assert subject_width >= len("与武汉客户核对合同条款") * 2


async def test_a_long_register_is_listed_and_exported_whole_in_order_with_its_fills(
    site: Site,
) -> None:
    """A month of 2,500 entries: read page by page, each with its latest fill, none twice."""
    database = LedgerDatabase.open(site.url, site="reference")
    database.migrate()
    start = datetime(2026, 11, 2, 9, 0, tzinfo=SHANGHAI)
    calls = [long_distance_call(f"bulk.{n}", start + timedelta(seconds=n)) for n in range(2_500)]
    with database.write() as session:
        record_calls(session, calls)
    book = RegisterBook(database)
    month = month_bounds("2026-11", SHANGHAI)
    first, *_, last = book.entries(*month)
    filled_at = start + timedelta(days=1)
    book.fill(first.id, subject="合同", outcome="同意", by="head-9001", at=filled_at)
    book.fill(last.id, subject="初稿", outcome="待定", by="head-9001", at=filled_at)
    book.fill(last.id, subject="定稿", outcome="同意", by="head-9001", at=filled_at)
    entries = book.entries(*month)
    database.close()
    assert len(entries) == 2_500
    assert [e.call.linkedid for e in entries] == [f"bulk.{n}" for n in range(2_500)]
    assert [(e.subject, e.outcome) for e in (entries[0], entries[1], entries[-1])] == [
        ("合同", "同意"),
        ("", ""),
        ("定稿", "同意"),
    ]
    done = await site.run("register", "--month", "2026-11", "--format", "csv")
    assert done.returncode == 0, done.stderr
    header, *rows = list(csv.reader(io.StringIO(done.stdout)))
    assert header == HEADERS
    assert [int(row[0]) for row in rows] == [e.id for e in entries]
    assert rows[-1][9:11] == ["定稿", "同意"]


async def test_an_entry_left_unfilled_past_the_deadline_is_one_ld7_demerit(
    site: Site,
) -> None:
    answered = datetime(2026, 11, 23, 9, 33, tzinfo=SHANGHAI)
    db = LedgerDatabase.open(site.url, site="reference")
    try:
        db.migrate()
        calls, register, book = CallLog(db), RegisterBook(db), OffenceBook(db)
        calls.record_call(long_distance_call("late", answered))
        calls.record_call(long_distance_call("kept", answered + timedelta(minutes=30)))
        late, kept = register.entries(*month_bounds("2026-11", SHANGHAI))
        register.fill(
            kept.id,
            subject="报价",
            outcome="已确认",
            by="head-9001",
            at=answered + timedelta(hours=2),
        )
        rules = policy().rules

        def emit(effects: Sequence[Effect]) -> None:
            # What the guard does with them, minus the journal: store each offence.
            for effect in effects:
                assert isinstance(effect, RecordOffence)
                draft = effect.draft
                book.record(draft, rules[draft.rule_id], timezone=SHANGHAI)

        deadline = late.ended_at + THREE_DAYS
        clock = FakeClock(deadline - timedelta(minutes=1))
        watch = RegisterWatch(register, book, emit, policy, clock, interval=0)

        assert await watch.check_once() == []
        clock.at = deadline
        [draft] = await watch.check_once()
        assert await watch.check_once() == []
        clock.at = deadline + timedelta(days=30)
        assert await watch.check_once() == []
        # A restarted watch finds the offence in the ledger and records nothing new.
        restarted = RegisterWatch(register, book, emit, policy, clock, interval=0)
        assert await restarted.check_once() == []
        looping = asyncio.create_task(restarted.run())
        try:
            async with asyncio.timeout(10):
                await restarted.wait_for_passes(3)
        finally:
            looping.cancel()
            await asyncio.gather(looping, return_exceptions=True)
        offences = book.offences()
    finally:
        db.close()

    assert draft.key == f"reference:register:{late.id}:LD-7"
    [offence] = offences
    assert offence.key == draft.key
    assert offence.rule_id == "LD-7"
    assert offence.citation == "000 L719"
    assert (offence.person_id, offence.extension) == ("head-9001", "9001")
    assert offence.at == deadline
    assert offence.amount == Decimal("0.00")
    assert offence.sanctions == (Sanction.DEMERIT,)
    assert offence.call is not None
    assert offence.call.linkedid == "late"


async def test_the_running_daemon_records_overdue_entries(site: Site, tmp_path: Path) -> None:
    answered = datetime(2026, 11, 23, 9, 33, tzinfo=SHANGHAI)
    db = LedgerDatabase.open(site.url, site="reference")
    try:
        db.migrate()
        CallLog(db).record_call(long_distance_call("forgotten", answered))
    finally:
        db.close()
    clock = FakeClock(answered + timedelta(days=4))
    loaded = reference_policy()
    with capture_logs() as logs:
        async with SimulatedPbx(["register-and-qualify"], secret=SECRET) as pbx:
            settings = settings_for(
                tmp_path, pbx, ledger_url=site.url, agi=AgiSettings(enabled=False)
            )
            parts = build(settings, loaded, clock=clock, loop=asyncio.get_running_loop())
            stop = asyncio.Event()
            task = asyncio.create_task(Daemon(parts).run(stop))
            try:
                await until(
                    lambda: task.done() or any(e["event"] == "register entry overdue" for e in logs)
                )
                assert not task.done()
                assert await asyncio.to_thread(parts.writer.wait_idle, 10)
                offences = parts.offences.offences(OffenceFilter(rule="LD-7"))
            finally:
                stop.set()
                async with asyncio.timeout(10):
                    await task
    [offence] = offences
    assert offence.call is not None
    assert offence.call.linkedid == "forgotten"
    assert offence.person_id == "head-9001"
