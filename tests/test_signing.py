"""Signing without sockets: every claim check, key windows, replay, response binding."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import ResourceExhausted, Unauthenticated
from gateway.signing import (
    PublicKey,
    b64url,
    b64url_decode,
    body_digest,
    generate_private_key,
    load_private_key,
    public_key_from_jwk,
    sign,
)
from gateway.verifier import ReplayCache, Verifier

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


def test_replay_cache_forgets_after_its_last_acceptable_instant() -> None:
    cache = ReplayCache()
    assert cache.check_and_add("p", "a", until=100, now=50)
    assert not cache.check_and_add("p", "a", until=100, now=100)
    assert cache.check_and_add("q", "a", until=100, now=60)  # unique per issuer (§4.1.7)
    assert cache.check_and_add("p", "b", until=300, now=200)  # prunes "a" of both
    assert len(cache) == 1


def test_a_token_is_refused_as_a_replay_until_exp_plus_skew() -> None:
    """The attack: accepted until exp + skew, but forgotten at exp, one token was
    accepted four times. Each second from exp to exp + skew it is a replay."""
    key, pub = keypair("p")
    v = verifier(pub)
    token, claims = sign(key, iss="p", aud="gw", method="/m", body=b"", now=NOW, ttl=30)  # type: ignore[arg-type]
    v.verify_request(token, method="/m", body=b"", now=NOW)
    for late in range(0, v.skew_s + 1, 5):
        with pytest.raises(Unauthenticated, match="replayed"):
            v.verify_request(token, method="/m", body=b"", now=claims.exp + late)
    with pytest.raises(Unauthenticated, match="expired"):
        v.verify_request(token, method="/m", body=b"", now=claims.exp + v.skew_s + 1)


def test_one_issuer_cannot_fill_the_replay_cache_for_the_others() -> None:
    noisy_key, noisy_pub = keypair("noisy")
    calm_key, calm_pub = keypair("calm")
    v = verifier(noisy_pub, calm_pub)
    v.replay = ReplayCache(max_entries=100, per_issuer=10)
    for _ in range(10):
        t, _ = sign(noisy_key, iss="noisy", aud="gw", method="/m", body=b"", now=NOW)  # type: ignore[arg-type]
        v.verify_request(t, method="/m", body=b"", now=NOW)
    t, _ = sign(noisy_key, iss="noisy", aud="gw", method="/m", body=b"", now=NOW)  # type: ignore[arg-type]
    with pytest.raises(ResourceExhausted, match="noisy"):
        v.verify_request(t, method="/m", body=b"", now=NOW)
    for _ in range(10):  # the others are untouched
        t, _ = sign(calm_key, iss="calm", aud="gw", method="/m", body=b"", now=NOW)  # type: ignore[arg-type]
        v.verify_request(t, method="/m", body=b"", now=NOW)
    # once its tokens can no longer be accepted, the noisy issuer's share is free again
    t, _ = sign(noisy_key, iss="noisy", aud="gw", method="/m", body=b"", now=NOW + 181)  # type: ignore[arg-type]
    v.verify_request(t, method="/m", body=b"", now=NOW + 181)


def test_preloaded_jtis_are_replays_for_the_whole_window() -> None:
    key, pub = keypair("p")
    token, claims = sign(key, iss="p", aud="gw", method="/m", body=b"", now=NOW, ttl=300)  # type: ignore[arg-type]
    fresh = verifier(pub)  # a restarted gateway: only the audit log remembers
    assert fresh.preload([("p", claims.jti, NOW), ("p", "", NOW)], now=NOW + 1) == 1
    with pytest.raises(Unauthenticated, match="replayed"):
        fresh.verify_request(token, method="/m", body=b"", now=claims.exp + fresh.skew_s)


def test_a_response_token_is_never_a_request() -> None:
    caller_key, caller_pub = keypair("a")
    gw_key, gw_pub = keypair("b")
    request, sent = sign(caller_key, iss="a", aud="b", method="/m", body=b"req", now=NOW)  # type: ignore[arg-type]
    answer, _ = sign(gw_key, iss="b", aud="a", method="/m", body=b"resp", now=NOW,  # type: ignore[arg-type]
                     request=sent)
    with pytest.raises(Unauthenticated, match="response signature"):
        verifier(gw_pub, audience="a").verify_request(answer, method="/m", body=b"resp", now=NOW)
    with pytest.raises(Unauthenticated, match="carries rti and rdg"):
        verifier(caller_pub, audience="b").verify_response(
            request, peer="a", method="/m", body=b"req", request=sent, now=NOW)


def _forge(key: object, header: object, claims: object) -> str:
    """A compact JWS with any header and payload bytes, correctly signed."""
    from gateway.signing import _sign_bytes

    def encode(part: object) -> str:
        raw = part if isinstance(part, bytes) else json.dumps(part).encode()
        return b64url(raw)

    signing_input = f"{encode(header)}.{encode(claims)}"
    return f"{signing_input}.{b64url(_sign_bytes(key, signing_input.encode()))}"  # type: ignore[arg-type]


def _claims(**changes: object) -> dict[str, object]:
    claims: dict[str, object] = {"iss": "320105", "aud": "gw", "iat": int(NOW),
                                 "exp": int(NOW) + 60, "jti": "A" * 22, "mth": "/m",
                                 "bdg": body_digest(b"x")}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


HEADER_OK = {"alg": "EdDSA", "kid": "320105#k1", "typ": "tongban+jwt"}


@pytest.mark.parametrize("typ", ["tongban+jwt", "application/tongban+jwt",
                                 "Application/Tongban+JWT", "TONGBAN+JWT"])
def test_typ_may_carry_the_application_prefix(typ: str) -> None:
    """RFC 7515 §4.1.9: "application/" may be omitted; media types are case-insensitive."""
    key, pub = keypair("320105")
    verifier(pub).verify_request(_forge(key, HEADER_OK | {"typ": typ}, _claims()),
                                 method="/m", body=b"x", now=NOW)


@pytest.mark.parametrize("typ", ["tongban-batch+jwt", "text/tongban+jwt", "jwt", 7, None])
def test_other_types_are_refused(typ: object) -> None:
    key, pub = keypair("320105")
    with pytest.raises(Unauthenticated, match="typ"):
        verifier(pub).verify_request(_forge(key, HEADER_OK | {"typ": typ}, _claims()),
                                     method="/m", body=b"x", now=NOW)


def test_aud_may_be_an_array_holding_the_receiver() -> None:
    """RFC 7519 §4.1.3: aud is a string or an array of strings naming the receivers."""
    key, pub = keypair("320105")
    got = verifier(pub).verify_request(_forge(key, HEADER_OK, _claims(aud=["x", "gw"])),
                                       method="/m", body=b"x", now=NOW)
    assert got.aud == "gw"
    for aud in (["x", "y"], [], ["gw", 1], {"gw": 1}):
        with pytest.raises(Unauthenticated, match="aud"):
            verifier(pub).verify_request(_forge(key, HEADER_OK, _claims(aud=aud, jti="B" * 22)),
                                         method="/m", body=b"x", now=NOW)


DEEP = "[" * 3000 + "]" * 3000


@pytest.mark.parametrize(("header", "claims", "text"), [
    (HEADER_OK, _claims(jti="not base64url!!!!!!!!!!"), "jti is not base64url"),
    (HEADER_OK, _claims(jti="é" * 22), "jti is not base64url"),
    (HEADER_OK, _claims(jti="A" * 200), "jti is not base64url"),
    (HEADER_OK, _claims(jti="AAAA"), "128 random bits"),
    (HEADER_OK, DEEP.encode(), "nests too deeply"),
    (HEADER_OK, b'{"iss": "\xff\xfe"}', "UTF-8"),
    (HEADER_OK, "{}".encode("utf-16"), "UTF-8"),
    (HEADER_OK, _claims(iat=True, exp=True), "integers"),
    (DEEP.encode(), _claims(), "nests too deeply"),
    (b"\xff\xfe{}", _claims(), "UTF-8"),
    ([HEADER_OK], _claims(), "malformed"),
    (HEADER_OK | {"alg": {"x": 1}}, _claims(), "signs with"),
])
def test_bad_tokens_are_unauthenticated_never_a_crash(header: object, claims: object,
                                                      text: str) -> None:
    key, pub = keypair("320105")
    v = verifier(pub)
    v.max_token_chars = v.max_claims_bytes = 100_000  # past the size caps, to the parser
    with pytest.raises(Unauthenticated, match=text):
        v.verify_request(_forge(key, header, claims), method="/m", body=b"x", now=NOW)


def test_oversize_tokens_are_refused_before_any_work() -> None:
    key, pub = keypair("320105")
    v = verifier(pub)
    token = _forge(key, HEADER_OK, _claims(pad="x" * 9000))
    with pytest.raises(Unauthenticated, match="characters, more than 8192"):
        v.verify_request(token, method="/m", body=b"x", now=NOW)
    assert v.signature_checks == 0
    with pytest.raises(Unauthenticated, match=r"claims of 5[0-9]{3} bytes, more than 4096"):
        v.verify_request(_forge(key, HEADER_OK, _claims(pad="x" * 5000)), method="/m",
                         body=b"x", now=NOW)
    with pytest.raises(Unauthenticated, match="more than"):  # 3,000 deep: refused by size
        v.verify_request(_forge(key, HEADER_OK, DEEP.encode()), method="/m", body=b"x",
                         now=NOW)


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


FUZZ_KEY, FUZZ_PUB = keypair("320105")
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
pieces = st.sampled_from([".", "~", "=", "eyJ", "e30", "A" * 43, "\u2028", "é", "\x00"])


@st.composite
def tokens(draw: st.DrawFn) -> str:
    """Random strings, JWS-shaped junk, and correctly signed tokens over random headers
    and claims (so the checks behind the signature see hostile input too)."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.text(max_size=300))
    if kind == 1:
        return "".join(draw(st.lists(pieces | st.text(max_size=10), max_size=30)))
    header = draw(st.just(HEADER_OK) | st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "crit", "x"]), json_values, max_size=4))
    claims: object = draw(json_values)
    if kind == 2:  # valid claims with a few of them replaced: the checks behind the first
        claims = _claims()
        for name in draw(st.sets(st.sampled_from([*claims, "rti", "rdg", "x"]), max_size=2)):
            claims[name] = draw(json_values | st.text(max_size=40) | st.just(None))
    if draw(st.booleans()) and isinstance(claims, dict):
        depth = draw(st.integers(1, 5000))
        claims["x"] = json.loads("[" * min(depth, 900) + "]" * min(depth, 900))
    token = _forge(FUZZ_KEY, header, claims)
    if draw(st.booleans()):  # then damage it somewhere
        at = draw(st.integers(0, len(token)))
        token = token[:at] + draw(pieces | st.text(max_size=5)) + token[at + 1:]
    return token


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(tokens(), st.sampled_from([b"x", b""]))
def test_any_token_is_accepted_or_unauthenticated_never_anything_else(token: str,
                                                                      body: bytes) -> None:
    v = verifier(FUZZ_PUB)
    try:
        claims = v.verify_request(token, method="/m", body=body, now=NOW)
    except Unauthenticated:
        return
    assert claims.aud == "gw" and claims.iss == "320105"  # a valid one, then
