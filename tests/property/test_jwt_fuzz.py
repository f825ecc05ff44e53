"""Fuzzing roomcast.auth.Authenticator.verify: a token that is not exactly what the issuer
signed never authenticates, and no input makes verify raise anything but AuthError."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import assume, given
from hypothesis import strategies as st

from roomcast.auth import AUTH_ERROR_REASONS, Authenticator, AuthError, Principal
from roomcast.settings import Settings

SECRET = "fuzz-secret-" + "k" * 52
NOW = 1_800_000_000.0
CLAIMS: dict[str, Any] = {
    "sub": "alice",
    "exp": NOW + 3600,
    "iat": NOW - 10,
    "rooms": ["project:*"],
    "publish": ["chat:1"],
    "info": {"name": "Alice"},
    "jti": "token-1",
}
AUTH = Authenticator(Settings(jwt_secret=SECRET, node="fuzz", jwt_algorithms=("HS256",)))
TOKEN = jwt.encode(CLAIMS, SECRET, algorithm="HS256")
ORIGINAL = AUTH.verify(TOKEN, NOW)
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

# Example counts and deadlines come from the hypothesis profile in tests/conftest.py
# ("ci": 200 examples, the default; HYPOTHESIS_PROFILE=long: 10 000).


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64d(segment: str) -> bytes | None:
    """Lenient base64url decoding (padding optional); None when it is not base64url."""
    stripped = segment.rstrip("=")
    if any(ch not in B64URL for ch in stripped):
        return None
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError):
        return None


ORIGINAL_SEGMENTS = [b64d(s) for s in TOKEN.split(".")]


def hs256(signing_input: str, key: str = SECRET) -> str:
    return b64e(hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest())


def signed(payload: Any, header: Any = None) -> str:
    """A token with a valid HS256 signature over exactly these JSON values."""
    head = b64e(json.dumps({"alg": "HS256", "typ": "JWT"} if header is None else header).encode())
    signing_input = head + "." + b64e(json.dumps(payload).encode())
    return signing_input + "." + hs256(signing_input)


def outcome(token: str) -> Principal | AuthError:
    """verify's answer; anything other than a Principal or an AuthError fails the test."""
    try:
        return AUTH.verify(token, NOW)
    except AuthError as exc:
        assert exc.reason in AUTH_ERROR_REASONS
        assert len(token) < 8 or token not in str(exc)
        return exc


def same_meaning(token: str) -> bool:
    """Whether `token` decodes to exactly the bytes the issuer signed (e.g. only '='
    padding was added)."""
    parts = token.split(".")
    return len(parts) == 3 and [b64d(p) for p in parts] == ORIGINAL_SEGMENTS


def assert_refused_or_unchanged(token: str) -> None:
    result = outcome(token)
    if isinstance(result, Principal):
        assert same_meaning(token), "a token with different content was accepted"
        assert result == ORIGINAL


# --- mutations of a valid token ----------------------------------------------------------


@given(segment=st.integers(0, 2), data=st.data())
def test_flipping_a_bit_in_any_decoded_segment_is_refused(segment: int, data: Any) -> None:
    parts = TOKEN.split(".")
    raw = bytearray(b64d(parts[segment]) or b"")
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    parts[segment] = b64e(bytes(raw))
    assert isinstance(outcome(".".join(parts)), AuthError)


@given(segment=st.integers(0, 2), data=st.data())
def test_replacing_decoded_bytes_in_any_segment_is_refused(segment: int, data: Any) -> None:
    parts = TOKEN.split(".")
    raw = bytearray(b64d(parts[segment]) or b"")
    start = data.draw(st.integers(0, len(raw) - 1))
    new = data.draw(st.binary(min_size=1, max_size=8))
    mutated = bytes(raw[:start]) + new + bytes(raw[start + len(new) :])
    assume(mutated != bytes(raw))
    parts[segment] = b64e(mutated)
    assert isinstance(outcome(".".join(parts)), AuthError)


@given(data=st.data(), char=st.sampled_from(B64URL + "=.+/ \x00\u00e9"))
def test_replacing_one_character_is_refused_unless_meaning_is_unchanged(
    data: Any, char: str
) -> None:
    position = data.draw(st.integers(0, len(TOKEN) - 1))
    assume(TOKEN[position] != char)
    assert_refused_or_unchanged(TOKEN[:position] + char + TOKEN[position + 1 :])


