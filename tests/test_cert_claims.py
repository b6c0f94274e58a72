"""Yes/no claims answered by the issuer (docs/certificates.md, Yes/no claims)."""

from __future__ import annotations

import dataclasses
import json
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum.cn import ric

from gateway.certificates import claims
from gateway.certificates.authorization import verify_authorization
from gateway.certificates.claims import (
    AgeAtLeast,
    AtLeast,
    NameIs,
    ValidOn,
    answer,
    ask,
    verify_answer,
)
from gateway.certificates.documents import (
    HolderIdType,
    Status,
    canonical,
    verify_document,
    verify_status,
)
from gateway.errors import FailedPrecondition, InvalidArgument, PermissionDenied, Unauthenticated
from gateway.signing import (
    PublicKey,
    b64url,
    b64url_decode,
    compact,
    load_private_key,
    public_key_from_jwk,
)
from scripts.certificates_example import IAT, example, metadata
from tests.certkeys import lookup, party
from tests.federation import ROOT

KEY, PUB = party("320105#k1")
KEYS = lookup(PUB)
NOW = float(IAT)
META = metadata()  # 张三, 11010519491231002X, valid from 2026-03-02, 长期


def resident(birth: date) -> str:
    body = f"110105{birth:%Y%m%d}002"
    return body + ric.calc_check_digit(body + "0")  # it reads the first 17


def signed(claim: claims.Claim, **kw: object) -> dict[str, object]:
    meta = kw.pop("meta", META)
    token = answer(meta, claim, KEY, consumer="310115", now=NOW, **kw)  # type: ignore[arg-type]
    got = verify_answer(token, KEYS, consumer="310115", now=NOW)
    assert (got.iss, got.aud, got.number, got.claim) == ("320105", "310115", META.number,
                                                         claim)
    payload: dict[str, object] = json.loads(b64url_decode(token.split(".")[1]))
    return payload


def test_worked_example_matches_doc() -> None:
    key = load_private_key((ROOT / "demo-keys" / "320105.pem").read_bytes(), kid="320105#k1")
    token = answer(META, ask("age_at_least", {"years": 18, "on": "2026-09-22"}), key,
                   consumer="310115", now=IAT)
    doc = (ROOT / "docs" / "certificates.md").read_text(encoding="utf-8")
    section = doc.split("## Yes/no claims", 1)[1]
    assert b64url_decode(token.split(".")[1]).decode() in section
    assert token in section
    x = example()["x"]
    assert verify_answer(token, lookup(_pub(x)),
                         consumer="310115", now=NOW).answer is True


def _pub(x: str) -> PublicKey:
    return public_key_from_jwk({"kty": "OKP", "crv": "Ed25519", "x": x}, kid="320105#k1")


def test_answer_carries_only_the_claim_and_the_boolean() -> None:
    facts = {"registered_capital": 5_000_000, "employees": 12}
    payload = signed(AtLeast("registered_capital", 1_000_000), facts=facts)
    assert payload == {"iss": "320105", "aud": "310115", "iat": IAT, "exp": IAT + 300,
                       "number": META.number, "answer": True,
                       "claim": {"name": "at_least", "field": "registered_capital",
                                 "value": 1_000_000}}
    text = json.dumps(payload, ensure_ascii=False)
    for secret in ["5000000", "employees", META.holder_id, META.holder, META.issuer,
                   META.file.sha256, "2026-03-02"]:
        assert secret not in text
    assert signed(AtLeast("registered_capital", 5_000_001), facts=facts)["answer"] is False
    with pytest.raises(FailedPrecondition) as exc:
        answer(META, AtLeast("paid_in", 1), KEY, consumer="310115", now=NOW, facts=facts)
    assert exc.value.field == "claim.field"


@pytest.mark.parametrize(("on", "status", "valid_to", "expected"), [
    (date(2026, 3, 2), Status.VALID, None, True),
    (date(2026, 3, 1), Status.VALID, None, False),
    (date(2099, 1, 1), Status.VALID, None, True),
    (date(2030, 3, 1), Status.VALID, date(2030, 3, 1), True),
    (date(2030, 3, 2), Status.VALID, date(2030, 3, 1), False),
    (date(2027, 1, 1), Status.REVOKED, None, False),
    (date(2027, 1, 1), Status.SUSPENDED, None, False),
])
def test_valid_on(on: date, status: Status, valid_to: date | None, expected: bool) -> None:
    meta = dataclasses.replace(META, status=status, valid_to=valid_to)
    assert signed(ValidOn(on), meta=meta)["answer"] is expected


