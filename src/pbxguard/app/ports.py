"""The ports the use cases and the guard talk through; adapters implement them.

Each is a `typing.Protocol`: the adapters in ``pbxguard.adapters`` satisfy them structurally,
and tests use small hand-written fakes. The application never imports an adapter.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

from pbxguard.domain.approvals import Approval
from pbxguard.domain.channels import ChannelPlan
from pbxguard.domain.effects import ClearAlert, RaiseAlert
from pbxguard.domain.entries import (
    AdjustmentKind,
    CodeInfo,
    FineTotal,
    OffenceEntry,
    OffenceFilter,
    RegisterEntry,
)
from pbxguard.domain.policy import Policy
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
        self, start: datetime, end: datetime, *, site: str | None = None
    ) -> list[RegisterEntry]:
        """Return the entries of [start, end)."""

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


class RotaStore(Protocol):
    """Where the site's duty rota is kept (the rota file the policy names)."""

    @property
    def path(self) -> Path:
        """The file."""

    def load(self, timezone: ZoneInfo) -> Rota:
        """Read the rota."""

    def save(self, rota: Rota) -> None:
        """Write the rota (atomically)."""


class PolicySource(Protocol):
    """Loads the site's policy (and its channel plan) from wherever it is kept."""

    def load(self) -> tuple[Policy, ChannelPlan]:
        """Load and validate the policy.

        Raises:
            PolicyError: it is invalid (says which file, which line and why).
        """

    def fingerprint(self) -> Mapping[str, float]:
        """Return what tells whether the policy's files changed (their modification times)."""
