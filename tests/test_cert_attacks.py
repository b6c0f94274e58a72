"""Attacks on certificate reuse (issue #13, docs/certificates.md "The calls"), each over
real sockets: a hostile peer gateway that forwards what it should not and answers what
the issuer never said, a hostile consumer platform sending garbage or calling a gateway
that is not its own, and a careless operator reading logs, the audit chain and /metrics.

Every attack asserts the precise refusal (status, field) and that nothing leaked: no
document and no holder id in the answer or the error text, the uses and the audit log
saying what happened. An attack that succeeds is kept, marked ``xfail(strict=True)`` with
the bug it shows, so the suite stays green until the fix lands and then says so.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
import pytest_asyncio
from google.protobuf.message import Message

from adapters.issuer_seed import (
    DEMO_CERTIFICATES,
    JIANYE_REALTY,
    LI_SI,
    ZHANG_SAN,
    DemoCertificate,
    DemoHolder,
)
from gateway.certificate_ids import format_id
from gateway.certificates import claims as claim_rules
from gateway.certificates.authorization import authorize
from gateway.certificates.documents import (
    HolderIdType,
    Metadata,
    RenderedFile,
    Status,
    attest_status,
    issue,
    read_document,
    report,
)
from gateway.certificates.wire import metadata_message
from gateway.client import CallError
from gateway.config import Config
from gateway.demo import client_for
from gateway.errors import GatewayError
from gateway.identifiers import mask_text
from gateway.logs import JsonFormatter
from gateway.partner_client import PartnerClient
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import certificate_pb2 as cpb
from gateway.pb.tongban.v1 import gateway_pb2 as gw
from gateway.signing import HEADER, PublicKey, sign
from gateway.store.offline import read_audit
from gateway.verifier import Verifier
from tests.federation import FakeClock, Federation, federation
from tests.test_certificates import key_of

pytestmark = pytest.mark.asyncio

CONSUMER = "310115"  # 浦东, a platform of 310000-gw
SERVICE = "/tongban.v1.Gateway/"
FORWARD = SERVICE + "ForwardCertificateCall"
LOOKUP = SERVICE + "LookupCertificate"
LIST = SERVICE + "ListCertificates"
VERIFY = SERVICE + "VerifyCertificate"
ROGUE = "320000-gw"  # linked to 320100-gw and 310000-gw; its demo key is public
# the shortest path of a call from 浦东 to 建邺 (320105, at 320100-gw), as 320100-gw sees it
PATH = ["310000-gw", ROGUE]
PD = grpc.StatusCode.PERMISSION_DENIED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
HOLDER_IDS = (ZHANG_SAN.number, LI_SI.number)
M = TypeVar("M")


def demo(holder: DemoHolder, type_code: str) -> DemoCertificate:
    return next(c for c in DEMO_CERTIFICATES if c.holder == holder and c.type_code == type_code)


HOUSE = demo(ZHANG_SAN, "401")  # 张三's 不动产权证书, issued by 320105 (建邺) at 320100-gw
PASSPORT = DemoHolder("John Doe", HolderIdType.PASSPORT, "E12345678")  # names no division


# -- signing what a consumer, a rogue gateway or an issuer would sign ----------------------
def authz(holder: DemoHolder, item: str, *, now: float, consumer: str = CONSUMER,
          by: str = CONSUMER, ttl: int = 600) -> str:
    """The holder's say, signed where they authenticated (here the consumer itself)."""
    return authorize(key_of(by), holder=holder.holder, item=item, consumer=consumer, now=now,
                     ttl=ttl)


def lookup(now: float, holder: DemoHolder = ZHANG_SAN, *, item: str = "bdc-dy",
           cert_type: str = "401", **fields: object) -> cpb.LookupCertificateRequest:
    return cpb.LookupCertificateRequest(
        holder=holder.message(), cert_type=cert_type, purpose_item=item,
        authorization=authz(holder, item, now=now), **fields)  # type: ignore[arg-type]


def statement(request: Message, *, now: float, method: str = LOOKUP, by: str = CONSUMER,
              aud: str = "310000-gw", ttl: int = 120) -> pb.Statement:
    """A consumer's own signed call, as its gateway passes it on."""
    body = request.SerializeToString()
    token, _ = sign(key_of(by), iss=by, aud=aud, method=method, body=body, now=now, ttl=ttl)
    return pb.Statement(request=body, token=token)


def forward(stated: pb.Statement, *, path: Sequence[str] = PATH,
            partner: str = "320105") -> bytes:
    return cpb.ForwardCertificateCallRequest(statement=stated, path=list(path),
                                             partner=partner).SerializeToString()


@dataclass
class Answer:
    """What a raw call got back: the status, its text and the answer's bytes."""

    code: grpc.StatusCode
    details: str = ""
    body: bytes = b""


async def call_as(config: Config, party: str, gateway: str, body: bytes, *,
                  method: str = FORWARD, now: float | None = None) -> Answer:
    """One call signed by `party` (its demo key) to `gateway`, over a real socket."""
    at = time.time() if now is None else now
    token, _ = sign(key_of(party), iss=party, aud=gateway, method=method, body=body, now=at)
    async with grpc.aio.insecure_channel(config.gateways[gateway].grpc) as channel:
        try:
            out = await channel.unary_unary(method)(body, metadata=((HEADER, token),),
                                                    timeout=10)
        except grpc.aio.AioRpcError as err:
            return Answer(err.code(), err.details() or "")
    return Answer(grpc.StatusCode.OK, "", out)


def leaks(text: str | bytes, *documents: str) -> list[str]:
    """The holder ids and documents that appear in `text`."""
    shown = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return [s for s in (*HOLDER_IDS, *documents) if s and s in shown]


async def uses_at(fed: Federation, gateway: str) -> list[tuple[str, str, str, str, str, int]]:
    return sorted((c.cert_type, c.item, c.consumer, c.issuer, c.outcome, c.count)
                  for c in await fed.apps[gateway].store.use_counts())


def audit_of(fed: Federation, gateway: str) -> list[tuple[str, str, str, str]]:
    """(caller, method, outcome, detail) of every audit row, oldest first."""
    path = fed.apps[gateway].config.data_dir / "gateway.sqlite3"
    return [(e.caller, e.method, e.outcome, e.detail) for _, e, _, _ in read_audit(path)]


async def refused_forward(fed: Federation, body: bytes, *, gateway: str = "320100-gw",
                          caller: str = ROGUE, code: grpc.StatusCode = PD,
                          field_path: str = "", now: float | None = None) -> str:
    """A ForwardCertificateCall refused as said, with nothing looked up at `gateway`,
    nothing of the holder in the text, and the refusal in the audit chain."""
    before = await uses_at(fed, gateway)
    got = await call_as(fed.apps[gateway].config, caller, gateway, body, now=now)
    assert got.code is code, got
    assert got.details.startswith(f"{field_path}: ") if field_path else True, got.details
    assert not leaks(got.details), got.details
    # the issuer was not asked: no use but the refusal itself is kept
    after = await uses_at(fed, gateway)
    added = [row for row in after if row not in before]
    assert all(row[4] == code.name for row in added), added
    assert [r for r in before if r[4] == "OK"] == [r for r in after if r[4] == "OK"]
    caller_, method, outcome, detail = audit_of(fed, gateway)[-1]
    assert (caller_, method, outcome) == (caller, FORWARD, code.name), audit_of(fed, gateway)[-1]
    assert not leaks(detail), detail
    return got.details


