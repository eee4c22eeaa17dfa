"""Prior approvals for long-distance calls (LD-1, LD-5): grant, revoke, list.

A long-distance call needs prior consent: the department head's for their people (LD-1), a
station head's or above for anyone (LD-5), per the policy's roles. The approver grants it for a
person, a number class or prefix, a window and optionally a number of calls; the running guard
reads active approvals from the ledger (every half minute) and lets covered calls through,
counting each call once. The rules are the domain's (`pbxguard.domain.approvals`); these
functions check a request against them and the ledger, and store it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pbxguard.app.ports import ApprovalBookPort
from pbxguard.domain.approvals import (
    APPROVABLE_CLASSES,
    Approval,
    ApprovalState,
    approval_state,
    approvers,
    refusal_to_approve,
)
from pbxguard.domain.evaluate import class_label
from pbxguard.domain.numbers import LONG_DISTANCE_CLASSES, NumberClass
from pbxguard.domain.policy import Person, Policy
from pbxguard.errors import LedgerError, NotFound, NotPermitted, RequestError

# No 0/o, 1/l/i: ids are read out over the phone and copied by hand.
_ID_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
_ID_LENGTH = 6
_ID_ATTEMPTS = 5
_FORMATTING = str.maketrans("", "", " -.()")


def new_approval_id() -> str:
    """Return a short, readable, random approval id (``ap-7k3m9q``)."""
    return "ap-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))


def person_named(policy: Policy, person_id: str) -> Person:
    """Return the person ``person_id`` of the policy's directory.

    Raises:
        NotFound: nobody of that id; the message lists who there is.
    """
    person = policy.people.get(person_id)
    if person is None:
        known = ", ".join(sorted(policy.people)) or "nobody"
        raise NotFound(
            f"策略中没有此人 {person_id} — no person {person_id!r} in the policy; people: {known}"
        )
    return person


def approver_named(policy: Policy, person_id: str) -> Person:
    """Return the approver ``person_id``, or raise an error naming who may approve."""
    allowed = approvers(policy)
    names = ", ".join(
        f"{p.id} ({p.name}, {policy.role_of(p).name_zh} {policy.role_of(p).name_en})"
        for p in allowed
    )
    who_may = f"who may approve: {names}" if allowed else "no role in the policy may approve"
    person = policy.people.get(person_id)
    if person is None:
        raise NotFound(
            f"{person_id} 不是策略中的人员 — {person_id!r} is not a person in the policy; {who_may}"
        )
    role = policy.role_of(person)
    if not role.can_approve:
        raise NotPermitted(
            f"{person.name}（{role.name_zh}）无权批准长途电话 — {person.name} ({person_id}, "
            f"{role.name_zh} {role.name_en}) may not approve long-distance calls (LD-1, LD-5); "
            f"{who_may}"
        )
    return person


def approval_scope(
    policy: Policy, number_class: str | None, prefix: str | None
) -> tuple[NumberClass | None, str]:
    """Return the class or normalised prefix an approval covers, checked against the policy.

    Raises:
        RequestError: neither given, or one that approvals do not cover.
    """
    if number_class is not None:
        allowed = sorted(c.value for c in APPROVABLE_CLASSES)
        if number_class not in allowed:
            raise RequestError(f"--class {number_class!r}: approvals are for {', '.join(allowed)}")
        return NumberClass(number_class), ""
    if prefix is None:
        raise RequestError(
            "须说明批准范围 — say what is approved: --class CLASS or --prefix DIGITS"
        )
    cleaned = prefix.translate(_FORMATTING)
    digits = "00" + cleaned[1:] if cleaned.startswith("+") else cleaned
    if not digits.isdigit():
        raise RequestError(f"--prefix {prefix!r} must be digits (00852, 010, +44)")
    found = policy.classifier.lookup(digits)
    if found is None or found[1] not in LONG_DISTANCE_CLASSES:
        what = f"{class_label(found[1])[1]}s" if found else "not numbers the plan knows"
        raise RequestError(
            f"--prefix {prefix}: numbers starting with it are {what}; approvals cover "
            "long-distance, Hong Kong/Macau, Taiwan and international numbers only"
        )
    return None, digits


@dataclass(frozen=True, slots=True)
class GrantRequest:
    """What an approver asks for."""

    person_id: str
    approver_id: str
    valid_from: datetime
    valid_until: datetime
    number_class: str | None = None
    prefix: str | None = None
    calls: int | None = None
    reason: str = ""
    site: str = ""


def grant_approval(
    book: ApprovalBookPort,
    policy: Policy,
    request: GrantRequest,
    *,
    now: datetime,
    new_id: Callable[[], str] = new_approval_id,
) -> Approval:
    """Check a grant against the regulations and store it; return the approval.

    Raises:
        NotFound: an unknown person or approver.
        NotPermitted: the approver may not approve this person (role, department, self).
        RequestError: the window or the scope is wrong.
    """
    person = person_named(policy, request.person_id)
    approver = approver_named(policy, request.approver_id)
    refusal = refusal_to_approve(policy, approver, person)
    if refusal is not None:
        raise NotPermitted(f"{refusal[0]} — {refusal[1]}")
    zone = policy.timezone
    if request.valid_until <= request.valid_from:
        raise RequestError(
            f"--until {request.valid_until.astimezone(zone):%Y-%m-%d %H:%M} must be after "
            f"--from {request.valid_from.astimezone(zone):%Y-%m-%d %H:%M}"
        )
    if request.valid_until <= now:
        raise RequestError(
            f"批准已过期 — --until {request.valid_until.astimezone(zone):%Y-%m-%d %H:%M} "
            "is already past"
        )
    if request.calls is not None and request.calls < 1:
        raise RequestError("--calls must be at least 1")
    number_class, prefix = approval_scope(policy, request.number_class, request.prefix)
    for _ in range(_ID_ATTEMPTS):
        approval = Approval(
            id=new_id(),
            person_id=person.id,
            granted_by=approver.id,
            valid_from=request.valid_from,
            valid_until=request.valid_until,
            number_class=number_class,
            prefix=prefix,
            max_calls=request.calls,
            reason=request.reason,
            site=request.site,
        )
        if book.grant(approval):
            return approval
    raise LedgerError("could not find a free approval id; try again")


def revoke_approval(
    book: ApprovalBookPort,
    policy: Policy,
    approval_id: str,
    *,
    by: str,
    reason: str,
    now: datetime,
) -> tuple[Approval, bool]:
    """Revoke an approval; return it and whether this call revoked it (False: it already was).

    Raises:
        NotFound: no such approval.
        NotPermitted: ``by`` may not approve (so may not revoke) this person's calls.
        RequestError: no reason given.
    """
    approver = approver_named(policy, by)
    if not reason.strip():
        raise RequestError("--reason must say why the approval is revoked")
    existing = book.get(approval_id)
    if existing is None:
        raise NotFound(
            f"没有该批准 — no approval {approval_id!r} in the ledger; "
            "`pbxguard approve list --all` lists them"
        )
    person = policy.people.get(existing.person_id)
    if person is not None:
        refusal = refusal_to_approve(policy, approver, person)
        if refusal is not None and approver.id != existing.granted_by:
            raise NotPermitted(f"{refusal[0]} — {refusal[1]}")
    if existing.revoked:
        return existing, False
    return book.revoke(approval_id, by=approver.id, at=now, reason=reason), True


def list_approvals(
    book: ApprovalBookPort, *, now: datetime, person: str | None = None, everything: bool = False
) -> list[Approval]:
    """Return approvals (of ``person``): those active or scheduled, or ``everything``."""
    current = (ApprovalState.ACTIVE, ApprovalState.SCHEDULED)
    return [a for a in book.all(person) if everything or approval_state(a, now) in current]
