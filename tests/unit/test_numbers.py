"""Number normalisation and classification (REGULATIONS.md §1)."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pbxguard.domain.numbers import (
    LONG_DISTANCE_CLASSES,
    Classification,
    ExtensionRange,
    FeatureCode,
    NumberClass,
    NumberClassifier,
    NumberingPlan,
    classify_number,
)
from pbxguard.errors import PolicyError

EMERGENCY = ("110", "119", "120", "122", "112", "12110")
SERVICE = ("95", "96", "10000", "10010", "10086", "12345", "12315", "114", "12306", "12366")
PREMIUM = ("168", "160", "9")
# The default bundle's feature codes.
FEATURES = ("*8", "**XXXX", "*97", "*98", "*72", "*73", "*76", "*78", "*79")


def site_plan(access_code: str, *extensions: str) -> NumberingPlan:
    """Return the reference site's numbering (021, the default lists) with ``access_code``."""
    return NumberingPlan(
        access_code=access_code,
        local_area_code="021",
        extensions=tuple(ExtensionRange.parse(e) for e in extensions),
        emergency=frozenset(EMERGENCY),
        service=SERVICE,
        premium=PREMIUM,
        feature_codes=tuple(FeatureCode.parse(f) for f in FEATURES),
    )


# The reference site: phones dial numbers directly; 2xxx staff, 8xxx shared lines, 9xxx heads.
REFERENCE = NumberClassifier.compile(site_plan("", "2000-2999", "8000-8999", "9000-9999"))
# Sites whose phones dial "0" or "9" for an outside line. With "9" as the access code, 9xxx
# cannot also be extensions (9+110 would be ambiguous), so that site numbers heads 3xxx.
ACCESS_0 = NumberClassifier.compile(site_plan("0", "2000-2999", "8000-8999", "9000-9999"))
ACCESS_9 = NumberClassifier.compile(site_plan("9", "2000-2999", "3000-3999", "8000-8999"))

C = NumberClass

