"""Certificate reuse end to end (issue #13): the demo federation on real sockets, a
consumer at 浦东 (310000-gw) and issuers two gateways away (320100-gw, 320000-gw)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest

from adapters.embedded import EmbeddedAdapter
from adapters.issuer_seed import (
    COMPANY,
    DEMO_CERTIFICATES,
    LI_SI,
    ZHANG_SAN,
    DemoHolder,
    resident_id,
)
from gateway.cases import State
from gateway.certificates import claims as claim_rules
from gateway.certificates.authorization import authorize
from gateway.certificates.documents import HolderIdType, Status, open_document
from gateway.client import CallError
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import certificate_pb2 as cpb
from gateway.signing import PublicKey, SigningKey, load_private_key
from tests.federation import ROOT, Federation, until

pytestmark = pytest.mark.asyncio
DONE = frozenset({State.COMPLETED, State.REJECTED})

CONSUMER = "310115"  # 浦东新区企业服务中心, at 310000-gw


def key_of(partner: str) -> SigningKey:
    return load_private_key((ROOT / "demo-keys" / f"{partner}.pem").read_bytes(),
                            kid=f"{partner}#k1")


def authz(fed: Federation, holder: DemoHolder, item: str, *, consumer: str = CONSUMER,
          by: str = CONSUMER, ttl: int = 300, at: float | None = None,
          types: Sequence[str] | None = None) -> str:
    """The holder's say, signed by the platform where they authenticated."""
    now = at if at is not None else fed.app_of(consumer).clock.now()
    return authorize(key_of(by), holder=holder.holder, item=item, consumer=consumer, now=now,
                     ttl=ttl, cert_types=types)


def issuer_keys(fed: Federation, *partners: str):  # type: ignore[no-untyped-def]
    """The JWKS a consumer would hold: the issuers' public keys and nothing else."""
    keys = {p: fed.config.partners[p].keys for p in partners}

    def keys_for(owner: str) -> Sequence[PublicKey]:
        return keys.get(owner, ())
    return keys_for


def demo(holder: DemoHolder, type_code: str) -> str:
    return next(c.number for c in DEMO_CERTIFICATES
                if c.holder == holder and c.type_code == type_code)


async def refused(call, code: grpc.StatusCode) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(CallError) as err:
        await call
    assert err.value.status is code, err.value.message
    return err.value.message


async def test_lookup_across_provinces_verifies_offline_with_the_issuers_keys(
        fed: Federation) -> None:
    client = fed.client(CONSUMER)
    answer = await client.lookup_certificate(
        holder=ZHANG_SAN.message(), cert_type="401", purpose_item="bdc-dy",
        authorization=authz(fed, ZHANG_SAN, "bdc-dy"), with_file=True)
    got = answer.certificate
    assert got.found_at.partner == "320105" and got.found_at.gateway == "320100-gw"
    assert got.metadata.number == demo(ZHANG_SAN, "401")
    assert got.metadata.status == cpb.CERTIFICATE_STATUS_VALID
    document = open_document(got.document, issuer_keys(fed, "320105"), now=fed_now(fed),
                             status=got.status_statement)
    assert document.metadata.holder_id == ZHANG_SAN.number
    assert document.metadata.status is Status.VALID
    assert hashlib.sha256(got.file).hexdigest() == got.metadata.file_sha256
    # only the issuer's key is needed: another platform's keys do not verify it
    with pytest.raises(Exception):  # noqa: B017, PT011
        open_document(got.document, issuer_keys(fed, "310000"), now=fed_now(fed))


async def settled(platform: EmbeddedAdapter, case_id: str) -> State | None:
    """The platform's state of the case once it is COMPLETED or REJECTED."""
    async def done() -> bool:
        return await platform.state_of(case_id) in DONE
    await until(done)
    return await platform.state_of(case_id)


def forge_kid(token: str, kid: str) -> str:
    """The same payload and signature under another platform's key id: a forgery."""
    head, body, sig = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    header["kid"] = kid
    head = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return f"{head}.{body}.{sig}"


def fed_now(fed: Federation) -> float:
    return fed.app_of(CONSUMER).clock.now()


