"""Keys from an identity provider (protocol §14): a JSON Web Key Set and when to fetch it.

Pure code: `KeySet` is built from the JWKS document's bytes (pyjwt's PyJWKSet reads each
key) and picks the key a token's `kid` names; `FetchRule` says when the next fetch is
due, with `now` passed in. The fetching itself is roomcast.jwks_fetch's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import jwt

from roomcast.errors import RoomcastError

__all__ = ["REFETCH_INTERVAL", "REFRESH_INTERVAL", "FetchRule", "KeySet", "KeySetError"]

REFETCH_INTERVAL = 30.0
"""A token with an unknown `kid` causes a refetch at most this often (seconds)."""
REFRESH_INTERVAL = 600.0
"""The set is fetched again this often anyway, so a key the provider withdrew stops
verifying tokens even when no unknown `kid` is ever seen."""
RETRY_FIRST, RETRY_MOST = 1.0, 30.0
"""While no set has ever been fetched, a failed fetch is retried after 1 s, then twice as
long each time, up to 30 s."""

_SET_ALGORITHMS = frozenset({"RS256", "ES256", "EdDSA"})
"""Algorithms a key from a set may verify: asymmetric only. A symmetric (`oct`) key in a
published set would be a secret anyone can read, so such keys are never used."""


class KeySetError(RoomcastError):
    """A JWKS document that cannot be used; the message says what is wrong with it."""


@dataclass(frozen=True, slots=True)
class KeySet:
    """The usable signing keys of one JWKS document, by `kid`."""

    by_kid: Mapping[str | None, jwt.PyJWK]

    @classmethod
    def from_json(cls, body: bytes | str, algorithms: Iterable[str]) -> KeySet:
        """The keys of a JWKS document that verify one of `algorithms` (asymmetric ones
        only); KeySetError when it is not a JWKS or holds no such key."""
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise KeySetError("the key set is not JSON") from None
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise KeySetError('the key set is not a JWKS (a JSON object with a "keys" list)')
        return cls.from_keys(document["keys"], algorithms)

    @classmethod
    def from_keys(cls, keys: list[Any], algorithms: Iterable[str]) -> KeySet:
        """The usable keys among a JWKS's `keys`: signing keys (`use` absent or `sig`) of an
        allowed asymmetric algorithm; a `kid` named twice keeps its first key."""
        allowed = _SET_ALGORITHMS.intersection(algorithms)
        signing = [key for key in keys if isinstance(key, dict)
                   and key.get("kty") != "oct" and key.get("use", "sig") == "sig"]
        try:
            found = jwt.PyJWKSet(signing).keys if signing else []
        except jwt.PyJWTError:  # PyJWKSet skips a bad key, but refuses a set of none
            found = []
        by_kid: dict[str | None, jwt.PyJWK] = {}
        for key in found:
            kid = key.key_id if isinstance(key.key_id, str) else None
            if key.algorithm_name in allowed and kid not in by_kid:
                by_kid[kid] = key
        if not by_kid:
            wanted = ", ".join(sorted(allowed)) or "(none: jwt_algorithms allows no RS256, "\
                "ES256 or EdDSA)"
            raise KeySetError(f"the key set holds no usable signing key for {wanted}")
        return cls(MappingProxyType(by_kid))

    def select(self, kid: str | None) -> jwt.PyJWK | None:
        """The key a token's `kid` names; a token without `kid` may use the set's only key."""
        if kid is None and len(self.by_kid) == 1:
            return next(iter(self.by_kid.values()))
        return self.by_kid.get(kid)

    @property
    def algorithms(self) -> frozenset[str]:
        return frozenset(key.algorithm_name for key in self.by_kid.values())


@dataclass(slots=True)
class FetchRule:
    """When the key set is fetched: at start; while none was ever fetched, again after a
    growing pause; an unknown `kid` asks for a refetch, done at most once every
    REFETCH_INTERVAL since the last fetch; and every REFRESH_INTERVAL anyway."""

    refetch_interval: float = REFETCH_INTERVAL
    refresh_interval: float = REFRESH_INTERVAL
    last_attempt: float | None = None
    fetched_once: bool = False
    failures: int = 0
    wanted: bool = False

    def want(self) -> None:
        """A token named a key the set does not hold."""
        self.wanted = True

    def due(self, now: float) -> float:
        """When the next fetch should start (at or before `now`: start it now)."""
        if self.last_attempt is None:
            return now
        if not self.fetched_once:
            pause = RETRY_FIRST * 2.0 ** (max(self.failures, 1) - 1)
            return self.last_attempt + min(RETRY_MOST, pause)
        if self.wanted:
            return self.last_attempt + self.refetch_interval
        return self.last_attempt + self.refresh_interval

    def started(self, now: float) -> None:
        """A fetch starts now; it answers every request made so far."""
        self.last_attempt = now
        self.wanted = False

    def finished(self, ok: bool) -> None:
        """The fetch that started last ended: a usable set (`ok`) or a failure."""
        if ok:
            self.fetched_once = True
            self.failures = 0
        else:
            self.failures += 1
