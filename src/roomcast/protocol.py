"""The wire protocol, sans IO: command types, validation, frame encoding, codes.

Commands are msgspec Structs tagged on `type`; `parse` turns one text frame into a
command or a `ProtocolError` that already knows the reply to send. Server frames are
encoded here, and `text_frame` wraps a payload in an unmasked WebSocket frame header.
"""

from __future__ import annotations

import math
import re
from collections.abc import Container
from datetime import UTC, datetime
from typing import Annotated, Any, Final

import msgspec

from roomcast.codes import ErrorCode
from roomcast.errors import RoomcastError
from roomcast.streams import HistoryPage

ROOM_RE: Final = re.compile(r"[A-Za-z0-9_\-:.@/]{1,200}")
MAX_ID_CHARS: Final = 64

CommandId = int | str | None


def valid_room(room: str) -> bool:
    """A room name is 1 to 200 characters from `A-Z a-z 0-9 _ - : . @ /`."""
    return ROOM_RE.fullmatch(room) is not None


def bad_room_message(room: str) -> str:
    """What is wrong with a room name that is not valid, and the rule to follow."""
    return (f"{room[:200]!r} is not a valid room name; use 1 to 200 characters from "
            "A-Z a-z 0-9 _ - : . @ /")


def check_room(room: str) -> None:
    """ValueError (with the rule) unless `room` is a valid room name."""
    if not valid_room(room):
        raise ValueError(bad_room_message(room))


# ---------------------------------------------------------------- commands (§4)
class Command(msgspec.Struct, tag_field="type", kw_only=True, frozen=True):
    """Base of every client command: all may carry an `id` echoed in the reply."""

    id: CommandId = None


class SincePosition(msgspec.Struct, frozen=True):
    """Where a client left a room's stream."""

    offset: Annotated[int, msgspec.Meta(ge=0)]
    epoch: str


class Subscribe(Command, tag="subscribe", frozen=True):
    rooms: Annotated[list[str], msgspec.Meta(min_length=1, max_length=100)]
    events: list[str] | None = None
    where: dict[str, Any] | None = None
    since: dict[str, SincePosition] | None = None
    presence: bool = False


class Unsubscribe(Command, tag="unsubscribe", frozen=True):
    rooms: Annotated[list[str], msgspec.Meta(min_length=1, max_length=100)]


class Publish(Command, tag="publish", frozen=True):
    room: str
    event: str | None = None
    data: msgspec.Raw = msgspec.Raw(b"null")
    idempotency_key: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class History(Command, tag="history", frozen=True):
    room: str
    since: Annotated[int, msgspec.Meta(ge=0)] | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100


class Presence(Command, tag="presence", frozen=True):
    room: str


class Refresh(Command, tag="refresh", frozen=True):
    token: str


class Ping(Command, tag="ping", frozen=True):
    pass


ClientCommand = Subscribe | Unsubscribe | Publish | History | Presence | Refresh | Ping
KNOWN_TYPES: Final = frozenset(
    {"subscribe", "unsubscribe", "publish", "history", "presence", "refresh", "ping"}
)


class CustomCommand(msgspec.Struct, frozen=True):
    """A command type registered by an embedding app: its payload as a plain dict."""

    type: str
    id: CommandId
    payload: dict[str, Any]


class _Envelope(msgspec.Struct):
    type: Any = None
    id: Any = None


class ProtocolError(RoomcastError):
    """A frame that cannot be executed: `code` and the `id` to echo in the error reply."""

    def __init__(self, code: ErrorCode, message: str, id: CommandId = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = id

    def frame(self) -> bytes:
        return error_frame(self.code, self.message, self.id)


_command_decoder = msgspec.json.Decoder(ClientCommand)
# float_hook: a number beyond a double (1e400) must not hide what else is wrong with a frame.
_envelope_decoder = msgspec.json.Decoder(_Envelope, float_hook=float)
_json_decoder = msgspec.json.Decoder(float_hook=float)
_any_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def _clean_id(raw: Any) -> CommandId:
    """The id to echo, or ProtocolError when it is not a short string or integer."""
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "id must be a string or an integer")
    encoded = _encoder.encode(raw)  # UTF-8: count characters, not bytes, when it matters
    if len(encoded) > MAX_ID_CHARS and len(encoded.decode()) > MAX_ID_CHARS:
        raise ProtocolError(ErrorCode.BAD_REQUEST,
                            f"id must be at most {MAX_ID_CHARS} characters as JSON")
    return raw


def parse(
    text: str | bytes, custom_types: Container[str] = frozenset()
) -> ClientCommand | CustomCommand:
    """One text frame to a command; raises ProtocolError with the reply to send."""
    try:
        return _parse(text, custom_types)
    except RecursionError:  # grammatical JSON, nested deeper than the decoder goes
        raise ProtocolError(ErrorCode.BAD_REQUEST, "the frame nests JSON too deeply") from None


