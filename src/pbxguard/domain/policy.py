"""The policy model: who may dial what, from which line, and what breaking a rule costs.

Every amount, role and permission is data loaded from a policy file (see
`pbxguard.adapters.policy_file`); nothing here encodes one reading of the regulations.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from zoneinfo import ZoneInfo

from pbxguard.domain.calendars import HolidayTable, Schedule
from pbxguard.domain.numbers import NumberClass, NumberClassifier, NumberingPlan
from pbxguard.domain.penalties import PenaltySpec
from pbxguard.domain.rota import Rota
from pbxguard.domain.tariff import Tariff


class Mode(enum.StrEnum):
    """What the guard does with a forbidden call."""

    ENFORCE = "enforce"  # refuse / hang up, and record
    MONITOR = "monitor"  # only record


class LineUse(enum.StrEnum):
    """What a line may be used for, whoever holds the handset."""

    ANY = "any"
    EMERGENCY_ONLY = "emergency_only"  # the guard-room alarm phone (EM-1)
    RECEIVE_ONLY = "receive_only"  # publicity and front-desk phones (OT-4)


@dataclass(frozen=True, slots=True)
class Role:
    """A role from the regulations (一般员工, 部门负责人, 所长以上 ...) and what it may dial.

    ``can_approve`` lets its holders give prior consent to long-distance calls (LD-1, LD-5): a
    department head for the people of their own department, a role with ``company_wide`` (所长以上,
    the executive team) for anyone.
    """

    id: str
    name_zh: str
    name_en: str
    allowed: frozenset[NumberClass]
    can_approve: bool = False
    company_wide: bool = False


@dataclass(frozen=True, slots=True)
class Person:
    """A member of staff: department and role decide what they may dial."""

    id: str
    name: str
    department: str
    role: str
    extensions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Line:
    """A phone line with permissions of its own.

    Attributes:
        extension: the extension (PJSIP endpoint name).
        name: what people call it (门卫室报警电话, 热线值班 1 ...).
        use: what the line may be used for at all.
        allowed: classes allowed from this line whoever dials (LD-11: long distance enabled on
            the general office, fax and service-hotline lines).
        duty_line: the rota line id for shared phones (guard_room, hotline, dispatch); the person
            on duty answers for calls made from it.
        answer_within: seconds within which calls to this line must be answered (AN-1: three
            rings, 15 s by default), or None when the line has no such duty.
        standby: the schedule (by name) during which the phone must be reachable.
        standby_rule: the rule an outage inside that schedule breaks (EM-2, DT-1, DT-5, DT-9).
        coverage: whether the line's duty group must always have someone reachable (AN-2).
        occupancy_grace: for the alarm phone, how long (seconds) an inbound non-emergency call
            may occupy it before it is an EM-1 offence; None to leave inbound calls alone.
        cut_occupancy: whether such a call is also hung up (enforce mode only).
        reject_rule: the rule broken by rejecting an internal call on this phone (DT-2).
        business_numbers: number prefixes that are business destinations (DT-3 dispatch phones).
        operating: the schedule (by name) of operating hours, for DT-3.
        promotion: the line makes promotional calls (telesales): it may not call numbers on the
            site's do-not-disturb list (DND-1).
    """

    extension: str
    name: str
    use: LineUse = LineUse.ANY
    allowed: frozenset[NumberClass] = frozenset()
    duty_line: str = ""
    answer_within: int | None = None
    standby: str = ""
    standby_rule: str = ""
    coverage: bool = False
    occupancy_grace: int | None = None
    cut_occupancy: bool = False
    reject_rule: str = ""
    business_numbers: tuple[str, ...] = ()
    operating: str = ""
    promotion: bool = False


@dataclass(frozen=True, slots=True)
class Telesales:
    """The telesales call quota (QU-1, 001 L519-527): effective calls a day per person.

    Attributes:
        people: the person ids the quota applies to.
        daily: effective calls required a day (120).
        first_half: effective calls required a day in the first half of the month (80).
        first_half_last_day: the last day of the month's first half (15).
        min_talk: an effective call is answered and talks at least this long.
        starts: the first day the quota is counted (days before it are never assessed).
        workdays: the holiday table whose working days count; None when every day counts.
        rule_id: the rule a missing call breaks (its penalty prices each missing call).
    """

    people: tuple[str, ...]
    starts: date
    daily: int = 120
    first_half: int = 80
    first_half_last_day: int = 15
    min_talk: timedelta = timedelta(seconds=30)
    workdays: HolidayTable | None = None
    rule_id: str = "QU-1"


@dataclass(frozen=True, slots=True)
class Rule:
    """One regulation: stable id, bilingual title, source article and penalty."""

    id: str
    title_zh: str
    title_en: str
    citation: str
    penalty: PenaltySpec | None = None

    @property
    def has_penalty(self) -> bool:
        """Tell whether breaking the rule is an offence for the ledger."""
        return self.penalty is not None


@dataclass(frozen=True, slots=True)
class CodeLimits:
    """How many wrong codes are tolerated, over what window, and how long a lock lasts.

    Attributes:
        max_failures: wrong codes (per extension, or per phone owner) that lock the route.
        window: how far back wrong codes count.
        lockout: how long the PIN route stays locked.
        digits: the length of generated codes.
        min_digits: the shortest code that may be issued.
    """

    max_failures: int = 5
    window: timedelta = timedelta(minutes=15)
    lockout: timedelta = timedelta(minutes=30)
    digits: int = 6
    min_digits: int = 4


@dataclass(frozen=True, slots=True)
class Policy:
    """A complete, validated policy bundle for one site.

    Attributes:
        site: the site's name (used in topics and ledger rows).
        timezone: the site's timezone.
        mode: enforce or monitor.
        plan: the numbering plan; ``classifier`` is compiled from it once.
        roles: roles by id.
        people: people by id.
        lines: lines with their own permissions, by extension.
        rules: rules by id.
        class_rules: the rule broken by dialling a class without permission.
        default_role: the role of an extension missing from the directory (the most
            restricted one).
        pin_classes: classes a caller may unlock with an authorization code.
        tariff: call charges.
        version: a digest of the policy source, stored with every decision.
        schedules: named schedules (working hours, daily standby windows, always).
        rota: who is on duty on the shared lines, when the policy has one.
        register_fill_hours: hours after a long-distance call within which its register entry
            must be filled in (LD-4); an entry still empty after that is an LD-7 offence.
        code_limits: authorization codes: length, and the lockout after wrong codes.
        locations: where each phone is (the room, the desk), by extension, for the security
            desk's emergency notification.
        telesales: the telesales call quota (QU-1), when the site has one.
    """

    site: str
    timezone: ZoneInfo
    mode: Mode
    plan: NumberingPlan
    classifier: NumberClassifier
    roles: Mapping[str, Role]
    people: Mapping[str, Person]
    lines: Mapping[str, Line]
    rules: Mapping[str, Rule]
    class_rules: Mapping[NumberClass, str]
    default_role: str
    pin_classes: frozenset[NumberClass] = frozenset()
    tariff: Tariff = field(default_factory=Tariff)
    version: str = "unversioned"
    schedules: Mapping[str, Schedule] = field(default_factory=dict)
    rota: Rota | None = None
    register_fill_hours: int = 72
    code_limits: CodeLimits = field(default_factory=CodeLimits)
    locations: Mapping[str, str] = field(default_factory=dict)
    telesales: Telesales | None = None
    _by_extension: Mapping[str, Person] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        index = {ext: p for p in self.people.values() for ext in p.extensions}
        object.__setattr__(self, "_by_extension", index)

    def person_at(self, extension: str) -> Person | None:
        """Return the person whose phone ``extension`` is, if the directory knows one."""
        return self._by_extension.get(extension)

    def line(self, extension: str) -> Line | None:
        """Return the line settings of ``extension``, if it has any."""
        return self.lines.get(extension)

    def location_of(self, extension: str) -> str:
        """Return where the phone ``extension`` is, or "" when the policy does not say."""
        return self.locations.get(extension, "")

    def role_of(self, person: Person | None) -> Role:
        """Return ``person``'s role, or the default role for an unknown caller."""
        if person is not None:
            role = self.roles.get(person.role)
            if role is not None:
                return role
        return self.roles[self.default_role]
