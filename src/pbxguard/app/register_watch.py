"""Watch the long-distance register for entries nobody filled in (LD-7, 000 L719).

`RegisterWatch` reads the ledger (in a worker thread: never SQL on the event loop), asks the
register's rules (`pbxguard.domain.register`) which entries are overdue, and hands the offences
to the guard, which writes them ahead like every other fact: a database outage delays them but
loses none.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import timedelta

import structlog

from pbxguard.app.ports import Clock, OffenceBookPort, RegisterBookPort
from pbxguard.domain.effects import Effect, RecordOffence
from pbxguard.domain.entries import OffenceFilter
from pbxguard.domain.policy import Policy
from pbxguard.domain.records import OffenceDraft
from pbxguard.domain.register import (
    REGISTER_RULE,
    overdue_entries,
    register_offence_draft,
    unrecorded,
)
from pbxguard.errors import PbxGuardError

log = structlog.get_logger(__name__)

#: How often the running daemon looks for overdue entries.
REGISTER_CHECK_SECONDS = 600.0
#: How far back unfilled entries are looked for (older ones were recorded by earlier checks).
LOOK_BACK = timedelta(days=62)


class RegisterWatch:
    """Record an LD-7 offence for each register entry left unfilled past the deadline."""

    def __init__(
        self,
        register: RegisterBookPort,
        offences: OffenceBookPort,
        emit: Callable[[Sequence[Effect]], None],
        policy: Callable[[], Policy],
        clock: Clock,
        *,
        interval: float = REGISTER_CHECK_SECONDS,
    ) -> None:
        self._register = register
        self._offences = offences
        self._emit = emit
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
        """Look for overdue entries now; emit and return the offences not recorded before."""
        policy = self._policy()
        if REGISTER_RULE not in policy.rules:
            log.warning("register watch idle: the policy has no rule", rule=REGISTER_RULE)
            return []
        now = self._clock.now()
        fill_within = timedelta(hours=policy.register_fill_hours)
        if self._recorded is None:
            earlier = await asyncio.to_thread(
                lambda: [
                    e.key for e in self._offences.iter_offences(OffenceFilter(rule=REGISTER_RULE))
                ]
            )
            self._recorded = set(earlier)
        entries = await asyncio.to_thread(
            self._register.unfilled, now - fill_within, since=now - fill_within - LOOK_BACK
        )
        drafts = [
            register_offence_draft(entry, policy, fill_within=fill_within)
            for entry in overdue_entries(entries, now=now, fill_within=fill_within)
        ]
        new = unrecorded(drafts, self._recorded)
        if new:
            self._emit([RecordOffence(draft) for draft in new])
        for draft in new:
            self._recorded.add(draft.key)
            log.info(
                "register entry overdue",
                rule=REGISTER_RULE,
                person_id=draft.person_id,
                extension=draft.extension,
                key=draft.key,
            )
        return new

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
