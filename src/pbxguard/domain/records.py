"""What the guard writes down: the facts of the ledger, as plain values.

Every fact carries an idempotency ``key`` (the same fact written twice, after a reconnect, a
resync or a restart, is stored once) and, when it is about a call, the AMI identifiers
(Linkedid, Uniqueid, channel) so an auditor can match a ledger row to the PBX's own records.

The facts are written ahead: an offence reaches the write-ahead journal before the guard acts
on it (hangs up the call), and what then happened to the call is a later, separate fact
(`OffenceOutcome`) derived from what Asterisk reports, never from the reply to the guard's own
action. `final_outcome` combines the two for reports.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from pbxguard.domain.numbers import NumberClass
from pbxguard.domain.penalties import ZERO
from pbxguard.domain.policy import Rule


class Layer(enum.StrEnum):
    """Which enforcement layer made a decision."""

    AGI = "agi"  # before the call rang, from the dialplan
    AMI = "ami"  # the safety net watching channels


class Outcome(enum.StrEnum):
    """What happened to a forbidden call.

    An offence is written with what the guard did (``refused``, ``cut_ordered``,
    ``monitored``); the other values are final outcomes derived from the call's ending.
    """

    REFUSED = "refused"  # the dialplan refused it before it rang
    CUT_ORDERED = "cut_ordered"  # the guard ordered a hangup; how the call ended follows
    HUNG_UP = "hung_up"  # the call ended before anyone answered
    NOT_STOPPED = "not_stopped"  # Asterisk reported the call answered: it was not stopped
    MONITORED = "monitored"  # monitor mode: only recorded
    UNOBSERVED = "unobserved"  # the call ended while the guard could not see the PBX


class Ending(enum.StrEnum):
    """How an outbound call attempt ended, as Asterisk reported it."""

    BEFORE_ANSWER = "before_answer"  # the trunk leg hung up before any answer
    ANSWERED = "answered"  # the far end answered; ``talk_time`` says how long
    UNOBSERVED = "unobserved"  # it was gone by the time the guard could look again


@dataclass(frozen=True, slots=True)
class CallRef:
    """The PBX's identifiers for one call."""

    linkedid: str
    uniqueid: str
    channel: str


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """A verdict given for a call, by either layer."""

    key: str
    at: datetime
    call: CallRef
    layer: Layer
    extension: str
    person_id: str
    dialled: str
    number: str
    number_class: str
    verdict: str
    rule_id: str
    reason_zh: str
    reason_en: str
    approval_id: str
    policy_version: str


@dataclass(frozen=True, slots=True)
class OffenceDraft:
    """An offence before the ledger prices it (the price depends on the person's history).

    Attributes:
        key: idempotency key; the ledger stores one offence per key.
        rule_id: the rule broken (LD-2, PR-1, EM-1, AN-1 ...).
        at: when it happened.
        call: the PBX identifiers, when the offence is about a call.
        extension: the phone involved.
        person_id: who answers for it ("" when unknown: the department may share it).
        person_name: their name.
        department: their department.
        number: the normalised number dialled, if any.
        number_class: its class, if any (LD-2 amounts depend on it).
        charge: the call's charge in yuan when known at recording time (PR-1 multiplies it;
            for a call still in progress it comes later, with the `OffenceOutcome`).
        talk_time: how long the call talked, when known at recording time.
        outcome: what the guard did: refused, cut_ordered, monitored.
        detail_zh: what happened, in Chinese.
        detail_en: what happened, in English.
        policy_version: the policy digest (with the tariff version) used.
        units: how many of what the rule counts (QU-1: missing calls); the penalty's
            ``per_unit`` prices each.
    """

    key: str
    rule_id: str
    at: datetime
    call: CallRef | None
    extension: str
    person_id: str
    person_name: str
    department: str
    number: str = ""
    number_class: str = ""
    charge: Decimal = ZERO
    talk_time: timedelta = timedelta(0)
    outcome: Outcome = Outcome.MONITORED
    detail_zh: str = ""
    detail_en: str = ""
    policy_version: str = ""
    units: int = 0


@dataclass(frozen=True, slots=True)
class OffenceOutcome:
    """How the call of an offence ended: written when Asterisk reports it.

    Attributes:
        key: the offence's key.
        at: when the guard learnt it.
        ending: before answer, answered, or unobserved.
        answered_at: when the far end answered, if it did.
        ended_at: when the trunk leg ended (None when unobserved).
        talk_time: how long it talked.
        charge: the call's charge from the tariff (a charge-based fine adds its multiple).
        answer_estimated: the answer was not seen, only found by a resync; ``answered_at`` is
            then the moment of the resync, so the talk time is never overstated.
        cause: the Q.850 cause Asterisk reported for the trunk leg.
    """

    key: str
    at: datetime
    ending: Ending
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    talk_time: timedelta = timedelta(0)
    charge: Decimal = ZERO
    answer_estimated: bool = False
    cause: str = ""


