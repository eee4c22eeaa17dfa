"""The spooling ledger: writes survive a database that is locked, stopped, or a restart."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs

from pbxguard.adapters.ledger import FineLedger, SpoolingLedger
from pbxguard.adapters.ledger.spool import (
    decode_call,
    decode_decision,
    decode_draft,
    decode_rule,
    encode_call,
    encode_decision,
    encode_draft,
    encode_rule,
)
from pbxguard.domain.penalties import CountWindow, PenaltySpec, RepeatOffender, Sanction, Step
from pbxguard.domain.policy import Rule
from pbxguard.domain.records import (
    CallRef,
    CallSummary,
    DecisionRecord,
    Layer,
    OffenceDraft,
    Outcome,
)
from tests.support.postgres import (  # noqa: F401
    PostgresCluster,
    ledger_url,
    postgres_cluster,
    postgres_url,
    stoppable_postgres,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
WAIT = 30.0

DT1 = Rule(
    "DT-1",
    "报销电话工作时间不得关机",
    "reimbursed phone switched off",
    "000 L1113",
    PenaltySpec(
        steps=(
            Step(flat=Decimal(50)),
            Step(flat=Decimal(200)),
            Step(sanctions=(Sanction.REIMBURSEMENT_LOST,)),
        ),
        window=CountWindow.QUARTER,
        ladder="DT-4",
    ),
)
LD2 = Rule(
    "LD-2",
    "未经同意拨打长途",
    "long distance without consent",
    "000 L19",
    PenaltySpec(
        steps=(Step(per_class={"domestic_ld": Decimal(50), "international": Decimal("500")}),),
        repeat_offender=RepeatOffender(3, (Sanction.BONUS_WITHHELD,)),
        department_head_share=Decimal("0.2"),
    ),
)


def local(month: int, day: int, hour: int = 12, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=SHANGHAI)


def decision(key: str) -> DecisionRecord:
    return DecisionRecord(
        key=key,
        at=local(10, 8, 9, 30),
        call=CallRef(f"L-{key}", f"U-{key}", "PJSIP/2001-00000001"),
        layer=Layer.AMI,
        extension="2001",
        person_id="p-zhang",
        dialled="0010442071234567",
        number="00442071234567",
        number_class="international",
        verdict="deny",
        rule_id="LD-2",
        reason_zh="未经批准的国际长途",
        reason_en="international call without approval",
        approval_id="",
        policy_version="v1",
    )


def offence(key: str, at: datetime) -> OffenceDraft:
    return OffenceDraft(
        key=key,
        rule_id="DT-1",
        at=at,
        call=None,
        extension="2001",
        person_id="p-zhang",
        person_name="张三",
        department="ops",
        charge=Decimal("0.35"),
        talk_time=timedelta(seconds=61, microseconds=7),
        outcome=Outcome.MONITORED,
        detail_zh="工作时间关机",
        policy_version="v1",
    )


def call(linkedid: str, number_class: str = "domestic_ld") -> CallSummary:
    started = local(10, 9, 10)
    return CallSummary(
        call=CallRef(linkedid, f"{linkedid}.7", "PJSIP/2001-00000002"),
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
        answered_at=started + timedelta(seconds=5),
        ended_at=started + timedelta(minutes=4),
        verdict="allow",
        rule_id="",
        outcome="answered",
    )


async def spool_some(spool: SpoolingLedger) -> None:
    """Make the guard's usual writes; every one must be spooled, none may raise."""
    assert await spool.record_decision(decision("d1")) is None
    assert await spool.record_decision(decision("d2")) is None
    assert await spool.record_decision(decision("d1")) is None
    for n, at in enumerate((local(10, 1), local(10, 2), local(10, 3))):
        assert await spool.record_offence(offence(f"o{n}", at), DT1, timezone=SHANGHAI) is None
    assert await spool.record_call(call("c1")) is None
    assert await spool.record_call(call("c2", number_class="local")) is None


async def assert_stored_once(ledger: FineLedger) -> None:
    assert [d.key for d in await ledger.decisions()] == ["d1", "d2"]
    entries = await ledger.offences(timezone=SHANGHAI)
    assert [(e.key, e.escalation_step, e.amount) for e in entries] == [
        ("o0", 1, Decimal("50.00")),
        ("o1", 2, Decimal("200.00")),
        ("o2", 3, Decimal("0.00")),
    ]
    assert entries[0].charge == Decimal("0.35")
    assert entries[0].talk_time == timedelta(seconds=61)
    assert [c.call.linkedid for c in await ledger.calls()] == ["c1", "c2"]
    assert [r.call.linkedid for r in await ledger.register("2026-10", timezone=SHANGHAI)] == ["c1"]


def spool_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


class Drainer:
    """Run a spool's drain loop as a task for the length of a block."""

    def __init__(self, spool: SpoolingLedger) -> None:
        self.spool = spool
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Drainer:
        self.task = asyncio.create_task(self.spool.run())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self.task is not None
        if self.task.done():
            self.task.result()  # a drain loop that ended has failed: show why
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


@pytest.fixture
async def sqlite_ledger(tmp_path: Path) -> AsyncIterator[FineLedger]:
    ledger = await FineLedger.open(
        f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}", busy_timeout=0.1
    )
    await ledger.migrate()
    yield ledger
    await ledger.close()


