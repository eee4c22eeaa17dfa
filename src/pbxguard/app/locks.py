"""Velocity locks for administrators: list them, lift one early.

The guard imposes a lock when an extension (or the site) makes too many calls too fast, and
writes it to the ledger. Lifting one appends a lift to the ledger; the running guard reads the
lifts every few seconds and lets the extension dial again (`Daemon.refresh_controls`).
"""

from __future__ import annotations

from datetime import datetime

from pbxguard.app.ports import LockBookPort
from pbxguard.domain.locks import LockEntry
from pbxguard.errors import RequestError


def list_locks(
    book: LockBookPort,
    *,
    now: datetime,
    everything: bool = False,
    extension: str | None = None,
    site: str | None = None,
) -> list[LockEntry]:
    """Return the locks in force (or, with ``everything``, every lock ever imposed)."""
    found = book.entries(site=site, since=None if everything else now)
    if not everything:
        found = [entry for entry in found if entry.in_force(now)]
    if extension is not None:
        found = [entry for entry in found if entry.lock.extension == extension]
    return found


def lift_lock(
    book: LockBookPort, lock_ref: str, *, by: str, reason: str, now: datetime
) -> LockEntry:
    """End a lock early, saying who and why.

    Raises:
        RequestError: no name or no reason given, or the lock is lifted or over already.
        NotFound: no such lock.
    """
    if not by.strip():
        raise RequestError("--by must name who lifts the lock")
    if not reason.strip():
        raise RequestError("--reason must say why the lock is lifted")
    return book.lift(lock_ref, by=by.strip(), at=now, reason=reason.strip())
