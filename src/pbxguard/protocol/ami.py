"""Sans-I/O codec for the Asterisk Manager Interface (AMI 11, Asterisk 22).

Theory of operation
===================

AMI is a line protocol over TCP. The server first sends one banner line
(``Asterisk Call Manager/11.0.0``); after that both sides exchange *messages*: ``Key: Value``
lines ending with an empty line. Asterisk writes CRLF line endings and accepts bare LF; keys
are case-insensitive and may repeat (``Variable`` in Originate, ``ChanVariable`` in events).
Values are UTF-8 text copied from SIP headers and the dialplan, so a caller name such as 张伟
spans several bytes, and a TCP read may end in the middle of one of them.

This module does no I/O, in the style of h11: the owner of a socket hands received bytes to
:meth:`AmiParser.receive_data` and then calls :meth:`AmiParser.next_message` until it returns
:data:`NEED_DATA`. Each call returns one of

* :class:`Banner`: the first line of a server's stream (only with ``expect_banner=True``);
* :class:`AmiMessage`: an immutable, ordered list of ``(key, value)`` fields;
* :class:`MalformedMessage`: a complete frame that is not valid AMI (a line without ``:``,
  bytes that are not UTF-8); it carries the raw bytes, the reason, and whatever fields could
  be salvaged. The stream goes on after it.

A frame that grows beyond ``max_frame_size`` bytes raises :class:`AmiFrameTooLarge` from
``next_message``; the parser skips the rest of that frame up to its terminating blank line and
the following messages arrive as usual. The result does not depend on how the bytes were split
into reads.

Inside the parser, bytes are handled in three steps, each done in C over whole reads rather
than per line in Python, because the guard must ingest tens of thousands of events a second:

1. *Normalise*: every CRLF becomes LF (a CR at the very end of a read is held back until the
   next read shows whether an LF follows). After this, a frame ends at the first ``\\n\\n``.
2. *Frame*: the bytes up to the last ``\\n\\n`` of the buffer are split into complete frames;
   the remainder waits for more data. Frames are still bytes, so a multi-byte character split
   across reads has been joined again before anything is decoded.
3. *Validate*: with everything but ``\\n`` and ``:`` deleted from a batch of frames, counting
   ``:\\n`` tells whether every line holds a colon. Only when the count disagrees (rare) is each
   frame checked on its own.

Each frame is decoded on :meth:`AmiParser.next_message` and kept as one string. The event name
is read off its first line, and :meth:`AmiMessage.get` finds a key with a C-level search of the
text; the lines are split into fields only when :attr:`AmiMessage.fields` is asked for. A
consumer that looks at the event name and drops the message (``VarSet``, ``RTCPReceived``:
half of all traffic) or reads a few keys never pays for the split.

Actions go the other way through :func:`encode_action` (and :func:`encode_message` for a
server): CRLF lines and a blank line. Any CR or LF inside a key or a value is refused with
:class:`AmiProtocolError`, because it would let a caller name or a dialled number inject
headers, or a whole extra action, into the stream.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from pbxguard.errors import AmiFrameTooLarge, AmiProtocolError, ConfigError

__all__ = [
    "BANNER_PREFIX",
    "DEFAULT_MAX_FRAME_SIZE",
    "NEED_DATA",
    "AmiMessage",
    "AmiParser",
    "Banner",
    "MalformedMessage",
    "NeedData",
    "ParseResult",
    "encode_action",
    "encode_message",
]

BANNER_PREFIX: Final = "Asterisk Call Manager/"
DEFAULT_MAX_FRAME_SIZE: Final = 64 * 1024

# Deleting every byte except LF and ':' reduces a frame to its line structure, which is what
# the batch validation counts (see the module docstring, step 3).
_ALL_BUT_LF_AND_COLON: Final = bytes(b for b in range(256) if b not in (0x0A, 0x3A))
# The key runs to the first colon; Asterisk writes "Key: Value", and only that one space
# separates rather than belongs to the value. Lines without a colon do not match.
_FIELD: Final = re.compile(r"^([^:\n]*):[ ]?(.*)$", re.MULTILINE)
_LF: Final = 0x0A
_CR: Final = 0x0D
_SECRET_KEYS: Final = frozenset({"secret", "key"})


class NeedData(enum.Enum):
    """Type of the :data:`NEED_DATA` sentinel."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA
