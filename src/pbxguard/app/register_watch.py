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

from pbxguard.app.offence_watch import OffenceWatch
from pbxguard.app.ports import Clock, OffenceBookPort, RegisterBookPort
from pbxguard.domain.effects import Effect
from pbxguard.domain.entries import OffenceFilter
from pbxguard.domain.policy import Policy
from pbxguard.domain.records import OffenceDraft
from pbxguard.domain.register import (
    REGISTER_RULE,
    overdue_entries,
    register_offence_draft,
    unrecorded,
)

log = structlog.get_logger(__name__)

#: How often the running daemon looks for overdue entries.
REGISTER_CHECK_SECONDS = 600.0
#: How far back unfilled entries are looked for (older ones were recorded by earlier checks).
LOOK_BACK = timedelta(days=62)


class RegisterWatch(OffenceWatch):
    """Record an LD-7 offence for each register entry left unfilled past the deadline."""

    failed_event = "register check failed; will retry"

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
        super().__init__(emit, policy, clock, interval=interval)
        self._register = register
        self._offences = offences

    async def check_once(self) -> list[OffenceDraft]:
        """Look for overdue entries now; emit and return the offences not recorded before."""
        policy = self._policy()
        if REGISTER_RULE not in policy.rules:
            log.warning("register watch idle: the policy has no rule", rule=REGISTER_RULE)
            return []
        now = self._clock.now()
        fill_within = timedelta(hours=policy.register_fill_hours)
        recorded = await self._recorded_keys(
            lambda: [e.key for e in self._offences.iter_offences(OffenceFilter(rule=REGISTER_RULE))]
        )
        entries = await asyncio.to_thread(
            self._register.unfilled, now - fill_within, since=now - fill_within - LOOK_BACK
        )
        drafts = [
            register_offence_draft(entry, policy, fill_within=fill_within)
            for entry in overdue_entries(entries, now=now, fill_within=fill_within)
        ]
        new = unrecorded(drafts, recorded)
        self._record(new)
        for draft in new:
            recorded.add(draft.key)
            log.info(
                "register entry overdue",
                rule=REGISTER_RULE,
                person_id=draft.person_id,
                extension=draft.extension,
                key=draft.key,
            )
        return new
