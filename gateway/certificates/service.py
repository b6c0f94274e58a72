"""Certificate reuse across the federation (DESIGN §8, docs/certificates.md): the job.

A consumer platform asks its own gateway; the gateway checks the holder's authorization
and the purpose, finds the issuing platform in the directory, and either asks it (an
issuer attached here) or passes the consumer's own signed request, as its statement, to
the next gateway on the shortest link path (ForwardCertificateCall), which checks it
again as if the consumer had called it. Everything the answer asserts is signed by the
issuer (documents, status statements, claim answers): the consumer's gateway checks it
with the issuer's key before answering, whatever the gateways between did.

Every use is recorded at the consumer's gateway and at the issuer's, with the consumer's
statement (and so the holder's authorization) as its evidence, in the same transaction
as the call's audit entry. Calls are synchronous: nothing is queued, a failed hop is
answered with its status (gateway/client.refusal_of), never INTERNAL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import grpc
from google.protobuf.message import DecodeError, Message

from gateway.audit import PendingAudit
from gateway.certificate_ids import CertificateId, parse
from gateway.config import Config, Gateway
from gateway.errors import (
    GatewayError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    quote,
)
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import certificate_pb2 as cpb
from gateway.routing import RouteTable
from gateway.store.base import CertificateUse, CertificateUseStore
from gateway.types import CertificateRelay, CertificateSource, Clock
from gateway.verifier import KeyLookup, ReplayCache, Verifier, verify_statement

from . import claims as claim_rules
from .answers import AnswerChecks, DocumentCache
from .authorization import Catalogue, check_authorization, check_purpose, types_for
from .directory import Found, directory_of, home_division, merge
from .documents import (
    Holder,
    HolderIdType,
)
from .uses import USES_ITEM, UseLog, Uses
from .wire import (
    cert_type_of,
    claim_of,
    found_message,
    holder_message,
    holder_of,
    item_of,
    metadata_message,
)

log = logging.getLogger("tongban.certificates")
SERVICE: Final = "/tongban.v1.Gateway/"
REQUESTS: Final[Mapping[str, type[Message]]] = {
    "LookupCertificate": cpb.LookupCertificateRequest,
    "ListCertificates": cpb.ListCertificatesRequest,
    "VerifyCertificate": cpb.VerifyCertificateRequest,
    "VerifyIdentity": cpb.VerifyIdentityRequest,
    "ListCertificateUses": cpb.ListCertificateUsesRequest,
}
METHODS: Final = frozenset(SERVICE + name for name in REQUESTS)
STATUS_NAMES: Final = frozenset(code.name for code in grpc.StatusCode)
FORWARDED: Final = "statement"  # the audit detail of an accepted forward: key, jti, until
MAX_USES: Final = 1000  # uses one gateway returns for one holder
MAX_TYPES: Final = 32  # certificate types one listing may name (as an issuer takes)


@dataclass(slots=True)
class Ask:
    """One certificate call being served here: who asked, what (parsed), their own
    signed request, the gateways it passed (this one last), and the issuer the consumer's
    gateway chose (empty there)."""

    method: str  # short name
    consumer: str
    request: Any
    statement: pb.Statement
    path: list[str]
    only: str = ""
    audit: PendingAudit | None = None
    uses: Uses = field(default_factory=Uses)

    @property
    def first(self) -> bool:
        """This is the consumer's own gateway."""
        return len(self.path) == 1


def catalogue_of(config: Config) -> Catalogue:
    return {code: item.certificate_types for code, item in config.items.items()}


