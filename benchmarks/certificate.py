"""The certificate rows' calls and the check of their answers, without sockets.

One lookup, the same in every row: 浦东 (310115, at 310000-gw) asks for 李四's 不动产权证书
(type 401) for 不动产抵押登记 (bdc-dy); 启东 (320681, behind 320000-gw) issues it, so the
call crosses two gateways. "certificate-direct" makes the issuer's part of it alone: the
FetchCertificates call 320000-gw would make, signed with that gateway's key, carrying
the consumer's signed LookupCertificate as its statement.

Every answer is checked (a benchmark of wrong answers measures nothing): its document
must be the issuer's, verified with the issuer's key alone, for this holder and type;
every SAMPLE-th answer's fresh status statement is verified too, and must say valid.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Final

from adapters.issuer_seed import DEMO_CERTIFICATES, LI_SI
from gateway.batchsign import BatchSigner
from gateway.certificates.authorization import authorize
from gateway.certificates.documents import Status, open_document
from gateway.config import Config
from gateway.errors import GatewayError
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import certificate_pb2 as cpb
from gateway.signing import PublicKey, SigningKey, load_private_key

CONSUMER: Final = "310115"
CONSUMER_GATEWAY: Final = "310000-gw"
ISSUER: Final = "320681"
ISSUER_GATEWAY: Final = "320000-gw"
HOLDER: Final = LI_SI
CERT_TYPE: Final = "401"
ITEM: Final = "bdc-dy"
NUMBER: Final = next(c.number for c in DEMO_CERTIFICATES
                     if c.holder == HOLDER and c.type_code == CERT_TYPE)
LOOKUP: Final = "/tongban.v1.Gateway/LookupCertificate"
FETCH: Final = "/tongban.v1.PartnerPlatform/FetchCertificates"
AUTHORIZATION_TTL_S: Final = 300
RENEW_AFTER_S: Final = 120  # long before the authorization expires, however slow the run
SAMPLE: Final = 16  # every 16th answer's status statement is verified in full


class BadAnswer(Exception):
    """An answer that is not the certificate asked for: the run must fail, not count it."""


def consumer_key(config: Config) -> SigningKey:
    """The consumer's demo key: it signs its calls and, as the platform where the holder
    authenticated, the holder's authorization."""
    pem = (config.source.parent / "demo-keys" / f"{CONSUMER}.pem").read_bytes()
    return load_private_key(pem, kid=f"{CONSUMER}#k1")


class Asks:
    """What the consumer asks, with a holder authorization renewed every RENEW_AFTER_S
    (one authorization serves many lookups, as one at a window does)."""

    def __init__(self, key: SigningKey, clock: Callable[[], float] = time.time) -> None:
        self._key, self._clock = key, clock
        self._signer = BatchSigner(key, CONSUMER)
        self._signed_at = float("-inf")
        self._statement = pb.Statement()
        self.authorization = ""

    def _renew(self) -> bool:
        now = self._clock()
        if now - self._signed_at < RENEW_AFTER_S:
            return False
        self._signed_at = now
        self.authorization = authorize(self._key, holder=HOLDER.holder, item=ITEM,
                                       consumer=CONSUMER, now=now, ttl=AUTHORIZATION_TTL_S)
        return True

    def lookup(self) -> cpb.LookupCertificateRequest:
        """The consumer's LookupCertificate (its client signs each call)."""
        self._renew()
        return cpb.LookupCertificateRequest(holder=HOLDER.message(), cert_type=CERT_TYPE,
                                            purpose_item=ITEM,
                                            authorization=self.authorization)

    async def fetch(self) -> bytes:
        """The FetchCertificatesRequest the issuer's gateway would send for that lookup.
        The consumer's statement is signed once per authorization: the issuer checks it
        (its signature, the authorization in it) on every call, but keeps no replay
        list, so one serves the whole run as a new one each call would."""
        if self._renew():
            body = self.lookup().SerializeToString()
            token, _ = await self._signer.sign(aud=CONSUMER_GATEWAY, method=LOOKUP, body=body,
                                               now=self._clock(), alone=True)
            self._statement = pb.Statement(request=body, token=token)
        return cpb.FetchCertificatesRequest(
            holder=HOLDER.message(), cert_types=[CERT_TYPE], consumer=CONSUMER,
            purpose_item=ITEM, consumer_statement=self._statement).SerializeToString()


class AnswerCheck:
    """Checks every answer against the issuer's keys alone (docs/certificates.md, what
    the consumer's gateway checks). A document is signed once and never changes, so a
    token verified before is compared, not verified again; the status statement is
    fresh each call and verified in every SAMPLE-th answer."""

    def __init__(self, issuer_keys: Sequence[PublicKey], *, sample: int = SAMPLE,
                 clock: Callable[[], float] = time.time) -> None:
        self._keys = tuple(issuer_keys)
        self._sample, self._clock = sample, clock
        self._documents: set[str] = set()
        self.checked = self.in_full = 0

    def _keys_for(self, owner: str) -> Sequence[PublicKey]:
        return self._keys if owner == ISSUER else ()

    def issued(self, document: str, status_statement: str) -> None:
        """One certificate as the issuer signed it: its document and status statement."""
        self.checked += 1
        full = self.checked % self._sample == 0
        if document in self._documents and not full:
            if not status_statement:
                raise BadAnswer("an answer without a status statement")
            return
        try:
            opened = open_document(document, self._keys_for, now=self._clock(),
                                   status=status_statement if full else None)
        except GatewayError as exc:
            raise BadAnswer(f"the document does not verify: {exc.message}") from None
        got = opened.metadata
        if opened.iss != ISSUER or got.number != NUMBER or got.holder_ref != HOLDER.holder \
                or got.status is not Status.VALID:
            raise BadAnswer(f"not {HOLDER.name}'s valid certificate {NUMBER}: {got.number} "
                            f"by {opened.iss}, {got.status.value}")
        self._documents.add(document)
        self.in_full += full

    def lookup(self, answer: cpb.LookupCertificateResponse) -> None:
        """A LookupCertificate answer: the certificate, as found at the issuer."""
        got = answer.certificate
        where = got.found_at
        if (got.metadata.number != NUMBER or got.metadata.status
                != cpb.CERTIFICATE_STATUS_VALID or where.partner != ISSUER
                or where.gateway != ISSUER_GATEWAY):
            status = cpb.CertificateStatus.Name(got.metadata.status)
            raise BadAnswer(f"not {NUMBER} valid from {ISSUER} at {ISSUER_GATEWAY}: "
                            f"{got.metadata.number or 'nothing'}, {status}, from "
                            f"{where.partner or 'nowhere'}")
        self.issued(got.document, got.status_statement)

    def fetched(self, raw: bytes) -> None:
        """A FetchCertificates answer: exactly the one certificate."""
        answer = cpb.FetchCertificatesResponse.FromString(raw)
        if len(answer.certificates) != 1:
            raise BadAnswer(f"{len(answer.certificates)} certificates, not 1")
        self.issued(answer.certificates[0].document, answer.certificates[0].status_statement)
