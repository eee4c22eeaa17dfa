"""``pbxguard quota --day``: the telesales quota of one day (QU-1), from the ledger."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

from pbxguard.adapters.ledger import CallLog, OffenceBook
from pbxguard.app.quota import QuotaLine, quota_for_day
from pbxguard.domain.entries import OffenceEntry
from pbxguard.domain.records import CallSummary
from pbxguard.entrypoints.cli.context import CliContext
from pbxguard.entrypoints.render import Column, render_table, write_csv, write_json
from pbxguard.errors import ConfigError

QUOTA_COLUMNS: tuple[Column, ...] = (
    ("person", "人员编号", "person"),
    ("name", "姓名", "name"),
    ("department", "部门", "department"),
    ("required", "定额", "required"),
    ("effective", "有效电话", "effective"),
    ("missing", "缺少", "missing"),
    ("fine", "罚款(元)", "fine (yuan)"),
    ("state", "状态", "state"),
)


def _state(line: QuotaLine) -> str:
    if not line.assessed:
        return "不考核 not assessed"
    if line.recorded:
        return "已记入台账 recorded"
    if line.result.missing:
        return "待记入 not recorded yet"
    return "达标 met"


def _row(line: QuotaLine) -> dict[str, Any]:
    result = line.result
    return {
        "day": result.day.isoformat(),
        "person": result.person_id,
        "name": result.person_name,
        "department": result.department,
        "required": result.required if line.assessed else 0,
        "effective": result.effective,
        "missing": result.missing if line.assessed else 0,
        "fine": str(line.amount),
        "state": _state(line),
    }


class _Empty:
    """A ledger that holds nothing (none was ever created here)."""

    def iter_calls(self, **_where: object) -> Iterator[CallSummary]:
        return iter(())

    def iter_offences(self, where: object) -> Iterator[OffenceEntry]:
        return iter(())


def cmd_quota(args: argparse.Namespace) -> int:
    """Show every telesales person's effective calls on one day, and the fine recorded."""
    try:
        day = date.fromisoformat(args.day)
    except ValueError as error:
        raise ConfigError(f"--day {args.day!r} 不是日期 is not a date (YYYY-MM-DD)") from error
    context = CliContext(args.config)
    policy = context.policy
    with context.reading() as database:
        if database is None:
            # No ledger here yet: nobody made a call.
            lines = quota_for_day(policy, day, calls=_Empty(), offences=_Empty())
        else:
            lines = quota_for_day(
                policy, day, calls=CallLog(database), offences=OffenceBook(database)
            )
    rows = [_row(line) for line in lines]
    if args.format == "csv":
        write_csv(rows, (("day", "日期", "day"), *QUOTA_COLUMNS), sys.stdout, bom=False)
        return 0
    if args.format == "json":
        write_json(rows, sys.stdout)
        return 0
    print(f"电话销售定额 telesales quota (QU-1) · {day.isoformat()} · {policy.site}")
    print(render_table(rows, QUOTA_COLUMNS))
    total = sum((Decimal(r["fine"]) for r in rows), Decimal("0.00"))
    print(f"\n合计罚款 fines recorded: {total} 元 yuan")
    return 0
