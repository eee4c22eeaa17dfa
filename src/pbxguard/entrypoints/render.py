"""Rendering for people and for scripts: bilingual tables, CSV, JSON and Excel, streamed.

Every export takes an iterator of rows and writes as it goes, so a yearly CSV of 100,000
offences needs no more memory than a page of them: CSV row by row, JSON as an array written
item by item, Excel streamed into its sheet as it is compressed (`pbxguard.entrypoints.xlsx`).
CSV starts with a UTF-8 byte order mark so that Excel opens the Chinese headers intact. Headers
are Chinese first, then English.
"""

from __future__ import annotations

import csv
import json
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import IO, Any
from zoneinfo import ZoneInfo

from pbxguard.app.costs import CostLine
from pbxguard.domain.countries import CountryBook
from pbxguard.domain.entries import OffenceEntry, RegisterEntry
from pbxguard.domain.evaluate import class_label
from pbxguard.domain.numbers import NumberClass
from pbxguard.domain.penalties import SANCTION_LABELS
from pbxguard.domain.register import FillState, fill_state
from pbxguard.entrypoints import xlsx

Column = tuple[str, str, str]
"""(key, Chinese header, English header)."""

OFFENCE_COLUMNS: tuple[Column, ...] = (
    ("id", "编号", "id"),
    ("at", "时间", "time"),
    ("rule", "规则", "rule"),
    ("citation", "出处", "source"),
    ("person", "责任人", "person"),
    ("department", "部门", "department"),
    ("extension", "分机", "ext"),
    ("number", "号码", "number"),
    ("outcome", "处理", "outcome"),
    ("amount", "罚款(元)", "fine (yuan)"),
    ("step", "次数", "step"),
    ("sanctions", "处分", "sanctions"),
)
OFFENCE_EXPORT_COLUMNS: tuple[Column, ...] = (
    *OFFENCE_COLUMNS,
    ("site", "站点", "site"),
    ("charge", "话费(元)", "charge (yuan)"),
    ("rule_title_zh", "规则内容", "rule"),
    ("detail_zh", "经过", "detail"),
    ("linkedid", "Linkedid", "Linkedid"),
)
REGISTER_COLUMNS: tuple[Column, ...] = (
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

COST_COLUMNS: tuple[Column, ...] = (
    ("department", "部门", "department"),
    ("person", "责任人", "person"),
    ("class", "类别", "class"),
    ("country", "国家/地区", "country"),
    ("calls", "呼叫", "calls"),
    ("answered", "接通", "answered"),
    ("talk", "通话时长", "talk time"),
    ("charge", "话费(元)", "charge (yuan)"),
)

OUTCOME_LABELS = {
    "refused": "拨号前拒绝 refused",
    "cut_ordered": "已下令挂断 hangup ordered",
    "hung_up": "已挂断 hung up",
    "not_stopped": "未能拦截 not stopped",
    "monitored": "仅记录 recorded",
    "unobserved": "结果未知 ended unobserved",
}
FILL_LABELS = {
    FillState.FILLED: "已登记 filled",
    FillState.UNFILLED: "未登记 unfilled",
    FillState.OVERDUE: "逾期未登记 overdue",
}


def local_time(moment: datetime) -> str:
    """Return a date-time as ``YYYY-MM-DD HH:MM:SS`` (its own clock, to the second).

    The first 19 characters of its ISO form: the same text as strftime with that format (for
    years from 1000 on), at a fraction of the cost (an export formats a hundred thousand).
    """
    return moment.isoformat(sep=" ", timespec="seconds")[:19]


#: Columns written by hand that need room in a spreadsheet (their width in characters).
WIDE_COLUMNS = {"subject": 40, "outcome": 40, "detail_zh": 48, "rule_title_zh": 30}


def headers(columns: Sequence[Column]) -> list[str]:
    """Return bilingual headers, Chinese first."""
    return [f"{zh} {en}" for _, zh, en in columns]


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


def offence_row(entry: OffenceEntry, timezone: ZoneInfo) -> dict[str, Any]:
    """Return one offence as a flat row of strings (JSON-ready)."""
    sanctions = "; ".join(
        f"{SANCTION_LABELS[s][0]} {SANCTION_LABELS[s][1]}" for s in entry.sanctions
    )
    if entry.excused:
        sanctions = (sanctions + "; " if sanctions else "") + "已免除 waived"
    outcome = entry.final_outcome.value
    return {
        "id": entry.id,
        "at": local_time(entry.at.astimezone(timezone)),
        "rule": entry.rule_id,
        "citation": entry.citation,
        "rule_title_zh": entry.rule_title_zh,
        "rule_title_en": entry.rule_title_en,
        "person": entry.person_name or entry.person_id or "-",
        "person_id": entry.person_id,
        "department": entry.department or "-",
        "extension": entry.extension,
        "number": entry.number or "-",
        "number_class": entry.number_class,
        "outcome": OUTCOME_LABELS.get(outcome, outcome),
        "outcome_code": outcome,
        "amount": str(entry.amount),
        "charge": str(entry.charge),
        "talk_seconds": int(entry.call_talk_time.total_seconds()),
        "step": entry.escalation_step,
        "repeat_offender": entry.fine.repeat_offender,
        "sanctions": sanctions or "-",
        "detail_zh": entry.detail_zh,
        "detail_en": entry.detail_en,
        "linkedid": entry.call.linkedid if entry.call else "",
        "policy_version": entry.policy_version,
        "site": entry.site,
        "key": entry.key,
    }


def cost_row(line: CostLine, countries: CountryBook) -> dict[str, Any]:
    """Return one line of the costs report as display strings plus raw fields (JSON-ready)."""
    country = "-"
    if line.country == "?":
        country = "未知 unknown"
    elif line.country:
        found = countries.country(line.country)
        names = f"{found.name_zh} {found.name_en} " if found.name_en else ""
        country = f"{names}+{line.country}"
    try:
        label_zh, label_en = class_label(NumberClass(line.number_class))
        class_text = f"{label_zh} {label_en}"
    except ValueError:
        class_text = line.number_class
    return {
        "department": line.department or "-",
        "person": line.person_name or line.person_id or "-",
        "person_id": line.person_id,
        "class": class_text,
        "number_class": line.number_class,
        "country": country,
        "country_code": line.country,
        "calls": line.calls,
        "answered": line.answered,
        "talk": format_duration(line.talk),
        "talk_seconds": int(line.talk.total_seconds()),
        "charge": str(line.charge),
    }


def cost_cells() -> Mapping[str, Any]:
    """Excel cell values for the costs report: durations and amounts as numbers, not text."""
    return {
        "talk": lambda row: timedelta(seconds=row["talk_seconds"]),
        "charge": lambda row: Decimal(row["charge"]),
    }


def register_row(
    entry: RegisterEntry,
    timezone: ZoneInfo,
    *,
    now: datetime | None = None,
    fill_within: timedelta = timedelta(hours=72),
) -> dict[str, Any]:
    """Return one register entry as display strings plus raw fields (JSON-ready)."""
    started = entry.started_at.astimezone(timezone)
    ended = entry.ended_at.astimezone(timezone)
    return {
        "id": entry.id,
        "caller": entry.caller_name or entry.caller_person_id or "-",
        "extension": entry.extension,
        "callee_number": entry.callee_number,
        "callee_name": entry.callee_name,
        "class": _class_text(entry.number_class),
        "start": local_time(started),
        "end": local_time(ended),
        "duration": format_duration(entry.duration),
        "subject": entry.subject,
        "outcome": entry.outcome,
        "filled": FILL_LABELS[fill_state(entry, now=now, fill_within=fill_within)],
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
        "site": entry.site,
    }


def display_width(text: str) -> int:
    """Return how many terminal columns ``text`` takes (CJK characters take two)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - display_width(text))


def render_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """Render rows as an aligned text table with bilingual headers (Chinese first)."""
    titles = headers(columns)
    cells = [[str(row[key]) for key, _, _ in columns] for row in rows]
    widths = [
        max([display_width(h), *(display_width(r[i]) for r in cells)]) for i, h in enumerate(titles)
    ]
    lines = ["  ".join(_pad(h, w) for h, w in zip(titles, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(
        "  ".join(_pad(c, w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )
    return "\n".join(lines)


def write_csv(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[Column],
    out: IO[str],
    *,
    bom: bool = True,
    header: bool = True,
) -> int:
    """Write rows as CSV (bilingual header row first); return how many rows were written.

    ``header=False`` writes the rows alone, for a file written in chunks.
    """
    if bom:
        out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(headers(columns))
    count = 0
    for row in rows:
        writer.writerow(["" if row.get(key) is None else row[key] for key, _, _ in columns])
        count += 1
    return count


def write_json(rows: Iterable[Mapping[str, Any]], out: IO[str]) -> int:
    """Write rows as a JSON array, one item at a time; return how many were written."""
    count = 0
    out.write("[")
    for row in rows:
        out.write(",\n  " if count else "\n  ")
        out.write(json.dumps(row, ensure_ascii=False))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count


def write_xlsx(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[Column],
    out: IO[bytes],
    *,
    title: str,
    sheet_name: str,
    cells: Mapping[str, Any] | None = None,
    footer: str | None = None,
) -> int:
    """Write rows as an Excel workbook, streamed; return how many rows were written.

    The first row is ``title`` (bold, large), the second the bilingual headers (bold); both
    stay in view when the sheet scrolls. ``footer`` is one line written below the rows (a
    report's chain digest).

    ``cells`` maps a column key to a function turning the row into the cell's value (an
    Excel date-time or duration rather than text, so the sheet sorts and sums).
    """
    widths = [
        WIDE_COLUMNS.get(key) or min(max(display_width(f"{zh} {en}") + 2, 12), 48)
        for key, zh, en in columns
    ]
    converters = dict(cells or {})
    keys = [(key, converters.get(key)) for key, _, _ in columns]
    count = 0
    with xlsx.workbook(out, sheet_name=sheet_name, widths=widths, frozen_rows=2) as sheet:
        sheet.append([title], xlsx.TITLE)
        sheet.append(headers(columns), xlsx.BOLD)
        for row in rows:
            sheet.append(
                [convert(row) if convert is not None else row.get(key) for key, convert in keys]
            )
            count += 1
        if footer:
            sheet.append([])
            sheet.append([footer])
    return count


def anchor_line(digest: str) -> str:
    """The line a monthly report carries so its reader can keep the ledger's state outside it."""
    return f"链头摘要 chain digest (keep it; `pbxguard ledger verify` shows today's): {digest}"


def register_cells(timezone: ZoneInfo) -> Mapping[str, Any]:
    """Excel cell values for the register: local date-times and durations, not text."""

    def local(text: str) -> datetime:
        return datetime.fromisoformat(text).astimezone(timezone).replace(tzinfo=None)

    return {
        "start": lambda row: local(row["started_at"]),
        "end": lambda row: local(row["ended_at"]),
        "duration": lambda row: timedelta(seconds=row["duration_seconds"]),
    }


def rows_of(items: Iterable[Any], convert: Any) -> Iterator[dict[str, Any]]:
    """Yield ``convert(item)`` for each item (lazily: exports stream)."""
    for item in items:
        yield convert(item)
