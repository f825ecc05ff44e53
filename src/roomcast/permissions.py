"""Who a token speaks for and which rooms it may read and publish to (protocol §2).

Pure: shell-style room patterns (`*` any run of characters, `:` included; `?` one
character), compiled once each, and the verified identity that carries them. Each
Principal remembers its answers per room (bounded), since a connection asks about the
same few rooms on every publish.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final


@functools.lru_cache(maxsize=4096)
def _compile(pattern: str) -> re.Pattern[str]:
    """One glob pattern as a regex for fullmatch. Runs of `*` collapse to one, and every
    segment between two stars sits in an atomic group that takes its leftmost match: that is
    enough for a glob (segments have a fixed length) and keeps matching O(len(room) *
    len(pattern)), so a pattern like `*a*a*a*a*b` cannot make the regex engine backtrack
    exponentially."""

    def segment(text: str) -> str:
        return "".join("." if ch == "?" else re.escape(ch) for ch in text)

    parts = re.split(r"\*+", pattern)
    if len(parts) == 1:
        regex = segment(pattern)
    else:
        first, *middle, last = parts
        regex = (
            segment(first)
            + "".join(f"(?>.*?{segment(part)})" for part in middle)
            + ".*"
            + segment(last)
        )
    return re.compile(regex, re.DOTALL)


def room_matches(patterns: Iterable[str], room: str) -> bool:
    """Shell-style: `*` matches any run of characters (':' included), `?` exactly one; every
    other character is literal (NOT fnmatch: '[' is literal). A bare string counts as one
    pattern, never as a sequence of one-character patterns."""
    if isinstance(patterns, str):
        patterns = (patterns,)
    return any(_compile(pattern).fullmatch(room) is not None for pattern in patterns)


#: Rooms whose answers one Principal remembers; past it, it forgets them all and starts
#: over (a client walking through many rooms costs one match per room, as without a cache).
CACHE_ROOMS: Final = 256


@dataclass(frozen=True)
class Principal:
    """Who a verified token speaks for and what it may do."""

    user_id: str
    rooms: tuple[str, ...]
    publish: tuple[str, ...]
    info: dict[str, Any]
    expires_at: float
    jti: str | None
    subscribe: tuple[str, ...] = ()  # rooms to subscribe server-side at once (§12)
    # room -> (may subscribe, may publish); None where not asked yet. Not part of equality.
    _answers: dict[str, list[bool | None]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    @property
    def personal_room(self) -> str:
        """The room every user may always subscribe to: `user:<sub>`."""
        return f"user:{self.user_id}"

    def can_subscribe(self, room: str) -> bool:
        """The personal room is always allowed; any other room needs a matching pattern."""
        answers = self._answers.get(room)
        if answers is not None and (known := answers[0]) is not None:
            return known
        allowed = room == self.personal_room or room_matches(self.rooms, room)
        self._remember(room, 0, allowed)
        return allowed

    def can_publish(self, room: str) -> bool:
        """Publishing needs a matching `publish` pattern (there is no implicit one)."""
        answers = self._answers.get(room)
        if answers is not None and (known := answers[1]) is not None:
            return known
        allowed = room_matches(self.publish, room)
        self._remember(room, 1, allowed)
        return allowed

    def _remember(self, room: str, which: int, allowed: bool) -> None:
        cache = self._answers
        answers = cache.get(room)
        if answers is None:
            if len(cache) >= CACHE_ROOMS:
                cache.clear()
            answers = cache[room] = [None, None]
        answers[which] = allowed


