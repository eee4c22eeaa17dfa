"""The ledger's tables (SQLAlchemy Core), and the two column types every table relies on.

Every table is append-only: migration 0001 installs triggers that make UPDATE and DELETE fail
on both backends, and every row carries a hash chained to the previous row of its stream
(migration 0002; see `pbxguard.adapters.ledger.chain`). State that changes (an approval used, a
register entry filled, an offence waived, how a cut call ended) is derived from rows appended
later, never written over the original row.

The definitions here must match what the migrations create; a test compares them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator, TypeEngine

from pbxguard.domain.penalties import CENT, yuan

#: Marker in the error every append-only trigger raises; the store maps it to an integrity error.
APPEND_ONLY_MARKER = "pbxguard ledger is append-only"


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime stored in UTC.

    PostgreSQL keeps it as ``timestamptz``. SQLite has no timezone type and drops offsets, so the
    value is stored as naive UTC and given back its UTC offset when read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("the ledger stores timezone-aware datetimes only")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Money(TypeDecorator[Decimal]):
    """Yuan with two places: ``NUMERIC(12,2)`` on PostgreSQL, integer cents on SQLite.

    SQLite has no exact decimal type (its NUMERIC affinity falls back to binary floating point),
    so amounts are kept there as whole cents, which stay exact through SUM as well.
    """

    impl = Numeric(12, 2)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Integer())
        return dialect.type_descriptor(Numeric(12, 2, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Decimal | int | None:
        if value is None:
            return None
        amount = yuan(value)
        if dialect.name == "sqlite":
            return int(amount / CENT)
        return amount

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            # Whole cents to yuan with two places, exactly: the same value as yuan(n * CENT),
            # at a fraction of its cost (an export reads six amounts per row).
            return Decimal(int(value)).scaleb(-2)
        return yuan(Decimal(value))


metadata = MetaData()


def _id() -> Column[int]:
    return Column("id", Integer(), primary_key=True, autoincrement=True)


def _s(name: str, *, nullable: bool = False, index: bool = False) -> Column[str]:
    return Column(name, String(), nullable=nullable, index=index)


def _when(name: str, *, nullable: bool = False, index: bool = False) -> Column[datetime]:
    return Column(name, UtcDateTime(), nullable=nullable, index=index)


def _money(name: str) -> Column[Decimal]:
    return Column(name, Money(), nullable=False)


def _chained() -> list[Column[Any]]:
    """The columns of the hash chain (migration 0002) and the site every row belongs to."""
    return [
        Column("site", String(), nullable=False, server_default=""),
        Column("seq", BigInteger(), nullable=True),
        Column("prev_hash", String(), nullable=True),
        Column("hash", String(), nullable=True),
    ]


decisions = Table(
    "decisions",
    metadata,
    _id(),
    _s("key"),
    _when("at", index=True),
    _s("linkedid", index=True),
    _s("uniqueid"),
    _s("channel"),
    _s("layer"),
    _s("extension"),
    _s("person_id", index=True),
    _s("dialled"),
    _s("number"),
    _s("number_class"),
    _s("verdict"),
    _s("rule_id"),
    _s("reason_zh"),
    _s("reason_en"),
    _s("approval_id"),
    _s("policy_version"),
    *_chained(),
    UniqueConstraint("key", name="uq_decisions_key"),
    # A month's pre-dial verdicts of one site, in time order (`pbxguard replay`; 0004_ops).
    Index("ix_decisions_site_layer_at", "site", "layer", "at"),
)

offences = Table(
    "offences",
    metadata,
    _id(),
    _s("key"),
    _s("rule_id", index=True),
    _s("ladder"),
    _s("rule_title_zh"),
    _s("rule_title_en"),
    _s("citation"),
    _s("person_id"),
    _s("person_name"),
    _s("department", index=True),
    _s("extension"),
    _s("number"),
    _s("number_class"),
    _money("amount"),
    _s("sanctions"),
    Column("escalation_step", Integer(), nullable=False),
    Column("repeat_offender", Boolean(), nullable=False),
    _money("department_head_amount"),
    _money("charge"),
    Column("talk_ms", BigInteger(), nullable=False),
    _s("outcome"),
    _s("linkedid"),
    _s("uniqueid"),
    _s("channel"),
    _s("detail_zh"),
    _s("detail_en"),
    _s("policy_version"),
    _when("at", index=True),
    *_chained(),
    # What a later charge adds (PR-1: 20 x the call's charge), and the department head's share
    # of it: kept with the offence so the fine is reproducible from the ledger alone.
    Column("charge_multiple", Money(), nullable=False, server_default="0"),
    Column("head_share", Money(), nullable=False, server_default="0"),
    # How many of what the rule counts were priced (QU-1: missing calls; migration 0004_ops).
    Column("units", Integer(), nullable=False, server_default="0"),
    UniqueConstraint("key", name="uq_offences_key"),
    Index("ix_offences_person_ladder_at", "person_id", "ladder", "at"),
    Index("ix_offences_site_at", "site", "at"),
)

calls = Table(
    "calls",
    metadata,
    _id(),
    _s("linkedid"),
    _s("uniqueid"),
    _s("channel"),
    _s("extension"),
    _s("person_id", index=True),
    _s("person_name"),
    _s("department"),
    _s("caller_name"),
    _s("dialled"),
    _s("number"),
    _s("number_class"),
    _s("direction"),
    _when("started_at", index=True),
    _when("answered_at", nullable=True),
    _when("ended_at"),
    _s("verdict"),
    _s("rule_id"),
    _s("outcome"),
    *_chained(),
    Column("charge", Money(), nullable=False, server_default="0"),
    UniqueConstraint("site", "linkedid", "uniqueid", name="uq_calls_site_linkedid_uniqueid"),
    Index("ix_calls_site_started_at", "site", "started_at"),
)

adjustments = Table(
    "adjustments",
    metadata,
    _id(),
    Column("offence_id", Integer(), ForeignKey("offences.id"), nullable=False, index=True),
    _s("kind"),
    _s("actor"),
    _s("reason"),
    _when("at"),
    *_chained(),
)

approvals = Table(
    "approvals",
    metadata,
    _id(),
    _s("approval_id", index=True),
    _s("kind"),
    _s("ref"),
    _when("at"),
    _s("actor"),
    _s("person_id"),
    _when("valid_from", nullable=True),
    _when("valid_until", nullable=True),
    _s("number_class", nullable=True),
    _s("prefix"),
    Column("max_calls", Integer(), nullable=True),
    _s("reason"),
    _s("linkedid"),
    _s("uniqueid"),
    _s("channel"),
    *_chained(),
    UniqueConstraint("approval_id", "kind", "ref", name="uq_approvals_once"),
)

register_entries = Table(
    "register_entries",
    metadata,
    _id(),
    _s("linkedid"),
    _s("uniqueid"),
    _s("channel"),
    _s("caller_person_id", index=True),
    _s("caller_name"),
    _s("department"),
    _s("extension"),
    _s("callee_number"),
    _s("number_class"),
    _when("started_at", index=True),
    _when("ended_at"),
    Column("duration_ms", BigInteger(), nullable=False),
    *_chained(),
    UniqueConstraint(
        "site", "linkedid", "uniqueid", name="uq_register_entries_site_linkedid_uniqueid"
    ),
)

register_fills = Table(
    "register_fills",
    metadata,
    _id(),
    Column("entry_id", Integer(), ForeignKey("register_entries.id"), nullable=False, index=True),
    _s("subject"),
    _s("outcome"),
    _s("callee_name"),
    _s("actor"),
    _when("at"),
    *_chained(),
)

authorization_codes = Table(
    "authorization_codes",
    metadata,
    _id(),
    _s("person_id", index=True),
    _s("code_hash"),
    Column("one_time", Boolean(), nullable=False),
    _when("expires_at", nullable=True),
    _s("created_by"),
    _when("created_at"),
    *_chained(),
)

code_events = Table(
    "code_events",
    metadata,
    _id(),
    _s("kind"),
    Column("code_id", Integer(), ForeignKey("authorization_codes.id"), nullable=True),
    # Set only when a one-time code is used or a code revoked: the unique constraint lets it be
    # spent once, even by two checks racing each other.
    Column("consumed_code_id", Integer(), ForeignKey("authorization_codes.id"), nullable=True),
    _when("at", index=True),
    _s("extension"),
    _s("person_id"),
    _s("linkedid"),
    _s("reason"),
    *_chained(),
    # Idempotency key of a failure written through the journal (NULL for older rows).
    _s("key", nullable=True),
    UniqueConstraint("consumed_code_id", name="uq_code_events_consumed"),
    Index("ix_code_events_key", "key", unique=True),
)

offence_outcomes = Table(
    "offence_outcomes",
    metadata,
    _id(),
    _s("key"),
    _when("at"),
    _s("ending"),
    _when("answered_at", nullable=True),
    _when("ended_at", nullable=True),
    Column("talk_ms", BigInteger(), nullable=False),
    _money("charge"),
    Column("answer_estimated", Boolean(), nullable=False),
    _s("cause"),
    *_chained(),
    Index("ix_offence_outcomes_key", "key", unique=True),
)

# -- the console (migration 0003_console) -----------------------------------------------------

console_users = Table(
    "console_users",
    metadata,
    _id(),
    _s("username", index=True),
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

approval_requests = Table(
    "approval_requests",
    metadata,
    _id(),
    _s("request_id", index=True),
    _s("kind"),
    _s("person_id"),
    _s("department", index=True),
    _s("actor"),
    _s("number_class", nullable=True),
    _s("prefix"),
    _when("valid_from", nullable=True),
    _when("valid_until", nullable=True),
    Column("max_calls", Integer(), nullable=True),
    _s("reason"),
    _s("approval_id"),
    _when("at"),
    *_chained(),
    UniqueConstraint("request_id", "kind", name="uq_approval_requests_once"),
)

sign_offs = Table(
    "sign_offs",
    metadata,
    _id(),
    _s("month"),
    _s("report"),
    _s("actor"),
    _s("note"),
    _s("summary"),
    _when("at"),
    *_chained(),
    UniqueConstraint("site", "month", "report", name="uq_sign_offs_site_month_report"),
)

console_audit = Table(
    "console_audit",
    metadata,
    _id(),
    _when("at", index=True),
    _s("actor"),
    _s("role"),
    _s("action"),
    _s("target"),
    _s("detail"),
    *_chained(),
)

# -- velocity locks (migration 0005_controls) ----------------------------------------------------

locks = Table(
    "locks",
    metadata,
    _id(),
    _s("lock_id", index=True),
    _s("kind"),
    _s("scope"),
    _s("extension"),
    _s("person_id"),
    _s("classes"),
    _s("rule_id"),
    _when("at"),
    _when("until", nullable=True),
    _s("actor"),
    _s("reason_zh"),
    _s("reason_en"),
    *_chained(),
    UniqueConstraint("lock_id", "kind", name="uq_locks_once"),
    Index("ix_locks_site_until", "site", "until"),
)

#: Every ledger table, in the order the migrations create them.
LEDGER_TABLES = (
    "decisions",
    "offences",
    "calls",
    "adjustments",
    "approvals",
    "register_entries",
    "register_fills",
    "authorization_codes",
    "code_events",
    "offence_outcomes",
    "console_users",
    "approval_requests",
    "sign_offs",
    "console_audit",
    "locks",
)

for _table in metadata.tables.values():
    Index(f"ix_{_table.name}_site_seq", _table.c.site, _table.c.seq, unique=True)
