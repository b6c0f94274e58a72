"""What an issuing platform reads from a certificate request, and the consumer's say it
checks before it hands anything out. No I/O.

A gateway asks an issuer (PartnerPlatform FetchCertificates, AnswerClaim) on behalf of a
consumer platform, and hands over the consumer's own signed request
(``consumer_statement``): a LookupCertificate, ListCertificates or VerifyIdentity call
that carries the holder's authorization. The gateway has checked all of it already; the
issuer checks it again (defense in depth, issue #13 §4): a gateway that is wrong, or not
honest, gets no document and no answer the consumer did not ask for under a holder's
authorization. Every refusal names the field; holder ids appear masked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from google.protobuf.message import DecodeError, Message

from gateway.certificate_ids import TYPE_CODE, parse
from gateway.certificates.authorization import Authorization, check_authorization
from gateway.certificates.claims import Claim, ask
from gateway.certificates.documents import Holder
from gateway.certificates.wire import claim_of, holder_of
from gateway.errors import InvalidArgument, PermissionDenied, Unauthenticated, quote
from gateway.evidence import Statements
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import certificate_pb2 as cp
from gateway.verifier import KeyLookup

SERVICE: Final = "/tongban.v1.Gateway/"
LOOKUP: Final = SERVICE + "LookupCertificate"
LIST: Final = SERVICE + "ListCertificates"
VERIFY_IDENTITY: Final = SERVICE + "VerifyIdentity"
# which consumer calls may lead to which issuer call: documents only for a lookup without
# a claim or a listing; a yes/no answer only for a lookup with a claim or an identity check
FETCHES: Final = frozenset({LOOKUP, LIST})
CLAIMS: Final = frozenset({LOOKUP, VERIFY_IDENTITY})
MAX_TYPES: Final = 32  # certificate types one fetch may ask for
STATEMENT: Final = "consumer_statement"

def cert_types_of(types: Sequence[str], *, field: str = "cert_types") -> tuple[str, ...]:
    """1 to MAX_TYPES distinct type codes, in the order asked."""
    if not 0 < len(types) <= MAX_TYPES or len(set(types)) != len(types) \
            or not all(TYPE_CODE.fullmatch(t) for t in types):
        raise InvalidArgument(f"1 to {MAX_TYPES} distinct certificate type codes (1 to 8 "
                              "digits)", field=field)
    return tuple(types)


def certificate_id_of(text: str, *, field: str = "certificate_id") -> str | None:
    """The identifier asked for, canonical, or None where none is."""
    return str(parse(text, field=field)) if text else None


@dataclass(frozen=True, slots=True)
class ConsumerCall:
    """A consumer's verified call: who made it, which method, what it asked."""

    consumer: str
    method: str
    request: Message


_MESSAGES: Final[Mapping[str, type[Message]]] = {
    LOOKUP: cp.LookupCertificateRequest, LIST: cp.ListCertificatesRequest,
    VERIFY_IDENTITY: cp.VerifyIdentityRequest}


def consumer_call(statements: Statements, statement: pb.Statement, *, consumer: str,
                  methods: frozenset[str]) -> ConsumerCall:
    """The consumer's own signed call, made by ``consumer`` with one of ``methods``;
    PermissionDenied (field ``consumer_statement``) otherwise."""
    if not consumer:
        raise InvalidArgument("the consumer's partner id", field="consumer")
    claims = statements.check(statement, methods=methods, field=STATEMENT)
    if claims.iss != consumer:
        raise PermissionDenied(f"the consumer's statement is signed by "
                               f"{quote(claims.iss, 24)}, not {quote(consumer, 24)}",
                               field=STATEMENT)
    try:
        request = _MESSAGES[claims.mth].FromString(statement.request)
    except DecodeError:
        raise PermissionDenied(f"the consumer's statement is not a {claims.mth[len(SERVICE):]} "
                               "request", field=STATEMENT) from None
    return ConsumerCall(consumer, claims.mth, request)


