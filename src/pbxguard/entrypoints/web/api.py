"""The console's JSON API (``/api/v1``): the same use cases as the pages, for scripts.

Sign in with ``POST /api/v1/session``; the answer carries the session's CSRF token, which every
change must send back in the ``X-CSRF-Token`` header. The OpenAPI document is at
``/api/v1/openapi.json``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from pbxguard.app import approval_requests, overview, reports, review
from pbxguard.app.access import NewUser, offence_for, require
from pbxguard.app.ledger import ledger_page, offence_filter, visible_calls
from pbxguard.app.rota import day_of_duty
from pbxguard.domain.access import Permission
from pbxguard.domain.entries import AdjustmentKind
from pbxguard.domain.register import FillState
from pbxguard.entrypoints.render import offence_row
from pbxguard.entrypoints.web import views
from pbxguard.entrypoints.web.app import (
    Caller,
    caller_of,
    check_csrf,
    set_session_cookie,
    start_session,
    web_of,
)
from pbxguard.entrypoints.web.changes import ConsoleChanges, site_time
from pbxguard.entrypoints.web.pages import export_response, parse_hours
from pbxguard.entrypoints.web.sessions import COOKIE

router = APIRouter(tags=["console"])

Name = Annotated[str, Field(min_length=1, max_length=64)]
Reason = Annotated[str, Field(min_length=1, max_length=500)]
MonthText = Annotated[str, Field(pattern=r"^\d{4}-\d{2}$")]
Filter = Annotated[str | None, Query(max_length=64)]
Month = Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$")]
Id = Annotated[int, Path(ge=1, le=2**62)]
Key = Annotated[str, Path(min_length=1, max_length=32)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Credentials(_Body):
    username: Annotated[str, Field(min_length=1, max_length=64)]
    password: Annotated[str, Field(min_length=1, max_length=256)]


class AppealBody(_Body):
    reason: Reason


class DecisionBody(_Body):
    kind: Annotated[str, Field(pattern="^(waiver|appeal_allowed|appeal_dismissed)$")]
    reason: Reason


class AskBody(_Body):
    valid_from: datetime
    valid_until: datetime
    reason: Reason
    number_class: Annotated[str | None, Field(max_length=32)] = None
    prefix: Annotated[str | None, Field(max_length=32)] = None
    calls: Annotated[int | None, Field(ge=1, le=10_000)] = None


class GrantBody(AskBody):
    person: Name


class RefuseBody(_Body):
    reason: Reason


class FillBody(_Body):
    subject: Reason
    outcome: Reason
    callee_name: Annotated[str, Field(max_length=200)] = ""


class SignBody(_Body):
    month: MonthText
    report: Annotated[str, Field(pattern="^(register|charges)$")]
    note: Annotated[str, Field(max_length=500)] = ""


class ShiftBody(_Body):
    line: Name
    person: Name
    weekday: Annotated[int, Field(ge=1, le=7)]
    hours: Annotated[str, Field(pattern=r"^\d{2}:\d{2}-\d{2}:\d{2}$")]


class UserBody(_Body):
    username: Annotated[str, Field(min_length=2, max_length=32)]
    password: Annotated[str, Field(min_length=1, max_length=256)]
    role: Annotated[str, Field(max_length=32)]
    person_id: Annotated[str, Field(max_length=64)] = ""
    display_name: Annotated[str, Field(max_length=64)] = ""


class PasswordBody(_Body):
    password: Annotated[str, Field(min_length=1, max_length=256)]


class RoleBody(_Body):
    role: Annotated[str, Field(max_length=32)]
    person_id: Annotated[str, Field(max_length=64)] = ""


def reader(request: Request) -> Caller:
    """Who is asking (401 without a session)."""
    return caller_of(request)


def writer(
    request: Request,
    x_csrf_token: Annotated[str | None, Header(max_length=200)] = None,
) -> Caller:
    """Who is asking to change something (401 without a session, 403 without its token)."""
    caller = caller_of(request)
    check_csrf(caller, x_csrf_token)
    return caller


Reader = Annotated[Caller, Depends(reader)]
Writer = Annotated[Caller, Depends(writer)]


def changes(request: Request, caller: Writer) -> ConsoleChanges:
    """What the caller may change (401 without a session, 403 without its token)."""
    return ConsoleChanges(web_of(request).console, caller)


Changes = Annotated[ConsoleChanges, Depends(changes)]


def _me(caller: Caller) -> dict[str, Any]:
    viewer = caller.viewer
    return {
        "username": viewer.username,
        "role": viewer.role.value,
        "person_id": viewer.person_id,
        "department": viewer.department,
        "name": viewer.name,
        "csrf": caller.session.csrf,
    }


# -- the session ------------------------------------------------------------------------------


@router.post("/session")
def open_session(request: Request, body: Credentials) -> Response:
    """Sign in; the answer's ``csrf`` goes in the X-CSRF-Token header of every change."""
    user, token, session = start_session(request, body.username, body.password)
    response = JSONResponse(
        {"username": user.username, "role": user.role.value, "csrf": session.csrf}
    )
    set_session_cookie(request, response, token)
    return response


