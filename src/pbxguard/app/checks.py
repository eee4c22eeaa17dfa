"""Check one call: the verdict the guard gives, the same for ``pbxguard check`` and the daemon.

Both ask `check_call` with the same inputs: the policy, the approvals on record and the rota
(who answers for a shared line). The daemon passes the approvals it holds (uses counted so far
included); the command line reads them from the ledger.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pbxguard.domain.approvals import Approval
from pbxguard.domain.dnd import DoNotDisturb
from pbxguard.domain.evaluate import CallAttempt, Decision
from pbxguard.domain.judging import CallGate, judge
from pbxguard.domain.policy import Policy


def check_call(
    attempt: CallAttempt,
    *,
    policy: Policy,
    approvals: Iterable[Approval],
    now: datetime,
    dnd: DoNotDisturb | None = None,
    controls: CallGate | None = None,
) -> Decision:
    """Return the verdict the pre-dial layer gives ``attempt`` (``pin`` included).

    The daemon passes its ``controls`` (velocity locks, budgets); the command line has none
    and gives the policy's verdict. ``dnd`` is the site's do-not-disturb list (DND-1).
    """
    return judge(
        attempt,
        policy,
        now=now,
        approvals=approvals,
        allow_pin=True,
        dnd=dnd,
        controls=controls,
    )
