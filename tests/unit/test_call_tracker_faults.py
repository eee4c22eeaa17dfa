"""The call tracker under faults: what Asterisk does while the guard is away or catching up.

Calls are shaped like the captures (a phone, a ``Local/<number>@pstn`` pair, an answer after
ringing, a hang-up), each with identifiers of its own. Asterisk goes on while the guard reads
its live channels after a reconnection: whatever happens then, no call comes back to life, no
answer is lost, and no ending says "hung up" for a call Asterisk answered or nobody saw end.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from hypothesis import strategies as st

from pbxguard.domain.call_events import (
    ChannelCreated,
    ChannelHungUp,
    ChannelSeen,
    ChannelStateChanged,
    ConnectionLost,
    DialBegan,
    DialEnded,
    HangupFailed,
    ResyncDone,
    ResyncStarted,
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
from pbxguard.domain.records import Ending, Outcome, final_outcome
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
