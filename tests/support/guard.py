"""Run the whole guard (AMI client, tracker, ledger) against the simulated PBX."""

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

from pbxguard.adapters.ledger import FineLedger, OffenceEntry
from pbxguard.adapters.policy_file import LoadedPolicy, load_policy
from pbxguard.adapters.settings import (
    AgiSettings,
    AmiSettings,
    LedgerSettings,
    MqttSettings,
    Settings,
)
from pbxguard.app.ports import Clock
from pbxguard.app.service import Service
from pbxguard.domain.policy import Mode
from pbxguard.domain.records import CallSummary
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

    service: Service
    pbx: SimulatedPbx
    stop: asyncio.Event
    task: asyncio.Task[None]

    @property
    def ledger(self) -> FineLedger:
        return self.service.ledger

    async def settle(self, within: float = 20.0) -> None:
        """Wait for the replay to end and every write to reach the database."""
        async with asyncio.timeout(within):
            await self.pbx.finished()
            await self.service.guard.drained()
            await self.service.spool.wait_drained()

    async def offences(self) -> list[OffenceEntry]:
        return await self.ledger.offences(timezone=self.service.loaded.policy.timezone)

    async def stop_and_read_offences(self) -> list[OffenceEntry]:
        """Stop the guard (flushing what is under way), then read the ledger afresh."""
        self.stop.set()
        async with asyncio.timeout(10):
            await self.task
        ledger = await FineLedger.open(self.service.settings.ledger.url)
        try:
            return await ledger.offences(timezone=self.service.loaded.policy.timezone)
        finally:
            await ledger.close()

    async def calls(self) -> list[CallSummary]:
        return await self.ledger.calls()

    def hangups(self) -> list[str]:
        """Channels the guard asked the PBX to hang up."""
        return [a.message.get("Channel") or "" for a in self.pbx.actions_named("Hangup")]


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
) -> AsyncIterator[GuardRun]:
    """Start a simulated PBX replaying ``recordings`` and a guard logged in to it."""
    loaded = loaded or reference_policy(mode)
    url = ledger_url or f"sqlite+aiosqlite:///{tmp_path / 'ledger.sqlite3'}"
    async with SimulatedPbx(
        list(recordings), secret=SECRET, speed=speed, pause_after=pause_after
    ) as pbx:
        settings = Settings(
            ami=AmiSettings(
                host=pbx.host, port=pbx.port, secret=SecretStr(SECRET), ping_interval=2
            ),
            agi=AgiSettings(port=0),
            ledger=LedgerSettings(url=url, spool=str(tmp_path / "ledger.spool")),
            mqtt=mqtt or MqttSettings(),
        )
        service = await Service.build(settings, loaded, clock=clock, raise_on_auth_failure=True)
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        run = GuardRun(service, pbx, stop, task)
        await until(lambda: service.ami.connected or task.done())
        try:
            yield run
        finally:
            stop.set()
            async with asyncio.timeout(10):
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
