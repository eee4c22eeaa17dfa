"""The sd_notify client against a real unix datagram socket the test binds, as systemd does."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from pbxguard.adapters.systemd import SystemdNotifier


class Listener:
    """The receiving end of $NOTIFY_SOCKET: what systemd's manager would read."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name  # the value $NOTIFY_SOCKET takes

    def receive(self, timeout: float = 5.0) -> bytes:
        """Return the next datagram, waiting for it at most ``timeout`` seconds."""
        self.sock.settimeout(timeout)
        return self.sock.recv(4096)

    def nothing_waiting(self) -> bool:
        """Tell whether no datagram is queued (without waiting)."""
        try:
            self.sock.recv(4096, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        return False


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: unix socket paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="sd-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def path_listener(short_dir: Path) -> Iterator[Listener]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = short_dir / "notify"
    sock.bind(str(path))
    yield Listener(sock, str(path))
    sock.close()


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"pbxguard-test-{secrets.token_hex(8)}"
    sock.bind(b"\0" + name.encode())
    yield Listener(sock, "@" + name)
    sock.close()


def notifier_for(notify_socket: str | None, **extra: str) -> SystemdNotifier:
    env = {"NOTIFY_SOCKET": notify_socket} if notify_socket is not None else {}
    return SystemdNotifier.from_environment({**env, **extra})


def test_each_message_reaches_a_socket_bound_to_a_path(path_listener: Listener) -> None:
    notifier = notifier_for(path_listener.name)
    try:
        assert notifier.enabled
        assert notifier.ready("FastAGI listening; AMI connecting")
        assert path_listener.receive() == b"READY=1\nSTATUS=FastAGI listening; AMI connecting"
        assert notifier.status("AMI logged in")
        assert path_listener.receive() == b"STATUS=AMI logged in"
        assert notifier.watchdog()
        assert path_listener.receive() == b"WATCHDOG=1"
        assert notifier.stopping()
        assert path_listener.receive() == b"STOPPING=1"
        assert notifier.ready()
        assert path_listener.receive() == b"READY=1"
    finally:
        notifier.close()
    assert notifier.failures == 0


def test_an_abstract_socket_name_starting_with_at_is_used(abstract_listener: Listener) -> None:
    notifier = notifier_for(abstract_listener.name)
    try:
        assert notifier.ready("状态 up")
        assert abstract_listener.receive() == "READY=1\nSTATUS=状态 up".encode()
        assert notifier.stopping("stopping: SIGTERM")
        assert abstract_listener.receive() == b"STOPPING=1\nSTATUS=stopping: SIGTERM"
    finally:
        notifier.close()


def test_a_status_cannot_smuggle_in_another_assignment(path_listener: Listener) -> None:
    notifier = notifier_for(path_listener.name)
    try:
        assert notifier.status("broken\nREADY=1\r\nWATCHDOG=1")
        assert path_listener.receive() == b"STATUS=broken READY=1 WATCHDOG=1"
    finally:
        notifier.close()


def test_without_notify_socket_every_call_does_nothing(path_listener: Listener) -> None:
    notifier = notifier_for(None, WATCHDOG_USEC="10000000")
    with structlog.testing.capture_logs() as logs:
        assert not notifier.enabled
        assert notifier.watchdog_interval is None
        assert notifier.ready("up") is False
        assert notifier.status("x") is False
        assert notifier.watchdog() is False
        assert notifier.stopping() is False
        notifier.close()
    assert logs == []
    assert notifier.failures == 0
    assert path_listener.nothing_waiting()


def test_an_address_that_is_not_a_unix_socket_is_refused_with_a_warning() -> None:
    with structlog.testing.capture_logs() as logs:
        notifier = notifier_for("vsock:2:4242", WATCHDOG_USEC="10000000")
        assert not notifier.enabled
        assert notifier.ready() is False
        assert notifier.watchdog_interval is None
    assert [entry["event"] for entry in logs] == ["systemd.notify_socket_unsupported"]


@pytest.mark.parametrize(
    ("usec", "pid", "interval"),
    [
        ("10000000", None, 5.0),  # WatchdogSec=10 -> ping every 5 s
        ("3000000", "own", 1.5),
        ("10000000", "other", None),  # the watchdog belongs to another process
        (None, None, None),
    ],
)
def test_the_ping_interval_is_half_the_watchdog_timeout(
    path_listener: Listener, usec: str | None, pid: str | None, interval: float | None
) -> None:
    extra: dict[str, str] = {}
    if usec is not None:
        extra["WATCHDOG_USEC"] = usec
    if pid == "own":
        extra["WATCHDOG_PID"] = str(os.getpid())
    elif pid == "other":
        extra["WATCHDOG_PID"] = str(os.getpid() + 1)
    assert notifier_for(path_listener.name, **extra).watchdog_interval == interval


@pytest.mark.parametrize("usec", ["0", "-5", "ten seconds"])
def test_a_bad_watchdog_timeout_means_no_watchdog_and_one_warning(
    path_listener: Listener, usec: str
) -> None:
    with structlog.testing.capture_logs() as logs:
        notifier = notifier_for(path_listener.name, WATCHDOG_USEC=usec)
    assert notifier.watchdog_interval is None
    assert [(e["event"], e["watchdog_usec"]) for e in logs] == [
        ("systemd.watchdog_usec_invalid", usec)
    ]


def test_no_listener_is_logged_once_never_raises_and_recovers(short_dir: Path) -> None:
    path = short_dir / "notify"
    notifier = notifier_for(str(path))
    with structlog.testing.capture_logs() as logs:
        assert notifier.ready("up") is False
        assert notifier.watchdog() is False
        assert notifier.watchdog() is False
    assert notifier.failures == 3
    assert [entry["event"] for entry in logs] == ["systemd.notify_failed"]
    assert logs[0]["notify_socket"] == str(path)
    assert logs[0]["sent"] == "READY=1"

    # systemd comes back (a daemon-reexec binds the socket again): the next ping gets through.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(str(path))
        assert notifier.watchdog() is True
        sock.settimeout(5)
        assert sock.recv(4096) == b"WATCHDOG=1"
    finally:
        sock.close()
        notifier.close()


def test_a_listener_that_stops_reading_never_blocks_the_sender(path_listener: Listener) -> None:
    """Past the receiver's queue limit, sends fail at once: they never block the event loop."""
    notifier = notifier_for(path_listener.name)
    with structlog.testing.capture_logs() as logs:
        results = [notifier.watchdog() for _ in range(5000)]
    notifier.close()
    assert results[0] is True
    assert False in results  # the queue filled up and the sends were dropped, not waited on
    assert notifier.failures == results.count(False)
    assert [entry["event"] for entry in logs] == ["systemd.notify_failed"]
    # What was queued is intact.
    assert path_listener.receive() == b"WATCHDOG=1"


async def test_keep_alive_pings_at_the_interval_until_cancelled(path_listener: Listener) -> None:
    notifier = notifier_for(path_listener.name, WATCHDOG_USEC="100000")
    assert notifier.watchdog_interval == 0.05
    loop = asyncio.get_running_loop()
    path_listener.sock.setblocking(False)
    task = asyncio.create_task(notifier.keep_alive())
    try:
        async with asyncio.timeout(10):
            pings = [await loop.sock_recv(path_listener.sock, 4096) for _ in range(3)]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        notifier.close()
    assert pings == [b"WATCHDOG=1"] * 3


async def test_keep_alive_returns_at_once_without_a_watchdog(path_listener: Listener) -> None:
    notifier = notifier_for(path_listener.name)
    async with asyncio.timeout(5):
        await notifier.keep_alive()
    assert path_listener.nothing_waiting()
