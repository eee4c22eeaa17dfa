"""Dialled strings an attacker would try: *, #, Unicode digits, invisible characters, pauses.

The rules (REGULATIONS.md §1, docs/policy.md "Feature codes"): a string is a feature code only
when it matches one of the site's patterns; a ``#`` at the very end ends dialling and is
dropped; any other ``*`` or ``#`` makes the string undialable. Unicode digits and known
formatting characters are folded before anything is classified, so a number means the same
however it is written, and an emergency number is an emergency number in every spelling.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pbxguard.adapters.policy_file import load_policy
from pbxguard.domain.calls import CallTracker, DialBegan, HangupChannel, RecordOffence
from pbxguard.domain.evaluate import CallAttempt, Decision, Verdict, evaluate
from pbxguard.domain.numbers import (
    MAX_DIALLED_CHARS,
    MAX_NUMBER_LENGTH,
    FeatureCode,
    NumberClass,
    NumberClassifier,
)
from pbxguard.domain.policy import Policy
from pbxguard.errors import PolicyError
from tests.unit.test_numbers import ACCESS_0, ACCESS_9, FEATURES, REFERENCE, REFERENCE_CASES

C = NumberClass
REFERENCE_SITE = Path(__file__).parents[2] / "src/pbxguard/policies/reference-site.toml"
LOADED = load_policy(REFERENCE_SITE)
POLICY = LOADED.policy
NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # Monday 10:00 in Shanghai


def with_access_code(policy: Policy, code: str) -> Policy:
    """Return ``policy`` for a PBX whose phones dial ``code`` for an outside line."""
    plan = dataclasses.replace(policy.plan, access_code=code)
    return dataclasses.replace(policy, plan=plan, classifier=NumberClassifier.compile(plan))


POLICY_ACCESS_0 = with_access_code(POLICY, "0")


def decide(extension: str, dialled: str, policy: Policy = POLICY) -> Decision:
    return evaluate(CallAttempt(extension, dialled), policy, now=NOW)


# --- the reported bypasses --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialled", "number_class", "rule"),
    [
        ("00441632960123#", C.INTERNATIONAL, "LD-2"),
        ("16812345678#", C.PREMIUM, "PR-1"),
        ("0044*1632960123", C.INVALID, ""),
    ],
)
def test_the_reported_bypasses_are_refused(
    dialled: str, number_class: NumberClass, rule: str
) -> None:
    decision = decide("2001", dialled)
    assert decision.verdict is Verdict.DENY
    assert decision.number_class is number_class
    assert decision.rule_id == rule
    assert decision.offence is bool(rule)


def test_a_final_hash_changes_nothing_about_the_call() -> None:
    """00441632960123# is the same attempt as 00441632960123: same class, rule and offence."""
    for number in ("00441632960123", "16812345678", "01087654321", "13800138000", "110"):
        plain, hashed = decide("2001", number), decide("2001", number + "#")
        assert (hashed.verdict, hashed.number_class, hashed.rule_id, hashed.offence) == (
            plain.verdict,
            plain.number_class,
            plain.rule_id,
            plain.offence,
        )
        assert hashed.classification.number == plain.classification.number


def test_a_star_inside_a_number_is_refused_with_a_bilingual_reason() -> None:
    decision = decide("9001", "0044*1632960123")  # a head, who may dial international
    assert decision.verdict is Verdict.DENY
    assert decision.reason_en == (
        "not a number: '*' and '#' are dialable only in the site's feature codes, "
        "and '#' only at the end"
    )
    assert decision.reason_zh == (
        "无法识别的号码：'*' 和 '#' 只能用于本站功能码，'#' 只能在末尾表示拨号结束"
    )


def test_full_width_110_is_an_emergency_call_even_from_the_alarm_phone() -> None:
    for extension in ("2001", "8000", "7777"):
        decision = decide(extension, "１１０")
        assert decision.verdict is Verdict.ALLOW
        assert decision.number_class is C.EMERGENCY
        assert decision.classification.number == "110"


