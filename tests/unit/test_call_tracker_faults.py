"""The call tracker under faults: any interleaving of calls, drops, resyncs, failures, restarts.

A Hypothesis state machine plays a small PBX beside the tracker. Calls are shaped like the
captures (a phone, a ``Local/<number>@pstn`` pair, an answer after ringing, a hang-up), each
with identifiers of its own. Between any two events the connection may drop (events are then
lost and hangups in flight fail), the guard may resynchronise (``CoreShowChannels``: every live
channel, answered or not, with events of the PBX interleaving the snapshot), a hangup may be
accepted and carried out, refused, or lost with the connection (carried out or not), time may
pass, and the guard may restart (a new tracker, its open hangups restored from the ledger at
once, or later when the ledger was down at start-up).

What must hold whatever happened:

* each offence key is emitted once by a tracker, the ledger holds one offence per forbidden
  call, charged to the caller (the guard on duty for the alarm line), nothing for other calls;
* every live forbidden trunk leg the tracker has been shown stays an open hangup until Asterisk
  reports it gone, and is hung up again after a failed hangup (once due) and at every resync;
* no ending says ``hung_up`` for a call Asterisk answered, nor ``not_stopped`` for one it did
  not; an emergency call is never hung up;
* once everything has calmed down, every offence of a call has its ending.

Runs with the suite's Hypothesis profile (``ci``: a fixed budget of examples).
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from pbxguard.domain.call_events import (
    ChannelCreated,
    ChannelHungUp,
    ChannelSeen,
    ChannelStateChanged,
    ConnectionLost,
    DialBegan,
    DialEnded,
    HangupAccepted,
    HangupFailed,
    IntentsRestored,
    OpenCut,
    ResyncDone,
    ResyncStarted,
    Tick,
    TrackerEvent,
)
from pbxguard.domain.effects import (
    Effect,
    HangupChannel,
    RecordCall,
    RecordOffence,
    RecordOffenceOutcome,
)
from pbxguard.domain.policy import Mode
from pbxguard.domain.records import Ending, OffenceDraft, OffenceOutcome, Outcome, final_outcome
from tests.unit.test_call_tracker import make_tracker, t

START = t(1795400000.0)
#: Seconds between events: a few distinct values shrink fast and cover the timers.
GAPS = st.sampled_from([0.01, 0.5, 1.0, 3.0, 6.0])


@dataclass(frozen=True, slots=True)
class Shape:
    """A call of the captures: who dials what, and what the regulations make of it."""

    extension: str
    name: str
    number: str
    rule: str = ""
    person: str = ""
    emergency: bool = False


SHAPES = (
    Shape("2002", "Staff 2002", "16812345678", "PR-1", "staff-2002"),
    Shape("2001", "Staff 2001", "00441632960123", "LD-2", "staff-2001"),
    Shape("2001", "Staff 2001", "01087654321", "LD-2", "staff-2001"),
    Shape("2001", "Staff 2001", "0085223456789", "LD-2", "staff-2001"),
    Shape("8000", "Guard room alarm", "13800138000", "EM-1", "guard-li"),
    Shape("8000", "Guard room alarm", "110", emergency=True),
    Shape("8000", "Guard room alarm", "119", emergency=True),
    Shape("9001", "Department head", "02787654321"),
)


@dataclass(slots=True)
class PbxCall:
    """One call as the PBX knows it."""

    shape: Shape
    linkedid: str
    phone: str
    trunk: str
    local2: str
    uniqueids: dict[str, str]
    began: datetime
    answered_at: datetime | None = None
    ended: bool = False
    answered_before_end: bool = False

    @property
    def forbidden(self) -> bool:
        return bool(self.shape.rule)

    @property
    def channels(self) -> tuple[str, str, str]:
        return (self.phone, self.trunk, self.local2)


@dataclass(slots=True)
class Ledger:
    """What the database keeps: one offence per key, the first ending per key."""

    offences: dict[str, OffenceDraft] = field(default_factory=dict)
    outcomes: dict[str, OffenceOutcome] = field(default_factory=dict)
    calls: list[RecordCall] = field(default_factory=list)

    def open_cuts(self) -> tuple[OpenCut, ...]:
        """The hangups a restart restores: ordered, ending unknown."""
        return tuple(
            OpenCut(key, d.call.linkedid if d.call else "", d.rule_id, d.at)
            for key, d in self.offences.items()
            if d.outcome is Outcome.CUT_ORDERED and key not in self.outcomes
        )


class TrackerUnderFaults(RuleBasedStateMachine):
    """A PBX, a connection that breaks, a guard that restarts, and the tracker in between."""

    def __init__(self) -> None:
        super().__init__()
        self.tracker = make_tracker(Mode.ENFORCE)
        self.now = START
        self.numbers = itertools.count(1)
        self.calls: list[PbxCall] = []
        self.ledger = Ledger()
        self.connected = True
        self.resyncing = False
        self.listing: list[tuple[PbxCall, str, str]] | None = None
        self.sent_since_snapshot: set[str] = set()
        self.shown: set[str] = set()
        self.in_flight: list[str] = []
        self.awaiting_retry: set[str] = set()
        self.emitted: Counter[str] = Counter()
        self.restore_later: tuple[OpenCut, ...] | None = None

    # -- plumbing -----------------------------------------------------------------------------

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    def feed(self, event: TrackerEvent) -> list[Effect]:
        """Hand the tracker one event and file its effects as the shell would."""
        effects = self.tracker.handle(event)
        for effect in effects:
            match effect:
                case HangupChannel():
                    self.in_flight.append(effect.channel)
                    self.awaiting_retry.discard(effect.channel)
                    self.sent_since_snapshot.add(effect.channel)
                    assert not self.call_of(effect.channel).shape.emergency, effect
                case RecordOffence():
                    key = effect.draft.key
                    self.emitted[key] += 1
                    assert self.emitted[key] == 1, f"offence {key} emitted twice"
                    self.ledger.offences.setdefault(key, effect.draft)
                case RecordOffenceOutcome():
                    self.ledger.outcomes.setdefault(effect.outcome.key, effect.outcome)
                case RecordCall():
                    self.ledger.calls.append(effect)
        return effects

    def pbx_event(self, event: TrackerEvent) -> None:
        """Something happened on the PBX: the tracker hears of it only while connected."""
        if self.connected:
            self.feed(event)

    def call_of(self, channel: str) -> PbxCall:
        return next(c for c in self.calls if channel in c.channels)

    def live(self) -> list[PbxCall]:
        return [c for c in self.calls if not c.ended]

    def end_call(self, call: PbxCall, cause: str) -> None:
        """The PBX hangs the call up: its legs go, the trunk first."""
        at = self.advance(0.01)
        if call.answered_at is None and cause == "21":
            self.pbx_event(DialEnded(at, call.phone, call.linkedid, call.trunk, "NOANSWER"))
        call.ended = True
        call.answered_before_end = call.answered_at is not None
        for channel in (call.trunk, call.local2, call.phone):
            uid = call.uniqueids[channel]
            self.pbx_event(ChannelHungUp(at, channel, uid, call.linkedid, cause))
            self.shown.discard(channel)
        self.in_flight = [c for c in self.in_flight if c not in call.channels]
        self.awaiting_retry -= set(call.channels)

    # -- the PBX ----------------------------------------------------------------------------

    @initialize()
    def nothing_yet(self) -> None:
        """The guard starts connected, with no call live."""

    @rule(shape=st.sampled_from(SHAPES), gap=GAPS)
    def a_call_begins(self, shape: Shape, gap: float) -> None:
        at = self.advance(gap)
        n = next(self.numbers)
        linkedid = f"1795400000.{n * 3}"
        phone = f"PJSIP/{shape.extension}-{n:08x}"
        trunk = f"Local/{shape.number}@pstn-{n:08x};1"
        local2 = trunk[:-1] + "2"
        uids = {
            phone: linkedid,
            trunk: f"1795400000.{n * 3 + 1}",
            local2: f"1795400000.{n * 3 + 2}",
        }
        call = PbxCall(shape, linkedid, phone, trunk, local2, uids, at)
        self.calls.append(call)
        for channel, caller in (
            (phone, shape.extension),
            (trunk, "<unknown>"),
            (local2, "<unknown>"),
        ):
            self.pbx_event(
                ChannelCreated(at, channel, uids[channel], linkedid, caller, caller, shape.number)
            )
        self.pbx_event(
            DialBegan(at, phone, linkedid, linkedid, shape.extension, shape.name, shape.number,
                      trunk, uids[trunk], f"{shape.number}@pstn")
        )  # fmt: skip
        if self.connected:
            self.shown.add(trunk)

    @precondition(lambda self: any(c.answered_at is None for c in self.live()))
    @rule(data=st.data(), gap=GAPS)
    def the_far_end_answers(self, data: st.DataObject, gap: float) -> None:
        call = data.draw(st.sampled_from([c for c in self.live() if c.answered_at is None]))
        at = self.advance(gap)
        call.answered_at = at
        self.pbx_event(
            ChannelStateChanged(at, call.trunk, call.uniqueids[call.trunk], call.linkedid, "Up")
        )
        self.pbx_event(DialEnded(at, call.phone, call.linkedid, call.trunk, "ANSWER"))

    @precondition(lambda self: bool(self.live()))
    @rule(data=st.data(), gap=GAPS)
    def the_caller_hangs_up(self, data: st.DataObject, gap: float) -> None:
        call = data.draw(st.sampled_from(self.live()))
        self.advance(gap)
        self.end_call(call, "16")

    # -- the guard's hangups ------------------------------------------------------------------

    @precondition(lambda self: bool(self.in_flight))
    @rule(fate=st.sampled_from(["carried out", "refused", "lost", "carried out, reply lost"]))
    def a_hangup_is_answered(self, fate: str) -> None:
        channel = self.in_flight.pop(0)
        call = self.call_of(channel)
        at = self.advance(0.005)
        if call.ended:
            # Asterisk: "No such channel"; the leg's own Hangup decides.
            self.feed(HangupFailed(at, channel, "No such channel"))
            return
        if fate == "carried out":
            self.feed(HangupAccepted(at, channel))
            self.end_call(call, "21")
        elif fate == "refused":
            self.feed(HangupFailed(at, channel, "Permission denied"))
            self.awaiting_retry.add(channel)
        else:
            # The connection breaks with the action; the PBX may have carried it out.
            self.connection_breaks()
            if fate == "carried out, reply lost":
                self.end_call(call, "21")

    @rule()
    def connection_breaks(self) -> None:
        if not self.connected:
            return
        at = self.advance(0.01)
        for channel in self.in_flight:
            self.feed(HangupFailed(at, channel, "connection lost", connection_lost=True))
        self.in_flight.clear()
        # What was waiting for a retry goes again with the next resync instead.
        self.awaiting_retry.clear()
        self.feed(ConnectionLost(at))
        self.connected = False
        self.resyncing = False
        self.listing = None
        self.shown.clear()

    @precondition(lambda self: not self.connected)
    @rule(gap=GAPS)
    def reconnect_and_ask_for_the_channels(self, gap: float) -> None:
        """Logged in again: the resync starts; the PBX goes on while it lists its channels."""
        self.connected = True
        self.feed(ResyncStarted(self.advance(gap)))
        self.resyncing = True
        self.listing = None
        self.sent_since_snapshot = set()

    @precondition(lambda self: self.resyncing and self.listing is None)
    @rule()
    def the_pbx_lists_its_channels(self) -> None:
        """``CoreShowChannels`` as the PBX stands now (the guard takes it in once complete)."""
        self.listing = [
            (call, channel, "Up" if call.answered_at is not None else "Ring")
            for call in self.live()
            for channel in call.channels
        ]

    @precondition(lambda self: self.listing is not None)
    @rule()
    def resync_done(self) -> None:
        """Every forbidden leg listed and still live was hung up again since the resync began."""
        assert self.listing is not None
        listing, self.listing, self.resyncing = self.listing, None, False
        at = self.advance(0.01)
        for call, channel, state in listing:
            caller = call.shape.extension if channel == call.phone else "<unknown>"
            self.feed(
                ChannelSeen(at, channel, call.uniqueids[channel], call.linkedid, caller, caller,
                            call.shape.number, state, at - call.began)
            )  # fmt: skip
        self.feed(ResyncDone(at))
        listed = {channel for _, channel, _ in listing}
        for call in self.live():
            if call.trunk in listed:
                self.shown.add(call.trunk)
                if call.forbidden:
                    assert call.trunk in self.sent_since_snapshot, (
                        f"{call.trunk} live and forbidden, not hung up again at the resync"
                    )

    @precondition(lambda self: bool(self.awaiting_retry) and self.connected)
    @rule()
    def retries_fall_due(self) -> None:
        """Every refused hangup of a live leg is sent again once its retry is due."""
        waiting = set(self.awaiting_retry)
        self.feed(Tick(self.advance(6.0)))
        for channel in waiting:
            assert channel not in self.awaiting_retry, f"{channel} never sent again"

    @rule(gap=GAPS)
    def time_passes(self, gap: float) -> None:
        self.feed(Tick(self.advance(gap)))

    @rule(database_down=st.booleans())
    def the_guard_restarts(self, database_down: bool) -> None:
        """kill -9 and start again: hangups in flight are lost with the process."""
        self.in_flight.clear()
        self.awaiting_retry.clear()
        self.connected = False
        self.resyncing = False
        self.listing = None
        self.shown.clear()
        self.emitted.clear()
        self.tracker = make_tracker(Mode.ENFORCE)
        cuts = self.ledger.open_cuts()
        at = self.advance(1.0)
        if database_down:
            # Read from the ledger once it answers again, maybe after the first resync.
            self.restore_later = cuts
        else:
            self.feed(IntentsRestored(at, cuts))

    @precondition(lambda self: self.restore_later is not None)
    @rule()
    def the_ledger_answers_again(self) -> None:
        cuts, self.restore_later = self.restore_later, None
        assert cuts is not None
        self.feed(IntentsRestored(self.advance(0.1), cuts))

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def every_live_forbidden_leg_shown_is_an_open_hangup(self) -> None:
        open_cuts = set(self.tracker.open_cuts)
        for call in self.live():
            if call.forbidden and call.trunk in self.shown:
                assert call.trunk in open_cuts, f"{call.trunk} live and forbidden, no hangup open"

    @invariant()
    def the_ledger_charges_each_forbidden_call_once_to_the_caller(self) -> None:
        calls = {c.linkedid: c for c in self.calls}
        for key, draft in self.ledger.offences.items():
            assert draft.call is not None
            call = calls[draft.call.linkedid]
            assert call.forbidden, f"offence {key} for a call that breaks no rule"
            assert (draft.rule_id, draft.person_id) == (call.shape.rule, call.shape.person)
        per_call = Counter(d.call.linkedid for d in self.ledger.offences.values() if d.call)
        assert all(n == 1 for n in per_call.values()), per_call

    @invariant()
    def no_ending_claims_what_asterisk_did_not_report(self) -> None:
        calls = {c.linkedid: c for c in self.calls}
        for key, outcome in self.ledger.outcomes.items():
            draft = self.ledger.offences[key]
            assert draft.call is not None
            call = calls[draft.call.linkedid]
            final = final_outcome(draft.outcome, outcome.ending)
            answered = call.answered_at is not None
            if final is Outcome.HUNG_UP:
                assert not answered, f"{key}: hung_up, but Asterisk answered it"
            if outcome.ending is Ending.ANSWERED:
                assert answered, f"{key}: answered, but Asterisk never answered it"
        for record in self.ledger.calls:
            summary = record.summary
            call = calls[summary.call.linkedid]
            if summary.outcome == Outcome.HUNG_UP.value:
                assert call.answered_at is None, f"{summary.call.linkedid}: hung_up, was answered"

    def teardown(self) -> None:
        """Let everything calm down: then every offence has its ending."""
        if self.restore_later is not None:
            self.the_ledger_answers_again()
        while self.in_flight:
            self.a_hangup_is_answered("carried out")
        if not self.connected:
            self.reconnect_and_ask_for_the_channels(1.0)
        if self.resyncing and self.listing is None:
            self.the_pbx_lists_its_channels()
        if self.listing is not None:
            self.resync_done()
        while self.in_flight:
            self.a_hangup_is_answered("carried out")
        for call in self.live():
            self.end_call(call, "16")
        unsettled = set(self.ledger.offences) - set(self.ledger.outcomes)
        assert not unsettled, f"offences whose ending was never recorded: {unsettled}"


TestTrackerUnderFaults = TrackerUnderFaults.TestCase


# --- found by the machine above, kept as plain examples --------------------------------------


def intl_call(n: int, at: datetime) -> tuple[list[TrackerEvent], str, str]:
    linkedid = f"1795400000.{n * 3}"
    phone, trunk = f"PJSIP/2001-{n:08x}", f"Local/00441632960123@pstn-{n:08x};1"
    events: list[TrackerEvent] = [
        ChannelCreated(at, phone, linkedid, linkedid, "2001", "Staff 2001", "00441632960123"),
        DialBegan(at, phone, linkedid, linkedid, "2001", "Staff 2001", "00441632960123", trunk,
                  f"1795400000.{n * 3 + 1}", "00441632960123@pstn"),
    ]  # fmt: skip
    return events, linkedid, trunk


def test_hangups_restored_after_the_resync_are_closed_when_their_call_is_gone() -> None:
    """A restart while the ledger was down learns its open hangups only after the resync."""
    first = make_tracker(Mode.ENFORCE)
    events, linkedid, _ = intl_call(1, START)
    [offence] = [e for e in first.handle_all(events) if isinstance(e, RecordOffence)]
    # The hangup was carried out, the guard died before it heard so; it starts again.
    second = make_tracker(Mode.ENFORCE)
    assert second.handle(ResyncDone(START + timedelta(seconds=2))) == []
    cut = OpenCut(offence.draft.key, linkedid, "LD-2", offence.draft.at)
    effects = second.handle(IntentsRestored(START + timedelta(seconds=3), (cut,)))
    assert [e.outcome.key for e in effects if isinstance(e, RecordOffenceOutcome)] == [
        offence.draft.key
    ]
    [ending] = [e.outcome for e in effects if isinstance(e, RecordOffenceOutcome)]
    assert ending.ending is Ending.UNOBSERVED


def test_hangups_restored_after_the_resync_wait_for_their_live_call() -> None:
    first = make_tracker(Mode.ENFORCE)
    events, linkedid, trunk = intl_call(1, START)
    [offence] = [e for e in first.handle_all(events) if isinstance(e, RecordOffence)]
    second = make_tracker(Mode.ENFORCE)
    at = START + timedelta(seconds=2)
    listing = [
        ChannelSeen(at, f"PJSIP/2001-{1:08x}", linkedid, linkedid, "2001", "Staff 2001",
                    "00441632960123", "Ring", timedelta(seconds=2)),
        ChannelSeen(at, trunk, "1795400000.4", linkedid, "<unknown>", "<unknown>",
                    "00441632960123", "Ring", timedelta(seconds=2)),
        ResyncDone(at),
    ]  # fmt: skip
    resync = second.handle_all(listing)
    assert [e.channel for e in resync if isinstance(e, HangupChannel)] == [trunk]
    cut = OpenCut(offence.draft.key, linkedid, "LD-2", offence.draft.at)
    # The call is live and judged again under the same key: its own ending will follow.
    assert second.handle(IntentsRestored(at + timedelta(seconds=1), (cut,))) == []
    gone = second.handle(
        ChannelHungUp(at + timedelta(seconds=2), trunk, "1795400000.4", linkedid, "21")
    )
    assert [e.outcome.ending for e in gone if isinstance(e, RecordOffenceOutcome)] == [
        Ending.BEFORE_ANSWER
    ]


def premium_call(n: int, at: datetime) -> tuple[list[TrackerEvent], PbxCall]:
    """2002 dials 168…: the phone, the Local pair and the DialBegin, as in staff-premium-168."""
    shape = SHAPES[0]
    linkedid = f"1795400000.{n * 3}"
    phone, trunk = f"PJSIP/2002-{n:08x}", f"Local/16812345678@pstn-{n:08x};1"
    local2 = trunk[:-1] + "2"
    uids = {phone: linkedid, trunk: f"1795400000.{n * 3 + 1}", local2: f"1795400000.{n * 3 + 2}"}
    call = PbxCall(shape, linkedid, phone, trunk, local2, uids, at)
    events: list[TrackerEvent] = [
        ChannelCreated(at, phone, linkedid, linkedid, "2002", "Staff 2002", "16812345678"),
        ChannelCreated(at, trunk, uids[trunk], linkedid, "<unknown>", "<unknown>", "16812345678"),
        ChannelCreated(at, local2, uids[local2], linkedid, "<unknown>", "<unknown>", "16812345678"),
        DialBegan(at, phone, linkedid, linkedid, "2002", "Staff 2002", "16812345678", trunk,
                  uids[trunk], "16812345678@pstn"),
    ]  # fmt: skip
    return events, call


def answered(call: PbxCall, at: datetime) -> list[TrackerEvent]:
    return [
        ChannelStateChanged(at, call.trunk, call.uniqueids[call.trunk], call.linkedid, "Up"),
        DialEnded(at, call.phone, call.linkedid, call.trunk, "ANSWER"),
    ]


def hung_up(call: PbxCall, at: datetime, cause: str = "16") -> list[TrackerEvent]:
    return [
        ChannelHungUp(at, channel, call.uniqueids[channel], call.linkedid, cause)
        for channel in (call.trunk, call.local2, call.phone)
    ]


def listed(call: PbxCall, at: datetime, state: str) -> list[TrackerEvent]:
    return [
        ChannelSeen(at, channel, call.uniqueids[channel], call.linkedid,
                    "2002" if channel == call.phone else "<unknown>", "", "16812345678", state,
                    at - call.began)
        for channel in call.channels
    ]  # fmt: skip


def kinds(effects: list[Effect], kind: type[Effect]) -> list[Effect]:
    return [e for e in effects if isinstance(e, kind)]


def test_a_known_leg_that_hangs_up_while_the_channels_are_listed_stays_gone() -> None:
    """The listing was taken before the hangup the guard has already applied: no second life.

    Before: the call came back at the end of the resync, judged and recorded again, and hung up
    every few seconds for ever with "No such channel"; its ending never reached the ledger.
    """
    tracker = make_tracker(Mode.ENFORCE)
    events, call = premium_call(1, START)
    first = tracker.handle_all(events)
    assert len(kinds(first, RecordOffence)) == 1
    lost = START + timedelta(seconds=0.1)
    tracker.handle_all([HangupFailed(lost, call.trunk, "lost", connection_lost=True)])
    tracker.handle(ConnectionLost(lost))
    at = START + timedelta(seconds=1)
    tracker.handle(ResyncStarted(at))
    ended = tracker.handle_all(hung_up(call, at + timedelta(seconds=0.2)))
    assert len(kinds(ended, RecordOffenceOutcome)) == 1
    done = tracker.handle_all([*listed(call, at, "Ring"), ResyncDone(at + timedelta(seconds=0.3))])
    assert done == []
    assert tracker.live_calls == 0
    assert tracker.open_cuts == ()


def test_what_a_call_unknown_until_the_listing_did_meanwhile_is_kept() -> None:
    """A call that began while the guard was away, answered and ended while it was listed.

    Before: its answer and its end were dropped (the call was not known yet), the listing
    brought it to life: recorded as cut before any answer ("hung_up") although Asterisk had
    answered it, and hung up for ever.
    """
    tracker = make_tracker(Mode.ENFORCE)
    tracker.handle(ConnectionLost(START))
    _, call = premium_call(1, START + timedelta(seconds=1))  # unseen: nobody connected
    at = START + timedelta(seconds=2)
    tracker.handle(ResyncStarted(at))
    meanwhile = [
        *answered(call, at + timedelta(seconds=0.1)),
        *hung_up(call, at + timedelta(seconds=0.4)),
    ]
    assert tracker.handle_all(meanwhile) == []
    done = tracker.handle_all([*listed(call, at, "Ring"), ResyncDone(at + timedelta(seconds=0.5))])
    [offence] = kinds(done, RecordOffence)
    [ending] = kinds(done, RecordOffenceOutcome)
    [record] = kinds(done, RecordCall)
    assert isinstance(offence, RecordOffence)
    assert isinstance(ending, RecordOffenceOutcome)
    assert isinstance(record, RecordCall)
    assert ending.outcome.key == offence.draft.key
    assert ending.outcome.ending is Ending.ANSWERED
    assert record.summary.outcome == Outcome.NOT_STOPPED.value
    assert kinds(done, HangupChannel) == []  # nothing left to hang up
    assert tracker.live_calls == 0


def test_an_answer_missed_while_away_is_never_reported_as_stopped() -> None:
    """The hangup was lost with the connection; answered while away; gone before the listing.

    Before: the leg's Hangup, seen before the listing was taken in, was taken for an end
    before any answer: the ledger said "hung up" for a call Asterisk had answered.
    """
    tracker = make_tracker(Mode.ENFORCE)
    events, call = premium_call(1, START)
    tracker.handle_all(events)
    lost = START + timedelta(seconds=0.1)
    tracker.handle(HangupFailed(lost, call.trunk, "lost", connection_lost=True))
    tracker.handle(ConnectionLost(lost))
    at = START + timedelta(seconds=4)  # answered at +3 s, unseen
    tracker.handle(ResyncStarted(at))
    ended = tracker.handle_all(hung_up(call, at + timedelta(seconds=0.1)))
    [ending] = kinds(ended, RecordOffenceOutcome)
    [record] = kinds(ended, RecordCall)
    assert isinstance(ending, RecordOffenceOutcome)
    assert isinstance(record, RecordCall)
    assert ending.outcome.ending is Ending.UNOBSERVED
    assert final_outcome(Outcome.CUT_ORDERED, ending.outcome.ending) is Outcome.UNOBSERVED
    assert record.summary.outcome == Outcome.UNOBSERVED.value
    assert tracker.handle_all([*listed(call, at, "Up"), ResyncDone(at)]) == []


def test_a_cut_call_that_ended_out_of_sight_is_not_recorded_as_hung_up() -> None:
    """Before: its call record said "hung_up" though nobody saw how it ended."""
    tracker = make_tracker(Mode.ENFORCE)
    events, call = premium_call(1, START)
    tracker.handle_all(events)
    lost = START + timedelta(seconds=0.1)
    tracker.handle(HangupFailed(lost, call.trunk, "lost", connection_lost=True))
    tracker.handle(ConnectionLost(lost))
    at = START + timedelta(seconds=9)
    done = tracker.handle_all([ResyncStarted(at), ResyncDone(at)])
    [ending] = kinds(done, RecordOffenceOutcome)
    [record] = kinds(done, RecordCall)
    assert isinstance(ending, RecordOffenceOutcome)
    assert isinstance(record, RecordCall)
    assert ending.outcome.ending is Ending.UNOBSERVED
    assert record.summary.outcome == Outcome.UNOBSERVED.value
