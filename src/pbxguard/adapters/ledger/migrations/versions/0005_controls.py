"""Velocity locks: imposed by the guard, lifted by an administrator, kept across restarts.

- ``locks``: one row when a lock is imposed (``kind = 'lock'``: scope, extension, classes,
  rule, until, reason) and one when an administrator lifts it early (``kind = 'lift'``: who
  and why). A lock is in force from ``at`` to ``until`` unless a lift row follows it. Rows are
  appended only and chained like every other table.

Budgets need no table of their own: the month's spend is the sum of ``calls.charge`` (every
outbound call is priced when it ends) and of the calls' talk time.

Revision ID: 0005_controls
Revises: 0004_ops
Create Date: 2026-12-04 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from pbxguard.errors import LedgerIntegrityError

revision: str = "0005_controls"
down_revision: str | None = "0004_ops"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MARKER = "pbxguard ledger is append-only"


def upgrade() -> None:
    op.create_table(
        "locks",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True, nullable=False),
        sa.Column("lock_id", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("scope", sa.String(), nullable=False),
        sa.Column("extension", sa.String(), nullable=False),
        sa.Column("person_id", sa.String(), nullable=False),
        sa.Column("classes", sa.String(), nullable=False),
        sa.Column("rule_id", sa.String(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("reason_zh", sa.String(), nullable=False),
        sa.Column("reason_en", sa.String(), nullable=False),
        sa.Column("site", sa.String(), nullable=False, server_default=""),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("prev_hash", sa.String(), nullable=True),
        sa.Column("hash", sa.String(), nullable=True),
        sa.UniqueConstraint("lock_id", "kind", name="uq_locks_once"),
    )
    op.create_index("ix_locks_lock_id", "locks", ["lock_id"])
    op.create_index("ix_locks_site_until", "locks", ["site", "until"])
    op.create_index("ix_locks_site_seq", "locks", ["site", "seq"], unique=True)
    _append_only("locks")


def _append_only(table: str) -> None:
    """Refuse UPDATE and DELETE (and TRUNCATE) on ``table``, as migration 0001 does."""
    if op.get_context().dialect.name == "postgresql":
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION pbxguard_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION pbxguard_refuse_change()"
        )
        return
    for operation in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{MARKER}: {operation} on {table} refused'); END"
        )


def downgrade() -> None:
    # The locks are part of the audit trail: dropping them would lose it.
    raise LedgerIntegrityError("the ledger's lock history cannot be removed by a migration")
