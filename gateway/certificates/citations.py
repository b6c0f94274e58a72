"""A case that cites certificates instead of uploading materials (issue #13 §5). No I/O.

Each citation names one of the item's required materials and carries the issuer's
signed document. Every gateway on the path and the target check, with the issuer's
public key alone and the same result at every hop (nothing here depends on the clock
beyond the document's own signing time): the document verifies; the directory names
its signer as the platform that issues its type for its issuer's division (no other
platform may vouch for a 营业执照); the item accepts that type for that material; its
holder is the case's applicant; it was not signed revoked. Whether it is still valid
today is the target's question (VerifyCertificate asks the issuer), since a gateway a
day later would otherwise refuse a case the origin admitted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from gateway.config import Item
from gateway.errors import FailedPrecondition, GatewayError, InvalidArgument, PermissionDenied
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.verifier import KeyLookup

from .directory import Directory
from .documents import Document, Status, read_document
from .wire import ID_TYPES

MAX_CITATIONS: Final = 32


def check_citations(citations: Sequence[pb.CertificateCitation], item: Item,
                    applicant: pb.Applicant, directory: Directory, keys_for: KeyLookup, *,
                    at: float, prefix: str = "") -> list[Document]:
    """The cited documents, each checked as above; the first fault refused with its
    field path (``certificates[1].document``)."""
    if len(citations) > MAX_CITATIONS:
        raise InvalidArgument(f"at most {MAX_CITATIONS} certificates",
                              field=f"{prefix}certificates")
    out: list[Document] = []
    materials: set[str] = set()
    for i, citation in enumerate(citations):
        where = f"{prefix}certificates[{i}]"
        types = item.certificates.get(citation.material)
        if types is None:
            raise PermissionDenied(f"item {item.code} accepts no certificate for material "
                                   f"{citation.material[:32]!r}", field=f"{where}.material")
        if citation.material in materials:
            raise InvalidArgument("this material is cited twice", field=f"{where}.material")
        materials.add(citation.material)
        try:
            document = read_document(citation.document, keys_for, now=at)
        except GatewayError as exc:
            raise PermissionDenied(f"the document does not verify: {exc.message}",
                                   field=f"{where}.document") from None
        metadata = document.metadata
        if metadata.type_code not in types:
            raise PermissionDenied(f"a certificate of type {metadata.type_code} does not "
                                   f"replace {citation.material[:32]!r}",
                                   field=f"{where}.document")
        try:
            issuer = directory.issuer_for(metadata.type_code,
                                          metadata.identifier.issuer_division).partner
        except GatewayError:
            issuer = ""
        if issuer != document.iss:
            raise PermissionDenied(f"{document.iss} does not issue type {metadata.type_code} "
                                   "for that issuer code", field=f"{where}.document")
        if ID_TYPES.get(applicant.id_type) is not metadata.holder_id_type \
                or applicant.id_number != metadata.holder_id:
            raise PermissionDenied("the certificate's holder is not the applicant",
                                   field=f"{where}.document")
        if metadata.status is Status.REVOKED:
            raise FailedPrecondition(f"certificate {metadata.number} is revoked",
                                     field=f"{where}.document")
        out.append(document)
    return out