# --- every case with a defined answer ---------------------------------------------------------

# (dialled, class, normalised number, part of the English reason for invalid ones), reference
# site (no access code).
CASES: list[tuple[str, NumberClass, str, str]] = [
    # the site's feature codes, and only those
    ("*97", C.FEATURE, "*97", ""),
    ("*97#", C.FEATURE, "*97", ""),
    ("**2002", C.FEATURE, "**2002", ""),
    ("* 9 7", C.FEATURE, "*97", ""),
    ("＊９７", C.FEATURE, "*97", ""),
    ("*77", C.INVALID, "", "feature codes"),
    ("*43", C.INVALID, "", "feature codes"),
    ("**20021", C.INVALID, "", "feature codes"),
    ("#31#", C.INVALID, "", "feature codes"),
    ("*72*2001#", C.INVALID, "", "feature codes"),
    ("#", C.INVALID, "", "empty"),
    ("##", C.INVALID, "", "feature codes"),
    # # at the end ends dialling; # or * anywhere else hides a number
    ("00441632960123#", C.INTERNATIONAL, "00441632960123", ""),
    ("+441632960123#", C.INTERNATIONAL, "00441632960123", ""),
    ("16812345678#", C.PREMIUM, "16812345678", ""),
    ("17951 00441632960123#", C.INTERNATIONAL, "00441632960123", ""),
    ("00441632960123##", C.INVALID, "", "feature codes"),
    ("00441632960123#1", C.INVALID, "", "feature codes"),
    ("#00441632960123", C.INVALID, "", "feature codes"),
    ("*00441632960123", C.INVALID, "", "feature codes"),
    ("00441632960123*", C.INVALID, "", "feature codes"),
    ("0044*1632960123", C.INVALID, "", "feature codes"),
    ("0044#1632960123", C.INVALID, "", "feature codes"),
    ("*7200441632960123", C.INVALID, "", "feature codes"),
    ("*72*00441632960123#", C.INVALID, "", "feature codes"),
    ("**00441632960123", C.INVALID, "", "feature codes"),
    # 00 + 86 folding never happens around a * or #
    ("0086*1087654321", C.INVALID, "", "feature codes"),
    ("00*86*1087654321", C.INVALID, "", "feature codes"),
    ("+86*13800138000", C.INVALID, "", "feature codes"),
    ("0086#13800138000", C.INVALID, "", "feature codes"),
    ("+8613800138000#", C.MOBILE, "013800138000", ""),
    # + only in first place
    ("0044+1632960123", C.INVALID, "", "only at the start"),
    ("+44+1632960123", C.INVALID, "", "only at the start"),
    ("+", C.INVALID, "", "empty"),
    ("+#", C.INVALID, "", "empty"),
    # full-width and other scripts' digits, and full-width symbols
    ("１１０", C.EMERGENCY, "110", ""),
    ("１１０＃", C.EMERGENCY, "110", ""),
    ("١١٠", C.EMERGENCY, "110", ""),  # Arabic-Indic
    ("۱۱۹", C.EMERGENCY, "119", ""),  # Extended Arabic-Indic (Persian)
    ("१२०", C.EMERGENCY, "120", ""),  # Devanagari
    ("①①⓪", C.EMERGENCY, "110", ""),  # circled digits
    ("𝟏𝟏𝟎", C.EMERGENCY, "110", ""),  # mathematical bold digits
    ("００４４１６３２９６０１２３＃", C.INTERNATIONAL, "00441632960123", ""),
    ("＋４４１６３２９６０１２３", C.INTERNATIONAL, "00441632960123", ""),
    ("（０２１）１２３４－５６７８", C.LOCAL, "02112345678", ""),
    ("０４４＊１６３２９６０１２３", C.INVALID, "", "feature codes"),
    ("١٦٨١٢٣٤٥٦٧٨", C.PREMIUM, "16812345678", ""),
    # invisible characters and other spaces are formatting
    ("0044\u200b1632960123", C.INTERNATIONAL, "00441632960123", ""),
    ("0044\u200c1632\u200d960123", C.INTERNATIONAL, "00441632960123", ""),
    ("\ufeff00441632960123", C.INTERNATIONAL, "00441632960123", ""),
    ("0044\u00ad1632960123", C.INTERNATIONAL, "00441632960123", ""),
    ("0044\u20601632960123", C.INTERNATIONAL, "00441632960123", ""),
    ("\u202e00441632960123\u202c", C.INTERNATIONAL, "00441632960123", ""),
    ("\u200f110", C.EMERGENCY, "110", ""),
    ("1\u206610\u2069", C.EMERGENCY, "110", ""),
    ("0044\u20031632\u202f960123", C.INTERNATIONAL, "00441632960123", ""),
    ("0044\u20131632\u2212960123", C.INTERNATIONAL, "00441632960123", ""),
    ("168\u00a01234\u30005678", C.PREMIUM, "16812345678", ""),
    # invisible characters that are not formatting ones are refused
    ("1\u180e10", C.INVALID, "", "U+180E"),
    ("110\U000e0031", C.INVALID, "", "U+E0031"),
    ("110\u0301", C.INVALID, "", "'\u0301'"),
    # pause and wait characters: what follows them would be sent after the call connects
    ("13800138000p1234", C.INVALID, "", "pause"),
    ("13800138000,1234", C.INVALID, "", "pause"),
    ("10086w00441632960123", C.INVALID, "", "pause"),
    ("10086;1", C.INVALID, "", "pause"),
    ("13800138000ｐ1", C.INVALID, "", "pause"),
    # control characters: NUL would cut the string short in C, a line break injects
    ("110\x00", C.INVALID, "", "U+0000"),
    ("13800138000\x0000441632960123", C.INVALID, "", "U+0000"),
    ("00441632960123\r\n", C.INVALID, "", "U+000D"),
    ("110\n", C.INVALID, "", "U+000A"),
    ("\x1b[0m110", C.INVALID, "", "U+001B"),
    # lookalike letters are letters
    ("11O", C.INVALID, "", "'O'"),
    ("1l0", C.INVALID, "", "'l'"),
    # lengths
    ("1" * (MAX_NUMBER_LENGTH + 1), C.INVALID, "", f"more than {MAX_NUMBER_LENGTH} digits"),
    ("0" * 300, C.INVALID, "", f"more than {MAX_DIALLED_CHARS} characters"),
    (" " * MAX_DIALLED_CHARS + "110", C.INVALID, "", f"more than {MAX_DIALLED_CHARS}"),
    ("\u200b" * 200 + "110", C.EMERGENCY, "110", ""),
]


