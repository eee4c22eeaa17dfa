"""Loading policy bundles: the bundled files, `extends`, and errors with file and line."""

from __future__ import annotations

import copy
import re
import tempfile
import tomllib
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbxguard.adapters.policy_file import BUNDLED, load_policy
from pbxguard.adapters.settings import load_settings
from pbxguard.domain.numbers import NumberClass
from pbxguard.domain.penalties import CountWindow, Sanction
from pbxguard.domain.policy import LineUse, Mode
from pbxguard.errors import ConfigError, PolicyError

POLICIES = Path(__file__).parents[2] / "src/pbxguard/policies"
RULE_ID = re.compile(r"^[A-Z]{2,4}-[0-9]+[a-z]?$")

MINIMAL = """\
schema = 1

[site]
name = "test-site"
timezone = "Asia/Shanghai"

[numbering]
local_area_code = "021"
extensions = ["2000-2999"]
emergency = ["110", "119", "120"]

[pbx]
phone_channels = ['^PJSIP/(?P<extension>[0-9]+)-[0-9a-f]+$']

[[pbx.trunks]]
channel = '^Local/(?P<number>[^@]+)@pstn-[0-9a-f]+;1$'
dial_string = '^(?P<number>[^@]+)@pstn$'

[[pbx.trunks]]
channel = '^PJSIP/carrier-[0-9a-f]+$'
dial_string = '^(?P<number>[^@]+)@carrier$'

[roles.staff]
name_zh = "一般员工"
name_en = "Staff"
allowed = ["internal", "local", "mobile"]

[[people]]
id = "a"
name = "A"
department = "D"
role = "staff"
extensions = ["2001"]

[[people]]
id = "b"
name = "B"
department = "D"
role = "staff"
extensions = ["2002"]

[rules.EM-1]
title_zh = "报警电话"
title_en = "Alarm phone"
citation = "000 L127"

[rules.EM-1.penalty]
steps = [{ flat = "50" }]
"""


