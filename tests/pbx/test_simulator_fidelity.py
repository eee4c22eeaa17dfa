"""The simulated PBX against the real one: the same state must give the same answers.

The simulator (``pbxguard.simulator.ami_server``) replays recorded AMI sessions and answers
the actions pbxguard sends from the state the replay builds. Here the real Asterisk records a
scene (a phone re-registers, a bypass call rings at the carrier), answers CoreShowChannels,
DeviceStateList, PJSIPShowContacts and a Hangup of the ringing trunk leg; then the simulator
replays the real events of that scene, is held at the same moment, and is asked the same
actions. The shapes must agree: the same items with the same fields, the same values for the
fields pbxguard reads, and the same events after the Hangup.

A second test holds the real event stream against the captures in ``fixtures/ami`` (shipped
in ``pbxguard/simulator/recordings``): every field a capture's events always carry, the real
PBX's events carry too, and channels and ids are named the same way.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Iterable, Sequence

import pytest

from pbxguard.protocol.ami import AmiMessage, encode_message
from pbxguard.simulator.ami_server import (
    BANNER,
    Recording,
    SimulatedPbx,
    load_recording,
    recording_names,
)
from tests.support.ami import RawAmi
from tests.support.pbx.config import BYPASS_PHONE
from tests.support.pbx.site import PbxSite

pytestmark = [pytest.mark.pbx, pytest.mark.asyncio(loop_scope="session")]

ABROAD = "00441632960123"
SECRET = "fidelity"
# Fields compared value for value between the real PBX and the simulator.
CHANNEL_FIELDS = (
    "Channel",
    "ChannelState",
    "ChannelStateDesc",
    "CallerIDNum",
    "CallerIDName",
    "ConnectedLineNum",
    "ConnectedLineName",
    "Language",
    "AccountCode",
    "Context",
    "Exten",
    "Priority",
    "Uniqueid",
    "Linkedid",
    "Application",
    "ApplicationData",
    "BridgeId",
)
CONTACT_FIELDS = ("ObjectType", "ObjectName", "Endpoint", "Uri", "ViaAddr", "ViaPort", "Status")
AFTER_HANGUP = frozenset(
    {"DialEnd", "HangupRequest", "SoftHangupRequest", "Hangup", "BridgeLeave", "BridgeDestroy"}
)
# Events whose fields pbxguard reads.
READ_BY_PBXGUARD = (
    "Newchannel",
    "Newexten",
    "DialBegin",
    "DialEnd",
    "Hangup",
    "DeviceStateChange",
    "ContactStatus",
    "PeerStatus",
)
PHONE_CHANNEL = re.compile(r"^PJSIP/[0-9a-z]+-[0-9a-f]{8}$")
UNIQUEID = re.compile(r"^[0-9]+\.[0-9]+$")


def keys(message: AmiMessage) -> frozenset[str]:
    """The message's field names, without the ActionID that ties it to our request."""
    return frozenset(k for k, _ in message.fields if k != "ActionID")


def listed(items: Sequence[AmiMessage]) -> list[AmiMessage]:
    """A list action's items, without its closing ``...Complete`` event."""
    return [m for m in items if (m.get("EventList") or "").lower() != "complete"]


class SimSession:
    """A client of the simulated PBX that answers like :class:`AmiMonitor` does."""

    def __init__(self, raw: RawAmi) -> None:
        self.raw = raw
        self.seen: list[AmiMessage] = []

    async def list_action(self, action: str) -> tuple[AmiMessage, list[AmiMessage]]:
        action_id = self.raw.send(action)
        found = await self.raw.read_until(
            lambda m: (
                m.action_id == action_id
                and (m.response == "Error" or (m.get("EventList") or "").lower() == "complete")
            )
        )
        self.seen.extend(found)
        response = next(m for m in found if m.action_id == action_id and m.response)
        items = [m for m in found if m.action_id == action_id and m.event]
        return response, items

    async def hangup(
        self, channel: str, until_hangup_of: str
    ) -> tuple[AmiMessage, list[AmiMessage]]:
        action_id = self.raw.send("Hangup", [("Channel", channel), ("Cause", "21")])
        found = await self.raw.read_until(
            lambda m: m.event == "Hangup" and m.get("Channel") == until_hangup_of
        )
        response = next(m for m in found if m.action_id == action_id)
        return response, [m for m in found if m.event]


