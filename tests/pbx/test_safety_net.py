"""The AMI safety net on the real PBX: calls that went around the pre-dial step are cut.

Three ways around the FastAGI step, each to an international number the staff may not dial,
with the carrier ringing and never answering: a context that dials the trunk directly (the
test-only [bypass-test], phone 2999), a blind transfer made from that phone, and an AMI
Originate of the trunk channel. pbxguard must hang up the trunk leg before the carrier
answers: the carrier sees an INVITE and then a CANCEL, and the offence is in the ledger.
What each path looks like on AMI is asserted too (which channel the DialBegin names).
"""

from __future__ import annotations

import time

import pytest

from pbxguard.protocol.ami import AmiMessage
from tests.support.pbx.config import BYPASS_PHONE
from tests.support.pbx.daemon import PbxGuardProcess
from tests.support.pbx.measure import record
from tests.support.pbx.pjsua import SipMessage, interval
from tests.support.pbx.site import PbxSite

pytestmark = [pytest.mark.pbx, pytest.mark.asyncio(loop_scope="session")]

ABROAD = "00441632960123"


async def cancelled(site: PbxSite, invite: SipMessage, within: float = 15.0) -> SipMessage:
    """Wait for the carrier's CANCEL of the call ``invite`` opened."""
    return await site.carrier.wait_until(
        lambda: next(
            (m for m in site.carrier.requests("CANCEL") if m.call_id == invite.call_id), None
        ),
        within,
    )


def dial_begins(site: PbxSite, mark: int) -> list[AmiMessage]:
    """DialBegin events to the trunk since ``mark``."""
    return [
        e
        for e in site.events.since(mark)
        if e.event == "DialBegin" and (e.get("DestChannel") or "").startswith("PJSIP/carrier-")
    ]


async def cut_before_answer(
    site: PbxSite, since: float, what: str, within: float = 15.0
) -> tuple[SipMessage, SipMessage]:
    """Wait for the carrier's INVITE to ABROAD and its CANCEL; record the interval."""
    invite = await site.carrier.wait_until(
        lambda: next(
            (m for m in site.carrier.calls_received(since=since) if m.user == ABROAD), None
        )
    )
    cancel = await cancelled(site, invite, within)
    record(
        f"{what}: INVITE -> CANCEL at the carrier",
        interval(invite.stamp, cancel.stamp),
        "hung up by pbxguard over AMI before the answer",
    )
    return invite, cancel


async def test_a_context_without_the_agi_step_is_cut_before_the_carrier_answers(
    pbx: PbxSite, guard: PbxGuardProcess
) -> None:
    mark = pbx.events.mark
    call = pbx.dial(BYPASS_PHONE, ABROAD)
    await cut_before_answer(pbx, call.placed, "bypass context")
    ended = await call.ended()
    await pbx.quiesce()
    channel = pbx.events.channel_of(BYPASS_PHONE, ABROAD, since=mark)
    assert channel is not None
    # Newexten names the channel's context; the Dial comes from the included bypass-trunk.
    assert ("bypass-test", ABROAD, "Dial") in pbx.events.applications(channel, since=mark)
    assert all(app != "AGI" for *_, app in pbx.events.applications(channel, since=mark))
    [begin] = dial_begins(pbx, mark)
    assert (begin.get("Channel"), begin.get("DialString")) == (channel, f"{ABROAD}@carrier")
    assert ended.code is not None
    assert len(call.at_carrier()) == 1
    [hangup] = guard.logged("hangup accepted")
    assert hangup["channel"] == begin.get("DestChannel")
    await guard.stop()
    rows = [(r["extension"], r["number"], r["rule"], r["outcome"]) for r in await guard.ledger()]
    assert rows == [(BYPASS_PHONE, ABROAD, "LD-2", "已挂断 hung up")]


