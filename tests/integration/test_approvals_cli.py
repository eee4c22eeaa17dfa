"""``pbxguard approve`` and ``pbxguard code`` run as a user runs them, on an SQLite ledger."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from pbxguard.adapters.ledger import ApprovalBook, CodeBook, LedgerDatabase
from pbxguard.domain.approvals import Approval
from pbxguard.domain.numbers import NumberClass
from pbxguard.domain.records import CallRef
from tests.support.cli import Done, run_pbxguard

SHANGHAI = ZoneInfo("Asia/Shanghai")

REFERENCE_POLICY = Path(__file__).parents[2] / "src/pbxguard/policies/reference-site.toml"
APPROVAL_ID = re.compile(r"已批准 approved: (ap-[a-z0-9]{6})")
ISSUED_CODE = re.compile(r"授权码 code: (\d{6})$", re.MULTILINE)
HEADERS = (
    "编号 id",
    "使用人 person",
    "范围 scope",
    "次数 uses",
    "批准人 approved by",
    "状态 state",
)


@dataclass(frozen=True)
class Site:
    """A settings file naming a temporary SQLite ledger and the reference-site policy."""

    settings: Path
    url: str

    async def run(self, *args: str) -> Done:
        """Run ``pbxguard ARGS --config SETTINGS`` in a clean environment."""
        return await run_pbxguard(self.settings, *args)

    @contextmanager
    def ledger(self) -> Iterator[Books]:
        db = LedgerDatabase.open(self.url, site="reference")
        try:
            yield Books(db, ApprovalBook(db), CodeBook(db))
        finally:
            db.close()


@dataclass(frozen=True)
class Books:
    db: LedgerDatabase
    approvals: ApprovalBook
    codes: CodeBook


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


def site_time(moment: datetime) -> str:
    """Return ``moment`` as a naive ISO time in the site's timezone (what a user types)."""
    return moment.astimezone(SHANGHAI).replace(tzinfo=None).isoformat(timespec="minutes")


def tomorrow_at(hour: int) -> datetime:
    day = datetime.now(UTC).astimezone(SHANGHAI).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, hour, tzinfo=SHANGHAI)


def database_bytes(directory: Path) -> bytes:
    """Return every byte of the SQLite ledger's files (database, WAL, shared memory)."""
    return b"".join(path.read_bytes() for path in sorted(directory.glob("ledger.sqlite3*")))


def table_row(listing: str, approval_id: str) -> str:
    [line] = [line for line in listing.splitlines() if line.startswith(approval_id)]
    return line


async def test_a_department_head_grants_and_the_grant_is_listed(site: Site) -> None:
    start, end = tomorrow_at(9), tomorrow_at(18)
    granted = await site.run(
        "approve",
        "grant",
        "--person",
        "zhang-wei",
        "--by",
        "head-9001",
        "--class",
        "domestic_ld",
        "--from",
        site_time(start),
        "--until",
        site_time(end),
        "--calls",
        "2",
        "--reason",
        "与北京客户核对合同",
    )
    assert granted.returncode == 0, granted.stderr
    match = APPROVAL_ID.search(granted.stdout)
    assert match is not None, granted.stdout
    approval_id = match.group(1)
    assert "张伟 (zhang-wei)" in granted.stdout
    assert "Department head (head-9001)" in granted.stdout

    listed = await site.run("approve", "list")
    assert listed.returncode == 0, listed.stderr
    header = listed.stdout.splitlines()[0]
    assert all(h in header for h in HEADERS)
    row = table_row(listed.stdout, approval_id)
    assert "张伟 (zhang-wei)" in row
    assert "国内长途 domestic_ld" in row
    assert "0/2" in row
    assert "未生效 scheduled" in row
    assert "与北京客户核对合同" in row

    with site.ledger() as ledger:
        [stored] = ledger.approvals.all(person="zhang-wei")
    # Times typed without an offset are the site's (Shanghai) times.
    assert stored == Approval(
        id=approval_id,
        person_id="zhang-wei",
        granted_by="head-9001",
        valid_from=start,
        valid_until=end,
        number_class=NumberClass.DOMESTIC_LD,
        max_calls=2,
        reason="与北京客户核对合同",
    )


