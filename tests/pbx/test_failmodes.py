"""The dialplan's fail modes on the real PBX, with pbxguard gone and with pbxguard frozen.

With no verdict the class of the number decides (README, docs/asterisk.md §5): local, mobile
and internal calls go out, international, Hong Kong and premium-rate calls are refused with
cause 34 (a SIP 503 at the phone), and domestic long distance follows PBXGUARD_LD_FAILMODE.

A frozen pbxguard (SIGSTOP) used to hold every outside call in silence for as long as the
caller waited: res_agi has no read timeout, and the kernel completes connections to a
stopped process. The dialplan now bounds that wait (PBXGUARD_MAX_WAIT): the same fail modes
apply once it runs out, by way of the T extension of [pbxguard-check].
"""

from __future__ import annotations

import pytest

from tests.support.pbx.daemon import PbxGuardProcess
from tests.support.pbx.measure import record
from tests.support.pbx.site import PbxSite

pytestmark = [pytest.mark.pbx, pytest.mark.asyncio(loop_scope="session")]

MAX_WAIT = 3.0  # PBXGUARD_MAX_WAIT in the shipped [globals]
OPEN = [("local", "02112345678"), ("local", "62345678"), ("mobile", "13800138000")]
CLOSED = [
    ("international", "00441632960123"),
    ("international", "+441632960123"),
    ("Hong Kong", "0085223456789"),
    ("premium", "16812345678"),
    ("domestic long distance", "01087654321"),
]
SERVICE_UNAVAILABLE = 503  # what cause 34 (no circuit available) becomes at a SIP phone


async def outcome(site: PbxSite, number: str, label: str, expected: str) -> str:
    """Dial ``number`` from 2001; return "carrier" or the SIP code the phone got."""
    call = site.dial("2001", number)
    if expected == "carrier":
        invite = await call.reaches_carrier(within=MAX_WAIT + 7)
        record(f"{label}: 2001 -> {number}, INVITE at carrier", call.delay(invite), expected)
        await site.quiesce()
        return "carrier"
    ended = await call.ended(within=MAX_WAIT + 7)
    record(f"{label}: 2001 -> {number}, refused", call.delay(ended), expected)
    await site.quiesce()
    return "carrier" if call.at_carrier() else str(ended.code)


async def test_with_no_pbxguard_each_class_follows_its_fail_mode(pbx: PbxSite) -> None:
    got = {n: await outcome(pbx, n, "no pbxguard", "carrier") for _, n in OPEN}
    got |= {n: await outcome(pbx, n, "no pbxguard", "503") for _, n in CLOSED}
    assert got == {n: "carrier" for _, n in OPEN} | {n: "503" for _, n in CLOSED}


async def test_with_no_pbxguard_internal_calls_ring_the_phone(pbx: PbxSite) -> None:
    call = pbx.dial("2001", "2002")
    callee = pbx.phones["2002"]
    await callee.ringing(since=call.placed)
    callee.answer()
    connected = await call.wait_state("CONFIRMED")
    record("no pbxguard: 2001 -> 2002 answered", call.delay(connected), "phone to phone")
    assert call.at_carrier() == []


async def test_long_distance_follows_the_ld_failmode_setting(pbx: PbxSite) -> None:
    number = "01087654321"
    assert await outcome(pbx, number, "no pbxguard, LD closed", "503") == "503"
    await pbx.set_global("PBXGUARD_LD_FAILMODE", "open")
    try:
        assert await outcome(pbx, number, "no pbxguard, LD open", "carrier") == "carrier"
    finally:
        await pbx.set_global("PBXGUARD_LD_FAILMODE", "closed")


async def test_a_frozen_pbxguard_holds_no_call_longer_than_the_bound(
    pbx: PbxSite, guard: PbxGuardProcess
) -> None:
    """With pbxguard SIGSTOPped, the class decides after PBXGUARD_MAX_WAIT; 110 never waits."""
    guard.stall()
    try:
        mark = pbx.events.mark
        local = pbx.dial("2001", "02112345678")
        invite = await local.reaches_carrier(within=MAX_WAIT + 7)
        record(
            "pbxguard SIGSTOP: 2001 -> 02112345678 (local), INVITE at carrier",
            local.delay(invite),
            f"after the {MAX_WAIT:.0f} s bound, then fail open",
        )
        await pbx.quiesce()
        international = pbx.dial("2001", "00441632960123")
        refused = await international.ended(within=MAX_WAIT + 7)
        record(
            "pbxguard SIGSTOP: 2001 -> 00441632960123, refused",
            international.delay(refused),
            f"after the {MAX_WAIT:.0f} s bound, then fail closed (503)",
        )
        await pbx.quiesce()
        emergency = pbx.dial("2001", "110")
        emergency_invite = await emergency.reaches_carrier()
        record(
            "pbxguard SIGSTOP: 2001 -> 110, INVITE at carrier",
            emergency.delay(emergency_invite),
            "no pbxguard step",
        )
        await pbx.quiesce()
        assert guard.stalled  # the process was frozen throughout
    finally:
        guard.resume()

    assert refused.code == SERVICE_UNAVAILABLE
    assert international.at_carrier() == []
    # Both were decided because the bound ran out, not by an answer from pbxguard: the PBX
    # ran [pbxguard-check]'s T extension for each.
    for number in ("02112345678", "00441632960123"):
        channel = pbx.events.channel_of("2001", number, since=mark)
        assert channel is not None
        steps = pbx.events.applications(channel, since=mark)
        assert ("pbxguard-check", "T", "NoOp") in steps, steps
    emergency_channel = pbx.events.channel_of("2001", "110", since=mark)
    assert emergency_channel is not None
    steps = pbx.events.applications(emergency_channel)
    assert ("emergency-dial", "110", "Dial") in steps, steps
    assert all(app != "AGI" for _, _, app in steps), steps

    # Once thawed, pbxguard finds the requests Asterisk gave up on and judges none of them.
    await guard.wait_for_log("fastagi.request.hung_up", count=2)
    assert guard.logged("pre-dial verdict") == []


async def test_a_verdict_still_comes_within_milliseconds_with_the_bound_in_place(
    pbx: PbxSite, guard: PbxGuardProcess
) -> None:
    """The bound changes nothing for a live pbxguard: its verdicts decide, at once."""
    mark = pbx.events.mark
    allowed = pbx.dial("2001", "02112345678")
    invite = await allowed.reaches_carrier()
    record("pbxguard live: 2001 -> 02112345678, INVITE at carrier", allowed.delay(invite), "ms")
    await pbx.quiesce()
    refused = pbx.dial("2001", "00441632960123")
    ended = await refused.ended()
    record("pbxguard live: 2001 -> 00441632960123, refused", refused.delay(ended), "ms, 403")
    await pbx.quiesce()
    assert ended.code == 403  # refused by policy (cause 21), not by a fail mode (503)
    for number in ("02112345678", "00441632960123"):
        channel = pbx.events.channel_of("2001", number, since=mark)
        assert channel is not None
        steps = pbx.events.applications(channel, since=mark)
        assert ("pbxguard-check", "s", "AGI") in steps, steps
        assert all(exten != "T" for _, exten, _ in steps), steps
    assert [line["verdict"] for line in guard.logged("pre-dial verdict")] == ["allow", "deny"]
