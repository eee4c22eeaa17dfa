"""The ports the use cases and the guard talk through; adapters implement them.

Each is a `typing.Protocol`: the adapters in ``pbxguard.adapters`` satisfy them structurally,
and tests use small hand-written fakes. The application never imports an adapter.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from pbxguard.domain.access import (
    AccountEvent,
    ApprovalRequest,
    AuditEntry,
    ConsoleUser,
    RequestState,
    SignOff,
)
from pbxguard.domain.approvals import Approval
from pbxguard.domain.effects import ClearAlert, RaiseAlert
from pbxguard.domain.emergency import EmergencyNotice
from pbxguard.domain.entries import (
    AdjustmentKind,
    CodeInfo,
    FineTotal,
    OffenceEntry,
    OffenceFilter,
    RegisterEntry,
)
from pbxguard.domain.locks import LockEntry
from pbxguard.domain.records import CallRef, CallSummary, CodeFailure, DecisionRecord, LedgerFact
from pbxguard.domain.rota import Rota


class Clock(Protocol):
    """Tells the time; the only way the application reads the clock."""

    def now(self) -> datetime:
        """Return the current time, timezone-aware (UTC)."""


class PbxControl(Protocol):
    """Acts on the PBX."""

    async def hangup(self, channel: str, cause: int = 21) -> None:
        """Hang up exactly ``channel`` with ``cause``.

        Raises:
            AmiConnectionError: not connected, or the connection was lost before the reply.
            AmiActionError: Asterisk refused (e.g. "No such channel").
            AmiActionTimeout: no reply in time.
        """


class CallerWarning(Protocol):
    """Warns a caller, on their own channel only, that the call is about to be cut."""

    async def warn(self, channel: str) -> None:
        """Play the warning on exactly ``channel`` (the far end does not hear it).

        Raises:
            AmiConnectionError: not connected, or the connection was lost before the reply.
            AmiActionError: Asterisk refused (e.g. the channel is gone).
            AmiActionTimeout: no reply in time.
        """


class FactSink(Protocol):
    """The write-ahead journal in front of the ledger."""

    def append(self, facts: Sequence[LedgerFact]) -> None:
        """Write facts in order before anything acts on them.

        Raises:
            JournalError: they could not be written.
        """

    @property
    def pending(self) -> int:
        """How many facts wait for the database."""


class Notifier(Protocol):
    """Tells subscribers what the guard decided and found (one method per domain event)."""

    def decision_made(self, record: DecisionRecord) -> None:
        """A verdict was given by either layer."""

    def offence_recorded(self, entry: OffenceEntry) -> None:
        """An offence reached the ledger, priced."""

    def call_hung_up(self, channel: str, linkedid: str, rule_id: str) -> None:
        """Asterisk accepted the guard's hangup of a channel."""

    def alert_raised(self, alert: RaiseAlert) -> None:
        """Something needs attention now (raised, or repeated)."""

    def alert_cleared(self, alert: ClearAlert) -> None:
        """The condition behind an alert is over."""


class EmergencyDesk(Protocol):
    """Tells the security desk about emergency calls (MQTT, a webhook, e-mail …)."""

    def emergency_call(self, notice: EmergencyNotice) -> None:
        """Hand a notice over for delivery; return at once, never raise."""


class CodeChecker(Protocol):
    """Checks authorization codes typed at a phone."""

    def check(
        self,
        code: str,
        now: datetime,
        *,
        person_id: str | None = None,
        extension: str = "",
        call: CallRef | None = None,
    ) -> str | None:
        """Return the owner of a code valid at ``now`` (spending a one-time code), or None."""