async def test_a_prefix_grant_is_normalised_and_an_offset_is_kept(site: Site) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    end = start + timedelta(hours=3)
    granted = await site.run(
        "approve",
        "grant",
        "--person",
        "staff-2001",
        "--by",
        "head-9001",
        "--prefix",
        "+852",
        "--from",
        start.isoformat(),
        "--until",
        end.isoformat(),
    )
    assert granted.returncode == 0, granted.stderr
    with site.ledger() as ledger:
        [stored] = ledger.approvals.all()
    assert (stored.prefix, stored.number_class, stored.max_calls) == ("00852", None, None)
    assert (stored.valid_from, stored.valid_until) == (start, end)
    listed = await site.run("approve", "list", "--person", "staff-2001")
    row = table_row(listed.stdout, stored.id)
    assert "有效 active" in row
    assert "0/∞" in row


async def test_refusals_say_what_is_wrong(site: Site) -> None:
    start, end = site_time(tomorrow_at(9)), site_time(tomorrow_at(18))

    def grant(person: str, by: str, *scope: str, start: str = start, end: str = end) -> list[str]:
        return [
            "approve",
            "grant",
            "--person",
            person,
            "--by",
            by,
            *scope,
            "--from",
            start,
            "--until",
            end,
        ]

    cases = {
        "staff": grant("staff-2001", "zhang-wei", "--class", "domestic_ld"),
        "unknown approver": grant("staff-2001", "boss", "--class", "domestic_ld"),
        "unknown person": grant("nobody", "head-9001", "--class", "domestic_ld"),
        "own calls": grant("head-9001", "head-9001", "--class", "international"),
        "backwards": grant("staff-2001", "head-9001", "--class", "hk_macau", start=end, end=start),
        "not a time": grant("staff-2001", "head-9001", "--class", "hk_macau", start="tomorrow"),
        "premium prefix": grant("staff-2001", "head-9001", "--prefix", "168"),
        "premium class": grant("staff-2001", "head-9001", "--class", "premium"),
        "no scope": grant("staff-2001", "head-9001"),
        "revoke unknown": ["approve", "revoke", "ap-xxxxxx", "--by", "head-9001", "--reason", "r"],
        "code for nobody": ["code", "issue", "--person", "nobody", "--by", "admin"],
        "short code": ["code", "issue", "--person", "zhang-wei", "--by", "admin", "--code", "12"],
    }
    done = dict(
        zip(cases, await asyncio.gather(*(site.run(*args) for args in cases.values())), strict=True)
    )

    who_may = "who may approve: head-9001 (Department head, 部门负责人 Department head)"
    assert done["staff"].returncode == 3
    assert "张伟 (zhang-wei, 一般员工 Staff) may not approve" in done["staff"].stderr
    assert who_may in done["staff"].stderr
    assert "'boss' is not a person in the policy" in done["unknown approver"].stderr
    assert who_may in done["unknown approver"].stderr
    assert "no person 'nobody' in the policy" in done["unknown person"].stderr
    assert "cannot approve their own calls" in done["own calls"].stderr
    assert "--until" in done["backwards"].stderr
    assert "must be after --from" in done["backwards"].stderr
    assert "--from 'tomorrow' is not an ISO date-time" in done["not a time"].stderr
    assert "premium-rate numbers" in done["premium prefix"].stderr
    assert done["premium class"].returncode == 2  # argparse: not one of the choices
    assert "invalid choice: 'premium'" in done["premium class"].stderr
    assert done["no scope"].returncode == 2
    assert "one of the arguments --class --prefix is required" in done["no scope"].stderr
    assert "no approval 'ap-xxxxxx'" in done["revoke unknown"].stderr
    assert "no person 'nobody' in the policy" in done["code for nobody"].stderr
    assert "at least 4 digits" in done["short code"].stderr
    for name, result in done.items():
        assert result.returncode in (2, 3), name
        assert result.stdout == "", name
    with site.ledger() as ledger:
        assert ledger.approvals.all() == []