# (dialled, class, normalised number, carrier prefix stripped)
REFERENCE_CASES: list[tuple[str, NumberClass, str, str]] = [
    # emergency: exact numbers, recognised before anything is stripped
    *((n, C.EMERGENCY, n, "") for n in EMERGENCY),
    ("1 1 0", C.EMERGENCY, "110", ""),
    ("(120)", C.EMERGENCY, "120", ""),
    ("17951110", C.EMERGENCY, "110", "17951"),
    ("12593 119", C.EMERGENCY, "119", "12593"),
    # internal extensions
    ("2001", C.INTERNAL, "2001", ""),
    ("8000", C.INTERNAL, "8000", ""),
    ("9001", C.INTERNAL, "9001", ""),
    ("2999", C.INTERNAL, "2999", ""),
    # service numbers are legitimate, even 9-headed ones (95/96 win over premium 9)
    ("95588", C.SERVICE, "95588", ""),
    ("96688", C.SERVICE, "96688", ""),
    ("10000", C.SERVICE, "10000", ""),
    ("10010", C.SERVICE, "10010", ""),
    ("10086", C.SERVICE, "10086", ""),
    ("12345", C.SERVICE, "12345", ""),
    ("12315", C.SERVICE, "12315", ""),
    ("114", C.SERVICE, "114", ""),
    ("12306", C.SERVICE, "12306", ""),
    ("17951 95588", C.SERVICE, "95588", "17951"),
    # premium-rate: 168, 160 and 9-headed numbers
    ("16812345678", C.PREMIUM, "16812345678", ""),
    ("168 1234 5678", C.PREMIUM, "16812345678", ""),
    ("1601234567", C.PREMIUM, "1601234567", ""),
    ("9123456", C.PREMIUM, "9123456", ""),
    ("91234", C.PREMIUM, "91234", ""),
    # local: 7 or 8 digit subscriber numbers, or 0 + the local area code
    ("21234567", C.LOCAL, "21234567", ""),
    ("2345678", C.LOCAL, "2345678", ""),
    ("02112345678", C.LOCAL, "02112345678", ""),
    ("0211234567", C.LOCAL, "0211234567", ""),
    ("021-1234 5678", C.LOCAL, "02112345678", ""),
    ("(021) 1234-5678", C.LOCAL, "02112345678", ""),
    ("021.1234.5678", C.LOCAL, "02112345678", ""),
    ("17911 02112345678", C.LOCAL, "02112345678", "17911"),
    # mobile: 1[3-9] + 9 digits, with or without a trunk 0
    ("13800138000", C.MOBILE, "13800138000", ""),
    ("19912345678", C.MOBILE, "19912345678", ""),
    ("138-0013-8000", C.MOBILE, "13800138000", ""),
    ("013800138000", C.MOBILE, "013800138000", ""),
    ("1795113800138000", C.MOBILE, "13800138000", "17951"),
    # a mobile number that merely starts like a carrier prefix keeps all its digits
    ("17912345678", C.MOBILE, "17912345678", ""),
    ("17951234567", C.MOBILE, "17951234567", ""),
    ("17909123456", C.MOBILE, "17909123456", ""),
    # domestic long distance: 0 + another area code + subscriber
    ("01087654321", C.DOMESTIC_LD, "01087654321", ""),
    ("02787654321", C.DOMESTIC_LD, "02787654321", ""),
    ("0755 1234 5678", C.DOMESTIC_LD, "075512345678", ""),
    ("17909 01087654321", C.DOMESTIC_LD, "01087654321", "17909"),
    ("1790901087654321", C.DOMESTIC_LD, "01087654321", "17909"),
    # international, in 00 and + forms, also through an IP-dialling prefix
    ("00441632960123", C.INTERNATIONAL, "00441632960123", ""),
    ("+441632960123", C.INTERNATIONAL, "00441632960123", ""),
    ("+44 1632 960123", C.INTERNATIONAL, "00441632960123", ""),
    ("+1 (212) 555-0100", C.INTERNATIONAL, "0012125550100", ""),
    ("17951 00441632960123", C.INTERNATIONAL, "00441632960123", "17951"),
    # China's own country code folds back to a domestic number
    ("+8613800138000", C.MOBILE, "013800138000", ""),
    ("008613800138000", C.MOBILE, "013800138000", ""),
    ("+86 21 1234 5678", C.LOCAL, "02112345678", ""),
    ("0086 21 12345678", C.LOCAL, "02112345678", ""),
    ("+86 10 8765 4321", C.DOMESTIC_LD, "01087654321", ""),
    ("17951 0086 10 87654321", C.DOMESTIC_LD, "01087654321", "17951"),
    # Hong Kong / Macau / Taiwan
    ("0085223456789", C.HK_MACAU, "0085223456789", ""),
    ("+852 2345 6789", C.HK_MACAU, "0085223456789", ""),
    ("0085328123456", C.HK_MACAU, "0085328123456", ""),
    ("+853 2812 3456", C.HK_MACAU, "0085328123456", ""),
    ("17951 0085223456789", C.HK_MACAU, "0085223456789", "17951"),
    ("00886223456789", C.TAIWAN, "00886223456789", ""),
    ("+886 2 2345 6789", C.TAIWAN, "00886223456789", ""),
    # feature codes are their own class: only those the site lists, a final # dropped
    ("*72", C.FEATURE, "*72", ""),
    ("*97", C.FEATURE, "*97", ""),
    ("*8", C.FEATURE, "*8", ""),
    ("**2002", C.FEATURE, "**2002", ""),
    ("*97#", C.FEATURE, "*97", ""),
    # a final # ends dialling: the rest is classified
    ("00441632960123#", C.INTERNATIONAL, "00441632960123", ""),
    ("16812345678#", C.PREMIUM, "16812345678", ""),
    ("13800138000#", C.MOBILE, "13800138000", ""),
    ("110#", C.EMERGENCY, "110", ""),
    # full-width and other Unicode digits are digits
    ("１１０", C.EMERGENCY, "110", ""),
    ("１３８００１３８０００", C.MOBILE, "13800138000", ""),
    ("＋４４ １６３２ ９６０１２３", C.INTERNATIONAL, "00441632960123", ""),
    ("١١٩", C.EMERGENCY, "119", ""),
    ("＊９７", C.FEATURE, "*97", ""),
]


@pytest.mark.parametrize(
    ("dialled", "number_class", "number", "carrier"),
    REFERENCE_CASES,
    ids=[f"{c[1].value}:{c[0]}" for c in REFERENCE_CASES],
)
def test_reference_site_classification(
    dialled: str, number_class: NumberClass, number: str, carrier: str
) -> None:
    result = REFERENCE.classify(dialled)
    assert (result.number_class, result.number, result.carrier_prefix) == (
        number_class,
        number,
        carrier,
    ), result.reason
    assert result.dialled == dialled
    assert result.is_emergency is (number_class is C.EMERGENCY)


