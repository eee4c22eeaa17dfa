"""Emergency notices to the security desk by webhook (HTTP POST, JSON) and by e-mail (SMTP).

Both are optional, beside the MQTT topic ``pbxguard/<site>/emergency`` (`notice_payload` is
the one payload all three carry). The guard hands a notice over with `emergency_call`, which
only puts it in a bounded queue; ``run()``, a task of the daemon, delivers each notice in a
task of its own, so a slow or failing notice never holds up the next. The blocking libraries
(``urllib``, ``smtplib``) run in a small thread pool of each desk's own, never in the event
loop and never in the pool the ledger and the authorization codes use.

A delivery that fails (connection refused, timeout, an HTTP status outside 2xx, an SMTP error)
is tried again after a jittered exponential backoff, ``attempts`` times in all, then given up
with an error in the log. Nothing here can delay, refuse or hang up the call: the call was
judged before the notice existed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import json
import random
import smtplib
import ssl
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from pbxguard import __version__
from pbxguard.adapters.backoff import backoff_delay
from pbxguard.domain.emergency import EmergencyNotice

log = structlog.get_logger(__name__)

#: Notices waiting for delivery at most; more are dropped (and logged).
QUEUE_LIMIT = 256
#: Notices delivered at once by one desk.
IN_FLIGHT = 4


def local_time(notice: EmergencyNotice, timezone: ZoneInfo) -> str:
    """Return the call's time as the site reads it (2026-11-23 09:33:46)."""
    return notice.at.astimezone(timezone).strftime("%Y-%m-%d %H:%M:%S")


def notice_payload(notice: EmergencyNotice, timezone: ZoneInfo) -> dict[str, object]:
    """Return a notice as the JSON object MQTT, the webhook and the e-mail carry."""
    when = local_time(notice, timezone)
    return {
        "id": notice.key,
        "site": notice.site,
        "at": notice.at.isoformat(),
        "local_time": when,
        "timezone": timezone.key,
        "extension": notice.extension,
        "caller_name": notice.caller_name,
        "person": notice.person_id,
        "person_name": notice.person_name,
        "department": notice.department,
        "location": notice.location,
        "dialled": notice.dialled,
        "number": notice.number,
        "linkedid": notice.call.linkedid,
        "uniqueid": notice.call.uniqueid,
        "channel": notice.call.channel,
        "layer": notice.layer.value,
        "message_zh": notice.message_zh(when),
        "message_en": notice.message_en(when),
    }


class DeliveryError(Exception):
    """One attempt to deliver a notice failed (the desk says why)."""


@dataclass(frozen=True, slots=True)
class Retry:
    """How often and how patiently a desk tries a notice again."""

    attempts: int = 6
    backoff_min: float = 1.0
    backoff_max: float = 60.0

    def delay(self, attempt: int) -> float:
        """Return the pause after failed attempt number ``attempt`` (1, 2 …), with jitter."""
        # Jitter only spreads retries out; nothing here needs an unpredictable number.
        rng = random.Random()  # noqa: S311
        return backoff_delay(self.backoff_min, self.backoff_max, attempt - 1, rng)


@dataclass(slots=True)
class DeskCounters:
    """What a desk has done since it started."""

    queued: int = 0
    delivered: int = 0
    failed_attempts: int = 0
    given_up: int = 0
    dropped: int = 0


class QueuedDesk(ABC):
    """A security-desk channel: a bounded queue, deliveries with retries, a thread pool."""

    kind = "desk"

    def __init__(self, timezone: ZoneInfo, *, retry: Retry | None = None) -> None:
        self._timezone = timezone
        self._retry = retry or Retry()
        self._queue: asyncio.Queue[EmergencyNotice] = asyncio.Queue(QUEUE_LIMIT)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=IN_FLIGHT, thread_name_prefix=f"emergency-{self.kind}"
        )
        self.counters = DeskCounters()

    def emergency_call(self, notice: EmergencyNotice) -> None:
        """Queue a notice for delivery; return at once, never raise."""
        try:
            self._queue.put_nowait(notice)
        except asyncio.QueueFull:
            self.counters.dropped += 1
            log.error("emergency.queue_full", desk=self.kind, notice=notice.key)
            return
        self.counters.queued += 1

    async def run(self) -> None:
        """Deliver queued notices, each in a task of its own, until cancelled."""
        slots = asyncio.Semaphore(IN_FLIGHT)
        try:
            async with asyncio.TaskGroup() as group:
                while True:
                    notice = await self._queue.get()
                    await slots.acquire()
                    task = group.create_task(self._guarded(notice))
                    task.add_done_callback(lambda _task: slots.release())
        finally:
            while not self._queue.empty():
                self._dropped(self._queue.get_nowait())
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _dropped(self, notice: EmergencyNotice) -> None:
        # pbxguard is stopping: say which notices never arrived.
        self.counters.dropped += 1
        log.warning("emergency.pending_dropped", desk=self.kind, notice=notice.key)

    async def _guarded(self, notice: EmergencyNotice) -> None:
        try:
            await self._deliver(notice)
        except asyncio.CancelledError:
            self._dropped(notice)
            raise
        except Exception:
            # A fault in one delivery costs that notice, never the desk or the daemon.
            self.counters.given_up += 1
            log.exception("emergency.delivery_crashed", desk=self.kind, notice=notice.key)

    async def _deliver(self, notice: EmergencyNotice) -> None:
        payload = notice_payload(notice, self._timezone)
        loop = asyncio.get_running_loop()
        for attempt in range(1, self._retry.attempts + 1):
            try:
                await loop.run_in_executor(self._pool, self._send, notice, payload)
            except DeliveryError as error:
                self.counters.failed_attempts += 1
                if attempt == self._retry.attempts:
                    self.counters.given_up += 1
                    log.error(
                        "emergency.given_up",
                        desk=self.kind,
                        notice=notice.key,
                        attempts=attempt,
                        error=str(error),
                    )
                    return
                delay = self._retry.delay(attempt)
                log.warning(
                    "emergency.delivery_failed",
                    desk=self.kind,
                    notice=notice.key,
                    attempt=attempt,
                    retry_in=round(delay, 3),
                    error=str(error),
                )
                await asyncio.sleep(delay)
                continue
            self.counters.delivered += 1
            log.info("emergency.delivered", desk=self.kind, notice=notice.key, attempt=attempt)
            return

    @abstractmethod
    def _send(self, notice: EmergencyNotice, payload: dict[str, object]) -> None:
        """Deliver one notice, blocking (in the desk's thread pool).

        Raises:
            DeliveryError: it was not delivered.
        """


