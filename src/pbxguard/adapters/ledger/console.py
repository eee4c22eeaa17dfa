"""The console's books: accounts, approval requests, sign-offs, the audit trail, decision counts.

Like the rest of the ledger these tables only grow (migration 0003_console): an account's
password change or a request's answer is a later row, and the current state is folded from
the rows in the order they were written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from pbxguard.adapters.ledger.database import LedgerDatabase, aware
from pbxguard.adapters.ledger.schema import (
    approval_requests,
    console_audit,
    console_users,
    decisions,
    sign_offs,
)
from pbxguard.domain.access import (
    AccountEvent,
    ApprovalRequest,
    AuditEntry,
    ConsoleRole,
    ConsoleUser,
    RequestState,
    SignedReport,
    SignOff,
)
from pbxguard.domain.numbers import NumberClass
from pbxguard.errors import LedgerConflict, LedgerError


def fold_users(rows: Sequence[Any]) -> dict[str, ConsoleUser]:
    """Derive each account's state from its events, oldest first."""
    found: dict[str, ConsoleUser] = {}
    for row in sorted(rows, key=lambda r: r.id):
        current = found.get(row.username)
        kind = AccountEvent(row.kind)
        if kind is AccountEvent.CREATED:
            if current is None:
                found[row.username] = ConsoleUser(
                    username=row.username,
                    role=ConsoleRole(row.role),
                    person_id=row.person_id,
                    display_name=row.display_name,
                    password_hash=row.password_hash,
                    disabled=False,
                    created_at=row.at,
                    changed_at=row.at,
                )
            continue
        if current is None:
            continue
        if kind is AccountEvent.PASSWORD:
            current = replace(current, password_hash=row.password_hash)
        elif kind is AccountEvent.DISABLED:
            current = replace(current, disabled=True)
        elif kind is AccountEvent.ENABLED:
            current = replace(current, disabled=False)
        elif kind is AccountEvent.ROLE:
            current = replace(current, role=ConsoleRole(row.role), person_id=row.person_id)
        found[row.username] = replace(current, changed_at=row.at)
    return found


class UserBook:
    """Console accounts (their events)."""

    def __init__(self, database: LedgerDatabase) -> None:
        self._db = database

    def record(
        self,
        username: str,
        kind: AccountEvent,
        *,
        by: str,
        at: datetime,
        role: str = "",
        person_id: str = "",
        display_name: str = "",
        password_hash: str = "",
        reason: str = "",
    ) -> ConsoleUser:
        """Append one event of an account; return the account as it now stands.

        Raises:
            LedgerConflict: ``created`` for an account that exists.
            LedgerError: any other event for an account that does not.
        """
        aware(at, "account event time")
        with self._db.write() as session:
            rows = list(
                session.execute(select(console_users).where(console_users.c.username == username))
            )
            exists = bool(rows)
            if kind is AccountEvent.CREATED and exists:
                raise LedgerConflict(f"账户已存在 — the account {username!r} exists already")
            if kind is not AccountEvent.CREATED and not exists:
                raise LedgerError(f"没有此账户 — no console account {username!r}")
            session.append(
                "console_users",
                [
                    {
                        "username": username,
                        "kind": kind.value,
                        "role": role,
                        "person_id": person_id,
                        "display_name": display_name,
                        "password_hash": password_hash,
                        "actor": by,
                        "reason": reason,
                        "at": at,
                    }
                ],
            )
            rows = list(
                session.execute(select(console_users).where(console_users.c.username == username))
            )
        return fold_users(rows)[username]

    def get(self, username: str) -> ConsoleUser | None:
        """Return one account, if it exists."""
        with self._db.read() as session:
            rows = list(
                session.execute(select(console_users).where(console_users.c.username == username))
            )
        return fold_users(rows).get(username)

    def all(self) -> list[ConsoleUser]:
        """Return every account, by name."""
        with self._db.read() as session:
            rows = list(session.execute(select(console_users)))
        return sorted(fold_users(rows).values(), key=lambda u: u.username)


# -- approval requests ------------------------------------------------------------------------


