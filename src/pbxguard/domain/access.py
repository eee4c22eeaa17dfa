"""Who may do what in the audit and approval console (REGULATIONS.md §8), and its records.

A console account has one role. What a role may see is a *scope*: everything (administrator,
auditor, general manager), one department (a department head), one person (staff), or no
offences at all (the duty lead, who watches the protected lines). Scopes narrow the ledger's
queries themselves (`pbxguard.app.access`), so a page or an API answer can only ever hold what
its viewer may see; something outside the scope does not exist for them (404, not 403).

The values here are the console's read models: accounts folded from their events, approval
requests with their answer, the general manager's sign-offs and the audit trail.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from pbxguard.domain.numbers import NumberClass


class ConsoleRole(enum.StrEnum):
    """A console account's role."""

    ADMINISTRATOR = "administrator"
    AUDITOR = "auditor"
    GENERAL_MANAGER = "general_manager"
    DEPARTMENT_HEAD = "department_head"
    DUTY_LEAD = "duty_lead"
    STAFF = "staff"

    @property
    def label(self) -> tuple[str, str]:
        """Return the role's name (zh, en)."""
        return ROLE_LABELS[self]

    @property
    def needs_person(self) -> bool:
        """Tell whether an account of this role must be a person of the policy's directory."""
        return self in (ConsoleRole.DEPARTMENT_HEAD, ConsoleRole.STAFF)


ROLE_LABELS: dict[ConsoleRole, tuple[str, str]] = {
    ConsoleRole.ADMINISTRATOR: ("管理员", "administrator"),
    ConsoleRole.AUDITOR: ("审计", "auditor"),
    ConsoleRole.GENERAL_MANAGER: ("总经理", "general manager"),
    ConsoleRole.DEPARTMENT_HEAD: ("部门负责人", "department head"),
    ConsoleRole.DUTY_LEAD: ("值班长", "duty lead"),
    ConsoleRole.STAFF: ("员工", "staff"),
}


class Scope(enum.StrEnum):
    """How much of the ledger a viewer sees."""

    ALL = "all"
    DEPARTMENT = "department"
    PERSON = "person"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is asking: a signed-in account, with the department its person belongs to.

    Attributes:
        username: the account.
        role: its role.
        person_id: the policy's person it is ("" for administrators, auditors ... not linked).
        department: that person's department ("" when not linked).
        name: what to call them on screen.
    """

    username: str
    role: ConsoleRole
    person_id: str = ""
    department: str = ""
    name: str = ""

    @property
    def scope(self) -> Scope:
        """Return how much of the ledger this viewer sees."""
        if self.role in (
            ConsoleRole.ADMINISTRATOR,
            ConsoleRole.AUDITOR,
            ConsoleRole.GENERAL_MANAGER,
        ):
            return Scope.ALL
        if self.role is ConsoleRole.DEPARTMENT_HEAD:
            return Scope.DEPARTMENT
        if self.role is ConsoleRole.STAFF:
            return Scope.PERSON
        return Scope.NONE

    @property
    def actor(self) -> str:
        """Return the name the ledger records for this viewer's acts (person id, else account)."""
        return self.person_id or self.username

    def sees_person(self, person_id: str, department: str) -> bool:
        """Tell whether a record of ``person_id`` of ``department`` is within this scope."""
        scope = self.scope
        if scope is Scope.ALL:
            return True
        if scope is Scope.DEPARTMENT:
            return bool(self.department) and department == self.department
        if scope is Scope.PERSON:
            return bool(self.person_id) and person_id == self.person_id
        return False


class Permission(enum.StrEnum):
    """What a role may do (besides seeing what its scope shows)."""

    VIEW_LEDGER = "view_ledger"
    EXPORT = "export"
    VIEW_LIVE = "view_live"
    VIEW_ROTA = "view_rota"
    EDIT_ROTA = "edit_rota"
    MANAGE_USERS = "manage_users"
    VIEW_POLICY = "view_policy"
    REPLAY_SET_ASIDE = "replay_set_aside"
    SIGN_OFF = "sign_off"
    APPROVE = "approve"
    DECIDE_ADJUSTMENTS = "decide_adjustments"
    REQUEST_APPROVAL = "request_approval"
    APPEAL = "appeal"
    FILL_REGISTER = "fill_register"
    VIEW_REPORTS = "view_reports"
    VIEW_AUDIT = "view_audit"


