"""The reference certificate issuer (adapters/issuer.py) on a real SQLite file: documents
that verify offline, revocation by status statement, signed yes/no answers, the
consumer's say checked again, and the demo seeds."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from google.protobuf.message import Message

from adapters.embedded import EmbeddedAdapter
from adapters.grpc_partner import GrpcPartnerAdapter
from adapters.issuer import Issuer
from adapters.issuer_requests import LIST, LOOKUP, VERIFY_IDENTITY
from adapters.issuer_seed import (
    COMPANY,
    DEMO_CERTIFICATES,
    DEMO_HOLDERS,
    LI_SI,
    WANG_WU,
    ZHANG_SAN,
    DemoHolder,
    demo_numbers,
    seed,
)
from adapters.peer import PeerAdapter
from gateway.batchsign import BatchSigner
from gateway.certificate_ids import format_id, parse
from gateway.certificates import claims as cl
from gateway.certificates.authorization import authorize
from gateway.certificates.documents import (
    HolderIdType,
    Status,
    open_document,
    verify_status,
)
from gateway.config import Config, load_config
from gateway.demo import free_port
from gateway.errors import (
    AlreadyExists,
    ConfigError,
    FailedPrecondition,
    GatewayError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from gateway.evidence import Statements
from gateway.identifiers import check_credit_code, check_resident_id
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import certificate_pb2 as cp
from gateway.signing import PublicKey, SigningKey, load_private_key, sign
from gateway.types import AdapterContext, SystemClock
from gateway.verifier import KeyLookup, Verifier
from tests.certkeys import lookup, party
from tests.federation import PARTNERS_TOML, ROOT, FakeClock, federation
from tests.platform import PLATFORM_ID, Platform, grpc_partner_text, serving

NOW = 1_790_000_000.0  # 2026-09-22
ISSUER, HOME, CONSUMER, STRANGER = "320000", "320105", "310115", "999999"
ITEM = "bdc-dy"


@dataclass
class Parties:
    """Fresh keys: the issuing platform, the platform where holders authenticate, the
    consumer, and a stranger nobody lists."""

    issuer: tuple[SigningKey, PublicKey]
    home: tuple[SigningKey, PublicKey]
    consumer: tuple[SigningKey, PublicKey]
    stranger: tuple[SigningKey, PublicKey]

    @property
    def keys_for(self) -> KeyLookup:
        return lookup(self.issuer[1], self.home[1], self.consumer[1])  # type: ignore[no-any-return]

    def statements(self) -> Statements:
        return Statements({p[1].owner: (p[1],) for p in (self.issuer, self.home,
                                                         self.consumer)}, ISSUER)


@pytest.fixture(scope="module")
def keys() -> Parties:
    return Parties(party(f"{ISSUER}#k1"), party(f"{HOME}#k1"), party(f"{CONSUMER}#k1"),
                   party(f"{STRANGER}#k1"))


@pytest_asyncio.fixture
async def issuer(tmp_path: Path, keys: Parties) -> AsyncIterator[Issuer]:
    register = Issuer(partner_id=ISSUER, key=keys.issuer[0],
                      database=str(tmp_path / "issuer.sqlite3"), clock=FakeClock(NOW),
                      statements=keys.statements(), keys_for=keys.keys_for)
    await register.start()
    yield register
    await register.close()


def clock_of(issuer: Issuer) -> FakeClock:
    clock = issuer._clock
    assert isinstance(clock, FakeClock)
    return clock


PDF = b"%PDF-1.7\n% test\n%%EOF\n"
ISSUER_CODE = "11320105458008741P"  # a valid credit code registered in 320105


async def issue(issuer: Issuer, holder: DemoHolder = ZHANG_SAN, *, type_code: str = "401",
                serial: str = "A1", facts: dict[str, int] | None = None,
                valid_to: date | None = None, issued_on: date = date(2021, 9, 15)) -> str:
    return await issuer.issue(
        type_code=type_code, name="不动产权证书", issuer="南京市建邺区不动产登记中心",
        issuer_code=ISSUER_CODE, serial=serial, holder=holder.name,
        holder_id_type=holder.id_type, holder_id=holder.number, issued_on=issued_on,
        valid_to=valid_to, file=PDF, facts=facts)


def statement(keys: Parties, method: str, request: Message, *,
              signer: tuple[SigningKey, PublicKey] | None = None,
              iss: str = CONSUMER) -> pb.Statement:
    """The consumer's own signed call, as its gateway received it."""
    body = request.SerializeToString()
    token, _ = sign((signer or keys.consumer)[0], iss=iss, aud="310000-gw", method=method,
                    body=body, now=NOW)
    return pb.Statement(request=body, token=token)


def authorization(keys: Parties, holder: DemoHolder = ZHANG_SAN, *, item: str = ITEM,
                  consumer: str = CONSUMER, cert_types: list[str] | None = None,
                  signer: tuple[SigningKey, PublicKey] | None = None,
                  now: float = NOW) -> str:
    return authorize((signer or keys.home)[0], holder=holder.holder, item=item,
                     consumer=consumer, now=now, cert_types=cert_types)


