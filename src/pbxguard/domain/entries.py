"""What the ledger gives back: stored offences, adjustments, register lines, totals.

These are read models: values the ledger builds from its rows, which reports, the console and
the use cases work with. The rules that decide what they mean (what excuses a fine, what a
charge learnt after the offence adds to it, how a cut call finally turned out) live here with
them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from pbxguard.domain.penalties import ZERO, Fine, Sanction, yuan
from pbxguard.domain.records import CallRef, OffenceOutcome, Outcome, final_outcome


class AdjustmentKind(enum.StrEnum):
    """What an adjustment does to an offence."""

    WAIVER = "waiver"  # excused (无特殊原因 … has a special reason): amount 0
    APPEAL = "appeal"  # the person appealed; the fine stands until decided
    APPEAL_ALLOWED = "appeal_allowed"  # the appeal succeeded: amount 0
    APPEAL_DISMISSED = "appeal_dismissed"  # the appeal failed: the fine stands

    @property
    def excuses(self) -> bool:
        """Tell whether this adjustment cancels the fine."""
        return self in (AdjustmentKind.WAIVER, AdjustmentKind.APPEAL_ALLOWED)


@dataclass(frozen=True, slots=True)
class Adjustment:
    """A waiver, appeal or appeal decision recorded against an offence."""

    id: int
    offence_id: int
    kind: AdjustmentKind
    by: str
    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class OffenceEntry:
    """An offence as the ledger stored it, with the adjustments recorded since.

    Attributes:
        id: the ledger's row id (what adjustments refer to).
        key: the idempotency key it was recorded under.
        ladder: the escalation ladder its prior offences were counted under.
        outcome: what the guard did when it was recorded (refused, cut ordered, monitored).
        fine: the fine assessed when it was recorded; ``amount`` applies the adjustments and the
            charge learnt when the call ended.
        adjustments: waivers, appeals and decisions, oldest first.
        ending: how the call ended, once Asterisk reported it.
        charge_multiple: what each yuan of a charge learnt later adds to the fine (PR-1: 20).
        head_share: the department head's joint share of the fine (000 L863: 0.20).
        site: the site (PBX) it happened at.
        units: how many of what the rule counts were priced (QU-1: missing calls).
    """

    id: int
    key: str
    rule_id: str
    ladder: str
    rule_title_zh: str
    rule_title_en: str
    citation: str
    at: datetime
    call: CallRef | None
    extension: str
    person_id: str
    person_name: str
    department: str
    number: str
    number_class: str
    talk_time: timedelta
    outcome: Outcome
    fine: Fine
    detail_zh: str
    detail_en: str
    policy_version: str
    adjustments: tuple[Adjustment, ...] = ()
    ending: OffenceOutcome | None = None
    charge_multiple: Decimal = ZERO
    head_share: Decimal = ZERO
    site: str = ""
    units: int = 0

    @property
    def final_outcome(self) -> Outcome:
        """What finally happened: refused, hung up, not stopped, monitored, unobserved ..."""
        return final_outcome(self.outcome, self.ending.ending if self.ending else None)

    @property
    def extra(self) -> Decimal:
        """What the call's charge, learnt when it ended, adds to the fine."""
        if self.ending is None or not self.charge_multiple:
            return ZERO
        return yuan(self.charge_multiple * self.ending.charge)

    @property
    def excused(self) -> bool:
        """Tell whether a waiver or an allowed appeal cancelled the fine."""
        return any(a.kind.excuses for a in self.adjustments)

    @property
    def appeal_pending(self) -> bool:
        """Tell whether an appeal was filed and not yet decided."""
        pending = False
        for adjustment in self.adjustments:
            if adjustment.kind is AdjustmentKind.APPEAL:
                pending = True
            elif adjustment.kind in (
                AdjustmentKind.APPEAL_ALLOWED,
                AdjustmentKind.APPEAL_DISMISSED,
            ):
                pending = False
        return pending

    @property
    def amount(self) -> Decimal:
        """Return what is owed: the assessed amount plus what the charge adds, 0 once excused."""
        return ZERO if self.excused else self.fine.amount + self.extra

    @property
    def department_head_amount(self) -> Decimal:
        """Return the department head's joint share still owed."""
        if self.excused:
            return ZERO
        return self.fine.department_head_amount + yuan(self.extra * self.head_share)

    @property
    def sanctions(self) -> tuple[Sanction, ...]:
        """Return the sanctions still in force."""
        return () if self.excused else self.fine.sanctions

    @property
    def charge(self) -> Decimal:
        """Return the call's charge the fine was computed from."""
        if self.ending is not None and self.ending.charge:
            return self.ending.charge
        return self.fine.charge

    @property
    def call_talk_time(self) -> timedelta:
        """Return how long the call talked, from its ending when known."""
        if self.ending is not None:
            return self.ending.talk_time
        return self.talk_time

    @property
    def escalation_step(self) -> int:
        """Return the rung of the ladder this offence was priced at."""
        return self.fine.escalation_step


@dataclass(frozen=True, slots=True)
class RegisterEntry:
    """A line of the long-distance register (长话登记表, REGULATIONS.md §2 LD-4, LD-10).

    Attributes:
        started_at: when the call was answered (the billed time starts there).
        subject: 联络事项, "" until filled.
        outcome: 交涉结果, "" until filled.
        filled_by: who filled it in last, "" until filled.
        filled_at: when, None until filled.
    """

    id: int
    call: CallRef
    caller_person_id: str
    caller_name: str
    department: str
    extension: str
    callee_number: str
    callee_name: str
    number_class: str
    started_at: datetime
    ended_at: datetime
    duration: timedelta
    subject: str = ""
    outcome: str = ""
    filled_by: str = ""
    filled_at: datetime | None = None
    site: str = ""

    @property
    def filled(self) -> bool:
        """Tell whether someone has written the subject and outcome in."""
        return self.filled_at is not None


@dataclass(frozen=True, slots=True)
class FineTotal:
    """What one person or department owes for a month, after adjustments."""

    subject: str
    offences: int
    amount: Decimal
    department_head_amount: Decimal
    excused: int


@dataclass(frozen=True, slots=True)
class CodeInfo:
    """An authorization code as the ledger knows it: never its digits, only its life.

    Attributes:
        id: the code's number in the ledger (what ``code revoke`` takes).
        person_id: its owner.
        one_time: whether it works for one call.
        created_at: when it was issued.
        created_by: who issued it.
        expires_at: when it stops working, if ever.
        used: how many calls it authorised.
        ended: "" while it works; "used" (one-time, spent), "revoked" or "expired".
    """

    id: int
    person_id: str
    one_time: bool
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    used: int
    ended: str


@dataclass(frozen=True, slots=True)
class OffenceFilter:
    """Which offences to list; every field narrows the list (None: no condition).

    ``start``/``end`` bound the offence time (half-open); ``site`` picks one PBX's offences;
    ``offence_id`` picks one offence (the console asks for one through its viewer's scope).
    """

    person: str | None = None
    department: str | None = None
    rule: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    site: str | None = None
    outcome: Outcome | None = None
    offence_id: int | None = None
