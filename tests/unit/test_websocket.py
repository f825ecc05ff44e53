"""roomcast.websocket: the upgrade checks, the frames the server sends, FrameReader on
hand-built client frames (including malformed ones) and on wsproto's client frames, and
parse_request_head on hand-built request heads."""

from __future__ import annotations

import contextlib
import pickle
import sys
import tracemalloc

import pytest
from wsproto.frame_protocol import FrameProtocol, Opcode

from roomcast.websocket import (
    MAX_CONTROL_PAYLOAD,
    MAX_HEAD_BYTES,
    BinaryMessage,
    CloseReceived,
    Event,
    FrameError,
    FrameReader,
    HandshakeError,
    Ping,
    Pong,
    RequestHead,
    TextMessage,
    accept_key,
    check_upgrade,
    close_frame,
    parse_request_head,
    pong_frame,
    upgrade_response,
)

MASK = b"\x37\xfa\x21\x3d"
KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # the RFC 6455 §1.3 example


def client_frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
    masked: bool = True, length: int | None = None, ext: int | None = None,
) -> bytes:
    """A client frame built by hand, so that malformed ones can be built too. `length`
    overrides the announced payload length; `ext` forces 0, 16 or 64 extra length bits."""
    n = len(payload) if length is None else length
    if ext is None:
        ext = 0 if n < 126 else 16 if n < 0x10000 else 64
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    mask_bit = 0x80 if masked else 0
    if ext == 0:
        head += bytes([mask_bit | n])
    elif ext == 16:
        head += bytes([mask_bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([mask_bit | 127]) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    return head + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


def text(s: str, *, fin: bool = True) -> bytes:
    return client_frame(0x1, s.encode(), fin=fin)


def fails(data: bytes, max_message_bytes: int = 1 << 20) -> FrameError:
    """The FrameError that feeding `data` in one go raises."""
    with pytest.raises(FrameError) as info:
        FrameReader(max_message_bytes).feed(data)
    return info.value


def headers(**overrides: str | None) -> dict[str, str]:
    """A valid upgrade request's headers, lower-cased, with some replaced or (None) dropped."""
    base: dict[str, str | None] = {
        "host": "example.com", "upgrade": "websocket", "connection": "Upgrade",
        "sec-websocket-version": "13", "sec-websocket-key": KEY,
    }
    base.update({name.replace("_", "-"): value for name, value in overrides.items()})
    return {name: value for name, value in base.items() if value is not None}


# --- handshake ---------------------------------------------------------------------------


def test_accept_key_matches_the_rfc_example() -> None:
    assert accept_key(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_check_upgrade_returns_the_key() -> None:
    assert check_upgrade("GET", "1.1", headers()) == KEY


def test_check_upgrade_reads_header_token_lists_case_insensitively() -> None:
    h = headers(upgrade="h2c, WebSocket", connection="keep-alive, UPGRADE")
    assert check_upgrade("GET", "1.1", h) == KEY


def test_non_get_upgrade_is_400() -> None:
    with pytest.raises(HandshakeError) as info:
        check_upgrade("POST", "1.1", headers())
    assert (info.value.status, info.value.message) == (400, "a WebSocket upgrade must be a GET")


@pytest.mark.parametrize("version", ["1.0", "2", "0.9"])
def test_upgrade_over_anything_but_http_1_1_is_400(version: str) -> None:
    with pytest.raises(HandshakeError) as info:
        check_upgrade("GET", version, headers())
    assert info.value.status == 400
    assert "HTTP/1.1" in info.value.message


@pytest.mark.parametrize("upgrade", [None, "", "h2c", "websockets"])
def test_upgrade_header_without_websocket_is_400(upgrade: str | None) -> None:
    with pytest.raises(HandshakeError) as info:
        check_upgrade("GET", "1.1", headers(upgrade=upgrade))
    assert info.value.status == 400
    assert "Upgrade: websocket" in info.value.message


@pytest.mark.parametrize("connection", [None, "", "keep-alive", "upgraded"])
def test_connection_header_without_upgrade_is_400(connection: str | None) -> None:
    with pytest.raises(HandshakeError) as info:
        check_upgrade("GET", "1.1", headers(connection=connection))
    assert info.value.status == 400
    assert "Connection: Upgrade" in info.value.message


@pytest.mark.parametrize("version", [None, "", "8", "12", "14", "13, 8"])
def test_websocket_version_other_than_13_is_426(version: str | None) -> None:
    with pytest.raises(HandshakeError) as info:
        check_upgrade("GET", "1.1", headers(sec_websocket_version=version))
    assert info.value.status == 426
    assert "13" in info.value.message


def test_missing_websocket_key_is_400() -> None:
    with pytest.raises(HandshakeError) as info:
        check_upgrade("GET", "1.1", headers(sec_websocket_key=None))
    assert info.value.status == 400
    assert "Sec-WebSocket-Key" in info.value.message


@pytest.mark.parametrize("key", [
    "not base64 at all!",
    "dGhlIHNhbXBsZSBub25jZQ",  # padding missing
    "dGhlIHNhbXBsZSBub25j",  # 15 bytes
    "dGhlIHNhbXBsZSBub25jZSE=",  # 17 bytes
    "dGhlIHNhbXBsZSBub25jZQ==\u00e9",  # not ASCII
])
def test_websocket_key_not_base64_of_16_bytes_is_400(key: str) -> None:
    with pytest.raises(HandshakeError) as info:
        check_upgrade("GET", "1.1", headers(sec_websocket_key=key))
    assert info.value.status == 400
    assert "16" in info.value.message


def test_upgrade_response_bytes() -> None:
    assert upgrade_response(KEY) == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    )


# --- server frames -----------------------------------------------------------------------


def server_frames(data: bytes) -> list[object]:
    """What wsproto's client makes of frames the server sent: (opcode, payload) pairs."""
    client = FrameProtocol(client=True, extensions=[])
    client.receive_bytes(data)
    return [(frame.opcode, frame.payload) for frame in client.received_frames()]


def test_close_frame_with_code_and_reason() -> None:
    assert close_frame(4401, "token expired") == b"\x88\x0f\x11\x31token expired"
    assert server_frames(close_frame(1000, "bye")) == [(Opcode.CLOSE, (1000, "bye"))]


def test_close_frame_truncates_an_ascii_reason_to_123_bytes() -> None:
    frame = close_frame(1000, "x" * 500)
    assert frame[1] == MAX_CONTROL_PAYLOAD
    assert frame[4:] == b"x" * 123


def test_close_frame_truncates_the_reason_at_a_character_boundary() -> None:
    frame = close_frame(1001, "é" * 100)  # 200 bytes; 123 would cut an "é" in half
    assert frame[1] == 2 + 122
    assert frame[4:].decode("utf-8") == "é" * 61
    assert server_frames(frame) == [(Opcode.CLOSE, (1001, "é" * 61))]


def test_close_frame_truncation_never_splits_a_four_byte_character() -> None:
    for prefix in range(4):
        reason = "a" * prefix + "😀" * 40
        payload = close_frame(1000, reason)[4:]
        assert len(payload) <= 123
        assert reason.startswith(payload.decode("utf-8"))
        assert len(payload) > 119  # drops at most the one split character


@pytest.mark.parametrize("code", [None, 1005, 1006, 1015])
def test_close_frame_with_no_wire_code_has_an_empty_payload(code: int | None) -> None:
    assert close_frame(code, "ignored") == b"\x88\x00"


@pytest.mark.parametrize("code", [0, 999, 1004, 1016, 2999, 5000, 70000])
def test_close_frame_refuses_a_code_that_is_invalid_on_the_wire(code: int) -> None:
    with pytest.raises(ValueError):
        close_frame(code)


def test_pong_frame() -> None:
    assert pong_frame(b"abc") == b"\x8a\x03abc"
    assert pong_frame(b"") == b"\x8a\x00"
    assert server_frames(pong_frame(b"p" * 125)) == [(Opcode.PONG, b"p" * 125)]


def test_pong_frame_refuses_a_payload_over_125_bytes() -> None:
    with pytest.raises(ValueError):
        pong_frame(b"p" * 126)


# --- FrameReader: well-formed input ------------------------------------------------------


def test_single_text_frame() -> None:
    assert FrameReader(1024).feed(text("hello")) == [TextMessage("hello")]


def test_empty_text_message() -> None:
    assert FrameReader(1024).feed(text("")) == [TextMessage("")]


def test_text_frame_split_at_every_byte_offset() -> None:
    message = '{"op":"publish","room":"lobby","data":"héllo"}'
    frame = text(message)
    for cut in range(len(frame) + 1):
        reader = FrameReader(1024)
        first = reader.feed(frame[:cut])
        assert first == ([] if cut < len(frame) else [TextMessage(message)])
        assert first + reader.feed(frame[cut:]) == [TextMessage(message)]


def test_frame_fed_one_byte_at_a_time() -> None:
    reader = FrameReader(1024)
    frame = text("x" * 300)
    events = [event for i in range(len(frame)) for event in reader.feed(frame[i:i + 1])]
    assert events == [TextMessage("x" * 300)]


def test_several_frames_in_one_feed() -> None:
    data = text("one") + client_frame(0x9, b"hb") + text("two") + client_frame(0xA, b"")
    assert FrameReader(1024).feed(data) == [
        TextMessage("one"), Ping(b"hb"), TextMessage("two"), Pong(b""),
    ]


def test_a_feed_can_end_inside_the_next_frame() -> None:
    reader = FrameReader(1024)
    second = text("second")
    assert reader.feed(text("first") + second[:3]) == [TextMessage("first")]
    assert reader.feed(second[3:]) == [TextMessage("second")]


def test_fragmented_text_with_a_ping_in_between() -> None:
    data = (
        client_frame(0x1, b"hel", fin=False) + client_frame(0x9, b"are you there")
        + client_frame(0x0, b"lo ", fin=False) + client_frame(0xA, b"pong")
        + client_frame(0x0, b"world")
    )
    assert FrameReader(1024).feed(data) == [
        Ping(b"are you there"), Pong(b"pong"), TextMessage("hello world"),
    ]


def test_utf8_character_split_across_fragments() -> None:
    encoded = "€".encode()  # 3 bytes
    data = (
        client_frame(0x1, encoded[:1], fin=False) + client_frame(0x0, encoded[1:2], fin=False)
        + client_frame(0x0, encoded[2:])
    )
    assert FrameReader(1024).feed(data) == [TextMessage("€")]


def test_binary_message_reports_only_its_size() -> None:
    assert FrameReader(1024).feed(client_frame(0x2, b"\x00\xff" * 10)) == [BinaryMessage(20)]


def test_fragmented_binary_message_sums_its_fragments() -> None:
    data = (
        client_frame(0x2, b"a" * 5, fin=False) + client_frame(0x9, b"")
        + client_frame(0x0, b"", fin=False) + client_frame(0x0, b"b" * 7)
    )
    assert FrameReader(1024).feed(data) == [Ping(b""), BinaryMessage(12)]


def test_16_bit_payload_length() -> None:
    message = "y" * 1000
    assert client_frame(0x1, message.encode())[1] == 0x80 | 126
    assert FrameReader(1024).feed(text(message)) == [TextMessage(message)]


def test_64_bit_payload_length() -> None:
    message = "z" * 70_000
    assert client_frame(0x1, message.encode())[1] == 0x80 | 127
    assert FrameReader(100_000).feed(text(message)) == [TextMessage(message)]


def test_message_exactly_at_the_limit_is_accepted() -> None:
    data = client_frame(0x1, b"a" * 60, fin=False) + client_frame(0x0, b"b" * 40)
    assert FrameReader(100).feed(data) == [TextMessage("a" * 60 + "b" * 40)]


def test_control_frames_do_not_count_towards_the_message_limit() -> None:
    data = client_frame(0x9, b"p" * 125) + text("0123456789")
    assert FrameReader(10).feed(data) == [Ping(b"p" * 125), TextMessage("0123456789")]


def test_partial_header_is_not_an_error() -> None:
    reader = FrameReader(1 << 20)
    assert reader.feed(b"\x81") == []
    assert reader.feed(b"\xfe\x01") == []  # 16-bit length, one of its bytes
    assert reader.feed(b"") == []


def test_frames_from_wsproto_client() -> None:
    client = FrameProtocol(client=True, extensions=[])
    data = (
        client.send_data("héllo ", fin=False) + client.ping(b"\x00\x01")
        + client.send_data("wörld", fin=True) + client.send_data(b"\x00" * 300)
        + client.pong(b"late") + client.send_data("x" * 70_000) + client.close(1000, "done")
    )
    assert FrameReader(100_000).feed(bytes(data)) == [
        Ping(b"\x00\x01"), TextMessage("héllo wörld"), BinaryMessage(300), Pong(b"late"),
        TextMessage("x" * 70_000), CloseReceived(1000, "done"),
    ]


# --- FrameReader: close ------------------------------------------------------------------


def test_close_with_code_and_reason() -> None:
    frame = client_frame(0x8, (4000).to_bytes(2, "big") + "au revoir ✓".encode())
    assert FrameReader(1024).feed(frame) == [CloseReceived(4000, "au revoir ✓")]


def test_empty_close_has_no_code() -> None:
    assert FrameReader(1024).feed(client_frame(0x8)) == [CloseReceived(None, "")]


def test_close_between_fragments_ends_the_stream() -> None:
    data = client_frame(0x1, b"half", fin=False) + client_frame(0x8, b"\x03\xe8")
    assert FrameReader(1024).feed(data) == [CloseReceived(1000, "")]


def test_bytes_after_close_are_ignored() -> None:
    reader = FrameReader(1024)
    assert reader.feed(client_frame(0x8, b"\x03\xe9") + text("late") + b"\x00garbage") == [
        CloseReceived(1001, ""),
    ]
    assert reader.feed(text("later")) == []
    assert reader.feed(b"\x00\x00 not even a frame") == []


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1010, 1014, 3000, 3999, 4000, 4999])
def test_close_accepts_every_valid_code(code: int) -> None:
    frame = client_frame(0x8, code.to_bytes(2, "big"))
    assert FrameReader(1024).feed(frame) == [CloseReceived(code, "")]


