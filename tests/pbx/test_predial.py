"""The pre-dial FastAGI step on the real PBX: refused calls never reach the carrier.

Counted on the wire: for each call, how many INVITEs the carrier received for that number
(expected: none for a refused call, one for an allowed call), and the offence pbxguard
recorded for each refused one.
"""

from __future__ import annotations

import pytest

from tests.support.pbx.daemon import PbxGuardProcess
from tests.support.pbx.measure import record
from tests.support.pbx.site import PbxSite

pytestmark = [pytest.mark.pbx, pytest.mark.asyncio(loop_scope="session")]

# (caller, number, rule, amount): refused before it rings.
FORBIDDEN = [
    ("2001", "00441632960123", "LD-2", "500.00"),  # international without approval
    ("2001", "16812345678", "PR-1", "50.00"),  # premium rate (20 x charge, none yet, + 50)
]
# (caller, number): allowed, dialled to the carrier.
ALLOWED = [
    ("2001", "02112345678"),  # local, with the area code
    ("2001", "62345678"),  # local subscriber number
    ("9001", "01087654321"),  # domestic long distance from a department head
]


async def prompted(pbx: PbxSite, mark: int, times: int) -> None:
    """Wait until 2001's call has started its ``times``-th Read() of a code."""

    def reads() -> bool | None:
        channel = pbx.events.channel_of("2001", "01087654321", since=mark)
        if channel is None:
            return None
        steps = pbx.events.applications(channel, since=mark)
        return sum(app == "Read" for _, _, app in steps) >= times or None

    await pbx.events.wait_until(reads)


async def test_forbidden_calls_never_reach_the_carrier_and_allowed_ones_do(
    pbx: PbxSite, guard: PbxGuardProcess
) -> None:
    refused: dict[str, int] = {}
    for ext, number, _, _ in FORBIDDEN:
        call = pbx.dial(ext, number)
        ended = await call.ended()
        await pbx.quiesce()
        refused[number] = len(call.at_carrier())
        # Cause 21 (call rejected) reaches the phone as 403.
        assert (ended.code, number) == (403, number)
        record(f"refused {ext} -> {number}: final response", call.delay(ended), "403, no INVITE")
    reached: dict[str, int] = {}
    for ext, number in ALLOWED:
        call = pbx.dial(ext, number)
        invite = await call.reaches_carrier()
        record(f"allowed {ext} -> {number}: INVITE at carrier", call.delay(invite), "one INVITE")
        await pbx.quiesce()
        reached[number] = len(call.at_carrier())
    assert refused == {number: 0 for _, number, _, _ in FORBIDDEN}
    assert reached == {number: 1 for _, number in ALLOWED}

    verdicts = [(line["verdict"], line["rule"]) for line in guard.logged("pre-dial verdict")]
    assert verdicts == [("deny", rule) for _, _, rule, _ in FORBIDDEN] + [("allow", "")] * len(
        ALLOWED
    )
    await guard.stop()
    rows = await guard.ledger()
    got = sorted((r["extension"], r["number"], r["rule"], r["amount"], r["outcome"]) for r in rows)
    assert got == sorted(
        (ext, number, rule, amount, "拨号前拒绝 refused") for ext, number, rule, amount in FORBIDDEN
    )


async def test_the_pin_route_takes_rfc4733_digits_and_lets_the_call_out(
    pbx: PbxSite, guard: PbxGuardProcess
) -> None:
    """2001 dials long distance, is asked for a code, types the head's code: the call goes out.

    The tier's policy lets ``domestic_ld`` be unlocked with an authorization code; pbxguard
    answers ``pin``, the dialplan's Read() answers the caller's leg and collects the digits
    pjsua sends as RFC 4733 telephone events, and the ``pin`` route judges the call on the
    code owner's permissions (a department head may dial long distance).
    """
    await guard.command(
        "code", "issue", "--person", "head-9001", "--by", "admin", "--code", "246810"
    )
    mark = pbx.events.mark
    call = pbx.dial("2001", "01087654321")
    answered = await call.wait_state("CONFIRMED")  # Read() answered the caller's own leg
    await prompted(pbx, mark, 1)
    await pbx.receiving_media("2001")
    assert call.at_carrier() == []
    pbx.phones["2001"].send_dtmf("246810#")
    invite = await call.reaches_carrier(within=20)
    record(
        "PIN route: from the prompt to the INVITE at the carrier",
        call.delay(invite) - call.delay(answered),
        "7 RFC 4733 digits, the pin route, then Dial",
    )
    await pbx.quiesce()
    assert len(call.at_carrier()) == 1

    verdicts = [line["verdict"] for line in guard.logged("pre-dial verdict")]
    assert verdicts == ["pin", "allow"]
    digits = "".join(
        e.get("Digit") or ""
        for e in pbx.events.since(mark)
        if e.event == "DTMFEnd" and (e.get("Channel") or "").startswith("PJSIP/2001-")
    )
    assert digits == "246810#"
    await guard.stop()
    assert await guard.ledger() == []  # an authorized call is no offence


async def test_a_wrong_code_three_times_refuses_the_call(
    pbx: PbxSite, guard: PbxGuardProcess
) -> None:
    await guard.command(
        "code", "issue", "--person", "head-9001", "--by", "admin", "--code", "135790"
    )
    mark = pbx.events.mark
    call = pbx.dial("2001", "01087654321")
    await call.wait_state("CONFIRMED")
    phone = pbx.phones["2001"]
    await pbx.receiving_media("2001")
    for attempt in range(1, 4):
        await prompted(pbx, mark, attempt)
        phone.send_dtmf("111111#")
    await call.ended(within=20)
    await pbx.quiesce()
    assert call.at_carrier() == []
    # Read() had answered the caller's leg, so the refusal is a hang-up with cause 21.
    channel = pbx.events.channel_of("2001", "01087654321", since=mark)
    causes = [
        e.get("Cause")
        for e in pbx.events.since(mark)
        if e.event == "Hangup" and e.get("Channel") == channel
    ]
    assert causes == ["21"]
    verdicts = [line["verdict"] for line in guard.logged("pre-dial verdict")]
    assert verdicts == ["pin", "pin", "pin", "deny"]