class WebhookDesk(QueuedDesk):
    """POST every notice as JSON to the security desk's HTTP endpoint."""

    kind = "webhook"

    def __init__(
        self,
        url: str,
        timezone: ZoneInfo,
        *,
        token: str = "",
        timeout: float = 5.0,
        retry: Retry | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook URL {url!r} is not http:// or https://")
        super().__init__(timezone, retry=retry)
        self._url = url
        self._token = token
        self._timeout = timeout

    def _send(self, notice: EmergencyNotice, payload: dict[str, object]) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": f"pbxguard/{__version__}",
            "Idempotency-Key": notice.key,
        }
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        # The scheme is checked in __init__: http or https only, never file: or others.
        request = urllib.request.Request(self._url, data=body, headers=headers, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:  # noqa: S310
                status = response.status
        except urllib.error.HTTPError as error:
            raise DeliveryError(f"HTTP {error.code} {error.reason}") from error
        except (OSError, http.client.HTTPException, ValueError) as error:
            raise DeliveryError(str(error) or type(error).__name__) from error
        if not 200 <= status < 300:
            raise DeliveryError(f"HTTP {status}")


class MailDesk(QueuedDesk):
    """E-mail every notice to the security desk over SMTP."""

    kind = "mail"

    def __init__(
        self,
        host: str,
        timezone: ZoneInfo,
        *,
        port: int = 25,
        sender: str,
        to: list[str],
        username: str = "",
        password: str = "",
        security: str = "none",
        timeout: float = 10.0,
        retry: Retry | None = None,
    ) -> None:
        if not to:
            raise ValueError("an e-mail desk needs at least one address")
        super().__init__(timezone, retry=retry)
        self._host = host
        self._port = port
        self._sender = sender
        self._to = list(to)
        self._username = username
        self._password = password
        self._security = security
        self._timeout = timeout

    def message(self, notice: EmergencyNotice, payload: dict[str, object]) -> EmailMessage:
        """Return the e-mail of a notice."""
        mail = EmailMessage()
        mail["From"] = self._sender
        mail["To"] = ", ".join(self._to)
        mail["Subject"] = (
            f"紧急呼叫 Emergency call: {notice.extension} → {notice.number}"
            f" ({payload['local_time']})"
        )
        mail["Date"] = formatdate(localtime=False)
        mail["Message-ID"] = make_msgid(domain="pbxguard")
        lines = [
            str(payload["message_zh"]),
            str(payload["message_en"]),
            "",
            f"分机 extension: {notice.extension}",
            f"人员 person: {notice.person_name or '-'} ({notice.person_id or '-'})",
            f"部门 department: {notice.department or '-'}",
            f"位置 location: {notice.location or '-'}",
            f"号码 number: {notice.number}",
            f"时间 time: {payload['local_time']} ({payload['timezone']})",
            f"站点 site: {notice.site}",
            f"Linkedid: {notice.call.linkedid}",
            f"编号 id: {notice.key}",
        ]
        mail.set_content("\n".join(lines) + "\n", charset="utf-8")
        return mail

    def _send(self, notice: EmergencyNotice, payload: dict[str, object]) -> None:
        mail = self.message(notice, payload)
        try:
            with self._connect() as smtp:
                if self._security == "starttls":
                    smtp.starttls(context=ssl.create_default_context())
                if self._username:
                    smtp.login(self._username, self._password)
                refused = smtp.send_message(mail)
        except (smtplib.SMTPException, OSError) as error:
            raise DeliveryError(str(error) or type(error).__name__) from error
        if refused:
            log.warning("emergency.mail_partly_refused", notice=notice.key, refused=list(refused))

    def _connect(self) -> smtplib.SMTP:
        if self._security == "tls":
            context: Any = ssl.create_default_context()
            return smtplib.SMTP_SSL(self._host, self._port, timeout=self._timeout, context=context)
        return smtplib.SMTP(self._host, self._port, timeout=self._timeout)