def write(directory: Path, text: str, name: str = "site.toml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """Return the 1-based line of the ``occurrence``-th line containing ``needle``."""
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    return hits[occurrence - 1]


def load_error(path: Path) -> PolicyError:
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    return caught.value


# --- the bundled policies -------------------------------------------------------------------


def test_default_bundle_loads() -> None:
    loaded = load_policy()
    policy = loaded.policy
    assert loaded.sources == ("<bundled default.toml>",)
    assert policy.site == "site"
    assert policy.mode is Mode.ENFORCE
    assert policy.timezone == ZoneInfo("Asia/Shanghai")
    assert policy.default_role == "staff"
    assert policy.pin_classes == frozenset()
    assert policy.version.endswith("/default-2026")
    assert policy.plan.access_code == ""
    assert policy.plan.local_area_code == "21"
    assert {"staff", "department_head", "station_head", "executive", "guard", "duty"} <= set(
        policy.roles
    )


def test_every_default_rule_has_an_id_titles_and_a_citation() -> None:
    rules = load_policy().policy.rules
    assert {"LD-1", "LD-2", "LD-4", "LD-7", "PR-1", "PR-2", "PR-3", "EM-1", "OT-4", "AN-1"} <= set(
        rules
    )
    for rule_id, rule in rules.items():
        assert RULE_ID.match(rule_id)
        assert rule.id == rule_id
        assert rule.citation.strip(), rule_id
        assert re.search(r"\d{3} L\d+|\d{3} line \d+", rule.citation), rule_id
        assert rule.title_zh.strip()
        assert rule.title_en.strip()


def test_default_class_rules_point_at_rules_with_penalties() -> None:
    policy = load_policy().policy
    assert policy.class_rules == {
        NumberClass.DOMESTIC_LD: "LD-2",
        NumberClass.HK_MACAU: "LD-2",
        NumberClass.TAIWAN: "LD-2",
        NumberClass.INTERNATIONAL: "LD-2",
        NumberClass.PREMIUM: "PR-1",
    }
    for rule_id in policy.class_rules.values():
        assert rule_id in policy.rules
        assert policy.rules[rule_id].has_penalty


def test_default_amounts_are_the_primary_reading() -> None:
    rules = load_policy().policy.rules
    ld2 = rules["LD-2"].penalty
    assert ld2 is not None
    assert ld2.window is CountWindow.QUARTER
    assert dict(ld2.steps[0].per_class) == {
        "domestic_ld": Decimal("50"),
        "hk_macau": Decimal("100"),
        "taiwan": Decimal("100"),
        "international": Decimal("500"),
    }
    pr1 = rules["PR-1"].penalty
    assert pr1 is not None
    assert (pr1.steps[0].charge_multiple, pr1.steps[0].flat) == (Decimal("20"), Decimal("50"))
    em1 = rules["EM-1"].penalty
    assert em1 is not None
    assert em1.steps[0].flat == Decimal("50")
    an1 = rules["AN-1"].penalty
    assert an1 is not None
    assert an1.steps[0].sanctions == (Sanction.ASSESSMENT_POINTS,)
    assert rules["OT-4"].penalty is None


def test_reference_site_loads_over_the_default() -> None:
    loaded = load_policy(POLICIES / "reference-site.toml")
    policy = loaded.policy
    assert loaded.sources == (str(POLICIES / "reference-site.toml"), "<bundled default.toml>")
    assert policy.site == "reference"
    assert set(policy.people) == {
        "staff-2001",
        "staff-2002",
        "zhang-wei",
        "liu-fang",
        "head-9001",
        "guard-li",
        "duty-wang",
    }
    assert policy.person_at("2003") is not None
    assert policy.person_at("2003").name == "张伟"  # type: ignore[union-attr]
    assert policy.person_at("8000") is None
    alarm = policy.line("8000")
    assert alarm is not None
    assert alarm.use is LineUse.EMERGENCY_ONLY
    assert alarm.duty_line == "guard_room"
    hotline = policy.line("8001")
    assert hotline is not None
    assert hotline.allowed == frozenset({NumberClass.DOMESTIC_LD})
    assert hotline.answer_within == 15
    assert "LD-2" in policy.rules  # inherited from the default
    assert policy.classifier.classify("02112345678").number_class is NumberClass.LOCAL


def test_bundled_names_can_be_extended(tmp_path: Path) -> None:
    assert set(BUNDLED) == {"default", "reference-site"}
    path = write(
        tmp_path,
        'schema = 1\nextends = "reference-site"\n\n[site]\nname = "ref2"\nmode = "monitor"\n',
    )
    loaded = load_policy(path)
    assert loaded.sources == (
        str(path),
        "<bundled reference-site.toml>",
        "<bundled default.toml>",
    )
    assert loaded.policy.site == "ref2"
    assert loaded.policy.mode is Mode.MONITOR
    assert loaded.policy.timezone == ZoneInfo("Asia/Shanghai")  # merged, not replaced
    assert "head-9001" in loaded.policy.people


def test_extends_a_relative_file_merges_tables_and_replaces_lists(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL, "base.toml")
    child = write(
        tmp_path,
        'schema = 1\nextends = "base.toml"\n\n[site]\nname = "child"\n\n'
        '[numbering]\nemergency = ["110"]\n',
    )
    policy = load_policy(child).policy
    assert policy.site == "child"
    assert policy.timezone == ZoneInfo("Asia/Shanghai")
    assert policy.plan.emergency == frozenset({"110"})
    assert policy.plan.local_area_code == "21"


def test_channel_plan_comes_with_the_policy() -> None:
    channels = load_policy(POLICIES / "reference-site.toml").channels
    assert channels.phone_extension("PJSIP/2001-00000000") == "2001"
    assert channels.phone_extension("Local/110@pstn-00000004;1") is None
    assert channels.trunk_number("Local/00441632960123@pstn-00000000;1", "00441632960123@pstn") == (
        "00441632960123",
        False,
    )
    assert channels.trunk_number("PJSIP/carrier-0000002a", "01087654321@carrier") == (
        "01087654321",
        False,
    )
    assert channels.trunk_number("PJSIP/2001-00000000", "2001") is None


def test_version_follows_the_text(tmp_path: Path) -> None:
    first = load_policy(write(tmp_path, MINIMAL, "one.toml")).policy.version
    again = load_policy(write(tmp_path, MINIMAL, "two.toml")).policy.version
    changed = load_policy(write(tmp_path, MINIMAL + "\n# changed\n", "three.toml")).policy.version
    assert first == again
    assert first != changed


def test_minimal_file_loads(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, MINIMAL)).policy
    assert policy.site == "test-site"
    assert policy.person_at("2002") is not None


# --- errors: file, line and problem ---------------------------------------------------------


def test_toml_syntax_error(tmp_path: Path) -> None:
    text = MINIMAL.replace('name = "A"', 'name = "A')
    path = write(tmp_path, text)
    error = load_error(path)
    assert error.path == str(path)
    assert error.line == line_of(text, 'name = "A')
    assert "not valid TOML" in error.problem
    assert str(error).startswith(f"{path}:{error.line}: ")
    assert isinstance(error, ConfigError)


def test_unknown_key_in_site(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        'timezone = "Asia/Shanghai"', 'timezone = "Asia/Shanghai"\ntimzone = "x"'
    )
    path = write(tmp_path, text)
    error = load_error(path)
    assert (error.path, error.line) == (str(path), line_of(text, "timzone"))
    assert "site.timzone" in error.problem
    assert "unknown key" in error.problem


def test_bad_role_in_second_person(tmp_path: Path) -> None:
    text = MINIMAL.replace('role = "staff"', 'role = "staf"').replace(
        'role = "staf"', 'role = "staff"', 1
    )
    path = write(tmp_path, text)
    error = load_error(path)
    assert (error.path, error.line) == (str(path), line_of(text, 'role = "staf"'))
    assert error.line == line_of(text, "role = ", 2)
    assert "people[1].role" in error.problem
    assert "'staf'" in error.problem


def test_bad_timezone(tmp_path: Path) -> None:
    text = MINIMAL.replace("Asia/Shanghai", "Mars/Olympus_Mons")
    path = write(tmp_path, text)
    error = load_error(path)
    assert (error.path, error.line) == (str(path), line_of(text, "timezone"))
    assert "Mars/Olympus_Mons" in error.problem
    assert "timezone" in error.problem


def test_negative_amount_in_a_penalty(tmp_path: Path) -> None:
    text = MINIMAL.replace('steps = [{ flat = "50" }]', 'steps = [{ flat = "-50" }]')
    path = write(tmp_path, text)
    error = load_error(path)
    assert (error.path, error.line) == (str(path), line_of(text, "-50"))
    assert "rules.EM-1.penalty.steps.0.flat" in error.problem
    assert "greater than or equal to 0" in error.problem


def test_negative_amount_in_a_penalty_table(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        'steps = [{ flat = "50" }]', '[[rules.EM-1.penalty.steps]]\nflat = "-50"'
    )
    path = write(tmp_path, text)
    error = load_error(path)
    assert (error.path, error.line) == (str(path), line_of(text, "-50"))


def test_bad_regex_in_a_trunk(tmp_path: Path) -> None:
    text = MINIMAL.replace("'^(?P<number>[^@]+)@carrier$'", "'^(?P<number>[^@+@carrier$'")
    path = write(tmp_path, text)
    error = load_error(path)
    assert error.path == str(path)
    assert error.line == line_of(text, "@carrier$'")
    assert "not a valid regular expression" in error.problem


def test_trunk_dial_string_without_number_group(tmp_path: Path) -> None:
    text = MINIMAL.replace("'^(?P<number>[^@]+)@carrier$'", "'^([^@]+)@carrier$'")
    path = write(tmp_path, text)
    error = load_error(path)
    assert error.line == line_of(text, "@carrier$'")
    assert "(?P<number>" in error.problem


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    error = load_error(path)
    assert (error.path, error.line) == (str(path), None)
    assert "not found" in error.problem


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(MINIMAL.encode("utf-8") + b"# caf\xe9\n")
    error = load_error(path)
    assert error.path == str(path)
    assert "UTF-8" in error.problem


def test_extends_a_missing_file(tmp_path: Path) -> None:
    """The error names the file that says `extends`, at that line, and the missing file."""
    text = 'schema = 1\nextends = "missing-base.toml"\n\n[site]\nname = "x"\n'
    path = write(tmp_path, text)
    error = load_error(path)
    assert (error.path, error.line) == (str(path), 2)
    assert "missing-base.toml" in error.problem
    assert "not found" in error.problem


def test_extends_loop(tmp_path: Path) -> None:
    write(tmp_path, 'schema = 1\nextends = "b.toml"\n', "a.toml")
    write(tmp_path, 'schema = 1\nextends = "a.toml"\n', "b.toml")
    error = load_error(tmp_path / "a.toml")
    assert "loop" in error.problem


def test_extends_must_be_a_string(tmp_path: Path) -> None:
    text = "schema = 1\n\nextends = 3\n"
    path = write(tmp_path, text)
    error = load_error(path)
    assert (error.path, error.line) == (str(path), 3)


def test_error_in_the_parent_file_points_into_the_parent(tmp_path: Path) -> None:
    parent_text = MINIMAL.replace("Asia/Shanghai", "Nowhere/City")
    parent = write(tmp_path, parent_text, "base.toml")
    child = write(tmp_path, 'schema = 1\nextends = "base.toml"\n\n[site]\nname = "child"\n')
    error = load_error(child)
    assert (error.path, error.line) == (str(parent), line_of(parent_text, "Nowhere/City"))


def test_error_in_the_child_file_points_into_the_child(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL, "base.toml")
    child_text = 'schema = 1\nextends = "base.toml"\n\n[site]\nname = "child"\ntimezone = "X/Y"\n'
    child = write(tmp_path, child_text)
    error = load_error(child)
    assert (error.path, error.line) == (str(child), 6)


def test_duplicate_extension_across_people(tmp_path: Path) -> None:
    text = MINIMAL.replace('extensions = ["2002"]', 'extensions = ["2003", "2001"]')
    path = write(tmp_path, text)
    error = load_error(path)
    assert (error.path, error.line) == (str(path), line_of(text, '"2003", "2001"'))
    assert "2001" in error.problem
    assert "'a'" in error.problem
    assert "'b'" in error.problem


def test_duplicate_person_id(tmp_path: Path) -> None:
    text = MINIMAL.replace('id = "b"', 'id = "a"')
    path = write(tmp_path, text)
    error = load_error(path)
    assert error.line == line_of(text, 'id = "a"', 2)
    assert "duplicate person id" in error.problem


@pytest.mark.parametrize(
    ("old", "new", "needle", "problem"),
    [
        ("schema = 1", "schema = 2", "schema", "schema"),
        ('local_area_code = "021"', 'local_area_code = "abc"', "local_area_code", "local_area"),
        ('extensions = ["2000-2999"]', 'extensions = ["2999-2000"]', "2999-2000", "low to high"),
        ('allowed = ["internal"', 'allowed = ["intrenal"', "intrenal", "roles.staff.allowed"),
        ('citation = "000 L127"', 'citation = ""', 'citation = ""', "citation"),
    ],
)
def test_schema_errors_are_located(
    tmp_path: Path, old: str, new: str, needle: str, problem: str
) -> None:
    assert old in MINIMAL
    text = MINIMAL.replace(old, new)
    path = write(tmp_path, text)
    error = load_error(path)
    assert (error.path, error.line) == (str(path), line_of(text, needle))
    assert problem in error.problem


def test_rule_id_must_look_like_a_regulation_id(tmp_path: Path) -> None:
    text = MINIMAL.replace("[rules.EM-1]", "[rules.em1]").replace("rules.EM-1.", "rules.em1.")
    path = write(tmp_path, text)
    error = load_error(path)
    assert (error.path, error.line) == (str(path), line_of(text, "[rules.em1]"))
    assert "must look like" in error.problem


def test_class_rule_must_name_a_rule(tmp_path: Path) -> None:
    text = MINIMAL + '\n[class_rules]\npremium = "PR-9"\n'
    path = write(tmp_path, text)
    error = load_error(path)
    assert (error.path, error.line) == (str(path), line_of(text, "PR-9"))
    assert "no rule named 'PR-9'" in error.problem


def test_emergency_can_never_need_a_pin(tmp_path: Path) -> None:
    text = MINIMAL + '\n[authorization]\npin_classes = ["domestic_ld", "emergency"]\n'
    path = write(tmp_path, text)
    error = load_error(path)
    assert (error.path, error.line) == (str(path), line_of(text, "pin_classes"))
    assert "emergency" in error.problem


def test_default_role_must_exist(tmp_path: Path) -> None:
    text = MINIMAL.replace('timezone = "Asia/Shanghai"', 'default_role = "intern"')
    path = write(tmp_path, text)
    error = load_error(path)
    assert (error.path, error.line) == (str(path), line_of(text, "default_role"))
    assert "'intern'" in error.problem


def test_line_listed_twice(tmp_path: Path) -> None:
    line = '\n[[lines]]\nextension = "8000"\nname = "{}"\n'
    text = MINIMAL + line.format("A") + line.format("B")
    path = write(tmp_path, text)
    error = load_error(path)
    assert error.line == line_of(text, 'extension = "8000"', 2)
    assert "listed twice" in error.problem


def test_a_special_period_that_ends_before_it_starts_is_located(tmp_path: Path) -> None:
    """Found by fuzzing: the core's ConfigError escaped without a file or line."""
    text = (
        'schema = 1\nextends = "default"\n\n[[calendar.periods]]\nname = "春运"\n'
        "first = 2027-01-20\nlast = 2027-01-02\n"
    )
    path = write(tmp_path, text)
    error = load_error(path)
    assert (error.path, error.line) == (str(path), 4)
    assert "ends (2027-01-02) before it starts (2027-01-20)" in error.problem


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("rota\x00.csv", "cannot contain NUL"),  # found by fuzzing: ValueError escaped
        ("", "at least 1 character"),
        (".", "is not a file"),
        ("/dev/null", "is not a file"),
    ],
)
def test_a_rota_file_name_that_is_not_a_file_is_refused(
    tmp_path: Path, name: str, problem: str
) -> None:
    text = f'schema = 1\nextends = "default"\n\n[rota]\nfile = {_toml_string(name)}\n'
    path = write(tmp_path, text)
    error = load_error(path)
    assert (error.path, error.line) == (str(path), 5)
    assert problem in error.problem


