"""Signing without sockets: every claim check, key windows, replay, response binding."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.errors import Unauthenticated
from gateway.signing import (
    PublicKey,
    ReplayCache,
    Verifier,
    b64url,
    b64url_decode,
    body_digest,
    generate_private_key,
    load_private_key,
    public_key_from_jwk,
    sign,
)

NOW = 1_790_000_000.0


def keypair(party: str, alg: str = "EdDSA", **window: datetime) -> tuple[object, PublicKey]:
    pem, jwk = generate_private_key(alg)
    return (load_private_key(pem, kid=f"{party}#k1"),
            public_key_from_jwk(jwk, kid=f"{party}#k1", **window))


def verifier(*keys: PublicKey, audience: str = "gw") -> Verifier:
    return Verifier(audience=audience,
                    keys_for=lambda party: [k for k in keys if k.owner == party])


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_round_trip_and_response_binding(alg: str) -> None:
    caller_key, caller_pub = keypair("320105", alg)
    gw_key, gw_pub = keypair("gw", alg)
    token, sent = sign(caller_key, iss="320105", aud="gw", method="/m", body=b"req", now=NOW)  # type: ignore[arg-type]
    claims = verifier(caller_pub).verify_request(token, method="/m", body=b"req", now=NOW)
    assert claims.bdg == body_digest(b"req") == sent.bdg and claims.iss == "320105"
    answer, _ = sign(gw_key, iss="gw", aud="320105", method="/m", body=b"resp",  # type: ignore[arg-type]
                     now=NOW, request=claims)
    back = verifier(gw_pub, audience="320105")
    got = back.verify_response(answer, peer="gw", method="/m", body=b"resp", request=sent,
                               now=NOW)
    assert (got.rti, got.rdg) == (sent.jti, sent.bdg)
    other, _ = sign(caller_key, iss="320105", aud="gw", method="/m", body=b"req2", now=NOW)  # type: ignore[arg-type]
    other_claims = verifier(caller_pub).verify_request(other, method="/m", body=b"req2", now=NOW)
    with pytest.raises(Unauthenticated, match="not bound"):
        back.verify_response(answer, peer="gw", method="/m", body=b"resp",
                             request=other_claims, now=NOW)
    with pytest.raises(Unauthenticated, match="bdg"):
        back.verify_response(answer, peer="gw", method="/m", body=b"tampered", request=sent,
                             now=NOW)


def test_clock_skew_window() -> None:
    key, pub = keypair("p")
    v = verifier(pub)
    ok, _ = sign(key, iss="p", aud="gw", method="/m", body=b"", now=NOW + 59)  # type: ignore[arg-type]
    v.verify_request(ok, method="/m", body=b"", now=NOW)
    late, _ = sign(key, iss="p", aud="gw", method="/m", body=b"", now=NOW + 61)  # type: ignore[arg-type]
    with pytest.raises(Unauthenticated, match="future"):
        v.verify_request(late, method="/m", body=b"", now=NOW)
    old, _ = sign(key, iss="p", aud="gw", method="/m", body=b"", now=NOW - 200, ttl=120)  # type: ignore[arg-type]
    with pytest.raises(Unauthenticated, match="expired"):
        v.verify_request(old, method="/m", body=b"", now=NOW)


def test_key_rotation_windows() -> None:
    t = datetime.fromtimestamp(NOW, UTC)
    old_key, old_pub = keypair("p", not_after=t)
    token, _ = sign(old_key, iss="p", aud="gw", method="/m", body=b"", now=NOW + 10)  # type: ignore[arg-type]
    with pytest.raises(Unauthenticated, match="not valid at"):
        verifier(old_pub).verify_request(token, method="/m", body=b"", now=NOW + 10)
    token, _ = sign(old_key, iss="p", aud="gw", method="/m", body=b"", now=NOW - 10)  # type: ignore[arg-type]
    verifier(old_pub).verify_request(token, method="/m", body=b"", now=NOW - 10)


def test_algorithm_must_match_the_key() -> None:
    ed_key, _ = keypair("p", "EdDSA")
    _, es_pub = keypair("p", "ES256")
    token, _ = sign(ed_key, iss="p", aud="gw", method="/m", body=b"", now=NOW)  # type: ignore[arg-type]
    with pytest.raises(Unauthenticated, match="signs with ES256"):
        verifier(es_pub).verify_request(token, method="/m", body=b"", now=NOW)


def test_issuer_must_own_the_key() -> None:
    key, pub = keypair("p")
    token, _ = sign(key, iss="someone-else", aud="gw", method="/m", body=b"", now=NOW)  # type: ignore[arg-type]
    with pytest.raises(Unauthenticated, match="does not own"):
        verifier(pub).verify_request(token, method="/m", body=b"", now=NOW)


def test_replay_cache_forgets_after_expiry() -> None:
    cache = ReplayCache()
    assert cache.check_and_add("a", exp=100, now=50)
    assert not cache.check_and_add("a", exp=100, now=60)
    assert cache.check_and_add("b", exp=300, now=200)  # prunes "a"
    assert len(cache) == 1


@pytest.mark.parametrize("jwk", [
    {"kty": "OKP", "crv": "Ed25519", "x": "short"},
    {"kty": "RSA", "n": "x", "e": "AQAB"},
    {"kty": "EC", "crv": "P-256", "x": "AAAA"},
])
def test_bad_jwks_are_refused(jwk: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="key"):
        public_key_from_jwk(jwk, kid="p#k1")


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_tokens_interoperate_with_pyjwt_both_ways(alg: str) -> None:
    """Our compact JWS is what PyJWT (the reference a partner in Python would use) makes
    and accepts, so partners need nothing but a standard JWT library."""
    import json

    import jwt

    key, pub = keypair("320105", alg)
    token, _ = sign(key, iss="320105", aud="gw", method="/m", body=b"x", now=NOW)  # type: ignore[arg-type]
    decoded = jwt.PyJWS().decode_complete(token, pub.key, algorithms=[alg])  # type: ignore[arg-type]
    assert decoded["header"] == {"alg": alg, "kid": "320105#k1", "typ": "tongban+jwt"}
    assert json.loads(decoded["payload"])["bdg"] == body_digest(b"x")

    claims = {"iss": "320105", "aud": "gw", "iat": int(NOW), "exp": int(NOW) + 60,
              "jti": "A" * 22, "mth": "/m", "bdg": body_digest(b"y")}
    theirs = jwt.PyJWS().encode(json.dumps(claims).encode(), key.key, algorithm=alg,  # type: ignore[attr-defined]
                                headers={"kid": "320105#k1", "typ": "tongban+jwt"})
    got = verifier(pub).verify_request(theirs, method="/m", body=b"y", now=NOW)
    assert got.jti == "A" * 22


@pytest.mark.parametrize("mangle", [
    lambda t: t + ".x",  # four parts
    lambda t: t.replace(".", "!", 1),  # two parts
    lambda t: "e30" + t[t.index("."):],  # header {} (no kid)
    lambda t: t[:-4] + ("AAAA" if not t.endswith("AAAA") else "BBBB"),  # signature changed
    lambda t: t[:10] + "*" + t[11:],  # not base64url
    lambda t: t.split(".")[0] + ".bm90IGpzb24." + t.split(".")[2],  # payload swapped
])
def test_malformed_tokens_are_unauthenticated(mangle: object) -> None:
    key, pub = keypair("320105")
    token, _ = sign(key, iss="320105", aud="gw", method="/m", body=b"x", now=NOW)  # type: ignore[arg-type]
    with pytest.raises(Unauthenticated):
        verifier(pub).verify_request(mangle(token), method="/m", body=b"x", now=NOW)  # type: ignore[operator]


def test_critical_headers_are_refused() -> None:
    import base64
    import json

    key, pub = keypair("320105")
    token, _ = sign(key, iss="320105", aud="gw", method="/m", body=b"x", now=NOW)  # type: ignore[arg-type]
    header = base64.urlsafe_b64encode(json.dumps(
        {"alg": "EdDSA", "kid": "320105#k1", "typ": "tongban+jwt", "crit": ["exp"]}
    ).encode()).rstrip(b"=").decode()
    forged = header + token[token.index("."):]
    with pytest.raises(Unauthenticated, match="critical"):
        verifier(pub).verify_request(forged, method="/m", body=b"x", now=NOW)


@pytest.mark.parametrize("text", ["ab*d", "abcde", "ab=c", "=abc", "abç", "ab cd", "ab\ncd"])
def test_base64url_decoding_is_strict(text: str) -> None:
    """Anything outside the alphabet, misplaced padding or an impossible length is an
    error, never silently skipped (which would let two tokens decode to one)."""
    with pytest.raises(ValueError, match=r"base64|padding|ascii"):
        b64url_decode(text)


def test_base64url_round_trip() -> None:
    for n in range(40):
        data = bytes(range(256))[n:n + n]
        assert b64url_decode(b64url(data)) == data
