"""AMI connection: one asyncio client that keeps a logged-in session to Asterisk alive.

:class:`AmiClient.run` is a long-running task. Each *session* connects, reads the banner,
logs in with ``Events: on``, calls the owner's ``on_login`` hook (which resynchronises with
``CoreShowChannels``, ``DeviceStateList`` and ``PJSIPShowContacts``), then hands every event
to the owner's synchronous ``sink`` until the connection is lost, after which ``run`` connects
again with jittered exponential backoff.

Three tasks make a session, so that no one of them can stall another:

* the *reader* parses bytes as they arrive, resolves action responses, and puts events into
  a bounded queue without ever waiting on it. It reads only as far ahead of the consumer as
  ``read_ahead`` events: past that it stops reading until the consumer has taken three
  quarters of them, and the rest of a burst waits in the kernel's socket buffers and in
  Asterisk instead of in this process's memory. Asterisk drops a client that leaves one of its
  writes waiting for ``writetimeout`` (100 ms by default); a write waits only while the
  consumer works through the events read ahead (milliseconds), so a burst costs nothing but
  time. Should the queue fill all the same (``queue_size``, when a single read holds more
  events than it has room for), the session ends on our side and the next login
  resynchronises the owner's state.
* the *consumer* takes events off the queue and calls the sink; an exception from the sink is
  logged with the event name and the next event is delivered.
* the *conversation* logs in, runs the hook, then sends a ``Ping`` every ``ping_interval``;
  no reply within ``ping_timeout`` means the connection is half-open, and it is dropped.

When a session ends, every action still waiting for its response fails with
:class:`AmiConnectionError`; nothing is ever sent again on the next connection (a stale
``Hangup`` must not reach a channel name Asterisk may have reused). Events already queued are
delivered before the next session starts, so the hook never races against old events.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

import structlog
from pydantic import SecretStr

from pbxguard.adapters.backoff import backoff_delay
from pbxguard.errors import (
    AmiActionError,
    AmiActionTimeout,
    AmiAuthenticationError,
    AmiConnectionError,
    AmiError,
    AmiFrameTooLarge,
    ConfigError,
    UnsafeActionError,
)
from pbxguard.protocol.ami import (
    DEFAULT_MAX_FRAME_SIZE,
    NEED_DATA,
    AmiMessage,
    AmiParser,
    Banner,
    MalformedMessage,
    ParseResult,
    encode_action,
)

__all__ = ["AmiClient", "AmiTiming", "EventSink", "LoginHook"]

log = structlog.get_logger(__name__)

EventSink = Callable[[AmiMessage], None]
LoginHook = Callable[["AmiClient"], Awaitable[None]]

_READ_SIZE: Final = 64 * 1024
# The consumer yields to the loop after this many events in a row so the reader keeps up.
_CONSUMER_BATCH: Final = 256
_DEFAULT_QUEUE_SIZE: Final = 100_000
# Events read ahead of the consumer before the reader waits for it: some tens of milliseconds
# of the guard's work, a few hundred kilobytes of events.
_DEFAULT_READ_AHEAD: Final = 2_000


@dataclass(frozen=True, slots=True)
class AmiTiming:
    """Timeouts and intervals of an :class:`AmiClient`, in seconds.

    ``backoff_min``/``backoff_max`` bound the wait between connection attempts. The ceiling
    is low on purpose: while the client reconnects the guard is blind, and a forbidden call
    that starts during an AMI outage can only be cut once it is back, before the carrier
    answers; a connection attempt a second to a PBX that is away costs nothing. A refused
    login is different (a wrong secret, which a retry will not fix, and which Asterisk logs as
    a security event): it is tried again only every ``login_retry`` seconds.
    """

    connect_timeout: float = 5.0
    login_timeout: float = 5.0
    ping_interval: float = 20.0
    ping_timeout: float = 5.0
    action_timeout: float = 10.0
    backoff_min: float = 0.5
    backoff_max: float = 1.0
    close_timeout: float = 2.0
    login_retry: float = 30.0

    def __post_init__(self) -> None:
        for name in (
            "connect_timeout",
            "login_timeout",
            "ping_interval",
            "ping_timeout",
            "action_timeout",
            "backoff_min",
            "close_timeout",
            "login_retry",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"AMI {name} must be positive, got {getattr(self, name)}")
        if self.backoff_max < self.backoff_min:
            raise ConfigError(
                f"AMI backoff_max ({self.backoff_max}) is below backoff_min ({self.backoff_min})"
            )


@dataclass(slots=True)
class _Pending:
    action: str
    future: asyncio.Future[tuple[AmiMessage, list[AmiMessage]]]
    is_list: bool
    response: AmiMessage | None = None
    items: list[AmiMessage] = field(default_factory=list)


class AmiClient:
    """Asyncio AMI client with login, resync hook, event sink, watchdog and reconnection."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: str | SecretStr,
        *,
        sink: EventSink,
        on_login: LoginHook | None = None,
        on_disconnect: Callable[[], None] | None = None,
        timing: AmiTiming | None = None,
        raise_on_auth_failure: bool = False,
        queue_size: int = _DEFAULT_QUEUE_SIZE,
        read_ahead: int = _DEFAULT_READ_AHEAD,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        events: str = "on",
        rng: random.Random | None = None,
    ) -> None:
        """Configure the client; nothing connects until :meth:`run` is awaited.

        ``raise_on_auth_failure`` makes :meth:`run` raise :class:`AmiAuthenticationError`
        when the PBX refuses the login; otherwise the login is retried every
        ``timing.login_retry`` seconds.
        """
        if queue_size < 1:
            raise ConfigError(f"AMI queue_size must be positive, got {queue_size}")
        if read_ahead < 1:
            raise ConfigError(f"AMI read_ahead must be positive, got {read_ahead}")
        self._host = host
        self._port = port
        self._username = username
        self._secret = secret if isinstance(secret, SecretStr) else SecretStr(secret)
        self._sink = sink
        self._on_login = on_login
        self._on_disconnect = on_disconnect
        self._timing = timing or AmiTiming()
        self._raise_on_auth_failure = raise_on_auth_failure
        self._queue_size = queue_size
        self._read_ahead = read_ahead
        self._queue: asyncio.Queue[AmiMessage | None] | None = None
        self._caught_up = asyncio.Event()
        self._max_frame_size = max_frame_size
        self._events = events
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter, not cryptography
        self._ids = itertools.count(1)
        self._id_prefix = f"pbxguard-{id(self):x}-"
        self._pending: dict[str, _Pending] = {}
        self._collecting = 0
        self._writer: asyncio.StreamWriter | None = None
        self._logged_in = asyncio.Event()
        self._close_requested = asyncio.Event()
        self._stopped = asyncio.Event()
        self._closing = False
        self._running = False
        self._auth_failure_logged = False
        self.login_count = 0
        """Successful logins since construction."""
        self.connection_attempts = 0
        """TCP connections attempted since construction."""
        self.banner: Banner | None = None
        """The banner of the current or last connection."""

    def __repr__(self) -> str:
        return f"AmiClient(host={self._host!r}, port={self._port}, username={self._username!r})"

    @property
    def connected(self) -> bool:
        """Whether a session is logged in right now."""
        return self._logged_in.is_set()

    @property
    def queued(self) -> int:
        """Events read and not yet handed to the sink."""
        return self._queue.qsize() if self._queue is not None else 0

    @property
    def logged_in(self) -> asyncio.Event:
        """Set while a session is logged in; wait on it to know the client is ready."""
        return self._logged_in

    async def run(self) -> None:
        """Keep a session alive until :meth:`close`; reconnect after any connection loss.

        Raises:
            AmiAuthenticationError: the PBX refused the login and ``raise_on_auth_failure``
                is set.
            AmiError: ``run`` is already running.
        """
        if self._running:
            raise AmiError("AmiClient.run() is already running")
        self._running = True
        self._stopped.clear()
        failures = 0
        try:
            while not self._closing:
                self.connection_attempts += 1
                progress = _Progress()
                try:
                    await self._session(progress)
                except AmiAuthenticationError as exc:
                    self._log_refused_login(exc)
                    if self._raise_on_auth_failure:
                        raise
                    delay = self._timing.login_retry
                except AmiConnectionError as exc:
                    if self._closing:
                        break
                    if progress.healthy:
                        failures = 0
                    delay = self._backoff(failures)
                    failures += 1
                    log.warning(
                        "ami.connection_lost",
                        host=self._host,
                        port=self._port,
                        error=str(exc),
                        retry_in=round(delay, 3),
                    )
                else:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._close_requested.wait(), delay)
        finally:
            self._running = False
            self._stopped.set()
            log.info("ami.stopped", host=self._host, port=self._port)

    def _log_refused_login(self, exc: AmiAuthenticationError) -> None:
        if self._auth_failure_logged:
            log.debug("ami.login_refused_again", host=self._host, port=self._port)
            return
        self._auth_failure_logged = True
        log.error(
            "ami.login_refused",
            host=self._host,
            port=self._port,
            username=self._username,
            error=str(exc),
            retry_in=None if self._raise_on_auth_failure else self._timing.login_retry,
        )

    async def close(self) -> None:
        """Log off if logged in, end the session and make :meth:`run` return."""
        self._closing = True
        if self._logged_in.is_set():
            with contextlib.suppress(AmiError):
                await self._request("Logoff", (), deadline=self._timing.close_timeout)
        self._close_requested.set()
        if self._running:
            await self._stopped.wait()

    async def send_action(
        self,
        action: str,
        fields: Iterable[tuple[str, str]] | Mapping[str, str] = (),
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a per-action deadline, not a wrapper
    ) -> AmiMessage:
        """Send an action and return its response.

        Raises:
            AmiConnectionError: not logged in, or the connection was lost before the response.
            AmiActionError: the PBX answered ``Response: Error``.
            AmiActionTimeout: no response within ``timeout`` (default ``action_timeout``).
            AmiProtocolError: a field holds CR or LF (nothing was sent).
        """
        response, _ = await self._request(
            action, fields, deadline=timeout, require_login=True, is_list=False
        )
        return response

    async def send_list_action(
        self,
        action: str,
        fields: Iterable[tuple[str, str]] | Mapping[str, str] = (),
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a per-action deadline, not a wrapper
    ) -> list[AmiMessage]:
        """Send a list action (``CoreShowChannels``...) and return the listed events.

        The ``EventList: start`` response and the closing ``...Complete`` event are not part
        of the result. Asterisk answers some list actions with ``Response: Error`` when the
        list is empty (``PJSIPShowContacts``: "No Contacts found").

        Raises:
            AmiConnectionError: not logged in, or the connection was lost before the end.
            AmiActionError: the PBX answered ``Response: Error``.
            AmiActionTimeout: the list did not complete within ``timeout``.
        """
        _, items = await self._request(
            action, fields, deadline=timeout, require_login=True, is_list=True
        )
        return items

    async def hangup(self, channel: str, cause: int = 21) -> None:
        """Hang up exactly one channel, named in full (never a ``/regex/``).

        Raises:
            UnsafeActionError: the name is empty, padded, a regular expression, or holds a
                line break; or the cause is not a Q.850 cause code. Nothing is sent.
            AmiActionError: the PBX answered ``Response: Error`` (e.g. "No such channel").
            AmiConnectionError: not logged in, or the connection was lost.
            AmiActionTimeout: no response in time.
        """
        if not channel or not channel.strip():
            raise UnsafeActionError("refusing to send Hangup without a channel name")
        if channel != channel.strip() or "\r" in channel or "\n" in channel:
            raise UnsafeActionError(f"refusing to send Hangup for the channel {channel!r}")
        if channel.startswith("/"):
            # Asterisk reads "/.../" as a regular expression over every channel.
            raise UnsafeActionError(
                f"refusing to send Hangup for {channel!r}: a /regex/ may match many channels"
            )
        if not 0 <= cause <= 127:
            raise UnsafeActionError(f"refusing Hangup with cause {cause}: not a Q.850 cause")
        await self.send_action("Hangup", [("Channel", channel), ("Cause", str(cause))])

    async def play_tone(self, channel: str, *, digit: str = "#", duration_ms: int = 600) -> None:
        """Play a tone (a DTMF digit) to exactly one channel's own phone.

        AMI has no action that plays a recording into a live call without moving it out of its
        bridge (``Redirect``) or placing a call of its own (``Originate`` and ``ChanSpy``, which
        pbxguard's AMI account is not allowed). ``PlayDTMF`` needs only the ``call`` write
        privilege: Asterisk writes the digit to the channel, towards its phone; the far end
        does not get it. Whether the caller hears it depends on the phone's DTMF mode
        (docs/policy.md, "Call duration").

        Raises:
            UnsafeActionError: the channel name is empty, padded, a pattern or holds a line
                break, or the digit is not one DTMF digit. Nothing is sent.
            AmiActionError: the PBX answered ``Response: Error`` (e.g. the channel is gone).
            AmiConnectionError: not logged in, or the connection was lost.
            AmiActionTimeout: no response in time.
        """
        if not channel or channel != channel.strip() or "\r" in channel or "\n" in channel:
            raise UnsafeActionError(f"refusing to send PlayDTMF for the channel {channel!r}")
        if channel.startswith("/"):
            raise UnsafeActionError(f"refusing to send PlayDTMF for the pattern {channel!r}")
        if len(digit) != 1 or digit not in "0123456789*#ABCD":
            raise UnsafeActionError(f"refusing to send PlayDTMF with the digit {digit!r}")
        await self.send_action(
            "PlayDTMF",
            [("Channel", channel), ("Digit", digit), ("Duration", str(max(duration_ms, 40)))],
        )

    def _backoff(self, failures: int) -> float:
        timing = self._timing
        return backoff_delay(timing.backoff_min, timing.backoff_max, failures, self._rng)

    async def _request(
        self,
        action: str,
        fields: Iterable[tuple[str, str]] | Mapping[str, str],
        *,
        deadline: float | None,
        require_login: bool = True,
        is_list: bool = False,
    ) -> tuple[AmiMessage, list[AmiMessage]]:
        writer = self._writer
        if writer is None or writer.is_closing():
            raise AmiConnectionError(f"cannot send {action}: not connected to AMI")
        if require_login and not self._logged_in.is_set():
            raise AmiConnectionError(f"cannot send {action}: not logged in to AMI")
        action_id = f"{self._id_prefix}{next(self._ids)}"
        data = encode_action(action, fields, action_id=action_id)
        future: asyncio.Future[tuple[AmiMessage, list[AmiMessage]]] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending[action_id] = _Pending(action, future, is_list)
        if is_list:
            self._collecting += 1
        if deadline is None:
            deadline = self._timing.action_timeout
        try:
            writer.write(data)
            async with asyncio.timeout(deadline):
                try:
                    await writer.drain()
                except (ConnectionError, OSError) as exc:
                    raise AmiConnectionError(f"lost the AMI connection sending {action}") from exc
                response, items = await future
        except TimeoutError:
            raise AmiActionTimeout(
                f"no complete response to AMI action {action} within {deadline} s"
            ) from None
        finally:
            self._pending.pop(action_id, None)
            if is_list:
                self._collecting -= 1
        if _is_error(response):
            raise AmiActionError(action, response.get("Message") or "no message")
        return response, items

    async def _session(self, progress: _Progress) -> None:
        """Run one connection until it is lost (raises) or the owner closes (returns)."""
        try:
            async with asyncio.timeout(self._timing.connect_timeout):
                reader, writer = await asyncio.open_connection(self._host, self._port)
        except (OSError, TimeoutError) as exc:
            raise AmiConnectionError(
                f"cannot connect to AMI at {self._host}:{self._port}: {exc or 'timed out'}"
            ) from exc
        self._writer = writer
        queue: asyncio.Queue[AmiMessage | None] = asyncio.Queue(self._queue_size)
        self._queue = queue
        banner: asyncio.Future[Banner] = asyncio.get_running_loop().create_future()
        reader_task = asyncio.create_task(self._read(reader, queue, banner), name="ami-reader")
        consumer_task = asyncio.create_task(self._consume(queue), name="ami-consumer")
        talk_task = asyncio.create_task(self._converse(banner, progress), name="ami-converse")
        close_task = asyncio.create_task(self._close_requested.wait(), name="ami-close")
        try:
            done, _ = await asyncio.wait(
                {reader_task, talk_task, close_task}, return_when=asyncio.FIRST_COMPLETED
            )
            if close_task in done:
                return
            # The conversation's error says more (a refused login, a silent Ping) than the
            # end of the stream that usually follows it, so it wins when both are known.
            if talk_task.done() and talk_task.exception() is not None:
                error = talk_task.exception()
            else:
                error = reader_task.exception() if reader_task.done() else talk_task.exception()
            if error is None:
                raise AmiConnectionError("the AMI session ended unexpectedly")
            raise error
        finally:
            was_logged_in = self._logged_in.is_set()
            self._logged_in.clear()
            for task in (reader_task, talk_task, close_task):
                task.cancel()
            await asyncio.gather(reader_task, talk_task, close_task, return_exceptions=True)
            if banner.done() and not banner.cancelled():
                banner.exception()
            banner.cancel()
            self._fail_pending()
            self._writer = None
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()
            await self._drain_consumer(queue, consumer_task)
            if was_logged_in and self._on_disconnect is not None:
                try:
                    self._on_disconnect()
                except Exception:
                    log.exception("ami.disconnect_hook_crashed")

    async def _drain_consumer(
        self, queue: asyncio.Queue[AmiMessage | None], consumer_task: asyncio.Task[None]
    ) -> None:
        if consumer_task.done():
            return
        try:
            await queue.put(None)
            await consumer_task
        except asyncio.CancelledError:
            consumer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer_task
            raise

    def _fail_pending(self) -> None:
        pending = list(self._pending.values())
        self._pending.clear()
        for item in pending:
            if not item.future.done():
                item.future.set_exception(
                    AmiConnectionError(
                        f"the AMI connection was lost before the response to {item.action}"
                    )
                )

    async def _converse(self, banner: asyncio.Future[Banner], progress: _Progress) -> None:
        timing = self._timing
        try:
            async with asyncio.timeout(timing.login_timeout):
                self.banner = await banner
        except TimeoutError:
            raise AmiConnectionError(
                f"no AMI banner from {self._host}:{self._port} within {timing.login_timeout} s"
            ) from None
        try:
            await self._request(
                "Login",
                [
                    ("Username", self._username),
                    ("Secret", self._secret.get_secret_value()),
                    ("Events", self._events),
                ],
                deadline=timing.login_timeout,
                require_login=False,
            )
        except AmiActionError as exc:
            raise AmiAuthenticationError(
                f"the PBX refused the AMI login of {self._username!r}: {exc.message}"
            ) from None
        except AmiActionTimeout as exc:
            raise AmiConnectionError(str(exc)) from None
        self._auth_failure_logged = False
        self.login_count += 1
        self._logged_in.set()
        log.info(
            "ami.logged_in",
            host=self._host,
            port=self._port,
            username=self._username,
            ami_version=self.banner.version,
            login_count=self.login_count,
        )
        if self._on_login is not None:
            try:
                await self._on_login(self)
            except AmiError as exc:
                raise AmiConnectionError(f"the AMI login hook failed: {exc}") from exc
            except Exception as exc:
                log.exception("ami.login_hook_crashed")
                raise AmiConnectionError(f"the AMI login hook crashed: {exc!r}") from exc
        progress.healthy = True
        while True:
            await asyncio.sleep(timing.ping_interval)
            try:
                await self._request("Ping", (), deadline=timing.ping_timeout)
            except AmiActionTimeout:
                raise AmiConnectionError(
                    f"no reply to Ping within {timing.ping_timeout} s: the AMI connection "
                    "is half-open"
                ) from None
            except AmiActionError as exc:
                log.warning("ami.ping_refused", error=exc.message)

    async def _read(
        self,
        reader: asyncio.StreamReader,
        queue: asyncio.Queue[AmiMessage | None],
        banner: asyncio.Future[Banner],
    ) -> None:
        parser = AmiParser(max_frame_size=self._max_frame_size)
        while True:
            try:
                data = await reader.read(_READ_SIZE)
            except (ConnectionError, OSError) as exc:
                raise AmiConnectionError(f"reading from AMI failed: {exc}") from exc
            if not data:
                parser.receive_eof()
                self._dispatch_all(parser, queue, banner)
                raise AmiConnectionError("the PBX closed the AMI connection")
            parser.receive_data(data)
            self._dispatch_all(parser, queue, banner)
            if queue.qsize() >= self._read_ahead:
                # Far enough ahead of the consumer: let the kernel hold the rest of the burst.
                self._caught_up.clear()
                await self._caught_up.wait()

    def _dispatch_all(
        self,
        parser: AmiParser,
        queue: asyncio.Queue[AmiMessage | None],
        banner: asyncio.Future[Banner],
    ) -> None:
        while True:
            message = _next_message(parser)
            if message is NEED_DATA:
                return
            if isinstance(message, AmiFrameTooLarge):
                log.error("ami.frame_too_large", error=str(message))
                continue
            if isinstance(message, AmiMessage):
                self._dispatch(message, queue)
            elif isinstance(message, Banner):
                if not banner.done():
                    banner.set_result(message)
            else:
                self._dispatch_malformed(message, queue, banner)

    def _dispatch_malformed(
        self,
        message: MalformedMessage,
        queue: asyncio.Queue[AmiMessage | None],
        banner: asyncio.Future[Banner],
    ) -> None:
        if not banner.done():
            banner.set_exception(
                AmiConnectionError(
                    f"{self._host}:{self._port} does not speak AMI: {message.reason}"
                )
            )
            return
        log.warning(
            "ami.malformed_message",
            reason=message.reason,
            size=len(message.raw),
            salvaged=message.salvaged is not None,
        )
        if message.salvaged is not None:
            self._dispatch(message.salvaged, queue)

    def _dispatch(self, message: AmiMessage, queue: asyncio.Queue[AmiMessage | None]) -> None:
        # An event is an event even when it carries a Response field (OriginateResponse);
        # reading the name off the first line is also much cheaper than looking for the field.
        if message.event is None and message.response is not None:
            self._resolve(message)
            return
        if self._collecting:
            action_id = message.action_id
            if action_id is not None:
                pending = self._pending.get(action_id)
                if pending is not None and pending.is_list:
                    self._collect(pending, message)
                    return
        if queue.full():
            log.error("ami.event_queue_full", queue_size=self._queue_size, ami_event=message.event)
            raise AmiConnectionError(
                f"the AMI event queue is full ({self._queue_size} events): the consumer is "
                "too slow; reconnecting to resynchronise"
            )
        queue.put_nowait(message)

    def _resolve(self, response: AmiMessage) -> None:
        action_id = response.action_id
        pending = self._pending.get(action_id) if action_id is not None else None
        if pending is None:
            log.debug("ami.unmatched_response", action_id=action_id)
            return
        if pending.future.done():
            return
        starts_list = (response.get("EventList") or "").lower() == "start"
        if pending.is_list and starts_list and not _is_error(response):
            pending.response = response
            return
        pending.future.set_result((response, []))

    def _collect(self, pending: _Pending, event: AmiMessage) -> None:
        if pending.future.done():
            return
        if (event.get("EventList") or "").lower() != "complete":
            pending.items.append(event)
            return
        listed = event.get("ListItems")
        if listed is not None and listed.isdigit() and int(listed) != len(pending.items):
            log.warning(
                "ami.list_count_mismatch",
                action=pending.action,
                announced=int(listed),
                received=len(pending.items),
            )
        response = pending.response or event
        pending.future.set_result((response, pending.items))

    async def _consume(self, queue: asyncio.Queue[AmiMessage | None]) -> None:
        sink = self._sink
        caught_up = self._caught_up
        resume_at = self._read_ahead // 4
        while True:
            caught_up.set()
            message = await queue.get()
            delivered = 0
            while message is not None:
                try:
                    sink(message)
                except Exception:
                    log.exception("ami.sink_failed", ami_event=message.event)
                delivered += 1
                if delivered % _CONSUMER_BATCH == 0:
                    await asyncio.sleep(0)
                if queue.qsize() <= resume_at:
                    caught_up.set()
                if queue.empty():
                    break
                message = queue.get_nowait()
            else:
                return


@dataclass(slots=True)
class _Progress:
    """Whether a session got through login and the hook (then backoff starts over)."""

    healthy: bool = False


def _next_message(parser: AmiParser) -> ParseResult | AmiFrameTooLarge:
    try:
        return parser.next_message()
    except AmiFrameTooLarge as exc:
        return exc


def _is_error(response: AmiMessage) -> bool:
    return (response.response or "").lower() == "error"