_EVERY_READ = {Permission.VIEW_LEDGER, Permission.VIEW_REPORTS, Permission.VIEW_ROTA}
PERMISSIONS: dict[ConsoleRole, frozenset[Permission]] = {
    ConsoleRole.ADMINISTRATOR: frozenset(Permission),
    ConsoleRole.AUDITOR: frozenset(
        {*_EVERY_READ, Permission.EXPORT, Permission.VIEW_LIVE, Permission.VIEW_AUDIT}
    ),
    ConsoleRole.GENERAL_MANAGER: frozenset(
        {*_EVERY_READ, Permission.EXPORT, Permission.VIEW_LIVE, Permission.SIGN_OFF}
    ),
    ConsoleRole.DEPARTMENT_HEAD: frozenset(
        {
            Permission.VIEW_LEDGER,
            Permission.VIEW_REPORTS,
            Permission.EXPORT,
            Permission.APPROVE,
            Permission.DECIDE_ADJUSTMENTS,
            Permission.FILL_REGISTER,
        }
    ),
    ConsoleRole.DUTY_LEAD: frozenset({Permission.VIEW_LIVE, Permission.VIEW_ROTA}),
    ConsoleRole.STAFF: frozenset(
        {
            Permission.VIEW_LEDGER,
            Permission.REQUEST_APPROVAL,
            Permission.APPEAL,
            Permission.FILL_REGISTER,
        }
    ),
}


def may(role: ConsoleRole, permission: Permission) -> bool:
    """Tell whether ``role`` holds ``permission``."""
    return permission in PERMISSIONS[role]


# -- accounts ---------------------------------------------------------------------------------


class AccountEvent(enum.StrEnum):
    """What happened to an account (each is a row of the ledger, never an update)."""

    CREATED = "created"
    PASSWORD = "password"  # noqa: S105 - the name of an event, not a secret
    DISABLED = "disabled"
    ENABLED = "enabled"
    ROLE = "role"


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    """A console account as its events leave it.

    Attributes:
        password_hash: the argon2 hash of its password (never the password).
        disabled: whether it may sign in.
        created_at: when it was created; ``changed_at`` when its latest event happened.
    """

    username: str
    role: ConsoleRole
    person_id: str
    display_name: str
    password_hash: str
    disabled: bool
    created_at: datetime
    changed_at: datetime


# -- approval requests ------------------------------------------------------------------------


class RequestState(enum.StrEnum):
    """Where an approval request stands."""

    PENDING = "pending"
    GRANTED = "granted"
    REFUSED = "refused"
    WITHDRAWN = "withdrawn"


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """A member of staff's request for prior consent (LD-1), and its answer once given.

    Attributes:
        id: stable identifier (``rq-…``).
        number_class: the class asked for, or None when ``prefix`` alone says it.
        calls: how many calls (None: any within the window).
        answered_by: who granted or refused it ("" while pending).
        approval_id: the approval granted for it ("" unless granted).
        answer: the head's reason when refusing.
    """

    id: str
    person_id: str
    department: str
    requested_by: str
    requested_at: datetime
    valid_from: datetime
    valid_until: datetime
    number_class: NumberClass | None
    prefix: str
    calls: int | None
    reason: str
    state: RequestState = RequestState.PENDING
    answered_by: str = ""
    answered_at: datetime | None = None
    approval_id: str = ""
    answer: str = ""


# -- sign-offs and the audit trail ------------------------------------------------------------


class SignedReport(enum.StrEnum):
    """What the general manager reviews each month (000 L333, L711, L819)."""

    REGISTER = "register"  # the long-distance register
    CHARGES = "charges"  # the unreasonable-charges report (the month's fines)

    @property
    def label(self) -> tuple[str, str]:
        """Return the report's name (zh, en)."""
        if self is SignedReport.REGISTER:
            return ("长话登记表", "long-distance register")
        return ("不合理话费报告", "unreasonable-charges report")


@dataclass(frozen=True, slots=True)
class SignOff:
    """The general manager's sign-off of one month's report."""

    month: str
    report: SignedReport
    by: str
    at: datetime
    note: str
    summary: str


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the console's audit trail: who did what, when."""

    id: int
    at: datetime
    actor: str
    role: str
    action: str
    target: str
    detail: str
