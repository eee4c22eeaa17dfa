"""The one backoff every outside link uses: growing, bounded, jittered waits."""

from __future__ import annotations

import random

import pytest

from pbxguard.adapters.backoff import Backoff, backoff_delay


@pytest.mark.parametrize("seed", range(20))
def test_each_wait_lies_between_half_its_ceiling_and_the_ceiling(seed: int) -> None:
    rng = random.Random(seed)
    for failures in range(80):
        ceiling = min(4.0, 0.5 * 2**failures)
        delay = backoff_delay(0.5, 4.0, failures, rng)
        assert ceiling / 2 <= delay <= ceiling


class Highest(random.Random):
    """Always the top of the range, to see the ceilings themselves."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_waits_double_up_to_the_most_and_start_over_after_a_success() -> None:
    backoff = Backoff(0.25, 2.0, Highest())
    assert [backoff.next_delay() for _ in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert backoff.failures == 6
    backoff.reset()
    assert backoff.next_delay() == 0.25


def test_a_very_long_outage_does_not_overflow() -> None:
    assert backoff_delay(1.0, 60.0, 10_000, Highest()) == 60.0
