"""Measure the AMI safety net's reaction: DialBegin arriving -> Hangup action written.

Run: ``.venv/bin/python bench/bench_reaction.py``. A stand-in PBX runs in a child process on
loopback. It logs the guard in, then plays N forbidden calls one at a time (Newchannel +
DialBegin of an international call to the trunk leg) and times, on its own clock, from writing
the DialBegin to reading the guard's ``Action: Hangup`` for that exact channel. The baseline,
measured in the same run against the same stand-in, is a bare asyncio client that answers each
DialBegin with a fixed action as soon as it reads the frame end: what loopback and two event
loops cost before any of pbxguard's work. Goal: p99 under 2 ms.

pbxguard is measured three ways: with the write-ahead journal left out (what the guard's own
work costs), with the journal as shipped (``sync = "group"``: the offence is written to the
journal before the hangup, made durable by the group-commit thread), and with
``sync = "always"`` (an fsync on the path before every hangup).
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from importlib import resources
from typing import Any

CALLS = 2000
WARMUP = 100
SECRET = "bench"


def dial_frames(i: int) -> tuple[bytes, bytes, str]:
    uid = f"1795400000.{i}"
    caller = f"PJSIP/2001-{i:08x}"
    trunk = f"Local/00441632960123@pstn-{i:08x};1"
    common = (
        f"Channel: {caller}\r\nChannelState: 4\r\nChannelStateDesc: Ring\r\n"
        f"CallerIDNum: 2001\r\nCallerIDName: Staff 2001\r\nConnectedLineNum: <unknown>\r\n"
        f"Context: internal\r\nExten: 00441632960123\r\nPriority: 1\r\n"
        f"Uniqueid: {uid}\r\nLinkedid: {uid}\r\n"
    )
    newchannel = f"Event: Newchannel\r\nPrivilege: call,all\r\n{common}\r\n".encode()
    dial = (
        f"Event: DialBegin\r\nPrivilege: call,all\r\n{common}"
        f"DestChannel: {trunk}\r\nDestUniqueid: {uid}1\r\nDestLinkedid: {uid}\r\n"
        f"DialString: 00441632960123@pstn\r\n\r\n"
    ).encode()
    hangups = (
        f"Event: Hangup\r\nPrivilege: call,all\r\nChannel: {trunk}\r\nUniqueid: {uid}1\r\n"
        f"Linkedid: {uid}\r\nCause: 21\r\n\r\n"
        f"Event: Hangup\r\nPrivilege: call,all\r\nChannel: {caller}\r\nUniqueid: {uid}\r\n"
        f"Linkedid: {uid}\r\nCause: 21\r\n\r\n"
    ).encode()
    return newchannel + dial, hangups, trunk


async def read_action(reader: asyncio.StreamReader) -> dict[str, str]:
    frame = await reader.readuntil(b"\r\n\r\n")
    fields = {}
    for line in frame.decode().split("\r\n"):
        if ": " in line:
            key, value = line.split(": ", 1)
            fields[key.lower()] = value
    return fields


async def pbx(port_out: Any) -> None:
    """The stand-in PBX (child process): print the port, serve one guard, print latencies."""
    done = asyncio.Event()
    latencies: list[float] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        login = await read_action(reader)
        writer.write(
            f"Response: Success\r\nActionID: {login.get('actionid', '')}\r\n"
            "Message: Authentication accepted\r\n\r\n".encode()
        )
        await writer.drain()
        # Answer whatever comes (CoreShowChannels resync, Ping) until the run starts.
        pending = asyncio.create_task(answer_housekeeping(reader, writer))
        await asyncio.sleep(0.5)
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)
        for i in range(CALLS + WARMUP):
            frames, hangups, trunk = dial_frames(i)
            writer.write(frames)
            started = time.perf_counter()
            while True:
                action = await read_action(reader)
                if action.get("action", "").lower() == "hangup":
                    break
                reply_to(writer, action)
            elapsed = time.perf_counter() - started
            if action.get("channel") != trunk:
                raise SystemExit(f"hangup for the wrong channel: {action}")
            writer.write(
                f"Response: Success\r\nActionID: {action.get('actionid', '')}\r\n"
                "Message: Channel Hungup\r\n\r\n".encode()
                + hangups
            )
            await writer.drain()
            if i >= WARMUP:
                latencies.append(elapsed)
        print(" ".join(f"{v:.9f}" for v in latencies), flush=True)
        writer.close()
        done.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], file=port_out, flush=True)
    async with server:
        await done.wait()


def reply_to(writer: asyncio.StreamWriter, action: dict[str, str]) -> None:
    name = action.get("action", "").lower()
    action_id = action.get("actionid", "")
    if name == "coreshowchannels":
        writer.write(
            f"Response: Success\r\nActionID: {action_id}\r\nEventList: start\r\n"
            "Message: Channels will follow\r\n\r\n"
            f"Event: CoreShowChannelsComplete\r\nActionID: {action_id}\r\n"
            "EventList: Complete\r\nListItems: 0\r\n\r\n".encode()
        )
    else:
        writer.write(f"Response: Success\r\nActionID: {action_id}\r\nPing: Pong\r\n\r\n".encode())


async def answer_housekeeping(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        reply_to(writer, await read_action(reader))
        await writer.drain()


async def bare_client(port: int) -> None:
    """Baseline: answer each DialBegin with a Hangup as soon as the frame is read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readline()
    writer.write(b"Action: Login\r\nActionID: 1\r\nUsername: x\r\nSecret: y\r\n\r\n")
    while True:
        try:
            frame = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        if frame.startswith(b"Event: DialBegin"):
            channel = frame.split(b"DestChannel: ", 1)[1].split(b"\r\n", 1)[0]
            writer.write(b"Action: Hangup\r\nActionID: 2\r\nChannel: " + channel + b"\r\n\r\n")


