"""The pre-dial gate of a running service, asked over FastAGI the way Asterisk asks it."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from pbxguard.adapters.ledger import ApprovalBook, CallLog, CodeBook, OffenceBook
from pbxguard.adapters.policy_file import LoadedPolicy
from pbxguard.bootstrap import Parts, build
from pbxguard.domain.approvals import Approval
from pbxguard.domain.numbers import NumberClass
from pbxguard.domain.records import Ending, Layer, Outcome
from pbxguard.entrypoints.cli.check import cmd_check
from pbxguard.entrypoints.daemon import Daemon
from pbxguard.errors import ConfigError
from pbxguard.simulator.ami_server import SimulatedPbx
from tests.support.agi_client import AgiResult, agi_request
from tests.support.guard import SECRET, reference_policy, settings_for, until

SHANGHAI = ZoneInfo("Asia/Shanghai")
MONDAY_10AM = datetime(2026, 11, 23, 10, 0, tzinfo=SHANGHAI)
REFERENCE_POLICY = Path(__file__).parents[2] / "src/pbxguard/policies/reference-site.toml"
PBXGUARD = Path(sys.executable).with_name("pbxguard")
# The uniqueid of 2001's channel in the recording staff-international-answered.
RECORDED_UNIQUEID = "1795397584.0"

# Extensions of the reference site: staff, staff with a Chinese name, a department head, the
# guard-room alarm phone, a hotline duty phone, and one in the plan that nobody owns.
EXTENSIONS = ("2001", "2003", "9001", "8000", "8001", "2999")
# Number -> the class `pbxguard check` must find for it.
NUMBERS: dict[str, NumberClass] = {
    "110": NumberClass.EMERGENCY,
    "119": NumberClass.EMERGENCY,
    "12110": NumberClass.EMERGENCY,
    "2002": NumberClass.INTERNAL,
    "8001": NumberClass.INTERNAL,
    "95588": NumberClass.SERVICE,
    "10086": NumberClass.SERVICE,
    "12345": NumberClass.SERVICE,
    "62345678": NumberClass.LOCAL,
    "02112345678": NumberClass.LOCAL,
    "13800138000": NumberClass.MOBILE,
    "013800138000": NumberClass.MOBILE,
    "01087654321": NumberClass.DOMESTIC_LD,
    "02787654321": NumberClass.DOMESTIC_LD,
    "1790901087654321": NumberClass.DOMESTIC_LD,
    "0085223456789": NumberClass.HK_MACAU,
    "0085328123456": NumberClass.HK_MACAU,
    "00886223456789": NumberClass.TAIWAN,
    "00441632960123": NumberClass.INTERNATIONAL,
    "+12025550123": NumberClass.INTERNATIONAL,
    "16812345678": NumberClass.PREMIUM,
    "9012345": NumberClass.PREMIUM,
    "*72": NumberClass.FEATURE,
    "#31#": NumberClass.INVALID,  # not one of the site's feature codes
    "abc": NumberClass.INVALID,
    "123": NumberClass.INVALID,
}


class FakeClock:
    """A clock the test sets by hand."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


_uniqueids = itertools.count(1)


def new_uniqueid() -> str:
    return f"1795500000.{next(_uniqueids)}"


@dataclass
class Running:
    parts: Parts
    daemon: Daemon
    pbx: SimulatedPbx

    @property
    def offences(self) -> OffenceBook:
        return self.parts.offences

    @property
    def approvals(self) -> ApprovalBook:
        return self.parts.approvals

    @property
    def codes(self) -> CodeBook:
        return self.parts.codes

    @property
    def calls(self) -> CallLog:
        return CallLog(self.parts.database)

    async def ask(
        self,
        extension: str,
        number: str,
        *,
        uniqueid: str | None = None,
        code: str | None = None,
    ) -> AgiResult:
        """Ask the gate about a call as the sample dialplan does (``pin`` when given a code)."""
        assert self.parts.agi is not None
        host, port = self.parts.agi.address
        args = (extension, number) if code is None else (extension, number, code)
        return await agi_request(
            host,
            port,
            script="authorize" if code is None else "pin",
            callerid=extension,
            extension=number,
            args=args,
            uniqueid=uniqueid or new_uniqueid(),
        )

    async def settled(self) -> None:
        """Wait until the replayed calls are over and every fact has reached the database."""
        await until(lambda: self.parts.guard.tracker.live_calls == 0)
        assert await asyncio.to_thread(self.parts.writer.wait_idle, 10)


