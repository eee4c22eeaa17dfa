"""Emergency calls reported to the security desk at once (as Kari's Law asks in the US).

Every call to an emergency number (110, 119, 120, 122, 112 …), from any phone, is told to the
security desk while it is placed: which extension, whose phone or which room it is, the number
and the time. The notice is an effect like any other: the tracker emits it when it sees the
call reach a trunk, the pre-dial gate when it is asked about an emergency number (the shipped
dialplan dials them before asking), and the shell delivers it off the call's path. Nothing
about the call itself changes: emergency calls are never refused, delayed or hung up.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pbxguard.domain.evaluate import Decision
from pbxguard.domain.policy import Policy
from pbxguard.domain.records import CallRef, Layer


@dataclass(frozen=True, slots=True)
class EmergencyNotice:
    """An emergency call the security desk must hear about now.

    Attributes:
        key: one per call (``site:emergency:Linkedid``): subscribers drop repeats by it.
        site: the site.
        at: when the call was placed (the PBX's time).
        call: the PBX's identifiers of the call.
        layer: which layer saw it (``ami``: it reached a trunk; ``agi``: the dialplan asked).
        extension: the calling phone.
        caller_name: the caller id name the phone sent.
        person_id: who answers for the phone (its owner, or whoever the rota has on duty).
        person_name: their name.
        department: their department.
        location: where the phone is (the policy's ``[locations]``), or "".
        dialled: what was dialled.
        number: the emergency number.
    """

    key: str
    site: str
    at: datetime
    call: CallRef
    layer: Layer
    extension: str
    caller_name: str
    person_id: str
    person_name: str
    department: str
    location: str
    dialled: str
    number: str

    @property
    def who_zh(self) -> str:
        """Return the caller and the phone's place, in Chinese."""
        parts = [self.person_name or self.caller_name or "未知人员", f"分机 {self.extension}"]
        if self.location:
            parts.append(self.location)
        return "，".join(parts)

    @property
    def who_en(self) -> str:
        """Return the caller and the phone's place, in English."""
        parts = [self.person_name or self.caller_name or "unknown caller", f"ext. {self.extension}"]
        if self.location:
            parts.append(self.location)
        return ", ".join(parts)

    def message_zh(self, local_time: str) -> str:
        """Return the notice in Chinese, with the call's time as the site reads it."""
        return f"紧急呼叫：{self.who_zh} 于 {local_time} 拨打 {self.number}"

    def message_en(self, local_time: str) -> str:
        """Return the notice in English, with the call's time as the site reads it."""
        return f"emergency call: {self.who_en} dialled {self.number} at {local_time}"


def emergency_key(site: str, linkedid: str) -> str:
    """Return the key of a call's emergency notice (the same on both layers)."""
    return f"{site}:emergency:{linkedid}"


def emergency_notice(
    decision: Decision,
    policy: Policy,
    *,
    call: CallRef,
    at: datetime,
    layer: Layer,
    caller_name: str = "",
) -> EmergencyNotice:
    """Return the notice of an emergency call judged by ``decision``."""
    return EmergencyNotice(
        key=emergency_key(policy.site, call.linkedid),
        site=policy.site,
        at=at,
        call=call,
        layer=layer,
        extension=decision.extension,
        caller_name=caller_name,
        person_id=decision.person_id,
        person_name=decision.person_name,
        department=decision.department,
        location=policy.location_of(decision.extension),
        dialled=decision.classification.dialled,
        number=decision.classification.number,
    )