def _parse(
    text: str | bytes, custom_types: Container[str] = frozenset()
) -> ClientCommand | CustomCommand:
    try:
        command: ClientCommand = _command_decoder.decode(text)
    except msgspec.DecodeError as exc:
        failure = exc
    else:
        _clean_id(command.id)
        return command
    # The slow path: find out what was wrong, and the id to echo.
    try:
        envelope = _envelope_decoder.decode(text)
    except msgspec.ValidationError:
        try:  # not an object; but is it JSON at all? (`[1,` fails as "not an object" first)
            _json_decoder.decode(text)
        except msgspec.ValidationError:
            pass
        except msgspec.DecodeError:
            raise ProtocolError(ErrorCode.BAD_JSON, "frame is not valid JSON") from None
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a command must be a JSON object") from None
    except msgspec.DecodeError:
        raise ProtocolError(ErrorCode.BAD_JSON, "frame is not valid JSON") from None
    try:
        command_id = _clean_id(envelope.id)
    except ProtocolError:
        raise
    kind = envelope.type
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a command needs a string `type`", command_id)
    if kind in custom_types:
        payload = _any_decoder.decode(text)
        return CustomCommand(type=kind, id=command_id, payload=payload)
    if kind not in KNOWN_TYPES:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown command type {kind[:64]!r}",
                            command_id)
    raise ProtocolError(ErrorCode.BAD_REQUEST, str(failure), command_id)


# ---------------------------------------------------------------- server frames (§5)
_second: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text


def iso_time(ts: float) -> str:
    """Unix seconds to ISO 8601 UTC with milliseconds (truncated) and a `Z`. The date and
    time of day are formatted once per second: messages of one second share them."""
    second = math.floor(ts)
    micros = round((ts - second) * 1_000_000)  # as datetime rounds (half to even)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    global _second
    cached = _second  # one read: another thread may replace it meanwhile
    if second != cached[0]:
        cached = _second = (
            second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{cached[1]}.{micros // 1000:03d}Z"


def encode(frame: dict[str, Any]) -> bytes:
    """A server frame (a dict) as JSON bytes."""
    return _encoder.encode(frame)


def error_frame(code: ErrorCode | str, message: str, id: CommandId = None) -> bytes:
    return _encoder.encode({"type": "error", "id": id, "code": code, "message": message})


class MessageTemplate(msgspec.Struct, frozen=True):
    """A message frame split around its offset, so whoever assigns the offset (this
    process or a Lua script in Redis) builds the payload with one concatenation."""

    head: bytes
    tail: bytes

    def build(self, offset: int) -> bytes:
        return b"%b%d%b" % (self.head, offset, self.tail)


def message_template(
    room: str, data: bytes, event: str | None, sender: str | None, ts: float
) -> MessageTemplate:
    """The two parts of a message frame around its offset (see MessageTemplate)."""
    head = b'{"type":"message","room":%b,"offset":' % _encoder.encode(room)
    tail = b',"event":%b,"data":%b,"sender":%b,"ts":"%b"}' % (
        _encoder.encode(event),
        data,
        _encoder.encode(sender),
        iso_time(ts).encode(),
    )
    return MessageTemplate(head, tail)


def history_body(room: str, page: HistoryPage, **extra: Any) -> bytes:
    """A `history` answer (`extra`, e.g. the command's id, after the type), its messages
    joined as stored: never decoded and encoded again."""
    head = _encoder.encode({"type": "history", **extra, "room": room, "epoch": page.epoch,
                            "offset": page.offset})
    return head[:-1] + b',"messages":[' + b",".join(page.messages) + b"]}"


class MessageView(msgspec.Struct):
    """What filters read from a message payload; decoded only when a filter needs it."""

    data: Any = None


# float_hook: numbers beyond a double (1e400) become inf instead of failing the decode.
_view_decoder = msgspec.json.Decoder(MessageView, float_hook=float)


def message_data(payload: bytes) -> Any:
    """The `data` of an encoded message frame; None when it cannot be decoded here (nested
    deeper than this stack allows), so that filters on it simply do not match."""
    try:
        return _view_decoder.decode(payload).data
    except (msgspec.DecodeError, RecursionError):
        return None


class _Unset:
    pass


_UNSET: Any = _Unset()


class LazyData:
    """A message's `data`, decoded the first time a filter asks, once per message."""

    __slots__ = ("_payload", "_value")

    def __init__(self, payload: bytes) -> None:
        self._payload = payload
        self._value: Any = _UNSET

    def __call__(self) -> Any:
        if self._value is _UNSET:
            self._value = message_data(self._payload)
        return self._value