@given(data=st.data(), byte=st.integers(1, 255))
def test_xoring_a_raw_byte_of_the_token_is_refused_unless_meaning_is_unchanged(
    data: Any, byte: int
) -> None:
    raw = bytearray(TOKEN.encode())
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] ^= byte
    assert_refused_or_unchanged(raw.decode("latin-1"))


@given(
    data=st.data(),
    inserted=st.text(alphabet=B64URL + "=.", max_size=6),
    deleted=st.integers(0, 6),
)
def test_inserting_and_deleting_characters_is_refused_unless_meaning_is_unchanged(
    data: Any, inserted: str, deleted: int
) -> None:
    position = data.draw(st.integers(0, len(TOKEN)))
    mutated = TOKEN[:position] + inserted + TOKEN[position + deleted :]
    assume(mutated != TOKEN)
    assert_refused_or_unchanged(mutated)


@given(
    alg=st.one_of(
        st.sampled_from(["none", "None", "NONE", "HS512", "HS384", "RS256", "ES256", "EdDSA"]),
        st.sampled_from(["hs256", "HS256 ", "", "HS2560"]),
        st.sampled_from([None, 1, True, ["HS256"], {"alg": "HS256"}]),
        st.text(max_size=10),
    ),
    signature=st.sampled_from(["keep", "empty", "random"]),
    extra=st.dictionaries(st.sampled_from(["kid", "typ", "jku", "x5u", "crit"]), st.text()),
    random_sig=st.binary(min_size=1, max_size=64),
)
def test_swapping_alg_without_resigning_is_refused(
    alg: Any, signature: str, extra: dict[str, str], random_sig: bytes
) -> None:
    header = {**extra, "alg": alg}
    _, payload, sig = TOKEN.split(".")
    if signature == "empty":
        sig = ""
    elif signature == "random":
        sig = b64e(random_sig)
    token = f"{b64e(json.dumps(header).encode())}.{payload}.{sig}"
    assume(token != TOKEN)
    result = outcome(token)
    assert isinstance(result, AuthError)
    if alg in ("none", "None", "NONE", "HS512", "RS256") and "crit" not in extra:
        assert result.reason == "algorithm_not_allowed"


# --- claims of the wrong type, correctly signed ------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)
_not_text = _json.filter(lambda v: not isinstance(v, str))
_not_number = _json.filter(lambda v: isinstance(v, bool) or not isinstance(v, int | float))
_non_finite = st.sampled_from([math.inf, -math.inf, math.nan])
_not_string_list = _json.filter(
    lambda v: not (isinstance(v, list) and all(isinstance(i, str) for i in v))
)

WRONG_TYPES = {
    "sub": st.one_of(_not_text, st.just("")),
    "exp": st.one_of(_not_number, _non_finite, st.text(max_size=12)),
    "nbf": st.one_of(_not_number, _non_finite),
    "iat": st.one_of(_not_number, _non_finite),
    "rooms": st.one_of(_not_string_list, st.just("project:*")),
    "publish": st.one_of(_not_string_list, st.just("chat:*")),
    "info": _json.filter(lambda v: not isinstance(v, dict)),
    "jti": _not_text,
}


@given(data=st.data(), claim=st.sampled_from(sorted(WRONG_TYPES)))
def test_a_claim_of_the_wrong_type_is_bad_claims(data: Any, claim: str) -> None:
    value = data.draw(WRONG_TYPES[claim])
    result = outcome(signed({**CLAIMS, claim: value}))
    assert isinstance(result, AuthError)
    assert result.reason == "bad_claims"


NAMED_WRONG_VALUES: dict[str, list[Any]] = {
    "sub": [1, 12.5, ["alice"], None, "", {"id": "alice"}, True, False],
    "exp": ["1800003600", None, True, False, [NOW + 60], {"t": NOW + 60}, "soon"],
    "rooms": ["project:*", None, {"project:*": True}, [1], ["a", None], [["a"]]],
}


