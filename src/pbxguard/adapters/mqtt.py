"""Publish pbxguard's decisions, offences and alerts to an MQTT broker.

Topics follow one fixed scheme per site (the site name is a setting)::

    pbxguard/<site>/decisions       every verdict, pre-dial (FastAGI) or safety net (AMI)
    pbxguard/<site>/offences        every offence recorded against an extension
    pbxguard/<site>/alerts          an alert that concerns no single line
    pbxguard/<site>/alerts/<line>   an alert about one protected line ("guard-room", "8001", ...)
    pbxguard/<site>/emergency       an emergency call (110, 119 ...), for the security desk
    pbxguard/<site>/status          retained {"state": "online" | "offline", ...}

``<line>`` is the line's name with the MQTT special characters ``/ + #`` and NUL replaced by
``_``, so one alert never lands on a neighbour's topic; subscribe to ``pbxguard/<site>/alerts/#``
for all alerts. Payloads are JSON objects in UTF-8 (``ensure_ascii=False``: Chinese names stay
readable), published with QoS 1 and not retained. ``Decimal`` becomes a string (money never
becomes a float), datetimes become ISO 8601, enums their value, dataclasses objects.

Status: on every connection the link publishes a retained ``{"state": "online"}``; the broker
holds a Will that replaces it with a retained ``{"state": "offline", "reason": "connection
lost"}`` if pbxguard dies or its connection breaks; a clean ``close()`` publishes ``offline``
itself.

Delivery is at-least-once and in order. ``publish()`` never waits on the network and never
raises: it encodes the payload and appends it to a bounded outbox in memory (an event it cannot
encode is logged, counted as dropped and skipped). ``run()`` connects, sends the outbox one
message at a time, and removes a message only once the broker acknowledged it (PUBACK), so a
message cut off by a lost connection is sent again after reconnecting: subscribers may see a
message twice, never out of order, and should deduplicate on an id carried in the payload.

When the outbox is full, ``publish()`` appends the message to an append-only JSON-lines spool
file instead (one small synchronous write), and every later message follows it there until the
spool has been sent, which keeps the order. Messages still in memory when ``run()`` ends are
written to the head of the spool, so the spool always holds the oldest pending traffic and is
sent first on the next start: a long broker outage, or a restart during one, loses no alert.
Without a spool path, overflow is dropped and counted.

Each connection attempt after an established session uses a new aiomqtt client: aiomqtt 2.5
keeps a reused client's "connected" state after an unexpected disconnect, so its next
``__aenter__`` returns before the broker has accepted the connection, and paho re-sends its old
in-flight messages. Failed attempts reuse the client, because paho closes the previous attempt's
socket only when the same client connects again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import enum
import json
import os
import shutil
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Final, Literal, Protocol, get_args

import aiomqtt
import structlog

from pbxguard.adapters.backoff import Backoff
from pbxguard.errors import ConfigError, PublisherError

log = structlog.get_logger(__name__)

EventKind = Literal["decisions", "offences", "alerts", "emergency"]
"""The kinds of event published; each is one topic level under ``pbxguard/<site>/``."""

TOPIC_ROOT: Final = "pbxguard"
_EVENT_KINDS: Final[frozenset[str]] = frozenset(get_args(EventKind))
_TOPIC_SPECIALS: Final = frozenset("/+#\x00")
_TOPIC_WILDCARDS: Final = frozenset("+#\x00")
_QOS: Final = 1
_SPOOL_CHUNK: Final = 1 << 20


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BrokerSettings:
    """Where the broker is and how the link behaves when it is away."""

    host: str
    port: int = 1883
    site: str
    client_id: str | None = None
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    keepalive: int = 30
    backoff_min: float = 0.5
    backoff_max: float = 30.0
    connect_timeout: float = 10.0
    publish_timeout: float = 10.0
    close_timeout: float = 5.0
    outbox_limit: int = 10_000
    spool_path: Path | None = None

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError("mqtt: host must not be empty")
        if not 0 < self.port < 65536:
            raise ConfigError(f"mqtt: port {self.port} is not a TCP port")
        if not self.site or self.site.startswith("$") or _TOPIC_SPECIALS & set(self.site):
            raise ConfigError(
                f"mqtt: site {self.site!r} must be a non-empty topic level without / + # "
                "or a leading $"
            )
        if self.client_id == "":
            raise ConfigError("mqtt: client_id must not be empty (leave it unset for the default)")
        if self.keepalive < 1:
            raise ConfigError("mqtt: keepalive must be at least 1 second")
        if not 0 < self.backoff_min <= self.backoff_max:
            raise ConfigError("mqtt: backoff must satisfy 0 < backoff_min <= backoff_max")
        if min(self.connect_timeout, self.publish_timeout, self.close_timeout) <= 0:
            raise ConfigError("mqtt: timeouts must be positive")
        if self.outbox_limit < 1:
            raise ConfigError("mqtt: outbox_limit must be at least 1")

    @property
    def effective_client_id(self) -> str:
        """Return the MQTT client id: the configured one, else ``pbxguard-<site>``."""
        return self.client_id or f"pbxguard-{self.site}"


@dataclasses.dataclass(frozen=True, slots=True)
class LinkCounters:
    """A snapshot of what a link has done since it was built.

    Attributes:
        queued: events accepted by ``publish()``.
        delivered: events the broker acknowledged (a redelivered event counts again).
        spilled: events written to the spool file.
        dropped: events lost: payload not JSON-serialisable, spool unwritable or unreadable,
            or no spool configured when one was needed.
        reconnects: connections established after the first.
        pending: events waiting, in memory and in the spool.
    """

    queued: int = 0
    delivered: int = 0
    spilled: int = 0
    dropped: int = 0
    reconnects: int = 0
    pending: int = 0


class AlertPublisher(Protocol):
    """The publishing port enforcement depends on: hand an event over without waiting."""

    def publish(
        self,
        kind: EventKind,
        payload: Mapping[str, object],
        *,
        line: str | None = None,
        urgent: bool = False,
    ) -> None:
        """Queue one event for ``pbxguard/<site>/<kind>``; never block, never raise.

        Args:
            kind: which topic the event belongs to.
            payload: a JSON-serialisable mapping; it should carry its own id so that
                subscribers can drop the duplicates at-least-once delivery allows.
            line: for alerts, the protected line the alert concerns; it becomes the topic's
                last level.
            urgent: send it before everything still waiting (emergency calls), whatever the
                outbox's limit.
        """
        ...


class PublisherLink(AlertPublisher, Protocol):
    """The publishing port plus the lifecycle the supervisor drives."""

    async def run(self) -> None:
        """Deliver queued events until ``close()`` is called or the task is cancelled.

        Raises:
            PublisherError: ``run()`` is already running on this link.
        """
        ...

    async def close(self) -> None:
        """Stop ``run()`` cleanly, announcing ``offline``; keep what was not sent."""
        ...

    @property
    def counters(self) -> LinkCounters:
        """Return a snapshot of the link's counters."""
        ...

    @property
    def connected(self) -> bool:
        """Tell whether the link holds an established broker connection."""
        ...