# -- 1. a peer gateway forwarding what it should not ----------------------------------------
@pytest_asyncio.fixture
async def nanjing(tmp_path: Path) -> AsyncIterator[Federation]:
    """320100-gw alone (建邺 320105 issues type 401 there); the rogue calls it directly."""
    async with federation(tmp_path, gateways=("320100-gw",)) as fed:
        yield fed


async def test_a_forwarded_statement_must_be_a_certificate_call(nanjing: Federation) -> None:
    now = time.time()
    submit = gw.SubmitCaseRequest(case_number="X-1", target_division="320105",
                                  item_code="gjj-tq", applicant=pb.Applicant(
                                      id_type=pb.ID_TYPE_RESIDENT, id_number=ZHANG_SAN.number,
                                      name="张三"))
    message = await refused_forward(nanjing, forward(statement(
        submit, now=now, method=SERVICE + "SubmitCase")), field_path="statement")
    assert "no certificate call" in message
    # nor a lookup the rogue signed itself: only a platform's call is a consumer's statement
    message = await refused_forward(nanjing, forward(statement(
        lookup(now), now=now, by=ROGUE)), field_path="statement")
    assert "does not verify" in message  # a gateway's key signs no consumer's statement


async def test_a_tampered_statement_is_refused(nanjing: Federation) -> None:
    now = time.time()
    real = statement(lookup(now), now=now)
    other = lookup(now, LI_SI).SerializeToString()  # 李四 instead, under 张三's signature
    await refused_forward(nanjing, forward(pb.Statement(request=other, token=real.token)),
                          field_path="statement")
    head, body, sig = real.token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["exp"] += 3600  # a longer life the consumer never signed
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    await refused_forward(nanjing, forward(pb.Statement(request=real.request,
                                                        token=f"{head}.{forged}.{sig}")),
                          field_path="statement")
    await refused_forward(nanjing, forward(pb.Statement(request=real.request, token="")),
                          field_path="statement")
    # a statement addressed to another gateway than the consumer's own
    await refused_forward(nanjing, forward(statement(lookup(now), now=now, aud="320100-gw")),
                          field_path="statement")


async def test_a_stale_statement_is_refused(tmp_path: Path) -> None:
    clock = FakeClock(time.time())
    async with federation(tmp_path, clock=clock, gateways=("320100-gw",)) as fed:
        request = lookup(clock.now())
        stale = statement(request, now=clock.now(), ttl=120)
        clock.advance(120 + 60 + 1)  # its exp + the 60 s skew have passed
        message = await refused_forward(fed, forward(stale), field_path="statement",
                                        now=clock.now())
        assert "not current" in message
        # nor one signed for the future (iat beyond now + skew)
        ahead = statement(lookup(clock.now()), now=clock.now() + 120, ttl=60)
        await refused_forward(fed, forward(ahead), field_path="statement", now=clock.now())
        # a fresh one at the same moment goes through: the clock is what refused
        fresh = await call_as(fed.config, ROGUE, "320100-gw",
                              forward(statement(lookup(clock.now()), now=clock.now())),
                              now=clock.now())
        assert fresh.code is grpc.StatusCode.OK, fresh


async def test_a_statement_is_forwarded_once_per_issuer(nanjing: Federation) -> None:
    now = time.time()
    once = forward(statement(lookup(now), now=now))
    first = await call_as(nanjing.config, ROGUE, "320100-gw", once)
    assert first.code is grpc.StatusCode.OK, first
    got = cpb.LookupCertificateResponse.FromString(
        cpb.ForwardCertificateCallResponse.FromString(first.body).response)
    assert got.certificate.metadata.number == HOUSE.number
    message = await refused_forward(nanjing, once, field_path="statement")
    assert "replay" in message


async def test_a_statement_is_forwarded_once_across_a_restart(tmp_path: Path) -> None:
    now = time.time()
    once = forward(statement(lookup(now), now=now, ttl=300))
    async with federation(tmp_path, gateways=("320100-gw",)) as fed:
        first = await call_as(fed.config, ROGUE, "320100-gw", once)
        assert first.code is grpc.StatusCode.OK, first
        await refused_forward(fed, once, field_path="statement")
    async with federation(tmp_path, gateways=("320100-gw",)) as again:  # same data_dir
        await refused_forward(again, once, field_path="statement")


async def test_a_forward_from_off_the_path_is_refused(nanjing: Federation) -> None:
    now = time.time()

    def fresh(path: Sequence[str]) -> bytes:
        return forward(statement(lookup(now), now=now), path=path)

    for path in ([], ["310000-gw"],  # it does not name the caller
                 [ROGUE],  # it does not start at the consumer's gateway
                 ["320100-gw", ROGUE],  # not the consumer's gateway first
                 ["310000-gw", "320100-gw", ROGUE],  # the receiver itself: a loop
                 ["310000-gw", ROGUE, "310000-gw", ROGUE],  # a loop
                 ["310000-gw", "a", "b", "c", ROGUE]):  # longer than max_hops (4)
        await refused_forward(nanjing, fresh(path), field_path="path")
    # an unlinked gateway (310000-gw is no neighbour of 320100-gw): its key is not even
    # known here, so it is refused before the caller is known, and nothing is looked up
    before = await uses_at(nanjing, "320100-gw")
    got = await call_as(nanjing.config, "310000-gw", "320100-gw", fresh(["310000-gw"]))
    assert got.code is grpc.StatusCode.UNAUTHENTICATED, got
    assert "unknown key 310000-gw#k1" in got.details
    assert await uses_at(nanjing, "320100-gw") == before


async def test_a_path_through_gateways_off_the_shortest_path_is_refused(
        nanjing: Federation) -> None:
    now = time.time()
    for path in (["310000-gw", "ghost-gw", ROGUE],  # a gateway nobody lists
                 ["310000-gw", "320100-gw-x", ROGUE]):
        await refused_forward(nanjing, forward(statement(lookup(now), now=now), path=path),
                              field_path="path")


async def test_the_partner_must_be_the_one_the_directory_names(tmp_path: Path) -> None:
    """A rogue 310000-gw forwards 浦东's lookup of 张三's 401 (issued by 320105) to
    320000-gw, asking 启东 (320681, which issues 401 for 320681 only) instead."""
    async with federation(tmp_path, gateways=("320000-gw",)) as fed:
        now = time.time()

        def fresh(partner: str) -> bytes:
            return forward(statement(lookup(now), now=now), path=["310000-gw"],
                           partner=partner)

        message = await refused_forward(fed, fresh("320681"), gateway="320000-gw",
                                        caller="310000-gw", field_path="partner")
        assert "320105" in message
        for partner in ("320000", "320100", "nobody", ""):  # another type's, none, unknown
            await refused_forward(fed, fresh(partner), gateway="320000-gw",
                                  caller="310000-gw", field_path="partner")


