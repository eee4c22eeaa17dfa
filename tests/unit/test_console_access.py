"""Who sees what in the console, and signing in: scopes, permissions, the throttle."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from pbxguard.app.access import LoginThrottle, SignIn, scoped_filter, sign_in
from pbxguard.domain.access import (
    AccountEvent,
    AuditEntry,
    ConsoleRole,
    ConsoleUser,
    Permission,
    Scope,
    Viewer,
    may,
)
from pbxguard.domain.entries import OffenceFilter
from pbxguard.errors import NotPermitted

NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
HEAD = Viewer("head-eng", ConsoleRole.DEPARTMENT_HEAD, "head-9001", "工程部")
STAFF = Viewer("zhang", ConsoleRole.STAFF, "zhang-wei", "工程部")


class FakePasswords:
    """Hashes by prefixing: enough to tell right from wrong."""

    def hash(self, password: str) -> str:
        return f"hashed:{password}"

    def verify(self, password_hash: str, password: str) -> bool:
        return password_hash == f"hashed:{password}"


class FakeUsers:
    def __init__(self, *users: ConsoleUser) -> None:
        self.users = {u.username: u for u in users}

    def record(self, username: str, kind: AccountEvent, **_: object) -> ConsoleUser:
        raise AssertionError("sign-in records no account event")

    def get(self, username: str) -> ConsoleUser | None:
        return self.users.get(username)

    def all(self) -> list[ConsoleUser]:
        return list(self.users.values())


class FakeTrail:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def record(
        self, *, at: datetime, actor: str, role: str, action: str, target: str, detail: str
    ) -> None:
        self.lines.append((actor, action))

    def recent(self, limit: int = 200, *, actor: str | None = None) -> list[AuditEntry]:
        return []


def account(username: str, *, disabled: bool = False) -> ConsoleUser:
    return ConsoleUser(
        username, ConsoleRole.AUDITOR, "", "", "hashed:right password", disabled, NOW, NOW
    )


@pytest.mark.parametrize(
    ("viewer", "wanted", "expected"),
    [
        (HEAD, OffenceFilter(), OffenceFilter(department="工程部")),
        (HEAD, OffenceFilter(offence_id=7), OffenceFilter(department="工程部", offence_id=7)),
        (STAFF, OffenceFilter(rule="LD-2"), OffenceFilter(person="zhang-wei", rule="LD-2")),
        (
            Viewer("gm", ConsoleRole.GENERAL_MANAGER),
            OffenceFilter(department="市场部"),
            OffenceFilter(department="市场部"),
        ),
    ],
)
def test_the_scope_narrows_the_query(
    viewer: Viewer, wanted: OffenceFilter, expected: OffenceFilter
) -> None:
    assert scoped_filter(viewer, wanted) == expected


@pytest.mark.parametrize(
    ("viewer", "wanted"),
    [
        (HEAD, OffenceFilter(department="市场部")),
        (STAFF, OffenceFilter(person="liu-fang")),
        (Viewer("duty", ConsoleRole.DUTY_LEAD), OffenceFilter()),
        (replace(HEAD, department=""), OffenceFilter()),  # a head whose person is gone
    ],
)
def test_outside_the_scope_is_refused(viewer: Viewer, wanted: OffenceFilter) -> None:
    with pytest.raises(NotPermitted):
        scoped_filter(viewer, wanted)


def test_roles_hold_what_the_regulations_give_them() -> None:
    assert may(ConsoleRole.AUDITOR, Permission.EXPORT)
    assert not may(ConsoleRole.AUDITOR, Permission.APPROVE)
    assert not may(ConsoleRole.AUDITOR, Permission.DECIDE_ADJUSTMENTS)
    assert may(ConsoleRole.GENERAL_MANAGER, Permission.SIGN_OFF)
    assert not may(ConsoleRole.DEPARTMENT_HEAD, Permission.SIGN_OFF)
    assert may(ConsoleRole.DEPARTMENT_HEAD, Permission.APPROVE)
    assert not may(ConsoleRole.STAFF, Permission.APPROVE)
    assert may(ConsoleRole.STAFF, Permission.APPEAL)
    assert not may(ConsoleRole.DUTY_LEAD, Permission.VIEW_LEDGER)
    assert all(may(ConsoleRole.ADMINISTRATOR, p) for p in Permission)
    assert Viewer("duty", ConsoleRole.DUTY_LEAD).scope is Scope.NONE
    assert STAFF.sees_person("zhang-wei", "工程部")
    assert not STAFF.sees_person("staff-2001", "工程部")
    assert HEAD.sees_person("staff-2001", "工程部")
    assert not HEAD.sees_person("liu-fang", "市场部")


def test_five_wrong_passwords_lock_the_account_not_the_address() -> None:
    users = FakeUsers(account("gm"), account("auditor"))
    trail = FakeTrail()
    throttle = LoginThrottle()
    passwords = FakePasswords()
    for minute in range(5):
        with pytest.raises(NotPermitted, match="wrong username or password"):
            sign_in(
                users,
                passwords,
                throttle,
                trail,
                SignIn("gm", "guess", "10.0.0.9"),
                now=NOW + timedelta(minutes=minute),
            )
    with pytest.raises(NotPermitted, match="locked"):
        sign_in(
            users,
            passwords,
            throttle,
            trail,
            SignIn("gm", "right password", "10.0.0.9"),
            now=NOW + timedelta(minutes=6),
        )
    other = sign_in(
        users,
        passwords,
        throttle,
        trail,
        SignIn("auditor", "right password", "10.0.0.9"),
        now=NOW + timedelta(minutes=6),
    )
    assert other.username == "auditor"
    later = sign_in(
        users,
        passwords,
        throttle,
        trail,
        SignIn("gm", "right password", "10.0.0.9"),
        now=NOW + timedelta(minutes=4 + 15, seconds=1),
    )
    assert later.username == "gm"
    actions = [action for _, action in trail.lines]
    assert actions.count("login_failed") == 5
    assert actions.count("login_locked") == 1
    assert actions.count("login") == 2


def test_unknown_and_disabled_accounts_get_the_same_answer_as_a_wrong_password() -> None:
    users = FakeUsers(account("gone", disabled=True))
    trail = FakeTrail()
    throttle = LoginThrottle()
    messages = set()
    for name, password in (("nobody", "x"), ("gone", "right password"), ("gone", "wrong")):
        with pytest.raises(NotPermitted) as refused:
            sign_in(users, FakePasswords(), throttle, trail, SignIn(name, password, "c"), now=NOW)
        messages.add(str(refused.value))
    assert len(messages) == 1
    assert ("gone", "login_disabled") in trail.lines


def test_too_many_attempts_a_minute_from_one_address_are_refused() -> None:
    throttle = LoginThrottle(per_minute=3)
    assert all(throttle.attempt("client:c", NOW) for _ in range(3))
    assert not throttle.attempt("client:c", NOW + timedelta(seconds=30))
    assert throttle.attempt("client:c", NOW + timedelta(seconds=61))
