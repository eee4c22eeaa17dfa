"""Serve the console with uvicorn on the daemon's event loop (or on a loop of its own).

The socket is bound before the daemon's task group starts, so a busy port is one clear error.
uvicorn's own signal handling is switched off: the daemon owns SIGTERM and SIGINT and stops the
console with the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import structlog
import uvicorn

from pbxguard.errors import ConfigError

log = structlog.get_logger(__name__)

#: How long a stop waits for the requests under way.
CLOSE_WAIT = 5.0


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ConsoleServer:
    """The console's HTTP server: bind, serve until closed."""

    def __init__(self, app: Any, *, host: str, port: int, trusted_proxies: str) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._trusted = trusted_proxies
        self._socket: socket.socket | None = None
        self._server: _Server | None = None
        self._done = asyncio.Event()
        self.address: tuple[str, int] | None = None

    def bind(self) -> tuple[str, int]:
        """Bind the listening socket; return the address (``port`` 0 picks a free one).

        Raises:
            ConfigError: the address is taken or not ours.
        """
        if self.address is not None:
            return self.address
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it: without it a response written in two pieces waits
        # for the client's delayed ACK (40 ms a request on Linux).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError as error:
            sock.close()
            raise ConfigError(
                f"控制台端口不可用 — the console cannot listen on {self._host}:{self._port}: "
                f"{error.strerror or error}; set [console] port"
            ) from error
        sock.listen(128)
        sock.setblocking(False)
        self._socket = sock
        host, port = sock.getsockname()[:2]
        self.address = (str(host), int(port))
        return self.address

    async def serve(self) -> None:
        """Serve until `close` (or cancellation)."""
        self.bind()
        assert self._socket is not None
        config = uvicorn.Config(
            self._app,
            log_config=None,
            access_log=False,
            lifespan="off",
            proxy_headers=True,
            forwarded_allow_ips=self._trusted,
            server_header=False,
            timeout_graceful_shutdown=3,
        )
        self._server = _Server(config)
        log.info("console.listening", host=self.address[0], port=self.address[1])  # type: ignore[index]
        try:
            await self._server.serve(sockets=[self._socket])
        finally:
            self._server.should_exit = True
            self._socket.close()
            self._done.set()

    async def close(self) -> None:
        """Stop accepting, and wait (a while) for the requests under way to finish."""
        if self._server is None:
            if self._socket is not None:
                self._socket.close()
            return
        self._server.should_exit = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._done.wait(), CLOSE_WAIT)
