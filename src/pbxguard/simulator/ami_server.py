"""A simulated Asterisk 22 that speaks AMI by replaying recorded sessions.

:class:`SimulatedPbx` is an asyncio TCP server on loopback. It greets like Asterisk
(``Asterisk Call Manager/11.0.0``), insists on ``Action: Login`` with its configured user,
and then replays a *playlist* of recordings made on a real Asterisk 22 (see
``recordings/README.md``): the events between the capturing client's login response and its
``Logoff``, paced by their ``Timestamp`` headers scaled by ``speed`` (``0`` sends them as fast
as possible). A playlist entry may move a recording to another instant; only the
``Timestamp`` headers are rewritten, everything else goes out byte for byte as recorded. An
entry with ``fresh_ids`` is a call of its own: its Uniqueids and Linkedids (``Dest…``,
``LocalOne…``, ``LocalTwo…`` included), channel sequence numbers (``PJSIP/2001-00000000``,
both halves of ``Local/…@pstn-00000000;1``), bridge ids, and the VarSet values naming them get
the next numbers of the PBX's counters, as Asterisk numbers a new call; so a recording replayed
a hundred times is a hundred calls.

The replay is the PBX's own life, not a property of a connection: events are sent to every
logged-in session that asked for them, and when the client goes away the replay waits for it
(or, with fault injection, goes on without it; or, with ``caught_up_after``, waits until it
has also caught up) and continues where it was. While replaying, the
server keeps the state a real PBX would report: live channels, their applications and bridges,
device states and PJSIP contacts. It answers the actions pbxguard uses (``Ping``, ``Logoff``,
``CoreShowChannels``, ``DeviceStateList``, ``PJSIPShowContacts``, ``Hangup``, ``PlayDTMF``) as
Asterisk does; ``Hangup`` of a live recorded channel makes the server emit what Asterisk emits
(for half of a Local pair, the pattern captured in ``hk-call-cut-by-ami-hangup``; for a PJSIP
phone or trunk leg, the pattern the real-PBX tier records, ``tests/pbx``) and drop the rest of
that call from the replay.

For tests it records every action received and what it knows as the PBX: the channels a
session was told of (``shown_channels``; by a channel listing, ``listed_channels``), when it
was sent each ``DialBegin`` (``dial_shown_at``), the channels that were answered and how long
they talked (``answered_channels``, ``talk_time``), the calls a ``Hangup`` ended
(``hung_up``). It offers ``wait_for_*``
helpers and injects faults: dropping connections after a number of events or with the next
``Hangup`` action (carried out or lost), events that happen while nobody is connected, and
half-open connections that swallow everything (including ``Ping``).

Deliberate simplifications: ``Hangup`` with a ``/regex/`` channel is treated as a plain name;
the ``Events`` login filter understands ``on``, ``off`` and a list of classes; fields that a
recording cannot tell (a contact's ``QualifyFrequency``, ``UserAgent``...) hold plausible
placeholders.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Final, Self

import structlog

from pbxguard.errors import AmiFrameTooLarge, AmiProtocolError, ConfigError
from pbxguard.protocol.ami import (
    NEED_DATA,
    AmiMessage,
    AmiParser,
    Banner,
    MalformedMessage,
    encode_message,
)

__all__ = [
    "BANNER",
    "PlaylistEntry",
    "ReceivedAction",
    "RecordedEvent",
    "Recording",
    "SimulatedPbx",
    "back_to_back",
    "load_recording",
    "recording_names",
]

log = structlog.get_logger(__name__)

BANNER: Final = b"Asterisk Call Manager/11.0.0\r\n"

_SNAPSHOT_KEYS: Final = (
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
)
_BRIDGE_KEYS: Final = (
    "BridgeUniqueid",
    "BridgeType",
    "BridgeTechnology",
    "BridgeCreator",
    "BridgeName",
    "BridgeNumChannels",
    "BridgeVideoSourceMode",
)
# Q.850 cause texts as Asterisk prints them in Cause-txt (ast_cause2str).
_CAUSE_TEXT: Final = {
    0: "Unknown",
    1: "Unallocated (unassigned) number",
    16: "Normal Clearing",
    17: "User busy",
    18: "No user responding",
    19: "User alerting, no answer",
    21: "Call Rejected",
    27: "Destination out of order",
    34: "Circuit/channel congestion",
    127: "Interworking, unspecified",
}
# The SIP response chan_pjsip gives for a Q.850 cause (hangup_cause2sip), shown as TechCause.
_SIP_CODE: Final = {1: 404, 17: 486, 18: 408, 19: 480, 21: 403, 27: 502, 34: 503, 127: 500}
_OFF_WORDS: Final = frozenset({"off", "no", "false", "0"})
_ON_WORDS: Final = frozenset({"on", "yes", "true", "1", "all"})
_READ_SIZE: Final = 64 * 1024
_CLOSE_GRACE: Final = 2.0
_BURST: Final = 32
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_CHANNEL_KEYS: Final = ("Channel", "DestChannel", "LocalOneChannel", "LocalTwoChannel")


# --- recordings -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """One event of a recording and its ``Timestamp`` in microseconds (``None`` if absent)."""

    message: AmiMessage
    timestamp_us: int | None


@dataclass(frozen=True, slots=True)
class Recording:
    """The events of one captured AMI session, in the order they were received."""

    name: str
    events: tuple[RecordedEvent, ...]

    @classmethod
    def from_bytes(cls, name: str, data: bytes) -> Recording:
        """Parse a capture (banner, login response, events, Logoff response).

        Raises:
            AmiProtocolError: the capture holds a malformed message.
        """
        parser = AmiParser()
        parser.receive_data(data)
        parser.receive_eof()
        events: list[RecordedEvent] = []
        while (message := parser.next_message()) is not NEED_DATA:
            if isinstance(message, Banner):
                continue
            if isinstance(message, MalformedMessage):
                raise AmiProtocolError(f"recording {name!r}: {message.reason}")
            if message.event is None:
                continue
            events.append(RecordedEvent(message, _parse_timestamp(message.get("Timestamp"))))
        return cls(name, tuple(events))

    @property
    def first_timestamp_us(self) -> int | None:
        """The earliest ``Timestamp`` in the recording, in microseconds."""
        stamps = [e.timestamp_us for e in self.events if e.timestamp_us is not None]
        return min(stamps) if stamps else None

    @property
    def last_timestamp_us(self) -> int | None:
        """The latest ``Timestamp`` in the recording, in microseconds."""
        stamps = [e.timestamp_us for e in self.events if e.timestamp_us is not None]
        return max(stamps) if stamps else None


def recording_names() -> list[str]:
    """Return the names of the recordings shipped with pbxguard."""
    root = resources.files("pbxguard.simulator").joinpath("recordings")
    return sorted(item.name[:-4] for item in root.iterdir() if item.name.endswith(".ami"))


def load_recording(name: str) -> Recording:
    """Load a shipped recording by name (e.g. ``hk-call-cut-by-ami-hangup``).

    Raises:
        ConfigError: there is no recording of that name.
    """
    resource = resources.files("pbxguard.simulator").joinpath("recordings").joinpath(f"{name}.ami")
    if not resource.is_file():
        raise ConfigError(f"no AMI recording named {name!r}; known: {', '.join(recording_names())}")
    return Recording.from_bytes(name, resource.read_bytes())


@dataclass(frozen=True, slots=True)
class PlaylistEntry:
    """A recording to replay, optionally moved so that it starts at ``starts_at``.

    With ``fresh_ids`` the entry is a call of its own: the server gives its channels, Uniqueids,
    Linkedids and bridges new identifiers, as Asterisk numbers a new call (see
    `SimulatedPbx.recordings`). Without it the entry replays byte for byte (``Timestamp`` aside),
    so replaying one recording twice replays one call twice.
    """

    recording: Recording
    starts_at: datetime | None = None
    fresh_ids: bool = False

    def __post_init__(self) -> None:
        if self.starts_at is not None and self.starts_at.tzinfo is None:
            raise ConfigError("PlaylistEntry.starts_at must be timezone-aware")

    @property
    def shift_us(self) -> int:
        """Microseconds added to every ``Timestamp`` of the recording."""
        first = self.recording.first_timestamp_us
        if self.starts_at is None or first is None:
            return 0
        return _datetime_us(self.starts_at) - first


def back_to_back(
    recordings: Iterable[Recording | str],
    *,
    start: datetime,
    gap: timedelta,
    fresh_ids: bool = False,
) -> list[PlaylistEntry]:
    """Schedule recordings one after another from ``start``, ``gap`` apart (a working day).

    ``fresh_ids`` makes every entry a call of its own (see `PlaylistEntry`).
    """
    entries: list[PlaylistEntry] = []
    at = start
    for item in recordings:
        recording = load_recording(item) if isinstance(item, str) else item
        entries.append(PlaylistEntry(recording, at, fresh_ids=fresh_ids))
        first, last = recording.first_timestamp_us, recording.last_timestamp_us
        length = timedelta(microseconds=last - first) if first and last else timedelta()
        at = at + length + gap
    return entries


def _parse_timestamp(value: str | None) -> int | None:
    if not value:
        return None
    seconds, _, fraction = value.partition(".")
    if not seconds.isdigit() or (fraction and not fraction.isdigit()):
        return None
    return int(seconds) * 1_000_000 + int((fraction + "000000")[:6])


def _format_timestamp(us: int) -> str:
    return f"{us // 1_000_000}.{us % 1_000_000:06d}"


def _datetime_us(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


# --- identifiers of a fresh call -----------------------------------------------------------

# ``1795397596.3``: Unix seconds of the channel's creation, a dot, a counter of the whole PBX
# (a system name may come first). ``PJSIP/2001-0000000b``, ``Local/110@pstn-00000004;1``: the
# channel driver's own counter in 8 hex digits, shared by the two halves of a Local pair.
_UNIQUEID = re.compile(r"^(?P<head>.*?)(?P<seconds>[0-9]+)\.(?P<counter>[0-9]+)$")
_CHANNEL_SEQUENCE = re.compile(r"^(?P<head>[^/]+/.+-)(?P<seq>[0-9a-f]{8})(?P<tail>;[12])?$")
_ID_KEYS: Final = ("Uniqueid", "Linkedid")
_BRIDGE_NAMESPACE: Final = uuid.UUID("0b6f3a4e-2f7d-4c55-9a71-3b1d5e0c6a42")


def _id_kind(key: str) -> str | None:
    """Say which identifier a field holds: ``call`` (Uniqueid/Linkedid), ``bridge``, ``channel``."""
    if key == "BridgeUniqueid":
        return "bridge"
    if key.endswith(_ID_KEYS):
        return "call"
    if key.endswith("Channel"):
        return "channel"
    return None


class _Numbering:
    """The counters of the PBX, continued past every identifier in the playlist.

    Asterisk numbers a new channel with the next value of its counters; a fresh entry takes its
    identifiers from here, so that they never meet those of another entry.
    """

    def __init__(self, recordings: Iterable[Recording]) -> None:
        self._counter = 0
        self._sequences: dict[str, int] = {}
        for recording in recordings:
            for item in recording.events:
                for key, value in item.message.fields:
                    kind = _id_kind(key)
                    if kind == "call" and (found := _UNIQUEID.match(value)):
                        self._counter = max(self._counter, int(found["counter"]) + 1)
                    elif kind == "channel" and (found := _CHANNEL_SEQUENCE.match(value)):
                        tech = found["head"].split("/", 1)[0]
                        seq = int(found["seq"], 16) + 1
                        self._sequences[tech] = max(self._sequences.get(tech, 0), seq)

    def renumber(self, recording: Recording, *, index: int, shift_us: int) -> Recording:
        """Return ``recording`` as a new call: every identifier replaced, consistently."""
        names: dict[tuple[str, str], str] = {}
        named = {
            (kind, value)
            for item in recording.events
            for key, value in item.message.fields
            if (kind := _id_kind(key)) is not None and value
        }

        def renamed(kind: str | None, old: str) -> str:
            if kind is None or not old:
                return old
            channel = _CHANNEL_SEQUENCE.match(old) if kind == "channel" else None
            if kind == "channel" and channel is None:
                return old
            if channel is not None:
                # Both halves of a Local pair carry the one sequence number.
                kind, old = "sequence", f"{channel['head'].split('/', 1)[0]}/{channel['seq']}"
            if (kind, old) not in names:
                names[kind, old] = self._new_name(kind, old, index=index, shift_us=shift_us)
            if channel is not None:
                return f"{channel['head']}{names[kind, old]}{channel['tail'] or ''}"
            return names[kind, old]

        events: list[RecordedEvent] = []
        for item in recording.events:
            fields: list[tuple[str, str]] = []
            for key, value in item.message.fields:
                kind = _id_kind(key)
                if key == "Value":
                    # VarSet of BRIDGEPEER, DIALEDPEERNAME ...: an identifier of this call.
                    kind = next((k for k in ("channel", "call") if (k, value) in named), None)
                fields.append((key, renamed(kind, value)))
            events.append(RecordedEvent(AmiMessage(fields), item.timestamp_us))
        return Recording(recording.name, tuple(events))

    def _new_name(self, kind: str, old: str, *, index: int, shift_us: int) -> str:
        if kind == "bridge":
            return str(uuid.uuid5(_BRIDGE_NAMESPACE, f"{index}:{old}"))
        if kind == "sequence":
            tech = old.split("/", 1)[0]
            number = self._sequences.get(tech, 0)
            self._sequences[tech] = number + 1
            return f"{number:08x}"
        found = _UNIQUEID.match(old)
        if found is None:
            return f"{old}-{index}"
        seconds = (int(found["seconds"]) * 1_000_000 + shift_us) // 1_000_000
        self._counter += 1
        return f"{found['head']}{seconds}.{self._counter - 1}"


def _as_replayed(entries: Sequence[PlaylistEntry]) -> list[Recording]:
    numbering = _Numbering(e.recording for e in entries)
    return [
        numbering.renumber(e.recording, index=i, shift_us=e.shift_us)
        if e.fresh_ids
        else e.recording
        for i, e in enumerate(entries)
    ]


# --- the PBX's state ------------------------------------------------------------------------


@dataclass(slots=True)
class _Channel:
    snapshot: dict[str, str]
    created_us: int | None
    application: str = ""
    application_data: str = ""
    bridge_id: str = ""

    @property
    def name(self) -> str:
        return self.snapshot["Channel"]

    @property
    def linkedid(self) -> str:
        return self.snapshot.get("Linkedid", "")

    @property
    def device(self) -> str:
        return _device_of(self.name)


def _device_of(channel: str) -> str:
    """Name the device of a channel: ``PJSIP/2001-0000000b`` is on ``PJSIP/2001``."""
    base = channel.split(";", 1)[0]
    head, sep, _ = base.rpartition("-")
    return head if sep else base


def _local_partner(channel: str) -> str | None:
    if channel.startswith("Local/") and channel[-2:] in (";1", ";2"):
        return channel[:-1] + ("2" if channel.endswith("1") else "1")
    return None


class _PbxState:
    """What the replay has made live, the calls a ``Hangup`` action cut, what sessions saw."""

    def __init__(self) -> None:
        self.channels: dict[str, _Channel] = {}
        self.dials: dict[tuple[str, str], AmiMessage] = {}
        self.bridges: dict[str, dict[str, str]] = {}
        self.devices: dict[str, str] = {}
        self.contacts: dict[str, tuple[AmiMessage, int | None]] = {}
        self.cut_linkedids: set[str] = set()
        self.cut_devices: set[str] = set()
        self.bridge_linkedids: dict[str, frozenset[str]] = {}
        self.answered: dict[str, int | None] = {}
        self.ended: dict[str, int | None] = {}
        self.shown: set[str] = set()
        self.listed: set[str] = set()
        self.dial_shown_at: dict[str, float] = {}
        self.hung_up: list[str] = []

    def begin_entry(self, bridge_linkedids: dict[str, frozenset[str]]) -> None:
        # Recordings repeat Linkedids when replayed twice; a cut belongs to one entry.
        self.cut_linkedids.clear()
        self.cut_devices.clear()
        self.bridge_linkedids = bridge_linkedids

    def is_suppressed(self, message: AmiMessage) -> bool:
        if not self.cut_linkedids:
            return False
        event = message.event
        if event == "DeviceStateChange":
            return message.get("Device") in self.cut_devices
        if event in ("BridgeCreate", "BridgeDestroy"):
            linked = self.bridge_linkedids.get(message.get("BridgeUniqueid") or "")
            return linked is not None and bool(linked) and linked <= self.cut_linkedids
        linkedid = (
            message.get("Linkedid")
            or message.get("LocalOneLinkedid")
            or message.get("DestLinkedid")
        )
        return linkedid in self.cut_linkedids

    def observe(self, message: AmiMessage, timestamp_us: int | None) -> None:
        event = message.event
        channel = self._update_snapshot(message, "", timestamp_us)
        if "DestChannel" in message:
            self._update_snapshot(message, "Dest", timestamp_us)
        if event == "LocalBridge":
            self._update_snapshot(message, "LocalOne", timestamp_us)
            self._update_snapshot(message, "LocalTwo", timestamp_us)
        if event == "Newchannel" and channel is not None:
            self.cut_devices.discard(channel.device)
        elif event == "Newstate" and channel is not None:
            if message.get("ChannelStateDesc") == "Up":
                self.answered.setdefault(channel.name, timestamp_us)
        elif event == "Newexten" and channel is not None:
            channel.application = message.get("Application") or ""
            channel.application_data = message.get("AppData") or ""
        elif event in ("BridgeCreate", "BridgeEnter", "BridgeLeave"):
            bridge_id = message.get("BridgeUniqueid") or ""
            self.bridges[bridge_id] = {k: message.get(k) or "" for k in _BRIDGE_KEYS}
            if channel is not None and event != "BridgeCreate":
                channel.bridge_id = bridge_id if event == "BridgeEnter" else ""
        elif event == "BridgeDestroy":
            self.bridges.pop(message.get("BridgeUniqueid") or "", None)
        elif event == "DialBegin":
            key = (message.get("Channel") or "", message.get("DestChannel") or "")
            self.dials[key] = message
        elif event == "DialEnd":
            self.dials.pop((message.get("Channel") or "", message.get("DestChannel") or ""), None)
        elif event == "DeviceStateChange":
            self.devices[message.get("Device") or ""] = message.get("State") or ""
        elif event == "ContactStatus":
            uri = message.get("URI") or ""
            if message.get("ContactStatus") == "Removed":
                self.contacts.pop(uri, None)
            else:
                self.contacts[uri] = (message, timestamp_us)
        elif event == "Hangup" and channel is not None:
            self.ended[channel.name] = timestamp_us
            self._forget(channel.name)

    def _update_snapshot(
        self, message: AmiMessage, prefix: str, timestamp_us: int | None
    ) -> _Channel | None:
        name = message.get(prefix + "Channel")
        if not name or message.get(prefix + "Uniqueid") is None:
            return None
        channel = self.channels.get(name)
        if channel is None:
            if message.event == "Hangup" and not prefix:
                return None
            channel = _Channel(dict.fromkeys(_SNAPSHOT_KEYS, ""), timestamp_us)
            self.channels[name] = channel
        snapshot = channel.snapshot
        for key in _SNAPSHOT_KEYS:
            value = message.get(prefix + key)
            if value is not None:
                snapshot[key] = value
        return channel

    def _forget(self, name: str) -> None:
        self.channels.pop(name, None)
        for key in [k for k in self.dials if name in k]:
            del self.dials[key]

    def cut_call(
        self, target_name: str, cause: int, stamps: Iterable[int] | None
    ) -> list[list[tuple[str, str]]]:
        """Hang up the call of a live channel as Asterisk does; return the events' fields."""
        stamp_iter = iter(stamps) if stamps is not None else None

        def header(event: str) -> list[tuple[str, str]]:
            fields = [("Event", event), ("Privilege", "call,all")]
            if stamp_iter is not None:
                fields.append(("Timestamp", _format_timestamp(next(stamp_iter))))
            return fields

        target = self.channels[target_name]
        linkedid = target.linkedid
        self.hung_up.append(target_name)
        members = [c for c in self.channels.values() if c.linkedid == linkedid]
        member_names = {c.name for c in members}
        events: list[list[tuple[str, str]]] = []
        dialling: list[_Channel] = []
        for key in [k for k in self.dials if k[0] in member_names or k[1] in member_names]:
            caller, dest = self.channels.get(key[0]), self.channels.get(key[1])
            del self.dials[key]
            if caller is None or dest is None:
                continue
            events.append(
                header("DialEnd")
                + _snapshot_fields(caller, "")
                + _snapshot_fields(dest, "Dest")
                + [("DialStatus", "NOANSWER")]
            )
            if dest is target:
                dialling.append(caller)
        partner_name = _local_partner(target_name)
        partner = self.channels.get(partner_name) if partner_name in member_names else None
        if partner is None:
            others = [c for c in members if c is not target]
            self._cut_channel(target, others, dialling, cause, header=header, events=events)
            return self._devices_free([target, *others], linkedid, header, events)
        # Asterisk queues the hangup to the other half of a Local pair (see the recording).
        requested = partner or target
        events.append(
            header("HangupRequest") + _snapshot_fields(requested, "") + [("Cause", str(cause))]
        )
        order = [target, *([partner] if partner else [])]
        order += [c for c in members if c not in order]
        cause_text = _CAUSE_TEXT.get(cause, "Unknown")
        for channel in order:
            if channel.bridge_id:
                events.extend(self._leave_bridge(channel, header))
            events.append(
                header("Hangup")
                + _snapshot_fields(channel, "")
                + [("Cause", str(cause)), ("Cause-txt", cause_text)]
            )
            self._forget(channel.name)
        return self._devices_free(order, linkedid, header, events)

    def _cut_channel(
        self,
        target: _Channel,
        others: list[_Channel],
        dialling: list[_Channel],
        cause: int,
        *,
        header: Callable[[str], list[tuple[str, str]]],
        events: list[list[tuple[str, str]]],
    ) -> None:
        """Hang up a channel that is not half of a Local pair (a PJSIP phone or trunk leg).

        As a real Asterisk 22 does (tests/pbx): no HangupRequest; a caller whose Dial to the
        target fails is asked to hang up (its dialplan goes on to Hangup) and ends with the
        target's cause; a bridged peer is left alone in the bridge and ends normally (16).
        PJSIP channels carry the SIP code of their cause in TechCause.
        """
        events.extend(
            header("SoftHangupRequest") + _snapshot_fields(caller, "") + [("Cause", "16")]
            for caller in dialling
        )
        if target.bridge_id:
            events.extend(self._leave_bridge(target, header))
        events.append(_hangup_fields(target, cause, header))
        self._forget(target.name)
        for channel in others:
            if channel in dialling:
                events.append(_hangup_fields(channel, cause, header))
            else:
                if channel.bridge_id:
                    leave, *destroy = self._leave_bridge(channel, header)
                    events.append(leave)
                    events.append(
                        header("SoftHangupRequest")
                        + _snapshot_fields(channel, "")
                        + [("Cause", "16")]
                    )
                    events.extend(destroy)
                events.append(_hangup_fields(channel, 16, header))
            self._forget(channel.name)

    def _devices_free(
        self,
        order: list[_Channel],
        linkedid: str,
        header: Callable[[str], list[tuple[str, str]]],
        events: list[list[tuple[str, str]]],
    ) -> list[list[tuple[str, str]]]:
        devices = dict.fromkeys(c.device for c in order)
        for device in devices:
            if any(c.device == device for c in self.channels.values()):
                continue
            self.devices[device] = "NOT_INUSE"
            events.append(
                [*header("DeviceStateChange"), ("Device", device), ("State", "NOT_INUSE")]
            )
        self.cut_linkedids.add(linkedid)
        self.cut_devices.update(devices)
        return events

    def _leave_bridge(
        self, channel: _Channel, header: Callable[[str], list[tuple[str, str]]]
    ) -> list[list[tuple[str, str]]]:
        bridge_id = channel.bridge_id
        channel.bridge_id = ""
        bridge = self.bridges.get(bridge_id)
        if bridge is None:
            return []
        remaining = sum(1 for c in self.channels.values() if c.bridge_id == bridge_id)
        bridge["BridgeNumChannels"] = str(remaining)
        events = [header("BridgeLeave") + list(bridge.items()) + _snapshot_fields(channel, "")]
        if remaining == 0:
            del self.bridges[bridge_id]
            events.append(header("BridgeDestroy") + list(bridge.items()))
        return events


