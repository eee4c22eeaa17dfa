"""Reachability of the site's phones, reduced from AMI device and contact events.

Theory of operation. Asterisk reports a PJSIP phone's health three ways, each with its own
event (https://docs.asterisk.org/Asterisk_22_Documentation/API_Documentation/AMI_Events/):

- ``ContactStatus``: one registered contact (``URI``) of an AOR is Reachable, Unreachable
  (qualify failed), NonQualified (registered, not qualified yet or qualify disabled),
  Created/Updated (registration lifecycle) or Removed (registration expired or withdrawn);
- ``PeerStatus``: the endpoint (``PJSIP/8001``) as a whole is Reachable or Unreachable;
- ``DeviceStateChange``: the device (``PJSIP/8001``) is NOT_INUSE, INUSE, RINGING,
  UNAVAILABLE, ...

`EndpointBook` keeps that evidence per extension and derives an `EndpointStatus`. Contacts
are the most precise evidence, so once any contact of an extension has been seen (or a
resync listed its contacts), reachability comes from them: registered when a contact exists,
reachable when any contact is not Unreachable (a NonQualified contact counts as reachable:
it registered, and without qualify nothing better is known). Before that, the peer status
decides, and failing that the device state (UNAVAILABLE and INVALID are unreachable). A
phone pbxguard has heard nothing about has ``reachable is None``.

`EndpointBook.apply` returns the new book and an `EndpointChange` for every extension whose
registration, reachability or device state changed; ``went_down`` and ``came_back`` mark the
edges the shell turns into alerts and outage offences (EM-2, DT-1, DT-5, DT-9). After every
AMI (re)login the shell lists devices and contacts and calls `EndpointBook.resync`, which
replaces the evidence and reports the differences the same way. An outage that spans a
reconnect keeps its original ``since``.

The events here are this module's own small values; the shell maps AMI messages onto them,
so the core never depends on the protocol layer.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

PJSIP_PREFIX = "PJSIP/"


class DeviceState(enum.StrEnum):
    """Asterisk device states, as ``DeviceStateChange`` spells them."""

    NOT_INUSE = "NOT_INUSE"
    INUSE = "INUSE"
    BUSY = "BUSY"
    INVALID = "INVALID"
    UNAVAILABLE = "UNAVAILABLE"
    RINGING = "RINGING"
    RINGINUSE = "RINGINUSE"
    ONHOLD = "ONHOLD"
    UNKNOWN = "UNKNOWN"

    @classmethod
    def parse(cls, text: str) -> DeviceState:
        """Read a device state; anything unrecognised is UNKNOWN.

        Args:
            text: the ``State`` header value.

        Returns:
            The state.
        """
        try:
            return cls(text.strip().upper())
        except ValueError:
            return cls.UNKNOWN


class ContactStatus(enum.StrEnum):
    """PJSIP contact statuses, as ``ContactStatus`` events spell them."""

    REACHABLE = "Reachable"
    UNREACHABLE = "Unreachable"
    REMOVED = "Removed"
    NON_QUALIFIED = "NonQualified"
    CREATED = "Created"
    UPDATED = "Updated"

    @classmethod
    def parse(cls, text: str) -> ContactStatus | None:
        """Read a contact status, or None for one this module does not know.

        Older Asterisk releases say ``Unknown`` or ``Unqualified`` for what 22 calls
        ``NonQualified``.

        Args:
            text: the ``ContactStatus`` (or ``Status``) header value.

        Returns:
            The status, or None.
        """
        wanted = text.strip().casefold()
        if wanted in ("unknown", "unqualified"):
            return cls.NON_QUALIFIED
        for status in cls:
            if status.value.casefold() == wanted:
                return status
        return None


class PeerStatus(enum.StrEnum):
    """Endpoint statuses, as PJSIP ``PeerStatus`` events spell them."""

    REACHABLE = "Reachable"
    UNREACHABLE = "Unreachable"
    UNKNOWN = "Unknown"

    @classmethod
    def parse(cls, text: str) -> PeerStatus:
        """Read a peer status; anything unrecognised is Unknown.

        Args:
            text: the ``PeerStatus`` header value.

        Returns:
            The status.
        """
        wanted = text.strip().casefold()
        for status in cls:
            if status.value.casefold() == wanted:
                return status
        return cls.UNKNOWN


def extension_of(device: str) -> str | None:
    """Return the extension of a PJSIP device or peer name (``PJSIP/8001`` -> ``8001``).

    Args:
        device: the ``Device`` or ``Peer`` header value.

    Returns:
        The extension, or None for any other kind of device (``Queue:``, ``Custom:``, ...).
    """
    if device.startswith(PJSIP_PREFIX) and len(device) > len(PJSIP_PREFIX):
        return device[len(PJSIP_PREFIX) :]
    return None


@dataclass(frozen=True, slots=True)
class DeviceStateChanged:
    """A ``DeviceStateChange`` event (also what ``DeviceStateList`` lists)."""

    device: str
    state: DeviceState
    at: datetime


@dataclass(frozen=True, slots=True)
class ContactStatusChanged:
    """A ``ContactStatus`` event; ``endpoint`` is its ``EndpointName`` when present."""

    aor: str
    uri: str
    status: ContactStatus
    at: datetime
    endpoint: str | None = None

    @property
    def extension(self) -> str:
        """Return the extension the contact belongs to."""
        return self.endpoint or self.aor


@dataclass(frozen=True, slots=True)
class PeerStatusChanged:
    """A ``PeerStatus`` event of a PJSIP endpoint."""

    peer: str
    status: PeerStatus
    at: datetime


EndpointEvent = DeviceStateChanged | ContactStatusChanged | PeerStatusChanged


class Availability(enum.StrEnum):
    """One word for an extension's registration and reachability."""

    REACHABLE = "reachable"
    UNREACHABLE = "unreachable"
    UNREGISTERED = "unregistered"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    """What is known about one extension.

    ``registered`` and ``reachable`` are None while nothing tells them. ``since`` is when
    ``reachable`` took its current value (the start of an outage while it is False);
    ``device_state_since`` is when ``device_state`` did.
    """

    registered: bool | None = None
    reachable: bool | None = None
    device_state: DeviceState = DeviceState.UNKNOWN
    since: datetime | None = None
    device_state_since: datetime | None = None

    @property
    def availability(self) -> Availability:
        """Return registration and reachability as one word."""
        if self.reachable:
            return Availability.REACHABLE
        if self.registered is False:
            return Availability.UNREGISTERED
        if self.reachable is False:
            return Availability.UNREACHABLE
        return Availability.UNKNOWN


