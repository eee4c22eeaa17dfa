"""Restrictions on calls a caller may otherwise make: by the hour and by country.

`evaluate` asks these only for a call it would let through (by role, line, approval or an
authorization code): they narrow a permission and never replace a denial that carries a fine,
so a staff member dialling abroad at night still breaks LD-2, not only the hours rule.
Emergency numbers never get here.

- Hours (``[[hours]]``): some classes only while a schedule is active, e.g. international
  calls only in working hours, even for department heads. China's public holidays and adjusted
  working days come with the schedule (`pbxguard.domain.calendars`).
- Countries (``[[countries]]``): international calls only to (or never to) some calling codes,
  per role, department, line or person. Every list that matches the caller must allow it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pbxguard.domain.numbers import Classification, NumberClass
from pbxguard.domain.policy import Audience, Person, Policy, Role

#: Class names in reasons (the same words `evaluate` uses).
_CLASS_WORDS: dict[NumberClass, tuple[str, str]] = {
    NumberClass.LOCAL: ("本地电话", "local calls"),
    NumberClass.MOBILE: ("手机", "mobile calls"),
    NumberClass.DOMESTIC_LD: ("国内长途", "domestic long-distance calls"),
    NumberClass.HK_MACAU: ("港澳电话", "calls to Hong Kong/Macau"),
    NumberClass.TAIWAN: ("台湾电话", "calls to Taiwan"),
    NumberClass.INTERNATIONAL: ("国际长途", "international calls"),
    NumberClass.PREMIUM: ("声讯电话", "premium-rate calls"),
    NumberClass.FEATURE: ("功能码", "feature codes"),
    NumberClass.SERVICE: ("服务号码", "service numbers"),
    NumberClass.INTERNAL: ("内部分机", "internal calls"),
}


def class_words(number_class: NumberClass) -> tuple[str, str]:
    """Return how reasons name calls of a class, in Chinese and English."""
    return _CLASS_WORDS.get(number_class, (number_class.value, f"{number_class.value} calls"))


@dataclass(frozen=True, slots=True)
class Restriction:
    """Why a call that would be allowed is refused: the rule and a bilingual reason."""

    rule_id: str
    reason_zh: str
    reason_en: str


def _in(audience: Audience, role: Role, person: Person | None, extension: str) -> bool:
    return audience.includes(
        role=role.id,
        department=person.department if person else "",
        extension=extension,
        person_id=person.id if person else "",
    )


def restriction(
    policy: Policy,
    classification: Classification,
    *,
    role: Role,
    person: Person | None,
    extension: str,
    now: datetime,
) -> Restriction | None:
    """Return why a call the caller may otherwise make is refused now, or None.

    Args:
        policy: the site's policy.
        classification: the dialled number.
        role: the role the decision uses.
        person: who answers for the call, if known.
        extension: the calling extension (lines take part through the audiences' lists).
        now: the time of the attempt.

    Returns:
        The first restriction that applies (hours first, then countries), or None.
    """
    number_class = classification.number_class
    if number_class is NumberClass.EMERGENCY:
        return None
    for rule in policy.hours:
        if number_class not in rule.classes or not _in(rule.audience, role, person, extension):
            continue
        schedule = policy.schedules.get(rule.schedule)
        if schedule is None or schedule.is_active(now):
            continue
        what_zh, what_en = class_words(number_class)
        return Restriction(
            rule.rule_id,
            f"{rule.label_zh or rule.schedule}以外不得拨打{what_zh}",
            f"{what_en} are not allowed outside {rule.label_en or rule.schedule}",
        )
    if number_class is not NumberClass.INTERNATIONAL or not policy.country_lists:
        return None
    code = policy.countries.calling_code(classification.number)
    for country_list in policy.country_lists:
        if country_list.permits(code) or not _in(country_list.audience, role, person, extension):
            continue
        if code is None:
            return Restriction(
                country_list.rule_id,
                "无法确定所拨国家，国际电话仅限允许的国家",
                "the country called is not known; international calls go to listed countries only",
            )
        zh, en = policy.countries.label(code)
        return Restriction(
            country_list.rule_id,
            f"不允许拨打{zh}的国际电话",
            f"international calls to {en} are not allowed",
        )
    return None
