"""Watch the long-distance register for entries nobody filled in (LD-7, 000 L719).

Every answered long-distance call gets a register entry (LD-4); its caller has the policy's
``[register] fill_within_hours`` after the call ended to write in the subject and outcome. An
entry still empty after that is a call missing from the register: a recorded demerit for the
caller. The decision (which entries are overdue, what the offence says) is made by pure
functions below; `RegisterWatch` only reads the ledger, calls them, and writes the offences
through the guard's spooling ledger writer, so a database outage delays them but loses none.

An offence is keyed by the register entry, so however often the watch runs (or restarts),
each entry is recorded at most once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

import structlog

from pbxguard.adapters.ledger import OffenceEntry, RegisterEntry
from pbxguard.app.ports import Clock, LedgerWriter
from pbxguard.domain.evaluate import class_label
from pbxguard.domain.numbers import NumberClass
from pbxguard.domain.policy import Policy
from pbxguard.domain.records import OffenceDraft, Outcome
from pbxguard.errors import PbxGuardError

log = structlog.get_logger(__name__)

REGISTER_RULE = "LD-7"
#: How often the running daemon looks for overdue entries.
REGISTER_CHECK_SECONDS = 600.0


class RegisterReader(Protocol):
    """Reads the register and the offences already recorded from it."""

    async def unfilled_register_entries(self, older_than: datetime) -> list[RegisterEntry]:
        """Return unfilled entries started before ``older_than``."""

    async def offences(
        self,
        *,
        timezone: ZoneInfo,
        person: str | None = None,
        department: str | None = None,
        month: str | None = None,
        rule: str | None = None,
    ) -> list[OffenceEntry]:
        """Return recorded offences."""


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


class RegisterWatch:
    """Record an LD-7 offence for each register entry left unfilled past the deadline."""

    def __init__(
        self,
        reader: RegisterReader,
        writer: LedgerWriter,
        policy: Callable[[], Policy],
        clock: Clock,
        *,
        interval: float = REGISTER_CHECK_SECONDS,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._policy = policy
        self._clock = clock
        self._interval = interval
        self._recorded: set[str] | None = None
        self._passes = 0
        self._pass_done = asyncio.Condition()

    @property
    def passes(self) -> int:
        """Return how many checks have completed (successfully or not)."""
        return self._passes

    async def wait_for_passes(self, count: int) -> None:
        """Return once at least ``count`` checks have completed."""
        async with self._pass_done:
            await self._pass_done.wait_for(lambda: self._passes >= count)

    async def check_once(self) -> list[OffenceDraft]:
        """Look for overdue entries now; record and return the offences not recorded before."""
        policy = self._policy()
        rule = policy.rules.get(REGISTER_RULE)
        if rule is None:
            log.warning("register watch idle: the policy has no rule", rule=REGISTER_RULE)
            return []
        now = self._clock.now()
        fill_within = timedelta(hours=policy.register_fill_hours)
        recorded = await self._recorded_keys(policy)
        entries = await self._reader.unfilled_register_entries(now - fill_within)
        drafts = [
            register_offence_draft(entry, policy, fill_within=fill_within)
            for entry in overdue_entries(entries, now=now, fill_within=fill_within)
        ]
        new = unrecorded(drafts, recorded)
        for draft in new:
            await self._writer.record_offence(draft, rule, timezone=policy.timezone)
            recorded.add(draft.key)
            log.info(
                "register entry overdue",
                rule=REGISTER_RULE,
                person_id=draft.person_id,
                extension=draft.extension,
                key=draft.key,
            )
        return new

    async def _recorded_keys(self, policy: Policy) -> set[str]:
        if self._recorded is None:
            # Offences recorded by an earlier run: the ledger would ignore them anyway (same
            # key), this only spares it the writes.
            earlier = await self._reader.offences(timezone=policy.timezone, rule=REGISTER_RULE)
            self._recorded = {entry.key for entry in earlier}
        return self._recorded

    async def run(self) -> None:
        """Check now and then every ``interval`` seconds, for ever (a task of the supervisor)."""
        while True:
            try:
                await self.check_once()
            except PbxGuardError as exc:
                log.warning("register check failed; will retry", error=str(exc))
            await self._count_pass()
            await asyncio.sleep(self._interval)

    async def _count_pass(self) -> None:
        async with self._pass_done:
            self._passes += 1
            self._pass_done.notify_all()


def unrecorded(drafts: Sequence[OffenceDraft], recorded: Iterable[str]) -> list[OffenceDraft]:
    """Return the drafts whose key is not among ``recorded``."""
    done = set(recorded)
    return [draft for draft in drafts if draft.key not in done]
