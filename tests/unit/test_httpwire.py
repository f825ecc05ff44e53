"""roomcast.httpwire: whole requests out of any chunking, every limit, and responses that
h11 (the reference client) reads back."""

from __future__ import annotations

import json
from typing import Any

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomcast.httpwire import (
    CONTINUE,
    MAX_HEAD_BYTES,
    HttpError,
    Request,
    RequestParser,
    error_body,
    response,
)

PIPELINE = (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /api/publish?a=1&a=2&b= HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n"
            + b'{"room":"r"}'[:11]
            + b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")


def requests_of(parser: RequestParser) -> list[Request]:
    out = []
    while (request := parser.next_request()) is not None:
        out.append(request)
    return out


def check_pipeline(requests: list[Request]) -> None:
    assert [(r.method, r.path) for r in requests] == [
        ("GET", "/healthz"), ("POST", "/api/publish"), ("GET", "/readyz")]
    assert requests[1].body == b'{"room":"r"'
    assert requests[1].query() == {"a": "1", "b": ""}
    assert [r.keep_alive for r in requests] == [True, True, False]


def test_pipelined_requests_come_out_whole_and_in_order() -> None:
    parser = RequestParser(1024)
    parser.feed(PIPELINE)
    check_pipeline(requests_of(parser))
    assert parser.idle


@given(st.lists(st.integers(1, len(PIPELINE)), max_size=12))
def test_any_chunking_gives_the_same_requests(cuts: list[int]) -> None:
    parser = RequestParser(1024)
    got: list[Request] = []
    previous = 0
    for cut in [*sorted(set(cuts)), len(PIPELINE)]:
        parser.feed(PIPELINE[previous:cut])
        previous = cut
        got += requests_of(parser)
    check_pipeline(got)


def test_a_body_arriving_later_is_waited_for() -> None:
    parser = RequestParser(1024)
    parser.feed(b"POST /api/batch HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
    assert parser.next_request() is None
    assert parser.in_body and parser.pending_path == "/api/batch"
    parser.feed(b"cd")
    request = parser.next_request()
    assert request is not None and request.body == b"abcd"
    assert parser.idle


def test_blank_lines_between_requests_are_ignored() -> None:
    parser = RequestParser(1024)
    parser.feed(b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n\r\n")
    assert [r.path for r in requests_of(parser)] == ["/"]
    assert parser.idle


def test_http_1_0_closes_unless_asked_to_keep_alive() -> None:
    parser = RequestParser(1024)
    parser.feed(b"GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert [r.keep_alive for r in requests_of(parser)] == [False, True]


def test_expect_100_continue_is_due_only_while_the_body_is_missing() -> None:
    parser = RequestParser(1024)
    parser.feed(b"POST /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                b"Content-Length: 2\r\n\r\n")
    assert parser.next_request() is None
    assert parser.continue_due
    parser.feed(b"{}")
    assert parser.next_request() is not None
    assert not parser.continue_due
    assert CONTINUE.startswith(b"HTTP/1.1 100 ")


@pytest.mark.parametrize(("data", "status"), [
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * MAX_HEAD_BYTES, 431,
                 id="head-too-long-unfinished"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n",
                 431, id="head-too-long"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n\r\n", 413,
                 id="body-too-long"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501,
                 id="gzip"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                 b"Content-Length: 3\r\n\r\n", 400, id="chunked-and-a-length"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"zz\r\n", 400, id="chunk-size-not-hex"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"3\r\nabcX\r\n", 400, id="chunk-without-crlf"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"401\r\n", 413, id="chunk-over-the-limit"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 + b"1" * 5000, 400, id="chunk-size-line-too-long"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5"
                 b"\r\n\r\n", 400, id="two-lengths"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400,
                 id="negative-length"),
    pytest.param(b"GET / HTTP/1.1\r\n\r\n", 400, id="no-host"),
    pytest.param(b"GET /\r\n\r\n", 400, id="no-version"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400, id="folded-line"),
])
def test_what_cannot_be_read_or_is_over_a_limit_is_refused_and_closes(data: bytes,
                                                                       status: int) -> None:
    parser = RequestParser(1024)
    parser.feed(data)
    with pytest.raises(HttpError) as caught:
        parser.next_request()
    assert caught.value.status == status
    assert caught.value.close
    assert len(caught.value.message) > 20  # says what to do


def test_a_body_at_the_limit_is_taken() -> None:
    parser = RequestParser(4)
    parser.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd")
    request = parser.next_request()
    assert request is not None and request.body == b"abcd"


def test_a_parser_can_start_with_a_head_read_elsewhere() -> None:
    from roomcast.websocket import parse_request_head

    head = parse_request_head(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nab")
    assert head is not None
    parser = RequestParser(1024)
    parser.start_with(head)
    assert parser.next_request() is None
    parser.feed(b"c")
    request = parser.next_request()
    assert request is not None and (request.path, request.body) == ("/p", b"abc")


@pytest.mark.parametrize("keep_alive", [True, False])
@pytest.mark.parametrize("head_only", [True, False])
def test_responses_read_back_with_h11(keep_alive: bool, head_only: bool) -> None:
    body = error_body("bad_request", 'a "quoted"\nline')
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="HEAD" if head_only else "GET", target="/",
                            headers=[("host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(response(400, body, keep_alive=keep_alive, head_only=head_only,
                                 headers=(("Allow", "GET"),)))
    answer = client.next_event()
    assert isinstance(answer, h11.Response)
    assert answer.status_code == 400
    headers = dict(answer.headers)
    assert headers[b"allow"] == b"GET"
    assert headers[b"content-length"] == str(len(body)).encode()
    assert (headers.get(b"connection") == b"close") is not keep_alive
    got = b""
    while not isinstance(event := client.next_event(), h11.EndOfMessage):
        assert isinstance(event, h11.Data)
        got += event.data
    assert got == (b"" if head_only else body)
    if not head_only:
        assert json.loads(got) == {"error": "bad_request", "message": 'a "quoted"\nline'}


HEAD_LINES = st.sampled_from([
    b"Host: x", b"host: y", b"Content-Length: 5", b"X-A:  spaced value  ", b"X-A: again",
    b"Bad Name: 1", b"X-Ctl: a\x01b", b"X-Tab:\tv\t", b"X-Empty:", b" folded", b"X-Lf: a\nb",
    b"X-High: caf\xe9", b"Upgrade: websocket", b"NoColon",
])
REQUEST_LINES = st.sampled_from([
    b"GET / HTTP/1.1", b"POST /api/publish?x=1 HTTP/1.1", b"GET / HTTP/1.0", b"GET /",
    b"G@T / HTTP/1.1", b"GET  / HTTP/1.1", b"GET / HTTP/2.0", b"GET /\x7f HTTP/1.1",
])


@given(REQUEST_LINES, st.lists(HEAD_LINES, max_size=6),
       st.sampled_from([b"\r\n", b"\n"]), st.binary(max_size=8))
def test_the_fast_head_parser_agrees_with_the_shared_one(
        request_line: bytes, lines: list[bytes], eol: bytes, rest: bytes) -> None:
    from roomcast import websocket as ws
    from roomcast.httpwire import parse_head

    data = eol.join([request_line, *lines]) + eol + eol + rest

    def outcome(parse: Any) -> Any:
        try:
            head = parse(data)
        except ws.HandshakeError as exc:
            return ("error", exc.status, exc.message)
        if head is None:
            return None
        return (head.method, head.target, head.http_version, head.headers, head.rest)

    assert outcome(parse_head) == outcome(ws.parse_request_head)


def test_a_longer_body_is_taken_only_on_its_path_and_once_vouched_for() -> None:
    vouched: list[str] = []

    def vouch(head: Any) -> None:
        if head.headers.get("authorization") != "ok":
            raise HttpError(401, "unauthorized", "the API key is wrong", close=True)
        vouched.append(head.target)

    def parse(path: str, length: int, auth: str = "ok") -> Request | None:
        parser = RequestParser(10, {"/big": 100}, vouch)
        parser.feed(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
                    f"Content-Length: {length}\r\n\r\n".encode() + b"x" * length)
        return parser.next_request()

    assert parse("/small", 10) is not None and parse("/big", 10) is not None
    assert vouched == []  # within max_body: nobody is asked
    request = parse("/big?q=1", 100)
    assert request is not None and len(request.body) == 100
    assert vouched == ["/big?q=1"]
    for path, length, auth, status in (("/small", 11, "ok", 413), ("/big", 101, "ok", 413),
                                       ("/big", 50, "wrong", 401)):
        with pytest.raises(HttpError) as caught:
            parse(path, length, auth)
        assert (caught.value.status, caught.value.close) == (status, True)


@given(st.binary(max_size=600), st.lists(st.integers(1, 50), max_size=30),
       st.lists(st.integers(1, 700), max_size=12), st.booleans())
def test_a_chunked_body_comes_out_whole_under_any_chunking(
        body: bytes, sizes: list[int], cuts: list[int], extras: bool) -> None:
    chunks, rest = [], body
    for size in sizes:
        if rest:
            chunks.append(rest[:size])
            rest = rest[size:]
    if rest:
        chunks.append(rest)
    ext = b";name=value" if extras else b""
    encoded = b"".join(b"%x%b\r\n%b\r\n" % (len(c), ext, c) for c in chunks)
    encoded += b"0\r\n" + (b"X-Trailer: 1\r\n" if extras else b"") + b"\r\n"
    data = (b"POST /api/batch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + encoded + b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    parser = RequestParser(1024)
    got: list[Request] = []
    previous = 0
    for cut in [*sorted(set(c for c in cuts if c < len(data))), len(data)]:
        parser.feed(data[previous:cut])
        previous = cut
        got += requests_of(parser)
    assert [(r.path, r.body) for r in got] == [("/api/batch", body), ("/next", b"")]
    assert parser.idle
