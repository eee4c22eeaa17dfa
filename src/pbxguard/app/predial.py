"""The pre-dial gate: FastAGI routes that answer the dialplan before ``Dial()``.

``authorize`` judges the call with the same check as ``pbxguard check`` (`check_call`, through
the guard, which holds the approvals and their uses) and sets ``PBXGUARD_VERDICT`` (allow | deny
| pin), ``PBXGUARD_REASON``, ``PBXGUARD_REASON_ZH`` and ``PBXGUARD_RULE``. ``pin`` checks an
authorization code read by the dialplan: its owner becomes the person who answers for the call.
A few wrong codes refuse the call; too many across calls lock the phone's PIN route for a while
(`pbxguard.domain.codes`).

The verdict's facts (decision, offence, approval use) are written ahead through the guard before
the dialplan hears the verdict: a ``write(2)`` to the journal, never SQL.

Arguments, in the order the shipped dialplan passes them: ``authorize`` gets caller, number and
the call's Linkedid; ``pin`` caller, number, code and Linkedid. Without a Linkedid (an older
dialplan) the channel's Uniqueid stands in for it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Protocol

import structlog

from pbxguard.app.guard import Guard
from pbxguard.app.ports import Clock, CodeChecker
from pbxguard.domain.enforcement import enforcement
from pbxguard.domain.evaluate import CallAttempt, Decision, Verdict
from pbxguard.domain.records import CallRef, CodeFailure, Layer
from pbxguard.errors import PbxGuardError

log = structlog.get_logger(__name__)

#: Wrong codes one call may type before it is refused (the dialplan's loop).
MAX_CODE_ATTEMPTS = 3


class AgiRequest(Protocol):
    """The part of a FastAGI request's environment the gate reads."""

    @property
    def args(self) -> tuple[str, ...]:
        """The AGI arguments (``agi_arg_1`` …)."""

    @property
    def callerid(self) -> str | None:
        """``agi_callerid``."""

    @property
    def extension(self) -> str:
        """``agi_extension``."""

    @property
    def uniqueid(self) -> str:
        """``agi_uniqueid``."""

    @property
    def channel(self) -> str:
        """``agi_channel``."""


class AgiAnswer(Protocol):
    """Sets channel variables on the Asterisk channel of a FastAGI request."""

    async def set_variable(self, name: str, value: str) -> None:
        """Set one variable."""


class AgiRoute(Protocol):
    """A FastAGI route handler."""

    async def __call__(self, env: AgiRequest, channel: AgiAnswer) -> None:
        """Answer one request."""


def _arg(env: AgiRequest, index: int) -> str:
    return env.args[index] if len(env.args) > index else ""


def caller_and_number(env: AgiRequest) -> tuple[str, str]:
    """Read the caller and the dialled number: AGI arguments first, then the environment."""
    caller = _arg(env, 0) or (env.callerid or "")
    number = _arg(env, 1) or env.extension
    return caller, number


class PreDialGate:
    """Answer the dialplan's FastAGI requests with verdicts."""

    def __init__(
        self,
        guard: Guard,
        codes: CodeChecker,
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
    def routes(self) -> Mapping[str, AgiRoute]:
        """The routes to serve: ``authorize`` and ``pin``."""
        return {"authorize": self.authorize, "pin": self.pin}

    async def authorize(self, env: AgiRequest, channel: AgiAnswer) -> None:
        """Judge a call before it rings."""
        extension, number = caller_and_number(env)
        now = self._clock.now()
        ref = CallRef(_arg(env, 2) or env.uniqueid, env.uniqueid, env.channel)
        decision = self._guard.decide(CallAttempt(extension, number), now=now)
        if decision.verdict is Verdict.PIN:
            decision = self._unless_locked(decision, extension, now)
        await self._answer(ref, channel, decision, now)

    def _unless_locked(self, decision: Decision, extension: str, now: datetime) -> Decision:
        until = self._guard.codes.locked_until(extension, now)
        if until is None:
            return decision
        local = until.astimezone(self._guard.policy.timezone).strftime("%H:%M")
        return replace(
            decision,
            verdict=Verdict.DENY,
            reason_zh=f"授权码错误次数过多，授权码通道锁定至 {local}",
            reason_en=f"too many wrong authorization codes: the code route is locked until {local}",
            offence=False,
        )

    async def pin(self, env: AgiRequest, channel: AgiAnswer) -> None:
        """Check an authorization code and judge the call on its owner's permissions."""
        extension, number = caller_and_number(env)
        code = _arg(env, 2)
        now = self._clock.now()
        ref = CallRef(_arg(env, 3) or env.uniqueid, env.uniqueid, env.channel)
        base = self._guard.decide(CallAttempt(extension, number), now=now)
        locked = self._unless_locked(base, extension, now)
        if locked is not base:
            await self._answer(ref, channel, locked, now)
            return
        hint = self._guard.policy.person_at(extension)
        owner = await self._check(
            code, now, extension=extension, call=ref, hint=hint.id if hint else None
        )
        if owner is not None:
            self._failures.pop(env.uniqueid, None)
            decision = self._guard.decide(CallAttempt(extension, number, code_owner=owner), now=now)
            await self._answer(ref, channel, decision, now)
            return
        failures = self._failures.get(env.uniqueid, 0) + 1
        self._failures[env.uniqueid] = failures
        while len(self._failures) > self._capacity:
            self._failures.popitem(last=False)
        self._guard.code_failed(
            CodeFailure(
                key=f"{self._guard.policy.site}:{env.uniqueid}:code:{failures}",
                at=now,
                extension=extension,
                person_id=hint.id if hint else "",
                call=ref,
                reason=f"attempt {failures} of {MAX_CODE_ATTEMPTS}",
            )
        )
        if failures >= MAX_CODE_ATTEMPTS or self._guard.codes.locked_until(extension, now):
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
        await self._answer(ref, channel, decision, now)

    async def _check(
        self, code: str, now: datetime, *, extension: str, call: CallRef, hint: str | None
    ) -> str | None:
        if not code:
            return None
        try:
            # Argon2 and the ledger run in a worker thread: the event loop keeps answering.
            if hint is not None:
                owner = await asyncio.to_thread(
                    self._codes.check, code, now, person_id=hint, extension=extension, call=call
                )
                if owner is not None:
                    return owner
            return await asyncio.to_thread(
                self._codes.check, code, now, extension=extension, call=call
            )
        except PbxGuardError as exc:
            log.warning("authorization code check failed", error=str(exc))
            return None

    async def _answer(
        self, ref: CallRef, channel: AgiAnswer, decision: Decision, now: datetime
    ) -> None:
        # Written ahead: the decision and any offence reach the journal before the dialplan
        # acts on the verdict.
        self._guard.verdict_given(ref, decision, at=now)
        meaning = enforcement(decision, self._guard.policy.mode, Layer.AGI)
        await channel.set_variable("PBXGUARD_VERDICT", meaning.answer.value)
        await channel.set_variable("PBXGUARD_RULE", decision.rule_id)
        await channel.set_variable("PBXGUARD_REASON", decision.reason_en)
        await channel.set_variable("PBXGUARD_REASON_ZH", decision.reason_zh)
        log.info(
            "pre-dial verdict",
            uniqueid=ref.uniqueid,
            extension=decision.extension,
            number_class=decision.number_class.value,
            verdict=decision.verdict.value,
            rule=decision.rule_id,
        )
