"""What administrators do in the console: accounts and roles, the rota, set-aside entries.

Each change is checked against the administrator's role and written to the audit trail.
"""

from __future__ import annotations

from datetime import datetime

from pbxguard.app import access
from pbxguard.app.ports import (
    AuditTrailPort,
    PasswordHasherPort,
    RotaStore,
    SetAsidePort,
    UserBookPort,
)
from pbxguard.app.rota import change_rota
from pbxguard.domain.access import ConsoleUser, Permission, Viewer
from pbxguard.domain.policy import Policy
from pbxguard.domain.rota import Rota, Shift


def create_account(
    users: UserBookPort,
    hasher: PasswordHasherPort,
    trail: AuditTrailPort,
    policy: Policy,
    viewer: Viewer,
    *,
    new: access.NewUser,
    now: datetime,
) -> ConsoleUser:
    """Create an account (administrators only)."""
    access.require(viewer, Permission.MANAGE_USERS)
    user = access.add_user(users, hasher, policy, new, by=viewer.username, now=now)
    access.record_change(
        trail,
        viewer,
        action="user_added",
        target=user.username,
        detail=f"{user.role.value} {user.person_id}",
        now=now,
    )
    return user


def set_account_disabled(
    users: UserBookPort,
    trail: AuditTrailPort,
    viewer: Viewer,
    username: str,
    *,
    disabled: bool,
    now: datetime,
) -> ConsoleUser:
    """Disable or enable an account (administrators only)."""
    access.require(viewer, Permission.MANAGE_USERS)
    user = access.set_disabled(users, username, disabled=disabled, by=viewer.username, now=now)
    access.record_change(
        trail,
        viewer,
        action="user_disabled" if disabled else "user_enabled",
        target=username,
        detail="",
        now=now,
    )
    return user


def reset_password(
    users: UserBookPort,
    hasher: PasswordHasherPort,
    trail: AuditTrailPort,
    viewer: Viewer,
    username: str,
    *,
    password: str,
    now: datetime,
) -> ConsoleUser:
    """Set an account's password (administrators only; never recorded, only that it changed)."""
    access.require(viewer, Permission.MANAGE_USERS)
    user = access.change_password(users, hasher, username, password, by=viewer.username, now=now)
    access.record_change(trail, viewer, action="user_password", target=username, detail="", now=now)
    return user


def assign_role(
    users: UserBookPort,
    trail: AuditTrailPort,
    policy: Policy,
    viewer: Viewer,
    username: str,
    *,
    role: str,
    person_id: str,
    now: datetime,
) -> ConsoleUser:
    """Give an account another role (administrators only)."""
    access.require(viewer, Permission.MANAGE_USERS)
    user = access.change_role(
        users, policy, username, role, person_id=person_id, by=viewer.username, now=now
    )
    access.record_change(
        trail, viewer, action="user_role", target=username, detail=f"{role} {person_id}", now=now
    )
    return user


def edit_rota(
    store: RotaStore | None,
    trail: AuditTrailPort,
    policy: Policy,
    viewer: Viewer,
    shift: Shift,
    *,
    add: bool,
    now: datetime,
) -> Rota:
    """Add or remove a shift of the rota file (administrators only)."""
    access.require(viewer, Permission.EDIT_ROTA)
    rota = change_rota(store, policy, shift, add=add)
    access.record_change(
        trail,
        viewer,
        action="rota_shift_added" if add else "rota_shift_removed",
        target=shift.line,
        detail=f"{shift.person} {shift!r}",
        now=now,
    )
    return rota


def replay_set_aside(
    set_aside: SetAsidePort, trail: AuditTrailPort, viewer: Viewer, *, now: datetime
) -> tuple[int, int]:
    """Try the set-aside ledger entries again (administrators only); return (written, kept)."""
    access.require(viewer, Permission.REPLAY_SET_ASIDE)
    written, kept = set_aside.replay()
    access.record_change(
        trail,
        viewer,
        action="set_aside_replayed",
        target="journal",
        detail=f"written {written}, still failing {kept}",
        now=now,
    )
    return written, kept
