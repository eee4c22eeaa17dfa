"""Call charges: prefix or class to a price per minute with a billing increment.

PR-1 fines 20 x the call's charge, so the charge must be reproducible at month end from the
stored call and the stored tariff version: a `Tariff` carries a version string that goes into
the ledger with every fine computed from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from pbxguard.domain.penalties import ZERO, billed_seconds, yuan


@dataclass(frozen=True, slots=True)
class Rate:
    """A price per minute, billed in whole increments of ``increment_seconds``."""

    per_minute: Decimal
    increment_seconds: int = 60

    def charge(self, talk_time: timedelta) -> Decimal:
        """Return what ``talk_time`` costs at this rate, in yuan."""
        seconds = billed_seconds(talk_time, self.increment_seconds)
        return yuan(self.per_minute * seconds / 60)


@dataclass(frozen=True, slots=True)
class Tariff:
    """Rates by number prefix (longest wins), falling back to rates by number class."""

    version: str = "none"
    by_prefix: Mapping[str, Rate] = field(default_factory=dict)
    by_class: Mapping[str, Rate] = field(default_factory=dict)

    def rate_for(self, number: str, number_class: str) -> Rate | None:
        """Return the rate that applies to ``number``, or None when the tariff has none."""
        for length in range(len(number), 0, -1):
            rate = self.by_prefix.get(number[:length])
            if rate is not None:
                return rate
        return self.by_class.get(number_class)

    def charge(self, number: str, number_class: str, talk_time: timedelta) -> Decimal:
        """Return what a call of ``talk_time`` to ``number`` costs, in yuan."""
        rate = self.rate_for(number, number_class)
        if rate is None:
            return ZERO
        return rate.charge(talk_time)