def fold_requests(rows: Sequence[Any]) -> dict[str, ApprovalRequest]:
    """Derive each request's state from its rows, oldest first."""
    found: dict[str, ApprovalRequest] = {}
    for row in sorted(rows, key=lambda r: r.id):
        if row.kind == "requested":
            found[row.request_id] = ApprovalRequest(
                id=row.request_id,
                person_id=row.person_id,
                department=row.department,
                requested_by=row.actor,
                requested_at=row.at,
                valid_from=row.valid_from,
                valid_until=row.valid_until,
                number_class=NumberClass(row.number_class) if row.number_class else None,
                prefix=row.prefix,
                calls=row.max_calls,
                reason=row.reason,
            )
            continue
        current = found.get(row.request_id)
        if current is None or current.state is not RequestState.PENDING:
            continue
        found[row.request_id] = replace(
            current,
            state=RequestState(row.kind),
            answered_by=row.actor,
            answered_at=row.at,
            approval_id=row.approval_id,
            answer=row.reason,
        )
    return found


class ApprovalRequestBook:
    """Requests for prior approval and their answers."""

    def __init__(self, database: LedgerDatabase) -> None:
        self._db = database

    def submit(self, request: ApprovalRequest) -> ApprovalRequest:
        """Store a new request; return it.

        Raises:
            LedgerConflict: a request with that id exists.
        """
        aware(request.requested_at, "request time")
        with self._db.write() as session:
            taken = session.existing("approval_requests", "request_id", [request.id])
            if taken:
                raise LedgerConflict(f"request {request.id} exists already")
            session.append(
                "approval_requests",
                [
                    {
                        "request_id": request.id,
                        "kind": "requested",
                        "person_id": request.person_id,
                        "department": request.department,
                        "actor": request.requested_by,
                        "number_class": request.number_class.value
                        if request.number_class
                        else None,
                        "prefix": request.prefix,
                        "valid_from": aware(request.valid_from, "valid_from"),
                        "valid_until": aware(request.valid_until, "valid_until"),
                        "max_calls": request.calls,
                        "reason": request.reason,
                        "approval_id": "",
                        "at": request.requested_at,
                    }
                ],
            )
        return request

    def answer(
        self,
        request_id: str,
        state: RequestState,
        *,
        by: str,
        at: datetime,
        reason: str = "",
        approval_id: str = "",
    ) -> ApprovalRequest:
        """Record the answer to a pending request; return the request as it now stands.

        Raises:
            LedgerError: no such request, or it was answered already.
        """
        aware(at, "answer time")
        if state is RequestState.PENDING:
            raise LedgerError("an answer grants, refuses or withdraws")
        with self._db.write() as session:
            rows = self._rows(session, request_id)
            current = fold_requests(rows).get(request_id)
            if current is None:
                raise LedgerError(f"没有该申请 — no approval request {request_id}")
            if current.state is not RequestState.PENDING:
                raise LedgerError(
                    f"申请已处理 — request {request_id} was {current.state.value} already"
                )
            session.append(
                "approval_requests",
                [
                    {
                        "request_id": request_id,
                        "kind": state.value,
                        "person_id": current.person_id,
                        "department": current.department,
                        "actor": by,
                        "number_class": None,
                        "prefix": "",
                        "valid_from": None,
                        "valid_until": None,
                        "max_calls": None,
                        "reason": reason,
                        "approval_id": approval_id,
                        "at": at,
                    }
                ],
            )
            return fold_requests(self._rows(session, request_id))[request_id]

    @staticmethod
    def _rows(session: Any, request_id: str) -> list[Any]:
        return list(
            session.execute(
                select(approval_requests).where(approval_requests.c.request_id == request_id)
            )
        )

    def get(self, request_id: str) -> ApprovalRequest | None:
        """Return one request."""
        with self._db.read() as session:
            return fold_requests(self._rows(session, request_id)).get(request_id)

    def all(
        self, *, department: str | None = None, person: str | None = None
    ) -> list[ApprovalRequest]:
        """Return requests (of a department, or of a person), newest first."""
        query = select(approval_requests)
        if department is not None:
            query = query.where(approval_requests.c.department == department)
        if person is not None:
            query = query.where(approval_requests.c.person_id == person)
        with self._db.read() as session:
            rows = list(session.execute(query))
        return sorted(fold_requests(rows).values(), key=lambda r: r.requested_at, reverse=True)


