"""Countries by calling code: which country an international number reaches, and its name.

A `CountryBook` is built by an adapter from a maintained library's metadata (phonenumbers),
as `HolidayTable` is for public holidays, so this module never imports one. Numbers come in
normalised by the classifier: an international number is ``00`` followed by the calling code
and the national number (``00441632960123``). Calling codes are prefix-free (ITU-T E.164), so
at most one code of one, two or three digits matches a number.

A code shared by several regions (+1 for the NANP countries, +7 for Russia and Kazakhstan) is
named after its main region; lists and reports go by calling code, never by region.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

INTERNATIONAL_PREFIX = "00"


@dataclass(frozen=True, slots=True)
class Country:
    """A calling code with the regions it serves and its main region's name.

    Attributes:
        code: the calling code, digits only ("44").
        regions: ISO 3166 region codes served by it, main region first ("GB", "GG", ...).
        name_zh: the main region's name in Chinese ("英国").
        name_en: the main region's name in English ("United Kingdom").
    """

    code: str
    regions: tuple[str, ...] = ()
    name_zh: str = ""
    name_en: str = ""

    @property
    def label(self) -> tuple[str, str]:
        """Return the Chinese and English names with the code (``英国 +44``)."""
        zh = self.name_zh or self.name_en or "未知国家"
        en = self.name_en or "unknown country"
        return f"{zh}（+{self.code}）", f"{en} (+{self.code})"


@dataclass(frozen=True, slots=True)
class CountryBook:
    """Calling codes and their countries, for country lists, reasons and reports."""

    countries: Mapping[str, Country] = field(default_factory=dict)

    @classmethod
    def of(cls, countries: Iterable[Country]) -> CountryBook:
        """Return a book holding ``countries``."""
        return cls({c.code: c for c in countries})

    def __bool__(self) -> bool:
        return bool(self.countries)

    def calling_code(self, number: str) -> str | None:
        """Return the calling code of a normalised international number, if the book knows it.

        Args:
            number: a normalised number (``00`` and the international number).

        Returns:
            The code's digits, or None when the number is not international or its code is not
            in the book.
        """
        if not number.startswith(INTERNATIONAL_PREFIX):
            return None
        digits = number[len(INTERNATIONAL_PREFIX) :]
        for length in (1, 2, 3):
            code = digits[:length]
            if len(code) == length and code in self.countries:
                return code
        return None

    def country(self, code: str) -> Country:
        """Return the country of a calling code (a nameless one when the book lacks it)."""
        return self.countries.get(code) or Country(code)

    def label(self, code: str) -> tuple[str, str]:
        """Return the Chinese and English label of a calling code (``英国（+44）``)."""
        return self.country(code).label


def normalise_calling_code(text: str) -> str:
    """Return a calling code as digits: ``+44``, ``0044`` and ``44`` are all ``44``.

    Raises:
        ValueError: not one to three digits once the ``+`` or ``00`` is removed.
    """
    code = text.strip()
    if code.startswith("+"):
        code = code[1:]
    elif code.startswith(INTERNATIONAL_PREFIX):
        code = code[len(INTERNATIONAL_PREFIX) :]
    if not code.isascii() or not code.isdigit() or not 1 <= len(code) <= 3 or code[0] == "0":
        raise ValueError(f"{text!r} is not a calling code (+44, 49, +1)")
    return code
