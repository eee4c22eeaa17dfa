"""Load a policy bundle from TOML, validate it, and build the core's `Policy`.

Every error names the file, the line and the problem, so an administrator can fix it without
reading code: TOML syntax errors carry tomllib's line; schema errors are located by walking the
file for the offending key. A file may start with ``extends = "default"`` (a bundled policy) or
``extends = "other.toml"`` (relative to the file): tables merge key by key, lists replace.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from pbxguard.adapters.countries import country_book
from pbxguard.adapters.holidays import golden_weeks_in, site_holiday_table
from pbxguard.adapters.rota_file import load_rota
from pbxguard.adapters.validation_text import describe
from pbxguard.domain.calendars import (
    AlwaysOn,
    DailyWindow,
    HolidayTable,
    OperatingHours,
    Schedule,
    ScheduleRule,
    SpecialPeriod,
    TimeWindow,
    Weekday,
    WeeklyHours,
    WorkingHours,
)
from pbxguard.domain.channels import ChannelPlan
from pbxguard.domain.countries import CountryBook, normalise_calling_code
from pbxguard.domain.numbers import (
    ExtensionRange,
    FeatureCode,
    NumberClass,
    NumberClassifier,
    NumberingPlan,
)
from pbxguard.domain.penalties import (
    CountWindow,
    PenaltySpec,
    RepeatOffender,
    Sanction,
    Step,
)
from pbxguard.domain.policy import (
    CHARGED_CLASSES,
    DEAR_CLASSES,
    Audience,
    Budget,
    BudgetScope,
    BudgetUnit,
    CodeLimits,
    CountryList,
    Direction,
    DurationLimit,
    HoursRule,
    Line,
    LineUse,
    Mode,
    Person,
    Policy,
    Role,
    Rule,
    SimultaneousRule,
    Telesales,
    VelocityRule,
)
from pbxguard.domain.rota import DatedShift, Rota, WeeklyShift
from pbxguard.domain.tariff import Rate, Tariff
from pbxguard.errors import ConfigError, PolicyError

BUNDLED = ("default", "reference-site")
_RULE_ID = re.compile(r"^[A-Z]{2,4}-[0-9]+[a-z]?$")

Money = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class SiteModel(_Model):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    timezone: str = "Asia/Shanghai"
    mode: Mode = Mode.ENFORCE
    default_role: str = "staff"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}") from exc
        return value


def _feature_code(value: str) -> str:
    try:
        FeatureCode.parse(value)
    except PolicyError as exc:
        raise ValueError(exc.problem) from exc
    return value


class NumberingModel(_Model):
    access_code: str = Field(default="", pattern=r"^[0-9]{0,2}$")
    local_area_code: str = Field(pattern=r"^0?[1-9][0-9]{1,3}$")
    extensions: list[str] = []
    carrier_prefixes: list[Annotated[str, Field(pattern=r"^[0-9]{4,6}$")]] = []
    emergency: list[Annotated[str, Field(pattern=r"^[0-9]{3,6}$")]]
    service: list[Annotated[str, Field(pattern=r"^[0-9]{2,8}$")]] = []
    premium: list[Annotated[str, Field(pattern=r"^[0-9]{1,8}$")]] = []
    mobile_prefixes: list[Annotated[str, Field(pattern=r"^1[0-9]$")]] = [
        "13", "14", "15", "16", "17", "18", "19",
    ]  # fmt: skip
    local_first_digits: str = Field(default="2345678", pattern=r"^[0-9]+$")
    local_lengths: list[Annotated[int, Field(ge=5, le=9)]] = [7, 8]
    hk_macau: list[Annotated[str, Field(pattern=r"^[0-9]{1,4}$")]] = ["852", "853"]
    taiwan: list[Annotated[str, Field(pattern=r"^[0-9]{1,4}$")]] = ["886"]
    # Nothing is a feature code unless the policy lists it (the default bundle does).
    feature_codes: list[Annotated[str, AfterValidator(_feature_code)]] = []

    @field_validator("extensions")
    @classmethod
    def _ranges(cls, value: list[str]) -> list[str]:
        for text in value:
            try:
                ExtensionRange.parse(text)
            except PolicyError as exc:
                raise ValueError(exc.problem) from exc
        return value


class TrunkModel(_Model):
    channel: str
    dial_string: str
    with_access_code: bool = False

    @field_validator("channel")
    @classmethod
    def _channel_regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"trunk channel pattern {value!r} is invalid: {exc}") from exc
        return value

    @field_validator("dial_string")
    @classmethod
    def _dial_string_regex(cls, value: str) -> str:
        try:
            ChannelPlan.parse([], [("", value, False)])
        except PolicyError as exc:
            raise ValueError(exc.problem) from exc
        return value


class PbxModel(_Model):
    phone_channels: list[str] = Field(min_length=1)
    trunks: list[TrunkModel] = Field(min_length=1)


class RoleModel(_Model):
    name_zh: str
    name_en: str
    allowed: list[NumberClass]
    can_approve: bool = False
    approves_for: Literal["department", "company"] = "department"


class PersonModel(_Model):
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    department: str = Field(min_length=1)
    role: str
    extensions: list[Annotated[str, Field(pattern=r"^[0-9]+$")]] = []


class LineModel(_Model):
    extension: str = Field(pattern=r"^[0-9]+$")
    name: str = Field(min_length=1)
    use: LineUse = LineUse.ANY
    allowed: list[NumberClass] = []
    duty_line: str = ""
    answer_within: int | None = Field(default=None, ge=1, le=300)
    standby: str = ""
    standby_rule: str = ""
    coverage: bool = False
    occupancy_grace: int | None = Field(default=None, ge=0, le=3600)
    cut_occupancy: bool = False
    reject_rule: str = ""
    business_numbers: list[Annotated[str, Field(pattern=r"^[0-9]+$")]] = []
    operating: str = ""
    promotion: bool = False


_HOURS = r"^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-4]):[0-5][0-9]$"


class PeriodModel(_Model):
    name: str = Field(min_length=1)
    first: date
    last: date


class CalendarModel(_Model):
    holidays: Literal["china", "none"] = "china"
    golden_weeks: bool = True
    spring_festival: bool = False
    periods: list[PeriodModel] = []


class ScheduleModel(_Model):
    kind: Literal["always", "daily", "operating_hours", "working_hours"]
    hours: list[Annotated[str, Field(pattern=_HOURS)]] = []
    weekdays: list[Annotated[int, Field(ge=1, le=7)]] = [1, 2, 3, 4, 5]
    special_periods_24h: bool = False
    # How reasons name the schedule ("outside working hours"); by default from its kind.
    name_zh: str = ""
    name_en: str = ""


class WeeklyShiftModel(_Model):
    line: str = Field(min_length=1)
    person: str = Field(min_length=1)
    weekdays: list[Annotated[int, Field(ge=1, le=7)]] = Field(min_length=1)
    hours: Annotated[str, Field(pattern=_HOURS)]


class DatedShiftModel(_Model):
    line: str = Field(min_length=1)
    person: str = Field(min_length=1)
    start: datetime
    end: datetime


class RotaModel(_Model):
    file: str | None = Field(default=None, min_length=1)
    weekly: list[WeeklyShiftModel] = []
    dated: list[DatedShiftModel] = []

    @field_validator("file")
    @classmethod
    def _file_name(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("a file name cannot contain NUL")
        return value


class StepModel(_Model):
    flat: Money = Decimal(0)
    charge_multiple: Annotated[Decimal, Field(ge=0, le=1000)] = Decimal(0)
    sanctions: list[Sanction] = []
    per_class: dict[NumberClass, Money] = {}
    per_unit: Money = Decimal(0)


class RepeatModel(_Model):
    threshold: int = Field(ge=1)
    sanctions: list[Sanction] = []


class PenaltyModel(_Model):
    steps: list[StepModel] = Field(min_length=1)
    window: CountWindow = CountWindow.QUARTER
    ladder: str = ""
    repeat_offender: RepeatModel | None = None
    department_head_share: Annotated[Decimal, Field(ge=0, le=1)] = Decimal(0)


class RuleModel(_Model):
    title_zh: str = Field(min_length=1)
    title_en: str = Field(min_length=1)
    citation: str = Field(min_length=1)
    penalty: PenaltyModel | None = None


class RateModel(_Model):
    per_minute: Money
    increment_seconds: int = Field(default=60, ge=1, le=3600)


class TariffModel(_Model):
    version: str = "none"
    by_prefix: dict[Annotated[str, Field(pattern=r"^[0-9]+$")], RateModel] = {}
    by_class: dict[NumberClass, RateModel] = {}


class AuthorizationModel(_Model):
    pin_classes: list[NumberClass] = []
    code_digits: int = Field(default=6, ge=4, le=12)
    min_code_digits: int = Field(default=4, ge=4, le=12)
    max_failures: int = Field(default=5, ge=1, le=100)
    failure_window_minutes: int = Field(default=15, ge=1, le=24 * 60)
    lockout_minutes: int = Field(default=30, ge=1, le=7 * 24 * 60)


class RegisterModel(_Model):
    fill_within_hours: int = Field(default=72, ge=1, le=24 * 31)


class TelesalesModel(_Model):
    people: list[Annotated[str, Field(min_length=1)]] = []
    starts: date | None = None
    daily: int = Field(default=120, ge=0, le=10_000)
    first_half: int = Field(default=80, ge=0, le=10_000)
    first_half_last_day: int = Field(default=15, ge=0, le=31)
    min_talk_seconds: int = Field(default=30, ge=0, le=3600)
    working_days_only: bool = True
    rule: str = "QU-1"


Location = Annotated[str, Field(min_length=1, max_length=200)]


def _calling_code(value: str) -> str:
    return normalise_calling_code(value)


CallingCode = Annotated[str, AfterValidator(_calling_code)]
Minutes = Annotated[float, Field(gt=0, le=31 * 24 * 60)]
_NAME = r"^[A-Za-z0-9_.-]+$"


class AudienceModel(_Model):
    """Whom a control applies to; every list empty means everyone."""

    roles: list[str] = []
    departments: list[str] = []
    lines: list[Annotated[str, Field(pattern=r"^[0-9]+$")]] = []
    people: list[str] = []


class HoursModel(AudienceModel):
    schedule: str = Field(min_length=1)
    classes: list[NumberClass] = Field(min_length=1)
    label_zh: str = ""
    label_en: str = ""
    rule: str = "HO-1"


class CountryListModel(AudienceModel):
    allow: list[CallingCode] = []
    deny: list[CallingCode] = []
    rule: str = "CL-1"


class BudgetModel(_Model):
    name: str = Field(min_length=1, pattern=_NAME)
    per: BudgetScope
    money: Money | None = None
    minutes: Annotated[Decimal, Field(ge=0, max_digits=10, decimal_places=2)] | None = None
    classes: list[NumberClass] = []
    who: list[str] = []
    sites: Literal["this", "all"] = "this"
    alert_at: Annotated[Decimal, Field(gt=0, le=1)] = Decimal("0.8")
    rule: str = "BU-1"


class VelocityModel(_Model):
    name: str = Field(min_length=1, pattern=_NAME)
    classes: list[NumberClass] = [NumberClass.INTERNATIONAL]
    attempts: int = Field(default=5, ge=1, le=1000)
    within_minutes: Minutes = 10
    lock_minutes: Minutes = 60
    lock_classes: list[NumberClass] = sorted(DEAR_CLASSES)
    rule: str = "VL-1"


class SimultaneousModel(_Model):
    name: str = Field(min_length=1, pattern=_NAME)
    classes: list[NumberClass] = [NumberClass.INTERNATIONAL]
    max_calls: int = Field(ge=0, le=100_000)
    lock_minutes: Minutes = 60
    lock_classes: list[NumberClass] = sorted(DEAR_CLASSES)
    rule: str = "VL-2"


class DurationModel(AudienceModel):
    classes: list[NumberClass] = sorted(CHARGED_CLASSES)
    limit_minutes: Minutes = 3
    cut_after_minutes: Minutes | None = None
    warn_before_seconds: Annotated[int, Field(ge=1, le=3600)] | None = None
    direction: Direction = Direction.OUTBOUND
    rule: str | None = None


class PolicyModel(_Model):
    schema_: Literal[1] = Field(alias="schema")
    extends: str | None = None
    site: SiteModel
    numbering: NumberingModel
    pbx: PbxModel
    roles: dict[str, RoleModel] = Field(min_length=1)
    people: list[PersonModel] = []
    lines: list[LineModel] = []
    class_rules: dict[NumberClass, str] = {}
    authorization: AuthorizationModel = AuthorizationModel()
    rules: dict[str, RuleModel] = {}
    tariff: TariffModel = TariffModel()
    calendar: CalendarModel = CalendarModel()
    schedules: dict[str, ScheduleModel] = {}
    rota: RotaModel = RotaModel()
    # `register` would shadow ABCMeta.register on the model class.
    register_: RegisterModel = Field(default=RegisterModel(), alias="register")
    locations: dict[Annotated[str, Field(pattern=r"^[0-9]+$")], Location] = {}
    telesales: TelesalesModel = TelesalesModel()
    hours: list[HoursModel] = []
    countries: list[CountryListModel] = []
    budgets: list[BudgetModel] = []
    velocity: list[VelocityModel] = []
    simultaneous: list[SimultaneousModel] = []
    durations: list[DurationModel] = []


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    """A policy with the channel plan that goes with it."""

    policy: Policy
    channels: ChannelPlan
    sources: tuple[str, ...]
    rota_file: Path | None = None


@dataclass(frozen=True, slots=True)
class _Source:
    name: str
    text: str


def load_policy(
    path: str | Path | None = None, *, rota_may_be_missing: bool = False
) -> LoadedPolicy:
    """Load and validate a policy file, or the default bundle when ``path`` is None.

    Args:
        path: the policy file.
        rota_may_be_missing: treat a rota file that does not exist yet as an empty rota (for
            the command that creates it); the daemon insists on it.

    Raises:
        PolicyError: the file is missing, not TOML, or not a valid policy (with file and line).
    """
    if path is None:
        data, sources = _read_bundled("default", depth=0)
    else:
        data, sources = _read_file(Path(path), depth=0)
    return _build(data, sources, rota_may_be_missing=rota_may_be_missing)


def bundled_policy_path(name: str) -> str:
    """Return a readable name for a bundled policy (for messages)."""
    return f"<bundled {name}.toml>"


def _read_bundled(name: str, depth: int) -> tuple[dict[str, Any], list[_Source]]:
    try:
        text = resources.files("pbxguard.policies").joinpath(f"{name}.toml").read_text("utf-8")
    except FileNotFoundError as exc:
        raise PolicyError(f"no bundled policy named {name!r}") from exc
    return _parse(bundled_policy_path(name), text, base=None, depth=depth)


def _read_file(path: Path, depth: int) -> tuple[dict[str, Any], list[_Source]]:
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError as exc:
        raise PolicyError("file not found", path=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise PolicyError(f"not UTF-8 text ({exc.reason})", path=str(path)) from exc
    except OSError as exc:
        raise PolicyError(f"cannot read: {exc.strerror}", path=str(path)) from exc
    return _parse(str(path), text, base=path.parent, depth=depth)


def _parse(
    name: str, text: str, *, base: Path | None, depth: int
) -> tuple[dict[str, Any], list[_Source]]:
    if depth > 5:
        raise PolicyError("`extends` chain is deeper than 5 files (a loop?)", path=name)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = _toml_error_line(str(exc))
        raise PolicyError(
            f"not valid TOML: {_strip_position(str(exc))}", path=name, line=line
        ) from exc
    sources = [_Source(name, text)]
    parent = data.get("extends")
    if parent is None:
        return data, sources
    if not isinstance(parent, str):
        raise PolicyError("`extends` must be a string", path=name, line=_locate(text, ("extends",)))
    if parent in BUNDLED:
        parent_data, parent_sources = _read_bundled(parent, depth + 1)
    else:
        root = base if base is not None else Path.cwd()
        target = root / parent
        if not target.is_file():
            raise PolicyError(
                f"extends {parent!r}: file not found ({target})",
                path=name,
                line=_locate(text, ("extends",)),
            )
        parent_data, parent_sources = _read_file(target, depth + 1)
    parent_data.pop("extends", None)
    return _merge(parent_data, data), sources + parent_sources


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _build(
    data: dict[str, Any], sources: list[_Source], *, rota_may_be_missing: bool = False
) -> LoadedPolicy:
    names = tuple(s.name for s in sources)
    try:
        model = PolicyModel.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(error["loc"])
        raise _located(sources, loc, describe(error), item=error.get("input")) from exc
    try:
        policy, channels = _to_domain(model, sources, rota_may_be_missing=rota_may_be_missing)
    except PolicyError:
        raise
    except ConfigError as exc:
        # A check of the core that the steps above do not locate: still name the file.
        raise PolicyError(str(exc), path=sources[0].name if sources else None) from exc
    return LoadedPolicy(policy, channels, names, _rota_file(model, sources))


def _window(text: str) -> TimeWindow:
    start, end = text.split("-")
    return TimeWindow(_clock_time(start), _clock_time(end))


def _clock_time(text: str) -> time:
    hours, minutes = (int(p) for p in text.split(":"))
    return time(0, 0) if hours == 24 else time(hours, minutes)


def _schedules(model: PolicyModel, tz: ZoneInfo, sources: Sequence[_Source]) -> dict[str, Schedule]:
    """Build the named schedules, with holidays from the library and the special periods."""
    calendar = model.calendar
    holidays = HolidayTable.without_holidays()
    periods: list[SpecialPeriod] = []
    for index, p in enumerate(calendar.periods):
        try:
            periods.append(SpecialPeriod(p.name, p.first, p.last))
        except ConfigError as exc:
            raise _located(sources, ("calendar", "periods", index), str(exc)) from exc
    if calendar.holidays == "china":
        holidays = site_holiday_table()
        if calendar.golden_weeks:
            periods.extend(golden_weeks_in(holidays, spring_festival=calendar.spring_festival))
    schedules: dict[str, Schedule] = {"always": Schedule.always(tz)}
    for name, sm in model.schedules.items():
        windows = tuple(_window(h) for h in sm.hours) or (TimeWindow.all_day(),)
        weekly = WeeklyHours.on([d - 1 for d in sm.weekdays], *windows)
        rule: ScheduleRule
        if sm.kind == "always":
            rule = AlwaysOn()
        elif sm.kind == "daily":
            _check(
                len(windows) == 1,
                sources,
                ("schedules", name, "hours"),
                "a daily schedule has one window",
            )
            rule = DailyWindow(windows[0])
        elif sm.kind == "operating_hours":
            rule = OperatingHours(weekly)
        else:
            rule = WorkingHours(weekly, holidays)
        schedule = Schedule(rule, tz)
        if sm.special_periods_24h:
            schedule = schedule.with_special_periods(periods)
        schedules[name] = schedule
    return schedules


def _rota_file(model: PolicyModel, sources: Sequence[_Source]) -> Path | None:
    """Return the rota CSV file the policy names, relative to the first policy file."""
    if model.rota.file is None:
        return None
    origin = sources[0].name
    base = Path(origin).parent if not origin.startswith("<") else Path.cwd()
    path = Path(model.rota.file)
    return path if path.is_absolute() else base / path


def _rota(
    model: PolicyModel,
    tz: ZoneInfo,
    sources: Sequence[_Source],
    *,
    rota_may_be_missing: bool = False,
) -> Rota | None:
    rm = model.rota
    if rm.file is None and not rm.weekly and not rm.dated:
        return None
    rota = Rota(tz)
    path = _rota_file(model, sources)
    if path is not None and path.exists() and not path.is_file():
        # A directory fails to read; a device or a pipe would block or never end.
        raise _located(sources, ("rota", "file"), f"rota.file {str(path)!r} is not a file")
    if path is not None and (path.exists() or not rota_may_be_missing):
        rota = load_rota(path, tz)
    for index, ws in enumerate(rm.weekly):
        for day in ws.weekdays:
            try:
                rota = rota.with_shift(
                    WeeklyShift(ws.line, ws.person, Weekday(day - 1), _window(ws.hours))
                )
            except ConfigError as exc:
                raise _located(sources, ("rota", "weekly", index), str(exc)) from exc
    for index, ds in enumerate(rm.dated):
        start = ds.start if ds.start.tzinfo else ds.start.replace(tzinfo=tz)
        end = ds.end if ds.end.tzinfo else ds.end.replace(tzinfo=tz)
        try:
            rota = rota.with_shift(DatedShift(ds.line, ds.person, start, end))
        except ConfigError as exc:
            raise _located(sources, ("rota", "dated", index), str(exc)) from exc
    return rota


def _located(
    sources: Sequence[_Source], loc: tuple[Any, ...], problem: str, *, item: object = None
) -> PolicyError:
    """Build the error for the value at ``loc``, located in the file that sets it.

    ``item``, the offending value, narrows an error inside a list written over several lines
    (``feature_codes = [`` … ``]``) down to the line that holds it.
    """
    best: tuple[int, _Source, int] | None = None
    for source in sources:
        found = _locate_depth(source.text, loc)
        if found is not None and (best is None or found[0] > best[0]):
            best = (found[0], source, found[1])
    if best is not None:
        line = best[2]
        if isinstance(item, str) and loc and isinstance(loc[-1], int):
            line = _item_line(best[1].text, line, item) or line
        return PolicyError(problem, path=best[1].name, line=line)
    return PolicyError(problem, path=sources[0].name if sources else None)


def _item_line(text: str, key_line: int, item: str) -> int | None:
    """Return the line, from ``key_line`` to the next key, that holds the string ``item``."""
    quoted = (f'"{item}"', f"'{item}'")
    for number, line in enumerate(text.splitlines()[key_line - 1 :], start=key_line):
        if number > key_line and (_HEADER.match(line) or _KEY.match(line)):
            return None
        if any(q in line for q in quoted):
            return number
    return None


def _check(condition: bool, sources: Sequence[_Source], loc: tuple[Any, ...], problem: str) -> None:
    if not condition:
        raise _located(sources, loc, problem)


def _to_domain(
    model: PolicyModel, sources: Sequence[_Source], *, rota_may_be_missing: bool = False
) -> tuple[Policy, ChannelPlan]:
    roles = {
        role_id: Role(
            role_id,
            r.name_zh,
            r.name_en,
            frozenset(r.allowed),
            r.can_approve,
            company_wide=r.approves_for == "company",
        )
        for role_id, r in model.roles.items()
    }
    _check(
        model.site.default_role in roles,
        sources,
        ("site", "default_role"),
        f"site.default_role: no role named {model.site.default_role!r}",
    )
    people: dict[str, Person] = {}
    seen_ext: dict[str, str] = {}
    for index, p in enumerate(model.people):
        loc = ("people", index, "role")
        _check(p.role in roles, sources, loc, f"people[{index}].role: no role named {p.role!r}")
        _check(
            p.id not in people, sources, ("people", index, "id"), f"duplicate person id {p.id!r}"
        )
        for ext in p.extensions:
            _check(
                ext not in seen_ext,
                sources,
                ("people", index, "extensions"),
                f"extension {ext} belongs to both {seen_ext.get(ext)!r} and {p.id!r}",
            )
            seen_ext[ext] = p.id
        people[p.id] = Person(p.id, p.name, p.department, p.role, tuple(p.extensions))
    lines: dict[str, Line] = {}
    for index, ln in enumerate(model.lines):
        _check(
            ln.extension not in lines,
            sources,
            ("lines", index, "extension"),
            f"line {ln.extension} is listed twice",
        )
        lines[ln.extension] = Line(
            ln.extension,
            ln.name,
            ln.use,
            frozenset(ln.allowed),
            ln.duty_line,
            ln.answer_within,
            standby=ln.standby,
            standby_rule=ln.standby_rule,
            coverage=ln.coverage,
            occupancy_grace=ln.occupancy_grace,
            cut_occupancy=ln.cut_occupancy,
            reject_rule=ln.reject_rule,
            business_numbers=tuple(ln.business_numbers),
            operating=ln.operating,
            promotion=ln.promotion,
        )
    rules: dict[str, Rule] = {}
    for rule_id, r in model.rules.items():
        _check(
            bool(_RULE_ID.match(rule_id)),
            sources,
            ("rules", rule_id),
            f"rule id {rule_id!r} must look like LD-2, PR-1, EM-1",
        )
        rules[rule_id] = Rule(rule_id, r.title_zh, r.title_en, r.citation, _penalty(r.penalty))
    for number_class, rule_id in model.class_rules.items():
        _check(
            rule_id in rules,
            sources,
            ("class_rules", number_class.value),
            f"class_rules.{number_class.value}: no rule named {rule_id!r}",
        )
    _check(
        NumberClass.EMERGENCY not in model.authorization.pin_classes,
        sources,
        ("authorization", "pin_classes"),
        "emergency numbers can never require an authorization code",
    )
    n = model.numbering
    plan = NumberingPlan(
        access_code=n.access_code,
        local_area_code=n.local_area_code,
        extensions=tuple(ExtensionRange.parse(e) for e in n.extensions),
        carrier_prefixes=tuple(n.carrier_prefixes),
        emergency=frozenset(n.emergency),
        service=tuple(n.service),
        premium=tuple(n.premium),
        mobile_prefixes=tuple(n.mobile_prefixes),
        local_first_digits=n.local_first_digits,
        local_lengths=frozenset(n.local_lengths),
        hk_macau=tuple(n.hk_macau),
        taiwan=tuple(n.taiwan),
        feature_codes=tuple(FeatureCode.parse(f) for f in n.feature_codes),
    )
    try:
        channels = ChannelPlan.parse(
            list(model.pbx.phone_channels),
            [(t.channel, t.dial_string, t.with_access_code) for t in model.pbx.trunks],
        )
    except PolicyError as exc:
        raise _located(sources, ("pbx",), exc.problem) from exc
    tariff = Tariff(
        version=model.tariff.version,
        by_prefix={
            k: Rate(v.per_minute, v.increment_seconds) for k, v in model.tariff.by_prefix.items()
        },
        by_class={
            k.value: Rate(v.per_minute, v.increment_seconds)
            for k, v in model.tariff.by_class.items()
        },
    )
    tz = ZoneInfo(model.site.timezone)
    schedules = _schedules(model, tz, sources)
    for index, ln in enumerate(model.lines):
        for key in ("standby", "operating"):
            name = getattr(ln, key)
            _check(
                not name or name in schedules,
                sources,
                ("lines", index, key),
                f"lines[{index}].{key}: no schedule named {name!r}",
            )
        for key in ("standby_rule", "reject_rule"):
            rule_id = getattr(ln, key)
            _check(
                not rule_id or rule_id in rules,
                sources,
                ("lines", index, key),
                f"lines[{index}].{key}: no rule named {rule_id!r}",
            )
        _check(
            bool(ln.standby) == bool(ln.standby_rule),
            sources,
            ("lines", index, "standby"),
            f"lines[{index}]: standby and standby_rule go together",
        )
    rota = _rota(model, tz, sources, rota_may_be_missing=rota_may_be_missing)
    telesales = _telesales(model, people, rules, sources)
    controls = _controls(
        model, sources, roles=roles, people=people, rules=rules, schedules=schedules
    )
    digest = hashlib.sha256("\n\x00".join(s.text for s in sources).encode()).hexdigest()[:12]
    policy = Policy(
        site=model.site.name,
        timezone=tz,
        mode=model.site.mode,
        plan=plan,
        classifier=NumberClassifier.compile(plan),
        roles=roles,
        people=people,
        lines=lines,
        rules=rules,
        class_rules=dict(model.class_rules),
        default_role=model.site.default_role,
        pin_classes=frozenset(model.authorization.pin_classes),
        tariff=tariff,
        version=f"{digest}/{model.tariff.version}",
        schedules=schedules,
        rota=rota,
        register_fill_hours=model.register_.fill_within_hours,
        code_limits=CodeLimits(
            max_failures=model.authorization.max_failures,
            window=timedelta(minutes=model.authorization.failure_window_minutes),
            lockout=timedelta(minutes=model.authorization.lockout_minutes),
            digits=model.authorization.code_digits,
            min_digits=min(model.authorization.min_code_digits, model.authorization.code_digits),
        ),
        locations=dict(model.locations),
        telesales=telesales,
        hours=controls.hours,
        country_lists=controls.country_lists,
        countries=controls.countries,
        budgets=controls.budgets,
        velocity=controls.velocity,
        simultaneous=controls.simultaneous,
        durations=controls.durations,
    )
    return policy, channels


def _telesales(
    model: PolicyModel,
    people: Mapping[str, Person],
    rules: Mapping[str, Rule],
    sources: Sequence[_Source],
) -> Telesales | None:
    """Build the telesales quota (QU-1), or None when the policy names nobody for it."""
    tm = model.telesales
    if not tm.people:
        return None
    for index, person in enumerate(tm.people):
        _check(
            person in people,
            sources,
            ("telesales", "people", index),
            f"telesales.people: no person named {person!r}",
        )
    _check(
        tm.rule in rules,
        sources,
        ("telesales", "rule"),
        f"telesales.rule: no rule named {tm.rule!r}",
    )
    _check(
        tm.starts is not None,
        sources,
        ("telesales", "people"),
        "telesales.starts: the first day the quota counts is required (days before it are "
        "never assessed)",
    )
    assert tm.starts is not None
    workdays: HolidayTable | None = None
    if tm.working_days_only:
        china = model.calendar.holidays == "china"
        workdays = site_holiday_table() if china else HolidayTable.without_holidays()
    return Telesales(
        people=tuple(dict.fromkeys(tm.people)),
        starts=tm.starts,
        daily=tm.daily,
        first_half=tm.first_half,
        first_half_last_day=tm.first_half_last_day,
        min_talk=timedelta(seconds=tm.min_talk_seconds),
        workdays=workdays,
        rule_id=tm.rule,
    )


@dataclass(frozen=True, slots=True)
class _Controls:
    hours: tuple[HoursRule, ...]
    country_lists: tuple[CountryList, ...]
    countries: CountryBook
    budgets: tuple[Budget, ...]
    velocity: tuple[VelocityRule, ...]
    simultaneous: tuple[SimultaneousRule, ...]
    durations: tuple[DurationLimit, ...]


def _classes(
    values: Sequence[NumberClass], sources: Sequence[_Source], loc: tuple[Any, ...], what: str
) -> frozenset[NumberClass]:
    """Return classes a control acts on, refusing emergency (never restricted) and invalid."""
    _check(
        NumberClass.EMERGENCY not in values,
        sources,
        loc,
        f"{'.'.join(str(p) for p in loc)}: emergency numbers can never be {what}",
    )
    _check(
        NumberClass.INVALID not in values,
        sources,
        loc,
        f"{'.'.join(str(p) for p in loc)}: 'invalid' is not a class a caller dials",
    )
    return frozenset(values)


def _audience(
    model: AudienceModel,
    sources: Sequence[_Source],
    loc: tuple[Any, ...],
    *,
    roles: Mapping[str, Role],
    people: Mapping[str, Person],
) -> Audience:
    for role in model.roles:
        _check(role in roles, sources, (*loc, "roles"), f"{_dotted(loc)}.roles: no role {role!r}")
    for person in model.people:
        _check(
            person in people,
            sources,
            (*loc, "people"),
            f"{_dotted(loc)}.people: no person {person!r}",
        )
    return Audience(
        roles=frozenset(model.roles),
        departments=frozenset(model.departments),
        lines=frozenset(model.lines),
        people=frozenset(model.people),
    )


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


def _rule_named(
    rule_id: str, sources: Sequence[_Source], loc: tuple[Any, ...], rules: Mapping[str, Rule]
) -> str:
    _check(rule_id in rules, sources, loc, f"{_dotted(loc)}: no rule named {rule_id!r}")
    return rule_id


def _unique_names(
    items: Sequence[BudgetModel | VelocityModel | SimultaneousModel],
    sources: Sequence[_Source],
    section: str,
) -> None:
    seen: set[str] = set()
    for index, item in enumerate(items):
        _check(
            item.name not in seen,
            sources,
            (section, index, "name"),
            f"{section}[{index}].name: {item.name!r} is used twice",
        )
        seen.add(item.name)


_KIND_NAMES = {
    "working_hours": ("工作时间", "working hours"),
    "operating_hours": ("营运时间", "operating hours"),
}


def _schedule_names(model: PolicyModel, name: str) -> tuple[str, str]:
    """Return how reasons name a schedule: its own names, else by its kind and hours."""
    schedule = model.schedules.get(name)
    if schedule is None:  # "always" is built in
        return "全天", "the whole day"
    zh, en = _KIND_NAMES.get(schedule.kind, ("", ""))
    if not zh and schedule.hours:
        window = ", ".join(schedule.hours)
        zh, en = f"规定时段（{window}）", f"the hours {window}"
    return schedule.name_zh or zh or name, schedule.name_en or en or name


def _controls(
    model: PolicyModel,
    sources: Sequence[_Source],
    *,
    roles: Mapping[str, Role],
    people: Mapping[str, Person],
    rules: Mapping[str, Rule],
    schedules: Mapping[str, Schedule],
) -> _Controls:
    """Build the controls administrators add: hours, countries, budgets, locks, durations."""
    hours = []
    for index, hm in enumerate(model.hours):
        loc: tuple[Any, ...] = ("hours", index)
        _check(
            hm.schedule in schedules,
            sources,
            (*loc, "schedule"),
            f"hours[{index}].schedule: no schedule named {hm.schedule!r}",
        )
        named_zh, named_en = _schedule_names(model, hm.schedule)
        hours.append(
            HoursRule(
                schedule=hm.schedule,
                classes=_classes(hm.classes, sources, (*loc, "classes"), "restricted by hours"),
                audience=_audience(hm, sources, loc, roles=roles, people=people),
                label_zh=hm.label_zh or named_zh,
                label_en=hm.label_en or named_en,
                rule_id=_rule_named(hm.rule, sources, (*loc, "rule"), rules),
            )
        )
    country_lists = []
    countries = CountryBook()
    if model.countries:
        countries = country_book()
    for index, cm in enumerate(model.countries):
        loc = ("countries", index)
        _check(
            bool(cm.allow) != bool(cm.deny),
            sources,
            loc,
            f"countries[{index}]: give either `allow` or `deny` (a list of calling codes)",
        )
        for key in ("allow", "deny"):
            for code in getattr(cm, key):
                _check(
                    code in countries.countries,
                    sources,
                    (*loc, key),
                    f"countries[{index}].{key}: no country has the calling code +{code}",
                )
        country_lists.append(
            CountryList(
                audience=_audience(cm, sources, loc, roles=roles, people=people),
                allow=frozenset(cm.allow),
                deny=frozenset(cm.deny),
                rule_id=_rule_named(cm.rule, sources, (*loc, "rule"), rules),
            )
        )
    _unique_names(model.budgets, sources, "budgets")
    budgets = []
    for index, bm in enumerate(model.budgets):
        loc = ("budgets", index)
        _check(
            (bm.money is None) != (bm.minutes is None),
            sources,
            loc,
            f"budgets[{index}]: give either `money` (yuan) or `minutes` per month",
        )
        if bm.per is BudgetScope.PERSON:
            for who in bm.who:
                _check(
                    who in people,
                    sources,
                    (*loc, "who"),
                    f"budgets[{index}].who: no person {who!r}",
                )
        budgets.append(
            Budget(
                name=bm.name,
                per=bm.per,
                unit=BudgetUnit.MONEY if bm.money is not None else BudgetUnit.MINUTES,
                limit=bm.money if bm.money is not None else (bm.minutes or Decimal(0)),
                classes=_classes(bm.classes, sources, (*loc, "classes"), "budgeted")
                if bm.classes
                else CHARGED_CLASSES,
                who=frozenset(bm.who),
                all_sites=bm.sites == "all",
                alert_at=bm.alert_at,
                rule_id=_rule_named(bm.rule, sources, (*loc, "rule"), rules),
            )
        )
    _unique_names(model.velocity, sources, "velocity")
    velocity = [
        VelocityRule(
            name=vm.name,
            classes=_classes(vm.classes, sources, ("velocity", index, "classes"), "counted"),
            attempts=vm.attempts,
            within=timedelta(minutes=vm.within_minutes),
            lock_for=timedelta(minutes=vm.lock_minutes),
            lock_classes=_classes(
                vm.lock_classes, sources, ("velocity", index, "lock_classes"), "locked"
            ),
            rule_id=_rule_named(vm.rule, sources, ("velocity", index, "rule"), rules),
        )
        for index, vm in enumerate(model.velocity)
    ]
    _unique_names(model.simultaneous, sources, "simultaneous")
    simultaneous = [
        SimultaneousRule(
            name=sm.name,
            classes=_classes(sm.classes, sources, ("simultaneous", index, "classes"), "counted"),
            max_calls=sm.max_calls,
            lock_for=timedelta(minutes=sm.lock_minutes),
            lock_classes=_classes(
                sm.lock_classes, sources, ("simultaneous", index, "lock_classes"), "locked"
            ),
            rule_id=_rule_named(sm.rule, sources, ("simultaneous", index, "rule"), rules),
        )
        for index, sm in enumerate(model.simultaneous)
    ]
    durations = []
    for index, dm in enumerate(model.durations):
        loc = ("durations", index)
        cut = timedelta(minutes=dm.cut_after_minutes) if dm.cut_after_minutes else None
        limit = timedelta(minutes=dm.limit_minutes)
        _check(
            cut is None or cut >= limit,
            sources,
            (*loc, "cut_after_minutes"),
            f"durations[{index}].cut_after_minutes must not be below limit_minutes",
        )
        warn = timedelta(seconds=dm.warn_before_seconds) if dm.warn_before_seconds else None
        _check(
            warn is None or (cut is not None and warn < cut),
            sources,
            (*loc, "warn_before_seconds"),
            f"durations[{index}].warn_before_seconds needs cut_after_minutes, and less time",
        )
        default_rule = "DU-1" if dm.direction is Direction.OUTBOUND else "DU-4"
        durations.append(
            DurationLimit(
                classes=_classes(dm.classes, sources, (*loc, "classes"), "timed"),
                audience=_audience(dm, sources, loc, roles=roles, people=people),
                limit=limit,
                cut_after=cut,
                warn_before=warn,
                direction=dm.direction,
                rule_id=_rule_named(dm.rule or default_rule, sources, (*loc, "rule"), rules),
            )
        )
    return _Controls(
        hours=tuple(hours),
        country_lists=tuple(country_lists),
        countries=countries,
        budgets=tuple(budgets),
        velocity=tuple(velocity),
        simultaneous=tuple(simultaneous),
        durations=tuple(durations),
    )


def _penalty(model: PenaltyModel | None) -> PenaltySpec | None:
    if model is None:
        return None
    steps = tuple(
        Step(
            flat=s.flat,
            charge_multiple=s.charge_multiple,
            sanctions=tuple(s.sanctions),
            per_class={k.value: v for k, v in s.per_class.items()},
            per_unit=s.per_unit,
        )
        for s in model.steps
    )
    repeat = (
        RepeatOffender(model.repeat_offender.threshold, tuple(model.repeat_offender.sanctions))
        if model.repeat_offender
        else None
    )
    return PenaltySpec(
        steps=steps,
        window=model.window,
        ladder=model.ladder,
        repeat_offender=repeat,
        department_head_share=model.department_head_share,
    )


# --- finding the line of a key path ------------------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_.-]+)\s*=""")
_TOML_LINE = re.compile(r"\(at line (\d+), column \d+\)")


