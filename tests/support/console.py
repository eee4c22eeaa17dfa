"""A running daemon with its console on loopback, accounts for every role, and a seeded ledger.

The site is the reference site plus a second department head (市场部) so that scoping can be
checked across departments. Nothing listens on the AMI port: the AMI client keeps retrying,
which the console's health shows, and FastAGI answers as it does beside a PBX.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pbxguard.adapters.ledger import CallLog, OffenceBook
from pbxguard.adapters.ledger.console import UserBook
from pbxguard.adapters.passwords import Argon2Passwords
from pbxguard.adapters.policy_file import LoadedPolicy, load_policy
from pbxguard.adapters.settings import (
    AgiSettings,
    AmiSettings,
    ConsoleSettings,
    LedgerSettings,
    Settings,
)
from pbxguard.app.access import NewUser, add_user
from pbxguard.bootstrap import Parts, build
from pbxguard.domain.entries import OffenceEntry
from pbxguard.domain.records import CallRef, CallSummary, OffenceDraft, Outcome
from pbxguard.entrypoints.daemon import Daemon

REFERENCE_POLICY = Path(__file__).parents[2] / "src/pbxguard/policies/reference-site.toml"
PASSWORD = "correct horse battery"

#: username -> (role, person)
ACCOUNTS: dict[str, tuple[str, str]] = {
    "admin": ("administrator", ""),
    "auditor": ("auditor", ""),
    "gm": ("general_manager", ""),
    "head-eng": ("department_head", "head-9001"),
    "head-mkt": ("department_head", "head-9101"),
    "duty": ("duty_lead", ""),
    "zhang": ("staff", "zhang-wei"),
    "liu": ("staff", "liu-fang"),
}

EXTRA_PEOPLE = """
[[people]]
id = "head-9101"
name = "市场部经理"
department = "市场部"
role = "department_head"
extensions = ["9101"]
"""


def closed_port() -> int:
    """Return a loopback port nothing listens on (the AMI client retries against it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def site_policy(tmp_path: Path) -> Path:
    """Write the test site's policy: the reference site and a head of 市场部."""
    path = tmp_path / "site-policy.toml"
    text = REFERENCE_POLICY.read_text("utf-8")
    path.write_text(text + EXTRA_PEOPLE, "utf-8")
    return path


@dataclass
class ConsoleRun:
    """A running daemon and how to reach its console and its FastAGI server."""

    parts: Parts
    daemon: Daemon
    base_url: str
    agi: tuple[str, int]
    loaded: LoadedPolicy
    offences: dict[str, OffenceEntry] = field(default_factory=dict)
    register_ids: dict[str, int] = field(default_factory=dict)


def seed(
    parts: Parts, loaded: LoadedPolicy, now: datetime
) -> tuple[dict[str, OffenceEntry], dict[str, int]]:
    """Record one LD-2 offence per department and a register entry per department."""
    policy = loaded.policy
    book = OffenceBook(parts.database)
    rule = policy.rules["LD-2"]
    found: dict[str, OffenceEntry] = {}
    for key, person_id, ext in (("eng", "zhang-wei", "2003"), ("mkt", "liu-fang", "")):
        person = policy.people[person_id]
        draft = OffenceDraft(
            key=f"reference:test-{key}:LD-2:01087654321",
            rule_id="LD-2",
            at=now - timedelta(hours=2),
            call=CallRef(f"test-{key}", f"test-{key}", f"PJSIP/{ext or '2999'}-0001"),
            extension=ext,
            person_id=person_id,
            person_name=person.name,
            department=person.department,
            number="01087654321",
            number_class="domestic_ld",
            outcome=Outcome.REFUSED,
            detail_zh="未经批准拨打国内长途",
            detail_en="domestic long distance without approval",
            policy_version=policy.version,
        )
        found[key] = book.record(draft, rule, timezone=policy.timezone)
    calls = CallLog(parts.database)
    registers: dict[str, int] = {}
    for key, person_id, ext in (("eng", "zhang-wei", "2003"), ("mkt", "liu-fang", "2999")):
        person = policy.people[person_id]
        started = now - timedelta(hours=1)
        calls.record_call(
            CallSummary(
                call=CallRef(f"reg-{key}", f"reg-{key}", f"PJSIP/{ext}-0002"),
                extension=ext,
                person_id=person_id,
                person_name=person.name,
                department=person.department,
                caller_name=person.name,
                dialled="01087654321",
                number="01087654321",
                number_class="domestic_ld",
                direction="outbound",
                started_at=started,
                answered_at=started + timedelta(seconds=5),
                ended_at=started + timedelta(minutes=3),
                verdict="allow",
                rule_id="",
                outcome="answered",
            )
        )
    from pbxguard.adapters.ledger import RegisterBook

    for entry in RegisterBook(parts.database).entries(now - timedelta(days=1), now + timedelta(1)):
        registers["eng" if entry.department == "工程部" else "mkt"] = entry.id
    return found, registers


@asynccontextmanager
async def running_console(tmp_path: Path, *, staff: bool = True) -> AsyncIterator[ConsoleRun]:
    """Start the daemon with its console; create every account; seed the ledger."""
    policy_path = site_policy(tmp_path)
    settings = Settings(
        policy=str(policy_path),
        state_dir=str(tmp_path / "state"),
        ami=AmiSettings(port=closed_port(), ping_interval=2),
        agi=AgiSettings(port=0),
        ledger=LedgerSettings(url=f"sqlite:///{tmp_path / 'ledger.sqlite3'}"),
        console=ConsoleSettings(enabled=True, port=0, staff=staff),
    )
    loaded = load_policy(policy_path)
    parts = build(settings, loaded, loop=asyncio.get_running_loop())
    users = UserBook(parts.database)
    hasher = Argon2Passwords()
    now = datetime.now(UTC)
    for username, (role, person) in ACCOUNTS.items():
        add_user(
            users,
            hasher,
            loaded.policy,
            NewUser(username, PASSWORD, role, person, username),
            by="test",
            now=now,
        )
    offences, registers = seed(parts, loaded, now)
    daemon = Daemon(parts, approvals_refresh=3600)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        async with asyncio.timeout(15):
            await daemon.started.wait()
        assert daemon.console is not None
        assert daemon.console.address is not None
        host, port = daemon.console.address
        assert parts.agi is not None
        yield ConsoleRun(
            parts, daemon, f"http://{host}:{port}", parts.agi.address, loaded, offences, registers
        )
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(20):
                await task


@contextmanager
def console_in_thread(tmp_path: Path, *, staff: bool = True) -> Iterator[ConsoleRun]:
    """Run `running_console` on an event loop of its own thread (for browser and sync tests)."""
    ready = threading.Event()
    done = threading.Event()
    found: list[ConsoleRun] = []
    errors: list[BaseException] = []
    holder: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Event]] = {}

    async def main() -> None:
        leave = asyncio.Event()
        holder["loop"] = (asyncio.get_running_loop(), leave)
        async with running_console(tmp_path, staff=staff) as run:
            found.append(run)
            ready.set()
            await leave.wait()

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as error:
            errors.append(error)
        finally:
            ready.set()
            done.set()

    thread = threading.Thread(target=target, name="console-daemon", daemon=True)
    thread.start()
    assert ready.wait(60), "the daemon did not start"
    if errors:
        raise errors[0]
    try:
        yield found[0]
    finally:
        loop, leave = holder["loop"]
        loop.call_soon_threadsafe(leave.set)
        assert done.wait(60), "the daemon did not stop"
        thread.join(10)
    if errors:
        raise errors[0]
