"""Join tokens and delegations of 屏对屏 sessions (docs/sessions.md §2–3)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.certificates import authorization, documents
from gateway.certificates.documents import Holder, HolderIdType, canonical
from gateway.errors import InvalidArgument, Unauthenticated
from gateway.sessions import transcript
from gateway.sessions.tokens import (
    DELEGATION_TYP,
    JOIN_TYP,
    Side,
    sign_delegation,
    sign_join,
    verify_delegation,
    verify_join,
)
from gateway.signing import b64url, b64url_decode, compact
from tests.certkeys import lookup, party

ORIGIN_KEY, ORIGIN_PUB = party("320105#k1")
REMOTE_KEY, REMOTE_PUB = party("310115#k1")
KEYS = lookup(ORIGIN_PUB, REMOTE_PUB)
NOW = 1_790_000_000.0
SES = "01JDZ8Q4Y6W3V2T1S0R9P8N7M6"
CAS = "01JDZ8Q4Y6W3V2T1S0R9P8N7M7"
ZHANG = "11010519491231002X"
COMPANY = "91320105MA1MXXXX0H"
JOIN_ARGS: dict[str, Any] = {"clerk": "wang.li", "name": "王丽", "window": "w-07",
                             "session": SES, "case": CAS, "side": Side.ORIGIN,
                             "other": "310115"}
DELEGATION_ARGS: dict[str, Any] = {"remote": "310115", "session": SES, "case": CAS,
                                   "citizen": ZHANG}


def join(**kw: Any) -> str:
    return sign_join(ORIGIN_KEY, **(JOIN_ARGS | {"now": NOW} | kw))


def delegation(**kw: Any) -> str:
    return sign_delegation(ORIGIN_KEY, **(DELEGATION_ARGS | {"now": NOW} | kw))


def join_claims(**change: object) -> dict[str, object]:
    return {"iss": "320105", "iat": int(NOW), "exp": int(NOW) + 600, "sub": "wang.li",
            "name": "王丽", "win": "w-07", "ses": SES, "cas": CAS, "sid": "origin",
            "oth": "310115"} | change


def delegation_claims(**change: object) -> dict[str, object]:
    return {"iss": "320105", "iat": int(NOW), "exp": int(NOW) + 600, "aud": "310115",
            "ses": SES, "cas": CAS, "sub": ZHANG} | change


def forge(typ: str, claims: dict[str, object]) -> str:
    return compact(ORIGIN_KEY, typ, canonical(claims))


@settings(max_examples=60, deadline=None)
@given(clerk=st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True),
       name=st.text(st.characters(codec="utf-8", categories=("L", "N", "P", "Zs")),
                    min_size=1, max_size=32).filter(str.isprintable),
       side=st.sampled_from(Side), case=st.sampled_from(["", CAS]),
       ttl=st.integers(1, 43200))
def test_join_round_trip(clerk: str, name: str, side: Side, case: str, ttl: int) -> None:
    token = join(clerk=clerk, name=name, side=side, case=case, ttl=ttl)
    got = verify_join(token, KEYS, now=NOW + ttl)
    assert (got.iss, got.clerk, got.name, got.window, got.session, got.case, got.side,
            got.other, got.exp - got.iat, got.kid) == (
        "320105", clerk, name, "w-07", SES, case, side, "310115", ttl, "320105#k1")
    header = json.loads(b64url_decode(token.split(".")[0]))
    assert header["typ"] == JOIN_TYP


def test_join_default_ttl_is_a_working_day() -> None:
    got = verify_join(join(), KEYS, now=NOW)
    assert got.exp - got.iat == 28800 and got.side is Side.ORIGIN


@pytest.mark.parametrize("change", [
    {"sub": ""}, {"sub": "wang li"}, {"sub": "x" * 65}, {"sub": 7}, {"sub": "王"},
    {"name": ""}, {"name": "x" * 33}, {"name": "a\nb"}, {"name": None},
    {"win": ""}, {"win": "w/07"}, {"win": "w" * 65},
    {"ses": ""}, {"ses": SES.lower()}, {"ses": SES[:-1]}, {"ses": "8" + SES[1:]},
    {"ses": "01JDZ8Q4Y6W3V2T1S0R9P8N7MU"},  # U is not Crockford base32
    {"cas": "abc"}, {"cas": None}, {"cas": CAS + "0"},
    {"sid": "both"}, {"sid": "ORIGIN"}, {"sid": ["origin"]}, {"sid": None},
    {"oth": ""}, {"oth": "31011"}, {"oth": "910115"}, {"oth": 310115},
    {"iat": "1790000000"}, {"iat": True}, {"iat": 1.5e9},
    {"exp": "1790000600"}, {"exp": int(NOW)}, {"exp": int(NOW) - 1},
    {"exp": int(NOW) + 43201}, {"exp": None},
    {"iss": "310115"},  # not the key's owner
    {"aud": "310115"},  # an unknown member
])
def test_every_bad_join_member(change: dict[str, object]) -> None:
    with pytest.raises(Unauthenticated):
        verify_join(forge(JOIN_TYP, join_claims(**change)), KEYS, now=NOW)


@pytest.mark.parametrize("member", ["sub", "name", "win", "ses", "cas", "sid", "oth", "iat",
                                    "exp", "iss"])
def test_every_join_member_is_required(member: str) -> None:
    claims = join_claims()
    del claims[member]
    with pytest.raises(Unauthenticated):
        verify_join(forge(JOIN_TYP, claims), KEYS, now=NOW)


def test_join_member_errors_name_the_member() -> None:
    with pytest.raises(Unauthenticated, match="join token's oth must be a partner id"):
        verify_join(forge(JOIN_TYP, join_claims(oth="x")), KEYS, now=NOW)
    assert verify_join(forge(JOIN_TYP, join_claims(cas="")), KEYS, now=NOW).case == ""


def test_join_expiry_and_skew() -> None:
    token = join(ttl=600)
    assert verify_join(token, KEYS, now=NOW + 600 + 60).exp == int(NOW) + 600
    with pytest.raises(Unauthenticated, match="expired"):
        verify_join(token, KEYS, now=NOW + 600 + 61)
    assert verify_join(token, KEYS, now=NOW - 60).iat == int(NOW)
    with pytest.raises(Unauthenticated, match="future"):
        verify_join(token, KEYS, now=NOW - 61)


@pytest.mark.parametrize(("kw", "field"), [
    ({"clerk": "a b"}, "clerk"), ({"name": ""}, "name"), ({"window": ""}, "window"),
    ({"session": "x"}, "session"), ({"case": "x"}, "case"), ({"side": "both"}, "side"),
    ({"other": "x"}, "other"), ({"ttl": 0}, "ttl"), ({"ttl": 43201}, "ttl"),
])
def test_sign_join_refuses_bad_arguments(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        join(**kw)
    assert info.value.field == field


def _tamper(token: str) -> list[str]:
    head, body, sig = token.split(".")
    flipped = bytearray(b64url_decode(sig))
    flipped[0] ^= 1
    payload = bytearray(b64url_decode(body))
    payload[len(payload) // 2] ^= 1
    return [f"{head}.{b64url(bytes(payload))}.{sig}", f"{head}.{body}.{b64url(bytes(flipped))}",
            f"{head}.{body}", "", "a.b.c", "x" * 9000, f"{head}.{b64url(b'[' * 3000)}.{sig}"]


@pytest.mark.parametrize(("make", "verify"), [
    (join, lambda t: verify_join(t, KEYS, now=NOW)),
    (delegation, lambda t: verify_delegation(t, KEYS, now=NOW)),
])
def test_forged_tokens(make: Callable[[], str], verify: Callable[[str], object]) -> None:
    token = make()
    verify(token)
    for bad in _tamper(token):
        with pytest.raises(Unauthenticated):
            verify(bad)


def test_forged_kid() -> None:
    stranger, _ = party("320105#k2")  # a key the lookup does not know
    with pytest.raises(Unauthenticated, match="unknown key 320105#k2"):
        verify_join(sign_join(stranger, **JOIN_ARGS, now=NOW), KEYS, now=NOW)
    # another party's kid on a token signed by this key: the signature does not check
    _, body, sig = join().split(".")
    other = b64url(json.dumps({"alg": "EdDSA", "kid": "310115#k1", "typ": JOIN_TYP}).encode())
    with pytest.raises(Unauthenticated):
        verify_join(f"{other}.{body}.{sig}", KEYS, now=NOW)
    # a genuine token of a party that does not own the iss it names
    with pytest.raises(Unauthenticated, match="does not own"):
        verify_join(compact(REMOTE_KEY, JOIN_TYP, canonical(join_claims())), KEYS, now=NOW)


def test_key_window_at_iat() -> None:
    t = datetime.fromtimestamp(NOW, UTC)
    key, pub = party("320105#k9", not_before=t + timedelta(seconds=1))
    with pytest.raises(Unauthenticated, match="not valid at"):
        verify_join(sign_join(key, **JOIN_ARGS, now=NOW), lookup(pub), now=NOW)


@settings(max_examples=40, deadline=None)
@given(citizen=st.sampled_from([ZHANG, COMPANY, "110105194912310038"]),
       ttl=st.integers(1, 7200), case=st.sampled_from(["", CAS]))
def test_delegation_round_trip(citizen: str, ttl: int, case: str) -> None:
    token = delegation(citizen=citizen, ttl=ttl, case=case)
    got = verify_delegation(token, KEYS, now=NOW + ttl)
    assert (got.iss, got.remote, got.session, got.case, got.citizen, got.exp - got.iat) == (
        "320105", "310115", SES, case, citizen, ttl)
    assert citizen not in repr(got) and got.masked == citizen[:6] + "*" * 8 + citizen[-4:]


@pytest.mark.parametrize("change", [
    {"aud": ""}, {"aud": "31011"}, {"aud": None},
    {"ses": "x"}, {"ses": None}, {"cas": "x"}, {"cas": 0},
    {"sub": ""}, {"sub": "11010519491231002Y"}, {"sub": "110105194912310020"},
    {"sub": "11010519491231002x"}, {"sub": "110105 19491231002X"},
    {"sub": "91320105MA1MXXXX0A"}, {"sub": "91320105ma1mxxxx0h"}, {"sub": 11010519491231002},
    {"sub": "１１０１０５１９４９１２３１００２X"},
    {"exp": int(NOW) + 7201}, {"exp": int(NOW)}, {"iat": None},
    {"iss": "310115"}, {"itm": "bdc-dy"},
])
def test_every_bad_delegation_member(change: dict[str, object]) -> None:
    with pytest.raises(Unauthenticated) as info:
        verify_delegation(forge(DELEGATION_TYP, delegation_claims(**change)), KEYS, now=NOW)
    sub = change.get("sub")
    assert not isinstance(sub, str) or not sub or sub not in str(info.value)  # never shown


@pytest.mark.parametrize("member", ["aud", "ses", "cas", "sub", "iat", "exp", "iss"])
def test_every_delegation_member_is_required(member: str) -> None:
    claims = delegation_claims()
    del claims[member]
    with pytest.raises(Unauthenticated):
        verify_delegation(forge(DELEGATION_TYP, claims), KEYS, now=NOW)


def test_delegation_expiry() -> None:
    token = delegation(ttl=3600)
    assert verify_delegation(token, KEYS, now=NOW + 3660).exp == int(NOW) + 3600
    with pytest.raises(Unauthenticated, match="expired"):
        verify_delegation(token, KEYS, now=NOW + 3661)


@pytest.mark.parametrize(("kw", "field"), [
    ({"remote": "x"}, "remote"), ({"session": ""}, "session"), ({"case": "x"}, "case"),
    ({"citizen": "11010519491231002Y"}, "citizen"), ({"ttl": 7201}, "ttl"), ({"ttl": 0}, "ttl"),
])
def test_sign_delegation_refuses_bad_arguments(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        delegation(**kw)
    assert info.value.field == field and ZHANG not in str(info.value)


def test_no_token_passes_for_another_kind() -> None:
    head = transcript.sign_head(ORIGIN_KEY, gateway="320105", session=SES, case=CAS, n=1,
                                head=bytes(32), now=NOW)
    authz = authorization.authorize(ORIGIN_KEY, holder=Holder(HolderIdType.RESIDENT, ZHANG),
                                    item="bdc-dy", consumer="310115", now=NOW)
    tokens = [join(), delegation(), head, authz]
    # each payload re-signed under every other kind's typ
    typs = [JOIN_TYP, DELEGATION_TYP, transcript.TYP, authorization.TYP, documents.TYP]
    swapped = [compact(ORIGIN_KEY, typ, b64url_decode(t.split(".")[1]))
               for t in tokens for typ in typs]
    checks: list[tuple[str, Callable[[str], object]]] = [
        ("join", lambda t: verify_join(t, KEYS, now=NOW)),
        ("delegation", lambda t: verify_delegation(t, KEYS, now=NOW)),
        ("head", lambda t: transcript.verify_head(t, KEYS)),
        ("authz", lambda t: authorization.verify_authorization(t, KEYS, now=NOW)),
    ]
    for token in [*tokens, *swapped]:
        passes = []
        for name, check in checks:
            try:
                check(token)
            except Unauthenticated:
                continue
            passes.append(name)
        assert len(passes) <= 1, passes
        if token in tokens:
            assert passes == [checks[tokens.index(token)][0]]
        else:  # a payload under a foreign typ is nobody's
            original = tokens[swapped.index(token) // len(typs)]
            own = checks[tokens.index(original)][0]
            assert passes in ([], [own])
