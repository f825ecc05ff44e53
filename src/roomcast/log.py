"""One structured line per event, as `text` (key=value) or `json`; and a throttle for lines
that a flood would repeat (one per reason per interval, with a count of the rest)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)

logger = logging.getLogger("roomcast")


def event(name: str, level: int = logging.INFO, exc_info: bool = False, **fields: Any) -> None:
    """Log one event with fields; the formatter decides text or JSON."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"roomcast_fields": fields}, exc_info=exc_info)


class _Spell:
    """One key's state in a LogThrottle: when its last line was written, how many since
    were held back."""

    __slots__ = ("held_back", "last")

    def __init__(self, last: float) -> None:
        self.last = last
        self.held_back = 0


class LogThrottle(Generic[K]):
    """At most one line per key (a reason) every `interval` seconds, so that a flood of
    refused connections costs a few lines, not one each; the next line that passes says
    how many were held back. Pure: time is passed in as `now`.

    Keys should be a small set (reasons, not addresses); past `max_keys` the oldest is
    forgotten. Keys quiet for an interval are dropped by due().
    """

    __slots__ = ("_interval", "_max_keys", "_state")

    def __init__(self, interval: float = 10.0, max_keys: int = 1024) -> None:
        self._interval = interval
        self._max_keys = max_keys
        self._state: dict[K, _Spell] = {}

    def admit(self, key: K, now: float) -> int | None:
        """None: do not write this line (it is counted). Else write it, with the number
        returned: how many lines for `key` were held back since its last one (0 at first)."""
        state = self._state.get(key)
        if state is None:
            if len(self._state) >= self._max_keys:
                del self._state[next(iter(self._state))]
            self._state[key] = _Spell(now)
            return 0
        if now - state.last >= self._interval:
            held_back = state.held_back
            state.last = now
            state.held_back = 0
            return held_back
        state.held_back += 1
        return None

    def due(self, now: float) -> list[tuple[K, int]]:
        """The keys whose interval has passed with lines held back, with how many: call it
        now and then (e.g. from a periodic sweep) and write one line each, so that the count
        of a flood that stopped is not lost. Each counts as written now."""
        out: list[tuple[K, int]] = []
        quiet: list[K] = []
        for key, state in self._state.items():
            if now - state.last < self._interval:
                continue
            if state.held_back:
                out.append((key, state.held_back))
                state.last = now
                state.held_back = 0
            else:
                quiet.append(key)
        for key in quiet:  # nothing to report and nothing to wait for: forget it
            del self._state[key]
        return out

    def __len__(self) -> int:
        """How many keys are tracked."""
        return len(self._state)


def throttled_event(throttle: LogThrottle[K], key: K, now: float, name: str,
                    level: int = logging.INFO, **fields: Any) -> bool:
    """event(name, ...) unless `throttle` holds this `key` back; a line that follows held
    back ones carries `count=` (how many were not written). True when a line was written."""
    if not logger.isEnabledFor(level):
        return False
    held_back = throttle.admit(key, now)
    if held_back is None:
        return False
    if held_back:
        fields["count"] = held_back
    event(name, level, **fields)
    return True


def _quote(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' ="\n'):
        return json.dumps(text)
    return text


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "roomcast_fields", {})
        parts = [self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), record.levelname.lower(),
                 record.getMessage()]
        parts += [f"{k}={_quote(v)}" for k, v in fields.items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "roomcast_fields", {})
        out = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
               "level": record.levelname.lower(), "event": record.getMessage(), **fields}
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure(log_format: str = "text", level: int | str = logging.INFO) -> None:
    """Send roomcast's log lines to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