def lookup_fetch(keys: Parties, holder: DemoHolder = ZHANG_SAN, *, cert_type: str = "401",
                 certificate_id: str = "", with_file: bool = False,
                 authz: str | None = None, asked: DemoHolder | None = None,
                 consumer: str = CONSUMER) -> bytes:
    """A FetchCertificatesRequest for a consumer's LookupCertificate, as a gateway makes it."""
    call = cp.LookupCertificateRequest(
        holder=(asked or holder).message(), cert_type=cert_type, purpose_item=ITEM,
        authorization=authz if authz is not None else authorization(keys, asked or holder),
        certificate_id=certificate_id, with_file=with_file)
    return cp.FetchCertificatesRequest(
        holder=holder.message(), cert_types=[cert_type], certificate_id=certificate_id,
        consumer=consumer, purpose_item=ITEM,
        consumer_statement=statement(keys, LOOKUP, call), with_file=with_file
    ).SerializeToString()


def list_fetch(keys: Parties, holder: DemoHolder, types: list[str]) -> bytes:
    call = cp.ListCertificatesRequest(holder=holder.message(), purpose_item=ITEM,
                                      authorization=authorization(keys, holder),
                                      cert_types=types)
    return cp.FetchCertificatesRequest(
        holder=holder.message(), cert_types=types, consumer=CONSUMER, purpose_item=ITEM,
        consumer_statement=statement(keys, LIST, call)).SerializeToString()


def claim_request(keys: Parties, claim: cp.CertificateClaim, holder: DemoHolder = ZHANG_SAN,
                  *, cert_type: str = "401", certificate_id: str = "") -> bytes:
    """An AnswerClaimRequest for a consumer's LookupCertificate with a claim."""
    call = cp.LookupCertificateRequest(
        holder=holder.message(), cert_type=cert_type, purpose_item=ITEM,
        authorization=authorization(keys, holder), certificate_id=certificate_id,
        claim=claim)
    return cp.AnswerClaimRequest(
        holder=holder.message(), cert_type=cert_type, certificate_id=certificate_id,
        claim=claim, consumer=CONSUMER,
        consumer_statement=statement(keys, LOOKUP, call)).SerializeToString()


async def fetched(issuer: Issuer, request: bytes) -> list[cp.IssuedCertificate]:
    return list(cp.FetchCertificatesResponse.FromString(await issuer.fetch(request))
                .certificates)


# -- documents, files, revocation -------------------------------------------------------------

@pytest.mark.asyncio
async def test_issued_document_verifies_offline_with_its_file(issuer: Issuer,
                                                              keys: Parties) -> None:
    number = await issue(issuer, facts={"area_m2": 89})
    assert parse(number).type_code == "401" and parse(number).issuer_code == ISSUER_CODE
    (got,) = await fetched(issuer, lookup_fetch(keys, with_file=True))
    issuer_keys = lookup(keys.issuer[1])
    document = open_document(got.document, issuer_keys, now=NOW, status=got.status_statement)
    meta = document.metadata
    assert (document.iss, meta.number, meta.holder, meta.holder_id, meta.status) == \
        (ISSUER, number, "张三", ZHANG_SAN.number, Status.VALID)
    assert got.file == PDF
    assert (meta.file.sha256, meta.file.size) == (hashlib.sha256(PDF).hexdigest(), len(PDF))
    assert "area_m2" not in got.document  # facts stay with the issuer
    # without with_file the bytes stay home too
    (bare,) = await fetched(issuer, lookup_fetch(keys))
    assert bare.file == b"" and bare.document == got.document


@pytest.mark.asyncio
async def test_revocation_shows_in_every_later_status_statement(issuer: Issuer,
                                                                  keys: Parties) -> None:
    number = await issue(issuer)
    (before,) = await fetched(issuer, lookup_fetch(keys))
    await issuer.revoke(number)
    clock_of(issuer).advance(10)
    (after,) = await fetched(issuer, lookup_fetch(keys))
    issuer_keys = lookup(keys.issuer[1])
    assert after.document == before.document  # never signed again
    assert open_document(after.document, issuer_keys, now=NOW + 10,
                         status=after.status_statement).metadata.status is Status.REVOKED
    # offline, without the issuer's word, the document only knows what it said
    assert open_document(after.document, issuer_keys, now=NOW + 10).metadata.status \
        is Status.VALID
    raw = await issuer.status(cp.CertificateStatusRequest(number=number,
                                                          consumer=CONSUMER).SerializeToString())
    said = verify_status(cp.CertificateStatusResponse.FromString(raw).status_statement,
                         issuer_keys, now=NOW + 10)
    assert (said.iss, said.number, said.status) == (ISSUER, number, Status.REVOKED)
    with pytest.raises(FailedPrecondition):  # revoked is final
        await issuer.revoke(number, Status.VALID)


