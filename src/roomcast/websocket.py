"""The server side of RFC 6455 as pure functions and a frame parser: no IO, no trio.

The caller reads the upgrade request and the socket; this module says what is valid, what to
answer, and which events a client's bytes carry (in the spirit of h11 and wsproto).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from typing import Final, TypeAlias

__all__ = [
    "MAX_CONTROL_PAYLOAD",
    "MAX_HEAD_BYTES",
    "BinaryMessage",
    "CloseReceived",
    "Event",
    "FrameError",
    "FrameReader",
    "HandshakeError",
    "Ping",
    "Pong",
    "RequestHead",
    "TextMessage",
    "accept_key",
    "check_upgrade",
    "close_frame",
    "parse_request_head",
    "pong_frame",
    "upgrade_response",
]

MAX_CONTROL_PAYLOAD = 125

_GUID: Final = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
_NO_WIRE_CODES: Final = frozenset((1005, 1006, 1015))  # "MUST NOT be set" in a close frame
_CLOSED: Final = -1  # FrameReader._opcode once a close (or a violation) has been seen


# --- the request head --------------------------------------------------------------------

MAX_HEAD_BYTES: Final = 16 * 1024
_HEAD_END: Final = re.compile(rb"\r?\n\r?\n")
_REQUEST_LINE: Final = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP/(1\.[01])")
_HEADER_LINE: Final = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*((?:[\x21-\x7e\x80-\xff]+(?:[ \t]+"
    rb"[\x21-\x7e\x80-\xff]+)*)?)[ \t]*")


class RequestHead:
    """An HTTP/1.x request head: method, target, version, headers (names lower-cased, repeats
    joined with ", "), and the bytes that followed it."""

    __slots__ = ("headers", "http_version", "method", "rest", "target")

    def __init__(self, method: str, target: str, http_version: str, headers: dict[str, str],
                 rest: bytes) -> None:
        self.method = method
        self.target = target
        self.http_version = http_version
        self.headers = headers
        self.rest = rest


def parse_request_head(data: bytes, searched: int = 0) -> RequestHead | None:
    """The request head at the start of `data`, or None while it is incomplete. Raises
    HandshakeError (400) for a head that is malformed or longer than MAX_HEAD_BYTES (its
    blank line included). Strict where it matters (RFC 9112: token names, no obsolete line
    folding, no control characters, exactly one Host in HTTP/1.1); bare LF line ends are
    tolerated, as most servers do. `searched`: how many bytes an earlier call already saw
    without finding the end, so that a head sent a byte at a time is not scanned again and
    again."""
    end = _HEAD_END.search(data, max(0, searched - 3), MAX_HEAD_BYTES)
    if end is None:
        if len(data) > MAX_HEAD_BYTES:
            raise HandshakeError(400, f"the request head is longer than {MAX_HEAD_BYTES} bytes")
        return None
    *lines, last = data[:end.start()].split(b"\n")
    # Every line but the last ends where a \n was: a CR before it belongs to the line end.
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    lines.append(last)  # its line end went with the blank line
    request = _REQUEST_LINE.fullmatch(lines[0])
    if request is None:
        raise HandshakeError(400, "malformed request line; expected: GET /path HTTP/1.1")
    headers: dict[str, str] = {}
    hosts = 0
    for line in lines[1:]:
        header = _HEADER_LINE.fullmatch(line)
        if header is None:
            raise HandshakeError(400, "malformed header line; expected: Name: value")
        name = header[1].decode("ascii").lower()
        value = header[2].decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
        hosts += name == "host"
    method, target, version = request.groups()
    if version == b"1.1" and hosts != 1:
        raise HandshakeError(400, "an HTTP/1.1 request needs exactly one Host header")
    return RequestHead(method.decode("ascii"), target.decode("ascii"), version.decode("ascii"),
                       headers, data[end.end():])


# --- handshake ---------------------------------------------------------------------------


class HandshakeError(Exception):
    """The upgrade request cannot be accepted; answer with `status` (400 or 426)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return f"{self.status}: {self.message}"