# --- FrameReader: violations -------------------------------------------------------------


def test_unmasked_frame_is_1002() -> None:
    error = fails(client_frame(0x1, b"hi", masked=False))
    assert (error.code, error.reason) == (1002, "client frames must be masked")


@pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10, 0x70])
def test_reserved_bits_are_1002(rsv: int) -> None:
    assert fails(client_frame(0x1, b"hi", rsv=rsv)).code == 1002


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_unknown_opcode_is_1002(opcode: int) -> None:
    error = fails(client_frame(opcode, b"hi"))
    assert error.code == 1002
    assert "opcode" in error.reason


@pytest.mark.parametrize("opcode", [0x8, 0x9, 0xA])
def test_fragmented_control_frame_is_1002(opcode: int) -> None:
    assert fails(client_frame(opcode, b"", fin=False)).code == 1002


@pytest.mark.parametrize("opcode", [0x8, 0x9, 0xA])
def test_control_frame_over_125_bytes_is_1002(opcode: int) -> None:
    assert fails(client_frame(opcode, b"\x03\xe8" + b"p" * 124)).code == 1002


def test_control_frame_with_a_16_bit_length_is_1002_from_its_first_two_bytes() -> None:
    assert fails(client_frame(0x9, b"", length=126)[:2]).code == 1002


