"""Prior approvals (LD-1, LD-5): a grant, then its uses, revocation or expiry, as events.

An approval's state is never written over: it is folded from its events, oldest first. A grant
is recorded for one site, or for every site (``site=""``: company-wide), and is usable from the
guards of the sites it covers; each use is stored once per call (its ``ref``), whichever layer
counted it and however often.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select

from pbxguard.adapters.ledger.database import LedgerDatabase, LedgerSession, aware
from pbxguard.adapters.ledger.schema import approvals
from pbxguard.domain.approvals import Approval
from pbxguard.domain.numbers import NumberClass
from pbxguard.domain.records import ApprovalUse, CallRef
from pbxguard.errors import LedgerError

GRANT = "grant"
USE = "use"
REVOKE = "revoke"
EXPIRE = "expire"


def fold(events: Sequence[Any]) -> dict[str, Approval]:
    """Derive each approval's current state from its events (rows), oldest first."""
    ordered = sorted(events, key=lambda e: e.id)
    found: dict[str, Approval] = {}
    for ev in ordered:
        if ev.kind == GRANT:
            found[ev.approval_id] = Approval(
                id=ev.approval_id,
                person_id=ev.person_id,
                granted_by=ev.actor,
                valid_from=ev.valid_from,
                valid_until=ev.valid_until,
                number_class=NumberClass(ev.number_class) if ev.number_class else None,
                prefix=ev.prefix,
                max_calls=ev.max_calls,
                reason=ev.reason,
                site=ev.site,
            )
    for ev in ordered:
        current = found.get(ev.approval_id)
        if current is None:
            continue
        if ev.kind == USE:
            found[ev.approval_id] = current.used()
        elif ev.kind == REVOKE:
            found[ev.approval_id] = replace(current, revoked=True)
        elif ev.kind == EXPIRE:
            found[ev.approval_id] = replace(current, valid_until=min(current.valid_until, ev.at))
    return found


def _events_of(session: LedgerSession, ids: Any) -> list[Any]:
    query = select(approvals).where(approvals.c.approval_id.in_(ids)).order_by(approvals.c.id)
    return list(session.execute(query))


def _event_row(
    approval_id: str,
    kind: str,
    *,
    at: datetime,
    person_id: str,
    ref: str = "",
    by: str = "",
    reason: str = "",
    call: CallRef | None = None,
) -> dict[str, Any]:
    return {
        "approval_id": approval_id,
        "kind": kind,
        "ref": ref,
        "at": at,
        "actor": by,
        "person_id": person_id,
        "valid_from": None,
        "valid_until": None,
        "number_class": None,
        "prefix": "",
        "max_calls": None,
        "reason": reason,
        "linkedid": call.linkedid if call else "",
        "uniqueid": call.uniqueid if call else "",
        "channel": call.channel if call else "",
    }


def record_uses(session: LedgerSession, uses: Sequence[ApprovalUse]) -> int:
    """Count calls against approvals, once per (approval, call); return how many were new.

    Raises:
        LedgerError: an approval was never granted (such a use can never be stored).
    """
    if not uses:
        return 0
    ids = list(dict.fromkeys(u.approval_id for u in uses))
    events = _events_of(session, ids)
    grants = {e.approval_id: e for e in events if e.kind == GRANT}
    counted = {(e.approval_id, e.ref) for e in events if e.kind == USE}
    rows: list[dict[str, Any]] = []
    for use in uses:
        grant = grants.get(use.approval_id)
        if grant is None:
            raise LedgerError(f"no approval {use.approval_id} in the ledger")
        if (use.approval_id, use.ref) in counted:
            continue
        counted.add((use.approval_id, use.ref))
        rows.append(
            _event_row(
                use.approval_id,
                USE,
                at=aware(use.at, "use time"),
                person_id=grant.person_id,
                ref=use.ref,
                call=use.call,
            )
        )
    session.append("approvals", rows, ids=False)
    return len(rows)


