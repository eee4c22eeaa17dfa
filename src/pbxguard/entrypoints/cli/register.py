"""``pbxguard register``: the month's long-distance register (长话登记表), and filling it in."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from datetime import timedelta

from pbxguard.adapters.ledger import RegisterBook
from pbxguard.adapters.ledger.audit import chain_heads
from pbxguard.app.register import fill_entry, iter_month_entries
from pbxguard.domain.entries import RegisterEntry
from pbxguard.domain.periods import month_of
from pbxguard.entrypoints.cli.context import CliContext
from pbxguard.entrypoints.cli.output import export_report
from pbxguard.entrypoints.render import (
    REGISTER_COLUMNS,
    anchor_line,
    register_cells,
    register_row,
    render_table,
    rows_of,
)


def cmd_register(args: argparse.Namespace) -> int:
    """Print or write the month's register, or fill an entry in."""
    context = CliContext(args.config)
    if getattr(args, "register_command", None) == "fill":
        return _fill(context, args)
    return _report(context, args)


def _report(context: CliContext, args: argparse.Namespace) -> int:
    policy = context.policy
    zone = policy.timezone
    month = args.month or month_of(context.now(), zone)
    fill_within = timedelta(hours=policy.register_fill_hours)
    now = context.now()
    with context.reading() as database:
        anchor = anchor_line(chain_heads(database).digest) if database else None
        # Exports stream the month a page at a time: a large site's register has a hundred
        # thousand lines, and none of them needs the others to be written.
        entries: Iterator[RegisterEntry] = (
            iter_month_entries(RegisterBook(database), policy, month) if database else iter(())
        )
        rows = rows_of(entries, lambda e: register_row(e, zone, now=now, fill_within=fill_within))
        if export_report(
            rows,
            REGISTER_COLUMNS,
            args,
            name=f"register-{month}",
            title=f"长话登记表 Long-distance register · {month} · {policy.site}",
            sheet_name=f"长话登记表 {month}",
            unit="条 entries",
            cells=register_cells(zone),
            footer=anchor,
        ):
            return 0
        listed = list(rows)
    if not listed:
        print("登记表中没有记录 — the register has no entries for this month.")
        return 0
    unfilled = sum(1 for row in listed if not row["is_filled"])
    print(render_table(listed, REGISTER_COLUMNS))
    print(f"\n合计 total: {len(listed)} 条 entries, 未登记 unfilled: {unfilled}")
    if anchor:
        print(anchor)
    return 0


def _fill(context: CliContext, args: argparse.Namespace) -> int:
    with context.writing() as database:
        entry = fill_entry(
            RegisterBook(database),
            entry_id=args.id,
            subject=args.subject,
            outcome=args.outcome,
            by=args.by,
            now=context.now(),
            callee_name=args.callee_name,
        )
    row = register_row(entry, context.zone)
    print(f"已登记 filled: 编号 entry {entry.id}")
    print(f"  {row['caller']} ({row['extension']}) → {row['callee_number']} {row['callee_name']}")
    print(f"  {row['start']} – {row['end']} ({row['duration']})")
    print(f"  联络事项 subject: {entry.subject}")
    print(f"  交涉结果 outcome: {entry.outcome}")
    return 0