"""Returned by :meth:`AmiParser.next_message` when no complete message is buffered."""


class AmiMessage:
    """An immutable AMI message: ordered ``(key, value)`` fields, keys case-insensitive.

    Keys may repeat; :meth:`get` returns the first value and :meth:`get_all` every value.
    Values are always strings, exactly as sent (``<unknown>`` caller ids, ``Uniqueid`` values
    such as ``1795397703.25`` stay text).
    """

    __slots__ = ("_fields", "_index", "_lower_text", "_text")

    _text: str | None
    _fields: tuple[tuple[str, str], ...] | None
    _index: dict[str, str] | None
    _lower_text: str | None

    def __init__(self, fields: Iterable[tuple[str, str]] | Mapping[str, str] = ()) -> None:
        """Build a message from ``(key, value)`` pairs or a mapping, keeping their order."""
        items = fields.items() if isinstance(fields, Mapping) else fields
        pairs = tuple((str(key), str(value)) for key, value in items)
        _set(self, "_text", None)
        _set(self, "_fields", pairs)
        _set(self, "_index", None)
        _set(self, "_lower_text", None)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"AmiMessage is immutable (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"AmiMessage is immutable (cannot delete {name!r})")

    @property
    def fields(self) -> tuple[tuple[str, str], ...]:
        """All fields in wire order, repeated keys included."""
        fields = self._fields
        if fields is None:
            fields = _split_fields(self._text or "")
            _set(self, "_fields", fields)
        return fields

    def get(self, key: str, default: str | None = None) -> str | None:
        """Return the value of the first field named ``key`` (any case), or ``default``."""
        text = self._text
        if text is not None:
            # A parsed message is searched as text (a few C-level finds) rather than split
            # into every line for the handful of keys a consumer reads. A match in the folded
            # copy locates the original value when lower-casing kept every offset: always for
            # ASCII, and for other text (a Chinese caller name) when no character grew, which
            # a length unchanged proves (lower-casing never shortens a character).
            lower = self._lower_text
            if lower is None:
                lower = text.lower()
                if len(lower) != len(text):
                    lower = ""
                _set(self, "_lower_text", lower)
            if lower or not text:
                return _find_value(text, lower, key.lower(), default)
        index = self._index
        if index is None:
            # Reversed so that the first of repeated keys wins.
            index = {k.lower(): v for k, v in reversed(self.fields)}
            _set(self, "_index", index)
        return index.get(key.lower(), default)

    def get_all(self, key: str) -> list[str]:
        """Return the values of every field named ``key`` (any case), in wire order."""
        wanted = key.lower()
        return [v for k, v in self.fields if k.lower() == wanted]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    @property
    def event(self) -> str | None:
        """The ``Event`` value, or ``None`` for a response or an action."""
        text = self._text
        # Asterisk always writes Event first; reading it off the text avoids splitting the
        # fields of the many events a consumer looks at only to drop.
        if text is not None and text.startswith("Event: "):
            end = text.find("\n")
            return text[7:] if end < 0 else text[7:end]
        return self.get("Event")

    @property
    def response(self) -> str | None:
        """The ``Response`` value (``Success``, ``Error``, ``Goodbye``...), or ``None``."""
        text = self._text
        if text is not None and text.startswith("Response: "):
            end = text.find("\n")
            return text[10:] if end < 0 else text[10:end]
        return self.get("Response")

    @property
    def action_id(self) -> str | None:
        """The ``ActionID`` value, or ``None``."""
        return self.get("ActionID")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AmiMessage):
            return NotImplemented
        return self.fields == other.fields

    def __hash__(self) -> int:
        return hash(self.fields)

    def __repr__(self) -> str:
        shown = [(k, "**********" if k.lower() in _SECRET_KEYS else v) for k, v in self.fields]
        return f"AmiMessage({shown!r})"