class ApprovalBookPort(Protocol):
    """Prior approvals (LD-1, LD-5) as the ledger keeps them."""

    def grant(self, approval: Approval) -> bool:
        """Store a grant; return True when it was new."""

    def revoke(self, approval_id: str, *, by: str, at: datetime, reason: str) -> Approval:
        """Revoke an approval; return it as it now stands."""

    def expire(self, approval_id: str, *, at: datetime, by: str = "", reason: str = "") -> Approval:
        """Close an approval's window; return it as it now stands."""

    def active(self, now: datetime, *, site: str | None = None) -> list[Approval]:
        """Return the approvals usable at ``now``."""

    def get(self, approval_id: str) -> Approval | None:
        """Return one approval, if it was ever granted."""

    def all(self, person: str | None = None) -> list[Approval]:
        """Return every approval ever granted (to ``person``)."""


class CodeBookPort(CodeChecker, Protocol):
    """Authorization codes as the ledger keeps them (never their digits)."""

    def issue(
        self,
        person_id: str,
        code: str,
        *,
        one_time: bool,
        expires_at: datetime | None,
        by: str,
        at: datetime,
    ) -> int:
        """Store a code's hash; return its id."""

    def revoke(self, code_id: int, *, by: str, at: datetime, reason: str) -> CodeInfo:
        """Withdraw a code at once."""

    def codes(self, *, now: datetime, person: str | None = None) -> list[CodeInfo]:
        """Return the codes issued and how each stands."""

    def failures(self, *, since: datetime, extension: str | None = None) -> list[CodeFailure]:
        """Return the wrong codes typed since ``since``."""


class OffenceListing(Protocol):
    """Lists the offences of the ledger (what a read-only report needs)."""

    def iter_offences(self, where: OffenceFilter) -> Iterator[OffenceEntry]:
        """Yield offences, oldest first, in bounded memory."""


class OffenceBookPort(Protocol):
    """The offences of the ledger."""

    def iter_offences(self, where: OffenceFilter) -> Iterator[OffenceEntry]:
        """Yield offences, oldest first, in bounded memory."""

    def by_id(self, offence_id: int) -> OffenceEntry | None:
        """Return one offence."""

    def add_adjustment(
        self, offence_id: int, kind: AdjustmentKind, *, by: str, reason: str, at: datetime
    ) -> OffenceEntry:
        """Record a waiver, appeal or appeal decision."""

    def totals_by_person(self, where: OffenceFilter) -> list[FineTotal]:
        """Return what each person owes."""

    def totals_by_department(self, where: OffenceFilter) -> list[FineTotal]:
        """Return what each department owes."""

    def fund_balance(self, where: OffenceFilter) -> Decimal:
        """Return the fines not excused: the staff fund."""

    def open_cuts(self, since: datetime) -> list[OffenceEntry]:
        """Return offences whose ordered hangup has no known ending."""

    def latest(self, where: OffenceFilter, *, limit: int, offset: int = 0) -> list[OffenceEntry]:
        """Return a page of offences, newest first."""

    def count(self, where: OffenceFilter = ...) -> int:
        """Return how many offences match (the outcome condition aside)."""


class RegisterBookPort(Protocol):
    """The long-distance register."""

    def fill(
        self,
        entry_id: int,
        *,
        subject: str,
        outcome: str,
        by: str,
        at: datetime,
        callee_name: str = "",
    ) -> RegisterEntry:
        """Write the subject and outcome into an entry."""

    def entries(
        self,
        start: datetime,
        end: datetime,
        *,
        site: str | None = None,
        department: str | None = None,
        person: str | None = None,
    ) -> list[RegisterEntry]:
        """Return the entries of [start, end) (of one department, or one caller)."""

    def by_id(self, entry_id: int) -> RegisterEntry | None:
        """Return one entry."""

    def iter_entries(
        self, start: datetime, end: datetime, *, site: str | None = None
    ) -> Iterator[RegisterEntry]:
        """Yield the entries of [start, end), a page at a time."""

    def unfilled(
        self, older_than: datetime, *, since: datetime | None = None
    ) -> list[RegisterEntry]:
        """Return entries nobody filled in."""


