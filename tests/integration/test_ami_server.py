"""The simulated PBX over real loopback sockets, driven by a bare AMI connection."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from pbxguard.errors import ConfigError
from pbxguard.protocol.ami import AmiMessage, encode_message
from pbxguard.simulator.ami_server import (
    PlaylistEntry,
    SimulatedPbx,
    back_to_back,
    load_recording,
)
from tests.support.ami import TEST_SECRET, WAIT, RawAmi, recording_bytes, started

SNAPSHOT = [
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
]
HK = "hk-call-cut-by-ami-hangup"
HK_OUTBOUND = "Local/0085223456789@pstn-00000007;1"


@pytest.fixture
async def hk_pbx() -> AsyncIterator[SimulatedPbx]:
    async with started(SimulatedPbx([HK], secret=TEST_SECRET)) as pbx:
        yield pbx


async def connected(pbx: SimulatedPbx, events: str = "on") -> RawAmi:
    ami = await RawAmi.connect(pbx)
    response = await ami.login(events=events)
    assert response.response == "Success", response
    return ami


def recorded_events(name: str) -> list[bytes]:
    """The event blocks of a capture as sent on the wire, without the session's FullyBooted."""
    blocks = recording_bytes(name).split(b"\r\n", 1)[1].split(b"\r\n\r\n")[:-1]
    return [
        b + b"\r\n\r\n"
        for b in blocks
        if b.startswith(b"Event: ") and not b.startswith(b"Event: FullyBooted")
    ]


async def test_login_is_answered_like_asterisk(hk_pbx: SimulatedPbx) -> None:
    ami = await RawAmi.connect(hk_pbx)
    try:
        response = await ami.login()
        assert response.fields == (
            ("Response", "Success"),
            ("ActionID", "raw-1"),
            ("Message", "Authentication accepted"),
        )
        booted = await ami.read_message()
        assert booted.event == "FullyBooted"
        assert booted.get("Status") == "Fully Booted"
        assert booted.get("Privilege") == "system,all"
        login = await hk_pbx.wait_for_action("login")
        assert login.message.get("Username") == "pbxguard"
        assert "correct horse" not in repr(login)
    finally:
        await ami.close()


async def test_wrong_secret_is_refused_and_the_connection_closed(hk_pbx: SimulatedPbx) -> None:
    ami = await RawAmi.connect(hk_pbx)
    try:
        response = await ami.login(secret="guess")
        assert response.response == "Error"
        assert response.get("Message") == "Authentication failed"
        assert await ami.read() is None
        assert hk_pbx.failed_logins == 1
        assert hk_pbx.logins == 0
        assert hk_pbx.events_sent == 0
    finally:
        await ami.close()


async def test_actions_before_login_are_denied_and_logoff_says_goodbye(
    hk_pbx: SimulatedPbx,
) -> None:
    ami = await RawAmi.connect(hk_pbx)
    try:
        await ami.read()
        denied = await ami.response_to(ami.send("CoreShowChannels"))
        assert (denied.response, denied.get("Message")) == ("Error", "Permission denied")
        bye = await ami.response_to(ami.send("Logoff"))
        assert bye.fields == (
            ("Response", "Goodbye"),
            ("ActionID", "raw-2"),
            ("Message", "Thanks for all the fish."),
        )
        assert await ami.read() is None
    finally:
        await ami.close()


async def test_ping_and_unknown_actions(hk_pbx: SimulatedPbx) -> None:
    ami = await connected(hk_pbx, events="off")
    try:
        pong = await ami.response_to(ami.send("Ping"))
        assert pong.response == "Success"
        assert pong.get("Ping") == "Pong"
        assert re.fullmatch(r"\d{10}\.\d{6}", pong.get("Timestamp") or "")
        unknown = await ami.response_to(ami.send("Reload"))
        assert unknown.response == "Error"
        assert (unknown.get("Message") or "").startswith("Invalid/unknown command: Reload.")
    finally:
        await ami.close()


