"""What the guard writes down: decisions, offences and finished calls, as plain values.

These are the facts the ledger stores. They carry the AMI identifiers (Linkedid, Uniqueid,
channel) so an auditor can match a ledger row to the PBX's own records, and an idempotency key
so the same fact written twice (after a reconnect and resync, say) is stored once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from pbxguard.domain.penalties import ZERO


class Layer(enum.StrEnum):
    """Which enforcement layer made a decision."""

    AGI = "agi"  # before the call rang, from the dialplan
    AMI = "ami"  # the safety net watching channels


class Outcome(enum.StrEnum):
    """What happened to a forbidden call."""

    REFUSED = "refused"  # the dialplan refused it before it rang
    HUNG_UP = "hung_up"  # the guard hung it up over AMI
    MONITORED = "monitored"  # monitor mode: only recorded
    NOT_STOPPED = "not_stopped"  # enforcement was wanted but the hangup failed


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
        charge: the call's charge in yuan (PR-1 multiplies it).
        talk_time: how long the call talked.
        outcome: refused, hung up, monitored ...
        detail_zh: what happened, in Chinese.
        detail_en: what happened, in English.
        policy_version: the policy digest (with the tariff version) used.
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


@dataclass(frozen=True, slots=True)
class CallSummary:
    """A finished call, as the guard saw it."""

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

    @property
    def talk_time(self) -> timedelta:
        """How long the call talked (zero if never answered)."""
        if self.answered_at is None:
            return timedelta(0)
        return max(self.ended_at - self.answered_at, timedelta(0))
