"""Degraded modes: the AMI connection drops mid-call, the guard restarts mid-call."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pbxguard.adapters.ledger import CallLog, OffenceBook
from pbxguard.bootstrap import build
from pbxguard.domain.policy import Mode
from pbxguard.entrypoints.daemon import Daemon
from pbxguard.protocol.ami import AmiMessage
from pbxguard.simulator.ami_server import SimulatedPbx
from tests.support.guard import SECRET, guard_against, reference_policy, settings_for, until


def is_dial_begin(message: AmiMessage) -> bool:
    return message.event == "DialBegin"


def is_caller_newchannel(message: AmiMessage) -> bool:
    return message.event == "Newchannel" and (message.get("Channel") or "").startswith("PJSIP/")


async def test_dropped_connection_mid_call_reconnects_resyncs_and_records_once(
    tmp_path: Path,
) -> None:
    # Held from the start: the replay runs as soon as the guard logs in, before the test could
    # ask for the pause.
    async with guard_against(
        ["staff-international-answered"], tmp_path, mode=Mode.MONITOR, pause_after=is_dial_begin
    ) as run:
        await run.pbx.wait_until_paused()
        await until(lambda: run.parts.guard.stats.offences == 1)
        run.pbx.drop_connections()
        run.pbx.resume()
        await run.settle()
        await until(lambda: run.parts.guard.stats.resyncs >= 2)
        await run.written()
        offences = await run.offences()
        calls = await run.calls()
        decisions = CallLog(run.database).decisions()
    assert run.parts.ami.login_count >= 2
    assert [o.rule_id for o in offences] == ["LD-2"]
    assert len(calls) == 1
    assert calls[0].answered_at is not None
    assert len(decisions) == 1


async def test_call_that_reached_the_trunk_while_disconnected_is_cut_after_resync(
    tmp_path: Path,
) -> None:
    """The DialBegin is lost while the guard is away; CoreShowChannels reveals the trunk leg."""
    async with guard_against(
        ["staff-premium-168"], tmp_path, pause_after=is_caller_newchannel
    ) as run:
        async with asyncio.timeout(10):
            await run.pbx.wait_until_paused()
        # Everything up to the trunk leg ringing happens while nobody is connected.
        run.pbx.drop_connections(lost_while_away=40)
        run.pbx.resume()
        await run.settle()
        offences = await run.offences()
    assert run.hangups() == ["Local/16812345678@pstn-00000001;1"]
    assert [o.rule_id for o in offences] == ["PR-1"]


async def test_a_restarted_guard_does_not_record_a_live_call_twice(tmp_path: Path) -> None:
    loaded = reference_policy(Mode.MONITOR)
    async with SimulatedPbx(
        ["staff-domestic-long-distance"], secret=SECRET, speed=0.05, pause_after=is_dial_begin
    ) as pbx:
        settings = settings_for(tmp_path, pbx)
        loop = asyncio.get_running_loop()
        first = build(settings, loaded, raise_on_auth_failure=True, loop=loop)
        stop_first = asyncio.Event()
        first_run = asyncio.create_task(Daemon(first).run(stop_first))
        async with asyncio.timeout(10):
            await pbx.wait_until_paused()
        await until(lambda: first.guard.stats.offences == 1)
        stop_first.set()
        await first_run

        second = build(settings, loaded, raise_on_auth_failure=True, loop=loop)
        stop_second = asyncio.Event()
        second_run = asyncio.create_task(Daemon(second).run(stop_second))
        await until(lambda: second.guard.stats.resyncs == 1)
        # The new process judged the live call again from the resync ...
        assert second.guard.stats.offences == 1
        pbx.resume()
        async with asyncio.timeout(20):
            await pbx.finished()
            await second.guard.settled()
        assert await asyncio.to_thread(second.writer.wait_idle, 20)
        offences = OffenceBook(second.database).offences()
        stop_second.set()
        await second_run
    # ... and the ledger kept one offence for the call, under the same key.
    assert [o.rule_id for o in offences] == ["LD-2"]
    assert offences[0].person_id == "staff-2001"
