"""Properties of roomcast.websocket.FrameReader: wsproto's client frames decode to what was
sent under any chunking, arbitrary bytes never escape as anything but FrameError and never
depend on the chunking, and whatever wsproto's server accepts, FrameReader reads the same."""

from __future__ import annotations

from itertools import pairwise
from typing import NamedTuple

from hypothesis import event, given
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from roomcast.websocket import (
    BinaryMessage,
    CloseReceived,
    Event,
    FrameError,
    FrameReader,
    Ping,
    Pong,
    TextMessage,
)

BIG_LIMIT = 1 << 20
MASK = b"\x9c\x01\x7e\xd3"


def feed_all(reader: FrameReader, chunks: list[bytes]) -> tuple[list[Event], int | None]:
    """Every event the chunks produce, then the FrameError code (None when there was none)."""
    events: list[Event] = []
    try:
        for chunk in chunks:
            events += reader.feed(chunk)
    except FrameError as error:
        return events + error.events, error.code
    return events, None


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` cut at `cuts` (sorted; repeats give empty chunks, which are fed too)."""
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


def chunkings(size: int) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, size), max_size=24)


# --- (a) wsproto's client frames -----------------------------------------------------------

texts = st.one_of(
    st.text(max_size=30),
    st.text(min_size=40, max_size=300),  # past 125 bytes: 16-bit lengths
    st.builds(lambda n, c: c * n, st.integers(0x10000, 0x10040), st.characters()),  # 64-bit
)
blobs = st.one_of(st.binary(max_size=200), st.integers(126, 3000).map(bytes))
control_payloads = st.binary(max_size=125)
close_codes = st.one_of(
    st.sampled_from([1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014]),
    st.integers(3000, 4999),
)


@st.composite
def client_script(draw: st.DrawFn) -> tuple[bytes, list[Event]]:
    """What a well-behaved client sends, encoded by wsproto, and the events it should give."""
    client = FrameProtocol(client=True, extensions=[])
    wire = bytearray()
    expected: list[Event] = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["text", "text", "binary", "ping", "pong"]))
        if kind == "ping":
            payload = draw(control_payloads)
            wire += client.ping(payload)
            expected.append(Ping(payload))
        elif kind == "pong":
            payload = draw(control_payloads)
            wire += client.pong(payload)
            expected.append(Pong(payload))
        else:
            fragments: list[str | bytes] = list(draw(
                st.lists(texts, min_size=1, max_size=4) if kind == "text"
                else st.lists(blobs, min_size=1, max_size=4)))
            for i, fragment in enumerate(fragments):
                last = i == len(fragments) - 1
                wire += client.send_data(fragment, fin=last)
                if not last and draw(st.booleans()):  # a control frame between fragments
                    payload = draw(control_payloads)
                    wire += client.ping(payload)
                    expected.append(Ping(payload))
            if kind == "text":
                expected.append(TextMessage("".join(f for f in fragments if isinstance(f, str))))
            else:
                expected.append(BinaryMessage(sum(len(f) for f in fragments)))
    close = draw(st.one_of(st.none(), st.just(()), st.tuples(close_codes, st.text(max_size=20))))
    if close is not None:
        if close:
            wire += client.close(close[0], close[1])
            expected.append(CloseReceived(close[0], close[1]))
        else:
            wire += client.close()
            expected.append(CloseReceived(None, ""))
        wire += draw(st.binary(max_size=20))  # ignored: it follows the close
    return bytes(wire), expected


@given(client_script(), st.data())
def test_wsproto_client_messages_decode_the_same_under_any_chunking(
    script: tuple[bytes, list[Event]], data: st.DataObject,
) -> None:
    wire, expected = script
    assert feed_all(FrameReader(BIG_LIMIT), [wire]) == (expected, None)
    chunks = split(wire, data.draw(chunkings(len(wire)), label="cuts"))
    assert feed_all(FrameReader(BIG_LIMIT), chunks) == (expected, None)


# --- hand-built frames, well-formed or not -------------------------------------------------


class Spec(NamedTuple):
    """One client frame to build: `length` overrides the announced payload length and
    `ext` forces 16 or 64 length bits (a non-minimal encoding when the payload is small)."""

    opcode: int
    payload: bytes
    fin: bool = True
    rsv: int = 0
    masked: bool = True
    ext: int | None = None
    length: int | None = None


def encode(spec: Spec) -> bytes:
    n = len(spec.payload) if spec.length is None else spec.length
    ext = spec.ext if spec.ext is not None else 0 if n < 126 else 16 if n < 0x10000 else 64
    if ext == 16 and n >= 0x10000:
        ext = 64
    head = bytes([(0x80 if spec.fin else 0) | spec.rsv | spec.opcode])
    mask_bit = 0x80 if spec.masked else 0
    if ext == 0:
        head += bytes([mask_bit | n])
    elif ext == 16:
        head += bytes([mask_bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([mask_bit | 127]) + n.to_bytes(8, "big")
    if not spec.masked:
        return head + spec.payload
    return head + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(spec.payload))


utf8 = st.text(max_size=30).map(str.encode)
utf8_or_not = st.one_of(utf8, utf8, utf8, st.binary(max_size=30))
wire_codes = st.one_of(
    st.sampled_from([1000, 1001, 1003, 1004, 1005, 1006, 1007, 1011, 1014, 1015, 1016, 2999]),
    st.integers(0, 0xFFFF),
)
valid_closes = st.one_of(
    st.just(b""),
    st.builds(lambda code, reason: code.to_bytes(2, "big") + reason, close_codes, utf8),
)
close_payloads = st.one_of(
    valid_closes, st.binary(min_size=1, max_size=1),
    st.builds(lambda code, reason: code.to_bytes(2, "big") + reason, wire_codes, utf8_or_not),
)


# "keep" first, so that failures shrink towards unbroken frames.
MUTATIONS = ["keep"] * 40 + ["fin", "rsv", "unmasked", "ext", "opcode", "length"]


@st.composite
def mutate(draw: st.DrawFn, spec: Spec, lengths: bool) -> Spec:
    """Usually `spec` itself; sometimes `spec` broken in one way (announcing a wrong payload
    length only if `lengths`: the frames that follow then no longer start where they should)."""
    how = draw(st.sampled_from(MUTATIONS))
    if how == "fin":
        return spec._replace(fin=not spec.fin)
    if how == "rsv":
        return spec._replace(rsv=draw(st.sampled_from([0x10, 0x20, 0x40])))
    if how == "unmasked":
        return spec._replace(masked=False)
    if how == "ext":
        return spec._replace(ext=draw(st.sampled_from([16, 64])))
    if how == "opcode":
        return spec._replace(opcode=draw(st.integers(0, 15)))
    if how == "length" and lengths:
        return spec._replace(
            length=draw(st.one_of(st.integers(0, 300), st.integers(0, 2**64 - 1))))
    return spec


@st.composite
def frame_specs(draw: st.DrawFn, lengths: bool = False) -> list[Spec]:
    """A client's frames: messages (fragments split anywhere, even inside a character, with
    controls between them) and controls; unless the stream is clean, also junk frames, bad
    payloads and now and then a frame broken by `mutate`."""
    clean = draw(st.booleans())
    kinds = ["text", "text", "binary", "ping", "pong", "close"] + ([] if clean else ["junk"])
    specs: list[Spec] = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(kinds))
        if kind in ("text", "binary"):
            texts = utf8 if clean else utf8_or_not
            body = draw(texts if kind == "text" else st.binary(max_size=40))
            if draw(st.integers(0, 9)) == 0:
                body *= draw(st.integers(5, 40))  # long enough for a 16-bit length
            pieces = split(body, draw(st.lists(st.integers(0, len(body)), max_size=3)))
            for i, piece in enumerate(pieces):
                first, last = i == 0, i == len(pieces) - 1
                opcode = (1 if kind == "text" else 2) if first else 0
                specs.append(Spec(opcode, piece, fin=last))
                if not last and draw(st.booleans()):
                    specs.append(Spec(draw(st.sampled_from([9, 10])), draw(st.binary(max_size=8))))
        elif kind in ("ping", "pong"):
            size = st.integers(0, 125) if clean else st.integers(120, 130)
            specs.append(Spec(9 if kind == "ping" else 10, bytes(draw(size))))
        elif kind == "close":
            specs.append(Spec(8, draw(valid_closes if clean else close_payloads)))
        else:
            specs.append(
                Spec(draw(st.integers(0, 15)), draw(st.binary(max_size=20)), draw(st.booleans())))
    return specs if clean else [draw(mutate(spec, lengths)) for spec in specs]


@st.composite
def arbitrary_bytes(draw: st.DrawFn) -> bytes:
    """Random bytes, or hand-built frames possibly cut short and followed by junk."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    wire = b"".join(encode(spec) for spec in draw(frame_specs(lengths=True)))
    wire = wire[:draw(st.integers(0, len(wire)))] if draw(st.booleans()) else wire
    return wire + draw(st.binary(max_size=10))


@given(arbitrary_bytes(), st.integers(0, 300), st.data())
def test_any_bytes_give_the_same_events_or_frame_error_under_any_chunking(
    wire: bytes, limit: int, data: st.DataObject,
) -> None:
    whole = feed_all(FrameReader(limit), [wire])  # anything but FrameError escapes and fails
    assert whole[1] in (None, 1002, 1007, 1009)
    chunks = split(wire, data.draw(chunkings(len(wire)), label="cuts"))
    assert feed_all(FrameReader(limit), chunks) == whole
    assert feed_all(FrameReader(limit), [wire[i:i + 1] for i in range(len(wire))]) == whole


# --- (c) differential against wsproto's server ---------------------------------------------


def wsproto_server(wire: bytes) -> tuple[list[Event], int | None]:
    """What wsproto's server-side FrameProtocol reads from `wire`, as our events."""
    server = FrameProtocol(client=False, extensions=[])
    server.receive_bytes(wire)
    events: list[Event] = []
    pieces: list[str] = []
    size = 0
    try:
        for frame in server.received_frames():
            payload = frame.payload
            if frame.opcode is Opcode.TEXT:
                assert isinstance(payload, str)
                pieces.append(payload)
                if frame.message_finished:
                    events.append(TextMessage("".join(pieces)))
                    pieces = []
            elif frame.opcode is Opcode.BINARY:
                assert isinstance(payload, bytes | bytearray)
                size += len(payload)
                if frame.message_finished:
                    events.append(BinaryMessage(size))
                    size = 0
            elif frame.opcode is Opcode.PING:
                assert isinstance(payload, bytes | bytearray)
                events.append(Ping(bytes(payload)))
            elif frame.opcode is Opcode.PONG:
                assert isinstance(payload, bytes | bytearray)
                events.append(Pong(bytes(payload)))
            else:
                assert isinstance(payload, tuple)
                code, reason = payload
                events.append(CloseReceived(None if code == 1005 else int(code), reason))
    except ParseFailed as failure:
        return events, int(failure.code)
    return events, None


@given(frame_specs())
def test_frame_reader_agrees_with_wsproto_server(specs: list[Spec]) -> None:
    # Whole frames only: a cut-short frame is "need more bytes" for one parser while the other
    # may already have refused its header. No message limit: wsproto's FrameProtocol has none.
    wire = b"".join(encode(spec) for spec in specs)
    ours, our_code = feed_all(FrameReader(BIG_LIMIT), [wire])
    theirs, their_code = wsproto_server(wire)
    event(f"ours {our_code}, wsproto {their_code}")
    if their_code is None:
        assert (ours, our_code) == (theirs, None)
    elif our_code is None:
        # Where we accept what wsproto refuses, by design:
        # - close code 1014 (IANA "Bad Gateway") is valid; wsproto does not know it, and
        # - wsproto checks UTF-8 fragment by fragment, we check whole messages, so bad bytes
        #   in a text message that never completes (input ends, or a close comes first) only
        #   fail in wsproto.
        assert ours[:len(theirs)] == theirs
        extra = ours[len(theirs):]
        if their_code == 1002:
            assert [(type(e), getattr(e, "code", None)) for e in extra] == [(CloseReceived, 1014)]
        else:
            assert their_code == 1007
    else:
        # Both refuse; each stops at the first violation it sees, and ours may see a bad
        # UTF-8 sequence later than wsproto, so one event list extends the other.
        shorter = min(len(ours), len(theirs))
        assert ours[:shorter] == theirs[:shorter]
