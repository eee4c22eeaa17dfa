"""Console accounts, signing in, and the scope every ledger query of the console runs in.

Accounts are created with ``pbxguard user add`` (or by an administrator in the console) and
kept as events in the ledger; passwords are argon2 hashes (`PasswordHasherPort`). Signing in
is throttled per account and per client address (`LoginThrottle`): after ``max_failures`` wrong
passwords within ``window`` the account (or address) is locked for ``lockout``.

Every query the console makes for a viewer goes through `scoped_filter` (offences) or
`visible_person` (approvals, requests, register entries): a department head's query carries
their department, a member of staff's their person id, so what lies outside the scope is
never read, and asking for it by id finds nothing (`NotFound`).
"""

from __future__ import annotations

import contextlib
import re
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from pbxguard.app.ports import AuditTrailPort, OffenceBookPort, PasswordHasherPort, UserBookPort
from pbxguard.domain.access import (
    AccountEvent,
    ConsoleRole,
    ConsoleUser,
    Permission,
    Scope,
    Viewer,
    may,
)
from pbxguard.domain.entries import OffenceEntry, OffenceFilter
from pbxguard.domain.policy import Policy
from pbxguard.errors import LedgerError, NotFound, NotPermitted, RequestError

_USERNAME = re.compile(r"^[a-z][a-z0-9_.-]{1,31}$")
MIN_PASSWORD = 10
#: A hash checked when the account does not exist, so both cases cost the same time.
_NOBODY = "nobody"


def require(viewer: Viewer, permission: Permission) -> None:
    """Raise unless ``viewer``'s role holds ``permission``.

    Raises:
        NotPermitted: it does not.
    """
    if not may(viewer.role, permission):
        zh, en = viewer.role.label
        raise NotPermitted(f"{zh}无此权限 — a {en} may not do this ({permission.value})")


def viewer_of(user: ConsoleUser, policy: Policy) -> Viewer:
    """Return the viewer an account is, with its person's department from the policy."""
    person = policy.people.get(user.person_id) if user.person_id else None
    return Viewer(
        username=user.username,
        role=user.role,
        person_id=user.person_id,
        department=person.department if person is not None else "",
        name=user.display_name or (person.name if person is not None else user.username),
    )


def scoped_filter(viewer: Viewer, wanted: OffenceFilter) -> OffenceFilter:
    """Return ``wanted`` narrowed to what ``viewer`` may see.

    Raises:
        NotPermitted: the viewer sees no offences, or asked for another department or person.
    """
    scope = viewer.scope
    if scope is Scope.ALL:
        return wanted
    if scope is Scope.DEPARTMENT and viewer.department:
        if wanted.department not in (None, viewer.department):
            raise NotPermitted(
                f"只能查看本部门 — you see your own department ({viewer.department}) only"
            )
        return replace(wanted, department=viewer.department)
    if scope is Scope.PERSON and viewer.person_id:
        if wanted.person not in (None, viewer.person_id):
            raise NotPermitted("只能查看本人记录 — you see your own records only")
        return replace(wanted, person=viewer.person_id)
    raise NotPermitted("无权查看罚款台账 — this account does not see the fine ledger")


def offence_for(book: OffenceBookPort, viewer: Viewer, offence_id: int) -> OffenceEntry:
    """Return offence ``offence_id`` if ``viewer`` may see it.

    Raises:
        NotFound: no such offence within the viewer's scope.
        NotPermitted: the viewer sees no offences at all.
    """
    where = scoped_filter(viewer, OffenceFilter(offence_id=offence_id))
    for entry in book.iter_offences(where):
        return entry
    raise NotFound(f"没有该记录 — no offence {offence_id}")


def visible_person(viewer: Viewer, policy: Policy, person_id: str, department: str = "") -> bool:
    """Tell whether records of ``person_id`` are within ``viewer``'s scope."""
    person = policy.people.get(person_id)
    return viewer.sees_person(person_id, department or (person.department if person else ""))


