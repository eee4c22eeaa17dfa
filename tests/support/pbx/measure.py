"""Figures the tier measures on the real PBX, printed at the end of the test run.

Tests never assert on timing (the machine is shared and noisy) except against bounds the
product promises with a wide margin; they record what they measured here, and
``tests/pbx/conftest.py`` prints the list in pytest's terminal summary.
"""

from __future__ import annotations

from dataclasses import dataclass

_figures: list[Figure] = []


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured interval: what it is, in seconds, and what was expected."""

    what: str
    seconds: float
    expected: str


def record(what: str, seconds: float, expected: str) -> float:
    """Keep one figure for the summary; return ``seconds``."""
    _figures.append(Figure(what, seconds, expected))
    return seconds


def figures() -> list[Figure]:
    """Every figure recorded so far, in order."""
    return list(_figures)