# (dialled, class, normalised number) on sites with an outside-line access code
ACCESS_0_CASES: list[tuple[str, NumberClass, str]] = [
    ("0110", C.EMERGENCY, "110"),
    ("110", C.EMERGENCY, "110"),
    ("0 119", C.EMERGENCY, "119"),
    ("012110", C.EMERGENCY, "12110"),
    ("2001", C.INTERNAL, "2001"),
    ("9001", C.INTERNAL, "9001"),
    ("095588", C.SERVICE, "95588"),
    ("010086", C.SERVICE, "10086"),
    ("016812345678", C.PREMIUM, "16812345678"),
    ("09123456", C.PREMIUM, "9123456"),
    ("021234567", C.LOCAL, "21234567"),
    ("002112345678", C.LOCAL, "02112345678"),
    ("013800138000", C.MOBILE, "13800138000"),
    ("0013800138000", C.MOBILE, "013800138000"),
    ("001087654321", C.DOMESTIC_LD, "01087654321"),
    ("0 17909 01087654321", C.DOMESTIC_LD, "01087654321"),
    ("000441632960123", C.INTERNATIONAL, "00441632960123"),
    ("0 17951 00441632960123", C.INTERNATIONAL, "00441632960123"),
    ("00085223456789", C.HK_MACAU, "0085223456789"),
    ("000886223456789", C.TAIWAN, "00886223456789"),
    ("0008613800138000", C.MOBILE, "013800138000"),
]

ACCESS_9_CASES: list[tuple[str, NumberClass, str]] = [
    ("9110", C.EMERGENCY, "110"),
    ("110", C.EMERGENCY, "110"),
    ("9 120", C.EMERGENCY, "120"),
    ("2001", C.INTERNAL, "2001"),
    ("3001", C.INTERNAL, "3001"),
    ("995588", C.SERVICE, "95588"),
    ("996688", C.SERVICE, "96688"),
    ("910086", C.SERVICE, "10086"),
    ("916812345678", C.PREMIUM, "16812345678"),
    ("99123456", C.PREMIUM, "9123456"),
    ("921234567", C.LOCAL, "21234567"),
    ("902112345678", C.LOCAL, "02112345678"),
    ("913800138000", C.MOBILE, "13800138000"),
    ("901087654321", C.DOMESTIC_LD, "01087654321"),
    ("9 17909 01087654321", C.DOMESTIC_LD, "01087654321"),
    ("900441632960123", C.INTERNATIONAL, "00441632960123"),
    ("90085328123456", C.HK_MACAU, "0085328123456"),
    ("9110#", C.EMERGENCY, "110"),
    # the access code before a * reaches the carrier's service codes, not the PBX's
    ("9*72", C.INVALID, ""),
]


@pytest.mark.parametrize(
    ("dialled", "number_class", "number"), ACCESS_0_CASES, ids=[c[0] for c in ACCESS_0_CASES]
)
def test_access_code_0_is_stripped_once(
    dialled: str, number_class: NumberClass, number: str
) -> None:
    result = ACCESS_0.classify(dialled)
    assert (result.number_class, result.number) == (number_class, number), result.reason


@pytest.mark.parametrize(
    ("dialled", "number_class", "number"), ACCESS_9_CASES, ids=[c[0] for c in ACCESS_9_CASES]
)
def test_access_code_9_is_stripped_once(
    dialled: str, number_class: NumberClass, number: str
) -> None:
    result = ACCESS_9.classify(dialled)
    assert (result.number_class, result.number) == (number_class, number), result.reason


def test_trunk_dial_string_keeps_its_leading_digit() -> None:
    """A dial string the dialplan already stripped must not lose another 0."""
    assert ACCESS_0.classify("01087654321", with_access_code=False).number_class is (C.DOMESTIC_LD)
    assert ACCESS_0.classify("01087654321").number_class is not C.DOMESTIC_LD
    assert ACCESS_9.classify("95588", with_access_code=False).number_class is C.SERVICE


@pytest.mark.parametrize(
    ("dialled", "reason_part"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("- ( ) .", "empty"),
        ("abc", "'a'"),
        ("2001x", "'x'"),
        ("138OO138OOO", "'O'"),
        ("sip:2001@pbx.example", "URI"),
        ("SIP:2001@pbx.example", "URI"),
        ("sips:2001@pbx.example", "URI"),
        ("2001@pbx.example", "URI"),
        ("tel:+8613800138000", "URI"),
        ("12+34", "'+'"),
        ("0044+1632", "'+'"),
        ("++441632960123", "'+'"),
        ("１３８００１３８ＯＯＯ", "'O'"),
        ("*72*2001#", "feature codes"),
        ("#", "empty"),
    ],
)
def test_rejects_what_is_not_a_dialable_number(dialled: str, reason_part: str) -> None:
    result = REFERENCE.classify(dialled)
    assert result.number_class is C.INVALID
    assert result.number == ""
    assert reason_part in result.reason


