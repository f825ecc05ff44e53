"""JWT verification and room permissions (protocol §2): token in, Principal or AuthError out.

Pure code: the only IO is reading the public-key PEM file once, in Authenticator(). Time
checks use the `now` the caller passes, so tests can drive a mock clock. With
`jwt_jwks_url` (§14) the asymmetric keys come from `key_set`, which roomcast.jwks_fetch
fills and replaces; until it has, such tokens are refused as `keys_unavailable`.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import HMACAlgorithm
from jwt.types import HashlibHash, Options

from roomcast.errors import RoomcastError
from roomcast.jwks import KeySet
from roomcast.permissions import Principal, room_matches
from roomcast.revocations import RevocationList
from roomcast.settings import Settings, SettingsError

__all__ = [
    "AUTH_ERROR_REASONS",
    "MAX_INFO_BYTES",
    "AuthError",
    "Authenticator",
    "Principal",
    "RevocationList",
    "room_matches",
]

AUTH_ERROR_REASONS = frozenset(
    {
        "missing_token",
        "malformed",
        "bad_signature",
        "algorithm_not_allowed",
        "expired",
        "not_yet_valid",
        "issued_in_future",
        "bad_claims",
        "bad_issuer",
        "bad_audience",
        "revoked",
        "unknown_key",
        "keys_unavailable",
    }
)

MAX_INFO_BYTES = 4096
"""Largest allowed `info` claim, as compact UTF-8 JSON: it is copied into presence frames."""

_HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
_ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "ES256", "EdDSA"})
_ALG_NAME = re.compile(r"[A-Za-z0-9]{1,16}")
_HMAC_HASHES: dict[str, HashlibHash] = {
    "HS256": HMACAlgorithm.SHA256,
    "HS384": HMACAlgorithm.SHA384,
    "HS512": HMACAlgorithm.SHA512,
}


class AuthError(RoomcastError):
    """A token was refused. `reason` is a short code for logs and metrics; str(exc) is a
    human sentence that never contains the token."""

    reason: str

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# --- verification ------------------------------------------------------------------------

_PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)


def _load_public_key(path: str) -> tuple[_PublicKey, frozenset[str]]:
    """The PEM public key at `path` and the algorithms it can verify."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(
            f"jwt_public_key: cannot read {path!r} ({exc.strerror or exc})"
        ) from None
    try:
        key = load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        hint = " (it holds a private key; give the public one)" if b"PRIVATE KEY" in data else ""
        raise SettingsError(f"jwt_public_key: {path!r} is not a PEM public key{hint}") from None
    if isinstance(key, rsa.RSAPublicKey):
        return key, frozenset({"RS256"})
    if isinstance(key, ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP256R1):
            return key, frozenset({"ES256"})
        raise SettingsError(
            f"jwt_public_key: {path!r} is an EC key on curve {key.curve.name}; "
            "ES256 needs P-256 (secp256r1)"
        )
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return key, frozenset({"EdDSA"})
    raise SettingsError(
        f"jwt_public_key: {path!r} holds a {type(key).__name__}, "
        "which none of RS256, ES256, EdDSA can use"
    )


def _is_text(value: object) -> bool:
    """A str that can be written as UTF-8 (JSON escapes can smuggle in lone surrogates,
    which would later make encoding a frame fail)."""
    if not isinstance(value, str):
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _string_list(payload: dict[str, Any], claim: str) -> tuple[str, ...] | None:
    """The claim as a tuple of strings, None when absent; AuthError when of another type."""
    if claim not in payload:
        return None
    value = payload[claim]
    if not isinstance(value, list) or not all(_is_text(item) for item in value):
        raise AuthError("bad_claims", f"the token's {claim!r} claim must be a list of strings")
    return tuple(value)


def _time_claim(payload: dict[str, Any], claim: str) -> float | None:
    """The claim as finite unix seconds, None when absent; AuthError when not a number."""
    if claim not in payload:
        return None
    value = payload[claim]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthError("bad_claims", f"the token's {claim!r} claim must be a number")
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        raise AuthError("bad_claims", f"the token's {claim!r} claim must be a finite number")
    return seconds


