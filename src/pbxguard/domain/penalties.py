"""Penalties, escalation ladders and repeat-offender flags (REGULATIONS.md §7).

A rule's penalty is data (`PenaltySpec`); `assess` turns it into a `Fine` for one offence,
given the call's charge and how many prior offences of the same person the ladder counts.
Money is `Decimal` yuan with two places, never float.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
ZERO = Decimal("0.00")


def yuan(value: Decimal | int | str) -> Decimal:
    """Return ``value`` as yuan rounded to the cent."""
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


class Sanction(enum.StrEnum):
    """A non-monetary consequence named by the regulations."""

    DEMERIT = "demerit"  # 记过
    ASSESSMENT_POINTS = "assessment_points"  # 考核扣分
    SUBSIDY_CANCELLED = "subsidy_cancelled"  # 当月补贴取消
    REIMBURSEMENT_LOST = "reimbursement_lost"  # 当季话费报销取消
    BONUS_WITHHELD = "bonus_withheld"  # 扣发奖金
    DISMISSAL_REFERRAL = "dismissal_referral"  # 辞退
    SEVERE_PUNISHMENT = "severe_punishment"  # 严肃处理 (amount left to management)


SANCTION_LABELS: Mapping[Sanction, tuple[str, str]] = {
    Sanction.DEMERIT: ("记过", "recorded demerit"),
    Sanction.ASSESSMENT_POINTS: ("考核扣分", "assessment points deducted"),
    Sanction.SUBSIDY_CANCELLED: ("取消当月补贴", "month's subsidy cancelled"),
    Sanction.REIMBURSEMENT_LOST: ("取消当季话费报销", "quarter's phone reimbursement lost"),
    Sanction.BONUS_WITHHELD: ("扣发奖金", "bonus withheld"),
    Sanction.DISMISSAL_REFERRAL: ("辞退", "referred for dismissal"),
    Sanction.SEVERE_PUNISHMENT: ("严肃处理", "severe punishment, set by management"),
}


class CountWindow(enum.StrEnum):
    """The window in which a ladder counts a person's prior offences."""

    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"
    EVER = "ever"


def window_start(window: CountWindow, day: date) -> date | None:
    """Return the first day of ``window`` containing ``day`` (None for EVER)."""
    if window is CountWindow.MONTH:
        return day.replace(day=1)
    if window is CountWindow.QUARTER:
        return day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
    if window is CountWindow.YEAR:
        return day.replace(month=1, day=1)
    return None


def window_bounds(window: CountWindow, at: datetime) -> tuple[datetime | None, datetime]:
    """Return the [start, at) interval of ``window`` around local time ``at``."""
    first = window_start(window, at.date())
    if first is None:
        return None, at
    return datetime.combine(first, datetime.min.time(), tzinfo=at.tzinfo), at


@dataclass(frozen=True, slots=True)
class Step:
    """One rung of a penalty: a flat amount, a multiple of the charge, and sanctions.

    The fine is ``charge_multiple * charge + flat + per_unit * units``; PR-1 is
    ``20 x charge + 50``, PR-2 is ``1 x charge + 50``, LD-2 is a flat amount that depends on the
    number class, QU-1 is 5 yuan for each missing call (the offence's ``units``).
    """

    flat: Decimal = ZERO
    charge_multiple: Decimal = ZERO
    sanctions: tuple[Sanction, ...] = ()
    per_class: Mapping[str, Decimal] = field(default_factory=dict)
    per_unit: Decimal = ZERO

    @property
    def needs_charge(self) -> bool:
        """Tell whether the amount depends on the call's charge."""
        return self.charge_multiple != 0


@dataclass(frozen=True, slots=True)
class RepeatOffender:
    """Flag a person as a repeat offender (屡教不改) from the ``threshold``-th offence on."""

    threshold: int
    sanctions: tuple[Sanction, ...] = ()


@dataclass(frozen=True, slots=True)
class PenaltySpec:
    """A rule's penalty: one step, or a ladder of steps counted per person in a window.

    Attributes:
        steps: the first entry applies to a first offence, the next to a second, ...; the last
            entry applies to every offence after it.
        window: where a person's prior offences under ``ladder`` are counted.
        ladder: offences of rules sharing a ladder name count together (DT-1..DT-3 share DT-4).
        repeat_offender: optional repeat-offender flag.
        department_head_share: co-liability of the department head (000 L863: 20%).
    """

    steps: tuple[Step, ...]
    window: CountWindow = CountWindow.QUARTER
    ladder: str = ""
    repeat_offender: RepeatOffender | None = None
    department_head_share: Decimal = ZERO

    @property
    def needs_charge(self) -> bool:
        """Tell whether any step depends on the call's charge."""
        return any(step.needs_charge for step in self.steps)


@dataclass(frozen=True, slots=True)
class Fine:
    """What one offence costs.

    Attributes:
        amount: yuan, two places.
        sanctions: non-monetary consequences.
        escalation_step: 1 for a first offence in the window, 2 for a second, ...
        repeat_offender: whether the repeat-offender threshold is reached.
        charge: the call's charge used in the amount.
        department_head_amount: the department head's joint share, if any.
    """

    amount: Decimal
    sanctions: tuple[Sanction, ...]
    escalation_step: int
    repeat_offender: bool = False
    charge: Decimal = ZERO
    department_head_amount: Decimal = ZERO


def assess(
    spec: PenaltySpec,
    *,
    prior_offences: int,
    charge: Decimal = ZERO,
    number_class: str = "",
    units: int = 0,
) -> Fine:
    """Work out the fine for one offence.

    Args:
        spec: the rule's penalty.
        prior_offences: offences of the same person under the same ladder in its window,
            not counting this one.
        charge: the call's charge in yuan (0 when the call never connected).
        number_class: the dialled number's class, for amounts that depend on it (LD-2).
        units: how many of what the rule counts (QU-1: missing calls), each priced at the
            step's ``per_unit``.

    Returns:
        The fine; the amount is never negative.
    """
    charge = yuan(charge)
    step_index = min(max(prior_offences, 0), len(spec.steps) - 1)
    step = spec.steps[step_index]
    flat = step.per_class.get(number_class, step.flat)
    amount = yuan(step.charge_multiple * charge + flat + step.per_unit * max(units, 0))
    sanctions = list(step.sanctions)
    repeat = False
    if spec.repeat_offender is not None and prior_offences + 1 >= spec.repeat_offender.threshold:
        repeat = True
        sanctions.extend(s for s in spec.repeat_offender.sanctions if s not in sanctions)
    share = yuan(amount * spec.department_head_share)
    return Fine(
        amount=max(amount, ZERO),
        sanctions=tuple(sanctions),
        escalation_step=prior_offences + 1,
        repeat_offender=repeat,
        charge=yuan(charge),
        department_head_amount=share,
    )


def billed_seconds(duration: timedelta, increment_seconds: int) -> int:
    """Round a call's duration up to the billing increment (0 for a call that never talked)."""
    seconds = max(duration.total_seconds(), 0.0)
    if seconds == 0:
        return 0
    blocks = -(-int(seconds * 1000) // (increment_seconds * 1000))
    return blocks * increment_seconds