def _json_default(value: object) -> object:
    if isinstance(value, Decimal | uuid.UUID | Path):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode_payload(payload: Mapping[str, object]) -> bytes:
    """Encode an event payload as compact UTF-8 JSON, the form published on the wire."""
    text = json.dumps(
        dict(payload),
        ensure_ascii=False,
        allow_nan=False,
        separators=(",", ":"),
        default=_json_default,
    )
    return text.encode("utf-8")


def topic_level(name: str) -> str:
    """Turn a name into one topic level by replacing ``/ + #`` and NUL with ``_``."""
    return "".join("_" if char in _TOPIC_SPECIALS else char for char in name.strip())


@dataclasses.dataclass(frozen=True, slots=True)
class _Envelope:
    topic: str
    payload: bytes

    def spool_line(self) -> bytes:
        # The payload is already JSON text, so it is embedded without a second encoding pass.
        topic = json.dumps(self.topic, ensure_ascii=False).encode("utf-8")
        return b'{"topic":' + topic + b',"payload":' + self.payload + b"}\n"

    @classmethod
    def from_spool_line(cls, line: bytes) -> _Envelope | None:
        try:
            record = json.loads(line)
            topic, payload = record["topic"], record["payload"]
        except (ValueError, KeyError, TypeError):
            return None
        if not isinstance(topic, str) or not isinstance(payload, dict):
            return None
        if not topic.startswith(f"{TOPIC_ROOT}/") or _TOPIC_WILDCARDS & set(topic):
            return None
        try:
            return cls(topic, encode_payload(payload))
        except ValueError:
            return None


