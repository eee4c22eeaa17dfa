"""The fine ledger: append-only, hash-chained storage of decisions, offences, calls and more.

`LedgerDatabase` opens SQLite (the embedded default) or PostgreSQL and hands out units of work;
one book per aggregate reads and writes it (`OffenceBook`, `CallLog`, `ApprovalBook`,
`CodeBook`, `RegisterBook`, `LockBook`); `LedgerWriter` drains the write-ahead journal into it
off the event loop; `verify_ledger` walks the hash chains.
"""

from pbxguard.adapters.ledger.approvals import ApprovalBook
from pbxguard.adapters.ledger.audit import ChainReport, verify_ledger
from pbxguard.adapters.ledger.calls import CallLog
from pbxguard.adapters.ledger.codes import CodeBook, code_hasher
from pbxguard.adapters.ledger.database import LedgerDatabase, LedgerSession
from pbxguard.adapters.ledger.locks import LockBook
from pbxguard.adapters.ledger.offences import OffenceBook
from pbxguard.adapters.ledger.register import RegisterBook
from pbxguard.adapters.ledger.writer import FactJournal, LedgerWriter

__all__ = [
    "ApprovalBook",
    "CallLog",
    "ChainReport",
    "CodeBook",
    "FactJournal",
    "LedgerDatabase",
    "LedgerSession",
    "LedgerWriter",
    "LockBook",
    "OffenceBook",
    "RegisterBook",
    "code_hasher",
    "verify_ledger",
]
