"""Run the whole guard (AMI client, tracker, journal, ledger writer) against the simulated PBX."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

from pydantic import SecretStr

from pbxguard.adapters.ledger import CallLog, LedgerDatabase, OffenceBook, RegisterBook
from pbxguard.adapters.policy_file import LoadedPolicy, load_policy
from pbxguard.adapters.settings import (
    AgiSettings,
    AmiSettings,
    DndSettings,
    EmergencySettings,
    LedgerSettings,
    MqttSettings,
    Settings,
)
from pbxguard.app.ports import Clock
from pbxguard.bootstrap import Parts, build
from pbxguard.domain.entries import OffenceEntry
from pbxguard.domain.policy import Mode
from pbxguard.domain.records import CallSummary
from pbxguard.entrypoints.daemon import Daemon
from pbxguard.protocol.ami import AmiMessage
from pbxguard.simulator.ami_server import PlaylistEntry, SimulatedPbx

SECRET = "test-secret"


def reference_policy(mode: Mode = Mode.ENFORCE) -> LoadedPolicy:
    """Load the recorded reference site's policy in ``mode``."""
    path = resources.files("pbxguard.policies").joinpath("reference-site.toml")
    loaded = load_policy(Path(str(path)))
    return dataclasses.replace(loaded, policy=dataclasses.replace(loaded.policy, mode=mode))


@dataclass
class GuardRun:
    """A guard running against a simulated PBX."""

    parts: Parts
    daemon: Daemon
    pbx: SimulatedPbx
    stop: asyncio.Event
    task: asyncio.Task[None]

    @property
    def database(self) -> LedgerDatabase:
        return self.parts.database

    async def written(self, within: float = 20.0) -> None:
        """Wait until the journal's facts are all in the database."""
        writer = self.parts.writer
        if not await asyncio.to_thread(writer.wait_idle, within):
            raise TimeoutError(f"the ledger writer did not catch up within {within} s")

    async def settle(self, within: float = 20.0) -> None:
        """Wait for the replay to end, the hangups to be answered and the ledger written."""
        guard = self.parts.guard
        async with asyncio.timeout(within):
            await self.pbx.finished()
            # Every replayed event read and handled (the guard also reads the PBX's own).
            await until(lambda: guard.stats.events >= self.pbx.events_sent, within)
            await guard.settled()
        await self.written(within)

    async def offences(self) -> list[OffenceEntry]:
        return await asyncio.to_thread(OffenceBook(self.database).offences)

    async def stop_and_read_offences(self) -> list[OffenceEntry]:
        """Stop the guard (flushing what is under way), then read the ledger afresh."""
        self.stop.set()
        async with asyncio.timeout(20):
            await self.task
        url = self.parts.settings.ledger_url
        with LedgerDatabase.open(url, site=self.parts.guard.policy.site, read_only=True) as db:
            return OffenceBook(db).offences()

    async def calls(self) -> list[CallSummary]:
        return await asyncio.to_thread(CallLog(self.database).calls)

    def register(self) -> RegisterBook:
        return RegisterBook(self.database)

    def hangups(self) -> list[str]:
        """Channels the guard asked the PBX to hang up (each once, in order)."""
        channels = [a.message.get("Channel") or "" for a in self.pbx.actions_named("Hangup")]
        return list(dict.fromkeys(channels))


def settings_for(
    tmp_path: Path,
    pbx: SimulatedPbx,
    *,
    ledger_url: str | None = None,
    mqtt: MqttSettings | None = None,
    agi: AgiSettings | None = None,
    emergency: EmergencySettings | None = None,
    dnd: DndSettings | None = None,
) -> Settings:
    """Settings for a guard against ``pbx`` with its state in ``tmp_path``."""
    return Settings(
        state_dir=str(tmp_path / "state"),
        ami=AmiSettings(host=pbx.host, port=pbx.port, secret=SecretStr(SECRET), ping_interval=2),
        agi=agi or AgiSettings(port=0),
        ledger=LedgerSettings(url=ledger_url or f"sqlite:///{tmp_path / 'ledger.sqlite3'}"),
        mqtt=mqtt or MqttSettings(),
        emergency=emergency or EmergencySettings(),
        dnd=dnd or DndSettings(),
    )


@asynccontextmanager
async def guard_against(
    recordings: Sequence[str | PlaylistEntry],
    tmp_path: Path,
    *,
    mode: Mode = Mode.ENFORCE,
    speed: float = 0.02,
    ledger_url: str | None = None,
    loaded: LoadedPolicy | None = None,
    mqtt: MqttSettings | None = None,
    clock: Clock | None = None,
    pause_after: Callable[[AmiMessage], bool] | None = None,
    approvals_refresh: float = 30.0,
    emergency: EmergencySettings | None = None,
    dnd: DndSettings | None = None,
    agi: AgiSettings | None = None,
) -> AsyncIterator[GuardRun]:
    """Start a simulated PBX replaying ``recordings`` and a guard logged in to it."""
    loaded = loaded or reference_policy(mode)
    async with SimulatedPbx(
        list(recordings), secret=SECRET, speed=speed, pause_after=pause_after
    ) as pbx:
        settings = settings_for(
            tmp_path, pbx, ledger_url=ledger_url, mqtt=mqtt, emergency=emergency, dnd=dnd, agi=agi
        )
        parts = build(
            settings,
            loaded,
            clock=clock,
            raise_on_auth_failure=True,
            loop=asyncio.get_running_loop(),
        )
        daemon = Daemon(parts, approvals_refresh=approvals_refresh)
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        run = GuardRun(parts, daemon, pbx, stop, task)
        await until(lambda: parts.ami.connected or task.done())
        if task.done():
            task.result()
        try:
            yield run
        finally:
            stop.set()
            async with asyncio.timeout(20):
                await task


class ReplayClock:
    """A clock that starts at a chosen instant and runs at the wall clock's pace."""

    def __init__(self, start: datetime) -> None:
        self._start = start.astimezone(UTC)
        self._origin = time.monotonic()

    def now(self) -> datetime:
        return self._start + timedelta(seconds=time.monotonic() - self._origin)


async def until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Wait until ``predicate()`` holds, looking again every 5 ms, for at most ``within`` s.

    For conditions on counters and state that offer no event to wait on.
    """
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - there is no event to wait on
            await asyncio.sleep(0.005)


def holds_within(predicate: Callable[[], bool], within: float = 10.0) -> bool:
    """Block until ``predicate()`` holds, looking again every 10 ms; False after ``within`` s.

    The blocking twin of `until`, for a thread's or a process's state outside an event loop.
    """
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True