@contextlib.asynccontextmanager
async def simulator_at(events: Sequence[AmiMessage]) -> AsyncIterator[SimSession]:
    """Replay the real ``events`` and hold the simulator right after the last one."""
    data = BANNER + b"".join(encode_message(e.fields) for e in events)
    recording = Recording.from_bytes("real", data)
    last = recording.events[-1].message
    async with SimulatedPbx([recording], secret=SECRET, pause_after=lambda m: m is last) as sim:
        raw = await RawAmi.connect(sim)
        try:
            assert (await raw.login(SECRET)).response == "Success"
            await sim.wait_until_paused()
            yield SimSession(raw)
        finally:
            await raw.close()


def by(items: Iterable[AmiMessage], key: str) -> dict[str, AmiMessage]:
    return {m.get(key) or "": m for m in items}


async def test_the_simulator_answers_like_the_real_pbx_in_the_same_state(pbx: PbxSite) -> None:
    mark = pbx.events.mark
    await pbx.restart_phone("2002")  # a ContactStatus for the replay to know a contact by
    call = pbx.dial(BYPASS_PHONE, ABROAD)
    await call.reaches_carrier()
    await pbx.carrier.ringing(since=call.placed)
    trunk = await pbx.events.wait_until(
        lambda: next(
            (
                e.get("DestChannel")
                for e in pbx.events.since(mark)
                if e.event == "DialState" and e.get("DialStatus") == "RINGING"
            ),
            None,
        )
    )
    caller = pbx.events.channel_of(BYPASS_PHONE, ABROAD, since=mark)
    assert trunk is not None
    assert caller is not None
    scene = [e for e in pbx.events.since(mark) if e.action_id is None]
    real = {
        a: await pbx.events.list_action(a)
        for a in ("CoreShowChannels", "DeviceStateList", "PJSIPShowContacts")
    }
    before_hangup = pbx.events.mark
    real_hangup = await pbx.events.action("Hangup", [("Channel", trunk), ("Cause", "21")])
    await pbx.events.wait_until(
        lambda: next(
            (
                e
                for e in pbx.events.since(before_hangup)
                if e.event == "Hangup" and e.get("Channel") == caller
            ),
            None,
        )
    )
    real_after = [e for e in pbx.events.since(before_hangup) if e.event in AFTER_HANGUP]
    await pbx.quiesce()

    async with simulator_at(scene) as sim:
        simulated = {a: await sim.list_action(a) for a in real}
        sim_hangup, sim_events = await sim.hangup(trunk, until_hangup_of=caller)
    sim_after = [e for e in sim_events if e.event in AFTER_HANGUP]

    # CoreShowChannels: the same channels, the same fields, the same values.
    real_channels = by(listed(real["CoreShowChannels"][1]), "Channel")
    sim_channels = by(listed(simulated["CoreShowChannels"][1]), "Channel")
    assert sorted(sim_channels) == sorted(real_channels) == sorted([caller, trunk])
    for name, item in real_channels.items():
        assert keys(sim_channels[name]) == keys(item), name
        assert {f: sim_channels[name].get(f) for f in CHANNEL_FIELDS} == {
            f: item.get(f) for f in CHANNEL_FIELDS
        }, name
        assert re.fullmatch(r"\d\d:\d\d:\d\d", sim_channels[name].get("Duration") or "")
    assert [m.get("ListItems") for m in simulated["CoreShowChannels"][1][-1:]] == [
        m.get("ListItems") for m in real["CoreShowChannels"][1][-1:]
    ]
    for action in real:
        assert keys(simulated[action][0]) == keys(real[action][0]), action
        assert simulated[action][0].get("Message") == real[action][0].get("Message"), action

    # DeviceStateList: the simulator knows the devices the scene changed; same shape, same state.
    real_devices = by(listed(real["DeviceStateList"][1]), "Device")
    sim_devices = by(listed(simulated["DeviceStateList"][1]), "Device")
    assert sim_devices
    for device, item in sim_devices.items():
        assert keys(item) == keys(real_devices[device]), device
        assert item.get("State") == real_devices[device].get("State"), device

    # PJSIPShowContacts: the contact the scene re-registered, field for field.
    real_contacts = by(listed(real["PJSIPShowContacts"][1]), "Endpoint")
    sim_contacts = by(listed(simulated["PJSIPShowContacts"][1]), "Endpoint")
    assert "2002" in sim_contacts
    assert keys(sim_contacts["2002"]) == keys(real_contacts["2002"])
    assert {f: sim_contacts["2002"].get(f) for f in CONTACT_FIELDS} == {
        f: real_contacts["2002"].get(f) for f in CONTACT_FIELDS
    }

    # Hangup of the ringing trunk leg: the same response, then the same events.
    assert (sim_hangup.response, sim_hangup.get("Message")) == (
        real_hangup.response,
        real_hangup.get("Message"),
    )

    def shape(events: Sequence[AmiMessage]) -> list[tuple[str | None, ...]]:
        return [
            (
                e.event,
                e.get("Channel"),
                e.get("DestChannel"),
                e.get("Cause"),
                e.get("Cause-txt"),
                e.get("DialStatus"),
            )
            for e in events
        ]

    def per_channel(events: Sequence[AmiMessage]) -> dict[str | None, list[tuple[object, ...]]]:
        out: dict[str | None, list[tuple[object, ...]]] = {}
        for event, fields in zip(shape(events), events, strict=True):
            out.setdefault(event[1], []).append((*event, keys(fields) - {"Timestamp"}))
        return out

    # The same events, each channel's in the same order. (The two channels' Hangups come from
    # two threads of the real PBX: their relative order varies from run to run.)
    assert per_channel(sim_after) == per_channel(real_after)
    assert sorted(shape(sim_after), key=repr) == sorted(shape(real_after), key=repr)