@pytest.mark.parametrize(
    ("dialled", "number_class", "number", "reason"), CASES, ids=[ascii(c[0])[:40] for c in CASES]
)
def test_each_dialled_string_gets_its_defined_answer(
    dialled: str, number_class: NumberClass, number: str, reason: str
) -> None:
    result = REFERENCE.classify(dialled)
    assert (result.number_class, result.number) == (number_class, number), result.reason
    assert reason in result.reason
    if number_class is C.INVALID:
        assert result.reason_zh
    assert result.dialled == dialled


# (classifier, dialled, class, normalised number, part of the reason)
ACCESS_CASES: list[tuple[NumberClassifier, str, NumberClass, str, str]] = [
    (ACCESS_0, "0110#", C.EMERGENCY, "110", ""),
    (ACCESS_0, "０１１０", C.EMERGENCY, "110", ""),
    (ACCESS_0, "000441632960123#", C.INTERNATIONAL, "00441632960123", ""),
    (ACCESS_0, "0*72", C.INVALID, "", "access code"),
    (ACCESS_0, "0#31#13800138000", C.INVALID, "", "access code"),
    (ACCESS_0, "00*441632960123", C.INVALID, "", "feature codes"),
    (ACCESS_0, "*97", C.FEATURE, "*97", ""),
    (ACCESS_9, "9*72", C.INVALID, "", "access code"),
    (ACCESS_9, "9**2002", C.INVALID, "", "access code"),
    (ACCESS_9, "９＊７２", C.INVALID, "", "access code"),
    (ACCESS_9, "9110#", C.EMERGENCY, "110", ""),
    (ACCESS_9, "**2002", C.FEATURE, "**2002", ""),
]


