"""A stand-in server on a free port of 127.0.0.1, open for the length of an ``async with``."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

HOST = "127.0.0.1"


class LoopbackServer:
    """Listen on loopback on entering, stop listening on leaving; subclasses say how to listen."""

    _server: asyncio.Server | None = None

    async def _listen(self) -> asyncio.Server:
        """Start the server on ``HOST``, port 0."""
        raise NotImplementedError

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def __aenter__(self) -> Self:
        self._server = await self._listen()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