# --- feature codes ------------------------------------------------------------------------------


def test_the_default_bundle_lists_the_usual_feature_codes() -> None:
    codes = [f.pattern for f in load_policy().policy.plan.feature_codes]
    assert codes == ["*8", "**XXXX", "*97", "*98", "*72", "*73", "*76", "*78", "*79"]


def test_a_policy_without_feature_codes_has_none(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, MINIMAL)).policy
    assert policy.plan.feature_codes == ()
    assert policy.classifier.classify("*97").number_class is NumberClass.INVALID


def test_a_site_may_list_its_own_feature_codes(tmp_path: Path) -> None:
    text = 'schema = 1\nextends = "default"\n[numbering]\nfeature_codes = ["*97", "*4X"]\n'
    policy = load_policy(write(tmp_path, text)).policy
    assert [f.pattern for f in policy.plan.feature_codes] == ["*97", "*4X"]
    assert policy.classifier.classify("*43").number_class is NumberClass.FEATURE
    assert policy.classifier.classify("*8").number_class is NumberClass.INVALID  # replaced


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("*72.", "fixed length"),
        ("72", "must start with * or #"),
        ("*7a", "unexpected 'a' at position 3"),
        ("*[9-1]", "runs backwards"),
    ],
)
def test_an_invalid_feature_code_is_located_on_its_own_line(
    tmp_path: Path, pattern: str, problem: str
) -> None:
    text = MINIMAL.replace(
        'emergency = ["110", "119", "120"]',
        'emergency = ["110", "119", "120"]\n'
        f'feature_codes = [\n  "*97",   # voicemail\n  "{pattern}",\n  "*8",\n]',
    )
    path = write(tmp_path, text)
    error = load_error(path)
    assert (error.path, error.line) == (str(path), line_of(text, f'"{pattern}"'))
    assert error.problem.startswith("numbering.feature_codes.1: ")
    assert problem in error.problem
    assert repr(pattern) in error.problem


