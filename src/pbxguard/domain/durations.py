"""Call duration: business calls about three minutes at most (DU-1), private incoming calls
two (DU-4).

A `DurationLimit` of the policy times answered calls of some classes and callers. Past its
``limit`` a call is recorded as an offence of the limit's rule (DU-1 by default, no fine: the
regulations say "in principle", 原则上); past ``cut_after``, if set, it is hung up in enforce
mode; ``warn_before`` that, the caller is warned (a tone on their own channel, see
docs/policy.md). The whole rule is here: the tracker asks `limit_for` whether an answered call
is timed, `next_step` when to look at it again, `on_step` what each step does (effects, and a
cut with its reason, which the tracker carries out like any cut), and `on_end` what a call
that ended before anyone looked calls for.

Only calls allowed to go ahead are timed: a forbidden call is already an offence of its own
and is cut before it talks. Emergency calls are never timed. Inbound calls (DU-4) are timed on
the phone that answered them, against the audience of its owner or the person on duty; the PBX
cannot tell a private call from a business one, so a site sets DU-4 only where that is known
(a line for private calls, or as a record to review).
"""

from __future__ import annotations

import enum
from collections.abc import Set
from dataclasses import dataclass
from datetime import datetime, timedelta

from pbxguard.domain.effects import Effect, RecordOffence, WarnCaller
from pbxguard.domain.numbers import NumberClass
from pbxguard.domain.policy import Direction, DurationLimit, Mode, Policy
from pbxguard.domain.records import CallRef, OffenceDraft, Outcome
from pbxguard.domain.restrictions import Restriction


class Step(enum.StrEnum):
    """What a duration limit does to a talking call, in the order it happens."""

    RECORD = "record"  # past the limit: recorded under the rule
    WARN = "warn"  # the caller is warned that the call will be cut
    CUT = "cut"  # past the hard limit: hung up (enforce mode)


@dataclass(frozen=True, slots=True)
class TalkingCall:
    """An answered call as the duration rules see it.

    Attributes:
        call: the PBX identifiers.
        channel: the leg to hang up (the trunk leg outbound, the answering phone inbound).
        caller_channel: the channel of the person to warn (the calling phone, or the phone
            that answered an inbound call).
        extension: the site's phone on the call.
        person_id: who answers for it.
        person_name: their name.
        department: their department.
        role: their role.
        number: the other party's number.
        number_class: its class (outbound calls).
        answered_at: when it was answered.
        direction: outbound or inbound.
    """

    call: CallRef
    channel: str
    caller_channel: str
    extension: str
    person_id: str
    person_name: str
    department: str
    role: str
    number: str
    number_class: NumberClass | None
    answered_at: datetime
    direction: Direction


def limit_for(policy: Policy, talking: TalkingCall) -> DurationLimit | None:
    """Return the first duration limit of the policy that times ``talking``, if any."""
    if talking.number_class is NumberClass.EMERGENCY:
        return None
    for limit in policy.durations:
        if limit.direction is not talking.direction:
            continue
        if talking.direction is Direction.OUTBOUND and talking.number_class not in limit.classes:
            continue
        if limit.audience.includes(
            role=talking.role,
            department=talking.department,
            extension=talking.extension,
            person_id=talking.person_id,
        ):
            return limit
    return None


def _deadlines(limit: DurationLimit, answered_at: datetime) -> list[tuple[datetime, Step]]:
    steps = [(answered_at + limit.limit, Step.RECORD)]
    if limit.cut_after is not None:
        if limit.warn_before is not None and limit.warn_before < limit.cut_after:
            steps.append((answered_at + limit.cut_after - limit.warn_before, Step.WARN))
        steps.append((answered_at + limit.cut_after, Step.CUT))
    return sorted(steps)


def next_step(limit: DurationLimit, answered_at: datetime, done: Set[Step]) -> datetime | None:
    """Return when the next step not yet done is due."""
    return min(
        (at for at, step in _deadlines(limit, answered_at) if step not in done), default=None
    )


def due_steps(
    limit: DurationLimit, answered_at: datetime, now: datetime, done: Set[Step]
) -> list[Step]:
    """Return the steps due at ``now`` and not yet done, in order."""
    return [step for at, step in _deadlines(limit, answered_at) if at <= now and step not in done]