@pytest.mark.asyncio
async def test_a_suspension_can_be_lifted(issuer: Issuer, keys: Parties) -> None:
    number = await issue(issuer)
    await issuer.revoke(number, Status.SUSPENDED)
    (got,) = await fetched(issuer, lookup_fetch(keys))
    assert verify_status(got.status_statement, lookup(keys.issuer[1]), now=NOW).status \
        is Status.SUSPENDED
    await issuer.revoke(number, Status.VALID)
    (got,) = await fetched(issuer, lookup_fetch(keys))
    assert verify_status(got.status_statement, lookup(keys.issuer[1]), now=NOW).status \
        is Status.VALID
    with pytest.raises(InvalidArgument) as bad:
        await issuer.revoke(number, Status.NOT_YET_VALID)  # reported, never signed
    assert bad.value.field == "status"
    with pytest.raises(NotFound):
        await issuer.revoke("1.2.156.3005.2.401.11320105458008741P.ZZ.001.0")


@pytest.mark.asyncio
async def test_listing_is_newest_first_and_only_the_types_asked(issuer: Issuer,
                                                                keys: Parties) -> None:
    old = await issue(issuer, serial="OLD")
    clock_of(issuer).advance(60)
    card = await issue(issuer, type_code="501", serial="CARD")
    clock_of(issuer).advance(60)
    new = await issue(issuer, serial="NEW")
    await issue(issuer, LI_SI, serial="OTHER")  # another holder's
    def numbers(got: list[cp.IssuedCertificate]) -> list[str]:
        return [open_document(c.document, lookup(keys.issuer[1]), now=NOW + 200)
                .metadata.number for c in got]

    assert numbers(await fetched(issuer, list_fetch(keys, ZHANG_SAN, ["401", "501"]))) == \
        [new, card, old]
    assert numbers(await fetched(issuer, list_fetch(keys, ZHANG_SAN, ["501"]))) == [card]
    assert await fetched(issuer, list_fetch(keys, WANG_WU, ["401"])) == []  # none: empty


@pytest.mark.asyncio
async def test_a_number_is_issued_once(issuer: Issuer) -> None:
    await issue(issuer)
    with pytest.raises(AlreadyExists):
        await issue(issuer)
    with pytest.raises(InvalidArgument) as bad:
        await issue(issuer, serial="A2", facts={"Capital": 1})
    assert bad.value.field == "facts"
    with pytest.raises(InvalidArgument) as bad:
        await issue(issuer, serial="A3", valid_to=date(2020, 1, 1))  # before valid_from
    assert bad.value.field == "valid_to"


# -- not found ---------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_not_found_alike_for_another_holders_and_an_unknown_certificate(
        issuer: Issuer, keys: Parties) -> None:
    theirs = await issue(issuer, LI_SI, serial="LI")
    unknown = format_id("401", ISSUER_CODE, "NOPE")
    messages = []
    for number in (theirs, unknown):
        with pytest.raises(NotFound) as gone:
            await issuer.fetch(lookup_fetch(keys, certificate_id=number))
        messages.append(gone.value.message.replace(number, "N"))
        assert gone.value.field == "certificate_id"
        assert ZHANG_SAN.number not in gone.value.message  # masked
    assert messages[0] == messages[1]  # the register cannot be probed
    mine = await issue(issuer, type_code="501", serial="CARD")
    with pytest.raises(NotFound):  # not of the type asked
        await issuer.fetch(lookup_fetch(keys, cert_type="401", certificate_id=mine))
    with pytest.raises(NotFound) as gone:
        await issuer.status(cp.CertificateStatusRequest(number=unknown).SerializeToString())
    assert gone.value.field == "number"


# -- claims ------------------------------------------------------------------------------------

CLAIMS = [
    (COMPANY, "201", cp.CertificateClaim(name="at_least", field="registered_capital",
                                         value=1_000_000), True),
    (COMPANY, "201", cp.CertificateClaim(name="at_least", field="registered_capital",
                                         value=5_000_001), False),
    (ZHANG_SAN, "401", cp.CertificateClaim(name="valid_on", on="2026-09-22"), True),
    (ZHANG_SAN, "401", cp.CertificateClaim(name="valid_on", on="2020-01-01"), False),
    (ZHANG_SAN, "401", cp.CertificateClaim(name="name_is", text=" 张三 "), True),
    (ZHANG_SAN, "401", cp.CertificateClaim(name="name_is", text="李四"), False),
    (ZHANG_SAN, "401", cp.CertificateClaim(name="age_at_least", years=18, on="2026-09-22"),
     True),
    (ZHANG_SAN, "401", cp.CertificateClaim(name="age_at_least", years=18, on="2006-03-14"),
     False),
    (WANG_WU, "401", cp.CertificateClaim(name="age_at_least", years=18, on="2018-02-28"),
     False),  # born 2000-02-29: 18 from 1 March 2018
    (WANG_WU, "401", cp.CertificateClaim(name="age_at_least", years=18, on="2018-03-01"),
     True),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("holder", "cert_type", "claim", "expected"), CLAIMS)
