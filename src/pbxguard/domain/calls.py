"""The call tracker: a state machine with events in and effects out.

Theory of operation
-------------------
Asterisk reports a call as several channels (the caller's phone, a Local pair, the trunk leg)
sharing one ``Linkedid``; their events may interleave with other calls' and arrive out of order.
`CallTracker` folds them into one `_Call` per Linkedid that knows who is calling, what was
dialled, which trunk legs (*attempts*) it opened, and how each of them stands (ringing,
answered, ended).

Like h11's connection object, the tracker owns state, does no I/O, reads no clock and never
calls out: everything comes in as an event (AMI events translated by the shell, verdicts given
over FastAGI, approvals and policy changes, hangups that failed, the resync snapshot, the
passing of time) and everything goes out as effects (`pbxguard.domain.effects`). The same
events always give the same effects.

The three promises, and how they are kept:

* **Every offence is recorded, exactly once, with the right person.** When a trunk leg opens
  (``DialBegin`` to a channel the site's `ChannelPlan` calls a trunk, or a trunk leg first seen
  in a resync) the call is judged with `evaluate` (or the verdict FastAGI gave the dialling
  channel) and its offence is emitted *before* the hangup in the same effect list, so the shell
  writes it ahead. Its key is ``site:Linkedid:rule:number``, the same for both layers and after
  a restart, and the caller is the call's originating channel (the one whose Uniqueid is the
  Linkedid), never a Local half.
* **A forbidden call that was seen is stopped.** An ordered hangup stays open until Asterisk
  reports the trunk leg gone. It is sent again after a failure (with backoff), after every
  resync (the old connection's actions are lost with it), and every few seconds while the leg
  lives on. A restart hands the open hangups of the previous run back (`IntentsRestored`),
  before its first resync or, when the ledger could not be read at start-up, after it.
* **The ledger never says a call was stopped when it was not.** How the call ended is a
  separate fact (`RecordOffenceOutcome`) taken from Asterisk's own reports: the trunk leg's
  ``Hangup`` before any answer, or its answer (``DialEnd ANSWER``, ``Newstate Up``) and talk
  time; a call that ended while the guard could not see it is ``unobserved``. A resync
  re-learns every live call, known or not, so an answer missed during an outage is learnt from
  the snapshot; Asterisk goes on while it lists, so a channel that hangs up after it was
  listed is not brought back, and what a call not known yet did meanwhile is applied once the
  listing has taught the tracker that call.

Calls to hotline and duty lines are timed from ``DialBegin`` to ``DialEnd`` (AN-1, DT-2); an
answered inbound call occupying the alarm phone past its grace is EM-1.

An emergency call is never touched, and is told to the security desk once
(`NotifyEmergency`), by whichever layer sees it first: the pre-dial verdict or the trunk leg.
Controls with memory live here too (`CallControls`): every call attempt is counted once,
whichever layer saw it first (velocity locks); every trunk leg is known while it lives
(simultaneous calls, budgets); every finished outbound call's charge is added to the month's
spend, which starts from the ledger's snapshot (`SpendLoaded`). An answered call is cut when
its budget runs out or it passes a duration's hard limit (`pbxguard.domain.durations`): the
guard writes the decision that cut it, with its rule and reason, ahead of the hangup.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from pbxguard.domain.approvals import Approval
from pbxguard.domain.call_events import (
    ApprovalsChanged,
    ChannelCreated,
    ChannelHungUp,
    ChannelSeen,
    ChannelStateChanged,
    ConnectionLost,
    DialBegan,
    DialEnded,
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
from pbxguard.domain.channels import ChannelPlan, TrunkRoute
from pbxguard.domain.controls import CallControls
from pbxguard.domain.dnd import DoNotDisturb
from pbxguard.domain.durations import (
    Step,
    TalkingCall,
    due_steps,
    limit_for,
    next_step,
    on_end,
    on_step,
)
from pbxguard.domain.duty_calls import (
    Occupation,
    RingEnd,
    dispatch_use_offence,
    late_answer_offence,
    occupancy_offence,
    rejection_offence,
    responsible_person,
)
from pbxguard.domain.effects import (
    HANGUP_CAUSE_CALL_REJECTED,
    CountApprovalUse,
    Effect,
    HangupChannel,
    NotifyEmergency,
    RecordCall,
    RecordDecision,
    RecordOffence,
    RecordOffenceOutcome,
)
from pbxguard.domain.emergency import emergency_notice
from pbxguard.domain.enforcement import (
    approval_use_ref,
    decision_record,
    enforcement,
    offence_of,
)
from pbxguard.domain.evaluate import CallAttempt, Decision, Verdict, refuse
from pbxguard.domain.judging import judge
from pbxguard.domain.numbers import NumberClass
from pbxguard.domain.policy import Direction, DurationLimit, Line, Mode, Policy
from pbxguard.domain.records import (
    ApprovalUse,
    CallRef,
    CallSummary,
    Ending,
    Layer,
    OffenceOutcome,
    Outcome,
)
from pbxguard.domain.restrictions import Restriction

#: Seconds between hangups of a leg that lives on: the first retry comes quickly, later ones
#: back off so that a PBX refusing the action is not flooded.
_RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0)
_UP = "Up"
#: A call's outcome when the guard hung it up while it talked (a budget, a duration limit).
CUT_IN_CALL = "cut_in_call"

# --- state ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Ring:
    """A call ringing a hotline or duty phone."""

    extension: str
    dest_channel: str
    began: datetime


@dataclass(slots=True)
class _Occupancy:
    """An answered call to the alarm phone, timed against its grace period."""

    linkedid: str
    extension: str
    answered_at: datetime
    grace: int
    flagged: bool = False

    @property
    def deadline(self) -> datetime:
        return self.answered_at + timedelta(seconds=self.grace)


@dataclass(slots=True)
class _Attempt:
    """One trunk leg of a call: what it dials, the decision, and how it stands."""

    trunk: str
    number: str
    decision: Decision
    began: datetime
    linkedid: str
    started_at: datetime
    answered_at: datetime | None = None
    answer_estimated: bool = False
    # Since the connection was lost and until a resync lists it: an answer may have been missed.
    answer_unknown: bool = False
    offences: list[str] = field(default_factory=list)
    ending: Ending | None = None


@dataclass(slots=True)
class _Cut:
    """A hangup ordered and not yet confirmed by the channel's own ``Hangup``."""

    linkedid: str
    rule_id: str
    sent: int = 0
    sent_event: int = 0
    retry_at: datetime | None = None


