"""Run a built pbxguard: one supervising task group, a clean stop, nothing lost on the way.

Start: the FastAGI port is bound *before* the task group starts, so a busy port is one clear
error, not a traceback of a group; the ledger writer starts (a process of its own); the hash
chain's newest rows are verified (in a worker thread) and a break raises an alert; then the AMI
client, the timers, the MQTT link, the approvals refresh, the policy watch, the register watch,
the telesales quota watch, the do-not-disturb list watch, the security desk's webhook and e-mail
channels and the event loop's stall watch (`pbxguard.adapters.loop_watch`) run as tasks.

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
from pbxguard.bootstrap import LiveParts, Parts, build_console, stored_open_cuts
from pbxguard.domain.approvals import Approval
from pbxguard.entrypoints.web import ConsoleServer, create_app
from pbxguard.errors import LedgerError, PbxGuardError

log = structlog.get_logger(__name__)

APPROVALS_REFRESH_SECONDS = 30.0
#: How often the ledger is asked for lifted locks and other sites' spend.
CONTROLS_REFRESH_SECONDS = 10.0
POLICY_CHECK_SECONDS = 5.0
#: Rows of each hash-chain stream checked at start-up (a full check is `pbxguard ledger verify`).
VERIFY_TAIL = 1000
#: How long a clean stop waits for the writer to drain the journal into the database.
DRAIN_SECONDS = 5.0
#: How long an approval's expiry waits for the uses counted before it to reach the ledger.
EXPIRY_WAIT = 2.0
#: How often the open hangups the ledger holds are asked for again while it does not answer.
OPEN_CUTS_RETRY = 2.0


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
        controls_refresh: float = CONTROLS_REFRESH_SECONDS,
    ) -> None:
        self.parts = parts
        self._controls_refresh = controls_refresh
        self._systemd = systemd or SystemdNotifier.from_environment()
        self._approvals_refresh = approvals_refresh
        self._policy_check = policy_check
        self._extra = dict(extra_tasks or {})
        self._active: dict[str, Approval] = {}
        self.loop_watch = LoopWatch()
        self.started = asyncio.Event()
        self.console: ConsoleServer | None = None
        settings = parts.settings.console
        if settings.enabled:
            console = build_console(
                parts.settings,
                parts.database,
                lambda: self.parts.loaded,
                parts.clock,
                live=LiveParts(parts),
                approvals_changed=self.refresh_approvals,
            )
            self.console = ConsoleServer(
                create_app(console, settings),
                host=settings.host,
                port=settings.port,
                trusted_proxies=settings.trusted_proxies,
            )
        self.dnd_reloads = 0

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
        if self.console is not None:
            self.console.bind()
        parts.writer.start()
        try:
            async with asyncio.TaskGroup() as group:
                workers = [
                    group.create_task(parts.ami.run(), name="ami"),
                    group.create_task(parts.guard.run_timers(), name="timers"),
                    group.create_task(self._approvals_loop(), name="approvals"),
                    group.create_task(self._controls_loop(), name="controls"),
                    group.create_task(self._policy_watch(), name="policy-watch"),
                    group.create_task(parts.register_watch.run(), name="register-watch"),
                    group.create_task(self._verify_tail(), name="verify-ledger"),
                    group.create_task(parts.quota_watch.run(), name="quota-watch"),
                    group.create_task(self._dnd_watch(), name="dnd-watch"),
                    group.create_task(self.loop_watch.run(), name="loop-watch"),
                ]
                workers.extend(
                    group.create_task(desk.run(), name=f"emergency-{desk.kind}")
                    for desk in parts.emergency_desks
                )
                if parts.link is not None:
                    workers.append(group.create_task(parts.link.run(), name="mqtt"))
                if parts.agi is not None:
                    workers.append(group.create_task(parts.agi.serve(), name="fastagi"))
                if self.console is not None:
                    workers.append(group.create_task(self.console.serve(), name="console"))
                if parts.open_cuts_unread:
                    workers.append(group.create_task(self._restore_open_cuts(), name="open-cuts"))
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
                if self.console is not None:
                    await self.console.close()
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
            if parts.dnd is not None:
                parts.dnd.close()
                parts.dnd = None
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

    async def _restore_open_cuts(self) -> None:
        """Hand the guard the hangups the ledger holds open, once it answers.

        At start-up the ledger was down, so only the journal's were restored. The ledger is read
        once the writer has caught up with the journal, so that the endings this run has
        learnt meanwhile are in it; a call of those hangups that is gone then ended unseen.
        """
        parts = self.parts
        while True:
            await asyncio.to_thread(parts.writer.wait_idle, OPEN_CUTS_RETRY)
            try:
                cuts = await asyncio.to_thread(stored_open_cuts, parts.offences, parts.clock)
            except LedgerError as error:
                log.debug("open hangups not read yet", error=str(error))
                await asyncio.sleep(OPEN_CUTS_RETRY)
                continue
            parts.guard.restore_intents(cuts)
            log.info("open hangups read from the ledger", count=len(cuts))
            return

    async def _approvals_loop(self) -> None:
        while True:
            await self.refresh_approvals()
            await asyncio.sleep(self._approvals_refresh)

    async def refresh_controls(self) -> None:
        """Bring in what the ledger knows and the guard does not.

        Locks an administrator lifted (``pbxguard lock lift``), the other sites' spend for
        budgets kept for every site, and this site's spend before the start if the ledger
        could not be read then.
        """
        parts = self.parts
        guard = parts.guard
        now = parts.clock.now()
        try:
            held = [lock.id for lock in guard.tracker.controls.locks.locks]
            lifted = await asyncio.to_thread(parts.locks.lifted, held)
            active = await asyncio.to_thread(parts.locks.active, now, site=guard.policy.site)
            guard.load_locks(active, lifted)
            for lock_id in lifted:
                log.info("lock lifted", lock=lock_id)
            if not parts.spend_ready:
                lines = await asyncio.to_thread(parts.spend.before_start)
                guard.load_spend(lines, foreign=False)
                parts.spend_ready = True
                log.info("month's spend loaded for budgets", lines=len(lines))
            if any(budget.all_sites for budget in guard.policy.budgets):
                foreign = await asyncio.to_thread(parts.spend.other_sites, now)
                guard.load_spend(foreign, foreign=True)
        except PbxGuardError as exc:
            log.warning("could not refresh locks and budgets from the ledger", error=str(exc))

    async def _controls_loop(self) -> None:
        while True:
            await asyncio.sleep(self._controls_refresh)
            await self.refresh_controls()

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

    async def _dnd_watch(self) -> None:
        """Map a newly imported do-not-disturb list as soon as it is put in force."""
        parts = self.parts
        store = parts.dnd_store
        while True:
            await asyncio.sleep(parts.settings.dnd.check_interval)
            stamp = store.stamp()
            if stamp == parts.dnd_stamp:
                continue
            parts.dnd_stamp = stamp
            try:
                numbers = await asyncio.to_thread(store.open_current)
            except PbxGuardError as exc:
                log.error("do-not-disturb list not reloaded; the old one stays", error=str(exc))
                continue
            old, parts.dnd = parts.dnd, numbers
            parts.guard.set_do_not_disturb(numbers)
            if old is not None:
                old.close()  # lookups are synchronous on this loop: none is using it now
            log.info(
                "do-not-disturb list reloaded",
                list=numbers.info.name if numbers else None,
                numbers=len(numbers) if numbers else 0,
            )
            self.dnd_reloads += 1

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
