"""The guard's shell logic with small hand-written fakes for its ports."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pbxguard.adapters.policy_file import load_policy
from pbxguard.app.guard import Guard
from pbxguard.domain.call_events import Tick
from pbxguard.domain.effects import ClearAlert, RaiseAlert
from pbxguard.domain.entries import OffenceEntry
from pbxguard.domain.records import (
    DecisionRecord,
    LedgerFact,
    OffenceFact,
    OffenceOutcome,
    Outcome,
)
from pbxguard.errors import AmiActionError, AmiConnectionError, JournalError
from pbxguard.protocol.ami import AmiMessage

REFERENCE_SITE = Path(__file__).parents[2] / "src/pbxguard/policies/reference-site.toml"
LOADED = load_policy(REFERENCE_SITE)
TRUNK = "Local/00441632960123@pstn-00000000;1"


class FakePbx:
    """Records hangups; refuses them when told to, as Asterisk does for a gone channel."""

    def __init__(self, journal: FakeJournal, *, fail: Exception | None = None) -> None:
        self.journal = journal
        self.fail = fail
        self.attempts: list[tuple[str, int, int]] = []

    async def hangup(self, channel: str, cause: int = 21) -> None:
        # What the journal held when the hangup went out: the write-ahead check.
        self.attempts.append((channel, cause, len(self.journal.facts)))
        if self.fail is not None:
            raise self.fail


class FakeJournal:
    """Keeps what the guard writes ahead, in order; can be made to fail."""

    def __init__(self) -> None:
        self.facts: list[LedgerFact] = []
        self.broken = False

    def append(self, facts: Sequence[LedgerFact]) -> None:
        if self.broken:
            raise JournalError("disk full")
        self.facts.extend(facts)

    @property
    def pending(self) -> int:
        return len(self.facts)


class FakeNotifier:
    def __init__(self) -> None:
        self.decisions: list[DecisionRecord] = []
        self.hung_up: list[str] = []
        self.alerts: list[RaiseAlert] = []

    def decision_made(self, record: DecisionRecord) -> None:
        self.decisions.append(record)

    def offence_recorded(self, entry: OffenceEntry) -> None:
        raise AssertionError("the guard publishes offences only once the ledger has them")

    def call_hung_up(self, channel: str, linkedid: str, rule_id: str) -> None:
        self.hung_up.append(channel)

    def alert_raised(self, alert: RaiseAlert) -> None:
        self.alerts.append(alert)

    def alert_cleared(self, alert: ClearAlert) -> None:
        pass


class FixedClock:
    def __init__(self) -> None:
        self.at = datetime(2026, 11, 23, 1, 33, 4, tzinfo=UTC)

    def now(self) -> datetime:
        return self.at


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
                ("DestChannel", TRUNK),
                ("DialString", "00441632960123@pstn"),
            ]
        ),
    ]


def make_guard(
    fail: Exception | None = None, clock: FixedClock | None = None
) -> tuple[Guard, FakePbx, FakeJournal, FakeNotifier]:
    journal, notifier = FakeJournal(), FakeNotifier()
    pbx = FakePbx(journal, fail=fail)
    guard = Guard(
        LOADED.policy,
        LOADED.channels,
        pbx=pbx,
        facts=journal,
        notifier=notifier,
        clock=clock or FixedClock(),
    )
    return guard, pbx, journal, notifier


async def test_the_offence_is_written_ahead_of_the_hangup() -> None:
    guard, pbx, journal, notifier = make_guard()
    for message in forbidden_call():
        guard.on_ami_message(message)
    async with asyncio.timeout(5):
        await guard.settled()
    offences = [f for f in journal.facts if isinstance(f, OffenceFact)]
    assert [(o.draft.rule_id, o.draft.outcome) for o in offences] == [("LD-2", Outcome.CUT_ORDERED)]
    assert offences[0].rule.id == "LD-2"  # the rule travels with it, for pricing later
    # When the hangup went out, the decision and the offence were already in the journal.
    assert pbx.attempts == [(TRUNK, 21, 2)]
    assert notifier.hung_up == [TRUNK]
    assert [d.verdict for d in notifier.decisions] == ["deny"]


async def test_a_refused_hangup_is_sent_again_until_the_channel_is_gone() -> None:
    guard, pbx, journal, _ = make_guard(fail=AmiActionError("Hangup", "No such channel"))
    for message in forbidden_call():
        guard.on_ami_message(message)
    async with asyncio.timeout(5):
        await guard.settled()
    assert guard.stats.hangups_failed == 1
    assert guard.tracker.open_cuts == (TRUNK,)
    due = guard.tracker.next_due()
    assert due is not None
    guard.handle(Tick(due))
    async with asyncio.timeout(5):
        await guard.settled()
    assert [channel for channel, _, _ in pbx.attempts] == [TRUNK, TRUNK]
    # The offence was written once, whatever became of the hangups.
    assert len([f for f in journal.facts if isinstance(f, OffenceFact)]) == 1


async def test_a_hangup_lost_with_the_connection_waits_for_the_resync() -> None:
    guard, pbx, _, _ = make_guard(fail=AmiConnectionError("lost"))
    for message in forbidden_call():
        guard.on_ami_message(message)
    async with asyncio.timeout(5):
        await guard.settled()
    assert guard.tracker.open_cuts == (TRUNK,)
    # No retry on a timer: the next login's resync hangs it up again.
    assert guard.tracker.next_due() is None
    assert len(pbx.attempts) == 1


async def test_a_journal_that_cannot_be_written_never_stops_enforcement() -> None:
    clock = FixedClock()
    guard, pbx, journal, _ = make_guard(clock=clock)
    journal.broken = True
    for message in forbidden_call():
        guard.on_ami_message(message)
    async with asyncio.timeout(5):
        await guard.settled()
    assert [channel for channel, _, _ in pbx.attempts] == [TRUNK]
    assert journal.facts == []
    assert guard.stats.journal_failures == 1
    journal.broken = False
    clock.at += timedelta(seconds=2)
    # The facts kept in memory go first with the next write, in their order.
    guard.handle(Tick(clock.at))
    assert [type(f).__name__ for f in journal.facts][:2] == ["DecisionRecord", "OffenceFact"]


async def test_ignored_events_cost_nothing_and_change_nothing() -> None:
    guard, _, journal, _ = make_guard()
    for name in ("VarSet", "RTCPReceived", "Newexten", "SuccessfulAuth"):
        guard.on_ami_message(AmiMessage([("Event", name), ("Channel", "PJSIP/2001-00000000")]))
    assert guard.tracker.live_calls == 0
    assert guard.stats.events == 4
    assert guard.stats.decisions == 0
    assert journal.facts == []


def listed_answered_call() -> list[AmiMessage]:
    """CoreShowChannels after a restart: 2001's international call, answered, 10 s old."""
    common = [("Event", "CoreShowChannel"), ("Linkedid", "1795397584.0"), ("Duration", "00:00:10")]
    return [
        AmiMessage(
            [
                *common,
                ("Channel", "PJSIP/2001-00000000"),
                ("Uniqueid", "1795397584.0"),
                ("CallerIDNum", "2001"),
                ("Exten", "00441632960123"),
                ("ChannelStateDesc", "Up"),
            ]
        ),
        AmiMessage(
            [
                *common,
                ("Channel", TRUNK),
                ("Uniqueid", "1795397584.1"),
                ("Exten", "s"),
                ("ChannelStateDesc", "Up"),
            ]
        ),
    ]