async def test_replay_sends_the_recorded_events_byte_for_byte() -> None:
    async with started(SimulatedPbx(["staff-premium-168"], secret=TEST_SECRET)) as pbx:
        reader, writer = await asyncio.open_connection(pbx.host, pbx.port)
        try:
            writer.write(
                encode_message(
                    [("Action", "Login"), ("Username", "pbxguard"), ("Secret", TEST_SECRET)]
                )
            )
            await asyncio.wait_for(pbx.finished(), WAIT)
            expected = b"".join(recorded_events("staff-premium-168"))
            head = await asyncio.wait_for(reader.readuntil(b"Status: Fully Booted\r\n\r\n"), WAIT)
            assert head.startswith(b"Asterisk Call Manager/11.0.0\r\nResponse: Success\r\n")
            body = await asyncio.wait_for(reader.readexactly(len(expected)), WAIT)
            assert body == expected
            assert pbx.events_sent == len(recorded_events("staff-premium-168"))
        finally:
            writer.close()
            await writer.wait_closed()


async def test_replay_waits_for_a_client_and_events_off_gets_none() -> None:
    async with started(SimulatedPbx(["register-and-qualify"], secret=TEST_SECRET)) as pbx:
        quiet = await connected(pbx, events="off")
        try:
            assert pbx.events_sent == 0
            listener = await connected(pbx)
            try:
                await asyncio.wait_for(pbx.finished(), WAIT)
                pong = await quiet.response_to(quiet.send("Ping"))
                assert pong.response == "Success"
                assert pbx.events_sent == len(recorded_events("register-and-qualify"))
            finally:
                await listener.close()
        finally:
            await quiet.close()


async def test_playlist_shifts_timestamps_and_nothing_else() -> None:
    recording = load_recording("guardroom-emergency-110")
    start = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    first = recording.first_timestamp_us
    assert first is not None
    pbx = SimulatedPbx([PlaylistEntry(recording, start)], secret=TEST_SECRET)
    async with started(pbx):
        ami = await connected(pbx)
        try:
            await ami.read_message()
            sent = [await ami.read_message() for _ in range(len(recording.events) - 1)]
        finally:
            await ami.close()
    originals = [e.message for e in recording.events if e.message.event != "FullyBooted"]
    shift = int(start.timestamp()) * 1_000_000 - first
    assert len(sent) == len(originals)
    for got, original in zip(sent, originals, strict=True):
        assert [k for k, _ in got.fields] == [k for k, _ in original.fields]
        for (key, value), (_, old) in zip(got.fields, original.fields, strict=True):
            if key == "Timestamp":
                seconds, micros = old.split(".")
                moved = int(seconds) * 1_000_000 + int(micros) + shift
                assert value == f"{moved // 1_000_000}.{moved % 1_000_000:06d}"
            else:
                assert value == old
    assert sent[0].get("Timestamp") == f"{int(start.timestamp())}.000000"


def test_back_to_back_schedules_a_working_day() -> None:
    start = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
    day = back_to_back(
        ["register-and-qualify", "staff-premium-168"], start=start, gap=timedelta(minutes=30)
    )
    first = load_recording("register-and-qualify")
    assert first.first_timestamp_us is not None
    assert first.last_timestamp_us is not None
    length = timedelta(microseconds=first.last_timestamp_us - first.first_timestamp_us)
    assert timedelta(seconds=0.5) < length < timedelta(seconds=1)
    assert [e.starts_at for e in day] == [start, start + length + timedelta(minutes=30)]
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    second_start_us = (start + length + timedelta(minutes=30) - epoch) // timedelta(microseconds=1)
    assert day[1].shift_us == second_start_us - (day[1].recording.first_timestamp_us or 0)
    assert day[0].recording.name == "register-and-qualify"
    with pytest.raises(ConfigError):
        PlaylistEntry(day[0].recording, datetime(2026, 12, 1, 9, 0))  # noqa: DTZ001
    with pytest.raises(ConfigError, match="no AMI recording"):
        load_recording("no-such-recording")


async def test_pacing_follows_the_recorded_gaps() -> None:
    """duty-phone-unplugged spans 53.7 s; at speed 0.005 the replay takes at least 0.25 s."""
    pbx = SimulatedPbx(["duty-phone-unplugged"], secret=TEST_SECRET, speed=0.005)
    async with started(pbx):
        ami = await connected(pbx)
        try:
            loop = asyncio.get_running_loop()
            began = loop.time()
            await asyncio.wait_for(pbx.finished(), WAIT)
            assert loop.time() - began >= 0.25
        finally:
            await ami.close()


