"""Velocity locks: imposed by the guard (through the journal), lifted by an administrator.

A lock's row is never changed: lifting it appends a ``lift`` row for the same ``lock_id``. A
lock is in force from ``at`` to ``until`` unless such a row exists. Each is stored once (the
unique ``(lock_id, kind)``), however often the journal offers it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select

from pbxguard.adapters.ledger.database import LedgerDatabase, LedgerSession, aware
from pbxguard.adapters.ledger.schema import locks
from pbxguard.domain.locks import LockEntry
from pbxguard.domain.numbers import NumberClass
from pbxguard.domain.records import Lock, LockLift, LockScope
from pbxguard.errors import NotFound, RequestError

LOCK = "lock"
LIFT = "lift"


def record_locks(session: LedgerSession, items: Sequence[Lock]) -> int:
    """Store locks not stored yet (by id); return how many were new."""
    if not items:
        return 0
    c = locks.c
    ids = [lock.id for lock in items]
    done = {
        row.lock_id
        for row in session.execute(select(c.lock_id).where(c.lock_id.in_(ids), c.kind == LOCK))
    }
    rows: list[dict[str, Any]] = []
    for lock in items:
        if lock.id in done:
            continue
        done.add(lock.id)
        rows.append(
            {
                "lock_id": lock.id,
                "kind": LOCK,
                "scope": lock.scope.value,
                "extension": lock.extension,
                "person_id": lock.person_id,
                "classes": ",".join(sorted(c.value for c in lock.classes)),
                "rule_id": lock.rule_id,
                "at": aware(lock.at, "lock time"),
                "until": aware(lock.until, "lock end"),
                "actor": "pbxguard",
                "reason_zh": lock.reason_zh,
                "reason_en": lock.reason_en,
            }
        )
    session.append("locks", rows)
    return len(rows)


def _lock(row: Any) -> Lock:
    return Lock(
        id=row.lock_id,
        scope=LockScope(row.scope),
        extension=row.extension,
        person_id=row.person_id,
        classes=frozenset(NumberClass(c) for c in row.classes.split(",") if c),
        rule_id=row.rule_id,
        at=row.at,
        until=row.until,
        reason_zh=row.reason_zh,
        reason_en=row.reason_en,
    )


class LockBook:
    """The locks of the ledger."""

    def __init__(self, database: LedgerDatabase) -> None:
        self._db = database

    def record(self, lock: Lock) -> bool:
        """Store a lock once; return True when it was new."""
        with self._db.write() as session:
            return record_locks(session, [lock]) == 1

    def entries(self, *, site: str | None = None, since: datetime | None = None) -> list[LockEntry]:
        """Return locks (of ``site``, imposed since ``since``) with their lifts, oldest first."""
        c = locks.c
        query = select(locks).where(c.kind == LOCK).order_by(c.at, c.id)
        if site is not None:
            query = query.where(c.site == site)
        if since is not None:
            query = query.where(c.until > aware(since, "since"))
        with self._db.read() as session:
            rows = list(session.execute(query))
            lifts = self._lifts(session, [row.lock_id for row in rows])
        return [LockEntry(_lock(row), row.site, lifts.get(row.lock_id), row.id) for row in rows]

    def active(self, now: datetime, *, site: str | None = None) -> list[Lock]:
        """Return the locks in force at ``now`` (at ``site``)."""
        return [e.lock for e in self.entries(site=site, since=now) if e.in_force(now)]

    def lifted(self, lock_ids: Iterable[str]) -> frozenset[str]:
        """Return which of ``lock_ids`` an administrator lifted."""
        ids = list(lock_ids)
        if not ids:
            return frozenset()
        with self._db.read() as session:
            return frozenset(self._lifts(session, ids))

    def get(self, lock_ref: str) -> LockEntry | None:
        """Return one lock by its id or its 编号, if the ledger has it."""
        with self._db.read() as session:
            row = self._row(session, lock_ref)
            if row is None:
                return None
            lift = self._lifts(session, [row.lock_id]).get(row.lock_id)
        return LockEntry(_lock(row), row.site, lift, row.id)

    @staticmethod
    def _row(session: LedgerSession, lock_ref: str) -> Any:
        c = locks.c
        which = c.id == int(lock_ref) if lock_ref.isdigit() else c.lock_id == lock_ref
        return session.execute(select(locks).where(which, c.kind == LOCK)).first()

    def lift(self, lock_ref: str, *, by: str, at: datetime, reason: str) -> LockEntry:
        """End a lock (named by its id or its 编号) early; return it as it now stands.

        Raises:
            NotFound: no such lock.
            RequestError: it was already lifted, or has ended by itself.
        """
        aware(at, "lift time")
        with self._db.write() as session:
            row = self._row(session, lock_ref)
            if row is None:
                raise NotFound(
                    f"没有该锁定 — no lock {lock_ref!r} in the ledger; "
                    "`pbxguard lock list --all` lists them"
                )
            lock = _lock(row)
            lock_id = lock.id
            if lock_id in self._lifts(session, [lock_id]):
                raise RequestError(f"锁定 {lock_ref} 已解除 — lock {lock_ref} was already lifted")
            if lock.until <= at:
                raise RequestError(f"锁定 {lock_ref} 已到期 — lock {lock_ref} has already ended")
            session.append(
                "locks",
                [
                    {
                        "lock_id": lock_id,
                        "kind": LIFT,
                        "scope": row.scope,
                        "extension": row.extension,
                        "person_id": row.person_id,
                        "classes": row.classes,
                        "rule_id": row.rule_id,
                        "at": at,
                        "until": None,
                        "actor": by,
                        "reason_zh": reason,
                        "reason_en": reason,
                        "site": row.site,
                    }
                ],
            )
        return LockEntry(lock, row.site, LockLift(lock_id, at, by, reason), row.id)

    @staticmethod
    def _lifts(session: LedgerSession, ids: Sequence[str]) -> dict[str, LockLift]:
        c = locks.c
        found: dict[str, LockLift] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for row in session.execute(
                select(locks).where(c.lock_id.in_(chunk), c.kind == LIFT).order_by(c.id)
            ):
                found.setdefault(
                    row.lock_id, LockLift(row.lock_id, row.at, row.actor, row.reason_en)
                )
        return found
