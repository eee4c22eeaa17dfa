"""A FastAGI client that behaves like Asterisk's res_agi, for driving pbxguard's server in tests.

It sends the environment exactly as res_agi writes it (``agi_network: yes``, then
``agi_network_script``, then ``agi_request`` … ``agi_threadid``, then ``agi_arg_N``, LF lines and a
blank line), then answers each command as Asterisk 22 does, and records what was set. It does
not use pbxguard's codec, so the two check each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

ASTERISK_VERSION = "22.5.2"
DEFAULT_UNIQUEID = "1795397584.0"
# Asterisk waits for a FastAGI server forever; a test must not. Wrap a call in
# asyncio.timeout() for a tighter bound.
SAFETY_TIMEOUT = 10.0

# Commands res_agi still runs after the channel hung up (their "dead" flag); others get 511.
_DEAD_CHANNEL_COMMANDS = frozenset({"SET VARIABLE", "GET VARIABLE", "VERBOSE", "NOOP", "HANGUP"})
_VERBS = ("SET VARIABLE", "GET VARIABLE", "GET FULL VARIABLE", "VERBOSE", "NOOP", "HANGUP")
_USAGE = {
    "SET VARIABLE": "Sets a variable to the current channel.\nExample return code: 200 result=1",
    "GET VARIABLE": "Returns 0 if variablename is not set. Returns 1 if variablename is set\n"
    "and returns the variable in parentheses.\n"
    "Example return code: 200 result=1 (testvariable)",
    "VERBOSE": "Sends message to the console via verbose message system. level is the\n"
    "verbose level (1-4).\n"
    "Always returns 1",
}


@dataclass(slots=True)
class AgiResult:
    """What one request did to the emulated channel.

    Attributes:
        variables: channel variables set by ``SET VARIABLE``, last value wins.
        commands: every command line received, in order.
        verbose: the messages of ``VERBOSE`` commands.
        agistatus: what Asterisk would set: ``SUCCESS`` (the server closed),
            ``FAILURE`` (it sent ``failure``) or ``HANGUP`` (the channel hung up).
        replies: every line this client sent after the environment, in order.
    """

    variables: dict[str, str] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    verbose: list[str] = field(default_factory=list)
    agistatus: str = "SUCCESS"
    replies: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str | None:
        """Return ``PBXGUARD_VERDICT`` as the dialplan would read it."""
        return self.variables.get("PBXGUARD_VERDICT")


def environment_bytes(
    *,
    host: str = "127.0.0.1",
    port: int = 4573,
    script: str = "authorize",
    callerid: str | None = "2001",
    calleridname: str | None = None,
    extension: str = "00441632960123",
    context: str = "from-internal",
    args: Sequence[str] | None = None,
    uniqueid: str = DEFAULT_UNIQUEID,
    channel: str | None = None,
    accountcode: str = "",
    language: str = "en",
    priority: int = 5,
) -> bytes:
    """Return the environment res_agi sends for ``AGI(agi://host:port/script,args…)``.

    ``args`` defaults to ``(callerid, extension)``, what the sample dialplan passes. A caller
    number or name of ``None`` is sent as ``unknown``, as res_agi does.
    """
    if args is None:
        args = (callerid or "", extension)
    number = callerid if callerid is not None else "unknown"
    if calleridname is None:
        calleridname = f"Staff {callerid}" if callerid is not None else "unknown"
    lines = [
        "agi_network: yes",
        *([f"agi_network_script: {script}"] if script else []),
        f"agi_request: agi://{host}:{port}/{script}",
        f"agi_channel: {channel or f'PJSIP/{number}-00000007'}",
        f"agi_language: {language}",
        "agi_type: PJSIP",
        f"agi_uniqueid: {uniqueid}",
        f"agi_version: {ASTERISK_VERSION}",
        f"agi_callerid: {number}",
        f"agi_calleridname: {calleridname}",
        "agi_callingpres: 0",
        "agi_callingani2: 0",
        "agi_callington: 0",
        "agi_callingtns: 0",
        f"agi_dnid: {extension}",
        "agi_rdnis: unknown",
        f"agi_context: {context}",
        f"agi_extension: {extension}",
        f"agi_priority: {priority}",
        "agi_enhanced: 0.0",
        f"agi_accountcode: {accountcode}",
        "agi_threadid: 140536227473088",
        *(f"agi_arg_{n}: {value}" for n, value in enumerate(args, start=1)),
    ]
    return ("\n".join(lines) + "\n\n").encode()


def parse_agi_args(line: str) -> list[str]:
    """Split a command line into words exactly as res_agi's ``parse_args`` does.

    Double quotes group words and vanish; a backslash makes the next character literal
    (inside or outside quotes); spaces and tabs outside quotes separate words.
    """
    words: list[list[str]] = []
    quoted = escaped = False
    between_words = True
    for char in line:
        if char == '"' and not escaped:
            quoted = not quoted
            if quoted and between_words:
                words.append([])
                between_words = False
            continue
        if char in " \t" and not quoted and not escaped:
            between_words = True
            continue
        if char == "\\" and not escaped:
            escaped = True
            continue
        if between_words:
            words.append([])
            between_words = False
        words[-1].append(char)
        escaped = False
    return ["".join(word) for word in words]


def refusal(code: int, verb: str) -> str:
    """Return the exact text res_agi sends when it refuses ``verb`` with ``code``."""
    if code == 510:
        return "510 Invalid or unknown command\n"
    if code == 511:
        return "511 Command Not Permitted on a dead channel or intercept routine\n"
    if code == 520:
        # The usage text comes from the XML docs without a final LF, so the closing line
        # arrives glued to it, as a real Asterisk sends it.
        usage = _USAGE.get(verb, "No usage available.")
        return (
            f"520-Invalid command syntax.  Proper usage follows:\n{usage}520 End of proper usage.\n"
        )
    raise ValueError(f"res_agi never answers {code}")


class _EmulatedChannel:
    def __init__(
        self,
        variables: Mapping[str, str],
        refuse: Mapping[str, int],
        result: AgiResult,
    ) -> None:
        self.variables = dict(variables)
        self.refuse = {verb.upper(): code for verb, code in refuse.items()}
        self.result = result
        self.dead = False

    def answer(self, line: str) -> str:
        words = parse_agi_args(line)
        verb = _verb(words)
        if verb is None:
            return refusal(510, "")
        if verb in self.refuse:
            return refusal(self.refuse[verb], verb)
        if self.dead and verb not in _DEAD_CHANNEL_COMMANDS:
            return refusal(511, verb)
        argv = words[len(verb.split()) :]
        if verb == "SET VARIABLE":
            if len(argv) != 2:
                return refusal(520, verb)
            self.variables[argv[0]] = argv[1]
            self.result.variables[argv[0]] = argv[1]
            return "200 result=1\n"
        if verb in {"GET VARIABLE", "GET FULL VARIABLE"}:
            if len(argv) != 1:
                return refusal(520, verb)
            value = self.variables.get(argv[0])
            return "200 result=0\n" if value is None else f"200 result=1 ({value})\n"
        if verb == "VERBOSE":
            if not 1 <= len(argv) <= 2:
                return refusal(520, verb)
            self.result.verbose.append(argv[0])
            return "200 result=1\n"
        if verb == "HANGUP":
            self.dead = True
            return "200 result=1\n"
        return "200 result=0\n"


def _verb(words: list[str]) -> str | None:
    upper = [word.upper() for word in words]
    for verb in sorted(_VERBS, key=len, reverse=True):
        parts = verb.split()
        if upper[: len(parts)] == parts:
            return verb
    return None


async def agi_request(
    host: str,
    port: int,
    *,
    script: str = "authorize",
    callerid: str | None = "2001",
    calleridname: str | None = None,
    extension: str = "00441632960123",
    context: str = "from-internal",
    args: Sequence[str] | None = None,
    uniqueid: str = DEFAULT_UNIQUEID,
    channel: str | None = None,
    channel_variables: Mapping[str, str] | None = None,
    refuse: Mapping[str, int] | None = None,
    hangup_after: int | None = None,
    before_answering: Callable[[str], Awaitable[None]] | None = None,
    safety_timeout: float = SAFETY_TIMEOUT,
) -> AgiResult:
    """Run one FastAGI request against ``host:port`` the way Asterisk would, and report it.

    Args:
        host: the server's address (loopback in tests).
        port: the server's port.
        script: the route, as in ``agi://host:port/<script>``.
        callerid: the caller's number, ``None`` for Asterisk's ``unknown``.
        calleridname: the caller's name; defaults to ``Staff <callerid>``.
        extension: the dialled number, sent as ``agi_extension`` and ``agi_dnid``.
        context: ``agi_context``.
        args: the ``agi_arg_N`` values; defaults to ``(callerid, extension)``.
        uniqueid: ``agi_uniqueid``.
        channel: ``agi_channel``; defaults to ``PJSIP/<callerid>-00000007``.
        channel_variables: variables the channel already has, for ``GET VARIABLE``.
        refuse: commands to refuse, by verb (``{"SET VARIABLE": 520}``): 510, 511 or 520.
        hangup_after: send ``HANGUP`` after answering this many commands (0: right after the
            environment), then carry on as a dead channel does.
        before_answering: awaited with each command line before it is answered, to hold a
            request in flight (an Asterisk that is slow to answer).
        safety_timeout: give up after this many seconds.

    Returns:
        What the server did to the channel.

    Raises:
        TimeoutError: the server neither closed nor failed within ``safety_timeout``.
    """
    result = AgiResult()
    emulated = _EmulatedChannel(channel_variables or {}, refuse or {}, result)
    environment = environment_bytes(
        host=host,
        port=port,
        script=script,
        callerid=callerid,
        calleridname=calleridname,
        extension=extension,
        context=context,
        args=args,
        uniqueid=uniqueid,
        channel=channel,
    )
    async with asyncio.timeout(safety_timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            await _converse(
                reader,
                writer,
                environment,
                emulated,
                hangup_after=hangup_after,
                before_answering=before_answering,
            )
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return result


async def _converse(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    environment: bytes,
    emulated: _EmulatedChannel,
    *,
    hangup_after: int | None,
    before_answering: Callable[[str], Awaitable[None]] | None,
) -> None:
    result = emulated.result

    def send(text: str) -> None:
        result.replies.append(text)
        writer.write(text.encode())

    # res_agi writes one line per write() call.
    for env_line in environment.splitlines(keepends=True):
        writer.write(env_line)
    if hangup_after == 0:
        send("HANGUP\n")
        emulated.dead = True
        result.agistatus = "HANGUP"
    await writer.drain()
    answered = 0
    while True:
        try:
            raw = await reader.readline()
        except ConnectionResetError:
            return
        if not raw.endswith(b"\n"):
            return
        line = raw[:-1].decode()
        if line.lower().startswith("failure"):
            result.agistatus = "FAILURE"
            return
        result.commands.append(line)
        if before_answering is not None:
            await before_answering(line)
        send(emulated.answer(line))
        answered += 1
        if emulated.dead and result.agistatus != "HANGUP":
            send("HANGUP\n")
            result.agistatus = "HANGUP"
        elif hangup_after is not None and answered == hangup_after and not emulated.dead:
            send("HANGUP\n")
            emulated.dead = True
            result.agistatus = "HANGUP"
        try:
            await writer.drain()
        except ConnectionResetError:
            return


async def abandon_request(
    host: str, port: int, *, after_bytes: int, wait_for_answer: bool = True
) -> bytes:
    """Send the first ``after_bytes`` of an environment, then stop, like a client that died.

    With ``wait_for_answer`` the client shuts down its sending side and returns what the server
    sent before it closed; otherwise it closes at once and returns ``b""``. The server sees the
    end of the stream either way.
    """
    data = environment_bytes(host=host, port=port)[:after_bytes]
    if wait_for_answer:
        return await raw_exchange(host, port, data)
    async with asyncio.timeout(SAFETY_TIMEOUT):
        _, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(data)
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return b""


async def silent_request(host: str, port: int) -> bytes:
    """Connect, send nothing, and return what the server sent before it closed."""
    async with asyncio.timeout(SAFETY_TIMEOUT):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            return await reader.read()
        except ConnectionResetError:
            return b""
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def raw_exchange(host: str, port: int, data: bytes) -> bytes:
    """Send ``data`` as is, shut down the sending side, and return what the server sent."""
    async with asyncio.timeout(SAFETY_TIMEOUT):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(data)
            writer.write_eof()
            await writer.drain()
            return await reader.read()
        except ConnectionResetError:
            return b""
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class HeldConnection:
    """A client that sends some bytes (perhaps none) and then holds still, as a stuck one does."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, host: str, port: int, data: bytes = b"") -> HeldConnection:
        """Connect and send ``data``; the connection then stays open until `close`."""
        async with asyncio.timeout(SAFETY_TIMEOUT):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(data)
            await writer.drain()
        return cls(reader, writer)

    async def answer(self) -> bytes:
        """Return what the server sent before it closed the connection."""
        async with asyncio.timeout(SAFETY_TIMEOUT):
            try:
                return await self._reader.read()
            except ConnectionResetError:
                return b""

    async def close(self) -> None:
        """Close the client's end."""
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


async def blunt_request(host: str, port: int, environment: bytes | None = None) -> bytes:
    """Send an environment the way res_agi's C code does, and return what the server sent.

    res_agi writes each environment line with a plain ``write()`` and ignores a failure, then
    reads: a server that answered and closed before reading the environment (and so reset the
    connection) is still heard. A stream client would lose that answer to the reset.
    """
    loop = asyncio.get_running_loop()
    data = environment if environment is not None else environment_bytes(host=host, port=port)
    received = bytearray()
    async with asyncio.timeout(SAFETY_TIMEOUT):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setblocking(False)
            await loop.sock_connect(sock, (host, port))
            for line in data.splitlines(keepends=True):
                with contextlib.suppress(OSError):
                    await loop.sock_sendall(sock, line)
            while True:
                try:
                    chunk = await loop.sock_recv(sock, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                received += chunk
    return bytes(received)
