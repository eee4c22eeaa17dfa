"""The fine ledger: append-only storage of decisions, offences, calls and the register.

`FineLedger` stores and answers audit questions over SQLite (the embedded default) or
PostgreSQL; `SpoolingLedger` wraps it for the guard's hot path so that a database that is down
or locked never loses a write.
"""

from pbxguard.adapters.ledger.entries import (
    Adjustment,
    AdjustmentKind,
    CodeInfo,
    FineTotal,
    OffenceEntry,
    RegisterEntry,
)
from pbxguard.adapters.ledger.spool import SpoolingLedger
from pbxguard.adapters.ledger.store import FineLedger, month_bounds

__all__ = [
    "Adjustment",
    "AdjustmentKind",
    "CodeInfo",
    "FineLedger",
    "FineTotal",
    "OffenceEntry",
    "RegisterEntry",
    "SpoolingLedger",
    "month_bounds",
]
