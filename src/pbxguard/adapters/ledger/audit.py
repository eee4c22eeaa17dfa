"""Verify the ledger's hash chains: every stream, from its first row, or only its newest rows."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from pbxguard.adapters.ledger import chain
from pbxguard.adapters.ledger.database import LedgerDatabase, LedgerSession
from pbxguard.adapters.ledger.schema import LEDGER_TABLES, metadata

_PAGE = 2000


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What verifying the ledger found: each stream's head and the breaks, if any."""

    heads: tuple[chain.Head, ...]
    breaks: tuple[chain.Break, ...]
    rows: int

    @property
    def intact(self) -> bool:
        """Whether every stream verified."""
        return not self.breaks

    @property
    def digest(self) -> str:
        """One digest over every head: what an auditor keeps outside the database."""
        return chain.combined(self.heads)


def _streams(session: LedgerSession, table: str) -> list[str]:
    columns = metadata.tables[table].c
    return [r[0] for r in session.execute(select(columns.site).distinct().order_by(columns.site))]


def _rows(
    database: LedgerDatabase, table: str, site: str, after_seq: int
) -> Iterator[dict[str, Any]]:
    target = metadata.tables[table]
    columns = target.c
    seq = after_seq
    while True:
        with database.read() as session:
            page = [
                dict(row)
                for row in session.execute(
                    select(target)
                    .where(columns.site == site, columns.seq > seq)
                    .order_by(columns.seq)
                    .limit(_PAGE)
                ).mappings()
            ]
        yield from page
        if len(page) < _PAGE:
            return
        seq = int(page[-1]["seq"])


def _unchained(database: LedgerDatabase, table: str) -> list[chain.Break]:
    columns = metadata.tables[table].c
    with database.read() as session:
        rows = list(
            session.execute(select(columns.id, columns.site).where(columns.seq.is_(None)).limit(1))
        )
    return [
        chain.Break(table, row.site, row.id, None, "unchained", "row was written outside the chain")
        for row in rows
    ]


def verify_ledger(database: LedgerDatabase, *, tail: int | None = None) -> ChainReport:
    """Walk every stream and return its head and the first break of each broken stream.

    With ``tail`` only the newest ``tail`` rows of each stream are checked against each other
    (what the daemon does at start-up); otherwise every row from the first.
    """
    heads: list[chain.Head] = []
    breaks: list[chain.Break] = []
    rows = 0
    for table in LEDGER_TABLES:
        breaks.extend(_unchained(database, table))
        with database.read() as session:
            sites = _streams(session, table)
        for site in sites:
            start: chain.Head | None = None
            after = 0
            if tail is not None:
                with database.read() as session:
                    newest = session.head(table, site)
                after = max(newest.seq - tail, 0)
                if after:
                    start = _head_at(database, table, site, after)
            walked = _Counted(_rows(database, table, site, after))
            head, found = chain.verify(table, site, walked, start=start)
            rows += walked.count
            heads.append(head)
            if found is not None:
                breaks.append(found)
    return ChainReport(tuple(heads), tuple(breaks), rows)


def chain_heads(database: LedgerDatabase) -> ChainReport:
    """Return every stream's newest row, without walking the chains (for a report's anchor).

    The digest printed on a monthly report is what an auditor keeps outside the database: a
    later `pbxguard ledger verify` whose heads no longer lead back to it shows that rows were
    removed or the chain rewritten.
    """
    heads: list[chain.Head] = []
    for table in LEDGER_TABLES:
        with database.read() as session:
            heads.extend(session.head(table, site) for site in _streams(session, table))
    return ChainReport(tuple(heads), (), 0)


def _head_at(database: LedgerDatabase, table: str, site: str, seq: int) -> chain.Head | None:
    columns = metadata.tables[table].c
    with database.read() as session:
        row = session.execute(
            select(columns.hash).where(columns.site == site, columns.seq == seq)
        ).first()
    return None if row is None else chain.Head(table, site, seq, str(row.hash))


class _Counted:
    """An iterator that counts what went through it (the walk never holds a whole stream)."""

    def __init__(self, rows: Iterator[dict[str, Any]]) -> None:
        self._rows = rows
        self.count = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for row in self._rows:
            self.count += 1
            yield row