class ApprovalBook:
    """The approvals of the ledger."""

    def __init__(self, database: LedgerDatabase) -> None:
        self._db = database

    def grant(self, approval: Approval) -> bool:
        """Store a grant once per approval id; return True when it was new.

        The ledger derives ``used_calls`` and ``revoked`` from its own events; the values given
        here are ignored. ``approval.site`` is the site it is for ("" for every site).
        """
        aware(approval.valid_from, "valid_from")
        aware(approval.valid_until, "valid_until")
        if approval.valid_until <= approval.valid_from:
            raise LedgerError(f"approval {approval.id} ends before it starts")
        with self._db.write() as session:
            if any(e.kind == GRANT for e in _events_of(session, [approval.id])):
                return False
            row = _event_row(
                approval.id,
                GRANT,
                at=approval.valid_from,
                person_id=approval.person_id,
                by=approval.granted_by,
                reason=approval.reason,
            )
            row.update(
                valid_from=approval.valid_from,
                valid_until=approval.valid_until,
                number_class=approval.number_class.value if approval.number_class else None,
                prefix=approval.prefix,
                max_calls=approval.max_calls,
                site=approval.site,
            )
            session.append("approvals", [row])
        return True

    def use(self, approval_id: str, call: CallRef, at: datetime, *, ref: str = "") -> Approval:
        """Count one call against an approval (once per ``ref``); return the approval now."""
        with self._db.write() as session:
            record_uses(session, [ApprovalUse(approval_id, ref or call.linkedid, at, call)])
            return fold(_events_of(session, [approval_id]))[approval_id]

    def revoke(self, approval_id: str, *, by: str, at: datetime, reason: str) -> Approval:
        """Revoke an approval; return it as it now stands."""
        return self._event(approval_id, REVOKE, at=at, by=by, reason=reason)

    def expire(self, approval_id: str, *, at: datetime, by: str = "", reason: str = "") -> Approval:
        """Close an approval's window at ``at`` (if still open); return it as it now stands."""
        return self._event(approval_id, EXPIRE, at=at, by=by, reason=reason)

    def _event(
        self, approval_id: str, kind: str, *, at: datetime, by: str, reason: str
    ) -> Approval:
        aware(at, "event time")
        with self._db.write() as session:
            events = _events_of(session, [approval_id])
            grant = next((e for e in events if e.kind == GRANT), None)
            if grant is None:
                raise LedgerError(f"没有该批准 — no approval {approval_id} in the ledger")
            if not any(e.kind == kind for e in events):
                row = _event_row(
                    approval_id, kind, at=at, person_id=grant.person_id, by=by, reason=reason
                )
                session.append("approvals", [row])
                events = _events_of(session, [approval_id])
        return fold(events)[approval_id]

    def active(self, now: datetime, *, site: str | None = None) -> list[Approval]:
        """Return the approvals usable at ``now`` (at ``site`` and company-wide ones)."""
        aware(now, "now")
        c = approvals.c
        open_grants = select(c.approval_id).where(
            c.kind == GRANT, c.valid_from <= now, c.valid_until > now
        )
        if site is not None:
            open_grants = open_grants.where(or_(c.site == site, c.site == ""))
        with self._db.read() as session:
            events = _events_of(session, open_grants)
        folded = fold(events).values()
        return sorted((a for a in folded if a.is_active(now)), key=lambda a: a.id)

    def get(self, approval_id: str) -> Approval | None:
        """Return one approval as it stands, if it was ever granted."""
        with self._db.read() as session:
            return fold(_events_of(session, [approval_id])).get(approval_id)

    def all(self, person: str | None = None) -> list[Approval]:
        """Return every approval ever granted (to ``person``), in the order granted."""
        query = select(approvals).order_by(approvals.c.id)
        if person is not None:
            query = query.where(approvals.c.person_id == person)
        with self._db.read() as session:
            events = list(session.execute(query))
        return list(fold(events).values())
