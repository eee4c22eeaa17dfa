"""FastAGI server: answers Asterisk's pre-dial ``AGI(agi://…)`` requests over asyncio streams.

Each connection is one request and one task. The route (the URL path, ``authorize`` in
``agi://127.0.0.1:4573/authorize``) picks an async handler, which reads the `AgiEnvironment`
and sets channel variables through an `AgiChannel`. One deadline covers reading the
environment and running the handler: once connected, ``res_agi`` waits for commands with no
time limit of its own, so the deadline is what bounds the caller's wait when something here
is slow.

Whatever a client does (half an environment then EOF, silence, garbage, a hang-up) costs its
own task and nothing more: the task reads until EOF or the deadline, logs one line, answers
``failure`` when that can help the dialplan, and closes. EOF is read once and ends the request,
so no task spins on a closed socket.
"""

from __future__ import annotations

import asyncio
import enum
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final

import structlog

from pbxguard.errors import AgiProtocolError, ConfigError
from pbxguard.protocol.agi import (
    CLOSED,
    DEFAULT_MAX_ENVIRONMENT_BYTES,
    DEFAULT_PORT,
    NEED_DATA,
    AgiCommand,
    AgiConnection,
    AgiEnvironment,
    AgiReply,
    ChannelHungUp,
)

__all__ = [
    "DEFAULT_BACKLOG",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_REQUEST_TIMEOUT",
    "AgiChannel",
    "AgiHandler",
    "FastAgiCounters",
    "FastAgiServer",
]

DEFAULT_HOST: Final = "127.0.0.1"
# Asterisk gives up connecting after 2 s (MAX_AGI_CONNECT); a verdict later than that is
# worth nothing to a caller who is listening to silence.
DEFAULT_REQUEST_TIMEOUT: Final = 1.5
# asyncio's default listen backlog (100) overflows when a burst of call attempts connects at
# once; the kernel then drops the SYNs and Asterisk retries a second later, a second of
# silence for the caller. The kernel caps this at net.core.somaxconn.
DEFAULT_BACKLOG: Final = 1024
_READ_SIZE: Final = 4096
_CLOSE_TIMEOUT: Final = 1.0

log = structlog.get_logger(__name__)


class _Outcome(enum.Enum):
    SERVED = "served"
    TIMED_OUT = "timed_out"
    HUNG_UP = "hung_up"
    UNKNOWN_ROUTE = "unknown_route"
    PROTOCOL_ERROR = "protocol_error"
    HANDLER_ERROR = "handler_error"
    ABANDONED = "abandoned"


@dataclass(frozen=True, slots=True)
class FastAgiCounters:
    """How the requests since start ended; each accepted connection counts once.

    Attributes:
        accepted: connections accepted.
        served: the handler ran to its end.
        timed_out: the environment or the handler outlasted the deadline.
        hung_up: the caller hung up while the handler was talking to Asterisk.
        unknown_route: no handler for the requested script.
        protocol_error: bytes that were not FastAGI, an early EOF, or a command Asterisk refused.
        handler_error: the handler raised.
        abandoned: the client closed without sending anything (a port probe).
        active: connections being served right now.
    """

    accepted: int
    served: int
    timed_out: int
    hung_up: int
    unknown_route: int
    protocol_error: int
    handler_error: int
    abandoned: int
    active: int

    @property
    def failed(self) -> int:
        """Return the requests that ended without a verdict through a fault."""
        return self.unknown_route + self.protocol_error + self.handler_error