async def test_every_refusal_looks_nothing_up(fed: Federation) -> None:
    client = fed.client(CONSUMER)
    good = {"holder": ZHANG_SAN.message(), "cert_type": "401", "purpose_item": "bdc-dy"}
    issuer = fed.app_of("320105")
    before = await issuer.store.use_counts()
    message = await refused(client.lookup_certificate(**good), grpc.StatusCode.PERMISSION_DENIED)
    assert "authorization" in message
    expired = authz(fed, ZHANG_SAN, "bdc-dy", at=fed_now(fed) - 1000)
    await refused(client.lookup_certificate(**good, authorization=expired),
                  grpc.StatusCode.UNAUTHENTICATED)
    other = authz(fed, LI_SI, "bdc-dy")
    assert "authorization.sub" in await refused(
        client.lookup_certificate(**good, authorization=other), grpc.StatusCode.PERMISSION_DENIED)
    for_another = authz(fed, ZHANG_SAN, "bdc-dy", consumer="310000")
    assert "authorization.aud" in await refused(
        client.lookup_certificate(**good, authorization=for_another),
        grpc.StatusCode.PERMISSION_DENIED)
    forged = forge_kid(authorize(key_of("320681"), holder=ZHANG_SAN.holder, item="bdc-dy",
                                 consumer=CONSUMER, now=fed_now(fed)), "310115#k1")
    await refused(client.lookup_certificate(**good, authorization=forged),
                  grpc.StatusCode.UNAUTHENTICATED)
    wrong_item = authz(fed, ZHANG_SAN, "jdc-wf")
    assert "purpose_item" in await refused(client.lookup_certificate(
        holder=ZHANG_SAN.message(), cert_type="401", purpose_item="jdc-wf",
        authorization=wrong_item), grpc.StatusCode.PERMISSION_DENIED)
    not_for_item = authz(fed, ZHANG_SAN, "gjj-tq")
    assert "cert_type" in await refused(client.lookup_certificate(
        holder=ZHANG_SAN.message(), cert_type="301", purpose_item="gjj-tq",
        authorization=not_for_item), grpc.StatusCode.PERMISSION_DENIED)
    narrowed = authz(fed, ZHANG_SAN, "bdc-dy", types=["111"])
    assert "authorization.cts" in await refused(
        client.lookup_certificate(**good, authorization=narrowed),
        grpc.StatusCode.PERMISSION_DENIED)
    token = authz(fed, ZHANG_SAN, "bdc-dy")
    assert "holder.number" in await refused(client.lookup_certificate(
        holder=cpb.Holder(id_type=pb.ID_TYPE_RESIDENT, number=ZHANG_SAN.number[:-1] + "0"
                          if ZHANG_SAN.number[-1] != "0" else ZHANG_SAN.number[:-1] + "1"),
        cert_type="401", purpose_item="bdc-dy", authorization=token),
        grpc.StatusCode.INVALID_ARGUMENT)
    number = demo(ZHANG_SAN, "401")
    typo = number[:-1] + ("A" if number[-1] != "A" else "B")
    assert "certificate_id" in await refused(client.lookup_certificate(
        **good, authorization=token, certificate_id=typo), grpc.StatusCode.INVALID_ARGUMENT)
    assert await issuer.store.use_counts() == before  # nothing reached the issuer
    # 李四 has no 结婚证: the issuer (江苏, type 301 for 32) says so
    assert "holder" in await refused(client.lookup_certificate(
        holder=LI_SI.message(), cert_type="301", purpose_item="bdc-dy",
        authorization=authz(fed, LI_SI, "bdc-dy")), grpc.StatusCode.NOT_FOUND)


async def test_revocation_is_seen_by_the_next_lookup(fed: Federation) -> None:
    client = fed.client(CONSUMER)
    number = demo(ZHANG_SAN, "401")
    ask = {"holder": ZHANG_SAN.message(), "cert_type": "401", "purpose_item": "bdc-dy",
           "certificate_id": number}
    first = await client.lookup_certificate(**ask, authorization=authz(fed, ZHANG_SAN, "bdc-dy"))
    assert first.certificate.metadata.status == cpb.CERTIFICATE_STATUS_VALID
    await fed.platform("320105").issuer.revoke(number)
    second = await client.lookup_certificate(**ask,
                                             authorization=authz(fed, ZHANG_SAN, "bdc-dy"))
    assert second.certificate.metadata.status == cpb.CERTIFICATE_STATUS_REVOKED
    assert second.certificate.document == first.certificate.document  # never re-signed
    checked = await client.verify_certificate(certificate_id=number)
    assert checked.status == cpb.CERTIFICATE_STATUS_REVOKED
    by_document = await client.verify_certificate(document=first.certificate.document)
    assert by_document.metadata.status == cpb.CERTIFICATE_STATUS_REVOKED