UNKNOWN_STATUS = EndpointStatus()


@dataclass(frozen=True, slots=True)
class EndpointChange:
    """An extension's status changed at ``at``."""

    extension: str
    before: EndpointStatus
    after: EndpointStatus
    at: datetime

    @property
    def went_down(self) -> bool:
        """Return whether the extension stopped being reachable (or was first seen down)."""
        return self.after.reachable is False and self.before.reachable is not False

    @property
    def came_back(self) -> bool:
        """Return whether an unreachable extension became reachable again."""
        return self.before.reachable is False and self.after.reachable is True

    @property
    def availability_changed(self) -> bool:
        """Return whether registration or reachability changed."""
        return (self.before.registered, self.before.reachable) != (
            self.after.registered,
            self.after.reachable,
        )

    @property
    def device_state_changed(self) -> bool:
        """Return whether the device state changed."""
        return self.before.device_state is not self.after.device_state


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    """One device of a ``DeviceStateList`` listing."""

    device: str
    state: DeviceState


@dataclass(frozen=True, slots=True)
class ContactEntry:
    """One contact of a ``PJSIPShowContacts`` listing (a ``ContactList`` event)."""

    aor: str
    uri: str
    status: ContactStatus
    endpoint: str | None = None

    @property
    def extension(self) -> str:
        """Return the extension the contact belongs to."""
        return self.endpoint or self.aor


@dataclass(frozen=True, slots=True)
class EndpointSnapshot:
    """Full listings taken after a login, as of ``at``.

    ``contacts`` is None when the contact listing was not obtained; the book then falls back
    to device states alone.
    """

    at: datetime
    devices: tuple[DeviceEntry, ...] = ()
    contacts: tuple[ContactEntry, ...] | None = None


_Contacts = tuple[tuple[str, ContactStatus], ...]
_NOT_REACHABLE_DEVICE = frozenset({DeviceState.UNAVAILABLE, DeviceState.INVALID})


@dataclass(frozen=True, slots=True)
class _Evidence:
    contacts: _Contacts | None = None
    peer: PeerStatus | None = None
    device: DeviceState = DeviceState.UNKNOWN

    def judge(self) -> tuple[bool | None, bool | None]:
        if self.contacts is not None:
            return bool(self.contacts), any(
                status is not ContactStatus.UNREACHABLE for _, status in self.contacts
            )
        if self.peer is not None and self.peer is not PeerStatus.UNKNOWN:
            reachable = self.peer is PeerStatus.REACHABLE
        elif self.device is not DeviceState.UNKNOWN:
            reachable = self.device not in _NOT_REACHABLE_DEVICE
        else:
            return None, None
        # Reachable implies a registered contact; unreachable could be either.
        return (True if reachable else None), reachable


def _with_contact(contacts: _Contacts | None, uri: str, status: ContactStatus) -> _Contacts:
    known = dict(contacts or ())
    if status is ContactStatus.REMOVED:
        known.pop(uri, None)
    elif status in (ContactStatus.CREATED, ContactStatus.UPDATED):
        # Lifecycle news about a registration says nothing about qualify results.
        known.setdefault(uri, status)
    else:
        known[uri] = status
    return tuple(sorted(known.items()))


