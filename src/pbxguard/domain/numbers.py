"""Normalise and classify dialled numbers (REGULATIONS.md §1).

Theory of operation
-------------------
A dialled string goes through four steps:

1. **Clean-up.** Unicode is folded first (NFKC, then every Unicode decimal digit to its ASCII
   digit), so full-width ``１１０``, Arabic-Indic ``١١٠`` and ``＋``/``＊``/``＃`` read as what
   they are. Formatting characters are dropped: spaces of every kind, dashes, ``.``,
   parentheses, and invisible characters (zero-width spaces and joiners, the byte-order mark,
   soft hyphens, bidirectional marks and controls), so ``021-1234 5678``, ``02112345678`` and
   ``0２1 1234\u200b5678`` are the same number. What is left must be digits, ``+`` (first
   place only), ``*`` and ``#``; anything else (letters, SIP URIs, pause characters, control
   characters) is rejected with a reason in Chinese and English, as is a string that is empty
   or too long.
2. **Dialling symbols.** A string matching one of the site's feature-code patterns (``*97``,
   ``**XXXX``, see `FeatureCode`) is a feature code. Otherwise a ``#`` at the very end only
   ends dialling, as a phone's send key does: it is dropped and the rest is classified. Any
   other ``*`` or ``#`` makes the string undialable: carriers and gateways drop or act on
   these symbols in ways pbxguard cannot know, so ``0044*1632960123`` or
   ``00441632960123##`` might still reach the number it hides.
3. **Normalisation.** Exact emergency numbers and extensions are recognised first, before any
   prefix is stripped, so that no stripping can ever turn ``110`` into something else. Then the
   site's outside-line access code is stripped once, then a carrier IP-dialling prefix (17909,
   17951, ...), and ``+`` becomes ``00``. ``0086`` (China's own country code) is folded back to a
   domestic number.
4. **Classification** by a longest-prefix table compiled once per policy load: the table holds
   every prefix the site declares (service, premium, mobile, international, area codes); the
   longest prefix that matches decides. A few shapes (mobile, long distance) then check length.

Everything here is pure and total: `classify_number` never raises for any input string.
"""

from __future__ import annotations

import enum
import re
import unicodedata
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

#: Strings longer than this (as received, formatting included) are not looked at further.
MAX_DIALLED_CHARS = 256
#: The most digits and dialling symbols a number may have once formatting is removed: the
#: longest legitimate string (access code, IP-dialling prefix, 00, a 15-digit E.164 number)
#: has 24.
MAX_NUMBER_LENGTH = 32