async def test_a_tampered_document_fails(fed: Federation) -> None:
    client = fed.client(CONSUMER)
    got = (await client.lookup_certificate(
        holder=ZHANG_SAN.message(), cert_type="401", purpose_item="bdc-dy",
        authorization=authz(fed, ZHANG_SAN, "bdc-dy"))).certificate
    head, body, sig = got.document.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["holder"] = "李四"
    forged_body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    tampered = f"{head}.{forged_body}.{sig}"
    with pytest.raises(Exception):  # noqa: B017, PT011
        open_document(tampered, issuer_keys(fed, "320105"), now=fed_now(fed))
    assert "document" in await refused(client.verify_certificate(document=tampered),
                                       grpc.StatusCode.INVALID_ARGUMENT)


async def test_listing_finds_a_certificate_issued_outside_the_home_region(
        fed: Federation) -> None:
    client = fed.client(CONSUMER)
    listing = await client.list_certificates(
        holder=ZHANG_SAN.message(), purpose_item="bdc-dy",
        authorization=authz(fed, ZHANG_SAN, "bdc-dy"))
    assert not listing.unavailable
    found = {c.metadata.type_code: c.found_at for c in listing.certificates}
    assert set(found) == {"111", "301", "401"}
    assert found["301"].partner == "310000" and not found["301"].home  # married in 上海
    assert found["401"].partner == "320105" and found["401"].home
    assert found["111"].partner == "320000" and found["111"].home
    for certificate in listing.certificates:
        open_document(certificate.document,
                      issuer_keys(fed, certificate.found_at.partner), now=fed_now(fed))
        assert not certificate.file


async def test_a_yes_no_claim_returns_only_the_signed_answer(fed: Federation) -> None:
    client = fed.client(CONSUMER)
    answer = await client.lookup_certificate(
        holder=COMPANY.message(), cert_type="201", purpose_item="yyzz-bg",
        authorization=authz(fed, COMPANY, "yyzz-bg"),
        claim=cpb.CertificateClaim(name="at_least", field="registered_capital",
                                   value=1_000_000))
    assert not answer.HasField("certificate")
    got = claim_rules.verify_answer(answer.claim_answer.token, issuer_keys(fed, "320000"),
                                    consumer=CONSUMER, now=fed_now(fed))
    assert got.answer and answer.claim_answer.answer
    assert "registered_capital" not in answer.claim_answer.token  # the value is not told
    no = await client.lookup_certificate(
        holder=COMPANY.message(), cert_type="201", purpose_item="yyzz-bg",
        authorization=authz(fed, COMPANY, "yyzz-bg"),
        claim=cpb.CertificateClaim(name="at_least", field="registered_capital",
                                   value=10_000_000))
    assert not no.claim_answer.answer
    assert "claim.text" in await refused(client.lookup_certificate(
        holder=COMPANY.message(), cert_type="201", purpose_item="yyzz-bg",
        authorization=authz(fed, COMPANY, "yyzz-bg"),
        claim=cpb.CertificateClaim(name="valid_on", on="2026-11-25", text="x")),
        grpc.StatusCode.INVALID_ARGUMENT)


async def test_identity_is_checked_at_home_and_nothing_else_comes_back(
        fed: Federation) -> None:
    client = fed.client(CONSUMER)
    yes = await client.verify_identity(holder=ZHANG_SAN.message(), name="张三",
                                       purpose_item="bdc-dy",
                                       authorization=authz(fed, ZHANG_SAN, "bdc-dy"))
    assert yes.match and yes.found_at.partner == "320000"
    claim_rules.verify_answer(yes.token, issuer_keys(fed, "320000"), consumer=CONSUMER,
                              now=fed_now(fed))
    no = await client.verify_identity(holder=ZHANG_SAN.message(), name="李四",
                                      purpose_item="bdc-dy",
                                      authorization=authz(fed, ZHANG_SAN, "bdc-dy"))
    assert not no.match
    assert "holder.id_type" in await refused(client.verify_identity(
        holder=COMPANY.message(), name="x", purpose_item="bdc-dy",
        authorization=authz(fed, COMPANY, "bdc-dy")), grpc.StatusCode.INVALID_ARGUMENT)


async def test_a_holder_lists_who_used_their_certificates(fed: Federation) -> None:
    client = fed.client(CONSUMER)
    await client.lookup_certificate(holder=ZHANG_SAN.message(), cert_type="401",
                                    purpose_item="bdc-dy",
                                    authorization=authz(fed, ZHANG_SAN, "bdc-dy"))
    home = fed.client("320105")  # 张三 authenticates at 建邺 to see his record
    uses = await home.certificate_uses(
        holder=ZHANG_SAN.message(),
        authorization=authz(fed, ZHANG_SAN, "tongban:uses", consumer="320105", by="320105"))
    assert [(u.consumer, u.item, u.cert_type, u.issuer, u.outcome) for u in uses.uses] == [
        (CONSUMER, "bdc-dy", "401", "320105", "OK")]
    assert uses.uses[0].number == demo(ZHANG_SAN, "401")
    # someone else's authorization does not open the record
    await refused(home.certificate_uses(
        holder=ZHANG_SAN.message(),
        authorization=authz(fed, ZHANG_SAN, "tongban:uses", consumer="320105", by="320681")),
        grpc.StatusCode.PERMISSION_DENIED)
    counts = await fed.app_of(CONSUMER).store.use_counts()
    assert any(c.cert_type == "401" and c.consumer == CONSUMER and c.outcome == "OK"
               for c in counts)