@dataclass(slots=True)
class _Call:
    linkedid: str
    uniqueid: str
    channel: str
    extension: str
    caller_name: str
    started_at: datetime
    dialled: str = ""
    outcome: str = ""
    direction: str = "internal"
    channels: set[str] = field(default_factory=set)
    attempts: dict[str, _Attempt] = field(default_factory=dict)
    rings: dict[str, _Ring] = field(default_factory=dict)
    dialling: set[str] = field(default_factory=set)
    timed: set[str] = field(default_factory=set)
    last_event: int = 0
    last_seen: datetime | None = None


@dataclass(slots=True)
class _Timed:
    """An answered call timed against a duration limit (DU-1 outbound, DU-4 inbound)."""

    talking: TalkingCall
    limit: DurationLimit
    done: set[Step] = field(default_factory=set)
    due: datetime | None = None

    def __post_init__(self) -> None:
        self.reschedule()

    def reschedule(self) -> None:
        """Work out when the next step not yet done is due (after steps were done)."""
        self.due = next_step(self.limit, self.talking.answered_at, self.done)


@dataclass(slots=True)
class _Snapshot:
    """Channels listed by the resync under way, by Linkedid, and what happened meanwhile.

    Asterisk goes on while it lists: a known channel may hang up after it was listed (it must
    not come back to life), and a call the guard does not know yet may be answered or end
    before the listing is taken in (its events wait here until then).
    """

    mark: int
    seen: dict[str, list[ChannelSeen]] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    held: list[ChannelStateChanged | DialEnded | ChannelHungUp] = field(default_factory=list)