def accept_key(key: str) -> str:
    """The Sec-WebSocket-Accept value for a Sec-WebSocket-Key (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1((key + _GUID).encode("ascii")).digest()).decode("ascii")


def _tokens(value: str) -> set[str]:
    """The lower-cased tokens of a comma-separated header value."""
    return {token.strip().lower() for token in value.split(",")}


def check_upgrade(method: str, http_version: str, headers: Mapping[str, str]) -> str:
    """Validate a WebSocket upgrade request and return its Sec-WebSocket-Key; `headers` has
    lower-cased names. Raises HandshakeError (426 for a bad version, else 400)."""
    if method != "GET":
        raise HandshakeError(400, "a WebSocket upgrade must be a GET")
    if http_version != "1.1":
        raise HandshakeError(
            400, f"a WebSocket upgrade must use HTTP/1.1, not HTTP/{http_version}")
    if "websocket" not in _tokens(headers.get("upgrade", "")):
        raise HandshakeError(400, "the request needs an 'Upgrade: websocket' header")
    if "upgrade" not in _tokens(headers.get("connection", "")):
        raise HandshakeError(400, "the request needs a 'Connection: Upgrade' header")
    version = headers.get("sec-websocket-version", "").strip()
    if version != "13":
        raise HandshakeError(
            426, f"unsupported Sec-WebSocket-Version {version!r}: this server speaks 13")
    key = headers.get("sec-websocket-key", "").strip()
    if not key:
        raise HandshakeError(400, "the request needs a Sec-WebSocket-Key header")
    try:
        nonce = base64.b64decode(key, validate=True)
    except ValueError:  # binascii.Error, or a non-ASCII str
        nonce = b""
    if len(nonce) != 16:
        raise HandshakeError(
            400, "Sec-WebSocket-Key must be the base64 encoding of 16 random bytes")
    return key


def upgrade_response(key: str) -> bytes:
    """The 101 response that accepts the upgrade whose Sec-WebSocket-Key is `key`."""
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(key).encode("ascii") + b"\r\n\r\n"
    )


# --- server frames -----------------------------------------------------------------------


def _valid_close_code(code: int) -> bool:
    """Whether `code` may appear in a close frame (RFC 6455 §7.4 and the IANA registry)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def close_frame(code: int | None, reason: str = "") -> bytes:
    """An unmasked close frame. 1005/1006/1015 (or None) send an empty payload; the reason
    is cut to 123 bytes at a character boundary. Any other invalid code is a ValueError."""
    if code is None or code in _NO_WIRE_CODES:
        return b"\x88\x00"
    if not _valid_close_code(code):
        raise ValueError(f"{code} is not a close code that may be sent")
    data = reason.encode("utf-8")
    if len(data) > MAX_CONTROL_PAYLOAD - 2:
        cut = MAX_CONTROL_PAYLOAD - 2
        while data[cut] & 0xC0 == 0x80:  # data[cut] continues a character: drop that one too
            cut -= 1
        data = data[:cut]
    return bytes((0x88, len(data) + 2)) + code.to_bytes(2, "big") + data


def pong_frame(payload: bytes) -> bytes:
    """An unmasked pong frame echoing `payload` (at most 125 bytes, else ValueError)."""
    if len(payload) > MAX_CONTROL_PAYLOAD:
        raise ValueError(f"a pong payload is at most {MAX_CONTROL_PAYLOAD} bytes")
    return bytes((0x8A, len(payload))) + payload


# --- events ------------------------------------------------------------------------------


class _Event:
    """Shared equality and repr for the event classes, read from their __slots__."""

    __slots__: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"


class TextMessage(_Event):
    """A whole text message, reassembled from its fragments and decoded."""

    __slots__ = ("text",)
    __match_args__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class BinaryMessage(_Event):
    """A whole binary message; binary is not part of roomcast's protocol, so only its size."""

    __slots__ = ("size",)
    __match_args__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


class Ping(_Event):
    """A ping; the caller answers with pong_frame(payload)."""

    __slots__ = ("payload",)
    __match_args__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class Pong(_Event):
    """A pong (solicited or not)."""

    __slots__ = ("payload",)
    __match_args__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class CloseReceived(_Event):
    """The client's close frame; `code` is None when its payload was empty."""

    __slots__ = ("code", "reason")
    __match_args__ = ("code", "reason")

    def __init__(self, code: int | None, reason: str) -> None:
        self.code = code
        self.reason = reason


