"""Keep how many units an offence was priced for; find a month's pre-dial verdicts fast.

- ``offences.units``: the count a rule prices per unit (``per_unit`` in the penalty's step;
  the telesales quota fines 5 yuan per missing call). Rows written before this migration have
  0. The column is outside the hash chain (chain version 1 is fixed, so old rows keep
  verifying); the amount it produced, and the offence's detail that names the count, are in it.
- ``ix_decisions_site_layer_at``: a month's pre-dial verdicts of one site, in time order, for
  ``pbxguard replay`` (without it, each page of the replay scans every verdict of the site).

Revision ID: 0004_ops
Revises: 0003_console
Create Date: 2026-12-04 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from pbxguard.errors import LedgerIntegrityError

revision: str = "0004_ops"
down_revision: str | None = "0003_console"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("offences", sa.Column("units", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_decisions_site_layer_at", "decisions", ["site", "layer", "at"])


def downgrade() -> None:
    # SQLite drops a column by rebuilding the table, which would take its append-only triggers.
    raise LedgerIntegrityError("the priced units of offences cannot be removed by a migration")
