"""The events the call tracker takes in: AMI channel events, verdicts, actions' results, time.

The shell translates AMI messages into these (``pbxguard.app.ami_events``) and adds its own:
the verdicts FastAGI gave, hangups that failed, approvals and policy changes, the open hangups a
restart inherits, and ticks of the clock. All are plain values with the time they happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pbxguard.domain.approvals import Approval
from pbxguard.domain.budgets import SpendLine
from pbxguard.domain.channels import ChannelPlan
from pbxguard.domain.dnd import DoNotDisturb
from pbxguard.domain.evaluate import Decision
from pbxguard.domain.policy import Policy
from pbxguard.domain.records import CallRef, Lock


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
class ChannelStateChanged:
    """A channel's state changed (AMI ``Newstate``); ``Up`` on a trunk leg is an answer."""

    at: datetime
    channel: str
    uniqueid: str
    linkedid: str
    state: str


@dataclass(frozen=True, slots=True)
class DialBegan:
    """A channel started dialling another (AMI ``DialBegin``).

    ``channel`` is empty when nothing dialled it (an AMI ``Originate``): the call is then
    known by the destination's identifiers alone.
    """

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
    dest_linkedid: str = ""


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
    """A live channel reported by a resync (AMI ``CoreShowChannel``).

    ``duration`` is the channel's age; ``state`` its ``ChannelStateDesc`` (``Up`` once
    answered); ``connected_num`` the other party's number as the channel knows it.
    """

    at: datetime
    channel: str
    uniqueid: str
    linkedid: str
    caller_num: str
    caller_name: str
    exten: str
    state: str
    duration: timedelta
    connected_num: str = ""
    bridge_id: str = ""


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


@dataclass(frozen=True, slots=True)
class ConnectionLost:
    """The AMI session ended: actions in flight are lost, events may be missed until a resync."""

    at: datetime


@dataclass(frozen=True, slots=True)
class VerdictGiven:
    """The pre-dial layer gave a verdict for a channel (FastAGI ``authorize`` or ``pin``).

    ``call`` holds the call's Linkedid (the dialplan passes it; the channel's Uniqueid when it
    does not) and the dialling channel's Uniqueid and name.
    """

    at: datetime
    call: CallRef
    decision: Decision


@dataclass(frozen=True, slots=True)
class HangupAccepted:
    """Asterisk answered a hangup with success (the leg's own ``Hangup`` event still decides)."""

    at: datetime
    channel: str


@dataclass(frozen=True, slots=True)
class HangupFailed:
    """A hangup did not happen: an error reply, no reply, or the connection was lost.

    With ``connection_lost`` the hangup is sent again after the next resync; otherwise after a
    short backoff, for as long as the leg lives.
    """

    at: datetime
    channel: str
    reason: str
    connection_lost: bool = False


@dataclass(frozen=True, slots=True)
class ApprovalsChanged:
    """The approvals on record changed (a grant, a revocation, a refresh from the ledger)."""

    at: datetime
    approvals: tuple[Approval, ...]


@dataclass(frozen=True, slots=True)
class PolicyChanged:
    """A new policy was loaded; calls in progress keep the decisions they already have."""

    at: datetime
    policy: Policy
    channels: ChannelPlan


@dataclass(frozen=True, slots=True)
class OpenCut:
    """A hangup ordered by an earlier run whose call's ending was never learnt."""

    key: str
    linkedid: str
    rule_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class IntentsRestored:
    """The open hangups of the previous run, from the ledger and the journal (at start-up)."""

    at: datetime
    cuts: tuple[OpenCut, ...]


@dataclass(frozen=True, slots=True)
class DoNotDisturbChanged:
    """The site's do-not-disturb list changed (a new version was imported), or is gone."""

    at: datetime
    numbers: DoNotDisturb | None


@dataclass(frozen=True, slots=True)
class SpendLoaded:
    """The month's spend as the ledger has it (budgets), at start-up and for other sites.

    ``lines`` replace what the tracker held: this site's spend (at start-up: the database and
    the journal's calls not yet in it), or with ``foreign`` the other sites' spend, reloaded
    now and then for budgets kept for every site.
    """

    at: datetime
    lines: tuple[SpendLine, ...]
    foreign: bool = False


@dataclass(frozen=True, slots=True)
class LocksLoaded:
    """The velocity locks as the ledger has them: those in force, and those lifted early.

    At start-up ``active`` restores the locks of the previous run; later refreshes bring the
    lifts written by ``pbxguard lock lift``.
    """

    at: datetime
    active: tuple[Lock, ...]
    lifted: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Tick:
    """Time has passed: apply what is due (hangup retries, alarm-phone occupancy)."""

    at: datetime


ChannelEvent = (
    ChannelCreated
    | ChannelStateChanged
    | DialBegan
    | DialEnded
    | ChannelHungUp
    | ChannelSeen
    | ResyncStarted
    | ResyncDone
)

TrackerEvent = (
    ChannelEvent
    | ConnectionLost
    | VerdictGiven
    | HangupAccepted
    | HangupFailed
    | ApprovalsChanged
    | PolicyChanged
    | IntentsRestored
    | SpendLoaded
    | LocksLoaded
    | Tick
    | DoNotDisturbChanged
)
