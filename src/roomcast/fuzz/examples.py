"""What one fuzz example is (the scripts hypothesis draws), and how a drawn body is written
out as JSON text."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, Protocol


@dataclass(frozen=True)
class Lit:
    """A JSON literal sent exactly as written (numbers Python would not write this way)."""

    text: str


@dataclass(frozen=True)
class Deep:
    """`depth` nested arrays (or objects), built when sent: too big to draw."""

    depth: int
    objects: bool = False


@dataclass(frozen=True)
class Big:
    """A string that makes the whole frame `over` bytes longer than the server's limit
    (negative: shorter), written with `fill` (multi-byte fills count bytes, not characters)."""

    over: int
    fill: str = "x"


@dataclass(frozen=True)
class Text:
    """A text frame sent verbatim, whatever it is."""

    text: str


class _Drop:
    """A field value meaning "leave this field out"."""

    def __repr__(self) -> str:
        return "DROP"


DROP: Final = _Drop()


@dataclass(frozen=True)
class Frame:
    """One data frame: a JSON-ish body (or Text), and how to mangle it on the way out."""

    body: Any
    spaced: bool = False
    ascii: bool = True
    cut: float | None = None  # send only this leading fraction of the text
    corrupt: bytes | None = None  # splice in these bytes: a text frame that is not UTF-8
    binary: bool = False
    fragments: int = 1


@dataclass(frozen=True)
class ClientPing:
    """A WebSocket ping control frame; the server must answer with the same payload."""

    payload: bytes


@dataclass(frozen=True)
class Burst:
    """`count` ping commands sent back to back, to hit the rate limit."""

    count: int


Action = Frame | ClientPing | Burst


@dataclass(frozen=True)
class Script:
    """What one fuzz client does: its token's grant, then its actions in order."""

    grant: str
    actions: tuple[Action, ...]


Example = tuple[Script, ...]


class Markers(Protocol):
    """What turns a drawn marker ("$id", "$me", "$token:...") into a client's own value
    (roomcast.fuzz.oracle.Session); other text comes back unchanged."""

    def resolve(self, text: str, command_id: Any) -> Any: ...


class Writer:
    """JSON text for a drawn body: markers resolved, Lit/Deep/Big written out."""

    def __init__(self, session: Markers, command_id: Any, spaced: bool, ascii: bool) -> None:
        self.session = session
        self.command_id = command_id
        self.comma, self.colon = (", ", ": ") if spaced else (",", ":")
        self.ascii = ascii
        self.big: Big | None = None
        self.fill = 0

    def dump(self, value: Any) -> str:
        if isinstance(value, Lit):
            return value.text
        if isinstance(value, Deep):
            if value.objects:
                return '{"a":' * value.depth + "0" + "}" * value.depth
            return "[" * value.depth + "]" * value.depth
        if isinstance(value, Big):
            self.big = value
            return '"' + value.fill * self.fill + '"'
        if isinstance(value, str):
            value = self.session.resolve(value, self.command_id)
        if isinstance(value, dict):
            items = [(self.dump(str(k)), v) for k, v in value.items() if v is not DROP]
            return "{" + self.comma.join(k + self.colon + self.dump(v) for k, v in items) + "}"
        if isinstance(value, list | tuple):
            return "[" + self.comma.join(self.dump(v) for v in value) + "]"
        return json.dumps(value, ensure_ascii=self.ascii)


