"""The do-not-disturb list (免打扰数据库, DND-1): which numbers promotion lines may not call.

A number is looked up in one canonical form, whatever way it was dialled or written in the
site's list: a mobile as its 11 digits (``13800138000``, never ``013800138000`` or
``+8613800138000``), a fixed line with its trunk 0 and area code (``02162345678`` for
``62345678`` dialled in Shanghai), an international number with ``00`` (``00441632960123``).
Both the dialled number and every line of the imported list go through the same classifier and
`dnd_number`, so the list and the calls agree on what a number is.

A canonical number has at most 19 digits, and `encode_number` turns it into one unsigned 64-bit
integer (different numbers, different integers; leading zeros kept), which lets the adapter
keep millions of them as a sorted array of fixed-width integers and find one by binary search.

`evaluate` receives the list as a plain ``Container[str]`` of canonical numbers: a
``frozenset`` in tests, the memory-mapped file in the daemon.
"""

from __future__ import annotations

from collections.abc import Container

from pbxguard.domain.numbers import Classification, NumberClass, NumberingPlan

#: The rule a promotion line breaks by calling a listed number.
DND_RULE = "DND-1"

#: The longest canonical number (00 and a 17-digit international number).
MAX_DIGITS = 19

#: Offsets that make numbers of different lengths distinct: the first number of length n
#: encodes to the sum of 10**k for k < n.
_OFFSETS: tuple[int, ...] = tuple(int("1" * n or "0") for n in range(MAX_DIGITS + 2))

#: Classes a do-not-disturb list can hold: numbers outside the company that ring someone.
LISTABLE = frozenset(
    {
        NumberClass.LOCAL,
        NumberClass.MOBILE,
        NumberClass.DOMESTIC_LD,
        NumberClass.HK_MACAU,
        NumberClass.TAIWAN,
        NumberClass.INTERNATIONAL,
        NumberClass.SERVICE,
        NumberClass.PREMIUM,
    }
)

DoNotDisturb = Container[str]
"""A do-not-disturb list: answers whether a canonical number (`dnd_number`) is on it."""


def dnd_number(classification: Classification, plan: NumberingPlan) -> str | None:
    """Return the canonical form of a classified number, or None when it cannot be listed.

    Emergency numbers, extensions, feature codes and invalid strings are never on a
    do-not-disturb list (and never refused by it).
    """
    number_class = classification.number_class
    if number_class not in LISTABLE:
        return None
    digits = classification.number
    if number_class is NumberClass.MOBILE:
        digits = digits.removeprefix("0")
    elif number_class is NumberClass.LOCAL and not digits.startswith("0"):
        digits = f"0{plan.local_area_code}{digits}"
    if not digits.isdigit() or len(digits) > MAX_DIGITS:
        return None
    return digits


def encode_number(number: str) -> int:
    """Return the 64-bit integer that stands for a canonical number.

    Numbers are ordered by length, then by value, and leading zeros count: ``0213`` and
    ``213`` encode differently.

    Raises:
        ValueError: ``number`` is empty, longer than `MAX_DIGITS` or not all digits.
    """
    if not number or len(number) > MAX_DIGITS or not number.isascii() or not number.isdigit():
        raise ValueError(f"not a canonical number: {number!r}")
    return _OFFSETS[len(number)] + int(number)


def decode_number(value: int) -> str:
    """Return the canonical number `encode_number` turned into ``value``.

    Raises:
        ValueError: ``value`` encodes no number.
    """
    for length in range(1, MAX_DIGITS + 1):
        if _OFFSETS[length] <= value < _OFFSETS[length + 1]:
            return str(value - _OFFSETS[length]).zfill(length)
    raise ValueError(f"{value} encodes no number")


def listed(
    classification: Classification, plan: NumberingPlan, numbers: DoNotDisturb | None
) -> bool:
    """Tell whether the classified number is on the do-not-disturb list ``numbers``."""
    if numbers is None:
        return False
    canonical = dnd_number(classification, plan)
    return canonical is not None and canonical in numbers
