"""Countries by calling code, from phonenumbers' metadata (libphonenumber, maintained by Google).

The book is built once per process and only when something needs it (a policy with country
lists, the costs report): importing phonenumbers' geocoding data takes a few hundred
milliseconds that ``pbxguard check`` should not pay otherwise.

Names come from the library's locale data (``geodata.locale.LOCALE_DATA``: region code to
names by language).
An entry ``*xx`` there means "see the name in language xx", which is followed once. Codes
without a region (``001``: international freephone, satellite networks) get a plain label.
"""

from __future__ import annotations

from functools import cache

from pbxguard.domain.countries import Country, CountryBook

_NON_GEOGRAPHIC = "001"
_NON_GEOGRAPHIC_NAMES = ("国际业务号码", "international service numbers")


def _name(locale: dict[str, str], lang: str) -> str:
    name = locale.get(lang, "")
    if name.startswith("*"):
        name = locale.get(name[1:], "")
    return name


@cache
def country_book() -> CountryBook:
    """Return every calling code phonenumbers knows, with its main region's names."""
    import phonenumbers  # noqa: PLC0415 - slow to import; only some commands need it
    from phonenumbers.geodata.locale import LOCALE_DATA  # noqa: PLC0415

    countries = []
    for code, regions in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items():
        main = regions[0]
        if main == _NON_GEOGRAPHIC:
            zh, en = _NON_GEOGRAPHIC_NAMES
        else:
            locale = LOCALE_DATA.get(main, {})
            en = _name(locale, "en") or main
            zh = _name(locale, "zh") or en
        countries.append(Country(str(code), tuple(regions), zh, en))
    return CountryBook.of(countries)