Event: TypeAlias = TextMessage | BinaryMessage | Ping | Pong | CloseReceived


class FrameError(Exception):
    """The peer broke RFC 6455: close the connection with `code` (1002, 1007 or 1009) and
    `reason`. `events` holds what the same feed() completed before the violation."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason
        self.events: list[Event] = []

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"


def _close_event(payload: bytes) -> CloseReceived:
    """Parse a close frame's payload (RFC 6455 §5.5.1, §7.4)."""
    if not payload:
        return CloseReceived(None, "")
    if len(payload) == 1:
        raise FrameError(1002, "a close payload must hold a 2-byte code")
    code = (payload[0] << 8) | payload[1]
    if not _valid_close_code(code):
        raise FrameError(1002, f"close code {code} is not valid on the wire")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(1007, "the close reason is not valid UTF-8") from None
    return CloseReceived(code, reason)


# --- the frame reader --------------------------------------------------------------------


class FrameReader:
    """Parses the masked frames a client sends, with bounded memory: a message over
    `max_message_bytes` is refused from its header, before its payload is buffered.

    Lengths must use the minimal encoding (RFC 6455 §5.2 says MUST); a longer one is a 1002.
    `held` and `in_message` tell a caller what an unfinished message costs, so that it can
    bound that in time and node-wide (see roomcast.limits); they cost nothing per frame.
    """

    # _buf: the bytes of one partial frame, or None when there are none.
    # _opcode: 1 or 2 while a fragmented text or binary message is in progress, else 0;
    #   _CLOSED after a close frame or a violation (then every feed returns []).
    # _text: the unmasked fragments of the text message in progress in one buffer (a list
    #   would cost ~40 bytes a fragment on top of its payload), else None. Binary: counted.
    # _size: the payload bytes of the fragmented message in progress, else 0.
    # _messages: how many whole text or binary messages have been parsed.
    __slots__ = ("_buf", "_max", "_messages", "_opcode", "_size", "_text")

    def __init__(self, max_message_bytes: int) -> None:
        self._max = max_message_bytes
        self._buf: bytearray | None = None
        self._opcode = 0
        self._text: bytearray | None = None
        self._size = 0
        self._messages = 0

    @property
    def closed(self) -> bool:
        """No more events will come: a close frame, a violation or close() ended the stream."""
        return self._opcode == _CLOSED

    @property
    def held(self) -> int:
        """Bytes held for what is not complete yet: the text message's fragments so far and
        the partly received frame (header included); 0 between messages and once closed."""
        text = self._text
        buf = self._buf
        return (0 if text is None else len(text)) + (0 if buf is None else len(buf))

    @property
    def in_message(self) -> bool:
        """Whether a message (or any frame) has begun and not finished."""
        return self._opcode > 0 or self._buf is not None

    @property
    def messages(self) -> int:
        """How many whole text and binary messages were parsed (a new one is in progress
        when this moved while `in_message` stayed true)."""
        return self._messages

    def close(self) -> None:
        """Let go of every buffer and ignore further input: the connection is ending (or is
        being failed for a violation)."""
        self._opcode = _CLOSED
        self._buf = None
        self._text = None
        self._size = 0

    def feed(self, data: bytes) -> list[Event]:
        """Add received bytes; return every complete event they finish, in order (often []).
        Raises FrameError on a violation; the reader then ignores any further bytes."""
        buf = self._buf
        if buf is None and not self._opcode:
            # Fast path: exactly one small masked FIN text frame, parsed straight from `data`.
            n = len(data) - 6
            if 0 <= n <= 125 and data[0] == 0x81 and data[1] == 0x80 + n and n <= self._max:
                try:
                    message = TextMessage((
                        int.from_bytes(data[6:], "little")
                        ^ int.from_bytes((data[2:6] * ((n >> 2) + 1))[:n], "little")
                    ).to_bytes(n, "little").decode("utf-8"))
                except UnicodeDecodeError:
                    self.close()
                    raise FrameError(1007, "a text message is not valid UTF-8") from None
                self._messages += 1
                return [message]
        elif self._opcode == _CLOSED:
            return []
        if buf is not None:
            buf += data
        events: list[Event] = []
        try:
            pos = self._parse(data if buf is None else buf, events)
        except FrameError as exc:
            self.close()
            exc.events = events
            raise
        except UnicodeDecodeError:
            self.close()
            error = FrameError(1007, "a text message is not valid UTF-8")
            error.events = events
            raise error from None
        if self._opcode == _CLOSED:
            self._buf = None
        elif buf is not None:  # we parsed the pending bytearray: drop what was consumed
            if pos:
                del buf[:pos]
            if not buf:
                self._buf = None
        elif pos < len(data):
            self._buf = bytearray(memoryview(data)[pos:])
        return events

    def _parse(self, data: bytes | bytearray, events: list[Event]) -> int:
        """Append the events of every complete frame in `data` to `events`; return the offset
        of the first byte not consumed. Each check runs as soon as its bytes are present."""
        pos = 0
        end_data = len(data)
        while end_data - pos >= 2:
            b0 = data[pos]
            b1 = data[pos + 1]
            opcode = b0 & 0x0F
            if b0 & 0x70:
                raise FrameError(1002, "reserved bits must be 0: no extension was negotiated")
            if not b1 & 0x80:
                raise FrameError(1002, "client frames must be masked")
            length = b1 & 0x7F
            start = pos + 6
            if opcode & 0x08:
                if opcode > 0x0A:
                    raise FrameError(1002, f"unknown opcode {opcode:#x}")
                if not b0 & 0x80:
                    raise FrameError(1002, "control frames must not be fragmented")
                if length > MAX_CONTROL_PAYLOAD:
                    raise FrameError(1002, "control frame payloads are at most 125 bytes")
            else:
                if opcode > 2:
                    raise FrameError(1002, f"unknown opcode {opcode:#x}")
                if opcode:
                    if self._opcode:
                        raise FrameError(
                            1002, "a new message started before the fragmented one finished")
                elif not self._opcode:
                    raise FrameError(1002, "a continuation frame without a message to continue")
                if length == 126:
                    if end_data - pos < 4:
                        break
                    length = (data[pos + 2] << 8) | data[pos + 3]
                    if length < 126:
                        raise FrameError(1002, "payload length not minimally encoded")
                    start = pos + 8
                elif length == 127:
                    if end_data - pos < 10:
                        break
                    length = int.from_bytes(data[pos + 2:pos + 10], "big")
                    if length >> 63:
                        raise FrameError(1002, "64-bit payload length has its top bit set")
                    if length < 0x10000:
                        raise FrameError(1002, "payload length not minimally encoded")
                    start = pos + 14
                if self._size + length > self._max:
                    raise FrameError(1009, f"message larger than {self._max} bytes")
            end = start + length
            if end > end_data:
                break
            pos = end
            fin = b0 & 0x80
            if opcode == 2 or (opcode == 0 and self._opcode == 2):
                # Binary: never unmasked, only counted.
                if fin:
                    events.append(BinaryMessage(self._size + length))
                    self._messages += 1
                    self._opcode = 0
                    self._size = 0
                else:
                    self._opcode = 2
                    self._size += length
                continue
            payload = (
                int.from_bytes(data[start:end], "little")
                ^ int.from_bytes((data[start - 4:start] * ((length >> 2) + 1))[:length], "little")
            ).to_bytes(length, "little")
            if opcode == 1:
                if fin:
                    events.append(TextMessage(payload.decode("utf-8")))
                    self._messages += 1
                else:
                    self._opcode = 1
                    self._text = bytearray(payload)
                    self._size = length
            elif opcode == 0:  # continues a text message
                text = self._text
                assert text is not None
                text += payload
                if fin:
                    self._opcode = 0
                    self._text = None
                    self._size = 0
                    events.append(TextMessage(text.decode("utf-8")))
                    self._messages += 1
                else:
                    self._size += length
            elif opcode == 0x09:
                events.append(Ping(payload))
            elif opcode == 0x0A:
                events.append(Pong(payload))
            else:  # close: whatever follows it is ignored
                events.append(_close_event(payload))
                self._opcode = _CLOSED
                self._text = None
                self._size = 0
                return pos
        return pos
