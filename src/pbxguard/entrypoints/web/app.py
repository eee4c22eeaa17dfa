"""The console's ASGI application: sign-in, sessions, CSRF, errors, health and metrics.

Handlers are thin: who is asking (the session's account, as a `Viewer`), one use case of
`pbxguard.app`, a page or a JSON answer. The project's errors become HTTP statuses here and
nowhere else: `NotFound` 404 (also for what lies outside the viewer's scope), `NotPermitted`
403, other refused requests 400, a ledger that is down 503. Ledger work runs in worker threads
(FastAPI runs plain ``def`` handlers there), never on the event loop the guard shares.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from pbxguard.adapters.settings import ConsoleSettings
from pbxguard.app.access import SignIn, sign_in, viewer_of
from pbxguard.app.console import Console
from pbxguard.domain.access import ConsoleRole, ConsoleUser, Permission, Viewer, may
from pbxguard.entrypoints.web import metrics
from pbxguard.entrypoints.web.i18n import LANGUAGES, word
from pbxguard.entrypoints.web.sessions import COOKIE, Session, SessionStore, same
from pbxguard.errors import (
    ConfigError,
    LedgerConflict,
    LedgerError,
    LedgerUnavailable,
    NotFound,
    NotPermitted,
    PbxGuardError,
    RequestError,
)

log = structlog.get_logger(__name__)

HERE = Path(__file__).parent
API = "/api/v1"
LANG_COOKIE = "pbxguard_lang"


class SignInNeeded(Exception):
    """The request needs a signed-in account."""


class CsrfRefused(Exception):
    """A change came without the session's CSRF token."""


@dataclass(slots=True)
class Caller:
    """A signed-in request: its account as a viewer, its session."""

    viewer: Viewer
    session: Session
    token: str

    def may(self, permission: Permission) -> bool:
        """Tell whether the caller's role holds ``permission``."""
        return may(self.viewer.role, permission)


@dataclass(slots=True)
class Web:
    """What every handler reaches through ``request.app.state.web``."""

    console: Console
    sessions: SessionStore
    settings: ConsoleSettings
    templates: Jinja2Templates


def web_of(request: Request) -> Web:
    """Return the console's state for a request."""
    found: Web = request.app.state.web
    return found


def lang_of(request: Request) -> str:
    """Return the language of a request: ``?lang=`` first, then the cookie, else Chinese."""
    wanted = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE) or "zh"
    return wanted if wanted in LANGUAGES else "zh"


def caller_of(request: Request) -> Caller:
    """Return who is asking.

    Raises:
        SignInNeeded: no live session, or its account is gone or disabled.
    """
    web = web_of(request)
    token = request.cookies.get(COOKIE)
    now = web.console.clock.now()
    session = web.sessions.get(token, now)
    if session is None or token is None:
        raise SignInNeeded
    user = web.console.users.get(session.username)
    if user is None or user.disabled:
        web.sessions.close(token)
        raise SignInNeeded
    if user.role is ConsoleRole.STAFF and not web.console.staff_enabled:
        raise SignInNeeded
    return Caller(viewer_of(user, web.console.policy()), session, token)


def check_csrf(caller: Caller, supplied: str | None) -> None:
    """Refuse a change whose CSRF token is not the session's.

    Raises:
        CsrfRefused: missing or wrong.
    """
    if not supplied or not same(supplied, caller.session.csrf):
        raise CsrfRefused


def cookie_secure(request: Request, settings: ConsoleSettings) -> bool:
    """Tell whether cookies get the Secure flag for this request."""
    if settings.secure_cookies == "always":
        return True
    if settings.secure_cookies == "never":
        return False
    return request.url.scheme == "https"


def start_session(
    request: Request, username: str, password: str
) -> tuple[ConsoleUser, str, Session]:
    """Sign ``username`` in from the request's client; return the account, token and session.

    Raises:
        NotPermitted: the sign-in is refused (see `pbxguard.app.access.sign_in`), or the
            account is staff where staff accounts are not enabled.
    """
    web = web_of(request)
    console = web.console
    now = console.clock.now()
    client = request.client.host if request.client else "unknown"
    user = sign_in(
        console.users,
        console.passwords,
        console.throttle,
        console.trail,
        SignIn(username, password, client),
        now=now,
    )
    if user.role is ConsoleRole.STAFF and not console.staff_enabled:
        raise NotPermitted("员工账户未启用 — staff accounts are not enabled at this site")
    token, session = web.sessions.open(user.username, now)
    return user, token, session


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    """Give ``response`` the session cookie of ``token``."""
    settings = web_of(request).settings
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=cookie_secure(request, settings),
        max_age=int(settings.session_hours * 3600),
    )


