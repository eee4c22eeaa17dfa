"""The long-distance register (长话登记表, LD-4, LD-10): a month's entries, and filling one in.

pbxguard opens a register entry for every answered long-distance call; the caller (or the
person keeping the register, LD-11) writes in the callee's name, the subject and the outcome.
The general manager reviews the register monthly (000 L711).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from pbxguard.app.ports import RegisterBookPort
from pbxguard.domain.entries import RegisterEntry
from pbxguard.domain.periods import month_bounds
from pbxguard.domain.policy import Policy
from pbxguard.errors import RequestError


def iter_month_entries(
    book: RegisterBookPort, policy: Policy, month: str, *, site: str | None = None
) -> Iterator[RegisterEntry]:
    """Yield the register of ``month`` by start time, a page at a time (for exports)."""
    start, end = month_bounds(month, policy.timezone)
    return book.iter_entries(start, end, site=site)


def fill_entry(
    book: RegisterBookPort,
    *,
    entry_id: int,
    subject: str,
    outcome: str,
    by: str,
    now: datetime,
    callee_name: str = "",
) -> RegisterEntry:
    """Write the subject (联络事项) and outcome (交涉结果) into an entry.

    Raises:
        RequestError: a field is empty.
        LedgerError: there is no such entry.
    """
    if not by.strip():
        raise RequestError("--by must name who fills the entry in")
    if not subject.strip():
        raise RequestError("--subject (联络事项) must not be empty")
    if not outcome.strip():
        raise RequestError("--outcome (交涉结果) must not be empty")
    return book.fill(
        entry_id, subject=subject, outcome=outcome, by=by, at=now, callee_name=callee_name
    )
