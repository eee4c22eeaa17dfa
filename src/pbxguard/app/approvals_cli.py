"""The approval and authorization-code commands: ``pbxguard approve …`` and ``pbxguard code …``.

A long-distance call needs prior consent (LD-1: the department head; LD-5: a station head or
above, per policy). The approver grants it here, for a person, a number class or prefix, a
window and optionally a number of calls; the running guard reads active approvals from the
ledger (it refreshes them every half minute) and lets covered calls through. Authorization
codes let a caller unlock a class at the phone (FastAGI verdict ``pin``) on the code owner's
permissions; the ledger keeps only an argon2 hash of each code.
"""

from __future__ import annotations

import argparse
import enum
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pbxguard.adapters.clock import SystemClock
from pbxguard.adapters.ledger import FineLedger
from pbxguard.adapters.policy_file import load_policy
from pbxguard.adapters.settings import Settings, load_settings
from pbxguard.app.reports import render_table
from pbxguard.domain.approvals import Approval
from pbxguard.domain.evaluate import class_label
from pbxguard.domain.numbers import LONG_DISTANCE_CLASSES, NumberClass
from pbxguard.domain.policy import Person, Policy
from pbxguard.errors import AuthorizationCodeError, LedgerError, PbxGuardError

#: Classes an approval may cover: those LD-1/LD-5 put behind prior consent.
APPROVABLE_CLASSES = tuple(sorted(c.value for c in LONG_DISTANCE_CLASSES))
CODE_DIGITS = 6

# No 0/o, 1/l/i: IDs are read out over the phone and copied by hand.
_ID_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
_ID_LENGTH = 6
_ID_ATTEMPTS = 5
_CODE_ATTEMPTS = 5
_TIME = "%Y-%m-%d %H:%M"
_FORMATTING = str.maketrans("", "", " -.()")


class ApprovalState(enum.StrEnum):
    """Where an approval stands at a given time."""

    SCHEDULED = "scheduled"
    ACTIVE = "active"
    USED_UP = "used up"
    EXPIRED = "expired"
    REVOKED = "revoked"


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


def approval_state(approval: Approval, now: datetime) -> ApprovalState:
    """Return where ``approval`` stands at ``now``."""
    if approval.revoked:
        return ApprovalState.REVOKED
    if approval.max_calls is not None and approval.used_calls >= approval.max_calls:
        return ApprovalState.USED_UP
    if now >= approval.valid_until:
        return ApprovalState.EXPIRED
    if now < approval.valid_from:
        return ApprovalState.SCHEDULED
    return ApprovalState.ACTIVE


def _who(policy: Policy, person_id: str) -> str:
    person = policy.people.get(person_id)
    return f"{person.name} ({person_id})" if person else person_id


def approvers(policy: Policy) -> list[Person]:
    """Return the people whose role may approve long-distance calls, by id."""
    return sorted(
        (p for p in policy.people.values() if policy.role_of(p).can_approve), key=lambda p: p.id
    )


def person_named(policy: Policy, person_id: str) -> Person:
    """Return the person ``person_id`` of the policy's directory, or raise a clear error."""
    person = policy.people.get(person_id)
    if person is None:
        known = ", ".join(sorted(policy.people)) or "nobody"
        raise PbxGuardError(f"no person {person_id!r} in the policy; people: {known}")
    return person


def approver_named(policy: Policy, person_id: str) -> Person:
    """Return the approver ``person_id``, or raise an error naming who may approve."""
    allowed = approvers(policy)
    names = ", ".join(
        f"{p.id} ({p.name}, {policy.role_of(p).name_zh} {policy.role_of(p).name_en})"
        for p in allowed
    )
    who_may = f"who may approve: {names}" if allowed else "no role in the policy may approve"
    person = policy.people.get(person_id)
    if person is None:
        raise PbxGuardError(f"{person_id!r} is not a person in the policy; {who_may}")
    role = policy.role_of(person)
    if not role.can_approve:
        raise PbxGuardError(
            f"{person.name} ({person_id}, {role.name_zh} {role.name_en}) may not approve "
            f"long-distance calls (LD-1, LD-5); {who_may}"
        )
    return person