async def test_only_a_gateway_forwards(nanjing: Federation) -> None:
    now = time.time()
    body = forward(statement(lookup(now), now=now))
    for party in ("320105", "320100", "320100-jc"):  # its own platforms, its supervisor
        message = await refused_forward(nanjing, body, caller=party)
        assert "gateway" in message
    # another gateway's platform (浦东, the consumer itself) is not even known here
    got = await call_as(nanjing.config, CONSUMER, "320100-gw", body)
    assert got.code is grpc.StatusCode.UNAUTHENTICATED, got


# -- 2. a peer gateway answering what the issuer never said ---------------------------------
Respond = Callable[[str, Message], bytes]


@dataclass
class Hostile:
    """A fake 320000-gw: a real gRPC server that signs its answers with 320000-gw's demo
    key and answers each forwarded certificate call with what `respond` makes."""

    respond: Respond
    calls: list[str] = field(default_factory=list)
    refuse: tuple[grpc.StatusCode, str] | None = None  # abort with this instead
    delay: float = 0.0  # wait this long before answering


REQUESTS: dict[str, type[Message]] = {
    LOOKUP: cpb.LookupCertificateRequest, LIST: cpb.ListCertificatesRequest,
    VERIFY: cpb.VerifyCertificateRequest}


@asynccontextmanager
async def hostile_peer(config: Config, respond: Respond) -> AsyncIterator[Hostile]:
    """320000-gw's address, served by a hostile gateway holding 320000-gw's key."""
    keys = {party.id: party.keys for party in (*config.partners.values(),
                                               *config.gateways.values())}

    def keys_for(owner: str) -> Sequence[PublicKey]:
        return keys.get(owner, ())

    verifier = Verifier(audience=ROGUE, keys_for=keys_for)
    hostile = Hostile(respond)

    async def serve(body: bytes, context: grpc.aio.ServicerContext) -> bytes:  # type: ignore[type-arg]
        token = next(str(v) for k, v in context.invocation_metadata() if k == HEADER)
        claims = verifier.verify_request(token, method=FORWARD, body=body, now=time.time())
        forwarded = cpb.ForwardCertificateCallRequest.FromString(body)
        method = verify_statement_method(forwarded.statement)
        hostile.calls.append(method)
        asked = REQUESTS[method].FromString(forwarded.statement.request)
        if hostile.delay:
            await asyncio.sleep(hostile.delay)
        if hostile.refuse is not None:
            await context.abort(*hostile.refuse)
        out = cpb.ForwardCertificateCallResponse(
            response=hostile.respond(method, asked)).SerializeToString()
        signed, _ = sign(key_of(ROGUE), iss=ROGUE, aud=claims.iss, method=FORWARD, body=out,
                         now=time.time(), request=claims)
        context.set_trailing_metadata(((HEADER, signed),))
        return out

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "tongban.v1.Gateway", {"ForwardCertificateCall":
                               grpc.unary_unary_rpc_method_handler(serve)}),))
    server.add_insecure_port(config.gateways[ROGUE].grpc)
    await server.start()
    try:
        yield hostile
    finally:
        await server.stop(0)


def verify_statement_method(stated: pb.Statement) -> str:
    """The method a consumer's statement was signed for (read, not checked: the fake
    gateway does not care)."""
    body = stated.token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return str(claims["mth"])


def platform_keys(config: Config) -> Callable[[str], Sequence[PublicKey]]:
    def keys_for(owner: str) -> Sequence[PublicKey]:
        partner = config.partners.get(owner)
        return partner.keys if partner is not None else ()
    return keys_for


def document(certificate: DemoCertificate, *, now: float, by: str = "320105",
             holder: DemoHolder | None = None, status: Status = Status.VALID,
             type_code: str | None = None, issuer_code: str | None = None,
             serial: str | None = None) -> str:
    """A document signed with `by`'s real key: the issuer's own, or another platform's."""
    who = holder or certificate.holder
    rendered = certificate.file()
    kind = type_code or certificate.type_code
    code = issuer_code or certificate.authority.code
    metadata = Metadata(
        type_code=kind, number=format_id(kind, code, serial or certificate.serial),
        name=certificate.name, issuer=certificate.authority.name, issuer_code=code,
        holder=who.name, holder_id_type=who.id_type, holder_id=who.number,
        issued_on=certificate.issued_on, valid_from=certificate.issued_on,
        valid_to=certificate.valid_to, status=status,
        file=RenderedFile(hashlib.sha256(rendered).hexdigest(), "application/pdf",
                          len(rendered)))
    return issue(metadata, key_of(by), now=now)


def genuine(config: Config, token: str, *, now: float, status: Status = Status.VALID,
            statement_by: str = "320105", statement_at: float | None = None,
            about: str | None = None, file: bytes = b"") -> cpb.Certificate:
    """A certificate answer as an honest chain would bring it: the document, a status
    statement, the metadata the consumer's gateway would read, and where it was found."""
    keys = platform_keys(config)
    number = read_document(token, keys, now=now).metadata.number
    said = attest_status(about or number, status, key_of(statement_by),
                         now=now if statement_at is None else statement_at)
    try:
        metadata = metadata_message(report(read_document(token, keys, now=now), keys,
                                           now=now, status=said).metadata)
    except GatewayError:  # a statement the honest reading refuses: as the document says
        metadata = metadata_message(read_document(token, keys, now=now).metadata)
    return cpb.Certificate(
        metadata=metadata, document=token, status_statement=said, file=file,
        found_at=cpb.FoundAt(partner="320105", gateway="320100-gw", division_asked="320105",
                             division_used="320105", prefix="320105", home=True))


@pytest_asyncio.fixture
async def shanghai(tmp_path: Path) -> AsyncIterator[tuple[Federation, PartnerClient]]:
    """310000-gw alone with its consumer 浦东; its peer 320000-gw is whatever listens on
    320000-gw's address (the hostile fake of each test)."""
    async with federation(tmp_path, gateways=("310000-gw",)) as fed:
        client = client_for(fed.apps["310000-gw"].config, CONSUMER)
        try:
            yield fed, client
        finally:
            await client.close()


async def hostile_lookups(shanghai: tuple[Federation, PartnerClient],
                          *makes: Callable[[float], cpb.Certificate],
                          with_file: bool = False) -> list[str]:
    """浦东 looks 张三's 401 up through a hostile 320000-gw answering `make(now)`, once per
    make: each time the consumer's gateway answers UNAVAILABLE, passes none of it on,
    and counts the use so. One fake server for all (a restarted one would be refused by
    the channel's reconnect backoff, not by the gateway's checks)."""
    fed, client = shanghai
    config = fed.apps["310000-gw"].config
    messages = []
    async with hostile_peer(config, lambda method, asked: b"") as hostile:
        for n, make in enumerate(makes):
            now = time.time()
            answer = make(now)
            hostile.respond = lambda method, asked, answer=answer: (  # type: ignore[misc]
                cpb.LookupCertificateResponse(certificate=answer).SerializeToString())
            with pytest.raises(CallError) as err:
                await client.lookup_certificate(
                    holder=ZHANG_SAN.message(), cert_type="401", purpose_item="bdc-dy",
                    authorization=authz(ZHANG_SAN, "bdc-dy", now=now), with_file=with_file)
            assert hostile.calls == [LOOKUP] * (n + 1)  # the fake answered, the gateway refused
            assert err.value.status is UNAVAILABLE, err.value.message
            assert not leaks(err.value.message, answer.document), err.value.message
            messages.append(err.value.message)
    uses = await uses_at(fed, "310000-gw")
    assert [u for u in uses if u[4] != "UNAVAILABLE"] == [], uses
    assert sum(u[5] for u in uses if u[:3] == ("401", "bdc-dy", CONSUMER)) == len(makes), uses
    return messages