def _read_spooled_lines(
    path: Path, offset: int, end: int, max_lines: int
) -> tuple[list[bytes], int]:
    lines: list[bytes] = []
    consumed = 0
    with path.open("rb") as spool:
        spool.seek(offset)
        while len(lines) < max_lines and offset + consumed < end:
            line = spool.readline(end - offset - consumed)
            if not line:
                break
            lines.append(line)
            consumed += len(line)
    return lines, consumed


class _Spool:
    """The append-only JSON-lines file that holds the tail of the pending messages.

    Only bytes up to ``_end`` are read, and every write ends on a newline, so a reader never
    sees half a line. The file is opened per append rather than held open: appends happen only
    when the outbox overflows, and an unheld file survives log rotation tools and leaks nothing.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._loaded = False
        self._read_offset = 0
        self._end = 0
        self._lines = 0

    @property
    def backlog(self) -> int:
        """Return how many lines are waiting to be read."""
        self._load()
        return self._lines

    def has_backlog(self) -> bool:
        """Tell whether lines are waiting to be read."""
        self._load()
        return self._read_offset < self._end

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        try:
            self._end, self._lines = self._scan()
        except OSError as exc:
            log.exception("mqtt.spool_unreadable", path=str(self.path), error=str(exc))
            self._end = self._lines = 0
        if self._lines:
            log.info("mqtt.spool_found", path=str(self.path), messages=self._lines)

    def _scan(self) -> tuple[int, int]:
        try:
            spool = self.path.open("rb")
        except FileNotFoundError:
            return 0, 0
        size = lines = 0
        last = b"\n"
        with spool:
            while chunk := spool.read(_SPOOL_CHUNK):
                size += len(chunk)
                lines += chunk.count(b"\n")
                last = chunk[-1:]
        if last != b"\n":
            # A crash cut the last line short: end it so the next append starts cleanly.
            # The fragment is dropped, with a log line, when it is read back.
            with self.path.open("ab") as tail:
                tail.write(b"\n")
            size += 1
            lines += 1
        return size, lines

    def append(self, line: bytes) -> None:
        """Append one line; raise ``OSError`` when the file cannot be written."""
        self._load()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as spool:
            spool.write(line)
        self._end += len(line)
        self._lines += 1

    async def read(self, max_lines: int) -> list[bytes]:
        """Read up to ``max_lines`` waiting lines, oldest first, off the event loop."""
        self._load()
        offset, end = self._read_offset, self._end
        lines, consumed = await asyncio.to_thread(
            _read_spooled_lines, self.path, offset, end, max_lines
        )
        self._read_offset = offset + consumed
        self._lines -= len(lines)
        return lines

    def discard_if_drained(self) -> bool:
        """Empty the file once every line has been read; tell whether it was emptied."""
        if not self._loaded or self._read_offset < self._end or self._end == 0:
            return False
        try:
            os.truncate(self.path, 0)
        except OSError as exc:
            log.warning("mqtt.spool_not_truncated", path=str(self.path), error=str(exc))
            return False
        self._read_offset = self._end = self._lines = 0
        return True

    def abandon(self) -> int:
        """Give up on the unread lines after a read error; return how many were lost."""
        lost = self._lines
        self._read_offset = self._end
        self._lines = 0
        self.discard_if_drained()
        return lost

    def prepend(self, head: list[bytes]) -> None:
        """Put ``head`` before the unread lines, replacing the file atomically."""
        self._load()
        temporary = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with temporary.open("wb") as out:
            out.writelines(head)
            if self._read_offset < self._end:
                with self.path.open("rb") as old:
                    old.seek(self._read_offset)
                    shutil.copyfileobj(old, out)
            out.flush()
            os.fsync(out.fileno())
            size = out.tell()
        os.replace(temporary, self.path)
        self._read_offset = 0
        self._end = size
        self._lines += len(head)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    return f"{text}: {cause}" if cause is not None and str(cause) else text


async def _cancel_and_wait(task: asyncio.Task[None]) -> None:
    # asyncio.wait() rather than awaiting the task: a cancellation of the caller must still
    # propagate, and the task's own CancelledError or MqttError is expected and not news.
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()


class BrokerLink:
    """The MQTT side of pbxguard: an outbox that ``run()`` delivers to the broker.

    ``publish()`` must be called from the event loop's thread. A closed link stays closed:
    events published after ``close()`` go to the spool for the next start.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._client_id = settings.effective_client_id
        self._base_topic = f"{TOPIC_ROOT}/{settings.site}"
        self._status_topic = f"{self._base_topic}/status"
        self._outbox: deque[_Envelope] = deque()
        self._spool = _Spool(settings.spool_path) if settings.spool_path is not None else None
        self._spilling = False
        self._wakeup = asyncio.Event()
        self._close_requested = asyncio.Event()
        self._stopped = asyncio.Event()
        self._running = False
        self._connected = False
        self._sessions = 0
        self._queued = 0
        self._delivered = 0
        self._spilled = 0
        self._dropped = 0
        self._delivery_waiters: list[tuple[int, asyncio.Future[None]]] = []

    @property
    def settings(self) -> BrokerSettings:
        """Return the settings the link was built with."""
        return self._settings

    @property
    def connected(self) -> bool:
        """Tell whether the link holds an established broker connection."""
        return self._connected

    @property
    def counters(self) -> LinkCounters:
        """Return a snapshot of the link's counters."""
        return LinkCounters(
            queued=self._queued,
            delivered=self._delivered,
            spilled=self._spilled,
            dropped=self._dropped,
            reconnects=max(self._sessions - 1, 0),
            pending=self._pending(),
        )

    def topic_for(self, kind: EventKind, line: str | None = None) -> str:
        """Return the topic an event of ``kind`` (about ``line``, for alerts) is published on."""
        if kind not in _EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        topic = f"{self._base_topic}/{kind}"
        if line is None:
            return topic
        if kind != "alerts":
            log.error("mqtt.line_ignored", kind=kind, line=line)
            return topic
        level = topic_level(str(line))
        if level:
            topic = f"{topic}/{level}"
        # A lone surrogate would only fail later, inside paho, with the event at the head of
        # the queue; refuse it here instead.
        topic.encode("utf-8")
        return topic

    def publish(
        self,
        kind: EventKind,
        payload: Mapping[str, object],
        *,
        line: str | None = None,
        urgent: bool = False,
    ) -> None:
        """Queue one event for ``pbxguard/<site>/<kind>``; never block, never raise.

        An ``urgent`` event goes ahead of everything waiting (behind at most the one message
        being sent), in memory even when the outbox is full: an emergency call is not kept
        behind a backlog of decisions.
        """
        try:
            envelope = _Envelope(self.topic_for(kind, line), encode_payload(payload))
        except Exception as exc:
            # Whatever the payload does wrong costs that event only, never the caller's call.
            self._dropped += 1
            log.exception("mqtt.event_rejected", kind=str(kind), error=str(exc))
            return
        self._queued += 1
        if urgent and not self._close_requested.is_set():
            # The head may be the message on the wire, removed once the broker acknowledges it.
            self._outbox.insert(min(1, len(self._outbox)), envelope)
            self._wakeup.set()
            return
        try:
            self._enqueue(envelope)
        except Exception:
            # Enforcement calls this on its hot path; a fault here must cost one event, not a call.
            self._dropped += 1
            log.exception("mqtt.event_lost", topic=envelope.topic)

    def _pending(self) -> int:
        spooled = self._spool.backlog if self._spool is not None else 0
        return len(self._outbox) + spooled

    def _enqueue(self, envelope: _Envelope) -> None:
        spool = self._spool
        in_memory = (
            len(self._outbox) < self._settings.outbox_limit
            and not self._close_requested.is_set()
            and (spool is None or not spool.has_backlog())
        )
        if in_memory:
            self._outbox.append(envelope)
            self._spilling = False
            self._wakeup.set()
            return
        if spool is None:
            self._dropped += 1
            log.error("mqtt.outbox_full", topic=envelope.topic, limit=self._settings.outbox_limit)
            return
        try:
            spool.append(envelope.spool_line())
        except OSError as exc:
            self._dropped += 1
            log.exception("mqtt.spool_write_failed", path=str(spool.path), error=str(exc))
            return
        self._spilled += 1
        if not self._spilling:
            self._spilling = True
            log.warning("mqtt.spilling_to_disk", path=str(spool.path), pending=self._pending())
        self._wakeup.set()

    async def wait_delivered(self, count: int) -> None:
        """Return once the broker has acknowledged at least ``count`` events in total."""
        if self._delivered >= count:
            return
        waiter = asyncio.get_running_loop().create_future()
        entry = (count, waiter)
        self._delivery_waiters.append(entry)
        try:
            await waiter
        finally:
            with contextlib.suppress(ValueError):
                self._delivery_waiters.remove(entry)

    def _count_delivery(self) -> None:
        self._delivered += 1
        for count, waiter in self._delivery_waiters:
            if count <= self._delivered and not waiter.done():
                waiter.set_result(None)

    async def probe(self) -> None:
        """Connect once under a separate client id and disconnect again.

        Raises:
            PublisherError: the broker could not be reached or refused the connection.
        """
        client = self._new_client(identifier=f"{self._client_id}-probe", with_will=False)
        try:
            async with client:
                pass
        except aiomqtt.MqttError as exc:
            raise PublisherError(
                f"MQTT broker {self._settings.host}:{self._settings.port} unavailable: "
                f"{_describe(exc)}"
            ) from exc

    async def run(self) -> None:
        """Deliver queued events, reconnecting with backoff, until closed or cancelled."""
        if self._running:
            raise PublisherError("the broker link is already running")
        self._running = True
        self._stopped.clear()
        backoff = Backoff(self._settings.backoff_min, self._settings.backoff_max)
        client: aiomqtt.Client | None = None
        try:
            while not self._close_requested.is_set():
                if client is None:
                    client = self._new_client(identifier=self._client_id, with_will=True)
                sessions = self._sessions
                try:
                    await self._session(client, backoff)
                except (aiomqtt.MqttError, OSError) as exc:
                    delay = backoff.next_delay()
                    log.warning(
                        "mqtt.connection_lost"
                        if self._sessions != sessions
                        else "mqtt.broker_unavailable",
                        host=self._settings.host,
                        port=self._settings.port,
                        error=_describe(exc),
                        retry_in=round(delay, 3),
                        pending=self._pending(),
                    )
                    await self._pause(delay)
                else:
                    break
                finally:
                    self._connected = False
                    if self._sessions != sessions:
                        client = None
        finally:
            self._running = False
            self._persist_outbox()
            self._stopped.set()

    async def close(self) -> None:
        """Stop ``run()``: send what can be sent in time, announce offline, spool the rest."""
        self._close_requested.set()
        self._wakeup.set()
        if not self._running:
            self._persist_outbox()
            return
        settings = self._settings
        budget = settings.connect_timeout + settings.close_timeout + settings.publish_timeout
        try:
            async with asyncio.timeout(budget):
                await self._stopped.wait()
        except TimeoutError:
            log.warning("mqtt.close_timed_out", waited=budget, pending=self._pending())

    async def _pause(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._close_requested.wait()

    def _new_client(self, *, identifier: str, with_will: bool) -> aiomqtt.Client:
        settings = self._settings
        will = None
        if with_will:
            offline = self._status_payload("offline", reason="connection lost", stamped=False)
            will = aiomqtt.Will(self._status_topic, offline, qos=_QOS, retain=True)
        return aiomqtt.Client(
            settings.host,
            settings.port,
            username=settings.username,
            password=settings.password,
            identifier=identifier,
            will=will,
            clean_session=True,
            keepalive=settings.keepalive,
            timeout=settings.connect_timeout,
        )

    def _status_payload(self, state: str, *, reason: str | None, stamped: bool) -> bytes:
        status: dict[str, object] = {
            "state": state,
            "site": self._settings.site,
            "client_id": self._client_id,
        }
        if reason is not None:
            status["reason"] = reason
        if stamped and self._clock is not None:
            status["at"] = self._clock()
        return encode_payload(status)

    async def _session(self, client: aiomqtt.Client, backoff: Backoff) -> None:
        async with client:
            self._sessions += 1
            watcher = asyncio.create_task(self._watch(client), name="mqtt-connection-watch")
            deliverer = asyncio.create_task(
                self._deliver(client, backoff), name="mqtt-outbox-delivery"
            )
            try:
                done, _ = await asyncio.wait(
                    {watcher, deliverer}, return_when=asyncio.FIRST_COMPLETED
                )
            except asyncio.CancelledError:
                await _cancel_and_wait(deliverer)
                if not watcher.done():
                    await self._announce_offline_quietly(client)
                await _cancel_and_wait(watcher)
                raise
            if deliverer in done:
                await _cancel_and_wait(watcher)
                deliverer.result()
                return
            await _cancel_and_wait(deliverer)
            watcher.result()
            raise aiomqtt.MqttError("the broker connection ended")

    @staticmethod
    async def _watch(client: aiomqtt.Client) -> None:
        # Nothing is subscribed: the message iterator only ever ends, with MqttError, when the
        # connection is lost, which is the one public signal aiomqtt gives for it.
        async for _message in client.messages:
            pass

    async def _deliver(self, client: aiomqtt.Client, backoff: Backoff) -> None:
        online = self._status_payload("online", reason=None, stamped=True)
        await client.publish(
            self._status_topic,
            online,
            qos=_QOS,
            retain=True,
            timeout=self._settings.publish_timeout,
        )
        self._connected = True
        backoff.reset()
        log.info(
            "mqtt.connected",
            host=self._settings.host,
            port=self._settings.port,
            client_id=self._client_id,
            pending=self._pending(),
        )
        await self._drain(client, until_closed=True)
        try:
            async with asyncio.timeout(self._settings.close_timeout):
                await self._drain(client, until_closed=False)
        except TimeoutError:
            log.warning("mqtt.close_left_pending", pending=self._pending())
        offline = self._status_payload("offline", reason="shutdown", stamped=True)
        await client.publish(
            self._status_topic,
            offline,
            qos=_QOS,
            retain=True,
            timeout=self._settings.publish_timeout,
        )
        self._connected = False
        log.info("mqtt.closed", pending=self._pending())

    async def _drain(self, client: aiomqtt.Client, *, until_closed: bool) -> None:
        while True:
            self._wakeup.clear()
            if await self._send_next(client):
                continue
            if not until_closed or self._close_requested.is_set():
                return
            await self._wakeup.wait()

    async def _send_next(self, client: aiomqtt.Client) -> bool:
        spool = self._spool
        while not self._outbox and spool is not None and spool.has_backlog():
            await self._refill(spool)
        if not self._outbox:
            return False
        envelope = self._outbox[0]
        try:
            await client.publish(
                envelope.topic,
                envelope.payload,
                qos=_QOS,
                timeout=self._settings.publish_timeout,
            )
        except ValueError:
            # paho refused the message itself; retrying it would block every event behind it.
            self._outbox.popleft()
            self._dropped += 1
            log.exception("mqtt.event_unpublishable", topic=envelope.topic)
            return True
        # Removed only once acknowledged: an interrupted publish is sent again (at-least-once).
        self._outbox.popleft()
        self._count_delivery()
        return True

    async def _refill(self, spool: _Spool) -> None:
        try:
            lines = await spool.read(self._settings.outbox_limit - len(self._outbox))
        except OSError as exc:
            lost = spool.abandon()
            self._dropped += lost
            log.exception("mqtt.spool_unreadable", path=str(spool.path), error=str(exc), lost=lost)
            return
        for line in lines:
            envelope = _Envelope.from_spool_line(line)
            if envelope is None:
                self._dropped += 1
                log.error("mqtt.spool_line_invalid", path=str(spool.path), line=line[:200])
                continue
            self._outbox.append(envelope)
        if spool.discard_if_drained():
            log.info("mqtt.spool_drained", path=str(spool.path))

    async def _announce_offline_quietly(self, client: aiomqtt.Client) -> None:
        offline = self._status_payload("offline", reason="shutdown", stamped=True)
        with contextlib.suppress(aiomqtt.MqttError):
            await client.publish(
                self._status_topic,
                offline,
                qos=_QOS,
                retain=True,
                timeout=self._settings.close_timeout,
            )

    def _persist_outbox(self) -> None:
        if not self._outbox:
            return
        count = len(self._outbox)
        if self._spool is None:
            self._dropped += count
            log.warning("mqtt.pending_lost", messages=count, reason="no spool configured")
        else:
            try:
                self._spool.prepend([envelope.spool_line() for envelope in self._outbox])
            except OSError as exc:
                self._dropped += count
                log.exception(
                    "mqtt.pending_lost", messages=count, path=str(self._spool.path), error=str(exc)
                )
            else:
                self._spilled += count
                log.info("mqtt.pending_spooled", messages=count, path=str(self._spool.path))
        self._outbox.clear()


class NullLink:
    """Accept every event and send none: the link used when no broker is configured."""

    def __init__(self) -> None:
        self._queued = 0
        self._closed = asyncio.Event()

    @property
    def connected(self) -> bool:
        """Tell whether the link holds a broker connection: never."""
        return False

    @property
    def counters(self) -> LinkCounters:
        """Return a snapshot of the link's counters."""
        return LinkCounters(queued=self._queued)

    def publish(
        self,
        kind: EventKind,
        payload: Mapping[str, object],
        *,
        line: str | None = None,
        urgent: bool = False,
    ) -> None:
        """Accept and discard one event."""
        self._queued += 1

    async def run(self) -> None:
        """Wait until closed or cancelled."""
        await self._closed.wait()

    async def close(self) -> None:
        """Let ``run()`` return."""
        self._closed.set()
