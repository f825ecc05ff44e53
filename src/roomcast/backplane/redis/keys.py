"""Where the Redis backplane keeps things: key names, channels and the message format.

Layout (prefix `rc:`; every key expires, so dead rooms and dead nodes vanish):

    rc:{ROOM}:o   last offset (string)         rc:{ROOM}:e   epoch (string)
    rc:{ROOM}:h   history: LIST of "<ms> <payload>", newest last, contiguous offsets
    rc:{ROOM}:k   idempotency key -> offset     rc:{ROOM}:kt  idempotency key -> ms (ZSET)
    rc:{ROOM}:p   presence: "<node>\\0<user>" -> "<count>|<info json>"
    rc:{ROOM}:pu  presence: user -> connections on every node
    rc:c:ROOM     the room's pub/sub channel    rc:control    disconnect / revoke
    rc:nodes      node -> ms its heartbeat runs out (ZSET)
    rc:nodestats  node -> {"node", "connections", "users"} as of its last heartbeat
    rc:n:NODE:i   the node's presence entries, "<room>\\0<user>" (SET), for reaping
    rc:revoked    jti -> unix time the revocation can be forgotten (ZSET)
    rc:{ROOM}:ev  room events (protocol §13): {seq, down_ms, down_seq}
    rc:{u:USER}:uc   node -> the user's live connections there (with room events on)
    rc:{u:USER}:uev  user events, as rc:{ROOM}:ev
    rc:evdue      room and user "gone" events waiting for events_delay (ZSET by due ms)

Messages on a room channel are `m<offset> <epoch> <event as JSON>\\n<payload>` (the event
rides in a small header so filters need not parse the payload) or presence events
`p1\\n<info>\\n<user>` (joined) and `p0\\n\\n<user>` (left): presence events go on the
room's channel rather than the control channel, so only nodes with subscribers in the
room hear them. Control messages are `<kind>\\n<payload JSON>` on `rc:control`.
"""

from __future__ import annotations

import msgspec

PREFIX = "rc:"
CONTROL_CHANNEL = PREFIX + "control"
NODES = PREFIX + "nodes"
NODESTATS = PREFIX + "nodestats"
REVOKED = PREFIX + "revoked"
EVENTS_DUE = PREFIX + "evdue"
CHUNK = 200  # rooms per batched script call or SUBSCRIBE command


def room_keys(room: str) -> list[str]:
    """The five keys of a room's stream, in the order every stream script takes them."""
    base = f"{PREFIX}{{{room}}}:"
    return [base + "o", base + "e", base + "h", base + "k", base + "kt"]


def presence_keys(room: str) -> tuple[str, str]:
    """The room's presence hash (per node and user) and its per-user totals."""
    base = f"{PREFIX}{{{room}}}:"
    return base + "p", base + "pu"


def room_events_key(room: str) -> str:
    """The numbering of the room's occupied/vacated transitions (protocol §13):
    {seq, down_ms, down_seq}."""
    return f"{PREFIX}{{{room}}}:ev"


def user_keys(user_id: str) -> tuple[str, str]:
    """The user's connections per node, and the numbering of its online/offline
    transitions (protocol §13)."""
    base = f"{PREFIX}{{u:{user_id}}}:"
    return base + "uc", base + "uev"


def user_member(user_id: str) -> str:
    """A node index entry for the node's connections of a user (a room entry is
    "<room>\0<user>"; a room name is never empty)."""
    return "\0" + user_id


def room_channel(room: str) -> bytes:
    """The pub/sub channel that carries the room's messages and presence events."""
    return f"{PREFIX}c:{room}".encode()


def node_index(instance: str) -> str:
    """The set of a node's presence entries, read when the node is reaped."""
    return f"{PREFIX}n:{instance}:i"


class EntryView(msgspec.Struct):
    """The two fields of a stored message the reader needs when it reads history."""

    offset: int
    event: str | None = None


entry_decoder = msgspec.json.Decoder(EntryView)


def strip_time(entry: bytes) -> bytes:
    """A history entry is "<ms> <payload>"; return the payload."""
    return entry[entry.index(b" ") + 1:]