async def test_core_show_channels_lists_live_recorded_channels(hk_pbx: SimulatedPbx) -> None:
    hk_pbx.pause_after(lambda m: m.event == "DialState")
    ami = await connected(hk_pbx)
    try:
        await asyncio.wait_for(hk_pbx.wait_until_paused(), WAIT)
        action_id = ami.send("CoreShowChannels")
        listing = await ami.read_until(
            lambda m: m.event == "CoreShowChannelsComplete" and m.action_id == action_id
        )
    finally:
        await ami.close()
    start = next(i for i, m in enumerate(listing) if m.action_id == action_id)
    head, *items, complete = listing[start:]
    assert head.fields == (
        ("Response", "Success"),
        ("ActionID", action_id),
        ("EventList", "start"),
        ("Message", "Channels will follow"),
    )
    assert [m.get("Channel") for m in items] == [
        "PJSIP/2001-0000000b",
        "Local/0085223456789@pstn-00000007;1",
        "Local/0085223456789@pstn-00000007;2",
    ]
    for item in items:
        keys = [k for k, _ in item.fields]
        assert keys == [
            "Event",
            "ActionID",
            *SNAPSHOT,
            "Application",
            "ApplicationData",
            "Duration",
            "BridgeId",
        ]
        assert item.get("Linkedid") == "1795397703.25"
        assert re.fullmatch(r"\d\d:\d\d:\d\d", item.get("Duration") or "")
    caller, outbound, _ = items
    assert (caller.get("Application"), caller.get("ApplicationData")) == (
        "Dial",
        "Local/0085223456789@pstn,40",
    )
    assert caller.get("CallerIDName") == "Staff 2001"
    assert (outbound.get("Application"), outbound.get("ApplicationData")) == (
        "AppDial",
        "(Outgoing Line)",
    )
    assert outbound.get("ChannelStateDesc") == "Ringing"
    assert complete.fields == (
        ("Event", "CoreShowChannelsComplete"),
        ("ActionID", action_id),
        ("EventList", "Complete"),
        ("ListItems", "3"),
    )


async def test_device_state_list_and_contacts_after_registration() -> None:
    async with started(SimulatedPbx(["register-and-qualify"], secret=TEST_SECRET)) as pbx:
        ami = await connected(pbx)
        try:
            await asyncio.wait_for(pbx.finished(), WAIT)
            devices_id = ami.send("DeviceStateList")
            devices = await ami.read_until(lambda m: m.event == "DeviceStateListComplete")
            contacts_id = ami.send("PJSIPShowContacts")
            contacts = await ami.read_until(lambda m: m.event == "ContactListComplete")
        finally:
            await ami.close()
    states = [m for m in devices if m.event == "DeviceStateChange" and m.action_id == devices_id]
    assert {m.get("Device"): m.get("State") for m in states} == {
        f"PJSIP/{ext}": "NOT_INUSE" for ext in ("2001", "2002", "8000", "8001", "9001")
    }
    assert devices[-1].get("ListItems") == "5"
    listed = [m for m in contacts if m.event == "ContactList" and m.action_id == contacts_id]
    assert [m.get("Endpoint") for m in listed] == ["2001", "2002", "8000", "8001", "9001"]
    assert {m.get("Status") for m in listed} == {"Reachable"}
    first = listed[0]
    assert first.get("Uri") == "sip:2001@127.0.0.1:42001;ob"
    assert (first.get("ObjectName") or "").startswith("2001;@")
    assert first.get("ObjectType") == "contact"
    assert contacts[-1].fields[-2:] == (("EventList", "Complete"), ("ListItems", "5"))


async def test_no_contacts_is_an_error_as_in_asterisk(hk_pbx: SimulatedPbx) -> None:
    ami = await connected(hk_pbx, events="off")
    try:
        response = await ami.response_to(ami.send("PJSIPShowContacts"))
        assert (response.response, response.get("Message")) == ("Error", "No Contacts found")
    finally:
        await ami.close()


