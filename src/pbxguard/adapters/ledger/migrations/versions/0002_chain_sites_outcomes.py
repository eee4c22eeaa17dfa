"""Chain every row to the one before it, give every row its site, record how cut calls ended.

- Every table gets ``site``, ``seq``, ``prev_hash`` and ``hash``; rows already in the ledger are
  chained in the order they were written (the triggers that forbid UPDATE are lifted for that
  one transaction and put back), so verification covers the whole history.
- ``offence_outcomes``: how the call of an offence ended (before answer, answered, unobserved),
  written when Asterisk reports it.
- ``offences.charge_multiple`` and ``offences.head_share``: what a charge learnt later adds.
- ``calls.charge``: every outbound call priced from the tariff (call accounting).
- ``code_events.key``: failed codes written through the journal are stored once.
- On PostgreSQL, calls and register entries are unique per site (several PBXes, one ledger).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from pbxguard.adapters.ledger import chain
from pbxguard.adapters.ledger.schema import metadata
from pbxguard.errors import LedgerIntegrityError

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MARKER = "pbxguard ledger is append-only"
OLD_TABLES = (
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


def _money(name: str) -> sa.Column[Any]:
    return sa.Column(
        name,
        sa.Numeric(12, 2).with_variant(sa.Integer(), "sqlite"),
        nullable=False,
        server_default="0",
    )


def upgrade() -> None:
    context = op.get_context()
    dialect = context.dialect.name
    config = context.config
    site = str(config.attributes.get("site", "")) if config is not None else ""
    for table in OLD_TABLES:
        op.add_column(table, sa.Column("site", sa.String(), nullable=False, server_default=""))
        op.add_column(table, sa.Column("seq", sa.BigInteger(), nullable=True))
        op.add_column(table, sa.Column("prev_hash", sa.String(), nullable=True))
        op.add_column(table, sa.Column("hash", sa.String(), nullable=True))
    op.add_column("offences", _money("charge_multiple"))
    op.add_column("offences", _money("head_share"))
    op.add_column("calls", _money("charge"))
    op.add_column("code_events", sa.Column("key", sa.String(), nullable=True))

    op.create_table(
        "offence_outcomes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True, nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ending", sa.String(), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("talk_ms", sa.BigInteger(), nullable=False),
        sa.Column("charge", sa.Numeric(12, 2).with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("answer_estimated", sa.Boolean(), nullable=False),
        sa.Column("cause", sa.String(), nullable=False),
        sa.Column("site", sa.String(), nullable=False, server_default=""),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("prev_hash", sa.String(), nullable=True),
        sa.Column("hash", sa.String(), nullable=True),
    )
    op.create_index("ix_offence_outcomes_key", "offence_outcomes", ["key"], unique=True)
    op.create_index("ix_code_events_key", "code_events", ["key"], unique=True)
    for table in (*OLD_TABLES, "offence_outcomes"):
        op.create_index(f"ix_{table}_site_seq", table, ["site", "seq"], unique=True)
    op.create_index("ix_offences_site_at", "offences", ["site", "at"])
    op.create_index("ix_calls_site_started_at", "calls", ["site", "started_at"])

    _chain_existing_rows(dialect, site)
    # Calls and register entries are unique per site (several PBXes, one ledger). SQLite
    # changes a constraint by rebuilding the table, which takes its triggers with it.
    for table, old, columns in (
        ("calls", "uq_calls_linkedid_uniqueid", ["site", "linkedid", "uniqueid"]),
        (
            "register_entries",
            "uq_register_entries_linkedid_uniqueid",
            ["site", "linkedid", "uniqueid"],
        ),
    ):
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(old, type_="unique")
            batch.create_unique_constraint(f"uq_{table}_site_linkedid_uniqueid", columns)
        if dialect == "sqlite":
            _append_only(dialect, [table], replace=True)
    _append_only(dialect, ["offence_outcomes"])


def _chain_existing_rows(dialect: str, site: str) -> None:
    """Give the rows written before this migration their site and their place in the chain."""
    bind = op.get_bind()
    for name in OLD_TABLES:
        table = metadata.tables[name]
        # Only the columns this revision knows: later migrations add columns to the models.
        columns = [table.c.id, *(table.c[column] for column in chain.CHAINED[name])]
        query = sa.select(*columns).order_by(table.c.id)
        rows = [dict(r) for r in bind.execute(query).mappings()]
        if not rows:
            continue
        _lift_append_only(dialect, name)
        head = chain.Head(name, site, 0, chain.GENESIS)
        for row in rows:
            row["site"] = site
            head = chain.link(name, head, [row])
            bind.execute(
                sa.update(table)
                .where(table.c.id == row["id"])
                .values(site=site, seq=row["seq"], prev_hash=row["prev_hash"], hash=row["hash"])
            )
        _restore_append_only(dialect, name)


def _lift_append_only(dialect: str, table: str) -> None:
    if dialect == "postgresql":
        op.execute(f"ALTER TABLE {table} DISABLE TRIGGER {table}_append_only")
        return
    op.execute(f"DROP TRIGGER {table}_no_update")


def _restore_append_only(dialect: str, table: str) -> None:
    if dialect == "postgresql":
        op.execute(f"ALTER TABLE {table} ENABLE TRIGGER {table}_append_only")
        return
    op.execute(
        f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{MARKER}: UPDATE on {table} refused'); END"
    )


def _append_only(dialect: str, tables: Sequence[str], *, replace: bool = False) -> None:
    """Install triggers that refuse UPDATE and DELETE (and TRUNCATE) on ``tables``."""
    if dialect == "postgresql":
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
            if replace:
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{operation.lower()}")
            op.execute(
                f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{MARKER}: {operation} on {table} refused'); END"
            )


def downgrade() -> None:
    # Undoing this migration would break the chain the ledger's audit rests on.
    raise LedgerIntegrityError("the ledger's hash chain cannot be removed by a migration")
