"""FastAGI server: answers Asterisk's pre-dial ``AGI(agi://…)`` requests.

Each connection is one request. The route (the URL path, ``authorize`` in
``agi://127.0.0.1:4573/authorize``) picks an async handler, which reads the `AgiEnvironment`
and sets channel variables through an `AgiChannel`. One deadline, counted from the moment the
connection is accepted, covers reading the environment and running the handler: once
connected, ``res_agi`` waits for commands with no time limit of its own, so the deadline is
what bounds the caller's wait when something here is slow.

Theory of operation
-------------------
The server must keep answering real calls while something floods it with connections that
never send a complete environment (a port scanner, a broken client, a slowloris attack), so a
connection costs next to nothing until its environment has arrived:

- The server accepts on its own listening sockets, at most ``_ACCEPT_BATCH`` connections per
  turn of the event loop, so that a burst of connections never holds the loop for long.
- A connection still sending its environment is a descriptor in the server's own epoll set
  and an entry in a queue ordered by deadline (every connection gets the same timeout, so
  arrival order is deadline order). It has no task, no stream objects and no timer of its
  own. The event loop watches the epoll set as one descriptor, which hands out at most
  ``_READ_BATCH`` readable connections per turn, so a thousand of them sending (or closing)
  at once cannot stall the loop, and with it the AMI reader. One timer for the whole server
  closes the connections whose deadline has passed, ``_SWEEP_BATCH`` every ``_SWEEP_PACE``
  seconds, answering each ``failure`` first (``AGISTATUS=FAILURE``, the dialplan's fail
  mode). A flood's connections expire all together and the flood reopens them at once;
  paced, that wave costs the requests being served a little for a while rather than tens of
  milliseconds at once.
- A complete environment for a known route gets a task, which runs the handler under the
  same deadline and exchanges commands and replies over the same socket, now watched by the
  event loop itself so that replies are read at once, with the codec
  buffering whatever Asterisk sends between commands (a ``HANGUP`` line) until the handler
  asks for its next reply.
- At most ``max_connections`` connections are open at once. One more is answered ``failure``
  and closed as soon as it is accepted, without reading it, so the dialplan's fail mode
  applies at once instead of after a wait. The cap keeps the process's descriptors for the
  rest of the daemon (AMI, the ledger, MQTT) whatever the flood.
- When ``accept`` fails because the process or the system is out of descriptors (``EMFILE``,
  ``ENFILE``), the server stops accepting and tries again as soon as one of its connections
  closes, or after ``_ACCEPT_RETRY_DELAY``; requests in flight carry on, and new connections
  wait in the kernel's listen queue meanwhile. If the shortage outlasts the deadline, the
  server spends a descriptor it keeps in reserve to accept the waiting connections one at a
  time and answer them ``failure``: past the deadline the fail mode serves a caller better
  than silence. (asyncio's own server, on the same error, calls the loop's exception handler
  once per listen-backlog slot on every attempt, thousands of logged tracebacks a second, and
  then stops accepting for a full second whatever is freed meanwhile.)
- Misbehaving clients are not logged one line each, which an attacker could turn into a log
  flood: connections closed at the deadline without a complete environment, bytes that were
  not an AGI environment, and connections refused at the cap are counted (`counters`) and
  summed up in one ``fastagi.clients_misbehaving`` warning per ``summary_interval`` in which
  there were any; their per-connection lines are debug. A descriptor shortage is one warning
  when it starts and one when it ends. Problems after the environment (an unknown route, a
  slow or failing handler, a command Asterisk refused) are still logged per request.

Whatever a client does (half an environment then EOF, silence, garbage, a hang-up) costs its
own connection and nothing more: EOF is read once and ends the request, so nothing spins on a
closed socket.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import errno
import os
import resource
import select
import socket
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
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_PORT",
    "DEFAULT_REQUEST_TIMEOUT",
    "DEFAULT_SUMMARY_INTERVAL",
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
# Half of the 1,024 descriptors systemd gives a service by default, leaving the other half to
# the rest of the daemon (AMI, the ledger's connections, MQTT, logs). At the design peak of
# 500 call attempts a second, 512 connections are reached only if every verdict takes a
# second, when answering `failure` at once serves the caller better than a late verdict.
DEFAULT_MAX_CONNECTIONS: Final = 512
DEFAULT_SUMMARY_INTERVAL: Final = 60.0
# Descriptors the rest of the daemon may need beside the FastAGI connections: a cap that
# leaves fewer than this under RLIMIT_NOFILE is worth a warning at start.
DESCRIPTORS_FOR_THE_REST: Final = 128

_READ_SIZE: Final = 4096
# Connections accepted per turn of the event loop: enough to keep up with thousands a second,
# few enough that a burst of them delays the requests being served by a fraction of a
# millisecond per turn.
_ACCEPT_BATCH: Final = 8
# Connections still sending their environment read per turn of the loop (each read can parse
# a whole environment, some 50 µs).
_READ_BATCH: Final = 8
# Connections closed at their deadline, at most _SWEEP_BATCH every _SWEEP_PACE seconds
# (4,000 a second). A flood's connections all expire together, and the flood opens new ones
# as soon as the old ones close: paced, that wave costs the requests being served a little
# for a while instead of a lot at once (each close and the accept of its replacement cost
# some 50 µs each). An expired connection waits a little longer, and still counts against
# max_connections meanwhile.
_SWEEP_BATCH: Final = 4
_SWEEP_PACE: Final = 0.001
_ACCEPT_RETRY_DELAY: Final = 0.1
# Bytes Asterisk may send while the handler is not waiting for a reply (a HANGUP line) before
# the server stops reading from it until the handler asks for something.
_MAX_UNREAD: Final = 64 * 1024
# accept() errors that concern one connection that went away, not the server (accept(2)).
_ACCEPT_ERRORS_OF_ONE_CONNECTION: Final = frozenset(
    {
        errno.ECONNABORTED,
        errno.EPROTO,
        errno.ENETDOWN,
        errno.ENOPROTOOPT,
        errno.EHOSTDOWN,
        errno.ENONET,
        errno.EHOSTUNREACH,
        errno.EOPNOTSUPP,
        errno.ENETUNREACH,
        errno.EPERM,  # a firewall rule refused this one connection
    }
)

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
        accepted: connections accepted under the cap.
        served: the handler ran to its end.
        timed_out: the environment or the handler outlasted the deadline.
        hung_up: the caller hung up while the handler was talking to Asterisk.
        unknown_route: no handler for the requested script.
        protocol_error: bytes that were not FastAGI, an early EOF, or a command Asterisk refused.
        handler_error: the handler raised.
        abandoned: the client closed without sending anything (a port probe).
        active: connections open right now.
        refused: connections answered ``failure`` and closed unread: over ``max_connections``,
            or waiting while the process had no descriptor to spare (not in ``accepted``).
        accept_paused: times accepting stopped because the process was out of descriptors.
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
    refused: int = 0
    accept_paused: int = 0

    @property
    def failed(self) -> int:
        """Return the requests that ended without a verdict through a fault."""
        return self.unknown_route + self.protocol_error + self.handler_error


class _Phase(enum.Enum):
    ENVIRONMENT = "environment"
    HANDLER = "handler"
    DONE = "done"


class _WaitingSet:
    """The connections still sending their environment, polled apart from the event loop's.

    The loop watches one descriptor, this set's epoll, and `ready` hands out at most a batch
    of readable connections per turn: a thousand connections that send their bytes (or close)
    at the same instant are read over several turns, and the requests being served (whose
    sockets the loop watches itself) and the rest of the daemon get their turns in between.
    """

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._requests: dict[int, _Request] = {}

    def fileno(self) -> int:
        return self._epoll.fileno()

    def add(self, request: _Request) -> None:
        self._epoll.register(request.fd, select.EPOLLIN)
        self._requests[request.fd] = request

    def discard(self, request: _Request) -> None:
        if self._requests.pop(request.fd, None) is not None:
            self._epoll.unregister(request.fd)

    def ready(self, limit: int) -> list[_Request]:
        requests = self._requests
        return [requests[fd] for fd, _ in self._epoll.poll(0, limit) if fd in requests]

    def close(self) -> None:
        self._requests.clear()
        self._epoll.close()


class _Request:
    """One accepted connection: its socket, its codec and where it stands."""

    __slots__ = (
        "accepted_at",
        "codec",
        "deadline",
        "eof",
        "fd",
        "loop",
        "on_readable",
        "peer",
        "phase",
        "reading",
        "sock",
        "unread",
        "unsent",
        "waiter",
        "waiting_set",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        peer: object,
        *,
        accepted_at: float,
        deadline: float,
        on_readable: Callable[[_Request], None],
        waiting_set: _WaitingSet,
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        # Made when the first bytes arrive: a connection that never sends any costs less.
        self.codec: AgiConnection | None = None
        self.accepted_at = accepted_at
        self.deadline = deadline
        self.on_readable = on_readable
        self.waiting_set = waiting_set
        self.phase = _Phase.ENVIRONMENT
        self.reading = False
        self.eof = False
        self.unread = 0
        self.unsent = bytearray()
        self.waiter: asyncio.Future[None] | None = None

    def start_reading(self) -> None:
        """Watch the socket: in the waiting set until the environment is in, then in the loop."""
        if self.reading or self.eof:
            return
        if self.phase is _Phase.ENVIRONMENT:
            self.waiting_set.add(self)
        else:
            self.loop.add_reader(self.fd, self.on_readable, self)
        self.reading = True

    def stop_reading(self) -> None:
        if not self.reading:
            return
        if self.phase is _Phase.ENVIRONMENT:
            self.waiting_set.discard(self)
        else:
            self.loop.remove_reader(self.fd)
        self.reading = False

    def end_of_stream(self) -> None:
        """Note that nothing more will be read (EOF, a reset, or a write that failed)."""
        self.stop_reading()
        if not self.eof:
            self.eof = True
            if self.codec is not None:
                self.codec.receive_data(b"")
        self.wake()

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def readable(self) -> None:
        """Wait until more bytes (or the end of the stream) have reached the codec."""
        self.unread = 0
        if self.eof:
            return
        self.start_reading()
        self.waiter = self.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    def write(self, data: bytes) -> None:
        """Send ``data`` now, or as soon as the socket takes it; `OSError` if it is broken."""
        if self.unsent:
            self.unsent += data
            return
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent < len(data):
            self.unsent += data[sent:]
            self.loop.add_writer(self.fd, self._flush)

    def _flush(self) -> None:
        try:
            sent = self.sock.send(self.unsent)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.unsent.clear()
            self.loop.remove_writer(self.fd)
            self.end_of_stream()
            return
        del self.unsent[:sent]
        if not self.unsent:
            self.loop.remove_writer(self.fd)

    def close(self, *, failure: bool) -> None:
        self.stop_reading()
        self.phase = _Phase.DONE
        if self.unsent:
            self.unsent.clear()
            self.loop.remove_writer(self.fd)
        if failure:
            _send_failure(self.sock)
        self.sock.close()
        self.wake()


class AgiChannel:
    """The handler's side of one request: commands to the Asterisk channel, one at a time."""

    def __init__(self, request: _Request, connection: AgiConnection) -> None:
        self._request = request
        self._connection = connection
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
                self._request.write(data)
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
                await self._request.readable()
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

