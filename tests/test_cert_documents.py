"""Issuer-signed certificate documents and status statements (docs/certificates.md)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum.cn import uscc

from gateway.certificate_ids import format_id
from gateway.certificates import authorization, documents
from gateway.certificates.documents import (
    Holder,
    HolderIdType,
    Metadata,
    RenderedFile,
    Status,
    attest_status,
    canonical,
    issue,
    open_document,
    require_valid,
    verify_document,
)
from gateway.errors import FailedPrecondition, InvalidArgument, Unauthenticated
from gateway.signing import TYP as CALL_TYP
from gateway.signing import b64url, b64url_decode, compact, public_key_from_jwk, sign
from gateway.verifier import Verifier
from scripts.certificates_example import IAT, example, metadata
from tests.certkeys import lookup, party
from tests.federation import ROOT

KEY, PUB = party("320105#k1")
KEYS = lookup(PUB)
NOW = float(IAT)
DAY = 86400
CODE_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"


def credit_code(body: str) -> str:
    return body + uscc.calc_check_digit(body)


codes = st.text(CODE_CHARS, min_size=10, max_size=10).map(
    lambda tail: credit_code("11320105" + tail[:9]))
texts = st.text(st.characters(codec="utf-8", categories=["L", "N"]), min_size=1, max_size=20)


@st.composite
def metadatas(draw: st.DrawFn) -> Metadata:
    type_code = draw(st.from_regex(r"[0-9]{1,8}", fullmatch=True))
    issuer_code = draw(codes)
    start = draw(st.dates(date(2000, 1, 1), date(2040, 1, 1)))
    end = draw(st.none() | st.integers(0, 20_000).map(lambda d: start + timedelta(days=d)))
    return Metadata(
        type_code=type_code,
        number=format_id(type_code, issuer_code, draw(st.from_regex(r"[0-9A-Z]{1,32}",
                                                                     fullmatch=True))),
        name=draw(texts), issuer=draw(texts), issuer_code=issuer_code, holder=draw(texts),
        holder_id_type=HolderIdType.USCC, holder_id=draw(codes), issued_on=start,
        valid_from=start, valid_to=end, status=draw(st.sampled_from(sorted(
            documents.SIGNED_STATUSES))),
        file=RenderedFile(draw(st.from_regex(r"[0-9a-f]{64}", fullmatch=True)),
                          draw(st.sampled_from(sorted(documents.MEDIA_TYPES))),
                          draw(st.integers(1, documents.MAX_FILE_SIZE))))


@settings(max_examples=60, deadline=None)
@given(metadatas())
def test_round_trip(meta: Metadata) -> None:
    token = issue(meta, KEY, now=NOW)
    at = datetime.combine(meta.valid_from, datetime.min.time(), documents.CHINA).timestamp()
    doc = open_document(token, KEYS, now=max(at, NOW))
    assert dataclasses.replace(doc.metadata, status=meta.status) == meta
    assert doc.metadata.status == meta.status_at(max(at, NOW))
    assert (doc.iss, doc.iat, doc.kid) == ("320105", IAT, "320105#k1")


def test_validity_dates_in_china_time() -> None:
    meta = dataclasses.replace(metadata(), valid_from=date(2026, 3, 2),
                               valid_to=date(2027, 3, 1))
    start = datetime(2026, 3, 1, 16, tzinfo=UTC).timestamp()  # 2026-03-02T00:00+08:00
    token = issue(meta, KEY, now=start - 100)
    end = datetime(2027, 3, 1, 16, tzinfo=UTC).timestamp()  # 2027-03-02T00:00+08:00
    assert verify_document(token, KEYS, now=start - 1).status is Status.NOT_YET_VALID
    assert verify_document(token, KEYS, now=start).status is Status.VALID
    assert verify_document(token, KEYS, now=end - 1).status is Status.VALID
    expired = verify_document(token, KEYS, now=end)
    assert expired.status is Status.EXPIRED
    with pytest.raises(FailedPrecondition, match="expired"):
        require_valid(expired)


@pytest.mark.parametrize("signed", [Status.REVOKED, Status.SUSPENDED, Status.EXPIRED])
def test_signed_status_is_reported(signed: Status) -> None:
    token = issue(dataclasses.replace(metadata(), status=signed), KEY, now=NOW)
    assert verify_document(token, KEYS, now=NOW).status is signed


def test_status_statement_reports_revocation() -> None:
    token = issue(metadata(), KEY, now=NOW)
    later = NOW + 100 * DAY
    revoked = attest_status(metadata().number, Status.REVOKED, KEY, now=later)
    assert verify_document(token, KEYS, now=later).status is Status.VALID
    assert verify_document(token, KEYS, now=later, status=revoked).status is Status.REVOKED
    # a stale answer is not an answer
    with pytest.raises(Unauthenticated, match="expired"):
        verify_document(token, KEYS, now=later + 400, status=revoked)
    # revoked in the document is final, whatever a later statement says
    gone = issue(dataclasses.replace(metadata(), status=Status.REVOKED), KEY, now=NOW)
    valid = attest_status(metadata().number, Status.VALID, KEY, now=later)
    assert verify_document(gone, KEYS, now=later, status=valid).status is Status.REVOKED


def test_status_statement_of_another_issuer_or_certificate() -> None:
    other_key, other_pub = party("310115#k1")
    keys = lookup(PUB, other_pub)
    token = issue(metadata(), KEY, now=NOW)
    with pytest.raises(Unauthenticated, match="status statement is by 310115"):
        verify_document(token, keys, now=NOW,
                        status=attest_status(metadata().number, Status.VALID, other_key, now=NOW))
    number = format_id("11", "91320105MA1MXXXX0H", "A0000124")
    with pytest.raises(Unauthenticated, match="another certificate"):
        verify_document(token, keys, now=NOW,
                        status=attest_status(number, Status.VALID, KEY, now=NOW))


def _forge(payload: dict[str, object], typ: str = documents.TYP) -> str:
    return compact(KEY, typ, canonical(payload))


def _claims() -> dict[str, object]:
    return {"iss": "320105", "iat": IAT} | metadata().to_json()


def test_wrong_issuer_code_in_identifier() -> None:
    other = "91320105MA1MXXXX0H"
    wrong = format_id("11", credit_code("11320105000000001"), "A0000123")
    with pytest.raises(Unauthenticated, match=r"number is bad.*issuer code"):
        verify_document(_forge(_claims() | {"number": wrong}), KEYS, now=NOW)
    with pytest.raises(InvalidArgument, match="issuer code"):
        dataclasses.replace(metadata(), number=wrong)
    bad_check = metadata().number[:-1] + "5"
    with pytest.raises(Unauthenticated, match="check character"):
        verify_document(_forge(_claims() | {"number": bad_check}), KEYS, now=NOW)
    with pytest.raises(Unauthenticated, match=r"number is bad.*type code"):
        verify_document(_forge(_claims() | {"type_code": "12"}), KEYS, now=NOW)
    assert other in metadata().number


@pytest.mark.parametrize("change", [
    {"status": "not_yet_valid"}, {"status": "VALID"}, {"valid_to": "2025-01-01"},
    {"issued_on": "2026-02-30"}, {"holder_id": "110105194912310021"},
    {"holder_id_type": ["resident"]}, {"file": {"sha256": "00", "media_type": "x", "size": 1}},
    {"file": [1]}, {"name": "a\nb"}, {"name": 7}, {"iss": "310115"}, {"iat": "1790000000"},
    {"iat": True}, {"extra": 1}, {"aud": "x"},
])
def test_bad_members(change: dict[str, object]) -> None:
    with pytest.raises(Unauthenticated):
        verify_document(_forge(_claims() | change), KEYS, now=NOW)


def test_missing_member() -> None:
    claims = _claims()
    del claims["status"]
    with pytest.raises(Unauthenticated, match="lacks status"):
        verify_document(_forge(claims), KEYS, now=NOW)


def test_tampering() -> None:
    token = issue(metadata(), KEY, now=NOW)
    head, body, sig = token.split(".")
    payload = bytearray(b64url_decode(body))
    for i in range(0, len(payload), 7):
        changed = bytearray(payload)
        changed[i] ^= 1
        with pytest.raises(Unauthenticated):
            verify_document(f"{head}.{b64url(bytes(changed))}.{sig}", KEYS, now=NOW)
    raw = bytearray(b64url_decode(sig))
    raw[5] ^= 0x40
    with pytest.raises(Unauthenticated, match="bad signature"):
        verify_document(f"{head}.{body}.{b64url(bytes(raw))}", KEYS, now=NOW)
    # kid swap: the same signature presented as another key's (of this or another party)
    for kid in ("320105#k2", "310115#k1"):
        other = b64url(json.dumps({"alg": "EdDSA", "kid": kid,
                                   "typ": documents.TYP}).encode())
        with pytest.raises(Unauthenticated):
            verify_document(f"{other}.{body}.{sig}", lookup(PUB, party(kid)[1]), now=NOW)
    with pytest.raises(Unauthenticated, match="future"):
        verify_document(token, KEYS, now=NOW - 61)


def test_key_window_at_iat() -> None:
    t = datetime.fromtimestamp(NOW, UTC)
    key, pub = party("320105#k9", not_before=t + timedelta(seconds=1))
    with pytest.raises(Unauthenticated, match="not valid at"):
        verify_document(issue(metadata(), key, now=NOW), lookup(pub), now=NOW + DAY)
    retired = public_key_from_jwk({"kty": "OKP", "crv": "Ed25519", "x": b64url(key.raw_public)},
                                  kid="320105#k9", not_before=t, not_after=t + timedelta(days=1))
    # a key retired later still vouches for what it signed while it was valid
    doc = verify_document(issue(metadata(), key, now=NOW), lookup(retired), now=NOW + 900 * DAY)
    assert doc.status is Status.VALID
    with pytest.raises(Unauthenticated, match="not valid at"):
        verify_document(issue(metadata(), key, now=NOW + 2 * DAY), lookup(retired), now=NOW)


def test_three_token_kinds_never_pass_for_one_another() -> None:
    document = issue(metadata(), KEY, now=NOW)
    status = attest_status(metadata().number, Status.VALID, KEY, now=NOW)
    authz = authorization.authorize(KEY, holder=Holder(HolderIdType.RESIDENT,
                                                        "11010519491231002X"),
                                    item="bdc-dy", consumer="310115", now=NOW)
    call, _ = sign(KEY, iss="320105", aud="310115", method="/m", body=b"", now=NOW)
    # the same payloads under each other's typ, properly signed
    swapped = [compact(KEY, typ, b64url_decode(tok.split(".")[1]))
               for tok in (document, status, authz, call)
               for typ in (documents.TYP, documents.STATUS_TYP, authorization.TYP, CALL_TYP)]
    verifier = Verifier(audience="310115", keys_for=KEYS)
    for token in [document, status, authz, call, *swapped]:
        passes = []
        for name, check in [
            ("document", lambda t: verify_document(t, KEYS, now=NOW)),
            ("status", lambda t: documents.verify_status(t, KEYS, now=NOW)),
            ("authz", lambda t: authorization.verify_authorization(t, KEYS, now=NOW)),
            ("call", lambda t: verifier.verify_request(t, method="/m", body=b"", now=NOW)),
        ]:
            try:
                check(token)
            except Unauthenticated:
                continue
            passes.append(name)
        assert len(passes) <= 1, passes
        assert token in (document, status, authz, call) or passes in (
            [], ["document"], ["status"], ["authz"], ["call"])
    assert verify_document(document, KEYS, now=NOW).status is Status.VALID


@pytest.mark.parametrize("token", [
    "", "a", "a.b", "a.b.c", "..", "é.é.é", "x" * 9000,
    b64url(b'{"alg":"EdDSA","kid":"320105#k1","typ":"tongban-cert+jwt"}') + "." + b64url(
        b"[" * 3000 + b"]" * 3000) + ".AA",
    b64url(b"[" * 3000) + ".e30.AA",
])
def test_malformed_is_unauthenticated(token: str) -> None:
    with pytest.raises(Unauthenticated):
        verify_document(token, KEYS, now=NOW)


def test_deep_and_oversize_payloads_signed() -> None:
    with pytest.raises(Unauthenticated, match="nests too deeply"):
        verify_document(_forge({"a": 1}).split(".")[0] + "." + compact(
            KEY, documents.TYP, b"[" * 2000 + b"]" * 2000).split(".", 1)[1], KEYS, now=NOW)
    with pytest.raises(Unauthenticated, match="more than 4096"):
        verify_document(_forge(_claims() | {"name": "x" * 5000}), KEYS, now=NOW)


def test_worked_example_is_current() -> None:
    doc = (ROOT / "docs" / "certificates.md").read_text(encoding="utf-8")
    ex = example()
    for value in ex.values():
        assert value in doc
    keys = lookup(public_key_from_jwk({"kty": "OKP", "crv": "Ed25519", "x": ex["x"]},
                                      kid="320105#k1"))
    assert verify_document(ex["document"], keys, now=NOW) == metadata()
    assert verify_document(ex["document"], keys, now=NOW + 3600,
                           status=ex["status"]).status is Status.REVOKED
    authz = authorization.check_authorization(
        ex["authorization"], keys, holder=Holder(HolderIdType.RESIDENT, "11010519491231002X"),
        item="bdc-dy", consumer="310115", cert_type="11", now=NOW)
    assert authz.jti == "AAECAwQFBgcICQoLDA0ODw"
