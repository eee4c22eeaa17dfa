"""Ledger reports for people (bilingual tables) and for scripts (CSV, JSON)."""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from collections.abc import Sequence
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from pbxguard.adapters.ledger import OffenceEntry
from pbxguard.domain.penalties import SANCTION_LABELS

OFFENCE_COLUMNS: tuple[tuple[str, str, str], ...] = (
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

_OUTCOME_LABELS = {
    "refused": "拨号前拒绝 refused",
    "hung_up": "已挂断 hung up",
    "monitored": "仅记录 recorded",
    "not_stopped": "未能拦截 not stopped",
}


def offence_row(entry: OffenceEntry, timezone: ZoneInfo) -> dict[str, Any]:
    """Return one offence as a flat row of strings (JSON-ready)."""
    sanctions = "; ".join(
        f"{SANCTION_LABELS[s][0]} {SANCTION_LABELS[s][1]}" for s in entry.sanctions
    )
    if entry.excused:
        sanctions = (sanctions + "; " if sanctions else "") + "已免除 waived"
    return {
        "id": entry.id,
        "at": entry.at.astimezone(timezone).strftime("%Y-%m-%d %H:%M:%S"),
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
        "outcome": _OUTCOME_LABELS.get(entry.outcome.value, entry.outcome.value),
        "amount": str(entry.amount),
        "charge": str(entry.charge),
        "step": entry.escalation_step,
        "repeat_offender": entry.fine.repeat_offender,
        "sanctions": sanctions or "-",
        "detail_zh": entry.detail_zh,
        "detail_en": entry.detail_en,
        "linkedid": entry.call.linkedid if entry.call else "",
        "policy_version": entry.policy_version,
    }


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def render_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """Render rows as an aligned text table with bilingual headers (Chinese first)."""
    headers = [f"{zh} {en}" for _, zh, en in columns]
    cells = [[str(row[key]) for key, _, _ in columns] for row in rows]
    widths = [max([_width(h), *(_width(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(_pad(h, w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(
        "  ".join(_pad(c, w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )
    return "\n".join(lines)


def render_offences(entries: Sequence[OffenceEntry], timezone: ZoneInfo, fmt: str) -> str:
    """Render offences as ``table``, ``csv`` or ``json``."""
    rows = [offence_row(e, timezone) for e in entries]
    if fmt == "json":
        return json.dumps(rows, ensure_ascii=False, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        keys = [k for k, _, _ in OFFENCE_COLUMNS] + ["rule_title_zh", "detail_zh", "linkedid"]
        writer = csv.DictWriter(out, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
        header = {k: f"{zh} {en}" for k, zh, en in OFFENCE_COLUMNS}
        header |= {
            "rule_title_zh": "规则内容 rule",
            "detail_zh": "经过 detail",
            "linkedid": "Linkedid",
        }
        writer.writerow(header)
        writer.writerows(rows)
        return out.getvalue()
    if not rows:
        return "台账中没有符合条件的记录 — no offences match."
    total = sum((e.amount for e in entries), Decimal("0.00"))
    summary = f"合计 total: {len(rows)} 条 offences, {total} 元 yuan"
    return f"{render_table(rows, OFFENCE_COLUMNS)}\n\n{summary}"
