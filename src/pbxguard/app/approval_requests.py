"""Approvals through the console: staff ask, department heads grant, refuse or revoke.

A member of staff asks for prior consent (LD-1) with a reason; the request waits in their
department head's queue. Granting it stores an approval exactly as ``pbxguard approve grant``
does (`pbxguard.app.approvals.grant_approval`: only the head's people, only classes the policy
lets them approve, never their own calls) and records the answer with the approval's id.
Every change also goes to the console's audit trail.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from datetime import datetime

from pbxguard.app.access import record_change, require, visible_person
from pbxguard.app.approvals import (
    GrantRequest,
    approval_scope,
    grant_approval,
    list_approvals,
    revoke_approval,
)
from pbxguard.app.ports import ApprovalBookPort, ApprovalRequestBookPort, AuditTrailPort
from pbxguard.domain.access import (
    ApprovalRequest,
    Permission,
    RequestState,
    Scope,
    Viewer,
)
from pbxguard.domain.approvals import Approval
from pbxguard.domain.policy import Policy
from pbxguard.errors import LedgerError, NotFound, NotPermitted, RequestError

_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"


def new_request_id() -> str:
    """Return a short random request id (``rq-7k3m9q``)."""
    return "rq-" + "".join(secrets.choice(_ALPHABET) for _ in range(6))


@dataclass(frozen=True, slots=True)
class Ask:
    """What a member of staff asks for."""

    valid_from: datetime
    valid_until: datetime
    reason: str
    number_class: str | None = None
    prefix: str | None = None
    calls: int | None = None


def _window(policy: Policy, valid_from: datetime, valid_until: datetime, now: datetime) -> None:
    zone = policy.timezone
    if valid_until <= valid_from:
        raise RequestError(
            f"结束时间须晚于开始时间 — the end {valid_until.astimezone(zone):%Y-%m-%d %H:%M} "
            f"must be after the start {valid_from.astimezone(zone):%Y-%m-%d %H:%M}"
        )
    if valid_until <= now:
        raise RequestError("时间已过 — the window is already over")


def _approver(viewer: Viewer) -> str:
    """Return the viewer's person id, the approver a grant or revocation is recorded under.

    Raises:
        NotPermitted: the account is not a person of the policy.
    """
    if not viewer.person_id:
        raise NotPermitted("账户未关联人员 — this account is not an approver of the policy")
    return viewer.person_id


def request_approval(
    requests: ApprovalRequestBookPort,
    trail: AuditTrailPort,
    policy: Policy,
    viewer: Viewer,
    ask: Ask,
    *,
    now: datetime,
) -> ApprovalRequest:
    """Store a member of staff's request for prior approval.

    Raises:
        NotPermitted: the viewer may not ask (not staff, or not a person of the policy).
        RequestError: no reason, a bad window, or a scope approvals do not cover.
    """
    require(viewer, Permission.REQUEST_APPROVAL)
    person = policy.people.get(viewer.person_id)
    if person is None:
        raise NotPermitted("账户未关联人员 — this account is not a person of the policy")
    if not ask.reason.strip():
        raise RequestError("须说明事由 — say what the calls are for (联络事项)")
    if ask.calls is not None and ask.calls < 1:
        raise RequestError("次数至少为 1 — calls must be at least 1")
    _window(policy, ask.valid_from, ask.valid_until, now)
    number_class, prefix = approval_scope(policy, ask.number_class, ask.prefix)
    request = requests.submit(
        ApprovalRequest(
            id=new_request_id(),
            person_id=person.id,
            department=person.department,
            requested_by=viewer.username,
            requested_at=now,
            valid_from=ask.valid_from,
            valid_until=ask.valid_until,
            number_class=number_class,
            prefix=prefix,
            calls=ask.calls,
            reason=ask.reason.strip(),
        )
    )
    record_change(
        trail,
        viewer,
        action="approval_requested",
        target=request.id,
        detail=f"{person.id} {number_class.value if number_class else prefix} {ask.reason}",
        now=now,
    )
    return request


def visible_requests(
    requests: ApprovalRequestBookPort, viewer: Viewer, *, pending_only: bool = False
) -> list[ApprovalRequest]:
    """Return the requests ``viewer`` may see, newest first (the query carries the scope)."""
    scope = viewer.scope
    if scope is Scope.ALL:
        found = requests.all()
    elif scope is Scope.DEPARTMENT and viewer.department:
        found = requests.all(department=viewer.department)
    elif scope is Scope.PERSON and viewer.person_id:
        found = requests.all(person=viewer.person_id)
    else:
        raise NotPermitted("无权查看批准申请 — this account does not see approval requests")
    return [r for r in found if not pending_only or r.state is RequestState.PENDING]


def request_for(
    requests: ApprovalRequestBookPort, policy: Policy, viewer: Viewer, request_id: str
) -> ApprovalRequest:
    """Return one request within ``viewer``'s scope.

    Raises:
        NotFound: none of that id that the viewer may see.
    """
    found = requests.get(request_id)
    if found is None or not visible_person(viewer, policy, found.person_id, found.department):
        raise NotFound(f"没有该申请 — no approval request {request_id}")
    return found


def grant_request(
    requests: ApprovalRequestBookPort,
    approvals: ApprovalBookPort,
    trail: AuditTrailPort,
    policy: Policy,
    viewer: Viewer,
    *,
    request_id: str,
    now: datetime,
) -> tuple[ApprovalRequest, Approval]:
    """Grant a pending request: store the approval, then the answer.

    Raises:
        NotFound: no such request in the viewer's scope.
        NotPermitted: the viewer may not approve it (LD-1, LD-5, policy roles).
        RequestError: it was answered already, or its window is over.
    """
    require(viewer, Permission.APPROVE)
    request = request_for(requests, policy, viewer, request_id)
    if request.state is not RequestState.PENDING:
        raise RequestError(f"申请已处理 — request {request_id} was {request.state.value} already")
    approval = grant_approval(
        approvals,
        policy,
        GrantRequest(
            person_id=request.person_id,
            approver_id=_approver(viewer),
            valid_from=request.valid_from,
            valid_until=request.valid_until,
            number_class=request.number_class.value if request.number_class else None,
            prefix=request.prefix or None,
            calls=request.calls,
            reason=request.reason,
        ),
        now=now,
    )
    try:
        answered = requests.answer(
            request_id, RequestState.GRANTED, by=viewer.actor, at=now, approval_id=approval.id
        )
    except LedgerError as error:
        raise RequestError(str(error)) from error
    record_change(
        trail,
        viewer,
        action="approval_request_granted",
        target=request_id,
        detail=f"approval {approval.id} for {request.person_id}",
        now=now,
    )
    return answered, approval


def refuse_request(
    requests: ApprovalRequestBookPort,
    trail: AuditTrailPort,
    policy: Policy,
    viewer: Viewer,
    request_id: str,
    *,
    reason: str,
    now: datetime,
) -> ApprovalRequest:
    """Refuse a pending request, saying why.

    Raises:
        NotFound: no such request in the viewer's scope.
        RequestError: no reason, or it was answered already.
    """
    require(viewer, Permission.APPROVE)
    request_for(requests, policy, viewer, request_id)
    if not reason.strip():
        raise RequestError("须说明理由 — say why the request is refused")
    try:
        answered = requests.answer(
            request_id, RequestState.REFUSED, by=viewer.actor, at=now, reason=reason.strip()
        )
    except LedgerError as error:
        raise RequestError(str(error)) from error
    record_change(
        trail,
        viewer,
        action="approval_request_refused",
        target=request_id,
        detail=reason,
        now=now,
    )
    return answered


def grant_directly(
    approvals: ApprovalBookPort,
    trail: AuditTrailPort,
    policy: Policy,
    viewer: Viewer,
    request: GrantRequest,
    *,
    now: datetime,
) -> Approval:
    """Grant an approval without a request (the head's own initiative).

    Raises:
        NotFound: the person is not within the viewer's scope.
        NotPermitted: the viewer may not approve (LD-1, LD-5, policy roles).
        RequestError: a bad window or scope.
    """
    require(viewer, Permission.APPROVE)
    if not visible_person(viewer, policy, request.person_id):
        raise NotFound(f"没有此人 — no person {request.person_id!r} in your department")
    approval = grant_approval(
        approvals, policy, replace(request, approver_id=_approver(viewer)), now=now
    )
    record_change(
        trail,
        viewer,
        action="approval_granted",
        target=approval.id,
        detail=f"{approval.person_id} until {approval.valid_until.isoformat()}",
        now=now,
    )
    return approval


def visible_approvals(
    approvals: ApprovalBookPort,
    policy: Policy,
    viewer: Viewer,
    *,
    now: datetime,
    everything: bool = False,
) -> list[Approval]:
    """Return the approvals ``viewer`` may see (of their scope's people)."""
    scope = viewer.scope
    if scope is Scope.NONE:
        raise NotPermitted("无权查看批准 — this account does not see approvals")
    person = viewer.person_id if scope is Scope.PERSON else None
    found = list_approvals(approvals, now=now, person=person, everything=everything)
    return [a for a in found if visible_person(viewer, policy, a.person_id)]


def approval_for(
    approvals: ApprovalBookPort, policy: Policy, viewer: Viewer, approval_id: str
) -> Approval:
    """Return one approval within ``viewer``'s scope.

    Raises:
        NotFound: none of that id that the viewer may see.
    """
    found = approvals.get(approval_id)
    if found is None or not visible_person(viewer, policy, found.person_id):
        raise NotFound(f"没有该批准 — no approval {approval_id}")
    return found


def revoke(
    approvals: ApprovalBookPort,
    trail: AuditTrailPort,
    policy: Policy,
    viewer: Viewer,
    approval_id: str,
    *,
    reason: str,
    now: datetime,
) -> Approval:
    """Revoke an approval the viewer may see and approve.

    Raises:
        NotFound: no such approval in the viewer's scope.
        NotPermitted: the viewer may not approve this person's calls.
        RequestError: no reason.
    """
    require(viewer, Permission.APPROVE)
    approval_for(approvals, policy, viewer, approval_id)
    revoked, _ = revoke_approval(
        approvals, policy, approval_id, by=_approver(viewer), reason=reason, now=now
    )
    record_change(
        trail, viewer, action="approval_revoked", target=approval_id, detail=reason, now=now
    )
    return revoked
