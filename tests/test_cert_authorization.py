"""Holder authorizations and the purpose binding (docs/certificates.md)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.certificates.authorization import (
    TYP,
    authorize,
    check_authorization,
    check_purpose,
    types_for,
    verify_authorization,
)
from gateway.certificates.documents import Holder, HolderIdType, canonical
from gateway.errors import InvalidArgument, PermissionDenied, Unauthenticated
from gateway.signing import b64url, b64url_decode, compact
from tests.certkeys import lookup, party

KEY, PUB = party("320105#k1")
KEYS = lookup(PUB)
NOW = 1_790_000_000.0
ZHANG = Holder(HolderIdType.RESIDENT, "11010519491231002X")
ASK = {"holder": ZHANG, "item": "bdc-dy", "consumer": "310115", "cert_type": "11"}


def token(**kw: object) -> str:
    args: dict[str, object] = {"holder": ZHANG, "item": "bdc-dy", "consumer": "310115",
                               "now": NOW} | kw
    return authorize(KEY, **args)  # type: ignore[arg-type]


@settings(max_examples=50, deadline=None)
@given(item=st.from_regex(r"[A-Za-z0-9_.\-]{1,64}", fullmatch=True),
       ttl=st.integers(1, 600), types=st.none() | st.frozensets(
           st.from_regex(r"[0-9]{1,8}", fullmatch=True), min_size=1, max_size=32),
       number=st.from_regex(r"[0-9A-Za-z\-]{1,32}", fullmatch=True))
def test_round_trip(item: str, ttl: int, types: frozenset[str] | None, number: str) -> None:
    holder = Holder(HolderIdType.PASSPORT, number)
    tok = authorize(KEY, holder=holder, item=item, consumer="310115", now=NOW, ttl=ttl,
                    cert_types=types)
    cert_type = min(types) if types else "1"
    authz = check_authorization(tok, KEYS, holder=holder, item=item, consumer="310115",
                                cert_type=cert_type, now=NOW + ttl)
    assert (authz.iss, authz.aud, authz.item, authz.cert_types, authz.exp - authz.iat) == (
        "320105", "310115", item, types, ttl)


@pytest.mark.parametrize(("ask", "field"), [
    ({"holder": Holder(HolderIdType.RESIDENT, "110105194912310038")}, "authorization.sub"),
    ({"holder": Holder(HolderIdType.PASSPORT, "11010519491231002X")}, "authorization.sub"),
    ({"item": "bdc-dz"}, "authorization.itm"),
    ({"consumer": "320105"}, "authorization.aud"),
    ({"cert_type": "12"}, "authorization.cts"),
])
def test_mismatch_is_permission_denied(ask: dict[str, object], field: str) -> None:
    with pytest.raises(PermissionDenied) as info:
        check_authorization(token(cert_types=["11"]), KEYS, **(ASK | ask),  # type: ignore[arg-type]
                            now=NOW)
    assert info.value.field == field
    assert "19491231" not in info.value.message  # holder ids masked


def test_no_types_named_means_any_and_listing() -> None:
    tok = token()
    assert check_authorization(tok, KEYS, **(ASK | {"cert_type": "99"}),  # type: ignore[arg-type]
                               now=NOW).cert_types is None
    check_authorization(tok, KEYS, **(ASK | {"cert_type": None}), now=NOW)  # type: ignore[arg-type]


@pytest.mark.parametrize(("now", "match"), [
    (NOW + 300 + 61, "expired"), (NOW - 61, "future")])
def test_expired_and_future(now: float, match: str) -> None:
    with pytest.raises(Unauthenticated, match=match):
        check_authorization(token(ttl=300), KEYS, **ASK, now=now)  # type: ignore[arg-type]


def _claims() -> dict[str, object]:
    return {"iss": "320105", "aud": "310115", "iat": int(NOW), "exp": int(NOW) + 300,
            "jti": "AAECAwQFBgcICQoLDA0ODw", "sbt": "resident", "sub": ZHANG.number,
            "itm": "bdc-dy"}


@pytest.mark.parametrize("change", [
    {"exp": int(NOW) + 601}, {"exp": int(NOW)}, {"exp": 1.5e9}, {"jti": "short"},
    {"jti": "A" * 200}, {"aud": ["310115"]}, {"sbt": "alien"}, {"sub": "1101051949123100"},
    {"itm": ""}, {"itm": "x" * 65}, {"cts": []}, {"cts": ["11", "11"]}, {"cts": "11"},
    {"cts": [11]}, {"iss": "310115"}, {"extra": 1}, {"mth": "/m"},
])
def test_malformed_claims(change: dict[str, object]) -> None:
    with pytest.raises(Unauthenticated):
        verify_authorization(compact(KEY, TYP, canonical(_claims() | change)), KEYS, now=NOW)


def test_forged_and_malformed() -> None:
    tok = token()
    head, body, sig = tok.split(".")
    claims = b64url_decode(body).replace(b"bdc-dy", b"bdc-dz")
    flipped = bytearray(b64url_decode(sig))
    flipped[0] ^= 1
    for bad in [f"{head}.{b64url(claims)}.{sig}", f"{head}.{body}.{b64url(bytes(flipped))}",
                "", "a.b.c",
                "x" * 9000, f"{head}.{b64url(b'[' * 3000)}.{sig}"]:
        with pytest.raises(Unauthenticated):
            check_authorization(bad, KEYS, **ASK, now=NOW)  # type: ignore[arg-type]
    other_key, _ = party("320105#k2")
    with pytest.raises(Unauthenticated, match="unknown key"):
        check_authorization(authorize(other_key, holder=ZHANG, item="bdc-dy",
                                      consumer="310115", now=NOW),
                            KEYS, **ASK, now=NOW)  # type: ignore[arg-type]


def test_authorize_refuses_bad_arguments() -> None:
    for kw in ({"ttl": 601}, {"ttl": 0}, {"item": ""}, {"cert_types": ["x"]},
               {"cert_types": []}, {"consumer": ""}):
        with pytest.raises(InvalidArgument):
            token(**kw)


CATALOGUE = {"bdc-dy": frozenset({"11", "12"}), "shebao-zy": frozenset({"21"})}


@pytest.mark.parametrize(("item", "cert_type", "allowed"), [
    ("bdc-dy", "11", True), ("bdc-dy", "12", True), ("bdc-dy", "21", False),
    ("shebao-zy", "21", True), ("shebao-zy", "11", False), ("unknown", "11", False),
])
def test_purpose_binding(item: str, cert_type: str, allowed: bool) -> None:
    if allowed:
        check_purpose(CATALOGUE, item=item, cert_type=cert_type)
    else:
        with pytest.raises(PermissionDenied):
            check_purpose(CATALOGUE, item=item, cert_type=cert_type)


def test_types_for_listing() -> None:
    assert types_for(CATALOGUE, "bdc-dy") == {"11", "12"}
    assert types_for(CATALOGUE, "nothing") == frozenset()
    authz = check_authorization(token(cert_types=["12", "31"]), KEYS,
                                **(ASK | {"cert_type": None}), now=NOW)  # type: ignore[arg-type]
    assert types_for(CATALOGUE, "bdc-dy", authz) == {"12"}
