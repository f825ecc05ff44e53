"""roomcast.auth: token verification (protocol §2), room patterns and the revocation list."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from roomcast import auth as auth_module
from roomcast.auth import (
    MAX_INFO_BYTES,
    Authenticator,
    AuthError,
    Principal,
    RevocationList,
    room_matches,
)
from roomcast.settings import Settings, SettingsError

SECRET = "test-secret-" + "x" * 60  # 72 bytes: long enough for HS512 without warnings
NOW = 1_800_000_000.0


def settings(**changes: Any) -> Settings:
    base: dict[str, Any] = {"jwt_secret": SECRET, "node": "test"}
    base.update(changes)
    return Settings(**base)


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": "alice", "exp": NOW + 60}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()


def hs_token(payload: dict[str, Any], alg: str = "HS256", key: str = SECRET) -> str:
    return jwt.encode(payload, key, algorithm=alg)


def raw_token(header: dict[str, Any], payload: Any, sign: Callable[[bytes], bytes]) -> str:
    """A token built by hand (pyjwt refuses to build some of the bad ones we need)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    return signing_input + "." + b64(sign(signing_input.encode()))


def hs_raw(payload: Any) -> str:
    """An HS256 token signed with SECRET, built without pyjwt's encode-time checks."""
    return raw_token({"alg": "HS256", "typ": "JWT"}, payload, _hmac_with(SECRET.encode()))


def _hmac_with(key: bytes) -> Callable[[bytes], bytes]:
    return lambda data: hmac.new(key, data, hashlib.sha256).digest()


def refused(auth: Authenticator, token: str | None, now: float = NOW, **kw: Any) -> AuthError:
    with pytest.raises(AuthError) as info:
        auth.verify(token, now, **kw)
    return info.value


@pytest.fixture
def auth() -> Authenticator:
    return Authenticator(settings())


# --- keys --------------------------------------------------------------------------------