def _listening(parts: Parts) -> bool:
    if parts.agi is None:
        return False
    try:
        parts.agi.address  # noqa: B018 (raises until the server listens)
    except ConfigError:
        return False
    return True


@asynccontextmanager
async def running_service(
    tmp_path: Path,
    clock: FakeClock,
    *,
    loaded: LoadedPolicy | None = None,
    recordings: Sequence[str] = ("register-and-qualify",),
    pause_at_first_channel: bool = False,
    speed: float = 0.0,
) -> AsyncIterator[Running]:
    """Run a whole pbxguard (AMI to a simulated PBX, FastAGI on loopback, SQLite ledger)."""
    async with SimulatedPbx(list(recordings), secret=SECRET, speed=speed) as pbx:
        if pause_at_first_channel:
            pbx.pause_after(lambda message: message.event == "Newchannel")
        parts = build(
            settings_for(tmp_path, pbx),
            loaded or reference_policy(),
            clock=clock,
            raise_on_auth_failure=True,
            loop=asyncio.get_running_loop(),
        )
        daemon = Daemon(parts)
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        try:
            await until(lambda: (_listening(parts) and parts.ami.connected) or task.done())
            assert not task.done()
            yield Running(parts, daemon, pbx)
        finally:
            stop.set()
            async with asyncio.timeout(10):
                await task


def check_json(
    extension: str, number: str, at: datetime, capsys: pytest.CaptureFixture[str]
) -> dict[str, Any]:
    """Return what ``pbxguard check --json`` prints for the call (run in this process)."""
    args = argparse.Namespace(
        extension=extension,
        number=number,
        at=at.replace(tzinfo=None).isoformat(),
        config=None,
        policy=str(REFERENCE_POLICY),
        json=True,
    )
    cmd_check(args)
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return data


