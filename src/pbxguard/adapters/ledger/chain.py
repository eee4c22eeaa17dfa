"""The ledger's hash chain: every row is bound to the one before it in its stream.

Theory of operation
-------------------
A *stream* is one table of one site (``offences`` of ``shanghai-hq``). Every row appended to a
stream gets the next sequence number ``seq`` (1, 2, 3 …), the ``hash`` of the row before it
(``prev_hash``; the first row's is the stream's genesis value) and its own ``hash``:
SHA-256 over ``prev_hash``, a newline and the row's canonical bytes. The canonical bytes are a
JSON object of the row's chained columns (`CHAINED`) with sorted keys: datetimes in UTC ISO 8601
with microseconds, money as its two-decimal string, booleans and nulls as JSON has them.
Certificate-transparency logs and audit trails bind their entries the same way.

Whoever can write the database can still change a row, but not without breaking the chain:
`verify` walks a stream from its first row and names the first one that was changed (its hash
no longer matches its content), deleted (a gap in ``seq``), inserted out of order (its
``prev_hash`` is not its predecessor's hash) or written outside the chain (no ``seq``). An
auditor who keeps the heads printed by ``pbxguard ledger verify`` (or the monthly report)
outside the database can also tell whether the newest rows were removed.

The chained columns of a table are fixed here for good: a later migration that adds a column
adds it outside the chain, or starts a new chain version, so old rows keep verifying.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

GENESIS = "0" * 64

#: The columns each table's hash covers (chain version 1), besides ``seq`` and ``prev_hash``.
CHAINED: Mapping[str, tuple[str, ...]] = {
    "decisions": (
        "site", "key", "at", "linkedid", "uniqueid", "channel", "layer", "extension",
        "person_id", "dialled", "number", "number_class", "verdict", "rule_id", "reason_zh",
        "reason_en", "approval_id", "policy_version",
    ),
    "offences": (
        "site", "key", "rule_id", "ladder", "rule_title_zh", "rule_title_en", "citation",
        "person_id", "person_name", "department", "extension", "number", "number_class",
        "amount", "sanctions", "escalation_step", "repeat_offender", "department_head_amount",
        "charge", "talk_ms", "outcome", "linkedid", "uniqueid", "channel", "detail_zh",
        "detail_en", "policy_version", "at", "charge_multiple", "head_share",
    ),
    "calls": (
        "site", "linkedid", "uniqueid", "channel", "extension", "person_id", "person_name",
        "department", "caller_name", "dialled", "number", "number_class", "direction",
        "started_at", "answered_at", "ended_at", "verdict", "rule_id", "outcome", "charge",
    ),
    "adjustments": ("site", "offence_id", "kind", "actor", "reason", "at"),
    "approvals": (
        "site", "approval_id", "kind", "ref", "at", "actor", "person_id", "valid_from",
        "valid_until", "number_class", "prefix", "max_calls", "reason", "linkedid", "uniqueid",
        "channel",
    ),
    "register_entries": (
        "site", "linkedid", "uniqueid", "channel", "caller_person_id", "caller_name",
        "department", "extension", "callee_number", "number_class", "started_at", "ended_at",
        "duration_ms",
    ),
    "register_fills": ("site", "entry_id", "subject", "outcome", "callee_name", "actor", "at"),
    "authorization_codes": (
        "site", "person_id", "code_hash", "one_time", "expires_at", "created_by", "created_at",
    ),
    "code_events": (
        "site", "kind", "code_id", "consumed_code_id", "at", "extension", "person_id",
        "linkedid", "reason", "key",
    ),
    "offence_outcomes": (
        "site", "key", "at", "ending", "answered_at", "ended_at", "talk_ms", "charge",
        "answer_estimated", "cause",
    ),
    "console_users": (
        "site", "username", "kind", "role", "person_id", "display_name", "password_hash",
        "actor", "reason", "at",
    ),
    "approval_requests": (
        "site", "request_id", "kind", "person_id", "department", "actor", "number_class",
        "prefix", "valid_from", "valid_until", "max_calls", "reason", "approval_id", "at",
    ),
    "sign_offs": ("site", "month", "report", "actor", "note", "summary", "at"),
    "console_audit": ("site", "at", "actor", "role", "action", "target", "detail"),
    "locks": (
        "site", "lock_id", "kind", "scope", "extension", "person_id", "classes", "rule_id",
        "at", "until", "actor", "reason_zh", "reason_en",
    ),
}  # fmt: skip


def _canonical_value(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    return value


def canonical_bytes(table: str, row: Mapping[str, Any]) -> bytes:
    """Return the bytes a row's hash covers (its chained columns, canonically encoded)."""
    content = {name: _canonical_value(row.get(name)) for name in CHAINED[table]}
    text = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8")