#: Upper bounds (seconds) of the latency histogram's buckets: the verdict target is 5 ms.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class LatencyHistogram:
    """Served requests by time from accept to answer (cumulative buckets, for /metrics)."""

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self._counts = [0] * len(bounds)
        self.count = 0
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Count one request that took ``seconds``."""
        self.count += 1
        self.total += seconds
        for index, bound in enumerate(self.bounds):
            if seconds <= bound:
                self._counts[index] += 1
                break

    def buckets(self) -> list[tuple[float, int]]:
        """Return (upper bound, requests at or under it), cumulative, without +Inf."""
        running = 0
        cumulative = []
        for bound, count in zip(self.bounds, self._counts, strict=True):
            running += count
            cumulative.append((bound, running))
        return cumulative


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
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        summary_interval: float = DEFAULT_SUMMARY_INTERVAL,
    ) -> None:
        """Prepare the server; nothing listens until `start` or `serve`.

        ``port=0`` asks the system for a free port; `start` returns the one bound.
        ``max_connections`` caps the connections open at once; ``summary_interval`` is how
        often, in seconds, misbehaving clients are summed up in one log line.
        """
        if max_connections < 1:
            raise ConfigError(f"FastAGI max_connections must be at least 1, not {max_connections}")
        self._routes = dict(routes)
        self._host = host
        self._port = port
        self._request_timeout = request_timeout
        self._max_environment_bytes = max_environment_bytes
        self._backlog = backlog
        self._max_connections = max_connections
        self._summary_interval = summary_interval
        self._listeners: list[socket.socket] = []
        self._address: tuple[str, int] | None = None
        self._spare_fd: int | None = None
        self._waiting_set: _WaitingSet | None = None
        # Connections in the order of their deadlines (one timeout for all, so arrival order);
        # those that are no longer waiting for their environment stay until the sweep drops them.
        self._deadlines: collections.deque[_Request] = collections.deque()
        self._sweep_handle: asyncio.Handle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._outcomes: Counter[_Outcome] = Counter()
        self.latency = LatencyHistogram()
        self._accepted = 0
        self._active = 0
        self._refused = 0
        self._accept_pauses = 0
        self._accept_paused = False
        self._resume_handle: asyncio.TimerHandle | None = None
        self._shortage_since: float | None = None
        self._shortage_pauses = 0
        self._shortage_refused = 0
        self._misbehaving: Counter[str] = Counter()
        self._summary_handle: asyncio.TimerHandle | None = None
        self._stopped = asyncio.Event()
        # One bound method for every connection's reader, rather than one each.
        self._on_readable_callback = self._on_readable

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
            active=self._active,
            refused=self._refused,
            accept_paused=self._accept_pauses,
        )

    async def start(self) -> tuple[str, int]:
        """Listen, and return the bound host and port; `ConfigError` if the port is taken."""
        if self._listeners:
            return self.address
        if not hasattr(select, "epoll"):
            raise ConfigError("the FastAGI server needs Linux (select.epoll)")
        loop = asyncio.get_running_loop()
        listeners = await self._listen(loop)
        host, port = listeners[0].getsockname()[:2]
        self._listeners = listeners
        self._address = (str(host), int(port))
        self._spare_fd = _open_spare()
        self._waiting_set = _WaitingSet()
        loop.add_reader(self._waiting_set.fileno(), self._on_waiting_ready)
        self._stopped.clear()
        for listener in listeners:
            loop.add_reader(listener.fileno(), self._on_acceptable, listener)
        log.info("fastagi.listening", host=self._address[0], port=self._address[1])
        open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if (
            open_files != resource.RLIM_INFINITY
            and self._max_connections + DESCRIPTORS_FOR_THE_REST > open_files
        ):
            log.warning(
                "fastagi.max_connections_above_open_files_limit",
                max_connections=self._max_connections,
                open_files_limit=open_files,
                hint="raise LimitNOFILE or lower [agi] max_connections",
            )
        return self._address

    async def _listen(self, loop: asyncio.AbstractEventLoop) -> list[socket.socket]:
        where = f"{self._host}:{self._port}"
        try:
            infos = await loop.getaddrinfo(
                self._host or None,
                self._port,
                type=socket.SOCK_STREAM,
                flags=socket.AI_PASSIVE,
            )
        except OSError as exc:
            raise ConfigError(
                f"FastAGI server cannot listen on {where}: {exc.strerror or exc}"
            ) from exc
        listeners: list[socket.socket] = []
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                listeners.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    # As asyncio does: an IPv6 socket must not also claim the IPv4 port.
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(self._backlog)
                sock.setblocking(False)
        except OSError as exc:
            for sock in listeners:
                sock.close()
            raise ConfigError(
                f"FastAGI server cannot listen on {where}: {exc.strerror or exc}"
            ) from exc
        return listeners

    async def serve(self) -> None:
        """Listen until cancelled or closed; meant to be a task of the supervisor's group."""
        await self.start()
        try:
            await self._stopped.wait()
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop listening, cancel the requests in flight and wait for them to end."""
        if not self._listeners:
            return
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            if not self._accept_paused:
                loop.remove_reader(listener.fileno())
            listener.close()
        self._listeners = []
        self._address = None
        self._accept_paused = False
        for handle in (self._resume_handle, self._sweep_handle, self._summary_handle):
            if handle is not None:
                handle.cancel()
        self._resume_handle = self._sweep_handle = self._summary_handle = None
        if self._spare_fd is not None:
            os.close(self._spare_fd)
            self._spare_fd = None
        while self._deadlines:
            request = self._deadlines.popleft()
            if request.phase is _Phase.ENVIRONMENT:
                self._finish(request, None, failure=False)
        if self._waiting_set is not None:
            loop.remove_reader(self._waiting_set.fileno())
            self._waiting_set.close()
            self._waiting_set = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._summarise()
        self._stopped.set()
        log.info("fastagi.closed", **_counter_fields(self.counters()))

    async def __aenter__(self) -> FastAgiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- accepting ---------------------------------------------------------------------

    def _on_acceptable(self, listener: socket.socket) -> None:
        if self._accept_paused:
            return
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in _ACCEPT_ERRORS_OF_ONE_CONNECTION:
                    continue
                self._pause_accept(exc)
                return
            self._admit(sock, peer)
        if self._shortage_since is not None:
            self._end_shortage()

    def _admit(self, sock: socket.socket, peer: object) -> None:
        sock.setblocking(False)
        waiting_set = self._waiting_set
        if waiting_set is None or self._active >= self._max_connections:
            self._refuse(sock, peer, "max_connections")
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        request = _Request(
            loop,
            sock,
            peer,
            accepted_at=now,
            deadline=now + self._request_timeout,
            on_readable=self._on_readable_callback,
            waiting_set=waiting_set,
        )
        self._accepted += 1
        self._active += 1
        self._deadlines.append(request)
        request.start_reading()
        if self._sweep_handle is None:
            self._sweep_handle = loop.call_at(request.deadline, self._sweep)
        # Asterisk sends its environment as soon as it has connected: it is often here already.
        self._on_readable(request)

    def _refuse(self, sock: socket.socket, peer: object, reason: str) -> None:
        _send_failure(sock)
        sock.close()
        self._refused += 1
        self._misbehaved("refused")
        log.debug("fastagi.connection.refused", agi_peer=_peer(peer), reason=reason)

    def _pause_accept(self, exc: OSError) -> None:
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            loop.remove_reader(listener.fileno())
        self._accept_paused = True
        self._accept_pauses += 1
        now = loop.time()
        if self._shortage_since is None:
            self._shortage_since = now
            self._shortage_pauses = self._shortage_refused = 0
            log.warning(
                "fastagi.accept_paused",
                error=errno.errorcode.get(exc.errno or 0, str(exc)),
                active=self._active,
                open_files_limit=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            )
        self._shortage_pauses += 1
        if now - self._shortage_since >= self._request_timeout:
            self._shed_waiting_connections()
        if self._resume_handle is not None:
            self._resume_handle.cancel()
        self._resume_handle = loop.call_later(_ACCEPT_RETRY_DELAY, self._resume_accept)

    def _resume_accept(self) -> None:
        if not self._accept_paused or not self._listeners:
            return
        if self._resume_handle is not None:
            self._resume_handle.cancel()
            self._resume_handle = None
        self._accept_paused = False
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            loop.add_reader(listener.fileno(), self._on_acceptable, listener)
        if self._shortage_since is not None:
            # Try now: what was freed may fit a waiting connection, and finding none waiting
            # ends the shortage.
            for listener in list(self._listeners):
                self._on_acceptable(listener)

    def _shed_waiting_connections(self) -> None:
        """Answer ``failure`` to connections left waiting by a long descriptor shortage.

        A caller whose connection sits in the listen queue hears silence for as long as the
        shortage lasts; past the deadline, the dialplan's fail mode serves them better. The
        reserve descriptor makes room to accept them, one at a time.
        """
        if self._spare_fd is None:
            self._spare_fd = _open_spare()
            return
        os.close(self._spare_fd)
        self._spare_fd = None
        try:
            for listener in self._listeners:
                for _ in range(_ACCEPT_BATCH):
                    try:
                        sock, peer = listener.accept()
                    except OSError:
                        break
                    sock.setblocking(False)
                    self._refuse(sock, peer, "out_of_descriptors")
                    self._shortage_refused += 1
        finally:
            self._spare_fd = _open_spare()

    def _end_shortage(self) -> None:
        since, self._shortage_since = self._shortage_since, None
        if since is None:
            return
        log.warning(
            "fastagi.accept_resumed",
            paused_s=round(asyncio.get_running_loop().time() - since, 3),
            pauses=self._shortage_pauses,
            refused=self._shortage_refused,
        )

    # --- reading the environment ---------------------------------------------------------

    def _on_waiting_ready(self) -> None:
        waiting_set = self._waiting_set
        if waiting_set is None:
            return
        for request in waiting_set.ready(_READ_BATCH):
            if request.phase is _Phase.ENVIRONMENT:
                self._on_readable(request)

    def _on_readable(self, request: _Request) -> None:
        try:
            data = request.sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        codec = request.codec
        if codec is None:
            if not data:
                # Closed without a byte (a port probe, or a flood going away all at once).
                request.end_of_stream()
                log.debug("fastagi.request.abandoned", agi_peer=_peer(request.peer))
                self._finish(request, _Outcome.ABANDONED, failure=False)
                return
            codec = request.codec = AgiConnection(max_environment_bytes=self._max_environment_bytes)
        if not data:
            request.end_of_stream()
        else:
            codec.receive_data(data)
            request.unread += len(data)
        if request.phase is _Phase.ENVIRONMENT:
            self._read_environment(request, codec)
        elif request.waiter is not None:
            request.wake()
        elif request.unread > _MAX_UNREAD:
            request.stop_reading()

    def _read_environment(self, request: _Request, codec: AgiConnection) -> None:
        try:
            event = codec.next_event()
        except AgiProtocolError as exc:
            self._not_fastagi(request, str(exc))
            return
        if event is NEED_DATA:
            return
        if event is CLOSED:
            log.debug("fastagi.request.abandoned", agi_peer=_peer(request.peer))
            self._finish(request, _Outcome.ABANDONED, failure=False)
            return
        if not isinstance(event, AgiEnvironment):
            self._not_fastagi(request, "AGI data before the environment ended")
            return
        handler = self._routes.get(event.script)
        if handler is None:
            log.warning(
                "fastagi.request.unknown_route",
                agi_peer=_peer(request.peer),
                agi_route=event.script,
                uniqueid=event.uniqueid,
                agi_channel=event.channel,
                routes=sorted(self._routes),
            )
            self._finish(request, _Outcome.UNKNOWN_ROUTE, failure=True)
            return
        request.stop_reading()
        request.phase = _Phase.HANDLER
        request.unread = 0
        request.start_reading()
        # Commands and replies are small and strictly alternate: never hold one back.
        with contextlib.suppress(OSError):
            request.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = request.loop.create_task(self._run_handler(request, codec, event, handler))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _not_fastagi(self, request: _Request, error: str) -> None:
        self._misbehaved("protocol_error")
        log.debug("fastagi.request.protocol_error", agi_peer=_peer(request.peer), error=error)
        self._finish(request, _Outcome.PROTOCOL_ERROR, failure=True)

    def _sweep(self) -> None:
        """Close the connections whose deadline passed before their environment arrived."""
        self._sweep_handle = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadlines = self._deadlines
        expired = 0
        while deadlines:
            request = deadlines[0]
            if request.phase is not _Phase.ENVIRONMENT:
                deadlines.popleft()
                continue
            if request.deadline > now:
                self._sweep_handle = loop.call_at(request.deadline, self._sweep)
                return
            if expired == _SWEEP_BATCH:
                self._sweep_handle = loop.call_later(_SWEEP_PACE, self._sweep)
                return
            deadlines.popleft()
            expired += 1
            self._misbehaved("timed_out")
            log.debug(
                "fastagi.request.timed_out",
                agi_peer=_peer(request.peer),
                timeout_s=self._request_timeout,
                phase=_Phase.ENVIRONMENT.value,
                received_bytes=request.unread,
            )
            self._finish(request, _Outcome.TIMED_OUT, failure=True)

    # --- running the handler -------------------------------------------------------------

    async def _run_handler(
        self,
        request: _Request,
        codec: AgiConnection,
        environment: AgiEnvironment,
        handler: AgiHandler,
    ) -> None:
        # Each request runs in its own task, hence its own copy of the context: these
        # bindings label this request's log lines and vanish with the task.
        structlog.contextvars.bind_contextvars(
            agi_peer=_peer(request.peer),
            agi_route=environment.script,
            uniqueid=environment.uniqueid,
            agi_channel=environment.channel,
        )
        try:
            outcome = await self._answer(request, AgiChannel(request, codec), environment, handler)
        except BaseException:
            self._finish(request, None, failure=False)
            raise
        self._finish(request, outcome, failure=_answer_failure(outcome))

    async def _answer(
        self,
        request: _Request,
        channel: AgiChannel,
        environment: AgiEnvironment,
        handler: AgiHandler,
    ) -> _Outcome:
        deadline = asyncio.timeout_at(request.deadline)
        try:
            async with deadline:
                await handler(environment, channel)
        except TimeoutError:
            if not deadline.expired():
                log.exception("fastagi.request.handler_failed")
                return _Outcome.HANDLER_ERROR
            log.warning(
                "fastagi.request.timed_out",
                timeout_s=self._request_timeout,
                phase=_Phase.HANDLER.value,
            )
            return _Outcome.TIMED_OUT
        except AgiProtocolError as exc:
            if channel.hung_up:
                log.info("fastagi.request.hung_up", error=str(exc))
                return _Outcome.HUNG_UP
            log.warning("fastagi.request.protocol_error", error=str(exc))
            return _Outcome.PROTOCOL_ERROR
        except Exception:
            # A bug in one handler must cost that request only, never the server.
            log.exception("fastagi.request.handler_failed")
            return _Outcome.HANDLER_ERROR
        elapsed = request.loop.time() - request.accepted_at
        self.latency.observe(elapsed)
        log.debug("fastagi.request.served", duration_ms=round(elapsed * 1000, 3))
        return _Outcome.SERVED

    # --- ending a request ----------------------------------------------------------------

    def _finish(self, request: _Request, outcome: _Outcome | None, *, failure: bool) -> None:
        if request.phase is _Phase.DONE:
            return
        request.close(failure=failure)
        self._active -= 1
        if outcome is not None:
            self._outcomes[outcome] += 1
        if self._accept_paused:
            # A descriptor was freed: the next connection may fit now.
            self._resume_accept()

    def _misbehaved(self, what: str) -> None:
        self._misbehaving[what] += 1
        if self._summary_handle is None and self._listeners:
            loop = asyncio.get_running_loop()
            self._summary_handle = loop.call_later(self._summary_interval, self._summarise)

    def _summarise(self) -> None:
        self._summary_handle = None
        counts, self._misbehaving = self._misbehaving, Counter()
        if not counts:
            return
        log.warning(
            "fastagi.clients_misbehaving",
            timed_out=counts["timed_out"],
            protocol_error=counts["protocol_error"],
            refused=counts["refused"],
            interval_s=self._summary_interval,
            active=self._active,
            max_connections=self._max_connections,
        )


def _answer_failure(outcome: _Outcome) -> bool:
    # Tell Asterisk the request failed (AGISTATUS=FAILURE) when someone is still listening
    # and the dialplan may want to know; a caller who hung up or a probe that left does not.
    return outcome in {
        _Outcome.TIMED_OUT,
        _Outcome.UNKNOWN_ROUTE,
        _Outcome.PROTOCOL_ERROR,
        _Outcome.HANDLER_ERROR,
    }


def _send_failure(sock: socket.socket) -> None:
    # The socket is non-blocking and the line is the first or only thing in its send buffer:
    # it goes out whole or not at all (the peer is gone).
    try:
        sock.send(AgiConnection.FAILURE_LINE)
    except OSError:
        return


def _open_spare() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def _peer(peer: object) -> str:
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
        "refused": counters.refused,
        "accept_paused": counters.accept_paused,
    }