@router.get("/session")
def who_am_i(caller: Reader) -> dict[str, Any]:
    """Return the signed-in account."""
    return _me(caller)


@router.delete("/session")
def close_session(request: Request, caller: Writer) -> Response:
    """Sign out."""
    web_of(request).sessions.close(caller.token)
    response = JSONResponse({"signed_out": True})
    response.delete_cookie(COOKIE)
    return response


# -- overview ---------------------------------------------------------------------------------


@router.get("/overview")
def get_overview(request: Request, caller: Reader) -> dict[str, Any]:
    """Today's decisions, open alerts, protected lines, who is on duty, the guard's health."""
    console = web_of(request).console
    policy = console.policy()
    now = console.clock.now()
    zone = policy.timezone
    # Today's counts are the whole site's: only roles that see every department get them.
    require(caller.viewer, Permission.VIEW_LIVE)
    today = overview.today_decisions(console.decisions, policy, now)
    body: dict[str, Any] = {
        "today": {
            "total": today.total,
            "blocked": today.blocked,
            "allowed_by_approval": today.allowed_by_approval,
            "emergency": today.emergency,
            "blocked_by_class": today.by_class,
        }
    }
    health = console.live.health()
    body["health"] = {
        "live": health.live,
        "ready": health.ready,
        "ami_connected": health.ami_connected,
        "fastagi_listening": health.fastagi_listening,
        "ledger_writable": health.ledger_writable,
        "journal_pending": health.journal_pending,
        "broker_connected": health.broker_connected,
    }
    body["alerts"] = [views.alert(a, zone, "en") for a in console.live.open_alerts()]
    body["lines"] = [views.line(item, zone) for item in console.live.lines()]
    body["on_duty"] = [
        {"line": s.line, "person_id": s.person_id, "until": s.end.isoformat()}
        for s in overview.on_duty_now(policy, now)
    ]
    return body


# -- the ledger -------------------------------------------------------------------------------