@pytest.mark.parametrize(
    ("classifier", "dialled", "number_class", "number", "reason"),
    ACCESS_CASES,
    ids=[f"{c[0].plan.access_code}:{c[1]!a}" for c in ACCESS_CASES],
)
def test_access_code_and_dialling_symbols(
    classifier: NumberClassifier, dialled: str, number_class: NumberClass, number: str, reason: str
) -> None:
    result = classifier.classify(dialled)
    assert (result.number_class, result.number) == (number_class, number), result.reason
    assert reason in result.reason


def test_a_trunk_dial_string_with_a_star_is_refused_too() -> None:
    assert REFERENCE.classify("0044*1632960123", with_access_code=False).number_class is C.INVALID
    assert ACCESS_0.classify("0*72", with_access_code=False).number_class is C.INVALID


def test_without_feature_codes_no_string_with_a_star_is_dialable() -> None:
    bare = NumberClassifier.compile(dataclasses.replace(REFERENCE.plan, feature_codes=()))
    for dialled in ("*97", "*8", "**2002", "#"):
        assert bare.classify(dialled).number_class is C.INVALID
    assert bare.classify("110#").number_class is C.EMERGENCY


# --- the AMI layer: a trunk leg dialling such a string is cut like any forbidden call ---------


def trunk_dial(number: str) -> DialBegan:
    return DialBegan(
        NOW,
        "PJSIP/2001-00000001",
        "1795500000.1",
        "1795500000.1",
        "2001",
        "Staff 2001",
        number,
        "PJSIP/carrier-00000002",
        "1795500000.2",
        f"{number}@carrier",
    )


@pytest.mark.parametrize(
    ("number", "rule"),
    [("00441632960123#", "LD-2"), ("16812345678#", "PR-1"), ("0044*1632960123", "")],
)
def test_the_ami_layer_hangs_up_the_trunk_leg(number: str, rule: str) -> None:
    tracker = CallTracker(POLICY, LOADED.channels)
    effects = tracker.handle(trunk_dial(number))
    [hangup] = [e for e in effects if isinstance(e, HangupChannel)]
    assert hangup.channel == "PJSIP/carrier-00000002"
    offences = [e.draft.rule_id for e in effects if isinstance(e, RecordOffence)]
    # Every offence is recorded before the hangup is sent (PR-1's charge follows at the end).
    assert offences == ([rule] if rule else [])


