"""Normalise and classify dialled numbers (REGULATIONS.md §1).

Theory of operation
-------------------
A dialled string goes through three steps:

1. **Clean-up.** Formatting characters (spaces, ``-``, ``.``, parentheses) are dropped, so
   ``021-1234 5678`` and ``02112345678`` are the same number. Anything that is not a dialable
   string is rejected with a reason: empty input, letters, SIP URIs. Strings made of digits with
   ``*`` or ``#`` are feature codes (``*72``), a class of their own.
2. **Normalisation.** Exact emergency numbers and extensions are recognised first, before any
   prefix is stripped, so that no stripping can ever turn ``110`` into something else. Then the
   site's outside-line access code is stripped once, then a carrier IP-dialling prefix (17909,
   17951, ...), and ``+`` becomes ``00``. ``0086`` (China's own country code) is folded back to a
   domestic number.
3. **Classification** by a longest-prefix table compiled once per policy load: the table holds
   every prefix the site declares (service, premium, mobile, international, area codes); the
   longest prefix that matches decides. A few shapes (mobile, long distance) then check length.

Everything here is pure and total: `classify_number` never raises for any input string.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pbxguard.errors import PolicyError


class NumberClass(enum.StrEnum):
    """What a dialled number is, for the regulations."""

    EMERGENCY = "emergency"
    INTERNAL = "internal"
    SERVICE = "service"
    LOCAL = "local"
    MOBILE = "mobile"
    DOMESTIC_LD = "domestic_ld"
    HK_MACAU = "hk_macau"
    TAIWAN = "taiwan"
    INTERNATIONAL = "international"
    PREMIUM = "premium"
    FEATURE = "feature"
    INVALID = "invalid"


#: Classes that cost money and need a permission under LD-1/LD-2.
LONG_DISTANCE_CLASSES = frozenset(
    {
        NumberClass.DOMESTIC_LD,
        NumberClass.HK_MACAU,
        NumberClass.TAIWAN,
        NumberClass.INTERNATIONAL,
    }
)

_FORMATTING = str.maketrans("", "", " -.()\t\u00a0\u3000")
_DIGITS = re.compile(r"[0-9]+")
_FEATURE = re.compile(r"[0-9*#]*[*#][0-9*#]*")
_EXTENSION_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


@dataclass(frozen=True, slots=True)
class ExtensionRange:
    """An inclusive range of internal extensions with the same number of digits."""

    first: str
    last: str

    def __contains__(self, digits: object) -> bool:
        return (
            isinstance(digits, str)
            and len(digits) == len(self.first)
            and self.first <= digits <= self.last
        )

    @classmethod
    def parse(cls, text: str) -> ExtensionRange:
        """Parse ``2000-2999`` or a single ``8000``.

        Raises:
            PolicyError: the text is not a range of equally long digit strings.
        """
        match = _EXTENSION_RANGE.match(text.strip())
        if match is None:
            raise PolicyError(f"extension range {text!r} is not DIGITS or DIGITS-DIGITS")
        first, last = match.group(1), match.group(2) or match.group(1)
        if len(first) != len(last) or first > last:
            raise PolicyError(
                f"extension range {text!r} must run from low to high with equally long ends"
            )
        return cls(first, last)


@dataclass(frozen=True, slots=True)
class NumberingPlan:
    """The site's numbering settings; every value is site configuration (REGULATIONS.md §1).

    Attributes:
        access_code: outside-line access code dialled before external numbers ("" for none).
        local_area_code: the site's own area code without the trunk 0, e.g. "21" or "021".
        extensions: internal extension ranges.
        carrier_prefixes: IP-dialling prefixes stripped before classification.
        emergency: exact emergency numbers (plus site security extensions).
        service: prefixes of legitimate service numbers (95xxx, 10086, 12345 ...).
        premium: prefixes of premium-rate numbers (168, 160, 9-headed site list).
        mobile_prefixes: mobile prefixes (13..19 by default).
        local_first_digits: first digits of local subscriber numbers dialled without area code.
        local_lengths: allowed lengths of local subscriber numbers.
        hk_macau: country codes classed as Hong Kong/Macau.
        taiwan: country codes classed as Taiwan (a site decision; default like hk_macau).
        domestic_country_code: China's own country code, folded back to a domestic number.
    """

    access_code: str = ""
    local_area_code: str = "21"
    extensions: tuple[ExtensionRange, ...] = ()
    carrier_prefixes: tuple[str, ...] = ("17909", "17911", "17951", "12593", "17968", "10193")
    emergency: frozenset[str] = frozenset({"110", "119", "120", "122", "112", "12110"})
    service: tuple[str, ...] = ("95", "96", "10000", "10010", "10086", "12345", "12315")
    premium: tuple[str, ...] = ("168", "160")
    mobile_prefixes: tuple[str, ...] = ("13", "14", "15", "16", "17", "18", "19")
    local_first_digits: str = "2345678"
    local_lengths: frozenset[int] = frozenset({7, 8})
    hk_macau: tuple[str, ...] = ("852", "853")
    taiwan: tuple[str, ...] = ("886",)
    domestic_country_code: str = "86"

    _extension_lengths: frozenset[int] = field(default=frozenset(), repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "local_area_code", self.local_area_code.lstrip("0"))
        lengths = frozenset(len(r.first) for r in self.extensions)
        object.__setattr__(self, "_extension_lengths", lengths)

    def is_extension(self, digits: str) -> bool:
        """Tell whether ``digits`` is one of the site's internal extensions."""
        # Most dialled numbers are longer than any extension: answer those at once.
        if len(digits) not in self._extension_lengths:
            return False
        return any(digits in r for r in self.extensions)


