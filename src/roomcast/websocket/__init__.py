"""The server side of RFC 6455 as pure functions and a frame parser: no IO, no trio.

The caller reads the upgrade request and the socket; this package says what is valid, what
to answer, and which events a client's bytes carry (in the spirit of h11 and wsproto):
`handshake` (the request head, the upgrade) and `frames` (every frame, both directions).
"""

from roomcast.websocket.frames import (
    MAX_CONTROL_PAYLOAD,
    PING_FRAME,
    BinaryMessage,
    CloseReceived,
    Event,
    FrameError,
    FrameReader,
    Ping,
    Pong,
    TextMessage,
    close_frame,
    pong_frame,
    text_frame,
)
from roomcast.websocket.handshake import (
    MAX_HEAD_BYTES,
    HandshakeError,
    RequestHead,
    accept_key,
    check_upgrade,
    parse_request_head,
    upgrade_response,
)

__all__ = [
    "MAX_CONTROL_PAYLOAD",
    "MAX_HEAD_BYTES",
    "PING_FRAME",
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
    "text_frame",
    "upgrade_response",
]