async def test_an_honest_answer_through_the_fake_peer_passes(
        shanghai: tuple[Federation, PartnerClient]) -> None:
    """The control: the fake peer works, so each refusal below is the gateway's check."""
    fed, client = shanghai
    config = fed.apps["310000-gw"].config
    now = time.time()
    honest = genuine(config, document(HOUSE, now=now - 3600), now=now, file=HOUSE.file())

    def respond(method: str, asked: Message) -> bytes:
        return cpb.LookupCertificateResponse(certificate=honest).SerializeToString()

    async with hostile_peer(config, respond):
        got = await client.lookup_certificate(
            holder=ZHANG_SAN.message(), cert_type="401", purpose_item="bdc-dy",
            authorization=authz(ZHANG_SAN, "bdc-dy", now=now), with_file=True)
    assert got.certificate.document == honest.document


def _other_holder(config: Config, now: float) -> cpb.Certificate:
    return genuine(config, document(HOUSE, now=now - 3600, holder=LI_SI), now=now)


def _not_the_issuer(config: Config, now: float) -> cpb.Certificate:
    # 启东 (320681) issues 401 too, but not for an authority registered in 320105
    return genuine(config, document(HOUSE, now=now - 3600, by="320681"), now=now,
                   statement_by="320681")


def _metadata_lies(config: Config, now: float) -> cpb.Certificate:
    got = genuine(config, document(HOUSE, now=now - 3600), now=now)
    got.metadata.holder = "李四"
    return got


def _status_in_metadata_lies(config: Config, now: float) -> cpb.Certificate:
    got = genuine(config, document(HOUSE, now=now - 3600), now=now, status=Status.REVOKED)
    got.metadata.status = cpb.CERTIFICATE_STATUS_VALID
    return got


def _stale_status(config: Config, now: float) -> cpb.Certificate:
    return genuine(config, document(HOUSE, now=now - 3600), now=now,
                   statement_at=now - 3600)


def _status_about_another(config: Config, now: float) -> cpb.Certificate:
    other = demo(LI_SI, "401").number
    return genuine(config, document(HOUSE, now=now - 3600), now=now, about=other)


def _status_by_another(config: Config, now: float) -> cpb.Certificate:
    return genuine(config, document(HOUSE, now=now - 3600), now=now, statement_by="320681")


def _another_type(config: Config, now: float) -> cpb.Certificate:
    # a document 320105 signed for a type it does not issue (居民身份证, 111)
    return genuine(config, document(demo(ZHANG_SAN, "111"), now=now - 3600), now=now)


def _found_elsewhere(config: Config, now: float) -> cpb.Certificate:
    got = genuine(config, document(HOUSE, now=now - 3600), now=now)
    got.found_at.partner = "320681"
    return got


def _tampered(config: Config, now: float) -> cpb.Certificate:
    got = genuine(config, document(HOUSE, now=now - 3600), now=now)
    head, _, sig = got.document.split(".")
    body = base64.urlsafe_b64encode(json.dumps({"holder": "李四"}).encode()).rstrip(b"=")
    got.document = f"{head}.{body.decode()}.{sig}"
    return got


@pytest.mark.parametrize("make", [
    _other_holder, _not_the_issuer, _metadata_lies, _status_in_metadata_lies, _stale_status,
    _status_about_another, _status_by_another, _another_type, _found_elsewhere, _tampered,
], ids=lambda f: f.__name__.strip("_"))
async def test_a_peer_cannot_pass_off_what_the_issuer_did_not_sign(
        shanghai: tuple[Federation, PartnerClient],
        make: Callable[[Config, float], cpb.Certificate]) -> None:
    config = shanghai[0].apps["310000-gw"].config
    await hostile_lookups(shanghai, lambda now: make(config, now))


async def test_a_file_that_is_not_the_documents_is_refused(
        shanghai: tuple[Federation, PartnerClient]) -> None:
    config = shanghai[0].apps["310000-gw"].config

    def swapped(now: float) -> cpb.Certificate:
        return genuine(config, document(HOUSE, now=now - 3600), now=now,
                       file=HOUSE.file() + b"% a page more\n")

    def missing(now: float) -> cpb.Certificate:  # asked with_file, none came
        return genuine(config, document(HOUSE, now=now - 3600), now=now)

    messages = await hostile_lookups(shanghai, swapped, missing, with_file=True)
    assert all("file" in m for m in messages), messages


async def test_a_peer_cannot_drop_the_status_statement(
        shanghai: tuple[Federation, PartnerClient]) -> None:
    config = shanghai[0].apps["310000-gw"].config

    def stripped(now: float) -> cpb.Certificate:
        got = genuine(config, document(HOUSE, now=now - 3600), now=now)
        got.ClearField("status_statement")  # the issuer said "revoked" here
        return got

    await hostile_lookups(shanghai, stripped)


async def test_a_failed_lookup_is_counted_against_the_issuer_asked(
        shanghai: tuple[Federation, PartnerClient]) -> None:
    config = shanghai[0].apps["310000-gw"].config
    await hostile_lookups(shanghai, lambda now: _other_holder(config, now))
    assert ("401", "bdc-dy", CONSUMER, "320105", "UNAVAILABLE", 1) in await uses_at(
        shanghai[0], "310000-gw")


async def refusals_through(shanghai: tuple[Federation, PartnerClient],
                           text: str) -> list[CallError]:
    """浦東's lookup refused by the hostile peer with NOT_FOUND, INTERNAL and UNKNOWN and
    `text`: what the consumer got each time."""
    fed, client = shanghai
    now = time.time()
    got = []
    async with hostile_peer(fed.apps["310000-gw"].config, lambda m, a: b"") as hostile:
        for code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INTERNAL,
                     grpc.StatusCode.UNKNOWN):
            hostile.refuse = (code, text)
            with pytest.raises(CallError) as err:
                await client.lookup_certificate(
                    holder=ZHANG_SAN.message(), cert_type="401", purpose_item="bdc-dy",
                    authorization=authz(ZHANG_SAN, "bdc-dy", now=now))
            got.append(err.value)
        assert len(hostile.calls) == 3
    return got


async def test_a_peers_refusal_keeps_its_status_only_when_it_is_the_issuers_kind(
        shanghai: tuple[Federation, PartnerClient]) -> None:
    got = await refusals_through(shanghai, "no such certificate\n{\"level\":\"CRITICAL\"}")
    assert [e.status for e in got] == [grpc.StatusCode.NOT_FOUND, UNAVAILABLE, UNAVAILABLE]
    assert all("\n" not in e.message for e in got), [e.message for e in got]
    assert not [row for row in audit_of(shanghai[0], "310000-gw") if "\n" in row[3]]


async def test_a_peers_refusal_text_is_masked_before_it_is_passed_on(
        shanghai: tuple[Federation, PartnerClient]) -> None:
    got = await refusals_through(shanghai, f"holder {LI_SI.number} is someone else's; "
                                           "ask about 110105 19491231 002X instead")
    assert not [e.message for e in got if leaks(e.message) or "19491231" in e.message]
    assert not [row for row in audit_of(shanghai[0], "310000-gw") if leaks(row[3])]