async def test_claims_answered_and_verified(issuer: Issuer, keys: Parties, holder: DemoHolder,
                                            cert_type: str, claim: cp.CertificateClaim,
                                            expected: bool) -> None:
    number = await issue(issuer, holder, type_code=cert_type,
                         facts={"registered_capital": 5_000_000})
    raw = await issuer.answer(claim_request(keys, claim, holder, cert_type=cert_type))
    response = cp.AnswerClaimResponse.FromString(raw)
    said = cl.verify_answer(response.token, lookup(keys.issuer[1]), consumer=CONSUMER, now=NOW)
    assert (response.number, said.number, said.iss, said.answer) == \
        (number, number, ISSUER, expected)
    assert holder.number not in response.token  # only the yes or no goes out


@pytest.mark.asyncio
async def test_a_claim_is_about_the_newest_valid_certificate(issuer: Issuer,
                                                             keys: Parties) -> None:
    older = await issue(issuer, serial="OLD")
    clock_of(issuer).advance(60)
    newer = await issue(issuer, serial="NEW")
    expired = await issue(issuer, serial="EXP", valid_to=date(2025, 1, 1),
                          issued_on=date(2015, 1, 1))
    await issuer.revoke(newer)
    claim = cp.CertificateClaim(name="name_is", text="张三")
    raw = await issuer.answer(claim_request(keys, claim))
    assert cp.AnswerClaimResponse.FromString(raw).number == older
    # a named certificate is answered about whatever its status: not valid on any day
    raw = await issuer.answer(claim_request(keys, cp.CertificateClaim(
        name="valid_on", on="2024-01-01"), certificate_id=newer))
    said = cl.verify_answer(cp.AnswerClaimResponse.FromString(raw).token,
                            lookup(keys.issuer[1]), consumer=CONSUMER, now=NOW)
    assert (said.number, said.answer) == (newer, False)
    await issuer.revoke(older)
    with pytest.raises(NotFound) as gone:  # only the expired one is left
        await issuer.answer(claim_request(keys, claim))
    assert gone.value.field == "cert_type" and expired
    with pytest.raises(NotFound):
        await issuer.answer(claim_request(keys, claim, LI_SI))


@pytest.mark.asyncio
async def test_claims_that_do_not_apply_are_refused_not_answered_no(issuer: Issuer,
                                                                    keys: Parties) -> None:
    await issue(issuer)
    await issue(issuer, COMPANY, type_code="201", serial="C")
    with pytest.raises(FailedPrecondition) as bad:
        await issuer.answer(claim_request(keys, cp.CertificateClaim(
            name="at_least", field="registered_capital", value=1)))
    assert bad.value.field == "claim.field"
    with pytest.raises(FailedPrecondition) as bad:
        await issuer.answer(claim_request(keys, cp.CertificateClaim(
            name="age_at_least", years=18, on="2026-01-01"), COMPANY, cert_type="201"))
    assert bad.value.field == "claim.name"


# -- bad input ---------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_bad_requests_name_their_field(issuer: Issuer, keys: Parties) -> None:
    good = cp.FetchCertificatesRequest.FromString(lookup_fetch(keys))

    def variant(**changes: object) -> bytes:
        request = cp.FetchCertificatesRequest()
        request.CopyFrom(good)
        for name, value in changes.items():
            if isinstance(value, Message):
                getattr(request, name).CopyFrom(value)
            elif isinstance(value, list):
                del getattr(request, name)[:]
                getattr(request, name).extend(value)
            else:
                setattr(request, name, value)
        return request.SerializeToString()

    cases = [
        (variant(holder=cp.Holder(number=ZHANG_SAN.number)), "holder.id_type"),
        (variant(holder=cp.Holder(id_type=pb.ID_TYPE_RESIDENT, number="320105198803150010")),
         "holder.number"),
        (variant(cert_types=[]), "cert_types"),
        (variant(cert_types=["401", "401"]), "cert_types"),
        (variant(cert_types=["4x1"]), "cert_types"),
        (variant(certificate_id="1.2.156.3005.2.401.X"), "certificate_id"),
        (variant(consumer=""), "consumer"),
        (b"\xff\xff", ""),
    ]
    for request, field in cases:
        with pytest.raises(InvalidArgument) as bad:
            await issuer.fetch(request)
        assert bad.value.field == field
    for claim, field in [
            (cp.CertificateClaim(name="colour_is", text="red"), "claim.name"),
            (cp.CertificateClaim(name="valid_on", on="2026-09-22", years=3), "claim.years"),
            (cp.CertificateClaim(name="valid_on", on="2026-02-30"), "claim.on"),
            (cp.CertificateClaim(name="at_least", field="Capital", value=1), "claim.field")]:
        with pytest.raises(InvalidArgument) as bad:
            await issuer.answer(claim_request(keys, claim))
        assert bad.value.field == field
    with pytest.raises(InvalidArgument) as bad:
        await issuer.answer(claim_request(keys, cp.CertificateClaim(name="name_is", text="张三"),
                                          cert_type="4x"))
    assert bad.value.field == "cert_type"
    for request, field in [(cp.CertificateStatusRequest(number="1.2.3"), "number"),
                           (cp.CertificateStatusRequest(), "number")]:
        with pytest.raises(InvalidArgument) as bad:
            await issuer.status(request.SerializeToString())
        assert bad.value.field == field
    for call in (issuer.answer, issuer.status):
        with pytest.raises(InvalidArgument):
            await call(b"\xff\xff")


