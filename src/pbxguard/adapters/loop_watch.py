"""How long the event loop stalls, and what the garbage collector had to do with it.

Everything the guard does happens on one event loop: reading AMI, answering FastAGI, hanging up.
A stall of that loop delays all of them, and a long one costs more than time: Asterisk drops a
manager session whose writes wait longer than ``writetimeout`` (100 ms by default) for pbxguard
to read, and the dialplan gives up on a verdict after ``PBXGUARD_MAX_WAIT``. `LoopWatch` is a
task that sleeps ``interval`` over and over and notes how late it wakes: that lateness is the
longest stretch in which nothing else on the loop could run. It also times every garbage
collection (``gc.callbacks``), the usual cause of a stall that no line of pbxguard explains.

A stall of ``warn_after`` or more is logged as ``event loop stalled``, with the collections
that ran meanwhile; at most one such line a second (the others are counted in the next one).
`worst` keeps the worst stall and the longest collection since start, for the stop's log line.

`tune_interpreter` is what the daemon does once it has started. Everything built so far
(modules, the policy, the database's metadata) lives as long as the process, so it is moved out
of the collector's sight (``gc.freeze``), and young objects are collected less often, so that the
collector's full passes, whose length grows with what it must look at, stay short and rare.
And the interpreter hands itself from one thread to another every 0.5 ms instead of every
5 ms: the ledger writer thread runs Python for milliseconds at a time, and whenever the event
loop lets go of the interpreter for a system call (every send, every write), it then waits for
the writer to let go in turn, for up to that interval. A verdict makes a dozen system calls.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from dataclasses import dataclass
from typing import Any, Final

import structlog

log = structlog.get_logger(__name__)

DEFAULT_INTERVAL: Final = 0.01
DEFAULT_WARN_AFTER: Final = 0.05
#: Allocations between young collections (CPython's default is 700): a young collection of a
#: few thousand objects takes well under a millisecond, and fewer of them mean fewer of the
#: full ones they lead to.
GC_THRESHOLDS: Final = (10_000, 20, 20)
#: How often (seconds) a thread waiting for the interpreter may take it from the one running.
SWITCH_INTERVAL: Final = 0.0005


@dataclass(slots=True)
class Worst:
    """The worst the loop has seen since the watch started (milliseconds)."""

    stall_ms: float = 0.0
    gc_ms: float = 0.0
    gc_generation: int = -1
    stalls: int = 0


class LoopWatch:
    """Measure the event loop's stalls and the collector's pauses; log the long ones."""

    def __init__(
        self,
        *,
        interval: float = DEFAULT_INTERVAL,
        warn_after: float = DEFAULT_WARN_AFTER,
        clock: Any = time.perf_counter,
    ) -> None:
        self._interval = interval
        self._warn_after = warn_after
        self._clock = clock
        self._gc_started = 0.0
        self._gc_pauses: list[tuple[int, float]] = []  # (generation, seconds) since last look
        self._last_warning = float("-inf")
        self._unreported = 0
        self.worst = Worst()

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = self._clock()
            return
        pause = self._clock() - self._gc_started
        self._gc_pauses.append((int(info.get("generation", -1)), pause))
        if pause * 1000 > self.worst.gc_ms:
            self.worst.gc_ms = pause * 1000
            self.worst.gc_generation = int(info.get("generation", -1))

    async def run(self) -> None:
        """Watch until cancelled."""
        gc.callbacks.append(self._on_gc)
        try:
            while True:
                before = self._clock()
                await asyncio.sleep(self._interval)
                self._observe(self._clock() - before - self._interval)
        finally:
            gc.callbacks.remove(self._on_gc)

    def _observe(self, stall: float) -> None:
        pauses, self._gc_pauses = self._gc_pauses, []
        self.worst.stall_ms = max(self.worst.stall_ms, stall * 1000)
        if stall < self._warn_after:
            return
        self.worst.stalls += 1
        now = self._clock()
        if now - self._last_warning < 1.0:
            self._unreported += 1
            return
        self._last_warning = now
        log.warning(
            "event loop stalled",
            stall_ms=round(stall * 1000, 1),
            gc_ms=round(sum(p for _, p in pauses) * 1000, 1),
            gc_generations=sorted({g for g, _ in pauses}),
            stalls_not_logged=self._unreported,
        )
        self._unreported = 0


def tune_interpreter() -> None:
    """Freeze what start-up built, collect less often, switch threads sooner (module doc)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL)
