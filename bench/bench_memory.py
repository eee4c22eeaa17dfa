"""Measure memory: RSS with 10,000 calls live, and RSS across a long soak of finished calls.

Run: ``.venv/bin/python bench/bench_memory.py [--soak-calls N]`` (default 300,000; the design
target is a million, which takes a few minutes here). The guard's tracker is driven with
channel events shaped like the recordings (a phone, a trunk leg, answer, hang-up); ledger
writes are consumed as they would be by the writer task. The baseline, measured in the same
process first, is the RSS of the interpreter with pbxguard imported and the policy loaded.
Goals: under 150 MB RSS with 10,000 calls live; flat RSS across the soak.
"""

from __future__ import annotations

import argparse
import gc
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

from pbxguard.adapters.policy_file import load_policy
from pbxguard.domain.call_events import ChannelCreated, ChannelHungUp, DialBegan, DialEnded
from pbxguard.domain.calls import CallTracker

START = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)
NUMBERS = ("02112345678", "13800138000", "00441632960123", "16812345678", "01087654321")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_call(tracker: CallTracker, i: int) -> list[object]:
    at = START + timedelta(milliseconds=i)
    uid = f"1795400000.{i}"
    ext = ("2001", "2002", "2003", "9001")[i % 4]
    number = NUMBERS[i % len(NUMBERS)]
    phone = f"PJSIP/{ext}-{i:08x}"
    trunk = f"Local/{number}@pstn-{i:08x};1"
    effects: list[object] = []
    effects += tracker.handle(ChannelCreated(at, phone, uid, uid, ext, f"Staff {ext}", number))
    effects += tracker.handle(
        DialBegan(
            at, phone, uid, uid, ext, f"Staff {ext}", number, trunk, uid + "1", f"{number}@pstn"
        )
    )
    effects += tracker.handle(DialEnded(at, phone, uid, trunk, "ANSWER"))
    return effects


def end_call(tracker: CallTracker, i: int) -> list[object]:
    at = START + timedelta(milliseconds=i, seconds=30)
    uid = f"1795400000.{i}"
    ext = ("2001", "2002", "2003", "9001")[i % 4]
    number = NUMBERS[i % len(NUMBERS)]
    effects: list[object] = []
    effects += tracker.handle(ChannelHungUp(at, f"Local/{number}@pstn-{i:08x};1", uid + "1", uid))
    effects += tracker.handle(ChannelHungUp(at, f"PJSIP/{ext}-{i:08x}", uid, uid))
    return effects


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--live", type=int, default=10_000)
    parser.add_argument("--soak-calls", type=int, default=300_000)
    args = parser.parse_args()

    loaded = load_policy(str(resources.files("pbxguard.policies").joinpath("reference-site.toml")))

    tracker = CallTracker(loaded.policy, loaded.channels)
    gc.collect()
    baseline = rss_mb()
    for i in range(args.live):
        start_call(tracker, i)
    gc.collect()
    live = rss_mb()
    print(f"baseline (interpreter + pbxguard + policy): {baseline:7.1f} MB RSS")
    print(
        f"with {tracker.live_calls:,} calls live           : {live:7.1f} MB RSS "
        f"(+{live - baseline:.1f} MB; goal < 150 MB)"
    )
    for i in range(args.live):
        end_call(tracker, i)

    step = max(args.soak_calls // 6, 1)
    samples = []
    window = 1_000  # calls in progress at any time during the soak
    for i in range(args.live, args.live + args.soak_calls):
        start_call(tracker, i)
        if i - window >= args.live:
            end_call(tracker, i - window)
        if (i - args.live) % step == 0:
            gc.collect()
            samples.append((i - args.live, rss_mb()))
    gc.collect()
    samples.append((args.soak_calls, rss_mb()))
    print(f"soak of {args.soak_calls:,} calls, {window:,} in progress at a time:")
    for done, mb in samples:
        print(f"  after {done:>9,} calls: {mb:7.1f} MB RSS")
    growth = samples[-1][1] - samples[1][1] if len(samples) > 2 else 0.0
    print(f"growth from the first sample after warm-up to the end: {growth:+.1f} MB")


if __name__ == "__main__":
    main()
