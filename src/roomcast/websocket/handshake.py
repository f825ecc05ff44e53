"""The WebSocket handshake, server side (RFC 6455 §4): the request head, the upgrade checks
and the `101` answer. Pure: no IO, no trio."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from typing import Final

from roomcast.errors import RoomcastError

_GUID: Final = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3


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


class HandshakeError(RoomcastError):
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