def test_continuation_without_a_message_is_1002() -> None:
    assert fails(client_frame(0x0, b"orphan")).code == 1002


def test_continuation_after_a_finished_message_is_1002() -> None:
    assert fails(text("done") + client_frame(0x0, b"more")).code == 1002


@pytest.mark.parametrize("opcode", [0x1, 0x2])
def test_new_message_during_a_fragmented_one_is_1002(opcode: int) -> None:
    error = fails(client_frame(0x1, b"a", fin=False) + client_frame(opcode, b"b"))
    assert error.code == 1002


def test_64_bit_length_with_its_top_bit_set_is_1002() -> None:
    header = client_frame(0x2, b"", length=1 << 63, ext=64)[:10]
    assert fails(header).code == 1002


@pytest.mark.parametrize(("length", "ext"), [(5, 16), (125, 16), (5, 64), (0xFFFF, 64)])
def test_non_minimal_length_encoding_is_1002(length: int, ext: int) -> None:
    assert fails(client_frame(0x1, b"a" * length, ext=ext)).code == 1002


def test_oversized_message_is_1009_from_the_header_alone() -> None:
    header = client_frame(0x1, b"", length=1 << 40)[:14]  # a 1 TiB frame: only its header
    assert len(header) == 14
    error = fails(header, max_message_bytes=1000)
    assert (error.code, error.reason) == (1009, "message larger than 1000 bytes")


