"""The standby watch on phone outages shaped like the recorded AMI captures.

Outages are the event sequences of ``fixtures/ami/duty-phone-unplugged`` (PeerStatus
Unreachable, DeviceStateChange UNAVAILABLE, ContactStatus Unreachable, then Removed when the
registration expires) and returns are those of ``fixtures/ami/register-and-qualify``
(ContactStatus NonQualified, PeerStatus Reachable, ContactStatus Reachable, DeviceStateChange
NOT_INUSE), with the captures' spacing, moved to the local times each test needs. They go
through a real `EndpointBook`, whose changes feed the watch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbxguard.domain.calendars import (
    MONDAY_TO_FRIDAY,
    DailyWindow,
    HolidayTable,
    Interval,
    Schedule,
    SpecialPeriod,
    TimeWindow,
    Weekday,
    WeeklyHours,
    WorkingHours,
)
from pbxguard.domain.effects import AlertKind, ClearAlert, RaiseAlert, RecordOffence
from pbxguard.domain.endpoints import (
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
)
from pbxguard.domain.policy import Person
from pbxguard.domain.records import OffenceDraft, Outcome
from pbxguard.domain.rota import Rota, WeeklyShift
from pbxguard.domain.standby import (
    StandbyEffect,
    StandbyWatch,
    WatchedLine,
)
from pbxguard.errors import ConfigError

SHANGHAI = ZoneInfo("Asia/Shanghai")
PORTS = {"8000": 48000, "8001": 48001, "8002": 48002}
MINUTE = timedelta(minutes=1)

# Offsets of each event from the first one of its sequence, in the captures.
# duty-phone-unplugged: 01:40:38.307131, .307187, .307205, then 01:41:25.531656.
PEER_DOWN = timedelta(0)
DEVICE_DOWN = timedelta(microseconds=56)
CONTACT_DOWN = timedelta(microseconds=74)  # the contact decides: the outage starts here
CONTACT_REMOVED = timedelta(seconds=47, microseconds=224_525)
# register-and-qualify (8001): 01:32:54.252671, .253005, .253017, .253101.
PEER_UP = timedelta(microseconds=334)
CONTACT_UP = timedelta(microseconds=346)
DEVICE_UP = timedelta(microseconds=430)


def sh(month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, second, tzinfo=SHANGHAI)


def nov(day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    """Return a local time in November 2026 (the 23rd, the captures' day, is a Monday)."""
    return sh(11, day, hour, minute, second)


def uri(ext: str) -> str:
    return f"sip:{ext}@127.0.0.1:{PORTS[ext]};ob"


def unplug(ext: str, at: datetime, *, removed: bool = True) -> list[EndpointEvent]:
    """Kill a softphone at ``at``; the outage starts at ``at + CONTACT_DOWN``."""
    events: list[EndpointEvent] = [
        PeerStatusChanged(f"PJSIP/{ext}", PeerStatus.UNREACHABLE, at + PEER_DOWN),
        DeviceStateChanged(f"PJSIP/{ext}", DeviceState.UNAVAILABLE, at + DEVICE_DOWN),
        ContactStatusChanged(ext, uri(ext), ContactStatus.UNREACHABLE, at + CONTACT_DOWN, ext),
    ]
    if removed:
        events.append(
            ContactStatusChanged(ext, uri(ext), ContactStatus.REMOVED, at + CONTACT_REMOVED, ext)
        )
    return events


def plug(ext: str, at: datetime) -> list[EndpointEvent]:
    """Start a softphone; it is reachable again from ``at``."""
    return [
        ContactStatusChanged(ext, uri(ext), ContactStatus.NON_QUALIFIED, at, ext),
        PeerStatusChanged(f"PJSIP/{ext}", PeerStatus.REACHABLE, at + PEER_UP),
        ContactStatusChanged(ext, uri(ext), ContactStatus.REACHABLE, at + CONTACT_UP, ext),
        DeviceStateChanged(f"PJSIP/{ext}", DeviceState.NOT_INUSE, at + DEVICE_UP),
    ]


DAILY_STANDBY = Schedule(DailyWindow(TimeWindow(time(7, 30), time(22))), SHANGHAI)  # DT-5

ALARM = WatchedLine(
    "8000",
    "门卫室报警电话",
    "EM-2",
    Schedule.always(SHANGHAI),
    duty_line="guard_room",
    alert_any_hour=True,
    name_en="guard-room alarm phone",
)
HOTLINE_1 = WatchedLine(
    "8001",
    "热线值班1",
    "DT-5",
    DAILY_STANDBY,
    duty_line="hotline",
    coverage=True,
    name_en="hotline duty 1",
)
HOTLINE_2 = WatchedLine(
    "8002",
    "热线值班2",
    "DT-5",
    DAILY_STANDBY,
    duty_line="hotline",
    coverage=True,
    name_en="hotline duty 2",
)
LINES = (ALARM, HOTLINE_1, HOTLINE_2)

PEOPLE = {
    p.id: p
    for p in (
        Person("wang", "王强", "保卫部", "guard"),
        Person("li", "李明", "保卫部", "guard"),
        Person("zhao", "赵敏", "客服部", "hotline_duty"),
        Person("qian", "钱程", "客服部", "hotline_duty"),
        Person("zhou", "周军", "调度室", "dispatcher", extensions=("8001",)),
    )
}


def weekly(line: str, person: str, start: time, end: time) -> list[WeeklyShift]:
    return [WeeklyShift(line, person, day, TimeWindow(start, end)) for day in Weekday]


def site_rota(*, hotline_gap: bool = False) -> Rota:
    """Guards by day and night; hotline Zhao until 15:00, Qian from 15:00 (16:00 with a gap)."""
    shifts = [
        *weekly("guard_room", "wang", time(8), time(20)),
        *weekly("guard_room", "li", time(20), time(8)),
        *weekly("hotline", "zhao", time(7, 30), time(15)),
        *weekly("hotline", "qian", time(16) if hotline_gap else time(15), time(22)),
    ]
    rota = Rota(SHANGHAI)
    for shift in shifts:
        rota = rota.with_shift(shift)
    return rota


@dataclass
class Bench:
    """A book and a watch wired as the shell wires them, with the shell's idea of now."""

    watch: StandbyWatch
    clock: datetime
    book: EndpointBook = field(default_factory=EndpointBook)
    last_tick: datetime | None = None

    @classmethod
    def start(
        cls,
        at: datetime,
        lines: Sequence[WatchedLine] = LINES,
        rota: Rota | None = None,
        **options: timedelta,
    ) -> Bench:
        """Register every watched phone at ``at`` and report the resync done a minute later."""
        watch = StandbyWatch(
            lines, rota or site_rota(), PEOPLE, site="hq", policy_version="v1", **options
        )
        bench = cls(watch, at)
        for line in lines:
            assert bench.feed(plug(line.extension, at)) == []
        bench.clock = at + MINUTE
        assert bench.watch.on_resync(bench.clock) == []
        return bench

    def feed(self, events: Iterable[EndpointEvent]) -> list[StandbyEffect]:
        effects: list[StandbyEffect] = []
        for event in events:
            self.clock = max(self.clock, event.at)
            self.book, changes = self.book.apply(event)
            for change in changes:
                effects.extend(self.watch.on_change(change))
        return effects

    def resync(self, snapshot: EndpointSnapshot, *, fresh: bool = False) -> list[StandbyEffect]:
        """Log in again: list the endpoints and pass on what differs (from a new book if fresh)."""
        self.clock = max(self.clock, snapshot.at)
        book = EndpointBook() if fresh else self.book
        self.book, changes = book.resync(snapshot)
        effects: list[StandbyEffect] = []
        for change in changes:
            effects.extend(self.watch.on_change(change))
        effects.extend(self.watch.on_resync(snapshot.at))
        return effects

    def tick(self, at: datetime) -> list[StandbyEffect]:
        assert at != self.last_tick, "the watch asked to be woken again without progress"
        self.clock = max(self.clock, at)
        self.last_tick = at
        return self.watch.tick(at)

    def run_until(self, end: datetime) -> list[StandbyEffect]:
        """Tick whenever the watch asks to be woken, up to ``end`` (inclusive)."""
        effects: list[StandbyEffect] = []
        while True:
            wakeup = self.watch.next_wakeup(self.clock)
            if wakeup is None or wakeup > end:
                return effects
            effects.extend(self.tick(max(wakeup, self.clock)))


def raised(effects: Iterable[StandbyEffect], kind: AlertKind | None = None) -> list[RaiseAlert]:
    return [e for e in effects if isinstance(e, RaiseAlert) and kind in (None, e.kind)]


def cleared(effects: Iterable[StandbyEffect], kind: AlertKind | None = None) -> list[ClearAlert]:
    return [e for e in effects if isinstance(e, ClearAlert) and kind in (None, e.kind)]


def offences(effects: Iterable[StandbyEffect]) -> list[OffenceDraft]:
    return [e.draft for e in effects if isinstance(e, RecordOffence)]


# --- EM-2: the guard-room alarm phone -------------------------------------------------------


def test_alarm_phone_down_at_night_alerts_at_once_repeats_and_records_em2() -> None:
    bench = Bench.start(nov(23, 2))
    killed = nov(23, 3)
    down = killed + CONTACT_DOWN

    first = bench.feed(unplug("8000", killed, removed=False))
    [alert] = raised(first)
    assert first == [alert]
    assert alert.kind is AlertKind.UNREACHABLE
    assert alert.rule_id == "EM-2"
    assert (alert.extension, alert.duty_line, alert.repeat) == ("8000", "guard_room", 0)
    assert alert.since == down
    assert alert.at == down
    assert alert.since.tzinfo == SHANGHAI
    assert (alert.person_id, alert.person_name) == ("li", "李明")  # the night guard
    assert "门卫室报警电话" in alert.message_zh
    assert "李明" in alert.message_zh
    assert "2026-11-23 03:00:00" in alert.message_en
    assert alert.key == f"hq:unreachable:8000:{down.astimezone(UTC).isoformat()}"
    assert bench.watch.open_alerts() == (alert,)

    assert bench.watch.next_wakeup(down) == down + MINUTE
    assert bench.tick(down + timedelta(seconds=30)) == []
    [again] = bench.tick(down + MINUTE)
    assert isinstance(again, RaiseAlert)
    assert (again.repeat, again.key, again.since) == (1, alert.key, down)
    assert "1 分钟" in again.message_zh
    [third] = bench.tick(down + 2 * MINUTE)
    assert isinstance(third, RaiseAlert)
    assert third.repeat == 2

    # The registration expiring later is the same outage: no new alert.
    removal = unplug("8000", killed)[-1]
    assert bench.feed([removal]) == []

    back = bench.feed(plug("8000", down + 12 * MINUTE))
    [offence] = offences(back)
    assert offence.rule_id == "EM-2"
    assert offence.key == f"hq:8000:EM-2:{down.astimezone(UTC).isoformat()}"
    assert offence.at == down
    assert offence.call is None
    assert offence.extension == "8000"
    assert (offence.person_id, offence.person_name, offence.department) == ("li", "李明", "保卫部")
    assert offence.talk_time == 12 * MINUTE
    assert offence.outcome is Outcome.MONITORED
    assert offence.detail_zh == "门卫室报警电话 不可达 12 分钟（须24小时可达）"
    assert (
        offence.detail_en
        == "guard-room alarm phone unreachable for 12 min (must be reachable 24 h)"
    )
    assert offence.policy_version == "v1"
    [clear] = cleared(back)
    assert (clear.key, clear.since, clear.at) == (alert.key, down, down + 12 * MINUTE)
    assert clear.duration == 12 * MINUTE
    assert len(back) == 2
    assert bench.watch.open_alerts() == ()
    assert bench.tick(down + 20 * MINUTE) == []


def test_alarm_phone_off_hook_is_not_an_outage() -> None:
    bench = Bench.start(nov(23, 2))
    off_hook = DeviceStateChanged("PJSIP/8000", DeviceState.INUSE, nov(23, 3))
    assert bench.feed([off_hook]) == []


def test_flush_records_the_outage_so_far_and_keeps_the_alert() -> None:
    bench = Bench.start(nov(23, 2))
    down = nov(23, 3) + CONTACT_DOWN
    bench.feed(unplug("8000", nov(23, 3)))

    [record] = bench.watch.flush(down + 5 * MINUTE)
    assert record.draft.rule_id == "EM-2"
    assert record.draft.talk_time == 5 * MINUTE
    assert record.draft.detail_zh.endswith("（记录时仍不可达）")
    assert record.draft.detail_en.endswith("(still unreachable when recorded)")
    assert [a.extension for a in bench.watch.open_alerts()] == ["8000"]
    assert bench.watch.flush(down + 5 * MINUTE) == []

    # If the process lives on, the rest of the outage is a part of its own.
    back = bench.feed(plug("8000", down + 8 * MINUTE))
    [rest] = offences(back)
    assert rest.talk_time == 3 * MINUTE
    assert rest.key != record.draft.key


# --- DT-1 / DT-5: duty phones inside and outside their windows ------------------------------


def test_duty_phone_down_in_duty_hours_is_one_offence_against_the_person_on_duty() -> None:
    bench = Bench.start(nov(23, 6))
    down = nov(23, 10) + CONTACT_DOWN

    went = bench.feed(unplug("8001", nov(23, 10)))
    [alert] = raised(went)
    assert (alert.rule_id, alert.person_id, alert.since) == ("DT-5", "zhao", down)
    assert raised(went, AlertKind.UNCOVERED) == []  # 8002 still answers the hotline

    assert len(raised(bench.run_until(down + 12 * MINUTE - timedelta(seconds=1)))) == 11
    back = bench.feed(plug("8001", down + 12 * MINUTE))
    [offence] = offences(back)
    assert offence.rule_id == "DT-5"
    assert offence.key == f"hq:8001:DT-5:{down.astimezone(UTC).isoformat()}"
    assert (offence.person_id, offence.person_name, offence.department) == (
        "zhao",
        "赵敏",
        "客服部",
    )
    assert offence.talk_time == 12 * MINUTE
    assert offence.detail_zh == "热线值班1 在值班时间内不可达 12 分钟"
    assert offence.detail_en == "hotline duty 1 unreachable for 12 min during duty hours"
    assert [c.key for c in cleared(back)] == [alert.key]
    assert offences(bench.run_until(nov(24, 23))) == []


def test_duty_phone_down_only_at_night_is_nothing() -> None:
    bench = Bench.start(nov(23, 20))
    assert bench.feed(unplug("8001", nov(23, 22, 30))) == []
    assert bench.watch.next_wakeup(nov(23, 23)) == nov(24, 7, 30)  # the window opens
    assert bench.run_until(nov(24, 5)) == []
    assert bench.feed(plug("8001", nov(24, 6, 59))) == []
    assert bench.run_until(nov(25, 23)) == []


def test_outage_across_the_window_opening_counts_from_the_opening() -> None:
    bench = Bench.start(nov(23, 1))
    assert bench.feed(unplug("8001", nov(23, 6))) == []
    assert bench.watch.next_wakeup(nov(23, 6, 1)) == nov(23, 7, 30)

    [alert] = bench.tick(nov(23, 7, 30))
    assert isinstance(alert, RaiseAlert)
    assert (alert.since, alert.person_id) == (nov(23, 7, 30), "zhao")

    back = bench.feed(plug("8001", nov(23, 8)))
    [offence] = offences(back)
    assert offence.key == f"hq:8001:DT-5:{nov(23, 7, 30).astimezone(UTC).isoformat()}"
    assert offence.at == nov(23, 7, 30)
    assert offence.talk_time == 30 * MINUTE
    assert offence.person_id == "zhao"
    assert [c.since for c in cleared(back)] == [nov(23, 7, 30)]


def test_outage_across_the_window_closing_ends_its_offence_at_the_closing() -> None:
    bench = Bench.start(nov(23, 12))
    went = bench.feed(unplug("8001", nov(23, 21, 50)))
    [alert] = raised(went)
    assert alert.person_id == "qian"
    during = bench.run_until(nov(23, 21, 59, 30))
    assert [a.repeat for a in raised(during)] == list(range(1, 10))
    assert offences(during) == []

    assert bench.watch.next_wakeup(nov(23, 21, 59, 30)) == nov(23, 22)
    closing = bench.tick(nov(23, 22))
    [offence] = offences(closing)
    assert offence.person_id == "qian"
    assert offence.talk_time == 10 * MINUTE - CONTACT_DOWN
    assert offence.detail_zh.endswith("（值班时间结束时仍不可达）")
    assert offence.detail_en.endswith("(still unreachable when duty hours ended)")
    [clear] = cleared(closing)
    assert (clear.key, clear.at) == (alert.key, nov(23, 22))

    assert bench.run_until(nov(23, 23)) == []
    assert bench.feed(plug("8001", nov(23, 23))) == []


def test_phone_off_for_two_days_is_one_occurrence_per_window() -> None:
    bench = Bench.start(nov(23, 6))
    effects = bench.feed(unplug("8001", nov(23, 21)))
    effects += bench.run_until(nov(25, 12))
    effects += bench.feed(plug("8001", nov(25, 12)))
    found = offences(effects)
    assert [(o.at, o.talk_time, o.person_id) for o in found] == [
        (nov(23, 21) + CONTACT_DOWN, timedelta(hours=1) - CONTACT_DOWN, "qian"),
        (nov(24, 7, 30), timedelta(hours=14, minutes=30), "zhao"),
        (nov(25, 7, 30), timedelta(hours=4, minutes=30), "zhao"),
    ]
    assert len({o.key for o in found}) == 3
    firsts = [a for a in raised(effects) if a.repeat == 0]
    assert [a.since for a in firsts] == [o.at for o in found]
    assert [c.at for c in cleared(effects)] == [nov(23, 22), nov(24, 22), nov(25, 12)]


GOLDEN_WEEK = SpecialPeriod("国庆黄金周", date(2026, 10, 1), date(2026, 10, 7))
NATIONAL_DAY = frozenset(date(2026, 10, d) for d in range(1, 9))
OFFICE = TimeWindow(time(8, 30), time(17, 30))
WORKING_HOURS = Schedule(
    WorkingHours(
        WeeklyHours.on(MONDAY_TO_FRIDAY, OFFICE),
        HolidayTable(2026, 2026, public_holidays=NATIONAL_DAY, source="test"),
    ),
    SHANGHAI,
)
REIMBURSED = WatchedLine(
    "8001",
    "调度手机",
    "DT-1",
    WORKING_HOURS.with_special_periods([GOLDEN_WEEK]),
    name_en="dispatch mobile",
)


def test_golden_week_makes_a_night_outage_an_offence() -> None:
    bench = Bench.start(sh(9, 30, 12), lines=[REIMBURSED])
    down = sh(10, 3, 2) + CONTACT_DOWN
    went = bench.feed(unplug("8001", sh(10, 3, 2)))
    [alert] = raised(went)
    assert alert.person_id == "zhou"  # no rota line: the phone's owner answers for it
    back = bench.feed(plug("8001", down + 45 * MINUTE))
    [offence] = offences(back)
    assert offence.rule_id == "DT-1"
    assert (offence.person_id, offence.department) == ("zhou", "调度室")
    assert offence.talk_time == 45 * MINUTE
    assert offence.detail_en == "dispatch mobile unreachable for 45 min during duty hours"


def test_the_same_night_outage_after_golden_week_is_nothing() -> None:
    bench = Bench.start(sh(10, 12, 12), lines=[REIMBURSED])
    effects = bench.feed(unplug("8001", sh(10, 13, 2)))
    effects += bench.run_until(sh(10, 13, 2, 45))
    effects += bench.feed(plug("8001", sh(10, 13, 2, 45)))
    assert effects == []


def test_holiday_without_special_period_has_no_working_hours() -> None:
    plain = WatchedLine("8001", "调度手机", "DT-1", WORKING_HOURS)
    bench = Bench.start(sh(10, 7, 8), lines=[plain])
    effects = bench.feed(unplug("8001", sh(10, 8, 9)))  # National Day holiday, a Thursday
    effects += bench.run_until(sh(10, 8, 18))
    effects += bench.feed(plug("8001", sh(10, 8, 18)))
    assert effects == []


# --- AN-2: cover of the hotline -------------------------------------------------------------


def test_rota_gap_is_an_uncovered_alert_raised_repeated_and_cleared() -> None:
    bench = Bench.start(nov(23, 9), rota=site_rota(hotline_gap=True))
    assert bench.watch.next_wakeup(nov(23, 14)) == nov(23, 15)  # Zhao's shift ends

    [alert] = bench.tick(nov(23, 15))
    assert isinstance(alert, RaiseAlert)
    assert (alert.kind, alert.rule_id, alert.duty_line) == (AlertKind.UNCOVERED, "AN-2", "hotline")
    assert alert.extension == ""
    assert alert.since == nov(23, 15)
    assert alert.person_id == ""
    assert "无人值班" in alert.message_zh
    assert "nobody on duty" in alert.message_en

    during = bench.run_until(nov(23, 15, 59, 59))
    assert [a.repeat for a in raised(during)] == list(range(1, 60))
    assert {a.key for a in raised(during)} == {alert.key}

    [clear] = bench.tick(nov(23, 16))
    assert isinstance(clear, ClearAlert)
    assert (clear.key, clear.kind, clear.duration) == (alert.key, AlertKind.UNCOVERED, 60 * MINUTE)
    assert bench.run_until(nov(23, 21)) == []


def test_rota_gaps_lists_the_planned_holes_in_required_hours() -> None:
    watch = StandbyWatch(LINES, site_rota(hotline_gap=True), PEOPLE, site="hq")
    gaps = watch.rota_gaps(nov(23), nov(25))
    assert set(gaps) == {"hotline"}  # the alarm phone's group is not checked for cover
    assert gaps["hotline"] == (
        Interval(nov(23, 15), nov(23, 16)),
        Interval(nov(24, 15), nov(24, 16)),
    )
    assert StandbyWatch(LINES, site_rota(), PEOPLE, site="hq").rota_gaps(nov(23), nov(25)) == {
        "hotline": ()
    }


def test_both_hotline_phones_down_leaves_the_hotline_uncovered() -> None:
    bench = Bench.start(nov(23, 9))
    first = bench.feed(unplug("8001", nov(23, 10)))
    assert raised(first, AlertKind.UNCOVERED) == []

    second = bench.feed(unplug("8002", nov(23, 10, 5)))
    [uncovered] = raised(second, AlertKind.UNCOVERED)
    assert uncovered.since == nov(23, 10, 5) + CONTACT_DOWN
    assert (uncovered.person_id, uncovered.person_name) == ("zhao", "赵敏")
    assert "值班电话均不可达" in uncovered.message_zh
    assert "赵敏" in uncovered.message_zh
    assert uncovered.name == "热线值班1、热线值班2"
    assert len(raised(second, AlertKind.UNREACHABLE)) == 1  # 8002 itself

    back = bench.feed(plug("8002", nov(23, 10, 20)))
    [clear] = cleared(back, AlertKind.UNCOVERED)
    assert clear.key == uncovered.key
    assert len(offences(back)) == 1  # 8002's DT-5
    assert {a.extension for a in bench.watch.open_alerts()} == {"8001"}


def test_cover_by_phones_is_judged_only_once_a_resync_told_their_status() -> None:
    watch = StandbyWatch(LINES, site_rota(), PEOPLE, site="hq")
    assert watch.tick(nov(23, 10)) == []  # Zhao is on duty; the phones are not known yet
    [alert] = watch.on_resync(nov(23, 10, 1))  # nothing was listed: no phone is reachable
    assert isinstance(alert, RaiseAlert)
    assert (alert.kind, alert.duty_line) == (AlertKind.UNCOVERED, "hotline")


def test_nobody_on_duty_outside_required_hours_is_fine() -> None:
    bench = Bench.start(nov(23, 22, 30), rota=site_rota(hotline_gap=True))
    assert bench.run_until(nov(24, 7)) == []


# --- resync after an AMI reconnect ----------------------------------------------------------


def snapshot(at: datetime, *, down: Sequence[str] = ()) -> EndpointSnapshot:
    """List what PJSIPShowContacts and DeviceStateList say after a login."""
    devices = tuple(
        DeviceEntry(
            f"PJSIP/{ext}", DeviceState.UNAVAILABLE if ext in down else DeviceState.NOT_INUSE
        )
        for ext in PORTS
    )
    contacts = tuple(
        ContactEntry(
            ext,
            uri(ext),
            ContactStatus.UNREACHABLE if ext in down else ContactStatus.REACHABLE,
            ext,
        )
        for ext in PORTS
    )
    return EndpointSnapshot(at, devices, contacts)


@pytest.mark.parametrize("fresh_book", [False, True])
def test_resync_replay_never_duplicates_an_offence_or_restarts_an_alert(
    fresh_book: bool,
) -> None:
    bench = Bench.start(nov(23, 9))
    down = nov(23, 10) + CONTACT_DOWN
    changes: list[EndpointChange] = []
    for event in unplug("8001", nov(23, 10), removed=False):
        bench.book, found = bench.book.apply(event)
        changes.extend(found)
    [alert] = raised(e for c in changes for e in bench.watch.on_change(c))
    [repeat] = bench.tick(down + MINUTE)
    assert isinstance(repeat, RaiseAlert)
    assert repeat.repeat == 1

    # Reconnect: the listings still show 8001 unreachable.
    assert (
        bench.resync(snapshot(down + timedelta(seconds=90), down=["8001"]), fresh=fresh_book) == []
    )
    # The same changes delivered again are old news.
    assert [e for c in changes for e in bench.watch.on_change(c)] == []
    [next_repeat] = bench.tick(down + 2 * MINUTE)
    assert isinstance(next_repeat, RaiseAlert)
    assert (next_repeat.repeat, next_repeat.key, next_repeat.since) == (2, alert.key, down)

    # It came back while the connection was down: the next resync closes the outage once.
    back = bench.resync(snapshot(down + 5 * MINUTE), fresh=fresh_book)
    [offence] = offences(back)
    assert offence.key == f"hq:8001:DT-5:{down.astimezone(UTC).isoformat()}"
    assert offence.talk_time == 5 * MINUTE
    assert [c.key for c in cleared(back)] == [alert.key]
    assert bench.resync(snapshot(down + 6 * MINUTE), fresh=fresh_book) == []
    assert [e for c in changes for e in bench.watch.on_change(c)] == []
    assert bench.run_until(nov(23, 21)) == []


def test_a_phone_forgotten_by_a_resync_stays_down() -> None:
    bench = Bench.start(nov(23, 9))
    bench.feed(unplug("8001", nov(23, 10), removed=False))
    listed = snapshot(nov(23, 10, 2), down=["8001"])
    without_8001 = EndpointSnapshot(
        listed.at,
        tuple(d for d in listed.devices if d.device != "PJSIP/8001"),
        tuple(c for c in listed.contacts or () if c.aor != "8001"),
    )
    assert offences(bench.resync(without_8001)) == []
    assert [a.extension for a in bench.watch.open_alerts()] == ["8001"]
    back = bench.feed(plug("8001", nov(23, 10, 30)))
    [offence] = offences(back)
    assert offence.talk_time == 30 * MINUTE - CONTACT_DOWN


# --- debounce -------------------------------------------------------------------------------


def test_debounce_forgets_a_flap_and_counts_a_real_outage_from_its_start() -> None:
    debounce = timedelta(seconds=10)
    bench = Bench.start(nov(23, 9), debounce=debounce)
    flap = bench.feed(unplug("8001", nov(23, 10), removed=False))
    flap += bench.feed(plug("8001", nov(23, 10, 0, 5)))
    assert flap == []
    assert bench.run_until(nov(23, 10, 1)) == []

    down = nov(23, 11) + CONTACT_DOWN
    assert bench.feed(unplug("8001", nov(23, 11), removed=False)) == []
    assert bench.watch.next_wakeup(down) == down + debounce
    [alert] = bench.tick(down + debounce)
    assert isinstance(alert, RaiseAlert)
    assert alert.since == down
    back = bench.feed(plug("8001", down + timedelta(seconds=20)))
    [offence] = offences(back)
    assert offence.talk_time == timedelta(seconds=20)
    assert offence.detail_zh == "热线值班1 在值班时间内不可达 20 秒"


# --- next_wakeup ----------------------------------------------------------------------------


def test_next_wakeup_follows_handover_window_and_alert_repeats() -> None:
    bench = Bench.start(nov(23, 1))
    watch = bench.watch
    assert watch.next_wakeup(nov(23, 3)) == nov(23, 7, 30)  # the hotline must be covered
    assert watch.next_wakeup(nov(23, 10)) == nov(23, 15)  # Zhao hands over to Qian
    assert watch.next_wakeup(nov(23, 16)) == nov(23, 22)  # the hotline window closes
    bench.feed(unplug("8000", nov(23, 16)))
    assert watch.next_wakeup(nov(23, 16, 0, 1)) == nov(23, 16, 1) + CONTACT_DOWN
    assert watch.next_wakeup(nov(23, 16, 0, 1)).tzinfo == SHANGHAI  # type: ignore[union-attr]
    only_alarm = Bench.start(nov(23, 1), lines=[ALARM])
    assert only_alarm.watch.next_wakeup(nov(23, 3)) is None


def test_unwatched_extensions_are_ignored() -> None:
    bench = Bench.start(nov(23, 9), lines=[ALARM])
    assert bench.feed(unplug("8001", nov(23, 10))) == []
    assert bench.watch.open_alerts() == ()


@pytest.mark.parametrize(
    ("lines", "repeat", "debounce", "problem"),
    [
        ((ALARM, ALARM), MINUTE, timedelta(0), "watched twice"),
        (
            (WatchedLine("8009", "x", "DT-5", DAILY_STANDBY, coverage=True),),
            MINUTE,
            timedelta(0),
            "duty_line",
        ),
        ((ALARM,), timedelta(0), timedelta(0), "repeat"),
        ((ALARM,), MINUTE, timedelta(seconds=-1), "debounce"),
    ],
)
def test_bad_settings_are_config_errors(
    lines: tuple[WatchedLine, ...], repeat: timedelta, debounce: timedelta, problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem):
        StandbyWatch(lines, site_rota(), PEOPLE, site="hq", alert_repeat=repeat, debounce=debounce)


def test_naive_times_are_refused() -> None:
    watch = StandbyWatch(LINES, site_rota(), PEOPLE, site="hq")
    with pytest.raises(ValueError, match="timezone-aware"):
        watch.tick(datetime(2026, 11, 23, 10))  # noqa: DTZ001


# --- properties -----------------------------------------------------------------------------

SECONDS_IN_THREE_DAYS = 3 * 24 * 3600


@settings(max_examples=60, deadline=None)
@given(
    start=st.integers(min_value=0, max_value=SECONDS_IN_THREE_DAYS),
    length=st.integers(min_value=1, max_value=SECONDS_IN_THREE_DAYS),
)
def test_offences_add_up_to_the_outage_inside_the_window(start: int, length: int) -> None:
    """Whatever the outage, the recorded parts are exactly its time inside the window."""
    bench = Bench.start(nov(22, 12), lines=[HOTLINE_1], alert_repeat=timedelta(hours=1))
    killed = nov(23) + timedelta(seconds=start)
    down = killed + CONTACT_DOWN
    up = down + timedelta(seconds=length)
    effects = bench.feed(unplug("8001", killed, removed=length > 48))
    effects += bench.run_until(up - timedelta(microseconds=1))
    effects += bench.feed(plug("8001", up))
    effects += bench.run_until(up + timedelta(days=1))

    found = offences(effects)
    inside = DAILY_STANDBY.active_intervals(down, up)
    assert [o.talk_time for o in found] == [i.duration for i in inside]
    assert [o.at for o in found] == [i.start for i in inside]
    assert len({o.key for o in found}) == len(found)
    opened = [a for a in raised(effects, AlertKind.UNREACHABLE) if a.repeat == 0]
    assert [a.since for a in opened] == [i.start for i in inside]
    assert len(cleared(effects, AlertKind.UNREACHABLE)) == len(inside)
    assert bench.watch.open_alerts() == ()


@settings(max_examples=60, deadline=None)
@given(
    start=st.integers(min_value=0, max_value=SECONDS_IN_THREE_DAYS),
    length=st.integers(min_value=1, max_value=SECONDS_IN_THREE_DAYS),
    stride=st.integers(min_value=1, max_value=24 * 60),
)
def test_late_ticks_record_the_same_offences(start: int, length: int, stride: int) -> None:
    """A shell that ticks late or seldom still gets every part with its true times."""
    bench = Bench.start(nov(22, 12), lines=[HOTLINE_1])
    killed = nov(23) + timedelta(seconds=start)
    down = killed + CONTACT_DOWN
    up = down + timedelta(seconds=length)
    effects = bench.feed(unplug("8001", killed, removed=length > 48))
    now = killed + timedelta(minutes=stride)
    while now < up:
        effects += bench.tick(now)
        now += timedelta(minutes=stride)
    effects += bench.feed(plug("8001", up))

    inside = DAILY_STANDBY.active_intervals(down, up)
    found = offences(effects)
    assert [(o.at, o.talk_time) for o in found] == [(i.start, i.duration) for i in inside]
    on_duty = [site_rota().on_duty("hotline", i.start) for i in inside]
    assert [o.person_id for o in found] == on_duty


def test_a_late_tick_blames_whoever_was_on_duty_when_the_window_opened() -> None:
    bench = Bench.start(nov(23, 1))
    bench.feed(unplug("8001", nov(23, 6)))
    [alert] = raised(bench.tick(nov(23, 16)), AlertKind.UNREACHABLE)  # Qian is on duty now
    assert alert.since == nov(23, 7, 30)
    assert alert.person_id == "qian"
    [offence] = offences(bench.feed(plug("8001", nov(23, 16, 10))))
    assert (offence.at, offence.person_id) == (nov(23, 7, 30), "zhao")
    assert offence.talk_time == timedelta(hours=8, minutes=40)


def test_flush_keeps_a_duty_phone_alert_open() -> None:
    bench = Bench.start(nov(23, 9))
    down = nov(23, 10) + CONTACT_DOWN
    [alert] = raised(bench.feed(unplug("8001", nov(23, 10))))
    [record] = bench.watch.flush(down + 7 * MINUTE)
    assert (record.draft.rule_id, record.draft.talk_time) == ("DT-5", 7 * MINUTE)
    assert bench.watch.open_alerts() == (alert,)
    [repeat] = bench.tick(down + 8 * MINUTE)
    assert isinstance(repeat, RaiseAlert)
    assert (repeat.key, repeat.repeat) == (alert.key, 1)