_ASCII_FORMATTING = str.maketrans("", "", " -.()\t")
# Invisible characters that a copy from a chat, a web page or a spreadsheet leaves inside a
# number: soft hyphen, zero-width space/non-joiner/joiner, word joiner, byte-order mark, and
# the bidirectional marks, embeddings, overrides and isolates. Dropped like spaces.
_INVISIBLE = frozenset(
    "\u00ad\u200b\u200c\u200d\u2060\ufeff"
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
_MINUS_SIGN = "\u2212"
_DIALABLE = re.compile(r"[0-9+*#]+")
_DIGITS = re.compile(r"[0-9]+")
_PAUSES = frozenset("pPwW,;")
_EXTENSION_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")
_FEATURE_POSITIONS = 20


def _without_formatting(text: str) -> str:
    """Fold Unicode digits and symbols to ASCII and drop formatting characters."""
    if text.isascii():
        return text.translate(_ASCII_FORMATTING)
    kept: list[str] = []
    for char in unicodedata.normalize("NFKC", text):
        if char.isascii():
            kept.append(char)
        elif char.isdecimal():
            # NFKC leaves most scripts' digits alone (Arabic-Indic, Devanagari, ...).
            kept.append(str(unicodedata.decimal(char)))
        elif (
            char in _INVISIBLE or char == _MINUS_SIGN or unicodedata.category(char) in ("Zs", "Pd")
        ):
            continue
        else:
            kept.append(char)
    return "".join(kept).translate(_ASCII_FORMATTING)


def _undialable(cleaned: str) -> tuple[str, str]:
    """Return why ``cleaned`` (not only digits, + and dialling symbols) cannot be dialled."""
    bad = next(c for c in cleaned if c not in "0123456789+*#")
    if bad in _PAUSES:
        return (
            f"pause and wait characters (p, w, ',') are not dialable: contains {bad!r}",
            f"暂停/等待符（p、w、逗号）不能拨打：含 {bad!r}",
        )
    if unicodedata.category(bad) in ("Cc", "Cf", "Cs", "Co", "Cn"):
        code = f"U+{ord(bad):04X}"
        return (
            f"not dialable: contains the control or unassigned character {code}",
            f"含控制字符或未定义字符 {code}，不能拨打",
        )
    return f"not dialable: contains {bad!r}", f"含不能拨打的字符 {bad!r}"


@dataclass(frozen=True, slots=True)
class FeatureCode:
    """One of the site's feature codes, as a fixed-length Asterisk-style pattern.

    The pattern starts with ``*`` or ``#`` (after an optional leading ``_``, as in
    extensions.conf) and holds digits, ``*``, ``#``, ``X`` (any digit), ``Z`` (1-9), ``N``
    (2-9) and ``[...]`` (the digits and ranges listed, ``[13-5]``). ``.`` and ``!`` are refused:
    they match anything after the code, so ``*72.`` would let ``*7200441632960123`` through.

    Attributes:
        pattern: the pattern as written in the policy.
        regex: the equivalent regular expression (matched against the whole string).
    """

    pattern: str
    regex: str

    @classmethod
    def parse(cls, text: str) -> FeatureCode:
        """Parse a pattern such as ``*97``, ``*8``, ``**XXXX`` or ``_*9[78]``.

        Raises:
            PolicyError: the text is not a feature-code pattern; the message says why.
        """
        body = text.strip()
        body = body.removeprefix("_")
        if not body:
            raise PolicyError(f"feature code {text!r} is empty")
        if body[0] not in "*#":
            raise PolicyError(
                f"feature code {text!r} must start with * or #: a pattern of digits would "
                "turn ordinary numbers into feature codes"
            )
        parts: list[str] = []
        index = 0
        while index < len(body):
            char = body[index]
            if char in "0123456789":
                parts.append(char)
            elif char in "*#":
                parts.append(re.escape(char))
            elif char in "Xx":
                parts.append("[0-9]")
            elif char in "Zz":
                parts.append("[1-9]")
            elif char in "Nn":
                parts.append("[2-9]")
            elif char == "[":
                end = body.find("]", index)
                if end < 0:
                    raise PolicyError(f"feature code {text!r}: '[' without a closing ']'")
                parts.append(_digit_class(text, body[index + 1 : end]))
                index = end
            elif char in ".!":
                raise PolicyError(
                    f"feature code {text!r}: {char!r} would match any digits after the code; "
                    "a feature code has a fixed length (list each form, e.g. *72 and *72XXXX)"
                )
            else:
                raise PolicyError(
                    f"feature code {text!r}: unexpected {char!r} at position {index + 1}; "
                    "use digits, *, #, X, Z, N and [...]"
                )
            index += 1
        if len(parts) > _FEATURE_POSITIONS:
            raise PolicyError(
                f"feature code {text!r} is longer than {_FEATURE_POSITIONS} positions"
            )
        return cls(text, "".join(parts))

    def matches(self, dialled: str) -> bool:
        """Tell whether ``dialled`` (already cleaned of formatting) is this feature code."""
        return re.fullmatch(self.regex, dialled) is not None


def _digit_class(text: str, inside: str) -> str:
    """Return the regex class for the ``[...]`` part ``inside`` of feature code ``text``."""
    if not inside:
        raise PolicyError(f"feature code {text!r}: '[]' lists no digit")
    index = 0
    while index < len(inside):
        char = inside[index]
        if char not in "0123456789":
            raise PolicyError(
                f"feature code {text!r}: '[...]' may hold only digits and ranges such as 1-5, "
                f"not {char!r}"
            )
        if index + 1 < len(inside) and inside[index + 1] == "-":
            if index + 2 >= len(inside) or inside[index + 2] not in "0123456789":
                raise PolicyError(f"feature code {text!r}: unfinished range in '[{inside}]'")
            if inside[index + 2] < char:
                raise PolicyError(
                    f"feature code {text!r}: range {char}-{inside[index + 2]} runs backwards"
                )
            index += 3
        else:
            index += 1
    return f"[{inside}]"


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
        feature_codes: the PBX's feature codes (``*97``, ``**XXXX``); a string with ``*`` or
            ``#`` that matches none of them is not dialable (a ``#`` at the end only ends
            dialling).
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
    feature_codes: tuple[FeatureCode, ...] = ()

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
        reason_zh: for ``invalid``, why, in Chinese.
    """

    dialled: str
    number: str
    number_class: NumberClass
    reason: str = ""
    carrier_prefix: str = ""
    reason_zh: str = ""

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
    _features: re.Pattern[str] | None = field(default=None, repr=False)

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
        features = (
            re.compile("|".join(f"(?:{f.regex})" for f in plan.feature_codes))
            if plan.feature_codes
            else None
        )
        return cls(plan, table, lengths, features)

    def lookup(self, digits: str) -> tuple[str, NumberClass, str] | None:
        """Return the longest matching prefix with its class and note, if any."""
        table = self._table
        for length in self._lengths:
            if length <= len(digits):
                entry = table.get(digits[:length])
                if entry is not None:
                    return digits[:length], entry.number_class, entry.note
        return None

    def is_feature_code(self, cleaned: str) -> bool:
        """Tell whether ``cleaned`` (formatting removed) is one of the site's feature codes."""
        return self._features is not None and self._features.fullmatch(cleaned) is not None

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
            return _invalid(str(dialled), ("not a string", "不是字符串"))
        # Most dialled strings are plain digits: classify those without any clean-up.
        if dialled.isascii() and dialled.isdigit() and len(dialled) <= MAX_NUMBER_LENGTH:
            return self._classify_digits(dialled, dialled, with_access_code=with_access_code)
        if len(dialled) > MAX_DIALLED_CHARS:
            return _invalid(
                dialled,
                (
                    f"too long: more than {MAX_DIALLED_CHARS} characters",
                    f"号码过长：超过 {MAX_DIALLED_CHARS} 个字符",
                ),
            )
        cleaned = _without_formatting(dialled)
        if not cleaned:
            return _invalid(dialled, ("empty number", "空号码"))
        if cleaned.lower().startswith(("sip:", "sips:", "tel:")) or "@" in cleaned:
            return _invalid(dialled, ("a SIP URI, not a number", "SIP 地址，不是电话号码"))
        if not _DIALABLE.fullmatch(cleaned):
            return _invalid(dialled, _undialable(cleaned))
        if len(cleaned) > MAX_NUMBER_LENGTH:
            return _invalid(
                dialled,
                (
                    f"too long: more than {MAX_NUMBER_LENGTH} digits",
                    f"号码过长：超过 {MAX_NUMBER_LENGTH} 位",
                ),
            )
        if "*" in cleaned or "#" in cleaned:
            if self.is_feature_code(cleaned):
                return Classification(dialled, cleaned, NumberClass.FEATURE, "feature code")
            # A # at the very end is the phone's "send" key: it ends dialling.
            cleaned = cleaned.removesuffix("#")
            if self.is_feature_code(cleaned):
                return Classification(dialled, cleaned, NumberClass.FEATURE, "feature code")
            if not cleaned:
                return _invalid(dialled, ("empty number", "空号码"))
            if "*" in cleaned or "#" in cleaned:
                return _invalid(dialled, self._symbol_problem(cleaned, with_access_code))
        international = cleaned.startswith("+")
        digits = cleaned[1:] if international else cleaned
        if not _DIGITS.fullmatch(digits):
            if not digits:
                return _invalid(dialled, ("empty number after '+'", "'+' 后没有号码"))
            return _invalid(
                dialled,
                (
                    "not dialable: '+' is allowed only at the start",
                    "'+' 只能出现在号码开头",
                ),
            )
        if international:
            digits = "00" + digits
        return self._classify_digits(dialled, digits, with_access_code=with_access_code)

    def _symbol_problem(self, cleaned: str, with_access_code: bool) -> tuple[str, str]:
        """Say why a string with ``*`` or ``#`` that is no feature code cannot be dialled."""
        access = self.plan.access_code
        if (
            with_access_code
            and access
            and cleaned.startswith(access)
            and cleaned[len(access) : len(access) + 1] in ("*", "#")
        ):
            return (
                "'*' or '#' after the outside-line access code would reach the carrier's own "
                "service codes",
                "外线字冠后拨 '*' 或 '#' 会送往运营商的业务代码，不能拨打",
            )
        return (
            "'*' and '#' are dialable only in the site's feature codes, and '#' only at the end",
            "'*' 和 '#' 只能用于本站功能码，'#' 只能在末尾表示拨号结束",
        )

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
                dialled,
                digits,
                NumberClass.INVALID,
                "matches no number pattern",
                carrier,
                "不符合任何号码格式",
            )
        prefix, number_class, note = found
        problem = _length_problem(number_class, prefix, digits, plan)
        if problem is not None:
            return Classification(
                dialled, digits, NumberClass.INVALID, problem[0], carrier, problem[1]
            )
        return Classification(dialled, digits, number_class, note, carrier)