def always_present(events: Iterable[AmiMessage]) -> dict[str, frozenset[str]]:
    """For each event name, the fields every one of its events carries."""
    found: dict[str, frozenset[str]] = {}
    for event in events:
        name = event.event or ""
        found[name] = found[name] & keys(event) if name in found else keys(event)
    return found


async def test_real_events_carry_every_field_the_captures_always_carry(pbx: PbxSite) -> None:
    mark = pbx.events.mark
    await pbx.restart_phone("2003")
    call = pbx.dial("2001", "2002")
    callee = pbx.phones["2002"]
    await callee.ringing(since=call.placed)
    callee.answer()
    await call.wait_state("CONFIRMED")
    pbx.phones["2001"].hangup()
    await call.ended()
    await pbx.quiesce()
    real = [e for e in pbx.events.since(mark) if e.action_id is None]
    captured = [e.message for name in recording_names() for e in load_recording(name).events]
    capture_fields = always_present(captured)
    real_fields = always_present(real)
    for name in READ_BY_PBXGUARD:
        assert name in real_fields, name
        missing = capture_fields[name] - real_fields[name]
        assert not missing, (name, sorted(missing))
    for event in real:
        channel = event.get("Channel")
        if event.event in ("Newchannel", "Hangup", "DialBegin") and channel:
            assert PHONE_CHANNEL.fullmatch(channel), channel
            assert UNIQUEID.fullmatch(event.get("Uniqueid") or ""), event
            assert UNIQUEID.fullmatch(event.get("Linkedid") or ""), event
        if "Timestamp" in keys(event):
            assert re.fullmatch(r"[0-9]+\.[0-9]{6}", event.get("Timestamp") or ""), event
    [first] = [
        e
        for e in real
        if e.event == "Newchannel" and e.get("Channel", "").startswith("PJSIP/2001-")
    ]
    linked = {
        e.get("Linkedid")
        for e in real
        if e.event == "Newchannel" and e.get("Exten") in ("2002", "s")
    }
    assert linked == {first.get("Uniqueid")}
