"""The guard: events in, the core's effects carried out, facts written ahead.

The AMI client hands every event to `Guard.on_ami_message` synchronously, on the event loop;
the pre-dial gate hands over the verdicts it gives (`Guard.verdict_given`). Both paths do only
in-memory work: translate, fold into the call tracker and the standby watch, and carry out what
they return:

1. every ledger fact of the effect list is appended to the write-ahead journal in one write
   (no SQL, no fsync on this path; the ledger writer takes it from there);
2. then hangups are sent (each as a task: the reply is awaited off the ingest path) and their
   failures go back into the tracker as events, so a hangup that failed is sent again;
3. alerts and decisions are published (in memory; the MQTT link sends them when it can).

If the journal cannot be written (a full disk), enforcement goes on: the facts wait in memory
and are appended again before the next ones, and the failure is logged as an error each time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from pbxguard.app.ami_events import (
    ENDPOINT_EVENTS,
    channel_seen,
    endpoint_event,
    endpoint_snapshot,
    event_time,
    translate,
)
from pbxguard.app.checks import check_call
from pbxguard.app.ports import CallerWarning, Clock, EmergencyDesk, FactSink, Notifier, PbxControl
from pbxguard.domain.approvals import Approval
from pbxguard.domain.budgets import SpendLine
from pbxguard.domain.call_events import (
    ApprovalsChanged,
    ConnectionLost,
    DoNotDisturbChanged,
    HangupAccepted,
    HangupFailed,
    IntentsRestored,
    LocksLoaded,
    OpenCut,
    PolicyChanged,
    ResyncDone,
    ResyncStarted,
    SpendLoaded,
    Tick,
    TrackerEvent,
    VerdictGiven,
)
from pbxguard.domain.calls import CallTracker
from pbxguard.domain.channels import ChannelPlan
from pbxguard.domain.codes import CodeGuard
from pbxguard.domain.dnd import DoNotDisturb
from pbxguard.domain.effects import (
    AlertKind,
    ClearAlert,
    CountApprovalUse,
    Effect,
    HangupChannel,
    NotifyEmergency,
    RaiseAlert,
    RecordCall,
    RecordCodeFailure,
    RecordDecision,
    RecordLock,
    RecordOffence,
    RecordOffenceOutcome,
    WarnCaller,
)
from pbxguard.domain.endpoints import EndpointBook
from pbxguard.domain.evaluate import CallAttempt, Decision
from pbxguard.domain.policy import CodeLimits, LineUse, Policy
from pbxguard.domain.records import CallRef, CodeFailure, LedgerFact, Lock, OffenceFact
from pbxguard.domain.rota import Rota
from pbxguard.domain.standby import StandbyWatch, WatchedLine
from pbxguard.errors import AmiActionError, AmiConnectionError, JournalError, PbxGuardError

log = structlog.get_logger(__name__)

ListAction = Callable[[str], Awaitable[list[Any]]]
Action = Callable[[str], Awaitable[Any]]

#: The longest the timer task sleeps without looking again (the PBX clock may drift).
MAX_TIMER_SLEEP = 30.0
#: Facts kept in memory while the journal cannot be written, before the oldest are dropped.
BACKLOG_LIMIT = 100_000
#: How soon a journal that failed is tried again (facts keep their order meanwhile).
JOURNAL_RETRY = timedelta(seconds=1)


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
    hangups_accepted: int = 0
    hangups_failed: int = 0
    offences: int = 0
    calls: int = 0
    resyncs: int = 0
    alerts: int = 0
    journal_failures: int = 0
    #: Verdicts by (number class, verdict), both layers (the console's /metrics).
    decisions_by: Counter[tuple[str, str]] = field(default_factory=Counter)
    emergency_calls: int = 0
    warnings: int = 0


class Guard:
    """Feed events to the core and carry out its effects through the ports."""

    def __init__(
        self,
        policy: Policy,
        channels: ChannelPlan,
        *,
        pbx: PbxControl,
        facts: FactSink,
        notifier: Notifier,
        clock: Clock,
        code_limits: CodeLimits | None = None,
        code_failures: Iterable[CodeFailure] = (),
        open_cuts: Iterable[OpenCut] = (),
        approvals: Iterable[Approval] = (),
        emergency: Sequence[EmergencyDesk] = (),
        dnd: DoNotDisturb | None = None,
        warner: CallerWarning | None = None,
        spend: Iterable[SpendLine] = (),
        locks: Iterable[Lock] = (),
    ) -> None:
        self._pbx = pbx
        self._warner = warner
        self._facts = facts
        self._notifier = notifier
        self._clock = clock
        self._emergency = tuple(emergency)
        self.tracker = CallTracker(policy, channels, approvals=approvals, dnd=dnd)
        cuts = tuple(open_cuts)
        if cuts:
            self.tracker.handle(IntentsRestored(clock.now(), cuts))
        self.codes = CodeGuard(
            code_limits or CodeLimits(), site=policy.site, failures=code_failures
        )
        self.endpoints = EndpointBook()
        self.watch = standby_watch(policy)
        self._skew = timedelta(0)
        self._timer_wake = asyncio.Event()
        self._last_due: datetime | None = None
        self._backlog: deque[LedgerFact] = deque()
        self._backlog_retry: datetime | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._alerts: dict[str, RaiseAlert] = {}
        self.stats = GuardStats()
        # The month's spend and the locks in force, as the ledger (and the journal) has them:
        # the controls start where the previous run stopped (alerts only queue here).
        self.handle(SpendLoaded(clock.now(), tuple(spend)))
        self.handle(LocksLoaded(clock.now(), tuple(locks)))

    @property
    def policy(self) -> Policy:
        """The policy in force: the tracker's, which judges the calls."""
        return self.tracker.policy

    # -- inputs -------------------------------------------------------------------------------

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
        self.handle(event)
        due = self.tracker.next_due()
        if due is not None and due <= event.at:
            self.handle(Tick(event.at))
            due = self.tracker.next_due()
        self._rearm(due)

    def on_connection_lost(self) -> None:
        """The AMI session ended: hangups in flight are lost; resend after the next resync."""
        self.handle(ConnectionLost(self.pbx_now()))

    def _endpoint_message(self, message: Any) -> None:
        event = endpoint_event(message, self._clock.now)
        if event is None:
            return
        self._skew = event.at - self._clock.now()
        self.endpoints, changes = self.endpoints.apply(event)
        for change in changes:
            self.carry_out(self.watch.on_change(change))
        if changes:
            self._timer_wake.set()

    def handle(self, event: TrackerEvent) -> None:
        """Give the tracker one event and carry out its effects."""
        self.carry_out(self.tracker.handle(event))

    def pbx_now(self) -> datetime:
        """Return the PBX's time: the clock, corrected by the last event's Timestamp."""
        return self._clock.now() + self._skew

    async def resync(self, list_action: ListAction, action: Action | None = None) -> None:
        """Catch up with the PBX after a (re)login: every live call, every phone's state.

        The snapshot is dated by the PBX's clock, as its events are: ``action`` sends a
        ``Ping`` first, whose reply carries the PBX's time. A call answered out of sight is
        then never given more talk time than Asterisk reports, and an offence found here is
        never dated before the ones the events already gave, whatever the host's clock says.
        """
        # First, so that a hangup sent on this connection from now on is not sent twice.
        self.handle(ResyncStarted(self.pbx_now()))
        if action is not None:
            reply = await action("Ping")
            if reply.get("Timestamp"):
                self._skew = event_time(reply, self._clock.now) - self._clock.now()
        items = await list_action("CoreShowChannels")
        now = self.pbx_now()
        for item in items:
            seen = channel_seen(item, now)
            if seen is not None:
                self.handle(seen)
        self.handle(ResyncDone(now))
        devices = await list_action("DeviceStateList")
        try:
            contacts: list[Any] | None = await list_action("PJSIPShowContacts")
        except AmiActionError:
            contacts = []  # Asterisk answers an empty contact list with an error
        self.endpoints, changes = self.endpoints.resync(endpoint_snapshot(devices, contacts, now))
        for change in changes:
            self.carry_out(self.watch.on_change(change))
        self.carry_out(self.watch.on_resync(now))
        self._timer_wake.set()
        self.stats.resyncs += 1
        log.info(
            "resync done",
            live_channels=len(items),
            live_calls=self.tracker.live_calls,
            open_cuts=len(self.tracker.open_cuts),
        )

    # -- the pre-dial layer ---------------------------------------------------------------------

    def decide(self, attempt: CallAttempt, *, now: datetime) -> Decision:
        """Decide an attempt before it rings, with the approvals (and their uses) held here.

        The tracker's controls take part: a velocity lock or a used-up budget refuses a call
        the policy would let through.
        """
        return check_call(
            attempt,
            policy=self.policy,
            approvals=self.tracker.approvals,
            now=now,
            dnd=self.tracker.dnd,
            controls=self.tracker.controls,
        )

    def verdict_given(self, call: CallRef, decision: Decision, *, at: datetime) -> None:
        """Record a pre-dial verdict (written ahead) so the AMI layer does not judge it again."""
        self.handle(VerdictGiven(at, call, decision))
        self._rearm(self.tracker.next_due())

    def load_spend(self, lines: Iterable[SpendLine], *, foreign: bool) -> None:
        """Replace the spend of this site (or of the other sites) by the ledger's totals."""
        self.handle(SpendLoaded(self._clock.now(), tuple(lines), foreign=foreign))
        self._rearm(self.tracker.next_due())

    def load_locks(self, active: Iterable[Lock], lifted: Iterable[str]) -> None:
        """Take in the locks the ledger has in force and those lifted by an administrator."""
        self.handle(LocksLoaded(self._clock.now(), tuple(active), frozenset(lifted)))
        self._rearm(self.tracker.next_due())

    def _rearm(self, due: datetime | None) -> None:
        """Wake the timer task when the tracker's next deadline (``due``) has moved."""
        if due != self._last_due:
            self._last_due = due
            self._timer_wake.set()

    def code_failed(self, failure: CodeFailure) -> None:
        """Count a wrong authorization code (and lock the PIN route when there are too many)."""
        self.carry_out(self.codes.failed(failure))

    def ledger_trouble(self, what: str, message: str) -> None:
        """Raise an alert about the ledger (a broken hash chain, a fact set aside)."""
        now = self._clock.now()
        self.carry_out(
            [
                RaiseAlert(
                    key=f"{self.policy.site}:ledger:{what}:{now.isoformat()}",
                    kind=AlertKind.LEDGER,
                    rule_id="",
                    extension="",
                    duty_line="",
                    name="ledger",
                    since=now,
                    at=now,
                    repeat=0,
                    person_id="",
                    person_name="",
                    message_zh=f"罚款台账异常：{message}",
                    message_en=f"fine ledger problem: {message}",
                )
            ]
        )

    def restore_intents(self, cuts: Iterable[OpenCut]) -> None:
        """Take back hangups an earlier run ordered, read from the ledger after start-up."""
        self.handle(IntentsRestored(self.pbx_now(), tuple(cuts)))

    def set_approvals(self, approvals: Iterable[Approval]) -> None:
        """Replace the approvals on record (uses counted here and not yet stored are kept)."""
        self.handle(ApprovalsChanged(self._clock.now(), tuple(approvals)))

    def set_do_not_disturb(self, numbers: DoNotDisturb | None) -> None:
        """Judge promotion lines' calls against a new do-not-disturb list (DND-1) from now on."""
        self.handle(DoNotDisturbChanged(self._clock.now(), numbers))

    def set_policy(self, policy: Policy, channels: ChannelPlan) -> None:
        """Switch to a newly loaded policy; calls in progress keep their decisions."""
        self.handle(PolicyChanged(self._clock.now(), policy, channels))
        self.watch.set_rota(policy.rota or Rota(policy.timezone))

    # -- timers -------------------------------------------------------------------------------

    async def run_timers(self) -> None:
        """Tick the tracker and the standby watch when they are due, for ever."""
        while True:
            now = self.pbx_now()
            self.carry_out(self.watch.tick(now))
            self.handle(Tick(now))
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

    def open_alerts(self) -> list[RaiseAlert]:
        """Return the latest raise of every alert not cleared yet, oldest condition first."""
        return sorted(self._alerts.values(), key=lambda a: (a.since, a.key))

    def flush(self) -> None:
        """Record the outages still under way (before shutting down)."""
        self.carry_out(self.watch.flush(self.pbx_now()))

    # -- effects ------------------------------------------------------------------------------

    def carry_out(self, effects: Sequence[Effect]) -> None:
        """Write the facts ahead, then act: hangups, alerts, publications."""
        facts = [f for f in (self._fact(e) for e in effects) if f is not None]
        if facts or self._backlog:
            self._write_ahead(facts)
        for effect in effects:
            if isinstance(effect, HangupChannel):
                self._start(self._hangup(effect))
            elif isinstance(effect, RaiseAlert):
                self.stats.alerts += 1
                self._alerts[effect.key] = effect
                log.warning(
                    "alert",
                    kind=effect.kind.value,
                    line=effect.extension or effect.duty_line,
                    rule=effect.rule_id,
                    repeat=effect.repeat,
                    message=effect.message_en,
                )
                self._notifier.alert_raised(effect)
            elif isinstance(effect, ClearAlert):
                self._alerts.pop(effect.key, None)
                log.info("alert cleared", line=effect.extension or effect.duty_line)
                self._notifier.alert_cleared(effect)
            elif isinstance(effect, RecordDecision):
                self.stats.decisions += 1
                record = effect.record
                self.stats.decisions_by[(record.number_class, record.verdict)] += 1
                self._notifier.decision_made(effect.record)
            elif isinstance(effect, RecordOffence):
                self.stats.offences += 1
            elif isinstance(effect, RecordOffenceOutcome):
                outcome = effect.outcome
                log.info(
                    "forbidden call ended",
                    offence=outcome.key,
                    ending=outcome.ending.value,
                    talk_seconds=round(outcome.talk_time.total_seconds(), 3),
                    cause=outcome.cause,
                )
            elif isinstance(effect, RecordCall):
                self.stats.calls += 1
            elif isinstance(effect, NotifyEmergency):
                self._notify_emergency(effect)
            elif isinstance(effect, RecordLock):
                log.warning(
                    "dialling locked",
                    lock=effect.lock.id,
                    extension=effect.lock.extension or "site",
                    rule=effect.lock.rule_id,
                    until=effect.lock.until.isoformat(),
                )
            elif isinstance(effect, WarnCaller):
                self._warn(effect)

    def _notify_emergency(self, effect: NotifyEmergency) -> None:
        """Hand an emergency call to every security-desk channel; none may stop the others."""
        notice = effect.notice
        self.stats.emergency_calls += 1
        log.warning(
            "emergency call",
            extension=notice.extension,
            number=notice.number,
            person=notice.person_id,
            location=notice.location,
            linkedid=notice.call.linkedid,
            layer=notice.layer.value,
        )
        for desk in self._emergency:
            try:
                desk.emergency_call(notice)
            except Exception:
                # A faulty channel costs its own notice, never the call or the other channels.
                log.exception("emergency notice not handed over", desk=type(desk).__name__)

    def _fact(self, effect: Effect) -> LedgerFact | None:
        match effect:
            case RecordDecision():
                return effect.record
            case RecordOffence():
                rule = self.policy.rules.get(effect.draft.rule_id)
                if rule is None:
                    log.error("offence for a rule the policy lacks", rule=effect.draft.rule_id)
                    return None
                return OffenceFact(effect.draft, rule, self.policy.timezone)
            case RecordOffenceOutcome():
                return effect.outcome
            case RecordCall():
                return effect.summary
            case CountApprovalUse():
                return effect.use
            case RecordCodeFailure():
                return effect.failure
            case RecordLock():
                return effect.lock
        return None

    def _write_ahead(self, facts: Sequence[LedgerFact]) -> None:
        backlog = self._backlog
        if backlog:
            # The journal failed before: these facts queue behind the ones still waiting.
            backlog.extend(facts)
            retry = self._backlog_retry
            if retry is not None and self._clock.now() < retry:
                return  # the journal failed a moment ago: keep order, try again shortly
            facts = list(backlog)
        try:
            self._facts.append(facts)
        except JournalError as error:
            if not backlog:
                backlog.extend(facts)
            self.stats.journal_failures += 1
            self._backlog_retry = self._clock.now() + JOURNAL_RETRY
            while len(backlog) > BACKLOG_LIMIT:
                dropped = backlog.popleft()
                log.critical("journal full: a ledger fact was dropped", fact=type(dropped).__name__)
            log.error(
                "journal write failed; facts kept in memory",
                error=str(error),
                waiting=len(backlog),
            )
            return
        if backlog:
            backlog.clear()
            self._backlog_retry = None

    def _start(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _hangup(self, effect: HangupChannel) -> None:
        self.stats.hangups_sent += 1
        try:
            await self._pbx.hangup(effect.channel, effect.cause)
        except AmiConnectionError as exc:
            self._hangup_failed(effect, str(exc), connection_lost=True)
            return
        except PbxGuardError as exc:
            self._hangup_failed(effect, str(exc), connection_lost=False)
            return
        self.stats.hangups_accepted += 1
        log.info(
            "hangup accepted",
            channel=effect.channel,
            rule=effect.rule_id,
            linkedid=effect.linkedid,
            attempt=effect.attempt,
        )
        self._notifier.call_hung_up(effect.channel, effect.linkedid, effect.rule_id)
        self.handle(HangupAccepted(self.pbx_now(), effect.channel))

    def _warn(self, effect: WarnCaller) -> None:
        if self._warner is None:
            log.info(
                "call about to be cut; no warning configured",
                channel=effect.channel,
                rule=effect.rule_id,
                seconds_left=effect.seconds_left,
            )
            return
        self._start(self._send_warning(self._warner, effect))

    async def _send_warning(self, warner: CallerWarning, effect: WarnCaller) -> None:
        try:
            await warner.warn(effect.channel)
        except PbxGuardError as exc:
            # A warning is a courtesy: the cut goes ahead whether or not it was heard.
            log.warning("warning not played", channel=effect.channel, error=str(exc))
            return
        self.stats.warnings += 1
        log.info(
            "caller warned",
            channel=effect.channel,
            rule=effect.rule_id,
            seconds_left=effect.seconds_left,
        )

    def _hangup_failed(self, effect: HangupChannel, error: str, *, connection_lost: bool) -> None:
        self.stats.hangups_failed += 1
        log.warning(
            "hangup failed; will send it again",
            channel=effect.channel,
            rule=effect.rule_id,
            attempt=effect.attempt,
            error=error,
            connection_lost=connection_lost,
        )
        self.handle(
            HangupFailed(self.pbx_now(), effect.channel, error, connection_lost=connection_lost)
        )
        self._timer_wake.set()

    async def settled(self) -> None:
        """Wait until every hangup under way has had its reply."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