async def test_hangup_of_an_unknown_channel(hk_pbx: SimulatedPbx) -> None:
    ami = await connected(hk_pbx, events="off")
    try:
        response = await ami.response_to(
            ami.send("Hangup", [("Channel", "PJSIP/9999-00000000"), ("Cause", "21")])
        )
        assert (response.response, response.get("Message")) == ("Error", "No such channel")
        missing = await ami.response_to(ami.send("Hangup"))
        assert missing.get("Message") == "No channel specified"
    finally:
        await ami.close()


async def test_hangup_of_a_ringing_call_emits_what_asterisk_emits(hk_pbx: SimulatedPbx) -> None:
    hk_pbx.pause_after(lambda m: m.event == "DialState")
    ami = await connected(hk_pbx)
    try:
        await asyncio.wait_for(hk_pbx.wait_until_paused(), WAIT)
        action_id = ami.send("Hangup", [("Channel", HK_OUTBOUND), ("Cause", "21")])
        before = await ami.read_until(lambda m: m.action_id == action_id)
        assert before[-1].fields == (
            ("Response", "Success"),
            ("ActionID", action_id),
            ("Message", "Channel Hungup"),
        )
        hk_pbx.resume()
        await asyncio.wait_for(hk_pbx.finished(), WAIT)
        pong = ami.send("Ping")
        after = await ami.read_until(lambda m: m.action_id == pong)
    finally:
        await ami.close()
    events = after[:-1]
    summary = [
        (m.event, m.get("Channel") or m.get("Device"), m.get("Cause"), m.get("Cause-txt"))
        for m in events
    ]
    assert summary[:7] == [
        ("DialEnd", "PJSIP/2001-0000000b", None, None),
        ("HangupRequest", "Local/0085223456789@pstn-00000007;2", "21", None),
        ("Hangup", HK_OUTBOUND, "21", "Call Rejected"),
        ("Hangup", "Local/0085223456789@pstn-00000007;2", "21", "Call Rejected"),
        ("Hangup", "PJSIP/2001-0000000b", "21", "Call Rejected"),
        ("DeviceStateChange", "Local/0085223456789@pstn", None, None),
        ("DeviceStateChange", "PJSIP/2001", None, None),
    ]
    assert events[0].get("DialStatus") == "NOANSWER"
    assert events[0].get("DestChannel") == HK_OUTBOUND
    assert [k for k, _ in events[2].fields] == [
        "Event",
        "Privilege",
        "Timestamp",
        *SNAPSHOT,
        "Cause",
        "Cause-txt",
    ]
    assert {m.get("State") for m in events[5:7]} == {"NOT_INUSE"}
    stamps = [float(m.get("Timestamp") or 0) for m in events]
    assert stamps == sorted(stamps)
    # The recording's own ending of this call is not replayed; unrelated events are.
    assert [m.event for m in events[7:]] == ["SuccessfulAuth"]
    assert hk_pbx.live_channels == []
    assert hk_pbx.device_states["PJSIP/2001"] == "NOT_INUSE"


async def test_hangup_of_a_bridged_call_leaves_and_destroys_the_bridge() -> None:
    pbx = SimulatedPbx(
        ["staff-international-answered", "staff-premium-168"],
        secret=TEST_SECRET,
        pause_after=lambda m: (
            m.event == "BridgeEnter" and m.get("Channel") == "PJSIP/2001-00000000"
        ),
    )
    async with started(pbx):
        ami = await connected(pbx)
        try:
            await asyncio.wait_for(pbx.wait_until_paused(), WAIT)
            assert len(pbx.live_channels) == 3
            action_id = ami.send("Hangup", [("Channel", "PJSIP/2001-00000000")])
            await ami.read_until(lambda m: m.action_id == action_id)
            pbx.resume()
            await asyncio.wait_for(pbx.finished(), WAIT)
            pong = ami.send("Ping")
            after = await ami.read_until(lambda m: m.action_id == pong)
        finally:
            await ami.close()
    names = [(m.event, m.get("Channel") or m.get("Device") or "") for m in after[:-1]]
    # As a real Asterisk 22 does it (tests/pbx): no HangupRequest for a PJSIP channel; the
    # peer left alone in the bridge is asked to hang up and ends with normal clearing.
    assert names[:9] == [
        ("BridgeLeave", "PJSIP/2001-00000000"),
        ("Hangup", "PJSIP/2001-00000000"),
        ("BridgeLeave", "Local/00441632960123@pstn-00000000;1"),
        ("SoftHangupRequest", "Local/00441632960123@pstn-00000000;1"),
        ("BridgeDestroy", ""),
        ("Hangup", "Local/00441632960123@pstn-00000000;1"),
        ("Hangup", "Local/00441632960123@pstn-00000000;2"),
        ("DeviceStateChange", "PJSIP/2001"),
        ("DeviceStateChange", "Local/00441632960123@pstn"),
    ]
    assert [after[0].get("BridgeNumChannels"), after[2].get("BridgeNumChannels")] == ["1", "0"]
    rest = names[9:]
    assert [after[1].get("Cause"), after[5].get("Cause")] == ["16", "16"]
    # Nothing more of the cut call: the next events belong to the next recording.
    assert all("2001" not in channel and "00441632960123" not in channel for _, channel in rest)
    assert any(channel.startswith("PJSIP/2002") for _, channel in rest)
    assert pbx.live_channels == []