async def test_a_silent_peer_is_unavailable_after_the_call_timeout(
        shanghai: tuple[Federation, PartnerClient]) -> None:
    fed, client = shanghai
    config = fed.apps["310000-gw"].config
    now = time.time()
    honest = genuine(config, document(HOUSE, now=now - 3600), now=now)
    async with hostile_peer(config, lambda m, a: cpb.LookupCertificateResponse(
            certificate=honest).SerializeToString()) as hostile:
        hostile.delay = 60.0
        began = time.monotonic()
        with pytest.raises(CallError) as err:
            await client.lookup_certificate(
                holder=ZHANG_SAN.message(), cert_type="401", purpose_item="bdc-dy",
                authorization=authz(ZHANG_SAN, "bdc-dy", now=now))
        took = time.monotonic() - began
    assert err.value.status is UNAVAILABLE, err.value.message
    assert "within" in err.value.message
    assert took < config.certificates.call_timeout_s + 3, took


async def test_a_peer_answering_garbage_is_unavailable(
        shanghai: tuple[Federation, PartnerClient]) -> None:
    fed, client = shanghai
    now = time.time()
    async with hostile_peer(fed.apps["310000-gw"].config, lambda m, a: b"") as hostile:
        for junk in (b"\xff" * 64, b"\x0a\xff\xff\xff\xff\x0f", b"\x0a\x02" + b"\x0a" * 2):
            hostile.respond = lambda m, a, junk=junk: junk  # type: ignore[misc]
            with pytest.raises(CallError) as err:
                await client.lookup_certificate(
                    holder=ZHANG_SAN.message(), cert_type="401", purpose_item="bdc-dy",
                    authorization=authz(ZHANG_SAN, "bdc-dy", now=now))
            assert err.value.status is UNAVAILABLE, (junk, err.value.message)


async def test_a_peer_cannot_add_a_claim_answer_to_a_document(
        shanghai: tuple[Federation, PartnerClient]) -> None:
    """A yes nobody signed, beside a genuine certificate: refused, not passed on."""
    fed, client = shanghai
    config = fed.apps["310000-gw"].config
    now = time.time()
    honest = genuine(config, document(HOUSE, now=now - 3600), now=now)
    smuggled = cpb.LookupCertificateResponse(
        certificate=honest, claim_answer=cpb.ClaimAnswer(answer=True, token="unchecked"))
    async with hostile_peer(config, lambda m, a: smuggled.SerializeToString()):
        with pytest.raises(CallError) as err:
            await client.lookup_certificate(
                holder=ZHANG_SAN.message(), cert_type="401", purpose_item="bdc-dy",
                authorization=authz(ZHANG_SAN, "bdc-dy", now=now))
    assert err.value.status is UNAVAILABLE, err.value.message


async def test_a_peer_cannot_smuggle_anything_beside_a_genuine_answer(
        shanghai: tuple[Federation, PartnerClient]) -> None:
    fed, client = shanghai
    config = fed.apps["310000-gw"].config
    now = time.time()
    honest = genuine(config, document(HOUSE, now=now - 3600), now=now)
    honest.found_at.gateway = "ghost-gw"  # the issuer's gateway is 320100-gw
    honest.found_at.home = False
    # an unknown field 99 (length-delimited) holding another holder's id
    extra = LI_SI.number.encode()
    raw = cpb.LookupCertificateResponse(certificate=honest).SerializeToString()
    raw += b"\x9a\x06" + bytes([len(extra)]) + extra
    async with hostile_peer(config, lambda m, a: raw):
        got = await outcome(client.lookup_certificate(
            holder=ZHANG_SAN.message(), cert_type="401", purpose_item="bdc-dy",
            authorization=authz(ZHANG_SAN, "bdc-dy", now=now)))
    if isinstance(got, CallError):
        assert got.status is UNAVAILABLE, got.message
        return
    assert got.certificate.document == honest.document
    assert extra not in got.SerializeToString()
    assert (got.certificate.found_at.gateway, got.certificate.found_at.home) == (
        "320100-gw", True), got.certificate.found_at


async def test_a_listing_keeps_nothing_a_peer_made_up(
        shanghai: tuple[Federation, PartnerClient]) -> None:
    """张三's listing asks 320105 and 320000 through the hostile peer and 310000 (local):
    what the peer sent for them is dropped and they are named unavailable."""
    fed, client = shanghai
    config = fed.apps["310000-gw"].config
    now = time.time()
    forged = _other_holder(config, now)

    def respond(method: str, asked: Message) -> bytes:
        return cpb.ListCertificatesResponse(certificates=[forged]).SerializeToString()

    async with hostile_peer(config, respond) as hostile:
        listing = await client.list_certificates(
            holder=ZHANG_SAN.message(), purpose_item="bdc-dy",
            authorization=authz(ZHANG_SAN, "bdc-dy", now=now))
    # 320105 (401) and 320000 (111, 301) at home, 320681 (401) elsewhere: all behind the peer
    assert hostile.calls == [LIST] * 3
    assert sorted(u.split(":")[0] for u in listing.unavailable) == ["320000", "320105",
                                                                   "320681"]
    assert [c.found_at.partner for c in listing.certificates] == ["310000"]  # 结婚证
    shown = listing.SerializeToString()
    assert forged.document.encode() not in shown and LI_SI.number.encode() not in shown


async def outcome(call: Awaitable[M]) -> M | CallError:
    """The answer, or the refusal, of a call."""
    try:
        return await call
    except CallError as err:
        return err


async def test_a_peer_cannot_flip_the_status_of_a_verification(
        shanghai: tuple[Federation, PartnerClient]) -> None:
    fed, client = shanghai
    now = time.time()
    revoked = attest_status(HOUSE.number, Status.REVOKED, key_of("320105"), now=now)

    def respond(method: str, asked: Message) -> bytes:
        return cpb.VerifyCertificateResponse(
            number=HOUSE.number, status=cpb.CERTIFICATE_STATUS_VALID,
            status_statement=revoked).SerializeToString()

    async with hostile_peer(fed.apps["310000-gw"].config, respond):
        got = await outcome(client.verify_certificate(certificate_id=HOUSE.number))
    # refused, or told as the issuer said it: never VALID
    assert (got.status is UNAVAILABLE if isinstance(got, CallError)
            else got.status == cpb.CERTIFICATE_STATUS_REVOKED), got


async def test_a_peer_cannot_rewrite_the_metadata_of_a_verified_document(
        shanghai: tuple[Federation, PartnerClient]) -> None:
    fed, client = shanghai
    config = fed.apps["310000-gw"].config
    now = time.time()
    token = document(HOUSE, now=now - 3600)
    honest = genuine(config, token, now=now)
    lying = cpb.CertificateMetadata()
    lying.CopyFrom(honest.metadata)
    lying.holder = "李四"

    def respond(method: str, asked: Message) -> bytes:
        return cpb.VerifyCertificateResponse(
            number=HOUSE.number, status=cpb.CERTIFICATE_STATUS_VALID,
            status_statement=honest.status_statement, metadata=lying).SerializeToString()

    async with hostile_peer(config, respond):
        got = await outcome(client.verify_certificate(document=token))
    assert (got.status is UNAVAILABLE if isinstance(got, CallError)
            else got.metadata == honest.metadata), got