@given(
    claim_and_value=st.sampled_from(
        [(claim, value) for claim, values in NAMED_WRONG_VALUES.items() for value in values]
    ),
    drop=st.booleans(),
)
def test_sub_exp_and_rooms_with_named_wrong_values_are_bad_claims(
    claim_and_value: tuple[str, Any], drop: bool
) -> None:
    claim, value = claim_and_value
    payload = {**CLAIMS, claim: value}
    if drop and claim != "rooms":
        del payload[claim]  # a missing required claim is as bad as a wrong one
    result = outcome(signed(payload))
    assert isinstance(result, AuthError)
    assert result.reason == "bad_claims"


@given(payload=st.dictionaries(st.sampled_from(sorted({*CLAIMS, "nbf", "aud"})), _json))
def test_any_correctly_signed_payload_gives_a_well_formed_answer(payload: dict[str, Any]) -> None:
    result = outcome(signed({**CLAIMS, **payload}))
    if isinstance(result, Principal):
        assert isinstance(result.user_id, str) and result.user_id
        assert math.isfinite(result.expires_at) and result.expires_at >= NOW
        assert all(isinstance(r, str) for r in result.rooms + result.publish)
        assert isinstance(result.info, dict)
        json.dumps(result.info, allow_nan=False).encode()  # presence frames can carry it
        assert result.jti is None or isinstance(result.jti, str)


@given(header=_json, payload=_json)
def test_json_that_is_not_a_jwt_header_and_payload_never_crashes(header: Any, payload: Any) -> None:
    result = outcome(signed(payload, header=header))
    if isinstance(result, Principal):  # only possible with a real HS256 header
        assert isinstance(header, dict) and header.get("alg") == "HS256"


# --- random input ------------------------------------------------------------------------


@given(text=st.text(st.characters(exclude_categories=()), max_size=300))
def test_random_strings_are_refused(text: str) -> None:
    assert isinstance(outcome(text), AuthError)


@given(segments=st.lists(st.text(alphabet=B64URL + "=", max_size=80), min_size=1, max_size=5))
def test_random_jwt_shaped_strings_are_refused(segments: list[str]) -> None:
    assert isinstance(outcome(".".join(segments)), AuthError)


@given(
    header=st.sampled_from(['{"alg":"HS256"}', '{"alg":"HS256","typ":"JWT"}', "{}"]),
    payload=st.binary(max_size=64),
    signature=st.binary(max_size=64),
)
def test_random_payload_bytes_with_random_signatures_are_refused(
    header: str, payload: bytes, signature: bytes
) -> None:
    token = f"{b64e(header.encode())}.{b64e(payload)}.{b64e(signature)}"
    assert isinstance(outcome(token), AuthError)


# --- an asymmetric algorithm too ---------------------------------------------------------

_EC_PRIVATE = ec.generate_private_key(ec.SECP256R1())


def _es256_authenticator() -> tuple[Authenticator, str]:
    import tempfile
    from pathlib import Path

    from cryptography.hazmat.primitives import serialization

    pem = _EC_PRIVATE.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ec.pem"
        path.write_bytes(pem)
        auth = Authenticator(
            Settings(jwt_public_key=str(path), jwt_algorithms=("ES256",), node="fuzz")
        )
    return auth, jwt.encode(CLAIMS, _EC_PRIVATE, algorithm="ES256")


ES_AUTH, ES_TOKEN = _es256_authenticator()


@given(signature=st.binary(max_size=140), keep_prefix=st.integers(0, 64))
def test_es256_signature_of_any_length_or_content_is_refused(
    signature: bytes, keep_prefix: int
) -> None:
    head, payload, sig = ES_TOKEN.split(".")
    forged = (b64d(sig) or b"")[:keep_prefix] + signature
    assume(forged != b64d(sig))
    try:
        ES_AUTH.verify(f"{head}.{payload}.{b64e(forged)}", NOW)
    except AuthError as exc:
        assert exc.reason in ("bad_signature", "malformed")
    else:
        raise AssertionError("a forged ES256 signature was accepted")


def test_the_unmutated_tokens_are_accepted() -> None:
    assert ORIGINAL.user_id == "alice"
    assert ES_AUTH.verify(ES_TOKEN, NOW) == ORIGINAL