@dataclass(frozen=True, slots=True)
class Classification:
    """The result of classifying one dialled string.

    Attributes:
        dialled: the string as it was dialled.
        number: the normalised number that was classified ("" when invalid).
        number_class: the class.
        reason: for ``invalid``, why; otherwise a short note on how the class was found.
        carrier_prefix: the IP-dialling prefix that was stripped, if any.
    """

    dialled: str
    number: str
    number_class: NumberClass
    reason: str = ""
    carrier_prefix: str = ""

    @property
    def is_emergency(self) -> bool:
        """Tell whether the number is an emergency number."""
        return self.number_class is NumberClass.EMERGENCY


@dataclass(frozen=True, slots=True)
class _Entry:
    number_class: NumberClass
    note: str


@dataclass(frozen=True, slots=True)
class NumberClassifier:
    """A longest-prefix table compiled once from a `NumberingPlan`."""

    plan: NumberingPlan
    _table: Mapping[str, _Entry] = field(repr=False)
    _lengths: tuple[int, ...] = field(repr=False)

    @classmethod
    def compile(cls, plan: NumberingPlan) -> NumberClassifier:
        """Build the prefix table for ``plan``.

        Later entries of equal prefix override earlier ones in this order: mobile, local area,
        premium, service, Hong Kong/Macau, Taiwan. Service therefore wins over premium for the
        same prefix, and a longer prefix always wins over a shorter one.
        """
        table: dict[str, _Entry] = {}

        def put(prefixes: Iterable[str], number_class: NumberClass, note: str) -> None:
            for prefix in prefixes:
                table[prefix] = _Entry(number_class, note)

        put(plan.mobile_prefixes, NumberClass.MOBILE, "mobile prefix")
        put(plan.local_first_digits, NumberClass.LOCAL, "local subscriber number")
        put(("0",), NumberClass.DOMESTIC_LD, "trunk prefix 0 with another area code")
        put(("0" + p for p in plan.mobile_prefixes), NumberClass.MOBILE, "mobile with trunk 0")
        put(("0" + plan.local_area_code,), NumberClass.LOCAL, "local area code")
        put(("00",), NumberClass.INTERNATIONAL, "international prefix 00")
        put(plan.premium, NumberClass.PREMIUM, "premium-rate prefix")
        put(plan.service, NumberClass.SERVICE, "service number")
        put(("00" + c for c in plan.hk_macau), NumberClass.HK_MACAU, "Hong Kong/Macau code")
        put(("00" + c for c in plan.taiwan), NumberClass.TAIWAN, "Taiwan code")
        lengths = tuple(sorted({len(p) for p in table}, reverse=True))
        return cls(plan, table, lengths)

    def lookup(self, digits: str) -> tuple[str, NumberClass, str] | None:
        """Return the longest matching prefix with its class and note, if any."""
        table = self._table
        for length in self._lengths:
            if length <= len(digits):
                entry = table.get(digits[:length])
                if entry is not None:
                    return digits[:length], entry.number_class, entry.note
        return None

    def classify(self, dialled: str, *, with_access_code: bool = True) -> Classification:
        """Classify one dialled string.

        Args:
            dialled: the string as the caller dialled it (AMI ``Exten``, AGI argument, ...).
            with_access_code: whether the string may still carry the outside-line access code
                (true for what a phone dialled; false for a trunk dial string that the dialplan
                already stripped).

        Returns:
            The classification; never raises.
        """
        if not isinstance(dialled, str):
            return Classification(str(dialled), "", NumberClass.INVALID, "not a string")
        cleaned = dialled.translate(_FORMATTING)
        if not cleaned:
            return Classification(dialled, "", NumberClass.INVALID, "empty number")
        if cleaned.lower().startswith(("sip:", "sips:", "tel:")) or "@" in cleaned:
            return Classification(dialled, "", NumberClass.INVALID, "a SIP URI, not a number")
        if ("*" in cleaned or "#" in cleaned) and _FEATURE.fullmatch(cleaned):
            return Classification(dialled, cleaned, NumberClass.FEATURE, "feature code")
        international = cleaned.startswith("+")
        digits = cleaned[1:] if international else cleaned
        if not _DIGITS.fullmatch(digits):
            bad = next((c for c in digits if c not in "0123456789"), None)
            reason = f"not dialable: contains {bad!r}" if bad else "empty number after '+'"
            return Classification(dialled, "", NumberClass.INVALID, reason)
        if international:
            digits = "00" + digits
        return self._classify_digits(dialled, digits, with_access_code=with_access_code)

    def _classify_digits(
        self, dialled: str, digits: str, *, with_access_code: bool
    ) -> Classification:
        plan = self.plan
        if digits in plan.emergency:
            return Classification(dialled, digits, NumberClass.EMERGENCY, "emergency number")
        if plan.is_extension(digits):
            return Classification(dialled, digits, NumberClass.INTERNAL, "extension")
        if with_access_code and plan.access_code and digits.startswith(plan.access_code):
            digits = digits[len(plan.access_code) :]
            if digits in plan.emergency:
                return Classification(dialled, digits, NumberClass.EMERGENCY, "emergency number")
        carrier = ""
        whole_mobile = len(digits) == 11 and digits.startswith(plan.mobile_prefixes)
        via_carrier = not whole_mobile and digits.startswith(plan.carrier_prefixes)
        for prefix in plan.carrier_prefixes if via_carrier else ():
            if digits.startswith(prefix) and len(digits) > len(prefix) + 2:
                carrier, digits = prefix, digits[len(prefix) :]
                break
        if digits.startswith("00" + plan.domestic_country_code):
            digits = "0" + digits[2 + len(plan.domestic_country_code) :]
        if digits in plan.emergency:
            return Classification(
                dialled, digits, NumberClass.EMERGENCY, "emergency number", carrier
            )
        found = self.lookup(digits)
        if found is None:
            return Classification(
                dialled, digits, NumberClass.INVALID, "matches no number pattern", carrier
            )
        prefix, number_class, note = found
        problem = _length_problem(number_class, prefix, digits, plan)
        if problem:
            return Classification(dialled, digits, NumberClass.INVALID, problem, carrier)
        return Classification(dialled, digits, number_class, note, carrier)


