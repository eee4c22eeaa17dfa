"""``pbxguard approve …`` and ``pbxguard code …``: prior approvals and authorization codes."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from pbxguard.adapters.ledger import ApprovalBook, CodeBook, LedgerDatabase
from pbxguard.app.approvals import GrantRequest, grant_approval, list_approvals, revoke_approval
from pbxguard.app.codes import issue_code, revoke_code
from pbxguard.domain.approvals import Approval, ApprovalState, approval_state
from pbxguard.domain.evaluate import class_label
from pbxguard.domain.policy import Policy
from pbxguard.entrypoints.cli.context import CliContext
from pbxguard.entrypoints.render import render_table

_TIME = "%Y-%m-%d %H:%M"

STATE_LABELS: dict[ApprovalState, str] = {
    ApprovalState.SCHEDULED: "未生效 scheduled",
    ApprovalState.ACTIVE: "有效 active",
    ApprovalState.USED_UP: "已用完 used up",
    ApprovalState.EXPIRED: "已过期 expired",
    ApprovalState.REVOKED: "已撤销 revoked",
}
APPROVAL_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("id", "编号", "id"),
    ("person", "使用人", "person"),
    ("scope", "范围", "scope"),
    ("from", "起", "from"),
    ("until", "止", "until"),
    ("uses", "次数", "uses"),
    ("granted_by", "批准人", "approved by"),
    ("state", "状态", "state"),
    ("reason", "事由", "reason"),
)
_CODE_ENDED = {
    "": "有效 in force",
    "used": "已使用 used",
    "revoked": "已撤销 revoked",
    "expired": "已过期 expired",
}


def _who(policy: Policy, person_id: str) -> str:
    person = policy.people.get(person_id)
    return f"{person.name} ({person_id})" if person else person_id


def _scope_text(approval: Approval) -> str:
    if approval.number_class is not None:
        zh, _ = class_label(approval.number_class)
        text = f"{zh} {approval.number_class.value}"
        return f"{text} {approval.prefix}…" if approval.prefix else text
    return f"{approval.prefix}…"


def approval_row(approval: Approval, policy: Policy, now: datetime) -> dict[str, Any]:
    """Return one approval as a row of display strings."""
    zone = policy.timezone
    limit = "∞" if approval.max_calls is None else str(approval.max_calls)
    return {
        "id": approval.id,
        "person": _who(policy, approval.person_id),
        "scope": _scope_text(approval),
        "from": approval.valid_from.astimezone(zone).strftime(_TIME),
        "until": approval.valid_until.astimezone(zone).strftime(_TIME),
        "uses": f"{approval.used_calls}/{limit}",
        "granted_by": _who(policy, approval.granted_by),
        "state": STATE_LABELS[approval_state(approval, now)],
        "reason": approval.reason or "-",
    }


def cmd_approve(args: argparse.Namespace) -> int:
    """Run ``pbxguard approve grant|list|revoke``."""
    context = CliContext(args.config)
    if args.approve_command == "grant":
        return _grant(context, args)
    if args.approve_command == "list":
        return _list(context, args)
    return _revoke(context, args)


def _grant(context: CliContext, args: argparse.Namespace) -> int:
    policy = context.policy
    now = context.now()
    request = GrantRequest(
        person_id=args.person,
        approver_id=args.by,
        valid_from=context.parse_time(args.valid_from, "--from"),
        valid_until=context.parse_time(args.valid_until, "--until"),
        number_class=args.number_class,
        prefix=args.prefix,
        calls=args.calls,
        reason=args.reason,
    )
    with context.writing() as database:
        approval = grant_approval(ApprovalBook(database), policy, request, now=now)
    row = approval_row(approval, policy, now)
    print(f"已批准 approved: {approval.id}")
    print(f"  使用人 person   : {row['person']}")
    print(f"  范围 scope      : {row['scope']}")
    print(f"  有效期 window   : {row['from']} – {row['until']} ({context.zone.key})")
    print(f"  次数 calls      : {'不限 unlimited' if args.calls is None else args.calls}")
    print(f"  批准人 approver : {row['granted_by']}")
    if args.reason:
        print(f"  事由 reason     : {args.reason}")
    person = policy.people[approval.person_id]
    if (
        approval.number_class is not None
        and approval.number_class in policy.role_of(person).allowed
    ):
        print(f"  注意 note: {person.name} may already dial this class without approval")
    return 0


def _list(context: CliContext, args: argparse.Namespace) -> int:
    now = context.now()
    with context.reading() as database:
        shown = (
            list_approvals(ApprovalBook(database), now=now, person=args.person, everything=args.all)
            if database is not None
            else []
        )
    if not shown:
        hint = "" if args.all else " (--all also lists expired, used-up and revoked ones)"
        print(f"没有批准记录 — no approvals to show{hint}.")
        return 0
    print(render_table([approval_row(a, context.policy, now) for a in shown], APPROVAL_COLUMNS))
    return 0


def _revoke(context: CliContext, args: argparse.Namespace) -> int:
    policy = context.policy
    now = context.now()
    with context.writing() as database:
        approval, revoked = revoke_approval(
            ApprovalBook(database), policy, args.id, by=args.by, reason=args.reason, now=now
        )
    if not revoked:
        print(f"{args.id} 已撤销 was already revoked")
        return 0
    row = approval_row(approval, policy, now)
    approver = policy.people[args.by]
    print(f"已撤销 revoked: {approval.id} ({row['person']}, {row['scope']}) by {approver.name}")
    return 0


def cmd_code(args: argparse.Namespace) -> int:
    """Run ``pbxguard code issue|list|revoke``."""
    context = CliContext(args.config)
    if args.code_command == "list":
        return _code_list(context, args)
    if args.code_command == "revoke":
        return _code_revoke(context, args)
    return _code_issue(context, args)


def _code_book(context: CliContext, database: LedgerDatabase) -> CodeBook:
    return CodeBook(database, min_digits=context.policy.code_limits.min_digits)


def _code_list(context: CliContext, args: argparse.Namespace) -> int:
    zone = context.zone
    with context.reading() as database:
        found = (
            _code_book(context, database).codes(now=context.now(), person=args.person)
            if database is not None
            else []
        )
    if not found:
        print("没有授权码 — no authorization codes.")
        return 0
    rows = [
        {
            "id": str(c.id),
            "person": c.person_id,
            "kind": "一次性 one-time" if c.one_time else "可重复 reusable",
            "issued": f"{c.created_at.astimezone(zone):{_TIME}} {c.created_by}",
            "expires": f"{c.expires_at.astimezone(zone):{_TIME}}" if c.expires_at else "-",
            "used": str(c.used),
            "state": _CODE_ENDED[c.ended],
        }
        for c in found
    ]
    columns = (
        ("id", "编号", "id"),
        ("person", "持有人", "owner"),
        ("kind", "类型", "kind"),
        ("issued", "发放", "issued"),
        ("expires", "到期", "expires"),
        ("used", "使用次数", "uses"),
        ("state", "状态", "state"),
    )
    print(render_table(rows, columns))
    return 0


def _code_revoke(context: CliContext, args: argparse.Namespace) -> int:
    with context.writing() as database:
        info = revoke_code(
            _code_book(context, database),
            code_id=args.id,
            by=args.by,
            reason=args.reason,
            now=context.now(),
        )
    print(f"授权码已撤销 code {info.id} of {info.person_id} revoked by {args.by}")
    return 0


def _code_issue(context: CliContext, args: argparse.Namespace) -> int:
    policy = context.policy
    zone = context.zone
    now = context.now()
    expires = context.parse_time(args.expires, "--expires") if args.expires else None
    with context.writing() as database:
        _, value = issue_code(
            _code_book(context, database),
            policy,
            person_id=args.person,
            by=args.by,
            now=now,
            one_time=args.one_time,
            expires=expires,
            code=args.code,
        )
    person = policy.people[args.person]
    kind = "一次性 one-time" if args.one_time else "可重复使用 reusable"
    until = (
        f"有效至 expires {expires.astimezone(zone):{_TIME}}" if expires else "长期有效 no expiry"
    )
    print(f"授权码已发放 code issued for {person.name} ({person.id}) · {kind} · {until}")
    if args.code is None:
        print(f"  授权码 code: {value}")
        print("  只显示这一次，系统只保存其哈希 — shown only now; pbxguard keeps only its hash.")
    return 0
