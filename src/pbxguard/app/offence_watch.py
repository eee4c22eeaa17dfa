"""What the daemon's offence watches share: a pass now and then every ``interval`` seconds.

Some offences follow from no call event but from what the ledger lacks: a register entry
nobody filled in (LD-7, `pbxguard.app.register_watch`), a telesales day short of its quota
(QU-1, `pbxguard.app.quota`). A watch looks for them on each pass and hands the new ones to
the guard, which writes them ahead like every other fact: a database outage delays them but
loses none. It keeps the keys it has dealt with, read from the ledger (in a worker thread:
never SQL on the event loop) on its first pass, so that a later pass, or one after a restart,
records nothing twice. A pass that fails is tried again at the next one; tests wait for
passes to complete.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import ClassVar

import structlog

from pbxguard.app.ports import Clock
from pbxguard.domain.effects import Effect, RecordOffence
from pbxguard.domain.policy import Policy
from pbxguard.domain.records import OffenceDraft
from pbxguard.errors import PbxGuardError

log = structlog.get_logger(__name__)


class OffenceWatch(abc.ABC):
    """Run `check_once` now and every ``interval`` seconds, for ever; count the passes."""

    #: What the log says when a pass fails ("register check failed; will retry").
    failed_event: ClassVar[str]

    def __init__(
        self,
        emit: Callable[[Sequence[Effect]], None],
        policy: Callable[[], Policy],
        clock: Clock,
        *,
        interval: float,
    ) -> None:
        self._emit = emit
        self._policy = policy
        self._clock = clock
        self._interval = interval
        self._recorded: set[str] | None = None
        self._passes = 0
        self._pass_done = asyncio.Condition()

    @abc.abstractmethod
    async def check_once(self) -> list[OffenceDraft]:
        """Look for offences now; emit and return the ones not recorded before."""

    @property
    def passes(self) -> int:
        """Return how many checks have completed (successfully or not)."""
        return self._passes

    async def wait_for_passes(self, count: int) -> None:
        """Return once at least ``count`` checks have completed."""
        async with self._pass_done:
            await self._pass_done.wait_for(lambda: self._passes >= count)

    async def run(self) -> None:
        """Check now and then every ``interval`` seconds, for ever (a task of the supervisor)."""
        while True:
            try:
                await self.check_once()
            except PbxGuardError as exc:
                log.warning(self.failed_event, error=str(exc))
            async with self._pass_done:
                self._passes += 1
                self._pass_done.notify_all()
            await asyncio.sleep(self._interval)

    async def _recorded_keys(self, read: Callable[[], Iterable[str]]) -> set[str]:
        """Return the keys dealt with so far; ``read`` them from the ledger the first time."""
        if self._recorded is None:
            self._recorded = set(await asyncio.to_thread(read))
        return self._recorded

    def _record(self, drafts: Sequence[OffenceDraft]) -> None:
        """Hand ``drafts`` to the guard, which writes them ahead."""
        if drafts:
            self._emit([RecordOffence(draft) for draft in drafts])
