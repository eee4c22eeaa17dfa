"""The long-distance register's rules: every call entered (LD-4), missing entries (LD-7).

Every answered long-distance call gets a register entry (LD-4); its caller has the policy's
``[register] fill_within_hours`` after the call ended to write in the subject and outcome. An
entry still empty after that is a call missing from the register (未记载): a recorded demerit
for the caller (LD-7, 000 L719). An offence is keyed by the register entry, so however often
the check runs (or restarts), each entry is recorded at most once.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from pbxguard.domain.entries import RegisterEntry
from pbxguard.domain.evaluate import class_label
from pbxguard.domain.numbers import NumberClass
from pbxguard.domain.policy import Policy
from pbxguard.domain.records import OffenceDraft, Outcome

REGISTER_RULE = "LD-7"


def fill_deadline(entry: RegisterEntry, fill_within: timedelta) -> datetime:
    """Return when ``entry`` must be filled in by: ``fill_within`` after the call ended."""
    return entry.ended_at + fill_within


def overdue_entries(
    entries: Iterable[RegisterEntry], *, now: datetime, fill_within: timedelta
) -> list[RegisterEntry]:
    """Return the entries still unfilled at ``now`` whose deadline has passed, oldest first."""
    overdue = [e for e in entries if not e.filled and fill_deadline(e, fill_within) <= now]
    return sorted(overdue, key=lambda e: (e.started_at, e.id))


def register_offence_key(site: str, entry: RegisterEntry) -> str:
    """Return the idempotency key of the LD-7 offence for ``entry``."""
    return f"{site}:register:{entry.id}:{REGISTER_RULE}"


def register_offence_draft(
    entry: RegisterEntry, policy: Policy, *, fill_within: timedelta
) -> OffenceDraft:
    """Return the LD-7 offence for an entry left unfilled past its deadline.

    The offence happens at the deadline, not when the watch noticed it, so it is the same
    fact whenever (and however often) the watch runs.
    """
    zone = policy.timezone
    started = entry.started_at.astimezone(zone).strftime("%Y-%m-%d %H:%M")
    hours = int(fill_within.total_seconds() // 3600)
    try:
        class_zh, class_en = class_label(NumberClass(entry.number_class))
    except ValueError:
        class_zh = class_en = entry.number_class
    return OffenceDraft(
        key=register_offence_key(policy.site, entry),
        rule_id=REGISTER_RULE,
        at=fill_deadline(entry, fill_within),
        call=entry.call,
        extension=entry.extension,
        person_id=entry.caller_person_id,
        person_name=entry.caller_name,
        department=entry.department,
        number=entry.callee_number,
        number_class=entry.number_class,
        talk_time=entry.duration,
        outcome=Outcome.MONITORED,
        detail_zh=(
            f"{entry.extension} 于 {started} 拨打 {entry.callee_number} 的{class_zh}，"
            f"通话结束{hours}小时后仍未登记《长话登记表》（登记编号 {entry.id}）"
        ),
        detail_en=(
            f"{class_en} call from {entry.extension} to {entry.callee_number} at {started} "
            f"not entered in the long-distance register within {hours} h (entry {entry.id})"
        ),
        policy_version=policy.version,
    )


def unrecorded(drafts: Sequence[OffenceDraft], recorded: Iterable[str]) -> list[OffenceDraft]:
    """Return the drafts whose key is not among ``recorded``."""
    done = set(recorded)
    return [draft for draft in drafts if draft.key not in done]


class FillState(enum.StrEnum):
    """Where a register entry stands: filled in, waiting, or past its deadline (LD-7)."""

    FILLED = "filled"
    UNFILLED = "unfilled"
    OVERDUE = "overdue"


def fill_state(entry: RegisterEntry, *, now: datetime | None, fill_within: timedelta) -> FillState:
    """Return whether an entry is filled, unfilled, or overdue at ``now``."""
    if entry.filled:
        return FillState.FILLED
    if now is not None and fill_deadline(entry, fill_within) <= now:
        return FillState.OVERDUE
    return FillState.UNFILLED
