"""The key set of jwt_jwks_url (protocol §14): reading a JWKS, choosing a key by `kid`, when
to fetch again (time passed in), and the Authenticator verifying with the set."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from roomcast.auth import Authenticator, AuthError
from roomcast.jwks import REFETCH_INTERVAL, REFRESH_INTERVAL, FetchRule, KeySet, KeySetError
from roomcast.settings import Settings, SettingsError

NOW = 1_800_000_000.0
URL = "http://127.0.0.1:9/jwks.json"
RSA_A = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_B = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str | None, **extra: Any) -> dict[str, Any]:
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    if kid is not None:
        jwk["kid"] = kid
    return {**jwk, **extra}


def document(*keys: dict[str, Any]) -> bytes:
    return json.dumps({"keys": list(keys)}).encode()


def token(key: Any, kid: str | None, alg: str = "RS256", **claims: Any) -> str:
    headers = {"kid": kid} if kid is not None else None
    payload = {"sub": "alice", "exp": NOW + 60, **claims}
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def hand_signed_hs256(header: dict[str, Any], payload: dict[str, Any], key: bytes) -> str:
    """An HS256 token signed with any bytes (pyjwt refuses to sign with a JWK)."""
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{part(json.dumps(header).encode())}.{part(json.dumps(payload).encode())}"
    mac = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{part(mac)}"


def authenticator(**overrides: Any) -> Authenticator:
    return Authenticator(Settings(jwt_jwks_url=URL, **overrides))


# --- the key set -------------------------------------------------------------------------

def test_the_key_a_kid_names_is_chosen() -> None:
    keys = KeySet.from_json(document(rsa_jwk(RSA_A, "a"), rsa_jwk(RSA_B, "b")), ["RS256"])
    assert set(keys.by_kid) == {"a", "b"}
    chosen = keys.select("b")
    assert chosen is not None and chosen.key_id == "b"
    assert keys.select("c") is None
    assert keys.select(None) is None  # two keys: a token without kid names none of them


def test_a_token_without_kid_may_use_the_only_key() -> None:
    keys = KeySet.from_json(document(rsa_jwk(RSA_A, None)), ["RS256"])
    only = keys.select(None)
    assert only is not None and only.algorithm_name == "RS256"


def test_unusable_keys_are_skipped_and_the_rest_kept() -> None:
    body = document(
        {"kty": "oct", "k": "c2VjcmV0", "kid": "sym"},  # a published secret: never used
        rsa_jwk(RSA_B, "enc", use="enc"),  # an encryption key
        {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
        {"kty": "nonsense", "kid": "x"},
        "not an object",
        rsa_jwk(RSA_A, "a"),
        rsa_jwk(RSA_B, "a"),  # a kid named twice keeps its first key
    )
    keys = KeySet.from_json(body, ["RS256", "HS256"])
    assert set(keys.by_kid) == {"a"}
    first = keys.select("a")
    assert first is not None
    assert first.key.public_numbers() == RSA_A.public_key().public_numbers()


def test_only_keys_of_allowed_algorithms_are_kept() -> None:
    ec_jwk = {**ECAlgorithm.to_jwk(EC_KEY.public_key(), as_dict=True), "kid": "ec"}
    ed_jwk = {**OKPAlgorithm.to_jwk(ED_KEY.public_key(), as_dict=True), "kid": "ed"}
    body = document(rsa_jwk(RSA_A, "a"), ec_jwk, ed_jwk)
    assert set(KeySet.from_json(body, ["ES256", "EdDSA"]).by_kid) == {"ec", "ed"}
    assert KeySet.from_json(body, ["RS256"]).algorithms == {"RS256"}
    with pytest.raises(KeySetError, match="no usable signing key for RS256"):
        KeySet.from_json(document(ec_jwk), ["RS256"])


@pytest.mark.parametrize("body", [b"", b"<html>", b"[]", b'{"keys": {}}', b'{"keys": []}',
                                  b'{"nokeys": 1}', b"[" * 100_000])
def test_what_is_not_a_usable_jwks_says_so(body: bytes) -> None:
    with pytest.raises(KeySetError, match="key set"):
        KeySet.from_json(body, ["RS256"])


# --- when to fetch -----------------------------------------------------------------------

def test_the_first_fetch_is_due_at_once_and_retried_with_growing_pauses() -> None:
    rule = FetchRule()
    assert rule.due(5.0) == 5.0
    pauses = []
    for start in (5.0, 100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0):
        rule.started(start)
        rule.finished(ok=False)
        pauses.append(rule.due(start) - start)
    assert pauses == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_an_unknown_kid_refetches_at_most_once_per_interval() -> None:
    rule = FetchRule()
    rule.started(0.0)
    rule.finished(ok=True)
    assert rule.due(1.0) == REFRESH_INTERVAL  # nothing asked: the periodic refresh
    rule.want()
    assert rule.due(1.0) == REFETCH_INTERVAL  # asked at 1 s: not before 30 s after the last
    rule.started(REFETCH_INTERVAL)
    assert not rule.wanted  # that fetch answers every request made before it
    rule.finished(ok=True)
    rule.want()
    assert rule.due(REFETCH_INTERVAL + 0.1) == 2 * REFETCH_INTERVAL


def test_a_failed_refetch_keeps_the_pace_once_a_set_was_fetched() -> None:
    rule = FetchRule()
    rule.started(0.0)
    rule.finished(ok=True)
    rule.want()
    rule.started(40.0)
    rule.finished(ok=False)
    assert rule.fetched_once
    rule.want()
    assert rule.due(41.0) == 40.0 + REFETCH_INTERVAL  # no 1 s retries against a down server


# --- verifying with the set --------------------------------------------------------------

def test_tokens_are_verified_with_the_key_their_kid_names() -> None:
    auth = authenticator()
    assert auth.algorithms == ("RS256",)
    auth.key_set = KeySet.from_json(document(rsa_jwk(RSA_A, "a"), rsa_jwk(RSA_B, "b")),
                                    auth.key_set_algorithms)
    assert auth.verify(token(RSA_A, "a"), NOW).user_id == "alice"
    assert auth.verify(token(RSA_B, "b"), NOW).user_id == "alice"
    with pytest.raises(AuthError) as refused:
        auth.verify(token(RSA_A, "b"), NOW)  # signed with another key than it names
    assert refused.value.reason == "bad_signature"


def test_before_any_set_a_token_is_refused_as_keys_unavailable() -> None:
    auth = authenticator()
    with pytest.raises(AuthError) as refused:
        auth.verify(token(RSA_A, "a"), NOW)
    assert refused.value.reason == "keys_unavailable"
    assert "try again later" in str(refused.value)
    assert auth.key_missing(token(RSA_A, "a"))


def test_an_unknown_kid_is_refused_and_asks_for_a_refetch() -> None:
    auth = authenticator()
    asked: list[None] = []
    auth.on_unknown_key = lambda: asked.append(None)
    auth.key_set = KeySet.from_json(document(rsa_jwk(RSA_A, "a")), auth.key_set_algorithms)
    assert not auth.key_missing(token(RSA_A, "a"))
    assert auth.key_missing(token(RSA_B, "b"))
    with pytest.raises(AuthError) as refused:
        auth.verify(token(RSA_B, "b"), NOW)
    assert refused.value.reason == "unknown_key"
    assert asked == [None]


def test_no_algorithm_confusion_with_keys_from_a_set() -> None:
    auth = authenticator(jwt_algorithms=("RS256", "ES256"))
    auth.key_set = KeySet.from_json(document(rsa_jwk(RSA_A, "a")), auth.key_set_algorithms)
    published = RSAAlgorithm.to_jwk(RSA_A.public_key()).encode()  # what anybody can read
    hs = hand_signed_hs256({"alg": "HS256", "typ": "JWT", "kid": "a"},
                           {"sub": "mallory", "exp": NOW + 60}, published)
    with pytest.raises(AuthError) as refused:
        auth.verify(hs, NOW)
    assert refused.value.reason == "algorithm_not_allowed"
    es = token(EC_KEY, "a", alg="ES256")  # an allowed algorithm, but not the key's own
    with pytest.raises(AuthError) as refused:
        auth.verify(es, NOW)
    assert refused.value.reason == "algorithm_not_allowed"
    assert not auth.key_missing(hs)


def test_a_secret_and_a_key_set_work_side_by_side() -> None:
    secret = "s" * 32
    auth = authenticator(jwt_secret=secret, jwt_algorithms=("HS256", "RS256"))
    assert auth.key_set_algorithms == ("RS256",)
    hs = jwt.encode({"sub": "bob", "exp": NOW + 60}, secret, "HS256")
    assert auth.verify(hs, NOW).user_id == "bob"  # no set needed for HS256
    assert not auth.key_missing(hs)


def test_settings_for_a_key_set() -> None:
    assert Settings(jwt_jwks_url=URL).algorithms == ("RS256",)
    with pytest.raises(SettingsError, match="jwt_jwks_url must be an https://"):
        Settings(jwt_jwks_url="ftp://idp.example/keys")
    with pytest.raises(SettingsError, match="jwt_public_key and jwt_jwks_url are both set"):
        Settings(jwt_jwks_url=URL, jwt_public_key="/etc/key.pem")
    with pytest.raises(SettingsError, match="HS256 needs jwt_secret"):
        authenticator(jwt_algorithms=("HS256",))
