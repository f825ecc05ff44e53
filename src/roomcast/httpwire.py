"""HTTP/1.1 requests and responses as pure functions and an incremental parser: no IO.

The HTTP listener feeds a connection's bytes to a `RequestParser` and gets whole requests
back (head and body, keep-alive and pipelining included), or an `HttpError` that already
knows the answer to send. Request heads are read by the same parser as the WebSocket
port's (`roomcast.websocket.parse_request_head`); bodies come with `Content-Length` (bounded
before a byte of them is buffered) or chunked (bounded as they arrive).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Final
from urllib.parse import parse_qsl

import msgspec

from roomcast import websocket as ws
from roomcast.codes import ErrorCode
from roomcast.errors import RoomcastError

__all__ = [
    "MAX_HEAD_BYTES",
    "REASONS",
    "HttpError",
    "Request",
    "RequestParser",
    "error_body",
    "parse_head",
    "response",
]

MAX_HEAD_BYTES: Final = ws.MAX_HEAD_BYTES
REASONS: Final = {
    100: "Continue", 200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
    411: "Length Required", 413: "Content Too Large", 426: "Upgrade Required",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 503: "Service Unavailable",
}
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
JSON: Final = "application/json"
CHUNKED: Final = -1  # the "length" of a chunked body
MAX_CHUNK_LINE: Final = 4096  # a chunk-size line, extensions included
_SIZE, _DATA, _DATA_END, _TRAILER = range(4)
_encode: Final = msgspec.json.Encoder().encode
_TOKEN: Final = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_VALUE: Final = rb"(?:[\x21-\x7e\x80-\xff]+(?:[ \t]+[\x21-\x7e\x80-\xff]+)*)?"
# A whole CRLF head (without its blank line) in one match: the same rules as
# roomcast.websocket.parse_request_head applies line by line.
_CRLF_HEAD: Final = re.compile(_TOKEN + rb" [\x21-\x7e]+ HTTP/1\.[01](?:\r\n" + _TOKEN
                               + rb":[ \t]*" + _VALUE + rb"[ \t]*)*")


class HttpError(RoomcastError):
    """A request that gets an error answer: status, error code, a message saying what to
    do, extra headers; `close` when the connection cannot go on after it (its framing is
    lost, or a limit was passed)."""

    def __init__(self, status: int, code: str, message: str, *, close: bool = False,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.close = close
        self.headers = headers

    def body(self) -> bytes:
        return error_body(self.code, self.message)


def error_body(code: str, message: str) -> bytes:
    """`{"error": code, "message": message}` as JSON bytes."""
    return _encode({"error": code, "message": message})


class Request:
    """One whole request: method, target (path and query), headers with lower-cased names,
    the body, and whether the connection stays open after the answer."""

    __slots__ = ("body", "expects_continue", "headers", "http_version", "keep_alive",
                 "method", "path", "query_string", "target")

    def __init__(self, head: ws.RequestHead, body: bytes) -> None:
        self.method = head.method
        self.target = head.target
        self.http_version = head.http_version
        self.headers = head.headers
        self.body = body
        path, _, self.query_string = head.target.partition("?")
        self.path = path
        connection = head.headers.get("connection", "").lower()
        if head.http_version == "1.1":
            self.keep_alive = "close" not in connection
        else:
            self.keep_alive = "keep-alive" in connection
        self.expects_continue = head.headers.get("expect", "").lower() == "100-continue"

    def query(self) -> dict[str, str]:
        """The query parameters (the first of repeated names)."""
        out: dict[str, str] = {}
        for name, value in parse_qsl(self.query_string, keep_blank_values=True):
            out.setdefault(name, value)
        return out


def response(status: int, body: bytes, content_type: str = JSON, *,
             keep_alive: bool = True, headers: tuple[tuple[str, str], ...] = (),
             head_only: bool = False) -> bytes:
    """A whole HTTP/1.1 response; `head_only` for a HEAD request (no body, same length)."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
             f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"]
    for name, value in headers:
        lines.append(f"{name}: {value}\r\n")
    if not keep_alive:
        lines.append("Connection: close\r\n")
    lines.append("\r\n")
    head = "".join(lines).encode("latin-1")
    return head if head_only else head + body