def _toml_error_line(message: str) -> int | None:
    match = _TOML_LINE.search(message)
    return int(match.group(1)) if match else None


def _strip_position(message: str) -> str:
    return _TOML_LINE.sub("", message).strip()


def _split_key(key: str) -> list[str]:
    return [part.strip().strip("\"'") for part in key.split(".")]


def _locate(text: str, loc: tuple[Any, ...]) -> int | None:
    """Return the 1-based line that defines the deepest found prefix of ``loc``."""
    found = _locate_depth(text, loc)
    return found[1] if found else None


def _locate_depth(text: str, loc: tuple[Any, ...]) -> tuple[int, int] | None:
    """Return (matched depth, 1-based line) of the deepest found prefix of ``loc``."""
    path = [str(p) for p in loc]
    best: tuple[int, int] | None = None  # (matched length, line)
    table: list[str] = []
    counters: dict[tuple[str, ...], int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            parts = _split_key(header.group(2))
            if header.group(1) == "[[":
                key = tuple(parts)
                counters[key] = counters.get(key, -1) + 1
                table = [*parts, str(counters[key])]
            else:
                table = parts
            best = _better(best, _matched(table, path), number)
            continue
        key_match = _KEY.match(line)
        if key_match:
            full = table + _split_key(key_match.group(1))
            best = _better(best, _matched(full, path), number)
    if best is None or best[0] == 0:
        return None
    return best


def _matched(candidate: list[str], path: list[str]) -> int:
    if len(candidate) > len(path) or candidate != path[: len(candidate)]:
        return 0
    return len(candidate)


def _better(best: tuple[int, int] | None, length: int, line: int) -> tuple[int, int] | None:
    if length == 0:
        return best
    if best is None or length > best[0]:
        return (length, line)
    return best
