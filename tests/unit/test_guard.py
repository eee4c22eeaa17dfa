"""The guard's shell logic with small hand-written fakes for its ports."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from pbxguard.adapters.policy_file import load_policy
from pbxguard.app.guard import Guard
from pbxguard.app.notifier import Notifier
from pbxguard.domain.policy import Rule
from pbxguard.domain.records import CallSummary, DecisionRecord, OffenceDraft, Outcome
from pbxguard.errors import AmiActionError
from pbxguard.protocol.ami import AmiMessage

REFERENCE_SITE = Path(__file__).parents[2] / "src/pbxguard/policies/reference-site.toml"


class FakePbx:
    """Records hangups; refuses them when told to, as Asterisk does for a gone channel."""

    def __init__(self, *, refuse: bool = False) -> None:
        self.refuse = refuse
        self.hung_up: list[tuple[str, int]] = []

    async def hangup(self, channel: str, cause: int = 21) -> None:
        if self.refuse:
            raise AmiActionError("Hangup", "No such channel")
        self.hung_up.append((channel, cause))


class FakeLedger:
    """Keeps what the guard writes, in order."""

    def __init__(self) -> None:
        self.decisions: list[DecisionRecord] = []
        self.offences: list[OffenceDraft] = []
        self.calls: list[CallSummary] = []

    async def record_decision(self, rec: DecisionRecord) -> None:
        self.decisions.append(rec)

    async def record_offence(self, draft: OffenceDraft, rule: Rule, *, timezone: ZoneInfo) -> Any:
        self.offences.append(draft)

    async def record_call(self, summary: CallSummary) -> None:
        self.calls.append(summary)


class FakePublisher:
    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []

    def publish(self, kind: str, payload: Any) -> None:
        self.messages.append((kind, dict(payload)))


class FixedClock:
    def now(self) -> datetime:
        return datetime(2026, 11, 23, 1, 33, 4, tzinfo=UTC)


def forbidden_call() -> list[AmiMessage]:
    common = [
        ("Channel", "PJSIP/2001-00000000"),
        ("CallerIDNum", "2001"),
        ("CallerIDName", "Staff 2001"),
        ("Exten", "00441632960123"),
        ("Uniqueid", "1795397584.0"),
        ("Linkedid", "1795397584.0"),
        ("Timestamp", "1795397584.158109"),
    ]
    return [
        AmiMessage([("Event", "Newchannel"), *common]),
        AmiMessage(
            [
                ("Event", "DialBegin"),
                *common,
                ("DestChannel", "Local/00441632960123@pstn-00000000;1"),
                ("DialString", "00441632960123@pstn"),
            ]
        ),
    ]


@pytest.mark.parametrize(
    ("refuse", "outcome"), [(False, Outcome.HUNG_UP), (True, Outcome.NOT_STOPPED)]
)
async def test_the_offence_says_whether_the_hangup_worked(refuse: bool, outcome: Outcome) -> None:
    pbx, ledger, publisher = FakePbx(refuse=refuse), FakeLedger(), FakePublisher()
    guard = Guard(
        load_policy(REFERENCE_SITE),
        pbx=pbx,
        ledger=ledger,
        notifier=Notifier(publisher, site="reference"),
        clock=FixedClock(),
    )
    writer = asyncio.create_task(guard.run())
    try:
        for message in forbidden_call():
            guard.on_ami_message(message)
        async with asyncio.timeout(5):
            await guard.drained()
    finally:
        writer.cancel()
    assert [o.outcome for o in ledger.offences] == [outcome]
    assert [o.rule_id for o in ledger.offences] == ["LD-2"]
    assert pbx.hung_up == ([] if refuse else [("Local/00441632960123@pstn-00000000;1", 21)])
    assert guard.stats.hangups_failed == (1 if refuse else 0)
    kinds = [kind for kind, _ in publisher.messages]
    assert kinds.count("offences") == 1


async def test_ignored_events_cost_nothing_and_change_nothing() -> None:
    ledger = FakeLedger()
    guard = Guard(
        load_policy(REFERENCE_SITE),
        pbx=FakePbx(),
        ledger=ledger,
        notifier=Notifier(FakePublisher(), site="reference"),
        clock=FixedClock(),
    )
    for name in ("VarSet", "RTCPReceived", "Newexten", "SuccessfulAuth"):
        guard.on_ami_message(AmiMessage([("Event", name), ("Channel", "PJSIP/2001-00000000")]))
    assert guard.tracker.live_calls == 0
    assert guard.stats.events == 4
    assert guard.stats.decisions == 0
