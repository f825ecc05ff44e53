"""Every RFC 6455 frame of the server side: the frames it sends (text, ping, pong, close)
and a parser of the masked frames a client sends, yielding events. Pure: no IO, no trio."""

from __future__ import annotations

import struct
from typing import Final, TypeAlias

from roomcast.codes import LOCAL_ONLY_CLOSE_CODES, CloseCode, valid_on_wire
from roomcast.errors import RoomcastError

MAX_CONTROL_PAYLOAD = 125
_PROTOCOL: Final = CloseCode.PROTOCOL_ERROR  # what a violation of RFC 6455 closes with
_NOT_UTF8: Final = CloseCode.INVALID_DATA
_TOO_BIG: Final = CloseCode.TOO_BIG
_CLOSED: Final = -1  # FrameReader._opcode once a close (or a violation) has been seen
PING_FRAME: Final = b"\x89\x00"  # an unmasked ping with no payload (the heartbeat)


def text_frame(payload: bytes) -> bytes:
    """An unmasked final text frame (what a server sends), byte-identical to wsproto's."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload




def close_frame(code: int | None, reason: str = "") -> bytes:
    """An unmasked close frame. 1005/1006/1015 (or None) send an empty payload; the reason
    is cut to 123 bytes at a character boundary. Any other invalid code is a ValueError."""
    if code is None or code in LOCAL_ONLY_CLOSE_CODES:
        return b"\x88\x00"
    if not valid_on_wire(code):
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


class FrameError(RoomcastError):
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
        raise FrameError(_PROTOCOL, "a close payload must hold a 2-byte code")
    code = (payload[0] << 8) | payload[1]
    if not valid_on_wire(code):
        raise FrameError(_PROTOCOL, f"close code {code} is not valid on the wire")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(_NOT_UTF8, "the close reason is not valid UTF-8") from None
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
                    raise FrameError(_NOT_UTF8, "a text message is not valid UTF-8") from None
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
            error = FrameError(_NOT_UTF8, "a text message is not valid UTF-8")
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
        of the first byte not consumed. Each check runs as soon as its bytes are present.
        (One function on purpose: it runs for every frame a client sends, and calls per
        header field would cost more than the parsing itself.)"""
        pos = 0
        end_data = len(data)
        while end_data - pos >= 2:
            b0 = data[pos]
            b1 = data[pos + 1]
            opcode = b0 & 0x0F
            if b0 & 0x70:
                raise FrameError(_PROTOCOL, "reserved bits must be 0: no extension was negotiated")
            if not b1 & 0x80:
                raise FrameError(_PROTOCOL, "client frames must be masked")
            length = b1 & 0x7F
            start = pos + 6
            if opcode & 0x08:
                if opcode > 0x0A:
                    raise FrameError(_PROTOCOL, f"unknown opcode {opcode:#x}")
                if not b0 & 0x80:
                    raise FrameError(_PROTOCOL, "control frames must not be fragmented")
                if length > MAX_CONTROL_PAYLOAD:
                    raise FrameError(_PROTOCOL, "control frame payloads are at most 125 bytes")
            else:
                if opcode > 2:
                    raise FrameError(_PROTOCOL, f"unknown opcode {opcode:#x}")
                if opcode:
                    if self._opcode:
                        raise FrameError(
                            _PROTOCOL, "a new message started before the fragmented one finished")
                elif not self._opcode:
                    raise FrameError(_PROTOCOL,
                                     "a continuation frame without a message to continue")
                if length == 126:
                    if end_data - pos < 4:
                        break
                    length = (data[pos + 2] << 8) | data[pos + 3]
                    if length < 126:
                        raise FrameError(_PROTOCOL, "payload length not minimally encoded")
                    start = pos + 8
                elif length == 127:
                    if end_data - pos < 10:
                        break
                    length = int.from_bytes(data[pos + 2:pos + 10], "big")
                    if length >> 63:
                        raise FrameError(_PROTOCOL, "64-bit payload length has its top bit set")
                    if length < 0x10000:
                        raise FrameError(_PROTOCOL, "payload length not minimally encoded")
                    start = pos + 14
                if self._size + length > self._max:
                    raise FrameError(_TOO_BIG, f"message larger than {self._max} bytes")
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