def test_an_invalid_feature_code_in_a_one_line_list_points_at_that_line(tmp_path: Path) -> None:
    text = 'schema = 1\nextends = "default"\n\n[numbering]\nfeature_codes = ["*97", "*9."]\n'
    path = write(tmp_path, text)
    error = load_error(path)
    assert (error.path, error.line) == (str(path), 5)
    assert "fixed length" in error.problem


def test_a_list_item_is_not_looked_for_past_its_list(tmp_path: Path) -> None:
    """A value written with an escape is not found verbatim: the list's line, not a later one."""
    text = (
        'schema = 1\nextends = "default"\n\n[numbering]\nfeature_codes = [\n  "*97",\n'
        '  "*9\\u002e",\n]\n\n[site]\nname = "x"  # not "*9."\n'
    )
    error = load_error(write(tmp_path, text))
    assert error.line == 5
    assert "'*9.'" in error.problem


# --- fuzzing: any TOML document ends in a policy or a PolicyError ---------------------------


def _toml_string(text: str) -> str:
    escaped = []
    for char in text:
        if char in '"\\':
            escaped.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)


def _toml_value(value: object) -> str:
    """Write ``value`` as an inline TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return {"inf": "inf", "-inf": "-inf", "nan": "nan"}.get(str(value), repr(value))
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, date | time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


def to_toml(document: dict[str, object]) -> str:
    """Write a document: top-level keys first, then each table as a [header] with its keys."""
    lines = [
        f"{_toml_key(k)} = {_toml_value(v)}" for k, v in document.items() if not isinstance(v, dict)
    ]
    for key, value in document.items():
        if isinstance(value, dict):
            lines.append(f"[{_toml_key(key)}]")
            lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
    return "\n".join(lines) + "\n"


DEFAULT_DOCUMENT = tomllib.loads((POLICIES / "default.toml").read_text("utf-8"))
REFERENCE_DOCUMENT = tomllib.loads((POLICIES / "reference-site.toml").read_text("utf-8"))
MINIMAL_DOCUMENT = tomllib.loads(MINIMAL)
# The default and the reference site in one file, with one of everything the two leave out,
# so that mutations reach every check of the loader.
FULL_DOCUMENT: dict[str, Any] = {
    **copy.deepcopy(DEFAULT_DOCUMENT),
    **{k: v for k, v in copy.deepcopy(REFERENCE_DOCUMENT).items() if k not in ("extends", "site")},
}
FULL_DOCUMENT["calendar"]["periods"] = [
    {"name": "春运", "first": date(2027, 1, 20), "last": date(2027, 2, 28)}
]
FULL_DOCUMENT["rota"]["dated"] = [
    {
        "line": "hotline",
        "person": "duty-wang",
        "start": datetime(2027, 2, 1, 8, 0),  # noqa: DTZ001 - a local time, as a site writes it
        "end": datetime(2027, 2, 1, 20, 0),  # noqa: DTZ001
    }
]
FULL_DOCUMENT["tariff"]["by_prefix"] = {"168": {"per_minute": "3.00", "increment_seconds": 60}}
FULL_DOCUMENT["rota"]["file"] = "rota.csv"
ROTA_CSV = "line,person,weekday,start,end\nhotline,duty-wang,Sat,08:00,20:00\n"
FULL_DOCUMENT["authorization"]["pin_classes"] = ["domestic_ld"]
FULL_DOCUMENT["numbering"]["access_code"] = "0"

# Words the schema knows, and values that are nearly right, so that mutations reach deep.
_KEYS = st.one_of(
    st.sampled_from(
        [
            "schema", "extends", "site", "name", "timezone", "mode", "default_role", "numbering",
            "access_code", "local_area_code", "extensions", "emergency", "feature_codes",
            "premium", "service", "pbx", "trunks", "channel", "dial_string", "roles", "allowed",
            "people", "lines", "extension", "use", "standby", "standby_rule", "rules", "penalty",
            "steps", "flat", "per_class", "window", "ladder", "schedules", "kind", "hours",
            "weekdays", "calendar", "periods", "first", "last", "rota", "weekly", "dated",
            "start", "end", "file", "tariff", "by_prefix", "by_class", "per_minute", "register",
            "fill_within_hours", "class_rules", "authorization", "pin_classes", "EM-1", "LD-2",
        ]
    ),
    st.text(max_size=8),
)  # fmt: skip
_SCALARS = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(
        [
            "110", "*72.", "*97", "2000-2999", "2999-2000", "Asia/Shanghai", "Mars/Olympus",
            "default", "reference-site", "missing.toml", ".", "..", "rota.csv", "0", "021",
            "50", "-1", "08:00-18:00", "24:00-23:59", "23:00-01:00", "staff", "guard_room",
            "emergency_only", "receive_only", "international", "premium", "quarter", "daily",
            "always", "working_hours", "(", "^PJSIP/(?P<extension>[0-9]+)$", "PR-1", "EM-2",
            "rota\x00.csv", "/", "/dev/null", "",
        ]
    ),
    st.dates(),
    st.datetimes(),
    st.times(),
)  # fmt: skip
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
    max_leaves=8,
)


def _tables(node: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Return the paths of every table and array in ``node``."""
    if isinstance(node, dict):
        children: list[tuple[object, object]] = list(node.items())
    elif isinstance(node, list):
        children = list(enumerate(node))
    else:
        return []
    found = [path]
    for key, value in children:
        found.extend(_tables(value, (*path, key)))
    return found