def test_oversized_16_bit_frame_is_1009_before_its_mask_arrives() -> None:
    reader = FrameReader(200)
    assert reader.feed(b"\x81") == []
    with pytest.raises(FrameError) as info:
        reader.feed(b"\xfe\x01\x00")  # 256 bytes announced
    assert info.value.code == 1009


def test_fragmented_message_over_the_limit_is_1009_at_the_fragment_that_crosses_it() -> None:
    reader = FrameReader(100)
    assert reader.feed(client_frame(0x1, b"a" * 60, fin=False)) == []
    with pytest.raises(FrameError) as info:
        reader.feed(client_frame(0x0, b"", length=41)[:6])
    assert (info.value.code, info.value.reason) == (1009, "message larger than 100 bytes")


def test_oversized_binary_message_is_1009() -> None:
    assert fails(client_frame(0x2, b"\x00" * 11), max_message_bytes=10).code == 1009


def test_invalid_utf8_text_is_1007() -> None:
    assert fails(client_frame(0x1, b"\xff\xfe")).code == 1007  # the one-frame fast path
    assert fails(text("ok") + client_frame(0x1, b"caf\xc3")).code == 1007  # the general path


def test_invalid_utf8_across_fragments_is_1007() -> None:
    data = client_frame(0x1, b"\xe2\x82", fin=False) + client_frame(0x0, b"A")
    assert fails(data).code == 1007


