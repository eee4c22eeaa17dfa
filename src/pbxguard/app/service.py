"""The composition root: build every part from settings and run them under one task group."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import structlog

from pbxguard.adapters.ami import AmiClient, AmiTiming
from pbxguard.adapters.clock import SystemClock
from pbxguard.adapters.fastagi import FastAgiServer
from pbxguard.adapters.ledger import FineLedger, SpoolingLedger
from pbxguard.adapters.mqtt import BrokerLink, BrokerSettings, EventKind
from pbxguard.adapters.policy_file import LoadedPolicy, load_policy
from pbxguard.adapters.settings import Settings
from pbxguard.app.guard import Guard
from pbxguard.app.notifier import Notifier, NullPublisher
from pbxguard.app.ports import Clock, EventPublisher
from pbxguard.app.predial import PreDialGate
from pbxguard.app.register_watch import RegisterWatch
from pbxguard.domain.approvals import Approval
from pbxguard.errors import PbxGuardError

log = structlog.get_logger(__name__)

APPROVALS_REFRESH_SECONDS = 30.0
POLICY_CHECK_SECONDS = 5.0


@dataclass(slots=True)
class Service:
    """Every long-lived part of a running pbxguard."""

    settings: Settings
    loaded: LoadedPolicy
    ledger: FineLedger
    spool: SpoolingLedger
    guard: Guard
    ami: AmiClient
    agi: FastAgiServer | None
    link: BrokerLink | None
    clock: Clock
    extra_tasks: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    policy_check_seconds: float = POLICY_CHECK_SECONDS
    _active_approvals: dict[str, Approval] = field(default_factory=dict)

    @classmethod
    async def build(
        cls,
        settings: Settings,
        loaded: LoadedPolicy,
        *,
        clock: Clock | None = None,
        raise_on_auth_failure: bool = False,
    ) -> Service:
        """Open the ledger (migrating it) and wire the guard to AMI, MQTT and the spool."""
        clock = clock or SystemClock()
        ledger = await FineLedger.open(settings.ledger.url)
        try:
            await ledger.migrate()
        except PbxGuardError:
            # A database that is down at start-up must not stop enforcement: writes spool
            # until it is back, and the migration is retried when the spool drains.
            log.warning("ledger unavailable at start-up; writes will be spooled")
        spool = SpoolingLedger(ledger, Path(settings.ledger.spool))
        link: BrokerLink | None = None
        publisher: EventPublisher = NullPublisher()
        if settings.mqtt.enabled:
            link = BrokerLink(
                BrokerSettings(
                    host=settings.mqtt.host,
                    port=settings.mqtt.port,
                    site=loaded.policy.site,
                    username=settings.mqtt.username or None,
                    password=settings.mqtt.password.get_secret_value() or None,
                    spool_path=Path(settings.mqtt.spool),
                )
            )
            publisher = _LinkPublisher(link)
        notifier = Notifier(publisher, site=loaded.policy.site)
        # The guard and the AMI client refer to each other: the client feeds the guard's
        # sink, the guard hangs up through the client.
        pbx = _LateBoundPbx()
        guard = Guard(loaded, pbx=pbx, ledger=spool, notifier=notifier, clock=clock)
        ami = AmiClient(
            settings.ami.host,
            settings.ami.port,
            settings.ami.username,
            settings.ami.secret,
            sink=guard.on_ami_message,
            on_login=lambda client: guard.resync(client.send_list_action),
            timing=AmiTiming(
                ping_interval=settings.ami.ping_interval,
                ping_timeout=settings.ami.ping_timeout,
                action_timeout=settings.ami.action_timeout,
            ),
            raise_on_auth_failure=raise_on_auth_failure,
        )
        pbx.client = ami
        agi: FastAgiServer | None = None
        if settings.agi.enabled:
            gate = PreDialGate(guard, ledger, clock)
            agi = FastAgiServer(
                gate.routes,
                host=settings.agi.host,
                port=settings.agi.port,
                request_timeout=settings.agi.deadline,
                max_connections=settings.agi.max_connections,
            )
        return cls(settings, loaded, ledger, spool, guard, ami, agi, link, clock)

    async def refresh_approvals(self) -> None:
        """Reload the active approvals into the guard; record the ones whose window ended."""
        now = self.clock.now()
        try:
            approvals = await self.ledger.active_approvals(now)
            active = {a.id: a for a in approvals}
            for gone in self._active_approvals.keys() - active.keys():
                approval = self._active_approvals[gone]
                # Gone because its window ended (not revoked, not used up): an expiry event.
                if now >= approval.valid_until:
                    await self.ledger.expire_approval(
                        gone, at=approval.valid_until, by="pbxguard", reason="validity ended"
                    )
                    log.info("approval expired", approval=gone, person=approval.person_id)
        except PbxGuardError as exc:
            log.warning("could not refresh approvals", error=str(exc))
            return
        self._active_approvals = active
        self.guard.set_approvals(approvals)

    def _policy_stamp(self) -> tuple[float, ...]:
        files = [Path(name) for name in self.loaded.sources if not name.startswith("<")]
        if self.loaded.rota_file is not None:
            files.append(self.loaded.rota_file)
        return tuple(f.stat().st_mtime if f.exists() else 0.0 for f in files)

    async def _policy_watch(self) -> None:
        """Reload the policy (and the rota) when one of its files changes."""
        stamp = self._policy_stamp()
        while True:
            await asyncio.sleep(self.policy_check_seconds)
            current = self._policy_stamp()
            if current == stamp:
                continue
            stamp = current
            try:
                loaded = load_policy(self.settings.policy)
            except PbxGuardError as exc:
                log.error("policy not reloaded: the new version is invalid", error=str(exc))
                continue
            self.loaded = loaded
            self.guard.set_policy(loaded)
            log.info("policy reloaded", version=loaded.policy.version)

    async def _approvals_loop(self) -> None:
        while True:
            await self.refresh_approvals()
            await asyncio.sleep(APPROVALS_REFRESH_SECONDS)

    def _register_watch(self) -> RegisterWatch:
        # LD-7 offences go through the guard's spooling writer, under the policy in force.
        return RegisterWatch(self.ledger, self.spool, lambda: self.guard.loaded.policy, self.clock)

    async def run(self, stop: asyncio.Event) -> None:
        """Run every part until ``stop`` is set, then shut down cleanly."""
        log.info(
            "pbxguard starting",
            site=self.loaded.policy.site,
            mode=self.loaded.policy.mode.value,
            policy=self.loaded.policy.version,
            ami=f"{self.settings.ami.host}:{self.settings.ami.port}",
        )
        try:
            async with asyncio.TaskGroup() as group:
                workers = [
                    group.create_task(self.ami.run(), name="ami"),
                    group.create_task(self.spool.run(), name="ledger-spool"),
                    group.create_task(self.guard.run(), name="ledger-writer"),
                    group.create_task(self.guard.run_timers(), name="timers"),
                    group.create_task(self._approvals_loop(), name="approvals"),
                    group.create_task(self._policy_watch(), name="policy-watch"),
                    group.create_task(self._register_watch().run(), name="register-watch"),
                ]
                if self.link is not None:
                    workers.append(group.create_task(self.link.run(), name="mqtt"))
                if self.agi is not None:
                    await self.agi.start()
                    workers.append(group.create_task(self.agi.serve(), name="fastagi"))
                workers.extend(
                    group.create_task(make(), name=getattr(make, "__name__", "task"))
                    for make in self.extra_tasks
                )
                await stop.wait()
                log.info("pbxguard stopping")
                if self.agi is not None:
                    await self.agi.close()
                await self.ami.close()
                self.guard.flush()
                await self.guard.drained()
                if self.link is not None:
                    await self.link.close()
                for task in workers:
                    task.cancel()
        finally:
            await self.ledger.close()
        log.info("pbxguard stopped")


class _LateBoundPbx:
    """Hangs up through the AMI client once it exists."""

    client: AmiClient | None = None

    async def hangup(self, channel: str, cause: int = 21) -> None:
        if self.client is None:
            raise PbxGuardError("AMI client not ready")
        await self.client.hangup(channel, cause)


class _LinkPublisher:
    """Adapts the broker link to the guard's publisher port."""

    def __init__(self, link: BrokerLink) -> None:
        self._link = link

    def publish(self, kind: str, payload: Mapping[str, Any]) -> None:
        if kind not in ("decisions", "offences", "alerts"):
            log.error("unknown event kind", kind=kind)
            return
        line = payload.get("line") if kind == "alerts" else None
        self._link.publish(cast("EventKind", kind), payload, line=line)
