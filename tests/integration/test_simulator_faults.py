"""The simulated PBX's fresh calls, its fault at a Hangup, and what it says it saw."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from pbxguard.protocol.ami import AmiMessage
from pbxguard.simulator.ami_server import PlaylistEntry, SimulatedPbx, load_recording
from tests.support.ami import TEST_SECRET, WAIT, RawAmi, started
from tests.support.guard import guard_against

PREMIUM = "staff-premium-168"
PREMIUM_TRUNK = "Local/16812345678@pstn-00000001;1"


async def connected(pbx: SimulatedPbx) -> RawAmi:
    ami = await RawAmi.connect(pbx)
    response = await ami.login()
    assert response.response == "Success", response
    return ami


def trunk_of(pbx: SimulatedPbx, index: int) -> str:
    """The outbound leg (DialBegin's DestChannel) of playlist entry ``index`` as replayed."""
    return next(
        e.message.get("DestChannel") or ""
        for e in pbx.recordings[index].events
        if e.message.event == "DialBegin"
    )


async def test_a_recording_replayed_with_fresh_ids_is_cut_and_fined_once_per_call(
    tmp_path: Path,
) -> None:
    """Three replays of one capture: three calls, three hangups, three PR-1 offences."""
    premium = load_recording(PREMIUM)
    entries = [PlaylistEntry(premium, fresh_ids=True) for _ in range(3)]
    async with guard_against(entries, tmp_path) as run:
        await run.settle()
        offences = await run.offences()
        trunks = [trunk_of(run.pbx, i) for i in range(3)]
    assert len(set(trunks)) == 3
    assert run.hangups() == trunks
    assert run.pbx.hung_up == trunks
    assert [o.rule_id for o in offences] == ["PR-1"] * 3
    assert {o.person_id for o in offences} == {"staff-2002"}
    linkedids = [o.call.linkedid for o in offences if o.call is not None]
    assert len(set(linkedids)) == 3
    # Escalation counts them as three offences of one person (000 L1117's ladder).
    assert [o.escalation_step for o in offences] == [1, 2, 3]
    assert run.pbx.answered_channels.isdisjoint(trunks)


async def test_without_fresh_ids_a_replay_is_the_same_call_again(tmp_path: Path) -> None:
    async with guard_against([PREMIUM, PREMIUM], tmp_path) as run:
        await run.settle()
        offences = await run.offences()
    assert [o.rule_id for o in offences] == ["PR-1"]
    assert run.hangups() == [PREMIUM_TRUNK]


async def test_a_hangup_lost_with_the_connection_is_not_carried_out() -> None:
    pbx = SimulatedPbx([PREMIUM], secret=TEST_SECRET)
    pbx.pause_after(lambda m: m.event == "DialBegin")
    async with started(pbx):
        ami = await connected(pbx)
        try:
            await asyncio.wait_for(pbx.wait_until_paused(), WAIT)
            assert PREMIUM_TRUNK in pbx.shown_channels
            pbx.drop_at_next_hangup(carried_out=False)
            ami.send("Hangup", [("Channel", PREMIUM_TRUNK), ("Cause", "21")])
            # No reply: the connection ends with the action.
            while (message := await asyncio.wait_for(ami.read(), WAIT)) is not None:
                assert not (isinstance(message, AmiMessage) and message.response), message
        finally:
            await ami.close()
        assert PREMIUM_TRUNK in pbx.live_channels
        assert pbx.hung_up == []
        pbx.resume()
        again = await connected(pbx)
        try:
            await asyncio.wait_for(pbx.finished(), WAIT)
        finally:
            await again.close()
    # Nobody cut it: the far end answered and the call ran its course.
    assert PREMIUM_TRUNK in pbx.answered_channels
    assert pbx.talk_time(PREMIUM_TRUNK) == timedelta(seconds=1795397604.925659 - 1795397599.903905)
    assert pbx.live_channels == []


async def test_a_hangup_carried_out_as_the_connection_breaks_is_only_seen_by_a_resync() -> None:
    pbx = SimulatedPbx([PREMIUM], secret=TEST_SECRET)
    pbx.pause_after(lambda m: m.event == "DialBegin")
    async with started(pbx):
        ami = await connected(pbx)
        try:
            await asyncio.wait_for(pbx.wait_until_paused(), WAIT)
            pbx.drop_at_next_hangup(carried_out=True)
            ami.send("Hangup", [("Channel", PREMIUM_TRUNK), ("Cause", "21")])
            got = []
            while (message := await asyncio.wait_for(ami.read(), WAIT)) is not None:
                got.append(message)
        finally:
            await ami.close()
        # Neither the reply nor the hangup's events reached the client ...
        assert not [m for m in got if isinstance(m, AmiMessage) and m.event == "Hangup"]
        assert not [m for m in got if isinstance(m, AmiMessage) and m.response]
        # ... but the PBX hung the call up.
        assert pbx.hung_up == [PREMIUM_TRUNK]
        assert pbx.live_channels == []
        again = await connected(pbx)
        try:
            action_id = again.send("CoreShowChannels")
            listing = await again.read_until(lambda m: m.event == "CoreShowChannelsComplete")
        finally:
            await again.close()
    assert [m for m in listing if m.action_id == action_id and m.event == "CoreShowChannel"] == []
    assert PREMIUM_TRUNK not in pbx.answered_channels
    assert pbx.talk_time(PREMIUM_TRUNK) is None


async def test_channels_shown_are_those_in_delivered_events_or_a_listing() -> None:
    """Events played while nobody listens show nothing; a CoreShowChannels listing does."""
    pbx = SimulatedPbx([PREMIUM], secret=TEST_SECRET)
    pbx.pause_after(lambda m: m.event == "DialBegin")
    async with started(pbx):
        # The first events (the caller's channel, the Local pair, the DialBegin) happen unseen.
        pbx.drop_connections_after(2, lost_while_away=60)
        first = await connected(pbx)
        try:
            while await asyncio.wait_for(first.read(), WAIT) is not None:
                pass
        finally:
            await first.close()
        await asyncio.wait_for(pbx.wait_until_paused(), WAIT)
        assert pbx.shown_channels == frozenset()
        second = await connected(pbx)
        try:
            await second.read_until(lambda m: m.event == "FullyBooted")
            action_id = second.send("CoreShowChannels")
            await second.read_until(
                lambda m: m.action_id == action_id and m.event == "CoreShowChannelsComplete"
            )
        finally:
            await second.close()
    assert PREMIUM_TRUNK in pbx.shown_channels
    assert "PJSIP/2002-00000001" in pbx.shown_channels


async def test_a_client_counts_once_caught_up_and_the_replay_holds_till_then() -> None:
    pbx = SimulatedPbx([PREMIUM], secret=TEST_SECRET, caught_up_after="CoreShowChannels")
    async with started(pbx):
        ami = await connected(pbx)
        try:
            await ami.read_until(lambda m: m.event == "FullyBooted")
            # Logged in with events on, but not caught up yet: nothing is replayed.
            pong = ami.send("Ping")
            await ami.read_until(lambda m: m.action_id == pong)
            assert pbx.events_sent == 0
            action_id = ami.send("CoreShowChannels")
            listing = await ami.read_until(lambda m: m.event == "CoreShowChannelsComplete")
            assert listing[-1].action_id == action_id
            await asyncio.wait_for(pbx.finished(), WAIT)
        finally:
            await ami.close()
    assert pbx.events_sent == len(load_recording(PREMIUM).events) - 1
