"""``pbxguard check`` and ``pbxguard policy validate``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pbxguard.adapters.dnd_file import DndStore, NumberFile
from pbxguard.adapters.ledger import ApprovalBook
from pbxguard.adapters.policy_file import load_policy
from pbxguard.app.checks import check_call
from pbxguard.domain.evaluate import CallAttempt
from pbxguard.entrypoints.cli.context import CliContext
from pbxguard.entrypoints.verdicts import decision_as_dict, decision_as_text

EXIT_OK = 0
EXIT_DENIED = 1


def cmd_check(args: argparse.Namespace) -> int:
    """Print the verdict the guard gives one call; exit 0 when it may go ahead, 1 when not.

    The same check as the running guard's pre-dial layer, with the same inputs: the policy,
    its rota, and the approvals on record in the ledger (read-only) and the do-not-disturb list
    in force when ``--config`` names them.
    """
    context = CliContext(args.config, policy_file=args.policy)
    policy = context.policy
    at = context.parse_time(args.at, "--at") if args.at else context.now()
    approvals = []
    dnd: NumberFile | None = None
    if args.config:
        with context.reading() as database:
            if database is not None:
                approvals = ApprovalBook(database).active(at, site=policy.site)
        dnd = DndStore(context.settings.dnd_path).open_current()
    try:
        decision = check_call(
            CallAttempt(args.extension, args.number),
            policy=policy,
            approvals=approvals,
            now=at,
            dnd=dnd,
        )
    finally:
        if dnd is not None:
            dnd.close()
    if args.json:
        data = decision_as_dict(decision, policy)
        data["at"] = at.isoformat()
        print(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        print(decision_as_text(decision, policy))
    return EXIT_OK if decision.allowed else EXIT_DENIED


def cmd_policy_validate(args: argparse.Namespace) -> int:
    """Validate a policy file and summarise it."""
    loaded = load_policy(Path(args.file))
    policy = loaded.policy
    print(f"有效 OK: {args.file}")
    print(f"  站点 site {policy.site} · {policy.timezone.key} · 模式 mode {policy.mode.value}")
    print(
        f"  {len(policy.rules)} 条规则 rules, {len(policy.roles)} 个角色 roles, "
        f"{len(policy.people)} 人 people, {len(policy.lines)} 条线路 lines · "
        f"版本 version {policy.version}"
    )
    print(f"  来源 sources: {', '.join(loaded.sources)}")
    return EXIT_OK