async def guard_client(port: int, journal_sync: str) -> None:
    import tempfile
    from pathlib import Path

    from _fakes import NullFacts, NullNotifier, WallClock

    from pbxguard.adapters.ami import AmiClient
    from pbxguard.adapters.journal import Journal
    from pbxguard.adapters.ledger import FactJournal
    from pbxguard.adapters.logs import configure_logging
    from pbxguard.adapters.policy_file import load_policy
    from pbxguard.app.guard import Guard

    class Pbx:
        client: AmiClient | None = None

        async def hangup(self, channel: str, cause: int = 21) -> None:
            assert self.client is not None
            await self.client.hangup(channel, cause)

    configure_logging("warning")
    path = resources.files("pbxguard.policies").joinpath("reference-site.toml")
    loaded = load_policy(str(path))
    journal: Journal | None = None
    facts: Any = NullFacts()
    if journal_sync != "off":
        journal = Journal(Path(tempfile.mkdtemp()) / "journal", sync=journal_sync).open()  # type: ignore[arg-type]
        facts = FactJournal(journal)
    pbx_port = Pbx()
    guard = Guard(
        loaded.policy,
        loaded.channels,
        pbx=pbx_port,
        facts=facts,
        notifier=NullNotifier(),
        clock=WallClock(),
    )
    client = AmiClient(
        "127.0.0.1",
        port,
        "pbxguard",
        SECRET,
        sink=guard.on_ami_message,
        on_login=lambda c: guard.resync(c.send_list_action),
    )
    pbx_port.client = client
    try:
        await client.run()
    finally:
        if journal is not None:
            journal.close()


def measure(client: str, journal_sync: str = "off") -> list[float]:
    child = subprocess.Popen([sys.executable, __file__, "pbx"], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    port = int(child.stdout.readline())

    async def drive() -> None:
        task = asyncio.create_task(
            bare_client(port) if client == "bare" else guard_client(port, journal_sync)
        )
        line = await asyncio.to_thread(child.stdout.readline)  # type: ignore[union-attr]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        drive.result = [float(v) for v in line.split()]  # type: ignore[attr-defined]

    asyncio.run(drive())
    child.wait(timeout=30)
    return drive.result  # type: ignore[attr-defined,no-any-return]


def summary(name: str, values: list[float]) -> str:
    p50 = statistics.median(values) * 1000
    return f"{name:<34}: p50 {p50:.3f} ms   p99 {p99(values) * 1000:.3f} ms   ({len(values)} calls)"


def main() -> None:
    bare = measure("bare")
    alone = measure("guard", "off")
    group = measure("guard", "group")
    always = measure("guard", "always")
    print(summary("bare asyncio client (baseline)", bare))
    print(summary("pbxguard, journal left out", alone))
    print(summary("pbxguard, write-ahead (group)", group) + "   (goal p99 < 2 ms)")
    print(summary("pbxguard, write-ahead (fsync)", always))
    print(f"added by pbxguard at p99 (group)  : {(p99(group) - p99(bare)) * 1000:.3f} ms")
    print(f"added by the write-ahead at p99   : {(p99(group) - p99(alone)) * 1000:.3f} ms")


def p99(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.99) - 1]


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "pbx":
        asyncio.run(pbx(sys.stdout))
    else:
        main()
