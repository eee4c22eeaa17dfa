"""Rules about calls on duty lines: answer in time, do not reject, keep the alarm phone free.

AN-1 (answer within three rings), DT-2 (no rejecting internal calls on an idle duty phone),
DT-3 (no private calls from a dispatch phone in operating hours) and EM-1 (an inbound call
must not occupy the guard-room alarm phone). Each function looks at one finished ring or one
call and returns the offence it is, or None; the call tracker decides when to ask.

Whoever the rota has on duty on a shared line answers for it (谁值班、谁负责, EM-3/4); without
a rota entry the phone's owner in the directory does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pbxguard.domain.evaluate import Decision
from pbxguard.domain.numbers import NumberClass
from pbxguard.domain.policy import Line, Person, Policy
from pbxguard.domain.records import CallRef, OffenceDraft, Outcome

#: Destinations that are always business for a dispatch phone (DT-3).
_ALWAYS_BUSINESS = frozenset({NumberClass.EMERGENCY, NumberClass.INTERNAL})


@dataclass(frozen=True, slots=True)
class RingEnd:
    """A duty phone that rang, and how the ringing ended (``DialEnd``'s status)."""

    extension: str
    channel: str
    began: datetime
    ended: datetime
    status: str

    @property
    def rang(self) -> timedelta:
        """How long it rang."""
        return self.ended - self.began


@dataclass(frozen=True, slots=True)
class Occupation:
    """An answered inbound call on the alarm phone."""

    channel: str
    extension: str
    answered_at: datetime
    grace: int


def responsible_person(policy: Policy, line: Line, extension: str, at: datetime) -> Person | None:
    """Return who answers for a line at ``at``: the rota's person on duty, else the owner."""
    on_duty = policy.rota.on_duty(line.duty_line, at) if policy.rota and line.duty_line else None
    return policy.people.get(on_duty or "") or policy.person_at(extension)


def _draft(
    policy: Policy,
    call: CallRef,
    rule_id: str,
    *,
    at: datetime,
    extension: str,
    person: Person | None,
    key: str,
    detail: tuple[str, str],
    outcome: Outcome = Outcome.MONITORED,
    number: str = "",
    number_class: str = "",
) -> OffenceDraft:
    return OffenceDraft(
        key=f"{policy.site}:{call.uniqueid}:{rule_id}:{key}",
        rule_id=rule_id,
        at=at,
        call=call,
        extension=extension,
        person_id=person.id if person else "",
        person_name=person.name if person else "",
        department=person.department if person else "",
        number=number,
        number_class=number_class,
        outcome=outcome,
        detail_zh=detail[0],
        detail_en=detail[1],
        policy_version=policy.version,
    )


def dispatch_use_offence(
    policy: Policy, call: CallRef, extension: str, decision: Decision, at: datetime
) -> OffenceDraft | None:
    """DT-3: a dispatch phone calling a non-business number in operating hours."""
    line = policy.line(extension)
    if line is None or not line.operating or "DT-3" not in policy.rules:
        return None
    schedule = policy.schedules.get(line.operating)
    if schedule is None or not schedule.is_active(at):
        return None
    number = decision.classification.number
    business = any(number.startswith(prefix) for prefix in line.business_numbers)
    if business or decision.number_class in _ALWAYS_BUSINESS:
        return None
    dialled = decision.classification.dialled
    return _draft(
        policy,
        call,
        "DT-3",
        at=at,
        extension=extension,
        person=responsible_person(policy, line, extension, at),
        key="dispatch",
        detail=(
            f"营运时间内用{line.name}拨打非业务号码 {dialled}",
            f"the {line.name} dialled a non-business number {dialled} in operating hours",
        ),
        number=number,
        number_class=decision.number_class.value,
    )


def late_answer_offence(
    policy: Policy, call: CallRef, line: Line, ring: RingEnd
) -> OffenceDraft | None:
    """AN-1: a hotline or duty call not answered within its limit (three rings).

    A caller who gave up (CANCEL) or a busy line is no late answer, however long it rang.
    """
    if line.answer_within is None or "AN-1" not in policy.rules:
        return None
    if ring.status not in ("ANSWER", "NOANSWER"):
        return None
    if ring.rang <= timedelta(seconds=line.answer_within):
        return None
    seconds = int(ring.rang.total_seconds())
    answered = ring.status == "ANSWER"
    zh = (
        f"{line.name}响铃{seconds}秒{'后才接听' if answered else '无人接听'}"
        f"（应在{line.answer_within}秒内接听）"
    )
    en = (
        f"{line.name} rang {seconds}s "
        f"{'before it was answered' if answered else 'and was not answered'} "
        f"(limit {line.answer_within}s)"
    )
    return _draft(
        policy,
        call,
        "AN-1",
        at=ring.ended,
        extension=ring.extension,
        person=responsible_person(policy, line, ring.extension, ring.began),
        key=ring.channel,
        detail=(zh, en),
    )


def rejection_offence(
    policy: Policy,
    call: CallRef,
    line: Line,
    ring: RingEnd,
    *,
    caller_extension: str | None,
    busy_elsewhere: bool,
) -> OffenceDraft | None:
    """DT-2: an internal call rejected (busy) on a duty phone that was not on another call."""
    if not line.reject_rule or ring.status != "BUSY":
        return None
    if caller_extension is None or busy_elsewhere:
        return None  # only internal calls count, and a phone on another call is truly busy
    return _draft(
        policy,
        call,
        line.reject_rule,
        at=ring.ended,
        extension=ring.extension,
        person=responsible_person(policy, line, ring.extension, ring.began),
        key=ring.channel,
        detail=(
            f"{line.name}空闲时拒接{caller_extension}的内部来电",
            f"{line.name} rejected an internal call from {caller_extension} while idle",
        ),
    )


def occupancy_offence(
    policy: Policy,
    call: CallRef,
    line: Line,
    occupation: Occupation,
    *,
    caller_extension: str | None,
    fallback_extension: str,
    now: datetime,
    enforce: bool,
) -> OffenceDraft | None:
    """EM-1: an inbound call keeps the alarm phone busy past the grace period.

    The caller answers for it when they are a phone of the site; otherwise whoever answers for
    the alarm phone does.
    """
    if "EM-1" not in policy.rules:
        return None
    person = (policy.person_at(caller_extension) if caller_extension else None) or (
        responsible_person(policy, line, occupation.extension, occupation.answered_at)
    )
    seconds = int((now - occupation.answered_at).total_seconds())
    return _draft(
        policy,
        call,
        "EM-1",
        at=now,
        extension=caller_extension or fallback_extension,
        person=person,
        key=f"occupied:{occupation.channel}",
        detail=(
            f"来电占用{line.name}超过{occupation.grace}秒（已{seconds}秒）",
            f"an inbound call occupied the {line.name} for over {occupation.grace}s ({seconds}s)",
        ),
        outcome=Outcome.CUT_ORDERED if enforce else Outcome.MONITORED,
        number=occupation.extension,
    )