def row_hash(table: str, seq: int, prev_hash: str, row: Mapping[str, Any]) -> str:
    """Return the hash of a row at position ``seq`` after a row hashed ``prev_hash``."""
    digest = hashlib.sha256()
    digest.update(f"{table}\n{seq}\n{prev_hash}\n".encode())
    digest.update(canonical_bytes(table, row))
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Head:
    """The newest row of a stream: its position and hash (GENESIS/0 for an empty stream)."""

    table: str
    site: str
    seq: int
    hash: str


def link(table: str, head: Head, rows: Iterable[dict[str, Any]]) -> Head:
    """Give ``rows`` (in order) their ``seq``, ``prev_hash`` and ``hash`` after ``head``."""
    seq, previous = head.seq, head.hash
    for row in rows:
        seq += 1
        row["seq"] = seq
        row["prev_hash"] = previous
        row["hash"] = previous = row_hash(table, seq, previous, row)
    return Head(table, head.site, seq, previous)


@dataclass(frozen=True, slots=True)
class Break:
    """The first place a stream's chain does not hold.

    Attributes:
        table: the stream's table.
        site: the stream's site.
        row_id: the database id of the offending row (or of the row after a gap).
        seq: its position, or None when it has none.
        kind: "changed", "deleted", "out_of_order" or "unchained".
        detail: what was found, in words.
    """

    table: str
    site: str
    row_id: int | None
    seq: int | None
    kind: str
    detail: str


def verify(
    table: str, site: str, rows: Iterable[Mapping[str, Any]], *, start: Head | None = None
) -> tuple[Head, Break | None]:
    """Walk a stream's rows in ``seq`` order from ``start`` (the genesis by default).

    Returns the head reached and the first break found, if any (the walk stops there).
    """
    head = start or Head(table, site, 0, GENESIS)
    for row in rows:
        seq = row.get("seq")
        row_id = row.get("id")
        if seq is None:
            return head, Break(
                table, site, row_id, None, "unchained", "row has no place in the chain"
            )
        if seq <= head.seq:
            return head, Break(
                table, site, row_id, seq, "out_of_order", f"seq {seq} repeats or goes back"
            )
        if seq != head.seq + 1:
            return head, Break(
                table,
                site,
                row_id,
                seq,
                "deleted",
                f"rows {head.seq + 1}..{seq - 1} are missing",
            )
        if row.get("prev_hash") != head.hash:
            return head, Break(
                table, site, row_id, seq, "out_of_order", "prev_hash is not the previous row's hash"
            )
        expected = row_hash(table, seq, head.hash, row)
        if row.get("hash") != expected:
            return head, Break(
                table, site, row_id, seq, "changed", "the row's content does not match its hash"
            )
        head = Head(table, site, seq, expected)
    return head, None


def combined(heads: Iterable[Head]) -> str:
    """Return one digest over several heads (what an auditor writes down once a month)."""
    digest = hashlib.sha256()
    for head in sorted(heads, key=lambda h: (h.table, h.site)):
        digest.update(f"{head.table}\t{head.site}\t{head.seq}\t{head.hash}\n".encode())
    return digest.hexdigest()