_set = object.__setattr__
_new = object.__new__


def _message_from_text(text: str) -> AmiMessage:
    """Wrap validated, LF-normalised frame text; fields are split on first use."""
    message: AmiMessage = _new(AmiMessage)
    _set(message, "_text", text)
    _set(message, "_fields", None)
    _set(message, "_index", None)
    _set(message, "_lower_text", None)
    return message


def _find_value(text: str, lower: str, key: str, default: str | None) -> str | None:
    """Return the value of the first line of ``text`` whose lower-cased key is ``key``."""
    if ":" in key or "\n" in key:
        return default
    if lower.startswith(key) and lower.startswith(":", len(key)):
        start = len(key) + 1
    else:
        start = lower.find(f"\n{key}:")
        if start < 0:
            return default
        start += len(key) + 2
    end = text.find("\n", start)
    value = text[start:] if end < 0 else text[start:end]
    return value[1:] if value.startswith(" ") else value


def _split_fields(text: str) -> tuple[tuple[str, str], ...]:
    return tuple(_FIELD.findall(text))


@dataclass(frozen=True, slots=True)
class Banner:
    """The greeting line a server sends first, e.g. ``Asterisk Call Manager/11.0.0``."""

    line: str
    version: str


@dataclass(frozen=True, slots=True)
class MalformedMessage:
    """A complete frame that is not valid AMI; the stream continues after it.

    Attributes:
        raw: the frame's bytes, line endings normalised to LF.
        reason: what is wrong, for a log line.
        salvaged: the fields that could still be read (undecodable bytes replaced by U+FFFD,
            lines without a colon dropped, as Asterisk itself ignores them), or ``None``.
    """

    raw: bytes
    reason: str
    salvaged: AmiMessage | None


@dataclass(frozen=True, slots=True)
class _Oversize:
    size: int


ParseResult: TypeAlias = AmiMessage | Banner | MalformedMessage | Literal[NeedData.NEED_DATA]
_Item: TypeAlias = bytes | Banner | MalformedMessage | _Oversize


