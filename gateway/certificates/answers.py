"""What an issuer's answer must be, checked with the issuer's public keys alone. No I/O.

The consumer's gateway checks every answer end to end, whatever gateways it passed
(docs/certificates.md, The calls): documents and their status statements, claim
answers, status answers. Each failure is UNAVAILABLE naming the issuer: the far side
answered something that is not what it was asked, which the consumer cannot fix.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence

from gateway.certificate_ids import parse
from gateway.errors import GatewayError, Unavailable
from gateway.pb.tongban.v1 import certificate_pb2 as cpb
from gateway.types import Clock
from gateway.verifier import KeyLookup

from . import claims as claim_rules
from .directory import Found
from .documents import Document, Holder, Status, read_document, report, verify_status
from .wire import STATUSES, claim_of, found_message, metadata_message


class DocumentCache:
    """Verified documents by their exact token. A document never changes and its check
    does not depend on the time (the status does, and is never cached), so checking the
    same signature twice buys nothing. LRU, bounded; size 0 keeps nothing."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._kept: OrderedDict[str, Document] = OrderedDict()
        self.hits = self.misses = 0

    def read(self, token: str, keys_for: KeyLookup, now: float) -> Document:
        kept = self._kept.get(token)
        if kept is not None:
            self.hits += 1
            self._kept.move_to_end(token)
            return kept
        self.misses += 1
        document = read_document(token, keys_for, now=now)
        if self.size:
            self._kept[token] = document
            if len(self._kept) > self.size:
                self._kept.popitem(last=False)
        return document


class AnswerChecks:
    """The checks, with the federation's platform keys, a clock and the document cache."""

    def __init__(self, keys_for: KeyLookup, clock: Clock, documents: DocumentCache) -> None:
        self._keys, self._clock, self.documents = keys_for, clock, documents

    def claim_answer(self, token: str, issuer: str, consumer: str,
                      asked: cpb.CertificateClaim, cert_type: str,
                      certificate_id: str) -> claim_rules.Answer:
        try:
            got = claim_rules.verify_answer(token, self._keys, consumer=consumer,
                                            now=self._clock.now())
        except GatewayError as exc:
            raise Unavailable(f"{issuer}'s claim answer does not verify: {exc.message}"
                              ) from None
        number = parse(got.number, field="number")
        if (got.iss != issuer or number.type_code != cert_type
                or (certificate_id and got.number != certificate_id)
                or claim_rules.to_json(got.claim) != claim_rules.to_json(claim_of(asked))):
            raise Unavailable(f"{issuer}'s claim answer is not about what was asked")
        return got

    def status(self, statement: str, issuer: str, number: str,
                      document: Document | None) -> Status:
        now = self._clock.now()
        try:
            status = verify_status(statement, self._keys, now=now)
            if document is not None:
                return report(document, self._keys, now=now, status=statement).metadata.status
        except GatewayError as exc:
            raise Unavailable(f"{issuer}'s status statement does not verify: {exc.message}"
                              ) from None
        if status.iss != issuer or status.number != number:
            raise Unavailable(f"{issuer}'s status statement is not about {number}")
        return status.status

    def document(self, token: str, status: str, issuer: str) -> Document:
        """A document from an issuer's answer, with the issuer's statement of its status
        now: an answer without one could pass off a revoked certificate as valid."""
        if not status:
            raise Unavailable(f"a certificate from {issuer} comes without its status "
                              "statement")
        now = self._clock.now()
        try:
            read = self.documents.read(token, self._keys, now)
            return report(read, self._keys, now=now, status=status)
        except GatewayError as exc:
            raise Unavailable(f"a document from {issuer} does not verify: {exc.message}"
                              ) from None

    def relayed(self, got: cpb.Certificate, found: Found, found_gateway: str,
                holder: Holder, types: Sequence[str], certificate_id: str
                ) -> cpb.Certificate:
        """A certificate another gateway passed on, checked, as this gateway passes it
        on: only the fields the contract has, found_at exactly where it was sought."""
        got.DiscardUnknownFields()
        self.certificate(got, found, holder, types, certificate_id)
        if got.found_at != found_message(found, found_gateway):
            raise Unavailable(f"the answer from {found.partner} says it was found elsewhere")
        return got

    def certificate(self, got: cpb.Certificate, found: Found, holder: Holder,
                           types: Sequence[str], certificate_id: str,
                           document: Document | None = None) -> None:
        """What an issuer's answer must be, checked with its key alone: its document and
        status statement (unless ``document`` is them, checked already), for this
        holder, of an asked type, the one named if one was; the metadata beside it
        exactly what the document says; the file its hash."""
        if document is None:
            document = self.document(got.document, got.status_statement, found.partner)
        metadata = document.metadata
        if document.iss != found.partner or got.found_at.partner != found.partner:
            raise Unavailable(f"a certificate from {found.partner} is signed by {document.iss}")
        if metadata.holder_ref != holder or metadata.type_code not in types \
                or (certificate_id and metadata.number != certificate_id):
            raise Unavailable(f"{found.partner} answered with a certificate that was not asked")
        if got.metadata != metadata_message(metadata):
            raise Unavailable(f"the metadata from {found.partner} is not what its document says")
        if got.file and (len(got.file) != metadata.file.size
                         or hashlib.sha256(got.file).hexdigest() != metadata.file.sha256):
            raise Unavailable(f"the file from {found.partner} is not the one its "
                                  "document names")

    def verified(self, number: str, reported: Status, statement: str, found: Found,
                  gateway: str, document: Document | None) -> cpb.VerifyCertificateResponse:
        out = cpb.VerifyCertificateResponse(
            number=number, status=STATUSES[reported], status_statement=statement,
            found_at=found_message(found, gateway))
        if document is not None:
            opened = report(document, self._keys, now=self._clock.now(), status=statement)
            out.metadata.CopyFrom(metadata_message(opened.metadata))
        return out

