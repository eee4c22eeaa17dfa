"""Decide whether one call attempt may go ahead: the single verdict both layers share.

`evaluate` is total and deterministic: the same attempt, policy, time and approvals always give
the same `Decision`, and no input string makes it raise. Emergency numbers are allowed from every
phone before anything else is looked at, so no policy mistake can ever block them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from pbxguard.domain.approvals import Approval, find_covering_approval
from pbxguard.domain.dnd import DND_RULE, DoNotDisturb, listed
from pbxguard.domain.numbers import LONG_DISTANCE_CLASSES, Classification, NumberClass
from pbxguard.domain.policy import Line, LineUse, Person, Policy, Role, Rule
from pbxguard.domain.restrictions import Restriction, restriction


class Verdict(enum.StrEnum):
    """The answer given to the dialplan (``PBXGUARD_VERDICT``) and to the AMI layer."""

    ALLOW = "allow"
    DENY = "deny"
    PIN = "pin"


_CLASS_LABELS: dict[NumberClass, tuple[str, str]] = {
    NumberClass.EMERGENCY: ("紧急号码", "emergency number"),
    NumberClass.INTERNAL: ("内部分机", "internal extension"),
    NumberClass.SERVICE: ("服务号码", "service number"),
    NumberClass.LOCAL: ("本地电话", "local number"),
    NumberClass.MOBILE: ("手机", "mobile number"),
    NumberClass.DOMESTIC_LD: ("国内长途", "domestic long distance"),
    NumberClass.HK_MACAU: ("港澳电话", "Hong Kong/Macau"),
    NumberClass.TAIWAN: ("台湾电话", "Taiwan"),
    NumberClass.INTERNATIONAL: ("国际长途", "international"),
    NumberClass.PREMIUM: ("声讯电话", "premium-rate number"),
    NumberClass.FEATURE: ("功能码", "feature code"),
    NumberClass.INVALID: ("无效号码", "not a dialable number"),
}


def class_label(number_class: NumberClass) -> tuple[str, str]:
    """Return the Chinese and English names of a number class."""
    return _CLASS_LABELS[number_class]


@dataclass(frozen=True, slots=True)
class CallAttempt:
    """A call someone is trying to make.

    Attributes:
        extension: the calling phone's extension.
        dialled: what was dialled, as the phone or trunk gave it.
        with_access_code: whether ``dialled`` may still carry the outside-line access code.
        on_duty: for shared lines, the person the rota has on duty (they answer for the call).
        code_owner: the owner of an authorization code entered for this call.
    """

    extension: str
    dialled: str
    with_access_code: bool = True
    on_duty: str | None = None
    code_owner: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """A verdict with everything an auditor needs to reproduce it.

    Attributes:
        verdict: allow, deny or pin.
        classification: what the dialled number is.
        extension: the calling extension.
        person_id: who answers for the call ("" when nobody is known).
        person_name: their name, for reports.
        department: their department.
        role: the role the decision used.
        rule_id: the rule that decided ("" for a plain allow).
        reason_zh: why, in Chinese.
        reason_en: why, in English.
        citation: the source article of ``rule_id``.
        approval_id: the approval that allowed the call, if one did.
        offence: whether the attempt itself is an offence for the ledger.
        policy_version: the policy digest.
    """

    verdict: Verdict
    classification: Classification
    extension: str
    person_id: str
    person_name: str
    department: str
    role: str
    rule_id: str
    reason_zh: str
    reason_en: str
    citation: str
    approval_id: str = ""
    offence: bool = False
    policy_version: str = ""

    @property
    def number_class(self) -> NumberClass:
        """The dialled number's class."""
        return self.classification.number_class

    @property
    def allowed(self) -> bool:
        """Tell whether the call may go ahead."""
        return self.verdict is Verdict.ALLOW


