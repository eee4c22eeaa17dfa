"""``pbxguard replay``: a month's recorded calls judged again under a candidate policy."""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

from pbxguard.adapters.dnd_file import DndStore, NumberFile
from pbxguard.adapters.ledger.replay import RecordedCallLog
from pbxguard.adapters.policy_file import load_policy
from pbxguard.app.replay import WhatIf
from pbxguard.domain.replay import ReplayChange, TallyRow
from pbxguard.entrypoints.cli.context import CliContext
from pbxguard.entrypoints.cli.output import text_output
from pbxguard.entrypoints.render import Column, render_table, write_csv
from pbxguard.errors import ConfigError

#: Changed calls shown under the table (all of them are in the CSV and JSON output).
SHOWN_CHANGES = 20

CHANGE_LABELS = {
    "now_refused": "改为拒绝 now refused",
    "now_allowed": "改为放行 now allowed",
    "rule_changed": "规则变化 rule changed",
    "fine_changed": "罚款变化 fine changed",
}

SUMMARY_COLUMNS: tuple[Column, ...] = (
    ("rule", "规则", "rule"),
    ("department", "部门", "department"),
    ("now_refused", "改为拒绝", "now refused"),
    ("now_allowed", "改为放行", "now allowed"),
    ("rule_changed", "规则变化", "rule changed"),
    ("fine_changed", "罚款变化", "fine changed"),
    ("fines_before", "原罚款", "fines recorded"),
    ("fines_after", "新罚款", "fines now"),
    ("delta", "差额", "difference"),
)

CHANGE_COLUMNS: tuple[Column, ...] = (
    ("time", "时间", "time"),
    ("linkedid", "呼叫编号", "linkedid"),
    ("extension", "分机", "extension"),
    ("person", "人员", "person"),
    ("department", "部门", "department"),
    ("number", "号码", "number"),
    ("number_class", "类别", "class"),
    ("change", "变化", "change"),
    ("verdict_before", "原结论", "verdict then"),
    ("rule_before", "原规则", "rule then"),
    ("fine_before", "原罚款", "fine then"),
    ("verdict_after", "新结论", "verdict now"),
    ("rule_after", "新规则", "rule now"),
    ("fine_after", "新罚款", "fine now"),
    ("reason_zh", "原因", "reason"),
)


def change_row(change: ReplayChange, zone: ZoneInfo) -> dict[str, Any]:
    """Return one changed call as a row of the report."""
    call = change.call
    return {
        "time": call.at.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"),
        "linkedid": call.linkedid,
        "extension": call.extension,
        "person": change.person_id,
        "department": change.department,
        "number": call.number or call.dialled,
        "number_class": call.number_class,
        "change": change.change.value,
        "verdict_before": call.verdict,
        "rule_before": call.rule_id,
        "fine_before": str(call.fine),
        "verdict_after": change.verdict,
        "rule_after": change.rule_id,
        "fine_after": str(change.fine),
        "reason_zh": change.reason_zh,
        "reason_en": change.reason_en,
    }


def summary_row(row: TallyRow) -> dict[str, Any]:
    """Return one rule and department of the tally as a row of the report."""
    return {
        "rule": row.rule_id or "-",
        "department": row.department or "-",
        "now_refused": row.now_refused,
        "now_allowed": row.now_allowed,
        "rule_changed": row.rule_changed,
        "fine_changed": row.fine_changed,
        "fines_before": str(row.fines_before),
        "fines_after": str(row.fines_after),
        "delta": f"{row.delta:+}",
    }


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay a month under a candidate policy and report what would change."""
    context = CliContext(args.config)
    candidate = load_policy(Path(args.policy)).policy
    site = context.policy.site
    zone = candidate.timezone
    dnd: NumberFile | None = DndStore(context.settings.dnd_path).open_current()
    try:
        with context.reading() as database:
            if database is None:
                raise ConfigError(
                    "账本尚不存在 — there is no ledger here yet: nothing was recorded to replay"
                )
            what_if = WhatIf(
                candidate, RecordedCallLog(database), month=args.month, site=site, dnd=dnd
            )
            rows = (change_row(change, zone) for change in what_if.changes())
            with text_output(args.output) as out:
                if args.format == "csv":
                    write_csv(rows, CHANGE_COLUMNS, out, bom=args.output is not None)
                elif args.format == "json":
                    _write_json(out, what_if, rows, args)
                else:
                    _write_table(out, what_if, rows, args)
    finally:
        if dnd is not None:
            dnd.close()
    if args.output:
        print(f"已写入 written: {args.output} ({what_if.tally.calls} 个呼叫 calls replayed)")
    return 0


def _write_json(
    out: IO[str], what_if: WhatIf, rows: Iterator[dict[str, Any]], args: argparse.Namespace
) -> None:
    out.write("{\n")
    out.write(f'  "month": {json.dumps(args.month)},\n')
    out.write(f'  "site": {json.dumps(what_if.site)},\n')
    out.write(f'  "policy": {json.dumps(what_if.candidate.version)},\n')
    out.write('  "changes": [')
    for count, row in enumerate(rows):
        out.write(",\n    " if count else "\n    ")
        out.write(json.dumps(row, ensure_ascii=False))
    out.write("\n  ],\n")
    tally = what_if.tally
    summary = [summary_row(r) for r in tally.rows()]
    out.write(f'  "summary": {json.dumps(summary, ensure_ascii=False)},\n')
    totals = {
        "calls": tally.calls,
        "fines_before": str(tally.fines_before),
        "fines_after": str(tally.fines_after),
    }
    out.write(f'  "totals": {json.dumps(totals)}\n}}\n')


def _write_table(
    out: IO[str], what_if: WhatIf, rows: Iterator[dict[str, Any]], args: argparse.Namespace
) -> None:
    shown = list(itertools.islice(rows, SHOWN_CHANGES))
    more = sum(1 for _ in rows)
    tally = what_if.tally
    out.write(
        f"假设推演 what-if replay · {args.month} · {what_if.site} · "
        f"候选制度 candidate {args.policy} ({what_if.candidate.version})\n"
        f"重新判定 calls judged again: {tally.calls}\n\n"
    )
    summary = [summary_row(r) for r in tally.rows()]
    if not summary:
        out.write("没有变化，也没有罚款 — nothing changes, and no call is fined either way.\n")
        return
    out.write(render_table(summary, SUMMARY_COLUMNS) + "\n")
    out.write(
        f"\n合计 total fines: {tally.fines_before} → {tally.fines_after} 元 yuan "
        f"({tally.fines_after - tally.fines_before:+})\n"
    )
    if shown:
        out.write(f"\n变化的呼叫 calls that change ({len(shown) + more}):\n")
        columns = tuple(c for c in CHANGE_COLUMNS if c[0] not in ("linkedid", "reason_zh"))
        labelled = [dict(r, change=CHANGE_LABELS[r["change"]]) for r in shown]
        out.write(render_table(labelled, columns) + "\n")
        if more:
            out.write(f"… 另有 {more} 个 and {more} more (--format csv lists them all)\n")
