"""Measure AMI ingest: events per second through codec + tracker + evaluate, on one core.

Run: ``.venv/bin/python bench/bench_ingest.py``. The recorded captures are concatenated and
replayed many times over (each call starts and ends within a capture, so the tracker's state
stays realistic) in 64 KiB reads. The baseline, measured in the same run, is the bare codec on
the same bytes. Every event reaches the guard's sink: none is dropped, and the figure counts all
of them (VarSet and RTCP included), because the guard must read them all to keep up.
Goal: at least 50,000 events/s.
"""

from __future__ import annotations

import asyncio
import gc
import time
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from _fakes import NullFacts, NullNotifier, NullPbx

from pbxguard.adapters.logs import configure_logging
from pbxguard.adapters.policy_file import load_policy
from pbxguard.app.guard import Guard
from pbxguard.protocol.ami import NEED_DATA, AmiMessage, AmiParser

READ = 64 * 1024
REPEAT = 40
ROUNDS = 3


class FixedClock:
    def now(self) -> datetime:
        return datetime(2026, 11, 23, 1, 0, tzinfo=UTC)


def stream() -> bytes:
    root = resources.files("pbxguard.simulator").joinpath("recordings")
    names = sorted(p.name for p in root.iterdir() if p.name.endswith(".ami"))
    parts = []
    for name in names:
        data = root.joinpath(name).read_bytes()
        # Drop the banner line: one parser reads the whole concatenation.
        parts.append(data.split(b"\r\n", 1)[1])
    return b"Asterisk Call Manager/11.0.0\r\n" + b"".join(parts) * REPEAT


def run_codec(data: bytes, sink: Any) -> int:
    parser = AmiParser()
    count = 0
    for start in range(0, len(data), READ):
        parser.receive_data(data[start : start + READ])
        while (message := parser.next_message()) is not NEED_DATA:
            if isinstance(message, AmiMessage):
                count += 1
                sink(message)
    return count


def best_rate(data: bytes, make_sink: Any) -> tuple[float, int]:
    best = 0.0
    count = 0
    for _ in range(ROUNDS):
        sink = make_sink()
        gc.collect()
        started = time.perf_counter()
        count = run_codec(data, sink)
        elapsed = time.perf_counter() - started
        best = max(best, count / elapsed)
    return best, count


async def main() -> None:
    configure_logging("error")
    data = stream()
    loaded = load_policy(resources.files("pbxguard.policies").joinpath("reference-site.toml"))  # type: ignore[arg-type]
    guards: list[Guard] = []

    def guard_sink() -> Any:
        guard = Guard(
            loaded.policy,
            loaded.channels,
            pbx=NullPbx(),
            facts=NullFacts(),
            notifier=NullNotifier(),
            clock=FixedClock(),
        )
        guards.append(guard)
        return guard.on_ami_message

    baseline, events = best_rate(data, lambda: lambda _m: None)
    full, _ = best_rate(data, guard_sink)
    stats = guards[-1].stats
    print(f"events in the stream         : {events:,} ({len(data) / 1e6:.1f} MB)")
    print(f"bare codec (baseline)        : {baseline:,.0f} events/s")
    print(f"codec + tracker + evaluate   : {full:,.0f} events/s   (goal >= 50,000)")
    print(f"ratio to the bare codec      : {full / baseline:.2f}")
    print(
        f"per pass: {stats.events:,} events, {stats.decisions:,} decisions, "
        f"{stats.offences:,} offences, {stats.calls:,} finished calls"
    )
    for task in asyncio.all_tasks() - {asyncio.current_task()}:
        task.cancel()


if __name__ == "__main__":
    asyncio.run(main())
