"""Turn AMI messages into the core's channel events.

Only the handful of events the tracker needs are translated; everything else (VarSet,
Newexten, RTCP, security events ...) is dropped by one dictionary look-up, which keeps the
ingest path cheap. Time comes from the ``Timestamp`` header when the PBX sends it
(``timestampevents = yes``) and from the clock otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypedDict

from pbxguard.domain.call_events import (
    ChannelCreated,
    ChannelEvent,
    ChannelHungUp,
    ChannelSeen,
    ChannelStateChanged,
    DialBegan,
    DialEnded,
)
from pbxguard.domain.endpoints import (
    ContactEntry,
    ContactStatus,
    ContactStatusChanged,
    DeviceEntry,
    DeviceState,
    DeviceStateChanged,
    EndpointEvent,
    EndpointSnapshot,
    PeerStatus,
    PeerStatusChanged,
)


class AmiFields(Protocol):
    """The part of an AMI message the translation reads."""

    def get(self, key: str, default: str | None = None) -> str | None:
        """Return the first value of ``key`` (case-insensitive)."""


def event_time(message: AmiFields, now: Callable[[], datetime]) -> datetime:
    """Return when the event happened: its Timestamp header, else the clock."""
    stamp = message.get("Timestamp")
    if stamp:
        try:
            return datetime.fromtimestamp(float(stamp), UTC)
        except (ValueError, OverflowError, OSError):
            pass
    return now()


def _s(message: AmiFields, key: str) -> str:
    return message.get(key) or ""


class _Channel(TypedDict):
    channel: str
    uniqueid: str
    linkedid: str


def _channel(m: AmiFields) -> _Channel:
    """Return the channel an event is about, its Uniqueid and its call's Linkedid.

    A channel that is not part of a larger call has no Linkedid: its own Uniqueid stands in.
    """
    uniqueid = _s(m, "Uniqueid")
    return {
        "channel": _s(m, "Channel"),
        "uniqueid": uniqueid,
        "linkedid": _s(m, "Linkedid") or uniqueid,
    }


class _Caller(TypedDict):
    caller_num: str
    caller_name: str
    exten: str


def _caller(m: AmiFields) -> _Caller:
    """Return the channel's caller ID and the extension it is at in the dialplan."""
    return {
        "caller_num": _s(m, "CallerIDNum"),
        "caller_name": _s(m, "CallerIDName"),
        "exten": _s(m, "Exten"),
    }


def _created(m: AmiFields, at: datetime) -> ChannelEvent:
    return ChannelCreated(
        at=at,
        **_channel(m),
        **_caller(m),
    )


def _new_state(m: AmiFields, at: datetime) -> ChannelEvent:
    return ChannelStateChanged(
        at=at,
        **_channel(m),
        state=_s(m, "ChannelStateDesc"),
    )


def _dial_begin(m: AmiFields, at: datetime) -> ChannelEvent:
    # An AMI Originate dials with no calling channel: only the Dest* fields are present.
    return DialBegan(
        at=at,
        **_channel(m),
        **_caller(m),
        dest_channel=_s(m, "DestChannel"),
        dest_uniqueid=_s(m, "DestUniqueid"),
        dial_string=_s(m, "DialString"),
        dest_linkedid=_s(m, "DestLinkedid") or _s(m, "DestUniqueid"),
    )


def _dial_end(m: AmiFields, at: datetime) -> ChannelEvent:
    return DialEnded(
        at=at,
        channel=_s(m, "Channel"),
        linkedid=_s(m, "Linkedid") or _s(m, "Uniqueid"),
        dest_channel=_s(m, "DestChannel"),
        status=_s(m, "DialStatus"),
    )


def _hangup(m: AmiFields, at: datetime) -> ChannelEvent:
    return ChannelHungUp(
        at=at,
        **_channel(m),
        cause=_s(m, "Cause"),
    )


_TRANSLATORS: dict[str, Callable[[AmiFields, datetime], ChannelEvent]] = {
    "Newchannel": _created,
    "Newstate": _new_state,
    "DialBegin": _dial_begin,
    "DialEnd": _dial_end,
    "Hangup": _hangup,
}


def translate(
    message: AmiFields, now: Callable[[], datetime], *, name: str | None = None
) -> ChannelEvent | None:
    """Return the channel event an AMI event means, or None when the tracker ignores it.

    ``name`` is the event's name when the caller has already read it.
    """
    if name is None:
        name = message.get("Event")
    if name is None:
        return None
    translator = _TRANSLATORS.get(name)
    if translator is None:
        return None
    return translator(message, event_time(message, now))


def _duration(text: str) -> timedelta:
    """Parse CoreShowChannel's ``Duration`` (HH:MM:SS)."""
    try:
        hours, minutes, seconds = (int(part) for part in text.split(":"))
    except ValueError:
        return timedelta(0)
    return timedelta(hours=hours, minutes=minutes, seconds=seconds)


def channel_seen(message: AmiFields, at: datetime) -> ChannelSeen | None:
    """Translate one ``CoreShowChannel`` list item, or None for anything else."""
    if message.get("Event") != "CoreShowChannel":
        return None
    return ChannelSeen(
        at=at,
        **_channel(message),
        **_caller(message),
        state=_s(message, "ChannelStateDesc"),
        duration=_duration(_s(message, "Duration")),
        connected_num=_connected(message),
        bridge_id=_s(message, "BridgeId"),
    )


def _connected(message: AmiFields) -> str:
    number = _s(message, "ConnectedLineNum")
    return "" if number == "<unknown>" else number


def endpoint_event(message: AmiFields, now: Callable[[], datetime]) -> EndpointEvent | None:
    """Translate DeviceStateChange, ContactStatus and PeerStatus, or None for anything else."""
    name = message.get("Event")
    if name == "DeviceStateChange":
        return DeviceStateChanged(
            _s(message, "Device"), DeviceState.parse(_s(message, "State")), event_time(message, now)
        )
    if name == "ContactStatus":
        status = ContactStatus.parse(_s(message, "ContactStatus"))
        if status is None:
            return None
        return ContactStatusChanged(
            aor=_s(message, "AOR"),
            uri=_s(message, "URI"),
            status=status,
            at=event_time(message, now),
            endpoint=message.get("EndpointName") or None,
        )
    if name == "PeerStatus":
        return PeerStatusChanged(
            _s(message, "Peer"),
            PeerStatus.parse(_s(message, "PeerStatus")),
            event_time(message, now),
        )
    return None


ENDPOINT_EVENTS = frozenset({"DeviceStateChange", "ContactStatus", "PeerStatus"})


def endpoint_snapshot(
    devices: Iterable[AmiFields], contacts: Iterable[AmiFields] | None, at: datetime
) -> EndpointSnapshot:
    """Build a snapshot from ``DeviceStateList`` and ``PJSIPShowContacts`` listings."""
    device_entries = tuple(
        DeviceEntry(_s(m, "Device"), DeviceState.parse(_s(m, "State")))
        for m in devices
        if m.get("Device")
    )
    if contacts is None:
        return EndpointSnapshot(at, device_entries, None)
    contact_entries: list[ContactEntry] = []
    for m in contacts:
        status = ContactStatus.parse(_s(m, "Status"))
        if status is None:
            continue
        aor = _s(m, "ObjectName").split(";@", 1)[0] or _s(m, "Aor")
        contact_entries.append(
            ContactEntry(aor=aor, uri=_s(m, "Uri"), status=status, endpoint=m.get("Endpoint"))
        )
    return EndpointSnapshot(at, device_entries, tuple(contact_entries))
