"""SQLModel tables of the fine ledger, and the two column types every table relies on.

Every table is append-only: migration 0001 installs triggers that make UPDATE and DELETE fail
on both backends. State that changes (an approval used, a register entry filled, an offence
waived) is derived from rows appended later, never written over the original row.

These models stay inside the ledger package: the public API takes and returns domain values.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator, TypeEngine
from sqlmodel import Field, SQLModel

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
            return yuan(Decimal(int(value)) * CENT)
        return yuan(Decimal(value))


def _when(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(sa_column=Column(UtcDateTime(), nullable=nullable, index=index))


def _money() -> Any:
    return Field(sa_column=Column(Money(), nullable=False))


class DecisionRow(SQLModel, table=True):
    """A verdict given by either layer."""

    __tablename__ = "decisions"
    __table_args__ = (UniqueConstraint("key", name="uq_decisions_key"),)

    id: int | None = Field(default=None, primary_key=True)
    key: str
    at: datetime = _when(index=True)
    linkedid: str = Field(index=True)
    uniqueid: str
    channel: str
    layer: str
    extension: str
    person_id: str = Field(index=True)
    dialled: str
    number: str
    number_class: str
    verdict: str
    rule_id: str
    reason_zh: str
    reason_en: str
    approval_id: str
    policy_version: str


class OffenceRow(SQLModel, table=True):
    """An offence with the fine it was priced at when it was recorded."""

    __tablename__ = "offences"
    __table_args__ = (
        UniqueConstraint("key", name="uq_offences_key"),
        Index("ix_offences_person_ladder_at", "person_id", "ladder", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    key: str
    rule_id: str = Field(index=True)
    ladder: str
    rule_title_zh: str
    rule_title_en: str
    citation: str
    person_id: str
    person_name: str
    department: str = Field(index=True)
    extension: str
    number: str
    number_class: str
    amount: Decimal = _money()
    sanctions: str
    escalation_step: int
    repeat_offender: bool
    department_head_amount: Decimal = _money()
    charge: Decimal = _money()
    talk_ms: int = Field(sa_column=Column(BigInteger(), nullable=False))
    outcome: str
    linkedid: str
    uniqueid: str
    channel: str
    detail_zh: str
    detail_en: str
    policy_version: str
    at: datetime = _when(index=True)


class CallRow(SQLModel, table=True):
    """A finished call."""

    __tablename__ = "calls"
    __table_args__ = (UniqueConstraint("linkedid", "uniqueid", name="uq_calls_linkedid_uniqueid"),)

    id: int | None = Field(default=None, primary_key=True)
    linkedid: str
    uniqueid: str
    channel: str
    extension: str
    person_id: str = Field(index=True)
    person_name: str
    department: str
    caller_name: str
    dialled: str
    number: str
    number_class: str
    direction: str
    started_at: datetime = _when(index=True)
    answered_at: datetime | None = _when(nullable=True)
    ended_at: datetime = _when()
    verdict: str
    rule_id: str
    outcome: str


class AdjustmentRow(SQLModel, table=True):
    """A waiver, an appeal or an appeal decision on an offence."""

    __tablename__ = "adjustments"

    id: int | None = Field(default=None, primary_key=True)
    offence_id: int = Field(
        sa_column=Column(Integer(), ForeignKey("offences.id"), nullable=False, index=True)
    )
    kind: str
    actor: str
    reason: str
    at: datetime = _when()


class ApprovalEventRow(SQLModel, table=True):
    """One event in an approval's life: granted, used by a call, revoked, expired."""

    __tablename__ = "approvals"
    __table_args__ = (UniqueConstraint("approval_id", "kind", "ref", name="uq_approvals_once"),)

    id: int | None = Field(default=None, primary_key=True)
    approval_id: str = Field(index=True)
    kind: str
    # "" for grant, revoke and expire (once each); the call's Linkedid for a use.
    ref: str
    at: datetime = _when()
    actor: str
    person_id: str
    valid_from: datetime | None = _when(nullable=True)
    valid_until: datetime | None = _when(nullable=True)
    number_class: str | None = None
    prefix: str
    max_calls: int | None = None
    reason: str
    linkedid: str
    uniqueid: str
    channel: str


class RegisterEntryRow(SQLModel, table=True):
    """A line of the long-distance register (长话登记表), created from an answered call."""

    __tablename__ = "register_entries"
    __table_args__ = (
        UniqueConstraint("linkedid", "uniqueid", name="uq_register_entries_linkedid_uniqueid"),
    )

    id: int | None = Field(default=None, primary_key=True)
    linkedid: str
    uniqueid: str
    channel: str
    caller_person_id: str = Field(index=True)
    caller_name: str
    department: str
    extension: str
    callee_number: str
    number_class: str
    started_at: datetime = _when(index=True)
    ended_at: datetime = _when()
    duration_ms: int = Field(sa_column=Column(BigInteger(), nullable=False))


class RegisterFillRow(SQLModel, table=True):
    """The subject and outcome written into a register entry (the latest fill counts)."""

    __tablename__ = "register_fills"

    id: int | None = Field(default=None, primary_key=True)
    entry_id: int = Field(
        sa_column=Column(Integer(), ForeignKey("register_entries.id"), nullable=False, index=True)
    )
    subject: str
    outcome: str
    callee_name: str
    actor: str
    at: datetime = _when()


class AuthorizationCodeRow(SQLModel, table=True):
    """An authorization code, kept only as its argon2 hash."""

    __tablename__ = "authorization_codes"

    id: int | None = Field(default=None, primary_key=True)
    person_id: str = Field(index=True)
    code_hash: str
    one_time: bool
    expires_at: datetime | None = _when(nullable=True)
    created_by: str
    created_at: datetime = _when()


class CodeEventRow(SQLModel, table=True):
    """A use of an authorization code, or a failed attempt."""

    __tablename__ = "code_events"
    __table_args__ = (UniqueConstraint("consumed_code_id", name="uq_code_events_consumed"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str
    code_id: int | None = Field(
        default=None,
        sa_column=Column(Integer(), ForeignKey("authorization_codes.id"), nullable=True),
    )
    # Set only when a one-time code is used: the unique constraint lets it be used once, even
    # by two checks racing each other.
    consumed_code_id: int | None = Field(
        default=None,
        sa_column=Column(Integer(), ForeignKey("authorization_codes.id"), nullable=True),
    )
    at: datetime = _when(index=True)
    extension: str
    person_id: str
    linkedid: str
    reason: str


#: Every ledger table, in the order migration 0001 creates them.
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
)
