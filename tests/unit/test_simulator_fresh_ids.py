"""A playlist entry with ``fresh_ids`` is a call of its own, numbered as Asterisk would."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from pbxguard.simulator.ami_server import (
    PlaylistEntry,
    Recording,
    SimulatedPbx,
    back_to_back,
    load_recording,
    recording_names,
)

PREMIUM = "staff-premium-168"
EMERGENCY = "guardroom-emergency-110"
CALL_KEYS = re.compile(r"^(Dest|LocalOne|LocalTwo)?(Uniqueid|Linkedid)$")
CHANNEL_KEYS = re.compile(r"^(Dest|LocalOne|LocalTwo)?Channel$")
CHANNEL = re.compile(r"^(?P<head>[^/]+/.+-)(?P<seq>[0-9a-f]{8})(?P<tail>;[12])?$")
UNIQUEID = re.compile(r"^(?P<seconds>[0-9]+)\.(?P<counter>[0-9]+)$")


def identifiers(recording: Recording) -> dict[str, set[str]]:
    """The call ids, channel names and bridge ids a recording holds."""
    found: dict[str, set[str]] = defaultdict(set)
    for item in recording.events:
        for key, value in item.message.fields:
            if CALL_KEYS.match(key) and value:
                found["call"].add(value)
            elif CHANNEL_KEYS.match(key) and value:
                found["channel"].add(value)
            elif key == "BridgeUniqueid":
                found["bridge"].add(value)
    return found


def pairs(original: Recording, renamed: Recording) -> dict[str, str]:
    """Map every field value of ``original`` to the value at the same place in ``renamed``."""
    mapping: dict[str, set[str]] = defaultdict(set)
    assert len(original.events) == len(renamed.events)
    for old, new in zip(original.events, renamed.events, strict=True):
        assert old.timestamp_us == new.timestamp_us
        assert [k for k, _ in old.message.fields] == [k for k, _ in new.message.fields]
        for (_, before), (_, after) in zip(old.message.fields, new.message.fields, strict=True):
            mapping[before].add(after)
    # Consistent: one value of the recording always becomes the same new value.
    assert all(len(news) == 1 for news in mapping.values()), {
        k: v for k, v in mapping.items() if len(v) > 1
    }
    return {old: next(iter(news)) for old, news in mapping.items()}


def test_entries_without_fresh_ids_are_replayed_as_recorded() -> None:
    recording = load_recording(PREMIUM)
    start = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    pbx = SimulatedPbx(
        [PlaylistEntry(recording), PlaylistEntry(recording, start), PREMIUM], secret="s"
    )
    for replayed in pbx.recordings:
        assert [e.message.fields for e in replayed.events] == [
            e.message.fields for e in recording.events
        ]


def test_fresh_entries_of_one_recording_are_distinct_calls() -> None:
    day = back_to_back(
        [PREMIUM, PREMIUM, EMERGENCY],
        start=datetime(2026, 11, 23, 1, 40, tzinfo=UTC),
        gap=timedelta(seconds=1),
        fresh_ids=True,
    )
    untouched = PlaylistEntry(load_recording(PREMIUM))
    pbx = SimulatedPbx([untouched, *day], secret="s")
    found = [identifiers(r) for r in pbx.recordings]
    for kind in ("call", "channel", "bridge"):
        for i, mine in enumerate(found):
            assert mine[kind], (kind, i)
            for other in found[i + 1 :]:
                assert not mine[kind] & other[kind], kind


def test_renaming_keeps_the_shape_of_the_call() -> None:
    """Only identifiers change, one for one; Linkedids, Local pairs and VarSets still agree."""
    original = load_recording(PREMIUM)
    start = datetime(2026, 11, 23, 1, 40, 0, 500_000, tzinfo=UTC)
    entry = PlaylistEntry(original, start, fresh_ids=True)
    [renamed] = SimulatedPbx([entry], secret="s").recordings
    mapping = pairs(original, renamed)
    old_ids = identifiers(original)
    changed = {old for old, new in mapping.items() if old != new}
    assert changed == set().union(*old_ids.values())
    # One for one: no two identifiers become the same.
    assert len({mapping[old] for old in changed}) == len(changed)
    shift_s = (entry.shift_us + 999_999) // 1_000_000
    for old in old_ids["call"]:
        before, after = UNIQUEID.match(old), UNIQUEID.match(mapping[old])
        assert before is not None
        assert after is not None
        # Asterisk's Uniqueid: the creation second (moved with the entry), then its counter.
        assert int(after["seconds"]) - int(before["seconds"]) in (shift_s - 1, shift_s)
    sequences: dict[str, set[str]] = defaultdict(set)
    for old in old_ids["channel"]:
        before, after = CHANNEL.match(old), CHANNEL.match(mapping[old])
        assert before is not None
        assert after is not None
        assert (after["head"], after["tail"]) == (before["head"], before["tail"])
        sequences[before["seq"]].add(after["seq"])
    # Both halves of the Local pair keep one sequence number between them.
    assert all(len(news) == 1 for news in sequences.values())
    # The caller's channel is still the call's origin: its Uniqueid is every channel's Linkedid.
    newchannels = [e.message for e in renamed.events if e.message.event == "Newchannel"]
    origin = newchannels[0]
    assert {m.get("Linkedid") for m in newchannels} == {origin.get("Uniqueid")}
    # What VarSet says of the call's channels names the new channels.
    peers = [
        e.message.get("Value")
        for e in renamed.events
        if e.message.event == "VarSet"
        and e.message.get("Variable") == "BRIDGEPEER"
        and e.message.get("Value")
    ]
    assert peers
    assert set(peers) <= identifiers(renamed)["channel"]


def test_fresh_numbers_continue_past_every_number_in_the_playlist() -> None:
    """As Asterisk's counters do: never a number an earlier or later entry uses."""
    names = [n for n in recording_names() if identifiers(load_recording(n))["call"]]
    pbx = SimulatedPbx(
        [PlaylistEntry(load_recording(n)) for n in names]
        + [PlaylistEntry(load_recording(PREMIUM), fresh_ids=True)],
        secret="s",
    )
    *recorded, fresh = pbx.recordings
    counters = {
        int(m["counter"])
        for r in recorded
        for value in identifiers(r)["call"]
        if (m := UNIQUEID.match(value))
    }
    fresh_counters = {
        int(m["counter"]) for value in identifiers(fresh)["call"] if (m := UNIQUEID.match(value))
    }
    assert min(fresh_counters) > max(counters)
    pjsip = {
        int(m["seq"], 16)
        for r in recorded
        for value in identifiers(r)["channel"]
        if value.startswith("PJSIP/") and (m := CHANNEL.match(value))
    }
    [caller] = [c for c in identifiers(fresh)["channel"] if c.startswith("PJSIP/")]
    match = CHANNEL.match(caller)
    assert match is not None
    assert int(match["seq"], 16) == max(pjsip) + 1


@pytest.mark.parametrize("name", [PREMIUM, EMERGENCY, "hk-call-cut-by-ami-hangup"])
def test_timestamps_move_with_the_entry_and_nothing_else_but_identifiers(name: str) -> None:
    original = load_recording(name)
    start = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
    [renamed] = SimulatedPbx(
        [PlaylistEntry(original, start, fresh_ids=True)], secret="s"
    ).recordings
    mapping = pairs(original, renamed)
    ids = set().union(*identifiers(original).values())
    assert {old for old, new in mapping.items() if old != new} == ids
