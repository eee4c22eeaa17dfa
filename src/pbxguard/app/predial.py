"""The pre-dial gate: FastAGI routes that answer the dialplan before ``Dial()``.

``authorize`` judges the call with the same `evaluate()` as the AMI safety net and sets
``PBXGUARD_VERDICT`` (allow | deny | pin), ``PBXGUARD_REASON``, ``PBXGUARD_REASON_ZH`` and
``PBXGUARD_RULE``. ``pin`` checks an authorization code read by the dialplan: its owner becomes
the person who answers for the call; three wrong codes refuse the call. Every verdict is
remembered by Uniqueid so the AMI layer does not judge the call again, and recorded in the
ledger after the answer is sent (the dialplan is waiting; the ledger is not).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Protocol

import structlog

from pbxguard.adapters.fastagi import AgiChannel, AgiHandler
from pbxguard.app.guard import Guard
from pbxguard.app.ports import Clock
from pbxguard.domain.approvals import Approval
from pbxguard.domain.calls import RecordDecision, RecordOffence, decision_record, offence_of
from pbxguard.domain.evaluate import CallAttempt, Decision, Verdict
from pbxguard.domain.policy import Mode
from pbxguard.domain.records import CallRef, Layer, Outcome
from pbxguard.errors import PbxGuardError
from pbxguard.protocol.agi import AgiEnvironment

log = structlog.get_logger(__name__)

MAX_CODE_ATTEMPTS = 3


class CodeBook(Protocol):
    """Checks authorization codes and records failures and approval uses."""

    async def check_code(
        self,
        code: str,
        now: datetime,
        *,
        person_id: str | None = None,
        extension: str = "",
        call: CallRef | None = None,
    ) -> str | None:
        """Return the owner of a valid code, or None."""

    async def record_code_failure(
        self,
        *,
        at: datetime,
        extension: str = "",
        person_id: str = "",
        call: CallRef | None = None,
        reason: str = "",
    ) -> object:
        """Record a wrong code."""

    async def use_approval(self, approval_id: str, call: CallRef, at: datetime) -> object:
        """Count one call against an approval."""


def caller_and_number(env: AgiEnvironment) -> tuple[str, str]:
    """Read the caller and the dialled number: AGI arguments first, then the environment."""
    args = env.args
    caller = args[0] if len(args) >= 1 and args[0] else (env.callerid or "")
    number = args[1] if len(args) >= 2 and args[1] else env.extension
    return caller, number


class PreDialGate:
    """Answer the dialplan's FastAGI requests with verdicts."""

    def __init__(
        self,
        guard: Guard,
        codes: CodeBook,
        clock: Clock,
        *,
        attempts_capacity: int = 10_000,
    ) -> None:
        self._guard = guard
        self._codes = codes
        self._clock = clock
        self._failures: OrderedDict[str, int] = OrderedDict()
        self._capacity = attempts_capacity

    @property
    def routes(self) -> Mapping[str, AgiHandler]:
        """The routes to serve: ``authorize`` and ``pin``."""
        return {"authorize": self.authorize, "pin": self.pin}

    def _on_duty(self, extension: str, now: datetime) -> str | None:
        policy = self._guard.loaded.policy
        line = policy.line(extension)
        if line is None or not line.duty_line or policy.rota is None:
            return None
        return policy.rota.on_duty(line.duty_line, now)

    async def authorize(self, env: AgiEnvironment, channel: AgiChannel) -> None:
        """Judge a call before it rings."""
        extension, number = caller_and_number(env)
        now = self._clock.now()
        attempt = CallAttempt(extension, number, on_duty=self._on_duty(extension, now))
        decision = self._guard.judge(attempt, now=now, allow_pin=True)
        await self._answer(env, channel, decision, now)

    async def pin(self, env: AgiEnvironment, channel: AgiChannel) -> None:
        """Check an authorization code and judge the call on its owner's permissions."""
        extension, number = caller_and_number(env)
        code = env.args[2] if len(env.args) >= 3 else ""
        now = self._clock.now()
        ref = CallRef(env.uniqueid, env.uniqueid, env.channel)
        owner = None
        if code:
            # The phone's owner is the likeliest holder: check their codes alone first.
            hint = self._guard.loaded.policy.person_at(extension)
            try:
                if hint is not None:
                    owner = await self._codes.check_code(
                        code, now, person_id=hint.id, extension=extension, call=ref
                    )
                if owner is None:
                    owner = await self._codes.check_code(code, now, extension=extension, call=ref)
            except PbxGuardError as exc:
                log.warning("authorization code check failed", error=str(exc))
        if owner is not None:
            self._failures.pop(env.uniqueid, None)
            attempt = CallAttempt(
                extension,
                number,
                on_duty=self._on_duty(extension, now),
                code_owner=owner,
            )
            decision = self._guard.judge(attempt, now=now)
            await self._answer(env, channel, decision, now)
            return
        failures = self._failures.get(env.uniqueid, 0) + 1
        self._failures[env.uniqueid] = failures
        while len(self._failures) > self._capacity:
            self._failures.popitem(last=False)
        base = self._guard.judge(CallAttempt(extension, number), now=now, allow_pin=True)
        if failures >= MAX_CODE_ATTEMPTS:
            decision = replace(
                base,
                verdict=Verdict.DENY,
                reason_zh=f"授权码连续{failures}次错误，呼叫被拒绝",
                reason_en=f"{failures} wrong authorization codes: call refused",
                offence=False,
            )
        else:
            decision = replace(
                base,
                verdict=Verdict.PIN,
                reason_zh="授权码错误，请重新输入",
                reason_en="wrong authorization code, try again",
                offence=False,
            )
        await self._answer(env, channel, decision, now)
        try:
            await self._codes.record_code_failure(
                at=now,
                extension=extension,
                call=ref,
                reason=f"attempt {failures} of {MAX_CODE_ATTEMPTS}",
            )
        except PbxGuardError as exc:
            log.warning("could not record a wrong code", error=str(exc))

    async def _answer(
        self, env: AgiEnvironment, channel: AgiChannel, decision: Decision, now: datetime
    ) -> None:
        verdict = decision.verdict
        if verdict is Verdict.DENY and self._guard.loaded.policy.mode is Mode.MONITOR:
            verdict = Verdict.ALLOW  # monitor mode records; it never stands in the way
        await channel.set_variable("PBXGUARD_VERDICT", verdict.value)
        await channel.set_variable("PBXGUARD_RULE", decision.rule_id)
        await channel.set_variable("PBXGUARD_REASON", decision.reason_en)
        await channel.set_variable("PBXGUARD_REASON_ZH", decision.reason_zh)
        log.info(
            "pre-dial verdict",
            uniqueid=env.uniqueid,
            extension=decision.extension,
            number_class=decision.number_class.value,
            verdict=decision.verdict.value,
            rule=decision.rule_id,
        )
        if decision.verdict is Verdict.PIN:
            return
        self._guard.remember_verdict(env.uniqueid, decision)
        self._record(env, decision, now)
        if decision.approval_id:
            ref = CallRef(env.uniqueid, env.uniqueid, env.channel)
            try:
                used = await self._codes.use_approval(decision.approval_id, ref, now)
            except PbxGuardError as exc:
                log.warning("could not count an approval use", error=str(exc))
                return
            if isinstance(used, Approval):
                self._guard.update_approval(used)

    def _record(self, env: AgiEnvironment, decision: Decision, now: datetime) -> None:
        policy = self._guard.loaded.policy
        ref = CallRef(env.uniqueid, env.uniqueid, env.channel)
        record = decision_record(
            decision, key=f"{policy.site}:{env.uniqueid}:agi", at=now, call=ref, layer=Layer.AGI
        )
        effects: list[RecordDecision | RecordOffence] = [RecordDecision(record)]
        rule = policy.rules.get(decision.rule_id)
        priced_at_end = (
            policy.mode is Mode.MONITOR
            and rule is not None
            and rule.penalty is not None
            and rule.penalty.needs_charge
        )
        # A monitored call that goes ahead and whose fine depends on its charge is recorded
        # by the AMI layer when it ends, priced from its talk time.
        if decision.offence and not priced_at_end:
            outcome = Outcome.MONITORED if policy.mode is Mode.MONITOR else Outcome.REFUSED
            # The same key as the AMI layer's, so a call judged by both is one offence.
            draft = offence_of(decision, site=policy.site, at=now, call=ref, outcome=outcome)
            effects.append(RecordOffence(draft))
        self._guard.submit(effects)