async def test_the_list_shows_where_each_approval_stands(site: Site) -> None:
    now = datetime.now(UTC)
    with site.ledger() as ledger:
        ledger.db.migrate()
        hour, day = timedelta(hours=1), timedelta(days=1)
        for approval in (
            Approval("ap-active", "staff-2001", "head-9001", now - hour, now + 8 * hour),
            Approval("ap-usedup", "staff-2001", "head-9001", now - hour, now + hour, max_calls=1),
            Approval("ap-expired", "staff-2002", "head-9001", now - 3 * day, now - 2 * day),
            Approval("ap-later", "staff-2002", "head-9001", now + 2 * day, now + 3 * day),
            Approval("ap-revoked", "zhang-wei", "head-9001", now - hour, now + 8 * hour),
        ):
            ledger.approvals.grant(replace(approval, number_class=NumberClass.DOMESTIC_LD))
        ledger.approvals.use("ap-usedup", CallRef("c1", "c1", "PJSIP/2001-1"), now)

    revoked = await site.run(
        "approve", "revoke", "ap-revoked", "--by", "head-9001", "--reason", "项目取消"
    )
    refused = await site.run(
        "approve", "revoke", "ap-active", "--by", "staff-2001", "--reason", "不需要"
    )
    current, everything, of_2002 = await asyncio.gather(
        site.run("approve", "list"),
        site.run("approve", "list", "--all"),
        site.run("approve", "list", "--all", "--person", "staff-2002"),
    )

    assert revoked.returncode == 0, revoked.stderr
    assert "已撤销 revoked: ap-revoked" in revoked.stdout
    assert refused.returncode == 3
    assert "may not approve" in refused.stderr
    states = {
        "ap-active": "有效 active",
        "ap-usedup": "已用完 used up",
        "ap-expired": "已过期 expired",
        "ap-later": "未生效 scheduled",
        "ap-revoked": "已撤销 revoked",
    }
    for approval_id, state in states.items():
        assert state in table_row(everything.stdout, approval_id)
    assert "1/1" in table_row(everything.stdout, "ap-usedup")
    assert "撤销" not in table_row(everything.stdout, "ap-active")
    listed_now = {line.split()[0] for line in current.stdout.splitlines()[2:]}
    assert listed_now == {"ap-active", "ap-later"}
    assert {line.split()[0] for line in of_2002.stdout.splitlines()[2:]} == {
        "ap-expired",
        "ap-later",
    }
    with site.ledger() as ledger:
        states_now = {a.id: (a.revoked, a.used_calls) for a in ledger.approvals.all()}
    assert states_now["ap-revoked"] == (True, 0)
    assert states_now["ap-active"] == (False, 0)


async def test_a_generated_code_is_shown_once_and_only_its_hash_is_stored(
    site: Site, tmp_path: Path
) -> None:
    expires = tomorrow_at(18)
    issued = await site.run(
        "code",
        "issue",
        "--person",
        "head-9001",
        "--by",
        "admin",
        "--one-time",
        "--expires",
        site_time(expires),
    )
    chosen = await site.run(
        "code", "issue", "--person", "zhang-wei", "--by", "admin", "--code", "73915428"
    )
    assert issued.returncode == 0, issued.stderr
    match = ISSUED_CODE.search(issued.stdout)
    assert match is not None, issued.stdout
    code = match.group(1)
    assert issued.stdout.count(code) == 1
    assert code not in issued.stderr  # never in the logs
    assert "一次性 one-time" in issued.stdout
    assert chosen.returncode == 0, chosen.stderr
    assert "73915428" not in chosen.stdout + chosen.stderr

    stored = await asyncio.to_thread(database_bytes, tmp_path)
    assert stored
    assert code.encode() not in stored
    assert b"73915428" not in stored
    with site.ledger() as ledger:
        now = datetime.now(UTC)
        assert ledger.codes.check("73915428", now) == "zhang-wei"
        assert ledger.codes.check(code, expires + timedelta(minutes=1)) is None
        assert ledger.codes.check(code, now) == "head-9001"
        assert ledger.codes.check(code, now) is None  # one-time: used up


async def test_codes_are_listed_without_digits_and_a_revoked_code_stops_working(
    site: Site,
) -> None:
    issued = await site.run(
        "code", "issue", "--person", "head-9001", "--by", "admin", "--code", "58213409"
    )
    assert issued.returncode == 0, issued.stderr
    listed = await site.run("code", "list")
    assert listed.returncode == 0, listed.stderr
    assert "head-9001" in listed.stdout
    assert "有效 in force" in listed.stdout
    assert "58213409" not in listed.stdout
    code_id = next(line.split()[0] for line in listed.stdout.splitlines() if "head-9001" in line)

    revoked = await site.run("code", "revoke", code_id, "--by", "admin", "--reason", "泄露 leaked")
    assert revoked.returncode == 0, revoked.stderr
    with site.ledger() as ledger:
        assert ledger.codes.check("58213409", datetime.now(UTC)) is None
    again = await site.run("code", "revoke", code_id, "--by", "admin", "--reason", "twice")
    assert again.returncode == 3
    assert "already stopped working" in again.stderr
    assert "已撤销 revoked" in (await site.run("code", "list")).stdout