async def test_a_peer_cannot_answer_a_claim_for_the_issuer(
        shanghai: tuple[Federation, PartnerClient]) -> None:
    """A yes the issuer never said: signed by another platform, for another consumer, or
    about another claim; each UNAVAILABLE."""
    fed, client = shanghai
    config = fed.apps["310000-gw"].config
    now = time.time()
    metadata = read_document(document(HOUSE, now=now - 3600), platform_keys(config),
                             now=now).metadata
    asked = claim_rules.ask("valid_on", {"on": "2026-11-25"})
    other = claim_rules.ask("valid_on", {"on": "2027-01-01"})
    async with hostile_peer(config, lambda method, asked: b"") as hostile:
        for n, (by, consumer, claim) in enumerate((
                ("320681", CONSUMER, asked), ("320105", "310000", asked),
                ("320105", CONSUMER, other))):
            token = claim_rules.answer(metadata, claim, key_of(by), consumer=consumer,
                                       now=now)
            hostile.respond = lambda method, request, token=token: (  # type: ignore[misc]
                cpb.LookupCertificateResponse(claim_answer=cpb.ClaimAnswer(
                    number=HOUSE.number, token=token, answer=True)).SerializeToString())
            with pytest.raises(CallError) as err:
                await client.lookup_certificate(
                    holder=ZHANG_SAN.message(), cert_type="401", purpose_item="bdc-dy",
                    authorization=authz(ZHANG_SAN, "bdc-dy", now=now),
                    claim=cpb.CertificateClaim(name="valid_on", on="2026-11-25"))
            assert len(hostile.calls) == n + 1
            assert err.value.status is UNAVAILABLE, (by, consumer, err.value.message)
            assert not leaks(err.value.message, token)


# -- 3. a consumer platform at another gateway than its own --------------------------------
async def test_a_platform_at_another_gateway_gets_nothing(fed: Federation) -> None:
    """浦东 (a platform of 310000-gw) calls 320100-gw, where 张三's 401 is issued, directly:
    refused, nothing looked up, for every certificate method."""
    now = time.time()
    before = await uses_at(fed, "320100-gw")
    for method, request in ((LOOKUP, lookup(now)), (LIST, cpb.ListCertificatesRequest(
            holder=ZHANG_SAN.message(), purpose_item="bdc-dy",
            authorization=authz(ZHANG_SAN, "bdc-dy", now=now))),
                            (VERIFY, cpb.VerifyCertificateRequest(certificate_id=HOUSE.number))):
        got = await call_as(fed.config, CONSUMER, "320100-gw", request.SerializeToString(),
                            method=method)
        assert got.code in (PD, grpc.StatusCode.UNAUTHENTICATED), (method, got)
        assert not got.body and not leaks(got.details), got
    assert await uses_at(fed, "320100-gw") == before
    # nor does a linked gateway ask as if it were a consumer
    got = await call_as(fed.config, ROGUE, "320100-gw", lookup(now).SerializeToString(),
                        method=LOOKUP)
    assert got.code is PD and "not a platform of this gateway" in got.details, got
    assert await uses_at(fed, "320100-gw") == before


async def test_a_platform_at_another_gateway_is_unknown_there(fed: Federation) -> None:
    """docs/certificates.md, The calls: another gateway does not know the platform as a
    caller (UNAUTHENTICATED, unknown key, docs/signing.md §2), and counts nothing."""
    before = await uses_at(fed, "320100-gw")
    got = await call_as(fed.config, CONSUMER, "320100-gw",
                        lookup(time.time()).SerializeToString(), method=LOOKUP)
    assert got.code is grpc.StatusCode.UNAUTHENTICATED and "unknown key" in got.details, got
    assert await uses_at(fed, "320100-gw") == before


# -- 4. garbage from a consumer platform -----------------------------------------------------
def _garbage(now: float) -> list[tuple[str, str, dict[str, object], grpc.StatusCode, str]]:
    good = {"holder": ZHANG_SAN.message(), "cert_type": "401", "purpose_item": "bdc-dy",
            "authorization": authz(ZHANG_SAN, "bdc-dy", now=now)}
    invalid, unauth = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED

    def holder(number: str, id_type: int = pb.ID_TYPE_RESIDENT) -> cpb.Holder:
        return cpb.Holder(id_type=id_type, number=number)  # type: ignore[arg-type]

    z = ZHANG_SAN.number
    return [
        ("1 MB authorization", "lookup", good | {"authorization": "a" * 1_000_000}, unauth,
         "authorization"),
        ("1 MB JWS-shaped authorization", "lookup",
         good | {"authorization": "e30." + "A" * 1_000_000 + ".AA"}, unauth, "authorization"),
        ("a claim with a 1 MB name", "lookup",
         good | {"claim": cpb.CertificateClaim(name="name_is", text="张" * 1_000_000)},
         invalid, "claim.text"),
        ("a claim named with 1 MB", "lookup",
         good | {"claim": cpb.CertificateClaim(name="x" * 1_000_000)}, invalid, "claim.name"),
        ("a NUL in the holder number", "lookup", good | {"holder": holder(z[:-1] + "\x00")},
         invalid, "holder.number"),
        ("a newline after the holder number", "lookup", good | {"holder": holder(z + "\n")},
         invalid, "holder.number"),
        ("full-width digits", "lookup", good | {"holder": holder(z.translate(
            str.maketrans("0123456789", "０１２３４５６７８９")))}, invalid, "holder.number"),
        ("a lower-case x", "lookup", good | {"holder": holder(z.lower())}, invalid,
         "holder.number"),
        ("a passport with control characters", "lookup",
         good | {"holder": holder("E1234\x1b[2J", pb.ID_TYPE_PASSPORT)}, invalid,
         "holder.number"),
        ("a passport names no division", "lookup",
         good | {"holder": PASSPORT.message(),
                 "authorization": authz(PASSPORT, "bdc-dy", now=now)}, invalid,
         "holder.id_type"),
        ("an empty holder", "lookup", good | {"holder": cpb.Holder()}, invalid,
         "holder.id_type"),
        ("no holder at all", "lookup", {k: v for k, v in good.items() if k != "holder"},
         invalid, "holder.id_type"),
        ("a lower-case certificate id", "lookup",
         good | {"certificate_id": HOUSE.number.lower()}, invalid, "certificate_id"),
        ("a newline after the certificate id", "lookup",
         good | {"certificate_id": HOUSE.number + "\n"}, invalid, "certificate_id"),
        ("a 1 MB certificate id", "lookup", good | {"certificate_id": "1" * 1_000_000},
         invalid, "certificate_id"),
        ("a 1 MB purpose", "lookup", good | {"purpose_item": "a" * 1_000_000}, invalid,
         "purpose_item"),
        ("a type of 9 digits", "lookup", good | {"cert_type": "401401401"}, invalid,
         "cert_type"),
        ("full-width type digits", "lookup", good | {"cert_type": "４０１"}, invalid,
         "cert_type"),
        ("a lower-case id to verify", "verify", {"certificate_id": HOUSE.number.lower()},
         invalid, "certificate_id"),
        ("a 1 MB document to verify", "verify", {"document": "a." * 500_000}, invalid,
         "document"),
        ("a listing with a bad type", "list",
         {k: v for k, v in good.items() if k != "cert_type"} | {"cert_types": ["401", "x"]},
         invalid, "cert_types[1]"),
    ]