def _info_claim(payload: dict[str, Any]) -> dict[str, Any]:
    """The `info` claim: a JSON object of at most MAX_INFO_BYTES, {} when absent."""
    if "info" not in payload:
        return {}
    info = payload["info"]
    if not isinstance(info, dict):
        raise AuthError("bad_claims", "the token's 'info' claim must be a JSON object")
    try:
        encoded = json.dumps(
            info, ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode("utf-8")
    except (ValueError, RecursionError):  # NaN/Infinity, lone surrogates, absurd nesting
        raise AuthError("bad_claims", "the token's 'info' claim is not valid JSON") from None
    if len(encoded) > MAX_INFO_BYTES:
        raise AuthError(
            "bad_claims",
            f"the token's 'info' claim is {len(encoded)} bytes; at most {MAX_INFO_BYTES} "
            "are allowed",
        )
    return info


def _has_wildcard(text: str) -> bool:
    return "*" in text or "?" in text


_HEADER_READER = jwt.PyJWS()
_HEADER_CACHE_SIZE = 256
_MAX_CACHED_HEADER = 512
"""Longer header segments are never cached (verify reads them the uncached way), so the
cache holds at most 256 * 512 characters whatever headers clients send."""


def _header_alg(segment: str) -> str | None:
    """The `alg` of a well-formed header segment (as pyjwt reads it), else None."""
    fields = _header_fields(segment)
    return fields[0] if fields is not None else None


def _header_fields(segment: str) -> tuple[str, str | None] | None:
    """`alg` and `kid` of a well-formed header segment, else None. Nearly every token of a
    deployment has one of very few headers, so the answer is cached."""
    if len(segment) > _MAX_CACHED_HEADER:
        return None
    return _cached_header_fields(segment)


@functools.lru_cache(maxsize=_HEADER_CACHE_SIZE)
def _cached_header_fields(segment: str) -> tuple[str, str | None] | None:
    return _read_header_fields(segment + "..")


def _read_header_fields(token: str) -> tuple[str, str | None] | None:
    try:
        # Empty payload and signature segments are valid base64url, so only the header can
        # fail here, with pyjwt's own checks (base64url, JSON object, kid, crit).
        header = _HEADER_READER.get_unverified_header(token)
    except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
        return None
    alg, kid = header.get("alg"), header.get("kid")
    return (alg, kid if isinstance(kid, str) else None) if isinstance(alg, str) else None


def _token_kid(token: str) -> str | None:
    """The `kid` a token's header names (cached for usual headers), None for none."""
    fields = _header_fields(token.partition(".")[0]) or _read_header_fields(token)
    return fields[1] if fields is not None else None


class _PreparedHMAC(HMACAlgorithm):
    """pyjwt's HMAC, vetting the one key it is built for once instead of on every decode
    (HMAC prepare_key runs PEM/SSH/DER/JWK checks, ~12 µs); any other key is vetted as usual."""

    def __init__(self, hash_alg: HashlibHash, key: bytes) -> None:
        super().__init__(hash_alg)
        self._key = key
        self._prepared = super().prepare_key(key)

    def prepare_key(self, key: str | bytes) -> bytes:
        if key is self._key:
            return self._prepared
        return super().prepare_key(key)


def _hmac_jwk(alg: str, secret: str) -> jwt.PyJWK:
    """The secret as a PyJWK bound to `alg`: pyjwt then verifies only with that algorithm."""
    jwk = jwt.PyJWK(HMACAlgorithm.to_jwk(secret, as_dict=True), algorithm=alg)
    jwk.Algorithm = _PreparedHMAC(_HMAC_HASHES[alg], jwk.key)
    return jwk


def _keys_by_algorithm(algorithms: Iterable[str], secret: str | None,
                       public_key: _PublicKey | None, key_algorithms: frozenset[str],
                       key_set_url: str | None = None
                       ) -> dict[str, jwt.PyJWK | _PublicKey | None]:
    """alg -> the one key that alg may be checked with (None: the key set's key the token
    names). HS* only ever get the secret and asymmetric algorithms only the public key or
    the set's keys, which rules out algorithm confusion."""
    keys: dict[str, jwt.PyJWK | _PublicKey | None] = {}
    for alg in algorithms:
        if alg in _HMAC_ALGORITHMS:
            if secret is None:
                raise SettingsError(f"jwt_algorithms: {alg} needs jwt_secret, which is not set")
            keys[alg] = _hmac_jwk(alg, secret)
        elif alg in _ASYMMETRIC_ALGORITHMS and key_set_url is not None:
            keys[alg] = None
        elif alg in _ASYMMETRIC_ALGORITHMS:
            if public_key is None:
                raise SettingsError(
                    f"jwt_algorithms: {alg} needs jwt_public_key or jwt_jwks_url, which are "
                    "not set"
                )
            if alg not in key_algorithms:
                raise SettingsError(
                    f"jwt_algorithms: {alg} cannot be verified with the key in "
                    f"jwt_public_key (it suits {', '.join(sorted(key_algorithms))})"
                )
            keys[alg] = public_key
        else:
            raise SettingsError(f"jwt_algorithms: {alg!r} is not supported")
    return keys


class Authenticator:
    """Verifies client JWTs against the server's keys and settings (protocol §2)."""

    def __init__(self, settings: Settings) -> None:
        """Reads jwt_secret / jwt_public_key (a PEM path, read here) / jwt_jwks_url, the
        algorithm allow-list, jwt_issuer, jwt_audience, jwt_leeway and default_rooms. Raises
        SettingsError when no key is configured, the key file is unusable, or an allowed
        algorithm has no key it can be verified with."""
        secret = settings.jwt_secret or None
        key_path = settings.jwt_public_key or None
        key_set_url = settings.jwt_jwks_url or None
        if (secret is None and key_path is None and key_set_url is None
                and not settings.connect_hook_url):  # a connect hook alone verifies no token
            raise SettingsError(
                "jwt_secret or jwt_public_key is required to verify tokens, or jwt_jwks_url "
                "for an identity provider's keys, or connect_hook_url to let the application "
                "admit connections (or start with --dev for a made-up development secret)"
            )
        if secret is not None:
            try:
                HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(secret)
            except jwt.InvalidKeyError as exc:
                raise SettingsError(
                    f"jwt_secret: cannot be used as an HMAC secret ({exc})"
                ) from None

        public_key: _PublicKey | None = None
        key_algorithms: frozenset[str] = frozenset()
        if key_path is not None:
            public_key, key_algorithms = _load_public_key(key_path)

        verifies = secret is not None or key_path is not None or key_set_url is not None
        self._keys = _keys_by_algorithm(settings.algorithms if verifies else (), secret,
                                        public_key, key_algorithms, key_set_url)
        self.algorithms: tuple[str, ...] = tuple(self._keys)
        self.key_set_algorithms = tuple(alg for alg, key in self._keys.items() if key is None)
        """The algorithms verified with `key_set` (those of jwt_jwks_url)."""
        self.key_set: KeySet | None = None
        """The identity provider's keys, set and replaced by roomcast.jwks_fetch."""
        self.on_unknown_key: Callable[[], None] | None = None
        """Called when a token names a key the set does not hold: asks for a refetch."""
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = float(settings.jwt_leeway)
        if not (math.isfinite(self._leeway) and self._leeway >= 0):
            # NaN would make every time comparison false, so no token would ever expire.
            raise SettingsError(
                f"jwt_leeway must be a finite number of seconds, got {self._leeway}"
            )
        self._default_rooms = tuple(settings.default_rooms)
        self._options: Options = {
            "verify_signature": True,
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "verify_iss": self._issuer is not None,
            "verify_aud": self._audience is not None,
            "verify_sub": False,
            "verify_jti": False,
            "require": [],
        }
        self._jwt = jwt.PyJWT(options=self._options)  # merged once, not on every decode
        self._jws = jwt.PyJWS()

    def verify(
        self, token: str | None, now: float, revoked: RevocationList | None = None
    ) -> Principal:
        """The Principal a token speaks for, or AuthError saying why it is refused."""
        if not token:
            raise AuthError("missing_token", "no token was given")
        if not token.isascii():
            raise AuthError("malformed", "the token is not a JWT (non-ASCII characters)")
        alg = _header_alg(token.partition(".")[0])
        if alg is None or alg not in self._keys:
            # Refusals read the whole token as before, so a bad payload or signature segment
            # still reports `malformed` ahead of the header's problem.
            alg = self._header_algorithm(token)
        key = self._keys[alg]
        if key is None:
            key = self._key_from_set(token)
        payload = self._decode(token, alg, key)
        return self._principal(payload, now, revoked)

    def _key_from_set(self, token: str) -> jwt.PyJWK:
        """The key set's key that the token's `kid` names (pyjwt then checks that `alg` is
        the key's own), or AuthError: no set yet, or no such key (a refetch is asked for)."""
        if self.key_set is None:
            raise AuthError("keys_unavailable", "the identity provider's keys have not been "
                            "fetched yet; try again later")
        key = self.key_set.select(_token_kid(token))
        if key is None:
            if self.on_unknown_key is not None:
                self.on_unknown_key()
            raise AuthError("unknown_key", "the token's key (kid) is not in the identity "
                            "provider's key set")
        return key

    def key_missing(self, token: str | None) -> bool:
        """True when verifying this token needs a key the key set does not hold (or there is
        no set yet): a fetch may help. False for tokens that fail for any other reason."""
        if not token or not self.key_set_algorithms or not token.isascii():
            return False
        fields = _header_fields(token.partition(".")[0]) or _read_header_fields(token)
        if fields is None or fields[0] not in self.key_set_algorithms:
            return False
        return self.key_set is None or self.key_set.select(fields[1]) is None

    def _header_algorithm(self, token: str) -> str:
        """The header's `alg`, after checking it against the allow-list ourselves. The
        uncached path: reads the whole token, for headers that are refused or too long to
        cache."""
        try:
            header = self._jws.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
            raise AuthError("malformed", "the token is not a well-formed JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise AuthError("malformed", "the token's header names no algorithm")
        if alg not in self._keys:
            # Echo the name only when it looks like one: the header is token text.
            shown = repr(alg) if _ALG_NAME.fullmatch(alg) else "(unrecognised)"
            raise AuthError("algorithm_not_allowed", f"algorithm {shown} is not allowed")
        return alg

    def _decode(self, token: str, alg: str, key: jwt.PyJWK | _PublicKey) -> dict[str, Any]:
        """Signature, iss and aud checked by pyjwt, with only `alg` and its own key."""
        try:
            payload: dict[str, Any] = self._jwt.decode(
                token,
                key,
                algorithms=[alg],
                issuer=self._issuer,
                audience=self._audience,
            )
        except jwt.InvalidSignatureError:
            raise AuthError("bad_signature", "the token's signature is not valid") from None
        except jwt.InvalidAlgorithmError:
            raise AuthError(
                "algorithm_not_allowed", "the token's algorithm is not allowed"
            ) from None
        except jwt.InvalidIssuerError:
            raise AuthError("bad_issuer", "the token has the wrong issuer") from None
        except jwt.InvalidAudienceError:
            raise AuthError("bad_audience", "the token is not meant for this server") from None
        except jwt.MissingRequiredClaimError as exc:
            if exc.claim == "iss":
                raise AuthError("bad_issuer", "the token names no issuer") from None
            if exc.claim == "aud":
                raise AuthError("bad_audience", "the token names no audience") from None
            raise AuthError("bad_claims", f"the token lacks the {exc.claim!r} claim") from None
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
            raise AuthError("malformed", "the token is not a well-formed JWT") from None
        return payload

    def _principal(
        self, payload: dict[str, Any], now: float, revoked: RevocationList | None
    ) -> Principal:
        """Claim types, time checks against `now`, revocation; then the Principal."""
        exp = _time_claim(payload, "exp")
        if exp is None:
            raise AuthError("bad_claims", "the token has no 'exp' claim")
        nbf = _time_claim(payload, "nbf")
        iat = _time_claim(payload, "iat")
        leeway = self._leeway
        if now > exp + leeway:
            raise AuthError("expired", "the token has expired")
        if nbf is not None and now < nbf - leeway:
            raise AuthError("not_yet_valid", "the token is not valid yet (nbf)")
        if iat is not None and iat > now + leeway:
            raise AuthError("issued_in_future", "the token was issued in the future (iat)")

        sub = payload.get("sub")
        if not _is_text(sub) or not sub:
            raise AuthError("bad_claims", "the token's 'sub' claim must be a non-empty string")
        assert isinstance(sub, str)
        rooms = _string_list(payload, "rooms")
        publish = _string_list(payload, "publish")
        info = _info_claim(payload)
        jti = payload.get("jti")
        if "jti" in payload and not _is_text(jti):
            raise AuthError("bad_claims", "the token's 'jti' claim must be a string")
        assert jti is None or isinstance(jti, str)
        if jti is not None and revoked is not None and revoked.is_revoked(jti, now):
            raise AuthError("revoked", "the token has been revoked")

        if rooms is None:
            rooms = self.default_rooms_for(sub)
        subscribe = _string_list(payload, "subscribe") or ()
        return Principal(
            user_id=sub,
            rooms=rooms,
            publish=publish or (),
            info=info,
            expires_at=exp,
            jti=jti,
            subscribe=tuple(room.replace("{sub}", sub) for room in subscribe),
        )

    def default_rooms_for(self, user_id: str) -> tuple[str, ...]:
        """default_rooms with "{sub}" replaced. A user id holding `*` or `?` would turn a
        pattern like `user:{sub}` into a wildcard over other users' rooms, so patterns that
        mention {sub} are left out for such an id (the personal room stays allowed)."""
        unsafe = _has_wildcard(user_id)
        return tuple(
            pattern.replace("{sub}", user_id)
            for pattern in self._default_rooms
            if not (unsafe and "{sub}" in pattern)
        )
