"""Everything the audit and approval console works with, gathered by the composition root.

The web layer (`pbxguard.entrypoints.web`) holds one `Console` and calls the use cases of
`pbxguard.app` with its parts: it never opens a database or reads the clock itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from pbxguard.app.access import LoginThrottle
from pbxguard.app.overview import LiveView
from pbxguard.app.ports import (
    ApprovalBookPort,
    ApprovalRequestBookPort,
    AuditTrailPort,
    CallLogPort,
    Clock,
    DecisionCountsPort,
    OffenceBookPort,
    PasswordHasherPort,
    RegisterBookPort,
    RotaStore,
    SetAsidePort,
    SignOffBookPort,
    UserBookPort,
)
from pbxguard.domain.policy import Policy


@dataclass(frozen=True, slots=True)
class PolicyStatus:
    """What the administrator sees of the policy: which file, which version, since when.

    ``error`` is what is wrong with the file as it is on disk now ("" when it loads): the
    guard keeps the last good version meanwhile.
    """

    file: str
    version: str
    loaded_at: datetime
    error: str = ""


async def _nothing() -> None:
    return None


@dataclass(slots=True)
class Console:
    """The console's ports, the policy in force, and what the running daemon offers."""

    policy: Callable[[], Policy]
    clock: Clock
    users: UserBookPort
    passwords: PasswordHasherPort
    trail: AuditTrailPort
    offences: OffenceBookPort
    calls: CallLogPort
    approvals: ApprovalBookPort
    requests: ApprovalRequestBookPort
    register: RegisterBookPort
    signoffs: SignOffBookPort
    decisions: DecisionCountsPort
    live: LiveView
    policy_status: Callable[[], PolicyStatus]
    set_aside: SetAsidePort
    rota_store: Callable[[], RotaStore | None]
    #: Tell the running guard that approvals changed (so a grant is usable at once).
    approvals_changed: Callable[[], Awaitable[None]] = _nothing
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    #: Whether staff accounts may sign in (REGULATIONS §8: optional by site).
    staff_enabled: bool = True