class CallLogPort(Protocol):
    """The calls of the ledger."""

    def iter_calls(
        self,
        *,
        person: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        site: str | None = None,
    ) -> Iterator[CallSummary]:
        """Yield stored calls, oldest first, in bounded memory."""


class LockBookPort(Protocol):
    """Velocity locks as the ledger keeps them."""

    def entries(self, *, site: str | None = None, since: datetime | None = None) -> list[LockEntry]:
        """Return locks (of ``site``, still running at ``since``) with their lifts."""

    def get(self, lock_ref: str) -> LockEntry | None:
        """Return one lock by its id or its 编号, if the ledger has it."""

    def lift(self, lock_ref: str, *, by: str, at: datetime, reason: str) -> LockEntry:
        """End a lock (named by its id or its 编号) early; return it as it now stands."""


class RotaStore(Protocol):
    """Where the site's duty rota is kept (the rota file the policy names)."""

    @property
    def path(self) -> Path:
        """The file."""

    def load(self, timezone: ZoneInfo) -> Rota:
        """Read the rota."""

    def save(self, rota: Rota) -> None:
        """Write the rota (atomically)."""


# -- the console ------------------------------------------------------------------------------


class PasswordHasherPort(Protocol):
    """Hashes and checks console passwords (argon2 in the adapter)."""

    def hash(self, password: str) -> str:
        """Return a salted hash of ``password``."""

    def verify(self, password_hash: str, password: str) -> bool:
        """Tell whether ``password`` matches ``password_hash``."""


class UserBookPort(Protocol):
    """Console accounts, kept as events in the ledger."""

    def record(
        self,
        username: str,
        kind: AccountEvent,
        *,
        by: str,
        at: datetime,
        role: str = "",
        person_id: str = "",
        display_name: str = "",
        password_hash: str = "",
        reason: str = "",
    ) -> ConsoleUser:
        """Append an account event; return the account as it now stands."""

    def get(self, username: str) -> ConsoleUser | None:
        """Return one account."""

    def all(self) -> list[ConsoleUser]:
        """Return every account."""


class ApprovalRequestBookPort(Protocol):
    """Requests for prior approval and their answers."""

    def submit(self, request: ApprovalRequest) -> ApprovalRequest:
        """Store a new request."""

    def answer(
        self,
        request_id: str,
        state: RequestState,
        *,
        by: str,
        at: datetime,
        reason: str = "",
        approval_id: str = "",
    ) -> ApprovalRequest:
        """Record the answer to a pending request."""

    def get(self, request_id: str) -> ApprovalRequest | None:
        """Return one request."""

    def all(
        self, *, department: str | None = None, person: str | None = None
    ) -> list[ApprovalRequest]:
        """Return requests, newest first."""


class SignOffBookPort(Protocol):
    """The general manager's monthly sign-offs."""

    def sign(self, sign_off: SignOff) -> SignOff:
        """Record a sign-off (once per month and report)."""

    def of_month(self, month: str) -> list[SignOff]:
        """Return a month's sign-offs."""


class AuditTrailPort(Protocol):
    """The console's audit trail."""

    def record(
        self, *, at: datetime, actor: str, role: str, action: str, target: str, detail: str
    ) -> None:
        """Append one line."""

    def recent(self, limit: int = 200, *, actor: str | None = None) -> list[AuditEntry]:
        """Return the newest lines, newest first."""


class DecisionCountsPort(Protocol):
    """Counts of stored verdicts."""

    def counts(
        self, start: datetime, end: datetime, *, site: str | None = None
    ) -> list[tuple[str, str, bool, int]]:
        """Return (number class, verdict, by approval, count) for verdicts in [start, end)."""


class SetAsidePort(Protocol):
    """The journal entries the database refused (``pbxguard ledger set-aside``)."""

    def entries(self) -> list[dict[str, Any]]:
        """Return them, oldest first."""

    def replay(self) -> tuple[int, int]:
        """Try writing them again; return (written, still failing)."""