def final_outcome(written: Outcome, ending: Ending | None) -> Outcome:
    """Return an offence's outcome for reports: what the guard did and how the call ended.

    Monitoring is final when written. Whatever the guard did, a call Asterisk reported answered
    was ``not_stopped``. An ordered cut becomes ``hung_up`` only when Asterisk reported the call
    gone before anyone answered, and stays ``unobserved`` when it ended out of sight; with no
    ending known yet it is still ``cut_ordered``. A refusal stays a refusal unless the call
    reached the far end anyway.
    """
    if written is Outcome.MONITORED or ending is None:
        return written
    if ending is Ending.ANSWERED:
        return Outcome.NOT_STOPPED
    if written is not Outcome.CUT_ORDERED:
        return written
    if ending is Ending.BEFORE_ANSWER:
        return Outcome.HUNG_UP
    return Outcome.UNOBSERVED


@dataclass(frozen=True, slots=True)
class CallSummary:
    """A finished call, as the guard saw it.

    ``charge`` is the call's price from the policy's tariff (call accounting), zero for a call
    nobody answered.
    """

    call: CallRef
    extension: str
    person_id: str
    person_name: str
    department: str
    caller_name: str
    dialled: str
    number: str
    number_class: str
    direction: str
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime
    verdict: str
    rule_id: str
    outcome: str
    charge: Decimal = ZERO

    @property
    def talk_time(self) -> timedelta:
        """How long the call talked (zero if never answered)."""
        if self.answered_at is None:
            return timedelta(0)
        return max(self.ended_at - self.answered_at, timedelta(0))


@dataclass(frozen=True, slots=True)
class ApprovalUse:
    """One call counted against a prior approval (LD-1), once per call.

    ``ref`` identifies the call (site and Linkedid), so both layers count it once.
    """

    approval_id: str
    ref: str
    at: datetime
    call: CallRef


@dataclass(frozen=True, slots=True)
class CodeFailure:
    """A wrong authorization code typed at a phone (never the digits tried).

    Attributes:
        key: idempotency key (the call and the attempt's number).
        at: when.
        extension: the phone.
        person_id: the phone's owner, whose code was most likely tried ("" if unknown).
        call: the call, when known.
        reason: e.g. "attempt 2 of 3".
    """

    key: str
    at: datetime
    extension: str
    person_id: str
    call: CallRef | None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class OffenceFact:
    """An offence to store, with the rule it breaks (for pricing) and the site's timezone.

    The rule travels with the offence so that pricing it later (after a database outage, after
    a restart under another policy) uses the rule in force when it happened.
    """

    draft: OffenceDraft
    rule: Rule
    timezone: ZoneInfo


class LockScope(enum.StrEnum):
    """What a velocity lock stops: one extension's dialling, or the whole site's."""

    EXTENSION = "extension"
    SITE = "site"


@dataclass(frozen=True, slots=True)
class Lock:
    """Outside dialling of some classes stopped for a while (VL-1, VL-2), until lifted.

    Attributes:
        id: the lock's id (stable: a lock written twice is stored once).
        scope: one extension, or the whole site.
        extension: the locked extension ("" for a site lock).
        person_id: the extension's owner, if known.
        classes: the classes it refuses (never emergency).
        rule_id: the rule that imposed it.
        at: when it was imposed.
        until: when it ends by itself.
        reason_zh: why, in Chinese.
        reason_en: why, in English.
    """

    id: str
    scope: LockScope
    extension: str
    person_id: str
    classes: frozenset[NumberClass]
    rule_id: str
    at: datetime
    until: datetime
    reason_zh: str
    reason_en: str

    def covers(self, extension: str, number_class: NumberClass, now: datetime) -> bool:
        """Tell whether the lock refuses a call of ``number_class`` from ``extension`` now."""
        if number_class is NumberClass.EMERGENCY or not self.at <= now < self.until:
            return False
        if self.scope is LockScope.EXTENSION and extension != self.extension:
            return False
        return number_class in self.classes


@dataclass(frozen=True, slots=True)
class LockLift:
    """An administrator ended a lock early (``pbxguard lock lift``)."""

    lock_id: str
    at: datetime
    by: str
    reason: str


LedgerFact = (
    DecisionRecord | OffenceFact | OffenceOutcome | CallSummary | ApprovalUse | CodeFailure | Lock
)
"""A fact the guard writes to the ledger through the write-ahead journal."""