@pytest.mark.parametrize(("asked", "holder", "expected"), [
    ("张三", "张三", True),
    ("  张三 ", "张三", True),
    ("张 三", "张三", False),
    ("Ｚｈａｎｇ　San", "Zhang San", True),  # full-width letters and ideographic space
    ("Zhang\t\n San", "Zhang San", True),
    ("zhang san", "Zhang San", False),  # case is kept
    ("李四", "张三", False),
    ("\uf900", "\u8c48", True),  # a CJK compatibility ideograph is its unified form
])
def test_name_is(asked: str, holder: str, expected: bool) -> None:
    claim = ask("name_is", {"text": asked})
    assert isinstance(claim, NameIs)
    assert signed(claim, meta=dataclasses.replace(META, holder=holder))["answer"] is expected


def _years_old(birth: date, on: date) -> int:
    # the oracle: whole years by comparing (month, day), so 29 Feb waits for 1 Mar
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


@settings(max_examples=300, deadline=None)
@given(birth=st.dates(date(1900, 1, 1), date(2020, 12, 31)),
       years=st.integers(0, 120), shift=st.integers(-3, 3))
def test_age_around_birthdays(birth: date, years: int, shift: int) -> None:
    try:
        anniversary = birth.replace(year=birth.year + years)
    except ValueError:
        anniversary = date(birth.year + years, 2, 28)
    on = anniversary + timedelta(days=shift)
    meta = dataclasses.replace(META, holder_id=resident(birth))
    expected = _years_old(birth, on) >= years
    assert claims.evaluate(meta, AgeAtLeast(years, on)) is expected


@pytest.mark.parametrize(("birth", "on", "expected"), [
    (date(2008, 2, 29), date(2026, 2, 28), False),
    (date(2008, 2, 29), date(2026, 3, 1), True),
    (date(2008, 2, 29), date(2028, 2, 29), True),  # 20 in a leap year: on the day
    (date(2008, 3, 1), date(2026, 3, 1), True),
    (date(2008, 3, 1), date(2026, 2, 28), False),
    (date(2008, 1, 1), date(2007, 12, 31), False),  # not yet born
])
def test_age_leap_days(birth: date, on: date, expected: bool) -> None:
    years = 20 if on.year == 2028 else 18
    meta = dataclasses.replace(META, holder_id=resident(birth))
    assert signed(AgeAtLeast(years, on), meta=meta)["answer"] is expected


def test_age_needs_a_resident_holder() -> None:
    meta = dataclasses.replace(META, holder_id_type=HolderIdType.PASSPORT, holder_id="E1234567")
    with pytest.raises(FailedPrecondition):
        answer(meta, AgeAtLeast(18, date(2026, 1, 1)), KEY, consumer="310115", now=NOW)


