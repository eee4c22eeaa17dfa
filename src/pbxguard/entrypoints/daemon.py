"""Run a built pbxguard: one supervising task group, a clean stop, nothing lost on the way.

Start: the FastAGI port is bound *before* the task group starts, so a busy port is one clear
error, not a traceback of a group; the ledger writer thread starts; the hash chain's newest rows
are verified (in a worker thread) and a break raises an alert; then the AMI client, the timers,
the MQTT link, the approvals refresh, the policy watch, the register watch and the event
loop's stall watch (`pbxguard.adapters.loop_watch`) run as tasks.

Stop (SIGTERM, SIGINT): the FastAGI server closes, the AMI client logs off, the outages under
way are recorded, the hangups in flight get their replies, then the writer drains the journal
into the database for a few seconds; whatever it could not write stays in the journal for the
next start. A ``kill -9`` at any point loses nothing either: every fact was in the journal
before the guard acted on it.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import structlog

from pbxguard.adapters.ledger.audit import verify_ledger
from pbxguard.adapters.loop_watch import LoopWatch
from pbxguard.adapters.policy_file import load_policy
from pbxguard.adapters.systemd import SystemdNotifier
from pbxguard.bootstrap import Parts
from pbxguard.domain.approvals import Approval
from pbxguard.errors import LedgerError, PbxGuardError

log = structlog.get_logger(__name__)

APPROVALS_REFRESH_SECONDS = 30.0
POLICY_CHECK_SECONDS = 5.0
#: Rows of each hash-chain stream checked at start-up (a full check is `pbxguard ledger verify`).
VERIFY_TAIL = 1000
#: How long a clean stop waits for the writer to drain the journal into the database.
DRAIN_SECONDS = 5.0
#: How long an approval's expiry waits for the uses counted before it to reach the ledger.
EXPIRY_WAIT = 2.0


class Daemon:
    """The running pbxguard: its tasks, its loops and its stop."""

    def __init__(
        self,
        parts: Parts,
        *,
        approvals_refresh: float = APPROVALS_REFRESH_SECONDS,
        policy_check: float = POLICY_CHECK_SECONDS,
        extra_tasks: Mapping[str, Callable[[], Coroutine[Any, Any, None]]] | None = None,
        systemd: SystemdNotifier | None = None,
    ) -> None:
        self.parts = parts
        self._systemd = systemd or SystemdNotifier.from_environment()
        self._approvals_refresh = approvals_refresh
        self._policy_check = policy_check
        self._extra = dict(extra_tasks or {})
        self._active: dict[str, Approval] = {}
        self.loop_watch = LoopWatch()
        self.started = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Run every part until ``stop`` is set, then shut down cleanly.

        Raises:
            ConfigError: the FastAGI port is busy (before anything else started).
        """
        parts = self.parts
        policy = parts.guard.policy
        log.info(
            "pbxguard starting",
            site=policy.site,
            mode=policy.mode.value,
            policy=policy.version,
            ami=f"{parts.settings.ami.host}:{parts.settings.ami.port}",
            journal_pending=parts.journal.pending,
        )
        if parts.agi is not None:
            await parts.agi.start()
        parts.writer.start()
        try:
            async with asyncio.TaskGroup() as group:
                workers = [
                    group.create_task(parts.ami.run(), name="ami"),
                    group.create_task(parts.guard.run_timers(), name="timers"),
                    group.create_task(self._approvals_loop(), name="approvals"),
                    group.create_task(self._policy_watch(), name="policy-watch"),
                    group.create_task(parts.register_watch.run(), name="register-watch"),
                    group.create_task(self._verify_tail(), name="verify-ledger"),
                    group.create_task(self.loop_watch.run(), name="loop-watch"),
                ]
                if parts.link is not None:
                    workers.append(group.create_task(parts.link.run(), name="mqtt"))
                if parts.agi is not None:
                    workers.append(group.create_task(parts.agi.serve(), name="fastagi"))
                workers.extend(
                    group.create_task(make(), name=name) for name, make in self._extra.items()
                )
                # Ready once the ledger's writer runs and FastAGI listens: a PBX that is down
                # must not fail the start (the AMI client keeps trying). The watchdog pings
                # run on the event loop, so a blocked loop stops them and systemd restarts us.
                workers.append(group.create_task(self._systemd.keep_alive(), name="watchdog"))
                self._systemd.ready(self._status_line())
                self.started.set()
                await stop.wait()
                self._systemd.stopping("正在停止 stopping: draining the ledger journal")
                log.info("pbxguard stopping")
                if parts.agi is not None:
                    await parts.agi.close()
                await parts.ami.close()
                parts.guard.flush()
                await parts.guard.settled()
                if parts.link is not None:
                    await parts.link.close()
                for task in workers:
                    task.cancel()
        finally:
            drained = await asyncio.to_thread(parts.writer.stop, drain=DRAIN_SECONDS)
            self._systemd.close()
            parts.journal.close()
            parts.database.close()
            worst = self.loop_watch.worst
            log.info(
                "pbxguard stopped",
                ledger_drained=drained,
                journal_pending=parts.journal.pending,
                loop_worst_stall_ms=round(worst.stall_ms, 1),
                loop_stalls=worst.stalls,
                gc_worst_ms=round(worst.gc_ms, 1),
            )

    def _status_line(self) -> str:
        settings = self.parts.settings
        if self.parts.agi is not None:
            host, port = self.parts.agi.address
            agi = f"FastAGI {host}:{port}"
        else:
            agi = "FastAGI off"
        return (
            f"运行中 running: site {self.parts.guard.policy.site}, {agi}, "
            f"AMI {settings.ami.host}:{settings.ami.port}"
        )

    async def refresh_approvals(self) -> None:
        """Reload the active approvals into the guard; record the ones whose window ended."""
        parts = self.parts
        now = parts.clock.now()
        try:
            approvals = await asyncio.to_thread(
                parts.approvals.active, now, site=parts.guard.policy.site
            )
            active = {a.id: a for a in approvals}
            # Gone because its window ended (not revoked, not used up): an expiry event.
            ended = [
                self._active[gone]
                for gone in self._active.keys() - active.keys()
                if now >= self._active[gone].valid_until
            ]
            if ended and not await asyncio.to_thread(parts.writer.wait_idle, EXPIRY_WAIT):
                # Uses counted before the end are still on their way to the ledger; the expiry
                # follows them there, so it waits for the next refresh.
                return
            for approval in ended:
                await asyncio.to_thread(
                    parts.approvals.expire,
                    approval.id,
                    at=approval.valid_until,
                    by="pbxguard",
                    reason="validity ended",
                )
                log.info("approval expired", approval=approval.id, person=approval.person_id)
        except PbxGuardError as exc:
            log.warning("could not refresh approvals", error=str(exc))
            return
        self._active = dict(active)
        parts.guard.set_approvals(approvals)

    async def _approvals_loop(self) -> None:
        while True:
            await self.refresh_approvals()
            await asyncio.sleep(self._approvals_refresh)

    def _policy_stamp(self) -> tuple[float, ...]:
        loaded = self.parts.loaded
        files = [Path(name) for name in loaded.sources if not name.startswith("<")]
        if loaded.rota_file is not None:
            files.append(loaded.rota_file)
        return tuple(f.stat().st_mtime if f.exists() else 0.0 for f in files)

    async def _policy_watch(self) -> None:
        """Reload the policy (and the rota) when one of its files changes."""
        stamp = self._policy_stamp()
        while True:
            await asyncio.sleep(self._policy_check)
            current = self._policy_stamp()
            if current == stamp:
                continue
            stamp = current
            try:
                loaded = load_policy(self.parts.settings.policy)
            except PbxGuardError as exc:
                log.error("policy not reloaded: the new version is invalid", error=str(exc))
                continue
            self.parts.loaded = loaded
            self.parts.guard.set_policy(loaded.policy, loaded.channels)
            log.info("policy reloaded", version=loaded.policy.version)

    async def _verify_tail(self) -> None:
        """Check the newest rows of every hash chain; alert on a break."""
        try:
            report = await asyncio.to_thread(verify_ledger, self.parts.database, tail=VERIFY_TAIL)
        except LedgerError as error:
            log.warning("ledger chain not verified at start-up", error=str(error))
            return
        if report.intact:
            log.info("ledger chain verified", rows=report.rows, digest=report.digest)
            return
        for found in report.breaks:
            message = (
                f"{found.table} row {found.row_id} (seq {found.seq}) of site {found.site!r}: "
                f"{found.kind}, {found.detail}"
            )
            log.error("ledger chain broken", detail=message)
            self.parts.guard.ledger_trouble("chain", message)


def install_stop_signals(stop: asyncio.Event) -> None:
    """Set ``stop`` on SIGTERM and SIGINT."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
