"""The whole test site: Asterisk, its AMI proxy, the phones, the carrier, and pbxguard.

A tier test gets one :class:`PbxSite` for the session and uses it like this::

    async with site.guard() as guard:                 # pbxguard run, fresh ledger
        call = site.dial("2001", "02112345678")       # 2001 dials; returns at once
        invite = await call.reaches_carrier()         # the carrier's INVITE for that number
        print(call.delay(invite))                     # seconds from 2001's INVITE to it
        guard.stall()                                 # SIGSTOP (guard.resume(): SIGCONT)
        site.proxy.sever()                            # cut pbxguard's AMI connection
        rows = await guard.ledger()                   # pbxguard ledger --format json

``site.carrier`` is the pjsua the trunk dials: ``site.carrier.calls_received()`` lists every
INVITE it got (number, pjsua time stamp), ``requests("CANCEL")`` / ``requests("BYE")`` the
ends. ``site.quiesce()`` hangs everything up and waits until Asterisk has no channel left;
tests call it between scenarios so one call's events never land in the next one's.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from tests.support.pbx.asterisk import Asterisk
from tests.support.pbx.carrier import RingingCarrier
from tests.support.pbx.config import (
    BYPASS_PHONES,
    HOST,
    PHONES,
    TIER_AMI_USER,
    Ports,
    Secrets,
    install,
)
from tests.support.pbx.daemon import PbxGuardProcess, write_settings, write_test_policy
from tests.support.pbx.events import AmiMonitor
from tests.support.pbx.pjsua import CallState, Phone, SipMessage, interval
from tests.support.pbx.proxy import AmiProxy

WAIT = 15.0
#: Who the carrier says is calling when it places an inbound call.
OUTSIDE_CALLER = "13912345678"
SITE_TIMEZONE = ZoneInfo("Asia/Shanghai")
#: The alarm phone's occupancy grace in the tier's policy (the reference site has 60 s).
OCCUPANCY_GRACE = 5


@dataclass
class Dialled:
    """A call one phone placed, followed on the caller's side and at the carrier."""

    site: PbxSite
    caller: Phone
    number: str
    placed: float

    def _call_index(self) -> int | None:
        for state in self.caller.states:
            if state.seen >= self.placed and state.state == "CALLING":
                return state.call
        return None

    def caller_invite(self) -> SipMessage | None:
        """The caller's first INVITE of this call (before any authentication challenge)."""
        for message in self.caller.requests("INVITE", "TX", since=self.placed):
            if message.user == self.number:
                return message
        return None

    def at_carrier(self) -> list[SipMessage]:
        """The carrier's INVITEs for this number since the call was placed."""
        return [
            m for m in self.site.carrier.calls_received(since=self.placed) if m.user == self.number
        ]

    async def reaches_carrier(self, within: float = WAIT) -> SipMessage:
        """Wait for the carrier's INVITE for this number."""
        return await self.site.carrier.wait_until(
            lambda: next(iter(self.at_carrier()), None), within
        )

    def state(self, name: str) -> CallState | None:
        """The caller's first state ``name`` for this call."""
        index = self._call_index()
        if index is None:
            return None
        for state in self.caller.states:
            if state.seen >= self.placed and state.call == index and state.state == name:
                return state
        return None

    async def wait_state(self, name: str, within: float = WAIT) -> CallState:
        """Wait for the caller's call to reach state ``name`` (``CONFIRMED``, ``DISCONNECTED``)."""
        return await self.caller.wait_until(lambda: self.state(name), within)

    async def ended(self, within: float = WAIT) -> CallState:
        """Wait for the call to end on the caller's side; its state says the SIP reason."""
        return await self.wait_state("DISCONNECTED", within)

    def delay(self, later: SipMessage | CallState) -> float:
        """Seconds from the caller's first INVITE to ``later`` (pjsua's own stamps)."""
        invite = self.caller_invite()
        assert invite is not None, f"{self.caller.name} sent no INVITE for {self.number}"
        return interval(invite.stamp, later.stamp)


