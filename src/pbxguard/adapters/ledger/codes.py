"""Authorization codes: kept only as Argon2 hashes; uses, failures and revocations as events.

A code lets a caller unlock a class at the phone on its owner's permissions (FastAGI verdict
``pin``). The ledger never holds the digits: each code is an Argon2id hash, and checking a code
costs one verification per live code (pass the likely owner to check theirs first). A one-time
code is spent by its use, a revoked code by its revocation: both write a row whose unique
``consumed_code_id`` lets it happen once, even when two checks race.

Wrong codes are events too, counted per extension and per phone owner across calls: the PIN
route's lockout (`pbxguard.domain.codes`) is rebuilt from them after a restart.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import func, or_, select

from pbxguard.adapters.ledger.database import LedgerDatabase, LedgerSession, aware
from pbxguard.adapters.ledger.schema import authorization_codes, code_events
from pbxguard.domain.entries import CodeInfo
from pbxguard.domain.records import CallRef, CodeFailure
from pbxguard.errors import AuthorizationCodeError, LedgerConflict, LedgerError

_log = structlog.get_logger(__name__)

USE = "use"
FAILURE = "failure"
REVOKE = "revoke"
_DIGITS = re.compile(r"^[0-9]+$")


def code_hasher() -> PasswordHasher:
    """Return the hasher for authorization codes: Argon2id, cheap enough for the dialplan.

    A code is checked against every live code while the caller waits and Asterisk gives the
    FastAGI request about two seconds; argon2-cffi's defaults cost ~150 ms a check here, so a
    site with ten live codes would time out. One pass over 8 MiB costs ~4 ms. A 4-12 digit code
    cannot resist an offline search whatever the cost: the ledger database must stay private.
    Hashes made with other parameters still verify (Argon2 stores them in the hash).
    """
    return PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)


@dataclass(frozen=True, slots=True)
class _Candidate:
    id: int
    person_id: str
    one_time: bool
    code_hash: str


def _matching(hasher: PasswordHasher, code: str, candidates: Sequence[_Candidate]) -> int:
    for index, candidate in enumerate(candidates):
        try:
            if hasher.verify(candidate.code_hash, code):
                return index
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            continue
    return -1


def _event(kind: str, *, at: datetime, **fields: Any) -> dict[str, Any]:
    row = {
        "kind": kind,
        "code_id": None,
        "consumed_code_id": None,
        "at": at,
        "extension": "",
        "person_id": "",
        "linkedid": "",
        "reason": "",
        "key": None,
    }
    row.update(fields)
    return row


def record_failures(session: LedgerSession, failures: Sequence[CodeFailure]) -> int:
    """Store wrong codes (once per key); return how many were new."""
    done = session.existing("code_events", "key", [f.key for f in failures])
    rows: list[dict[str, Any]] = []
    for failure in failures:
        if failure.key in done:
            continue
        done.add(failure.key)
        rows.append(
            _event(
                FAILURE,
                at=aware(failure.at, "failure time"),
                extension=failure.extension,
                person_id=failure.person_id,
                linkedid=failure.call.linkedid if failure.call else "",
                reason=failure.reason,
                key=failure.key,
            )
        )
    session.append("code_events", rows, ids=False)
    return len(rows)


class CodeBook:
    """The authorization codes of the ledger."""

    def __init__(
        self,
        database: LedgerDatabase,
        *,
        hasher: PasswordHasher | None = None,
        min_digits: int = 4,
    ) -> None:
        self._db = database
        self._hasher = hasher or code_hasher()
        self._min_digits = min_digits

    def _valid(self, code: str) -> bool:
        return bool(_DIGITS.match(code)) and len(code) >= self._min_digits

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
        """Store a code for ``person_id`` as an Argon2 hash; return its id.

        Raises:
            AuthorizationCodeError: the code is too short or not digits, already expired, has
                no owner, or is the same as another code still in force.
        """
        aware(at, "issue time")
        if not self._valid(code):
            raise AuthorizationCodeError(
                f"授权码至少 {self._min_digits} 位数字 — an authorization code must be at least "
                f"{self._min_digits} digits"
            )
        if expires_at is not None and aware(expires_at, "expiry") <= at:
            raise AuthorizationCodeError("an authorization code cannot expire before it is issued")
        if not person_id:
            raise AuthorizationCodeError("an authorization code belongs to a person")
        if _matching(self._hasher, code, self._live(at)) >= 0:
            raise AuthorizationCodeError(
                "该授权码已在使用 — that code is already in force; choose another"
            )
        code_hash = self._hasher.hash(code)
        with self._db.write() as session:
            [code_id] = session.append(
                "authorization_codes",
                [
                    {
                        "person_id": person_id,
                        "code_hash": code_hash,
                        "one_time": one_time,
                        "expires_at": expires_at,
                        "created_by": by,
                        "created_at": at,
                    }
                ],
            )
        _log.info("authorization_code_issued", code_id=code_id, person_id=person_id, by=by)
        return code_id

    def check(
        self,
        code: str,
        now: datetime,
        *,
        person_id: str | None = None,
        extension: str = "",
        call: CallRef | None = None,
    ) -> str | None:
        """Return the person a code belongs to, or None if it is not valid now.

        A one-time code is spent by a successful check; a used, revoked or expired code fails.
        """
        aware(now, "now")
        if not self._valid(code):
            return None
        candidates = self._live(now, person_id=person_id)
        index = _matching(self._hasher, code, candidates)
        if index < 0:
            return None
        found = candidates[index]
        try:
            with self._db.write() as session:
                session.append(
                    "code_events",
                    [
                        _event(
                            USE,
                            at=now,
                            code_id=found.id,
                            consumed_code_id=found.id if found.one_time else None,
                            extension=extension,
                            person_id=found.person_id,
                            linkedid=call.linkedid if call else "",
                        )
                    ],
                )
        except LedgerConflict:
            return None  # another check spent the one-time code between our read and write
        _log.info("authorization_code_used", code_id=found.id, person_id=found.person_id)
        return found.person_id

    def _live(self, now: datetime, *, person_id: str | None = None) -> list[_Candidate]:
        c = authorization_codes.c
        consumed = select(code_events.c.consumed_code_id).where(
            code_events.c.consumed_code_id.is_not(None)
        )
        query = (
            select(c.id, c.person_id, c.one_time, c.code_hash)
            .where(
                c.created_at <= now,
                or_(c.expires_at.is_(None), c.expires_at > now),
                c.id.not_in(consumed),
            )
            .order_by(c.id)
        )
        if person_id is not None:
            query = query.where(c.person_id == person_id)
        with self._db.read() as session:
            rows = list(session.execute(query))
        return [_Candidate(r.id, r.person_id, bool(r.one_time), r.code_hash) for r in rows]

    def record_failure(self, failure: CodeFailure) -> bool:
        """Store a wrong code (never the digits tried); return True when it was new."""
        with self._db.write() as session:
            return record_failures(session, [failure]) == 1

    def revoke(self, code_id: int, *, by: str, at: datetime, reason: str) -> CodeInfo:
        """Withdraw a code (a leaked one, a person who left): it stops working at once.

        Raises:
            LedgerError: there is no such code, or it had already stopped working.
        """
        aware(at, "revocation time")
        if not by.strip():
            raise LedgerError("a revocation needs to say who revokes the code")
        with self._db.write() as session:
            exists = session.execute(
                select(authorization_codes.c.id).where(authorization_codes.c.id == code_id)
            ).first()
            if exists is None:
                raise LedgerError(f"没有授权码 {code_id} — no authorization code {code_id}")
            spent = session.execute(
                select(code_events.c.id).where(code_events.c.consumed_code_id == code_id)
            ).first()
            if spent is not None:
                raise LedgerError(f"authorization code {code_id} had already stopped working")
            # Revoking spends the code the way its single use spends a one-time code: the
            # unique constraint then keeps every later check from finding it.
            session.append(
                "code_events",
                [
                    _event(
                        REVOKE,
                        at=at,
                        code_id=code_id,
                        consumed_code_id=code_id,
                        person_id=by,
                        reason=reason,
                    )
                ],
            )
        _log.info("authorization_code_revoked", code_id=code_id, by=by)
        [info] = [c for c in self.codes(now=at) if c.id == code_id]
        return info

    def codes(self, *, now: datetime, person: str | None = None) -> list[CodeInfo]:
        """Return the codes issued (to ``person``), oldest first, with how each one stands."""
        aware(now, "now")
        query = select(authorization_codes).order_by(authorization_codes.c.id)
        if person is not None:
            query = query.where(authorization_codes.c.person_id == person)
        with self._db.read() as session:
            rows = list(session.execute(query))
            events = list(
                session.execute(
                    select(code_events.c.code_id, code_events.c.kind).where(
                        code_events.c.code_id.is_not(None)
                    )
                )
            )
        uses: dict[int, int] = {}
        revoked: set[int] = set()
        for happening in events:
            if happening.kind == USE:
                uses[happening.code_id] = uses.get(happening.code_id, 0) + 1
            elif happening.kind == REVOKE:
                revoked.add(happening.code_id)
        found = []
        for row in rows:
            used = uses.get(row.id, 0)
            ended = ""
            if row.id in revoked:
                ended = "revoked"
            elif row.one_time and used:
                ended = "used"
            elif row.expires_at is not None and row.expires_at <= now:
                ended = "expired"
            found.append(
                CodeInfo(
                    row.id,
                    row.person_id,
                    bool(row.one_time),
                    row.created_at,
                    row.created_by,
                    row.expires_at,
                    used,
                    ended,
                )
            )
        return found

    def failures(self, *, since: datetime, extension: str | None = None) -> list[CodeFailure]:
        """Return the wrong codes typed since ``since`` (of one extension), oldest first."""
        c = code_events.c
        query = (
            select(code_events)
            .where(c.kind == FAILURE, c.at >= aware(since, "since"))
            .order_by(c.at, c.id)
        )
        if extension is not None:
            query = query.where(c.extension == extension)
        with self._db.read() as session:
            rows = list(session.execute(query))
        return [
            CodeFailure(
                key=row.key or f"row:{row.id}",
                at=row.at,
                extension=row.extension,
                person_id=row.person_id,
                call=CallRef(row.linkedid, "", "") if row.linkedid else None,
                reason=row.reason,
            )
            for row in rows
        ]

    def failure_count(self, *, extension: str, since: datetime) -> int:
        """Return how many wrong codes ``extension`` typed since ``since``."""
        c = code_events.c
        query = (
            select(func.count())
            .select_from(code_events)
            .where(c.kind == FAILURE, c.extension == extension, c.at >= aware(since, "since"))
        )
        with self._db.read() as session:
            return int(session.execute(query).scalar_one())
