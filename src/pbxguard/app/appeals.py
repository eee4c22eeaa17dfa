"""Waivers, appeals and decisions through the console: ledger entries, never deletions (§7).

A member of staff lodges an appeal against their own offence; their department head (or an
administrator) allows or dismisses it, or waives an offence outright ("without special
reason": 000 L1115). Each is an adjustment row of the ledger with who, when and why, the same
rows ``pbxguard ledger adjust`` writes.
"""

from __future__ import annotations

from datetime import datetime

from pbxguard.app.access import offence_for, record_change, require
from pbxguard.app.ports import AuditTrailPort, OffenceBookPort
from pbxguard.domain.access import Permission, Viewer
from pbxguard.domain.entries import AdjustmentKind, OffenceEntry
from pbxguard.errors import LedgerError, RequestError

DECISIONS = (
    AdjustmentKind.WAIVER,
    AdjustmentKind.APPEAL_ALLOWED,
    AdjustmentKind.APPEAL_DISMISSED,
)


def _adjust(
    book: OffenceBookPort,
    trail: AuditTrailPort,
    viewer: Viewer,
    entry: OffenceEntry,
    *,
    kind: AdjustmentKind,
    reason: str,
    now: datetime,
) -> OffenceEntry:
    if not reason.strip():
        raise RequestError("须说明理由 — say why")
    try:
        adjusted = book.add_adjustment(
            entry.id, kind, by=viewer.actor, reason=reason.strip(), at=now
        )
    except LedgerError as error:
        raise RequestError(str(error)) from error
    record_change(
        trail,
        viewer,
        action=f"offence_{kind.value}",
        target=str(entry.id),
        detail=reason,
        now=now,
    )
    return adjusted


def lodge_appeal(
    book: OffenceBookPort,
    trail: AuditTrailPort,
    viewer: Viewer,
    offence_id: int,
    *,
    reason: str,
    now: datetime,
) -> OffenceEntry:
    """Lodge an appeal against one's own offence.

    Raises:
        NotFound: no such offence of the viewer's.
        RequestError: no reason, the offence is excused, or an appeal is pending.
    """
    require(viewer, Permission.APPEAL)
    entry = offence_for(book, viewer, offence_id)
    if entry.excused:
        raise RequestError("该罚款已免除 — this offence is excused already")
    if entry.appeal_pending:
        raise RequestError("申诉处理中 — an appeal of this offence is pending")
    return _adjust(book, trail, viewer, entry, kind=AdjustmentKind.APPEAL, reason=reason, now=now)


def decide(
    book: OffenceBookPort,
    trail: AuditTrailPort,
    viewer: Viewer,
    offence_id: int,
    kind: AdjustmentKind,
    *,
    reason: str,
    now: datetime,
) -> OffenceEntry:
    """Waive an offence, or allow or dismiss its appeal.

    Raises:
        NotFound: no such offence within the viewer's scope.
        NotPermitted: the viewer may not decide.
        RequestError: not a decision, no reason, no open appeal, or excused already.
    """
    require(viewer, Permission.DECIDE_ADJUSTMENTS)
    if kind not in DECISIONS:
        raise RequestError(f"{kind.value} is not a decision: waiver, appeal_allowed, ...")
    entry = offence_for(book, viewer, offence_id)
    if entry.excused:
        raise RequestError("该罚款已免除 — this offence is excused already")
    return _adjust(book, trail, viewer, entry, kind=kind, reason=reason, now=now)