def parse_time(text: str, timezone: ZoneInfo, option: str) -> datetime:
    """Parse an ISO date-time; one without an offset is in the site's ``timezone``."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise PbxGuardError(
            f"{option} {text!r} is not an ISO date-time (2026-11-23T09:30)"
        ) from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone)
    return value


def approval_scope(
    policy: Policy, number_class: str | None, prefix: str | None
) -> tuple[NumberClass | None, str]:
    """Return the class or normalised prefix an approval covers, checked against the policy."""
    if number_class is not None:
        if number_class not in APPROVABLE_CLASSES:
            raise PbxGuardError(
                f"--class {number_class!r}: approvals are for {', '.join(APPROVABLE_CLASSES)}"
            )
        return NumberClass(number_class), ""
    if prefix is None:
        raise PbxGuardError("say what is approved: --class CLASS or --prefix DIGITS")
    cleaned = prefix.translate(_FORMATTING)
    digits = "00" + cleaned[1:] if cleaned.startswith("+") else cleaned
    if not digits.isdigit():
        raise PbxGuardError(f"--prefix {prefix!r} must be digits (00852, 010, +44)")
    found = policy.classifier.lookup(digits)
    if found is None or found[1] not in LONG_DISTANCE_CLASSES:
        what = f"{class_label(found[1])[1]}s" if found else "not numbers the plan knows"
        raise PbxGuardError(
            f"--prefix {prefix}: numbers starting with it are {what}; approvals cover "
            "long-distance, Hong Kong/Macau, Taiwan and international numbers only"
        )
    return None, digits


def _scope_text(approval: Approval) -> str:
    if approval.number_class is not None:
        zh, _ = class_label(approval.number_class)
        text = f"{zh} {approval.number_class.value}"
        return f"{text} {approval.prefix}…" if approval.prefix else text
    return f"{approval.prefix}…"


def approval_row(
    approval: Approval, policy: Policy, now: datetime, timezone: ZoneInfo
) -> dict[str, Any]:
    """Return one approval as a row of display strings."""
    limit = "∞" if approval.max_calls is None else str(approval.max_calls)
    return {
        "id": approval.id,
        "person": _who(policy, approval.person_id),
        "scope": _scope_text(approval),
        "from": approval.valid_from.astimezone(timezone).strftime(_TIME),
        "until": approval.valid_until.astimezone(timezone).strftime(_TIME),
        "uses": f"{approval.used_calls}/{limit}",
        "granted_by": _who(policy, approval.granted_by),
        "state": STATE_LABELS[approval_state(approval, now)],
        "reason": approval.reason or "-",
    }


def new_approval_id() -> str:
    """Return a short, readable, random approval id (``ap-7k3m9q``)."""
    return "ap-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))


def new_code() -> str:
    """Return a random authorization code of `CODE_DIGITS` digits."""
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


@asynccontextmanager
async def _ledger(settings: Settings) -> AsyncIterator[FineLedger]:
    async with await FineLedger.open(settings.ledger.url) as store:
        await store.migrate()
        yield store


def _load(config: str | None) -> tuple[Settings, Policy]:
    settings = load_settings(config)
    return settings, load_policy(settings.policy).policy


# -- approve ---------------------------------------------------------------------------------


async def approve(args: argparse.Namespace) -> int:
    """Run ``pbxguard approve grant|list|revoke``."""
    if args.approve_command == "grant":
        return await approve_grant(args)
    if args.approve_command == "list":
        return await approve_list(args)
    return await approve_revoke(args)


async def approve_grant(args: argparse.Namespace) -> int:
    """Grant a person prior approval for long-distance calls."""
    settings, policy = _load(args.config)
    zone = policy.timezone
    person = person_named(policy, args.person)
    approver = approver_named(policy, args.by)
    if approver.id == person.id:
        raise PbxGuardError(f"{approver.name} cannot approve their own calls")
    valid_from = parse_time(args.valid_from, zone, "--from")
    valid_until = parse_time(args.valid_until, zone, "--until")
    if valid_until <= valid_from:
        raise PbxGuardError(
            f"--until {valid_until.astimezone(zone):{_TIME}} must be after "
            f"--from {valid_from.astimezone(zone):{_TIME}}"
        )
    now = SystemClock().now()
    if valid_until <= now:
        raise PbxGuardError(f"--until {valid_until.astimezone(zone):{_TIME}} is already past")
    if args.calls is not None and args.calls < 1:
        raise PbxGuardError("--calls must be at least 1")
    number_class, prefix = approval_scope(policy, args.number_class, args.prefix)
    async with _ledger(settings) as store:
        for _ in range(_ID_ATTEMPTS):
            approval = Approval(
                id=new_approval_id(),
                person_id=person.id,
                granted_by=approver.id,
                valid_from=valid_from,
                valid_until=valid_until,
                number_class=number_class,
                prefix=prefix,
                max_calls=args.calls,
                reason=args.reason,
            )
            if await store.grant_approval(approval):
                break
        else:
            raise LedgerError("could not find a free approval id; try again")
    row = approval_row(approval, policy, now, zone)
    print(f"已批准 approved: {approval.id}")
    print(f"  使用人 person   : {row['person']}")
    print(f"  范围 scope      : {row['scope']}")
    print(f"  有效期 window   : {row['from']} – {row['until']} ({zone.key})")
    print(f"  次数 calls      : {'不限 unlimited' if args.calls is None else args.calls}")
    print(f"  批准人 approver : {row['granted_by']}")
    if args.reason:
        print(f"  事由 reason     : {args.reason}")
    role = policy.role_of(person)
    if number_class is not None and number_class in role.allowed:
        print(f"  注意 note: {person.name} may already dial this class without approval")
    return 0


async def approve_list(args: argparse.Namespace) -> int:
    """List approvals with their state, the current ones unless ``--all``."""
    settings, policy = _load(args.config)
    now = SystemClock().now()
    async with _ledger(settings) as store:
        found = await store.approvals(person=args.person)
    current = (ApprovalState.ACTIVE, ApprovalState.SCHEDULED)
    shown = [a for a in found if args.all or approval_state(a, now) in current]
    if not shown:
        hint = "" if args.all else " (--all also lists expired, used-up and revoked ones)"
        print(f"没有批准记录 — no approvals to show{hint}.")
        return 0
    rows = [approval_row(a, policy, now, policy.timezone) for a in shown]
    print(render_table(rows, APPROVAL_COLUMNS))
    return 0


async def approve_revoke(args: argparse.Namespace) -> int:
    """Revoke an approval before its window ends."""
    settings, policy = _load(args.config)
    approver = approver_named(policy, args.by)
    if not args.reason.strip():
        raise PbxGuardError("--reason must say why the approval is revoked")
    now = SystemClock().now()
    async with _ledger(settings) as store:
        known = {a.id: a for a in await store.approvals()}
        existing = known.get(args.id)
        if existing is None:
            raise PbxGuardError(
                f"no approval {args.id!r} in the ledger; `pbxguard approve list --all` lists them"
            )
        if existing.revoked:
            print(f"{args.id} 已撤销 was already revoked")
            return 0
        revoked = await store.revoke_approval(args.id, by=approver.id, at=now, reason=args.reason)
    row = approval_row(revoked, policy, now, policy.timezone)
    print(f"已撤销 revoked: {revoked.id} ({row['person']}, {row['scope']}) by {approver.name}")
    return 0


# -- code ------------------------------------------------------------------------------------


async def code(args: argparse.Namespace) -> int:
    """Run ``pbxguard code issue|list|revoke``."""
    if args.code_command == "list":
        return await code_list(args)
    if args.code_command == "revoke":
        return await code_revoke(args)
    return await code_issue(args)


_CODE_ENDED = {
    "": "有效 in force",
    "used": "已使用 used",
    "revoked": "已撤销 revoked",
    "expired": "已过期 expired",
}


async def code_list(args: argparse.Namespace) -> int:
    """List the codes issued, never their digits."""
    settings, policy = _load(args.config)
    zone = policy.timezone
    async with _ledger(settings) as store:
        found = await store.codes(now=SystemClock().now(), person=args.person)
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
    print(
        render_table(
            rows,
            (
                ("id", "编号", "id"),
                ("person", "持有人", "owner"),
                ("kind", "类型", "kind"),
                ("issued", "发放", "issued"),
                ("expires", "到期", "expires"),
                ("used", "使用次数", "uses"),
                ("state", "状态", "state"),
            ),
        )
    )
    return 0


async def code_revoke(args: argparse.Namespace) -> int:
    """Withdraw a code at once."""
    settings, _policy = _load(args.config)
    if not args.reason.strip():
        raise PbxGuardError("--reason must say why the code is revoked")
    async with _ledger(settings) as store:
        info = await store.revoke_code(
            args.id, by=args.by, at=SystemClock().now(), reason=args.reason
        )
    print(f"授权码已撤销 code {info.id} of {info.person_id} revoked by {args.by}")
    return 0


async def code_issue(args: argparse.Namespace) -> int:
    """Issue an authorization code; print a generated one once, store only its hash."""
    settings, policy = _load(args.config)
    zone = policy.timezone
    person = person_named(policy, args.person)
    if not args.by.strip():
        raise PbxGuardError("--by must name who issues the code")
    now = SystemClock().now()
    expires = parse_time(args.expires, zone, "--expires") if args.expires else None
    if expires is not None and expires <= now:
        raise PbxGuardError(f"--expires {expires.astimezone(zone):{_TIME}} is already past")
    chosen: str | None = args.code
    async with _ledger(settings) as store:
        for attempt in range(1, _CODE_ATTEMPTS + 1):
            value = chosen or new_code()
            try:
                await store.issue_code(
                    person.id,
                    value,
                    one_time=args.one_time,
                    expires_at=expires,
                    by=args.by,
                    at=now,
                )
            except AuthorizationCodeError:
                # A generated code that clashes with one in force is simply drawn again.
                if chosen is not None or attempt == _CODE_ATTEMPTS:
                    raise
                continue
            break
    kind = "一次性 one-time" if args.one_time else "可重复使用 reusable"
    until = (
        f"有效至 expires {expires.astimezone(zone):{_TIME}}" if expires else "长期有效 no expiry"
    )
    print(f"授权码已发放 code issued for {person.name} ({person.id}) · {kind} · {until}")
    if chosen is None:
        print(f"  授权码 code: {value}")
        print("  只显示这一次，系统只保存其哈希 — shown only now; pbxguard keeps only its hash.")
    return 0
