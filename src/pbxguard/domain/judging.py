"""Judge a call attempt with everything the policy knows: the one entry point of both layers.

`evaluate` decides from an attempt as given; `judge` first fills in who answers for a shared
line (the rota's person on duty), so that the pre-dial layer, the AMI safety net and
``pbxguard check`` give the same verdict for the same call.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from pbxguard.domain.approvals import Approval
from pbxguard.domain.dnd import DoNotDisturb
from pbxguard.domain.evaluate import CallAttempt, Decision, evaluate
from pbxguard.domain.policy import Policy


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
) -> Decision:
    """Decide ``attempt`` under ``policy`` at ``now``, the rota answering for shared lines.

    ``allow_pin`` asks for an authorization code where the policy allows one (the dialplan can
    read one; the AMI safety net cannot). ``dnd`` is the site's do-not-disturb list (DND-1).
    """
    if attempt.on_duty is None:
        attempt = replace(attempt, on_duty=on_duty_for(policy, attempt.extension, now))
    return evaluate(attempt, policy, now=now, approvals=approvals, allow_pin=allow_pin, dnd=dnd)