def _write_public(path: Path, private: Any) -> str:
    path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return str(path)


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="module")
def rsa_key(keydir: Path) -> tuple[rsa.RSAPrivateKey, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return private, _write_public(keydir / "rsa.pem", private)


@pytest.fixture(scope="module")
def ec_key(keydir: Path) -> tuple[ec.EllipticCurvePrivateKey, str]:
    private = ec.generate_private_key(ec.SECP256R1())
    return private, _write_public(keydir / "ec.pem", private)


@pytest.fixture(scope="module")
def ed_key(keydir: Path) -> tuple[ed25519.Ed25519PrivateKey, str]:
    private = ed25519.Ed25519PrivateKey.generate()
    return private, _write_public(keydir / "ed25519.pem", private)


# --- each algorithm family ---------------------------------------------------------------


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_token_signed_with_the_secret_is_accepted(alg: str) -> None:
    auth = Authenticator(settings(jwt_algorithms=(alg,)))
    principal = auth.verify(hs_token(claims(), alg), NOW)
    assert principal.user_id == "alice"
    assert principal.expires_at == NOW + 60


def test_rs256_token_is_verified_with_the_public_key_file(rsa_key: Any) -> None:
    private, path = rsa_key
    auth = Authenticator(settings(jwt_secret=None, jwt_public_key=path))
    assert auth.verify(jwt.encode(claims(), private, algorithm="RS256"), NOW).user_id == "alice"


def test_es256_token_is_verified_with_the_public_key_file(ec_key: Any) -> None:
    private, path = ec_key
    auth = Authenticator(settings(jwt_secret=None, jwt_public_key=path, jwt_algorithms=("ES256",)))
    assert auth.verify(jwt.encode(claims(), private, algorithm="ES256"), NOW).user_id == "alice"


def test_eddsa_token_is_verified_with_the_public_key_file(ed_key: Any) -> None:
    private, path = ed_key
    auth = Authenticator(settings(jwt_secret=None, jwt_public_key=path, jwt_algorithms=("EdDSA",)))
    assert auth.verify(jwt.encode(claims(), private, algorithm="EdDSA"), NOW).user_id == "alice"


def test_secret_and_public_key_can_be_allowed_together(rsa_key: Any) -> None:
    private, path = rsa_key
    auth = Authenticator(settings(jwt_public_key=path, jwt_algorithms=("HS256", "RS256")))
    assert auth.verify(hs_token(claims()), NOW).user_id == "alice"
    assert auth.verify(jwt.encode(claims(), private, algorithm="RS256"), NOW).user_id == "alice"


def test_token_signed_by_another_rsa_key_has_a_bad_signature(rsa_key: Any) -> None:
    _, path = rsa_key
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    auth = Authenticator(settings(jwt_secret=None, jwt_public_key=path))
    err = refused(auth, jwt.encode(claims(), other, algorithm="RS256"))
    assert err.reason == "bad_signature"


# --- algorithm attacks -------------------------------------------------------------------


def test_alg_none_is_refused(auth: Authenticator) -> None:
    token = jwt.encode(claims(), "", algorithm="none")
    assert refused(auth, token).reason == "algorithm_not_allowed"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
def test_alg_none_spellings_are_refused_even_with_a_signature(
    auth: Authenticator, alg: str
) -> None:
    token = raw_token({"alg": alg, "typ": "JWT"}, claims(), lambda _: b"sig")
    assert refused(auth, token).reason == "algorithm_not_allowed"


def test_hs256_signed_with_the_public_key_pem_is_refused(rsa_key: Any) -> None:
    _, path = rsa_key
    pem = Path(path).read_bytes()
    token = raw_token({"alg": "HS256", "typ": "JWT"}, claims(), _hmac_with(pem))
    auth = Authenticator(settings(jwt_secret=None, jwt_public_key=path))
    assert refused(auth, token).reason == "algorithm_not_allowed"


def test_algorithm_confusion_fails_even_when_hs256_is_also_allowed(rsa_key: Any) -> None:
    _, path = rsa_key
    pem = Path(path).read_bytes()
    token = raw_token({"alg": "HS256", "typ": "JWT"}, claims(), _hmac_with(pem))
    auth = Authenticator(settings(jwt_public_key=path, jwt_algorithms=("HS256", "RS256")))
    assert refused(auth, token).reason == "bad_signature"


def test_algorithm_not_in_the_allow_list_is_refused() -> None:
    auth = Authenticator(settings(jwt_algorithms=("HS256",)))
    assert refused(auth, hs_token(claims(), "HS512")).reason == "algorithm_not_allowed"


def test_header_without_alg_is_malformed(auth: Authenticator) -> None:
    token = raw_token({"typ": "JWT"}, claims(), lambda _: b"sig")
    assert refused(auth, token).reason == "malformed"


def test_unrecognised_alg_text_is_not_echoed(auth: Authenticator) -> None:
    token = raw_token({"alg": "HS256; <script>alert(1)</script>"}, claims(), lambda _: b"s")
    err = refused(auth, token)
    assert err.reason == "algorithm_not_allowed"
    assert "script" not in str(err)


# --- missing, malformed, tampered --------------------------------------------------------


@pytest.mark.parametrize("token", [None, ""])
def test_missing_or_empty_token_is_missing_token(auth: Authenticator, token: str | None) -> None:
    assert refused(auth, token).reason == "missing_token"


@pytest.mark.parametrize(
    "token",
    ["abc", "a.b", "a.b.c", "....", "eyJ.eyJ.sig", "Bearer x.y.z", "jwt\u00e9.a.b", " "],
)
def test_garbage_is_malformed(auth: Authenticator, token: str) -> None:
    assert refused(auth, token).reason == "malformed"


def test_payload_that_is_not_a_json_object_is_malformed(auth: Authenticator) -> None:
    assert refused(auth, hs_raw(["sub", "alice"])).reason == "malformed"


def test_deeply_nested_payload_is_malformed_not_a_crash(auth: Authenticator) -> None:
    header = base64.urlsafe_b64encode(b'{"alg":"HS256"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(b"[" * 100_000).rstrip(b"=")
    signing_input = header + b"." + body
    sig = base64.urlsafe_b64encode(
        hmac.new(SECRET.encode(), signing_input, hashlib.sha256).digest()
    ).rstrip(b"=")
    assert refused(auth, (signing_input + b"." + sig).decode()).reason == "malformed"


def test_tampered_payload_has_a_bad_signature(auth: Authenticator) -> None:
    header, _, sig = hs_token(claims()).split(".")
    other = base64.urlsafe_b64encode(json.dumps(claims(sub="mallory")).encode()).rstrip(b"=")
    assert refused(auth, f"{header}.{other.decode()}.{sig}").reason == "bad_signature"


def test_token_signed_with_another_secret_has_a_bad_signature(auth: Authenticator) -> None:
    token = hs_token(claims(), key="another-secret-" + "y" * 40)
    assert refused(auth, token).reason == "bad_signature"


def test_error_messages_never_contain_the_token(auth: Authenticator) -> None:
    tokens = [
        hs_token(claims(exp=NOW - 10)),
        hs_token(claims(), key="another-secret-" + "y" * 40),
        hs_token(claims(sub="")),
        hs_token(claims(), "HS512")[:-3],
        hs_token(claims()) + "x",
    ]
    for token in tokens:
        message = str(refused(Authenticator(settings(jwt_algorithms=("HS256",))), token))
        assert token not in message
        for segment in token.split("."):
            assert len(segment) < 8 or segment not in message


# --- time claims -------------------------------------------------------------------------


def test_token_is_valid_up_to_and_including_exp(auth: Authenticator) -> None:
    token = hs_token(claims(exp=NOW))
    assert auth.verify(token, NOW).user_id == "alice"


def test_token_is_expired_just_after_exp(auth: Authenticator) -> None:
    token = hs_token(claims(exp=NOW))
    assert refused(auth, token, NOW + 0.001).reason == "expired"


def test_leeway_extends_exp_exactly_by_its_length() -> None:
    auth = Authenticator(settings(jwt_leeway=30))
    token = hs_token(claims(exp=NOW))
    assert auth.verify(token, NOW + 30).user_id == "alice"
    assert refused(auth, token, NOW + 30.001).reason == "expired"


@pytest.mark.parametrize("exp", [_DROP, None, "1800000060", True, [NOW + 60], {"t": 1}])
def test_exp_must_be_present_and_numeric(auth: Authenticator, exp: Any) -> None:
    assert refused(auth, hs_token(claims(exp=exp))).reason == "bad_claims"


@pytest.mark.parametrize("exp", [float("inf"), float("nan"), 10**400])
def test_exp_must_be_finite(auth: Authenticator, exp: Any) -> None:
    assert refused(auth, hs_token(claims(exp=exp))).reason == "bad_claims"


def test_fractional_exp_is_accepted(auth: Authenticator) -> None:
    assert auth.verify(hs_token(claims(exp=NOW + 0.5)), NOW).expires_at == NOW + 0.5


def test_token_before_nbf_is_not_yet_valid(auth: Authenticator) -> None:
    token = hs_token(claims(nbf=NOW + 1))
    assert refused(auth, token).reason == "not_yet_valid"
    assert auth.verify(token, NOW + 1).user_id == "alice"


def test_leeway_applies_to_nbf() -> None:
    auth = Authenticator(settings(jwt_leeway=5))
    token = hs_token(claims(nbf=NOW + 5))
    assert auth.verify(token, NOW).user_id == "alice"
    assert refused(auth, token, NOW - 0.001).reason == "not_yet_valid"


def test_token_issued_in_the_future_is_refused(auth: Authenticator) -> None:
    token = hs_token(claims(iat=NOW + 1))
    assert refused(auth, token).reason == "issued_in_future"
    assert auth.verify(hs_token(claims(iat=NOW)), NOW).user_id == "alice"


def test_leeway_applies_to_iat() -> None:
    auth = Authenticator(settings(jwt_leeway=5))
    assert auth.verify(hs_token(claims(iat=NOW + 5)), NOW).user_id == "alice"
    assert refused(auth, hs_token(claims(iat=NOW + 5.001))).reason == "issued_in_future"


@pytest.mark.parametrize("claim", ["nbf", "iat"])
@pytest.mark.parametrize("value", ["0", None, False, float("nan")])
def test_nbf_and_iat_must_be_numbers(auth: Authenticator, claim: str, value: Any) -> None:
    assert refused(auth, hs_token(claims(**{claim: value}))).reason == "bad_claims"


def test_time_checks_use_the_given_clock_not_the_wall_clock(auth: Authenticator) -> None:
    token = hs_token(claims(exp=100.0))  # long expired by the wall clock
    assert time.time() > 100
    assert auth.verify(token, 50.0).expires_at == 100.0


# --- issuer and audience -----------------------------------------------------------------


def test_issuer_must_match_when_configured() -> None:
    auth = Authenticator(settings(jwt_issuer="https://id.example"))
    assert auth.verify(hs_token(claims(iss="https://id.example")), NOW).user_id == "alice"
    assert refused(auth, hs_token(claims(iss="https://evil.example"))).reason == "bad_issuer"


def test_missing_issuer_is_refused_when_configured() -> None:
    auth = Authenticator(settings(jwt_issuer="acme"))
    assert refused(auth, hs_token(claims())).reason == "bad_issuer"


@pytest.mark.parametrize("iss", ["acm", "cme", "acmeacme", ["acme"], 1])
def test_issuer_is_not_matched_partially(iss: Any) -> None:
    auth = Authenticator(settings(jwt_issuer="acme"))
    assert refused(auth, hs_raw(claims(iss=iss))).reason == "bad_issuer"


def test_issuer_is_ignored_when_not_configured(auth: Authenticator) -> None:
    assert auth.verify(hs_token(claims(iss="whoever")), NOW).user_id == "alice"


def test_audience_must_match_when_configured() -> None:
    auth = Authenticator(settings(jwt_audience="roomcast"))
    assert auth.verify(hs_token(claims(aud="roomcast")), NOW).user_id == "alice"
    assert auth.verify(hs_token(claims(aud=["other", "roomcast"])), NOW).user_id == "alice"
    assert refused(auth, hs_token(claims(aud="other"))).reason == "bad_audience"


@pytest.mark.parametrize("aud", [_DROP, "roomcas", ["other"], 7])
def test_missing_or_wrong_audience_is_refused_when_configured(aud: Any) -> None:
    auth = Authenticator(settings(jwt_audience="roomcast"))
    assert refused(auth, hs_token(claims(aud=aud))).reason == "bad_audience"


def test_audience_is_ignored_when_not_configured(auth: Authenticator) -> None:
    assert auth.verify(hs_token(claims(aud="somebody-else")), NOW).user_id == "alice"


# --- sub and the optional claims ---------------------------------------------------------


@pytest.mark.parametrize("sub", [_DROP, "", None, 42, ["alice"], {"id": "alice"}, True])
def test_sub_must_be_a_non_empty_string(auth: Authenticator, sub: Any) -> None:
    assert refused(auth, hs_token(claims(sub=sub))).reason == "bad_claims"


def test_sub_with_a_lone_surrogate_is_refused(auth: Authenticator) -> None:
    token = hs_raw(claims(sub="al\ud800ice"))  # json.dumps writes it as a \ud800 escape
    assert refused(auth, token).reason == "bad_claims"


@pytest.mark.parametrize("claim", ["rooms", "publish"])
@pytest.mark.parametrize("value", ["project:*", None, {"a": 1}, [1], ["ok", None], [["x"]]])
def test_rooms_and_publish_must_be_lists_of_strings(
    auth: Authenticator, claim: str, value: Any
) -> None:
    assert refused(auth, hs_token(claims(**{claim: value}))).reason == "bad_claims"


@pytest.mark.parametrize("info", ["hi", None, [1, 2], 3, {"x": float("nan")}])
def test_info_must_be_a_json_object(auth: Authenticator, info: Any) -> None:
    assert refused(auth, hs_token(claims(info=info))).reason == "bad_claims"


def _info_of_size(size: int) -> dict[str, str]:
    overhead = len(json.dumps({"k": ""}, separators=(",", ":")))
    return {"k": "v" * (size - overhead)}


def test_info_of_exactly_the_limit_is_accepted(auth: Authenticator) -> None:
    info = _info_of_size(MAX_INFO_BYTES)
    assert auth.verify(hs_token(claims(info=info)), NOW).info == info


def test_info_over_the_limit_is_refused(auth: Authenticator) -> None:
    token = hs_token(claims(info=_info_of_size(MAX_INFO_BYTES + 1)))
    assert refused(auth, token).reason == "bad_claims"


def test_info_limit_counts_utf8_bytes(auth: Authenticator) -> None:
    token = hs_token(claims(info={"k": "\u00e9" * (MAX_INFO_BYTES // 2)}))  # 2 bytes each
    assert refused(auth, token).reason == "bad_claims"


@pytest.mark.parametrize("jti", [1, None, ["a"], {"id": "a"}])
def test_jti_must_be_a_string(auth: Authenticator, jti: Any) -> None:
    assert refused(auth, hs_token(claims(jti=jti))).reason == "bad_claims"


def test_all_claims_reach_the_principal(auth: Authenticator) -> None:
    token = hs_token(
        claims(rooms=["project:12"], publish=["chat:*"], info={"name": "Alice"}, jti="t-1")
    )
    assert auth.verify(token, NOW) == Principal(
        user_id="alice",
        rooms=("project:12",),
        publish=("chat:*",),
        info={"name": "Alice"},
        expires_at=NOW + 60,
        jti="t-1",
    )


def test_absent_optional_claims_have_empty_defaults(auth: Authenticator) -> None:
    principal = auth.verify(hs_token(claims()), NOW)
    assert principal.publish == ()
    assert principal.info == {}
    assert principal.jti is None


def test_unknown_claims_are_ignored(auth: Authenticator) -> None:
    assert auth.verify(hs_token(claims(role="admin", extra=[1])), NOW).user_id == "alice"


# --- the fast path: header read once per distinct header, secret vetted once -------------

NOT_A_JWT = "the token is not a well-formed JWT"


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "HS256", "typ": "JWT"},  # allowed: goes straight to pyjwt
        {"alg": "HS512", "typ": "JWT"},  # not allowed
        {"typ": "JWT"},  # no alg
    ],
)
@pytest.mark.parametrize("rest", ["!!!.sig", "e30.!!!", "e30", "e30.sig.extra"])
def test_a_bad_later_segment_is_malformed_whatever_the_header_says(
    auth: Authenticator, header: dict[str, Any], rest: str
) -> None:
    head = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    for _ in range(2):  # the second time the header's answer comes from the cache
        err = refused(auth, f"{head}.{rest}")
        assert (err.reason, str(err)) == ("malformed", NOT_A_JWT)


def test_the_header_cache_does_not_carry_one_allow_list_to_another() -> None:
    hs256_only = Authenticator(settings(jwt_algorithms=("HS256",)))
    hs512_only = Authenticator(settings(jwt_algorithms=("HS512",)))
    token = hs_token(claims(), "HS512")
    assert refused(hs256_only, token).reason == "algorithm_not_allowed"
    assert hs512_only.verify(token, NOW).user_id == "alice"
    assert refused(hs256_only, token).reason == "algorithm_not_allowed"


def test_the_header_cache_stays_bounded(auth: Authenticator) -> None:
    cache = auth_module._cached_header_fields
    cache.cache_clear()
    for i in range(2 * auth_module._HEADER_CACHE_SIZE):
        token = jwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": f"key-{i}"})
        assert auth.verify(token, NOW).user_id == "alice"
    assert cache.cache_info().currsize == auth_module._HEADER_CACHE_SIZE
    cache.cache_clear()
    long_kid = "k" * auth_module._MAX_CACHED_HEADER
    token = jwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": long_kid})
    assert auth.verify(token, NOW).user_id == "alice"
    bad = jwt.encode(claims(), SECRET, algorithm="HS512", headers={"kid": long_kid})
    assert refused(auth, bad).reason == "algorithm_not_allowed"
    assert cache.cache_info().currsize == 0


def test_the_secret_is_vetted_once_not_on_every_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    algs = ("HS256", "HS384", "HS512")
    auth = Authenticator(settings(jwt_algorithms=algs))
    good = [hs_token(claims(), alg) for alg in algs]
    forged = [hs_token(claims(), alg, key="other-" + SECRET) for alg in algs]

    def no_more_vetting(self: Any, key: Any) -> bytes:
        raise AssertionError("HMAC prepare_key ran during verify")

    monkeypatch.setattr(jwt.algorithms.HMACAlgorithm, "prepare_key", no_more_vetting)
    assert all(auth.verify(token, NOW).user_id == "alice" for token in good)
    assert all(refused(auth, token).reason == "bad_signature" for token in forged)


# --- revocation --------------------------------------------------------------------------


def test_revoked_jti_is_refused(auth: Authenticator) -> None:
    revoked = RevocationList()
    revoked.revoke("t-1", NOW)
    assert refused(auth, hs_token(claims(jti="t-1")), revoked=revoked).reason == "revoked"


def test_other_jti_is_not_affected_by_a_revocation(auth: Authenticator) -> None:
    revoked = RevocationList()
    revoked.revoke("t-1", NOW)
    assert auth.verify(hs_token(claims(jti="t-2")), NOW, revoked).jti == "t-2"
    assert auth.verify(hs_token(claims()), NOW, revoked).jti is None


def test_expired_revocation_no_longer_refuses() -> None:
    auth = Authenticator(settings())
    revoked = RevocationList(default_keep=10)
    revoked.revoke("t-1", NOW - 11)
    assert auth.verify(hs_token(claims(jti="t-1")), NOW, revoked).jti == "t-1"


# --- default rooms and permissions -------------------------------------------------------


def test_default_rooms_replace_sub_with_the_user_id() -> None:
    auth = Authenticator(settings(default_rooms=("user:{sub}", "team:{sub}:*", "lobby")))
    principal = auth.verify(hs_token(claims()), NOW)
    assert principal.rooms == ("user:alice", "team:alice:*", "lobby")


def test_default_rooms_are_only_the_personal_room_by_default(auth: Authenticator) -> None:
    principal = auth.verify(hs_token(claims()), NOW)
    assert principal.rooms == ("user:alice",)
    assert principal.can_subscribe("user:alice")
    assert not principal.can_subscribe("user:bob")
    assert not principal.can_subscribe("project:1")


def test_rooms_claim_replaces_the_default_rooms() -> None:
    auth = Authenticator(settings(default_rooms=("lobby",)))
    principal = auth.verify(hs_token(claims(rooms=["workspace:acme:*"])), NOW)
    assert principal.rooms == ("workspace:acme:*",)
    assert not principal.can_subscribe("lobby")


def test_empty_rooms_claim_leaves_only_the_personal_room(auth: Authenticator) -> None:
    principal = auth.verify(hs_token(claims(rooms=[])), NOW)
    assert principal.rooms == ()
    assert principal.can_subscribe("user:alice")
    assert not principal.can_subscribe("user:bob")


def test_personal_room_is_always_allowed() -> None:
    principal = Principal("bob", ("project:*",), (), {}, NOW, None)
    assert principal.can_subscribe("user:bob")
    assert not principal.can_subscribe("user:bobby")
    assert not principal.can_publish("user:bob")


def test_wildcard_in_sub_does_not_widen_the_default_rooms() -> None:
    auth = Authenticator(settings(default_rooms=("user:{sub}", "lobby")))
    principal = auth.verify(hs_token(claims(sub="*")), NOW)
    assert principal.rooms == ("lobby",)
    assert not principal.can_subscribe("user:alice")


def test_workspace_isolation_by_pattern() -> None:
    principal = Principal("a", ("workspace:acme:*",), ("workspace:acme:chat",), {}, NOW, None)
    assert principal.can_subscribe("workspace:acme:project:1")
    assert not principal.can_subscribe("workspace:acmeco:project:1")
    assert not principal.can_subscribe("workspace:evil:project:1")
    assert principal.can_publish("workspace:acme:chat")
    assert not principal.can_publish("workspace:acme:chat2")


# --- pattern semantics -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "room", "expected"),
    [
        ("project:12", "project:12", True),
        ("project:12", "project:123", False),
        ("project:12", "project:1", False),
        ("project:*", "project:12", True),
        ("project:*", "project:", True),
        ("project:*", "project", False),
        ("workspace:*", "workspace:acme:project:9", True),  # '*' crosses ':'
        ("*", "anything:at:all", True),
        ("*", "", True),
        ("a*b*c", "aXXbYYc", True),
        ("a*b*c", "aXXbYY", False),
        ("a*a", "a", False),
        ("a**b", "ab", True),
        ("project:?", "project:1", True),
        ("project:?", "project:12", False),
        ("project:?", "project:", False),
        ("?*", "", False),
        ("*?", "x", True),
        ("room[1]", "room[1]", True),  # '[' is literal, not a character class
        ("room[1]", "room1", False),
        ("room[!a]", "roomb", False),
        ("a.b", "aXb", False),  # '.' is literal too
        ("a+", "aa", False),
        ("a\\*", "a\\xyz", True),  # backslash is literal, it does not escape '*'
        ("a\\*", "a*", False),
        ("", "", True),
        ("", "x", False),
    ],
)
def test_room_pattern_semantics(pattern: str, room: str, expected: bool) -> None:
    assert room_matches([pattern], room) is expected


def test_no_partial_matches() -> None:
    assert not room_matches(["chat"], "chat:1")
    assert not room_matches(["chat"], "xchat")
    assert not room_matches(["hat"], "chat")


def test_any_of_several_patterns_matches() -> None:
    assert room_matches(["a:*", "b:?"], "b:1")
    assert not room_matches(["a:*", "b:?"], "c:1")
    assert not room_matches([], "a")


def test_a_bare_string_is_one_pattern_not_its_characters() -> None:
    assert not room_matches("a*", "b")  # as characters, '*' would match everything
    assert room_matches("a*", "abc")


def test_pathological_pattern_matches_in_linear_time() -> None:
    pattern = "*a" * 40 + "*b"
    start = time.perf_counter()
    assert not room_matches([pattern], "a" * 200)
    assert time.perf_counter() - start < 0.5


# --- RevocationList ----------------------------------------------------------------------


def test_revocation_lasts_until_expires_at() -> None:
    revoked = RevocationList()
    revoked.revoke("j", NOW, expires_at=NOW + 10)
    assert revoked.is_revoked("j", NOW + 10)
    assert not revoked.is_revoked("j", NOW + 10.001)
    assert not revoked.is_revoked("other", NOW)


def test_revocation_without_expiry_is_kept_for_default_keep() -> None:
    revoked = RevocationList(default_keep=100)
    revoked.revoke("j", NOW)
    assert revoked.is_revoked("j", NOW + 100)
    assert not revoked.is_revoked("j", NOW + 101)


def test_default_keep_defaults_to_a_day() -> None:
    revoked = RevocationList()
    revoked.revoke("j", NOW)
    assert revoked.is_revoked("j", NOW + 86400)
    assert not revoked.is_revoked("j", NOW + 86401)


def test_revoking_again_extends_but_never_shortens() -> None:
    revoked = RevocationList()
    revoked.revoke("j", NOW, expires_at=NOW + 100)
    revoked.revoke("j", NOW, expires_at=NOW + 10)
    assert revoked.is_revoked("j", NOW + 50)
    revoked.revoke("j", NOW, expires_at=NOW + 200)
    assert revoked.is_revoked("j", NOW + 150)
    assert len(revoked) == 1


def test_prune_drops_expired_entries_and_counts_them() -> None:
    revoked = RevocationList(default_keep=50)
    revoked.revoke("a", NOW, expires_at=NOW + 10)
    revoked.revoke("b", NOW, expires_at=NOW + 20)
    revoked.revoke("c", NOW)  # NOW + 50
    assert revoked.prune(NOW + 10) == 0  # still valid at exactly its time
    assert revoked.prune(NOW + 25) == 2
    assert len(revoked) == 1
    assert revoked.is_revoked("c", NOW + 25)
    assert revoked.prune(NOW + 1000) == 1
    assert len(revoked) == 0


def test_prune_does_not_count_superseded_times() -> None:
    revoked = RevocationList()
    revoked.revoke("j", NOW, expires_at=NOW + 1)
    revoked.revoke("j", NOW, expires_at=NOW + 100)
    assert revoked.prune(NOW + 50) == 0
    assert revoked.is_revoked("j", NOW + 50)


def test_full_list_drops_the_entries_expiring_soonest() -> None:
    revoked = RevocationList(max_entries=3)
    revoked.revoke("late", NOW, expires_at=NOW + 300)
    revoked.revoke("soon", NOW, expires_at=NOW + 100)
    revoked.revoke("mid", NOW, expires_at=NOW + 200)
    revoked.revoke("new", NOW, expires_at=NOW + 250)
    assert len(revoked) == 3
    assert not revoked.is_revoked("soon", NOW)
    assert all(revoked.is_revoked(j, NOW) for j in ("late", "mid", "new"))


def test_full_list_drops_a_new_entry_that_expires_soonest() -> None:
    revoked = RevocationList(max_entries=2)
    revoked.revoke("a", NOW, expires_at=NOW + 300)
    revoked.revoke("b", NOW, expires_at=NOW + 200)
    revoked.revoke("c", NOW, expires_at=NOW + 100)
    assert len(revoked) == 2
    assert not revoked.is_revoked("c", NOW)


def test_revocation_list_stays_bounded_under_churn() -> None:
    revoked = RevocationList(max_entries=100)
    for i in range(10_000):
        revoked.revoke(f"j{i % 150}", NOW, expires_at=NOW + i)
    assert len(revoked) == 100
    assert len(revoked._heap) <= 2 * 100 + 64
    # the survivors are the 100 entries with the latest times
    assert all(revoked.is_revoked(f"j{i % 150}", NOW + i) for i in range(9_900, 10_000))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"default_keep": 0}, "default_keep"), ({"max_entries": 0}, "max_entries")],
)
def test_revocation_list_rejects_bad_bounds(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RevocationList(**kwargs)


def test_revoke_rejects_a_non_finite_expiry() -> None:
    with pytest.raises(ValueError, match="expires_at"):
        RevocationList().revoke("j", NOW, expires_at=float("nan"))


# --- construction ------------------------------------------------------------------------


def test_a_key_or_secret_is_required() -> None:
    with pytest.raises(SettingsError, match="jwt_secret or jwt_public_key is required"):
        Authenticator(settings(jwt_secret=None))


def test_unreadable_public_key_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="jwt_public_key"):
        Authenticator(settings(jwt_secret=None, jwt_public_key=str(tmp_path / "missing.pem")))