def test_a_lone_plus_is_rejected_with_a_meaningful_reason() -> None:
    result = REFERENCE.classify("+")
    assert result.number_class is C.INVALID
    assert "?" not in result.reason
    assert "empty" in result.reason or "'+'" in result.reason


@pytest.mark.parametrize(
    ("dialled", "reason_part"),
    [
        ("1380013800", "11 digits"),
        ("138001380001", "11 digits"),
        ("234567", "7/8 digits"),
        ("234567890", "7/8 digits"),
        ("021123456789", "7/8 digits"),
        ("0108765432100", "10 to 12"),
        ("0044", "after 00"),
        ("1", "no number pattern"),
    ],
)
def test_wrong_length_for_the_class_is_invalid_with_a_reason(
    dialled: str, reason_part: str
) -> None:
    result = REFERENCE.classify(dialled)
    assert result.number_class is C.INVALID
    assert reason_part in result.reason


def test_non_string_input_is_invalid_not_an_exception() -> None:
    result = REFERENCE.classify(12345)  # type: ignore[arg-type]
    assert result.number_class is C.INVALID


def test_classify_number_compiles_the_plan() -> None:
    plan = site_plan("", "2000-2999")
    assert classify_number("00441632960123", plan).number_class is C.INTERNATIONAL
    assert classify_number("2001", plan).number_class is C.INTERNAL


def test_long_distance_classes() -> None:
    assert {C.DOMESTIC_LD, C.HK_MACAU, C.TAIWAN, C.INTERNATIONAL} == LONG_DISTANCE_CLASSES


def test_local_area_code_is_accepted_with_or_without_trunk_zero() -> None:
    assert NumberingPlan(local_area_code="021").local_area_code == "21"
    assert NumberingPlan(local_area_code="21").local_area_code == "21"
    beijing = NumberClassifier.compile(NumberingPlan(local_area_code="010"))
    assert beijing.classify("01087654321").number_class is C.LOCAL
    assert beijing.classify("02112345678").number_class is C.DOMESTIC_LD


@pytest.mark.parametrize(
    ("digits", "expected"),
    [
        ("16812345678", ("168", C.PREMIUM)),
        ("16012345678", ("160", C.PREMIUM)),
        ("16612345678", ("16", C.MOBILE)),
        ("95588", ("95", C.SERVICE)),
        ("9123", ("9", C.PREMIUM)),
        ("10086", ("10086", C.SERVICE)),
        ("0085223456789", ("00852", C.HK_MACAU)),
        ("00886223456789", ("00886", C.TAIWAN)),
        ("00441632960123", ("00", C.INTERNATIONAL)),
        ("02112345678", ("021", C.LOCAL)),
        ("01087654321", ("0", C.DOMESTIC_LD)),
        ("013800138000", ("013", C.MOBILE)),
        ("21234567", ("2", C.LOCAL)),
    ],
)
def test_lookup_returns_the_longest_prefix(digits: str, expected: tuple[str, NumberClass]) -> None:
    found = REFERENCE.lookup(digits)
    assert found is not None
    assert (found[0], found[1]) == expected


@pytest.mark.parametrize("digits", ["", "1", "11", "12", "10"])
def test_lookup_finds_nothing(digits: str) -> None:
    assert REFERENCE.lookup(digits) is None


def test_service_wins_over_premium_for_the_same_prefix() -> None:
    plan = NumberingPlan(service=("9501",), premium=("9501", "9"))
    classifier = NumberClassifier.compile(plan)
    assert classifier.classify("95012345").number_class is C.SERVICE
    assert classifier.classify("95022345").number_class is C.PREMIUM


@pytest.mark.parametrize(
    ("text", "first", "last"), [("2000-2999", "2000", "2999"), ("8000", "8000", "8000")]
)
def test_extension_range_parses(text: str, first: str, last: str) -> None:
    extension_range = ExtensionRange.parse(text)
    assert (extension_range.first, extension_range.last) == (first, last)
    assert first in extension_range
    assert last in extension_range


@pytest.mark.parametrize("text", ["", "abc", "2000-", "2999-2000", "200-2999", "2000-2999-3"])
def test_extension_range_rejects(text: str) -> None:
    with pytest.raises(PolicyError):
        ExtensionRange.parse(text)


