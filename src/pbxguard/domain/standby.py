"""Standby watch: the alarm phone and the duty phones stay reachable (EM-2, DT-1/5/9, AN-2).

Theory of operation
-------------------
Every `WatchedLine` is a phone with a `Schedule` saying when it must be reachable: the
guard-room alarm phone around the clock (EM-2), a reimbursed duty phone in working hours and
all day in special periods such as Golden Week (DT-1), a subsidised standby phone 07:30-22:00
(DT-5). The shell feeds `StandbyWatch` the `EndpointChange` values its `EndpointBook` yields
and calls `tick` when `next_wakeup` says so; the watch answers with effects (`RaiseAlert`,
`ClearAlert`, `RecordOffence`) and, like the call tracker, owns state but does no I/O and
reads no clock.

Outages. A change whose ``after.reachable`` is False opens an outage at ``after.since`` (the
book keeps that instant across reconnects). A change whose ``after.reachable`` is True closes
it. A change to "unknown" (a resync that no longer lists the phone) keeps an open outage open:
nothing says the phone came back. A fine needs evidence, so only a phone known to be
unreachable starts an outage.

Offences. An outage is cut along the schedule into *parts*: the stretches during which the
phone was required and down. Each part is one occurrence: an offence of the line's rule
against whoever answers for the phone when the part began (the rota's person on the line's
``duty_line``, else the phone's owner in the directory), with the part's length as
``talk_time``. A part is recorded when the phone comes back, when its window closes, or on
`flush`, whichever is first. An outage wholly outside the schedule has no part, so it is
neither an offence nor (unless ``alert_any_hour``) an alert. An outage spanning several
windows (a phone left off from Friday to Monday) is one occurrence per window it overlaps,
because the regulations count standby failures per duty period ("per occurrence", DT-5
"daily"). The offence key is ``{site}:{extension}:{rule}:{part start, UTC ISO}``; for an
outage that began inside the window the part start is the outage start.

Alerts. An ``alert_any_hour`` line (the alarm phone) alerts from the outage start whatever
the schedule says; other lines alert only during a part, and the alert is cleared when the
part's window closes. An open alert is raised again every ``alert_repeat`` with a growing
``repeat`` number until it is cleared.

Cover (AN-2). Lines with ``coverage`` group by ``duty_line``. While any of a group's coverage
schedules is active, the group is uncovered when the rota has nobody on its line, or when no
phone of the group (coverage or not) is reachable. Reachability counts only once the shell
has reported a complete resync (`on_resync`): before that the watch knows nothing about the
phones and would cry wolf at every start.

Debounce. With ``debounce`` above zero an outage stays silent until it has lasted that long;
one that ends sooner is forgotten (no alert, no offence, and the phone still covers its
group). Once confirmed it counts from its real start. The default is zero: the alarm phone
must alert within 30 s (EM-2), so any debounce must stay well below that.

Resync. After every AMI login the shell resyncs its book and passes on the changes. A change
older than the last one applied to that phone is ignored, a "down" report for a phone whose
outage is already open changes nothing (the alert keeps its counter), and an "up" report
without an open outage does nothing; so replaying a snapshot never yields a second offence
or restarts an alert.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from pbxguard.domain.calendars import AlwaysOn, Interval, Schedule, require_aware
from pbxguard.domain.effects import AlertKind, ClearAlert, RaiseAlert, RecordOffence
from pbxguard.domain.endpoints import EndpointChange
from pbxguard.domain.policy import Person
from pbxguard.domain.records import OffenceDraft, Outcome
from pbxguard.domain.rota import Rota
from pbxguard.errors import ConfigError

DEFAULT_ALERT_REPEAT = timedelta(seconds=60)
COVERAGE_RULE = "AN-2"


@dataclass(frozen=True, slots=True)
class WatchedLine:
    """A phone that must stay reachable while its schedule is active.

    Attributes:
        extension: the PJSIP endpoint name (``8000``).
        name: what people call it, in Chinese (门卫室报警电话, 热线值班1).
        rule_id: the rule an outage breaks (EM-2, DT-1, DT-5, DT-9), or "" to alert only.
        schedule: when it must be reachable.
        duty_line: the rota line whose person on duty answers for it (guard_room, hotline,
            dispatch); "" for a personal phone, answered for by its owner.
        alert_any_hour: alert whenever it is down, even outside its schedule (EM-2).
        coverage: its group (``duty_line``) must always have somebody on duty with a
            reachable phone while this schedule is active (AN-2).
        name_en: its English name; ``name`` when empty.
    """

    extension: str
    name: str
    rule_id: str
    schedule: Schedule
    duty_line: str = ""
    alert_any_hour: bool = False
    coverage: bool = False
    name_en: str = ""

    @property
    def english_name(self) -> str:
        """Return the English name, or the Chinese one when none is set."""
        return self.name_en or self.name


StandbyEffect = RaiseAlert | ClearAlert | RecordOffence


def _utc(at: datetime) -> datetime:
    require_aware(at)
    return at.astimezone(UTC)


def _duration_zh(span: timedelta) -> str:
    """Say a duration in Chinese: seconds under a minute, else whole minutes."""
    seconds = max(int(span.total_seconds()), 0)
    if seconds < 60:
        return f"{seconds} 秒"
    hours, minutes = divmod(seconds // 60, 60)
    return f"{hours} 小时 {minutes} 分钟" if hours else f"{minutes} 分钟"


def _duration_en(span: timedelta) -> str:
    """Say a duration in English: seconds under a minute, else whole minutes."""
    seconds = max(int(span.total_seconds()), 0)
    if seconds < 60:
        return f"{seconds} s"
    hours, minutes = divmod(seconds // 60, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


class _PartEnd(enum.Enum):
    CAME_BACK = "came_back"
    WINDOW_CLOSED = "window_closed"
    FLUSHED = "flushed"


_END_NOTE_ZH = {
    _PartEnd.CAME_BACK: "",
    _PartEnd.WINDOW_CLOSED: "（值班时间结束时仍不可达）",
    _PartEnd.FLUSHED: "（记录时仍不可达）",
}
_END_NOTE_EN = {
    _PartEnd.CAME_BACK: "",
    _PartEnd.WINDOW_CLOSED: " (still unreachable when duty hours ended)",
    _PartEnd.FLUSHED: " (still unreachable when recorded)",
}


@dataclass(frozen=True, slots=True)
class _Who:
    id: str
    name: str
    department: str


_NOBODY = _Who("", "", "")


@dataclass(slots=True)
class _Alert:
    key: str
    since: datetime
    repeat: int
    next_due: datetime
    last: RaiseAlert


@dataclass(slots=True)
class _Part:
    start: datetime
    who: _Who


@dataclass(slots=True)
class _Outage:
    start: datetime
    cursor: datetime  # the schedule has been followed up to here
    confirmed: bool
    part: _Part | None = None
    alert: _Alert | None = None


@dataclass(slots=True)
class _Phone:
    line: WatchedLine
    reachable: bool | None = None
    last_change: datetime | None = None
    outage: _Outage | None = None

    @property
    def covers(self) -> bool:
        # An outage still inside its debounce is not one yet.
        if self.outage is not None and not self.outage.confirmed:
            return True
        return self.reachable is True


@dataclass(slots=True)
class _Group:
    duty_line: str
    phones: tuple[_Phone, ...]
    required: tuple[Schedule, ...]
    alert: _Alert | None = None

    @property
    def name_zh(self) -> str:
        return "、".join(p.line.name for p in self.phones)

    @property
    def name_en(self) -> str:
        return ", ".join(p.line.english_name for p in self.phones)


class StandbyWatch:
    """Watch the alarm and duty phones, and the duty groups' cover; emit alerts and offences."""

    def __init__(
        self,
        lines: Iterable[WatchedLine],
        rota: Rota,
        people: Mapping[str, Person],
        *,
        site: str,
        alert_repeat: timedelta = DEFAULT_ALERT_REPEAT,
        debounce: timedelta = timedelta(0),
        policy_version: str = "",
    ) -> None:
        """Build a watch over some lines.

        Args:
            lines: the phones to watch, one per extension.
            rota: who is on duty on each rota line; its timezone is the site's.
            people: the directory, by person id.
            site: the site's name, the first part of every key.
            alert_repeat: how often an open alert is raised again.
            debounce: how long an outage must last before it counts (0: at once).
            policy_version: stored with every offence.

        Raises:
            ConfigError: two lines share an extension, a coverage line has no ``duty_line``,
                ``alert_repeat`` is not positive or ``debounce`` is negative.
        """
        if alert_repeat <= timedelta(0):
            raise ConfigError(f"alert repeat must be positive, got {alert_repeat}")
        if debounce < timedelta(0):
            raise ConfigError(f"outage debounce cannot be negative, got {debounce}")
        self.site = site
        self.alert_repeat = alert_repeat
        self.debounce = debounce
        self.policy_version = policy_version
        self._rota = rota
        self._people = people
        self._owners: dict[str, Person] = {}
        for person in people.values():
            for extension in person.extensions:
                self._owners.setdefault(extension, person)
        self._phones: dict[str, _Phone] = {}
        for line in lines:
            if not line.extension:
                raise ConfigError(f"watched line {line.name!r} has no extension")
            if line.extension in self._phones:
                raise ConfigError(f"extension {line.extension} is watched twice")
            if line.coverage and not line.duty_line:
                raise ConfigError(
                    f"{line.name} ({line.extension}) needs a duty_line to be checked for cover"
                )
            self._phones[line.extension] = _Phone(line)
        self._groups: dict[str, _Group] = {}
        for duty_line in sorted({p.line.duty_line for p in self._phones.values()}):
            members = tuple(
                p for _, p in sorted(self._phones.items()) if p.line.duty_line == duty_line
            )
            required = tuple(p.line.schedule for p in members if p.line.coverage)
            if required:
                self._groups[duty_line] = _Group(duty_line, members, required)
        self._endpoints_known = False

    # -- queries ------------------------------------------------------------------------------

    @property
    def tz(self) -> ZoneInfo:
        """Return the site's timezone (the rota's), in which effects express their times."""
        return self._rota.tz

    @property
    def lines(self) -> tuple[WatchedLine, ...]:
        """Return the watched lines, by extension."""
        return tuple(p.line for _, p in sorted(self._phones.items()))

    def open_alerts(self) -> tuple[RaiseAlert, ...]:
        """Return the latest raise of every open alert, oldest condition first.

        Returns:
            One `RaiseAlert` per open alert.
        """
        alerts = [p.outage.alert for p in self._phones.values() if p.outage is not None]
        alerts.extend(g.alert for g in self._groups.values())
        found = [a.last for a in alerts if a is not None]
        return tuple(sorted(found, key=lambda a: (_utc(a.since), a.key)))

    def rota_gaps(self, start: datetime, end: datetime) -> Mapping[str, tuple[Interval, ...]]:
        """Return, per duty group, when the rota leaves it without anyone while required.

        Args:
            start: timezone-aware lower bound (inclusive).
            end: timezone-aware upper bound (exclusive).

        Returns:
            For every group checked for cover (AN-2), its uncovered stretches in time order,
            in the site's timezone; groups without gaps map to an empty tuple.

        Raises:
            ValueError: a bound is naive.
            ConfigError: a schedule needs holiday data its table lacks.
        """
        gaps: dict[str, tuple[Interval, ...]] = {}
        for duty_line, group in sorted(self._groups.items()):
            found: list[Interval] = []
            for schedule in group.required:
                found.extend(
                    self._rota.slots_without_cover(duty_line, start, end, required=schedule)
                )
            gaps[duty_line] = tuple(i.astimezone(self.tz) for i in _merge(found))
        return gaps

    def next_wakeup(self, now: datetime) -> datetime | None:
        """Return when `tick` must run next, so the shell can set one timer.

        Args:
            now: a timezone-aware instant.

        Returns:
            The earliest of: the next repeat of an open alert, the end of an outage's
            debounce, the next schedule change of a phone that is down or of a group checked
            for cover, and the next rota handover of a group that must be covered now; in the
            site's timezone. None when nothing is pending. A time at or before ``now`` means
            "tick at once".

        Raises:
            ValueError: ``now`` is naive.
            ConfigError: a schedule needs holiday data its table lacks.
        """
        now = _utc(now)
        due: list[datetime] = []
        for phone in self._phones.values():
            outage = phone.outage
            if outage is None:
                continue
            if not outage.confirmed:
                due.append(outage.start + self.debounce)
                continue
            if outage.alert is not None:
                due.append(outage.alert.next_due)
            change = phone.line.schedule.next_change(now)
            if change is not None:
                due.append(_utc(change))
        for duty_line, group in self._groups.items():
            if group.alert is not None:
                due.append(group.alert.next_due)
            for schedule in group.required:
                change = schedule.next_change(now)
                if change is not None:
                    due.append(_utc(change))
            if any(s.is_active(now) for s in group.required):
                handover = self._rota.next_handover(duty_line, now)
                if handover is not None:
                    due.append(_utc(handover))
        return min(due).astimezone(self.tz) if due else None

    # -- inputs -------------------------------------------------------------------------------

    def set_rota(self, rota: Rota) -> None:
        """Replace the rota; call `tick` afterwards to check cover against it.

        Parts of outages already under way keep the person they started with.

        Args:
            rota: the new rota.
        """
        self._rota = rota

    def on_change(self, change: EndpointChange) -> list[StandbyEffect]:
        """Apply one change of a phone's status.

        Args:
            change: what `EndpointBook.apply` or `EndpointBook.resync` reported.

        Returns:
            The effects: an alert when a watched phone goes down at a time it matters, the
            offence and the cleared alert when it comes back, and any change of its group's
            cover.

        Raises:
            ValueError: ``change.at`` is naive.
            ConfigError: a schedule needs holiday data its table lacks.
        """
        phone = self._phones.get(change.extension)
        if phone is None:
            return []
        at = _utc(change.at)
        if phone.last_change is not None and at < phone.last_change:
            return []  # older than what was already applied: a replay
        phone.last_change = at
        phone.reachable = change.after.reachable
        effects: list[StandbyEffect] = []
        if change.after.reachable is False and phone.outage is None:
            since = _utc(change.after.since) if change.after.since is not None else at
            start = min(since, at)
            phone.outage = _Outage(start, start, confirmed=False)
            effects.extend(self._follow(phone, at))
        elif change.after.reachable is True and phone.outage is not None:
            effects.extend(self._came_back(phone, at))
        group = self._groups.get(phone.line.duty_line)
        if group is not None:
            effects.extend(self._check_cover(group, at))
        return effects

    def on_resync(self, now: datetime) -> list[StandbyEffect]:
        """Note that a full endpoint resync has been applied, so phone statuses are complete.

        Call it after passing on every change of each `EndpointBook.resync`. Until the first
        call, cover (AN-2) is judged on the rota alone.

        Args:
            now: a timezone-aware instant (the snapshot's time).

        Returns:
            What `tick` returns at ``now``.

        Raises:
            ValueError: ``now`` is naive.
            ConfigError: a schedule needs holiday data its table lacks.
        """
        self._endpoints_known = True
        return self.tick(now)

    def tick(self, now: datetime) -> list[StandbyEffect]:
        """Advance to ``now``: close windows, open windows, repeat alerts, check cover.

        Args:
            now: a timezone-aware instant, normally the one `next_wakeup` gave.

        Returns:
            The effects, phones by extension first, then groups by rota line.

        Raises:
            ValueError: ``now`` is naive.
            ConfigError: a schedule needs holiday data its table lacks.
        """
        now = _utc(now)
        effects: list[StandbyEffect] = []
        for _, phone in sorted(self._phones.items()):
            if phone.outage is not None:
                effects.extend(self._follow(phone, now))
        for _, group in sorted(self._groups.items()):
            effects.extend(self._check_cover(group, now))
        return effects

    def flush(self, now: datetime) -> list[RecordOffence]:
        """Record the parts of outages still under way, up to ``now`` (before shutting down).

        Alerts stay open: the phones are still down. An outage that goes on after a flush
        continues with a new part from ``now``.

        Args:
            now: a timezone-aware instant.

        Returns:
            One offence per open part.

        Raises:
            ValueError: ``now`` is naive.
            ConfigError: a schedule needs holiday data its table lacks.
        """
        now = _utc(now)
        records: list[RecordOffence] = []
        for _, phone in sorted(self._phones.items()):
            outage = phone.outage
            if outage is None:
                continue
            effects = self._advance(phone, outage, now)
            if outage.confirmed and outage.part is not None:
                effects.extend(self._close_part(phone, outage, now, _PartEnd.FLUSHED))
            records.extend(e for e in effects if isinstance(e, RecordOffence))
        return records

    # -- outages ------------------------------------------------------------------------------

    def _follow(self, phone: _Phone, now: datetime) -> list[StandbyEffect]:
        outage = phone.outage
        if outage is None:
            return []
        effects = self._advance(phone, outage, now)
        if outage.confirmed:
            effects.extend(self._update_phone_alert(phone, outage, now))
        return effects

    def _advance(self, phone: _Phone, outage: _Outage, until: datetime) -> list[StandbyEffect]:
        """Confirm the outage once its debounce is over, then follow the schedule to ``until``."""
        if not outage.confirmed:
            if until - outage.start < self.debounce:
                return []
            outage.confirmed = True
        schedule = phone.line.schedule
        effects: list[StandbyEffect] = []
        if until > outage.cursor:
            for interval in schedule.active_intervals(outage.cursor, until):
                start, end = _utc(interval.start), _utc(interval.end)
                if outage.part is None:
                    outage.part = _Part(start, self._answerable(phone.line, start))
                if end < until or not schedule.is_active(until):
                    effects.extend(self._close_part(phone, outage, end, _PartEnd.WINDOW_CLOSED))
            outage.cursor = until
        # A window opening exactly now is not in the half-open intervals above.
        if outage.part is None and schedule.is_active(outage.cursor):
            outage.part = _Part(outage.cursor, self._answerable(phone.line, outage.cursor))
        return effects

    def _came_back(self, phone: _Phone, at: datetime) -> list[StandbyEffect]:
        outage = phone.outage
        if outage is None:
            return []
        phone.outage = None
        if at - outage.start < self.debounce:
            return []  # a flap shorter than the debounce is forgotten
        effects = self._advance(phone, outage, at)
        if outage.part is not None:
            effects.extend(self._close_part(phone, outage, at, _PartEnd.CAME_BACK))
        if outage.alert is not None:
            effects.append(self._clear(outage.alert, AlertKind.UNREACHABLE, phone.line, at))
            outage.alert = None
        return effects

    def _close_part(
        self, phone: _Phone, outage: _Outage, end: datetime, why: _PartEnd
    ) -> list[StandbyEffect]:
        part = outage.part
        if part is None:
            return []
        outage.part = None
        line = phone.line
        effects: list[StandbyEffect] = []
        if line.rule_id and end > part.start:
            effects.append(RecordOffence(self._draft(line, part, end, why)))
        if why is _PartEnd.WINDOW_CLOSED and not line.alert_any_hour and outage.alert is not None:
            effects.append(self._clear(outage.alert, AlertKind.UNREACHABLE, line, end))
            outage.alert = None
        return effects

    def _draft(self, line: WatchedLine, part: _Part, end: datetime, why: _PartEnd) -> OffenceDraft:
        span = end - part.start
        if isinstance(line.schedule.rule, AlwaysOn):
            zh = f"{line.name} 不可达 {_duration_zh(span)}（须24小时可达）"
            en = (
                f"{line.english_name} unreachable for {_duration_en(span)} (must be reachable 24 h)"
            )
        else:
            zh = f"{line.name} 在值班时间内不可达 {_duration_zh(span)}"
            en = f"{line.english_name} unreachable for {_duration_en(span)} during duty hours"
        return OffenceDraft(
            key=f"{self.site}:{line.extension}:{line.rule_id}:{part.start.isoformat()}",
            rule_id=line.rule_id,
            at=part.start.astimezone(self.tz),
            call=None,
            extension=line.extension,
            person_id=part.who.id,
            person_name=part.who.name,
            department=part.who.department,
            talk_time=span,
            outcome=Outcome.MONITORED,
            detail_zh=zh + _END_NOTE_ZH[why],
            detail_en=en + _END_NOTE_EN[why],
            policy_version=self.policy_version,
        )

    def _answerable(self, line: WatchedLine, at: datetime) -> _Who:
        """Return who answers for a phone at an instant: the rota's person, else its owner."""
        if line.duty_line:
            person_id = self._rota.on_duty(line.duty_line, at)
            if person_id is not None:
                person = self._people.get(person_id)
                if person is None:
                    return _Who(person_id, "", "")
                return _Who(person.id, person.name, person.department)
        owner = self._owners.get(line.extension)
        if owner is None:
            return _NOBODY
        return _Who(owner.id, owner.name, owner.department)

    # -- alerts -------------------------------------------------------------------------------

    def _update_phone_alert(
        self, phone: _Phone, outage: _Outage, now: datetime
    ) -> list[StandbyEffect]:
        line = phone.line
        alert = outage.alert
        if alert is not None:
            if now < alert.next_due:
                return []
            key, since, repeat = alert.key, alert.since, alert.repeat + 1
        else:
            if line.alert_any_hour:
                since = outage.start
            elif outage.part is not None:
                since = outage.part.start
            else:
                return []  # down outside the window: nobody needs to hear about it yet
            key, repeat = self._alert_key(AlertKind.UNREACHABLE, line.extension, since), 0
        who = self._answerable(line, now)
        local_since = since.astimezone(self.tz)
        zh = f"{line.name}（{line.extension}）不可达，自 {local_since:%Y-%m-%d %H:%M:%S} 起"
        en = (
            f"{line.english_name} ({line.extension}) unreachable "
            f"since {local_since:%Y-%m-%d %H:%M:%S}"
        )
        if repeat:
            zh += f"，已 {_duration_zh(now - since)}"
            en += f", for {_duration_en(now - since)}"
        if who.id:
            zh += f"；值班人 {who.name or who.id}"
            en += f"; on duty: {who.name or who.id}"
        raised = RaiseAlert(
            key=key,
            kind=AlertKind.UNREACHABLE,
            rule_id=line.rule_id,
            extension=line.extension,
            duty_line=line.duty_line,
            name=line.name,
            since=local_since,
            at=now.astimezone(self.tz),
            repeat=repeat,
            person_id=who.id,
            person_name=who.name,
            message_zh=zh,
            message_en=en,
        )
        outage.alert = _Alert(key, since, repeat, now + self.alert_repeat, raised)
        return [raised]

    def _alert_key(self, kind: AlertKind, subject: str, since: datetime) -> str:
        return f"{self.site}:{kind.value}:{subject}:{since.isoformat()}"

    def _clear(self, alert: _Alert, kind: AlertKind, line: WatchedLine, at: datetime) -> ClearAlert:
        return ClearAlert(
            key=alert.key,
            kind=kind,
            rule_id=line.rule_id,
            extension=line.extension,
            duty_line=line.duty_line,
            name=line.name,
            since=alert.since.astimezone(self.tz),
            at=at.astimezone(self.tz),
        )

    # -- cover (AN-2) -------------------------------------------------------------------------

    def _check_cover(self, group: _Group, now: datetime) -> list[StandbyEffect]:
        problem_zh = problem_en = ""
        person_id: str | None = None
        if any(s.is_active(now) for s in group.required):
            person_id = self._rota.on_duty(group.duty_line, now)
            if person_id is None:
                problem_zh, problem_en = "无人值班", "nobody on duty"
            elif self._endpoints_known and not any(p.covers for p in group.phones):
                problem_zh, problem_en = "值班电话均不可达", "no duty phone reachable"
        alert = group.alert
        if not problem_zh:
            if alert is None:
                return []
            group.alert = None
            return [
                ClearAlert(
                    key=alert.key,
                    kind=AlertKind.UNCOVERED,
                    rule_id=COVERAGE_RULE,
                    extension="",
                    duty_line=group.duty_line,
                    name=group.name_zh,
                    since=alert.since.astimezone(self.tz),
                    at=now.astimezone(self.tz),
                )
            ]
        if alert is not None:
            if now < alert.next_due:
                return []
            key, since, repeat = alert.key, alert.since, alert.repeat + 1
        else:
            key, since, repeat = self._alert_key(AlertKind.UNCOVERED, group.duty_line, now), now, 0
        person = self._people.get(person_id) if person_id else None
        person_name = person.name if person is not None else ""
        local_since = since.astimezone(self.tz)
        zh = f"{group.name_zh}：{problem_zh}，自 {local_since:%Y-%m-%d %H:%M:%S} 起"
        en = f"{group.name_en}: {problem_en} since {local_since:%Y-%m-%d %H:%M:%S}"
        if person_id:
            zh += f"；值班人 {person_name or person_id}"
            en += f"; on duty: {person_name or person_id}"
        raised = RaiseAlert(
            key=key,
            kind=AlertKind.UNCOVERED,
            rule_id=COVERAGE_RULE,
            extension="",
            duty_line=group.duty_line,
            name=group.name_zh,
            since=local_since,
            at=now.astimezone(self.tz),
            repeat=repeat,
            person_id=person_id or "",
            person_name=person_name,
            message_zh=zh,
            message_en=en,
        )
        group.alert = _Alert(key, since, repeat, now + self.alert_repeat, raised)
        return [raised]


def _merge(intervals: Sequence[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for interval in sorted(intervals, key=lambda i: (_utc(i.start), _utc(i.end))):
        if merged and _utc(interval.start) <= _utc(merged[-1].end):
            if _utc(interval.end) > _utc(merged[-1].end):
                merged[-1] = Interval(merged[-1].start, interval.end)
        else:
            merged.append(interval)
    return merged
