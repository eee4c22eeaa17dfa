"""``pbxguard ledger``: list offences; verify, migrate, adjust; the set-aside entries."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

from pbxguard.adapters.countries import country_book
from pbxguard.adapters.ledger import CallLog, LedgerDatabase, OffenceBook, verify_ledger
from pbxguard.adapters.ledger.audit import chain_heads
from pbxguard.adapters.ledger.writer import SET_ASIDE, read_set_aside, replay_set_aside
from pbxguard.app.costs import CostLine, month_costs
from pbxguard.app.ledger import offence_filter
from pbxguard.domain.entries import AdjustmentKind, OffenceEntry
from pbxguard.domain.periods import month_of
from pbxguard.entrypoints.cli.context import CliContext
from pbxguard.entrypoints.cli.output import export_report
from pbxguard.entrypoints.render import (
    COST_COLUMNS,
    OFFENCE_COLUMNS,
    OFFENCE_EXPORT_COLUMNS,
    anchor_line,
    cost_cells,
    cost_row,
    format_duration,
    offence_row,
    render_table,
    rows_of,
)
from pbxguard.errors import RequestError

EXIT_BROKEN = 1


def cmd_ledger(args: argparse.Namespace) -> int:
    """Run ``pbxguard ledger`` and its actions."""
    context = CliContext(args.config)
    action = getattr(args, "ledger_command", None)
    if action == "verify":
        return _verify(context, args)
    if action == "migrate":
        return _migrate(context)
    if action == "set-aside":
        return _set_aside(context, args)
    if action == "adjust":
        return _adjust(context, args)
    if action == "costs":
        return _costs(context, args)
    return _list(context, args)


def _list(context: CliContext, args: argparse.Namespace) -> int:
    policy = context.policy
    where = offence_filter(
        policy,
        person=args.person,
        department=args.department,
        month=args.month,
        rule=args.rule,
        outcome=args.outcome,
        site=args.site,
    )
    with context.reading() as database:
        entries: Iterator[OffenceEntry] = (
            OffenceBook(database).iter_offences(where) if database is not None else iter(())
        )
        rows = rows_of(entries, lambda e: offence_row(e, policy.timezone))
        # A monthly report is anchored: it carries the chain digest as of its printing.
        anchor = (
            anchor_line(chain_heads(database).digest)
            if args.month and database is not None
            else None
        )
        if export_report(
            rows,
            OFFENCE_EXPORT_COLUMNS,
            args,
            name=f"ledger-{args.month or 'all'}",
            title=f"罚款台账 Fine ledger · {args.month or '全部 all'} · {policy.site}",
            sheet_name=f"罚款台账 {args.month or ''}".strip(),
            unit="条 offences",
            footer=anchor,
        ):
            return 0
        listed = list(rows)
    if not listed:
        print("台账中没有符合条件的记录 — no offences match.")
        return 0
    total = sum((Decimal(r["amount"]) for r in listed), Decimal("0.00"))
    text = render_table(listed, OFFENCE_COLUMNS)
    print(f"{text}\n\n合计 total: {len(listed)} 条 offences, {total} 元 yuan")
    if anchor:
        print(anchor)
    return 0


def _verify(context: CliContext, args: argparse.Namespace) -> int:
    with context.reading() as database:
        if database is None:
            print("账本尚不存在 no ledger yet: nothing to verify.")
            return 0
        report = verify_ledger(database)
    if args.json:
        print(
            json.dumps(
                {
                    "intact": report.intact,
                    "rows": report.rows,
                    "digest": report.digest,
                    "heads": [
                        {"table": h.table, "site": h.site, "seq": h.seq, "hash": h.hash}
                        for h in report.heads
                    ],
                    "breaks": [
                        {
                            "table": b.table,
                            "site": b.site,
                            "id": b.row_id,
                            "seq": b.seq,
                            "kind": b.kind,
                            "detail": b.detail,
                        }
                        for b in report.breaks
                    ],
                },
                ensure_ascii=False,
                indent=2,
            )
        )
        return 0 if report.intact else EXIT_BROKEN
    if report.intact:
        print(f"账本完整 ledger intact: {report.rows} 条记录 rows in {len(report.heads)} chains")
        for head in report.heads:
            print(f"  {head.table:<20} {head.site or '-':<16} seq {head.seq:<8} {head.hash}")
        print(f"链头摘要 chain digest (keep it outside the database): {report.digest}")
        return 0
    first = report.breaks[0]
    print(
        f"账本被篡改 LEDGER TAMPERED: {first.table} 编号 id {first.row_id} (seq {first.seq}, "
        f"site {first.site or '-'}): {first.kind} — {first.detail}",
        file=sys.stderr,
    )
    for found in report.breaks[1:]:
        print(
            f"  also {found.table} id {found.row_id} (seq {found.seq}): {found.kind} — "
            f"{found.detail}",
            file=sys.stderr,
        )
    return EXIT_BROKEN


def _migrate(context: CliContext) -> int:
    settings = context.settings
    url = settings.ledger.owner_url.get_secret_value() or settings.ledger_url
    database = LedgerDatabase.open(url, site=context.policy.site)
    try:
        before = database.revision()
        database.migrate(grant_to=settings.ledger.writer_role)
        after = database.revision()
    finally:
        database.close()
    if before == after:
        print(f"账本结构已是最新 the ledger schema is up to date ({after})")
    else:
        print(f"账本结构已升级 the ledger schema moved from {before or 'nothing'} to {after}")
    if settings.ledger.writer_role:
        print(f"  {settings.ledger.writer_role} may SELECT and INSERT only")
    return 0


def _set_aside(context: CliContext, args: argparse.Namespace) -> int:
    path = context.settings.journal_path / SET_ASIDE
    records = read_set_aside(path)
    if not records:
        print("没有被搁置的记录 — no journal entries were set aside.")
        return 0
    if not args.replay:
        for record in records:
            print(
                f"#{record['seq']}  {record['at']}  {record['entry'].get('op')}: {record['error']}"
            )
        print(
            f"共 {len(records)} 条 entries; `pbxguard ledger set-aside --replay` tries them again"
        )
        return 0
    with context.writing() as database:
        written, kept = replay_set_aside(path, database)
    print(f"已写入 written: {written}; 仍失败 still failing: {kept}")
    return 0 if kept == 0 else EXIT_BROKEN


def _adjust(context: CliContext, args: argparse.Namespace) -> int:
    kind = AdjustmentKind(args.kind)
    if not args.reason.strip():
        raise RequestError("--reason must say why")
    with context.writing() as database:
        entry = OffenceBook(database).add_adjustment(
            args.id, kind, by=args.by, reason=args.reason, at=context.now()
        )
    row = offence_row(entry, context.zone)
    print(f"已记录 recorded {kind.value} on offence {entry.id} ({row['rule']}, {row['person']})")
    print(f"  罚款 amount now: {row['amount']} 元 yuan")
    return 0


def _costs(context: CliContext, args: argparse.Namespace) -> int:
    policy = context.policy
    month = args.month or month_of(context.now(), policy.timezone)
    countries = country_book()
    with context.reading() as database:
        lines = (
            month_costs(CallLog(database), policy, countries, month=month, site=args.site)
            if database is not None
            else []
        )
    rows = [cost_row(line, countries) for line in lines]
    where = f" · {args.site}" if args.site else ""
    if export_report(
        rows,
        COST_COLUMNS,
        args,
        name=f"costs-{month}",
        title=f"话费统计 Call costs · {month}{where} · {policy.site}",
        sheet_name=f"话费统计 {month}",
        unit="行 lines",
        cells=cost_cells(),
    ):
        return 0
    if not rows:
        print(f"{month} 没有外线呼叫 — no outbound calls in {month}.")
        return 0
    print(f"话费统计 Call costs · {month}{where}\n")
    print(render_table(_with_subtotals(lines, rows), COST_COLUMNS))
    return 0


def _total_row(label: str, lines: list[CostLine]) -> dict[str, object]:
    return {
        "department": label,
        "person": "",
        "class": "",
        "country": "",
        "calls": sum(line.calls for line in lines),
        "answered": sum(line.answered for line in lines),
        "talk": format_duration(sum((line.talk for line in lines), timedelta(0))),
        "charge": str(sum((line.charge for line in lines), Decimal("0.00"))),
    }


def _with_subtotals(lines: list[CostLine], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the rows with a subtotal after each department and the total at the end."""
    shown: list[dict[str, Any]] = []
    department: list[CostLine] = []
    for index, (line, row) in enumerate(zip(lines, rows, strict=True)):
        shown.append(row)
        department.append(line)
        last = index + 1 == len(lines) or lines[index + 1].department != line.department
        if last:
            shown.append(_total_row(f"小计 subtotal {line.department or '-'}", department))
            department = []
    shown.append(_total_row("合计 total", lines))
    return shown
