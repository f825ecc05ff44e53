"""Where the Redis backplane keeps things: key names, channels and the message format.

Layout (prefix `rc:`; every key expires, so dead rooms and dead nodes vanish). Every key
has a hash tag, and every script touches the keys of one tag only, so the same scripts run
on one Redis and on a Redis Cluster: a room's keys and its channel share the room's slot,
a user's the user's, and the node-wide keys the slot of `{rc}`.

    rc:{ROOM}:o   last offset (string)         rc:{ROOM}:e   epoch (string)
    rc:{ROOM}:h   history: LIST of "<ms> <payload>", newest last, contiguous offsets
    rc:{ROOM}:k   idempotency key -> offset     rc:{ROOM}:kt  idempotency key -> ms (ZSET)
    rc:{ROOM}:p   presence: "<node>\\0<user>" -> "<count>|<info json>"
    rc:{ROOM}:pu  presence: user -> connections on every node
    rc:{ROOM}:c   the room's channel (sharded pub/sub: SPUBLISH / SSUBSCRIBE)
    rc:control    disconnect / revoke (classic pub/sub: every node hears it)
    rc:{rc}:nodes      node -> ms its heartbeat runs out (ZSET)
    rc:{rc}:nodestats  node -> {"node", "connections", "users"} as of its last heartbeat
    rc:{rc}:n:NODE:i   the node's presence entries, "<room>\\0<user>" (SET), for reaping
    rc:{rc}:revoked    jti -> unix time the revocation can be forgotten (ZSET)
    rc:{ROOM}:ev  room events (protocol §13): {seq, down_ms, down_seq, pending}
    rc:{u:USER}:uc   node -> the user's live connections there (with room events on)
    rc:{u:USER}:uev  user events, as rc:{ROOM}:ev
    rc:{rc}:evdue      an index of the rooms and users ("<kind>\\0<name>") whose "gone" may
                       be waiting for events_delay (ZSET by due ms), written before the
                       transition; the event itself is claimed in its own key (`pending`)

Messages on a room channel are `m<offset> <epoch> <event as JSON>\\n<payload>` (the event
rides in a small header so filters need not parse the payload) or presence events
`p1\\n<info>\\n<user>` (joined) and `p0\\n\\n<user>` (left): presence events go on the
room's channel rather than the control channel, so only nodes with subscribers in the
room hear them. Control messages are `<kind>\\n<payload JSON>` on `rc:control`.
"""

from __future__ import annotations

import msgspec

PREFIX = "rc:"
GLOBAL = PREFIX + "{rc}:"  # the node-wide keys: one hash slot
CONTROL_CHANNEL = PREFIX + "control"
NODES = GLOBAL + "nodes"
NODESTATS = GLOBAL + "nodestats"
REVOKED = GLOBAL + "revoked"
EVENTS_DUE = GLOBAL + "evdue"
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
    """The shard channel that carries the room's messages and presence events (in the
    room's hash slot, so the room's scripts can SPUBLISH to it)."""
    return f"{PREFIX}{{{room}}}:c".encode()


def room_slot_key(room: str) -> str:
    """A key in the room's hash slot (its offset key), to find or group rooms by slot."""
    return f"{PREFIX}{{{room}}}:o"


def node_index(instance: str) -> str:
    """The set of a node's presence entries, read when the node is reaped."""
    return f"{GLOBAL}n:{instance}:i"


def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_CRC16 = _crc16_table()
SLOTS = 16384


def key_slot(key: str | bytes) -> int:
    """The Redis Cluster hash slot of a key or shard channel: CRC16 (XMODEM) of its hash tag
    (what is between the first `{` and the next `}`, when not empty) or else of all of it,
    modulo 16384."""
    data = key.encode() if isinstance(key, str) else key
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1:end]
    crc = 0
    table = _CRC16
    for byte in data:
        crc = ((crc << 8) & 0xFF00) ^ table[((crc >> 8) ^ byte) & 0xFF]
    return crc % SLOTS


class EntryView(msgspec.Struct):
    """The two fields of a stored message the reader needs when it reads history."""

    offset: int
    event: str | None = None


entry_decoder = msgspec.json.Decoder(EntryView)


def strip_time(entry: bytes) -> bytes:
    """A history entry is "<ms> <payload>"; return the payload."""
    return entry[entry.index(b" ") + 1:]