def test_file_that_is_not_a_pem_public_key_names_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "junk.pem"
    path.write_text("not a key")
    with pytest.raises(SettingsError, match="jwt_public_key"):
        Authenticator(settings(jwt_secret=None, jwt_public_key=str(path)))


def test_private_key_file_is_refused_as_public_key(tmp_path: Path) -> None:
    path = tmp_path / "private.pem"
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(SettingsError, match=r"jwt_public_key.*private key"):
        Authenticator(
            settings(jwt_secret=None, jwt_public_key=str(path), jwt_algorithms=("ES256",))
        )


def test_ec_key_on_another_curve_is_refused(tmp_path: Path) -> None:
    path = _write_public(tmp_path / "p384.pem", ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(SettingsError, match=r"jwt_public_key.*curve"):
        Authenticator(settings(jwt_secret=None, jwt_public_key=path, jwt_algorithms=("ES256",)))


def test_allowed_algorithm_that_the_key_cannot_verify_is_a_settings_error(ec_key: Any) -> None:
    _, path = ec_key  # default allow-list with a key is RS256, which an EC key cannot verify
    with pytest.raises(SettingsError, match="jwt_algorithms: RS256"):
        Authenticator(settings(jwt_secret=None, jwt_public_key=path))


def test_allowed_hmac_algorithm_without_a_secret_is_a_settings_error(rsa_key: Any) -> None:
    _, path = rsa_key
    with pytest.raises(SettingsError, match="jwt_algorithms: HS256 needs jwt_secret"):
        Authenticator(settings(jwt_secret=None, jwt_public_key=path, jwt_algorithms=("HS256",)))


def test_pem_text_as_secret_is_a_settings_error(rsa_key: Any) -> None:
    _, path = rsa_key
    with pytest.raises(SettingsError, match="jwt_secret"):
        Authenticator(settings(jwt_secret=Path(path).read_text()))


def test_nan_leeway_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="jwt_leeway"):
        Authenticator(settings(jwt_leeway=float("nan")))


def test_auth_error_carries_reason_and_message() -> None:
    err = AuthError("expired", "the token has expired")
    assert err.reason == "expired"
    assert str(err) == "the token has expired"