# -- the consumer's say, checked again ---------------------------------------------------------

@pytest.mark.asyncio
async def test_the_holders_authorization_must_be_for_this_holder_item_and_consumer(
        issuer: Issuer, keys: Parties) -> None:
    await issue(issuer)
    refused = {
        "authorization.sub": lookup_fetch(keys, authz=authorization(keys, LI_SI)),
        "authorization.itm": lookup_fetch(keys, authz=authorization(keys, item="gjj-tq")),
        "authorization.aud": lookup_fetch(keys, authz=authorization(keys, consumer="320681")),
        "authorization.cts": lookup_fetch(keys, authz=authorization(keys, cert_types=["111"])),
        # a statement about another holder than the fetch
        "consumer_statement.holder": lookup_fetch(keys, asked=LI_SI),
        # forged: by a key nobody lists, or expired long ago
        "consumer_statement.authorization": lookup_fetch(
            keys, authz=authorization(keys, signer=keys.stranger)),
    }
    for field, request in refused.items():
        with pytest.raises(PermissionDenied) as denied:
            await issuer.fetch(request)
        assert denied.value.field == field, denied.value
        assert ZHANG_SAN.number not in denied.value.message
        assert LI_SI.number not in denied.value.message
    stale = lookup_fetch(keys, authz=authorization(keys, now=NOW - 3600))
    with pytest.raises(PermissionDenied) as denied:
        await issuer.fetch(stale)
    assert denied.value.field == "consumer_statement.authorization"


@pytest.mark.asyncio
async def test_a_forged_or_borrowed_consumer_statement_is_refused(issuer: Issuer,
                                                                  keys: Parties) -> None:
    await issue(issuer)
    good = cp.FetchCertificatesRequest.FromString(lookup_fetch(keys))
    call = cp.LookupCertificateRequest.FromString(good.consumer_statement.request)

    def with_statement(stmt: pb.Statement, consumer: str = CONSUMER) -> bytes:
        request = cp.FetchCertificatesRequest()
        request.CopyFrom(good)
        request.consumer_statement.CopyFrom(stmt)
        request.consumer = consumer
        return request.SerializeToString()

    tampered = pb.Statement(request=good.consumer_statement.request + b"\x38\x01",
                            token=good.consumer_statement.token)
    cases = [
        with_statement(pb.Statement()),  # none at all
        with_statement(tampered),  # bytes changed after signing
        with_statement(statement(keys, LOOKUP, call, signer=keys.stranger, iss=STRANGER),
                       STRANGER),  # signed by nobody listed
        with_statement(statement(keys, LOOKUP, call, signer=keys.home, iss=HOME)),  # by another
        with_statement(statement(keys, "/tongban.v1.Gateway/SubmitCase", call)),  # not a lookup
    ]
    for request in cases:
        with pytest.raises(PermissionDenied) as denied:
            await issuer.fetch(request)
        assert denied.value.field == "consumer_statement"


@pytest.mark.asyncio
async def test_only_what_the_consumer_asked_goes_out(issuer: Issuer, keys: Parties) -> None:
    number = await issue(issuer)
    authz = authorization(keys)
    holder = ZHANG_SAN.message()

    def fetch(call: Message, method: str = LOOKUP, **fields: object) -> bytes:
        base: dict[str, object] = {"holder": holder, "cert_types": ["401"], "consumer": CONSUMER,
                                   "purpose_item": ITEM}
        return cp.FetchCertificatesRequest(
            **(base | fields), consumer_statement=statement(keys, method, call)  # type: ignore[arg-type]
        ).SerializeToString()

    lookup_call = cp.LookupCertificateRequest(holder=holder, cert_type="401", purpose_item=ITEM,
                                              authorization=authz)
    claim_call = cp.LookupCertificateRequest(
        holder=holder, cert_type="401", purpose_item=ITEM, authorization=authz,
        claim=cp.CertificateClaim(name="name_is", text="张三"))
    list_call = cp.ListCertificatesRequest(holder=holder, purpose_item=ITEM,
                                           authorization=authz, cert_types=["401"])
    identity_call = cp.VerifyIdentityRequest(holder=holder, name="张三", purpose_item=ITEM,
                                             authorization=authz)
    refused = {
        "consumer_statement.claim": fetch(claim_call),  # a yes/no, not the document
        "consumer_statement.cert_type": fetch(lookup_call, cert_types=["401", "111"]),
        "consumer_statement.with_file": fetch(lookup_call, with_file=True),
        "consumer_statement.certificate_id": fetch(lookup_call, certificate_id=number),
        "consumer_statement.purpose_item": fetch(lookup_call, purpose_item="gjj-tq"),
        "consumer_statement.cert_types": fetch(list_call, method=LIST,
                                               cert_types=["401", "111"]),
        "consumer_statement": fetch(list_call, method=LIST, with_file=True),
    }
    for field, request in refused.items():
        with pytest.raises(PermissionDenied) as denied:
            await issuer.fetch(request)
        assert denied.value.field == field, denied.value
    with pytest.raises(PermissionDenied) as denied:  # an identity check fetches nothing
        await issuer.fetch(fetch(identity_call, method=VERIFY_IDENTITY))
    assert denied.value.field == "consumer_statement"
    assert len(await fetched(issuer, fetch(lookup_call))) == 1

    def answer(call: Message, method: str, claim: cp.CertificateClaim) -> bytes:
        return cp.AnswerClaimRequest(holder=holder, cert_type="401", claim=claim,
                                     consumer=CONSUMER,
                                     consumer_statement=statement(keys, method, call)
                                     ).SerializeToString()

    other = cp.CertificateClaim(name="age_at_least", years=18, on="2026-01-01")
    for call, method, field in [(claim_call, LOOKUP, "consumer_statement.claim"),
                                (lookup_call, LOOKUP, "consumer_statement.claim"),
                                (identity_call, VERIFY_IDENTITY, "consumer_statement.name"),
                                (list_call, LIST, "consumer_statement")]:
        with pytest.raises(PermissionDenied) as denied:
            await issuer.answer(answer(call, method, other))
        assert denied.value.field == field, denied.value
    name = cp.CertificateClaim(name="name_is", text="张三")
    for call, method in [(claim_call, LOOKUP), (identity_call, VERIFY_IDENTITY)]:
        raw = await issuer.answer(answer(call, method, name))
        assert cp.AnswerClaimResponse.FromString(raw).number == number