def said(err: CallError) -> str:
    """The gateway's own text (the client puts the gateway's id before it)."""
    return err.message.split(": ", 1)[1] if ": " in err.message else err.message


async def test_garbage_is_refused_with_its_field_and_the_gateway_keeps_serving(
        fed: Federation) -> None:
    client = fed.client(CONSUMER)
    now = time.time()
    issuer_uses = await uses_at(fed, "320100-gw")
    calls = {"lookup": client.lookup_certificate, "identity": client.verify_identity,
             "verify": client.verify_certificate, "list": client.list_certificates}
    wrong = []
    for name, method, fields, code, field_path in _garbage(now):
        with pytest.raises(CallError) as err:
            await calls[method](**fields)
        got = err.value
        if got.status is not code or not said(got).startswith(f"{field_path}: "):
            wrong.append(f"{name}: {got.status.name} {got.message[:160]!r}")
        assert len(got.message) < 2000, name  # a refusal quotes a short prefix at most
        assert got.status not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), name
    assert not wrong, "\n".join(wrong)
    assert await uses_at(fed, "320100-gw") == issuer_uses  # nothing reached the issuer
    answer = await client.lookup_certificate(
        holder=ZHANG_SAN.message(), cert_type="401", purpose_item="bdc-dy",
        authorization=authz(ZHANG_SAN, "bdc-dy", now=time.time()))
    assert answer.certificate.metadata.number == HOUSE.number


async def test_another_holders_certificate_id_says_no_more_than_a_missing_one(
        fed: Federation) -> None:
    """张三's authorization and 李四's real identifier (issued by 启东 320681): the answer
    is the NOT_FOUND a made-up identifier of that issuer gets, so nobody learns that the
    identifier exists, let alone whose it is."""
    client = fed.client(CONSUMER)
    theirs = demo(LI_SI, "401")
    texts = []
    for serial in (theirs.serial, "2099000999"):  # 李四's, and one nobody holds
        number = format_id("401", theirs.authority.code, serial)
        with pytest.raises(CallError) as err:
            await client.lookup_certificate(
                holder=ZHANG_SAN.message(), cert_type="401", purpose_item="bdc-dy",
                certificate_id=number,
                authorization=authz(ZHANG_SAN, "bdc-dy", now=time.time()))
        assert err.value.status is grpc.StatusCode.NOT_FOUND, err.value.message
        assert not leaks(err.value.message.replace(ZHANG_SAN.number, "")), err.value.message
        # the far side's text has id-shaped runs masked (the issuer code inside the
        # identifier too): either form of the identifier is the same placeholder
        texts.append(said(err.value).replace(number, "<id>").replace(mask_text(number),
                                                                       "<id>"))
    assert texts[0] == texts[1], texts
    assert "李四" not in texts[0]


async def test_a_megabyte_name_to_check_is_refused_naming_the_field(fed: Federation) -> None:
    with pytest.raises(CallError) as err:
        await fed.client(CONSUMER).verify_identity(
            holder=ZHANG_SAN.message(), name="张" * 1_000_000, purpose_item="bdc-dy",
            authorization=authz(ZHANG_SAN, "bdc-dy", now=time.time()))
    assert err.value.status is grpc.StatusCode.INVALID_ARGUMENT, err.value.message
    assert said(err.value).startswith("name: "), err.value.message


@pytest.mark.parametrize("types", ["same", "distinct"])
async def test_ten_thousand_cert_types_are_refused(fed: Federation, types: str) -> None:
    client = fed.client(CONSUMER)
    asked = ["401"] * 10_000 if types == "same" else [str(n) for n in range(10_000)]
    with pytest.raises(CallError) as err:
        await client.list_certificates(
            holder=ZHANG_SAN.message(), purpose_item="bdc-dy", cert_types=asked,
            authorization=authz(ZHANG_SAN, "bdc-dy", now=time.time()))
    assert err.value.status is grpc.StatusCode.INVALID_ARGUMENT, err.value.message
    assert said(err.value).startswith("cert_types"), err.value.message


async def test_a_megabyte_of_authorization_is_not_kept_per_refusal(fed: Federation) -> None:
    """The use rows keep the consumer's statement as evidence; a refusal of garbage keeps
    its audit entry, but one call must not write a megabyte into the store."""
    client = fed.client(CONSUMER)
    for fields in ({"cert_type": "401"}, {}):  # a lookup, a listing
        call = client.lookup_certificate if fields else client.list_certificates
        with pytest.raises(CallError) as err:
            await call(holder=ZHANG_SAN.message(), purpose_item="bdc-dy",
                       authorization="a" * 1_000_000, **fields)
        assert err.value.status is grpc.StatusCode.UNAUTHENTICATED, err.value.message
    assert largest_statement(fed, "310000-gw") < 64 * 1024


def largest_statement(fed: Federation, gateway: str) -> int:
    path = fed.apps[gateway].config.data_dir / "gateway.sqlite3"
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        row = conn.execute("SELECT COALESCE(MAX(LENGTH(statement)), 0) "
                           "FROM certificate_uses").fetchone()
    return int(row[0])


