"""Jittered exponential backoff: how every outside link waits before it tries again.

The AMI client, the MQTT link, the ledger writer and the security desk's channels all wait
the same way after a run of failures: the n-th wait (n = 0, 1, …) is drawn from
``[ceiling / 2, ceiling]`` with ``ceiling = min(first * 2**n, most)``. The waits grow fast, never
pass ``most``, are never shorter than half the ceiling (a refusing server is not hammered), and
are spread so that many guards that lost the same server do not come back in step.
"""

from __future__ import annotations

import random


def backoff_delay(first: float, most: float, failures: int, rng: random.Random) -> float:
    """Return the wait after ``failures`` earlier failures in a row (0 for the first wait)."""
    ceiling = min(most, first * 2.0 ** min(failures, 64))
    return rng.uniform(ceiling / 2.0, ceiling)


class Backoff:
    """The waits of one link: each `next_delay` is longer, until `reset` after a success."""

    def __init__(self, first: float, most: float, rng: random.Random | None = None) -> None:
        self._first = first
        self._most = most
        # Jitter only spreads retries out; nothing here needs an unpredictable number.
        self._rng = rng or random.Random()  # noqa: S311
        self.failures = 0

    def next_delay(self) -> float:
        """Return the next wait and count one more failure."""
        delay = backoff_delay(self._first, self._most, self.failures, self._rng)
        self.failures += 1
        return delay

    def reset(self) -> None:
        """Start over from the first wait (the link worked)."""
        self.failures = 0
