"""protocol.parse and the server-side frame builders, against contract §3–§5."""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol

from roomcast import protocol as p
from roomcast.codes import ErrorCode
from roomcast.websocket import PING_FRAME, text_frame

ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def parse(frame: dict[str, Any] | str) -> Any:
    return p.parse(json.dumps(frame) if isinstance(frame, dict) else frame)


def refused(frame: dict[str, Any] | str) -> p.ProtocolError:
    with pytest.raises(p.ProtocolError) as info:
        parse(frame)
    return info.value


# ------------------------------------------------------------------ every command type
def test_subscribe_parses_with_every_field() -> None:
    cmd = parse({"type": "subscribe", "id": 1, "rooms": ["project:12", "project:99"],
                 "events": ["task.created"], "where": {"account_id": "123"},
                 "since": {"project:12": {"offset": 41, "epoch": "e-9f2c"}},
                 "presence": True})
    assert isinstance(cmd, p.Subscribe)
    assert cmd.id == 1
    assert cmd.rooms == ["project:12", "project:99"]
    assert cmd.events == ["task.created"]
    assert cmd.where == {"account_id": "123"}
    assert cmd.since == {"project:12": p.SincePosition(41, "e-9f2c")}
    assert cmd.presence is True


def test_subscribe_optional_fields_default_to_none_and_false() -> None:
    cmd = parse({"type": "subscribe", "rooms": ["a"]})
    assert isinstance(cmd, p.Subscribe)
    assert (cmd.id, cmd.events, cmd.where, cmd.since, cmd.presence) == (
        None, None, None, None, False)


def test_unsubscribe_parses() -> None:
    cmd = parse({"type": "unsubscribe", "id": "u", "rooms": ["a", "b"]})
    assert isinstance(cmd, p.Unsubscribe)
    assert (cmd.id, cmd.rooms) == ("u", ["a", "b"])


def test_publish_parses_and_keeps_data_as_raw_bytes() -> None:
    cmd = p.parse(b'{"type":"publish","id":3,"room":"channel:456","event":"message.new",'
                  b'"data":{"text": "hi"},"idempotency_key":"k1"}')
    assert isinstance(cmd, p.Publish)
    assert (cmd.id, cmd.room, cmd.event, cmd.idempotency_key) == (
        3, "channel:456", "message.new", "k1")
    assert bytes(cmd.data) == b'{"text": "hi"}'


def test_publish_without_data_or_event_means_null() -> None:
    cmd = parse({"type": "publish", "room": "r"})
    assert isinstance(cmd, p.Publish)
    assert cmd.event is None
    assert bytes(cmd.data) == b"null"


@pytest.mark.parametrize("data", [None, 1, 2.5, "s", [1, "x"], {"a": {"b": [True]}}, False])
def test_publish_data_may_be_any_json(data: Any) -> None:
    cmd = parse({"type": "publish", "room": "r", "data": data})
    assert json.loads(bytes(cmd.data)) == data


def test_history_parses_with_defaults() -> None:
    cmd = parse({"type": "history", "id": 6, "room": "project:12"})
    assert isinstance(cmd, p.History)
    assert (cmd.since, cmd.limit) == (None, 100)
    cmd = parse({"type": "history", "id": 6, "room": "project:12", "since": 40, "limit": 2})
    assert (cmd.since, cmd.limit) == (40, 2)


def test_presence_refresh_and_ping_parse() -> None:
    presence = parse({"type": "presence", "id": 5, "room": "project:12"})
    assert isinstance(presence, p.Presence) and presence.room == "project:12"
    refresh = parse({"type": "refresh", "id": 7, "token": "abc"})
    assert isinstance(refresh, p.Refresh) and refresh.token == "abc"
    ping = parse({"type": "ping", "id": 8})
    assert isinstance(ping, p.Ping) and ping.id == 8


def test_custom_types_parse_to_a_custom_command_with_the_whole_payload() -> None:
    cmd = p.parse('{"type":"request_metrics","id":"m","window":5}',
                  custom_types={"request_metrics"})
    assert cmd == p.CustomCommand("request_metrics", "m",
                                  {"type": "request_metrics", "id": "m", "window": 5})


# ------------------------------------------------------------------ ids
@pytest.mark.parametrize("command_id", [0, -7, 2**53, "", "abc", "a" * 62])
def test_string_and_integer_ids_are_accepted(command_id: int | str) -> None:
    assert parse({"type": "ping", "id": command_id}).id == command_id