@pytest.mark.asyncio
async def test_without_keys_no_authorization_verifies(tmp_path: Path, keys: Parties) -> None:
    register = Issuer(partner_id=ISSUER, key=keys.issuer[0],
                      database=str(tmp_path / "bare.sqlite3"), clock=FakeClock(NOW),
                      statements=keys.statements(), keys_for=None)
    await register.start()
    try:
        await issue(register)
        with pytest.raises(PermissionDenied) as denied:
            await register.fetch(lookup_fetch(keys))
        assert denied.value.field == "consumer_statement.authorization"
    finally:
        await register.close()


# -- the demo seeds ----------------------------------------------------------------------------

DEMO_PLATFORMS = [  # as partners.toml announces them
    ("320105", ["401"], ["320105"]),
    ("320000", ["111", "113", "201", "202", "301", "501", "601"], ["32"]),
    ("320681", ["401"], ["320681"]),
    ("310000", ["111", "113", "201", "202", "301", "401", "501", "601"], ["31"]),
]


def test_demo_holders_and_authorities_are_well_formed() -> None:
    for holder in DEMO_HOLDERS:
        if holder.id_type is HolderIdType.RESIDENT:
            assert check_resident_id(holder.number, field="x") == holder.number
        else:
            assert check_credit_code(holder.number, field="x") == holder.number
    assert ZHANG_SAN.number[:6] == "320105" and ZHANG_SAN.number[6:10] == "1988"
    assert (LI_SI.number[:6], WANG_WU.number[:6], COMPANY.number[2:8]) == \
        ("320681", "310115", "320105")
    for certificate in DEMO_CERTIFICATES:
        code = certificate.authority.code
        assert check_credit_code(code, field="x") == code
        assert parse(certificate.number).issuer_division == certificate.authority.division
    numbers = [c.number for c in DEMO_CERTIFICATES]
    assert len(set(numbers)) == len(numbers)
    # every demo certificate is held by exactly one demo platform
    held = [n for p in DEMO_PLATFORMS for n in demo_numbers(*p)]
    assert sorted(held) == sorted(numbers)


@pytest.mark.asyncio
@pytest.mark.parametrize(("partner_id", "issues", "prefixes"), DEMO_PLATFORMS)
async def test_seeds_are_deterministic_and_verify(tmp_path: Path, partner_id: str,
                                                  issues: list[str],
                                                  prefixes: list[str]) -> None:
    key, public = party(f"{partner_id}#k1")
    home, consumer = party(f"{HOME}#h"), party(f"{CONSUMER}#k1")
    keys_for = lookup(public, home[1], consumer[1])
    parties = Parties(issuer=(key, public), home=home, consumer=consumer,
                      stranger=consumer)
    runs = []
    for run in ("a", "b"):
        register = Issuer(partner_id=partner_id, key=key,
                          database=str(tmp_path / f"{run}.sqlite3"), clock=FakeClock(NOW),
                          statements=Statements({p.owner: (p,) for p in
                                                 (public, home[1], consumer[1])}, partner_id),
                          keys_for=keys_for)
        await register.start()
        try:
            runs.append(await seed(register, partner_id, issues, prefixes, NOW))
            assert await seed(register, partner_id, issues, prefixes, NOW + 5) == []
            for holder in DEMO_HOLDERS:
                for got in await fetched(register, list_fetch(parties, holder,
                                                              sorted(issues))):
                    meta = open_document(got.document, lookup(public), now=NOW,
                                         status=got.status_statement).metadata
                    assert meta.status is Status.VALID and meta.holder == holder.name
                    assert meta.number in runs[-1]
        finally:
            await register.close()
    assert runs[0] == runs[1] == demo_numbers(partner_id, issues, prefixes)
    assert runs[0]