# -- accounts ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewUser:
    """An account to create."""

    username: str
    password: str
    role: str
    person_id: str = ""
    display_name: str = ""


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise RequestError(f"密码太短 — the password needs at least {MIN_PASSWORD} characters")


def _role(text: str) -> ConsoleRole:
    try:
        return ConsoleRole(text)
    except ValueError as error:
        known = ", ".join(r.value for r in ConsoleRole)
        raise RequestError(f"未知角色 — unknown role {text!r}; one of {known}") from error


def add_user(
    users: UserBookPort,
    hasher: PasswordHasherPort,
    policy: Policy,
    new: NewUser,
    *,
    by: str,
    now: datetime,
) -> ConsoleUser:
    """Create a console account.

    Raises:
        RequestError: a bad name, role or password, or the account exists.
        NotFound: the role needs a person of the policy and there is none of that id.
    """
    if not _USERNAME.match(new.username):
        raise RequestError(
            f"账户名无效 — {new.username!r}: 2-32 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter"
        )
    role = _role(new.role)
    if role.needs_person and not new.person_id:
        raise RequestError(f"--person is needed: a {role.label[1]} is a person of the policy")
    if new.person_id and new.person_id not in policy.people:
        raise NotFound(f"策略中没有此人 — no person {new.person_id!r} in the policy")
    _check_password(new.password)
    if users.get(new.username) is not None:
        raise RequestError(f"账户已存在 — the account {new.username!r} exists already")
    return users.record(
        new.username,
        AccountEvent.CREATED,
        by=by,
        at=now,
        role=role.value,
        person_id=new.person_id,
        display_name=new.display_name,
        password_hash=hasher.hash(new.password),
    )


def _existing(users: UserBookPort, username: str) -> ConsoleUser:
    user = users.get(username)
    if user is None:
        raise NotFound(f"没有此账户 — no console account {username!r}")
    return user


def change_password(
    users: UserBookPort,
    hasher: PasswordHasherPort,
    username: str,
    password: str,
    *,
    by: str,
    now: datetime,
) -> ConsoleUser:
    """Give an account a new password.

    Raises:
        NotFound: no such account.
        RequestError: the password is too short.
    """
    _existing(users, username)
    _check_password(password)
    return users.record(
        username, AccountEvent.PASSWORD, by=by, at=now, password_hash=hasher.hash(password)
    )


def set_disabled(
    users: UserBookPort, username: str, *, disabled: bool, by: str, now: datetime, reason: str = ""
) -> ConsoleUser:
    """Disable (or enable again) an account; its sessions end at their next request.

    Raises:
        NotFound: no such account.
    """
    user = _existing(users, username)
    if user.disabled == disabled:
        return user
    kind = AccountEvent.DISABLED if disabled else AccountEvent.ENABLED
    return users.record(username, kind, by=by, at=now, reason=reason)


def change_role(
    users: UserBookPort,
    policy: Policy,
    username: str,
    role: str,
    *,
    person_id: str,
    by: str,
    now: datetime,
) -> ConsoleUser:
    """Give an account another role (and person).

    Raises:
        NotFound: no such account or person.
        RequestError: the role is unknown or needs a person.
    """
    _existing(users, username)
    new_role = _role(role)
    if new_role.needs_person and not person_id:
        raise RequestError(f"a {new_role.label[1]} is a person of the policy: name one")
    if person_id and person_id not in policy.people:
        raise NotFound(f"策略中没有此人 — no person {person_id!r} in the policy")
    return users.record(
        username, AccountEvent.ROLE, by=by, at=now, role=new_role.value, person_id=person_id
    )