def _invalid(dialled: str, reason: tuple[str, str]) -> Classification:
    """Return the ``invalid`` classification of ``dialled`` with an English/Chinese reason."""
    return Classification(dialled, "", NumberClass.INVALID, reason[0], reason_zh=reason[1])


def _length_problem(
    number_class: NumberClass, prefix: str, digits: str, plan: NumberingPlan
) -> tuple[str, str] | None:
    """Return why ``digits`` has the wrong length for its class (English, Chinese), or None."""
    size = len(digits)
    if number_class is NumberClass.MOBILE:
        subscriber = digits[1:] if digits.startswith("0") else digits
        if len(subscriber) == 11:
            return None
        return "a mobile number has 11 digits", "手机号码应为 11 位"
    if number_class is NumberClass.LOCAL:
        subscriber = digits[len(prefix) :] if prefix.startswith("0") else digits
        if len(subscriber) in plan.local_lengths:
            return None
        lengths = "/".join(map(str, sorted(plan.local_lengths)))
        return f"a local number has {lengths} digits", f"本地号码应为 {lengths} 位"
    if number_class is NumberClass.DOMESTIC_LD:
        if 10 <= size <= 12:
            return None
        return "a long-distance number has 10 to 12 digits", "国内长途号码应为 10 至 12 位"
    if number_class in (NumberClass.INTERNATIONAL, NumberClass.HK_MACAU, NumberClass.TAIWAN):
        if 7 <= size <= 19:
            return None
        return (
            "an international number has 5 to 17 digits after 00",
            "国际号码在 00 之后应有 5 至 17 位",
        )
    return None


def classify_number(dialled: str, plan: NumberingPlan) -> Classification:
    """Classify ``dialled`` under ``plan`` (compiles the table; prefer `NumberClassifier`)."""
    return NumberClassifier.compile(plan).classify(dialled)
