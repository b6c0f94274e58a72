"""Between the certificate messages of the wire contract and the pure types. No I/O.

Every conversion from a request checks as it goes and names the request field that is
wrong (``holder.number``, ``claim.on``), so a caller's bad input is INVALID_ARGUMENT
with its path and nothing further happens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from gateway.certificate_ids import TYPE_CODE
from gateway.errors import InvalidArgument, quote
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import certificate_pb2 as cpb

from .claims import Claim, ask
from .directory import Found
from .documents import Holder, HolderIdType, Metadata, Status, check_holder_id

ID_TYPES: Final[Mapping[pb.IdType.ValueType, HolderIdType]] = {
    pb.ID_TYPE_RESIDENT: HolderIdType.RESIDENT, pb.ID_TYPE_USCC: HolderIdType.USCC,
    pb.ID_TYPE_PASSPORT: HolderIdType.PASSPORT, pb.ID_TYPE_OTHER: HolderIdType.OTHER}
ID_TYPE_VALUES: Final[Mapping[HolderIdType, pb.IdType.ValueType]] = {
    kind: value for value, kind in ID_TYPES.items()}
STATUSES: Final[Mapping[Status, cpb.CertificateStatus.ValueType]] = {
    Status.VALID: cpb.CERTIFICATE_STATUS_VALID,
    Status.REVOKED: cpb.CERTIFICATE_STATUS_REVOKED,
    Status.SUSPENDED: cpb.CERTIFICATE_STATUS_SUSPENDED,
    Status.EXPIRED: cpb.CERTIFICATE_STATUS_EXPIRED,
    Status.NOT_YET_VALID: cpb.CERTIFICATE_STATUS_NOT_YET_VALID}
# what each claim reads of CertificateClaim: the rest must be left unset
CLAIM_PARAMS: Final = {"valid_on": ("on",), "name_is": ("text",),
                       "at_least": ("field", "value"), "age_at_least": ("years", "on")}
PARAM_FIELDS: Final = ("on", "text", "field", "value", "years")


def holder_of(message: cpb.Holder, field: str = "holder") -> Holder:
    """The holder a request names: a known id type and a well-formed, compact number."""
    kind = ID_TYPES.get(message.id_type)
    if kind is None:
        raise InvalidArgument("the holder's id type: ID_TYPE_RESIDENT, ID_TYPE_USCC, "
                              "ID_TYPE_PASSPORT or ID_TYPE_OTHER", field=f"{field}.id_type")
    check_holder_id(kind, message.number, field=f"{field}.number")
    return Holder(kind, message.number)


def holder_message(holder: Holder) -> cpb.Holder:
    return cpb.Holder(id_type=ID_TYPE_VALUES[holder.id_type], number=holder.number)


def cert_type_of(value: str, field: str = "cert_type") -> str:
    if not TYPE_CODE.fullmatch(value):
        raise InvalidArgument(f"a certificate type code is 1 to 8 digits, not {quote(value, 12)}",
                              field=field)
    return value


def item_of(value: str, field: str = "purpose_item") -> str:
    if not value:
        raise InvalidArgument("the purpose: the item code the certificate is used for",
                              field=field)
    if len(value) > 64 or not value.isascii() or not value.isprintable():
        raise InvalidArgument(f"an item code, not {quote(value, 24)}", field=field)
    return value


def claim_of(message: cpb.CertificateClaim, field: str = "claim") -> Claim:
    """The claim asked: its parameters by name; one it does not take must be unset."""
    wanted = CLAIM_PARAMS.get(message.name)
    if wanted is None:
        return ask(message.name, {}, field=field)  # names the known claims
    for name in PARAM_FIELDS:
        if name not in wanted and getattr(message, name):
            raise InvalidArgument(f"{message.name} takes no {name}", field=f"{field}.{name}")
    return ask(message.name, {name: getattr(message, name) for name in wanted}, field=field)


def claim_message(name: str, **params: object) -> cpb.CertificateClaim:
    return cpb.CertificateClaim(name=name, **params)  # type: ignore[arg-type]


def metadata_message(metadata: Metadata) -> cpb.CertificateMetadata:
    """The metadata as the answer carries it, read from the verified document."""
    return cpb.CertificateMetadata(
        type_code=metadata.type_code, number=metadata.number, name=metadata.name,
        issuer=metadata.issuer, issuer_code=metadata.issuer_code, holder=metadata.holder,
        holder_id_type=ID_TYPE_VALUES[metadata.holder_id_type], holder_id=metadata.holder_id,
        issued_on=metadata.issued_on.isoformat(), valid_from=metadata.valid_from.isoformat(),
        valid_to=metadata.valid_to.isoformat() if metadata.valid_to else "",
        status=STATUSES[metadata.status], file_sha256=metadata.file.sha256,
        file_media_type=metadata.file.media_type, file_size=metadata.file.size)


def found_message(found: Found, gateway: str) -> cpb.FoundAt:
    return cpb.FoundAt(partner=found.partner, gateway=gateway,
                       division_asked=found.division_asked, division_used=found.division_used,
                       fallback=found.fallback, prefix=found.prefix, home=found.home)