def test_close_with_a_one_byte_payload_is_1002() -> None:
    assert fails(client_frame(0x8, b"\x03")).code == 1002


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
def test_close_with_an_invalid_code_is_1002(code: int) -> None:
    assert fails(client_frame(0x8, code.to_bytes(2, "big"))).code == 1002


def test_close_reason_not_utf8_is_1007() -> None:
    assert fails(client_frame(0x8, b"\x03\xe8\xc0\xaf")).code == 1007


def test_frame_error_carries_the_events_completed_in_the_same_feed() -> None:
    error = fails(text("first") + client_frame(0x9, b"p") + client_frame(0x1, b"x", masked=False))
    assert error.code == 1002
    assert error.events == [TextMessage("first"), Ping(b"p")]


def test_reader_ignores_input_after_a_violation() -> None:
    reader = FrameReader(1024)
    with pytest.raises(FrameError):
        reader.feed(client_frame(0x3))
    assert reader.feed(text("after")) == []


# --- events and footprint ----------------------------------------------------------------


def test_events_compare_by_type_and_fields() -> None:
    assert Ping(b"a") == Ping(b"a")
    assert Ping(b"a") != Pong(b"a")
    assert CloseReceived(1000, "") != CloseReceived(None, "")
    assert repr(CloseReceived(1000, "bye")) == "CloseReceived(code=1000, reason='bye')"


def test_events_support_match() -> None:
    event: Event = TextMessage("hi")
    match event:
        case TextMessage(body):
            assert body == "hi"
        case _:
            pytest.fail("no match")


def test_idle_reader_is_a_few_slots() -> None:
    reader = FrameReader(65536)
    assert not hasattr(reader, "__dict__")
    assert sys.getsizeof(reader) <= 80
    reader.feed(text("abc")[:5])  # a partial frame is buffered...
    reader.feed(text("abc")[5:])
    assert reader._buf is None  # ...and dropped once the frame completes


# --- what an unfinished message holds ---------------------------------------------------


def test_held_counts_text_fragments_and_the_partial_frame() -> None:
    reader = FrameReader(1 << 20)
    assert (reader.held, reader.in_message, reader.messages) == (0, False, 0)
    reader.feed(text("abcd", fin=False))
    assert (reader.held, reader.in_message) == (4, True)
    frame = client_frame(0x0, b"efghij", fin=False)
    reader.feed(frame[:8])  # header (2) and mask (4) and 2 payload bytes of the next fragment
    assert reader.held == 4 + 8
    reader.feed(frame[8:])
    assert reader.held == 10
    assert reader.feed(client_frame(0x0, b"k")) == [TextMessage("abcdefghijk")]
    assert (reader.held, reader.in_message, reader.messages) == (0, False, 1)
    assert reader._text is None and reader._buf is None


def test_a_single_big_frame_trickling_in_is_held_as_it_arrives() -> None:
    reader = FrameReader(1 << 20)
    frame = client_frame(0x1, b"x" * 100_000)
    for i in range(0, 50_000, 1000):
        reader.feed(frame[i:i + 1000])
    assert (reader.held, reader.in_message) == (50_000, True)
    assert reader.feed(frame[50_000:]) == [TextMessage("x" * 100_000)]
    assert (reader.held, reader.in_message, reader.messages) == (0, False, 1)


def test_binary_fragments_are_counted_not_held() -> None:
    reader = FrameReader(1 << 20)
    reader.feed(client_frame(0x2, bytes(1000), fin=False))
    assert (reader.held, reader.in_message) == (0, True)  # begun, but nothing kept
    reader.feed(client_frame(0x0, bytes(10))[:7])
    assert reader.held == 7
    assert reader.feed(client_frame(0x0, bytes(10))[7:]) == [BinaryMessage(1010)]
    assert (reader.held, reader.in_message, reader.messages) == (0, False, 1)


