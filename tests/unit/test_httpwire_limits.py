"""RequestParser's head limit (http_max_head_bytes) below and above the shared parser's
16 KiB, CRLF and bare-LF heads alike, fed whole and in pieces."""

from __future__ import annotations

import pytest

from roomcast.httpwire import MAX_HEAD_BYTES, HttpError, RequestParser


def head_of(size: int, eol: bytes = b"\r\n") -> bytes:
    start = b"GET /healthz HTTP/1.1" + eol + b"Host: x" + eol + b"X-Pad: "
    return start + b"a" * (size - len(start) - 2 * len(eol)) + eol + eol


def parse(data: bytes, limit: int, piece: int | None = None) -> RequestParser:
    parser = RequestParser(1000, max_head=limit)
    step = piece or len(data)
    for i in range(0, len(data), step):
        parser.feed(data[i:i + step])
        request = parser.next_request()
        if request is not None:
            assert request.path == "/healthz"
            return parser
    raise AssertionError("no whole request")


@pytest.mark.parametrize("eol", [b"\r\n", b"\n"])
def test_a_lower_limit_refuses_a_head_one_byte_over(eol: bytes) -> None:
    parse(head_of(1000, eol), 1000)
    with pytest.raises(HttpError) as info:
        parse(head_of(1001, eol), 1000)
    assert info.value.status == 431 and "http_max_head_bytes" in info.value.message


@pytest.mark.parametrize("piece", [None, 1000, 7])
def test_a_higher_limit_takes_a_crlf_head_past_16_kib(piece: int | None) -> None:
    parse(head_of(MAX_HEAD_BYTES * 2, b"\r\n"), MAX_HEAD_BYTES * 2, piece)
    with pytest.raises(HttpError) as info:
        parse(head_of(MAX_HEAD_BYTES * 2 + 1, b"\r\n"), MAX_HEAD_BYTES * 2, piece)
    assert info.value.status == 431


def test_past_16_kib_a_bare_lf_head_is_refused_with_what_to_do() -> None:
    with pytest.raises(HttpError) as info:
        parse(head_of(MAX_HEAD_BYTES + 100, b"\n"), MAX_HEAD_BYTES * 2)
    assert info.value.status in (400, 431)
    assert "CRLF" in info.value.message or "longer than" in info.value.message


def test_a_bare_lf_head_within_16_kib_is_read_under_a_higher_limit() -> None:
    parse(head_of(MAX_HEAD_BYTES - 10, b"\n"), MAX_HEAD_BYTES * 2, 4096)