def _content_length(head: ws.RequestHead, max_body: int,
                    setting: str = "max_message_bytes") -> int:
    """How many body bytes follow the head (-1: chunked); HttpError for what cannot be
    framed or is over `max_body` (both close the connection: the bytes that follow cannot
    be trusted)."""
    coding = head.headers.get("transfer-encoding")
    raw = head.headers.get("content-length")
    if coding is not None:
        if coding.strip().lower() != "chunked":
            raise HttpError(501, "not_implemented", f"Transfer-Encoding {coding[:32]!r} is "
                            "not supported; send the body as is with Content-Length, or "
                            "chunked", close=True)
        if raw is not None:
            raise HttpError(400, ErrorCode.BAD_REQUEST, "send either Content-Length or "
                            "Transfer-Encoding: chunked, not both", close=True)
        return CHUNKED
    if raw is None:
        return 0
    raw = raw.strip()
    if not raw.isdigit() or not raw.isascii():
        raise HttpError(400, ErrorCode.BAD_REQUEST, f"Content-Length must be one whole "
                        f"number of bytes, got {raw[:32]!r}", close=True)
    length = int(raw)
    if length > max_body:
        raise too_large(max_body, setting)
    return length


def too_large(limit: int, setting: str = "max_message_bytes") -> HttpError:
    return HttpError(413, "too_large", f"the body is larger than {limit} bytes "
                     f"({setting}); send less data", close=True)


class ChunkedBody:
    """A chunked body (RFC 9112 §7.1) decoded as its bytes arrive, bounded by `limit`;
    chunk extensions and trailers are read and ignored. Decoded bytes are copied out of
    the connection's buffer at once, so the buffer never holds more than a line."""

    __slots__ = ("body", "limit", "max_trailer", "remaining", "setting", "state",
                 "trailer_bytes")

    def __init__(self, limit: int, max_trailer: int = MAX_HEAD_BYTES,
                 setting: str = "max_message_bytes") -> None:
        self.limit = limit
        self.max_trailer = max_trailer
        self.setting = setting  # the name of the setting that is `limit`
        self.body = bytearray()
        self.state = _SIZE
        self.remaining = 0  # bytes of the current chunk still to come
        self.trailer_bytes = 0

    def feed(self, data: bytes) -> tuple[int, bool]:
        """Take what it can from `data`: (bytes taken, whether the body is whole). A line
        cut short is left in `data` for the next call. HttpError when it is malformed
        (400), longer than `limit` (413), or its trailers are too long (431)."""
        i, n = 0, len(data)
        while i < n:
            if self.state == _DATA:
                take = min(self.remaining, n - i)
                self.body += data[i:i + take]
                i += take
                self.remaining -= take
                if self.remaining == 0:
                    self.state = _DATA_END
                continue
            if self.state == _DATA_END:
                if n - i < 2:
                    break
                if data[i:i + 2] != b"\r\n":
                    raise _bad_chunk("a chunk's data must end with CRLF")
                i += 2
                self.state = _SIZE
                continue
            end = data.find(b"\r\n", i, i + MAX_CHUNK_LINE)
            if end < 0:
                if n - i >= MAX_CHUNK_LINE:
                    raise _bad_chunk(f"a chunk-size line is longer than {MAX_CHUNK_LINE} "
                                     "bytes")
                break
            line, i = data[i:end], end + 2
            if self.state == _TRAILER:
                if not line:
                    return i, True
                self.trailer_bytes += len(line) + 2
                if self.trailer_bytes > self.max_trailer:
                    raise HttpError(431, "too_large", "the trailer fields are longer than "
                                    f"{self.max_trailer} bytes", close=True)
                continue
            self._size_line(line)
        return i, False

    def _size_line(self, line: bytes) -> None:
        size_text = line.split(b";", 1)[0].strip(b" \t")
        if not size_text or size_text.strip(b"0123456789abcdefABCDEF") or len(size_text) > 16:
            raise _bad_chunk(f"a chunk size must be hexadecimal, got {line[:32]!r}")
        size = int(size_text, 16)
        if len(self.body) + size > self.limit:
            raise too_large(self.limit, self.setting)
        self.remaining = size
        self.state = _DATA if size else _TRAILER