def _status_after(before: EndpointStatus, evidence: _Evidence, at: datetime) -> EndpointStatus:
    registered, reachable = evidence.judge()
    since = before.since if reachable == before.reachable else at
    if reachable is None:
        since = None
    device_since = before.device_state_since if evidence.device is before.device_state else at
    return EndpointStatus(registered, reachable, evidence.device, since, device_since)


def _changed(before: EndpointStatus, after: EndpointStatus) -> bool:
    return (before.registered, before.reachable, before.device_state) != (
        after.registered,
        after.reachable,
        after.device_state,
    )


@dataclass(frozen=True, slots=True)
class _Entry:
    evidence: _Evidence
    status: EndpointStatus


def _empty_entries() -> Mapping[str, _Entry]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class EndpointBook:
    """Status of every extension pbxguard has heard about; a value, never mutated."""

    _entries: Mapping[str, _Entry] = field(default_factory=_empty_entries, hash=False)

    @property
    def extensions(self) -> tuple[str, ...]:
        """Return the extensions with any evidence, sorted."""
        return tuple(sorted(self._entries))

    def status(self, extension: str) -> EndpointStatus:
        """Return what is known about an extension.

        Args:
            extension: e.g. ``8000``.

        Returns:
            Its status; `UNKNOWN_STATUS` for an extension never heard of.
        """
        entry = self._entries.get(extension)
        return UNKNOWN_STATUS if entry is None else entry.status

    def apply(self, event: EndpointEvent) -> tuple[EndpointBook, tuple[EndpointChange, ...]]:
        """Fold one event into the book.

        Args:
            event: a device, contact or peer event.

        Returns:
            The new book, and the change it caused (none for events about non-PJSIP
            devices or that change nothing visible).
        """
        if isinstance(event, ContactStatusChanged):
            extension: str | None = event.extension
        elif isinstance(event, DeviceStateChanged):
            extension = extension_of(event.device)
        else:
            extension = extension_of(event.peer)
        if extension is None:
            return self, ()
        entry = self._entries.get(extension)
        evidence = _Evidence() if entry is None else entry.evidence
        before = UNKNOWN_STATUS if entry is None else entry.status
        if isinstance(event, ContactStatusChanged):
            evidence = _Evidence(
                _with_contact(evidence.contacts, event.uri, event.status),
                evidence.peer,
                evidence.device,
            )
        elif isinstance(event, DeviceStateChanged):
            evidence = _Evidence(evidence.contacts, evidence.peer, event.state)
        else:
            evidence = _Evidence(evidence.contacts, event.status, evidence.device)
        if entry is not None and evidence == entry.evidence:
            return self, ()
        after = _status_after(before, evidence, event.at)
        entries = dict(self._entries)
        entries[extension] = _Entry(evidence, after)
        book = EndpointBook(MappingProxyType(entries))
        if _changed(before, after):
            return book, (EndpointChange(extension, before, after, event.at),)
        return book, ()

    def resync(self, snapshot: EndpointSnapshot) -> tuple[EndpointBook, tuple[EndpointChange, ...]]:
        """Replace the book's evidence with full listings, reporting what differs.

        Extensions missing from the snapshot are forgotten (reported as changing to
        unknown); peer statuses are cleared, since the listings supersede them.

        Args:
            snapshot: the devices and contacts listed after a login.

        Returns:
            The new book and one change per extension whose status differs, in extension
            order, all at ``snapshot.at``.
        """
        devices: dict[str, DeviceState] = {}
        for device in snapshot.devices:
            extension = extension_of(device.device)
            if extension is not None:
                devices[extension] = device.state
        contacts: dict[str, _Contacts] = {}
        if snapshot.contacts is not None:
            for contact in snapshot.contacts:
                contacts[contact.extension] = _with_contact(
                    contacts.get(contact.extension), contact.uri, contact.status
                )
        listed = set(devices) | set(contacts)
        entries: dict[str, _Entry] = {}
        changes: list[EndpointChange] = []
        for extension in sorted(listed | set(self._entries)):
            before = self.status(extension)
            if extension in listed:
                evidence = _Evidence(
                    None if snapshot.contacts is None else contacts.get(extension, ()),
                    None,
                    devices.get(extension, DeviceState.UNKNOWN),
                )
                after = _status_after(before, evidence, snapshot.at)
                entries[extension] = _Entry(evidence, after)
            else:
                after = UNKNOWN_STATUS
            if _changed(before, after):
                changes.append(EndpointChange(extension, before, after, snapshot.at))
        return EndpointBook(MappingProxyType(entries)), tuple(changes)
