"""A carrier that rings, and answers only after a while: the far end the fault tests race.

pjsua answers at once (``--auto-answer=200``) or never (``180``); it cannot answer each of
several calls ringing at the same time a few seconds after it arrived. This is a SIP user
agent server of its own on UDP, as small as a carrier's edge needs to be: it takes the trunk's
INVITEs as the real Asterisk sends them, sends ``100 Trying`` and ``180 Ringing`` at once,
answers with ``200 OK`` (and an SDP answer) ``answer_after`` seconds later if the call is
still ringing, and hangs up (BYE) ``hang_up_after`` seconds after its answer. A CANCEL gets
``200 OK`` and the INVITE ``487 Request Terminated``; a BYE gets ``200 OK``; OPTIONS (the
trunk's qualify) ``200 OK``. Final responses are sent again until their ACK (RFC 3261 timer G).

Every call is kept with what happened to it and when (``time.monotonic()``), which is what the
tests count: a forbidden call must see a CANCEL before it is answered; an emergency call must be
answered and ended by the carrier's own BYE, never cut by the PBX.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_COMPACT = {
    "v": "via",
    "f": "from",
    "t": "to",
    "i": "call-id",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
}
_REASONS = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    481: "Call/Transaction Does Not Exist",
    487: "Request Terminated",
    501: "Not Implemented",
}
_T1 = 0.5
_T2 = 4.0
_GIVE_UP = 32.0
WAIT = 15.0


@dataclass(frozen=True, slots=True)
class SipRequest:
    """One SIP message as received: start line, headers in order (names lower-case), body."""

    start_line: str
    headers: tuple[tuple[str, str], ...]
    body: str

    @classmethod
    def parse(cls, data: bytes) -> SipRequest | None:
        text = data.decode("utf-8", "replace")
        head, _, body = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        if not lines or not lines[0].strip():
            return None
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                continue
            key = name.strip().lower()
            headers.append((_COMPACT.get(key, key), value.strip()))
        return cls(lines[0].strip(), tuple(headers), body)

    @property
    def is_response(self) -> bool:
        return self.start_line.startswith("SIP/2.0")

    @property
    def method(self) -> str:
        if self.is_response:
            return self.header("cseq").split()[-1] if self.header("cseq") else ""
        return self.start_line.split(" ", 1)[0]

    @property
    def uri(self) -> str:
        return "" if self.is_response else self.start_line.split()[1]

    @property
    def user(self) -> str:
        """The user part of the request URI: the dialled number on an INVITE."""
        uri = self.uri.removeprefix("sip:")
        return uri.split("@", 1)[0] if "@" in uri else ""

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers if k == name), "")

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]

    @property
    def call_id(self) -> str:
        return self.header("call-id")

    @property
    def cseq(self) -> str:
        return self.header("cseq")


@dataclass
class CarrierCall:
    """One call the carrier received, and what became of it (monotonic seconds)."""

    call_id: str
    number: str
    invite: SipRequest
    source: tuple[str, int]
    tag: str
    invited: float
    answered: float | None = None
    """When the 200 OK went out: the call was answered (and billed) at the carrier."""
    acked: float | None = None
    cancelled: float | None = None
    """When a CANCEL came: the PBX gave up on the call before the answer."""
    bye_from_pbx: float | None = None
    """When the PBX hung up an answered call (BYE received)."""
    bye_sent: float | None = None
    """When the carrier hung up itself, after its talk time."""
    final: int | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def ended(self) -> bool:
        return (
            self.cancelled is not None
            or self.bye_from_pbx is not None
            or self.bye_sent is not None
            or (self.final is not None and self.final >= 300)
        )

    @property
    def ringing(self) -> bool:
        return self.answered is None and not self.ended


class RingingCarrier(asyncio.DatagramProtocol):
    """The far end of the trunk: rings every call, answers each after ``answer_after`` s."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        rtp_port: int,
        answer_after: float,
        hang_up_after: float,
        log_file: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.rtp_port = rtp_port
        self.answer_after = answer_after
        self.hang_up_after = hang_up_after
        self.log_file = log_file
        self.calls: dict[str, CarrierCall] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._rtp: asyncio.DatagramTransport | None = None
        self._changed = asyncio.Event()
        self._log: list[str] = []
        self._sent_final: dict[str, bytes] = {}

    # -- life -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the SIP port (and an RTP port that swallows the media)."""
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(self.host, self.port)
        )
        self._rtp, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=(self.host, self.rtp_port)
        )

    async def close(self) -> None:
        """Stop every timer and unbind."""
        for call in self.calls.values():
            for task in call.tasks:
                task.cancel()
        for call in self.calls.values():
            for task in call.tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._transport is not None:
            self._transport.close()
        if self._rtp is not None:
            self._rtp.close()
        if self.log_file is not None:
            self.log_file.write_text("\n".join(self._log) + "\n", "utf-8")

    def hang_up_all(self) -> None:
        """End every call still up: BYE the answered ones, 480 the ringing ones."""
        for call in self.calls.values():
            if call.ended:
                continue
            if call.answered is not None:
                self._send_bye(call)
            else:
                self._final(call, 480, "Temporarily Unavailable")

    # -- queries --------------------------------------------------------------------------

    def calls_to(self, number: str) -> list[CarrierCall]:
        """The calls received for ``number``, oldest first."""
        return sorted(
            (c for c in self.calls.values() if c.number == number), key=lambda c: c.invited
        )

    @property
    def live(self) -> int:
        """Calls not ended yet."""
        return sum(1 for c in self.calls.values() if not c.ended)

    async def wait_until(self, probe: Callable[[], T | None], within: float = WAIT) -> T:
        """Wait until ``probe()`` returns something other than None; return it."""
        async with asyncio.timeout(within):
            while (found := probe()) is None:
                changed = self._changed
                await changed.wait()
            return found

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- the wire -------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message = SipRequest.parse(data)
        if message is None:
            return
        self._log.append(f"{time.monotonic():.3f} RX {addr[1]} {message.start_line}")
        if message.is_response:
            return  # the PBX's 200 OK to our BYE: nothing more to do
        handler = {
            "INVITE": self._invite,
            "ACK": self._ack,
            "CANCEL": self._cancel,
            "BYE": self._bye,
            "OPTIONS": self._options,
        }.get(message.method)
        if handler is None:
            self._respond(message, addr, 501)
        else:
            handler(message, addr)
        self._notify()

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self._transport is not None
        first = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
        self._log.append(f"{time.monotonic():.3f} TX {addr[1]} {first}")
        self._transport.sendto(data, addr)

    def _response(
        self,
        request: SipRequest,
        code: int,
        reason: str = "",
        *,
        tag: str = "",
        body: str = "",
        contact: bool = False,
    ) -> bytes:
        lines = [f"SIP/2.0 {code} {reason or _REASONS.get(code, 'Unknown')}"]
        lines += [f"Via: {via}" for via in request.all("via")]
        lines.append(f"From: {request.header('from')}")
        to = request.header("to")
        if tag and ";tag=" not in to:
            to = f"{to};tag={tag}"
        lines += [f"To: {to}", f"Call-ID: {request.call_id}", f"CSeq: {request.cseq}"]
        if contact:
            lines.append(f"Contact: <sip:carrier@{self.host}:{self.port}>")
        lines.append("Server: pbxguard-test-carrier")
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    def _respond(self, request: SipRequest, addr: tuple[str, int], code: int) -> None:
        self._send(self._response(request, code), addr)

    # -- requests -------------------------------------------------------------------------

    def _invite(self, message: SipRequest, addr: tuple[str, int]) -> None:
        call = self.calls.get(message.call_id)
        if call is not None:
            # A retransmission (or a re-INVITE): answer it as the call stands.
            if call.answered is not None and not call.ended:
                self._send(self._ok_with_sdp(message, call), addr)
            elif (final := self._sent_final.get(call.call_id)) is not None:
                self._send(final, addr)
            else:
                self._send(self._response(message, 180, tag=call.tag, contact=True), addr)
            return
        call = CarrierCall(
            message.call_id,
            message.user,
            message,
            addr,
            secrets.token_hex(6),
            time.monotonic(),
        )
        self.calls[call.call_id] = call
        self._send(self._response(message, 100), addr)
        self._send(self._response(message, 180, tag=call.tag, contact=True), addr)
        call.tasks.append(asyncio.ensure_future(self._answer_later(call)))

    async def _answer_later(self, call: CarrierCall) -> None:
        await asyncio.sleep(self.answer_after)
        if not call.ringing:
            return
        call.answered = time.monotonic()
        data = self._ok_with_sdp(call.invite, call)
        self._notify()
        call.tasks.append(asyncio.ensure_future(self._until_acked(call, data)))
        await asyncio.sleep(self.hang_up_after)
        if not call.ended:
            self._send_bye(call)

    async def _until_acked(self, call: CarrierCall, data: bytes, *, final: bool = False) -> None:
        """Send a final response until its ACK (a 2xx also stops once the call has ended)."""
        interval, waited = _T1, 0.0
        while call.acked is None and (final or not call.ended) and waited < _GIVE_UP:
            self._send(data, call.source)
            await asyncio.sleep(interval)
            waited += interval
            interval = min(interval * 2, _T2)

    def _ok_with_sdp(self, invite: SipRequest, call: CarrierCall) -> bytes:
        offered = next((ln for ln in invite.body.splitlines() if ln.startswith("m=audio")), "")
        formats = offered.split()[3:]
        codec = next((f for f in formats if f in ("0", "8")), "0")
        name = "PCMU" if codec == "0" else "PCMA"
        sdp = (
            "v=0\r\n"
            f"o=carrier {int(call.invited)} 1 IN IP4 {self.host}\r\n"
            "s=carrier\r\n"
            f"c=IN IP4 {self.host}\r\n"
            "t=0 0\r\n"
            f"m=audio {self.rtp_port} RTP/AVP {codec}\r\n"
            f"a=rtpmap:{codec} {name}/8000\r\n"
            "a=sendrecv\r\n"
        )
        return self._response(invite, 200, tag=call.tag, body=sdp, contact=True)

    def _final(self, call: CarrierCall, code: int, reason: str = "") -> None:
        call.final = code
        data = self._response(call.invite, code, reason, tag=call.tag)
        self._sent_final[call.call_id] = data
        call.tasks.append(asyncio.ensure_future(self._until_acked(call, data, final=True)))

    def _ack(self, message: SipRequest, addr: tuple[str, int]) -> None:
        call = self.calls.get(message.call_id)
        if call is not None and call.acked is None:
            call.acked = time.monotonic()

    def _cancel(self, message: SipRequest, addr: tuple[str, int]) -> None:
        call = self.calls.get(message.call_id)
        if call is None:
            self._respond(message, addr, 481)
            return
        self._send(self._response(message, 200, tag=call.tag), addr)
        if call.cancelled is None:
            call.cancelled = time.monotonic()
        if call.answered is None and call.final is None:
            self._final(call, 487)

    def _bye(self, message: SipRequest, addr: tuple[str, int]) -> None:
        call = self.calls.get(message.call_id)
        self._send(self._response(message, 200), addr)
        if call is not None and call.bye_from_pbx is None and call.bye_sent is None:
            call.bye_from_pbx = time.monotonic()

    def _options(self, message: SipRequest, addr: tuple[str, int]) -> None:
        self._send(self._response(message, 200, tag=secrets.token_hex(4)), addr)

    def _send_bye(self, call: CarrierCall) -> None:
        invite = call.invite
        target = invite.header("contact").strip()
        if "<" in target:
            target = target[target.index("<") + 1 : target.index(">")]
        to = invite.header("to")
        lines = [
            f"BYE {target} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.port};rport;branch=z9hG4bK{secrets.token_hex(8)}",
            "Max-Forwards: 70",
            f"From: {to};tag={call.tag}" if ";tag=" not in to else f"From: {to}",
            f"To: {invite.header('from')}",
            f"Call-ID: {call.call_id}",
            "CSeq: 1 BYE",
            "Content-Length: 0",
        ]
        call.bye_sent = time.monotonic()
        self._send(("\r\n".join(lines) + "\r\n\r\n").encode(), call.source)
        self._notify()