class CertificateService:
    def __init__(self, config: Config, store: CertificateUseStore, routes: RouteTable,
                 adapters: Mapping[str, object], keys_for: KeyLookup, clock: Clock,
                 holder_secret: bytes,
                 on_uses: Callable[[Sequence[CertificateUse]], None] | None = None) -> None:
        """adapters: this gateway's partner and peer adapters by id (those that serve
        certificates implement CertificateSource or CertificateRelay); keys_for: every
        party's public keys; holder_secret: keys the holder digests of the use table."""
        self.config, self.store, self.routes = config, store, routes
        self.self_id = config.self_id
        self._adapters, self._keys, self._clock = adapters, keys_for, clock
        self.directory = directory_of(config)
        self.catalogue = catalogue_of(config)
        self.documents = DocumentCache(config.certificates.document_cache)
        self.answers = AnswerChecks(keys_for, clock, self.documents)
        self.log = UseLog(config, store, self.directory, clock, holder_secret, self._local,
                          on_uses)
        self._timeout = config.certificates.call_timeout_s
        self._skew = config.limits.clock_skew_s
        homes = {p.id: p.gateway for p in config.partners.values()}
        self._homes = homes
        self._statements = Verifier(audience=self.self_id, keys_for=keys_for,
                                    max_ttl_s=config.limits.max_token_ttl_s)
        self._replays = ReplayCache()

    async def preload(self, now: float) -> int:
        """Remember the statements forwarded here while they could still be replayed,
        from the audit log (as the verifier does for call tokens): a restart does not
        reopen the window. Returns how many."""
        window = self.config.limits.max_token_ttl_s + 2 * self._skew
        seen = []
        for detail in await self.store.recent_details(SERVICE + "ForwardCertificateCall",
                                                      now - window):
            parts = detail.split(" ")
            if len(parts) == 4 and parts[0] == FORWARDED:
                try:
                    seen.append((parts[1], parts[2], float(parts[3])))
                except ValueError:
                    continue
        return self._replays.preload(seen, now)

    # -- entry points ----------------------------------------------------------------
    async def call(self, method: str, consumer: str, request: Any, statement: pb.Statement,
                   audit: PendingAudit | None) -> bytes:
        """A consumer platform's own call to this gateway."""
        partner = self.config.partners.get(consumer)
        if partner is None or partner.gateway != self.self_id:
            raise PermissionDenied(f"{consumer} is not a platform of this gateway; a linked "
                                   "gateway passes certificate calls on with "
                                   "ForwardCertificateCall", field="")
        ask = Ask(method, consumer, request, statement, [self.self_id], audit=audit)
        return await self._serve(ask)

    async def forward(self, caller: str, req: cpb.ForwardCertificateCallRequest,
                      audit: PendingAudit | None) -> bytes:
        """A linked gateway passes on a consumer's call: check it as the first gateway
        did (the consumer's signature, freshness, once per issuer, the path)."""
        if not isinstance(self.config.party(caller), Gateway):
            raise PermissionDenied("only a linked gateway forwards certificate calls")
        statement = req.statement
        try:
            claims = verify_statement(self._statements, statement.token,
                                      body=statement.request, home=self._homes.get)
        except Unauthenticated as exc:
            raise PermissionDenied(f"the consumer's statement does not verify: {exc.message}",
                                   field="statement") from None
        method = claims.mth.removeprefix(SERVICE)
        if claims.mth not in METHODS:
            raise PermissionDenied(f"a statement made by {quote(claims.mth, 64)} is no "
                                   "certificate call", field="statement")
        consumer = self.config.partners.get(claims.iss)
        if consumer is None or claims.aud != consumer.gateway:
            raise PermissionDenied("the consumer's statement is not addressed to its own "
                                   "gateway", field="statement")
        now = self._clock.now()
        if claims.iat > now + self._skew or claims.exp < now - self._skew:
            raise PermissionDenied("the consumer's statement is not current (a certificate "
                                   "call is answered while its token is valid)",
                                   field="statement")
        path = list(req.path)
        issuer = self.config.partners.get(req.partner)
        if issuer is None or not issuer.issues:
            raise PermissionDenied(f"{quote(req.partner, 24)} issues no certificates",
                                   field="partner")
        if (not path or path[0] != consumer.gateway or path[-1] != caller
                or self.self_id in path or len(set(path)) != len(path)
                or len(path) > self.config.limits.max_hops
                or not self.routes.shortest_walk([*path, self.self_id])
                or not self.routes.on_path(consumer.gateway, issuer.gateway, caller)):
            raise PermissionDenied("this gateway is not on the path from the consumer's "
                                   "gateway to the issuer's", field="path")
        until = claims.exp + self._skew
        if not self._replays.check_and_add(f"{claims.iss}>{req.partner}", claims.jti,
                                           until, now):
            raise PermissionDenied("this certificate call was forwarded here before "
                                   "(a replay)", field="statement")
        if audit is not None:  # the audit log remembers it across a restart (preload)
            audit.entry = dataclasses.replace(
                audit.entry, detail=f"{FORWARDED} {claims.iss}>{req.partner} {claims.jti} "
                                    f"{until:.0f}")
        cls = REQUESTS[method]
        try:
            request = cls.FromString(statement.request)
        except (DecodeError, RecursionError):
            raise PermissionDenied("the consumer's statement is not a "
                                   f"{cls.DESCRIPTOR.name}", field="statement") from None
        ask = Ask(method, claims.iss, request, statement, [*path, self.self_id],
                  only=req.partner, audit=audit)
        return await self._serve(ask)

    async def _serve(self, ask: Ask) -> bytes:
        handler: Callable[[Ask], Awaitable[bytes]] = {
            "LookupCertificate": self._lookup, "ListCertificates": self._list,
            "VerifyCertificate": self._verify, "VerifyIdentity": self._identity,
            "ListCertificateUses": self._uses}[ask.method]
        try:
            answer = await handler(ask)
        except GatewayError as exc:
            if ask.method != "ListCertificateUses":
                await self.log.record(ask.uses, first=ask.first, only=ask.only,
                                      audit=ask.audit, outcome=exc.code.name,
                                      detail=str(exc.details()))
            raise
        if ask.method != "ListCertificateUses":
            await self.log.record(ask.uses, first=ask.first, only=ask.only, audit=ask.audit,
                                  outcome="OK")
        return answer

    # -- the five calls ----------------------------------------------------------------
    async def _lookup(self, ask: Ask) -> bytes:
        req: cpb.LookupCertificateRequest = ask.request
        holder = holder_of(req.holder)
        cert_type = cert_type_of(req.cert_type)
        item = item_of(req.purpose_item)
        cid = self._identifier(req.certificate_id, cert_type) if req.certificate_id else None
        claim = claim_of(req.claim) if req.HasField("claim") else None
        self._begin(ask, holder, cert_type, item)
        self._authorized(req.authorization, holder, item, ask.consumer, cert_type)
        check_purpose(self.catalogue, item=item, cert_type=cert_type)
        division = cid.issuer_division if cid else self._home(holder)
        found = self._issuer(ask, cert_type, division)
        if claim is not None:
            answer = await self._claim(ask, found, holder, cert_type, req.certificate_id,
                                       req.claim)
            ask.uses.number(answer.claim_answer.number)
            return answer.SerializeToString()
        if self._local(found.partner):
            fetched = await self._fetch(ask, found, holder, (cert_type,), req.certificate_id,
                                        item, with_file=req.with_file)
            if not fetched:
                raise NotFound(f"{found.partner} holds no certificate of type {cert_type} of "
                               f"holder {holder.masked()}", field="certificate_id"
                               if req.certificate_id else "holder")
            valid = [c for c in fetched
                     if c.metadata.status == cpb.CERTIFICATE_STATUS_VALID]
            chosen = (valid or fetched)[0]
            if req.with_file and not chosen.file:
                raise Unavailable(f"{found.partner} sent no rendered file")
            ask.uses.number(chosen.metadata.number)
            return cpb.LookupCertificateResponse(certificate=chosen).SerializeToString()
        raw = await self._relay(ask, found)
        answer = self._decode(cpb.LookupCertificateResponse, raw, found.partner)
        if ask.first:  # the consumer's gateway checks what the issuer signed, end to end
            if answer.HasField("claim_answer") or not answer.HasField("certificate"):
                raise Unavailable(f"the answer from {found.partner} is not one certificate")
            got = self.answers.relayed(answer.certificate, found,
                                       self._gateway_of(found.partner), holder, (cert_type,),
                                       req.certificate_id)
            if req.with_file and not got.file:
                raise Unavailable(f"{found.partner} sent no rendered file")
            ask.uses.number(got.metadata.number)
            # built again from what was checked: nothing a gateway between added passes
            return cpb.LookupCertificateResponse(certificate=got).SerializeToString()
        ask.uses.number(answer.certificate.metadata.number)
        return raw

    async def _list(self, ask: Ask) -> bytes:
        req: cpb.ListCertificatesRequest = ask.request
        holder = holder_of(req.holder)
        item = item_of(req.purpose_item)
        if len(req.cert_types) > MAX_TYPES:
            raise InvalidArgument(f"at most {MAX_TYPES} certificate types", field="cert_types")
        asked = [cert_type_of(t, f"cert_types[{i}]") for i, t in enumerate(req.cert_types)]
        if len(set(asked)) != len(asked):
            raise InvalidArgument("a certificate type is asked twice", field="cert_types")
        self._begin(ask, holder, "", item)
        authz = self._authorized(req.authorization, holder, item, ask.consumer, None)
        allowed = types_for(self.catalogue, item, authz)
        for i, cert_type in enumerate(asked):
            if cert_type not in allowed:
                try:
                    check_purpose(self.catalogue, item=item, cert_type=cert_type)
                except PermissionDenied as exc:
                    if exc.field != "cert_type":
                        raise
                    raise PermissionDenied(exc.message, field=f"cert_types[{i}]") from None
                raise PermissionDenied(f"the authorization does not name type {cert_type}",
                                       field=f"cert_types[{i}]")
        types = sorted(set(asked) or allowed)
        if not types:
            raise PermissionDenied(f"item {quote(item, 24)} accepts no certificates",
                                   field="purpose_item")
        sources = self.directory.candidates(self._home(holder), types)
        if ask.only:
            sources = [f for f in sources if f.partner == ask.only]
            if not sources:
                raise PermissionDenied(f"{ask.only} is not asked for these certificates",
                                       field="partner")
        results = await asyncio.gather(*(self._list_from(ask, found, holder, item)
                                         for found in sources), return_exceptions=True)
        listed: list[tuple[Found, Sequence[_Listed]]] = []
        out = cpb.ListCertificatesResponse()
        for found, result in zip(sources, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, GatewayError):
                    if not isinstance(result, Exception):
                        raise result
                    log.error("certificate listing at %s failed", found.partner,
                              exc_info=result)
                    result = Unavailable("failed")
                # a far gateway's word on its issuer is passed on with the status it gave
                code = result.status if isinstance(result, _NotAnswered) \
                    else result.code.name
                out.unavailable.append(f"{found.partner}: {code}")
                continue
            listed.append((found, [_Listed(c) for c in result]))
        for _, entry in merge(listed):
            out.certificates.append(entry.certificate)
            ask.uses.number(entry.certificate.metadata.number,
                              entry.certificate.metadata.type_code,
                              entry.certificate.found_at.partner)
        return out.SerializeToString()

    async def _list_from(self, ask: Ask, found: Found, holder: Holder,
                         item: str) -> list[cpb.Certificate]:
        if self._local(found.partner):
            return await self._fetch(ask, found, holder, found.types, "", item,
                                     with_file=False)
        raw = await self._relay(ask, found)
        answer = self._decode(cpb.ListCertificatesResponse, raw, found.partner)
        if answer.unavailable:  # the issuer behind that gateway could not answer
            status = answer.unavailable[0].rpartition(": ")[2]
            raise _NotAnswered(f"{found.partner} could not answer",
                               status if status in STATUS_NAMES else "UNAVAILABLE")
        got = []
        for certificate in answer.certificates:
            if certificate.file:
                raise Unavailable(f"{found.partner} sent file bytes in a listing")
            got.append(self.answers.relayed(certificate, found,
                                            self._gateway_of(found.partner), holder,
                                            found.types, ""))
        return got

    async def _verify(self, ask: Ask) -> bytes:
        req: cpb.VerifyCertificateRequest = ask.request
        if bool(req.certificate_id) == bool(req.document):
            raise InvalidArgument("either certificate_id or document",
                                  field="certificate_id")
        document = None
        if req.document:
            try:
                document = self.documents.read(req.document, self._keys, self._clock.now())
            except Unauthenticated as exc:
                raise InvalidArgument(f"the document does not verify: {exc.message}",
                                      field="document") from None
        number = document.metadata.number if document else req.certificate_id
        cid = parse(number, field="certificate_id")
        self._begin(ask, None, cid.type_code, "")
        ask.uses.number(number)
        found = self._issuer(ask, cid.type_code, cid.issuer_division)
        if document is not None and document.iss != found.partner:
            raise InvalidArgument(f"the document is signed by {document.iss}, but "
                                  f"{found.partner} issues it", field="document")
        if not self._local(found.partner):
            raw = await self._relay(ask, found)
            answer = self._decode(cpb.VerifyCertificateResponse, raw, found.partner)
            if ask.first:  # every field of it is what the issuer's statement says
                reported = self.answers.status(answer.status_statement, found.partner, number,
                                              document)
                expected = self.answers.verified(number, reported, answer.status_statement, found,
                                          self._gateway_of(found.partner), document)
                if answer != expected:
                    raise Unavailable(f"the answer about {number} is not what {found.partner}"
                                      " signed")
            return raw
        request = cpb.CertificateStatusRequest(number=number, consumer=ask.consumer)
        raw = await self._source(found.partner, "certificate_status",
                                 request.SerializeToString())
        statement = self._decode(cpb.CertificateStatusResponse, raw, found.partner
                                 ).status_statement
        reported = self.answers.status(statement, found.partner, number, document)
        return self.answers.verified(number, reported, statement, found, self.self_id,
                              document).SerializeToString()

    async def _identity(self, ask: Ask) -> bytes:
        req: cpb.VerifyIdentityRequest = ask.request
        holder = holder_of(req.holder)
        if holder.id_type is not HolderIdType.RESIDENT:
            raise InvalidArgument("identity is checked for a resident id (居民身份证)",
                                  field="holder.id_type")
        try:  # checked here (the issuer answers it), named as the request names it
            claim_rules.ask("name_is", {"text": req.name})
        except InvalidArgument as exc:
            raise InvalidArgument(exc.message, field="name") from None
        item = item_of(req.purpose_item)
        cert_type = self.config.certificates.identity_type
        self._begin(ask, holder, cert_type, item)
        self._authorized(req.authorization, holder, item, ask.consumer, cert_type)
        found = self._issuer(ask, cert_type, self._home(holder))
        try:
            answer = await self._claim(ask, found, holder, cert_type, "",
                                       cpb.CertificateClaim(name="name_is", text=req.name))
        except NotFound:  # no such person there: no match, and nothing else said
            return cpb.VerifyIdentityResponse(
                match=False, found_at=found_message(found, self._gateway_of(found.partner))
            ).SerializeToString()
        return cpb.VerifyIdentityResponse(
            match=answer.claim_answer.answer, token=answer.claim_answer.token,
            found_at=answer.claim_answer.found_at).SerializeToString()

    async def _uses(self, ask: Ask) -> bytes:
        req: cpb.ListCertificateUsesRequest = ask.request
        holder = holder_of(req.holder)
        authz = self._authorized(req.authorization, holder, USES_ITEM, ask.consumer, None)
        if authz.iss != ask.consumer:
            raise PermissionDenied("a holder lists the uses of their certificates through "
                                   "the platform where they authenticated: the caller "
                                   "signs that authorization itself", field="authorization.iss")
        every = sorted({t for entry in self.directory.entries.values() for t in entry.types})
        sources = self.directory.candidates(self._home(holder), every) if every else []
        if ask.only:
            sources = [f for f in sources if f.partner == ask.only]
        results = await asyncio.gather(*(self._uses_from(ask, found, holder, req.since)
                                         for found in sources), return_exceptions=True)
        out = cpb.ListCertificateUsesResponse()
        seen: dict[tuple[str, str], cpb.CertificateUse] = {}
        for found, result in zip(sources, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, GatewayError):
                    raise result
                out.unavailable.append(f"{found.partner}: {result.code.name}")
                continue
            for use in result:
                seen.setdefault((use.gateway, use.use_id), use)
        out.uses.extend(sorted(seen.values(), key=lambda u: (u.at, u.gateway, u.use_id)))
        return out.SerializeToString()

    async def _uses_from(self, ask: Ask, found: Found, holder: Holder,
                         since: float) -> list[cpb.CertificateUse]:
        if not self._local(found.partner):
            raw = await self._relay(ask, found)
            return list(self._decode(cpb.ListCertificateUsesResponse, raw, found.partner).uses)
        rows = await self.store.uses_of(self.log.holder_key(holder),
                                        issuers=frozenset({found.partner}), since=since,
                                        limit=MAX_USES)
        return [cpb.CertificateUse(use_id=u.use_id, at=u.at, method=u.method,
                                   consumer=u.consumer, item=u.item, cert_type=u.cert_type,
                                   number=u.number, issuer=u.issuer, outcome=u.outcome,
                                   gateway=self.self_id) for u in rows]

    # -- issuers -------------------------------------------------------------------------
    async def _fetch(self, ask: Ask, found: Found, holder: Holder, types: Sequence[str],
                     certificate_id: str, item: str, *, with_file: bool
                     ) -> list[cpb.Certificate]:
        """An attached issuer's certificates of the holder, checked and with where found."""
        request = cpb.FetchCertificatesRequest(
            holder=holder_message(holder), cert_types=types, certificate_id=certificate_id,
            consumer=ask.consumer, purpose_item=item, consumer_statement=ask.statement,
            with_file=with_file)
        raw = await self._source(found.partner, "fetch_certificates",
                                 request.SerializeToString())
        issued = self._decode(cpb.FetchCertificatesResponse, raw, found.partner).certificates
        where = found_message(found, self.self_id)
        out = []
        for entry in issued:
            document = self.answers.document(entry.document, entry.status_statement, found.partner)
            certificate = cpb.Certificate(
                metadata=metadata_message(document.metadata), document=entry.document,
                status_statement=entry.status_statement, found_at=where,
                file=entry.file if with_file else b"")
            self.answers.certificate(certificate, found, holder, types, certificate_id,
                                    document)
            out.append(certificate)
        return out

    async def _claim(self, ask: Ask, found: Found, holder: Holder, cert_type: str,
                     certificate_id: str, claim: cpb.CertificateClaim
                     ) -> cpb.LookupCertificateResponse:
        if self._local(found.partner):
            request = cpb.AnswerClaimRequest(
                holder=holder_message(holder), cert_type=cert_type,
                certificate_id=certificate_id, claim=claim, consumer=ask.consumer,
                consumer_statement=ask.statement)
            raw = await self._source(found.partner, "answer_claim",
                                     request.SerializeToString())
            got = self._decode(cpb.AnswerClaimResponse, raw, found.partner)
            answer = cpb.LookupCertificateResponse(claim_answer=cpb.ClaimAnswer(
                number=got.number, token=got.token,
                found_at=found_message(found, self.self_id)))
        else:
            raw = await self._relay(ask, found)
            if ask.method == "VerifyIdentity":
                identity = self._decode(cpb.VerifyIdentityResponse, raw, found.partner)
                if not identity.token:
                    raise NotFound("no such person at the home region")
                answer = cpb.LookupCertificateResponse(claim_answer=cpb.ClaimAnswer(
                    token=identity.token, found_at=identity.found_at))
            else:
                answer = self._decode(cpb.LookupCertificateResponse, raw, found.partner)
                answer.ClearField("certificate")  # a claim's answer says yes or no, no more
        checked = self.answers.claim_answer(answer.claim_answer.token, found.partner, ask.consumer,
                                     claim, cert_type, certificate_id)
        answer.claim_answer.answer = checked.answer
        answer.claim_answer.number = checked.number
        return answer

    # -- plumbing --------------------------------------------------------------------
    def _begin(self, ask: Ask, holder: Holder | None, cert_type: str, item: str) -> None:
        """The call's use rows from here on (its form is checked: it is a use)."""
        ask.uses = self.log.begin(ask.method, ask.consumer, ask.statement, holder, cert_type,
                                  item)

    def _identifier(self, text: str, cert_type: str) -> CertificateId:
        cid = parse(text, field="certificate_id")
        if cid.type_code != cert_type:
            raise InvalidArgument(f"the identifier's type is {cid.type_code}, not {cert_type}",
                                  field="certificate_id")
        return cid

    def _home(self, holder: Holder) -> str:
        return home_division(holder.id_type, holder.number, field="holder")

    def _authorized(self, token: str, holder: Holder, item: str, consumer: str,
                    cert_type: str | None) -> Any:
        if not token:
            raise PermissionDenied("no holder authorization: no token, no data",
                                   field="authorization")
        try:
            return check_authorization(token, self._keys, holder=holder, item=item,
                                       consumer=consumer, cert_type=cert_type,
                                       now=self._clock.now())
        except Unauthenticated as exc:
            raise Unauthenticated(exc.message, field="authorization") from None

    def _issuer(self, ask: Ask, cert_type: str, division: str) -> Found:
        found = self.directory.issuer_for(cert_type, division)
        ask.uses.issuer(found.partner)
        if ask.only and found.partner != ask.only:
            raise PermissionDenied(f"the consumer's gateway chose {ask.only}, the directory "
                                   f"here names {found.partner}", field="partner")
        return found

    def _gateway_of(self, partner: str) -> str:
        return self.config.partners[partner].gateway

    def _local(self, partner: str) -> bool:
        return self._gateway_of(partner) == self.self_id

    async def _source(self, partner: str, name: str, request: bytes) -> bytes:
        adapter = self._adapters.get(partner)
        if not isinstance(adapter, CertificateSource):
            raise Unavailable(f"{partner}'s adapter serves no certificates")
        try:
            async with asyncio.timeout(self._timeout):
                result: bytes = await getattr(adapter, name)(request)
                return result
        except TimeoutError:
            raise Unavailable(f"{partner} did not answer within {self._timeout:g} s") from None

    async def _relay(self, ask: Ask, found: Found) -> bytes:
        hop = self.routes.next_hop_to(self._gateway_of(found.partner))
        adapter = self._adapters.get(hop or "")
        if hop is None or not isinstance(adapter, CertificateRelay):
            raise Unavailable(f"no link path reaches {found.partner}'s gateway")
        request = cpb.ForwardCertificateCallRequest(statement=ask.statement, path=ask.path,
                                                    partner=found.partner)
        try:
            async with asyncio.timeout(self._timeout):
                return await adapter.forward_certificate_call(request.SerializeToString())
        except TimeoutError:
            raise Unavailable(f"{hop} did not answer within {self._timeout:g} s") from None

    @staticmethod
    def _decode(cls: type[Any], raw: bytes, party: str) -> Any:
        try:
            return cls.FromString(raw)
        except (DecodeError, RecursionError):
            raise Unavailable(f"{party} answered with something that is not a "
                              f"{cls.DESCRIPTOR.name}") from None


class _NotAnswered(Unavailable):
    """A far gateway reached, whose issuer could not answer a listing: ``status`` is
    what that gateway said of it, passed on in ``unavailable``."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class _Listed:
    certificate: cpb.Certificate

    @property
    def number(self) -> str:
        return self.certificate.metadata.number

