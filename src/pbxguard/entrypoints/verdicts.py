"""Describe a decision for people and scripts: the same words on the CLI, FastAGI and pages."""

from __future__ import annotations

from typing import Any

from pbxguard.domain.evaluate import Decision, class_label
from pbxguard.domain.penalties import SANCTION_LABELS, Sanction, assess
from pbxguard.domain.policy import Policy

VERDICT_LABELS = {"allow": ("放行", "ALLOW"), "deny": ("拒绝", "DENY"), "pin": ("需授权码", "PIN")}


def fine_preview(decision: Decision, policy: Policy) -> dict[str, Any] | None:
    """Return what the offence would cost as a first offence, or None when it is no offence."""
    if not decision.offence:
        return None
    rule = policy.rules[decision.rule_id]
    if rule.penalty is None:
        return None
    fine = assess(rule.penalty, prior_offences=0, number_class=decision.number_class.value)
    step = rule.penalty.steps[0]
    formula = ""
    if step.needs_charge:
        formula = f"{step.charge_multiple} × charge + {fine.amount}"
    return {
        "amount": str(fine.amount),
        "formula": formula,
        "sanctions": [s.value for s in fine.sanctions],
        "escalation_step": fine.escalation_step,
    }


def decision_as_dict(decision: Decision, policy: Policy) -> dict[str, Any]:
    """Return a decision as plain JSON-ready data."""
    rule = policy.rules.get(decision.rule_id)
    return {
        "verdict": decision.verdict.value,
        "extension": decision.extension,
        "dialled": decision.classification.dialled,
        "number": decision.classification.number,
        "number_class": decision.number_class.value,
        "class_note": decision.classification.reason,
        "person": decision.person_id,
        "person_name": decision.person_name,
        "department": decision.department,
        "role": decision.role,
        "rule": decision.rule_id,
        "rule_title_zh": rule.title_zh if rule else "",
        "rule_title_en": rule.title_en if rule else "",
        "citation": decision.citation,
        "reason_zh": decision.reason_zh,
        "reason_en": decision.reason_en,
        "approval": decision.approval_id,
        "offence": decision.offence,
        "fine": fine_preview(decision, policy),
        "policy_version": decision.policy_version,
    }


def decision_as_text(decision: Decision, policy: Policy) -> str:
    """Return a decision as a short bilingual report (Chinese first)."""
    data = decision_as_dict(decision, policy)
    zh, en = VERDICT_LABELS[data["verdict"]]
    class_zh, class_en = class_label(decision.number_class)
    who = decision.person_name or "未登记 unlisted"
    lines = [
        f"{zh} {en}  {decision.extension} → {data['dialled']}",
        f"  号码类别 class   : {class_zh} {class_en} ({data['number'] or '-'})",
        f"  责任人 person    : {who} [{decision.role}] {decision.department}".rstrip(),
        f"  原因 reason      : {decision.reason_zh} / {decision.reason_en}",
    ]
    if decision.rule_id:
        lines.append(f"  规则 rule        : {decision.rule_id} ({decision.citation})")
        lines.append(f"                     {data['rule_title_zh']}")
        lines.append(f"                     {data['rule_title_en']}")
    fine = data["fine"]
    if fine is not None:
        amount = fine["formula"] or f"{fine['amount']} 元 yuan"
        sanctions = ", ".join(
            f"{SANCTION_LABELS[s][0]} {SANCTION_LABELS[s][1]}"
            for s in (Sanction(v) for v in fine["sanctions"])
        )
        lines.append(f"  罚款 fine        : {amount} (首次 first offence)")
        if sanctions:
            lines.append(f"  处分 sanction    : {sanctions}")
    return "\n".join(lines)