@st.composite
def _somewhere(draw: st.DrawFn, document: dict[str, Any]) -> tuple[object, ...]:
    """Return the path of a table or array of ``document``, or of a value in one.

    Every table is as likely as any other, however many values it or its neighbours hold, so
    a small one (a calendar period) gets as much attention as a long one (the people).
    """
    path = draw(st.sampled_from(_tables(document)))
    node: Any = document
    for step in path:
        node = node[step]
    if not node or draw(st.integers(0, 4)) == 4:
        return path
    return (
        *path,
        draw(st.sampled_from(list(node) if isinstance(node, dict) else range(len(node)))),
    )


@st.composite
def mutated(draw: st.DrawFn, document: dict[str, object]) -> dict[str, object]:
    """Return ``document`` with a few values replaced, removed or added anywhere in it."""
    result = copy.deepcopy(document)
    # Mostly one change: a second one usually breaks the document before the first is seen.
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 4]))):
        path = draw(_somewhere(result))
        parent: Any = result
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["nudge", "nudge", "replace", "remove", "add"]))
        if not path or action == "add":
            target: Any = result
            for step in path:
                target = target[step]
            if isinstance(target, dict):
                target[draw(_KEYS)] = draw(_VALUES)
            elif isinstance(target, list):
                target.append(draw(_VALUES))
        elif action == "remove":
            del parent[path[-1]]
        elif action == "nudge":
            parent[path[-1]] = draw(_alike(parent[path[-1]]))
        else:
            parent[path[-1]] = draw(_VALUES)
    return result