def overlong_at_end(limit: DurationLimit, talking: TalkingCall, ended: datetime) -> bool:
    """Tell whether a call that ended at ``ended`` talked past its limit."""
    return ended - talking.answered_at > limit.limit


def _minutes(span: timedelta) -> str:
    minutes = span.total_seconds() / 60
    return f"{minutes:g}"


def overlong_offence(
    policy: Policy, talking: TalkingCall, limit: DurationLimit, at: datetime, *, talked: timedelta
) -> OffenceDraft:
    """Return the record of a call that talked past its limit (an offence of its rule)."""
    who = talking.extension
    other = talking.number or "-"
    most, spent = _minutes(limit.limit), f"{talked.total_seconds() / 60:.1f}"
    if talking.direction is Direction.OUTBOUND:
        zh = f"{who} 拨打 {other} 通话超过{most}分钟（已通话{spent}分钟）"
        en = f"{who} called {other} for over {most} min ({spent} min)"
    else:
        zh = f"{who} 接听 {other} 来电超过{most}分钟（已通话{spent}分钟）"
        en = f"{who} took a call from {other} for over {most} min ({spent} min)"
    return OffenceDraft(
        key=f"{policy.site}:{talking.call.linkedid}:{limit.rule_id}:{talking.channel}",
        rule_id=limit.rule_id,
        at=at,
        call=talking.call,
        extension=talking.extension,
        person_id=talking.person_id,
        person_name=talking.person_name,
        department=talking.department,
        number=talking.number,
        number_class=talking.number_class.value if talking.number_class else "",
        talk_time=talked,
        outcome=Outcome.MONITORED,
        detail_zh=zh,
        detail_en=en,
        policy_version=policy.version,
    )


def cut_reason(limit: DurationLimit) -> tuple[str, str]:
    """Return why a call is hung up at its hard limit."""
    minutes = _minutes(limit.cut_after or limit.limit)
    return (
        f"通话已达{minutes}分钟上限，由系统挂断",
        f"the call reached its {minutes}-minute limit and was hung up",
    )


def warning_text(limit: DurationLimit) -> tuple[str, str]:
    """Return what the warning before the hard limit says."""
    seconds = int((limit.warn_before or timedelta(0)).total_seconds())
    return (
        f"通话将在{seconds}秒后因时长上限被挂断",
        f"the call will be hung up in {seconds} s: it reaches its time limit",
    )


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What one step asks for: effects to carry out, and a cut (with why) if the call must end."""

    effects: tuple[Effect, ...] = ()
    cut: Restriction | None = None


def on_step(
    policy: Policy, talking: TalkingCall, limit: DurationLimit, step: Step, now: datetime
) -> StepOutcome:
    """Return what ``step`` of ``limit`` does to a talking call at ``now``.

    Past the limit the call is recorded; the warning and the cut happen in enforce mode only
    (in monitor mode the record is all).
    """
    if step is Step.RECORD:
        draft = overlong_offence(policy, talking, limit, now, talked=now - talking.answered_at)
        return StepOutcome((RecordOffence(draft),))
    if policy.mode is not Mode.ENFORCE:
        return StepOutcome()
    if step is Step.WARN:
        zh, en = warning_text(limit)
        seconds = int((limit.warn_before or timedelta(0)).total_seconds())
        warning = WarnCaller(
            talking.caller_channel, talking.call.linkedid, limit.rule_id, seconds, zh, en
        )
        return StepOutcome((warning,))
    zh, en = cut_reason(limit)
    return StepOutcome(cut=Restriction(limit.rule_id, zh, en))


def on_end(
    policy: Policy, talking: TalkingCall, limit: DurationLimit, done: Set[Step], ended: datetime
) -> list[Effect]:
    """Return what a timed call that ended at ``ended`` calls for: its record, if it talked
    past its limit and nobody looked in time."""
    if Step.RECORD in done or not overlong_at_end(limit, talking, ended):
        return []
    draft = overlong_offence(policy, talking, limit, ended, talked=ended - talking.answered_at)
    return [RecordOffence(draft)]
