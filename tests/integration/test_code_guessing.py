"""Guessing an authorization code over FastAGI, one call at a time, locks the PIN route.

Each call gets three tries (the dialplan's loop); without a count across calls a 6-digit code
would fall to a patient caller. The wrong codes are in the ledger, so a restart keeps the lock.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from structlog.testing import capture_logs

from pbxguard.domain.numbers import NumberClass
from tests.integration.test_predial import (
    MONDAY_10AM,
    FakeClock,
    new_uniqueid,
    running_service,
    with_pin_classes,
)
from tests.support.guard import until

CODE = "482913"
LD = "01087654321"


async def test_wrong_codes_over_several_calls_lock_the_route_and_a_restart_keeps_it(
    tmp_path: Path,
) -> None:
    loaded = with_pin_classes(NumberClass.DOMESTIC_LD)
    clock = FakeClock(MONDAY_10AM)
    with capture_logs() as logs:
        async with running_service(tmp_path, clock, loaded=loaded) as run:
            run.codes.issue(
                "head-9001", CODE, one_time=False, expires_at=None, by="admin",
                at=MONDAY_10AM - timedelta(days=1),
            )  # fmt: skip
            answers = []
            for n in range(5):  # five calls, one wrong code each
                clock.at = MONDAY_10AM + timedelta(minutes=n)
                answers.append(await run.ask("2001", LD, code=f"00000{n}"))
            await until(lambda: run.parts.guard.stats.alerts >= 1)
            locked_ask = await run.ask("2001", LD)
            locked_pin = await run.ask("2001", LD, code=CODE)
            other_phone = await run.ask("2002", LD)
            await run.settled()
    assert [a.verdict for a in answers] == ["pin", "pin", "pin", "pin", "deny"]
    for refused in (locked_ask, locked_pin):
        assert refused.verdict == "deny"
        assert "the code route is locked until 10:34" in refused.variables["PBXGUARD_REASON"]
    assert other_phone.verdict == "pin"
    [alert] = [e for e in logs if e["event"] == "alert"]
    assert (alert["kind"], alert["line"]) == ("code_guessing", "2001")

    # Twenty minutes after the lock, a new process: still locked (the failures are recorded).
    clock.at = MONDAY_10AM + timedelta(minutes=24)
    async with running_service(tmp_path, clock, loaded=loaded) as run:
        still = await run.ask("2001", LD, code=CODE)
        # After the lockout the right code works again.
        clock.at = MONDAY_10AM + timedelta(minutes=35)
        opened = await run.ask("2001", LD, uniqueid=new_uniqueid(), code=CODE)
        await run.settled()
    assert still.verdict == "deny"
    assert "locked" in still.variables["PBXGUARD_REASON"]
    assert opened.verdict == "allow", opened.variables
