"""What if: judge a month's recorded calls again under a candidate policy (``pbxguard replay``).

`WhatIf` reads the calls the ledger recorded in the month (those that reached a trunk, and
those the dialplan refused before they rang), oldest first and a page at a time, through the
`RecordedCalls` port; judges each one with the candidate policy, exactly as both layers would
(`judge`, the rota of the candidate answering for shared lines, the do-not-disturb list in
force for promotion lines); prices its offence with the candidate's penalties; and yields the
calls whose verdict, rule or fine changes, while `ReplayTally` sums them by rule and
department. It only reads: nothing is written to the ledger.

How the candidate prices an offence follows the ledger: the escalation step counts the
person's offences under the ladder in the penalty's window, those recorded before the month
(read from the ledger) and the candidate's own offences of the month so far; a call's charge
is the candidate's tariff applied to the recorded talk time, or nothing for a call the
candidate would have stopped before it connected. Approvals count as granted, up to their
revocation, with their calls counted again in the order of the replay. Not replayed: rules
that are not verdicts on a dialled number (hotline answer times, standby, the register, the
quota), and authorization codes (a call made with a code is judged as the phone's own).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from pbxguard.domain.approvals import Approval
from pbxguard.domain.dnd import DoNotDisturb
from pbxguard.domain.evaluate import CallAttempt, Decision, Verdict
from pbxguard.domain.judging import judge
from pbxguard.domain.penalties import ZERO, assess, window_bounds
from pbxguard.domain.periods import month_bounds
from pbxguard.domain.policy import Mode, Policy
from pbxguard.domain.replay import RecordedCall, ReplayChange, ReplayTally, compare


class RecordedCalls(Protocol):
    """The ledger as the replay reads it (read-only)."""

    def iter_recorded(self, start: datetime, end: datetime, *, site: str) -> Iterator[RecordedCall]:
        """Yield the call attempts recorded in [start, end), oldest first, in bounded memory."""

    def prior_offences(
        self,
        *,
        person_id: str,
        extension: str,
        ladder: str,
        since: datetime | None,
        until: datetime,
    ) -> int:
        """Count the offences not excused of a person (or, without one, an extension) under
        ``ladder`` in [since, until)."""

    def approvals_granted(self, site: str) -> list[Approval]:
        """Return every approval granted for the site, valid until its revocation, unused."""


class WhatIf:
    """Replay a month under a candidate policy; iterate `changes`, then read `tally`."""

    def __init__(
        self,
        candidate: Policy,
        recorded: RecordedCalls,
        *,
        month: str,
        site: str | None = None,
        dnd: DoNotDisturb | None = None,
    ) -> None:
        """Prepare the replay of ``month`` (YYYY-MM, the candidate's timezone).

        Raises:
            ConfigError: the month is not YYYY-MM.
        """
        self.candidate = candidate
        self.site = site or candidate.site
        self.start, self.end = month_bounds(month, candidate.timezone)
        self._recorded = recorded
        self._dnd = dnd
        self._counts: dict[tuple[str, str, str], int] = {}
        self._approvals: dict[str, Approval] = {}
        self.tally = ReplayTally()

    def changes(self) -> Iterator[ReplayChange]:
        """Yield every call the candidate treats differently, oldest first."""
        self._approvals = {a.id: a for a in self._recorded.approvals_granted(self.site)}
        for call in self._recorded.iter_recorded(self.start, self.end, site=self.site):
            decision = self._judge(call)
            fine = self._fine(call, decision)
            change = compare(call, decision, fine)
            self.tally.add(call, decision, fine, change)
            if change is not None:
                yield change

    def run(self) -> ReplayTally:
        """Replay the whole month for its sums only."""
        for _ in self.changes():
            pass
        return self.tally

    def _judge(self, call: RecordedCall) -> Decision:
        decision = judge(
            CallAttempt(call.extension, call.number or call.dialled, with_access_code=False),
            self.candidate,
            now=call.at,
            approvals=self._approvals.values(),
            dnd=self._dnd,
        )
        if decision.approval_id:
            used = self._approvals.get(decision.approval_id)
            if used is not None:
                self._approvals[used.id] = used.used()
        if decision.verdict is Verdict.PIN:
            # The replay cannot type a code: the call is judged as if none was given.
            decision = replace(decision, verdict=Verdict.DENY)
        return decision

    def _fine(self, call: RecordedCall, decision: Decision) -> Decimal:
        if not decision.offence:
            return ZERO
        rule = self.candidate.rules.get(decision.rule_id)
        if rule is None or rule.penalty is None:
            return ZERO
        penalty = rule.penalty
        ladder = penalty.ladder or rule.id
        person, extension = (
            (decision.person_id, "") if decision.person_id else ("", decision.extension)
        )
        key = (person, extension, ladder)
        prior = self._counts.get(key)
        if prior is None:
            since, _ = window_bounds(penalty.window, call.at.astimezone(self.candidate.timezone))
            prior = (
                self._recorded.prior_offences(
                    person_id=person,
                    extension=extension,
                    ladder=ladder,
                    since=since,
                    until=self.start,
                )
                if since is None or since < self.start
                else 0
            )
        self._counts[key] = prior + 1
        fine = assess(
            penalty,
            prior_offences=prior,
            charge=self._charge(call, decision),
            number_class=decision.number_class.value,
        )
        return fine.amount

    def _charge(self, call: RecordedCall, decision: Decision) -> Decimal:
        stopped = (
            self.candidate.mode is Mode.ENFORCE
            and decision.verdict is not Verdict.ALLOW
            and not call.refused
        )
        if stopped or not call.talk_time:
            # The candidate would have refused or cut a call that went ahead: it never talks.
            return ZERO
        return self.candidate.tariff.charge(
            decision.classification.number, decision.number_class.value, call.talk_time
        )
