"""The guard: AMI events in, the core's effects carried out.

The AMI client hands every event to `Guard.on_ami_message` synchronously, on the event loop.
That path does only in-memory work: translate, fold into the call tracker, and start whatever
the effects ask for. A hangup is sent at once (it races the far end answering); ledger writes go
through an ordered queue drained by `Guard.run`, so a slow or absent database never delays
enforcement, and the spooling ledger behind it never loses an entry.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import structlog

from pbxguard.adapters.policy_file import LoadedPolicy
from pbxguard.app.ami_events import (
    ENDPOINT_EVENTS,
    channel_seen,
    endpoint_event,
    endpoint_snapshot,
    translate,
)
from pbxguard.app.notifier import Notifier
from pbxguard.app.ports import Clock, LedgerWriter, PbxControl
from pbxguard.domain.approvals import Approval
from pbxguard.domain.calls import (
    CallTracker,
    Effect,
    HangupChannel,
    RecordCall,
    RecordDecision,
    RecordOffence,
    ResyncDone,
    ResyncStarted,
)
from pbxguard.domain.endpoints import EndpointBook
from pbxguard.domain.evaluate import CallAttempt, Decision, evaluate
from pbxguard.domain.policy import LineUse, Policy
from pbxguard.domain.records import OffenceDraft, Outcome
from pbxguard.domain.rota import Rota
from pbxguard.domain.standby import ClearAlert, RaiseAlert, StandbyEffect, StandbyWatch, WatchedLine
from pbxguard.errors import AmiActionError, PbxGuardError

log = structlog.get_logger(__name__)

ListAction = Callable[[str], Awaitable[list[Any]]]

#: The longest the timer task sleeps without looking again (the PBX clock may drift).
MAX_TIMER_SLEEP = 30.0


def watched_lines(policy: Policy) -> list[WatchedLine]:
    """Return the phones the standby watch protects: lines with a standby schedule."""
    return [
        WatchedLine(
            extension=line.extension,
            name=line.name,
            rule_id=line.standby_rule,
            schedule=policy.schedules[line.standby],
            duty_line=line.duty_line,
            alert_any_hour=line.use is LineUse.EMERGENCY_ONLY,
            coverage=line.coverage,
        )
        for line in policy.lines.values()
        if line.standby
    ]


def standby_watch(policy: Policy) -> StandbyWatch:
    """Build the standby watch for a policy."""
    return StandbyWatch(
        watched_lines(policy),
        policy.rota or Rota(policy.timezone),
        policy.people,
        site=policy.site,
        policy_version=policy.version,
    )


@dataclass(slots=True)
class GuardStats:
    """What the guard has done since it started."""

    events: int = 0
    decisions: int = 0
    hangups_sent: int = 0
    hangups_failed: int = 0
    offences: int = 0
    calls: int = 0
    resyncs: int = 0
    alerts: int = 0


class Guard:
    """Feed AMI events to the core and carry out its effects through the ports."""

    def __init__(
        self,
        loaded: LoadedPolicy,
        *,
        pbx: PbxControl,
        ledger: LedgerWriter,
        notifier: Notifier,
        clock: Clock,
        prejudged_capacity: int = 10_000,
    ) -> None:
        self.loaded = loaded
        self._pbx = pbx
        self._ledger = ledger
        self._notifier = notifier
        self._clock = clock
        self._approvals: tuple[Approval, ...] = ()
        self._prejudged: OrderedDict[str, Decision] = OrderedDict()
        self._prejudged_capacity = prejudged_capacity
        self.tracker = CallTracker(
            loaded.policy, loaded.channels, self._judge, on_duty=self._on_duty
        )
        self.endpoints = EndpointBook()
        self.watch = standby_watch(loaded.policy)
        self._skew = timedelta(0)
        self._timer_wake = asyncio.Event()
        self._last_due: datetime | None = None
        self._writes: asyncio.Queue[Effect] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.stats = GuardStats()

    # -- inputs ---------------------------------------------------------------------------

    def on_ami_message(self, message: Any) -> None:
        """Handle one AMI event (the AMI client's sink)."""
        self.stats.events += 1
        name = message.get("Event")
        if name in ENDPOINT_EVENTS:
            self._endpoint_message(message)
            return
        event = translate(message, self._clock.now, name=name)
        if event is None:
            return
        self._skew = event.at - self._clock.now()
        self._apply(self.tracker.handle(event))
        due = self.tracker.next_due()
        if due is not None and due <= event.at:
            self._apply(self.tracker.due(event.at))
            due = self.tracker.next_due()
        if due != self._last_due:
            self._last_due = due
            self._timer_wake.set()

    def _endpoint_message(self, message: Any) -> None:
        event = endpoint_event(message, self._clock.now)
        if event is None:
            return
        self._skew = event.at - self._clock.now()
        self.endpoints, changes = self.endpoints.apply(event)
        for change in changes:
            self._apply(self.watch.on_change(change))
        if changes:
            self._timer_wake.set()

    def pbx_now(self) -> datetime:
        """Return the PBX's time: the clock, corrected by the last event's Timestamp."""
        return self._clock.now() + self._skew

    def _on_duty(self, line: str, at: datetime) -> str | None:
        rota = self.loaded.policy.rota
        return rota.on_duty(line, at) if rota is not None else None

    async def resync(self, list_action: ListAction) -> None:
        """Catch up with the PBX after a (re)login: judge live calls not seen yet."""
        self._apply(self.tracker.handle(ResyncStarted(self._clock.now())))
        items = await list_action("CoreShowChannels")
        now = self._clock.now()
        for item in items:
            seen = channel_seen(item, now)
            if seen is not None:
                self._apply(self.tracker.handle(seen))
        self._apply(self.tracker.handle(ResyncDone(now)))
        devices = await list_action("DeviceStateList")
        try:
            contacts: list[Any] | None = await list_action("PJSIPShowContacts")
        except AmiActionError:
            contacts = []  # Asterisk answers an empty contact list with an error
        self.endpoints, changes = self.endpoints.resync(endpoint_snapshot(devices, contacts, now))
        for change in changes:
            self._apply(self.watch.on_change(change))
        self._apply(self.watch.on_resync(now))
        self._timer_wake.set()
        self.stats.resyncs += 1
        log.info("resync done", live_channels=len(items), live_calls=self.tracker.live_calls)

    def remember_verdict(self, uniqueid: str, decision: Decision) -> None:
        """Remember a FastAGI verdict so the AMI layer does not judge the call again."""
        self._prejudged[uniqueid] = decision
        self._prejudged.move_to_end(uniqueid)
        while len(self._prejudged) > self._prejudged_capacity:
            self._prejudged.popitem(last=False)

    def set_approvals(self, approvals: Iterable[Approval]) -> None:
        """Replace the approvals the guard consults."""
        self._approvals = tuple(approvals)

    def update_approval(self, approval: Approval) -> None:
        """Replace one approval (after a use was counted) so it is not over-used."""
        others = tuple(a for a in self._approvals if a.id != approval.id)
        self._approvals = (*others, approval)

    def submit(self, effects: Sequence[Effect]) -> None:
        """Carry out effects produced outside the tracker (the pre-dial gate's records)."""
        self._apply(effects)

    async def run_timers(self) -> None:
        """Tick the standby watch and the tracker's timers when they are due, for ever."""
        while True:
            now = self.pbx_now()
            self._apply(self.watch.tick(now))
            self._apply(self.tracker.due(now))
            deadlines = [
                d for d in (self.watch.next_wakeup(now), self.tracker.next_due()) if d is not None
            ]
            delay = (
                min((d - now).total_seconds() for d in deadlines) if deadlines else MAX_TIMER_SLEEP
            )
            self._timer_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._timer_wake.wait(), max(0.01, min(delay, MAX_TIMER_SLEEP))
                )

    def flush(self) -> None:
        """Record the outages still under way (before shutting down)."""
        self._apply(self.watch.flush(self.pbx_now()))

    def set_policy(self, loaded: LoadedPolicy) -> None:
        """Switch to a newly loaded policy; calls in progress keep their decisions."""
        self.loaded = loaded
        self.tracker.policy = loaded.policy
        self.tracker.channels = loaded.channels
        self.watch.set_rota(loaded.policy.rota or Rota(loaded.policy.timezone))

    def judge(self, attempt: CallAttempt, *, now: datetime, allow_pin: bool = False) -> Decision:
        """Decide an attempt under the current policy and approvals."""
        return evaluate(
            attempt, self.loaded.policy, now=now, approvals=self._approvals, allow_pin=allow_pin
        )

    def _judge(self, attempt: CallAttempt, uniqueid: str, at: datetime) -> Decision:
        prior = self._prejudged.get(uniqueid)
        if prior is not None:
            return prior
        return self.judge(attempt, now=at)

    # -- effects --------------------------------------------------------------------------

    def _apply(self, effects: Sequence[Effect | StandbyEffect]) -> None:
        # An offence whose outcome is "hung up" is written once the hangup has been answered,
        # so that a hangup the PBX refused is recorded as not stopped.
        cut = {e.linkedid for e in effects if isinstance(e, HangupChannel)}
        for effect in effects:
            if isinstance(effect, HangupChannel):
                held = [
                    e.draft
                    for e in effects
                    if isinstance(e, RecordOffence)
                    and e.draft.outcome is Outcome.HUNG_UP
                    and e.draft.call is not None
                    and e.draft.call.linkedid == effect.linkedid
                ]
                self._start(self._hangup(effect, held))
                continue
            if (
                isinstance(effect, RecordOffence)
                and effect.draft.outcome is Outcome.HUNG_UP
                and effect.draft.call is not None
                and effect.draft.call.linkedid in cut
            ):
                continue
            if isinstance(effect, RaiseAlert):
                self.stats.alerts += 1
                log.warning(
                    "alert",
                    kind=effect.kind.value,
                    line=effect.extension or effect.duty_line,
                    rule=effect.rule_id,
                    repeat=effect.repeat,
                    message=effect.message_en,
                )
                self._notifier.alert_raised(effect)
                continue
            if isinstance(effect, ClearAlert):
                log.info("alert cleared", line=effect.extension or effect.duty_line)
                self._notifier.alert_cleared(effect)
                continue
            if isinstance(effect, RecordDecision):
                self.stats.decisions += 1
                self._notifier.decision_made(effect.record)
            elif isinstance(effect, RecordOffence):
                self.stats.offences += 1
            elif isinstance(effect, RecordCall):
                self.stats.calls += 1
            self._idle.clear()
            self._writes.put_nowait(effect)

    def _start(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _hangup(self, effect: HangupChannel, held: Sequence[OffenceDraft] = ()) -> None:
        try:
            await self._pbx.hangup(effect.channel, effect.cause)
        except PbxGuardError as exc:
            self.stats.hangups_failed += 1
            log.warning(
                "hangup failed", channel=effect.channel, rule=effect.rule_id, error=str(exc)
            )
            self._apply([RecordOffence(replace(d, outcome=Outcome.NOT_STOPPED)) for d in held])
            return
        self.stats.hangups_sent += 1
        log.info(
            "call hung up", channel=effect.channel, rule=effect.rule_id, linkedid=effect.linkedid
        )
        self._notifier.call_hung_up(effect.channel, effect.linkedid, effect.rule_id)
        self._apply([RecordOffence(d) for d in held])

    async def run(self) -> None:
        """Drain ledger writes in order, for ever (a task of the supervisor)."""
        while True:
            effect = await self._writes.get()
            try:
                await self._write(effect)
            except PbxGuardError as exc:
                log.exception("ledger write failed", effect=type(effect).__name__, error=str(exc))
            finally:
                self._writes.task_done()
                if self._writes.empty():
                    self._idle.set()

    async def _write(self, effect: Effect) -> None:
        policy = self.loaded.policy
        if isinstance(effect, RecordDecision):
            await self._ledger.record_decision(effect.record)
        elif isinstance(effect, RecordOffence):
            rule = policy.rules.get(effect.draft.rule_id)
            if rule is None:
                log.error("offence for unknown rule", rule=effect.draft.rule_id)
                return
            entry = await self._ledger.record_offence(effect.draft, rule, timezone=policy.timezone)
            self._notifier.offence_recorded(effect.draft, rule, entry)
        elif isinstance(effect, RecordCall):
            await self._ledger.record_call(effect.summary)

    async def drained(self) -> None:
        """Wait until every queued ledger write and hangup has been carried out."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self._idle.wait()
