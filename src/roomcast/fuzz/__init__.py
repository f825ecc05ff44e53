"""`roomcast fuzz`: a property-based protocol fuzzer for any server that speaks the contract.

Several real WebSocket clients send hypothesis-made frames — valid commands, mutated ones,
wrong field types, odd ids, invalid UTF-8, binary frames, deep or huge JSON, random text —
while two control clients keep a steady stream of messages going through the server. The
fuzzer checks, frame by frame, what the contract promises: exactly one reply with the right
id (or a close code the contract allows for what was sent), deliveries only from rooms a
client subscribed to and may read, filters honoured, offsets increasing; and that the
control stream never stalls, skips or closes. See docs/fuzzing.md.

The parts: `strategies` draws examples (`examples` says what one is), `oracle` judges each
answer against `contract`, `rawclient` speaks WebSocket over a raw socket, `fuzzer` and
`control` run an example, `runner` runs a campaign and the command line.
"""

from __future__ import annotations

try:
    import hypothesis  # noqa: F401  (checked first: every part of the fuzzer needs it)
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installation
    raise ModuleNotFoundError(
        "roomcast fuzz needs hypothesis: pip install 'roomcast[test]' (or pip install hypothesis)"
    ) from exc

from roomcast.fuzz.contract import FuzzFailure
from roomcast.fuzz.fuzzer import Fuzzer, FuzzReport
from roomcast.fuzz.rawclient import Closed, RawClient
from roomcast.fuzz.runner import fuzz, main
from roomcast.fuzz.strategies import example_strategy
from roomcast.fuzz.target import Target, TargetError, parse_target

__all__ = [
    "Closed",
    "FuzzFailure",
    "FuzzReport",
    "Fuzzer",
    "RawClient",
    "Target",
    "TargetError",
    "example_strategy",
    "fuzz",
    "main",
    "parse_target",
]
