"""A security desk for tests: an HTTP endpoint and an SMTP server on loopback, in the test's loop.

`WebhookEndpoint` answers every POST with the status the test chooses (``503`` to play a desk
that is down) and hands each request to the test; `MailServer` is aiosmtpd's SMTP protocol
and keeps every message it accepted. Both listen on a free port of 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from email.policy import default
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.support.loopback import HOST, LoopbackServer


@dataclass(frozen=True, slots=True)
class Posted:
    """One request the endpoint received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


@dataclass
class WebhookEndpoint(LoopbackServer):
    """An HTTP/1.1 server that records requests and answers ``statuses`` in turn, then 200."""

    statuses: list[int] = field(default_factory=list)
    received: asyncio.Queue[Posted] = field(default_factory=asyncio.Queue)
    answered: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/hooks/emergency"

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._handle, HOST, 0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _version = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            status = self.statuses.pop(0) if self.statuses else 200
            self.answered.append(status)
            await self.received.put(Posted(method, path, headers, body))
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()


class _Collector:
    def __init__(self, inbox: asyncio.Queue[tuple[Envelope, Message]]) -> None:
        self._inbox = inbox

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        content = envelope.content
        data = content if isinstance(content, bytes) else str(content).encode("utf-8")
        await self._inbox.put((envelope, message_from_bytes(data, policy=default)))
        return "250 Message accepted for delivery"


@dataclass
class MailServer(LoopbackServer):
    """An SMTP server (aiosmtpd) that keeps what it accepts in ``inbox``."""

    inbox: asyncio.Queue[tuple[Envelope, Message]] = field(default_factory=asyncio.Queue)

    async def _listen(self) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        collector = _Collector(self.inbox)
        return await loop.create_server(
            lambda: SMTP(collector, hostname="desk.test", loop=loop), HOST, 0
        )