def test_the_marriage_is_registered_outside_the_home_region() -> None:
    marriage = [c for c in DEMO_CERTIFICATES if c.type_code == "301"]
    assert [c.holder for c in marriage] == [ZHANG_SAN]
    assert marriage[0].number in demo_numbers(*DEMO_PLATFORMS[3])
    assert marriage[0].number not in demo_numbers(*DEMO_PLATFORMS[1])
    assert set(demo_numbers("x", [], ["32"])) == set()



@pytest.mark.asyncio
async def test_the_seeded_company_answers_its_registered_capital(tmp_path: Path,
                                                                 keys: Parties) -> None:
    register = Issuer(partner_id=ISSUER, key=keys.issuer[0],
                      database=str(tmp_path / "demo.sqlite3"), clock=FakeClock(NOW),
                      statements=keys.statements(), keys_for=keys.keys_for)
    await register.start()
    try:
        await seed(register, *DEMO_PLATFORMS[1], NOW)
        for cert_type in ("201", "202"):
            raw = await register.answer(claim_request(keys, cp.CertificateClaim(
                name="at_least", field="registered_capital", value=5_000_000), COMPANY,
                cert_type=cert_type))
            said = cl.verify_answer(cp.AnswerClaimResponse.FromString(raw).token,
                                    lookup(keys.issuer[1]), consumer=CONSUMER, now=NOW)
            assert said.answer is True
    finally:
        await register.close()


# -- the adapters: embedded and over gRPC ------------------------------------------------------

def demo_key(partner_id: str) -> SigningKey:
    return load_private_key((ROOT / "demo-keys" / f"{partner_id}.pem").read_bytes(),
                            kid=f"{partner_id}#k1")


def demo_fetch(config: Config, holder: DemoHolder, cert_type: str, *, now: float,
               certificate_id: str = "", consumer: str = HOME,
               authorized: DemoHolder | None = None) -> bytes:
    """建邺 (320105), where the holder authenticated, looks a certificate up for itself."""
    authz = authorize(demo_key(HOME), holder=(authorized or holder).holder, item=ITEM,
                      consumer=consumer, now=now)
    call = cp.LookupCertificateRequest(holder=holder.message(), cert_type=cert_type,
                                       purpose_item=ITEM, authorization=authz,
                                       certificate_id=certificate_id)
    body = call.SerializeToString()
    token, _ = sign(demo_key(consumer), iss=consumer,
                    aud=config.partners[consumer].gateway, method=LOOKUP, body=body, now=now)
    return cp.FetchCertificatesRequest(
        holder=holder.message(), cert_types=[cert_type], certificate_id=certificate_id,
        consumer=consumer, purpose_item=ITEM,
        consumer_statement=pb.Statement(request=body, token=token)).SerializeToString()


def config_keys(config: Config) -> KeyLookup:
    """Every party's keys (Config.party knows only this gateway's callers)."""
    parties = {**config.partners, **config.gateways}

    def keys_for(party_id: str) -> tuple[PublicKey, ...]:
        party = parties.get(party_id)
        return party.keys if party is not None else ()
    return keys_for


@pytest.mark.asyncio
async def test_embedded_platforms_seed_and_answer(tmp_path: Path) -> None:
    config = load_config(PARTNERS_TOML)
    clock = FakeClock(NOW)

    async def report(partner: str, statement: pb.Statement) -> None:
        raise AssertionError("no case here")

    ctx = AdapterContext(
        gateway_id="320000-gw", signing_key=config.signing_key,
        verifier=Verifier(audience="320000-gw", keys_for=config_keys(config)), clock=clock,
        data_dir=tmp_path, report=report, batch_signer=BatchSigner(config.signing_key, "x"),
        config_dir=PARTNERS_TOML.parent,
        statements=Statements({p.id: p.keys for p in config.partners.values()}, "320000-gw"),
        keys_for=config_keys(config))
    partner = config.partners["320000"]
    platform = EmbeddedAdapter(partner, ctx)
    bare = EmbeddedAdapter(config.partners["310115"], ctx)  # issues nothing
    none = EmbeddedAdapter(dataclasses.replace(
        partner, settings={**partner.settings, "certificates": "none"}), ctx)
    for adapter in (platform, bare, none):
        await adapter.start()
    try:
        assert platform.issuer is not None and bare.issuer is None
        for number in demo_numbers(partner.id, partner.issues, partner.prefixes):
            assert await platform.issuer.holds(number)
        raw = await platform.fetch_certificates(demo_fetch(config, LI_SI, "111", now=NOW))
        (got,) = cp.FetchCertificatesResponse.FromString(raw).certificates
        meta = open_document(got.document, config_keys(config), now=NOW,
                             status=got.status_statement).metadata
        assert (meta.holder, meta.type_code, meta.status) == ("李四", "111", Status.VALID)
        status = await platform.certificate_status(cp.CertificateStatusRequest(
            number=meta.number).SerializeToString())
        assert verify_status(cp.CertificateStatusResponse.FromString(status).status_statement,
                             config_keys(config), now=NOW).status is Status.VALID
        with pytest.raises(PermissionDenied):
            await platform.fetch_certificates(demo_fetch(config, LI_SI, "111", now=NOW,
                                                         authorized=ZHANG_SAN))
        for call in (bare.fetch_certificates, bare.certificate_status, bare.answer_claim):
            with pytest.raises(NotFound):
                await call(b"")
        assert none.issuer is not None
        assert cp.FetchCertificatesResponse.FromString(await none.fetch_certificates(
            demo_fetch(config, LI_SI, "111", now=NOW))).certificates == []
    finally:
        for adapter in (platform, bare, none):
            await adapter.close()
    with pytest.raises(ConfigError):
        EmbeddedAdapter(dataclasses.replace(partner, settings={"certificates": "all"}), ctx)