def _status(error: PbxGuardError) -> int:
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, NotPermitted):
        return 403
    if isinstance(error, LedgerUnavailable):
        return 503
    if isinstance(error, LedgerConflict):
        return 409
    if isinstance(error, RequestError | ConfigError):
        return 400
    if isinstance(error, LedgerError):
        return 500
    return 400


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith(API) or request.url.path in ("/healthz", "/metrics")


def render(
    request: Request, template: str, context: dict[str, Any], *, status: int = 200
) -> HTMLResponse:
    """Render a page with what every page needs (language, caller, navigation)."""
    web = web_of(request)
    lang = lang_of(request)
    caller: Caller | None = context.get("caller")
    response = web.templates.TemplateResponse(
        request,
        template,
        {
            "lang": lang,
            "t": lambda key: word(key, lang),
            "P": Permission,
            "site": web.console.policy().site,
            **context,
        },
        status_code=status,
    )
    if request.query_params.get("lang") in LANGUAGES:
        response.set_cookie(
            LANG_COOKIE, lang, httponly=True, samesite="strict", max_age=3600 * 24 * 365
        )
    if caller is not None:
        response.headers["Cache-Control"] = "no-store"
    return response


def create_app(console: Console, settings: ConsoleSettings | None = None) -> FastAPI:
    """Build the console's application over ``console``."""
    settings = settings or ConsoleSettings()
    application = FastAPI(
        title="pbxguard console API",
        version="1",
        description="审计与批准控制台 — the audit and approval console of pbxguard.",
        docs_url=None,
        redoc_url=None,
        openapi_url=f"{API}/openapi.json",
    )
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.autoescape = True
    application.state.web = Web(
        console=console,
        sessions=SessionStore(timedelta(hours=settings.session_hours)),
        settings=settings,
        templates=templates,
    )
    application.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @application.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        headers = response.headers
        headers.setdefault(
            "Content-Security-Policy",
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'",
        )
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "no-referrer")
        headers.setdefault("X-Frame-Options", "DENY")
        return response

    @application.exception_handler(SignInNeeded)
    async def sign_in_needed(request: Request, _error: SignInNeeded) -> Any:
        if _wants_json(request):
            return JSONResponse(
                {"error": "未登录 — sign in first"},
                status_code=401,
                headers={"WWW-Authenticate": "Cookie"},
            )
        return RedirectResponse("/login", status_code=303)

    @application.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, _error: CsrfRefused) -> Any:
        message = "CSRF 校验失败 — the form is stale or forged; reload the page"
        if _wants_json(request):
            return JSONResponse({"error": message}, status_code=403)
        return PlainTextResponse(message, status_code=403)

    @application.exception_handler(PbxGuardError)
    async def refused(request: Request, error: PbxGuardError) -> Any:
        status = _status(error)
        if status >= 500:
            log.error("console.request_failed", path=request.url.path, error=str(error))
        if _wants_json(request):
            return JSONResponse({"error": str(error)}, status_code=status)
        caller = None
        try:
            caller = caller_of(request)
        except SignInNeeded:
            return RedirectResponse("/login", status_code=303)
        return render(
            request, "error.html", {"caller": caller, "message": str(error)}, status=status
        )

    @application.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> Any:
        problems = [
            {"where": ".".join(str(p) for p in e.get("loc", ())), "problem": str(e.get("msg"))}
            for e in error.errors()
        ]
        if _wants_json(request):
            return JSONResponse(
                {"error": "请求无效 — invalid request", "problems": problems}, status_code=422
            )
        text = "; ".join(f"{p['where']}: {p['problem']}" for p in problems)
        return PlainTextResponse(f"请求无效 invalid request: {text}", status_code=422)

    @application.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Any:
        if _wants_json(request):
            return JSONResponse({"error": str(error.detail)}, status_code=error.status_code)
        return PlainTextResponse(str(error.detail), status_code=error.status_code)

    @application.get("/healthz", include_in_schema=False)
    def healthz(request: Request) -> JSONResponse:
        console = web_of(request).console
        health = console.live.health()
        body = {
            "live": True,
            "ready": health.ready,
            "standalone": not health.live,
            "ami": health.ami_connected,
            "fastagi": health.fastagi_listening,
            "ledger": health.ledger_writable,
            "journal_pending": health.journal_pending,
            "broker": health.broker_connected,
        }
        return JSONResponse(body, status_code=200 if health.ready else 503)

    @application.get("/metrics", include_in_schema=False)
    def metrics_text(request: Request) -> PlainTextResponse:
        console = web_of(request).console
        return PlainTextResponse(
            metrics.exposition(console.live.counters()),
            media_type="text/plain; version=0.0.4; charset=utf-8",
        )

    from pbxguard.entrypoints.web import api, pages  # noqa: PLC0415 - they import this module

    application.include_router(pages.router)
    application.include_router(api.router, prefix=API)
    return application


def new_login_token() -> str:
    """Return a fresh token for the sign-in form's double-submit cookie."""
    return secrets.token_urlsafe(24)