def test_a_partial_control_frame_is_in_progress_but_not_a_message() -> None:
    reader = FrameReader(1 << 20)
    reader.feed(client_frame(0x9, b"ping")[:3])
    assert (reader.held, reader.in_message) == (3, True)
    assert reader.feed(client_frame(0x9, b"ping")[3:]) == [Ping(b"ping")]
    assert (reader.held, reader.in_message, reader.messages) == (0, False, 0)


def test_messages_counts_every_whole_data_message_fast_path_or_not() -> None:
    reader = FrameReader(1 << 20)
    reader.feed(text("a"))  # one small frame: the fast path
    reader.feed(text("b") + text("c") + client_frame(0x2, b"d") + client_frame(0x9))
    reader.feed(text("e", fin=False))
    assert (reader.messages, reader.in_message) == (4, True)
    reader.feed(client_frame(0x0, b"f") + text("g", fin=False))
    assert (reader.messages, reader.in_message) == (5, True)  # a new message in progress


def test_close_lets_go_of_everything_and_ends_the_stream() -> None:
    reader = FrameReader(1 << 20)
    reader.feed(text("x" * 5000, fin=False) + client_frame(0x0, b"y" * 100)[:50])
    assert reader.held == 5050
    reader.close()
    assert (reader.held, reader.in_message, reader.closed) == (0, False, True)
    assert reader._text is None and reader._buf is None
    assert reader.feed(client_frame(0x0, b"z")) == []


def test_a_violation_lets_go_of_what_was_held() -> None:
    reader = FrameReader(10_000)
    reader.feed(text("x" * 9000, fin=False))
    with pytest.raises(FrameError) as info:
        reader.feed(client_frame(0x0, b"y" * 2000))
    assert info.value.code == 1009
    assert (reader.held, reader.in_message, reader.closed) == (0, False, True)


def test_tiny_fragments_cost_about_their_payload_not_an_object_each() -> None:
    # 20,000 one-byte fragments: kept as ~40-byte objects each they would take ~800 kB.
    reader = FrameReader(1 << 20)
    frames = [text("a", fin=False)] + [client_frame(0x0, b"b", fin=False)] * 19_999
    tracemalloc.start()
    try:
        for frame in frames:
            reader.feed(frame)
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reader.held == 20_000
    assert current < 3 * 20_000


def test_errors_survive_pickling() -> None:
    shake = pickle.loads(pickle.dumps(HandshakeError(426, "speak 13")))
    assert (shake.status, shake.message, str(shake)) == (426, "speak 13", "426: speak 13")
    frame = pickle.loads(pickle.dumps(FrameError(1009, "too big")))
    assert (frame.code, frame.reason, str(frame)) == (1009, "too big", "1009: too big")


# --- parse_request_head ------------------------------------------------------------------

UPGRADE = (
    b"GET /ws?token=abc HTTP/1.1\r\n"
    b"Host: example.com:8000\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Origin: http://example.com\r\n"
    b"\r\n"
)
UPGRADE_HEADERS = {
    "host": "example.com:8000",
    "user-agent": "Mozilla/5.0 (X11; Linux x86_64)",
    "upgrade": "websocket",
    "connection": "Upgrade",
    "sec-websocket-key": KEY,
    "sec-websocket-version": "13",
    "origin": "http://example.com",
}
HeadFields = tuple[str, str, str, dict[str, str], bytes]


def fields(head: RequestHead | None) -> HeadFields | None:
    """A head's fields as a tuple (RequestHead has no __eq__), or None."""
    if head is None:
        return None
    return head.method, head.target, head.http_version, head.headers, head.rest


def parsed(data: bytes) -> HeadFields:
    """The fields of the head that `data` must hold."""
    result = fields(parse_request_head(data))
    assert result is not None, f"{data!r} parsed as incomplete"
    return result


def refused(data: bytes) -> HandshakeError:
    """The HandshakeError (a 400) that parsing `data` raises."""
    with pytest.raises(HandshakeError) as info:
        parse_request_head(data)
    assert info.value.status == 400
    return info.value


def request(*header_lines: bytes, line: bytes = b"GET / HTTP/1.1") -> bytes:
    """A request head with a Host header, then `header_lines`, CRLF line ends."""
    return b"\r\n".join([line, b"Host: x", *header_lines]) + b"\r\n\r\n"


