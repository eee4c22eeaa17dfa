"""Prior approvals for long-distance calls (LD-1, LD-5).

A department head (or a station head and above, per policy) grants a person permission for a
number class or a number prefix, for a time window and an optional number of calls. Grants are
values: using one produces a new value with one more call counted; the ledger keeps the history.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from pbxguard.domain.numbers import LONG_DISTANCE_CLASSES, NumberClass
from pbxguard.domain.policy import Person, Policy


@dataclass(frozen=True, slots=True)
class Approval:
    """Permission for one person to dial a class or a prefix within a window.

    Attributes:
        id: stable identifier.
        person_id: who may dial.
        granted_by: the approver's person id.
        valid_from: start of the window (inclusive).
        valid_until: end of the window (exclusive).
        number_class: the class allowed, or None when ``prefix`` alone decides.
        prefix: a number prefix allowed (normalised digits), or "" for any number of the class.
        max_calls: how many calls the grant covers (None: unlimited within the window).
        used_calls: how many calls have used it.
        revoked: whether it was revoked.
        reason: why it was granted (联络事项).
        site: the site (PBX) it is for; "" for every site of the company.
    """

    id: str
    person_id: str
    granted_by: str
    valid_from: datetime
    valid_until: datetime
    number_class: NumberClass | None = None
    prefix: str = ""
    max_calls: int | None = None
    used_calls: int = 0
    revoked: bool = False
    reason: str = ""
    site: str = ""

    def is_active(self, now: datetime) -> bool:
        """Tell whether the grant may be used at ``now``."""
        if self.revoked or not self.valid_from <= now < self.valid_until:
            return False
        return self.max_calls is None or self.used_calls < self.max_calls

    def covers(self, *, person_id: str, number: str, number_class: NumberClass) -> bool:
        """Tell whether the grant is for this person and this number."""
        if person_id != self.person_id:
            return False
        if self.number_class is not None and self.number_class is not number_class:
            return False
        return number.startswith(self.prefix)

    def used(self) -> Approval:
        """Return the grant with one more call counted."""
        return replace(self, used_calls=self.used_calls + 1)


def find_covering_approval(
    approvals: Iterable[Approval],
    *,
    person_id: str,
    number: str,
    number_class: NumberClass,
    now: datetime,
) -> Approval | None:
    """Return the active approval that covers the call, the most specific first.

    A prefix grant is more specific than a class grant; among equals the one expiring first is
    used, so that a short grant is consumed before a long one.
    """
    if not person_id:
        return None
    candidates = [
        a
        for a in approvals
        if a.is_active(now)
        and a.covers(person_id=person_id, number=number, number_class=number_class)
    ]
    if not candidates:
        return None
    return min(candidates, key=lambda a: (-len(a.prefix), a.valid_until, a.id))


class ApprovalState(enum.StrEnum):
    """Where an approval stands at a given time."""

    SCHEDULED = "scheduled"
    ACTIVE = "active"
    USED_UP = "used up"
    EXPIRED = "expired"
    REVOKED = "revoked"


def approval_state(approval: Approval, now: datetime) -> ApprovalState:
    """Return where ``approval`` stands at ``now``."""
    if approval.revoked:
        return ApprovalState.REVOKED
    if approval.max_calls is not None and approval.used_calls >= approval.max_calls:
        return ApprovalState.USED_UP
    if now >= approval.valid_until:
        return ApprovalState.EXPIRED
    if now < approval.valid_from:
        return ApprovalState.SCHEDULED
    return ApprovalState.ACTIVE


#: Classes an approval may cover: those LD-1/LD-5 put behind prior consent.
APPROVABLE_CLASSES = LONG_DISTANCE_CLASSES


def approvers(policy: Policy) -> list[Person]:
    """Return the people whose role may approve long-distance calls, by id."""
    return sorted(
        (p for p in policy.people.values() if policy.role_of(p).can_approve), key=lambda p: p.id
    )


def refusal_to_approve(policy: Policy, approver: Person, person: Person) -> tuple[str, str] | None:
    """Say why ``approver`` may not approve ``person``'s calls (zh, en), or None if they may.

    LD-1 (000 L15): the department head consents for their department; LD-5 (000 L713): a
    station head or above for anyone. Nobody approves their own calls.
    """
    role = policy.role_of(approver)
    if not role.can_approve:
        return (
            f"{approver.name}（{role.name_zh}）无权批准长途电话",
            f"{approver.name} ({role.name_en}) may not approve long-distance calls (LD-1, LD-5)",
        )
    if approver.id == person.id:
        return (
            f"{approver.name}不能批准自己的电话",
            f"{approver.name} cannot approve their own calls",
        )
    if not role.company_wide and approver.department != person.department:
        return (
            f"{approver.name}只能批准本部门（{approver.department}）人员的电话",
            f"{approver.name} approves calls of their own department ({approver.department}) "
            f"only; {person.name} is in {person.department}",
        )
    return None
