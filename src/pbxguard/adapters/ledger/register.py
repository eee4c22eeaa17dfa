"""The long-distance register (长话登记表, LD-4, LD-10): entries and what was written into them.

An entry is created with its answered long-distance call (`calls.record_calls`); the caller (or
the person keeping the register, LD-11) fills in the callee's name, the subject and the
outcome. A later fill supersedes an earlier one; both stay in the ledger.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, select

from pbxguard.adapters.ledger.database import LedgerDatabase, LedgerSession, aware
from pbxguard.adapters.ledger.schema import register_entries, register_fills
from pbxguard.domain.entries import RegisterEntry
from pbxguard.domain.records import CallRef
from pbxguard.errors import LedgerError

_PAGE = 1000


def _entry(row: Any, fill: Any | None) -> RegisterEntry:
    return RegisterEntry(
        id=row.id,
        call=CallRef(row.linkedid, row.uniqueid, row.channel),
        caller_person_id=row.caller_person_id,
        caller_name=row.caller_name,
        department=row.department,
        extension=row.extension,
        callee_number=row.callee_number,
        callee_name=fill.callee_name if fill is not None else "",
        number_class=row.number_class,
        started_at=row.started_at,
        ended_at=row.ended_at,
        duration=timedelta(milliseconds=row.duration_ms),
        subject=fill.subject if fill is not None else "",
        outcome=fill.outcome if fill is not None else "",
        filled_by=fill.actor if fill is not None else "",
        filled_at=fill.at if fill is not None else None,
        site=row.site,
    )


class RegisterBook:
    """The register's entries and fills."""

    def __init__(self, database: LedgerDatabase) -> None:
        self._db = database

    def fill(
        self,
        entry_id: int,
        *,
        subject: str,
        outcome: str,
        by: str,
        at: datetime,
        callee_name: str = "",
    ) -> RegisterEntry:
        """Write the subject (联络事项) and outcome (交涉结果) into an entry.

        A fill that does not name the callee keeps the name an earlier fill gave.

        Raises:
            LedgerError: no such entry, or no subject.
        """
        aware(at, "fill time")
        if not subject.strip():
            raise LedgerError("登记须写明联络事项 — a register entry needs its subject (联络事项)")
        with self._db.write() as session:
            row = session.execute(
                select(register_entries).where(register_entries.c.id == entry_id)
            ).first()
            if row is None:
                raise LedgerError(f"没有登记编号 {entry_id} — no register entry {entry_id}")
            if not callee_name:
                earlier = self._latest_fills(session, [entry_id]).get(entry_id)
                callee_name = earlier.callee_name if earlier is not None else ""
            fill = {
                "entry_id": entry_id,
                "subject": subject,
                "outcome": outcome,
                "callee_name": callee_name,
                "actor": by,
                "at": at,
                "site": row.site,
            }
            session.append("register_fills", [fill])
        return _entry(row, _Fill(fill))

    @staticmethod
    def _latest_fills(session: LedgerSession, ids: list[int]) -> dict[int, Any]:
        if not ids:
            return {}
        rows = session.execute(
            select(register_fills)
            .where(register_fills.c.entry_id.in_(ids))
            .order_by(register_fills.c.id)
        )
        return {row.entry_id: row for row in rows}

    def entries(
        self,
        start: datetime,
        end: datetime,
        *,
        site: str | None = None,
        department: str | None = None,
        person: str | None = None,
    ) -> list[RegisterEntry]:
        """Return the entries whose call started in [start, end) (of a department or a caller)."""
        return list(self.iter_entries(start, end, site=site, department=department, person=person))

    def iter_entries(
        self,
        start: datetime,
        end: datetime,
        *,
        site: str | None = None,
        department: str | None = None,
        person: str | None = None,
    ) -> Iterator[RegisterEntry]:
        """Yield the entries whose call started in [start, end), by start time, page by page.

        A month's register at a large site (a hundred thousand answered long-distance calls)
        is read a page at a time, with the fills of that page: bounded memory, and never a
        statement naming more values than a database accepts.
        """
        conditions = [
            register_entries.c.started_at >= aware(start, "start"),
            register_entries.c.started_at < aware(end, "end"),
        ]
        if site is not None:
            conditions.append(register_entries.c.site == site)
        if department is not None:
            conditions.append(register_entries.c.department == department)
        if person is not None:
            conditions.append(register_entries.c.caller_person_id == person)
        return self._pages(*conditions)

    def by_id(self, entry_id: int) -> RegisterEntry | None:
        """Return entry ``entry_id``, if any."""
        found = list(self._pages(register_entries.c.id == entry_id))
        return found[0] if found else None

    def unfilled(
        self, older_than: datetime, *, since: datetime | None = None
    ) -> list[RegisterEntry]:
        """Return entries started in [since, older_than) that nobody has filled in."""
        filled = select(register_fills.c.entry_id)
        conditions = [
            register_entries.c.started_at < aware(older_than, "older_than"),
            register_entries.c.id.not_in(filled),
            register_entries.c.site == self._db.site,
        ]
        if since is not None:
            conditions.append(register_entries.c.started_at >= aware(since, "since"))
        return list(self._pages(*conditions))

    def _pages(self, *conditions: ColumnElement[bool]) -> Iterator[RegisterEntry]:
        c = register_entries.c
        after: tuple[datetime, int] | None = None
        while True:
            query = select(register_entries).where(*conditions)
            if after is not None:
                # The plain bound lets the index on started_at start at this page.
                query = query.where(
                    c.started_at >= after[0],
                    (c.started_at > after[0]) | and_(c.started_at == after[0], c.id > after[1]),
                )
            query = query.order_by(c.started_at, c.id).limit(_PAGE)
            with self._db.read() as session:
                rows = session.execute(query).all()
                fills = self._latest_fills(session, [row.id for row in rows])
            for row in rows:
                yield _entry(row, fills.get(row.id))
            if len(rows) < _PAGE:
                return
            after = (rows[-1].started_at, rows[-1].id)


class _Fill:
    """A fill just written, read like a row."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.callee_name = data["callee_name"]
        self.subject = data["subject"]
        self.outcome = data["outcome"]
        self.actor = data["actor"]
        self.at = data["at"]