def through_json(data: dict[str, Any]) -> Any:
    return json.loads(json.dumps(data, ensure_ascii=False))


def test_spooled_values_round_trip_exactly() -> None:
    rec = decision("d")
    draft = offence("o", local(10, 1, 23, 59))
    summary = call("c")
    unanswered = replace(summary, answered_at=None)
    no_penalty = Rule("AN-1", "三声内接听", "answer within three rings", "000 L39")
    assert decode_decision(through_json(encode_decision(rec))) == rec
    assert decode_draft(through_json(encode_draft(draft))) == draft
    assert decode_call(through_json(encode_call(summary))) == summary
    assert decode_call(through_json(encode_call(unanswered))) == unanswered
    for rule in (DT1, LD2, no_penalty):
        assert decode_rule(through_json(encode_rule(rule))) == rule
    decoded = decode_draft(through_json(encode_draft(draft)))
    assert decoded.at.utcoffset() == timedelta(hours=8)
    assert decoded.talk_time == timedelta(seconds=61, microseconds=7)
    assert decoded.charge == Decimal("0.35")
    assert str(decoded.charge) == "0.35"


async def test_writes_while_sqlite_is_locked_are_spooled_then_stored_once(
    sqlite_ledger: FineLedger, tmp_path: Path
) -> None:
    path = tmp_path / "ledger.spool"
    spool = SpoolingLedger(sqlite_ledger, path, retry_initial=0.02, retry_max=0.1)
    blocker = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        with capture_logs() as logs:
            await spool_some(spool)
        assert spool.pending == 8
        assert len(spool_lines(path)) == 8
        assert any(log["event"] == "ledger_unavailable_spooling" for log in logs)
        async with Drainer(spool):
            await asyncio.wait_for(spool.wait_retrying(), WAIT)
            assert spool.pending == 8
            blocker.execute("COMMIT")
            await asyncio.wait_for(spool.wait_drained(), WAIT)
            assert spool.pending == 0
            assert not spool.retrying
    finally:
        blocker.close()
    assert spool_lines(path) == []
    await assert_stored_once(sqlite_ledger)
    # With the spool empty, writes go straight to the database again.
    assert await spool.record_decision(decision("d3")) is True


async def test_writes_while_postgres_is_stopped_are_spooled_then_stored_once(
    stoppable_postgres: PostgresCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    url = stoppable_postgres.url(stoppable_postgres.create_database())
    ledger = await FineLedger.open(url, busy_timeout=2)
    try:
        await ledger.migrate()
        path = tmp_path / "ledger.spool"
        spool = SpoolingLedger(ledger, path, retry_initial=0.05, retry_max=0.2)
        assert await spool.record_decision(decision("d0")) is True
        stoppable_postgres.stop()
        await spool_some(spool)
        assert spool.pending == 8
        async with Drainer(spool):
            await asyncio.wait_for(spool.wait_retrying(), WAIT)
            stoppable_postgres.start()
            await asyncio.wait_for(spool.wait_drained(), WAIT)
        assert spool_lines(path) == []
        assert [d.key for d in await ledger.decisions()] == ["d0", "d1", "d2"]
        assert len(await ledger.offences(timezone=SHANGHAI)) == 3
        assert len(await ledger.calls()) == 2
    finally:
        await ledger.close()


async def test_a_spool_left_by_a_previous_process_is_drained_on_start(
    ledger_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.spool"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = await FineLedger.open(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/x")
    try:
        await spool_some(SpoolingLedger(down, path))
    finally:
        await down.close()
    assert len(spool_lines(path)) == 8

    ledger = await FineLedger.open(ledger_url)
    try:
        await ledger.migrate()
        # Stored before the crash, but still in the spool: replaying it must not duplicate it.
        assert await ledger.record_decision(decision("d1")) is True
        spool = SpoolingLedger(ledger, path, retry_initial=0.05)
        async with Drainer(spool):
            await asyncio.wait_for(spool.wait_drained(), WAIT)
        await assert_stored_once(ledger)
    finally:
        await ledger.close()
    assert spool_lines(path) == []


async def test_a_line_that_can_never_be_stored_is_set_aside_not_dropped(
    sqlite_ledger: FineLedger, tmp_path: Path
) -> None:
    path = tmp_path / "ledger.spool"
    good = {"v": 1, "op": "decision", "decision": encode_decision(decision("d1"))}
    # A line torn by a crash (no newline), after an unknown operation and a good line.
    path.write_text(
        json.dumps({"v": 1, "op": "teleport"}) + "\n" + json.dumps(good) + "\n" + '{"v": 1, "op'
    )
    spool = SpoolingLedger(sqlite_ledger, path, retry_initial=0.05)
    async with Drainer(spool):
        await asyncio.wait_for(spool.wait_drained(), WAIT)
    assert [d.key for d in await sqlite_ledger.decisions()] == ["d1"]
    rejected = path.with_name("ledger.spool.rejected").read_text().splitlines()
    assert len(rejected) == 2
    assert "teleport" in json.loads(rejected[0])["line"]
    assert json.loads(rejected[1])["line"].startswith('{"v": 1, "op')