@pytest.mark.parametrize(("name", "params", "field"), [
    ("older_than", {"years": 18}, "claim.name"),
    (None, {}, "claim.name"),
    ("valid_on", {}, "claim.on"),
    ("valid_on", {"on": "2026-02-30"}, "claim.on"),
    ("valid_on", {"on": "2026-9-1"}, "claim.on"),
    ("valid_on", {"on": 20260901}, "claim.on"),
    ("valid_on", {"on": "2026-09-01", "tz": "+08"}, "claim.params"),
    ("name_is", {"text": "   "}, "claim.text"),
    ("name_is", {"text": "a\x00b"}, "claim.text"),
    ("name_is", {"text": "张" * 129}, "claim.text"),
    ("name_is", {"text": 3}, "claim.text"),
    ("at_least", {"field": "Capital", "value": 1}, "claim.field"),
    ("at_least", {"field": "capital", "value": 1.5}, "claim.value"),
    ("at_least", {"field": "capital", "value": True}, "claim.value"),
    ("at_least", {"field": "capital", "value": 2**53}, "claim.value"),
    ("at_least", {"value": 1}, "claim.field"),
    ("age_at_least", {"years": -1, "on": "2026-01-01"}, "claim.years"),
    ("age_at_least", {"years": 151, "on": "2026-01-01"}, "claim.years"),
    ("age_at_least", {"years": 18}, "claim.on"),
])
def test_ask_refuses(name: object, params: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        ask(name, params)
    assert exc.value.field == field


def test_ask_builds() -> None:
    assert ask("valid_on", {"on": date(2026, 1, 2)}) == ValidOn(date(2026, 1, 2))
    assert ask("at_least", {"field": "registered_capital", "value": 0}) == AtLeast(
        "registered_capital", 0)
    assert ask("age_at_least", {"years": 18, "on": "2026-09-22"}) == AgeAtLeast(
        18, date(2026, 9, 22))


def test_window_and_audience() -> None:
    token = answer(META, ValidOn(date(2026, 9, 22)), KEY, consumer="310115", now=NOW, ttl=60)
    assert verify_answer(token, KEYS, consumer="310115", now=NOW + 120).exp == IAT + 60
    with pytest.raises(Unauthenticated, match="expired"):
        verify_answer(token, KEYS, consumer="310115", now=NOW + 121)
    with pytest.raises(Unauthenticated, match="future"):
        verify_answer(token, KEYS, consumer="310115", now=NOW - 61)
    with pytest.raises(PermissionDenied) as exc:
        verify_answer(token, KEYS, consumer="440305", now=NOW)
    assert exc.value.field == "answer.aud"
    for ttl in (0, 301):
        with pytest.raises(InvalidArgument):
            answer(META, ValidOn(date(2026, 9, 22)), KEY, consumer="310115", now=NOW, ttl=ttl)


def _payload() -> dict[str, object]:
    return {"iss": "320105", "aud": "310115", "iat": IAT, "exp": IAT + 300,
            "number": META.number, "claim": {"name": "valid_on", "on": "2026-09-22"},
            "answer": True}


@pytest.mark.parametrize("change", [
    {"answer": "true"}, {"answer": 1}, {"aud": 310115}, {"exp": IAT + 301},
    {"number": META.number[:-1] + "5"}, {"claim": {"name": "valid_on"}},
    {"claim": {"name": "name_is", "text": " 张三"}},  # not the normal form
    {"claim": ["valid_on", "2026-09-22"]}, {"holder_id": META.holder_id},
    {"iss": "310115"},
])
def test_malformed_answers(change: dict[str, object]) -> None:
    token = compact(KEY, claims.TYP, canonical(_payload() | change))
    with pytest.raises(Unauthenticated):
        verify_answer(token, KEYS, consumer="310115", now=NOW)


def test_well_formed_hand_made_answer_passes() -> None:
    token = compact(KEY, claims.TYP, canonical(_payload()))
    assert verify_answer(token, KEYS, consumer="310115", now=NOW).answer is True


def test_tampering() -> None:
    token = answer(META, ValidOn(date(2026, 9, 22)), KEY, consumer="310115", now=NOW)
    head, body, sig = token.split(".")
    flipped = b64url_decode(body).replace(b'"answer":true', b'"answer":false')
    assert flipped != b64url_decode(body)
    bad_sig = bytearray(b64url_decode(sig))
    bad_sig[5] ^= 1
    other, _ = party("320105#k2")
    for bad in [f"{head}.{b64url(flipped)}.{sig}", f"{head}.{body}.{b64url(bytes(bad_sig))}",
                answer(META, ValidOn(date(2026, 9, 22)), other, consumer="310115", now=NOW),
                "", "a.b.c", "x" * 9000]:
        with pytest.raises(Unauthenticated):
            verify_answer(bad, KEYS, consumer="310115", now=NOW)


def test_typ_confusion() -> None:
    """No other token kind passes for an answer, nor an answer for one of them, even with
    the answer's payload under the other typ."""
    for typ in ["tongban-cert+jwt", "tongban-cert-status+jwt", "tongban-authz+jwt",
                "tongban+jwt"]:
        with pytest.raises(Unauthenticated, match="typ"):
            verify_answer(compact(KEY, typ, canonical(_payload())), KEYS, consumer="310115",
                          now=NOW)
    ex = example()
    real = lookup(_pub(ex["x"]))
    for other in [ex["document"], ex["status"], ex["authorization"]]:
        with pytest.raises(Unauthenticated, match="typ"):
            verify_answer(other, real, consumer="310115", now=NOW)
    token = answer(META, ValidOn(date(2026, 9, 22)), KEY, consumer="310115", now=NOW)
    for verify in [verify_document, verify_status, verify_authorization]:
        with pytest.raises(Unauthenticated, match="typ"):
            verify(token, KEYS, now=NOW)