async def test_a_case_citing_a_certificate_is_accepted_after_verification(
        fed: Federation, tmp_path: Path) -> None:
    client = fed.client(CONSUMER)
    got = (await client.lookup_certificate(
        holder=ZHANG_SAN.message(), cert_type="401", purpose_item="gjj-tq",
        authorization=authz(fed, ZHANG_SAN, "gjj-tq"))).certificate
    applicant = pb.Applicant(id_type=pb.ID_TYPE_RESIDENT, id_number=ZHANG_SAN.number,
                             name="张三")
    submitted = await client.submit(
        case_number="PD-CERT-1", target_division="320105", item_code="gjj-tq",
        applicant=applicant,
        certificates=[pb.CertificateCitation(material="购房合同", document=got.document)])
    case_id = submitted.case.case_id
    platform = fed.platform("320105")
    assert await settled(platform, case_id) is State.COMPLETED  # verified, then accepted
    target = await fed.app_of("320105").engine.get("320105", case_id)
    assert [c.document for c in target.certificates] == [got.document]
    # revoked after it was looked up: the target asks the issuer and rejects the case
    await platform.issuer.revoke(got.metadata.number)
    again = await client.submit(
        case_number="PD-CERT-5", target_division="320105", item_code="gjj-tq",
        applicant=applicant,
        certificates=[pb.CertificateCitation(material="购房合同", document=got.document)])
    assert await settled(platform, again.case.case_id) is State.REJECTED

    async def told() -> bool:  # the origin hears why
        case = await client.get(again.case.case_id)
        return case.state == pb.CASE_STATE_REJECTED and "revoked" in case.timeline[-1].note
    await until(told)
    # another holder's certificate, or one for a material it does not replace: refused
    other = pb.Applicant(id_type=pb.ID_TYPE_RESIDENT, id_number=LI_SI.number, name="李四")
    assert "certificates[0].document" in await refused(client.submit(
        case_number="PD-CERT-2", target_division="320105", item_code="gjj-tq",
        applicant=other,
        certificates=[pb.CertificateCitation(material="购房合同", document=got.document)]),
        grpc.StatusCode.PERMISSION_DENIED)
    assert "certificates[0].document" in await refused(client.submit(
        case_number="PD-CERT-3", target_division="320105", item_code="gjj-tq",
        applicant=applicant,
        certificates=[pb.CertificateCitation(material="居民身份证", document=got.document)]),
        grpc.StatusCode.PERMISSION_DENIED)
    assert "certificates[0].material" in await refused(client.submit(
        case_number="PD-CERT-4", target_division="320105", item_code="gjj-tq",
        applicant=applicant,
        certificates=[pb.CertificateCitation(material="户口本", document=got.document)]),
        grpc.StatusCode.PERMISSION_DENIED)


async def test_a_type_nobody_issues_for_the_holders_region_is_not_found(
        fed: Federation) -> None:
    chuzhou = DemoHolder("赵六", HolderIdType.RESIDENT, resident_id("34110219900101001"))
    message = await refused(fed.client(CONSUMER).lookup_certificate(
        holder=chuzhou.message(), cert_type="401", purpose_item="gjj-tq",
        authorization=authz(fed, chuzhou, "gjj-tq")), grpc.StatusCode.NOT_FOUND)
    assert "cert_type" in message and "341102" in message and "340000" in message
    assert "34110219900101001" not in message  # the holder's id is never in a message


async def test_a_listing_names_an_issuer_behind_another_gateway_that_could_not_answer(
        fed: Federation) -> None:
    await fed.platform("320105").issuer.close()  # 建邺's register is down
    listing = await fed.client(CONSUMER).list_certificates(
        holder=ZHANG_SAN.message(), purpose_item="bdc-dy",
        authorization=authz(fed, ZHANG_SAN, "bdc-dy"))
    assert list(listing.unavailable) == ["320105: UNAVAILABLE"]
    assert {c.metadata.type_code for c in listing.certificates} == {"111", "301"}