class AgiChannel:
    """The handler's side of one request: commands to the Asterisk channel, one at a time."""

    def __init__(
        self,
        connection: AgiConnection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self._connection = connection
        self._reader = reader
        self._writer = writer
        self._lock = asyncio.Lock()
        self._hung_up = False

    @property
    def hung_up(self) -> bool:
        """Tell whether Asterisk said the channel hung up (``HANGUP`` or a 511)."""
        return self._hung_up

    async def set_variable(self, name: str, value: str) -> None:
        """Set a channel variable; raise `AgiProtocolError` if that did not happen."""
        await self.execute(AgiCommand.set_variable(name, value))

    async def get_variable(self, name: str) -> str | None:
        """Return a channel variable's value, or ``None`` when it is not set."""
        reply = await self.execute(AgiCommand.get_variable(name))
        return reply.data if reply.result == 1 else None

    async def verbose(self, message: str, level: int = 1) -> None:
        """Write a line to the Asterisk console and log."""
        await self.execute(AgiCommand.verbose(message, level))

    async def execute(self, command: AgiCommand) -> AgiReply:
        """Send one command and return Asterisk's 200 reply.

        Raises `AgiProtocolError` when Asterisk refuses the command (510, 511, 520, or a
        negative result), when the channel has hung up (`hung_up` then says so), or when the
        connection breaks.
        """
        if self._hung_up:
            raise AgiProtocolError(f"{command.verb} not sent: the channel has hung up")
        async with self._lock:
            data = self._connection.send(command)
            try:
                self._writer.write(data)
                await self._writer.drain()
            except OSError as exc:
                raise AgiProtocolError(f"{command.verb}: connection to Asterisk lost") from exc
            reply = await self._final_reply(command)
        if not reply.ok:
            if reply.code == 511:
                self._hung_up = True
            raise AgiProtocolError(f"Asterisk refused {command.verb}: {reply.code} {reply.message}")
        if reply.result is not None and reply.result < 0:
            raise AgiProtocolError(f"{command.verb} failed: result={reply.result}")
        return reply

    async def _final_reply(self, command: AgiCommand) -> AgiReply:
        while True:
            event = self._connection.next_event()
            if event is NEED_DATA:
                try:
                    chunk = await self._reader.read(_READ_SIZE)
                except OSError as exc:
                    raise AgiProtocolError(f"{command.verb}: connection to Asterisk lost") from exc
                self._connection.receive_data(chunk)
            elif event is CLOSED:
                raise AgiProtocolError(
                    f"Asterisk closed the connection before answering {command.verb}"
                )
            elif isinstance(event, ChannelHungUp):
                self._hung_up = True
                raise AgiProtocolError(f"{command.verb}: the channel hung up")
            elif isinstance(event, AgiReply):
                if event.code >= 200:
                    return event
            else:
                raise AgiProtocolError("a second AGI environment on one connection")


AgiHandler = Callable[[AgiEnvironment, AgiChannel], Awaitable[None]]


class FastAgiServer:
    """A FastAGI server that dispatches each request to the handler of its route."""

    def __init__(
        self,
        routes: Mapping[str, AgiHandler],
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_environment_bytes: int = DEFAULT_MAX_ENVIRONMENT_BYTES,
        backlog: int = DEFAULT_BACKLOG,
    ) -> None:
        """Prepare the server; nothing listens until `start` or `serve`.

        ``port=0`` asks the system for a free port; `start` returns the one bound.
        """
        self._routes = dict(routes)
        self._host = host
        self._port = port
        self._request_timeout = request_timeout
        self._max_environment_bytes = max_environment_bytes
        self._backlog = backlog
        self._server: asyncio.Server | None = None
        self._address: tuple[str, int] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._outcomes: Counter[_Outcome] = Counter()
        self._accepted = 0
        self._stopped = asyncio.Event()

    @property
    def address(self) -> tuple[str, int]:
        """Return the bound host and port; only valid once started."""
        if self._address is None:
            raise ConfigError("the FastAGI server is not listening")
        return self._address

    def counters(self) -> FastAgiCounters:
        """Return a snapshot of the request counters."""
        o = self._outcomes
        return FastAgiCounters(
            accepted=self._accepted,
            served=o[_Outcome.SERVED],
            timed_out=o[_Outcome.TIMED_OUT],
            hung_up=o[_Outcome.HUNG_UP],
            unknown_route=o[_Outcome.UNKNOWN_ROUTE],
            protocol_error=o[_Outcome.PROTOCOL_ERROR],
            handler_error=o[_Outcome.HANDLER_ERROR],
            abandoned=o[_Outcome.ABANDONED],
            active=len(self._tasks),
        )

    async def start(self) -> tuple[str, int]:
        """Listen, and return the bound host and port; `ConfigError` if the port is taken."""
        if self._server is not None:
            return self.address
        try:
            server = await asyncio.start_server(
                self._on_connection, self._host, self._port, backlog=self._backlog
            )
        except OSError as exc:
            raise ConfigError(
                f"FastAGI server cannot listen on {self._host}:{self._port}: {exc.strerror or exc}"
            ) from exc
        host, port = server.sockets[0].getsockname()[:2]
        self._server = server
        self._address = (str(host), int(port))
        self._stopped.clear()
        log.info("fastagi.listening", host=self._address[0], port=self._address[1])
        return self._address

    async def serve(self) -> None:
        """Listen until cancelled or closed; meant to be a task of the supervisor's group."""
        await self.start()
        try:
            await self._stopped.wait()
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop listening, cancel the requests in flight and wait for them to end."""
        server = self._server
        if server is None:
            return
        self._server = None
        self._address = None
        server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
        self._stopped.set()
        log.info("fastagi.closed", **_counter_fields(self.counters()))

    async def __aenter__(self) -> FastAgiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is None or self._server is None:
            writer.transport.abort()
            return
        self._tasks.add(task)
        self._accepted += 1
        connection = AgiConnection(max_environment_bytes=self._max_environment_bytes)
        try:
            outcome = await self._answer(connection, reader, writer)
            self._outcomes[outcome] += 1
            await _release(writer, failure=_answer_failure(outcome))
        except BaseException:
            writer.transport.abort()
            raise
        finally:
            self._tasks.discard(task)

    async def _answer(
        self,
        connection: AgiConnection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> _Outcome:
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = asyncio.timeout(self._request_timeout)
        channel: AgiChannel | None = None
        # Each connection runs in its own task, hence its own copy of the context: these
        # bindings label this request's log lines and vanish with the task.
        structlog.contextvars.bind_contextvars(agi_peer=_peer(writer))
        try:
            async with deadline:
                environment = await _read_environment(connection, reader)
                if environment is None:
                    log.debug("fastagi.request.abandoned")
                    return _Outcome.ABANDONED
                structlog.contextvars.bind_contextvars(
                    agi_route=environment.script,
                    uniqueid=environment.uniqueid,
                    agi_channel=environment.channel,
                )
                handler = self._routes.get(environment.script)
                if handler is None:
                    log.warning("fastagi.request.unknown_route", routes=sorted(self._routes))
                    return _Outcome.UNKNOWN_ROUTE
                channel = AgiChannel(connection, reader, writer)
                await handler(environment, channel)
        except TimeoutError:
            if not deadline.expired():
                log.exception("fastagi.request.handler_failed")
                return _Outcome.HANDLER_ERROR
            log.warning(
                "fastagi.request.timed_out",
                timeout_s=self._request_timeout,
                phase="environment" if channel is None else "handler",
            )
            return _Outcome.TIMED_OUT
        except AgiProtocolError as exc:
            if channel is not None and channel.hung_up:
                log.info("fastagi.request.hung_up", error=str(exc))
                return _Outcome.HUNG_UP
            log.warning("fastagi.request.protocol_error", error=str(exc))
            return _Outcome.PROTOCOL_ERROR
        except Exception:
            # A bug in one handler must cost that request only, never the server.
            log.exception("fastagi.request.handler_failed")
            return _Outcome.HANDLER_ERROR
        log.debug("fastagi.request.served", duration_ms=round((loop.time() - started) * 1000, 3))
        return _Outcome.SERVED


async def _read_environment(
    connection: AgiConnection, reader: asyncio.StreamReader
) -> AgiEnvironment | None:
    while True:
        event = connection.next_event()
        if isinstance(event, AgiEnvironment):
            return event
        if event is CLOSED:
            return None
        if event is not NEED_DATA:
            raise AgiProtocolError("AGI data before the environment ended")
        try:
            chunk = await reader.read(_READ_SIZE)
        except OSError as exc:
            raise AgiProtocolError("connection lost while reading the AGI environment") from exc
        connection.receive_data(chunk)


def _answer_failure(outcome: _Outcome) -> bool:
    # Tell Asterisk the request failed (AGISTATUS=FAILURE) when someone is still listening
    # and the dialplan may want to know; a caller who hung up or a probe that left does not.
    return outcome in {
        _Outcome.TIMED_OUT,
        _Outcome.UNKNOWN_ROUTE,
        _Outcome.PROTOCOL_ERROR,
        _Outcome.HANDLER_ERROR,
    }


async def _release(writer: asyncio.StreamWriter, *, failure: bool) -> None:
    transport = writer.transport
    try:
        if failure and not transport.is_closing():
            transport.write(AgiConnection.FAILURE_LINE)
        transport.close()
        async with asyncio.timeout(_CLOSE_TIMEOUT):
            await writer.wait_closed()
    except (OSError, TimeoutError):
        transport.abort()


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


def _counter_fields(counters: FastAgiCounters) -> dict[str, int]:
    return {
        "accepted": counters.accepted,
        "served": counters.served,
        "timed_out": counters.timed_out,
        "hung_up": counters.hung_up,
        "failed": counters.failed,
        "abandoned": counters.abandoned,
    }
