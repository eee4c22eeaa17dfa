"""Sans-I/O codec for FastAGI, the TCP flavour of the Asterisk Gateway Interface.

Theory of operation
-------------------
When the dialplan runs ``AGI(agi://host:4573/authorize,2001,00441632960123)``, Asterisk's
``res_agi`` connects to host:4573 and the conversation goes like this (every line ends with a
bare LF; Asterisk never sends CR)::

    Asterisk -> us   agi_network: yes
                     agi_network_script: authorize
                     agi_request: agi://host:4573/authorize
                     agi_channel: PJSIP/2001-00000007
                     ... (agi_language … agi_threadid, always in this order)
                     agi_arg_1: 2001
                     agi_arg_2: 00441632960123
                     <blank line>
    us -> Asterisk   SET VARIABLE PBXGUARD_VERDICT "deny"
    Asterisk -> us   200 result=1
    us               (close the socket: Asterisk sets AGISTATUS=SUCCESS and the dialplan goes on)

Asterisk waits for a command with no time limit once connected, and answers each command with
one reply line: ``200 result=N``, ``200 result=N (data)``, ``200 result=N endpos=M``,
``510 Invalid or unknown command``, ``511 Command Not Permitted on a dead channel…`` or, for a
command with the wrong arguments, a block ``520-Invalid command syntax.  Proper usage
follows:`` … ``520 End of proper usage.``. When the caller hangs up, Asterisk sends a lone
``HANGUP`` line between replies, and keeps answering commands on the dead channel.

`AgiConnection` is the server side of that conversation and does no I/O: feed it the bytes
read from the socket with `AgiConnection.receive_data` (``b""`` for end of stream), then call
`AgiConnection.next_event` until it returns `NEED_DATA`. It yields, in order, one
`AgiEnvironment`, then an `AgiReply` per command sent with `AgiConnection.send` (which returns
the bytes to write) and a `ChannelHungUp` whenever Asterisk says so, and `CLOSED` once the peer
closed cleanly. Bytes are framed into lines before anything is decoded, so a UTF-8 caller name
split across two TCP reads arrives intact. Input is capped: an environment that grows past
``max_environment_bytes`` without its blank line, or a reply past ``max_reply_bytes``, is an
`AgiProtocolError`, as is anything that is not AGI at all (an HTTP request, a port scanner).

Commands are `AgiCommand` values built by its constructors, which quote arguments the way
``res_agi``'s ``parse_args`` reads them back and refuse CR, LF and NUL in any value (and text
with no UTF-8 form): nothing a caller controls can inject a second command.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, TypeAlias

from pbxguard.errors import AgiProtocolError

DEFAULT_PORT: Final = 4573
DEFAULT_MAX_ENVIRONMENT_BYTES: Final = 16 * 1024
DEFAULT_MAX_REPLY_BYTES: Final = 16 * 1024
# res_agi reads a command into a 2048-byte buffer (AGI_BUF_LEN) that also holds the
# terminating NUL; a longer line would be cut and its tail run as a second command.
MAX_COMMAND_BYTES: Final = 2047

_END_OF_USAGE: Final = "520 End of proper usage."
_ENV_KEY = re.compile(r"agi_[a-z0-9_]+")
_ARG_KEY = re.compile(r"agi_arg_([1-9][0-9]*)")
# res_agi passes at most 127 arguments (MAX_ARGS); a longer index is not an argument of ours,
# and int() refuses strings of more than 4300 digits with a ValueError.
_MAX_ARG_DIGITS: Final = 3
_REPLY = re.compile(r"([0-9]{3})([ -])(.*)")
# Greedy data: a value read back by GET VARIABLE may itself contain parentheses. Results and
# offsets are C integers: at most 19 digits.
_RESULT = re.compile(r"result=(-?[0-9]{1,19})(?: \((.*)\))?(?: endpos=(-?[0-9]{1,19}))?")
_VARIABLE_NAME = re.compile(r"_{0,2}[A-Za-z][A-Za-z0-9_]*(?:\([A-Za-z0-9_,-]*\))?")
_REQUIRED_KEYS: Final = ("agi_request", "agi_channel", "agi_uniqueid")
# res_agi writes "unknown" for a caller number, caller name, DNID or RDNIS it does not have.
_UNKNOWN: Final = "unknown"


class Signal(enum.Enum):
    """What `AgiConnection.next_event` returns when it has no event to give."""

    NEED_DATA = "need data"
    CLOSED = "closed"


NEED_DATA: Final = Signal.NEED_DATA
CLOSED: Final = Signal.CLOSED


@dataclass(frozen=True, slots=True)
class AgiEnvironment:
    """The environment Asterisk sends when a FastAGI request starts.

    Attributes:
        script: the route name: the path of the AGI URL without its query string and
            slashes (``authorize`` for ``agi://127.0.0.1:4573/authorize``).
        request: ``agi_request``, the URL as the dialplan wrote it.
        channel: ``agi_channel``, e.g. ``PJSIP/2001-00000007``.
        uniqueid: ``agi_uniqueid``; a string (it may carry a system-name prefix).
        callerid: ``agi_callerid``, or ``None`` when Asterisk sent ``unknown``.
        calleridname: ``agi_calleridname``, or ``None`` when Asterisk sent ``unknown``.
        extension: ``agi_extension``, the dialplan extension running the AGI.
        context: ``agi_context``.
        args: ``agi_arg_1`` … ``agi_arg_N`` in order: the data the dialplan passed.
        variables: every ``agi_*`` line as received, for anything without an accessor.
    """

    script: str
    request: str
    channel: str
    uniqueid: str
    callerid: str | None
    calleridname: str | None
    extension: str
    context: str
    # Kept out of repr: the PIN route receives the caller's PIN as an argument.
    args: tuple[str, ...] = field(repr=False)
    variables: Mapping[str, str] = field(repr=False, hash=False, compare=False)

    def get(self, key: str, default: str | None = None) -> str | None:
        """Return the raw value of one environment line (``agi_language``, …).

        Args:
            key: the full key, with its ``agi_`` prefix.
            default: what to return when Asterisk did not send that line.

        Returns:
            The value as sent, or ``default``.
        """
        return self.variables.get(key, default)


@dataclass(frozen=True, slots=True)
class AgiReply:
    """Asterisk's answer to one command.

    Attributes:
        code: ``200`` for success; ``510`` unknown command, ``511`` not permitted on a dead
            channel, ``520`` wrong usage; below 200 an interim line that a final one follows.
        result: the ``result=`` number of a 200 reply, else ``None``.
        data: the text in parentheses after the result (GET VARIABLE's value), else ``None``.
        endpos: the ``endpos=`` sample offset of the streaming commands, else ``None``.
        message: the text after the code, as sent.
        usage: for a multi-line 520, the usage text between its first and last lines.
    """

    code: int
    message: str
    result: int | None = None
    data: str | None = None
    endpos: int | None = None
    usage: str = ""

    @property
    def ok(self) -> bool:
        """Tell whether Asterisk ran the command (code 200)."""
        return self.code == 200


@dataclass(frozen=True, slots=True)
class ChannelHungUp:
    """Asterisk's ``HANGUP`` line: the caller's channel is gone."""


AgiEvent: TypeAlias = AgiEnvironment | AgiReply | ChannelHungUp | Signal


def quote_argument(value: str) -> str:
    """Quote one command argument so that ``res_agi`` reads back exactly ``value``.

    Args:
        value: any text without CR, LF or NUL (it may hold spaces, quotes, backslashes).

    Returns:
        The argument in double quotes, with ``\\`` and ``"`` escaped by a backslash.

    Raises:
        AgiProtocolError: ``value`` holds CR, LF or NUL, which would end the command line
            (or the C string) early and let the rest run as another command.
    """
    if "\r" in value or "\n" in value or "\x00" in value:
        raise AgiProtocolError("an AGI argument may not contain CR, LF or NUL")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check_variable_name(name: str) -> str:
    if not _VARIABLE_NAME.fullmatch(name):
        raise AgiProtocolError(f"not a channel variable name: {name[:40]!r}")
    return name


@dataclass(frozen=True, slots=True)
class AgiCommand:
    """One AGI command line, ready for the wire; build it with the class methods.

    Attributes:
        verb: the command's words, upper case (``SET VARIABLE``), for logs and errors.
        line: the full command line without its LF.
    """

    verb: str
    line: str

    def __post_init__(self) -> None:
        if "\r" in self.line or "\n" in self.line or "\x00" in self.line:
            raise AgiProtocolError(f"{self.verb}: a command line may not contain CR, LF or NUL")
        try:
            size = len(self.line.encode())
        except UnicodeEncodeError as exc:
            # A lone surrogate (text decoded with surrogateescape) has no UTF-8 form.
            raise AgiProtocolError(
                f"{self.verb}: the command holds text that is not valid Unicode"
            ) from exc
        if size + 1 > MAX_COMMAND_BYTES:
            raise AgiProtocolError(
                f"{self.verb}: command longer than the {MAX_COMMAND_BYTES} bytes res_agi reads"
            )

    @property
    def wire(self) -> bytes:
        """Return the bytes to send: the UTF-8 line and its LF."""
        return (self.line + "\n").encode()

    @classmethod
    def set_variable(cls, name: str, value: str) -> AgiCommand:
        """Build ``SET VARIABLE name "value"``.

        Args:
            name: a channel variable (``PBXGUARD_VERDICT``, ``__INHERITED``) or a writable
                function (``CDR(userfield)``).
            value: the value; stored literally, Asterisk does not expand ``${…}`` in it.

        Returns:
            The command.

        Raises:
            AgiProtocolError: an invalid name, CR/LF/NUL or a lone surrogate in the value, or
                a line too long.
        """
        return cls(
            "SET VARIABLE", f"SET VARIABLE {_check_variable_name(name)} {quote_argument(value)}"
        )

    @classmethod
    def get_variable(cls, name: str) -> AgiCommand:
        """Build ``GET VARIABLE name``.

        Args:
            name: the channel variable or function to read.

        Returns:
            The command; its reply is ``200 result=1 (value)``, or ``200 result=0`` if unset.

        Raises:
            AgiProtocolError: an invalid name.
        """
        return cls("GET VARIABLE", f"GET VARIABLE {_check_variable_name(name)}")

    @classmethod
    def verbose(cls, message: str, level: int = 1) -> AgiCommand:
        """Build ``VERBOSE "message" level`` (a line in the Asterisk console and log).

        Args:
            message: the text.
            level: verbosity 1 to 4.

        Returns:
            The command.

        Raises:
            AgiProtocolError: CR/LF/NUL or a lone surrogate in the message, a level out of
                range, or a line too long.
        """
        if not 1 <= level <= 4:
            raise AgiProtocolError(f"VERBOSE level must be 1 to 4, not {level}")
        return cls("VERBOSE", f"VERBOSE {quote_argument(message)} {level}")

    @classmethod
    def hangup(cls, channel: str | None = None) -> AgiCommand:
        """Build ``HANGUP`` (this channel) or ``HANGUP channel``.

        Args:
            channel: another channel's name, or ``None`` for the AGI's own channel.

        Returns:
            The command.

        Raises:
            AgiProtocolError: CR/LF/NUL, a space or a lone surrogate in the channel name.
        """
        if channel is None:
            return cls("HANGUP", "HANGUP")
        if not channel or any(c in channel for c in ' \t"\\'):
            raise AgiProtocolError(f"not a channel name: {channel[:60]!r}")
        return cls("HANGUP", f"HANGUP {channel}")


class _State(enum.Enum):
    ENVIRONMENT = "environment"
    COMMANDS = "commands"


class AgiConnection:
    """The server side of one FastAGI conversation, without I/O (see the module docstring)."""

    FAILURE_LINE: Final = b"failure\n"

    def __init__(
        self,
        *,
        max_environment_bytes: int = DEFAULT_MAX_ENVIRONMENT_BYTES,
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
    ) -> None:
        """Start a conversation that expects the AGI environment first.

        Args:
            max_environment_bytes: the most bytes the environment may take, blank line included.
            max_reply_bytes: the most bytes one reply may take (a 520 usage block included).
        """
        self._max_environment_bytes = max_environment_bytes
        self._max_reply_bytes = max_reply_bytes
        self._buffer = bytearray()
        self._eof = False
        self._state = _State.ENVIRONMENT
        self._environment_bytes = 0
        self._environment_lines: list[tuple[str, str]] = []
        self._usage_intro: str | None = None
        self._usage_lines: list[str] = []
        self._usage_bytes = 0
        self._pending = 0

    @property
    def environment_received(self) -> bool:
        """Tell whether the environment has been returned by `next_event`."""
        return self._state is _State.COMMANDS

    @property
    def pending_commands(self) -> int:
        """Return how many commands sent are still waiting for their final reply."""
        return self._pending

    def receive_data(self, data: bytes) -> None:
        """Add bytes read from the socket; ``b""`` means the peer closed its side.

        Args:
            data: the bytes, in any split.

        Raises:
            AgiProtocolError: data after the end of the stream.
        """
        if self._eof:
            raise AgiProtocolError("AGI data received after the end of the stream")
        if data:
            self._buffer += data
        else:
            self._eof = True

    def next_event(self) -> AgiEvent:
        """Return the next complete event, `NEED_DATA`, or `CLOSED`.

        Returns:
            An `AgiEnvironment` (once, first), an `AgiReply`, a `ChannelHungUp`, `NEED_DATA`
            when more bytes are needed, or `CLOSED` after a clean end of stream.

        Raises:
            AgiProtocolError: bytes that are not FastAGI, input past its cap, a reply that no
                command asked for, or a stream that ended in the middle of a message.
        """
        while True:
            line = self._take_line()
            if line is None:
                return self._without_line()
            if self._state is _State.ENVIRONMENT:
                environment = self._environment_line(line)
                if environment is not None:
                    return environment
            else:
                event = self._reply_line(line)
                if event is not None:
                    return event

    def send(self, command: AgiCommand) -> bytes:
        """Return the bytes of ``command`` and expect its reply.

        Args:
            command: the command to send.

        Returns:
            The bytes to write to the socket.

        Raises:
            AgiProtocolError: the environment has not been received yet.
        """
        if self._state is not _State.COMMANDS:
            raise AgiProtocolError("an AGI command cannot be sent before the environment")
        self._pending += 1
        return command.wire

    def send_failure(self) -> bytes:
        """Return the line that makes ``res_agi`` end the request with AGISTATUS=FAILURE.

        ``res_agi`` reads a line starting with ``failure`` as "the script could not run" on
        FastAGI sockets too; closing without it leaves AGISTATUS=SUCCESS.

        Returns:
            The bytes to write before closing the socket.
        """
        return self.FAILURE_LINE

    def _take_line(self) -> str | None:
        end = self._buffer.find(b"\n")
        if end < 0:
            self._check_partial_line()
            return None
        raw = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        if self._state is _State.ENVIRONMENT:
            self._environment_bytes += end + 1
            self._check_environment_size(0)
        elif end + 1 > self._max_reply_bytes:
            raise AgiProtocolError(f"AGI reply line longer than {self._max_reply_bytes} bytes")
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        # Asterisk passes caller names through as bytes; a broken name must not end the call.
        # Asterisk writes C strings and never sends a NUL; another client might. Shown as ␀
        # (U+2400): visible in the ledger and logs, storable in PostgreSQL, never a digit.
        return raw.decode("utf-8", errors="replace").replace("\0", "\u2400")

    def _check_partial_line(self) -> None:
        if self._state is _State.ENVIRONMENT:
            self._check_environment_size(len(self._buffer))
        elif len(self._buffer) > self._max_reply_bytes:
            raise AgiProtocolError(f"AGI reply line longer than {self._max_reply_bytes} bytes")

    def _check_environment_size(self, partial: int) -> None:
        if self._environment_bytes + partial > self._max_environment_bytes:
            raise AgiProtocolError(
                f"AGI environment larger than {self._max_environment_bytes} bytes"
            )

    def _without_line(self) -> Signal:
        if not self._eof:
            return NEED_DATA
        if self._state is _State.ENVIRONMENT:
            if self._environment_lines or self._buffer:
                raise AgiProtocolError("connection closed in the middle of the AGI environment")
            return CLOSED
        if self._buffer or self._usage_intro is not None:
            raise AgiProtocolError("connection closed in the middle of an AGI reply")
        return CLOSED

    def _environment_line(self, line: str) -> AgiEnvironment | None:
        if not line:
            if not self._environment_lines:
                raise AgiProtocolError("empty AGI environment")
            environment = _build_environment(self._environment_lines)
            self._environment_lines = []
            self._state = _State.COMMANDS
            return environment
        key, colon, value = line.partition(":")
        if not colon or not _ENV_KEY.fullmatch(key):
            raise AgiProtocolError(f"not an AGI environment line: {line[:40]!r}")
        # res_agi writes "key: value"; an empty value still has its space ("agi_accountcode: ").
        self._environment_lines.append((key, value.removeprefix(" ")))
        return None

    def _reply_line(self, line: str) -> AgiReply | ChannelHungUp | None:
        if self._usage_intro is not None:
            return self._usage_line(line)
        if line == "HANGUP":
            return ChannelHungUp()
        match = _REPLY.fullmatch(line)
        if match is None:
            raise AgiProtocolError(f"not an AGI reply: {line[:40]!r}")
        code, separator, text = int(match[1]), match[2], match[3]
        if self._pending == 0:
            raise AgiProtocolError(f"AGI reply {code} arrived with no command waiting for it")
        if separator == "-":
            if code != 520:
                raise AgiProtocolError(f"unexpected multi-line AGI reply {code}")
            self._usage_intro = text
            self._usage_lines = []
            self._usage_bytes = len(line) + 1
            return None
        return self._complete(_parse_reply(code, text))

    def _usage_line(self, line: str) -> AgiReply | None:
        self._usage_bytes += len(line) + 1
        if self._usage_bytes > self._max_reply_bytes:
            raise AgiProtocolError(f"AGI 520 reply longer than {self._max_reply_bytes} bytes")
        # Usage texts taken from the XML docs lack a final LF, so the closing line can arrive
        # glued to the last line of the text.
        if not line.endswith(_END_OF_USAGE):
            self._usage_lines.append(line)
            return None
        head = line.removesuffix(_END_OF_USAGE)
        if head:
            self._usage_lines.append(head)
        intro = self._usage_intro or ""
        self._usage_intro = None
        return self._complete(AgiReply(code=520, message=intro, usage="\n".join(self._usage_lines)))

    def _complete(self, reply: AgiReply) -> AgiReply:
        if reply.code >= 200:
            self._pending -= 1
        return reply


def _parse_reply(code: int, text: str) -> AgiReply:
    if code != 200:
        return AgiReply(code=code, message=text)
    match = _RESULT.fullmatch(text)
    if match is None:
        raise AgiProtocolError(f"malformed AGI 200 reply: {text[:40]!r}")
    return AgiReply(
        code=200,
        message=text,
        result=int(match[1]),
        data=match[2],
        endpos=None if match[3] is None else int(match[3]),
    )


def _build_environment(lines: list[tuple[str, str]]) -> AgiEnvironment:
    variables: dict[str, str] = {}
    arguments: dict[int, str] = {}
    for key, value in lines:
        if key in variables:
            raise AgiProtocolError(f"AGI environment repeats {key}")
        variables[key] = value
        arg = _ARG_KEY.fullmatch(key)
        if arg is not None:
            if len(arg[1]) > _MAX_ARG_DIGITS:
                raise AgiProtocolError(f"AGI environment argument {key[:24]}… is out of range")
            arguments[int(arg[1])] = value
    for key in _REQUIRED_KEYS:
        if key not in variables:
            raise AgiProtocolError(f"AGI environment lacks {key}")
    if sorted(arguments) != list(range(1, len(arguments) + 1)):
        raise AgiProtocolError("AGI environment arguments are not numbered 1 to N")
    request = variables["agi_request"]
    script = variables.get("agi_network_script")
    if script is None:
        script = _script_from_request(request)
    return AgiEnvironment(
        script=script.partition("?")[0].strip("/"),
        request=request,
        channel=variables["agi_channel"],
        uniqueid=variables["agi_uniqueid"],
        callerid=_known(variables.get("agi_callerid")),
        calleridname=_known(variables.get("agi_calleridname")),
        extension=variables.get("agi_extension", ""),
        context=variables.get("agi_context", ""),
        args=tuple(arguments[n] for n in range(1, len(arguments) + 1)),
        variables=MappingProxyType(variables),
    )


def _script_from_request(request: str) -> str:
    # res_agi only sends agi_network_script when the URL has a path; derive the same thing.
    scheme, sep, rest = request.partition("://")
    if not sep or scheme.lower() not in {"agi", "hagi"}:
        return ""
    return rest.partition("/")[2]


def _known(value: str | None) -> str | None:
    if value is None or value == _UNKNOWN:
        return None
    return value
