"""Guessing authorization codes across calls locks the phone's PIN route for a while."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from pbxguard.domain.codes import CodeGuard
from pbxguard.domain.effects import AlertKind, RaiseAlert, RecordCodeFailure
from pbxguard.domain.policy import CodeLimits
from pbxguard.domain.records import CallRef, CodeFailure

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
LIMITS = CodeLimits(max_failures=5, window=timedelta(minutes=15), lockout=timedelta(minutes=30))


def wrong(n: int, at: datetime, extension: str = "2001", person: str = "staff-2001") -> CodeFailure:
    call = CallRef(f"1795.{n}", f"1795.{n}", f"PJSIP/{extension}-{n:08x}")
    return CodeFailure(f"hq:1795.{n}:code:1", at, extension, person, call, "attempt 1 of 3")


def test_one_wrong_code_per_call_still_locks_at_the_limit() -> None:
    guard = CodeGuard(LIMITS, site="hq")
    for n in range(4):
        effects = guard.failed(wrong(n, T0 + timedelta(minutes=n)))
        assert [type(e) for e in effects] == [RecordCodeFailure]
        assert guard.locked_until("2001", T0 + timedelta(minutes=n)) is None
    effects = guard.failed(wrong(4, T0 + timedelta(minutes=4)))
    [_, alert] = effects
    assert isinstance(alert, RaiseAlert)
    assert alert.kind is AlertKind.CODE_GUESSING
    assert "2001" in alert.message_en
    assert "锁定30分钟" in alert.message_zh
    until = T0 + timedelta(minutes=34)
    assert guard.locked_until("2001", T0 + timedelta(minutes=5)) == until
    # Another phone is not affected.
    assert guard.locked_until("2002", T0 + timedelta(minutes=5)) is None


def test_more_wrong_codes_while_locked_raise_no_second_alert() -> None:
    guard = CodeGuard(LIMITS, site="hq")
    for n in range(5):
        guard.failed(wrong(n, T0 + timedelta(seconds=n)))
    effects = guard.failed(wrong(5, T0 + timedelta(minutes=1)))
    assert [type(e) for e in effects] == [RecordCodeFailure]


def test_the_lock_ends_after_the_lockout() -> None:
    guard = CodeGuard(LIMITS, site="hq")
    for n in range(5):
        guard.failed(wrong(n, T0 + timedelta(seconds=n)))
    assert guard.locked_until("2001", T0 + timedelta(minutes=29)) is not None
    assert guard.locked_until("2001", T0 + timedelta(minutes=31)) is None


def test_wrong_codes_older_than_the_window_do_not_count() -> None:
    guard = CodeGuard(LIMITS, site="hq")
    for n in range(4):
        guard.failed(wrong(n, T0 + timedelta(seconds=n)))
    # Sixteen minutes later the first four are out of the window: one more does not lock.
    effects = guard.failed(wrong(4, T0 + timedelta(minutes=16)))
    assert [type(e) for e in effects] == [RecordCodeFailure]
    assert guard.locked_until("2001", T0 + timedelta(minutes=16)) is None


def test_one_owner_guessed_from_several_phones_locks_the_phone_that_reaches_the_limit() -> None:
    guard = CodeGuard(LIMITS, site="hq")
    for n in range(4):
        guard.failed(wrong(n, T0 + timedelta(seconds=n), extension=f"30{n:02d}", person="p-li"))
    effects = guard.failed(wrong(4, T0 + timedelta(seconds=9), extension="3004", person="p-li"))
    assert any(isinstance(e, RaiseAlert) for e in effects)
    assert guard.locked_until("3004", T0 + timedelta(minutes=1)) is not None


def test_a_restart_rebuilds_the_lock_from_the_recorded_failures() -> None:
    failures = [wrong(n, T0 + timedelta(seconds=n)) for n in range(5)]
    # Twenty minutes later (outside the counting window, inside the lockout).
    rebuilt = CodeGuard(LIMITS, site="hq", failures=reversed(failures))
    assert rebuilt.locked_until("2001", T0 + timedelta(minutes=20)) == T0 + timedelta(
        minutes=30, seconds=4
    )
