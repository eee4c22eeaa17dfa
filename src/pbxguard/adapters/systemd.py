"""Tell systemd how the service is doing: the ``sd_notify`` protocol, without libsystemd.

A unit with ``Type=notify`` waits for ``READY=1`` on the unix datagram socket systemd names in
``$NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract socket); with ``WatchdogSec=`` it
also expects ``WATCHDOG=1`` more often than ``$WATCHDOG_USEC`` microseconds and restarts the
service when the pings stop, which is what happens when the event loop is blocked. Protocol:
https://www.freedesktop.org/software/systemd/man/latest/sd_notify.html. Outside systemd (a
terminal, a container, the tests) ``$NOTIFY_SOCKET`` is unset and every call does nothing.

API::

    notifier = SystemdNotifier.from_environment()   # or from_environment(a_mapping)
    notifier.enabled            # True when $NOTIFY_SOCKET names a socket to send to
    notifier.watchdog_interval  # seconds between pings (half of $WATCHDOG_USEC), or None
    notifier.ready("…")         # READY=1 (and STATUS=… when given)
    notifier.status("…")        # STATUS=…: one line shown by `systemctl status`
    notifier.watchdog()         # WATCHDOG=1
    notifier.stopping("…")      # STOPPING=1 (and STATUS=…)
    await notifier.keep_alive() # WATCHDOG=1 every watchdog_interval until cancelled;
                                # returns at once when there is no watchdog
    notifier.close()

Each send returns True when the datagram was handed to systemd and False otherwise. Nothing
here raises: a socket error is logged once (``systemd.notify_failed``), counted in
`SystemdNotifier.failures`, and the next call tries again on a new socket. Sends never block
the event loop: the socket is non-blocking, and a datagram systemd cannot take at once is
dropped and counted (the next watchdog ping follows within the interval anyway).

Wiring it into the daemon, in the composition root: ``ready()`` once the ledger is open and
the FastAGI server listens, without waiting for AMI (a PBX that is down must not fail the
start: the AMI client keeps retrying, and ``status()`` says so); ``keep_alive()`` as one more
task of the supervising task group, so a blocked loop stops the pings; ``stopping()`` first
thing on SIGTERM. The unit (``deploy/pbxguard.service``) sets ``NotifyAccess=main``: only the
daemon's own process may send.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping

import structlog

__all__ = ["SystemdNotifier"]

log = structlog.get_logger(__name__)


def _socket_address(value: str) -> str | bytes | None:
    """Return the address ``$NOTIFY_SOCKET`` names, or None when it is not a unix socket."""
    if value.startswith("@") and len(value) > 1:
        # An abstract socket: a leading NUL byte instead of the @ (see unix(7)).
        return b"\0" + value[1:].encode("utf-8", "surrogateescape")
    if value.startswith("/"):
        return value
    return None


def _one_line(text: str) -> str:
    # A newline would start a new assignment: "x\nREADY=1" must stay one STATUS line.
    return " ".join(text.splitlines()) if text else ""


class SystemdNotifier:
    """Send ``READY=1``, ``STATUS=…``, ``WATCHDOG=1`` and ``STOPPING=1`` to systemd."""

    def __init__(
        self, notify_socket: str | None, *, watchdog_usec: str | None, watchdog_pid: str | None
    ) -> None:
        """Use the values of ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID``."""
        self._socket: socket.socket | None = None
        self._notify_socket = notify_socket or ""
        self._address: str | bytes | None = None
        self._logged_failure = False
        self.failures = 0
        if notify_socket:
            self._address = _socket_address(notify_socket)
            if self._address is None:
                log.warning(
                    "systemd.notify_socket_unsupported",
                    notify_socket=notify_socket,
                    hint="only unix socket paths and @abstract names are supported",
                )
        self._watchdog_interval = self._interval(watchdog_usec, watchdog_pid)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> SystemdNotifier:
        """Return a notifier for the process environment (or ``environ``)."""
        env = os.environ if environ is None else environ
        return cls(
            env.get("NOTIFY_SOCKET"),
            watchdog_usec=env.get("WATCHDOG_USEC"),
            watchdog_pid=env.get("WATCHDOG_PID"),
        )

    def _interval(self, usec: str | None, pid: str | None) -> float | None:
        if self._address is None or not usec:
            return None
        if pid and pid.strip() != str(os.getpid()):
            # systemd set the watchdog for another process (we were started by it).
            return None
        try:
            microseconds = int(usec)
        except ValueError:
            microseconds = 0
        if microseconds <= 0:
            log.warning("systemd.watchdog_usec_invalid", watchdog_usec=usec)
            return None
        # Half the timeout, as sd_watchdog_enabled(3) advises: one late ping is not fatal.
        return microseconds / 2 / 1_000_000

    @property
    def enabled(self) -> bool:
        """Tell whether ``$NOTIFY_SOCKET`` names a socket to send to."""
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Return the seconds between watchdog pings, or None when there is no watchdog."""
        return self._watchdog_interval

    def ready(self, status: str | None = None) -> bool:
        """Say the service is up (``READY=1``), with an optional status line."""
        fields = ["READY=1"]
        if status is not None:
            fields.append(f"STATUS={_one_line(status)}")
        return self._send(fields)

    def status(self, text: str) -> bool:
        """Set the one-line status ``systemctl status`` shows."""
        return self._send([f"STATUS={_one_line(text)}"])

    def watchdog(self) -> bool:
        """Ping the watchdog (``WATCHDOG=1``)."""
        return self._send(["WATCHDOG=1"])

    def stopping(self, status: str | None = None) -> bool:
        """Say the service is shutting down (``STOPPING=1``), with an optional status line."""
        fields = ["STOPPING=1"]
        if status is not None:
            fields.append(f"STATUS={_one_line(status)}")
        return self._send(fields)

    async def keep_alive(self) -> None:
        """Ping the watchdog every `watchdog_interval` until cancelled; return if there is none."""
        interval = self._watchdog_interval
        if interval is None:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(interval)

    def close(self) -> None:
        """Close the socket (a later send opens a new one)."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _send(self, fields: list[str]) -> bool:
        if self._address is None:
            return False
        data = "\n".join(fields).encode("utf-8", "replace")
        try:
            if self._socket is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.setblocking(False)
                self._socket = sock
            self._socket.sendto(data, self._address)
        except OSError as exc:
            self.failures += 1
            self.close()
            if not self._logged_failure:
                self._logged_failure = True
                log.warning(
                    "systemd.notify_failed",
                    error=str(exc),
                    notify_socket=self._notify_socket,
                    sent=fields[0],
                )
            return False
        return True