def test_parse_request_head_reads_a_typical_upgrade_request() -> None:
    head = parse_request_head(UPGRADE)
    assert isinstance(head, RequestHead)
    assert fields(head) == ("GET", "/ws?token=abc", "1.1", UPGRADE_HEADERS, b"")
    assert check_upgrade(head.method, head.http_version, head.headers) == KEY


def test_parse_request_head_reads_a_head_without_headers() -> None:
    assert parsed(b"GET /healthz HTTP/1.0\r\n\r\n") == ("GET", "/healthz", "1.0", {}, b"")


@pytest.mark.parametrize("head", [
    UPGRADE,
    UPGRADE.replace(b"\r\n", b"\n"),
    b"GET /healthz HTTP/1.1\r\nHost: x\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
], ids=["crlf", "lf", "mixed", "no-headers"])
def test_parse_request_head_is_none_until_the_head_is_complete(head: bytes) -> None:
    rest = b"\x81\x85" + MASK  # the start of a client frame, sent on the head's heels
    data = head + rest
    whole = parsed(data)
    for cut in range(len(data) + 1):
        expected = None if cut < len(head) else (*whole[:4], rest[:cut - len(head)])
        assert fields(parse_request_head(data[:cut])) == expected, cut


def test_parse_request_head_keeps_the_bytes_after_the_head_in_rest() -> None:
    after = text("hello") + b"GET / HTTP/1.1\r\n\r\n" + b"\r\n\r\n"
    assert parsed(UPGRADE + after)[4] == after


def test_parse_request_head_joins_repeated_headers() -> None:
    head = request(b"Sec-WebSocket-Protocol: chat", b"Accept: */*",
                   b"sec-websocket-protocol: superchat", b"SEC-WEBSOCKET-PROTOCOL: v2")
    assert parsed(head)[3] == {
        "host": "x", "sec-websocket-protocol": "chat, superchat, v2", "accept": "*/*"}


def test_parse_request_head_joins_an_empty_repeat_too() -> None:
    assert parsed(request(b"X-A: 1", b"X-A:", b"X-A:  2"))[3]["x-a"] == "1, , 2"


def test_parse_request_head_lower_cases_names() -> None:
    assert list(parsed(request(b"X-MiXeD-CaSe: Value"))[3]) == ["host", "x-mixed-case"]


def test_parse_request_head_strips_whitespace_around_values_but_keeps_inner_whitespace() -> None:
    head = request(b"X-Padded: \t a  b\tc \t ", b"X-Tight:v", b"X-Empty: \t ")
    assert parsed(head)[3] == {
        "host": "x", "x-padded": "a  b\tc", "x-tight": "v", "x-empty": ""}


def test_parse_request_head_decodes_obs_text_in_values_as_latin_1() -> None:
    assert parsed(request(b"X-Name: Andr\xc3\xa9"))[3]["x-name"] == "Andr\xc3\xa9"


def test_parse_request_head_accepts_bare_lf_line_ends() -> None:
    assert parsed(UPGRADE.replace(b"\r\n", b"\n")) == parsed(UPGRADE)


def test_parse_request_head_refuses_obsolete_line_folding() -> None:
    refused(request(b"X-Folded: first", b" second"))
    refused(request(b"X-Folded: first", b"\tsecond"))


def test_parse_request_head_refuses_whitespace_before_the_colon() -> None:
    refused(request(b"Upgrade : websocket"))
    refused(request(b"Upgrade\t: websocket"))


def test_parse_request_head_refuses_an_empty_header_name() -> None:
    refused(request(b": value"))


def test_parse_request_head_refuses_a_non_token_header_name() -> None:
    refused(request(b"X(y): value"))
    refused(request(b"X\xe9: value"))


def test_parse_request_head_refuses_a_header_line_without_a_colon() -> None:
    refused(request(b"Upgrade websocket"))


@pytest.mark.parametrize("char", [b"\x00", b"\x01", b"\x0b", b"\x0c", b"\x1f", b"\x7f", b"\r"])
def test_parse_request_head_refuses_a_control_character_in_a_value(char: bytes) -> None:
    refused(request(b"X-Value: a" + char + b"b"))


def test_parse_request_head_refuses_http_2_0() -> None:
    refused(request(line=b"GET / HTTP/2.0"))


@pytest.mark.parametrize("line", [b"GET /", b"GET / HTTP/0.9"])
def test_parse_request_head_refuses_http_0_9(line: bytes) -> None:
    refused(line + b"\r\n\r\n")