def test_extension_range_membership_needs_equal_length() -> None:
    extension_range = ExtensionRange.parse("2000-2999")
    assert "20010" not in extension_range
    assert "201" not in extension_range
    assert 2001 not in extension_range


# --- properties ---------------------------------------------------------------------------

FORMATTING = " -.()\t\u00a0\u3000"
VALID_REFERENCE = [c for c in REFERENCE_CASES if c[1] is not C.INVALID]


@st.composite
def formatted(draw: st.DrawFn, text: str) -> str:
    """Insert formatting characters anywhere in ``text``."""
    inserts = draw(st.lists(st.tuples(st.integers(0, 40), st.sampled_from(FORMATTING)), max_size=8))
    chars = list(text)
    for position, char in inserts:
        chars.insert(position % (len(chars) + 1), char)
    return "".join(chars)


@given(st.data(), st.sampled_from(VALID_REFERENCE))
def test_formatting_never_changes_the_class(
    data: st.DataObject, case: tuple[str, NumberClass, str, str]
) -> None:
    dialled, number_class, number, _ = case
    text = data.draw(formatted(dialled))
    result = REFERENCE.classify(text)
    assert (result.number_class, result.number) == (number_class, number)


@given(st.data(), st.sampled_from(ACCESS_0_CASES + ACCESS_9_CASES))
def test_formatting_never_changes_the_class_with_access_codes(
    data: st.DataObject, case: tuple[str, NumberClass, str]
) -> None:
    dialled, number_class, _ = case
    classifier = ACCESS_0 if case in ACCESS_0_CASES else ACCESS_9
    assert classifier.classify(data.draw(formatted(dialled))).number_class is number_class


@given(st.text())
def test_classify_never_raises(text: str) -> None:
    for classifier in (REFERENCE, ACCESS_0, ACCESS_9):
        result = classifier.classify(text)
        assert isinstance(result, Classification)
        assert result.number_class in set(NumberClass)
        assert result.dialled == text
        if result.number_class is C.INVALID:
            assert result.reason


@given(st.text(alphabet="0123456789+*# -()@:sipabcx", max_size=30), st.booleans())
def test_classify_never_raises_on_dial_like_text(text: str, with_access_code: bool) -> None:
    for classifier in (REFERENCE, ACCESS_0, ACCESS_9):
        result = classifier.classify(text, with_access_code=with_access_code)
        assert result.number_class in set(NumberClass)


_digits = st.text(alphabet="0123456789", max_size=4)


@given(
    st.sets(_digits.map(lambda s: "9" + s), max_size=6),
    st.sets(_digits.map(lambda s: "9" + s), max_size=6),
    st.text(alphabet="0123456789", min_size=0, max_size=12).map(lambda s: "9" + s),
)
def test_longest_matching_prefix_decides(service: set[str], premium: set[str], digits: str) -> None:
    """9-headed prefixes only come from the site's service and premium lists."""
    premium -= service
    classifier = NumberClassifier.compile(
        NumberingPlan(service=tuple(sorted(service)), premium=tuple(sorted(premium)))
    )
    matching = [p for p in service | premium if digits.startswith(p)]
    found = classifier.lookup(digits)
    if not matching:
        assert found is None
        return
    longest = max(matching, key=len)
    assert found is not None
    assert found[0] == longest
    assert found[1] is (C.SERVICE if longest in service else C.PREMIUM)


@given(
    st.data(),
    st.sampled_from(EMERGENCY),
    st.text(alphabet="0123456789", max_size=2),
    st.sampled_from(["", "17909", "17911", "17951", "12593", "17968", "10193"]),
    st.booleans(),
)
def test_emergency_numbers_stay_emergency(
    data: st.DataObject, number: str, access_code: str, carrier: str, dial_access: bool
) -> None:
    """Dialled bare, or through the outside line (optionally with an IP-dialling prefix)."""
    plan = site_plan(access_code, "2000-2999", "8000-8999")
    dialled = access_code + carrier + number if dial_access else number
    # An access code that turns the number into a site extension rings that extension.
    assume(not plan.is_extension(dialled))
    classifier = NumberClassifier.compile(plan)
    result = classifier.classify(data.draw(formatted(dialled)))
    assert result.number_class is C.EMERGENCY
    assert result.is_emergency


def test_a_nul_shown_as_its_symbol_is_not_a_digit() -> None:
    result = REFERENCE.classify("0044\u24001632960123")
    assert result.number_class is NumberClass.INVALID