@dataclass(slots=True)
class LoginThrottle:
    """Counts wrong passwords per account and per client address, and locks after too many.

    An account locks after ``max_failures`` wrong passwords, an address (which many people may
    share behind a proxy) after ``max_client_failures``. Attempts from one address are also
    rate-limited (``per_minute``), right or wrong. State is in memory: a restart forgets it
    (the audit trail keeps every failure).
    """

    max_failures: int = 5
    max_client_failures: int = 20
    window: timedelta = timedelta(minutes=15)
    lockout: timedelta = timedelta(minutes=15)
    per_minute: int = 20
    _failures: dict[str, deque[datetime]] = field(default_factory=dict)
    _locked: dict[str, datetime] = field(default_factory=dict)
    _attempts: dict[str, deque[datetime]] = field(default_factory=dict)

    def locked_until(self, key: str, now: datetime) -> datetime | None:
        """Return until when ``key`` is locked, or None."""
        until = self._locked.get(key)
        if until is not None and until <= now:
            del self._locked[key]
            return None
        return until

    def attempt(self, client: str, now: datetime) -> bool:
        """Count one attempt from ``client``; False when it is over the rate."""
        recent = self._attempts.setdefault(client, deque())
        while recent and recent[0] <= now - timedelta(minutes=1):
            recent.popleft()
        if len(recent) >= self.per_minute:
            return False
        recent.append(now)
        return True

    def failed(self, key: str, now: datetime) -> bool:
        """Count a wrong password for ``key``; True when this locked it."""
        recent = self._failures.setdefault(key, deque())
        while recent and recent[0] <= now - self.window:
            recent.popleft()
        recent.append(now)
        limit = self.max_client_failures if key.startswith("client:") else self.max_failures
        if len(recent) >= limit:
            self._locked[key] = now + self.lockout
            recent.clear()
            return True
        return False

    def succeeded(self, key: str) -> None:
        """Forget the wrong passwords of ``key``."""
        self._failures.pop(key, None)


@dataclass(frozen=True, slots=True)
class SignIn:
    """An attempt to sign in."""

    username: str
    password: str
    client: str


def sign_in(
    users: UserBookPort,
    hasher: PasswordHasherPort,
    throttle: LoginThrottle,
    trail: AuditTrailPort,
    attempt: SignIn,
    *,
    now: datetime,
) -> ConsoleUser:
    """Check a username and password; return the account. Every outcome goes to the trail.

    Raises:
        NotPermitted: wrong name or password (one message for both), a disabled account, a
            locked account or address, or too many attempts from the address.
    """
    wrong = NotPermitted("用户名或密码错误 — wrong username or password")
    account_key, client_key = f"user:{attempt.username}", f"client:{attempt.client}"

    def audit(action: str, detail: str = "") -> None:
        # A ledger outage must not let anyone in, nor keep the right people out.
        with contextlib.suppress(LedgerError):
            trail.record(
                at=now,
                actor=attempt.username[:64],
                role="",
                action=action,
                target=attempt.client,
                detail=detail,
            )

    if not throttle.attempt(client_key, now):
        audit("login_rate_limited")
        raise NotPermitted("尝试过于频繁 — too many attempts; wait a minute")
    for key in (account_key, client_key):
        until = throttle.locked_until(key, now)
        if until is not None:
            audit("login_locked")
            raise NotPermitted(
                f"已锁定 — locked after repeated wrong passwords until "
                f"{until.strftime('%H:%M')} UTC"
            )
    user = users.get(attempt.username)
    password_hash = user.password_hash if user is not None else hasher.hash(_NOBODY)
    matches = hasher.verify(password_hash, attempt.password) and user is not None
    if user is None or not matches:
        locked = [throttle.failed(key, now) for key in (account_key, client_key)]
        audit("login_failed", "locked" if any(locked) else "")
        raise wrong
    if user.disabled:
        audit("login_disabled")
        raise wrong
    throttle.succeeded(account_key)
    throttle.succeeded(client_key)
    audit("login")
    return user


def record_change(
    trail: AuditTrailPort, viewer: Viewer, *, action: str, target: str, detail: str, now: datetime
) -> None:
    """Write one change made through the console into the audit trail."""
    trail.record(
        at=now,
        actor=viewer.username,
        role=viewer.role.value,
        action=action,
        target=target,
        detail=detail,
    )