# --- feature-code patterns --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "matching", "not_matching"),
    [
        ("*97", ["*97"], ["*9", "*970", "97", "#97"]),
        ("**XXXX", ["**2002", "**0000"], ["**200", "**20021", "*2002", "**200*"]),
        ("_*9[78]", ["*97", "*98"], ["*96", "*99", "*9"]),
        ("#XX", ["#31", "#00"], ["#3", "#311", "*31"]),
        ("*[1-35]N", ["*12", "*39", "*59"], ["*41", "*10", "*11", "*6"]),
        ("*zx", ["*10", "*99"], ["*01", "*1"]),
        ("*21*XXXX#", ["*21*2001#"], ["*21*2001", "*21*20011#"]),
        (" *8 ", ["*8"], ["*80"]),
    ],
)
def test_feature_code_patterns_match_what_asterisk_would(
    pattern: str, matching: list[str], not_matching: list[str]
) -> None:
    code = FeatureCode.parse(pattern)
    assert code.pattern == pattern
    for text in matching:
        assert code.matches(text), text
    for text in not_matching:
        assert not code.matches(text), text


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("", "empty"),
        ("_", "empty"),
        ("72", "must start with * or #"),
        ("9*72", "must start with * or #"),
        ("X*72", "must start with * or #"),
        ("*72.", "fixed length"),
        ("*72!", "fixed length"),
        ("*7a", "unexpected 'a' at position 3"),
        ("*7 2", "unexpected ' '"),
        ("*[", "without a closing"),
        ("*[]", "lists no digit"),
        ("*[a]", "only digits and ranges"),
        ("*[*#]", "only digits and ranges"),
        ("*[5-1]", "runs backwards"),
        ("*[1-]", "unfinished range"),
        ("*" + "X" * 20, "longer than 20 positions"),
    ],
)
def test_feature_code_pattern_errors_say_why(pattern: str, problem: str) -> None:
    with pytest.raises(PolicyError, match=re.escape(problem)):
        FeatureCode.parse(pattern)


def test_the_test_plans_use_the_default_bundle_feature_codes() -> None:
    default = load_policy().policy.plan.feature_codes
    assert tuple(f.pattern for f in default) == FEATURES
    assert POLICY.plan.feature_codes == default


_PATTERN_ATOMS = st.sampled_from([*"0123456789*#XZNxzn", "[78]", "[1-5]", "[13-5]", "[0-9]", "[9]"])


def asterisk_matches(pattern: str, text: str) -> bool:
    """Match ``text`` against an Asterisk pattern the way pbx.c does, position by position."""
    body = pattern.strip().removeprefix("_")
    positions: list[set[str]] = []
    index = 0
    while index < len(body):
        char = body[index]
        if char == "[":
            end = body.index("]", index)
            allowed: set[str] = set()
            inside = body[index + 1 : end]
            k = 0
            while k < len(inside):
                if k + 2 < len(inside) and inside[k + 1] == "-":
                    allowed |= {str(d) for d in range(int(inside[k]), int(inside[k + 2]) + 1)}
                    k += 3
                else:
                    allowed.add(inside[k])
                    k += 1
            positions.append(allowed)
            index = end + 1
            continue
        lowest = {"X": 0, "Z": 1, "N": 2}.get(char.upper())
        positions.append({str(d) for d in range(lowest, 10)} if lowest is not None else {char})
        index += 1
    return len(text) == len(positions) and all(c in p for c, p in zip(text, positions, strict=True))


@given(
    st.lists(_PATTERN_ATOMS, max_size=8).map("".join),
    st.sampled_from("*#"),
    st.text(alphabet="0123456789*#", max_size=10),
    st.booleans(),
)
def test_feature_code_patterns_agree_with_asterisk(
    rest: str, first: str, text: str, underscore: bool
) -> None:
    pattern = ("_" if underscore else "") + first + rest
    code = FeatureCode.parse(pattern)
    assert code.matches(text) is asterisk_matches(pattern, text)
    assert code.matches(first + text) is asterisk_matches(pattern, first + text)


@given(st.text(max_size=24))
def test_feature_code_parsing_either_succeeds_or_says_why(text: str) -> None:
    try:
        code = FeatureCode.parse(text)
    except PolicyError as exc:
        problem = exc.problem
    else:
        assert code.pattern == text
        assert code.regex
        assert not code.matches("")
        return
    assert problem.startswith("feature code")


# --- properties -------------------------------------------------------------------------------