# -- 5. holder ids in logs and the audit chain -----------------------------------------------
async def test_refusals_never_log_or_audit_a_holder_id(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with federation(tmp_path) as fed:
        client = fed.client(CONSUMER)
        now = time.time()
        good = {"holder": ZHANG_SAN.message(), "cert_type": "401", "purpose_item": "bdc-dy"}
        refusals = [
            good | {"authorization": authz(LI_SI, "bdc-dy", now=now)},  # another holder's
            good | {"authorization": authz(ZHANG_SAN, "bdc-dy", now=now - 3600)},  # expired
            good | {"authorization": authz(ZHANG_SAN, "jdc-wf", now=now)},  # another item
            good | {"holder": cpb.Holder(id_type=pb.ID_TYPE_RESIDENT,
                                         number=ZHANG_SAN.number[:-1] + "0")},  # check digit
            {"holder": LI_SI.message(), "cert_type": "301", "purpose_item": "bdc-dy",
             "authorization": authz(LI_SI, "bdc-dy", now=now)},  # NOT_FOUND at the issuer
            good | {"authorization": authz(ZHANG_SAN, "bdc-dy", now=now),
                    "certificate_id": demo(LI_SI, "401").number.replace(
                        "320681", "320105")},  # a bad check character
        ]
        for fields in refusals:
            with pytest.raises(CallError) as err:
                await client.lookup_certificate(**fields)
            assert not leaks(err.value.message), err.value.message
        # the rogue's refused forwards, and a consumer at the wrong gateway
        for body in (forward(statement(lookup(now, LI_SI), now=now - 3600)),
                     forward(statement(lookup(now), now=now), path=["310000-gw"])):
            got = await call_as(fed.config, ROGUE, "320100-gw", body)
            assert got.code is PD and not leaks(got.details), got
        await call_as(fed.config, CONSUMER, "320100-gw", lookup(now).SerializeToString(),
                      method=LOOKUP)
        audits = {g: audit_of(fed, g) for g in fed.apps}
    plain, written = logging.Formatter(), JsonFormatter()
    # the gateway's own lines must not hold an id even before the formatter masks it
    ours = [f"{r.name}: {r.getMessage()} "
            f"{plain.formatException(r.exc_info) if r.exc_info else ''}"
            for r in caplog.records if r.name.startswith("tongban")]
    assert not [line for line in ours if leaks(line)], [x for x in ours if leaks(x)]
    # and no line at all (aiosqlite's debug lines of the issuers' registers included) as
    # `tongban serve` writes it
    lines = [written.format(r) for r in caplog.records]
    assert not [line for line in lines if leaks(line)], [x for x in lines if leaks(x)][:3]
    for gateway, rows in audits.items():
        assert not [row for row in rows if leaks(row[3])], gateway


# -- 6. metric label cardinality -------------------------------------------------------------
async def test_unknown_codes_do_not_mint_metric_series(fed: Federation) -> None:
    client = fed.client(CONSUMER)
    now = time.time()

    def series() -> set[str]:
        text = fed.apps["310000-gw"].metrics.render().decode()
        return {line.split(" ")[0] for line in text.splitlines()
                if line.startswith("tongban_certificate_uses_total{")}

    before = series()
    for n in range(200):
        item = f"zz-{n:03}"
        for fields in ({"purpose_item": item, "cert_type": "401"},  # no authorization
                       {"purpose_item": item, "cert_type": "401",  # one for that item
                        "authorization": authz(ZHANG_SAN, item, now=now)},
                       {"purpose_item": "bdc-dy", "cert_type": f"9{n:03}",
                        "authorization": authz(ZHANG_SAN, "bdc-dy", now=now)}):
            with pytest.raises(CallError) as err:
                await client.lookup_certificate(holder=ZHANG_SAN.message(), **fields)
            assert err.value.status is PD, err.value.message
        with pytest.raises(CallError) as err:  # a type nobody issues
            await client.verify_certificate(
                certificate_id=format_id(f"9{n:03}", JIANYE_REALTY.code, "1"))
        assert err.value.status is grpc.StatusCode.NOT_FOUND, err.value.message
    added = series() - before
    assert len(added) <= 8, sorted(added)
    assert not [s for s in added if "zz-" in s or 'cert_type="9' in s], sorted(added)
    counts = await fed.apps["310000-gw"].store.use_counts()
    assert {c.item for c in counts} <= {"?", "bdc-dy", ""}, {c.item for c in counts}


# -- 7. cases citing certificates ------------------------------------------------------------
APPLICANT = pb.Applicant(id_type=pb.ID_TYPE_RESIDENT, id_number=ZHANG_SAN.number, name="张三")


async def cited(fed: Federation, number: str, *citations: tuple[str, str],
                applicant: pb.Applicant = APPLICANT) -> CallError:
    """浦东 submits a 公积金提取 (gjj-tq) to 建邺 citing `citations`; refused, nothing kept."""
    counts = {g: await app.store.count_cases() for g, app in fed.apps.items()}
    with pytest.raises(CallError) as err:
        await fed.client(CONSUMER).submit(
            case_number=number, target_division="320105", item_code="gjj-tq",
            applicant=applicant, certificates=[
                pb.CertificateCitation(material=m, document=d) for m, d in citations])
    assert counts == {g: await app.store.count_cases() for g, app in fed.apps.items()}
    assert not leaks(err.value.message, *(d for _, d in citations)), err.value.message
    return err.value


async def test_a_case_cannot_cite_what_the_issuer_did_not_vouch_for(fed: Federation) -> None:
    now = time.time()
    house = document(HOUSE, now=now - 3600)
    # the control: the same case citing the genuine document is admitted
    ok = await fed.client(CONSUMER).submit(
        case_number="CITE-OK", target_division="320105", item_code="gjj-tq",
        applicant=APPLICANT, certificates=[pb.CertificateCitation(material="购房合同",
                                                                  document=house)])
    assert ok.case.certificates[0].document == house
    await fed.platform("320105").wait_for(ok.case.case_id)  # settled before counting cases
    cases: list[tuple[str, tuple[str, str], grpc.StatusCode, str]] = [
        ("revoked when signed", ("购房合同", document(HOUSE, now=now, serial="2021000901",
                                                    status=Status.REVOKED)),
         grpc.StatusCode.FAILED_PRECONDITION, "certificates[0].document"),
        ("another holder's", ("购房合同", document(HOUSE, now=now, holder=LI_SI,
                                                 serial="2021000902")),
         PD, "certificates[0].document"),
        ("signed by a platform that issues no 401", ("购房合同", document(
            HOUSE, now=now, by=CONSUMER, serial="2021000903")), PD, "certificates[0].document"),
        ("a 111 signed by 320105, which issues 401 only", ("居民身份证", document(
            demo(ZHANG_SAN, "111"), now=now, serial="2016000903")),
         PD, "certificates[0].document"),
        ("a 401 for an authority of 320681 signed by 320105", ("购房合同", document(
            HOUSE, now=now, issuer_code=demo(LI_SI, "401").authority.code,
            serial="2021000904")), PD, "certificates[0].document"),
        ("tampered", ("购房合同", house[:-4] + ("AAAA" if not house.endswith("AAAA")
                                                else "BBBB")),
         PD, "certificates[0].document"),
        ("not a JWS", ("购房合同", "x" * 100_000), PD, "certificates[0].document"),
    ]
    wrong = []
    for n, (name, citation, code, field_path) in enumerate(cases):
        got = await cited(fed, f"CITE-{n}", citation)
        if got.status is not code or not said(got).startswith(f"{field_path}: "):
            wrong.append(f"{name}: {got.status.name} {got.message[:160]!r}")
    assert not wrong, "\n".join(wrong)
    # the identity card 320000 (江苏) really issued, for the right material, is admitted
    card = document(demo(ZHANG_SAN, "111"), now=now - 3600, by="320000")
    both = await fed.client(CONSUMER).submit(
        case_number="CITE-OK-2", target_division="320105", item_code="gjj-tq",
        applicant=APPLICANT, certificates=[
            pb.CertificateCitation(material="购房合同", document=house),
            pb.CertificateCitation(material="居民身份证", document=card)])
    assert len(both.case.certificates) == 2
    await fed.platform("320105").wait_for(both.case.case_id)


async def test_a_case_cites_at_most_32_and_each_material_once(fed: Federation) -> None:
    now = time.time()
    house = document(HOUSE, now=now - 3600)
    got = await cited(fed, "CITE-33", *[("购房合同", house)] * 33)
    assert got.status is grpc.StatusCode.INVALID_ARGUMENT, got.message
    assert said(got).startswith("certificates: "), got.message
    got = await cited(fed, "CITE-TWICE", ("购房合同", house), ("购房合同", house))
    assert got.status is grpc.StatusCode.INVALID_ARGUMENT, got.message
    assert said(got).startswith("certificates[1].material: "), got.message
    got = await cited(fed, "CITE-NONE", ("户口本", house))  # not a material of the item
    assert got.status is PD and said(got).startswith("certificates[0].material: "), got.message
    got = await cited(fed, "CITE-BIG", *[("购房合同", "x" * 100_000)] * 33)
    assert got.status is grpc.StatusCode.INVALID_ARGUMENT, got.message
