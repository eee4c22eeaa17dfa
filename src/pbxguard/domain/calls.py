"""The call tracker: channel events in, effects out.

Theory of operation
-------------------
Asterisk reports a call as several channels (the caller's phone, a Local pair, the trunk leg)
sharing one ``Linkedid``; their events may interleave with other calls' and arrive out of order.
`CallTracker` folds them into one `_Call` per Linkedid that knows who is calling, what was
dialled, where the call is (dialling, ringing, answered, ended) and how long it talked.

When a phone's call reaches an outbound trunk leg (``DialBegin`` to a channel the site's
`ChannelPlan` calls a trunk) the tracker asks the injected ``judge`` for a `Decision`, and emits
effects: record the decision, hang up the trunk leg (enforce mode, cause 21) and record the
offence. Offences whose fine depends on the call's charge (PR-1) are recorded when the call ends,
priced from the talk time and the policy's tariff. Calls to hotline and duty lines are timed from
``DialBegin`` to ``DialEnd``: one not answered within the line's limit is an AN-1 offence.

Like h11's connection object, the tracker owns mutable state but does no I/O and reads no clock:
the same events always give the same effects. After every AMI login the shell feeds it a
snapshot of the live channels (`ChannelSeen` ... `ResyncDone`) so calls that started or ended
while the connection was down are caught up without judging anything twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from pbxguard.domain.channels import ChannelPlan
from pbxguard.domain.evaluate import CallAttempt, Decision
from pbxguard.domain.numbers import NumberClass
from pbxguard.domain.policy import Line, Mode, Person, Policy
from pbxguard.domain.records import (
    CallRef,
    CallSummary,
    DecisionRecord,
    Layer,
    OffenceDraft,
    Outcome,
)

HANGUP_CAUSE_CALL_REJECTED = 21

#: Destinations that are always business for a dispatch phone (DT-3).
_ALWAYS_BUSINESS = frozenset({NumberClass.EMERGENCY, NumberClass.INTERNAL})

# --- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelCreated:
    """A channel appeared (AMI ``Newchannel``)."""

    at: datetime
    channel: str
    uniqueid: str
    linkedid: str
    caller_num: str
    caller_name: str
    exten: str


@dataclass(frozen=True, slots=True)
class DialBegan:
    """A channel started dialling another (AMI ``DialBegin``)."""

    at: datetime
    channel: str
    uniqueid: str
    linkedid: str
    caller_num: str
    caller_name: str
    exten: str
    dest_channel: str
    dest_uniqueid: str
    dial_string: str


@dataclass(frozen=True, slots=True)
class DialEnded:
    """A dial attempt finished (AMI ``DialEnd``) with ANSWER, NOANSWER, BUSY, CANCEL ..."""

    at: datetime
    channel: str
    linkedid: str
    dest_channel: str
    status: str


@dataclass(frozen=True, slots=True)
class ChannelHungUp:
    """A channel is gone (AMI ``Hangup``)."""

    at: datetime
    channel: str
    uniqueid: str
    linkedid: str
    cause: str = ""


@dataclass(frozen=True, slots=True)
class ChannelSeen:
    """A live channel reported by a resync (AMI ``CoreShowChannel``)."""

    at: datetime
    channel: str
    uniqueid: str
    linkedid: str
    caller_num: str
    caller_name: str
    exten: str
    state: str
    duration: timedelta


@dataclass(frozen=True, slots=True)
class ResyncStarted:
    """The shell is about to ask for the live channels (sent before ``CoreShowChannels``).

    Events keep arriving while the snapshot is taken; a call with events after this point is
    alive whatever the snapshot says, so only calls silent since then can end at `ResyncDone`.
    """

    at: datetime


@dataclass(frozen=True, slots=True)
class ResyncDone:
    """The resync snapshot is complete: every live channel has been seen."""

    at: datetime


ChannelEvent = (
    ChannelCreated
    | DialBegan
    | DialEnded
    | ChannelHungUp
    | ChannelSeen
    | ResyncStarted
    | ResyncDone
)

# --- effects --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HangupChannel:
    """Hang up exactly this channel with this cause."""

    channel: str
    cause: int
    linkedid: str
    rule_id: str


@dataclass(frozen=True, slots=True)
class RecordDecision:
    """Store a decision in the ledger."""

    record: DecisionRecord


@dataclass(frozen=True, slots=True)
class RecordOffence:
    """Price and store an offence in the ledger."""

    draft: OffenceDraft


@dataclass(frozen=True, slots=True)
class RecordCall:
    """Store a finished call (and its register entry, for long distance)."""

    summary: CallSummary


Effect = HangupChannel | RecordDecision | RecordOffence | RecordCall


def decision_record(
    decision: Decision, *, key: str, at: datetime, call: CallRef, layer: Layer
) -> DecisionRecord:
    """Return the ledger record of a decision given for a call by either layer."""
    return DecisionRecord(
        key=key,
        at=at,
        call=call,
        layer=layer,
        extension=decision.extension,
        person_id=decision.person_id,
        dialled=decision.classification.dialled,
        number=decision.classification.number,
        number_class=decision.number_class.value,
        verdict=decision.verdict.value,
        rule_id=decision.rule_id,
        reason_zh=decision.reason_zh,
        reason_en=decision.reason_en,
        approval_id=decision.approval_id,
        policy_version=decision.policy_version,
    )


def offence_of(
    decision: Decision, *, site: str, at: datetime, call: CallRef, outcome: Outcome
) -> OffenceDraft:
    """Return the offence a denied call is, keyed so both layers record it once."""
    dialled = decision.classification.dialled
    return OffenceDraft(
        key=f"{site}:{call.uniqueid}:{decision.rule_id}",
        rule_id=decision.rule_id,
        at=at,
        call=call,
        extension=decision.extension,
        person_id=decision.person_id,
        person_name=decision.person_name,
        department=decision.department,
        number=decision.classification.number,
        number_class=decision.number_class.value,
        outcome=outcome,
        detail_zh=f"{decision.extension} 拨打 {dialled}：{decision.reason_zh}",
        detail_en=f"{decision.extension} dialled {dialled}: {decision.reason_en}",
        policy_version=decision.policy_version,
    )


Judge = Callable[[CallAttempt, str, datetime], Decision]
"""Decide a call attempt: (attempt, caller's Uniqueid, time) -> Decision."""

OnDuty = Callable[[str, datetime], str | None]
"""Who the rota has on duty on a shared line at a time (person id), if anyone."""


def _nobody_on_duty(_line: str, _at: datetime) -> str | None:
    return None


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
class _Call:
    linkedid: str
    uniqueid: str
    channel: str
    extension: str
    caller_name: str
    started_at: datetime
    dialled: str = ""
    outbound_channel: str = ""
    decision: Decision | None = None
    answered_at: datetime | None = None
    outcome: str = ""
    direction: str = "internal"
    deferred: list[OffenceDraft] = field(default_factory=list)
    channels: set[str] = field(default_factory=set)
    last_event: int = 0
    rings: dict[str, _Ring] = field(default_factory=dict)


class CallTracker:
    """Fold channel events into calls and emit the effects the regulations require."""

    def __init__(
        self,
        policy: Policy,
        channels: ChannelPlan,
        judge: Judge,
        *,
        on_duty: OnDuty = _nobody_on_duty,
    ) -> None:
        self.policy = policy
        self.channels = channels
        self._judge = judge
        self._on_duty = on_duty
        self._calls: dict[str, _Call] = {}
        self._channel_call: dict[str, str] = {}
        self._resync_seen: set[str] = set()
        self._events = 0
        self._resync_mark: int | None = None
        self._resync_trunks: list[tuple[str, str]] = []
        self._occupancies: dict[str, _Occupancy] = {}

    # -- queries ------------------------------------------------------------------------------

    @property
    def live_calls(self) -> int:
        """How many calls are in progress."""
        return len(self._calls)

    def call_of(self, channel: str) -> str | None:
        """Return the Linkedid of the call ``channel`` belongs to, if tracked."""
        return self._channel_call.get(channel)

    # -- the reducer --------------------------------------------------------------------------

    def handle(self, event: ChannelEvent) -> list[Effect]:
        """Apply one event and return the effects it causes."""
        self._events += 1
        if isinstance(event, DialBegan):
            return self._dial_began(event)
        if isinstance(event, ChannelCreated):
            self._channel_created(event)
            return []
        if isinstance(event, DialEnded):
            return self._dial_ended(event)
        if isinstance(event, ChannelHungUp):
            return self._hung_up(event)
        if isinstance(event, ChannelSeen):
            return self._seen(event)
        if isinstance(event, ResyncStarted):
            self._resync_mark = self._events
            return []
        return self._resync_done(event)

    def handle_all(self, events: Iterable[ChannelEvent]) -> list[Effect]:
        """Apply events in order and return all their effects."""
        effects: list[Effect] = []
        for event in events:
            effects.extend(self.handle(event))
        return effects

    def _call_for(
        self,
        *,
        at: datetime,
        channel: str,
        uniqueid: str,
        linkedid: str,
        caller_num: str,
        caller_name: str,
    ) -> _Call:
        call = self._calls.get(linkedid)
        if call is None:
            extension = self.channels.phone_extension(channel) or caller_num
            call = _Call(linkedid, uniqueid, channel, extension, caller_name, at)
            self._calls[linkedid] = call
        call.channels.add(channel)
        call.last_event = self._events
        self._channel_call[channel] = linkedid
        return call

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

    def _dial_began(self, event: DialBegan) -> list[Effect]:
        call = self._call_for(
            at=event.at,
            channel=event.channel,
            uniqueid=event.uniqueid,
            linkedid=event.linkedid,
            caller_num=event.caller_num,
            caller_name=event.caller_name,
        )
        call.channels.add(event.dest_channel)
        self._channel_call[event.dest_channel] = call.linkedid
        trunk = self.channels.trunk_number(event.dest_channel, event.dial_string)
        if trunk is not None:
            number, with_access_code = trunk
            return self._outbound(call, event.dest_channel, number, with_access_code, event.at)
        extension = self.channels.phone_extension(event.dest_channel)
        if extension is not None:
            line = self.policy.line(extension)
            if line is not None and (
                line.answer_within is not None
                or line.occupancy_grace is not None
                or line.reject_rule
            ):
                call.rings[event.dest_channel] = _Ring(extension, event.dest_channel, event.at)
        return []

    def _outbound(
        self, call: _Call, trunk_channel: str, number: str, with_access_code: bool, at: datetime
    ) -> list[Effect]:
        call.direction = "outbound"
        call.outbound_channel = trunk_channel
        call.dialled = number
        if call.decision is not None:
            # A second trunk leg of a call already judged (failover route): judge it the same.
            decision = call.decision
        else:
            line = self.policy.line(call.extension)
            on_duty = self._on_duty(line.duty_line, at) if line and line.duty_line else None
            decision = self._judge(
                CallAttempt(
                    call.extension, number, with_access_code=with_access_code, on_duty=on_duty
                ),
                call.uniqueid,
                at,
            )
            call.decision = decision
        ref = CallRef(call.linkedid, call.uniqueid, call.channel)
        effects: list[Effect] = [
            RecordDecision(
                decision_record(
                    decision,
                    key=f"{self.policy.site}:{call.uniqueid}:ami:{trunk_channel}",
                    at=at,
                    call=ref,
                    layer=Layer.AMI,
                )
            )
        ]
        if decision.allowed:
            effects.extend(self._check_dispatch_use(call, decision, at))
            return effects
        enforce = self.policy.mode is Mode.ENFORCE
        outcome = Outcome.HUNG_UP if enforce else Outcome.MONITORED
        call.outcome = outcome.value
        if enforce:
            effects.append(
                HangupChannel(
                    trunk_channel, HANGUP_CAUSE_CALL_REJECTED, call.linkedid, decision.rule_id
                )
            )
        if decision.offence:
            draft = offence_of(
                decision,
                site=self.policy.site,
                at=at,
                call=CallRef(call.linkedid, call.uniqueid, call.channel),
                outcome=outcome,
            )
            rule = self.policy.rules.get(decision.rule_id)
            needs_charge = (
                rule is not None and rule.penalty is not None and rule.penalty.needs_charge
            )
            if needs_charge:
                if all(d.key != draft.key for d in call.deferred):
                    call.deferred.append(draft)
            else:
                effects.append(RecordOffence(draft))
        return effects

    def _check_dispatch_use(self, call: _Call, decision: Decision, at: datetime) -> list[Effect]:
        """DT-3: a dispatch phone calling a non-business number in operating hours."""
        line = self.policy.line(call.extension)
        if line is None or not line.operating or "DT-3" not in self.policy.rules:
            return []
        schedule = self.policy.schedules.get(line.operating)
        if schedule is None or not schedule.is_active(at):
            return []
        number = decision.classification.number
        business = any(number.startswith(prefix) for prefix in line.business_numbers)
        if business or decision.number_class in _ALWAYS_BUSINESS:
            return []
        person = self._person_for(line, call.extension, at)
        detail = (
            f"营运时间内用{line.name}拨打非业务号码 {decision.classification.dialled}",
            f"the {line.name} dialled a non-business number "
            f"{decision.classification.dialled} in operating hours",
        )
        draft = self._draft(
            call,
            "DT-3",
            at=at,
            extension=call.extension,
            person=person,
            key="dispatch",
            detail=detail,
            number=number,
        )
        return [RecordOffence(replace(draft, number_class=decision.number_class.value))]

    def _dial_ended(self, event: DialEnded) -> list[Effect]:
        linkedid = self._channel_call.get(event.channel) or event.linkedid
        call = self._calls.get(linkedid)
        if call is None:
            return []
        call.last_event = self._events
        if event.status == "ANSWER" and call.answered_at is None:
            call.answered_at = event.at
        ring = call.rings.pop(event.dest_channel, None)
        if ring is None:
            return []
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

    def _person_for(self, line: Line, extension: str, at: datetime) -> Person | None:
        """Return who answers for a line: the rota's person on duty, else the phone's owner."""
        person_id = (self._on_duty(line.duty_line, at) if line.duty_line else None) or ""
        return self.policy.people.get(person_id) or self.policy.person_at(extension)

    def _draft(
        self,
        call: _Call,
        rule_id: str,
        *,
        at: datetime,
        extension: str,
        person: Person | None,
        key: str,
        detail: tuple[str, str],
        outcome: Outcome = Outcome.MONITORED,
        number: str = "",
    ) -> OffenceDraft:
        return OffenceDraft(
            key=f"{self.policy.site}:{call.uniqueid}:{rule_id}:{key}",
            rule_id=rule_id,
            at=at,
            call=CallRef(call.linkedid, call.uniqueid, call.channel),
            extension=extension,
            person_id=person.id if person else "",
            person_name=person.name if person else "",
            department=person.department if person else "",
            number=number,
            outcome=outcome,
            detail_zh=detail[0],
            detail_en=detail[1],
            policy_version=self.policy.version,
        )

    def _check_answer_time(
        self, call: _Call, line: Line, ring: _Ring, event: DialEnded
    ) -> list[Effect]:
        """AN-1: a hotline or duty call not answered within its limit (three rings)."""
        if line.answer_within is None or "AN-1" not in self.policy.rules:
            return []
        rang = event.at - ring.began
        if event.status not in ("ANSWER", "NOANSWER"):
            return []  # the caller gave up, or the line was busy: not a late answer
        if rang <= timedelta(seconds=line.answer_within):
            return []
        seconds = int(rang.total_seconds())
        answered = event.status == "ANSWER"
        zh = (
            f"{line.name}响铃{seconds}秒{'后才接听' if answered else '无人接听'}"
            f"（应在{line.answer_within}秒内接听）"
        )
        en = (
            f"{line.name} rang {seconds}s "
            f"{'before it was answered' if answered else 'and was not answered'} "
            f"(limit {line.answer_within}s)"
        )
        person = self._person_for(line, ring.extension, ring.began)
        draft = self._draft(
            call,
            "AN-1",
            at=event.at,
            extension=ring.extension,
            person=person,
            key=ring.dest_channel,
            detail=(zh, en),
        )
        return [RecordOffence(draft)]

    def _check_rejection(
        self, call: _Call, line: Line, ring: _Ring, event: DialEnded
    ) -> list[Effect]:
        """DT-2: an internal call rejected (busy) on an idle duty phone."""
        if not line.reject_rule or event.status != "BUSY":
            return []
        caller_extension = self.channels.phone_extension(call.channel)
        if caller_extension is None:
            return []  # only internal calls count
        busy_elsewhere = any(
            self.channels.phone_extension(channel) == ring.extension
            for channel in self._channel_call
            if channel != ring.dest_channel
        )
        if busy_elsewhere:
            return []
        person = self._person_for(line, ring.extension, ring.began)
        detail = (
            f"{line.name}空闲时拒接{caller_extension}的内部来电",
            f"{line.name} rejected an internal call from {caller_extension} while idle",
        )
        draft = self._draft(
            call,
            line.reject_rule,
            at=event.at,
            extension=ring.extension,
            person=person,
            key=ring.dest_channel,
            detail=detail,
        )
        return [RecordOffence(draft)]

    # -- timers -------------------------------------------------------------------------------

    def next_due(self) -> datetime | None:
        """Return when `due` must next be called (an alarm-phone occupancy ends its grace)."""
        pending = [o.deadline for o in self._occupancies.values() if not o.flagged]
        return min(pending) if pending else None

    def due(self, now: datetime) -> list[Effect]:
        """Apply what is due at ``now``: calls occupying the alarm phone past their grace."""
        effects: list[Effect] = []
        for channel, occupancy in self._occupancies.items():
            if occupancy.flagged or occupancy.deadline > now:
                continue
            occupancy.flagged = True
            effects.extend(self._occupied(channel, occupancy, now))
        return effects

    def _occupied(self, channel: str, occupancy: _Occupancy, now: datetime) -> list[Effect]:
        """EM-1: an inbound call keeps the alarm phone busy past the grace period."""
        call = self._calls.get(occupancy.linkedid)
        line = self.policy.line(occupancy.extension)
        if call is None or line is None or "EM-1" not in self.policy.rules:
            return []
        caller = self.channels.phone_extension(call.channel)
        person = (self.policy.person_at(caller) if caller else None) or self._person_for(
            line, occupancy.extension, occupancy.answered_at
        )
        enforce = self.policy.mode is Mode.ENFORCE and line.cut_occupancy
        seconds = int((now - occupancy.answered_at).total_seconds())
        detail = (
            f"来电占用{line.name}超过{occupancy.grace}秒（已{seconds}秒）",
            f"an inbound call occupied the {line.name} for over {occupancy.grace}s ({seconds}s)",
        )
        effects: list[Effect] = []
        if enforce:
            effects.append(
                HangupChannel(channel, HANGUP_CAUSE_CALL_REJECTED, call.linkedid, "EM-1")
            )
        draft = self._draft(
            call,
            "EM-1",
            at=now,
            extension=caller or call.extension,
            person=person,
            key=f"occupied:{channel}",
            detail=detail,
            outcome=Outcome.HUNG_UP if enforce else Outcome.MONITORED,
            number=occupancy.extension,
        )
        effects.append(RecordOffence(draft))
        return effects

    def _hung_up(self, event: ChannelHungUp) -> list[Effect]:
        self._occupancies.pop(event.channel, None)
        linkedid = self._channel_call.pop(event.channel, None) or event.linkedid
        call = self._calls.get(linkedid)
        if call is None:
            return []
        call.channels.discard(event.channel)
        call.last_event = self._events
        if event.channel != call.channel and call.channels:
            return []
        return self._finish(call, event.at)

    def _finish(self, call: _Call, at: datetime) -> list[Effect]:
        self._calls.pop(call.linkedid, None)
        for channel in call.channels:
            if self._channel_call.get(channel) == call.linkedid:
                del self._channel_call[channel]
        effects: list[Effect] = []
        talk = at - call.answered_at if call.answered_at else timedelta(0)
        decision = call.decision
        for draft in call.deferred:
            charge = self.policy.tariff.charge(draft.number, draft.number_class, talk)
            effects.append(RecordOffence(replace(draft, charge=charge, talk_time=talk, at=at)))
        if call.direction == "outbound" and decision is not None:
            effects.append(
                RecordCall(
                    CallSummary(
                        call=CallRef(call.linkedid, call.uniqueid, call.channel),
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
                        answered_at=call.answered_at,
                        ended_at=at,
                        verdict=decision.verdict.value,
                        rule_id=decision.rule_id,
                        outcome=call.outcome or ("answered" if call.answered_at else "unanswered"),
                    )
                )
            )
        return effects

    # -- resync -------------------------------------------------------------------------------

    def _seen(self, event: ChannelSeen) -> list[Effect]:
        self._resync_seen.add(event.channel)
        call = self._calls.get(event.linkedid)
        known = call is not None and event.channel in call.channels
        call = self._call_for(
            at=event.at - event.duration,
            channel=event.channel,
            uniqueid=event.uniqueid,
            linkedid=event.linkedid,
            caller_num=event.caller_num,
            caller_name=event.caller_name,
        )
        if event.channel == call.channel and not call.dialled:
            call.dialled = event.exten
        phone = self.channels.phone_extension(event.channel)
        if phone is not None and self.channels.phone_extension(call.channel) is None:
            call.channel, call.uniqueid, call.extension = event.channel, event.uniqueid, phone
            call.caller_name = event.caller_name
            call.dialled = call.dialled or event.exten
        if known or call.decision is not None:
            return []
        route = self.channels.trunk_route(event.channel)
        if route is None:
            return []
        if event.state == "Up" and call.answered_at is None:
            call.answered_at = event.at - event.duration
        self._resync_trunks.append((call.linkedid, event.channel))
        return []

    def _resync_done(self, event: ResyncDone) -> list[Effect]:
        effects: list[Effect] = []
        for linkedid, channel in self._resync_trunks:
            call = self._calls.get(linkedid)
            route = self.channels.trunk_route(channel)
            if call is None or route is None or call.decision is not None:
                continue
            number = self.channels.number_in_channel(route, channel) or call.dialled
            effects.extend(self._outbound(call, channel, number, route.with_access_code, event.at))
        self._resync_trunks = []
        mark = self._events if self._resync_mark is None else self._resync_mark
        for call in list(self._calls.values()):
            if call.last_event > mark:
                continue  # events since the snapshot was asked for: alive whatever it says
            call.channels &= self._resync_seen
            if not call.channels:
                effects.extend(self._finish(call, event.at))
        for channel in [
            c for c, linkedid in self._channel_call.items() if linkedid not in self._calls
        ]:
            del self._channel_call[channel]
        self._resync_seen = set()
        self._resync_mark = None
        return effects
