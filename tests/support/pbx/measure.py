"""Figures the tier measures on the real PBX, printed at the end of the test run.

Tests never assert on timing (the machine is shared and noisy) except against bounds the
product promises with a wide margin; they record what they measured here, and
``tests/pbx/conftest.py`` prints the list in pytest's terminal summary. Tests that count
(calls placed, faults injected, ledger rows) keep a `Tally` of their counts the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

_figures: list[Figure] = []
_tallies: list[Tally] = []


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


@dataclass(frozen=True, slots=True)
class Tally:
    """Counts one test made: a title and (what, how many) lines, in order."""

    title: str
    lines: tuple[tuple[str, str], ...]


def tally(title: str, lines: list[tuple[str, object]]) -> Tally:
    """Keep one test's counts for the summary; return them."""
    kept = Tally(title, tuple((what, str(value)) for what, value in lines))
    _tallies.append(kept)
    return kept


def tallies() -> list[Tally]:
    """Every tally kept so far, in order."""
    return list(_tallies)