# Compatibility digits NFKC folds to ASCII although they are not decimal digits (category No).
_COMPAT_DIGITS: dict[str, str] = {
    str(d): "".join(chars)
    for d, chars in enumerate(zip("⁰¹²³⁴⁵⁶⁷⁸⁹", "₀₁₂₃₄₅₆₇₈₉", "⓪①②③④⑤⑥⑦⑧⑨", strict=True))
}
_SYMBOLS = {"+": "+＋﹢⁺₊", "*": "*＊﹡", "#": "#＃﹟"}
FORMATTING = [
    *" -.()\t",
    "\u00a0",  # no-break space
    "\u3000",  # ideographic space
    "\u2002",  # en space
    "\u2009",  # thin space
    "\u202f",  # narrow no-break space
    "\u1680",  # ogham space mark
    "\u2010",  # hyphen
    "\u2011",  # non-breaking hyphen
    "\u2013",  # en dash
    "\u2014",  # em dash
    "\u2212",  # minus sign
    "\uff0d",  # full-width hyphen-minus
    "\uff08",  # full-width (
    "\uff09",  # full-width )
    "\uff0e",  # full-width .
    "\u00ad",  # soft hyphen
    "\u200b",  # zero-width space
    "\u200c",  # zero-width non-joiner
    "\u200d",  # zero-width joiner
    "\u2060",  # word joiner
    "\ufeff",  # byte-order mark
    "\u200e",  # left-to-right mark
    "\u200f",  # right-to-left mark
    "\u061c",  # Arabic letter mark
    *"\u202a\u202b\u202c\u202d\u202e",  # embeddings and overrides
    *"\u2066\u2067\u2068\u2069",  # isolates
]
FORMATTING_CHARS = st.one_of(st.sampled_from(FORMATTING), st.characters(categories=["Zs", "Pd"]))


@st.composite
def spelled(draw: st.DrawFn, digit: str) -> str:
    """Return ``digit`` written in any script, or as a compatibility digit."""
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return digit
    if kind == 1:
        sample = draw(st.characters(categories=["Nd"]))
        zero = ord(sample) - unicodedata.decimal(sample)
        return chr(zero + int(digit))
    return draw(st.sampled_from(_COMPAT_DIGITS[digit]))


@st.composite
def variant(draw: st.DrawFn, text: str, *, symbols: bool = False) -> str:
    """Spell ``text`` differently: other digits, full-width symbols, formatting anywhere.

    With ``symbols``, also put ``*`` and ``#`` (in any spelling) anywhere.
    """
    chars: list[str] = []
    for char in text:
        if char in "0123456789":
            chars.append(draw(spelled(char)))
        else:
            chars.append(draw(st.sampled_from(_SYMBOLS.get(char, char))))
    extras = FORMATTING_CHARS
    if symbols:
        extras = st.one_of(FORMATTING_CHARS, st.sampled_from("*#＊＃﹡﹟"))
    for position, char in draw(st.lists(st.tuples(st.integers(0, 40), extras), max_size=10)):
        chars.insert(position % (len(chars) + 1), char)
    return "".join(chars)


EMERGENCY = sorted(POLICY.plan.emergency)
EXTENSIONS = ["2001", "9001", "8000", "8001", "8002", "7777", ""]

# Numbers staff 2001 may not dial at the reference site, plain.
FORBIDDEN = st.one_of(
    st.builds("00{}{}".format, st.sampled_from(["44", "1", "49", "81", "852", "853", "886"]),
              st.text(alphabet="0123456789", min_size=7, max_size=10)),
    st.builds("0{}{}".format, st.sampled_from(["10", "27", "755", "571"]),
              st.text(alphabet="0123456789", min_size=8, max_size=8)),
    st.builds("{}{}".format, st.sampled_from(["168", "160"]),
              st.text(alphabet="0123456789", min_size=5, max_size=8)),
    st.builds("+{}{}".format, st.sampled_from(["44", "1", "852", "8610", "86755"]),
              st.text(alphabet="0123456789", min_size=8, max_size=9)),
).flatmap(
    lambda n: st.sampled_from(["", "17951", "17909", "12593"]).map(lambda p: p + n)
    if not n.startswith("+") else st.just(n)
)  # fmt: skip


