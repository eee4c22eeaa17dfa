"""What the console changes, written once for its pages and its API.

A form and its JSON twin differ in how they read their input and in what they answer; the
change itself is the same use case of `pbxguard.app` called with the same books, the policy
in force, the caller and the time. `ConsoleChanges` holds those for one request (its caller
signed in, its CSRF token checked) and offers each change as one method. The methods that
change approvals then tell the running guard, so that a grant is usable at once; they are
coroutines that run the use case in a worker thread, since the guard is told on the event
loop. The others are plain calls, made from plain ``def`` handlers (FastAPI runs those in a
worker thread): ledger work never runs on the event loop the guard shares.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import ParamSpec, TypeVar
from zoneinfo import ZoneInfo

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from pbxguard.app import administration, appeals, approval_requests, review
from pbxguard.app.access import NewUser
from pbxguard.app.approval_requests import Ask
from pbxguard.app.approvals import GrantRequest
from pbxguard.app.console import Console
from pbxguard.domain.access import ApprovalRequest, ConsoleUser, SignOff
from pbxguard.domain.approvals import Approval
from pbxguard.domain.calendars import TimeWindow, Weekday
from pbxguard.domain.entries import AdjustmentKind, OffenceEntry, RegisterEntry
from pbxguard.domain.rota import WeeklyShift
from pbxguard.entrypoints.web.app import Caller, caller_of, check_csrf, web_of

P = ParamSpec("P")
T = TypeVar("T")


def site_time(value: datetime, zone: ZoneInfo) -> datetime:
    """Return ``value``, read in the site's timezone when it carries no offset."""
    return value if value.tzinfo is not None else value.replace(tzinfo=zone)


def changes_of(request: Request, csrf: str | None) -> ConsoleChanges:
    """Return what ``request``'s caller may change, once its CSRF token is checked.

    Raises:
        SignInNeeded: no live session.
        CsrfRefused: ``csrf`` is not the session's token.
    """
    caller = caller_of(request)
    check_csrf(caller, csrf)
    return ConsoleChanges(web_of(request).console, caller)