def _bad_chunk(what: str) -> HttpError:
    return HttpError(400, ErrorCode.BAD_REQUEST, f"{what} (Transfer-Encoding: chunked, RFC "
                     "9112 section 7.1)", close=True)


class RequestParser:
    """A connection's bytes in, whole requests out, in order (pipelining is just bytes that
    are already here). Holds at most one head (`max_head`) and one body (`max_body`,
    or a `larger` one for a head `vouch` accepts) plus what a single read brought:
    nothing a client sends makes it hold more."""

    __slots__ = ("_buffer", "_chunked", "_head", "_length", "_searched", "continue_due",
                 "larger", "max_body", "max_head", "vouch")

    def __init__(self, max_body: int, larger: Mapping[str, int] | None = None,
                 vouch: Callable[[ws.RequestHead], None] | None = None,
                 max_head: int = MAX_HEAD_BYTES) -> None:
        self.max_body = max_body
        self.max_head = max_head
        # Paths whose bodies may be longer (up to the value), for a head `vouch` accepts
        # (it raises HttpError otherwise): a stranger is never buffered more than max_body.
        self.larger = larger or {}
        self.vouch = vouch
        self._buffer = b""
        self._searched = 0  # bytes of _buffer already searched for the end of a head
        self._head: ws.RequestHead | None = None  # a head whose body is still arriving
        self._length = 0
        self._chunked: ChunkedBody | None = None
        self.continue_due = False  # the client waits for `100 Continue` before its body

    @property
    def idle(self) -> bool:
        """No part of a request is here: between requests (or before the first)."""
        return self._head is None and not self._buffer

    @property
    def in_body(self) -> bool:
        return self._head is not None

    @property
    def pending_path(self) -> str | None:
        """The path of the request whose body is arriving, if any."""
        return self._head.target.partition("?")[0] if self._head is not None else None

    def feed(self, data: bytes) -> None:
        self._buffer = self._buffer + data if self._buffer else data

    def start_with(self, head: ws.RequestHead) -> None:
        """Begin with a head read elsewhere (another port's front door); HttpError as for
        next_request when its body cannot be framed or is too long."""
        self._accept_head(head)

    def _accept_head(self, head: ws.RequestHead) -> None:
        self._buffer = head.rest
        bigger = self.larger.get(head.target.partition("?")[0], 0) if self.vouch else 0
        limit = max(self.max_body, bigger)
        setting = "max_message_bytes" if limit == self.max_body else "http_max_batch_bytes"
        self._length = _content_length(head, limit, setting)
        if self._length == CHUNKED:  # its size is not known: vouched for up front
            if limit > self.max_body and self.vouch is not None:
                self.vouch(head)
            self._chunked = ChunkedBody(limit, self.max_head, setting)
        elif self._length > self.max_body and self.vouch is not None:
            self.vouch(head)
        self._head = head
        self.continue_due = (self._length > len(head.rest) or self._length == CHUNKED) and (
            head.headers.get("expect", "").lower() == "100-continue")

    def next_request(self) -> Request | None:
        """The next whole request, or None until more bytes arrive; HttpError for a head
        that is malformed (400) or too long (431), a body that is too long (413) or
        cannot be framed (400, 501) — all of which end the connection."""
        head = self._head
        if head is None:
            head = self._parse_head()
            if head is None:
                return None
            self._accept_head(head)
        if self._chunked is not None:
            taken, whole = self._chunked.feed(self._buffer)
            self._buffer = self._buffer[taken:]
            if not whole:
                return None
            body = bytes(self._chunked.body)
            self._chunked = None
        elif len(self._buffer) < self._length:
            return None
        elif self._length:
            body = self._buffer[:self._length]
            self._buffer = self._buffer[self._length:]
        else:
            body = b""
        request = Request(head, body)
        self._head = None
        self.continue_due = False
        return request

    def _parse_head(self) -> ws.RequestHead | None:
        data = self._buffer
        if data[:1] in (b"\r", b"\n"):  # blank lines before a request are ignored (RFC 9112)
            data = self._buffer = data.lstrip(b"\r\n")
            self._searched = 0
        if not data:
            return None
        limit = self.max_head
        try:
            head = parse_head(data, self._searched, limit)
        except ws.HandshakeError as exc:
            if len(data) > limit and not _has_end(data[:limit]):
                raise _head_too_long(limit) from None
            raise HttpError(400, ErrorCode.BAD_REQUEST, f"{exc.message} (the request head "
                            "must follow RFC 9112)", close=True) from None
        if head is None:
            if len(data) > limit:  # no end within the limit
                raise _head_too_long(limit)
            self._searched = len(data)
            return None
        if len(data) - len(head.rest) > limit:  # a bare-LF head past a lower limit
            raise _head_too_long(limit)
        self._searched = 0
        return head


