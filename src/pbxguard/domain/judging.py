"""Judge a call attempt with everything the policy knows: the one entry point of both layers.

`evaluate` decides from an attempt as given; `judge` first fills in who answers for a shared
line (the rota's person on duty), so that the pre-dial layer, the AMI safety net and
``pbxguard check`` give the same verdict for the same call.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from pbxguard.domain.approvals import Approval
from pbxguard.domain.dnd import DoNotDisturb
from pbxguard.domain.evaluate import CallAttempt, Decision, Verdict, evaluate, refuse
from pbxguard.domain.numbers import NumberClass
from pbxguard.domain.policy import Policy
from pbxguard.domain.restrictions import Restriction


class CallGate(Protocol):
    """Controls with memory (locks, budgets) that may refuse a call the policy allows."""

    def refusal(self, decision: Decision, now: datetime) -> Restriction | None:
        """Return why the call is refused now, or None to let it through."""


def on_duty_for(policy: Policy, extension: str, at: datetime) -> str | None:
    """Return who the rota has on duty on the shared line ``extension`` belongs to, if any."""
    line = policy.line(extension)
    if line is None or not line.duty_line or policy.rota is None:
        return None
    return policy.rota.on_duty(line.duty_line, at)


def judge(
    attempt: CallAttempt,
    policy: Policy,
    *,
    now: datetime,
    approvals: Iterable[Approval] = (),
    allow_pin: bool = False,
    dnd: DoNotDisturb | None = None,
    controls: CallGate | None = None,
) -> Decision:
    """Decide ``attempt`` under ``policy`` at ``now``, the rota answering for shared lines.

    ``allow_pin`` asks for an authorization code where the policy allows one (the dialplan can
    read one; the AMI safety net cannot). ``dnd`` is the site's do-not-disturb list (DND-1).
    ``controls`` (the running guard's locks and budgets) may then refuse a call the policy lets
    through; they never touch an emergency call.
    """
    if attempt.on_duty is None:
        attempt = replace(attempt, on_duty=on_duty_for(policy, attempt.extension, now))
    decision = evaluate(attempt, policy, now=now, approvals=approvals, allow_pin=allow_pin, dnd=dnd)
    if (
        controls is None
        or decision.verdict is Verdict.DENY
        or decision.number_class is NumberClass.EMERGENCY
    ):
        return decision
    why = controls.refusal(decision, now)
    return decision if why is None else refuse(decision, policy, why)
