"""The event-loop watch: stalls measured, the long ones logged (not too often), GC pauses named."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
import time

import pytest
from structlog.testing import capture_logs

from pbxguard.adapters.loop_watch import (
    GC_THRESHOLDS,
    SWITCH_INTERVAL,
    LoopWatch,
    tune_interpreter,
)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_long_stall_is_logged_with_the_collections_that_ran_in_it() -> None:
    clock = FakeClock()
    watch = LoopWatch(warn_after=0.05, clock=clock)
    watch._on_gc("start", {"generation": 2})
    clock.now += 0.03
    watch._on_gc("stop", {"generation": 2})
    with capture_logs() as logs:
        watch._observe(0.08)
    [line] = logs
    assert line["event"] == "event loop stalled"
    assert line["log_level"] == "warning"
    assert line["stall_ms"] == 80.0
    assert line["gc_ms"] == 30.0
    assert line["gc_generations"] == [2]
    assert watch.worst.stall_ms == 80.0
    assert watch.worst.gc_ms == pytest.approx(30.0)
    assert watch.worst.gc_generation == 2


def test_short_stalls_are_only_remembered_and_warnings_come_at_most_once_a_second() -> None:
    clock = FakeClock()
    watch = LoopWatch(warn_after=0.05, clock=clock)
    with capture_logs() as logs:
        watch._observe(0.004)
        watch._observe(0.06)
        clock.now += 0.2
        watch._observe(0.07)
        watch._observe(0.09)
        clock.now += 1.0
        watch._observe(0.051)
    assert [line["stall_ms"] for line in logs] == [60.0, 51.0]
    assert [line["stalls_not_logged"] for line in logs] == [0, 2]
    assert watch.worst.stall_ms == 90.0
    assert watch.worst.stalls == 4


async def test_a_loop_blocked_by_synchronous_work_is_caught() -> None:
    watch = LoopWatch(interval=0.005, warn_after=0.05)
    task = asyncio.create_task(watch.run())
    try:
        await asyncio.sleep(0.02)  # the watch is sleeping now
        with capture_logs() as logs:
            time.sleep(0.1)  # noqa: ASYNC251 - the stall under test
            for _ in range(100):
                await asyncio.sleep(0.005)
                if watch.worst.stalls:
                    break
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert watch.worst.stall_ms >= 90
    assert [line["event"] for line in logs] == ["event loop stalled"]
    assert watch._on_gc not in gc.callbacks


def test_tuning_freezes_what_start_up_built_and_switches_threads_sooner() -> None:
    thresholds = gc.get_threshold()
    interval = sys.getswitchinterval()
    try:
        tune_interpreter()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == GC_THRESHOLDS
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL)
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        sys.setswitchinterval(interval)