def test_an_id_of_64_json_characters_is_accepted_and_65_refused() -> None:
    assert parse({"type": "ping", "id": "x" * 62}).id == "x" * 62  # 64 with the quotes
    assert refused({"type": "ping", "id": "x" * 63}).code == ErrorCode.BAD_REQUEST
    assert parse({"type": "ping", "id": int("9" * 64)}).id == int("9" * 64)
    assert refused({"type": "ping", "id": int("9" * 65)}).code == ErrorCode.BAD_REQUEST


def test_id_length_counts_characters_not_utf8_bytes() -> None:
    """62 two-byte characters are 64 characters as JSON (66 bytes): still allowed."""
    frame = '{"type":"ping","id":"' + "é" * 62 + '"}'
    assert p.parse(frame).id == "é" * 62


@pytest.mark.parametrize("bad_id", [True, False, 1.5, 1.0, {"a": 1}, [1]])
def test_bool_float_object_and_list_ids_are_bad_requests(bad_id: Any) -> None:
    error = refused({"type": "ping", "id": bad_id})
    assert error.code == ErrorCode.BAD_REQUEST
    assert error.id is None  # nothing sensible to echo


def test_a_bad_id_is_refused_even_on_an_otherwise_bad_command() -> None:
    assert refused({"type": "subscribe", "id": True, "rooms": 3}).code == ErrorCode.BAD_REQUEST


# ------------------------------------------------------------------ extra and wrong fields
def test_unknown_extra_fields_are_ignored() -> None:
    cmd = parse({"type": "publish", "id": 1, "room": "r", "data": 1, "colour": "blue",
                 "nested": {"x": [1]}})
    assert isinstance(cmd, p.Publish) and cmd.room == "r"
    assert isinstance(parse({"type": "ping", "whatever": None}), p.Ping)


@pytest.mark.parametrize("frame", [
    {"type": "subscribe", "id": 9, "rooms": "project:1"},
    {"type": "subscribe", "id": 9, "rooms": []},
    {"type": "subscribe", "id": 9, "rooms": [f"r{i}" for i in range(101)]},
    {"type": "subscribe", "id": 9, "rooms": [1]},
    {"type": "subscribe", "id": 9, "rooms": ["a"], "events": "task.created"},
    {"type": "subscribe", "id": 9, "rooms": ["a"], "where": ["account_id"]},
    {"type": "subscribe", "id": 9, "rooms": ["a"], "presence": "yes"},
    {"type": "subscribe", "id": 9, "rooms": ["a"], "since": {"a": 4}},
    {"type": "subscribe", "id": 9, "rooms": ["a"], "since": {"a": {"offset": 1}}},
    {"type": "subscribe", "id": 9, "rooms": ["a"], "since": {"a": {"offset": -1, "epoch": "e"}}},
    {"type": "subscribe", "id": 9},
    {"type": "unsubscribe", "id": 9, "rooms": "a"},
    {"type": "publish", "id": 9, "room": 12},
    {"type": "publish", "id": 9, "data": 1},
    {"type": "publish", "id": 9, "room": "r", "event": 5},
    {"type": "publish", "id": 9, "room": "r", "idempotency_key": 5},
    {"type": "publish", "id": 9, "room": "r", "idempotency_key": "k" * 65},
    {"type": "history", "id": 9, "room": "r", "limit": 0},
    {"type": "history", "id": 9, "room": "r", "limit": 1001},
    {"type": "history", "id": 9, "room": "r", "since": -1},
    {"type": "history", "id": 9, "room": "r", "since": "4"},
    {"type": "presence", "id": 9},
    {"type": "refresh", "id": 9, "token": 5},
    {"type": "refresh", "id": 9},
])
def test_a_wrong_field_type_is_a_bad_request_echoing_the_id(frame: dict[str, Any]) -> None:
    error = refused(frame)
    assert error.code == ErrorCode.BAD_REQUEST
    assert error.id == 9
    assert error.message


def test_an_idempotency_key_of_64_characters_is_accepted() -> None:
    cmd = parse({"type": "publish", "room": "r", "idempotency_key": "k" * 64})
    assert cmd.idempotency_key == "k" * 64


def test_an_unknown_type_is_unknown_type_echoing_the_id() -> None:
    error = refused({"type": "teleport", "id": "t1"})
    assert (error.code, error.id) == (ErrorCode.UNKNOWN_TYPE, "t1")


