"""The long-distance register (长话登记表, LD-4, LD-10): monthly report and filling in.

pbxguard opens a register entry for every answered long-distance call; the caller (or the
person keeping the register, LD-11) writes in the callee's name, the subject and the outcome.
The general manager reviews the register monthly (000 L711), so it renders as an aligned
bilingual table, CSV, JSON and an Excel workbook, Chinese first, for reconciliation with the
carrier's itemised bill (LD-10).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import unicodedata
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from openpyxl import Workbook
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter

from pbxguard.adapters.clock import SystemClock
from pbxguard.adapters.ledger import FineLedger, RegisterEntry
from pbxguard.adapters.policy_file import load_policy
from pbxguard.adapters.settings import load_settings
from pbxguard.app.register_watch import fill_deadline
from pbxguard.app.reports import render_table
from pbxguard.domain.evaluate import class_label
from pbxguard.domain.numbers import NumberClass
from pbxguard.errors import PbxGuardError

#: (key, Chinese header, English header), in the order of the paper form.
REGISTER_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("id", "编号", "id"),
    ("caller", "使用人", "caller"),
    ("extension", "分机", "extension"),
    ("callee_number", "受话号码", "callee number"),
    ("callee_name", "受话人", "callee name"),
    ("class", "类别", "class"),
    ("start", "开始时间", "start"),
    ("end", "结束时间", "end"),
    ("duration", "通话时长", "duration"),
    ("subject", "联络事项", "subject"),
    ("outcome", "交涉结果", "outcome"),
    ("filled", "登记状态", "filled"),
)
REGISTER_HEADERS = tuple(f"{zh} {en}" for _, zh, en in REGISTER_COLUMNS)
FORMATS = ("table", "csv", "xlsx", "json")

FILLED = "已登记 filled"
UNFILLED = "未登记 unfilled"
OVERDUE = "逾期未登记 overdue"

_TIME = "%Y-%m-%d %H:%M:%S"
_EXCEL_TIME = "yyyy-mm-dd hh:mm:ss"
_EXCEL_DURATION = "[h]:mm:ss"
_WIDE_COLUMNS = {"subject", "outcome"}
_MAX_WIDTH = 48


def format_duration(duration: timedelta) -> str:
    """Return a duration as H:MM:SS (whole seconds)."""
    seconds = max(int(duration.total_seconds()), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


def _class_text(number_class: str) -> str:
    try:
        zh, _ = class_label(NumberClass(number_class))
    except ValueError:
        return number_class
    return zh


def fill_state(entry: RegisterEntry, *, now: datetime | None, fill_within: timedelta) -> str:
    """Return the entry's state as shown in the register: filled, unfilled or overdue."""
    if entry.filled:
        return FILLED
    if now is not None and fill_deadline(entry, fill_within) <= now:
        return OVERDUE
    return UNFILLED


def register_row(
    entry: RegisterEntry,
    timezone: ZoneInfo,
    *,
    now: datetime | None = None,
    fill_within: timedelta = timedelta(hours=72),
) -> dict[str, Any]:
    """Return one register entry as a flat row of display strings plus raw fields (JSON-ready)."""
    started = entry.started_at.astimezone(timezone)
    ended = entry.ended_at.astimezone(timezone)
    return {
        "id": entry.id,
        "caller": entry.caller_name or entry.caller_person_id or "-",
        "extension": entry.extension,
        "callee_number": entry.callee_number,
        "callee_name": entry.callee_name,
        "class": _class_text(entry.number_class),
        "start": started.strftime(_TIME),
        "end": ended.strftime(_TIME),
        "duration": format_duration(entry.duration),
        "subject": entry.subject,
        "outcome": entry.outcome,
        "filled": fill_state(entry, now=now, fill_within=fill_within),
        "caller_person_id": entry.caller_person_id,
        "department": entry.department,
        "number_class": entry.number_class,
        "started_at": started.isoformat(),
        "ended_at": ended.isoformat(),
        "duration_seconds": int(entry.duration.total_seconds()),
        "is_filled": entry.filled,
        "filled_by": entry.filled_by,
        "filled_at": entry.filled_at.astimezone(timezone).isoformat() if entry.filled_at else None,
        "linkedid": entry.call.linkedid,
    }