class ConsoleChanges:
    """The changes a signed-in caller asks of the console, one use case each."""

    def __init__(self, console: Console, caller: Caller) -> None:
        self.console = console
        self.viewer = caller.viewer
        self.policy = console.policy()

    def now(self) -> datetime:
        """Return the time now (a change takes it when it is made)."""
        return self.console.clock.now()

    async def _then_tell_guard(self, change: Callable[P, T], *args: P.args, **kw: P.kwargs) -> T:
        done = await run_in_threadpool(change, *args, **kw)
        await self.console.approvals_changed()
        return done

    # -- the ledger ---------------------------------------------------------------------------

    def lodge_appeal(self, offence_id: int, *, reason: str) -> OffenceEntry:
        """Lodge an appeal against one's own offence."""
        console = self.console
        return appeals.lodge_appeal(
            console.offences, console.trail, self.viewer, offence_id, reason=reason, now=self.now()
        )

    def decide(self, offence_id: int, kind: AdjustmentKind, *, reason: str) -> OffenceEntry:
        """Waive an offence, or allow or dismiss its appeal."""
        console = self.console
        return appeals.decide(
            console.offences,
            console.trail,
            self.viewer,
            offence_id,
            kind,
            reason=reason,
            now=self.now(),
        )

    # -- approvals ----------------------------------------------------------------------------

    def ask_approval(self, ask: Ask) -> ApprovalRequest:
        """Ask one's department head for prior approval (staff)."""
        console = self.console
        return approval_requests.request_approval(
            console.requests, console.trail, self.policy, self.viewer, ask, now=self.now()
        )

    async def grant_request(self, request_id: str) -> ApprovalRequest:
        """Grant a pending request; return it answered."""
        console = self.console
        answered, _ = await self._then_tell_guard(
            approval_requests.grant_request,
            console.requests,
            console.approvals,
            console.trail,
            self.policy,
            self.viewer,
            request_id=request_id,
            now=self.now(),
        )
        return answered

    def refuse_request(self, request_id: str, *, reason: str) -> ApprovalRequest:
        """Refuse a pending request, saying why."""
        console = self.console
        return approval_requests.refuse_request(
            console.requests,
            console.trail,
            self.policy,
            self.viewer,
            request_id,
            reason=reason,
            now=self.now(),
        )

    async def grant_approval(self, person_id: str, ask: Ask) -> Approval:
        """Grant an approval without a request, to a person of the caller's department."""
        grant = GrantRequest(
            person_id=person_id,
            approver_id=self.viewer.person_id,
            valid_from=ask.valid_from,
            valid_until=ask.valid_until,
            number_class=ask.number_class,
            prefix=ask.prefix,
            calls=ask.calls,
            reason=ask.reason,
        )
        console = self.console
        return await self._then_tell_guard(
            approval_requests.grant_directly,
            console.approvals,
            console.trail,
            self.policy,
            self.viewer,
            grant,
            now=self.now(),
        )

    async def revoke_approval(self, approval_id: str, *, reason: str) -> Approval:
        """Revoke an approval."""
        console = self.console
        return await self._then_tell_guard(
            approval_requests.revoke,
            console.approvals,
            console.trail,
            self.policy,
            self.viewer,
            approval_id,
            reason=reason,
            now=self.now(),
        )

    # -- the register and the month's sign-off ------------------------------------------------

    def fill_register(
        self, entry_id: int, *, subject: str, outcome: str, callee_name: str
    ) -> RegisterEntry:
        """Fill in a register entry (one's own; a head's department's)."""
        console = self.console
        return review.fill_own_entry(
            console.register,
            console.trail,
            self.policy,
            self.viewer,
            entry_id,
            subject=subject,
            outcome=outcome,
            callee_name=callee_name,
            now=self.now(),
        )

    def sign_month(self, month: str, *, report: str, note: str) -> SignOff:
        """Sign a month's register or charges report (the general manager)."""
        console = self.console
        return review.sign_month(
            console.signoffs,
            console.register,
            console.offences,
            console.trail,
            policy=self.policy,
            viewer=self.viewer,
            month=month,
            report=report,
            note=note,
            now=self.now(),
        )

    # -- administration -----------------------------------------------------------------------

    def edit_rota(
        self, line: str, person: str, weekday: int, hours: TimeWindow, *, add: bool
    ) -> None:
        """Add or remove a weekly shift (``weekday`` 1 is Monday) of the rota file."""
        console = self.console
        shift = WeeklyShift(line, person, Weekday(weekday - 1), hours)
        administration.edit_rota(
            console.rota_store(),
            console.trail,
            self.policy,
            self.viewer,
            shift,
            add=add,
            now=self.now(),
        )

    def create_account(self, new: NewUser) -> ConsoleUser:
        """Create an account."""
        console = self.console
        return administration.create_account(
            console.users,
            console.passwords,
            console.trail,
            self.policy,
            self.viewer,
            new=new,
            now=self.now(),
        )

    def set_account_disabled(self, username: str, *, disabled: bool) -> ConsoleUser:
        """Disable an account, or enable it again."""
        console = self.console
        return administration.set_account_disabled(
            console.users, console.trail, self.viewer, username, disabled=disabled, now=self.now()
        )

    def reset_password(self, username: str, *, password: str) -> ConsoleUser:
        """Set an account's password."""
        console = self.console
        return administration.reset_password(
            console.users,
            console.passwords,
            console.trail,
            self.viewer,
            username,
            password=password,
            now=self.now(),
        )

    def assign_role(self, username: str, *, role: str, person_id: str) -> ConsoleUser:
        """Give an account another role."""
        console = self.console
        return administration.assign_role(
            console.users,
            console.trail,
            self.policy,
            self.viewer,
            username,
            role=role,
            person_id=person_id,
            now=self.now(),
        )

    def replay_set_aside(self) -> tuple[int, int]:
        """Try the set-aside journal entries again; return (written, still failing)."""
        console = self.console
        return administration.replay_set_aside(
            console.set_aside, console.trail, self.viewer, now=self.now()
        )