@dataclass
class PbxSite:
    """Asterisk with the project's dialplan, a proxy in front of AMI, phones, a carrier."""

    runtime: Path
    workdir: Path
    ports: Ports = field(default_factory=Ports.choose)
    secrets: Secrets = field(default_factory=Secrets)
    site_name: str | None = None
    """The policy's ``[site] name`` (the reference site's when None)."""
    only: tuple[str, ...] | None = None
    """The phones to run (all of them when None)."""

    def __post_init__(self) -> None:
        self.asterisk = Asterisk(self.runtime)
        self.proxy = AmiProxy(HOST, self.ports.ami, host=HOST, port=self.ports.proxy)
        self.events = AmiMonitor(HOST, self.ports.ami, TIER_AMI_USER, self.secrets.tier_ami)
        self.phones: dict[str, Phone] = {}
        self.carrier = Phone(
            "carrier",
            self.runtime,
            self.workdir,
            local_port=self.ports.carrier,
            rtp_port=self.ports.phone_rtp(0),
            identity=f"sip:{OUTSIDE_CALLER}@{HOST}",
        )
        for index, ext in enumerate((*PHONES, *BYPASS_PHONES), start=1):
            if self.only is not None and ext not in self.only:
                continue
            self.phones[ext] = Phone(
                ext,
                self.runtime,
                self.workdir,
                local_port=self.ports.phones[ext],
                rtp_port=self.ports.phone_rtp(index),
                identity=f"sip:{ext}@{HOST}:{self.ports.sip}",
                registrar=f"sip:{HOST}:{self.ports.sip}",
                password=self.secrets.phones[ext],
            )
        today = datetime.now(SITE_TIMEZONE).date()
        self.policy = write_test_policy(
            self.workdir / "site-policy.toml",
            today=today,
            occupancy_grace=OCCUPANCY_GRACE,
            pin_classes=("domestic_ld",),
            site_name=self.site_name,
        )
        self._guard_runs = itertools.count(1)
        self._carrier_runs = itertools.count(1)

    # -- life ---------------------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls,
        runtime: Path,
        workdir: Path,
        *,
        site_name: str | None = None,
        only: tuple[str, ...] | None = None,
        ports: Ports | None = None,
    ) -> AsyncIterator[PbxSite]:
        """Start everything; stop every process by PID on the way out, also after a failure."""
        site = cls(runtime, workdir, ports or Ports.choose(), site_name=site_name, only=only)
        try:
            install(runtime / "etc" / "asterisk", site.ports, site.secrets)
            await site.asterisk.start()
            await site.events.start()
            await site.proxy.start()
            await site.carrier.start()
            for phone in site.phones.values():
                await phone.start()
            for phone in site.phones.values():
                await phone.wait_registered()
            await site.wait_reachable(*site.phones)
            yield site
        finally:
            await site.close()

    async def close(self) -> None:
        """Stop the phones, the carrier, the proxy and Asterisk."""
        await asyncio.gather(
            *(phone.stop() for phone in (*self.phones.values(), self.carrier)),
            return_exceptions=True,
        )
        await self.proxy.close()
        await self.events.close()
        await self.asterisk.stop()

    async def restart_phone(self, ext: str) -> Phone:
        """Start a phone again (after a kill) and wait until it is registered and reachable."""
        phone = self.phones[ext]
        if phone.running:
            await phone.stop()
        await phone.start()
        await phone.wait_registered()
        await self.wait_reachable(ext)
        return phone

    async def wait_reachable(self, *extensions: str, within: float = WAIT) -> None:
        """Wait until Asterisk's qualify reports each phone's contact reachable ("Avail")."""
        async with asyncio.timeout(within):
            while True:
                out = await self.asterisk.cli("pjsip show contacts")
                avail = {
                    words[1].split("/", 1)[0]
                    for line in out.splitlines()
                    if (words := line.split())[:1] == ["Contact:"] and "Avail" in words
                }
                if set(extensions) <= avail:
                    return
                await asyncio.sleep(0.2)

    async def quiesce(self, within: float = WAIT) -> None:
        """Hang up every call on every phone and wait until Asterisk has no channel left."""
        for phone in (*self.phones.values(), self.carrier):
            if phone.running:
                phone.hangup_all()
        async with asyncio.timeout(within):
            # The CLI's channel count is the PBX's own word; there is no event to wait on.
            while await self.asterisk.active_channels():  # noqa: ASYNC110
                await asyncio.sleep(0.1)

    async def receiving_media(self, ext: str, packets: int = 10, within: float = WAIT) -> int:
        """Wait until Asterisk has received ``packets`` RTP packets from ``ext``'s call.

        Asterisk drops RTP from a new source until it has seen a few packets in a row (strict
        RTP learning), telephone events included: digits sent the instant a call is answered
        can be lost, as they would be from a real phone whose user typed that fast.
        """
        async with asyncio.timeout(within):
            while True:
                out = await self.asterisk.cli("pjsip show channelstats")
                for line in out.splitlines():
                    words = line.split()
                    channel = next((w for w in words if w.startswith(f"{ext}-")), None)
                    if channel is None:
                        continue
                    after = words[words.index(channel) + 1 :]
                    # UpTime, Codec, then the receive count.
                    if len(after) >= 3 and after[2].isdigit() and int(after[2]) >= packets:
                        return int(after[2])
                await asyncio.sleep(0.05)

    # -- calls --------------------------------------------------------------------------------

    def uri(self, number: str) -> str:
        """The SIP URI a phone dials for ``number``."""
        return f"sip:{number}@{HOST}:{self.ports.sip}"

    def dial(self, ext: str, number: str) -> Dialled:
        """Make phone ``ext`` dial ``number``; return at once with the call to follow."""
        phone = self.phones[ext]
        placed = phone.call(self.uri(number))
        return Dialled(self, phone, number, placed)

    def dial_in(self, did: str) -> Dialled:
        """Make the carrier call the site's ``did`` (an inbound call from the public network)."""
        placed = self.carrier.call(self.uri(did))
        return Dialled(self, self.carrier, did, placed)

    async def set_global(self, name: str, value: str) -> None:
        """Change a dialplan global live (``dialplan set global``), as an administrator would."""
        await self.asterisk.cli(f"dialplan set global {name} {value}")

    # -- pbxguard -----------------------------------------------------------------------------

    def guard_settings(self, workdir: Path, *, ledger_url: str | None = None) -> Path:
        """Write a settings file for a pbxguard with its state (and ledger) in ``workdir``."""
        workdir.mkdir(parents=True, exist_ok=True)
        return write_settings(
            workdir / "pbxguard.toml",
            policy=self.policy,
            ami_port=self.ports.proxy,
            ami_secret=self.secrets.ami,
            agi_port=self.ports.agi,
            workdir=workdir,
            ledger_url=ledger_url,
        )

    @contextlib.asynccontextmanager
    async def guard(self, *, ledger_url: str | None = None) -> AsyncIterator[PbxGuardProcess]:
        """Run ``pbxguard run`` with a fresh ledger (or ``ledger_url``); stop it on the way out."""
        workdir = self.workdir / f"guard-{next(self._guard_runs)}"
        process = PbxGuardProcess(self.guard_settings(workdir, ledger_url=ledger_url), workdir)
        try:
            await process.start()
            yield process
        finally:
            await process.stop()

    # -- the carrier ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def ringing_carrier(
        self, *, answer_after: float, hang_up_after: float
    ) -> AsyncIterator[RingingCarrier]:
        """Put a carrier that answers late in the pjsua carrier's place (same port) for a while.

        On the way out every call still up is ended and Asterisk is left with no channel; then
        the pjsua carrier comes back.
        """
        await self.carrier.stop()
        carrier = RingingCarrier(
            HOST,
            self.ports.carrier,
            rtp_port=self.ports.phone_rtp(0),
            answer_after=answer_after,
            hang_up_after=hang_up_after,
            log_file=self.workdir / f"carrier-sip-{next(self._carrier_runs)}.log",
        )
        await carrier.start()
        try:
            yield carrier
        finally:
            try:
                carrier.hang_up_all()
                await self.quiesce()
            finally:
                await carrier.close()
                await self.carrier.start()