async def test_drop_after_events_then_continue_where_it_left_off() -> None:
    expected = recorded_events("staff-domestic-long-distance")
    pbx = SimulatedPbx(["staff-domestic-long-distance"], secret=TEST_SECRET)
    async with started(pbx):
        pbx.drop_connections_after(10)
        first = await connected(pbx)
        try:
            await first.read_message()
            got = [await first.read_message() for _ in range(10)]
            assert await first.read() is None
        finally:
            await first.close()
        second = await connected(pbx)
        try:
            await second.read_message()
            got += [await second.read_message() for _ in range(len(expected) - 10)]
        finally:
            await second.close()
    assert [encode_message(m.fields) for m in got] == expected
    assert pbx.logins == 2


async def test_events_lost_while_away_still_change_the_state() -> None:
    pbx = SimulatedPbx(["hk-call-cut-by-ami-hangup"], secret=TEST_SECRET)
    async with started(pbx):
        # Events 4 to 8 (Newchannel of 2001's call among them) happen while nobody is there.
        pbx.drop_connections_after(3, lost_while_away=5)
        pbx.pause_after(lambda m: m.event == "Newexten")
        first = await connected(pbx)
        try:
            seen = []
            while (message := await first.read()) is not None:
                assert isinstance(message, AmiMessage)
                seen.append(message.event)
        finally:
            await first.close()
        assert seen == ["FullyBooted", "SuccessfulAuth", "ChallengeSent", "SuccessfulAuth"]
        await asyncio.wait_for(pbx.wait_until_paused(), WAIT)
        second = await connected(pbx)
        try:
            action_id = second.send("CoreShowChannels")
            listing = await second.read_until(lambda m: m.event == "CoreShowChannelsComplete")
        finally:
            await second.close()
    items = [m for m in listing if m.action_id == action_id and m.event == "CoreShowChannel"]
    assert [m.get("Channel") for m in items] == ["PJSIP/2001-0000000b"]
    assert items[0].get("Application") == "NoOp"
    assert pbx.events_sent == 3
    assert pbx.events_replayed == 6


async def test_half_open_sessions_get_nothing_but_new_ones_work(hk_pbx: SimulatedPbx) -> None:
    ami = await connected(hk_pbx, events="off")
    other = None
    try:
        hk_pbx.make_half_open()
        ami.send("Ping")
        await asyncio.wait_for(hk_pbx.wait_for_action("Ping"), WAIT)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ami.read(), 0.2)
        other = await connected(hk_pbx, events="off")
        pong = await other.response_to(other.send("Ping"))
        assert pong.get("Ping") == "Pong"
    finally:
        await ami.close()
        if other is not None:
            await other.close()


async def test_an_empty_playlist_is_finished_at_once() -> None:
    async with started(SimulatedPbx([], secret=TEST_SECRET)) as pbx:
        await asyncio.wait_for(pbx.finished(), WAIT)
        assert pbx.port > 0
        assert isinstance(AmiMessage([("Event", "X")]).event, str)