@given(st.data(), FORBIDDEN, st.sampled_from(["2001", "2003", "7777"]), st.booleans())
def test_no_spelling_of_a_forbidden_number_is_allowed(
    data: st.DataObject, number: str, extension: str, access_zero: bool
) -> None:
    """Digits in any script, symbols anywhere, invisible characters: still not allowed."""
    policy = POLICY_ACCESS_0 if access_zero else POLICY
    plain = ("0" if access_zero else "") + number
    refused = decide(extension, plain, policy)
    assume(refused.verdict is Verdict.DENY)
    spelling = data.draw(variant(plain, symbols=True), label="spelling")
    decision = decide(extension, spelling, policy)
    assert decision.verdict is not Verdict.ALLOW, decision.reason_en
    if decision.number_class is not C.INVALID:
        assert decision.classification.number == refused.classification.number


@given(st.data(), FORBIDDEN, st.booleans())
def test_a_forbidden_number_spelled_differently_is_the_same_offence(
    data: st.DataObject, number: str, hashed: bool
) -> None:
    refused = decide("2001", number)
    assume(refused.verdict is Verdict.DENY)
    spelling = data.draw(variant(number)) + (data.draw(st.sampled_from("#＃")) if hashed else "")
    decision = decide("2001", spelling)
    assert (decision.number_class, decision.rule_id, decision.offence) == (
        refused.number_class,
        refused.rule_id,
        refused.offence,
    )
    assert decision.classification.number == refused.classification.number


@given(
    st.data(),
    st.sampled_from(EMERGENCY),
    st.sampled_from(EXTENSIONS),
    st.sampled_from(["", "#", "＃"]),
    st.booleans(),
)
def test_an_emergency_number_in_any_spelling_is_an_emergency_call(
    data: st.DataObject, number: str, extension: str, end: str, access_zero: bool
) -> None:
    policy = POLICY_ACCESS_0 if access_zero else POLICY
    dialled = data.draw(variant(("0" if access_zero else "") + number)) + end
    assume(len(dialled) <= MAX_DIALLED_CHARS)
    decision = decide(extension, dialled, policy)
    assert decision.number_class is C.EMERGENCY, decision.reason_en
    assert decision.verdict is Verdict.ALLOW
    assert decision.classification.number == number


VALID = [c for c in REFERENCE_CASES if c[1] is not C.INVALID]


@given(st.data(), st.sampled_from(VALID))
def test_classification_is_invariant_to_spelling_and_formatting(
    data: st.DataObject, case: tuple[str, NumberClass, str, str]
) -> None:
    dialled, number_class, number, carrier = case
    result = REFERENCE.classify(data.draw(variant(dialled)))
    assert (result.number_class, result.number, result.carrier_prefix) == (
        number_class,
        number,
        carrier,
    )


_ANYTHING_DIALLED = st.one_of(
    st.text(),
    st.text(alphabet=st.sampled_from([*"0123456789+*#pw,;@:sipx", *FORMATTING]), max_size=40),
    st.text(
        alphabet=st.characters(categories=["Nd", "No", "Zs", "Pd", "Cf", "Cc", "Po", "Sm"]),
        max_size=40,
    ),
)


@given(_ANYTHING_DIALLED, st.booleans())
def test_the_classifier_is_total_and_explains_every_refusal(text: str, access: bool) -> None:
    for classifier in (REFERENCE, ACCESS_0, ACCESS_9):
        result = classifier.classify(text, with_access_code=access)
        assert result.dialled == text
        if result.number_class is C.INVALID:
            assert result.reason
            assert result.reason_zh
        elif result.number_class is C.FEATURE:
            assert classifier.is_feature_code(result.number)
        else:
            assert result.number.isascii()
            assert result.number.isdigit()
