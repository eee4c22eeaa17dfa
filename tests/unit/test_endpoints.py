"""Endpoint reachability driven by the event sequences of the recorded AMI captures.

The events below are written out from ``fixtures/ami/register-and-qualify`` and
``fixtures/ami/duty-phone-unplugged`` (their ``Timestamp`` headers, in UTC).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbxguard.domain.endpoints import (
    UNKNOWN_STATUS,
    Availability,
    ContactEntry,
    ContactStatus,
    ContactStatusChanged,
    DeviceEntry,
    DeviceState,
    DeviceStateChanged,
    EndpointBook,
    EndpointChange,
    EndpointEvent,
    EndpointSnapshot,
    PeerStatus,
    PeerStatusChanged,
    extension_of,
)


def t(clock: str) -> datetime:
    """Return 2026-11-23 at ``HH:MM:SS.ffffff`` UTC, the day of the captures."""
    return datetime.fromisoformat(f"2026-11-23T{clock}+00:00")


def uri(ext: str, port: int) -> str:
    return f"sip:{ext}@127.0.0.1:{port};ob"


def contact(ext: str, port: int, status: ContactStatus, at: str) -> ContactStatusChanged:
    return ContactStatusChanged(ext, uri(ext, port), status, t(at), endpoint=ext)


def peer(ext: str, status: PeerStatus, at: str) -> PeerStatusChanged:
    return PeerStatusChanged(f"PJSIP/{ext}", status, t(at))


def device(ext: str, state: DeviceState, at: str) -> DeviceStateChanged:
    return DeviceStateChanged(f"PJSIP/{ext}", state, t(at))


REACHABLE = ContactStatus.REACHABLE
NON_QUALIFIED = ContactStatus.NON_QUALIFIED

REGISTER_AND_QUALIFY: tuple[EndpointEvent, ...] = (
    contact("2001", 42001, NON_QUALIFIED, "01:32:53.593013"),
    peer("2001", PeerStatus.REACHABLE, "01:32:53.593826"),
    device("2001", DeviceState.NOT_INUSE, "01:32:53.594006"),
    contact("2001", 42001, REACHABLE, "01:32:53.594013"),
    contact("2002", 42002, NON_QUALIFIED, "01:32:53.812435"),
    peer("2002", PeerStatus.REACHABLE, "01:32:53.813119"),
    device("2002", DeviceState.NOT_INUSE, "01:32:53.813157"),
    contact("2002", 42002, REACHABLE, "01:32:53.813295"),
    contact("8000", 48000, NON_QUALIFIED, "01:32:54.036568"),
    peer("8000", PeerStatus.REACHABLE, "01:32:54.037085"),
    contact("8000", 48000, REACHABLE, "01:32:54.037095"),
    device("8000", DeviceState.NOT_INUSE, "01:32:54.037244"),
    contact("8001", 48001, NON_QUALIFIED, "01:32:54.252671"),
    peer("8001", PeerStatus.REACHABLE, "01:32:54.253005"),
    contact("8001", 48001, REACHABLE, "01:32:54.253017"),
    device("8001", DeviceState.NOT_INUSE, "01:32:54.253101"),
    contact("9001", 49001, NON_QUALIFIED, "01:32:54.473413"),
    device("9001", DeviceState.NOT_INUSE, "01:32:54.473639"),
    peer("9001", PeerStatus.REACHABLE, "01:32:54.473643"),
    contact("9001", 49001, REACHABLE, "01:32:54.473651"),
)

DUTY_PHONE_UNPLUGGED: tuple[EndpointEvent, ...] = (
    peer("8001", PeerStatus.UNREACHABLE, "01:40:38.307131"),
    device("8001", DeviceState.UNAVAILABLE, "01:40:38.307187"),
    contact("8001", 48001, ContactStatus.UNREACHABLE, "01:40:38.307205"),
    contact("8001", 48001, ContactStatus.REMOVED, "01:41:25.531656"),
)

PHONES = ("2001", "2002", "8000", "8001", "9001")


def replay(
    events: tuple[EndpointEvent, ...], book: EndpointBook | None = None
) -> tuple[EndpointBook, list[EndpointChange]]:
    book = EndpointBook() if book is None else book
    changes: list[EndpointChange] = []
    for event in events:
        book, found = book.apply(event)
        changes.extend(found)
    return book, changes


@pytest.fixture
def registered() -> EndpointBook:
    book, _ = replay(REGISTER_AND_QUALIFY)
    return book


def test_register_and_qualify_makes_every_phone_reachable() -> None:
    book, changes = replay(REGISTER_AND_QUALIFY)
    assert book.extensions == PHONES
    for ext in PHONES:
        status = book.status(ext)
        assert status.availability is Availability.REACHABLE
        assert status.registered is True
        assert status.device_state is DeviceState.NOT_INUSE
    # Reachable from the first contact event: NonQualified means registered, not yet qualified.
    assert book.status("8000").since == t("01:32:54.036568")
    assert book.status("8000").device_state_since == t("01:32:54.037244")
    first_seen = [(c.extension, c.at) for c in changes if c.availability_changed]
    assert first_seen == [
        ("2001", t("01:32:53.593013")),
        ("2002", t("01:32:53.812435")),
        ("8000", t("01:32:54.036568")),
        ("8001", t("01:32:54.252671")),
        ("9001", t("01:32:54.473413")),
    ]
    assert not any(c.went_down or c.came_back for c in changes)
    assert sum(c.device_state_changed for c in changes) == len(PHONES)


def test_unplugged_duty_phone_goes_down_once_and_stays_down(registered: EndpointBook) -> None:
    book, changes = replay(DUTY_PHONE_UNPLUGGED, registered)
    down = [c for c in changes if c.went_down]
    assert [(c.extension, c.at) for c in down] == [("8001", t("01:40:38.307205"))]
    assert down[0].before.since == t("01:32:54.252671")
    status = book.status("8001")
    assert status.availability is Availability.UNREGISTERED
    assert status.since == t("01:40:38.307205")  # the outage start survives the removal
    assert status.device_state is DeviceState.UNAVAILABLE
    removal = changes[-1]
    assert removal.at == t("01:41:25.531656")
    assert removal.before.availability is Availability.UNREACHABLE
    assert removal.after.availability is Availability.UNREGISTERED
    assert not removal.went_down
    for ext in ("2001", "2002", "8000", "9001"):
        assert book.status(ext) == registered.status(ext)


def test_unplugged_duty_phone_seen_without_any_baseline() -> None:
    # The capture itself starts with a fresh login and no resync: the first news is bad.
    book, changes = replay(DUTY_PHONE_UNPLUGGED)
    assert changes[0].went_down
    assert changes[0].before == UNKNOWN_STATUS
    assert changes[0].at == t("01:40:38.307131")
    assert [c.went_down for c in changes].count(True) == 1
    assert book.status("8001").registered is False
    assert book.status("8001").reachable is False
    assert book.status("8001").since == t("01:40:38.307131")


def test_duty_phone_comes_back_after_reregistering(registered: EndpointBook) -> None:
    book, _ = replay(DUTY_PHONE_UNPLUGGED, registered)
    back = (
        contact("8001", 48011, NON_QUALIFIED, "01:45:00.000100"),
        peer("8001", PeerStatus.REACHABLE, "01:45:00.000200"),
        contact("8001", 48011, REACHABLE, "01:45:00.000300"),
        device("8001", DeviceState.NOT_INUSE, "01:45:00.000400"),
    )
    book, changes = replay(back, book)
    returned = [c for c in changes if c.came_back]
    assert len(returned) == 1
    assert returned[0].at == t("01:45:00.000100")
    assert returned[0].before.since == t("01:40:38.307205")  # the outage started here
    assert book.status("8001").availability is Availability.REACHABLE


def test_an_aor_with_several_contacts_is_reachable_while_any_is() -> None:
    book, _ = replay(
        (
            contact("8000", 48000, REACHABLE, "02:00:00"),
            contact("8000", 48100, REACHABLE, "02:00:01"),
        )
    )
    book, changes = book.apply(contact("8000", 48000, ContactStatus.UNREACHABLE, "02:01:00"))
    assert changes == ()
    assert book.status("8000").reachable is True
    book, changes = book.apply(contact("8000", 48100, ContactStatus.UNREACHABLE, "02:02:00"))
    assert [c.went_down for c in changes] == [True]
    book, changes = book.apply(contact("8000", 48100, ContactStatus.REMOVED, "02:03:00"))
    assert book.status("8000").availability is Availability.UNREACHABLE  # 48000 is still there
    book, changes = book.apply(contact("8000", 48000, ContactStatus.REMOVED, "02:04:00"))
    assert book.status("8000").availability is Availability.UNREGISTERED
    assert book.status("8000").since == t("02:02:00")


def test_lifecycle_statuses_keep_the_qualify_result() -> None:
    book, _ = replay(
        (
            contact("8000", 48000, ContactStatus.UNREACHABLE, "02:00:00"),
            contact("8000", 48000, ContactStatus.UPDATED, "02:00:01"),
        )
    )
    assert book.status("8000").reachable is False
    book, changes = book.apply(contact("8000", 48001, ContactStatus.CREATED, "02:00:02"))
    assert [c.came_back for c in changes] == [True]


def test_device_state_alone_tells_reachability_until_better_evidence() -> None:
    book, changes = EndpointBook().apply(device("8000", DeviceState.INUSE, "02:00:00"))
    assert book.status("8000").reachable is True
    assert book.status("8000").registered is True
    book, changes = book.apply(device("8000", DeviceState.UNAVAILABLE, "02:00:05"))
    assert [c.went_down for c in changes] == [True]
    assert book.status("8000").registered is None
    assert book.status("8000").availability is Availability.UNREACHABLE


def test_off_hook_alarm_phone_is_a_device_state_change(registered: EndpointBook) -> None:
    book, changes = registered.apply(device("8000", DeviceState.INUSE, "02:00:00"))
    assert len(changes) == 1
    assert changes[0].device_state_changed
    assert not changes[0].availability_changed
    assert book.status("8000").device_state_since == t("02:00:00")
    assert book.status("8000").since == registered.status("8000").since


def test_events_about_other_devices_change_nothing(registered: EndpointBook) -> None:
    for event in (
        DeviceStateChanged("Queue:hotline", DeviceState.INUSE, t("02:00:00")),
        DeviceStateChanged("Custom:night", DeviceState.NOT_INUSE, t("02:00:00")),
        PeerStatusChanged("IAX2/trunk", PeerStatus.UNREACHABLE, t("02:00:00")),
    ):
        book, changes = registered.apply(event)
        assert book is registered
        assert changes == ()


def test_repeated_news_is_not_a_change(registered: EndpointBook) -> None:
    book, changes = registered.apply(contact("2001", 42001, REACHABLE, "02:00:00"))
    assert changes == ()
    assert book is registered
    book, changes = registered.apply(peer("2001", PeerStatus.UNREACHABLE, "02:00:01"))
    assert changes == ()  # contacts outrank the peer status once they are known
    assert book.status("2001") == registered.status("2001")


def snapshot_of_registered(at: datetime, *, without: str | None = None) -> EndpointSnapshot:
    ports = {"2001": 42001, "2002": 42002, "8000": 48000, "8001": 48001, "9001": 49001}
    return EndpointSnapshot(
        at=at,
        devices=(
            *(
                DeviceEntry(
                    f"PJSIP/{ext}",
                    DeviceState.UNAVAILABLE if ext == without else DeviceState.NOT_INUSE,
                )
                for ext in PHONES
            ),
            DeviceEntry("Queue:hotline", DeviceState.NOT_INUSE),
        ),
        contacts=tuple(
            ContactEntry(ext, uri(ext, port), REACHABLE, endpoint=ext)
            for ext, port in ports.items()
            if ext != without
        ),
    )


def test_resync_that_matches_reports_nothing_and_keeps_since(registered: EndpointBook) -> None:
    book, changes = registered.resync(snapshot_of_registered(t("03:00:00")))
    assert changes == ()
    assert book.status("8001").since == t("01:32:54.252671")


def test_resync_reports_a_phone_that_died_while_disconnected(registered: EndpointBook) -> None:
    book, changes = registered.resync(snapshot_of_registered(t("03:00:00"), without="8001"))
    assert [(c.extension, c.went_down, c.at) for c in changes] == [("8001", True, t("03:00:00"))]
    assert book.status("8001").availability is Availability.UNREGISTERED


def test_an_outage_spanning_a_reconnect_keeps_its_start(registered: EndpointBook) -> None:
    down, _ = replay(DUTY_PHONE_UNPLUGGED, registered)
    book, changes = down.resync(snapshot_of_registered(t("03:00:00"), without="8001"))
    assert changes == ()
    assert book.status("8001").since == t("01:40:38.307205")


def test_resync_forgets_phones_no_longer_listed(registered: EndpointBook) -> None:
    snapshot = snapshot_of_registered(t("03:00:00"))
    smaller = EndpointSnapshot(
        snapshot.at,
        tuple(d for d in snapshot.devices if d.device != "PJSIP/9001"),
        tuple(c for c in snapshot.contacts or () if c.aor != "9001"),
    )
    book, changes = registered.resync(smaller)
    assert [(c.extension, c.after) for c in changes] == [("9001", UNKNOWN_STATUS)]
    assert "9001" not in book.extensions


def test_resync_without_a_contact_listing_falls_back_to_device_states() -> None:
    book, changes = EndpointBook().resync(
        EndpointSnapshot(
            t("03:00:00"),
            (
                DeviceEntry("PJSIP/8000", DeviceState.NOT_INUSE),
                DeviceEntry("PJSIP/8001", DeviceState.UNAVAILABLE),
            ),
        )
    )
    assert book.status("8000").reachable is True
    assert book.status("8001").reachable is False
    assert [c.extension for c in changes if c.went_down] == ["8001"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("NOT_INUSE", DeviceState.NOT_INUSE),
        ("ringinuse", DeviceState.RINGINUSE),
        ("??", DeviceState.UNKNOWN),
    ],
)
def test_device_state_parsing(text: str, expected: DeviceState) -> None:
    assert DeviceState.parse(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Reachable", ContactStatus.REACHABLE),
        ("NonQualified", ContactStatus.NON_QUALIFIED),
        ("Unknown", ContactStatus.NON_QUALIFIED),
        ("Unqualified", ContactStatus.NON_QUALIFIED),
        ("removed", ContactStatus.REMOVED),
        ("Lagged", None),
    ],
)
def test_contact_status_parsing(text: str, expected: ContactStatus | None) -> None:
    assert ContactStatus.parse(text) is expected


def test_peer_status_parsing_and_extensions() -> None:
    assert PeerStatus.parse("Unreachable") is PeerStatus.UNREACHABLE
    assert PeerStatus.parse("Registered") is PeerStatus.UNKNOWN
    assert extension_of("PJSIP/8001") == "8001"
    assert extension_of("PJSIP/") is None
    assert extension_of("SIP/8001") is None


# --- properties ----------------------------------------------------------------------------

EXTS = st.sampled_from(["8000", "8001"])
PORTS = st.sampled_from([48000, 48001])
BASE = t("00:00:00")
EVENTS = st.one_of(
    st.builds(
        lambda ext, port, status, s: ContactStatusChanged(
            ext, uri(ext, port), status, BASE + timedelta(seconds=s), endpoint=ext
        ),
        EXTS,
        PORTS,
        st.sampled_from(list(ContactStatus)),
        st.integers(0, 10_000),
    ),
    st.builds(
        lambda ext, status, s: PeerStatusChanged(
            f"PJSIP/{ext}", status, BASE + timedelta(seconds=s)
        ),
        EXTS,
        st.sampled_from(list(PeerStatus)),
        st.integers(0, 10_000),
    ),
    st.builds(
        lambda ext, state, s: DeviceStateChanged(
            f"PJSIP/{ext}", state, BASE + timedelta(seconds=s)
        ),
        EXTS,
        st.sampled_from(list(DeviceState)),
        st.integers(0, 10_000),
    ),
)


@given(events=st.lists(EVENTS, max_size=30))
def test_changes_describe_exactly_what_moved(events: list[EndpointEvent]) -> None:
    book = EndpointBook()
    for event in events:
        before = {ext: book.status(ext) for ext in ("8000", "8001")}
        book, changes = book.apply(event)
        moved = {c.extension: c for c in changes}
        for ext in ("8000", "8001"):
            now = book.status(ext)
            visible = (now.registered, now.reachable, now.device_state)
            was = (before[ext].registered, before[ext].reachable, before[ext].device_state)
            if ext in moved:
                assert moved[ext].before == before[ext]
                assert moved[ext].after == now
                assert visible != was
            else:
                assert now == before[ext]
            if now.reachable is not None:
                assert now.since is not None


@given(
    states=st.dictionaries(
        st.sampled_from(["8000", "8001", "8002"]), st.sampled_from(list(DeviceState))
    ),
    reachable=st.sets(st.sampled_from(["8000", "8001", "8002"])),
)
def test_resync_twice_reports_nothing_the_second_time(
    states: dict[str, DeviceState], reachable: set[str]
) -> None:
    snapshot = EndpointSnapshot(
        BASE,
        tuple(DeviceEntry(f"PJSIP/{ext}", state) for ext, state in states.items()),
        tuple(ContactEntry(ext, uri(ext, 5060), REACHABLE, ext) for ext in sorted(reachable)),
    )
    book, _ = EndpointBook().resync(snapshot)
    again, changes = book.resync(
        EndpointSnapshot(BASE + timedelta(hours=1), snapshot.devices, snapshot.contacts)
    )
    assert changes == ()
    assert again == book
    for ext in reachable:
        assert book.status(ext).availability is Availability.REACHABLE
    for ext in set(states) - reachable:
        assert book.status(ext).availability is Availability.UNREGISTERED