# -- sign-offs --------------------------------------------------------------------------------


class SignOffBook:
    """The general manager's monthly sign-offs."""

    def __init__(self, database: LedgerDatabase) -> None:
        self._db = database

    def sign(self, sign_off: SignOff) -> SignOff:
        """Record a sign-off, once per month and report.

        Raises:
            LedgerConflict: that month's report is signed already.
        """
        aware(sign_off.at, "sign-off time")
        with self._db.write() as session:
            found = session.execute(
                select(sign_offs.c.id).where(
                    sign_offs.c.site == self._db.site,
                    sign_offs.c.month == sign_off.month,
                    sign_offs.c.report == sign_off.report.value,
                )
            ).first()
            if found is not None:
                raise LedgerConflict(
                    f"已签署 — {sign_off.report.value} of {sign_off.month} is signed already"
                )
            session.append(
                "sign_offs",
                [
                    {
                        "month": sign_off.month,
                        "report": sign_off.report.value,
                        "actor": sign_off.by,
                        "note": sign_off.note,
                        "summary": sign_off.summary,
                        "at": sign_off.at,
                    }
                ],
            )
        return sign_off

    def of_month(self, month: str) -> list[SignOff]:
        """Return the sign-offs of ``month``."""
        query = (
            select(sign_offs)
            .where(sign_offs.c.site == self._db.site, sign_offs.c.month == month)
            .order_by(sign_offs.c.id)
        )
        with self._db.read() as session:
            return [
                SignOff(
                    month=row.month,
                    report=SignedReport(row.report),
                    by=row.actor,
                    at=row.at,
                    note=row.note,
                    summary=row.summary,
                )
                for row in session.execute(query)
            ]


# -- the audit trail --------------------------------------------------------------------------


class AuditTrail:
    """Who did what through the console."""

    def __init__(self, database: LedgerDatabase) -> None:
        self._db = database

    def record(
        self, *, at: datetime, actor: str, role: str, action: str, target: str, detail: str
    ) -> None:
        """Append one line to the trail."""
        with self._db.write() as session:
            session.append(
                "console_audit",
                [
                    {
                        "at": aware(at, "audit time"),
                        "actor": actor,
                        "role": role,
                        "action": action,
                        "target": target,
                        "detail": detail,
                    }
                ],
            )

    def recent(self, limit: int = 200, *, actor: str | None = None) -> list[AuditEntry]:
        """Return the newest lines, newest first."""
        query = select(console_audit).order_by(console_audit.c.id.desc()).limit(limit)
        if actor is not None:
            query = query.where(console_audit.c.actor == actor)
        with self._db.read() as session:
            return [
                AuditEntry(
                    id=row.id,
                    at=row.at,
                    actor=row.actor,
                    role=row.role,
                    action=row.action,
                    target=row.target,
                    detail=row.detail,
                )
                for row in session.execute(query)
            ]


# -- decisions, counted -----------------------------------------------------------------------


class DecisionCounts:
    """Counts of the verdicts the guard gave, by class and verdict (SQL-side)."""

    def __init__(self, database: LedgerDatabase) -> None:
        self._db = database

    def counts(
        self, start: datetime, end: datetime, *, site: str | None = None
    ) -> list[tuple[str, str, bool, int]]:
        """Return (number class, verdict, by approval, count) for verdicts in [start, end)."""
        c = decisions.c
        by_approval = c.approval_id != ""
        query = (
            select(c.number_class, c.verdict, by_approval.label("approved"), func.count())
            .where(c.at >= aware(start, "start"), c.at < aware(end, "end"))
            .group_by(c.number_class, c.verdict, by_approval)
        )
        if site is not None:
            query = query.where(c.site == site)
        with self._db.read() as session:
            return [
                (str(row[0]), str(row[1]), bool(row[2]), int(row[3]))
                for row in session.execute(query)
            ]
