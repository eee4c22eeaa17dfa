"""What a decision means, per mode and per layer: the one place both layers read it from.

The pre-dial layer (FastAGI) answers the dialplan; the AMI layer acts on a live trunk leg. A
denied call is refused, cut or only recorded depending on the site's mode, and its offence is
written with what the guard did. Keys are built here too, so that a call judged by both layers
is one offence and one approval use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pbxguard.domain.evaluate import Decision, Verdict
from pbxguard.domain.policy import Mode, Policy
from pbxguard.domain.records import CallRef, DecisionRecord, Layer, OffenceDraft, Outcome


@dataclass(frozen=True, slots=True)
class Enforcement:
    """What to do about one decision.

    Attributes:
        answer: the verdict told to the dialplan (pre-dial layer).
        hang_up: whether the AMI layer hangs up the trunk leg.
        offence: how the offence is written (what the guard did), or None when the decision is
            no offence.
    """

    answer: Verdict
    hang_up: bool
    offence: Outcome | None


def enforcement(decision: Decision, mode: Mode, layer: Layer) -> Enforcement:
    """Return what ``decision`` means under ``mode`` on ``layer``.

    Monitor mode never stands in the way: a denied call is allowed and only recorded. In
    enforce mode the dialplan refuses it (pre-dial) or the guard orders its trunk leg hung up
    (AMI), and the offence is written ahead of the hangup as ``cut_ordered``.
    """
    if decision.verdict is not Verdict.DENY:
        return Enforcement(decision.verdict, hang_up=False, offence=None)
    enforce = mode is Mode.ENFORCE
    if not enforce:
        outcome = Outcome.MONITORED
    elif layer is Layer.AGI:
        outcome = Outcome.REFUSED
    else:
        outcome = Outcome.CUT_ORDERED
    return Enforcement(
        answer=Verdict.DENY if enforce else Verdict.ALLOW,
        hang_up=enforce and layer is Layer.AMI,
        offence=outcome if decision.offence else None,
    )


def call_offence_key(site: str, linkedid: str, rule_id: str, number: str) -> str:
    """Return the idempotency key of a forbidden call's offence (the same on both layers)."""
    return f"{site}:{linkedid}:{rule_id}:{number}"


def approval_use_ref(site: str, linkedid: str) -> str:
    """Return the reference under which a call counts once against an approval."""
    return f"{site}:{linkedid}"


def decision_record(
    decision: Decision, *, key: str, at: datetime, call: CallRef, layer: Layer
) -> DecisionRecord:
    """Return the ledger record of a decision given for a call by either layer."""
    return DecisionRecord(
        key=key,
        at=at,
        call=call,
        layer=layer,
        extension=decision.extension,
        person_id=decision.person_id,
        dialled=decision.classification.dialled,
        number=decision.classification.number,
        number_class=decision.number_class.value,
        verdict=decision.verdict.value,
        rule_id=decision.rule_id,
        reason_zh=decision.reason_zh,
        reason_en=decision.reason_en,
        approval_id=decision.approval_id,
        policy_version=decision.policy_version,
    )


def offence_of(
    decision: Decision, *, policy: Policy, at: datetime, call: CallRef, outcome: Outcome
) -> OffenceDraft:
    """Return the offence a denied call is, keyed so both layers record it once."""
    dialled = decision.classification.dialled
    number = decision.classification.number
    return OffenceDraft(
        key=call_offence_key(policy.site, call.linkedid, decision.rule_id, number),
        rule_id=decision.rule_id,
        at=at,
        call=call,
        extension=decision.extension,
        person_id=decision.person_id,
        person_name=decision.person_name,
        department=decision.department,
        number=number,
        number_class=decision.number_class.value,
        outcome=outcome,
        detail_zh=f"{decision.extension} 拨打 {dialled}：{decision.reason_zh}",
        detail_en=f"{decision.extension} dialled {dialled}: {decision.reason_en}",
        policy_version=decision.policy_version,
    )
