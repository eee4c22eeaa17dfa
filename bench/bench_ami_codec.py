"""Measure the AMI codec: messages per second over the recorded captures, on one core.

Run: ``.venv/bin/python bench/bench_ami_codec.py``. Each capture is fed in 64 KiB reads, the
size the client reads from its socket. Three ways of consuming are timed against a baseline
measured in the same run: a naive parser that splits CRLF text into a dict per message (no LF
tolerance, no frame limit, no validation).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import resources

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


if __name__ == "__main__":
    main()
