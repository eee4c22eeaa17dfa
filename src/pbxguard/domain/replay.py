"""What if: a month's recorded calls judged again under a candidate policy, compared.

`RecordedCall` is a call attempt as the ledger recorded it, with the verdict it got and the fine
assessed for it. The application judges each one again with the candidate policy (the same
`judge` both layers use) and prices its offence; `compare` says what changed for that call, and
`ReplayTally` sums the changes by rule and department. All of it is pure and works one call at
a time, so a month of any size is replayed in bounded memory.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from pbxguard.domain.evaluate import Decision, Verdict
from pbxguard.domain.penalties import ZERO


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """A call attempt as the ledger recorded it.

    Attributes:
        at: when it was judged (the call's start; the verdict's time for a refusal).
        linkedid: the call's Linkedid.
        extension: the calling phone.
        person_id: who answered for it then.
        department: their department then ("" when the record does not say).
        dialled: what was dialled.
        number: the normalised number.
        number_class: its class then.
        verdict: allow or deny, as recorded.
        rule_id: the rule that decided then ("" for a plain allow).
        fine: the fine assessed for the call's offence (0 when there was none).
        talk_time: how long the call talked (0 when it never connected).
        refused_before_ringing: the dialplan refused it: it never reached a trunk.
    """

    at: datetime
    linkedid: str
    extension: str
    person_id: str
    department: str
    dialled: str
    number: str
    number_class: str
    verdict: str
    rule_id: str
    fine: Decimal = ZERO
    talk_time: timedelta = timedelta(0)
    refused_before_ringing: bool = False

    @property
    def refused(self) -> bool:
        """Tell whether the recorded verdict refused the call."""
        return self.verdict == Verdict.DENY.value


class Change(enum.StrEnum):
    """What the candidate policy changes for one call."""

    NOW_REFUSED = "now_refused"  # allowed then, refused now
    NOW_ALLOWED = "now_allowed"  # refused then, allowed now
    RULE_CHANGED = "rule_changed"  # refused both times, under another rule
    FINE_CHANGED = "fine_changed"  # same verdict and rule, another fine


@dataclass(frozen=True, slots=True)
class ReplayChange:
    """One call the candidate policy treats differently."""

    call: RecordedCall
    change: Change
    verdict: str
    rule_id: str
    fine: Decimal
    person_id: str
    department: str
    reason_zh: str
    reason_en: str

    @property
    def rule(self) -> str:
        """The rule the change is counted under: the new one, else the one it replaced."""
        return self.rule_id or self.call.rule_id

    @property
    def delta(self) -> Decimal:
        """What the fine changes by (new minus recorded)."""
        return self.fine - self.call.fine


def compare(call: RecordedCall, decision: Decision, fine: Decimal) -> ReplayChange | None:
    """Return what the candidate's ``decision`` and ``fine`` change for ``call``, or None."""
    refused = decision.verdict is not Verdict.ALLOW
    if refused and not call.refused:
        change = Change.NOW_REFUSED
    elif call.refused and not refused:
        change = Change.NOW_ALLOWED
    elif refused and decision.rule_id != call.rule_id:
        change = Change.RULE_CHANGED
    elif fine != call.fine:
        change = Change.FINE_CHANGED
    else:
        return None
    return ReplayChange(
        call=call,
        change=change,
        verdict=Verdict.DENY.value if refused else Verdict.ALLOW.value,
        rule_id=decision.rule_id,
        fine=fine,
        person_id=decision.person_id or call.person_id,
        department=decision.department or call.department,
        reason_zh=decision.reason_zh,
        reason_en=decision.reason_en,
    )


@dataclass(slots=True)
class TallyRow:
    """The changes of one rule in one department.

    ``fines_before`` and ``fines_after`` total every call of the group that was fined under
    either policy, changed or not: the month's fines as recorded and as they would be.
    """

    rule_id: str
    department: str
    now_refused: int = 0
    now_allowed: int = 0
    rule_changed: int = 0
    fine_changed: int = 0
    fines_before: Decimal = ZERO
    fines_after: Decimal = ZERO

    @property
    def delta(self) -> Decimal:
        """What the group's fines change by."""
        return self.fines_after - self.fines_before


class ReplayTally:
    """Sums of a replay by rule and department (a handful of rows, whatever the month's size)."""

    def __init__(self) -> None:
        self.calls = 0
        self._rows: dict[tuple[str, str], TallyRow] = {}

    def add(
        self, call: RecordedCall, decision: Decision, fine: Decimal, change: ReplayChange | None
    ) -> None:
        """Count one replayed call."""
        self.calls += 1
        if change is None and not call.fine and not fine:
            return
        rule = change.rule if change is not None else (decision.rule_id or call.rule_id)
        department = decision.department or call.department
        row = self._rows.get((rule, department))
        if row is None:
            row = self._rows[(rule, department)] = TallyRow(rule, department)
        row.fines_before += call.fine
        row.fines_after += fine
        if change is None:
            return
        if change.change is Change.NOW_REFUSED:
            row.now_refused += 1
        elif change.change is Change.NOW_ALLOWED:
            row.now_allowed += 1
        elif change.change is Change.RULE_CHANGED:
            row.rule_changed += 1
        else:
            row.fine_changed += 1

    def rows(self) -> Iterator[TallyRow]:
        """Yield the rows by rule, then department."""
        for key in sorted(self._rows):
            yield self._rows[key]

    @property
    def fines_before(self) -> Decimal:
        """The month's fines as recorded (calls only)."""
        return sum((r.fines_before for r in self._rows.values()), ZERO)

    @property
    def fines_after(self) -> Decimal:
        """The month's fines under the candidate policy (calls only)."""
        return sum((r.fines_after for r in self._rows.values()), ZERO)
