"""What the core asks the shell to do: effects are data, carried out by the guard.

The call tracker and the standby watch return these values; they never act themselves. The
shell carries them out in the order given, which matters: every ``Record…`` effect that comes
before a `HangupChannel` in one list reaches the write-ahead journal before the hangup is sent.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from pbxguard.domain.emergency import EmergencyNotice
from pbxguard.domain.records import (
    ApprovalUse,
    CallSummary,
    CodeFailure,
    DecisionRecord,
    Lock,
    OffenceDraft,
    OffenceOutcome,
)

#: Q.850 cause 21, "call rejected": the phone shows a refusal, not a fault.
HANGUP_CAUSE_CALL_REJECTED = 21


@dataclass(frozen=True, slots=True)
class HangupChannel:
    """Hang up exactly this channel with this cause (sent again until Asterisk reports it gone).

    Attributes:
        channel: the channel's full name (never a pattern).
        cause: the Q.850 cause.
        linkedid: the call it belongs to.
        rule_id: the rule that forbids it.
        attempt: how many times it has been asked for (1 the first time).
    """

    channel: str
    cause: int
    linkedid: str
    rule_id: str
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class RecordDecision:
    """Store a decision in the ledger."""

    record: DecisionRecord


@dataclass(frozen=True, slots=True)
class RecordOffence:
    """Price and store an offence in the ledger."""

    draft: OffenceDraft


@dataclass(frozen=True, slots=True)
class RecordOffenceOutcome:
    """Store how the call of an offence ended."""

    outcome: OffenceOutcome


@dataclass(frozen=True, slots=True)
class RecordCall:
    """Store a finished call (and its register entry, for long distance)."""

    summary: CallSummary


@dataclass(frozen=True, slots=True)
class CountApprovalUse:
    """Count one call against an approval."""

    use: ApprovalUse


@dataclass(frozen=True, slots=True)
class RecordCodeFailure:
    """Store a wrong authorization code."""

    failure: CodeFailure


@dataclass(frozen=True, slots=True)
class RecordLock:
    """Store a velocity lock (written ahead: it survives a restart)."""

    lock: Lock


@dataclass(frozen=True, slots=True)
class WarnCaller:
    """Tell the caller on ``channel`` that the call will be cut soon (a duration's hard limit).

    Attributes:
        channel: the caller's channel (the one that hears the warning).
        linkedid: the call.
        rule_id: the rule whose limit is near (DU-1, DU-4).
        seconds_left: how long until the call is cut.
        message_zh: the warning, in Chinese (for logs and subscribers).
        message_en: the warning, in English.
    """

    channel: str
    linkedid: str
    rule_id: str
    seconds_left: int
    message_zh: str
    message_en: str


class AlertKind(enum.StrEnum):
    """What an alert is about."""

    UNREACHABLE = "unreachable"  # a watched phone is down
    UNCOVERED = "uncovered"  # a duty group has nobody on duty, or no reachable phone
    CODE_GUESSING = "code_guessing"  # too many wrong authorization codes: PIN route locked
    LEDGER = "ledger"  # the ledger's hash chain is broken, or an entry could not be written
    BUDGET = "budget"  # a monthly call budget reached its alert share, or was used up
    LOCKED = "locked"  # too many calls too fast: an extension's (or the site's) dialling locked


@dataclass(frozen=True, slots=True)
class RaiseAlert:
    """Tell people something needs attention now.

    Attributes:
        key: the same for every repeat of one alert, and for its `ClearAlert`.
        kind: what it is about.
        rule_id: the rule at stake (EM-2, DT-5, AN-2 ...), or "".
        extension: the phone, or "" for a group or site alert.
        duty_line: the rota line of the phone or group, or "".
        name: the phone's name, or the group's phone names.
        since: when the condition began.
        at: when this alert is raised.
        repeat: 0 the first time, then 1, 2, ...
        person_id: who is on duty (or owns the phone) at ``at``, or "".
        person_name: their name, or "".
        message_zh: the alert, in Chinese.
        message_en: the alert, in English.
    """

    key: str
    kind: AlertKind
    rule_id: str
    extension: str
    duty_line: str
    name: str
    since: datetime
    at: datetime
    repeat: int
    person_id: str
    person_name: str
    message_zh: str
    message_en: str


@dataclass(frozen=True, slots=True)
class ClearAlert:
    """Tell people the condition behind an alert is over (or no longer matters)."""

    key: str
    kind: AlertKind
    rule_id: str
    extension: str
    duty_line: str
    name: str
    since: datetime
    at: datetime

    @property
    def duration(self) -> timedelta:
        """Return how long the alert was open."""
        return self.at - self.since


@dataclass(frozen=True, slots=True)
class NotifyEmergency:
    """Tell the security desk about an emergency call now (the call itself is never touched)."""

    notice: EmergencyNotice


LedgerEffect = (
    RecordDecision
    | RecordOffence
    | RecordOffenceOutcome
    | RecordCall
    | CountApprovalUse
    | RecordCodeFailure
    | RecordLock
)
"""Effects the ledger writer carries out (through the write-ahead journal)."""

Effect = HangupChannel | LedgerEffect | RaiseAlert | ClearAlert | NotifyEmergency | WarnCaller
"""Everything the core may ask for."""
