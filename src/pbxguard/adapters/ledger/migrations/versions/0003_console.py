"""The audit and approval console: accounts, approval requests, sign-offs, the audit trail.

- ``console_users``: local accounts as events (created, password changed, disabled, enabled,
  role changed); an account's state is folded from them, never written over.
- ``approval_requests``: a member of staff asks for prior consent (LD-1); the head's answer
  (granted, with the approval's id, or refused) is a later row of the same request.
- ``sign_offs``: the general manager's monthly review of the long-distance register and of the
  unreasonable-charges report (000 L333, L711, L819), once per site, month and report.
- ``console_audit``: who did what, when, through the console (logins, refusals, every change).

Waivers, appeals and appeal decisions made in the console are rows of ``adjustments`` (0001),
like those of ``pbxguard ledger adjust``. Every new table is append-only and hash-chained.

Revision ID: 0003_console
Revises: 0002
Create Date: 2026-12-04 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from pbxguard.errors import LedgerIntegrityError

revision: str = "0003_console"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MARKER = "pbxguard ledger is append-only"
TABLES = ("console_users", "approval_requests", "sign_offs", "console_audit")


def _id() -> sa.Column[Any]:
    return sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True, nullable=False)


def _s(name: str, *, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.String(), nullable=nullable)


def _when(name: str, *, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _chained() -> list[sa.Column[Any]]:
    return [
        sa.Column("site", sa.String(), nullable=False, server_default=""),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("prev_hash", sa.String(), nullable=True),
        sa.Column("hash", sa.String(), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "console_users",
        _id(),
        _s("username"),
        _s("kind"),
        _s("role"),
        _s("person_id"),
        _s("display_name"),
        _s("password_hash"),
        _s("actor"),
        _s("reason"),
        _when("at"),
        *_chained(),
    )
    op.create_index("ix_console_users_username", "console_users", ["username"])
    op.create_table(
        "approval_requests",
        _id(),
        _s("request_id"),
        _s("kind"),
        _s("person_id"),
        _s("department"),
        _s("actor"),
        _s("number_class", nullable=True),
        _s("prefix"),
        _when("valid_from", nullable=True),
        _when("valid_until", nullable=True),
        sa.Column("max_calls", sa.Integer(), nullable=True),
        _s("reason"),
        _s("approval_id"),
        _when("at"),
        *_chained(),
        sa.UniqueConstraint("request_id", "kind", name="uq_approval_requests_once"),
    )
    op.create_index("ix_approval_requests_request_id", "approval_requests", ["request_id"])
    op.create_index("ix_approval_requests_department", "approval_requests", ["department"])
    op.create_table(
        "sign_offs",
        _id(),
        _s("month"),
        _s("report"),
        _s("actor"),
        _s("note"),
        _s("summary"),
        _when("at"),
        *_chained(),
        sa.UniqueConstraint("site", "month", "report", name="uq_sign_offs_site_month_report"),
    )
    op.create_table(
        "console_audit",
        _id(),
        _when("at"),
        _s("actor"),
        _s("role"),
        _s("action"),
        _s("target"),
        _s("detail"),
        *_chained(),
    )
    op.create_index("ix_console_audit_at", "console_audit", ["at"])
    for table in TABLES:
        op.create_index(f"ix_{table}_site_seq", table, ["site", "seq"], unique=True)
    _append_only(op.get_context().dialect.name, TABLES)


def _append_only(dialect: str, tables: Sequence[str]) -> None:
    """Install triggers that refuse UPDATE and DELETE (and TRUNCATE) on ``tables``."""
    for table in tables:
        if dialect == "postgresql":
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION pbxguard_refuse_change()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION pbxguard_refuse_change()"
            )
            continue
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{MARKER}: {operation} on {table} refused'); END"
            )


def downgrade() -> None:
    # The console's audit trail is part of the ledger: a migration does not remove it.
    raise LedgerIntegrityError("the console's audit trail cannot be removed by a migration")