@router.get("/offences")
def list_offences(
    request: Request,
    caller: Reader,
    person: Filter = None,
    department: Filter = None,
    month: Month = None,
    rule: Filter = None,
    outcome: Filter = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    """List offences the caller may see, newest first."""
    console = web_of(request).console
    policy = console.policy()
    where = offence_filter(
        policy, person=person, department=department, month=month, rule=rule, outcome=outcome
    )
    entries, count = ledger_page(console.offences, caller.viewer, where, limit=limit, offset=offset)
    return {"count": count, "offences": [offence_row(e, policy.timezone) for e in entries]}


@router.get("/calls")
def list_calls(
    request: Request,
    caller: Reader,
    month: Month = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    """List a month's calls the caller may see (staff: their own), oldest first."""
    console = web_of(request).console
    policy = console.policy()
    month = month or review.current_month(policy, console.clock.now())
    found = visible_calls(console.calls, caller.viewer, policy, month, limit=limit)
    return {"month": month, "calls": [views.call(c, policy.timezone) for c in found]}


@router.get("/offences/export")
def export_offences_api(
    request: Request,
    caller: Reader,
    format: Annotated[str, Query(pattern="^(csv|xlsx)$")] = "csv",
    person: Filter = None,
    department: Filter = None,
    month: Month = None,
    rule: Filter = None,
    outcome: Filter = None,
) -> Response:
    """Export the offences the caller may see (CSV with a BOM, or Excel), streamed."""
    where = offence_filter(
        web_of(request).console.policy(),
        person=person,
        department=department,
        month=month,
        rule=rule,
        outcome=outcome,
    )
    return export_response(request, caller, where, format, month)


@router.get("/offences/{offence_id}")
def get_offence(request: Request, caller: Reader, offence_id: Id) -> dict[str, Any]:
    """Return one offence with its history (404 outside the caller's scope)."""
    console = web_of(request).console
    require(caller.viewer, Permission.VIEW_LEDGER)
    entry = offence_for(console.offences, caller.viewer, offence_id)
    return views.offence(entry, console.policy().timezone)


@router.post("/offences/{offence_id}/appeal")
def appeal_offence(changes: Changes, offence_id: Id, body: AppealBody) -> dict[str, Any]:
    """Lodge an appeal against one's own offence."""
    entry = changes.lodge_appeal(offence_id, reason=body.reason)
    return views.offence(entry, changes.policy.timezone)


@router.post("/offences/{offence_id}/decision")
def decide_offence(changes: Changes, offence_id: Id, body: DecisionBody) -> dict[str, Any]:
    """Waive an offence, or allow or dismiss its appeal."""
    entry = changes.decide(offence_id, AdjustmentKind(body.kind), reason=body.reason)
    return views.offence(entry, changes.policy.timezone)


# -- approvals --------------------------------------------------------------------------------


@router.get("/approvals")
def list_approvals(
    request: Request, caller: Reader, everything: Annotated[bool, Query(alias="all")] = False
) -> dict[str, Any]:
    """List the approvals the caller may see (active and scheduled, or all)."""
    console = web_of(request).console
    policy = console.policy()
    now = console.clock.now()
    found = approval_requests.visible_approvals(
        console.approvals, policy, caller.viewer, now=now, everything=everything
    )
    return {"approvals": [views.approval(a, policy, now) for a in found]}


@router.post("/approvals")
async def grant_approval_api(changes: Changes, body: GrantBody) -> dict[str, Any]:
    """Grant an approval to a person of the caller's department."""
    approval = await changes.grant_approval(body.person, _ask(changes, body))
    return views.approval(approval, changes.policy, changes.now())


@router.post("/approvals/{approval_id}/revoke")
async def revoke_approval_api(
    changes: Changes, approval_id: Key, body: RefuseBody
) -> dict[str, Any]:
    """Revoke an approval."""
    approval = await changes.revoke_approval(approval_id, reason=body.reason)
    return views.approval(approval, changes.policy, changes.now())


def _ask(changes: ConsoleChanges, body: AskBody) -> approval_requests.Ask:
    zone = changes.policy.timezone
    return approval_requests.Ask(
        valid_from=site_time(body.valid_from, zone),
        valid_until=site_time(body.valid_until, zone),
        reason=body.reason,
        number_class=body.number_class,
        prefix=body.prefix,
        calls=body.calls,
    )


@router.get("/approval-requests")
def list_requests(request: Request, caller: Reader, pending: bool = False) -> dict[str, Any]:
    """List the approval requests the caller may see, newest first."""
    console = web_of(request).console
    found = approval_requests.visible_requests(
        console.requests, caller.viewer, pending_only=pending
    )
    return {"requests": [views.request(r, console.policy()) for r in found]}


@router.post("/approval-requests")
def ask_approval(changes: Changes, body: AskBody) -> dict[str, Any]:
    """Ask one's department head for prior approval (staff)."""
    made = changes.ask_approval(_ask(changes, body))
    return views.request(made, changes.policy)


@router.post("/approval-requests/{request_id}/grant")
async def grant_request_api(changes: Changes, request_id: Key) -> dict[str, Any]:
    """Grant a pending request."""
    answered = await changes.grant_request(request_id)
    return views.request(answered, changes.policy)


@router.post("/approval-requests/{request_id}/refuse")
def refuse_request_api(changes: Changes, request_id: Key, body: RefuseBody) -> dict[str, Any]:
    """Refuse a pending request."""
    answered = changes.refuse_request(request_id, reason=body.reason)
    return views.request(answered, changes.policy)


# -- the register and sign-offs ---------------------------------------------------------------


@router.get("/register")
def get_register(request: Request, caller: Reader, month: Month = None) -> dict[str, Any]:
    """Return a month of the register the caller may see, with each entry's state."""
    console = web_of(request).console
    policy = console.policy()
    now = console.clock.now()
    month = month or review.current_month(policy, now)
    seen = review.register_month(console.register, policy, caller.viewer, month, now=now)
    return {
        "month": month,
        "entries": [views.register_entry(e, s, policy.timezone) for e, s in seen.entries],
        "sign_offs": [views.sign_off(s, policy.timezone) for s in console.signoffs.of_month(month)],
    }


@router.post("/register/{entry_id}/fill")
def fill_register(changes: Changes, entry_id: Id, body: FillBody) -> dict[str, Any]:
    """Fill in a register entry (one's own; a head's department's)."""
    entry = changes.fill_register(
        entry_id, subject=body.subject, outcome=body.outcome, callee_name=body.callee_name
    )
    return views.register_entry(entry, FillState.FILLED, changes.policy.timezone)


@router.post("/sign-offs")
def sign_off(changes: Changes, body: SignBody) -> dict[str, Any]:
    """Sign a month's register or charges report (the general manager)."""
    signed = changes.sign_month(body.month, report=body.report, note=body.note)
    return views.sign_off(signed, changes.policy.timezone)


# -- reports ----------------------------------------------------------------------------------


@router.get("/reports")
def get_reports(
    request: Request, caller: Reader, months: Annotated[int, Query(ge=1, le=36)] = 12
) -> dict[str, Any]:
    """Fines per department per month, blocked calls by class, the fund, repeat offenders."""
    console = web_of(request).console
    policy = console.policy()
    covered = reports.months_back(policy, console.clock.now(), months)
    found = reports.build_reports(
        console.offences, console.decisions, policy, caller.viewer, covered
    )
    return {
        "months": list(found.months),
        "fines": {m: {d: str(v) for d, v in per.items()} for m, per in found.fines.items()},
        "fund": {m: str(v) for m, v in found.fund.items()},
        "blocked": found.blocked,
        "repeat_offenders": [
            {
                "person_id": o.person_id,
                "name": o.name,
                "department": o.department,
                "offences": o.offences,
                "amount": str(o.amount),
            }
            for o in found.offenders
        ],
    }


# -- the rota ---------------------------------------------------------------------------------


@router.get("/rota")
def get_rota(
    request: Request, caller: Reader, day: Annotated[date | None, Query()] = None
) -> dict[str, Any]:
    """Who holds each rota line over a day (a slot without a person is a gap)."""
    require(caller.viewer, Permission.VIEW_ROTA)
    console = web_of(request).console
    policy = console.policy()
    when = day or console.clock.now().astimezone(policy.timezone).date()
    return {
        "date": when.isoformat(),
        "slots": [
            {
                "line": s.line,
                "person_id": s.person_id,
                "start": s.start.isoformat(),
                "end": s.end.isoformat(),
                "gap": not s.person_id,
            }
            for s in day_of_duty(policy, when)
        ],
    }


@router.post("/rota/shifts")
def add_shift(changes: Changes, body: ShiftBody) -> dict[str, Any]:
    """Add a weekly shift to the rota file (administrators)."""
    return _change_shift(changes, body, add=True)


@router.post("/rota/shifts/remove")
def remove_shift(changes: Changes, body: ShiftBody) -> dict[str, Any]:
    """Remove a weekly shift from the rota file (administrators)."""
    return _change_shift(changes, body, add=False)


def _change_shift(changes: ConsoleChanges, body: ShiftBody, *, add: bool) -> dict[str, Any]:
    changes.edit_rota(body.line, body.person, body.weekday, parse_hours(body.hours), add=add)
    return {"line": body.line, "person": body.person, "added": add}


# -- administration ---------------------------------------------------------------------------


@router.get("/users")
def list_users(request: Request, caller: Reader) -> dict[str, Any]:
    """List the console's accounts (administrators)."""
    require(caller.viewer, Permission.MANAGE_USERS)
    console = web_of(request).console
    zone = console.policy().timezone
    return {"users": [views.user(u, zone) for u in console.users.all()]}


@router.post("/users")
def create_user(changes: Changes, body: UserBody) -> dict[str, Any]:
    """Create an account (administrators)."""
    new = NewUser(body.username, body.password, body.role, body.person_id, body.display_name)
    return views.user(changes.create_account(new), changes.policy.timezone)


@router.post("/users/{username}/disable")
def disable_user(changes: Changes, username: Key) -> dict[str, Any]:
    """Disable an account (administrators)."""
    user = changes.set_account_disabled(username, disabled=True)
    return views.user(user, changes.policy.timezone)


@router.post("/users/{username}/enable")
def enable_user(changes: Changes, username: Key) -> dict[str, Any]:
    """Enable an account again (administrators)."""
    user = changes.set_account_disabled(username, disabled=False)
    return views.user(user, changes.policy.timezone)


@router.post("/users/{username}/password")
def set_password(changes: Changes, username: Key, body: PasswordBody) -> dict[str, Any]:
    """Set an account's password (administrators)."""
    user = changes.reset_password(username, password=body.password)
    return views.user(user, changes.policy.timezone)


@router.post("/users/{username}/role")
def set_role(changes: Changes, username: Key, body: RoleBody) -> dict[str, Any]:
    """Give an account another role (administrators)."""
    user = changes.assign_role(username, role=body.role, person_id=body.person_id)
    return views.user(user, changes.policy.timezone)


@router.get("/policy")
def policy_status(request: Request, caller: Reader) -> dict[str, Any]:
    """The policy in force: file, version (hash), loaded at, what is wrong with the file now."""
    require(caller.viewer, Permission.VIEW_POLICY)
    console = web_of(request).console
    status = console.policy_status()
    return {
        "file": status.file,
        "version": status.version,
        "loaded_at": status.loaded_at.isoformat(),
        "error": status.error,
    }


@router.get("/set-aside")
def set_aside_entries(request: Request, caller: Reader) -> dict[str, Any]:
    """The journal entries the database refused (administrators)."""
    require(caller.viewer, Permission.REPLAY_SET_ASIDE)
    return {"entries": web_of(request).console.set_aside.entries()}


@router.post("/set-aside/replay")
def replay(changes: Changes) -> dict[str, Any]:
    """Try the set-aside entries again (administrators)."""
    written, kept = changes.replay_set_aside()
    return {"written": written, "still_failing": kept}


@router.get("/audit")
def audit_trail(
    request: Request, caller: Reader, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    """The console's audit trail, newest first (administrators and auditors)."""
    require(caller.viewer, Permission.VIEW_AUDIT)
    console = web_of(request).console
    zone = console.policy().timezone
    return {"entries": [views.audit(a, zone) for a in console.trail.recent(limit)]}