def check_subprocess(extension: str, number: str, at: datetime) -> dict[str, Any]:
    """Return what ``pbxguard check --json`` prints, run as a user would run it."""
    done = subprocess.run(
        [
            str(PBXGUARD),
            "check",
            "--from",
            extension,
            number,
            "--at",
            at.replace(tzinfo=None).isoformat(),
            "--policy",
            str(REFERENCE_POLICY),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def same_verdict(result: AgiResult, data: dict[str, Any]) -> bool:
    return result.variables == {
        "PBXGUARD_VERDICT": data["verdict"],
        "PBXGUARD_RULE": data["rule"],
        "PBXGUARD_REASON": data["reason_en"],
        "PBXGUARD_REASON_ZH": data["reason_zh"],
    }


def grant(
    approval_id: str,
    person: str,
    start: datetime,
    end: datetime,
    *,
    number_class: NumberClass = NumberClass.DOMESTIC_LD,
    max_calls: int | None = None,
) -> Approval:
    return Approval(
        id=approval_id,
        person_id=person,
        granted_by="head-9001",
        valid_from=start,
        valid_until=end,
        number_class=number_class,
        max_calls=max_calls,
        reason="与客户核对合同",
    )


def with_pin_classes(*classes: NumberClass) -> LoadedPolicy:
    loaded = reference_policy()
    policy = dataclasses.replace(loaded.policy, pin_classes=frozenset(classes))
    return dataclasses.replace(loaded, policy=policy)


# -- the verdict over FastAGI is the verdict of `pbxguard check` ------------------------------


async def test_every_class_from_every_kind_of_phone_gets_the_verdict_check_gives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [(ext, number) for ext in EXTENSIONS for number in NUMBERS]
    answers: dict[tuple[str, str], AgiResult] = {}
    async with running_service(tmp_path, FakeClock(MONDAY_10AM)) as run:
        for extension, number in cases:
            answers[extension, number] = await run.ask(extension, number)
        await run.settled()
        decisions = run.calls.decisions()
        offences = run.offences.offences()

    capsys.readouterr()  # the service's logs
    expected = {case: check_json(*case, MONDAY_10AM, capsys) for case in cases}
    assert {NumberClass(data["number_class"]) for data in expected.values()} == set(NumberClass)
    for (extension, number), data in expected.items():
        assert NumberClass(data["number_class"]) is NUMBERS[number], number
        assert same_verdict(answers[extension, number], data), (extension, number)
    verdicts = {data["verdict"] for data in expected.values()}
    assert verdicts == {"allow", "deny"}  # no pin classes in the reference policy

    # Every verdict is in the ledger as a pre-dial decision; every forbidden attempt that is an
    # offence is recorded as refused before it rang.
    assert len(decisions) == len(cases)
    assert {d.layer for d in decisions} == {Layer.AGI}
    by_call = {(d.extension, d.dialled): d for d in decisions}
    for case, data in expected.items():
        assert by_call[case].verdict == data["verdict"]
        assert by_call[case].rule_id == data["rule"]
    wanted = sorted((ext, NUMBERS[n].value) for (ext, n), d in expected.items() if d["offence"])
    assert sorted((o.extension, o.number_class) for o in offences) == wanted
    assert {o.final_outcome for o in offences} == {Outcome.REFUSED}
    assert {o.rule_id for o in offences} == {"LD-2", "PR-1", "EM-1"}


@pytest.mark.parametrize(
    ("extension", "number"),
    [("2001", "00441632960123"), ("9001", "02787654321"), ("8000", "13800138000")],
)
async def test_the_verdict_matches_the_check_command_run_as_a_process(
    extension: str, number: str, tmp_path: Path
) -> None:
    async with running_service(tmp_path, FakeClock(MONDAY_10AM)) as run:
        answer = await run.ask(extension, number)
    data = await asyncio.to_thread(check_subprocess, extension, number, MONDAY_10AM)
    assert same_verdict(answer, data)


# -- approvals -----------------------------------------------------------------------------------


async def test_an_approval_lets_calls_through_until_its_calls_are_used_up(
    tmp_path: Path,
) -> None:
    async with running_service(tmp_path, FakeClock(MONDAY_10AM)) as run:
        day = MONDAY_10AM.replace(hour=8)
        run.approvals.grant(
            grant("ap-two", "staff-2001", day, day + timedelta(hours=10), max_calls=2)
        )
        before = await run.ask("2001", "01087654321")
        await run.daemon.refresh_approvals()
        first = await run.ask("2001", "01087654321")
        second = await run.ask("2001", "02787654321")
        third = await run.ask("2001", "01087654321")
        await run.settled()
        [approval] = run.approvals.all(person="staff-2001")
        decisions = run.calls.decisions()
        offences = run.offences.offences()

    assert before.verdict == "deny"  # the guard has not read the approval yet
    assert (first.verdict, second.verdict, third.verdict) == ("allow", "allow", "deny")
    assert first.variables["PBXGUARD_REASON"] == "approved by head-9001"
    assert third.variables["PBXGUARD_RULE"] == "LD-2"
    assert approval.used_calls == 2
    assert [d.approval_id for d in decisions] == ["", "ap-two", "ap-two", ""]
    assert [(o.rule_id, o.final_outcome) for o in offences] == [
        ("LD-2", Outcome.REFUSED),
        ("LD-2", Outcome.REFUSED),
    ]


async def test_an_approval_that_ends_at_noon_allows_the_morning_only(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_10AM.replace(hour=11))
    noon = MONDAY_10AM.replace(hour=12)
    async with running_service(tmp_path, clock) as run:
        run.approvals.grant(
            grant(
                "ap-noon",
                "zhang-wei",
                noon - timedelta(hours=4),
                noon,
                number_class=NumberClass.INTERNATIONAL,
            )
        )
        await run.daemon.refresh_approvals()
        morning = await run.ask("2003", "00441632960123")
        clock.at = noon - timedelta(seconds=1)
        last_second = await run.ask("2003", "00441632960123")
        clock.at = noon
        at_noon = await run.ask("2003", "00441632960123")
        clock.at = noon + timedelta(hours=1)
        await run.daemon.refresh_approvals()
        afternoon = await run.ask("2003", "00441632960123")
        await run.settled()

    assert [r.verdict for r in (morning, last_second, at_noon, afternoon)] == [
        "allow",
        "allow",
        "deny",
        "deny",
    ]
    assert afternoon.variables["PBXGUARD_RULE"] == "LD-2"
    # The end of the window is an event in the ledger, with who and when.
    with closing(sqlite3.connect(tmp_path / "ledger.sqlite3")) as db:
        events = db.execute(
            "SELECT kind, actor FROM approvals WHERE approval_id = 'ap-noon' ORDER BY id"
        ).fetchall()
    assert events == [("grant", "head-9001"), ("use", ""), ("use", ""), ("expire", "pbxguard")]


# -- authorization codes -------------------------------------------------------------------------


async def test_three_wrong_codes_refuse_the_call_and_are_each_recorded(tmp_path: Path) -> None:
    loaded = with_pin_classes(NumberClass.DOMESTIC_LD)
    async with running_service(tmp_path, FakeClock(MONDAY_10AM), loaded=loaded) as run:
        uniqueid = new_uniqueid()
        asked = await run.ask("2001", "01087654321", uniqueid=uniqueid)
        tries = [
            await run.ask("2001", "01087654321", uniqueid=uniqueid, code=code)
            for code in ("000000", "123456", "999999")
        ]
        await run.settled()
        failures = len(
            run.codes.failures(extension="2001", since=MONDAY_10AM - timedelta(minutes=1))
        )
        decisions = run.calls.decisions(linkedid=uniqueid)
        offences = run.offences.offences()

    assert asked.verdict == "pin"
    assert [t.verdict for t in tries] == ["pin", "pin", "deny"]
    assert tries[0].variables["PBXGUARD_REASON"] == "wrong authorization code, try again"
    assert tries[2].variables["PBXGUARD_REASON"] == "3 wrong authorization codes: call refused"
    assert failures == 3
    [decision] = decisions
    assert (decision.layer, decision.verdict) == (Layer.AGI, "deny")
    assert offences == []


async def test_a_personal_code_puts_the_call_on_its_owner(tmp_path: Path) -> None:
    loaded = with_pin_classes(NumberClass.DOMESTIC_LD)
    async with running_service(tmp_path, FakeClock(MONDAY_10AM), loaded=loaded) as run:
        run.codes.issue(
            "head-9001",
            "482913",
            one_time=False,
            expires_at=None,
            by="admin",
            at=MONDAY_10AM - timedelta(days=1),
        )
        uniqueid = new_uniqueid()
        asked = await run.ask("2001", "01087654321", uniqueid=uniqueid)
        unlocked = await run.ask("2001", "01087654321", uniqueid=uniqueid, code="482913")
        again = await run.ask("2002", "02787654321", code="482913")
        await run.settled()
        [decision] = run.calls.decisions(linkedid=uniqueid)

    assert (asked.verdict, unlocked.verdict, again.verdict) == ("pin", "allow", "allow")
    assert decision.person_id == "head-9001"
    assert decision.extension == "2001"
    assert (decision.layer, decision.verdict) == (Layer.AGI, "allow")


async def test_a_one_time_code_opens_one_call_only(tmp_path: Path) -> None:
    loaded = with_pin_classes(NumberClass.DOMESTIC_LD)
    async with running_service(tmp_path, FakeClock(MONDAY_10AM), loaded=loaded) as run:
        run.codes.issue(
            "head-9001",
            "735194",
            one_time=True,
            expires_at=None,
            by="admin",
            at=MONDAY_10AM - timedelta(hours=1),
        )
        first = await run.ask("2001", "01087654321", code="735194")
        second = await run.ask("2001", "01087654321", code="735194")
        await run.settled()
        failures = len(
            run.codes.failures(extension="2001", since=MONDAY_10AM - timedelta(minutes=1))
        )

    assert first.verdict == "allow"
    assert second.verdict == "pin"
    assert second.variables["PBXGUARD_REASON"] == "wrong authorization code, try again"
    assert failures == 1


# -- the two layers judge a call once ------------------------------------------------------------


async def test_a_refused_call_seen_later_over_ami_is_one_offence(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 11, 23, 9, 33, tzinfo=SHANGHAI))
    async with running_service(
        tmp_path,
        clock,
        recordings=["staff-international-answered"],
        pause_at_first_channel=True,
        speed=0.05,
    ) as run:
        async with asyncio.timeout(10):
            await run.pbx.wait_until_paused()
        refused = await run.ask("2001", "00441632960123", uniqueid=RECORDED_UNIQUEID)
        run.pbx.resume()
        async with asyncio.timeout(10):
            await run.pbx.finished()
        await run.settled()
        decisions = run.calls.decisions(linkedid=RECORDED_UNIQUEID)
        offences = run.offences.offences()

    assert refused.verdict == "deny"
    assert [d.layer for d in decisions] == [Layer.AGI, Layer.AMI]
    assert {d.verdict for d in decisions} == {"deny"}
    [offence] = offences
    # The replayed call ignores the verdict and reaches the trunk; the AMI layer cuts it
    # before the far end answers, so the refusal stands, and the ending says so.
    assert (offence.rule_id, offence.final_outcome) == ("LD-2", Outcome.REFUSED)
    assert offence.ending is not None
    assert offence.ending.ending is Ending.BEFORE_ANSWER
    assert offence.call is not None
    assert offence.call.uniqueid == RECORDED_UNIQUEID


async def test_the_ami_layer_keeps_the_pre_dial_verdict_instead_of_judging_again(
    tmp_path: Path,
) -> None:
    """The approval's one call is used by the pre-dial verdict: judged again, it would deny."""
    clock = FakeClock(datetime(2026, 11, 23, 9, 33, tzinfo=SHANGHAI))
    day = clock.at.replace(hour=9, minute=0)
    async with running_service(
        tmp_path,
        clock,
        recordings=["staff-international-answered"],
        pause_at_first_channel=True,
    ) as run:
        run.approvals.grant(
            grant(
                "ap-once",
                "staff-2001",
                day,
                day + timedelta(hours=9),
                number_class=NumberClass.INTERNATIONAL,
                max_calls=1,
            )
        )
        await run.daemon.refresh_approvals()
        async with asyncio.timeout(10):
            await run.pbx.wait_until_paused()
        allowed = await run.ask("2001", "00441632960123", uniqueid=RECORDED_UNIQUEID)
        run.pbx.resume()
        async with asyncio.timeout(10):
            await run.pbx.finished()
        await run.settled()
        decisions = run.calls.decisions(linkedid=RECORDED_UNIQUEID)
        offences = run.offences.offences()
        [approval] = run.approvals.all()
        calls = run.calls.calls()

    assert allowed.verdict == "allow"
    assert approval.used_calls == 1
    assert [(d.layer, d.verdict, d.approval_id) for d in decisions] == [
        (Layer.AGI, "allow", "ap-once"),
        (Layer.AMI, "allow", "ap-once"),
    ]
    assert run.pbx.actions_named("Hangup") == []
    assert offences == []
    [call] = calls
    assert call.answered_at is not None