def evaluate(
    call: CallAttempt,
    policy: Policy,
    *,
    now: datetime,
    approvals: Iterable[Approval] = (),
    allow_pin: bool = False,
    dnd: DoNotDisturb | None = None,
) -> Decision:
    """Decide whether ``call`` may go ahead under ``policy`` at ``now``.

    Args:
        call: the attempt.
        policy: the site's policy.
        now: the time of the attempt (timezone-aware).
        approvals: approvals currently on record (expired ones are ignored here).
        allow_pin: whether the caller can be asked for an authorization code (FastAGI can,
            the AMI safety net cannot).
        dnd: the site's do-not-disturb list (canonical numbers), checked for promotion lines
            (DND-1); None when the site has none.

    Returns:
        The decision; never raises for any input.
    """
    classification = policy.classifier.classify(
        call.dialled, with_access_code=call.with_access_code
    )
    number_class = classification.number_class
    line = policy.line(call.extension)
    person = _responsible_person(call, policy)
    role = policy.role_of(person)

    def decide(
        verdict: Verdict,
        rule: Rule | None,
        reason: tuple[str, str],
        *,
        approval_id: str = "",
    ) -> Decision:
        return Decision(
            verdict=verdict,
            classification=classification,
            extension=call.extension,
            person_id=person.id if person else "",
            person_name=person.name if person else "",
            department=person.department if person else "",
            role=role.id,
            rule_id=rule.id if rule else "",
            reason_zh=reason[0],
            reason_en=reason[1],
            citation=rule.citation if rule else "",
            approval_id=approval_id,
            offence=verdict is Verdict.DENY and rule is not None and rule.has_penalty,
            policy_version=policy.version,
        )

    label_zh, label_en = class_label(number_class)
    if number_class is NumberClass.EMERGENCY:
        return decide(
            Verdict.ALLOW, None, ("紧急号码始终放行", "emergency numbers always go through")
        )
    if number_class is NumberClass.INVALID:
        # Strings with * or # that are not the site's feature codes land here too: they are
        # refused whoever dials them, with no offence (nothing was dialled).
        reason_zh = classification.reason_zh or classification.reason
        return decide(
            Verdict.DENY,
            None,
            (f"无法识别的号码：{reason_zh}", f"not a number: {classification.reason}"),
        )
    if line is not None and line.use is LineUse.EMERGENCY_ONLY:
        return decide(
            Verdict.DENY,
            policy.rules.get("EM-1"),
            (f"{line.name}仅限紧急报警使用", f"{line.name} is for emergencies only"),
        )
    if (
        line is not None
        and line.use is LineUse.RECEIVE_ONLY
        and number_class
        not in (
            NumberClass.INTERNAL,
            NumberClass.FEATURE,
        )
    ):
        return decide(
            Verdict.DENY,
            policy.rules.get("OT-4"),
            (f"{line.name}只能接听，不能拨打", f"{line.name} is receive-only"),
        )
    if line is not None and line.promotion and listed(classification, policy.plan, dnd):
        # DND-1 (004 line 12): no approval or code unlocks a listed number for promotion.
        return decide(
            Verdict.DENY,
            policy.rules.get(DND_RULE),
            (
                f"{classification.number}在免打扰名单中，{line.name}为推销线路，不得拨打",
                f"{classification.number} is on the do-not-disturb list and {line.name} is a "
                "promotion line",
            ),
        )

    def unless_restricted(allowed: Decision) -> Decision:
        # Hours and country lists narrow a permission; they never replace a fined denial.
        why = restriction(
            policy, classification, role=role, person=person, extension=call.extension, now=now
        )
        return allowed if why is None else refuse(allowed, policy, why)

    if _permitted(number_class, role, line):
        return unless_restricted(
            decide(Verdict.ALLOW, None, (f"允许拨打{label_zh}", f"{label_en} allowed"))
        )
    approval = find_covering_approval(
        approvals,
        person_id=person.id if person else "",
        number=classification.number,
        number_class=number_class,
        now=now,
    )
    if approval is not None:
        return unless_restricted(
            decide(
                Verdict.ALLOW,
                None,
                (f"已获{approval.granted_by}批准", f"approved by {approval.granted_by}"),
                approval_id=approval.id,
            )
        )
    if allow_pin and call.code_owner is None and number_class in policy.pin_classes:
        return unless_restricted(
            decide(Verdict.PIN, None, ("请输入授权码", "authorization code required"))
        )
    rule = policy.rules.get(policy.class_rules.get(number_class, ""))
    if number_class in LONG_DISTANCE_CLASSES:
        reason = (
            f"{label_zh}须事先经部门负责人同意",
            f"{label_en} needs the department head's prior approval",
        )
    elif number_class is NumberClass.PREMIUM:
        reason = ("禁止拨打声讯电话", "premium-rate numbers are not allowed")
    else:
        reason = (f"无权拨打{label_zh}", f"not allowed to dial {label_en}")
    return decide(Verdict.DENY, rule, reason)


def refuse(decision: Decision, policy: Policy, why: Restriction) -> Decision:
    """Return ``decision`` turned into a refusal for ``why`` (an offence if its rule fines).

    Used for calls a caller could otherwise make: outside a schedule, to a country not on the
    list, from a locked extension, over a used-up budget. No approval is used by a refused call.
    """
    rule = policy.rules.get(why.rule_id)
    return replace(
        decision,
        verdict=Verdict.DENY,
        rule_id=why.rule_id,
        reason_zh=why.reason_zh,
        reason_en=why.reason_en,
        citation=rule.citation if rule else "",
        approval_id="",
        offence=rule is not None and rule.has_penalty,
    )


def _responsible_person(call: CallAttempt, policy: Policy) -> Person | None:
    """Return who answers for the call: code owner, then person on duty, then phone owner."""
    for person_id in (call.code_owner, call.on_duty):
        if person_id and person_id in policy.people:
            return policy.people[person_id]
    return policy.person_at(call.extension)


def _permitted(number_class: NumberClass, role: Role, line: Line | None) -> bool:
    """Tell whether the role or the line itself allows the class."""
    return number_class in role.allowed or (line is not None and number_class in line.allowed)
