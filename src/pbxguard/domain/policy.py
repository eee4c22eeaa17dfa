"""The policy model: who may dial what, from which line, and what breaking a rule costs.

Every amount, role and permission is data loaded from a policy file (see
`pbxguard.adapters.policy_file`); nothing here encodes one reading of the regulations.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from pbxguard.domain.calendars import HolidayTable, Schedule
from pbxguard.domain.countries import CountryBook
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


#: The classes a velocity lock stops by default: everything that costs real money.
DEAR_CLASSES = frozenset(
    {
        NumberClass.DOMESTIC_LD,
        NumberClass.HK_MACAU,
        NumberClass.TAIWAN,
        NumberClass.INTERNATIONAL,
        NumberClass.PREMIUM,
    }
)
#: The classes a budget counts when it names none: every class the carrier charges for.
CHARGED_CLASSES = frozenset(
    {
        NumberClass.LOCAL,
        NumberClass.MOBILE,
        NumberClass.DOMESTIC_LD,
        NumberClass.HK_MACAU,
        NumberClass.TAIWAN,
        NumberClass.INTERNATIONAL,
        NumberClass.PREMIUM,
    }
)


@dataclass(frozen=True, slots=True)
class Audience:
    """Whom a control applies to: callers with one of these roles, departments, lines or ids.

    Empty, it applies to everyone. A caller matches when any one of the lists names them.
    """

    roles: frozenset[str] = frozenset()
    departments: frozenset[str] = frozenset()
    lines: frozenset[str] = frozenset()
    people: frozenset[str] = frozenset()

    @property
    def everyone(self) -> bool:
        """Tell whether the audience is everyone (no list given)."""
        return not (self.roles or self.departments or self.lines or self.people)

    def includes(self, *, role: str, department: str, extension: str, person_id: str) -> bool:
        """Tell whether a caller belongs to the audience."""
        return (
            self.everyone
            or role in self.roles
            or (bool(department) and department in self.departments)
            or extension in self.lines
            or (bool(person_id) and person_id in self.people)
        )


@dataclass(frozen=True, slots=True)
class HoursRule:
    """Classes that may be dialled only while a schedule is active (e.g. working hours).

    Attributes:
        schedule: the schedule's name (``[schedules.NAME]``).
        classes: the classes it restricts (never emergency).
        audience: whom it applies to (everyone by default, department heads included).
        label_zh: the schedule's name in reasons, in Chinese ("工作时间").
        label_en: the same in English ("working hours").
        rule_id: the rule a refused call is recorded under.
    """

    schedule: str
    classes: frozenset[NumberClass]
    audience: Audience = field(default_factory=Audience)
    label_zh: str = ""
    label_en: str = ""
    rule_id: str = "HO-1"


@dataclass(frozen=True, slots=True)
class CountryList:
    """International calls allowed (or denied) by country, for an audience.

    With ``allow`` only the listed calling codes may be called; with ``deny`` every code but
    the listed ones. Every list that matches a caller must let the call through.
    """

    audience: Audience
    allow: frozenset[str] = frozenset()
    deny: frozenset[str] = frozenset()
    rule_id: str = "CL-1"

    def permits(self, code: str | None) -> bool:
        """Tell whether a call to calling code ``code`` (None: unknown) passes this list."""
        if self.allow:
            return code is not None and code in self.allow
        return code is None or code not in self.deny


class BudgetScope(enum.StrEnum):
    """What one budget is kept for."""

    PERSON = "person"
    DEPARTMENT = "department"
    LINE = "line"
    COMPANY = "company"


class BudgetUnit(enum.StrEnum):
    """What a budget counts."""

    MONEY = "money"  # yuan, from the tariff
    MINUTES = "minutes"  # talk time


@dataclass(frozen=True, slots=True)
class Budget:
    """A monthly budget for calls (call accounting), in yuan or minutes.

    Attributes:
        name: the budget's id in alerts, reasons and the policy file.
        per: one budget per person, department, line, or one for the whole company.
        unit: money (yuan, from the tariff) or minutes of talk time.
        limit: the amount per month (yuan or minutes).
        classes: the classes it counts and, once used up, refuses.
        who: the people, departments or lines it is kept for (empty: each one of them).
        all_sites: count the calls of every site of the ledger (company-wide), not this
            site's only.
        alert_at: the share of the limit at which an alert is raised.
        rule_id: the rule refusals and cuts are recorded under.
    """

    name: str
    per: BudgetScope
    unit: BudgetUnit
    limit: Decimal
    classes: frozenset[NumberClass] = CHARGED_CLASSES
    who: frozenset[str] = frozenset()
    all_sites: bool = False
    alert_at: Decimal = Decimal("0.8")
    rule_id: str = "BU-1"


@dataclass(frozen=True, slots=True)
class VelocityRule:
    """Too many calls of some classes from one extension in a short time locks its dialling.

    The ``attempts``-th attempt (allowed or not) within ``within`` locks the extension's
    ``lock_classes`` for ``lock_for``.
    """

    name: str
    classes: frozenset[NumberClass]
    attempts: int = 5
    within: timedelta = timedelta(minutes=10)
    lock_for: timedelta = timedelta(minutes=60)
    lock_classes: frozenset[NumberClass] = DEAR_CLASSES
    rule_id: str = "VL-1"


@dataclass(frozen=True, slots=True)
class SimultaneousRule:
    """More than ``max_calls`` calls of some classes at once, site-wide, locks the site."""

    name: str
    classes: frozenset[NumberClass]
    max_calls: int
    lock_for: timedelta = timedelta(minutes=60)
    lock_classes: frozenset[NumberClass] = DEAR_CLASSES
    rule_id: str = "VL-2"


class Direction(enum.StrEnum):
    """Which calls a duration limit times."""

    OUTBOUND = "outbound"  # calls made from the site's phones (DU-1)
    INBOUND = "inbound"  # calls answered on the site's phones (DU-4)


@dataclass(frozen=True, slots=True)
class DurationLimit:
    """How long a call may talk (DU-1 business calls, DU-4 incoming private calls).

    Attributes:
        classes: the classes it times (outbound calls); ignored for inbound ones.
        audience: whose calls it times (the caller, or the callee for inbound calls).
        limit: talk time after which the call is recorded under ``rule_id``.
        cut_after: talk time after which the call is hung up (enforce mode), if set.
        warn_before: how long before ``cut_after`` the caller is warned, if set.
        direction: outbound (DU-1) or inbound (DU-4) calls.
        rule_id: the rule an overlong call breaks.
    """

    classes: frozenset[NumberClass]
    audience: Audience = field(default_factory=Audience)
    limit: timedelta = timedelta(minutes=3)
    cut_after: timedelta | None = None
    warn_before: timedelta | None = None
    direction: Direction = Direction.OUTBOUND
    rule_id: str = "DU-1"


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
        hours: classes a caller may dial only while a schedule is active.
        country_lists: international calls allowed or denied by country.
        countries: calling codes and country names (for country lists and reasons).
        budgets: monthly call budgets (call accounting).
        velocity: too many attempts from one extension lock its dear classes.
        simultaneous: too many calls at once, site-wide, lock the site's dear classes.
        durations: how long calls may talk (DU-1, DU-4).
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
    hours: tuple[HoursRule, ...] = ()
    country_lists: tuple[CountryList, ...] = ()
    countries: CountryBook = field(default_factory=CountryBook)
    budgets: tuple[Budget, ...] = ()
    velocity: tuple[VelocityRule, ...] = ()
    simultaneous: tuple[SimultaneousRule, ...] = ()
    durations: tuple[DurationLimit, ...] = ()
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
