"""Captured structlog entries, with a way to wait until some have been written."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog
from structlog.testing import capture_logs


class LogWatch:
    """Captured log entries, with a way to wait until some have been written."""

    def __init__(self) -> None:
        self.entries: list[MutableMapping[str, Any]] = []
        self._changed = asyncio.Event()

    def notify(
        self, _logger: object, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        self._changed.set()
        return event_dict

    def named(self, event: str) -> list[MutableMapping[str, Any]]:
        return [entry for entry in self.entries if entry["event"] == event]

    def at_least(self, level: str) -> list[MutableMapping[str, Any]]:
        """Return the entries logged at ``level`` or above (``info``, ``warning``, ``error``)."""
        order = ["debug", "info", "warning", "error", "critical"]
        return [e for e in self.entries if order.index(e["log_level"]) >= order.index(level)]

    async def wait_for(self, event: str, count: int = 1) -> list[MutableMapping[str, Any]]:
        while len(found := self.named(event)) < count:
            self._changed.clear()
            await self._changed.wait()
        return found


@contextmanager
def watching_logs() -> Iterator[LogWatch]:
    """Capture every log entry, context variables included, while the block runs."""
    watch = LogWatch()
    with capture_logs(
        processors=[structlog.contextvars.merge_contextvars, watch.notify]
    ) as entries:
        watch.entries = entries
        yield watch