def _hangup_fields(
    channel: _Channel, cause: int, header: Callable[[str], list[tuple[str, str]]]
) -> list[tuple[str, str]]:
    fields = [
        *header("Hangup"),
        *_snapshot_fields(channel, ""),
        ("Cause", str(cause)),
        ("Cause-txt", _CAUSE_TEXT.get(cause, "Unknown")),
    ]
    sip_code = _SIP_CODE.get(cause)
    if channel.name.startswith("PJSIP/") and sip_code is not None:
        fields.append(("TechCause", str(sip_code)))
    return fields


def _snapshot_fields(channel: _Channel, prefix: str) -> list[tuple[str, str]]:
    return [(prefix + key, channel.snapshot.get(key, "")) for key in _SNAPSHOT_KEYS]


def _bridge_linkedids(recording: Recording) -> dict[str, frozenset[str]]:
    found: dict[str, set[str]] = {}
    for item in recording.events:
        if item.message.event == "BridgeEnter":
            bridge = item.message.get("BridgeUniqueid") or ""
            found.setdefault(bridge, set()).add(item.message.get("Linkedid") or "")
    return {bridge: frozenset(ids) for bridge, ids in found.items()}


# --- the server -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReceivedAction:
    """An action the server received: its name, all its fields, the session, when (loop time)."""

    session: int
    name: str
    message: AmiMessage
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class _Scheduled:
    entry: int
    message: AmiMessage
    wire: bytes
    timestamp_us: int | None
    privilege: frozenset[str]