@pytest.mark.parametrize("frame", [{"id": 3}, {"id": 3, "type": 5}, {"id": 3, "type": None}])
def test_a_missing_or_non_string_type_is_a_bad_request(frame: dict[str, Any]) -> None:
    error = refused(frame)
    assert (error.code, error.id) == (ErrorCode.BAD_REQUEST, 3)


@pytest.mark.parametrize("text", ["not json", "{", '{"type": "ping",}', "", "\x00"])
def test_text_that_is_not_json_is_bad_json(text: str) -> None:
    assert refused(text).code == ErrorCode.BAD_JSON


@pytest.mark.parametrize("text", ["[1, 2]", '"ping"', "42", "null", "true"])
def test_json_that_is_not_an_object_is_a_bad_request(text: str) -> None:
    assert refused(text).code == ErrorCode.BAD_REQUEST


def test_protocol_error_frame_is_the_contract_error_shape() -> None:
    error = refused({"type": "teleport", "id": 3})
    frame = json.loads(error.frame())
    assert frame == {"type": "error", "id": 3, "code": "unknown_type", "message": error.message}


# ------------------------------------------------------------------ room names
@pytest.mark.parametrize("room", [
    "a", "project:12", "workspace:acme:board-1", "user:alice@example.com", "a/b.c_d-e",
    "Z" * 200, "ABCxyz0189_-:.@/",
])
def test_valid_room_names(room: str) -> None:
    assert p.valid_room(room)


@pytest.mark.parametrize("room", [
    "", "Z" * 201, "with space", "star*", "q?", "tab\t", "new\nline", "é", "a#b", "a,b",
    "room\x00", "[x]",
])
def test_invalid_room_names(room: str) -> None:
    assert not p.valid_room(room)


# ------------------------------------------------------------------ frames
@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 1000, 65535, 65536, 70_000, 1_048_576])
def test_text_frame_is_byte_identical_to_wsproto_server_framing(size: int) -> None:
    payload = b"y" * size
    wsproto_frame = FrameProtocol(client=False, extensions=[]).send_data(
        payload.decode(), fin=True)
    assert text_frame(payload) == bytes(wsproto_frame)


def test_ping_frame_is_wsproto_s_empty_ping() -> None:
    frame = FrameProtocol(client=False, extensions=[]).ping(b"")
    assert bytes(frame) == PING_FRAME


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_iso_time_is_what_datetime_formats(ts: float) -> None:
    from datetime import UTC, datetime

    expected = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"
    assert p.iso_time(ts) == expected


def test_iso_time_is_utc_with_milliseconds_and_z() -> None:
    assert p.iso_time(0) == "1970-01-01T00:00:00.000Z"
    assert p.iso_time(1_795_343_400.1239) == "2026-11-22T10:30:00.123Z"
    assert ISO_Z.fullmatch(p.iso_time(1_700_000_000.5))


def test_message_template_builds_the_contract_message_frame() -> None:
    template = p.message_template("project:12", b'{"task_id": 7}', "task.created", "alice",
                                  1_795_343_400.123)
    frame = template.build(46)
    assert json.loads(frame) == {
        "type": "message", "room": "project:12", "offset": 46, "event": "task.created",
        "data": {"task_id": 7}, "sender": "alice", "ts": "2026-11-22T10:30:00.123Z",
    }
    assert list(json.loads(frame)) == ["type", "room", "offset", "event", "data", "sender",
                                       "ts"]


def test_message_template_writes_null_event_and_sender_for_a_server_publish() -> None:
    frame = json.loads(p.message_template("r", b"[1]", None, None, 0).build(1))
    assert (frame["event"], frame["sender"], frame["data"]) == (None, None, [1])


def test_message_template_escapes_room_and_event_as_json() -> None:
    frame = json.loads(p.message_template("a/b", b'"x"', 'say "hi"', "b\\ob", 0).build(9))
    assert (frame["room"], frame["event"], frame["sender"], frame["offset"]) == (
        "a/b", 'say "hi"', "b\\ob", 9)


def test_message_data_reads_the_data_of_an_encoded_message() -> None:
    payload = p.message_template("r", b'{"k": [1, 2]}', None, None, 0).build(3)
    assert p.message_data(payload) == {"k": [1, 2]}


def test_encode_and_error_frame_are_compact_json() -> None:
    assert p.encode({"type": "pong", "id": 1}) == b'{"type":"pong","id":1}'
    assert msgspec.json.decode(p.error_frame("forbidden", "no", "x")) == {
        "type": "error", "id": "x", "code": "forbidden", "message": "no"}