@pytest.mark.asyncio
async def test_certificate_calls_reach_a_grpc_platform(tmp_path: Path) -> None:
    port = free_port()
    async with federation(tmp_path, text=grpc_partner_text(port)) as fed:
        shanghai = fed.apps["310000-gw"]
        adapter = shanghai.adapters[PLATFORM_ID]
        assert isinstance(adapter, GrpcPartnerAdapter)
        config = shanghai.config
        platform = Platform(config.me.keys)
        platform.issuer = Issuer(partner_id=PLATFORM_ID, key=platform.key,
                                 database=str(tmp_path / "pudong.sqlite3"), clock=SystemClock(),
                                 statements=platform.statements, keys_for=config_keys(config))
        await platform.issuer.start()
        now = time.time()
        # 张三's 结婚证 was registered in 浦东 (and 王五's 居民身份证 issued there)
        (marriage, _) = await seed(platform.issuer, PLATFORM_ID, ["301", "111"], [PLATFORM_ID],
                                   now)
        try:
            async with serving(platform, port):
                raw = await adapter.fetch_certificates(demo_fetch(config, ZHANG_SAN, "301",
                                                                  now=now))
                (got,) = cp.FetchCertificatesResponse.FromString(raw).certificates
                meta = open_document(got.document, config_keys(config), now=now,
                                     status=got.status_statement).metadata
                assert (meta.number, meta.holder, meta.status) == \
                    (marriage, "张三", Status.VALID)
                await platform.issuer.revoke(marriage)
                raw = await adapter.certificate_status(cp.CertificateStatusRequest(
                    number=marriage, consumer=HOME).SerializeToString())
                assert verify_status(cp.CertificateStatusResponse.FromString(raw)
                                     .status_statement, config_keys(config), now=now
                                     ).status is Status.REVOKED
                # the platform's refusals keep their status over the wire
                with pytest.raises(NotFound):
                    await adapter.fetch_certificates(demo_fetch(
                        config, ZHANG_SAN, "301", now=now,
                        certificate_id=format_id("301", ISSUER_CODE, "NOPE")))
                with pytest.raises(PermissionDenied):
                    await adapter.fetch_certificates(demo_fetch(config, ZHANG_SAN, "301",
                                                                now=now, authorized=LI_SI))
                with pytest.raises(InvalidArgument):
                    await adapter.answer_claim(b"\xff")
                claim = cp.CertificateClaim(name="age_at_least", years=18, on="2026-01-01")
                call = cp.LookupCertificateRequest(
                    holder=WANG_WU.message(), cert_type="111", purpose_item=ITEM, claim=claim,
                    authorization=authorize(demo_key(HOME), holder=WANG_WU.holder, item=ITEM,
                                            consumer=HOME, now=now))
                body = call.SerializeToString()
                token, _ = sign(demo_key(HOME), iss=HOME, aud="320100-gw", method=LOOKUP,
                                body=body, now=now)
                raw = await adapter.answer_claim(cp.AnswerClaimRequest(
                    holder=WANG_WU.message(), cert_type="111", claim=claim, consumer=HOME,
                    consumer_statement=pb.Statement(request=body, token=token)
                ).SerializeToString())
                said = cl.verify_answer(cp.AnswerClaimResponse.FromString(raw).token,
                                        config_keys(config), consumer=HOME, now=now)
                assert (said.iss, said.answer) == (PLATFORM_ID, True)
            with pytest.raises(Unavailable):  # the platform is gone: UNAVAILABLE, not INTERNAL
                await adapter.certificate_status(cp.CertificateStatusRequest(
                    number=marriage).SerializeToString())
        finally:
            await platform.issuer.close()
        # a peer gateway that does not relay certificate calls (yet) is UNAVAILABLE too
        peer = fed.apps["320100-gw"].adapters["320000-gw"]
        assert isinstance(peer, PeerAdapter)
        with pytest.raises(GatewayError) as failed:
            await peer.forward_certificate_call(
                cp.ForwardCertificateCallRequest(partner="320000").SerializeToString())
        assert failed.value.code is not grpc.StatusCode.INTERNAL
