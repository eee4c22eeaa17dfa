"""Emergency numbers reach the carrier whatever state pbxguard is in (REGULATIONS §1, §4).

Each emergency number is dialled from the guard-room alarm phone and from a staff phone with
pbxguard running, with no pbxguard process at all, and with pbxguard frozen by SIGSTOP. The
carrier must receive the INVITE every time, and the real PBX's own dialplan trace must show
that the call never ran the pre-dial AGI step: an emergency call never waits on pbxguard.
"""

from __future__ import annotations

import pytest

from tests.support.pbx.daemon import PbxGuardProcess
from tests.support.pbx.measure import record
from tests.support.pbx.site import PbxSite

pytestmark = [pytest.mark.pbx, pytest.mark.asyncio(loop_scope="session")]

CALLERS = ("8000", "2001")
NUMBERS = ("110", "119")


async def dial_every_emergency_number(site: PbxSite, state: str) -> int:
    """Dial each number from each caller; check carrier and dialplan trace; return the count."""
    reached = 0
    for ext in CALLERS:
        for number in NUMBERS:
            mark = site.events.mark
            call = site.dial(ext, number)
            invite = await call.reaches_carrier()
            reached += 1
            record(
                f"pbxguard {state}: {ext} -> {number}, INVITE to the carrier",
                call.delay(invite),
                "straight through, no pbxguard step",
            )
            channel = await site.events.wait_until(
                lambda ext=ext, number=number, mark=mark: site.events.channel_of(
                    ext, number, since=mark
                )
            )
            steps = site.events.applications(channel, since=mark)
            assert ("emergency-dial", number, "Dial") in steps, steps
            assert all(app != "AGI" for _, _, app in steps), steps
            assert all(context != "pbxguard-check" for context, _, _ in steps), steps
            await site.quiesce()
    return reached


async def test_emergency_numbers_go_out_with_pbxguard_running(
    pbx: PbxSite, guard: PbxGuardProcess
) -> None:
    assert await dial_every_emergency_number(pbx, "running") == len(CALLERS) * len(NUMBERS)
    assert guard.logged("pre-dial verdict") == []  # pbxguard was never asked
    await guard.stop()
    assert [row for row in await guard.ledger() if row["number"] in NUMBERS] == []


async def test_emergency_numbers_go_out_with_no_pbxguard_process(pbx: PbxSite) -> None:
    assert await dial_every_emergency_number(pbx, "stopped") == len(CALLERS) * len(NUMBERS)


async def test_emergency_numbers_go_out_with_pbxguard_frozen(
    pbx: PbxSite, guard: PbxGuardProcess
) -> None:
    guard.stall()
    try:
        assert await dial_every_emergency_number(pbx, "SIGSTOP") == len(CALLERS) * len(NUMBERS)
    finally:
        guard.resume()