def render_register(
    entries: Sequence[RegisterEntry],
    timezone: ZoneInfo,
    fmt: str,
    *,
    now: datetime | None = None,
    fill_within: timedelta = timedelta(hours=72),
) -> str:
    """Render the register as ``table``, ``csv`` or ``json`` text."""
    rows = [register_row(e, timezone, now=now, fill_within=fill_within) for e in entries]
    if fmt == "json":
        return json.dumps(rows, ensure_ascii=False, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(REGISTER_HEADERS)
        writer.writerows([row[key] for key, _, _ in REGISTER_COLUMNS] for row in rows)
        return out.getvalue()
    if fmt != "table":
        raise PbxGuardError(f"unknown register format {fmt!r}; use one of {', '.join(FORMATS)}")
    if not rows:
        return "登记表中没有记录 — the register has no entries for this month."
    unfilled = sum(1 for e in entries if not e.filled)
    summary = f"合计 total: {len(rows)} 条 entries, 未登记 unfilled: {unfilled}"
    return f"{render_table(rows, REGISTER_COLUMNS)}\n\n{summary}"


def _display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def register_workbook(
    entries: Sequence[RegisterEntry],
    timezone: ZoneInfo,
    *,
    month: str,
    site: str,
    now: datetime | None = None,
    fill_within: timedelta = timedelta(hours=72),
) -> bytes:
    """Return the month's register as an .xlsx workbook: title row, bold headers, one row each.

    Times are written as Excel date-times in the site's timezone and durations as Excel
    durations, so the sheet can be sorted and summed against the carrier's bill.
    """
    book = Workbook()
    sheet = book.active
    sheet.title = f"长话登记表 {month}"
    width = len(REGISTER_COLUMNS)
    title = f"长话登记表 Long-distance register · {month} · {site}"
    sheet.cell(row=1, column=1, value=title).font = Font(bold=True, size=14)
    sheet.merge_cells(start_row=1, start_column=1, end_row=1, end_column=width)
    header_fill = PatternFill("solid", start_color="DDDDDD", end_color="DDDDDD")
    for column, header in enumerate(REGISTER_HEADERS, start=1):
        cell = sheet.cell(row=2, column=column, value=header)
        cell.font = Font(bold=True)
        cell.fill = header_fill
        cell.alignment = Alignment(vertical="center")
    widths = [_display_width(h) for h in REGISTER_HEADERS]
    for row_number, entry in enumerate(entries, start=3):
        row = register_row(entry, timezone, now=now, fill_within=fill_within)
        values: dict[str, Any] = {
            **row,
            "start": entry.started_at.astimezone(timezone).replace(tzinfo=None, microsecond=0),
            "end": entry.ended_at.astimezone(timezone).replace(tzinfo=None, microsecond=0),
            "duration": timedelta(seconds=int(entry.duration.total_seconds())),
        }
        for column, (key, _, _) in enumerate(REGISTER_COLUMNS, start=1):
            cell = sheet.cell(row=row_number, column=column, value=values[key])
            if key in ("start", "end"):
                cell.number_format = _EXCEL_TIME
            elif key == "duration":
                cell.number_format = _EXCEL_DURATION
            elif key in _WIDE_COLUMNS:
                cell.alignment = Alignment(wrap_text=True, vertical="top")
            widths[column - 1] = max(widths[column - 1], _display_width(str(row[key])))
    for column, needed in enumerate(widths, start=1):
        sheet.column_dimensions[get_column_letter(column)].width = min(needed + 2, _MAX_WIDTH)
    sheet.freeze_panes = "A3"
    last = get_column_letter(width)
    sheet.auto_filter.ref = f"A2:{last}{max(len(entries) + 2, 2)}"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _current_month(timezone: ZoneInfo) -> str:
    return SystemClock().now().astimezone(timezone).strftime("%Y-%m")


async def register_report(args: argparse.Namespace) -> int:
    """Print or write the month's long-distance register."""
    settings = load_settings(args.config)
    policy = load_policy(settings.policy).policy
    zone = policy.timezone
    month = args.month or _current_month(zone)
    fill_within = timedelta(hours=policy.register_fill_hours)
    now = SystemClock().now()
    async with await FineLedger.open(settings.ledger.url) as store:
        await store.migrate()
        entries = await store.register(month, timezone=zone)
    if args.format == "xlsx":
        data = register_workbook(
            entries, zone, month=month, site=policy.site, now=now, fill_within=fill_within
        )
        path = Path(args.output or f"register-{month}.xlsx")
        await _write(path, data)
        print(f"已写入 written: {path} ({len(entries)} 条 entries)")
        return 0
    text = render_register(entries, zone, args.format, now=now, fill_within=fill_within)
    if args.output is None:
        print(text, end="" if text.endswith("\n") else "\n")
        return 0
    # A BOM lets Excel open a UTF-8 CSV with its Chinese intact.
    encoding = "utf-8-sig" if args.format == "csv" else "utf-8"
    await _write(Path(args.output), text.encode(encoding))
    print(f"已写入 written: {args.output} ({len(entries)} 条 entries)")
    return 0


async def _write(path: Path, data: bytes) -> None:
    try:
        await asyncio.to_thread(path.write_bytes, data)
    except OSError as exc:
        raise PbxGuardError(f"cannot write {path}: {exc.strerror or exc}") from exc


async def register_fill(args: argparse.Namespace) -> int:
    """Write the subject and outcome (and the callee's name) into a register entry."""
    settings = load_settings(args.config)
    policy = load_policy(settings.policy).policy
    if not args.by.strip():
        raise PbxGuardError("--by must name who fills the entry in")
    if not args.outcome.strip():
        raise PbxGuardError("--outcome (交涉结果) must not be empty")
    async with await FineLedger.open(settings.ledger.url) as store:
        await store.migrate()
        entry = await store.fill_register(
            args.id,
            subject=args.subject,
            outcome=args.outcome,
            by=args.by,
            at=SystemClock().now(),
            callee_name=args.callee_name,
        )
    row = register_row(entry, policy.timezone)
    print(f"已登记 filled: 编号 entry {entry.id}")
    print(f"  {row['caller']} ({row['extension']}) → {row['callee_number']} {row['callee_name']}")
    print(f"  {row['start']} – {row['end']} ({row['duration']})")
    print(f"  联络事项 subject: {entry.subject}")
    print(f"  交涉结果 outcome: {entry.outcome}")
    return 0
