"""A TCP proxy between pbxguard and Asterisk's AMI port that a test can cut at will.

That is how an AMI outage is injected on a real PBX: :meth:`AmiProxy.sever` closes both sides
of every connection at once (pbxguard sees the PBX vanish, Asterisk sees its client go), and
:meth:`AmiProxy.refuse` keeps new connections out until :meth:`AmiProxy.admit`. Bytes flow
with back-pressure (each side waits for the other to drain), so a stalled pbxguard fills its
socket and Asterisk's ``writetimeout`` acts exactly as it would on a direct connection.

A test can also cut at a precise moment of the conversation: :meth:`AmiProxy.cut_on` arms a
one-shot *tripwire* that severs every connection (and refuses new ones until
:meth:`AmiProxy.admit`) when a matching message passes in a given direction, either just after
delivering it or instead of delivering it. Both directions are parsed as they flow for that.

Everything Asterisk sends is also kept, per connection, for the simulator-fidelity tests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from pbxguard.protocol.ami import NEED_DATA, AmiMessage, AmiParser

_READ_SIZE = 64 * 1024


@dataclass(eq=False)
class Tripwire:
    """A cut waiting for a message (see :meth:`AmiProxy.cut_on`)."""

    from_pbx: bool
    match: Callable[[AmiMessage], bool]
    deliver: bool
    act: Callable[[], None] | None = None
    """Done instead of the cut (the link then stays up)."""
    fired: asyncio.Event = field(default_factory=asyncio.Event)
    message: AmiMessage | None = None
    """The message that tripped it."""


@dataclass(eq=False)
class _Link:
    number: int
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    from_server: bytearray = field(default_factory=bytearray)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    parsers: dict[bool, AmiParser] = field(
        default_factory=lambda: {True: AmiParser(), False: AmiParser(expect_banner=False)}
    )

    def close(self) -> None:
        for writer in (self.client, self.server):
            with contextlib.suppress(OSError, RuntimeError):
                writer.transport.abort()


class AmiProxy:
    """Forward one TCP port on loopback to Asterisk's AMI port."""

    def __init__(self, upstream_host: str, upstream_port: int, *, host: str, port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._closed_links: list[_Link] = []
        self._refusing = False
        self.connections = 0
        """Connections accepted and forwarded since the start."""
        self.severed = 0
        """Connections cut by :meth:`sever`."""
        self.hangups: list[AmiMessage] = []
        """Every ``Hangup`` action pbxguard sent through the proxy, delivered or not."""
        self._wire: Tripwire | None = None
        self._changed = asyncio.Event()

    async def start(self) -> None:
        """Listen on ``host:port``."""
        self._server = await asyncio.start_server(self._accept, self.host, self.port)

    async def close(self) -> None:
        """Stop listening and cut every connection."""
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.close()
        for link in list(self._links):
            for task in link.tasks:
                with contextlib.suppress(BaseException):
                    await task
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    @property
    def live(self) -> int:
        """Connections open right now."""
        return len(self._links)

    def sever(self) -> int:
        """Cut every open connection at once; return how many were cut."""
        links = list(self._links)
        for link in links:
            link.close()
        self.severed += len(links)
        return len(links)

    def refuse(self) -> None:
        """Close new connections as soon as they arrive, until :meth:`admit`."""
        self._refusing = True

    def admit(self) -> None:
        """Forward new connections again."""
        self._refusing = False

    def cut_on(
        self,
        match: Callable[[AmiMessage], bool],
        *,
        from_pbx: bool,
        deliver: bool,
        act: Callable[[], None] | None = None,
    ) -> Tripwire:
        """Arm a one-shot cut: the next message ``match`` accepts trips it.

        ``from_pbx`` picks the direction (Asterisk's events and responses, or pbxguard's
        actions). With ``deliver`` the bytes holding the message are passed on before every
        connection is severed; without, they are dropped with the cut (as bytes in flight are
        when a link fails). Either way new connections are refused until :meth:`admit`.
        With ``act`` (``kill -9`` of pbxguard, say) that is done at that moment instead, and
        the link is left alone.
        """
        self._wire = Tripwire(from_pbx, match, deliver, act)
        return self._wire

    def disarm(self) -> None:
        """Take back a tripwire that has not fired."""
        self._wire = None

    def _inspect(self, link: _Link, from_server: bool, data: bytes) -> Tripwire | None:
        """Parse what flows; return the armed tripwire if a message in ``data`` trips it."""
        parser = link.parsers[from_server]
        parser.receive_data(data)
        tripped: Tripwire | None = None
        while (message := parser.next_message()) is not NEED_DATA:
            if not isinstance(message, AmiMessage):
                continue
            if not from_server and (message.get("Action") or "").lower() == "hangup":
                self.hangups.append(message)
            wire = self._wire
            if (
                tripped is None
                and wire is not None
                and wire.from_pbx == from_server
                and wire.match(message)
            ):
                wire.message = message
                tripped = wire
        return tripped

    def _trip(self, wire: Tripwire) -> None:
        if self._wire is wire:
            self._wire = None
        if wire.act is not None:
            wire.act()
        else:
            self.refuse()
            self.sever()
        wire.fired.set()

    async def wait_for_connections(self, count: int, within: float = 30.0) -> None:
        """Wait until ``count`` connections have been forwarded since the start."""
        async with asyncio.timeout(within):
            while self.connections < count:
                changed = self._changed
                await changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        link = _Link(self.connections, writer, up_writer)
        self._links.add(link)
        self._notify()
        link.tasks = [
            asyncio.create_task(self._pump(reader, up_writer, link, from_server=False)),
            asyncio.create_task(self._pump(up_reader, writer, link, from_server=True)),
        ]
        try:
            await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            link.close()
            await asyncio.wait(link.tasks)
            self._links.discard(link)
            self._closed_links.append(link)
            self._notify()

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        link: _Link,
        *,
        from_server: bool,
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await source.read(_READ_SIZE):
                wire = self._inspect(link, from_server, data)
                if wire is not None and not wire.deliver:
                    self._trip(wire)
                    if wire.act is None:
                        break
                    continue
                if from_server:
                    link.from_server.extend(data)
                sink.write(data)
                await sink.drain()
                if wire is not None:
                    self._trip(wire)
                    if wire.act is None:
                        break
        link.close()

    def captured(self) -> list[list[AmiMessage]]:
        """What Asterisk sent on each connection so far, as AMI messages (banner left out)."""
        out: list[list[AmiMessage]] = []
        links = sorted([*self._closed_links, *self._links], key=lambda link: link.number)
        for link in links:
            parser = AmiParser()
            parser.receive_data(bytes(link.from_server))
            messages: list[AmiMessage] = []
            while (message := parser.next_message()) is not NEED_DATA:
                if isinstance(message, AmiMessage):
                    messages.append(message)
            out.append(messages)
        return out

    def raw(self) -> list[bytes]:
        """The bytes Asterisk sent on each connection so far."""
        links = sorted([*self._closed_links, *self._links], key=lambda link: link.number)
        return [bytes(link.from_server) for link in links]
