"""Read models as the console shows them: flat dicts of strings (for templates and JSON)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pbxguard.app.overview import LineState
from pbxguard.domain.access import ApprovalRequest, AuditEntry, ConsoleUser, SignOff
from pbxguard.domain.approvals import Approval, approval_state
from pbxguard.domain.effects import RaiseAlert
from pbxguard.domain.entries import OffenceEntry, RegisterEntry
from pbxguard.domain.policy import Policy
from pbxguard.domain.records import CallSummary
from pbxguard.domain.register import FillState
from pbxguard.entrypoints.render import offence_row, register_row

_TIME = "%Y-%m-%d %H:%M"


def local(value: datetime | None, zone: ZoneInfo) -> str:
    """Return a time in the site's timezone, or "" for none."""
    return value.astimezone(zone).strftime(_TIME) if value is not None else ""


def offence(entry: OffenceEntry, zone: ZoneInfo) -> dict[str, Any]:
    """Return an offence with its history of waivers, appeals and decisions."""
    row = offence_row(entry, zone)
    row["excused"] = entry.excused
    row["appeal_pending"] = entry.appeal_pending
    row["department_head_amount"] = str(entry.department_head_amount)
    row["history"] = [
        {"id": a.id, "kind": a.kind.value, "by": a.by, "reason": a.reason, "at": local(a.at, zone)}
        for a in entry.adjustments
    ]
    return row


def approval(item: Approval, policy: Policy, now: datetime) -> dict[str, Any]:
    """Return an approval with its window, uses and state."""
    zone = policy.timezone
    person = policy.people.get(item.person_id)
    return {
        "id": item.id,
        "person_id": item.person_id,
        "person": person.name if person else item.person_id,
        "number_class": item.number_class.value if item.number_class else "",
        "prefix": item.prefix,
        "valid_from": local(item.valid_from, zone),
        "valid_until": local(item.valid_until, zone),
        "max_calls": item.max_calls,
        "used_calls": item.used_calls,
        "granted_by": item.granted_by,
        "state": approval_state(item, now).value,
        "reason": item.reason,
    }


def request(item: ApprovalRequest, policy: Policy) -> dict[str, Any]:
    """Return an approval request and its answer."""
    zone = policy.timezone
    person = policy.people.get(item.person_id)
    return {
        "id": item.id,
        "person_id": item.person_id,
        "person": person.name if person else item.person_id,
        "department": item.department,
        "number_class": item.number_class.value if item.number_class else "",
        "prefix": item.prefix,
        "valid_from": local(item.valid_from, zone),
        "valid_until": local(item.valid_until, zone),
        "calls": item.calls,
        "reason": item.reason,
        "requested_at": local(item.requested_at, zone),
        "state": item.state.value,
        "answered_by": item.answered_by,
        "answered_at": local(item.answered_at, zone),
        "approval_id": item.approval_id,
        "answer": item.answer,
    }


def register_entry(entry: RegisterEntry, state: FillState, zone: ZoneInfo) -> dict[str, Any]:
    """Return a register entry with where it stands."""
    row = register_row(entry, zone)
    row["state"] = state.value
    return row


def sign_off(item: SignOff, zone: ZoneInfo) -> dict[str, Any]:
    """Return a sign-off."""
    return {
        "month": item.month,
        "report": item.report.value,
        "by": item.by,
        "at": local(item.at, zone),
        "note": item.note,
        "summary": item.summary,
    }


def user(item: ConsoleUser, zone: ZoneInfo) -> dict[str, Any]:
    """Return an account (never its password hash)."""
    return {
        "username": item.username,
        "role": item.role.value,
        "person_id": item.person_id,
        "display_name": item.display_name,
        "disabled": item.disabled,
        "created_at": local(item.created_at, zone),
        "changed_at": local(item.changed_at, zone),
    }


def audit(item: AuditEntry, zone: ZoneInfo) -> dict[str, Any]:
    """Return a line of the audit trail."""
    return {
        "id": item.id,
        "at": local(item.at, zone),
        "actor": item.actor,
        "role": item.role,
        "action": item.action,
        "target": item.target,
        "detail": item.detail,
    }


def alert(item: RaiseAlert, zone: ZoneInfo, lang: str) -> dict[str, Any]:
    """Return an open alert."""
    return {
        "key": item.key,
        "kind": item.kind.value,
        "rule": item.rule_id,
        "extension": item.extension,
        "name": item.name,
        "since": local(item.since, zone),
        "person": item.person_name or item.person_id,
        "message": item.message_en if lang == "en" else item.message_zh,
    }


def line(item: LineState, zone: ZoneInfo) -> dict[str, Any]:
    """Return a protected line's state."""
    return {
        "extension": item.extension,
        "name": item.name,
        "duty_line": item.duty_line,
        "availability": item.availability,
        "since": local(item.since, zone),
        "device_state": item.device_state,
    }


def call(item: CallSummary, zone: ZoneInfo) -> dict[str, Any]:
    """Return a stored call."""
    return {
        "linkedid": item.call.linkedid,
        "extension": item.extension,
        "person_id": item.person_id,
        "department": item.department,
        "number": item.number,
        "number_class": item.number_class,
        "direction": item.direction,
        "started_at": local(item.started_at, zone),
        "talk_seconds": int(item.talk_time.total_seconds()),
        "verdict": item.verdict,
        "rule": item.rule_id,
        "charge": str(item.charge),
    }