def _alike(value: object) -> st.SearchStrategy[Any]:
    """Return values of the same type as ``value``: the slightly wrong ones a person writes."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(-(2**63), 2**63 - 1) | st.integers(value - 3, value + 3)
    if isinstance(value, float):
        return st.floats()
    if isinstance(value, date):  # datetime is a date too
        near = st.integers(-400, 400).map(lambda days: value + timedelta(days=days))
        return near | (st.datetimes() if isinstance(value, datetime) else st.dates())
    if isinstance(value, time):
        return st.times()
    if isinstance(value, str):
        return _SCALARS.filter(lambda v: isinstance(v, str)) | st.just(value[::-1])
    if isinstance(value, list):
        return st.lists(_alike(value[0]) if value else _VALUES, max_size=len(value) + 2)
    return _VALUES


POLICY_DOCUMENTS = st.one_of(
    mutated(FULL_DOCUMENT),
    mutated(FULL_DOCUMENT),
    mutated(DEFAULT_DOCUMENT),
    mutated(REFERENCE_DOCUMENT),
    mutated(MINIMAL_DOCUMENT),
    st.dictionaries(_KEYS, _VALUES, max_size=6),
)


def _load_text(text: str) -> None:
    """Load ``text`` as a policy file; only a PolicyError may come out."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "site.toml"
        path.write_text(text, encoding="utf-8")
        (Path(directory) / "rota.csv").write_text(ROTA_CSV, encoding="utf-8")
        try:
            loaded = load_policy(path)
        except PolicyError as exc:
            error = exc
        else:
            assert loaded.policy.default_role in loaded.policy.roles
            return
    assert error.problem
    assert error.path is not None


