"""The console's pages: server-rendered HTML and plain forms (no JavaScript).

Every form carries the session's CSRF token; every change answers with a redirect to the page
it came from (post/redirect/get).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from pbxguard.app import approval_requests, overview, reports, review
from pbxguard.app.access import NewUser, offence_for, require
from pbxguard.app.ledger import export_offences, ledger_page, offence_filter, visible_calls
from pbxguard.app.rota import day_of_duty
from pbxguard.domain.access import ConsoleRole, Permission, Scope, SignedReport
from pbxguard.domain.approvals import APPROVABLE_CLASSES
from pbxguard.domain.calendars import TimeWindow
from pbxguard.domain.entries import AdjustmentKind
from pbxguard.domain.records import Outcome
from pbxguard.domain.register import FillState
from pbxguard.entrypoints.render import offence_row, rows_of
from pbxguard.entrypoints.web import charts, exports, views
from pbxguard.entrypoints.web.app import (
    Caller,
    caller_of,
    check_csrf,
    cookie_secure,
    lang_of,
    new_login_token,
    render,
    set_session_cookie,
    start_session,
    web_of,
)
from pbxguard.entrypoints.web.changes import ConsoleChanges, changes_of, site_time
from pbxguard.entrypoints.web.i18n import word
from pbxguard.entrypoints.web.sessions import COOKIE, LOGIN_COOKIE, same
from pbxguard.errors import NotPermitted, RequestError

router = APIRouter(include_in_schema=False)

Text = Annotated[str, Form(max_length=500)]
OptionalText = Annotated[str, Form(max_length=500)]
Csrf = Annotated[str, Form(max_length=200)]
PAGE = 100


def parse_hours(text: str) -> TimeWindow:
    """Return the window of ``HH:MM-HH:MM`` (24:00 for midnight)."""
    try:
        start, end = text.split("-")
        first = time.fromisoformat(start)
        last = time(0, 0) if end == "24:00" else time.fromisoformat(end)
    except ValueError as error:
        raise RequestError(f"时段应为 HH:MM-HH:MM — hours {text!r} is not HH:MM-HH:MM") from error
    return TimeWindow(first, last)


def _back(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def _when(changes: ConsoleChanges, text: str, what: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as error:
        raise RequestError(f"{what} 不是时间 — {what} {text!r} is not a date and time") from error
    return site_time(value, changes.policy.timezone)


# -- signing in -------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> Response:
    token = new_login_token()
    response = render(request, "login.html", {"caller": None, "token": token, "message": ""})
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=cookie_secure(request, web_of(request).settings),
        max_age=1800,
    )
    return response


@router.post("/login")
def login(
    request: Request,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=256)],
    csrf: Csrf = "",
) -> Response:
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not csrf or not same(expected, csrf):
        return render(
            request,
            "login.html",
            {"caller": None, "token": expected, "message": "表单已过期 — reload and try again"},
            status=403,
        )
    try:
        _, token, _ = start_session(request, username.strip(), password)
    except NotPermitted as error:
        return render(
            request,
            "login.html",
            {"caller": None, "token": expected, "message": str(error)},
            status=401,
        )
    response = _back("/")
    set_session_cookie(request, response, token)
    response.delete_cookie(LOGIN_COOKIE)
    return response


@router.post("/logout")
def logout(request: Request, csrf: Csrf = "") -> Response:
    caller = caller_of(request)
    check_csrf(caller, csrf)
    web_of(request).sessions.close(caller.token)
    response = _back("/login")
    response.delete_cookie(COOKIE)
    return response


# -- overview ---------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def overview_page(request: Request) -> Response:
    caller = caller_of(request)
    console = web_of(request).console
    policy = console.policy()
    now = console.clock.now()
    zone = policy.timezone
    lang = lang_of(request)
    context: dict[str, Any] = {"caller": caller, "page": "overview"}
    # Today's counts are the whole site's: only roles that see every department get them.
    if caller.may(Permission.VIEW_LIVE):
        context["today"] = overview.today_decisions(console.decisions, policy, now)
        context["health"] = console.live.health()
        context["alerts"] = [views.alert(a, zone, lang) for a in console.live.open_alerts()]
        context["lines"] = [views.line(item, zone) for item in console.live.lines()]
        context["duty"] = [
            {
                "line": s.line,
                "person": s.person_name or s.person_id,
                "until": views.local(s.end, zone),
            }
            for s in overview.on_duty_now(policy, now)
        ]
    return render(request, "overview.html", context)


# -- the ledger -------------------------------------------------------------------------------


def _filters(
    request: Request,
    person: str | None,
    department: str | None,
    month: str | None,
    rule: str | None,
    outcome: str | None,
) -> Any:
    return offence_filter(
        web_of(request).console.policy(),
        person=person or None,
        department=department or None,
        month=month or None,
        rule=rule or None,
        outcome=outcome or None,
    )


Filter = Annotated[str | None, Query(max_length=64)]


@router.get("/ledger", response_class=HTMLResponse)
def ledger(
    request: Request,
    person: Filter = None,
    department: Filter = None,
    month: Annotated[str | None, Query(max_length=7)] = None,
    rule: Filter = None,
    outcome: Filter = None,
    page: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> Response:
    caller = caller_of(request)
    console = web_of(request).console
    zone = console.policy().timezone
    where = _filters(request, person, department, month, rule, outcome)
    entries, count = ledger_page(
        console.offences, caller.viewer, where, limit=PAGE, offset=page * PAGE
    )
    query = {
        "person": person or "",
        "department": department or "",
        "month": month or "",
        "rule": rule or "",
        "outcome": outcome or "",
    }
    calls = []
    if caller.viewer.scope is Scope.PERSON:
        month_shown = month or review.current_month(console.policy(), console.clock.now())
        calls = [
            views.call(c, zone)
            for c in visible_calls(
                console.calls, caller.viewer, console.policy(), month_shown, limit=PAGE
            )
        ]
    return render(
        request,
        "ledger.html",
        {
            "caller": caller,
            "calls": calls,
            "page": "ledger",
            "rows": [offence_row(e, zone) for e in entries],
            "count": count,
            "pageno": page,
            "pages": (count + PAGE - 1) // PAGE,
            "query": query,
            "outcomes": [o.value for o in Outcome],
        },
    )


def export_response(
    request: Request, caller: Caller, where: Any, kind: str, month: str | None
) -> StreamingResponse:
    """Stream the offences ``caller`` may see as CSV or Excel."""
    console = web_of(request).console
    policy = console.policy()
    entries = export_offences(console.offences, caller.viewer, where)
    rows = rows_of(entries, lambda e: offence_row(e, policy.timezone))
    name = f"ledger-{month or 'all'}"
    if kind == "xlsx":
        body = exports.xlsx_chunks(
            rows,
            title=f"罚款台账 Fine ledger · {month or '全部 all'} · {policy.site}",
            sheet=f"罚款台账 {month or ''}".strip(),
        )
        media = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    else:
        body = exports.csv_chunks(rows)
        media = "text/csv; charset=utf-8"
    return StreamingResponse(
        body,
        media_type=media,
        headers={
            "Content-Disposition": f'attachment; filename="{name}.{kind}"',
            "Cache-Control": "no-store",
        },
    )


@router.get("/ledger/export.{kind}")
def ledger_export(
    request: Request,
    kind: Annotated[str, Path(pattern="^(csv|xlsx)$")],
    person: Filter = None,
    department: Filter = None,
    month: Annotated[str | None, Query(max_length=7)] = None,
    rule: Filter = None,
    outcome: Filter = None,
) -> Response:
    caller = caller_of(request)
    where = _filters(request, person, department, month, rule, outcome)
    return export_response(request, caller, where, kind, month)


@router.get("/ledger/{offence_id}", response_class=HTMLResponse)
def offence_page(request: Request, offence_id: Annotated[int, Path(ge=1, le=2**62)]) -> Response:
    caller = caller_of(request)
    console = web_of(request).console
    require(caller.viewer, Permission.VIEW_LEDGER)
    entry = offence_for(console.offences, caller.viewer, offence_id)
    return render(
        request,
        "offence.html",
        {
            "caller": caller,
            "page": "ledger",
            "o": views.offence(entry, console.policy().timezone),
        },
    )


@router.post("/ledger/{offence_id}/appeal")
def offence_appeal(
    request: Request,
    offence_id: Annotated[int, Path(ge=1, le=2**62)],
    reason: Text,
    csrf: Csrf = "",
) -> Response:
    changes_of(request, csrf).lodge_appeal(offence_id, reason=reason)
    return _back(f"/ledger/{offence_id}")


@router.post("/ledger/{offence_id}/decision")
def offence_decision(
    request: Request,
    offence_id: Annotated[int, Path(ge=1, le=2**62)],
    kind: Annotated[str, Form(pattern="^(waiver|appeal_allowed|appeal_dismissed)$")],
    reason: Text,
    csrf: Csrf = "",
) -> Response:
    changes_of(request, csrf).decide(offence_id, AdjustmentKind(kind), reason=reason)
    return _back(f"/ledger/{offence_id}")


# -- approvals --------------------------------------------------------------------------------


@router.get("/approvals", response_class=HTMLResponse)
def approvals_page(
    request: Request, everything: Annotated[bool, Query(alias="all")] = False
) -> Response:
    caller = caller_of(request)
    console = web_of(request).console
    policy = console.policy()
    now = console.clock.now()
    found = approval_requests.visible_requests(console.requests, caller.viewer)
    grants = approval_requests.visible_approvals(
        console.approvals, policy, caller.viewer, now=now, everything=everything
    )
    people = sorted(
        (p for p in policy.people.values() if caller.viewer.sees_person(p.id, p.department)),
        key=lambda p: p.id,
    )
    return render(
        request,
        "approvals.html",
        {
            "caller": caller,
            "page": "approvals",
            "requests": [views.request(r, policy) for r in found],
            "grants": [views.approval(a, policy, now) for a in grants],
            "classes": sorted(c.value for c in APPROVABLE_CLASSES),
            "people": [{"id": p.id, "name": p.name} for p in people],
            "everything": everything,
            "today": now.astimezone(policy.timezone).strftime("%Y-%m-%dT%H:%M"),
            "tonight": (now.astimezone(policy.timezone) + timedelta(hours=8)).strftime(
                "%Y-%m-%dT%H:%M"
            ),
        },
    )


def _calls(text: str) -> int | None:
    if not text.strip():
        return None
    try:
        return int(text)
    except ValueError as error:
        raise RequestError(f"次数须为数字 — calls {text!r} is not a number") from error


def _ask(
    changes: ConsoleChanges,
    valid_from: str,
    valid_until: str,
    reason: str,
    number_class: str,
    prefix: str,
    calls: str,
) -> approval_requests.Ask:
    return approval_requests.Ask(
        valid_from=_when(changes, valid_from, "from"),
        valid_until=_when(changes, valid_until, "until"),
        reason=reason,
        number_class=number_class or None,
        prefix=prefix or None,
        calls=_calls(calls),
    )


@router.post("/approvals/requests")
def approval_request(
    request: Request,
    valid_from: Annotated[str, Form(max_length=40)],
    valid_until: Annotated[str, Form(max_length=40)],
    reason: Text,
    number_class: OptionalText = "",
    prefix: OptionalText = "",
    calls: OptionalText = "",
    csrf: Csrf = "",
) -> Response:
    changes = changes_of(request, csrf)
    ask = _ask(changes, valid_from, valid_until, reason, number_class, prefix, calls)
    changes.ask_approval(ask)
    return _back("/approvals")


@router.post("/approvals/requests/{request_id}/grant")
async def approval_request_grant(
    request: Request,
    request_id: Annotated[str, Path(max_length=32)],
    csrf: Csrf = "",
) -> Response:
    changes = await run_in_threadpool(changes_of, request, csrf)
    await changes.grant_request(request_id)
    return _back("/approvals")


@router.post("/approvals/requests/{request_id}/refuse")
def approval_request_refuse(
    request: Request,
    request_id: Annotated[str, Path(max_length=32)],
    reason: Text,
    csrf: Csrf = "",
) -> Response:
    changes_of(request, csrf).refuse_request(request_id, reason=reason)
    return _back("/approvals")


@router.post("/approvals/grant")
async def approval_grant(
    request: Request,
    person: Annotated[str, Form(max_length=64)],
    valid_from: Annotated[str, Form(max_length=40)],
    valid_until: Annotated[str, Form(max_length=40)],
    reason: Text,
    number_class: OptionalText = "",
    prefix: OptionalText = "",
    calls: OptionalText = "",
    csrf: Csrf = "",
) -> Response:
    changes = await run_in_threadpool(changes_of, request, csrf)
    ask = _ask(changes, valid_from, valid_until, reason, number_class, prefix, calls)
    await changes.grant_approval(person, ask)
    return _back("/approvals")


@router.post("/approvals/{approval_id}/revoke")
async def approval_revoke(
    request: Request,
    approval_id: Annotated[str, Path(max_length=32)],
    reason: Text,
    csrf: Csrf = "",
) -> Response:
    changes = await run_in_threadpool(changes_of, request, csrf)
    await changes.revoke_approval(approval_id, reason=reason)
    return _back("/approvals")


# -- the register and the month's sign-off ----------------------------------------------------


Month = Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$")]


@router.get("/register", response_class=HTMLResponse)
def register_page(request: Request, month: Month = None) -> Response:
    caller = caller_of(request)
    console = web_of(request).console
    policy = console.policy()
    now = console.clock.now()
    month = month or review.current_month(policy, now)
    seen = review.register_month(console.register, policy, caller.viewer, month, now=now)
    signed = console.signoffs.of_month(month)
    return render(
        request,
        "register.html",
        {
            "caller": caller,
            "page": "register",
            "month": month,
            "rows": [views.register_entry(e, s, policy.timezone) for e, s in seen.entries],
            "counts": {s.value: seen.count(s) for s in FillState},
            "signed": {s.report.value: views.sign_off(s, policy.timezone) for s in signed},
            "reports": [(r.value, r.label) for r in SignedReport],
        },
    )


@router.post("/register/{entry_id}/fill")
def register_fill(
    request: Request,
    entry_id: Annotated[int, Path(ge=1, le=2**62)],
    subject: Text,
    outcome: Text,
    callee_name: OptionalText = "",
    month: Annotated[str, Form(max_length=7)] = "",
    csrf: Csrf = "",
) -> Response:
    changes_of(request, csrf).fill_register(
        entry_id, subject=subject, outcome=outcome, callee_name=callee_name
    )
    return _back(f"/register?month={month}" if month else "/register")


@router.post("/register/sign")
def register_sign(
    request: Request,
    month: Annotated[str, Form(pattern=r"^\d{4}-\d{2}$")],
    report: Annotated[str, Form(pattern="^(register|charges)$")],
    note: OptionalText = "",
    csrf: Csrf = "",
) -> Response:
    changes_of(request, csrf).sign_month(month, report=report, note=note)
    return _back(f"/register?month={month}")


# -- reports ----------------------------------------------------------------------------------


@router.get("/reports", response_class=HTMLResponse)
def reports_page(request: Request, months: Annotated[int, Query(ge=1, le=36)] = 12) -> Response:
    caller = caller_of(request)
    console = web_of(request).console
    policy = console.policy()
    lang = lang_of(request)
    covered = reports.months_back(policy, console.clock.now(), months)
    found = reports.build_reports(
        console.offences, console.decisions, policy, caller.viewer, covered
    )
    departments = sorted({d for per in found.fines.values() for d in per})
    series = {d: {m: found.fines[m].get(d, 0) for m in covered} for d in departments}
    return render(
        request,
        "reports.html",
        {
            "caller": caller,
            "page": "reports",
            "months": months,
            "fines_chart": charts.grouped_bar_chart(
                word("fines_by_department", lang), covered, series
            ),
            "blocked_chart": charts.bar_chart(word("blocked_by_class", lang), found.blocked),
            "fund_chart": charts.line_chart(word("fund_balance", lang), found.fund),
            "offenders": found.offenders,
            "repeat_at": found.repeat_at,
        },
    )


# -- the rota ---------------------------------------------------------------------------------


@router.get("/rota", response_class=HTMLResponse)
def rota_page(request: Request, day: Annotated[date | None, Query()] = None) -> Response:
    caller = caller_of(request)
    require(caller.viewer, Permission.VIEW_ROTA)
    console = web_of(request).console
    policy = console.policy()
    zone = policy.timezone
    start = day or console.clock.now().astimezone(zone).date()
    monday = start - timedelta(days=start.weekday())
    week = []
    for offset in range(7):
        current = monday + timedelta(days=offset)
        slots = day_of_duty(policy, current)
        week.append(
            {
                "date": current.isoformat(),
                "slots": [
                    {
                        "line": s.line,
                        "person": s.person_name or s.person_id,
                        "start": s.start.astimezone(zone).strftime("%H:%M"),
                        "end": s.end.astimezone(zone).strftime("%H:%M")
                        if s.end.astimezone(zone).date() == current
                        else "24:00",
                        "gap": not s.person_id,
                    }
                    for s in slots
                ],
            }
        )
    return render(
        request,
        "rota.html",
        {
            "caller": caller,
            "page": "rota",
            "week": week,
            "lines": sorted(policy.rota.lines if policy.rota else ()),
            "people": sorted(policy.people),
            "editable": console.rota_store() is not None,
        },
    )


@router.post("/rota/{action}")
def rota_change(
    request: Request,
    action: Annotated[str, Path(pattern="^(add|remove)$")],
    line: Annotated[str, Form(max_length=64)],
    person: Annotated[str, Form(max_length=64)],
    weekday: Annotated[int, Form(ge=1, le=7)],
    hours: Annotated[str, Form(max_length=16)],
    csrf: Csrf = "",
) -> Response:
    changes = changes_of(request, csrf)
    changes.edit_rota(line, person, weekday, parse_hours(hours), add=action == "add")
    return _back("/rota")


# -- administration ---------------------------------------------------------------------------


@router.get("/admin", response_class=HTMLResponse)
def admin_page(request: Request) -> Response:
    caller = caller_of(request)
    console = web_of(request).console
    zone = console.policy().timezone
    if not (caller.may(Permission.MANAGE_USERS) or caller.may(Permission.VIEW_AUDIT)):
        raise NotPermitted("无权访问管理页 — administrators and auditors only")
    context: dict[str, Any] = {"caller": caller, "page": "admin"}
    context["audit"] = [views.audit(a, zone) for a in console.trail.recent(100)]
    if caller.may(Permission.MANAGE_USERS):
        context["users"] = [views.user(u, zone) for u in console.users.all()]
        context["roles"] = [r.value for r in ConsoleRole]
        status = console.policy_status()
        context["policy"] = {
            "file": status.file,
            "version": status.version,
            "loaded_at": views.local(status.loaded_at, zone),
            "error": status.error,
        }
        context["set_aside"] = console.set_aside.entries()
    return render(request, "admin.html", context)


@router.post("/admin/users")
def admin_add_user(
    request: Request,
    username: Annotated[str, Form(max_length=32)],
    password: Annotated[str, Form(max_length=256)],
    role: Annotated[str, Form(max_length=32)],
    person_id: Annotated[str, Form(max_length=64)] = "",
    display_name: Annotated[str, Form(max_length=64)] = "",
    csrf: Csrf = "",
) -> Response:
    changes = changes_of(request, csrf)
    changes.create_account(NewUser(username, password, role, person_id, display_name))
    return _back("/admin")


@router.post("/admin/users/{username}/{action}")
def admin_user_action(
    request: Request,
    username: Annotated[str, Path(max_length=32)],
    action: Annotated[str, Path(pattern="^(disable|enable|password|role)$")],
    password: Annotated[str, Form(max_length=256)] = "",
    role: Annotated[str, Form(max_length=32)] = "",
    person_id: Annotated[str, Form(max_length=64)] = "",
    csrf: Csrf = "",
) -> Response:
    changes = changes_of(request, csrf)
    if action in ("disable", "enable"):
        changes.set_account_disabled(username, disabled=action == "disable")
    elif action == "password":
        changes.reset_password(username, password=password)
    else:
        changes.assign_role(username, role=role, person_id=person_id)
    return _back("/admin")


@router.post("/admin/set-aside/replay")
def admin_replay(request: Request, csrf: Csrf = "") -> Response:
    changes_of(request, csrf).replay_set_aside()
    return _back("/admin")