def _head_too_long(limit: int) -> HttpError:
    return HttpError(431, "too_large", f"the request head is longer than {limit} bytes "
                     "(http_max_head_bytes); send fewer or shorter headers", close=True)


def parse_head(data: bytes, searched: int = 0, limit: int = MAX_HEAD_BYTES
               ) -> ws.RequestHead | None:
    """roomcast.websocket.parse_request_head, with a fast path for the usual head (CRLF
    line ends, valid): one match for the whole head instead of one per line, 2x faster.
    Anything else — bare LF, an incomplete or invalid head — goes to the shared parser,
    which decides and words the error. `limit` (the head's most bytes, its blank line
    included) may pass the shared parser's MAX_HEAD_BYTES for CRLF heads only."""
    end = data.find(b"\r\n\r\n", max(0, searched - 3), max(limit, MAX_HEAD_BYTES))
    if end < 0:
        if len(data) <= MAX_HEAD_BYTES:
            return ws.parse_request_head(data, searched)
        return _past_shared_limit(data, limit, searched)
    head = data[:end]
    if _CRLF_HEAD.fullmatch(head) is None:  # it matches no bare LF and no control character
        if end + 4 > MAX_HEAD_BYTES:
            raise ws.HandshakeError(400, "malformed request head; a head over "
                                    f"{MAX_HEAD_BYTES} bytes must be valid with CRLF line ends")
        return ws.parse_request_head(data, searched)
    request_line, *lines = head.decode("latin-1").split("\r\n")
    method, target, version = request_line.split(" ")
    headers: dict[str, str] = {}
    hosts = 0
    for line in lines:
        name, _, value = line.partition(":")
        name = name.lower()
        value = value.strip(" \t")
        if name in headers:
            headers[name] = f"{headers[name]}, {value}"
        else:
            headers[name] = value
        if name == "host":
            hosts += 1
    if hosts != 1 and version == "HTTP/1.1":
        return ws.parse_request_head(data, searched)  # its error
    return ws.RequestHead(method, target, version[5:], headers, data[end + 4:])


def _past_shared_limit(data: bytes, limit: int, searched: int) -> ws.RequestHead | None:
    """An unfinished head longer than the shared parser reads: wait for the rest while it
    may still be a CRLF head within `limit` (only the bytes not `searched` yet are)."""
    if len(data) > limit:
        raise ws.HandshakeError(400, f"the request head is longer than {limit} bytes")
    start = max(0, searched - 2)
    if start < MAX_HEAD_BYTES and _has_end(data, start, MAX_HEAD_BYTES):
        return ws.parse_request_head(data)  # a bare-LF head that ended within 16 KiB
    if _has_end(data, start):
        raise ws.HandshakeError(400, "malformed request head; a head over "
                                f"{MAX_HEAD_BYTES} bytes must have CRLF line ends")
    return None


def _has_end(data: bytes, start: int = 0, end: int | None = None) -> bool:
    """Whether a head's blank line (bare LF or CRLF) is in data[start:end], uncopied."""
    return data.find(b"\n\r\n", start, end) >= 0 or data.find(b"\n\n", start, end) >= 0
