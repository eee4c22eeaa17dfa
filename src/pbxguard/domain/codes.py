"""Authorization-code guessing: lock a phone's PIN route after too many wrong codes.

A caller gets a few tries per call (the dialplan's loop), but a 6-digit code must not be
guessable across calls either. Wrong codes are counted per extension and per phone owner (whose
code is the likeliest target) over a sliding window, across calls and restarts (the ledger keeps
every failure, and the watch is rebuilt from it). Reaching the limit locks the extension's PIN
route for a while and raises an alert; while locked, the pre-dial layer refuses the code step
outright, without checking any code.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from datetime import datetime

from pbxguard.domain.effects import AlertKind, Effect, RaiseAlert, RecordCodeFailure
from pbxguard.domain.policy import CodeLimits
from pbxguard.domain.records import CodeFailure


class CodeGuard:
    """Count wrong codes across calls; say when an extension's PIN route is locked."""

    def __init__(
        self, limits: CodeLimits, *, site: str, failures: Iterable[CodeFailure] = ()
    ) -> None:
        self.limits = limits
        self._site = site
        self._by_extension: dict[str, deque[datetime]] = {}
        self._by_person: dict[str, deque[datetime]] = {}
        self._locked: dict[str, datetime] = {}
        for failure in sorted(failures, key=lambda f: f.at):
            self._count(failure)

    def locked_until(self, extension: str, now: datetime) -> datetime | None:
        """Return when the extension's PIN route unlocks, or None when it is not locked."""
        until = self._locked.get(extension)
        if until is None or until <= now:
            self._locked.pop(extension, None)
            return None
        return until

    def failed(self, failure: CodeFailure) -> list[Effect]:
        """Record a wrong code; lock the route (and alert) when it reaches the limit."""
        effects: list[Effect] = [RecordCodeFailure(failure)]
        was_locked = self.locked_until(failure.extension, failure.at) is not None
        if self._count(failure) and not was_locked:
            until = self._locked[failure.extension]
            effects.append(self._alert(failure, until))
        return effects

    def _count(self, failure: CodeFailure) -> bool:
        """Count a failure; return True when it locks the extension's route."""
        horizon = failure.at - self.limits.window
        counts = []
        for book, subject in (
            (self._by_extension, failure.extension),
            (self._by_person, failure.person_id),
        ):
            if not subject:
                continue
            times = book.setdefault(subject, deque())
            times.append(failure.at)
            while times and times[0] <= horizon:
                times.popleft()
            counts.append(len(times))
        if counts and max(counts) >= self.limits.max_failures:
            self._locked[failure.extension] = failure.at + self.limits.lockout
            return True
        return False

    def _alert(self, failure: CodeFailure, until: datetime) -> RaiseAlert:
        limits = self.limits
        minutes = int(limits.window.total_seconds() // 60)
        lock = int(limits.lockout.total_seconds() // 60)
        return RaiseAlert(
            key=f"{self._site}:code-guessing:{failure.extension}:{failure.at.isoformat()}",
            kind=AlertKind.CODE_GUESSING,
            rule_id="",
            extension=failure.extension,
            duty_line="",
            name=failure.extension,
            since=failure.at,
            at=failure.at,
            repeat=0,
            person_id=failure.person_id,
            person_name="",
            message_zh=(
                f"分机 {failure.extension} 在{minutes}分钟内授权码错误达{limits.max_failures}次，"
                f"授权码通道锁定{lock}分钟"
            ),
            message_en=(
                f"extension {failure.extension} typed {limits.max_failures} wrong authorization "
                f"codes within {minutes} min: its PIN route is locked until "
                f"{until.isoformat(timespec='minutes')}"
            ),
        )
