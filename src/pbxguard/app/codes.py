"""Authorization codes: issue (a generated code is shown once), list, revoke.

A code lets a caller unlock a class at the phone on its owner's permissions (FastAGI verdict
``pin``). The ledger keeps only an Argon2 hash of it; a generated code is printed once.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime

from pbxguard.app.approvals import person_named
from pbxguard.app.ports import CodeBookPort
from pbxguard.domain.entries import CodeInfo
from pbxguard.domain.policy import Policy
from pbxguard.errors import AuthorizationCodeError, RequestError

_DRAWS = 5


def new_code(digits: int) -> str:
    """Return a random authorization code of ``digits`` digits."""
    return f"{secrets.randbelow(10**digits):0{digits}d}"


def issue_code(
    book: CodeBookPort,
    policy: Policy,
    *,
    person_id: str,
    by: str,
    now: datetime,
    one_time: bool = False,
    expires: datetime | None = None,
    code: str | None = None,
    draw: Callable[[int], str] = new_code,
) -> tuple[int, str]:
    """Issue a code for a person of the policy; return its id and its digits.

    A generated code that clashes with one in force is drawn again.

    Raises:
        NotFound: no such person.
        RequestError: no issuer named, or an expiry already past.
        AuthorizationCodeError: the chosen code is too short or already in force.
    """
    person = person_named(policy, person_id)
    if not by.strip():
        raise RequestError("--by must name who issues the code")
    if expires is not None and expires <= now:
        zone = policy.timezone
        raise RequestError(f"--expires {expires.astimezone(zone):%Y-%m-%d %H:%M} is already past")
    for attempt in range(1, _DRAWS + 1):
        value = code or draw(policy.code_limits.digits)
        try:
            code_id = book.issue(
                person.id, value, one_time=one_time, expires_at=expires, by=by, at=now
            )
        except AuthorizationCodeError:
            if code is not None or attempt == _DRAWS:
                raise
            continue
        return code_id, value
    raise AuthorizationCodeError("could not draw a free code; try again")  # pragma: no cover


def revoke_code(
    book: CodeBookPort, *, code_id: int, by: str, reason: str, now: datetime
) -> CodeInfo:
    """Withdraw a code at once.

    Raises:
        RequestError: no reason given.
        LedgerError: no such code, or it had already stopped working.
    """
    if not reason.strip():
        raise RequestError("--reason must say why the code is revoked")
    return book.revoke(code_id, by=by, at=now, reason=reason)