@pytest.mark.parametrize("line", [b"GET / HTTP/1.2", b"GET / http/1.1", b"GET / HTTP/1.1x"])
def test_parse_request_head_refuses_other_versions(line: bytes) -> None:
    refused(request(line=line))


def test_parse_request_head_refuses_a_request_line_without_a_target() -> None:
    refused(request(line=b"GET HTTP/1.1"))
    refused(request(line=b"GET  HTTP/1.1"))


@pytest.mark.parametrize("line", [
    b"GET  / HTTP/1.1", b"GET /  HTTP/1.1", b" GET / HTTP/1.1", b"GET / HTTP/1.1 ",
    b"GET\t/ HTTP/1.1",
])
def test_parse_request_head_refuses_extra_whitespace_in_the_request_line(line: bytes) -> None:
    refused(request(line=line))


def test_parse_request_head_refuses_a_non_ascii_target() -> None:
    refused(request(line=b"GET /caf\xc3\xa9 HTTP/1.1"))


def test_parse_request_head_refuses_a_blank_line_before_the_request_line() -> None:
    refused(b"\r\n" + UPGRADE)


@pytest.mark.parametrize("blank", [b" ", b"\t", b" \t "])
def test_parse_request_head_refuses_a_line_of_only_whitespace(blank: bytes) -> None:
    refused(request(blank, b"Upgrade: websocket"))
    refused(request(b"Upgrade: websocket", blank))


def test_parse_request_head_refuses_a_head_over_max_head_bytes_as_soon_as_it_exceeds_it() -> None:
    data = b"GET / HTTP/1.1\r\nX-Long: " + b"a" * MAX_HEAD_BYTES
    assert parse_request_head(data[:MAX_HEAD_BYTES]) is None
    error = refused(data[:MAX_HEAD_BYTES + 1])
    assert str(MAX_HEAD_BYTES) in error.message


def test_parse_request_head_refuses_a_complete_head_over_max_head_bytes() -> None:
    refused(request(b"X-Long: " + b"a" * MAX_HEAD_BYTES))


def test_parse_request_head_accepts_a_head_of_max_head_bytes() -> None:
    start = b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: "
    value = b"a" * (MAX_HEAD_BYTES - len(start) - 4)
    head = start + value + b"\r\n\r\n"  # MAX_HEAD_BYTES, its terminator included
    assert len(head) == MAX_HEAD_BYTES
    assert parsed(head)[3] == {"host": "x", "x-long": value.decode()}


@pytest.mark.parametrize("extra", [1, 2, 3, 4])
def test_parse_request_head_over_the_limit_is_refused_however_it_arrives(extra: int) -> None:
    # A head whose blank line ends 1-4 bytes past MAX_HEAD_BYTES: refused whole, and never
    # accepted when its last bytes come in a later read.
    start = b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: "
    head = start + b"a" * (MAX_HEAD_BYTES + extra - 4 - len(start)) + b"\r\n\r\n"
    with pytest.raises(HandshakeError):
        parse_request_head(head)
    for cut in range(MAX_HEAD_BYTES - 4, len(head)):
        with contextlib.suppress(HandshakeError):
            assert parse_request_head(head[:cut]) is None


@pytest.mark.parametrize("head", [
    b"GET / HTTP/1.1\r\nHost: x\r\r\n\r\n",
    b"GET / HTTP/1.1\r\r\n\r\n",
])
def test_parse_request_head_refuses_a_bare_cr_before_the_last_line_end(head: bytes) -> None:
    refused(head)


@pytest.mark.parametrize("hosts", [b"", b"Host: a\r\nHost: b\r\n"])
def test_parse_request_head_refuses_http_1_1_without_exactly_one_host(hosts: bytes) -> None:
    with pytest.raises(HandshakeError) as exc:
        parse_request_head(b"GET / HTTP/1.1\r\n" + hosts + b"\r\n")
    assert exc.value.status == 400 and "Host" in exc.value.message


def test_parse_request_head_accepts_http_1_0_without_host() -> None:
    head = parse_request_head(b"GET /healthz HTTP/1.0\r\n\r\n")
    assert head is not None and head.headers == {}


def test_parse_request_head_scans_only_new_bytes_when_told_what_was_searched() -> None:
    head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    for cut in range(1, len(head)):
        assert parse_request_head(head[:cut]) is None
        again = parse_request_head(head, cut)
        assert again is not None and again.headers == {"host": "x"}