@dataclass(eq=False, slots=True)
class _Session:
    number: int
    writer: asyncio.StreamWriter
    authenticated: bool = False
    caught_up: bool = False
    event_classes: frozenset[str] | None = None
    half_open: bool = False

    def send(self, data: bytes) -> None:
        if not self.half_open and not self.writer.is_closing():
            self.writer.write(data)

    @property
    def listening(self) -> bool:
        return self.authenticated and not self.half_open and not self.writer.is_closing()

    def wants(self, privilege: frozenset[str]) -> bool:
        classes = self.event_classes
        if classes is None or not self.listening:
            return False
        return "all" in classes or bool(classes & privilege)


@dataclass(slots=True)
class _Waiter:
    predicate: Callable[[], bool]
    future: asyncio.Future[None] = field(repr=False)


class SimulatedPbx:
    """An AMI server on loopback that replays recorded Asterisk sessions."""

    def __init__(
        self,
        playlist: Sequence[PlaylistEntry | Recording | str] = (),
        *,
        username: str = "pbxguard",
        secret: str,
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float = 0.0,
        wait_for_client: bool = True,
        caught_up_after: str | None = None,
        auth_failure_delay: float = 0.0,
        write_buffer_limit: int = 4 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
        pause_after: Callable[[AmiMessage], bool] | None = None,
    ) -> None:
        """Prepare the server; :meth:`start` binds it.

        ``speed`` scales the recorded gaps between events (1.0 real time, 0.01 a hundred times
        faster, 0 no waiting). With ``wait_for_client`` the replay holds still while no
        session is logged in with events on; with ``caught_up_after`` too, a session counts
        only once it has sent that action after its login (``CoreShowChannels`` for a client
        that catches up with the live channels; ``PJSIPShowContacts``, the last action of
        pbxguard's resync): the replay compresses the PBX's time but not a client's start-up,
        and a whole recorded call must not pass while a restarted client is still catching
        up.
        Asterisk sleeps a second before refusing a login;
        ``auth_failure_delay`` does the same (0 by default to keep tests fast). A session whose
        unsent output exceeds ``write_buffer_limit`` is dropped, as Asterisk's
        ``writetimeout`` does. ``clock`` gives Unix time when no recording has set the time.
        ``pause_after`` is :meth:`pause_after` set before anything can be replayed.
        """
        if speed < 0:
            raise ConfigError(f"speed must not be negative, got {speed}")
        self._entries = [self._entry(item) for item in playlist]
        self._recordings = _as_replayed(self._entries)
        self._username = username
        self._secret = secret
        self._host = host
        self._requested_port = port
        self._speed = speed
        self._wait_for_client = wait_for_client
        self._caught_up_after = (caught_up_after or "").lower()
        self._auth_failure_delay = auth_failure_delay
        self._write_buffer_limit = write_buffer_limit
        self._clock = clock
        self._schedule = self._build_schedule()
        self._bridge_ids = [_bridge_linkedids(r) for r in self._recordings]
        self._state = _PbxState()
        self._server: asyncio.Server | None = None
        self._replay_task: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._sessions: set[_Session] = set()
        self._session_numbers = itertools.count(1)
        self._waiters: list[_Waiter] = []
        self._started_at = 0.0
        self._clock_us: int | None = None
        self._clock_at = 0.0
        self._next_us: int | None = None
        self._drop_at: int | None = None
        self._lost_while_away = 0
        self._away_budget = 0
        self._done = False
        self._pause_match = pause_after
        self._paused = False
        self._drop_at_hangup: tuple[bool, int] | None = None
        self._port = 0
        self.actions: list[ReceivedAction] = []
        """Every action received, in order."""
        self.connections = 0
        """TCP connections accepted."""
        self.connection_times: list[float] = []
        """Event-loop time of each accepted connection."""
        self.logins = 0
        """Successful logins."""
        self.failed_logins = 0
        """Refused logins."""
        self.events_sent = 0
        """Replayed events delivered to at least one session."""
        self.events_replayed = 0
        """Replayed events the PBX went through, delivered or not (cut calls excluded)."""

    @staticmethod
    def _entry(item: PlaylistEntry | Recording | str) -> PlaylistEntry:
        if isinstance(item, PlaylistEntry):
            return item
        if isinstance(item, Recording):
            return PlaylistEntry(item)
        return PlaylistEntry(load_recording(item))

    def _build_schedule(self) -> list[_Scheduled]:
        schedule: list[_Scheduled] = []
        for index, (entry, recording) in enumerate(
            zip(self._entries, self._recordings, strict=True)
        ):
            shift = entry.shift_us
            for item in recording.events:
                message = item.message
                # FullyBooted went to the capturing client at its login; the server sends its
                # own after each Login instead.
                if message.event == "FullyBooted":
                    continue
                stamp = item.timestamp_us
                if shift and stamp is not None:
                    stamp += shift
                    message = AmiMessage(
                        [
                            (k, _format_timestamp(stamp) if k == "Timestamp" else v)
                            for k, v in message.fields
                        ]
                    )
                privilege = frozenset(
                    p.strip() for p in (message.get("Privilege") or "").split(",") if p.strip()
                )
                schedule.append(
                    _Scheduled(index, message, encode_message(message.fields), stamp, privilege)
                )
        return schedule

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The TCP port, known after :meth:`start`."""
        return self._port

    async def start(self) -> None:
        """Bind the listening socket and start the replay."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._serve, self._host, self._requested_port)
        self._port = self._server.sockets[0].getsockname()[1]
        self._started_at = asyncio.get_running_loop().time()
        self._replay_task = asyncio.create_task(self._replay(), name="simulated-pbx-replay")
        log.info("simulator.listening", host=self._host, port=self._port)

    async def close(self) -> None:
        """Stop listening, end the replay and close every session."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        if self._replay_task is not None:
            self._replay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replay_task
            self._replay_task = None
        for session in list(self._sessions):
            session.writer.close()
        if self._handlers:
            # A session whose peer stopped reading may never finish flushing: give them all a
            # moment, then cancel the stragglers so closing the PBX never hangs.
            _, pending = await asyncio.wait(set(self._handlers), timeout=_CLOSE_GRACE)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
        for waiter in self._waiters:
            waiter.future.cancel()
        self._waiters.clear()
        self._paused = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- observation ----------------------------------------------------------------------

    async def finished(self) -> None:
        """Wait until every event of the playlist has been replayed."""
        await self._wait_until(lambda: self._done)

    async def wait_for_action(self, name: str, count: int = 1) -> ReceivedAction:
        """Wait until ``count`` actions named ``name`` (any case) arrived; return the last."""
        wanted = name.lower()

        def matching() -> list[ReceivedAction]:
            return [a for a in self.actions if a.name.lower() == wanted]

        await self._wait_until(lambda: len(matching()) >= count)
        return matching()[count - 1]

    async def wait_for_logins(self, count: int) -> None:
        """Wait until ``count`` logins have succeeded since the server started."""
        await self._wait_until(lambda: self.logins >= count)

    async def wait_for_events_sent(self, count: int) -> None:
        """Wait until ``count`` replayed events have been delivered."""
        await self._wait_until(lambda: self.events_sent >= count)

    async def wait_for_connections(self, count: int) -> None:
        """Wait until ``count`` TCP connections have been accepted."""
        await self._wait_until(lambda: self.connections >= count)

    def actions_named(self, name: str) -> list[ReceivedAction]:
        """Return the actions received with this name (any case)."""
        return [a for a in self.actions if a.name.lower() == name.lower()]

    @property
    def live_channels(self) -> list[str]:
        """Channels live in the replay so far, oldest first."""
        return list(self._state.channels)

    @property
    def recordings(self) -> list[Recording]:
        """The playlist's recordings as replayed: fresh entries with the identifiers given."""
        return list(self._recordings)

    @property
    def listed_channels(self) -> frozenset[str]:
        """Channels a ``CoreShowChannels`` listing showed a session."""
        return frozenset(self._state.listed)

    @property
    def hung_up(self) -> list[str]:
        """Channels whose call a ``Hangup`` action ended, in order."""
        return list(self._state.hung_up)

    @property
    def shown_channels(self) -> frozenset[str]:
        """Channels a logged-in session was told of: in an event it got, or a channel list."""
        return frozenset(self._state.shown)

    @property
    def dial_shown_at(self) -> dict[str, float]:
        """When (loop time) a session was first sent the ``DialBegin`` to each channel."""
        return dict(self._state.dial_shown_at)

    @property
    def answered_channels(self) -> frozenset[str]:
        """Channels the replay took to ``Up`` (answered), whether anyone was listening or not."""
        return frozenset(self._state.answered)

    def talk_time(self, channel: str) -> timedelta | None:
        """How long a channel talked by the PBX's clock: its ``Up`` to its ``Hangup``.

        None when it was never answered, has not ended, or the recording has no timestamps.
        """
        answered, ended = self._state.answered.get(channel), self._state.ended.get(channel)
        if answered is None or ended is None:
            return None
        return timedelta(microseconds=ended - answered)

    @property
    def device_states(self) -> dict[str, str]:
        """The last known state of every device."""
        return dict(self._state.devices)

    @property
    def session_count(self) -> int:
        """Open sessions, logged in or not."""
        return len(self._sessions)

    # -- fault injection ------------------------------------------------------------------

    def drop_connections_after(self, events: int, *, lost_while_away: int = 0) -> None:
        """Close every session once ``events`` more events have been delivered.

        The replay then goes on where it was for the next session; the first
        ``lost_while_away`` events after the drop happen while nobody is connected, so the
        client only learns of them through its resynchronisation.
        """
        self._drop_at = self.events_sent + events
        self._lost_while_away = lost_while_away

    def drop_connections(self, *, lost_while_away: int = 0) -> None:
        """Close every session now (see :meth:`drop_connections_after`)."""
        self._drop_at = None
        self._away_budget = lost_while_away
        for session in list(self._sessions):
            session.writer.close()
        self._notify()

    def drop_at_next_hangup(self, *, carried_out: bool, lost_while_away: int = 0) -> None:
        """Break every connection when the next ``Hangup`` action for a live channel arrives.

        The connection is cut with the action, before any reply: with ``carried_out`` the PBX
        hangs the call up all the same (the client never hears of it but through its
        resynchronisation), without it the action is lost. ``lost_while_away`` is as for
        :meth:`drop_connections_after`.
        """
        self._drop_at_hangup = (carried_out, lost_while_away)

    def _abort_sessions(self, lost_while_away: int) -> None:
        self._drop_at = None
        self._away_budget = lost_while_away
        for session in list(self._sessions):
            # Unlike close(), abort() throws away what is still buffered: a broken connection.
            session.writer.transport.abort()
        self._notify()

    def pause_after(self, match: Callable[[AmiMessage], bool]) -> None:
        """Hold the replay right after the next replayed event for which ``match`` is true."""
        self._pause_match = match

    @property
    def paused(self) -> bool:
        """Whether the replay is held by :meth:`pause_after`."""
        return self._paused

    async def wait_until_paused(self) -> None:
        """Wait until the replay is held by :meth:`pause_after`."""
        await self._wait_until(lambda: self._paused)

    def resume(self) -> None:
        """Let a held replay go on."""
        self._paused = False
        self._notify()

    def make_half_open(self) -> None:
        """Make the current sessions half-open: nothing more is written to them, no reply.

        New connections behave normally.
        """
        for session in self._sessions:
            session.half_open = True
        self._notify()

    # -- replay ---------------------------------------------------------------------------

    def _listeners(self) -> list[_Session]:
        return [
            s
            for s in self._sessions
            if s.listening
            and s.event_classes is not None
            and (s.caught_up or not self._caught_up_after)
        ]

    async def _replay(self) -> None:
        loop = asyncio.get_running_loop()
        due: float | None = None
        previous_us: int | None = None
        entry = -1
        for position, item in enumerate(self._schedule, start=1):
            if item.entry != entry:
                entry = item.entry
                self._state.begin_entry(self._bridge_ids[entry])
            # Until this event is out, the PBX's clock must not run past it.
            self._next_us = item.timestamp_us
            stamp = item.timestamp_us
            if (
                self._speed > 0
                and due is not None
                and previous_us is not None
                and stamp is not None
            ):
                due += max(0, stamp - previous_us) / 1e6 * self._speed
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            if self._wait_for_client and not self._away_budget and not self._listeners():
                await self._wait_until(lambda: bool(self._away_budget or self._listeners()))
                due = None
            self._next_us = None
            played = self._play(item)
            if item.timestamp_us is not None:
                previous_us = item.timestamp_us
            if due is None:
                due = loop.time()
            match = self._pause_match
            if played and match is not None and match(item.message):
                self._pause_match = None
                self._paused = True
                self._notify()
                await self._wait_until(lambda: not self._paused)
                due = None
            # Let sessions read and answer actions between events, even at full speed; at full
            # speed events go out in bursts, as Asterisk writes them under load.
            if self._speed > 0 or position % _BURST == 0:
                await asyncio.sleep(0)
        self._done = True
        self._notify()
        log.info("simulator.playlist_finished", events=self.events_replayed)

    def _play(self, item: _Scheduled) -> bool:
        state = self._state
        if state.is_suppressed(item.message):
            return False
        state.observe(item.message, item.timestamp_us)
        if item.timestamp_us is not None:
            self._clock_us = item.timestamp_us
            self._clock_at = asyncio.get_running_loop().time()
        self.events_replayed += 1
        if self._away_budget:
            self._away_budget -= 1
            self._notify()
            return True
        if self._broadcast(item.wire, item.privilege, item.message):
            self.events_sent += 1
            if self._drop_at is not None and self.events_sent >= self._drop_at:
                self.drop_connections(lost_while_away=self._lost_while_away)
        self._notify()
        return True

    def _broadcast(
        self, wire: bytes, privilege: frozenset[str], message: AmiMessage | None = None
    ) -> bool:
        delivered = False
        for session in list(self._sessions):
            if not session.wants(privilege):
                continue
            session.send(wire)
            delivered = True
            transport = session.writer.transport
            if transport.get_write_buffer_size() > self._write_buffer_limit:
                log.warning("simulator.client_too_slow", session=session.number)
                session.writer.close()
        if delivered and message is not None:
            self._state.shown.update(name for key in _CHANNEL_KEYS if (name := message.get(key)))
            if message.event == "DialBegin":
                dest = message.get("DestChannel") or ""
                at = asyncio.get_running_loop().time()
                self._state.dial_shown_at.setdefault(dest, at)
        return delivered

    def _now_us(self) -> int:
        """The PBX's current time: the replay's clock, run on by ``speed`` between events."""
        if self._clock_us is None:
            return int(self._clock() * 1_000_000)
        now = self._clock_us
        if self._speed > 0:
            elapsed = asyncio.get_running_loop().time() - self._clock_at
            now += int(elapsed / self._speed * 1_000_000)
        if self._next_us is not None:
            now = min(now, max(self._clock_us, self._next_us - 1_000))
        return now

    # -- connections and actions ----------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        self.connections += 1
        self.connection_times.append(asyncio.get_running_loop().time())
        session = _Session(next(self._session_numbers), writer)
        self._sessions.add(session)
        self._notify()
        parser = AmiParser(expect_banner=False)
        try:
            session.send(BANNER)
            while not writer.is_closing():
                data = await reader.read(_READ_SIZE)
                if not data:
                    break
                parser.receive_data(data)
                if not await self._handle_messages(session, parser):
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            self._sessions.discard(session)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
            self._notify()

    async def _handle_messages(self, session: _Session, parser: AmiParser) -> bool:
        while True:
            try:
                message = parser.next_message()
            except AmiFrameTooLarge as exc:
                log.warning("simulator.frame_too_large", error=str(exc))
                continue
            if message is NEED_DATA:
                return True
            if isinstance(message, Banner):
                continue
            if isinstance(message, MalformedMessage):
                # Asterisk ignores header lines it cannot split and runs what remains.
                if message.salvaged is None:
                    continue
                message = message.salvaged
            if not await self._act(session, message):
                return False

    async def _act(self, session: _Session, message: AmiMessage) -> bool:
        name = message.get("Action") or ""
        self.actions.append(
            ReceivedAction(session.number, name, message, asyncio.get_running_loop().time())
        )
        self._notify()
        if session.half_open:
            return True
        action = name.lower()
        if not action:
            self._reply(session, message, "Error", [("Message", "Missing action in request")])
            return True
        if action == "login":
            return await self._login(session, message)
        if action == "logoff":
            self._reply(session, message, "Goodbye", [("Message", "Thanks for all the fish.")])
            return False
        if not session.authenticated:
            self._reply(session, message, "Error", [("Message", "Permission denied")])
            return True
        if action == self._caught_up_after:
            # Counted once the answer is out: what follows comes after it, as in Asterisk.
            asyncio.get_running_loop().call_soon(self._caught_up, session)
        match action:
            case "ping":
                self._ping(session, message)
            case "coreshowchannels":
                self._core_show_channels(session, message)
            case "devicestatelist":
                self._device_state_list(session, message)
            case "pjsipshowcontacts":
                self._pjsip_show_contacts(session, message)
            case "hangup":
                self._hangup(session, message)
            case "playdtmf":
                self._play_dtmf(session, message)
            case _:
                self._reply(
                    session,
                    message,
                    "Error",
                    [
                        (
                            "Message",
                            f"Invalid/unknown command: {name}. Use Action: ListCommands to "
                            "show available commands.",
                        )
                    ],
                )
        return True

    def _caught_up(self, session: _Session) -> None:
        session.caught_up = True
        self._notify()

    def _reply(
        self,
        session: _Session,
        request: AmiMessage,
        response: str,
        fields: Sequence[tuple[str, str]] = (),
    ) -> None:
        head = [("Response", response)]
        action_id = request.get("ActionID")
        if action_id:
            head.append(("ActionID", action_id))
        session.send(encode_message([*head, *fields]))

    async def _login(self, session: _Session, message: AmiMessage) -> bool:
        if session.authenticated:
            self._reply(session, message, "Success", [("Message", "Already authenticated")])
            return True
        if message.get("Username") != self._username or message.get("Secret") != self._secret:
            self.failed_logins += 1
            self._notify()
            log.info("simulator.login_refused", session=session.number)
            if self._auth_failure_delay:
                await asyncio.sleep(self._auth_failure_delay)
            self._reply(session, message, "Error", [("Message", "Authentication failed")])
            return False
        session.event_classes = _event_classes(message.get("Events"))
        session.authenticated = True
        self.logins += 1
        self._reply(session, message, "Success", [("Message", "Authentication accepted")])
        if session.wants(frozenset({"system"})):
            uptime = str(int(asyncio.get_running_loop().time() - self._started_at))
            session.send(
                encode_message(
                    [
                        ("Event", "FullyBooted"),
                        ("Privilege", "system,all"),
                        ("Uptime", uptime),
                        ("LastReload", uptime),
                        ("Status", "Fully Booted"),
                    ]
                )
            )
        self._notify()
        return True

    def _ping(self, session: _Session, message: AmiMessage) -> None:
        self._reply(
            session,
            message,
            "Success",
            [("Ping", "Pong"), ("Timestamp", _format_timestamp(self._now_us()))],
        )

    def _list_start(self, session: _Session, message: AmiMessage, text: str) -> None:
        self._reply(session, message, "Success", [("EventList", "start"), ("Message", text)])

    def _list_item(self, message: AmiMessage, event: str) -> list[tuple[str, str]]:
        action_id = message.get("ActionID")
        return [("Event", event), *([("ActionID", action_id)] if action_id else [])]

    def _list_complete(self, session: _Session, message: AmiMessage, event: str, n: int) -> None:
        fields = [*self._list_item(message, event), ("EventList", "Complete")]
        session.send(encode_message([*fields, ("ListItems", str(n))]))

    def _core_show_channels(self, session: _Session, message: AmiMessage) -> None:
        self._list_start(session, message, "Channels will follow")
        now = self._now_us()
        channels = list(self._state.channels.values())
        self._state.shown.update(c.name for c in channels)
        self._state.listed.update(c.name for c in channels)
        for channel in channels:
            duration = ""
            if channel.created_us is not None:
                seconds = max(0, (now - channel.created_us) // 1_000_000)
                duration = f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
            session.send(
                encode_message(
                    [
                        *self._list_item(message, "CoreShowChannel"),
                        *_snapshot_fields(channel, ""),
                        ("Application", channel.application),
                        ("ApplicationData", channel.application_data),
                        ("Duration", duration),
                        ("BridgeId", channel.bridge_id),
                    ]
                )
            )
        self._list_complete(session, message, "CoreShowChannelsComplete", len(channels))

    def _device_state_list(self, session: _Session, message: AmiMessage) -> None:
        self._list_start(session, message, "Device State Changes will follow")
        devices = self._state.devices
        for device, state in devices.items():
            session.send(
                encode_message(
                    [
                        *self._list_item(message, "DeviceStateChange"),
                        ("Device", device),
                        ("State", state),
                    ]
                )
            )
        self._list_complete(session, message, "DeviceStateListComplete", len(devices))

    def _pjsip_show_contacts(self, session: _Session, message: AmiMessage) -> None:
        contacts = self._state.contacts
        if not contacts:
            self._reply(session, message, "Error", [("Message", "No Contacts found")])
            return
        self._list_start(
            session, message, "A listing of Contacts follows, presented as ContactList events"
        )
        for uri, (status, seen_us) in contacts.items():
            session.send(
                encode_message(
                    [
                        *self._list_item(message, "ContactList"),
                        *_contact_fields(uri, status, seen_us),
                    ]
                )
            )
        self._list_complete(session, message, "ContactListComplete", len(contacts))

    def _play_dtmf(self, session: _Session, message: AmiMessage) -> None:
        # Asterisk 22's replies and their order (apps/app_senddtmf.c, manager_play_dtmf).
        channel = message.get("Channel") or ""
        if channel not in self._state.channels:
            self._reply(session, message, "Error", [("Message", "Channel not found")])
            return
        if not message.get("Digit"):
            self._reply(session, message, "Error", [("Message", "No digit specified")])
            return
        duration = message.get("Duration") or ""
        if duration and not duration.isdigit():
            self._reply(
                session, message, "Error", [("Message", "Could not convert Duration parameter")]
            )
            return
        self._reply(session, message, "Success", [("Message", "DTMF successfully queued")])

    def _hangup(self, session: _Session, message: AmiMessage) -> None:
        channel = message.get("Channel")
        if not channel:
            self._reply(session, message, "Error", [("Message", "No channel specified")])
            return
        if channel not in self._state.channels:
            self._reply(session, message, "Error", [("Message", "No such channel")])
            return
        cause_text = message.get("Cause") or "16"
        cause = int(cause_text) if cause_text.isdigit() else 16
        drop, self._drop_at_hangup = self._drop_at_hangup, None
        if drop is not None:
            carried_out, lost_while_away = drop
            # The connection breaks with the action: nothing more reaches the sessions.
            self._abort_sessions(lost_while_away)
            if not carried_out:
                log.info("simulator.hangup_lost_with_connection", channel=channel)
                return
        self._reply(session, message, "Success", [("Message", "Channel Hungup")])
        last = self._clock_us
        # Synthesised events come after everything already sent, a microsecond apart.
        now = max(self._now_us(), last + 1) if last is not None else None
        stamps = itertools.count(now) if now is not None else None
        events = self._state.cut_call(channel, cause, stamps)
        for fields in events:
            synthesised = AmiMessage(fields)
            if synthesised.event == "Hangup":
                ended = synthesised.get("Channel") or ""
                self._state.ended[ended] = _parse_timestamp(synthesised.get("Timestamp"))
            self._broadcast(encode_message(fields), frozenset({"call"}), synthesised)
        if now is not None:
            self._clock_us = now + max(len(events) - 1, 0)
            self._clock_at = asyncio.get_running_loop().time()
        self._notify()
        log.info("simulator.call_cut", channel=channel, cause=cause, events=len(events))

    # -- waiting --------------------------------------------------------------------------

    async def _wait_until(self, predicate: Callable[[], bool]) -> None:
        if predicate():
            return
        waiter = _Waiter(predicate, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            await waiter.future
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def _notify(self) -> None:
        for waiter in list(self._waiters):
            if not waiter.future.done() and waiter.predicate():
                waiter.future.set_result(None)


def _event_classes(value: str | None) -> frozenset[str] | None:
    if value is None:
        return frozenset({"all"})
    words = {w.strip().lower() for w in value.split(",") if w.strip()}
    if words & _OFF_WORDS:
        return None
    if words & _ON_WORDS:
        return frozenset({"all"})
    return frozenset(words)


def _contact_fields(uri: str, status: AmiMessage, seen_us: int | None) -> list[tuple[str, str]]:
    aor = status.get("AOR") or ""
    host_port = uri.split("@", 1)[-1].split(";", 1)[0]
    host, _, port = host_port.partition(":")
    digest = hashlib.md5(uri.encode(), usedforsecurity=False).hexdigest()
    expires = "" if seen_us is None else str(seen_us // 1_000_000 + 3600)
    # The fields and their order as Asterisk 22 lists them; "no" is how it prints booleans.
    return [
        ("ObjectType", "contact"),
        ("ObjectName", f"{aor};@{digest}"),
        ("ViaAddr", host),
        ("QualifyTimeout", "3.000000"),
        ("Qualify2xxOnly", "false"),
        ("CallId", f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:]}"),
        ("RegServer", ""),
        ("PruneOnBoot", "no"),
        ("Path", ""),
        ("Endpoint", status.get("EndpointName") or aor),
        ("ViaPort", port or "5060"),
        ("AuthenticateQualify", "no"),
        ("Uri", uri),
        ("QualifyFrequency", "60"),
        ("UserAgent", ""),
        ("ExpirationTime", expires),
        ("OutboundProxy", ""),
        ("Status", status.get("ContactStatus") or "Unknown"),
        ("RoundtripUsec", status.get("RoundtripUsec") or "0"),
    ]