class AmiParser:
    """Incremental AMI parser: feed bytes, take messages.

    Args:
        expect_banner: the stream starts with the server's banner line (client side). A
            server reading actions passes ``False``.
        max_frame_size: the largest message, in bytes, accepted; a longer one raises
            :class:`AmiFrameTooLarge` and is skipped.
    """

    def __init__(
        self, *, expect_banner: bool = True, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    ) -> None:
        if max_frame_size < 16:
            raise ConfigError(f"max_frame_size must be at least 16 bytes, got {max_frame_size}")
        self._max = max_frame_size
        self._ready: deque[_Item] = deque()
        self._partial: list[bytes] = []
        self._partial_size = 0
        self._held_cr = False
        self._await_banner = expect_banner
        self._discarding = False
        self._discard_last_lf = False
        self._eof = False

    @property
    def max_frame_size(self) -> int:
        """The frame size limit in bytes."""
        return self._max

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as messages (an incomplete frame)."""
        return self._partial_size + self._held_cr

    def receive_data(self, data: bytes) -> None:
        """Add bytes read from the connection.

        Args:
            data: any number of bytes; frames and characters may be split anywhere.

        Raises:
            AmiProtocolError: after :meth:`receive_eof`.
        """
        if self._eof:
            raise AmiProtocolError("AMI data received after the end of the stream")
        if not data:
            return
        if self._held_cr:
            data = b"\r" + data
            self._held_cr = False
        if data[-1] == _CR:
            data = data[:-1]
            self._held_cr = True
            if not data:
                return
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        self._feed(data)

    def receive_eof(self) -> None:
        """Note that the peer closed the stream; an unfinished frame becomes malformed."""
        if self._eof:
            return
        self._eof = True
        if self._held_cr:
            self._held_cr = False
            if not self._discarding:
                self._partial.append(b"\r")
                self._partial_size += 1
        if self._discarding or not self._partial:
            self._partial.clear()
            self._partial_size = 0
            return
        rest = b"".join(self._partial).strip(b"\n")
        self._partial.clear()
        self._partial_size = 0
        if not rest:
            return
        reason = (
            "the stream ended before the AMI banner"
            if self._await_banner
            else "the stream ended in the middle of a message"
        )
        self._ready.append(MalformedMessage(rest, reason, _salvage(rest)))

    def next_message(self) -> ParseResult:
        """Return the next complete message, or :data:`NEED_DATA`.

        Returns:
            An :class:`AmiMessage`, a :class:`Banner`, a :class:`MalformedMessage`, or
            :data:`NEED_DATA` when no complete message is buffered.

        Raises:
            AmiFrameTooLarge: the next frame exceeds ``max_frame_size``; it has been skipped,
                so calling again continues with the message after it.
        """
        ready = self._ready
        if not ready:
            return NEED_DATA
        item = ready.popleft()
        if isinstance(item, bytes):
            try:
                return _message_from_text(item.decode())
            except UnicodeDecodeError as exc:
                return MalformedMessage(
                    item,
                    f"bytes {exc.start}..{exc.end} of the message are not valid UTF-8",
                    _salvage(item),
                )
        if isinstance(item, _Oversize):
            raise AmiFrameTooLarge(
                f"an AMI message of at least {item.size} bytes exceeds the limit of "
                f"{self._max} bytes; it was skipped up to its terminating blank line"
            )
        return item

    def _feed(self, data: bytes) -> None:
        if self._discarding:
            if self._discard_last_lf and data[0] == _LF:
                end = 1
            else:
                found = data.find(b"\n\n")
                end = -1 if found < 0 else found + 2
            if end < 0:
                self._discard_last_lf = data[-1] == _LF
                return
            self._discarding = False
            data = data[end:]
            if not data:
                return
        if self._await_banner:
            data = self._take_banner(data)
            if not data:
                return
        partial = self._partial
        if partial:
            if not ((partial[-1][-1] == _LF and data[0] == _LF) or b"\n\n" in data):
                partial.append(data)
                self._partial_size += len(data)
                self._check_partial()
                return
            partial.append(data)
            buf = b"".join(partial)
            partial.clear()
            self._partial_size = 0
        else:
            buf = data
        last = buf.rfind(b"\n\n")
        if last < 0:
            partial.append(buf)
            self._partial_size = len(buf)
            self._check_partial()
            return
        region = buf[:last]
        tail = buf[last + 2 :]
        self._add_frames(region)
        if tail:
            partial.append(tail)
            self._partial_size = len(tail)
            self._check_partial()

    def _take_banner(self, data: bytes) -> bytes:
        partial = self._partial
        if partial:
            partial.append(data)
            data = b"".join(partial)
            partial.clear()
            self._partial_size = 0
        end = data.find(b"\n")
        if end < 0:
            partial.append(data)
            self._partial_size = len(data)
            self._check_partial()
            return b""
        self._await_banner = False
        line, rest = data[:end], data[end + 1 :]
        if len(line) > self._max:
            self._ready.append(_Oversize(len(line)))
            self._discarding = True
            self._discard_last_lf = True
            if not rest:
                return b""
            self._feed(rest)
            return b""
        self._ready.append(_banner(line))
        return rest

    def _check_partial(self) -> None:
        # One byte of slack: the partial may end with the first LF of its terminator.
        if self._partial_size <= self._max + 1:
            return
        self._ready.append(_Oversize(self._partial_size))
        self._discarding = True
        self._discard_last_lf = self._partial[-1][-1] == _LF
        self._await_banner = False
        self._partial.clear()
        self._partial_size = 0

    def _add_frames(self, region: bytes) -> None:
        frames = region.split(b"\n\n")
        count = len(frames)
        lines = region.count(b"\n") - 2 * (count - 1) + count
        reduced = region.translate(None, _ALL_BUT_LF_AND_COLON)
        lines_with_colon = reduced.count(b":\n") + reduced.endswith(b":")
        if lines_with_colon == lines and max(map(len, frames)) <= self._max:
            self._ready.extend(frames)
            return
        ready = self._ready
        for raw in frames:
            if len(raw) > self._max:
                ready.append(_Oversize(len(raw)))
                continue
            frame = raw.strip(b"\n")
            if not frame:
                continue
            bad = _first_line_without_colon(frame)
            if bad is None:
                ready.append(frame)
            else:
                ready.append(
                    MalformedMessage(
                        frame, f"line {bad} has no ':' separating key and value", _salvage(frame)
                    )
                )


def _first_line_without_colon(frame: bytes) -> int | None:
    reduced = frame.translate(None, _ALL_BUT_LF_AND_COLON)
    if reduced.count(b":\n") + reduced.endswith(b":") == frame.count(b"\n") + 1:
        return None
    for number, line in enumerate(frame.split(b"\n"), start=1):
        if b":" not in line:
            return number
    return None


def _salvage(frame: bytes) -> AmiMessage | None:
    text = frame.decode("utf-8", "replace")
    kept = "\n".join(line for line in text.split("\n") if ":" in line)
    return _message_from_text(kept) if kept else None


def _banner(line: bytes) -> Banner | MalformedMessage:
    text = line.decode("utf-8", "replace")
    if text.startswith(BANNER_PREFIX):
        return Banner(text, text[len(BANNER_PREFIX) :])
    return MalformedMessage(
        line, f"expected the AMI banner {BANNER_PREFIX!r}<version>, got {text[:80]!r}", None
    )


def encode_message(fields: Iterable[tuple[str, str]] | Mapping[str, str]) -> bytes:
    """Encode one AMI message: ``Key: Value`` CRLF lines and a blank line.

    Args:
        fields: ``(key, value)`` pairs in the order to send; keys may repeat.

    Returns:
        The bytes to write.

    Raises:
        AmiProtocolError: a key is empty or holds ``:``, or a key or value is not a string,
            holds CR or LF (header injection), or is not valid Unicode (a lone surrogate).
    """
    items = fields.items() if isinstance(fields, Mapping) else fields
    parts: list[str] = []
    for key, value in items:
        _check_field(key, value)
        parts.append(f"{key}: {value}\r\n")
    parts.append("\r\n")
    try:
        return "".join(parts).encode()
    except UnicodeEncodeError as exc:
        # A lone surrogate (text decoded with surrogateescape) has no UTF-8 form.
        raise AmiProtocolError(
            f"refusing text that is not valid Unicode at position {exc.start} of the message"
        ) from exc


def encode_action(
    action: str,
    fields: Iterable[tuple[str, str]] | Mapping[str, str] = (),
    *,
    action_id: str,
) -> bytes:
    """Encode an AMI action with its ``ActionID``.

    Args:
        action: the action name, e.g. ``Hangup``.
        fields: further ``(key, value)`` pairs in order; keys may repeat (``Variable``).
        action_id: the id the response will echo.

    Returns:
        The bytes to write.

    Raises:
        AmiProtocolError: as for :func:`encode_message`, or ``fields`` names ``Action`` or
            ``ActionID`` again.
    """
    items = list(fields.items() if isinstance(fields, Mapping) else fields)
    for key, _ in items:
        if isinstance(key, str) and key.lower() in ("action", "actionid"):
            raise AmiProtocolError(f"the field {key!r} is set by encode_action itself")
    return encode_message([("Action", action), ("ActionID", action_id), *items])


def _check_field(key: object, value: object) -> None:
    if not isinstance(key, str) or not isinstance(value, str):
        raise AmiProtocolError(
            f"AMI keys and values must be strings, got {type(key).__name__} "
            f"and {type(value).__name__}"
        )
    if "\r" in key or "\n" in key or "\r" in value or "\n" in value:
        raise AmiProtocolError(
            f"refusing CR/LF in the AMI field {key[:40]!r}: it would inject headers"
        )
    if not key or ":" in key or key != key.strip():
        raise AmiProtocolError(f"invalid AMI key {key!r}")