@given(POLICY_DOCUMENTS)
def test_fuzz_a_policy_document_loads_or_is_refused_with_a_policy_error(
    document: dict[str, object],
) -> None:
    _load_text(to_toml(document))


@given(st.text(max_size=200), st.sampled_from(["", MINIMAL, 'schema = 1\nextends = "default"\n']))
def test_fuzz_any_text_loads_or_is_refused_with_a_policy_error(text: str, start: str) -> None:
    _load_text(start + text)


def test_the_toml_writer_round_trips_the_bundled_policies() -> None:
    for document in (DEFAULT_DOCUMENT, REFERENCE_DOCUMENT, MINIMAL_DOCUMENT, FULL_DOCUMENT):
        assert tomllib.loads(to_toml(document)) == document


def test_the_fuzzers_full_document_is_a_valid_policy(tmp_path: Path) -> None:
    write(tmp_path, ROTA_CSV, "rota.csv")
    loaded = load_policy(write(tmp_path, to_toml(FULL_DOCUMENT)))
    assert loaded.policy.rota is not None
    assert loaded.policy.plan.access_code == "0"
    assert loaded.policy.pin_classes == frozenset({NumberClass.DOMESTIC_LD})


@pytest.mark.parametrize(
    ("text", "line", "zh", "en"),
    [
        ('schema = 1\n[site]\nname = "x"\nmode = "bogus"\n', 4, "取值不在允许范围内",
         "Input should be 'enforce' or 'monitor'"),
        ('schema = 1\n[site]\nname = "x"\nnmae = "y"\n', 4, "未知的键（拼写错误？）",
         "unknown key (a typo?)"),
    ],
)  # fmt: skip
def test_an_invalid_value_is_described_in_chinese_then_english(
    tmp_path: Path, text: str, line: int, zh: str, en: str
) -> None:
    path = tmp_path / "site.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.line == line
    assert caught.value.problem.endswith(f"{zh} — {en}")


def test_a_settings_value_is_described_in_chinese_then_english(tmp_path: Path) -> None:
    path = tmp_path / "pbxguard.toml"
    path.write_text('[agi]\nport = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"agi\.port: 应为整数 — Input should be a valid integer"):
        load_settings(path)
