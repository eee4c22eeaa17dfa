"""``pbxguard lock list|lift``: velocity locks, and ending one early."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from pbxguard.adapters.ledger import LockBook
from pbxguard.app.locks import lift_lock, list_locks
from pbxguard.domain.evaluate import class_label
from pbxguard.domain.locks import LockEntry
from pbxguard.domain.policy import Policy
from pbxguard.domain.records import LockScope
from pbxguard.entrypoints.cli.context import CliContext
from pbxguard.entrypoints.render import render_table

_TIME = "%Y-%m-%d %H:%M"
LOCK_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("id", "编号", "id"),
    ("what", "锁定对象", "locked"),
    ("classes", "锁定类别", "classes"),
    ("rule", "规则", "rule"),
    ("from", "起", "from"),
    ("until", "止", "until"),
    ("state", "状态", "state"),
    ("reason", "原因", "reason"),
)


def _state(entry: LockEntry, now: datetime, zone: Any) -> str:
    if entry.lift is not None:
        at = entry.lift.at.astimezone(zone).strftime(_TIME)
        return f"已解除 lifted {at} by {entry.lift.by}"
    if entry.in_force(now):
        return "生效中 in force"
    return "已到期 ended"


def lock_row(entry: LockEntry, policy: Policy, now: datetime) -> dict[str, Any]:
    """Return one lock as a row of display strings."""
    zone = policy.timezone
    lock = entry.lock
    if lock.scope is LockScope.SITE:
        what = f"全站 site {entry.site}"
    else:
        person = policy.people.get(lock.person_id)
        who = f" ({person.name})" if person else ""
        what = f"分机 ext {lock.extension}{who}"
    return {
        "id": entry.number,
        "what": what,
        "classes": "、".join(class_label(c)[0] for c in sorted(lock.classes)),
        "rule": lock.rule_id,
        "from": lock.at.astimezone(zone).strftime(_TIME),
        "until": lock.until.astimezone(zone).strftime(_TIME),
        "state": _state(entry, now, zone),
        "reason": lock.reason_zh,
    }


def cmd_lock(args: argparse.Namespace) -> int:
    """Run ``pbxguard lock list|lift``."""
    context = CliContext(args.config)
    if args.lock_command == "lift":
        return _lift(context, args)
    return _list(context, args)


def _list(context: CliContext, args: argparse.Namespace) -> int:
    now = context.now()
    with context.reading() as database:
        found = (
            list_locks(
                LockBook(database),
                now=now,
                everything=args.all,
                extension=args.extension,
                site=context.policy.site,
            )
            if database is not None
            else []
        )
    if not found:
        hint = "" if args.all else " (--all also lists ended and lifted ones)"
        print(f"没有锁定 — no locks in force{hint}.")
        return 0
    print(render_table([lock_row(e, context.policy, now) for e in found], LOCK_COLUMNS))
    return 0


def _lift(context: CliContext, args: argparse.Namespace) -> int:
    now = context.now()
    with context.writing() as database:
        entry = lift_lock(LockBook(database), args.id, by=args.by, reason=args.reason, now=now)
    row = lock_row(entry, context.policy, now)
    print(f"已解除锁定 lock lifted: {entry.number} ({row['what']}, {row['classes']}) by {args.by}")
    print(
        "  运行中的守护进程将在数秒内恢复拨号 — a running daemon lets it dial again within seconds"
    )
    return 0
