"""The tests' own AMI session: every event the PBX sends, kept for assertions.

It logs in with the tier's account (read ``all``) straight to Asterisk, not through the proxy,
so it keeps seeing the PBX while pbxguard is stopped, stalled or cut off. Tests use it to
assert on what the PBX itself did (which dialplan applications ran on a channel, which
``DialBegin`` it reported) and to compare the real event stream with the simulator's.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Iterable
from typing import TypeVar

from pbxguard.protocol.ami import NEED_DATA, AmiMessage, AmiParser, encode_action

WAIT = 15.0
T = TypeVar("T")


class AmiMonitor:
    """A logged-in AMI session that records events and answers actions."""

    def __init__(self, host: str, port: int, username: str, secret: str) -> None:
        self._address = (host, port)
        self._credentials = (username, secret)
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._changed = asyncio.Event()
        self.events: list[AmiMessage] = []
        """Every event received, in order."""
        self.responses: list[AmiMessage] = []
        """Every response received, in order."""
        self.raw = bytearray()
        """The bytes received, as Asterisk sent them."""

    async def start(self) -> None:
        """Connect and log in with ``Events: on``."""
        reader, self._writer = await asyncio.open_connection(*self._address)
        self._task = asyncio.create_task(self._read(reader))
        user, secret = self._credentials
        response = await self.action("Login", [("Username", user), ("Secret", secret)])
        assert response.response == "Success", response

    async def close(self) -> None:
        """Log off and close."""
        if self._writer is not None:
            with contextlib.suppress(ConnectionError, OSError):
                self._writer.write(encode_action("Logoff", (), action_id="logoff"))
            self._writer.transport.abort()
        if self._task is not None:
            with contextlib.suppress(BaseException):
                await self._task

    async def _read(self, reader: asyncio.StreamReader) -> None:
        parser = AmiParser()
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                self.raw.extend(data)
                parser.receive_data(data)
                while (message := parser.next_message()) is not NEED_DATA:
                    if not isinstance(message, AmiMessage):
                        continue
                    if message.event is not None:
                        self.events.append(message)
                    elif message.response is not None:
                        self.responses.append(message)
                self._changed.set()
                self._changed = asyncio.Event()
        self._changed.set()

    async def wait_until(self, probe: Callable[[], T | None], within: float = WAIT) -> T:
        """Wait until ``probe()`` returns something other than None; return it."""
        async with asyncio.timeout(within):
            while (found := probe()) is None:
                if self._task is not None and self._task.done():
                    raise ConnectionError("the tests' AMI session is gone")
                changed = self._changed
                await changed.wait()
            return found

    def _send(self, action: str, fields: Iterable[tuple[str, str]]) -> str:
        assert self._writer is not None
        action_id = f"tier-{next(self._ids)}"
        self._writer.write(encode_action(action, list(fields), action_id=action_id))
        return action_id

    async def action(self, action: str, fields: Iterable[tuple[str, str]] = ()) -> AmiMessage:
        """Send an action and return its response."""
        action_id = self._send(action, fields)
        return await self.wait_until(
            lambda: next((r for r in self.responses if r.action_id == action_id), None)
        )

    async def list_action(
        self, action: str, fields: Iterable[tuple[str, str]] = ()
    ) -> tuple[AmiMessage, list[AmiMessage]]:
        """Send a list action; return its response and every event of the list, ``Complete`` last.

        An ``Error`` response (e.g. PJSIPShowContacts with no contact) comes with no events.
        """
        action_id = self._send(action, fields)
        response = await self.wait_until(
            lambda: next((r for r in self.responses if r.action_id == action_id), None)
        )
        if response.response != "Success":
            return response, []

        def complete() -> list[AmiMessage] | None:
            items = [e for e in self.events if e.action_id == action_id]
            if items and (items[-1].get("EventList") or "").lower() == "complete":
                return items
            return None

        return response, await self.wait_until(complete)

    def since(self, mark: int) -> list[AmiMessage]:
        """The events received after the first ``mark`` (see :attr:`mark`)."""
        return self.events[mark:]

    @property
    def mark(self) -> int:
        """A position in the event list, to look only at what comes after it."""
        return len(self.events)

    def channel_of(self, extension: str, number: str, *, since: int = 0) -> str | None:
        """The channel on which phone ``extension`` dialled ``number`` (after ``since``)."""
        for event in self.events[since:]:
            channel = event.get("Channel") or ""
            if (
                event.event == "Newchannel"
                and channel.startswith(f"PJSIP/{extension}-")
                and event.get("Exten") == number
            ):
                return channel
        return None

    def applications(self, channel: str, *, since: int = 0) -> list[tuple[str, str, str]]:
        """(context, exten, application) of every dialplan step one channel ran."""
        return [
            (e.get("Context") or "", e.get("Exten") or "", e.get("Application") or "")
            for e in self.events[since:]
            if e.event == "Newexten" and e.get("Channel") == channel
        ]