class CallTracker:
    """Fold events into calls and emit the effects the regulations require."""

    def __init__(
        self,
        policy: Policy,
        channels: ChannelPlan,
        *,
        approvals: Iterable[Approval] = (),
        prejudged_capacity: int = 10_000,
        dnd: DoNotDisturb | None = None,
    ) -> None:
        self.policy = policy
        self.channels = channels
        self.dnd = dnd
        self._notified: OrderedDict[str, None] = OrderedDict()
        self._approvals: dict[str, Approval] = {a.id: a for a in approvals}
        self._prejudged: OrderedDict[str, Decision] = OrderedDict()
        self._prejudged_capacity = prejudged_capacity
        self._calls: dict[str, _Call] = {}
        self._channel_call: dict[str, str] = {}
        self._cuts: dict[str, _Cut] = {}
        self._restored: dict[str, OpenCut] = {}
        self._uses: OrderedDict[str, set[str]] = OrderedDict()
        self._events = 0
        self._snapshot: _Snapshot | None = None
        self._resynced = False
        self._occupancies: dict[str, _Occupancy] = {}
        self.controls = CallControls(policy)
        self._timed: dict[str, _Timed] = {}
        self._timers: list[tuple[datetime, int, str]] = []
        self._timer_seq = itertools.count()
        # Hangup retries by due time, checked lazily against ``_cuts`` like ``_timers``: the
        # next one is looked up after every event without going over every open hangup.
        self._retries: list[tuple[datetime, int, str]] = []
        self._now: datetime | None = None
        self._controls_due: datetime | None = None
        self._controls_stale = True

    # -- queries ------------------------------------------------------------------------------

    @property
    def live_calls(self) -> int:
        """How many calls are in progress."""
        return len(self._calls)

    @property
    def approvals(self) -> tuple[Approval, ...]:
        """The approvals the tracker judges with, uses counted so far included."""
        return tuple(self._approvals.values())

    @property
    def open_cuts(self) -> tuple[str, ...]:
        """Channels whose hangup was ordered and not yet confirmed by Asterisk."""
        return tuple(self._cuts)

    def call_of(self, channel: str) -> str | None:
        """Return the Linkedid of the call ``channel`` belongs to, if tracked."""
        return self._channel_call.get(channel)

    def next_due(self) -> datetime | None:
        """Return when a `Tick` is next needed.

        A hangup retry, an alarm-phone grace ending, a duration limit, a lock ending, a live
        call that could reach its budget.
        """
        due = [o.deadline for o in self._occupancies.values() if not o.flagged]
        nexts = (self._next_timer(), self._next_retry(), self._controls_next_due())
        due.extend(at for at in nexts if at is not None)
        return min(due, default=None)

    def _controls_next_due(self) -> datetime | None:
        # A budget's end is worked out again only when a leg was answered, the spend or the
        # policy changed, or a tick ran: between those, the answer given last is still a safe
        # time to look again (a leg that ends only puts it further off).
        if self._controls_stale and self._now is not None:
            self._controls_due = self.controls.budget_due(self._now)
            self._controls_stale = False
        budget, lock = self._controls_due, self.controls.lock_due()
        if budget is None or lock is None:
            return budget or lock
        return min(budget, lock)

    def _next_timer(self) -> datetime | None:
        while self._timers:
            at, _, channel = self._timers[0]
            timed = self._timed.get(channel)
            if timed is not None and timed.due == at:
                return at
            heapq.heappop(self._timers)  # stale: the call ended, or the step was done
        return None

    def _next_retry(self) -> datetime | None:
        while self._retries:
            at, _, channel = self._retries[0]
            cut = self._cuts.get(channel)
            if cut is not None and cut.retry_at == at:
                return at
            heapq.heappop(self._retries)  # stale: the leg is gone, or the retry moved
        return None

    # -- the reducer --------------------------------------------------------------------------

    def handle(self, event: TrackerEvent) -> list[Effect]:
        """Apply one event and return the effects it causes, in the order to carry them out."""
        self._events += 1
        if self._now is None or event.at > self._now:
            self._now = event.at
        match event:
            case DialBegan():
                return self._dial_began(event)
            case ChannelCreated():
                self._channel_created(event)
                return []
            case ChannelStateChanged():
                self._state_changed(event)
                return []
            case DialEnded():
                return self._dial_ended(event)
            case ChannelHungUp():
                return self._hung_up(event)
            case ChannelSeen():
                if self._snapshot is None:
                    self._snapshot = _Snapshot(self._events - 1)
                self._snapshot.seen.setdefault(event.linkedid, []).append(event)
                return []
            case ResyncStarted():
                self._snapshot = _Snapshot(self._events)
                return []
            case ResyncDone():
                return self._resync_done(event)
            case VerdictGiven():
                return self._verdict_given(event)
            case HangupFailed():
                return self._hangup_failed(event)
            case HangupAccepted():
                return []
            case ConnectionLost():
                self._connection_lost()
                return []
            case ApprovalsChanged():
                self._approvals_changed(event)
                return []
            case PolicyChanged():
                self.policy = event.policy
                self.channels = event.channels
                self.controls.set_policy(event.policy)
                self._controls_stale = True
                return []
            case IntentsRestored():
                self._restored.update((c.key, c) for c in event.cuts)
                return self._close_restored(event.at) if self._resynced else []
            case DoNotDisturbChanged():
                self.dnd = event.numbers
                return []
            case SpendLoaded():
                self._controls_stale = True
                return self.controls.spend_loaded(event.lines, event.at, foreign=event.foreign)
            case LocksLoaded():
                return self.controls.locks_loaded(event.active, event.lifted, event.at)
            case Tick():
                return self._tick(event.at)
        return []  # pragma: no cover - the union above is exhaustive

    def handle_all(self, events: Iterable[TrackerEvent]) -> list[Effect]:
        """Apply events in order and return all their effects."""
        effects: list[Effect] = []
        for event in events:
            effects.extend(self.handle(event))
        return effects

    # -- channels -----------------------------------------------------------------------------

    def _call_for(
        self,
        *,
        at: datetime,
        channel: str,
        uniqueid: str,
        linkedid: str,
        caller_num: str,
        caller_name: str,
        touch: bool = True,
    ) -> _Call:
        """Return the call ``linkedid``, creating it; ``touch`` marks it as heard from now."""
        call = self._calls.get(linkedid)
        if call is None:
            extension = self.channels.phone_extension(channel) or caller_num
            call = _Call(linkedid, uniqueid, channel, extension, caller_name, at)
            self._calls[linkedid] = call
        elif uniqueid == linkedid and call.uniqueid != linkedid:
            # The originating channel (its Uniqueid is the Linkedid) is the caller, whichever
            # channel of the call was heard of first.
            self._make_origin(call, channel, uniqueid, caller_num, caller_name)
        if channel:
            call.channels.add(channel)
            self._channel_call[channel] = linkedid
        if touch:
            call.last_event = self._events
            call.last_seen = at
        return call

    def _make_origin(
        self, call: _Call, channel: str, uniqueid: str, caller_num: str, caller_name: str
    ) -> None:
        call.channel, call.uniqueid = channel, uniqueid
        call.extension = self.channels.phone_extension(channel) or caller_num or call.extension
        call.caller_name = caller_name or call.caller_name

    def _channel_created(self, event: ChannelCreated) -> None:
        call = self._call_for(
            at=event.at,
            channel=event.channel,
            uniqueid=event.uniqueid,
            linkedid=event.linkedid,
            caller_num=event.caller_num,
            caller_name=event.caller_name,
        )
        if event.channel == call.channel and not call.dialled:
            call.dialled = event.exten

    def _hold(self, event: ChannelStateChanged | DialEnded | ChannelHungUp) -> None:
        """Keep an event of a call not known yet for the end of the resync under way."""
        if self._snapshot is not None:
            self._snapshot.held.append(event)

    def _state_changed(self, event: ChannelStateChanged) -> None:
        linkedid = self._channel_call.get(event.channel) or event.linkedid
        call = self._calls.get(linkedid)
        if call is None:
            self._hold(event)
            return
        call.last_event = self._events
        call.last_seen = event.at
        attempt = call.attempts.get(event.channel)
        if attempt is not None and event.state == _UP and attempt.answered_at is None:
            self._answered(call, attempt, event.at)

    def _dial_began(self, event: DialBegan) -> list[Effect]:
        linkedid = event.linkedid or event.dest_linkedid
        caller_channel = event.channel
        call = self._call_for(
            at=event.at,
            channel=caller_channel,
            uniqueid=event.uniqueid or event.dest_uniqueid,
            linkedid=linkedid,
            caller_num=event.caller_num,
            caller_name=event.caller_name,
        )
        call.channels.add(event.dest_channel)
        self._channel_call[event.dest_channel] = call.linkedid
        if event.uniqueid:
            call.dialling.add(event.uniqueid)
        trunk = self.channels.trunk_number(event.dest_channel, event.dial_string)
        if trunk is not None:
            number, with_access_code = trunk
            decision = self._decide(call, number, with_access_code, event.uniqueid, event.at)
            return self._open_attempt(call, event.dest_channel, number, decision, event.at)
        extension = self.channels.phone_extension(event.dest_channel)
        if extension is not None:
            line = self.policy.line(extension)
            if (
                line is not None
                and (
                    line.answer_within is not None
                    or line.occupancy_grace is not None
                    or line.reject_rule
                )
            ) or self._inbound_timed(call):
                call.rings[event.dest_channel] = _Ring(extension, event.dest_channel, event.at)
        return []

    def _dial_ended(self, event: DialEnded) -> list[Effect]:
        linkedid = self._channel_call.get(event.channel) or event.linkedid
        call = self._calls.get(linkedid)
        if call is None:
            self._hold(event)
            return []
        call.last_event = self._events
        call.last_seen = event.at
        attempt = call.attempts.get(event.dest_channel)
        if attempt is not None and event.status == "ANSWER" and attempt.answered_at is None:
            self._answered(call, attempt, event.at)
        ring = call.rings.pop(event.dest_channel, None)
        if ring is None:
            return []
        if event.status == "ANSWER":
            self._time_inbound(call, ring, event.at)
        line = self.policy.line(ring.extension)
        if line is None:
            return []
        effects = self._check_answer_time(call, line, ring, event)
        effects.extend(self._check_rejection(call, line, ring, event))
        if event.status == "ANSWER" and line.occupancy_grace is not None:
            self._occupancies[ring.dest_channel] = _Occupancy(
                call.linkedid, ring.extension, event.at, line.occupancy_grace
            )
        return effects

    def _hung_up(self, event: ChannelHungUp) -> list[Effect]:
        self._occupancies.pop(event.channel, None)
        self._cuts.pop(event.channel, None)
        linkedid = self._channel_call.pop(event.channel, None) or event.linkedid
        call = self._calls.get(linkedid)
        if call is None:
            self._hold(event)
            return []
        if self._snapshot is not None:
            self._snapshot.ended.add(event.channel)
        call.channels.discard(event.channel)
        call.last_event = self._events
        call.last_seen = event.at
        effects: list[Effect] = []
        if event.channel not in call.attempts:
            effects.extend(self._timed_end(event.channel, event.at))
        attempt = call.attempts.get(event.channel)
        if attempt is not None and attempt.ending is None:
            effects.extend(self._attempt_ended(attempt, event.at, cause=event.cause))
        if not call.channels:
            effects.extend(self._finish(call, event.at))
        return effects

    # -- judging ------------------------------------------------------------------------------

    def _decide(
        self, call: _Call, number: str, with_access_code: bool, uniqueid: str, at: datetime
    ) -> Decision:
        earlier = next(
            (a.decision for a in call.attempts.values() if a.number == number),
            None,
        )
        if earlier is not None:
            # A second trunk leg of a call already judged (a failover route): judge it the same.
            return earlier
        for dialling in (uniqueid, call.uniqueid):
            prior = self._prejudged.get(dialling)
            if prior is not None:
                return prior
        return judge(
            CallAttempt(call.extension, number, with_access_code=with_access_code),
            self.policy,
            now=at,
            approvals=self._approvals.values(),
            dnd=self.dnd,
            controls=self.controls,
        )

    def _open_attempt(
        self,
        call: _Call,
        trunk: str,
        number: str,
        decision: Decision,
        at: datetime,
        *,
        began: datetime | None = None,
    ) -> list[Effect]:
        """Judge a new trunk leg at ``at`` (it began at ``began``, by default then too)."""
        call.direction = "outbound"
        call.dialled = number
        attempt = _Attempt(trunk, number, decision, began or at, call.linkedid, call.started_at)
        call.attempts[trunk] = attempt
        ref = _ref(call)
        self.controls.leg_opened(attempt)
        effects: list[Effect] = [
            RecordDecision(
                decision_record(
                    decision,
                    key=f"{self.policy.site}:{call.uniqueid}:ami:{trunk}",
                    at=at,
                    call=ref,
                    layer=Layer.AMI,
                )
            )
        ]
        effects.extend(self._count_approval(ref, decision, at))
        effects.extend(
            self._notify_emergency(ref, decision, at, Layer.AMI, caller_name=call.caller_name)
        )
        effects.extend(self.controls.attempted(call.linkedid, decision, at))
        if decision.allowed:
            effects.extend(self._check_dispatch_use(call, decision, at))
            return effects
        meaning = enforcement(decision, self.policy.mode, Layer.AMI)
        call.outcome = Outcome.HUNG_UP.value if meaning.hang_up else Outcome.MONITORED.value
        if meaning.offence is not None:
            draft = offence_of(
                decision, policy=self.policy, at=at, call=ref, outcome=meaning.offence
            )
            attempt.offences.append(draft.key)
            self._restored.pop(draft.key, None)
            effects.append(RecordOffence(draft))
        if meaning.hang_up:
            effects.append(self._order_cut(trunk, call.linkedid, decision.rule_id, at))
        return effects

    def _count_approval(self, call: CallRef, decision: Decision, at: datetime) -> list[Effect]:
        """Count a call against the approval that allowed it, once per call on both layers."""
        if not decision.approval_id:
            return []
        counted = self._uses.get(call.linkedid)
        if counted is None:
            counted = self._uses[call.linkedid] = set()
            while len(self._uses) > self._prejudged_capacity:
                self._uses.popitem(last=False)
        if decision.approval_id in counted:
            return []
        counted.add(decision.approval_id)
        approval = self._approvals.get(decision.approval_id)
        if approval is not None:
            self._approvals[approval.id] = approval.used()
        use = ApprovalUse(
            approval_id=decision.approval_id,
            ref=approval_use_ref(self.policy.site, call.linkedid),
            at=at,
            call=call,
        )
        return [CountApprovalUse(use)]

    def _verdict_given(self, event: VerdictGiven) -> list[Effect]:
        decision = event.decision
        if decision.verdict is Verdict.PIN:
            return []  # no verdict yet: the caller is asked for a code
        self._prejudged[event.call.uniqueid] = decision
        self._prejudged.move_to_end(event.call.uniqueid)
        while len(self._prejudged) > self._prejudged_capacity:
            self._prejudged.popitem(last=False)
        policy = self.policy
        ref = event.call
        effects: list[Effect] = [
            RecordDecision(
                decision_record(
                    decision,
                    key=f"{policy.site}:{ref.uniqueid}:agi",
                    at=event.at,
                    call=ref,
                    layer=Layer.AGI,
                )
            )
        ]
        effects.extend(self._count_approval(ref, decision, event.at))
        effects.extend(self._notify_emergency(ref, decision, event.at, Layer.AGI))
        meaning = enforcement(decision, policy.mode, Layer.AGI)
        if meaning.offence is not None:
            draft = offence_of(
                decision, policy=policy, at=event.at, call=ref, outcome=meaning.offence
            )
            effects.append(RecordOffence(draft))
        effects.extend(self.controls.attempted(ref.linkedid, decision, event.at))
        if meaning.answer is Verdict.ALLOW:
            self.controls.dial_allowed(ref.linkedid, decision, event.at)
        return effects

    def _notify_emergency(
        self,
        call: CallRef,
        decision: Decision,
        at: datetime,
        layer: Layer,
        *,
        caller_name: str = "",
    ) -> list[Effect]:
        """Tell the security desk about an emergency call, once per call on both layers."""
        if decision.number_class is not NumberClass.EMERGENCY or call.linkedid in self._notified:
            return []
        self._notified[call.linkedid] = None
        while len(self._notified) > self._prejudged_capacity:
            self._notified.popitem(last=False)
        notice = emergency_notice(
            decision, self.policy, call=call, at=at, layer=layer, caller_name=caller_name
        )
        return [NotifyEmergency(notice)]

    # -- hangups ------------------------------------------------------------------------------

    def _order_cut(self, channel: str, linkedid: str, rule_id: str, at: datetime) -> HangupChannel:
        cut = self._cuts.get(channel)
        if cut is None:
            cut = _Cut(linkedid, rule_id)
            self._cuts[channel] = cut
        return self._send_cut(channel, cut, at)

    def _send_cut(self, channel: str, cut: _Cut, at: datetime) -> HangupChannel:
        cut.sent += 1
        cut.sent_event = self._events
        self._retry_later(channel, cut, at)
        return HangupChannel(
            channel, HANGUP_CAUSE_CALL_REJECTED, cut.linkedid, cut.rule_id, attempt=cut.sent
        )

    def _hangup_failed(self, event: HangupFailed) -> list[Effect]:
        cut = self._cuts.get(event.channel)
        if cut is None:
            return []
        if event.connection_lost:
            cut.retry_at = None  # the resync after the next login sends it again
            return []
        self._retry_later(event.channel, cut, event.at)
        return []

    def _retry_later(self, channel: str, cut: _Cut, at: datetime) -> None:
        """Send ``cut`` again after the backoff its hangups so far call for."""
        delay = _RETRY_DELAYS[min(cut.sent - 1, len(_RETRY_DELAYS) - 1)]
        cut.retry_at = at + timedelta(seconds=delay)
        heapq.heappush(self._retries, (cut.retry_at, next(self._timer_seq), channel))

    def _connection_lost(self) -> None:
        for cut in self._cuts.values():
            cut.retry_at = None
        for call in self._calls.values():
            for attempt in call.attempts.values():
                if attempt.ending is None and attempt.answered_at is None:
                    attempt.answer_unknown = True

    def _tick(self, now: datetime) -> list[Effect]:
        effects: list[Effect] = []
        effects.extend(self._timed_due(now))
        controls, overruns = self.controls.tick(now)
        self._controls_stale = True
        effects.extend(controls)
        for overrun in overruns:
            linkedid = self._channel_call.get(overrun.trunk)
            call = self._calls.get(linkedid or "")
            attempt = call.attempts.get(overrun.trunk) if call is not None else None
            if call is not None and attempt is not None:
                effects.extend(self._cut_in_call(call, attempt, overrun.why, now))
        for channel, cut in list(self._cuts.items()):
            if cut.retry_at is not None and cut.retry_at <= now:
                effects.append(self._send_cut(channel, cut, now))
        for channel, occupancy in self._occupancies.items():
            if occupancy.flagged or occupancy.deadline > now:
                continue
            occupancy.flagged = True
            effects.extend(self._occupied(channel, occupancy, now))
        return effects

    # -- endings ------------------------------------------------------------------------------

    def _attempt_ended(
        self,
        attempt: _Attempt,
        at: datetime,
        *,
        cause: str = "",
        observed: bool = True,
        alive_until: datetime | None = None,
    ) -> list[Effect]:
        if attempt.answered_at is not None:
            ending = Ending.ANSWERED
        elif observed and not attempt.answer_unknown:
            ending = Ending.BEFORE_ANSWER
        else:
            # Gone out of sight, or gone before a resync could say whether it was answered.
            ending = Ending.UNOBSERVED
        attempt.ending = ending
        # A leg that ends only puts its budget's end further off: the due time known is early
        # at worst (a tick that finds nothing to do), so it is not worked out again here.
        self.controls.leg_ended(attempt.trunk)
        timed = self._timed_end(attempt.trunk, at if observed else (alive_until or at))
        if not attempt.offences:
            return timed
        end = at if observed else (alive_until or at)
        talk = end - attempt.answered_at if attempt.answered_at is not None else timedelta(0)
        talk = max(talk, timedelta(0))
        decision = attempt.decision
        charge = self.policy.tariff.charge(
            decision.classification.number, decision.number_class.value, talk
        )
        return [
            RecordOffenceOutcome(
                OffenceOutcome(
                    key=key,
                    at=at,
                    ending=ending,
                    answered_at=attempt.answered_at,
                    ended_at=at if observed else None,
                    talk_time=talk,
                    charge=charge,
                    answer_estimated=attempt.answer_estimated,
                    cause=cause,
                )
            )
            for key in attempt.offences
        ] + timed

    def _finish(self, call: _Call, at: datetime) -> list[Effect]:
        self._calls.pop(call.linkedid, None)
        for channel in call.channels:
            if self._channel_call.get(channel) == call.linkedid:
                del self._channel_call[channel]
            self._cuts.pop(channel, None)
            self._occupancies.pop(channel, None)
        for dialling in call.dialling:
            self._prejudged.pop(dialling, None)
        self._prejudged.pop(call.uniqueid, None)
        self._uses.pop(call.linkedid, None)
        for leg in call.attempts.values():
            self.controls.leg_ended(leg.trunk)
        for channel in call.timed:
            self._timed.pop(channel, None)
        attempt = self._main_attempt(call)
        if call.direction != "outbound" or attempt is None:
            self.controls.call_ended(call.linkedid, None)
            return []
        decision = attempt.decision
        answered = attempt.answered_at
        talk = max(at - answered, timedelta(0)) if answered is not None else timedelta(0)
        charge = self.policy.tariff.charge(
            decision.classification.number, decision.number_class.value, talk
        )
        summary = CallSummary(
            call=_ref(call),
            extension=call.extension,
            person_id=decision.person_id,
            person_name=decision.person_name,
            department=decision.department,
            caller_name=call.caller_name,
            dialled=call.dialled,
            number=decision.classification.number,
            number_class=decision.number_class.value,
            direction=call.direction,
            started_at=call.started_at,
            answered_at=answered,
            ended_at=at,
            verdict=decision.verdict.value,
            rule_id=decision.rule_id,
            outcome=self._call_outcome(call, attempt),
            charge=charge,
        )
        return [RecordCall(summary), *self.controls.call_ended(call.linkedid, summary)]

    @staticmethod
    def _main_attempt(call: _Call) -> _Attempt | None:
        """Return the attempt a call is reported by: the answered one, else the last."""
        attempts = list(call.attempts.values())
        answered = [a for a in attempts if a.answered_at is not None]
        if answered:
            return answered[0]
        return attempts[-1] if attempts else None

    @staticmethod
    def _call_outcome(call: _Call, attempt: _Attempt) -> str:
        if call.outcome == Outcome.HUNG_UP.value:
            # Asterisk says whether the cut worked: an answered leg was not stopped, and a leg
            # whose end was not seen was not seen stopped.
            if attempt.answered_at is not None:
                return Outcome.NOT_STOPPED.value
            if attempt.ending is not Ending.BEFORE_ANSWER:
                return Outcome.UNOBSERVED.value
            return Outcome.HUNG_UP.value
        if call.outcome:
            return call.outcome
        return "answered" if attempt.answered_at is not None else "unanswered"

    # -- resync -------------------------------------------------------------------------------

    def _resync_done(self, event: ResyncDone) -> list[Effect]:
        snapshot = self._snapshot or _Snapshot(self._events)
        self._snapshot = None
        self._resynced = True
        effects: list[Effect] = []
        live: set[str] = set()
        for linkedid, seen in snapshot.seen.items():
            # A channel that hung up since it was listed stays gone.
            current = [s for s in seen if s.channel not in snapshot.ended]
            if current:
                live.update(s.channel for s in current)
                effects.extend(self._relearn(linkedid, current, event.at))
        # What the calls learnt from the listing did while it was being taken, in order.
        for held in snapshot.held:
            match held:
                case ChannelStateChanged():
                    self._state_changed(held)
                case DialEnded():
                    effects.extend(self._dial_ended(held))
                case ChannelHungUp():
                    effects.extend(self._hung_up(held))
        for call in list(self._calls.values()):
            if call.last_event > snapshot.mark:
                continue  # events since the snapshot was asked for: alive whatever it says
            gone = call.channels - live
            if not gone:
                continue
            for channel in gone:
                call.channels.discard(channel)
                self._cuts.pop(channel, None)
                if self._channel_call.get(channel) == call.linkedid:
                    del self._channel_call[channel]
                attempt = call.attempts.get(channel)
                if attempt is not None and attempt.ending is None:
                    effects.extend(
                        self._attempt_ended(
                            attempt, event.at, observed=False, alive_until=call.last_seen
                        )
                    )
            if not call.channels:
                # It ended out of sight: closed at the last moment it was known alive.
                effects.extend(self._finish(call, call.last_seen or event.at))
        for channel in [c for c, lid in self._channel_call.items() if lid not in self._calls]:
            del self._channel_call[channel]
        effects.extend(self._close_restored(event.at))
        effects.extend(self._cut_live_forbidden(event.at, since=snapshot.mark))
        # A hangup ordered for a leg that has gone since it was listed is moot.
        return [e for e in effects if not isinstance(e, HangupChannel) or e.channel in self._cuts]

    def _relearn(self, linkedid: str, seen: list[ChannelSeen], at: datetime) -> list[Effect]:
        """Take in one call of the snapshot: its caller, its legs, their state and decisions."""
        origin = self._origin_of(linkedid, seen)
        call = self._call_for(
            at=origin.at - origin.duration,
            channel=origin.channel,
            uniqueid=origin.uniqueid,
            linkedid=linkedid,
            caller_num=origin.caller_num,
            caller_name=origin.caller_name,
            touch=False,
        )
        if call.channel != origin.channel and self.channels.phone_extension(call.channel) is None:
            self._make_origin(
                call, origin.channel, origin.uniqueid, origin.caller_num, origin.caller_name
            )
        if not call.dialled:
            call.dialled = origin.exten
        effects: list[Effect] = []
        for item in seen:
            call.channels.add(item.channel)
            self._channel_call[item.channel] = linkedid
            route = self.channels.trunk_route(item.channel)
            if route is None:
                continue
            attempt = call.attempts.get(item.channel)
            if attempt is None:
                number = self._dialled_on(route, item, call)
                decision = self._decide(call, number, route.with_access_code, "", at)
                effects.extend(
                    self._open_attempt(
                        call, item.channel, number, decision, at, began=item.at - item.duration
                    )
                )
                attempt = call.attempts[item.channel]
            if item.state == _UP and attempt.answered_at is None:
                # Answered while the guard could not see it: the resync is the earliest
                # moment known for sure, so the talk time is never overstated.
                attempt.answer_estimated = True
                self._answered(call, attempt, at)
            attempt.answer_unknown = False
        return effects

    def _dialled_on(self, route: TrunkRoute, trunk: ChannelSeen, call: _Call) -> str:
        """Return what a trunk leg found by a resync dials.

        In the channel's name when the route says so; else what the caller's channel dialled;
        the trunk leg's own fields last (its connected line is usually the caller). A
        candidate that is no number at all (an ``s`` extension) is passed over.
        """
        candidates = [
            self.channels.number_in_channel(route, trunk.channel) or "",
            call.dialled,
            trunk.exten,
            trunk.connected_num,
        ]
        usable = [c for c in candidates if c]
        for candidate in usable:
            found = self.policy.classifier.classify(
                candidate, with_access_code=route.with_access_code
            )
            if found.number_class is not NumberClass.INVALID:
                return candidate
        return usable[0] if usable else ""

    def _origin_of(self, linkedid: str, seen: list[ChannelSeen]) -> ChannelSeen:
        """Return the caller's channel: the one whose Uniqueid is the Linkedid, else a phone."""
        for item in seen:
            if item.uniqueid == linkedid:
                return item
        phones = [s for s in seen if self.channels.phone_extension(s.channel) is not None]
        if phones:
            return max(phones, key=lambda s: s.duration)
        return max(seen, key=lambda s: s.duration)

    def _close_restored(self, at: datetime) -> list[Effect]:
        """Hangups ordered by an earlier run whose call is gone: their ending was not seen."""
        effects: list[Effect] = []
        for key, cut in list(self._restored.items()):
            call = self._calls.get(cut.linkedid)
            if call is not None and any(key in a.offences for a in call.attempts.values()):
                continue
            del self._restored[key]
            if call is not None:
                continue  # live, re-judged under a new key: its own outcome will follow
            effects.append(
                RecordOffenceOutcome(OffenceOutcome(key=key, at=at, ending=Ending.UNOBSERVED))
            )
        return effects

    def _cut_live_forbidden(self, at: datetime, *, since: int) -> list[Effect]:
        """After a resync, hang up again every live trunk leg the guard has ordered cut.

        A hangup sent since the snapshot was asked for went out on this connection: its reply
        (or its retry timer) decides; one sent before may have been lost with the old one.
        """
        effects: list[Effect] = []
        for call in self._calls.values():
            for trunk, attempt in call.attempts.items():
                if attempt.ending is not None or trunk not in call.channels:
                    continue
                cut = self._cuts.get(trunk)
                if cut is None:
                    if not attempt.offences or self.policy.mode is not Mode.ENFORCE:
                        continue
                    meaning = enforcement(attempt.decision, self.policy.mode, Layer.AMI)
                    if not meaning.hang_up:
                        continue
                    cut = _Cut(call.linkedid, attempt.decision.rule_id)
                    self._cuts[trunk] = cut
                elif cut.sent_event > since:
                    continue  # sent on this connection: in flight
                effects.append(self._send_cut(trunk, cut, at))
        return effects

    # -- duty lines ---------------------------------------------------------------------------

    def _check_dispatch_use(self, call: _Call, decision: Decision, at: datetime) -> list[Effect]:
        draft = dispatch_use_offence(self.policy, _ref(call), call.extension, decision, at)
        return [RecordOffence(draft)] if draft is not None else []

    def _check_answer_time(
        self, call: _Call, line: Line, ring: _Ring, event: DialEnded
    ) -> list[Effect]:
        draft = late_answer_offence(
            self.policy,
            _ref(call),
            line,
            RingEnd(ring.extension, ring.dest_channel, ring.began, event.at, event.status),
        )
        return [RecordOffence(draft)] if draft is not None else []

    def _check_rejection(
        self, call: _Call, line: Line, ring: _Ring, event: DialEnded
    ) -> list[Effect]:
        if not line.reject_rule or event.status != "BUSY":
            # Only a busy answer on a line with a rejection rule can be DT-2: everything below
            # (a look at every live channel) is for those alone, not for every ring that ends.
            return []
        caller_extension = self.channels.phone_extension(call.channel)
        busy_elsewhere = any(
            self.channels.phone_extension(channel) == ring.extension
            for channel in self._channel_call
            if channel != ring.dest_channel
        )
        draft = rejection_offence(
            self.policy,
            _ref(call),
            line,
            RingEnd(ring.extension, ring.dest_channel, ring.began, event.at, event.status),
            caller_extension=caller_extension,
            busy_elsewhere=busy_elsewhere,
        )
        return [RecordOffence(draft)] if draft is not None else []

    def _occupied(self, channel: str, occupancy: _Occupancy, now: datetime) -> list[Effect]:
        call = self._calls.get(occupancy.linkedid)
        line = self.policy.line(occupancy.extension)
        if call is None or line is None:
            return []
        enforce = self.policy.mode is Mode.ENFORCE and line.cut_occupancy
        draft = occupancy_offence(
            self.policy,
            _ref(call),
            line,
            Occupation(channel, occupancy.extension, occupancy.answered_at, occupancy.grace),
            caller_extension=self.channels.phone_extension(call.channel),
            fallback_extension=call.extension,
            now=now,
            enforce=enforce,
        )
        if draft is None:
            return []
        effects: list[Effect] = [RecordOffence(draft)]
        if enforce:
            effects.append(self._order_cut(channel, call.linkedid, "EM-1", now))
        return effects

    # -- answered calls: durations and budgets ---------------------------------------------

    def _answered(self, call: _Call, attempt: _Attempt, at: datetime) -> None:
        """A trunk leg was answered: its spend starts, and a duration limit may time it."""
        attempt.answered_at = at
        self.controls.leg_answered(attempt)
        self._controls_stale = True
        decision = attempt.decision
        if not decision.allowed:
            return  # a forbidden call is an offence of its own, and is being cut
        talking = TalkingCall(
            call=_ref(call),
            channel=attempt.trunk,
            caller_channel=call.channel,
            extension=decision.extension,
            person_id=decision.person_id,
            person_name=decision.person_name,
            department=decision.department,
            role=decision.role,
            number=decision.classification.number,
            number_class=decision.number_class,
            answered_at=at,
            direction=Direction.OUTBOUND,
        )
        self._time(call, talking)

    def _inbound_timed(self, call: _Call) -> bool:
        """Tell whether a call coming in from outside may be timed (DU-4 limits exist)."""
        return (
            any(limit.direction is Direction.INBOUND for limit in self.policy.durations)
            and self.channels.phone_extension(call.channel) is None
        )

    def _time_inbound(self, call: _Call, ring: _Ring, at: datetime) -> None:
        """An inbound call from outside was answered on a site phone: time it (DU-4)."""
        if not self._inbound_timed(call):
            return
        line = self.policy.line(ring.extension)
        person = (
            responsible_person(self.policy, line, ring.extension, at)
            if line is not None
            else self.policy.person_at(ring.extension)
        )
        talking = TalkingCall(
            call=_ref(call),
            channel=ring.dest_channel,
            caller_channel=ring.dest_channel,
            extension=ring.extension,
            person_id=person.id if person else "",
            person_name=person.name if person else "",
            department=person.department if person else "",
            role=self.policy.role_of(person).id,
            number=call.extension,
            number_class=None,
            answered_at=at,
            direction=Direction.INBOUND,
        )
        self._time(call, talking)

    def _time(self, call: _Call, talking: TalkingCall) -> None:
        limit = limit_for(self.policy, talking)
        if limit is None:
            return
        timed = _Timed(talking, limit)
        self._timed[talking.channel] = timed
        call.timed.add(talking.channel)
        self._schedule(talking.channel, timed)

    def _schedule(self, channel: str, timed: _Timed) -> None:
        if timed.due is not None:
            heapq.heappush(self._timers, (timed.due, next(self._timer_seq), channel))

    def _timed_due(self, now: datetime) -> list[Effect]:
        effects: list[Effect] = []
        while self._timers and self._timers[0][0] <= now:
            at, _, channel = heapq.heappop(self._timers)
            timed = self._timed.get(channel)
            if timed is None or timed.due != at:
                continue
            effects.extend(self._duration_steps(channel, timed, now))
            timed.reschedule()
            self._schedule(channel, timed)
        return effects

    def _duration_steps(self, channel: str, timed: _Timed, now: datetime) -> list[Effect]:
        talking = timed.talking
        effects: list[Effect] = []
        for step in due_steps(timed.limit, talking.answered_at, now, timed.done):
            timed.done.add(step)
            outcome = on_step(self.policy, talking, timed.limit, step, now)
            effects.extend(outcome.effects)
            if outcome.cut is not None:
                effects.extend(self._cut_talking(channel, talking.call.linkedid, outcome.cut, now))
        return effects

    def _cut_talking(
        self, channel: str, linkedid: str, why: Restriction, now: datetime
    ) -> list[Effect]:
        """Cut a talking leg for a control: a trunk leg with its decision, else the channel."""
        call = self._calls.get(linkedid)
        if call is None:
            return []
        attempt = call.attempts.get(channel)
        if attempt is not None:
            return self._cut_in_call(call, attempt, why, now)
        if self.policy.mode is not Mode.ENFORCE:
            return []
        call.outcome = CUT_IN_CALL
        return [self._order_cut(channel, call.linkedid, why.rule_id, now)]

    def _timed_end(self, channel: str, at: datetime) -> list[Effect]:
        """A timed leg ended: what its limit calls for now (a record nobody made in time)."""
        timed = self._timed.pop(channel, None)
        if timed is None:
            return []
        return on_end(self.policy, timed.talking, timed.limit, timed.done, at)

    def _cut_in_call(
        self, call: _Call, attempt: _Attempt, why: Restriction, now: datetime
    ) -> list[Effect]:
        """Cut a talking call for a control (its budget, its duration), recording why first."""
        decision = refuse(attempt.decision, self.policy, why)
        ref = _ref(call)
        effects: list[Effect] = [
            RecordDecision(
                decision_record(
                    decision,
                    key=f"{self.policy.site}:{call.uniqueid}:ami:{why.rule_id}:{attempt.trunk}",
                    at=now,
                    call=ref,
                    layer=Layer.AMI,
                )
            )
        ]
        if self.policy.mode is Mode.ENFORCE and attempt.ending is None:
            call.outcome = CUT_IN_CALL
            effects.append(self._order_cut(attempt.trunk, call.linkedid, why.rule_id, now))
        return effects

    # -- approvals ----------------------------------------------------------------------------

    def _approvals_changed(self, event: ApprovalsChanged) -> None:
        fresh: dict[str, Approval] = {}
        for listed in event.approvals:
            known = self._approvals.get(listed.id)
            # Uses counted here may not be in the ledger the refresh was read from yet.
            used = max(listed.used_calls, known.used_calls if known is not None else 0)
            fresh[listed.id] = replace(listed, used_calls=used)
        self._approvals = fresh


def _ref(call: _Call) -> CallRef:
    return CallRef(call.linkedid, call.uniqueid, call.channel)