def _length_problem(
    number_class: NumberClass, prefix: str, digits: str, plan: NumberingPlan
) -> str:
    """Return why ``digits`` has the wrong length for its class, or ""."""
    size = len(digits)
    if number_class is NumberClass.MOBILE:
        subscriber = digits[1:] if digits.startswith("0") else digits
        return "" if len(subscriber) == 11 else "a mobile number has 11 digits"
    if number_class is NumberClass.LOCAL:
        subscriber = digits[len(prefix) :] if prefix.startswith("0") else digits
        if len(subscriber) in plan.local_lengths:
            return ""
        return f"a local number has {'/'.join(map(str, sorted(plan.local_lengths)))} digits"
    if number_class is NumberClass.DOMESTIC_LD:
        return "" if 10 <= size <= 12 else "a long-distance number has 10 to 12 digits"
    if number_class in (NumberClass.INTERNATIONAL, NumberClass.HK_MACAU, NumberClass.TAIWAN):
        return "" if 7 <= size <= 19 else "an international number has 5 to 17 digits after 00"
    return ""


def classify_number(dialled: str, plan: NumberingPlan) -> Classification:
    """Classify ``dialled`` under ``plan`` (compiles the table; prefer `NumberClassifier`)."""
    return NumberClassifier.compile(plan).classify(dialled)
