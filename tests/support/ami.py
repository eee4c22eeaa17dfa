"""Support for the AMI tests: recordings, a stream splitter, an event log, a raw AMI client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources

from pbxguard.adapters.ami import AmiClient, AmiTiming
from pbxguard.errors import AmiFrameTooLarge
from pbxguard.protocol.ami import (
    NEED_DATA,
    AmiMessage,
    AmiParser,
    Banner,
    MalformedMessage,
    encode_action,
)
from pbxguard.simulator.ami_server import SimulatedPbx

TEST_SECRET = "correct horse battery staple"
WAIT = 5.0
"""Upper bound for waiting on something that must happen; never reached when all is well."""


@dataclass(frozen=True, slots=True)
class TooLarge:
    """Stands for an AmiFrameTooLarge raised at this point of the stream."""


Parsed = AmiMessage | Banner | MalformedMessage | TooLarge


def recording_bytes(name: str) -> bytes:
    """Return the raw bytes of a recording shipped in the package."""
    root = resources.files("pbxguard.simulator").joinpath("recordings")
    return root.joinpath(f"{name}.ami").read_bytes()


def drain(parser: AmiParser) -> list[Parsed]:
    """Take every complete result out of the parser."""
    out: list[Parsed] = []
    while True:
        try:
            result = parser.next_message()
        except AmiFrameTooLarge:
            out.append(TooLarge())
            continue
        if result is NEED_DATA:
            return out
        out.append(result)


def parse_in_pieces(
    data: bytes,
    cuts: Iterable[int] = (),
    *,
    expect_banner: bool = True,
    max_frame_size: int | None = None,
    eof: bool = True,
) -> list[Parsed]:
    """Feed ``data`` split at the ``cuts`` offsets and collect what comes out."""
    parser = (
        AmiParser(expect_banner=expect_banner)
        if max_frame_size is None
        else AmiParser(expect_banner=expect_banner, max_frame_size=max_frame_size)
    )
    out: list[Parsed] = []
    start = 0
    for cut in sorted({c for c in cuts if 0 < c < len(data)}):
        parser.receive_data(data[start:cut])
        out.extend(drain(parser))
        start = cut
    parser.receive_data(data[start:])
    out.extend(drain(parser))
    if eof:
        parser.receive_eof()
        out.extend(drain(parser))
    return out


def fast_timing(**overrides: float) -> AmiTiming:
    """Timing for tests: quick reconnection, slow pings unless a test wants them."""
    values: dict[str, float] = {
        "connect_timeout": 2.0,
        "login_timeout": 2.0,
        "ping_interval": 30.0,
        "ping_timeout": 2.0,
        "action_timeout": 2.0,
        "backoff_min": 0.01,
        "backoff_max": 0.05,
        "close_timeout": 1.0,
        "login_retry": 0.05,
    }
    values.update(overrides)
    return AmiTiming(**values)


@dataclass
class EventLog:
    """A sink that keeps every event and lets a test wait for one."""

    events: list[AmiMessage] = field(default_factory=list)
    _waiters: list[tuple[Callable[[AmiMessage], bool], asyncio.Future[AmiMessage]]] = field(
        default_factory=list
    )

    def __call__(self, message: AmiMessage) -> None:
        self.events.append(message)
        for match, future in list(self._waiters):
            if not future.done() and match(message):
                future.set_result(message)

    def named(self, name: str) -> list[AmiMessage]:
        """Return the events with this ``Event`` value."""
        return [m for m in self.events if m.event == name]

    async def wait_for(self, match: Callable[[AmiMessage], bool]) -> AmiMessage:
        """Wait for the first event (already seen or to come) for which ``match`` holds."""
        for message in self.events:
            if match(message):
                return message
        future: asyncio.Future[AmiMessage] = asyncio.get_running_loop().create_future()
        self._waiters.append((match, future))
        try:
            return await asyncio.wait_for(future, WAIT)
        finally:
            self._waiters = [w for w in self._waiters if w[1] is not future]

    async def wait_for_event(self, name: str, **fields: str) -> AmiMessage:
        """Wait for an event by name whose fields have the given values."""
        return await self.wait_for(
            lambda m: m.event == name and all(m.get(k) == v for k, v in fields.items())
        )


@contextlib.asynccontextmanager
async def running(client: AmiClient) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``client.run()`` in a task; close the client and reap the task afterwards."""
    task = asyncio.create_task(client.run())
    try:
        yield task
    finally:
        await asyncio.wait_for(client.close(), WAIT)
        if not task.done():
            task.cancel()
        with contextlib.suppress(BaseException):
            await task


@contextlib.asynccontextmanager
async def started(pbx: SimulatedPbx) -> AsyncIterator[SimulatedPbx]:
    """Start the simulated PBX and close it afterwards."""
    await pbx.start()
    try:
        yield pbx
    finally:
        await asyncio.wait_for(pbx.close(), WAIT)


class RawAmi:
    """A bare AMI connection for testing the server: send actions, read messages."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = AmiParser()
        self._ready: list[Parsed] = []
        self._ids = 0

    @classmethod
    async def connect(cls, pbx: SimulatedPbx) -> RawAmi:
        """Open a connection to the simulated PBX."""
        reader, writer = await asyncio.open_connection(pbx.host, pbx.port)
        return cls(reader, writer)

    async def close(self) -> None:
        """Close the connection."""
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()

    def send(self, action: str, fields: Sequence[tuple[str, str]] = ()) -> str:
        """Send an action; return its ActionID."""
        self._ids += 1
        action_id = f"raw-{self._ids}"
        self._writer.write(encode_action(action, fields, action_id=action_id))
        return action_id

    async def read(self) -> Parsed | None:
        """Return the next message, or ``None`` when the server closed the connection."""
        while not self._ready:
            data = await asyncio.wait_for(self._reader.read(65536), WAIT)
            if not data:
                self._parser.receive_eof()
                self._ready.extend(drain(self._parser))
                if not self._ready:
                    return None
                break
            self._parser.receive_data(data)
            self._ready.extend(drain(self._parser))
        return self._ready.pop(0)

    async def read_message(self) -> AmiMessage:
        """Return the next message, which must be an AmiMessage."""
        result = await self.read()
        assert isinstance(result, AmiMessage), result
        return result

    async def read_until(self, match: Callable[[AmiMessage], bool]) -> list[AmiMessage]:
        """Read messages up to and including the first one for which ``match`` holds."""
        seen: list[AmiMessage] = []
        while True:
            message = await self.read_message()
            seen.append(message)
            if match(message):
                return seen

    async def response_to(self, action_id: str) -> AmiMessage:
        """Read until the response carrying ``action_id``; return it."""
        found = await self.read_until(lambda m: m.response is not None and m.action_id == action_id)
        return found[-1]

    async def login(self, secret: str = TEST_SECRET, events: str = "on") -> AmiMessage:
        """Read the banner and log in; return the login response."""
        banner = await self.read()
        assert isinstance(banner, Banner), banner
        action_id = self.send(
            "Login", [("Username", "pbxguard"), ("Secret", secret), ("Events", events)]
        )
        return await self.response_to(action_id)
