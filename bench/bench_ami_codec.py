"""Measure the AMI codec and client: messages per second over the recorded captures.

Run: ``.venv/bin/python bench/bench_ami_codec.py``. Each capture is fed in 64 KiB reads, the
size the client reads from its socket. Three ways of consuming are timed against a baseline
measured in the same run: a naive parser that splits CRLF text into a dict per message (no LF
tolerance, no frame limit, no validation). Last, the burst capture is streamed over loopback
through :class:`AmiClient` (reader, queue, consumer) to a sink that reads three fields of each
call event; the sending server runs in the same process, so the figure is a lower bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from importlib import resources

import structlog

from pbxguard.adapters.ami import AmiClient, AmiTiming
from pbxguard.protocol.ami import NEED_DATA, AmiMessage, AmiParser

READ = 64 * 1024
ROUNDS = 7
IGNORED = frozenset({"VarSet", "RTCPReceived", "RTCPSent"})


def captures() -> list[bytes]:
    root = resources.files("pbxguard.simulator").joinpath("recordings")
    return [p.read_bytes() for p in sorted(root.iterdir(), key=str) if p.name.endswith(".ami")]


def codec(streams: list[bytes], consume: Callable[[AmiMessage], None]) -> int:
    count = 0
    for data in streams:
        parser = AmiParser()
        for start in range(0, len(data), READ):
            parser.receive_data(data[start : start + READ])
            while (message := parser.next_message()) is not NEED_DATA:
                count += 1
                if isinstance(message, AmiMessage):
                    consume(message)
    return count


def frame_only(message: AmiMessage) -> None:
    return None


def like_the_guard(message: AmiMessage) -> None:
    if message.event in IGNORED:
        return
    message.get("Channel")
    message.get("Linkedid")
    message.get("Uniqueid")


def every_field(message: AmiMessage) -> None:
    message.fields  # noqa: B018 - forces the split this benchmark measures


def naive(streams: list[bytes]) -> int:
    count = 0
    for data in streams:
        buffer = b""
        for start in range(0, len(data), READ):
            buffer += data[start : start + READ]
            *frames, buffer = buffer.split(b"\r\n\r\n")
            for frame in frames:
                fields: dict[str, str] = {}
                for line in frame.decode().split("\r\n"):
                    key, _, value = line.partition(": ")
                    fields.setdefault(key.lower(), value)
                count += 1
    return count


async def through_client(repeat: int = 200) -> float:
    root = resources.files("pbxguard.simulator").joinpath("recordings")
    capture = root.joinpath("burst-mixed-calls.ami").read_bytes()
    body = capture.split(b"Authentication accepted\r\n\r\n", 1)[1]
    body = body.rsplit(b"Response: Goodbye", 1)[0]
    expected = body.count(b"\r\n\r\n") * repeat
    received = 0
    everything = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        login = await reader.readuntil(b"\r\n\r\n")
        action_id = login.split(b"ActionID: ", 1)[1].split(b"\r\n", 1)[0]
        writer.write(b"Response: Success\r\nActionID: " + action_id + b"\r\n\r\n")
        for _ in range(repeat):
            writer.write(body)
            await writer.drain()
        await everything.wait()
        writer.close()

    def sink(message: AmiMessage) -> None:
        nonlocal received
        received += 1
        like_the_guard(message)
        if received == expected:
            everything.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = AmiClient(
        "127.0.0.1", port, "bench", "bench", sink=sink, timing=AmiTiming(ping_interval=600)
    )
    task = asyncio.create_task(client.run())
    await client.logged_in.wait()
    began = time.perf_counter()
    await everything.wait()
    elapsed = time.perf_counter() - began
    await client.close()
    await task
    server.close()
    await server.wait_closed()
    return expected / elapsed


def best_rate(run: Callable[[], int]) -> float:
    best = float("inf")
    count = 0
    for _ in range(ROUNDS):
        began = time.perf_counter()
        count = run()
        best = min(best, time.perf_counter() - began)
    return count / best


def main() -> None:
    streams = captures()
    total = sum(len(s) for s in streams)
    baseline = best_rate(lambda: naive(streams))
    print(f"{len(streams)} captures, {total:,} bytes, best of {ROUNDS} rounds")
    print(f"{'baseline: naive CRLF split into dicts':<48}{baseline:>12,.0f} msg/s   1.00x")
    for label, consume in (
        ("codec, messages only", frame_only),
        ("codec + event name, 3 fields if not ignored", like_the_guard),
        ("codec + every field split", every_field),
    ):
        rate = best_rate(lambda consume=consume: codec(streams, consume))  # type: ignore[misc]
        print(f"{label:<48}{rate:>12,.0f} msg/s {rate / baseline:>6.2f}x")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    rate = asyncio.run(through_client())
    label = "AmiClient over loopback, guard-like sink"
    print(f"{label:<48}{rate:>12,.0f} msg/s {rate / baseline:>6.2f}x")


if __name__ == "__main__":
    main()
