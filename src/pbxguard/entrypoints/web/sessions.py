"""Console sessions: random tokens in an HttpOnly, SameSite=Strict cookie, kept in memory.

The cookie holds only a random token; the server keeps a hash of it with the account, the
session's CSRF token and its expiry. A restart signs everybody out. A disabled account's
sessions end at its next request (the account is read again on every request).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

COOKIE = "pbxguard_session"
LOGIN_COOKIE = "pbxguard_login"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    """Compare two secrets in constant time."""
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass(slots=True)
class Session:
    """One signed-in browser or API client."""

    username: str
    csrf: str
    expires: datetime


class SessionStore:
    """Sessions by the hash of their token."""

    def __init__(self, lifetime: timedelta) -> None:
        self._lifetime = lifetime
        self._sessions: dict[str, Session] = {}

    def open(self, username: str, now: datetime) -> tuple[str, Session]:
        """Start a session; return its token (for the cookie) and the session."""
        self._expire(now)
        token = secrets.token_urlsafe(32)
        session = Session(username, secrets.token_urlsafe(32), now + self._lifetime)
        self._sessions[_digest(token)] = session
        return token, session

    def get(self, token: str | None, now: datetime) -> Session | None:
        """Return the live session of ``token``, sliding its expiry."""
        if not token or len(token) > 128:
            return None
        key = _digest(token)
        session = self._sessions.get(key)
        if session is None:
            return None
        if session.expires <= now:
            del self._sessions[key]
            return None
        session.expires = now + self._lifetime
        return session

    def close(self, token: str | None) -> None:
        """End the session of ``token``."""
        if token:
            self._sessions.pop(_digest(token), None)

    def _expire(self, now: datetime) -> None:
        for key in [k for k, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[key]

    def __len__(self) -> int:
        return len(self._sessions)