def _authorized(call: ConsumerCall, holder: Holder, keys_for: KeyLookup, *,
                cert_type: str | None, now: float) -> Authorization:
    """The holder's authorization in the consumer's call: for this holder (as the call
    names it too), the call's item and the consumer."""
    request = call.request
    assert isinstance(request, cp.LookupCertificateRequest | cp.ListCertificatesRequest
                      | cp.VerifyIdentityRequest)
    try:
        asked = holder_of(request.holder)
    except InvalidArgument:
        asked = None
    if asked != holder:
        raise PermissionDenied(f"the consumer asked about another holder than "
                               f"{holder.masked()}", field=f"{STATEMENT}.holder")
    try:
        return check_authorization(request.authorization, keys_for, holder=holder,
                                   item=request.purpose_item, consumer=call.consumer,
                                   cert_type=cert_type, now=now)
    except Unauthenticated as exc:
        # the gateway's own call is authenticated; it is the consumer's token that is
        # bad, and that is not the gateway's signature to retry
        raise PermissionDenied(f"the holder's authorization does not verify: {exc.message}",
                               field=f"{STATEMENT}.authorization") from None


def _differs(what: str) -> PermissionDenied:
    return PermissionDenied(f"the consumer asked for another {what}", field=f"{STATEMENT}.{what}")


def check_fetch(call: ConsumerCall, request: cp.FetchCertificatesRequest, holder: Holder,
                types: tuple[str, ...], certificate_id: str | None, keys_for: KeyLookup, *,
                now: float) -> Authorization:
    """Documents go out only as the consumer asked: a lookup without a claim (its one type,
    its certificate if it named one, the file if it asked) or a listing (of its types, if
    it named any; never files), for its item, under the holder's authorization."""
    asked = call.request
    if isinstance(asked, cp.LookupCertificateRequest):
        if asked.HasField("claim"):
            raise PermissionDenied("the consumer asked a yes/no claim, not for documents",
                                   field=f"{STATEMENT}.claim")
        if types != (asked.cert_type,):
            raise _differs("cert_type")
        if certificate_id != certificate_id_of(asked.certificate_id,
                                               field=f"{STATEMENT}.certificate_id"):
            raise _differs("certificate_id")
        if request.with_file and not asked.with_file:
            raise _differs("with_file")
        cert_type: str | None = asked.cert_type
    elif isinstance(asked, cp.ListCertificatesRequest):
        if asked.cert_types and not set(types) <= set(asked.cert_types):
            raise _differs("cert_types")
        if certificate_id is not None or request.with_file:
            raise PermissionDenied("a listing names no certificate and returns no files",
                                   field=STATEMENT)
        cert_type = None
    else:  # consumer_call admits only FETCHES here
        raise PermissionDenied("an identity check returns no documents", field=STATEMENT)
    if request.purpose_item != asked.purpose_item:
        raise _differs("purpose_item")
    authz = _authorized(call, holder, keys_for, cert_type=cert_type, now=now)
    if authz.cert_types is not None and not set(types) <= authz.cert_types:
        raise PermissionDenied("the holder's authorization does not name every type asked",
                               field="authorization.cts")
    return authz


def check_claim(call: ConsumerCall, request: cp.AnswerClaimRequest, holder: Holder,
                claim: Claim, certificate_id: str | None, keys_for: KeyLookup, *,
                now: float) -> Authorization:
    """A yes/no answer goes out only to the claim the consumer asked: a lookup's claim
    (its type, its certificate if it named one) or an identity check's name."""
    asked = call.request
    if isinstance(asked, cp.LookupCertificateRequest):
        if not asked.HasField("claim") \
                or claim != claim_of(asked.claim, field=f"{STATEMENT}.claim"):
            raise _differs("claim")
        if request.cert_type != asked.cert_type:
            raise _differs("cert_type")
        if certificate_id != certificate_id_of(asked.certificate_id,
                                               field=f"{STATEMENT}.certificate_id"):
            raise _differs("certificate_id")
    elif isinstance(asked, cp.VerifyIdentityRequest):
        if claim != ask("name_is", {"text": asked.name}, field=f"{STATEMENT}.name"):
            raise _differs("name")
        if certificate_id is not None:
            raise _differs("certificate_id")
    else:  # consumer_call admits only CLAIMS here
        raise PermissionDenied("a listing asks no claim", field=STATEMENT)
    return _authorized(call, holder, keys_for, cert_type=request.cert_type, now=now)
