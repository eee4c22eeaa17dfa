"""Create the ledger's tables and make every one of them append-only.

Revision ID: 0001
Revises:
Create Date: 2026-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from pbxguard.errors import LedgerIntegrityError

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MARKER = "pbxguard ledger is append-only"
TABLES = (
    "decisions",
    "offences",
    "calls",
    "adjustments",
    "approvals",
    "register_entries",
    "register_fills",
    "authorization_codes",
    "code_events",
)


def _text() -> sa.String:
    return sa.String()


def _str(name: str) -> sa.Column[str]:
    return sa.Column(name, _text(), nullable=False)


def _when(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _money(name: str) -> sa.Column[object]:
    # Exact yuan on PostgreSQL, whole cents on SQLite (which has no exact decimal type).
    return sa.Column(name, sa.Numeric(12, 2).with_variant(sa.Integer(), "sqlite"), nullable=False)


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True, nullable=False)


def _index(table: str, *columns: str, unique: bool = False) -> None:
    name = f"ix_{table}_{'_'.join(columns)}"
    op.create_index(name, table, list(columns), unique=unique)


def upgrade() -> None:
    op.create_table(
        "decisions",
        _id(),
        _str("key"),
        _when("at"),
        _str("linkedid"),
        _str("uniqueid"),
        _str("channel"),
        _str("layer"),
        _str("extension"),
        _str("person_id"),
        _str("dialled"),
        _str("number"),
        _str("number_class"),
        _str("verdict"),
        _str("rule_id"),
        _str("reason_zh"),
        _str("reason_en"),
        _str("approval_id"),
        _str("policy_version"),
        sa.UniqueConstraint("key", name="uq_decisions_key"),
    )
    _index("decisions", "at")
    _index("decisions", "linkedid")
    _index("decisions", "person_id")

    op.create_table(
        "offences",
        _id(),
        _str("key"),
        _str("rule_id"),
        _str("ladder"),
        _str("rule_title_zh"),
        _str("rule_title_en"),
        _str("citation"),
        _str("person_id"),
        _str("person_name"),
        _str("department"),
        _str("extension"),
        _str("number"),
        _str("number_class"),
        _money("amount"),
        _str("sanctions"),
        sa.Column("escalation_step", sa.Integer(), nullable=False),
        sa.Column("repeat_offender", sa.Boolean(), nullable=False),
        _money("department_head_amount"),
        _money("charge"),
        sa.Column("talk_ms", sa.BigInteger(), nullable=False),
        _str("outcome"),
        _str("linkedid"),
        _str("uniqueid"),
        _str("channel"),
        _str("detail_zh"),
        _str("detail_en"),
        _str("policy_version"),
        _when("at"),
        sa.UniqueConstraint("key", name="uq_offences_key"),
    )
    _index("offences", "rule_id")
    _index("offences", "department")
    _index("offences", "at")
    op.create_index("ix_offences_person_ladder_at", "offences", ["person_id", "ladder", "at"])

    op.create_table(
        "calls",
        _id(),
        _str("linkedid"),
        _str("uniqueid"),
        _str("channel"),
        _str("extension"),
        _str("person_id"),
        _str("person_name"),
        _str("department"),
        _str("caller_name"),
        _str("dialled"),
        _str("number"),
        _str("number_class"),
        _str("direction"),
        _when("started_at"),
        _when("answered_at", nullable=True),
        _when("ended_at"),
        _str("verdict"),
        _str("rule_id"),
        _str("outcome"),
        sa.UniqueConstraint("linkedid", "uniqueid", name="uq_calls_linkedid_uniqueid"),
    )
    _index("calls", "person_id")
    _index("calls", "started_at")

    op.create_table(
        "adjustments",
        _id(),
        sa.Column("offence_id", sa.Integer(), sa.ForeignKey("offences.id"), nullable=False),
        _str("kind"),
        _str("actor"),
        _str("reason"),
        _when("at"),
    )
    _index("adjustments", "offence_id")

    op.create_table(
        "approvals",
        _id(),
        _str("approval_id"),
        _str("kind"),
        _str("ref"),
        _when("at"),
        _str("actor"),
        _str("person_id"),
        _when("valid_from", nullable=True),
        _when("valid_until", nullable=True),
        sa.Column("number_class", _text(), nullable=True),
        _str("prefix"),
        sa.Column("max_calls", sa.Integer(), nullable=True),
        _str("reason"),
        _str("linkedid"),
        _str("uniqueid"),
        _str("channel"),
        sa.UniqueConstraint("approval_id", "kind", "ref", name="uq_approvals_once"),
    )
    _index("approvals", "approval_id")

    op.create_table(
        "register_entries",
        _id(),
        _str("linkedid"),
        _str("uniqueid"),
        _str("channel"),
        _str("caller_person_id"),
        _str("caller_name"),
        _str("department"),
        _str("extension"),
        _str("callee_number"),
        _str("number_class"),
        _when("started_at"),
        _when("ended_at"),
        sa.Column("duration_ms", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("linkedid", "uniqueid", name="uq_register_entries_linkedid_uniqueid"),
    )
    _index("register_entries", "caller_person_id")
    _index("register_entries", "started_at")

    op.create_table(
        "register_fills",
        _id(),
        sa.Column("entry_id", sa.Integer(), sa.ForeignKey("register_entries.id"), nullable=False),
        _str("subject"),
        _str("outcome"),
        _str("callee_name"),
        _str("actor"),
        _when("at"),
    )
    _index("register_fills", "entry_id")

    op.create_table(
        "authorization_codes",
        _id(),
        _str("person_id"),
        _str("code_hash"),
        sa.Column("one_time", sa.Boolean(), nullable=False),
        _when("expires_at", nullable=True),
        _str("created_by"),
        _when("created_at"),
    )
    _index("authorization_codes", "person_id")

    op.create_table(
        "code_events",
        _id(),
        _str("kind"),
        sa.Column("code_id", sa.Integer(), sa.ForeignKey("authorization_codes.id"), nullable=True),
        sa.Column(
            "consumed_code_id",
            sa.Integer(),
            sa.ForeignKey("authorization_codes.id"),
            nullable=True,
        ),
        _when("at"),
        _str("extension"),
        _str("person_id"),
        _str("linkedid"),
        _str("reason"),
        sa.UniqueConstraint("consumed_code_id", name="uq_code_events_consumed"),
    )
    _index("code_events", "at")

    _append_only(TABLES)


def _append_only(tables: Sequence[str]) -> None:
    """Install triggers that refuse UPDATE and DELETE (and TRUNCATE) on ``tables``."""
    dialect = op.get_context().dialect.name
    if dialect == "postgresql":
        op.execute(
            "CREATE OR REPLACE FUNCTION pbxguard_refuse_change() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            f"RAISE EXCEPTION '{MARKER}: % on % refused', TG_OP, TG_TABLE_NAME "
            "USING ERRCODE = 'integrity_constraint_violation'; "
            "END $$"
        )
        for table in tables:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION pbxguard_refuse_change()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION pbxguard_refuse_change()"
            )
        return
    for table in tables:
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{MARKER}: {operation} on {table} refused'); END"
            )


def downgrade() -> None:
    # Undoing this migration would delete the ledger, which is exactly what it forbids.
    raise LedgerIntegrityError("the ledger's tables cannot be dropped by a migration")