async def test_a_resync_is_dated_by_the_pbx_clock_not_the_hosts() -> None:
    """The PBX's clock runs a minute ahead of this host's: its events and its resync agree.

    The offence judged from the listing is dated when the PBX says it is; the answer the guard
    did not see is taken as the resync's moment on the PBX's clock, so the talk time never
    exceeds what Asterisk reports (answered before the resync, gone 5 s after it).
    """
    clock = FixedClock()
    pbx_time = clock.at + timedelta(minutes=1)
    guard, _, journal, _ = make_guard(clock=clock)
    actions: list[str] = []

    async def listing(action: str) -> list[AmiMessage]:
        actions.append(action)
        return listed_answered_call() if action == "CoreShowChannels" else []

    async def action(name: str) -> AmiMessage:
        actions.append(name)
        # Asterisk answers Ping with its own time (manager.c, action_ping).
        stamp = f"{pbx_time.timestamp():.6f}"
        return AmiMessage([("Response", "Success"), ("Ping", "Pong"), ("Timestamp", stamp)])

    await guard.resync(listing, action)
    assert actions[:2] == ["Ping", "CoreShowChannels"]
    [offence] = [f for f in journal.facts if isinstance(f, OffenceFact)]
    assert offence.draft.at == pbx_time
    gone = pbx_time + timedelta(seconds=5)
    guard.on_ami_message(
        AmiMessage(
            [
                ("Event", "Hangup"),
                ("Channel", TRUNK),
                ("Uniqueid", "1795397584.1"),
                ("Linkedid", "1795397584.0"),
                ("Cause", "21"),
                ("Timestamp", f"{gone.timestamp():.6f}"),
            ]
        )
    )
    [outcome] = [f for f in journal.facts if isinstance(f, OffenceOutcome)]
    assert outcome.answer_estimated
    assert outcome.talk_time == timedelta(seconds=5)


async def test_a_hangup_sent_while_the_resync_asks_the_pbx_clock_is_not_sent_twice() -> None:
    """The DialBegin arrives while the Ping is on its way: one hangup, not a second one."""
    guard, pbx, _, _ = make_guard()

    async def listing(action: str) -> list[AmiMessage]:
        return listed_answered_call() if action == "CoreShowChannels" else []

    async def action(name: str) -> AmiMessage:
        for message in forbidden_call():
            guard.on_ami_message(message)
        await guard.settled()
        return AmiMessage([("Response", "Success"), ("Ping", "Pong")])

    await guard.resync(listing, action)
    async with asyncio.timeout(5):
        await guard.settled()
    assert [channel for channel, _, _ in pbx.attempts] == [TRUNK]