async def test_a_blind_transfer_to_an_outside_number_is_cut(
    pbx: PbxSite, guard: PbxGuardProcess
) -> None:
    """2999 talks to 2001, then transfers 2001 abroad; Asterisk runs it in 2999's context."""
    mark = pbx.events.mark
    call = pbx.dial(BYPASS_PHONE, "2001")
    callee = pbx.phones["2001"]
    await callee.ringing(since=call.placed)
    callee.answer()
    await call.wait_state("CONFIRMED")
    since = time.monotonic()
    pbx.phones[BYPASS_PHONE].transfer(pbx.uri(ABROAD))
    await cut_before_answer(pbx, since, "blind transfer")
    await pbx.quiesce()
    transfers = [e for e in pbx.events.since(mark) if e.event == "BlindTransfer"]
    assert len(transfers) == 1
    assert transfers[0].get("Extension") == ABROAD
    [begin] = dial_begins(pbx, mark)
    # The transferred party (2001's channel) dials, inside the original call (same Linkedid).
    assert (begin.get("Channel") or "").startswith("PJSIP/2001-")
    assert begin.get("DialString") == f"{ABROAD}@carrier"
    first = next(e for e in pbx.events.since(mark) if e.event == "Newchannel")
    assert begin.get("Linkedid") == first.get("Uniqueid")
    assert len(guard.logged("hangup accepted")) == 1
    await guard.stop()
    rows = [(r["number"], r["rule"], r["outcome"]) for r in await guard.ledger()]
    assert rows == [(ABROAD, "LD-2", "已挂断 hung up")]


async def test_an_ami_originate_of_the_trunk_is_cut(pbx: PbxSite, guard: PbxGuardProcess) -> None:
    """Originate dials the trunk with no caller channel: its DialBegin names no Channel."""
    mark = pbx.events.mark
    since = time.monotonic()
    response = await pbx.events.action(
        "Originate",
        [
            ("Channel", f"PJSIP/{ABROAD}@carrier"),
            ("Context", "from-internal"),
            ("Exten", "2001"),
            ("Priority", "1"),
            ("Async", "true"),
        ],
    )
    assert response.response == "Success", response
    await cut_before_answer(pbx, since, "AMI Originate")
    await pbx.quiesce()
    [begin] = dial_begins(pbx, mark)
    assert begin.get("Channel") is None  # no caller: only the Dest* fields and DialString
    assert begin.get("DialString") == f"{ABROAD}@carrier"
    originated = [e for e in pbx.events.since(mark) if e.event == "OriginateResponse"]
    assert [e.get("Response") for e in originated] == ["Failure"]
    assert len(guard.logged("hangup accepted")) == 1
    await guard.stop()
    rows = [(r["number"], r["rule"], r["outcome"]) for r in await guard.ledger()]
    assert rows == [(ABROAD, "LD-2", "已挂断 hung up")]


async def test_a_call_made_while_ami_is_cut_is_cut_after_the_reconnection(
    pbx: PbxSite, guard: PbxGuardProcess
) -> None:
    """The proxy drops pbxguard's AMI session and keeps it out while a bypass call starts.

    When AMI is back, pbxguard's resync (CoreShowChannels) finds the ringing trunk channel it
    never saw begin and hangs it up; the carrier's INVITE -> CANCEL time includes the outage.
    """
    logins = len(guard.logged("ami.logged_in"))
    pbx.proxy.refuse()
    assert pbx.proxy.sever() == 1
    await guard.wait_for_log("ami.connection_lost")
    call = pbx.dial(BYPASS_PHONE, ABROAD)
    invite = await call.reaches_carrier()
    await pbx.carrier.ringing(since=call.placed)
    assert pbx.carrier.requests("CANCEL", since=call.placed) == []  # nobody is watching
    pbx.proxy.admit()
    await guard.wait_for_log("ami.logged_in", count=logins + 1)
    cancel = await cancelled(pbx, invite)
    record(
        "AMI cut, then back: INVITE -> CANCEL at the carrier",
        interval(invite.stamp, cancel.stamp),
        "the outage, then the resync's hangup",
    )
    await pbx.quiesce()
    assert len(guard.logged("hangup accepted")) == 1
    await guard.stop()
    rows = [(r["extension"], r["number"], r["rule"]) for r in await guard.ledger()]
    assert rows == [(BYPASS_PHONE, ABROAD, "LD-2")]
