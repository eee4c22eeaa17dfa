"""The duty rota (值班表): who holds each shared line over a day, and changing it.

The rota lives where the policy says (``[rota] file``); changes rewrite it atomically and a
running daemon reloads it within seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from pbxguard.app.ports import RotaStore
from pbxguard.domain.policy import Policy
from pbxguard.domain.rota import Rota, Shift
from pbxguard.errors import NotFound, RequestError


@dataclass(frozen=True, slots=True)
class DutySlot:
    """One stretch of a day on one line, and who holds it ("" when nobody does: a gap)."""

    line: str
    start: datetime
    end: datetime
    person_id: str
    person_name: str


def day_of_duty(policy: Policy, day: date, *, line: str | None = None) -> list[DutySlot]:
    """Return who holds each line (or ``line``) over ``day`` in the site's timezone."""
    rota = policy.rota or Rota(policy.timezone)
    start = datetime.combine(day, time(0, 0), tzinfo=policy.timezone)
    end = start + timedelta(days=1)
    slots: list[DutySlot] = []
    for name in [line] if line else list(rota.lines):
        for period in rota.timeline(name, start, end):
            person = policy.people.get(period.person or "")
            slots.append(
                DutySlot(
                    name,
                    period.start,
                    period.end,
                    period.person or "",
                    person.name if person else "",
                )
            )
    return slots


def change_rota(store: RotaStore | None, policy: Policy, shift: Shift, *, add: bool) -> Rota:
    """Add or remove a shift and save the rota; return it.

    Raises:
        RequestError: the policy keeps no rota file.
        NotFound: the shift's person is not in the policy.
    """
    if store is None:
        raise RequestError(
            '策略未指定值班表文件 — the policy keeps no rota file: add [rota] file = "rota.csv" '
            "to the policy to manage the rota from the command line"
        )
    if shift.person not in policy.people:
        raise NotFound(f"no person {shift.person!r} in the policy's directory")
    rota = store.load(policy.timezone)
    rota = rota.with_shift(shift) if add else rota.without_shift(shift)
    store.save(rota)
    return rota
