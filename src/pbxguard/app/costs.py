"""Call accounting: what a month's outbound calls cost, per department, person, class, country.

Every outbound call is stored with its charge from the tariff when it ends; this sums them for
the month (in the site's timezone, a call counting in the month it started), as budgets do.
International, Hong Kong/Macau and Taiwan calls are broken down by the country called.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from pbxguard.app.ports import CallLogPort
from pbxguard.domain.countries import CountryBook
from pbxguard.domain.numbers import NumberClass
from pbxguard.domain.penalties import ZERO
from pbxguard.domain.periods import month_bounds
from pbxguard.domain.policy import Policy
from pbxguard.domain.records import CallSummary

_BY_COUNTRY = frozenset(
    {NumberClass.INTERNATIONAL.value, NumberClass.HK_MACAU.value, NumberClass.TAIWAN.value}
)


@dataclass(frozen=True, slots=True)
class CostLine:
    """What one person's calls of one class (to one country) cost in the month.

    Attributes:
        department: the caller's department ("" when unknown).
        person_id: who answered for the calls ("" when unknown).
        person_name: their name.
        number_class: the class called.
        country: the calling code for calls abroad, else "".
        calls: outbound calls made.
        answered: of which answered.
        talk: talk time.
        charge: yuan, from the tariff.
    """

    department: str
    person_id: str
    person_name: str
    number_class: str
    country: str
    calls: int
    answered: int
    talk: timedelta
    charge: Decimal


@dataclass(slots=True)
class _Sum:
    name: str
    calls: int = 0
    answered: int = 0
    talk: timedelta = timedelta(0)
    charge: Decimal = ZERO


def cost_lines(calls: Iterable[CallSummary], countries: CountryBook) -> list[CostLine]:
    """Sum calls per department, person, class and country, in that order."""
    sums: dict[tuple[str, str, str, str], _Sum] = {}
    for call in calls:
        if call.direction != "outbound":
            continue
        country = ""
        if call.number_class in _BY_COUNTRY:
            country = countries.calling_code(call.number) or "?"
        person = call.person_id or call.extension
        key = (call.department, person, call.number_class, country)
        total = sums.get(key)
        if total is None:
            total = sums[key] = _Sum(call.person_name or call.caller_name or person)
        total.calls += 1
        total.answered += call.answered_at is not None
        total.talk += call.talk_time
        total.charge += call.charge
    return [
        CostLine(
            department=department,
            person_id=person,
            person_name=total.name,
            number_class=number_class,
            country=country,
            calls=total.calls,
            answered=total.answered,
            talk=total.talk,
            charge=total.charge,
        )
        for (department, person, number_class, country), total in sorted(sums.items())
    ]


def month_costs(
    log: CallLogPort,
    policy: Policy,
    countries: CountryBook,
    *,
    month: str,
    site: str | None = None,
) -> list[CostLine]:
    """Return the month's costs (``YYYY-MM`` in the site's timezone), of one site or all.

    Raises:
        ConfigError: the month is not YYYY-MM.
    """
    start, end = month_bounds(month, policy.timezone)
    return cost_lines(log.iter_calls(start=start, end=end, site=site), countries)
