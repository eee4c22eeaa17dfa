"""The call tracker on event sequences shaped like the recorded AMI captures.

Channel names, Uniqueids, Linkedids and times are those of the captures in
``/work/shared/fixtures/ami`` (Newchannel, DialBegin, DialEnd and Hangup events only).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbxguard.adapters.policy_file import load_policy
from pbxguard.domain.call_events import (
    ChannelCreated,
    ChannelHungUp,
    ChannelSeen,
    DialBegan,
    DialEnded,
    ResyncDone,
    Tick,
    TrackerEvent,
)
from pbxguard.domain.calls import CallTracker
from pbxguard.domain.effects import (
    HANGUP_CAUSE_CALL_REJECTED,
    Effect,
    HangupChannel,
    RecordCall,
    RecordDecision,
    RecordOffence,
    RecordOffenceOutcome,
)
from pbxguard.domain.penalties import assess
from pbxguard.domain.policy import Mode, Policy
from pbxguard.domain.records import Ending, Layer, Outcome, final_outcome
from pbxguard.domain.rota import DatedShift, Rota

REFERENCE_SITE = Path(__file__).parents[2] / "src/pbxguard/policies/reference-site.toml"
LOADED = load_policy(REFERENCE_SITE)
ROTA = {"hotline": "duty-wang", "guard_room": "guard-li"}

E = TypeVar("E")
ChannelEvent = TrackerEvent


def t(timestamp: float) -> datetime:
    """Return the time of an AMI ``Timestamp`` header."""
    return datetime.fromtimestamp(timestamp, tz=UTC)


def rota_policy(policy: Policy) -> Policy:
    """The reference policy with a rota: duty-wang on the hotline, guard-li in the guard room."""
    zone = policy.timezone
    rota = Rota(zone)
    for line, person in ROTA.items():
        rota = rota.with_shift(
            DatedShift(
                line, person, datetime(2026, 1, 1, tzinfo=zone), datetime(2028, 1, 1, tzinfo=zone)
            )
        )
    return dataclasses.replace(policy, rota=rota)


def make_tracker(mode: Mode = Mode.ENFORCE) -> CallTracker:
    policy = dataclasses.replace(rota_policy(LOADED.policy), mode=mode)
    return CallTracker(policy, LOADED.channels)


def only(effects: list[Effect], kind: type[E]) -> list[E]:
    return [e for e in effects if isinstance(e, kind)]


def judged(effects: list[Effect]) -> list[tuple[str, str]]:
    """The calls the AMI layer judged (one decision each): (extension, dialled)."""
    return [
        (d.record.extension, d.record.dialled)
        for d in only(effects, RecordDecision)
        if d.record.layer is Layer.AMI
    ]


# --- the captures ---------------------------------------------------------------------------

INTL_PHONE = "PJSIP/2001-00000000"
INTL_TRUNK = "Local/00441632960123@pstn-00000000;1"
INTL_TRUNK_2 = "Local/00441632960123@pstn-00000000;2"
INTL_DIALLING: list[ChannelEvent] = [
    ChannelCreated(t(1795397584.158109), INTL_PHONE, "1795397584.0", "1795397584.0",
                   "2001", "Staff 2001", "00441632960123"),
    ChannelCreated(t(1795397584.159392), INTL_TRUNK, "1795397584.1", "1795397584.0",
                   "<unknown>", "<unknown>", "00441632960123"),
    ChannelCreated(t(1795397584.159397), INTL_TRUNK_2, "1795397584.2", "1795397584.0",
                   "<unknown>", "<unknown>", "00441632960123"),
    DialBegan(t(1795397584.159466), INTL_PHONE, "1795397584.0", "1795397584.0", "2001",
              "Staff 2001", "00441632960123", INTL_TRUNK, "1795397584.1",
              "00441632960123@pstn"),
]  # fmt: skip
# staff-international-answered: answered after 3 s, talks ~7 s, 2001 hangs up.
INTL_ANSWERED: list[ChannelEvent] = [
    DialEnded(t(1795397587.162931), INTL_PHONE, "1795397584.0", INTL_TRUNK, "ANSWER"),
    ChannelHungUp(t(1795397594.180232), INTL_TRUNK, "1795397584.1", "1795397584.0", "16"),
    ChannelHungUp(t(1795397594.180895), INTL_TRUNK_2, "1795397584.2", "1795397584.0", "16"),
    ChannelHungUp(t(1795397594.181147), INTL_PHONE, "1795397584.0", "1795397584.0", "16"),
]
# What the PBX reports after the guard's Hangup (cause 21) of the trunk leg, as in
# hk-call-cut-by-ami-hangup.
INTL_CUT: list[ChannelEvent] = [
    DialEnded(t(1795397585.301096), INTL_PHONE, "1795397584.0", INTL_TRUNK, "NOANSWER"),
    ChannelHungUp(t(1795397585.301183), INTL_TRUNK, "1795397584.1", "1795397584.0", "21"),
    ChannelHungUp(t(1795397585.301773), INTL_TRUNK_2, "1795397584.2", "1795397584.0", "21"),
    ChannelHungUp(t(1795397585.301805), INTL_PHONE, "1795397584.0", "1795397584.0", "21"),
]

PREM_PHONE = "PJSIP/2002-00000001"
PREM_TRUNK = "Local/16812345678@pstn-00000001;1"
PREM_TRUNK_2 = "Local/16812345678@pstn-00000001;2"
PREM_DIALLING: list[ChannelEvent] = [
    ChannelCreated(t(1795397596.901421), PREM_PHONE, "1795397596.3", "1795397596.3",
                   "2002", "Staff 2002", "16812345678"),
    ChannelCreated(t(1795397596.902331), PREM_TRUNK, "1795397596.4", "1795397596.3",
                   "<unknown>", "<unknown>", "16812345678"),
    ChannelCreated(t(1795397596.902335), PREM_TRUNK_2, "1795397596.5", "1795397596.3",
                   "<unknown>", "<unknown>", "16812345678"),
    DialBegan(t(1795397596.903051), PREM_PHONE, "1795397596.3", "1795397596.3", "2002",
              "Staff 2002", "16812345678", PREM_TRUNK, "1795397596.4", "16812345678@pstn"),
]  # fmt: skip
# staff-premium-168: answered after 3 s, talks ~5 s; the phone hangs up before Local;2.
PREM_ANSWER_AT = t(1795397599.903942)
PREM_PHONE_GONE_AT = t(1795397604.925822)
PREM_TRUNK_GONE_AT = t(1795397604.925659)
PREM_ANSWERED: list[ChannelEvent] = [
    DialEnded(PREM_ANSWER_AT, PREM_PHONE, "1795397596.3", PREM_TRUNK, "ANSWER"),
    ChannelHungUp(PREM_TRUNK_GONE_AT, PREM_TRUNK, "1795397596.4", "1795397596.3", "16"),
    ChannelHungUp(PREM_PHONE_GONE_AT, PREM_PHONE, "1795397596.3", "1795397596.3", "16"),
    ChannelHungUp(t(1795397604.926050), PREM_TRUNK_2, "1795397596.5", "1795397596.3", "16"),
]
PREM_CUT: list[ChannelEvent] = [
    DialEnded(t(1795397597.5), PREM_PHONE, "1795397596.3", PREM_TRUNK, "NOANSWER"),
    ChannelHungUp(t(1795397597.501), PREM_TRUNK, "1795397596.4", "1795397596.3", "21"),
    ChannelHungUp(t(1795397597.502), PREM_TRUNK_2, "1795397596.5", "1795397596.3", "21"),
    ChannelHungUp(t(1795397597.503), PREM_PHONE, "1795397596.3", "1795397596.3", "21"),
]

HEAD_PHONE = "PJSIP/9001-00000003"
HEAD_TRUNK = "Local/02787654321@pstn-00000003;1"
HEAD_TRUNK_2 = "Local/02787654321@pstn-00000003;2"
HEAD_CALL: list[ChannelEvent] = [
    ChannelCreated(t(1795397616.860529), HEAD_PHONE, "1795397616.9", "1795397616.9",
                   "9001", "Department head", "02787654321"),
    ChannelCreated(t(1795397616.861663), HEAD_TRUNK, "1795397616.10", "1795397616.9",
                   "<unknown>", "<unknown>", "02787654321"),
    ChannelCreated(t(1795397616.861675), HEAD_TRUNK_2, "1795397616.11", "1795397616.9",
                   "<unknown>", "<unknown>", "02787654321"),
    DialBegan(t(1795397616.861736), HEAD_PHONE, "1795397616.9", "1795397616.9", "9001",
              "Department head", "02787654321", HEAD_TRUNK, "1795397616.10",
              "02787654321@pstn"),
    DialEnded(t(1795397619.863329), HEAD_PHONE, "1795397616.9", HEAD_TRUNK, "ANSWER"),
    ChannelHungUp(t(1795397623.874727), HEAD_TRUNK, "1795397616.10", "1795397616.9", "16"),
    ChannelHungUp(t(1795397623.874775), HEAD_TRUNK_2, "1795397616.11", "1795397616.9", "16"),
    ChannelHungUp(t(1795397623.874789), HEAD_PHONE, "1795397616.9", "1795397616.9", "16"),
]  # fmt: skip

ALARM_PHONE = "PJSIP/8000-00000004"
ALARM_TRUNK = "Local/110@pstn-00000004;1"
ALARM_110: list[ChannelEvent] = [
    ChannelCreated(t(1795397626.059447), ALARM_PHONE, "1795397626.12", "1795397626.12",
                   "8000", "Guard room alarm", "110"),
    ChannelCreated(t(1795397626.059618), ALARM_TRUNK, "1795397626.13", "1795397626.12",
                   "<unknown>", "<unknown>", "110"),
    ChannelCreated(t(1795397626.059622), "Local/110@pstn-00000004;2", "1795397626.14",
                   "1795397626.12", "<unknown>", "<unknown>", "110"),
    DialBegan(t(1795397626.059708), ALARM_PHONE, "1795397626.12", "1795397626.12", "8000",
              "Guard room alarm", "110", ALARM_TRUNK, "1795397626.13", "110@pstn"),
    DialEnded(t(1795397629.061012), ALARM_PHONE, "1795397626.12", ALARM_TRUNK, "ANSWER"),
    ChannelHungUp(t(1795397634.075314), ALARM_TRUNK, "1795397626.13", "1795397626.12", "16"),
    ChannelHungUp(t(1795397634.075322), "Local/110@pstn-00000004;2", "1795397626.14",
                  "1795397626.12", "16"),
    ChannelHungUp(t(1795397634.075327), ALARM_PHONE, "1795397626.12", "1795397626.12", "16"),
]  # fmt: skip

HOTLINE_CALLER = "PJSIP/2001-00000006"
HOTLINE_PHONE = "PJSIP/8001-00000007"
HOTLINE_RANG_AT = t(1795397645.525128)
# hotline-unanswered: 2001 calls 8001, it rings 20 s, NOANSWER.
HOTLINE_UNANSWERED: list[ChannelEvent] = [
    ChannelCreated(t(1795397645.521537), HOTLINE_CALLER, "1795397645.18", "1795397645.18",
                   "2001", "Staff 2001", "8001"),
    ChannelCreated(t(1795397645.523716), HOTLINE_PHONE, "1795397645.19", "1795397645.18",
                   "8001", "Hotline duty 1", "s"),
    DialBegan(HOTLINE_RANG_AT, HOTLINE_CALLER, "1795397645.18", "1795397645.18", "2001",
              "Staff 2001", "8001", HOTLINE_PHONE, "1795397645.19", "8001"),
    DialEnded(t(1795397665.538631), HOTLINE_CALLER, "1795397645.18", HOTLINE_PHONE,
              "NOANSWER"),
    ChannelHungUp(t(1795397665.539576), HOTLINE_PHONE, "1795397645.19", "1795397645.18",
                  "0"),
    ChannelHungUp(t(1795397665.539792), HOTLINE_CALLER, "1795397645.18", "1795397645.18",
                  "16"),
]  # fmt: skip
# hotline-answered-after-18s: 2002 calls 8001, answered after ~18 s, talks 5 s.
HOTLINE_LATE: list[ChannelEvent] = [
    ChannelCreated(t(1795397669.748206), "PJSIP/2002-00000008", "1795397669.20",
                   "1795397669.20", "2002", "Staff 2002", "8001"),
    ChannelCreated(t(1795397669.749410), "PJSIP/8001-00000009", "1795397669.21",
                   "1795397669.20", "8001", "Hotline duty 1", "s"),
    DialBegan(t(1795397669.749931), "PJSIP/2002-00000008", "1795397669.20", "1795397669.20",
              "2002", "Staff 2002", "8001", "PJSIP/8001-00000009", "1795397669.21", "8001"),
    DialEnded(t(1795397687.769954), "PJSIP/2002-00000008", "1795397669.20",
              "PJSIP/8001-00000009", "ANSWER"),
    ChannelHungUp(t(1795397692.788549), "PJSIP/8001-00000009", "1795397669.21",
                  "1795397669.20", "16"),
    ChannelHungUp(t(1795397692.788836), "PJSIP/2002-00000008", "1795397669.20",
                  "1795397669.20", "16"),
]  # fmt: skip

# burst-mixed-calls: five calls at once, events interleaved as captured.
BURST: list[ChannelEvent] = [
    ChannelCreated(t(1795398023.051002), "PJSIP/2001-00000020", "1795398023.80",
                   "1795398023.80", "2001", "Staff 2001", "00441632960123"),
    ChannelCreated(t(1795398023.051824), "Local/00441632960123@pstn-00000018;1",
                   "1795398023.81", "1795398023.80", "<unknown>", "<unknown>",
                   "00441632960123"),
    ChannelCreated(t(1795398023.051936), "Local/00441632960123@pstn-00000018;2",
                   "1795398023.82", "1795398023.80", "<unknown>", "<unknown>",
                   "00441632960123"),
    DialBegan(t(1795398023.052309), "PJSIP/2001-00000020", "1795398023.80", "1795398023.80",
              "2001", "Staff 2001", "00441632960123",
              "Local/00441632960123@pstn-00000018;1", "1795398023.81",
              "00441632960123@pstn"),
    ChannelCreated(t(1795398023.054799), "PJSIP/9001-00000021", "1795398023.83",
                   "1795398023.83", "9001", "Department head", "01087654321"),
    ChannelCreated(t(1795398023.055236), "Local/01087654321@pstn-00000019;1",
                   "1795398023.84", "1795398023.83", "<unknown>", "<unknown>", "01087654321"),
    ChannelCreated(t(1795398023.055273), "Local/01087654321@pstn-00000019;2",
                   "1795398023.85", "1795398023.83", "<unknown>", "<unknown>", "01087654321"),
    DialBegan(t(1795398023.055505), "PJSIP/9001-00000021", "1795398023.83", "1795398023.83",
              "9001", "Department head", "01087654321", "Local/01087654321@pstn-00000019;1",
              "1795398023.84", "01087654321@pstn"),
    ChannelCreated(t(1795398023.063618), "PJSIP/2003-00000022", "1795398023.86",
                   "1795398023.86", "2003", "张伟", "02112345678"),
    ChannelCreated(t(1795398023.063721), "Local/02112345678@pstn-0000001a;1",
                   "1795398023.87", "1795398023.86", "<unknown>", "<unknown>", "02112345678"),
    ChannelCreated(t(1795398023.063725), "Local/02112345678@pstn-0000001a;2",
                   "1795398023.88", "1795398023.86", "<unknown>", "<unknown>", "02112345678"),
    DialBegan(t(1795398023.064118), "PJSIP/2003-00000022", "1795398023.86", "1795398023.86",
              "2003", "张伟", "02112345678", "Local/02112345678@pstn-0000001a;1",
              "1795398023.87", "02112345678@pstn"),
    ChannelCreated(t(1795398023.066602), "PJSIP/2002-00000023", "1795398023.89",
                   "1795398023.89", "2002", "Staff 2002", "16812345678"),
    ChannelCreated(t(1795398023.066711), "Local/16812345678@pstn-0000001b;1",
                   "1795398023.90", "1795398023.89", "<unknown>", "<unknown>", "16812345678"),
    ChannelCreated(t(1795398023.066716), "Local/16812345678@pstn-0000001b;2",
                   "1795398023.91", "1795398023.89", "<unknown>", "<unknown>", "16812345678"),
    ChannelCreated(t(1795398023.066746), "PJSIP/8000-00000024", "1795398023.92",
                   "1795398023.92", "8000", "Guard room alarm", "119"),
    ChannelCreated(t(1795398023.066837), "Local/119@pstn-0000001c;1", "1795398023.93",
                   "1795398023.92", "<unknown>", "<unknown>", "119"),
    ChannelCreated(t(1795398023.066841), "Local/119@pstn-0000001c;2", "1795398023.94",
                   "1795398023.92", "<unknown>", "<unknown>", "119"),
    DialBegan(t(1795398023.066906), "PJSIP/8000-00000024", "1795398023.92", "1795398023.92",
              "8000", "Guard room alarm", "119", "Local/119@pstn-0000001c;1",
              "1795398023.93", "119@pstn"),
    DialBegan(t(1795398023.066953), "PJSIP/2002-00000023", "1795398023.89", "1795398023.89",
              "2002", "Staff 2002", "16812345678", "Local/16812345678@pstn-0000001b;1",
              "1795398023.90", "16812345678@pstn"),
    DialEnded(t(1795398026.054385), "PJSIP/2001-00000020", "1795398023.80",
              "Local/00441632960123@pstn-00000018;1", "ANSWER"),
    DialEnded(t(1795398026.059064), "PJSIP/9001-00000021", "1795398023.83",
              "Local/01087654321@pstn-00000019;1", "ANSWER"),
    DialEnded(t(1795398026.066162), "PJSIP/2003-00000022", "1795398023.86",
              "Local/02112345678@pstn-0000001a;1", "ANSWER"),
    DialEnded(t(1795398026.070145), "PJSIP/2002-00000023", "1795398023.89",
              "Local/16812345678@pstn-0000001b;1", "ANSWER"),
    DialEnded(t(1795398026.070204), "PJSIP/8000-00000024", "1795398023.92",
              "Local/119@pstn-0000001c;1", "ANSWER"),
    ChannelHungUp(t(1795398029.092418), "PJSIP/2001-00000020", "1795398023.80",
                  "1795398023.80", "16"),
    ChannelHungUp(t(1795398029.092960), "Local/00441632960123@pstn-00000018;1",
                  "1795398023.81", "1795398023.80", "16"),
    ChannelHungUp(t(1795398029.092969), "Local/00441632960123@pstn-00000018;2",
                  "1795398023.82", "1795398023.80", "16"),
    ChannelHungUp(t(1795398029.111228), "Local/16812345678@pstn-0000001b;1",
                  "1795398023.90", "1795398023.89", "16"),
    ChannelHungUp(t(1795398029.111238), "Local/16812345678@pstn-0000001b;2",
                  "1795398023.91", "1795398023.89", "16"),
    ChannelHungUp(t(1795398029.111243), "PJSIP/2002-00000023", "1795398023.89",
                  "1795398023.89", "16"),
    ChannelHungUp(t(1795398029.123997), "Local/02112345678@pstn-0000001a;1",
                  "1795398023.87", "1795398023.86", "16"),
    ChannelHungUp(t(1795398029.124230), "Local/02112345678@pstn-0000001a;2",
                  "1795398023.88", "1795398023.86", "16"),
    ChannelHungUp(t(1795398029.124864), "PJSIP/2003-00000022", "1795398023.86",
                  "1795398023.86", "16"),
    ChannelHungUp(t(1795398029.142011), "Local/01087654321@pstn-00000019;1",
                  "1795398023.84", "1795398023.83", "16"),
    ChannelHungUp(t(1795398029.142016), "Local/01087654321@pstn-00000019;2",
                  "1795398023.85", "1795398023.83", "16"),
    ChannelHungUp(t(1795398029.142021), "PJSIP/9001-00000021", "1795398023.83",
                  "1795398023.83", "16"),
    ChannelHungUp(t(1795398029.158782), "PJSIP/8000-00000024", "1795398023.92",
                  "1795398023.92", "16"),
    ChannelHungUp(t(1795398029.158789), "Local/119@pstn-0000001c;1", "1795398023.93",
                  "1795398023.92", "16"),
    ChannelHungUp(t(1795398029.158867), "Local/119@pstn-0000001c;2", "1795398023.94",
                  "1795398023.92", "16"),
]  # fmt: skip


def outbound_call(
    extension: str, number: str, *, seq: int, start: float, answer_after: float, talk: float
) -> list[ChannelEvent]:
    """Build a call shaped like the captures: phone, Local pair, answer, hang-up."""
    phone = f"PJSIP/{extension}-{seq:08x}"
    trunk = f"Local/{number}@pstn-{seq:08x}"
    uid = f"{int(start)}.{seq * 3}"
    uid1, uid2 = f"{int(start)}.{seq * 3 + 1}", f"{int(start)}.{seq * 3 + 2}"
    answered, ended = start + answer_after, start + answer_after + talk
    return [
        ChannelCreated(t(start), phone, uid, uid, extension, extension, number),
        ChannelCreated(t(start), f"{trunk};1", uid1, uid, "<unknown>", "<unknown>", number),
        ChannelCreated(t(start), f"{trunk};2", uid2, uid, "<unknown>", "<unknown>", number),
        DialBegan(t(start), phone, uid, uid, extension, extension, number, f"{trunk};1", uid1,
                  f"{number}@pstn"),
        DialEnded(t(answered), phone, uid, f"{trunk};1", "ANSWER"),
        ChannelHungUp(t(ended), f"{trunk};1", uid1, uid, "16"),
        ChannelHungUp(t(ended), f"{trunk};2", uid2, uid, "16"),
        ChannelHungUp(t(ended), phone, uid, uid, "16"),
    ]  # fmt: skip


# --- enforce mode ---------------------------------------------------------------------------


def test_enforce_hangs_up_the_international_trunk_leg() -> None:
    tracker = make_tracker(Mode.ENFORCE)
    effects = tracker.handle_all(INTL_DIALLING)
    # The offence comes before the hangup: the shell writes it ahead of acting on it.
    decision, offence, hangup = effects
    assert isinstance(decision, RecordDecision)
    assert hangup == HangupChannel(INTL_TRUNK, HANGUP_CAUSE_CALL_REJECTED, "1795397584.0", "LD-2")
    assert HANGUP_CAUSE_CALL_REJECTED == 21
    assert isinstance(offence, RecordOffence)

    record = decision.record
    assert record.layer is Layer.AMI
    assert (record.extension, record.person_id, record.dialled) == (
        "2001",
        "staff-2001",
        "00441632960123",
    )
    assert (record.number_class, record.verdict, record.rule_id) == (
        "international",
        "deny",
        "LD-2",
    )
    assert (record.call.linkedid, record.call.uniqueid, record.call.channel) == (
        "1795397584.0",
        "1795397584.0",
        INTL_PHONE,
    )
    assert record.key == f"reference:1795397584.0:ami:{INTL_TRUNK}"

    draft = offence.draft
    assert (draft.rule_id, draft.person_id, draft.person_name, draft.department) == (
        "LD-2",
        "staff-2001",
        "Staff 2001",
        "工程部",
    )
    assert (draft.number, draft.number_class, draft.outcome) == (
        "00441632960123",
        "international",
        Outcome.CUT_ORDERED,
    )
    assert draft.key == "reference:1795397584.0:LD-2:00441632960123"
    assert draft.at == t(1795397584.159466)
    assert judged(effects) == [("2001", "00441632960123")]
    assert tracker.open_cuts == (INTL_TRUNK,)

    rest = tracker.handle_all(INTL_CUT)
    assert not only(rest, HangupChannel)
    assert not only(rest, RecordOffence)
    # How the call ended comes from Asterisk: the trunk leg hung up before any answer.
    (ending,) = only(rest, RecordOffenceOutcome)
    assert ending.outcome.key == draft.key
    assert ending.outcome.ending is Ending.BEFORE_ANSWER
    assert ending.outcome.cause == "21"
    assert final_outcome(draft.outcome, ending.outcome.ending) is Outcome.HUNG_UP
    (call,) = only(rest, RecordCall)
    summary = call.summary
    assert (summary.extension, summary.number, summary.verdict, summary.outcome) == (
        "2001",
        "00441632960123",
        "deny",
        "hung_up",
    )
    assert summary.answered_at is None
    assert summary.talk_time == timedelta(0)
    assert summary.ended_at == t(1795397585.301805)
    assert tracker.live_calls == 0
    assert tracker.call_of(INTL_PHONE) is None
    assert tracker.open_cuts == ()


def test_enforce_premium_hangs_up_and_records_pr1_once() -> None:
    tracker = make_tracker(Mode.ENFORCE)
    effects = tracker.handle_all(PREM_DIALLING + PREM_CUT)
    assert only(effects, HangupChannel) == [HangupChannel(PREM_TRUNK, 21, "1795397596.3", "PR-1")]
    (offence,) = only(effects, RecordOffence)
    assert (offence.draft.rule_id, offence.draft.person_id) == ("PR-1", "staff-2002")
    assert offence.draft.outcome is Outcome.CUT_ORDERED
    (ending,) = only(effects, RecordOffenceOutcome)
    assert ending.outcome.ending is Ending.BEFORE_ANSWER
    assert ending.outcome.charge == Decimal(0)
    assert len(only(effects, RecordCall)) == 1


def test_enforce_never_hangs_up_the_phone_itself() -> None:
    tracker = make_tracker(Mode.ENFORCE)
    effects = tracker.handle_all(INTL_DIALLING + INTL_ANSWERED)
    assert [h.channel for h in only(effects, HangupChannel)] == [INTL_TRUNK]
    assert len(only(effects, RecordOffence)) == 1


def test_an_answer_despite_the_hangup_is_recorded_as_not_stopped() -> None:
    """The trunk answered (the hangup came too late): the ledger must not say it was stopped."""
    tracker = make_tracker(Mode.ENFORCE)
    effects = tracker.handle_all(INTL_DIALLING + INTL_ANSWERED)
    (offence,) = only(effects, RecordOffence)
    (ending,) = only(effects, RecordOffenceOutcome)
    assert ending.outcome.ending is Ending.ANSWERED
    assert ending.outcome.talk_time == t(1795397594.180232) - t(1795397587.162931)
    assert final_outcome(offence.draft.outcome, ending.outcome.ending) is Outcome.NOT_STOPPED
    (call,) = only(effects, RecordCall)
    assert call.summary.outcome == "not_stopped"


def test_allowed_long_distance_goes_in_the_register() -> None:
    """head-domestic-long-distance: allowed for a department head, recorded for LD-4."""
    for mode in Mode:
        tracker = make_tracker(mode)
        effects = tracker.handle_all(HEAD_CALL)
        assert not only(effects, HangupChannel)
        assert not only(effects, RecordOffence)
        (decision,) = only(effects, RecordDecision)
        assert (decision.record.verdict, decision.record.person_id) == ("allow", "head-9001")
        (call,) = only(effects, RecordCall)
        summary = call.summary
        assert (summary.number_class, summary.outcome, summary.direction) == (
            "domestic_ld",
            "answered",
            "outbound",
        )
        assert summary.caller_name == "Department head"
        assert summary.started_at == t(1795397616.860529)
        assert summary.answered_at == t(1795397619.863329)
        assert summary.talk_time == t(1795397623.874789) - t(1795397619.863329)
        # Every call is priced from the tariff (call accounting): ~4 s of domestic LD.
        assert summary.charge == tracker.policy.tariff.charge(
            "02787654321", "domestic_ld", summary.talk_time
        )
        assert summary.charge > 0


def test_failover_trunk_leg_is_judged_the_same_and_hung_up_too() -> None:
    tracker = make_tracker(Mode.ENFORCE)
    first = tracker.handle_all(INTL_DIALLING)
    failover = DialBegan(t(1795397585.0), INTL_PHONE, "1795397584.0", "1795397584.0", "2001",
                         "Staff 2001", "00441632960123", "PJSIP/carrier-0000002a",
                         "1795397584.5", "00441632960123@carrier")  # fmt: skip
    second = tracker.handle(failover)
    assert only(second, HangupChannel) == [
        HangupChannel("PJSIP/carrier-0000002a", 21, "1795397584.0", "LD-2")
    ]
    # Judged the same: one decision per trunk leg, one offence key for the call.
    assert {d.record.verdict for d in only(first + second, RecordDecision)} == {"deny"}
    keys = {o.draft.key for o in only(first + second, RecordOffence)}
    assert keys == {"reference:1795397584.0:LD-2:00441632960123"}


# --- monitor mode ---------------------------------------------------------------------------


def test_monitor_records_without_hanging_up() -> None:
    tracker = make_tracker(Mode.MONITOR)
    effects = tracker.handle_all(INTL_DIALLING + INTL_ANSWERED)
    assert not only(effects, HangupChannel)
    (offence,) = only(effects, RecordOffence)
    assert offence.draft.rule_id == "LD-2"
    assert offence.draft.outcome is Outcome.MONITORED
    (call,) = only(effects, RecordCall)
    assert call.summary.outcome == "monitored"
    assert call.summary.talk_time == t(1795397594.181147) - t(1795397587.162931)


def test_monitor_prices_pr1_from_the_talk_time_at_call_end() -> None:
    tracker = make_tracker(Mode.MONITOR)
    # Written ahead when it is dialled; its charge comes when the call ends.
    (offence,) = only(tracker.handle_all(PREM_DIALLING), RecordOffence)
    draft = offence.draft
    assert (draft.rule_id, draft.outcome, draft.charge) == ("PR-1", Outcome.MONITORED, 0)
    effects = tracker.handle_all(PREM_ANSWERED)
    assert not only(effects, HangupChannel)
    assert not only(effects, RecordOffence)
    (ending,) = only(effects, RecordOffenceOutcome)
    assert ending.outcome.key == draft.key
    assert ending.outcome.ending is Ending.ANSWERED
    assert ending.outcome.talk_time == PREM_TRUNK_GONE_AT - PREM_ANSWER_AT
    assert ending.outcome.ended_at == PREM_TRUNK_GONE_AT
    # ~5 s billed as one started minute at the default 2.00/min premium rate
    assert ending.outcome.charge == Decimal("2.00")
    penalty = tracker.policy.rules["PR-1"].penalty
    assert penalty is not None
    assert assess(penalty, prior_offences=0, charge=ending.outcome.charge).amount == Decimal(
        "90.00"
    )


def test_monitor_prices_a_long_premium_call_by_its_minutes() -> None:
    tracker = make_tracker(Mode.MONITOR)
    events = outbound_call("2002", "16812345678", seq=0x40, start=1795399000.0,
                           answer_after=3.0, talk=125.0)  # fmt: skip
    (ending,) = only(tracker.handle_all(events), RecordOffenceOutcome)
    assert ending.outcome.talk_time == timedelta(seconds=125)
    assert ending.outcome.charge == Decimal("6.00")  # 3 started minutes x 2.00


def test_monitor_prices_an_unanswered_premium_call_at_zero() -> None:
    tracker = make_tracker(Mode.MONITOR)
    (ending,) = only(tracker.handle_all(PREM_DIALLING + PREM_CUT), RecordOffenceOutcome)
    assert ending.outcome.ending is Ending.BEFORE_ANSWER
    assert ending.outcome.charge == Decimal("0.00")
    assert ending.outcome.talk_time == timedelta(0)


# --- emergency ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(Mode))
def test_guardroom_emergency_call_is_never_touched(mode: Mode) -> None:
    tracker = make_tracker(mode)
    effects = tracker.handle_all(ALARM_110)
    assert not only(effects, HangupChannel)
    assert not only(effects, RecordOffence)
    (decision,) = only(effects, RecordDecision)
    assert (decision.record.verdict, decision.record.number_class) == ("allow", "emergency")
    (call,) = only(effects, RecordCall)
    assert call.summary.outcome == "answered"


@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("number", ["110", "119", "120", "122", "112", "12110"])
@pytest.mark.parametrize("extension", ["8000", "2001", "9001", "8001", "7777"])
def test_emergency_never_produces_a_hangup(mode: Mode, number: str, extension: str) -> None:
    tracker = make_tracker(mode)
    events = outbound_call(extension, number, seq=0x50, start=1795399100.0, answer_after=1.0,
                           talk=30.0)  # fmt: skip
    effects = tracker.handle_all(events[:4])
    effects += tracker.handle_all(
        [
            ChannelSeen(
                t(1795399105.0),
                events[1].channel,
                "x.1",
                events[0].linkedid,
                "",
                "",
                number,
                "Up",
                timedelta(seconds=5),
            ),
            ResyncDone(t(1795399105.0)),
        ]
    )
    effects += tracker.handle_all(events[4:])
    assert not only(effects, HangupChannel)
    assert not only(effects, RecordOffence)


def test_alarm_line_misuse_is_cut_and_charged_to_the_guard_on_duty() -> None:
    """guardroom-misuse-mobile: 8000 dials 13800138000 (EM-1)."""
    tracker = make_tracker(Mode.ENFORCE)
    events = outbound_call("8000", "13800138000", seq=5, start=1795397636.290287,
                           answer_after=3.0, talk=4.0)  # fmt: skip
    effects = tracker.handle_all(events[:4])
    (hangup,) = only(effects, HangupChannel)
    assert (hangup.channel, hangup.rule_id) == ("Local/13800138000@pstn-00000005;1", "EM-1")
    (offence,) = only(effects, RecordOffence)
    assert (offence.draft.rule_id, offence.draft.person_id, offence.draft.extension) == (
        "EM-1",
        "guard-li",
        "8000",
    )


# --- AN-1: answer within three rings --------------------------------------------------------


def test_hotline_unanswered_is_an_an1_offence() -> None:
    tracker = make_tracker(Mode.ENFORCE)
    effects = tracker.handle_all(HOTLINE_UNANSWERED[:3])
    assert effects == []
    at_dial_end = tracker.handle(HOTLINE_UNANSWERED[3])
    (offence,) = only(at_dial_end, RecordOffence)
    draft = offence.draft
    assert (draft.rule_id, draft.extension, draft.person_id, draft.department) == (
        "AN-1",
        "8001",
        "duty-wang",
        "客服部",
    )
    assert draft.key == f"reference:1795397645.18:AN-1:{HOTLINE_PHONE}"
    assert draft.at == t(1795397665.538631)
    assert "20s" in draft.detail_en
    assert "not answered" in draft.detail_en
    assert "无人接听" in draft.detail_zh
    rest = tracker.handle_all(HOTLINE_UNANSWERED[4:])
    assert not only(rest, RecordOffence)
    assert not only(at_dial_end + rest, HangupChannel)
    assert tracker.live_calls == 0


def test_hotline_answered_after_18s_is_an_an1_offence() -> None:
    tracker = make_tracker(Mode.MONITOR)
    effects = tracker.handle_all(HOTLINE_LATE)
    (offence,) = only(effects, RecordOffence)
    assert offence.draft.rule_id == "AN-1"
    assert offence.draft.person_id == "duty-wang"
    assert "18s" in offence.draft.detail_en
    assert "before it was answered" in offence.draft.detail_en
    assert "后才接听" in offence.draft.detail_zh


@pytest.mark.parametrize(
    ("after", "status"),
    [(3.0, "ANSWER"), (14.9, "ANSWER"), (15.0, "ANSWER"), (15.0, "NOANSWER"), (4.0, "CANCEL"),
     (12.0, "CANCEL"), (0.5, "BUSY"), (0.1, "CHANUNAVAIL")],
)  # fmt: skip
def test_hotline_answered_in_time_or_cancelled_is_no_an1_offence(after: float, status: str) -> None:
    tracker = make_tracker(Mode.ENFORCE)
    events = [*HOTLINE_UNANSWERED[:3], hotline_dial_end(after, status), *HOTLINE_UNANSWERED[4:]]
    offences = only(tracker.handle_all(events), RecordOffence)
    assert [o for o in offences if o.draft.rule_id == "AN-1"] == []


def hotline_dial_end(after: float, status: str) -> DialEnded:
    """Return the DialEnd of the hotline-unanswered call ``after`` seconds into ringing."""
    return DialEnded(
        HOTLINE_RANG_AT + timedelta(seconds=after),
        HOTLINE_CALLER,
        "1795397645.18",
        HOTLINE_PHONE,
        status,
    )


def test_idle_hotline_rejecting_an_internal_call_is_a_dt2_offence() -> None:
    tracker = make_tracker(Mode.ENFORCE)
    events = [*HOTLINE_UNANSWERED[:3], hotline_dial_end(2.0, "BUSY"), *HOTLINE_UNANSWERED[4:]]
    effects = tracker.handle_all(events)
    (offence,) = only(effects, RecordOffence)
    assert (offence.draft.rule_id, offence.draft.person_id, offence.draft.extension) == (
        "DT-2",
        "duty-wang",
        "8001",
    )
    assert "2001" in offence.draft.detail_en
    assert not only(effects, HangupChannel)


def test_busy_hotline_on_another_call_is_no_rejection() -> None:
    tracker = make_tracker(Mode.ENFORCE)
    tracker.handle_all(HOTLINE_LATE[:4])  # 8001 is talking to 2002
    second: list[ChannelEvent] = [
        ChannelCreated(t(1795397680.0), "PJSIP/2003-0000000a", "1795397680.30", "1795397680.30",
                       "2003", "张伟", "8001"),
        ChannelCreated(t(1795397680.001), "PJSIP/8001-0000000b", "1795397680.31",
                       "1795397680.30", "8001", "Hotline duty 1", "s"),
        DialBegan(t(1795397680.002), "PJSIP/2003-0000000a", "1795397680.30", "1795397680.30",
                  "2003", "张伟", "8001", "PJSIP/8001-0000000b", "1795397680.31", "8001"),
        DialEnded(t(1795397680.5), "PJSIP/2003-0000000a", "1795397680.30",
                  "PJSIP/8001-0000000b", "BUSY"),
    ]  # fmt: skip
    assert not only(tracker.handle_all(second), RecordOffence)


# --- EM-1: inbound calls occupying the alarm phone ------------------------------------------

ALARM_RING_PHONE = "PJSIP/8000-0000000d"
ALARM_ANSWERED_AT = t(1795397710.0)
ALARM_INBOUND: list[ChannelEvent] = [
    ChannelCreated(t(1795397708.0), "PJSIP/2001-0000000c", "1795397708.40", "1795397708.40",
                   "2001", "Staff 2001", "8000"),
    ChannelCreated(t(1795397708.001), ALARM_RING_PHONE, "1795397708.41", "1795397708.40",
                   "8000", "Guard room alarm", "s"),
    DialBegan(t(1795397708.002), "PJSIP/2001-0000000c", "1795397708.40", "1795397708.40",
              "2001", "Staff 2001", "8000", ALARM_RING_PHONE, "1795397708.41", "8000"),
    DialEnded(ALARM_ANSWERED_AT, "PJSIP/2001-0000000c", "1795397708.40", ALARM_RING_PHONE,
              "ANSWER"),
]  # fmt: skip


def test_call_occupying_the_alarm_phone_past_its_grace_is_cut_in_enforce_mode() -> None:
    tracker = make_tracker(Mode.ENFORCE)
    assert not only(tracker.handle_all(ALARM_INBOUND), RecordOffence)
    grace = ALARM_ANSWERED_AT + timedelta(seconds=60)
    assert tracker.next_due() == grace
    assert tracker.handle(Tick(grace - timedelta(seconds=1))) == []
    effects = tracker.handle(Tick(grace))
    assert only(effects, HangupChannel) == [
        HangupChannel(ALARM_RING_PHONE, 21, "1795397708.40", "EM-1")
    ]
    (offence,) = only(effects, RecordOffence)
    assert effects.index(offence) < effects.index(only(effects, HangupChannel)[0])
    assert (offence.draft.rule_id, offence.draft.person_id) == ("EM-1", "staff-2001")
    assert offence.draft.outcome is Outcome.CUT_ORDERED
    # The occupancy is flagged once; the hangup is sent again while the channel lives on.
    again = tracker.handle(Tick(grace + timedelta(seconds=5)))
    assert not only(again, RecordOffence)
    assert [h.attempt for h in only(again, HangupChannel)] == [2]
    gone = grace + timedelta(seconds=6)
    tracker.handle_all(
        [
            ChannelHungUp(gone, ALARM_RING_PHONE, "1795397708.41", "1795397708.40", "21"),
            ChannelHungUp(gone, "PJSIP/2001-0000000c", "1795397708.40", "1795397708.40", "21"),
        ]
    )
    assert tracker.next_due() is None


def test_call_occupying_the_alarm_phone_is_only_recorded_in_monitor_mode() -> None:
    tracker = make_tracker(Mode.MONITOR)
    tracker.handle_all(ALARM_INBOUND)
    effects = tracker.handle(Tick(ALARM_ANSWERED_AT + timedelta(seconds=61)))
    assert not only(effects, HangupChannel)
    (offence,) = only(effects, RecordOffence)
    assert offence.draft.outcome is Outcome.MONITORED


def test_short_call_to_the_alarm_phone_is_no_offence() -> None:
    tracker = make_tracker(Mode.ENFORCE)
    tracker.handle_all(ALARM_INBOUND)
    gone = ALARM_ANSWERED_AT + timedelta(seconds=20)
    tracker.handle_all(
        [
            ChannelHungUp(gone, ALARM_RING_PHONE, "1795397708.41", "1795397708.40", "16"),
            ChannelHungUp(gone, "PJSIP/2001-0000000c", "1795397708.40", "1795397708.40", "16"),
        ]
    )
    assert tracker.next_due() is None
    assert tracker.handle(Tick(ALARM_ANSWERED_AT + timedelta(seconds=120))) == []


def test_ordinary_phone_has_no_answer_time() -> None:
    tracker = make_tracker(Mode.ENFORCE)
    to_2002 = "PJSIP/2002-00000007"
    events: list[ChannelEvent] = [
        dataclasses.replace(e, dest_channel=to_2002, dial_string="2002")
        if isinstance(e, DialBegan)
        else dataclasses.replace(e, dest_channel=to_2002)
        if isinstance(e, DialEnded)
        else e
        for e in HOTLINE_UNANSWERED
    ]
    assert not only(tracker.handle_all(events), RecordOffence)


def test_hotline_without_anyone_on_duty_is_unattributed() -> None:
    tracker = CallTracker(dataclasses.replace(LOADED.policy, rota=None), LOADED.channels)
    (offence,) = only(tracker.handle_all(HOTLINE_UNANSWERED), RecordOffence)
    assert offence.draft.person_id == ""


# --- resync ---------------------------------------------------------------------------------


def intl_snapshot(at: datetime, *, order: tuple[int, ...] = (0, 1, 2)) -> list[ChannelEvent]:
    """CoreShowChannel rows for the live staff-international call, answered for 5 s."""
    rows: list[ChannelEvent] = [
        ChannelSeen(at, INTL_PHONE, "1795397584.0", "1795397584.0", "2001", "Staff 2001",
                    "00441632960123", "Up", timedelta(seconds=8)),
        ChannelSeen(at, INTL_TRUNK, "1795397584.1", "1795397584.0", "00441632960123",
                    "<unknown>", "00441632960123", "Up", timedelta(seconds=8)),
        ChannelSeen(at, INTL_TRUNK_2, "1795397584.2", "1795397584.0", "2001", "Staff 2001",
                    "00441632960123", "Up", timedelta(seconds=8)),
    ]  # fmt: skip
    return [*(rows[i] for i in order), ResyncDone(at)]


def test_resync_judges_a_live_forbidden_call_once() -> None:
    tracker = make_tracker(Mode.ENFORCE)
    at = t(1795397592.2)
    effects = tracker.handle_all(intl_snapshot(at))
    assert judged(effects) == [("2001", "00441632960123")]
    assert only(effects, HangupChannel) == [HangupChannel(INTL_TRUNK, 21, "1795397584.0", "LD-2")]
    (offence,) = only(effects, RecordOffence)
    assert (offence.draft.rule_id, offence.draft.person_id) == ("LD-2", "staff-2001")
    assert offence.draft.key == "reference:1795397584.0:LD-2:00441632960123"
    assert tracker.live_calls == 1

    # Still live at the next resync: judged no more, recorded no more, hung up again.
    again = tracker.handle_all(intl_snapshot(at + timedelta(seconds=1)))
    assert again == [HangupChannel(INTL_TRUNK, 21, "1795397584.0", "LD-2", attempt=2)]


@pytest.mark.parametrize("order", [(1, 0, 2), (2, 1, 0), (1, 2, 0)])
def test_resync_attributes_the_call_to_the_phone_whatever_the_row_order(
    order: tuple[int, ...],
) -> None:
    """CoreShowChannels lists channels in no particular order."""
    tracker = make_tracker(Mode.ENFORCE)
    effects = tracker.handle_all(intl_snapshot(t(1795397592.2), order=order))
    assert judged(effects) == [("2001", "00441632960123")]
    (offence,) = only(effects, RecordOffence)
    assert offence.draft.person_id == "staff-2001"
    assert offence.draft.key == "reference:1795397584.0:LD-2:00441632960123"
    assert offence.draft.call is not None
    assert offence.draft.call.channel == INTL_PHONE


def test_resync_does_not_cut_a_head_whose_trunk_leg_is_listed_first() -> None:
    tracker = make_tracker(Mode.ENFORCE)
    at = t(1795397621.0)
    rows: list[ChannelEvent] = [
        ChannelSeen(at, HEAD_TRUNK, "1795397616.10", "1795397616.9", "02787654321",
                    "<unknown>", "02787654321", "Up", timedelta(seconds=4)),
        ChannelSeen(at, HEAD_TRUNK_2, "1795397616.11", "1795397616.9", "9001",
                    "Department head", "02787654321", "Up", timedelta(seconds=4)),
        ChannelSeen(at, HEAD_PHONE, "1795397616.9", "1795397616.9", "9001", "Department head",
                    "02787654321", "Up", timedelta(seconds=4)),
        ResyncDone(at),
    ]  # fmt: skip
    effects = tracker.handle_all(rows)
    assert not only(effects, HangupChannel)
    assert not only(effects, RecordOffence)


def test_resync_does_not_judge_a_call_already_judged() -> None:
    tracker = make_tracker(Mode.MONITOR)
    first = tracker.handle_all(INTL_DIALLING + INTL_ANSWERED[:1])
    assert len(judged(first)) == 1
    effects = tracker.handle_all(intl_snapshot(t(1795397590.0)))
    assert effects == []
    assert tracker.live_calls == 1
    rest = tracker.handle_all(INTL_ANSWERED[1:])
    assert len(only(rest, RecordCall)) == 1
    assert not only(rest, RecordOffence)


def test_resync_ends_calls_that_disappeared() -> None:
    tracker = make_tracker(Mode.ENFORCE)
    tracker.handle_all(HEAD_CALL[:5])  # the head's call is up
    tracker.handle_all(INTL_DIALLING)  # and staff 2001 is dialling
    assert tracker.live_calls == 2
    at = t(1795397630.0)
    # While the connection was down the head hung up; 2001's call is still there.
    effects = tracker.handle_all(intl_snapshot(at))
    (call,) = only(effects, RecordCall)
    assert call.summary.extension == "9001"
    # Its end was not seen: the call is closed at the last moment it was seen alive, so no
    # talk time is made up.
    assert call.summary.ended_at == t(1795397619.863329)
    assert call.summary.outcome == "answered"
    assert only(effects, HangupChannel) == [
        HangupChannel(INTL_TRUNK, 21, "1795397584.0", "LD-2", attempt=2)
    ]
    assert tracker.live_calls == 1
    assert tracker.call_of(HEAD_PHONE) is None
    assert tracker.call_of(INTL_PHONE) == "1795397584.0"


def test_empty_resync_ends_every_call() -> None:
    tracker = make_tracker(Mode.MONITOR)
    dialled = tracker.handle_all(PREM_DIALLING + PREM_ANSWERED[:1])
    (offence,) = only(dialled, RecordOffence)
    at = t(1795397700.0)
    effects = tracker.handle(ResyncDone(at))
    (ending,) = only(effects, RecordOffenceOutcome)
    assert ending.outcome.key == offence.draft.key
    # Answered, then gone while unseen: talk time counted only up to the last event seen.
    assert ending.outcome.ending is Ending.ANSWERED
    assert ending.outcome.ended_at is None
    assert ending.outcome.talk_time == timedelta(0)
    assert len(only(effects, RecordCall)) == 1
    assert tracker.live_calls == 0


def test_monitor_resync_of_an_answered_premium_call_is_priced_at_its_end() -> None:
    tracker = make_tracker(Mode.MONITOR)
    at = t(1795397630.0)
    rows: list[ChannelEvent] = [
        ChannelSeen(at, PREM_PHONE, "1795397596.3", "1795397596.3", "2002", "Staff 2002",
                    "16812345678", "Up", timedelta(seconds=33)),
        ChannelSeen(at, PREM_TRUNK, "1795397596.4", "1795397596.3", "16812345678",
                    "<unknown>", "16812345678", "Up", timedelta(seconds=33)),
        ResyncDone(at),
    ]  # fmt: skip
    (offence,) = only(tracker.handle_all(rows), RecordOffence)
    assert offence.draft.outcome is Outcome.MONITORED
    hangup_at = at + timedelta(seconds=40)
    end: list[ChannelEvent] = [
        ChannelHungUp(hangup_at, PREM_TRUNK, "1795397596.4", "1795397596.3", "16"),
        ChannelHungUp(hangup_at, PREM_PHONE, "1795397596.3", "1795397596.3", "16"),
    ]
    (ending,) = only(tracker.handle_all(end), RecordOffenceOutcome)
    # Found talking by the resync: answered no later than the resync, never made longer.
    assert ending.outcome.answer_estimated
    assert ending.outcome.answered_at == at
    assert ending.outcome.talk_time == timedelta(seconds=40)
    assert ending.outcome.charge == Decimal("2.00")


def test_enforce_resync_of_an_answered_premium_call_is_priced_from_its_talk_time() -> None:
    """PR-1 is 20 x the charge: a premium call found talking must not be fined as free."""
    tracker = make_tracker(Mode.ENFORCE)
    at = t(1795397700.0)
    rows: list[ChannelEvent] = [
        ChannelSeen(at, PREM_PHONE, "1795397596.3", "1795397596.3", "2002", "Staff 2002",
                    "16812345678", "Up", timedelta(seconds=103)),
        ChannelSeen(at, PREM_TRUNK, "1795397596.4", "1795397596.3", "16812345678",
                    "<unknown>", "16812345678", "Up", timedelta(seconds=103)),
        ResyncDone(at),
    ]  # fmt: skip
    cut = at + timedelta(milliseconds=20)
    end: list[ChannelEvent] = [
        ChannelHungUp(cut, PREM_TRUNK, "1795397596.4", "1795397596.3", "21"),
        ChannelHungUp(cut, PREM_PHONE, "1795397596.3", "1795397596.3", "21"),
    ]
    effects = tracker.handle_all(rows + end)
    assert len(only(effects, HangupChannel)) == 1
    (offence,) = only(effects, RecordOffence)
    (ending,) = only(effects, RecordOffenceOutcome)
    # It was answered before the guard could cut it: not stopped, and priced.
    assert ending.outcome.ending is Ending.ANSWERED
    assert final_outcome(offence.draft.outcome, ending.outcome.ending) is Outcome.NOT_STOPPED
    assert ending.outcome.charge == Decimal("2.00")  # a started minute at 2.00


# --- concurrency ----------------------------------------------------------------------------


def test_burst_of_interleaved_calls_in_enforce_mode() -> None:
    tracker = make_tracker(Mode.ENFORCE)
    effects = tracker.handle_all(BURST)
    assert sorted(judged(effects)) == [
        ("2001", "00441632960123"),
        ("2002", "16812345678"),
        ("2003", "02112345678"),
        ("8000", "119"),
        ("9001", "01087654321"),
    ]
    assert sorted(h.channel for h in only(effects, HangupChannel)) == [
        "Local/00441632960123@pstn-00000018;1",
        "Local/16812345678@pstn-0000001b;1",
    ]
    offences = sorted((o.draft.rule_id, o.draft.person_id) for o in only(effects, RecordOffence))
    assert offences == [("LD-2", "staff-2001"), ("PR-1", "staff-2002")]
    calls = {
        c.summary.extension: (c.summary.number, c.summary.verdict, c.summary.caller_name)
        for c in only(effects, RecordCall)
    }
    assert calls == {
        "2001": ("00441632960123", "deny", "Staff 2001"),
        "2002": ("16812345678", "deny", "Staff 2002"),
        "2003": ("02112345678", "allow", "张伟"),
        "8000": ("119", "allow", "Guard room alarm"),
        "9001": ("01087654321", "allow", "Department head"),
    }
    assert tracker.live_calls == 0


def test_burst_in_monitor_mode_prices_the_premium_call() -> None:
    tracker = make_tracker(Mode.MONITOR)
    effects = tracker.handle_all(BURST)
    assert not only(effects, HangupChannel)
    (premium,) = [o for o in only(effects, RecordOffence) if o.draft.rule_id == "PR-1"]
    (ending,) = [
        e for e in only(effects, RecordOffenceOutcome) if e.outcome.key == premium.draft.key
    ]
    assert ending.outcome.talk_time == t(1795398029.111228) - t(1795398026.070145)
    assert ending.outcome.charge == Decimal("2.00")


def _by_call(events: list[ChannelEvent]) -> list[list[ChannelEvent]]:
    calls: dict[str, list[ChannelEvent]] = {}
    for event in events:
        assert not isinstance(event, ResyncDone)
        calls.setdefault(event.linkedid, []).append(event)
    return list(calls.values())


BURST_CALLS = _by_call(BURST)


def _fingerprint(effects: list[Effect]) -> Counter[str]:
    return Counter(repr(e) for e in effects)


@given(st.data())
def test_any_interleaving_of_concurrent_calls_gives_the_same_effects(data: st.DataObject) -> None:
    """Each call's own events stay in order; how the calls interleave must not matter."""
    lanes = [i for i, call in enumerate(BURST_CALLS) for _ in call]
    order = data.draw(st.permutations(lanes))
    cursors = [0] * len(BURST_CALLS)
    merged: list[ChannelEvent] = []
    for lane in order:
        merged.append(BURST_CALLS[lane][cursors[lane]])
        cursors[lane] += 1
    for mode in Mode:
        sequential = make_tracker(mode)
        interleaved = make_tracker(mode)
        expected = sequential.handle_all([e for call in BURST_CALLS for e in call])
        assert _fingerprint(interleaved.handle_all(merged)) == _fingerprint(expected)
        assert interleaved.live_calls == 0
