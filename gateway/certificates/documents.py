"""Certificate metadata (GB/T 36903 style), issuer-signed documents and status answers. No I/O.

A *document* is a compact JWS (``typ`` ``tongban-cert+jwt``) by the issuing platform
over the canonical JSON of the metadata and the rendered file's hash. It says what was
true when it was signed, for ever: any consumer checks it offline with the issuer's
public keys (the JWKS), years later included.

Revocation is a later fact, so it cannot be in a document signed before it. The issuer
answers it online, as a *status statement* (``typ`` ``tongban-cert-status+jwt``): the
certificate's number, its status now, signed by the same platform, valid for at most
300 s. A consumer that holds a fresh one passes it to :func:`verify_document`, which
reports the later word; without one it reports what the document and the calendar say,
and a caller that must not accept a revoked certificate asks the issuer first (the
VerifyCertificate call of issue #13 returns the statement). docs/certificates.md has
the formats and a worked example.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from enum import StrEnum
from typing import Any, Final

from gateway.certificate_ids import TYPE_CODE, CertificateId, parse
from gateway.errors import FailedPrecondition, GatewayError, InvalidArgument, Unauthenticated, quote
from gateway.identifiers import check_credit_code, check_resident_id, mask_id
from gateway.signing import SigningKey, compact
from gateway.verifier import KeyLookup

from .tokens import check_members, check_window, is_int, open_token

TYP: Final = "tongban-cert+jwt"
STATUS_TYP: Final = "tongban-cert-status+jwt"
STATUS_TTL_S: Final = 300  # longest life of a status statement: "revoked" is seen soon
# validity dates are calendar days in China Standard Time (UTC+8): a certificate valid
# to 2036-01-04 is valid until 2036-01-05T00:00:00+08:00
CHINA: Final = timezone(timedelta(hours=8), "CST")
MEDIA_TYPES: Final = frozenset({"application/pdf", "application/ofd"})  # OFD: GB/T 33190
SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")
DATE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
MAX_FILE_SIZE: Final = 2**40  # 1 TiB: any real rendering, and exact as a JSON number
OTHER_ID: Final = re.compile(r"[0-9A-Za-z\-]{1,32}")  # passports and other documents


class Status(StrEnum):
    """A certificate's status (GB/T 36903 证照状态), and what verification reports.

    An issuer signs VALID, REVOKED (吊销/注销, final), SUSPENDED (暂扣/冻结) or EXPIRED
    (declared so early); NOT_YET_VALID is only ever reported, for a certificate whose
    validity starts after ``now``.
    """

    VALID = "valid"
    REVOKED = "revoked"
    EXPIRED = "expired"
    SUSPENDED = "suspended"
    NOT_YET_VALID = "not_yet_valid"


SIGNED_STATUSES: Final = frozenset(Status) - {Status.NOT_YET_VALID}


class HolderIdType(StrEnum):
    """The holder's id scheme; ``tongban.v1.IdType`` by name (``ID_TYPE_RESIDENT`` →
    ``resident``)."""

    RESIDENT = "resident"  # 居民身份证, GB 11643
    USCC = "uscc"  # 统一社会信用代码, GB 32100
    PASSPORT = "passport"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Holder:
    """Who a certificate (or an authorization) is about: id scheme and number, checked."""

    id_type: HolderIdType
    number: str

    def __post_init__(self) -> None:
        check_holder_id(self.id_type, self.number, field="holder_id")

    def masked(self) -> str:
        return f"{self.id_type.value}:{mask_id(self.number)}"


def check_holder_id(id_type: object, number: object, *, field: str) -> None:
    if not isinstance(id_type, HolderIdType):
        raise InvalidArgument(f"unknown holder id type {quote(id_type, 16)}",
                              field=f"{field}_type")
    if not isinstance(number, str):
        raise InvalidArgument("the holder id is a string", field=field)
    if id_type is HolderIdType.RESIDENT:
        if check_resident_id(number, field=field) != number:
            raise InvalidArgument("a resident id number is written compact", field=field)
    elif id_type is HolderIdType.USCC:
        if check_credit_code(number, field=field) != number:
            raise InvalidArgument("a credit code is written compact, upper case", field=field)
    elif not OTHER_ID.fullmatch(number):
        raise InvalidArgument("the holder id is 1 to 32 of 0-9, A-Z, a-z and -", field=field)


@dataclass(frozen=True, slots=True)
class RenderedFile:
    """The rendered certificate (PDF or OFD), named by content: it travels apart from the
    document, and whoever receives the bytes checks them against ``sha256``."""

    sha256: str  # lower-case hex of SHA-256 over the file's bytes
    media_type: str  # application/pdf or application/ofd
    size: int  # bytes

    def __post_init__(self) -> None:
        if not isinstance(self.sha256, str) or not SHA256_HEX.fullmatch(self.sha256):
            raise InvalidArgument("64 lower-case hex digits of SHA-256", field="file.sha256")
        if self.media_type not in MEDIA_TYPES:
            raise InvalidArgument(f"application/pdf or application/ofd, not "
                                  f"{quote(self.media_type, 32)}", field="file.media_type")
        if not is_int(self.size) or not 0 < self.size <= MAX_FILE_SIZE:
            raise InvalidArgument(f"1 to {MAX_FILE_SIZE} bytes", field="file.size")


def _text(value: object, limit: int, field: str) -> None:
    # printable only: no control character or lone surrogate, so the canonical JSON is
    # the same in every language (RFC 8785) and a log line stays one line
    if not isinstance(value, str) or not 0 < len(value) <= limit or not value.isprintable() \
            or value != value.strip():
        raise InvalidArgument(f"1 to {limit} printable characters, no outer spaces",
                              field=field)


@dataclass(frozen=True, slots=True, kw_only=True)
class Metadata:
    """A certificate's metadata after GB/T 36903, and its rendered file by hash.

    ``number`` is the identifier (gateway/certificate_ids.py); its type code and issuer
    code are this certificate's. ``valid_to`` None is 长期 (no end). Every field is
    checked on construction (InvalidArgument naming it).
    """

    type_code: str  # 证照类型代码
    number: str  # 证照编号: 1.2.156.3005.2.<type>.<issuer code>.<serial>.<version>.<check>
    name: str  # 证照名称, e.g. 营业执照
    issuer: str  # 发证机构
    issuer_code: str  # 发证机构代码 (GB 32100)
    holder: str  # 持证主体
    holder_id_type: HolderIdType  # 持证主体代码类型
    holder_id: str  # 持证主体代码
    issued_on: date  # 颁证日期
    valid_from: date  # 有效期起始
    valid_to: date | None  # 有效期截止 (None: 长期)
    status: Status  # 证照状态
    file: RenderedFile

    def __post_init__(self) -> None:
        if not isinstance(self.type_code, str) or not TYPE_CODE.fullmatch(self.type_code):
            raise InvalidArgument("the type code is 1 to 8 digits", field="type_code")
        if not isinstance(self.issuer_code, str) \
                or check_credit_code(self.issuer_code, field="issuer_code") != self.issuer_code:
            raise InvalidArgument("a credit code is written compact", field="issuer_code")
        cid = parse(self.number, field="number") if isinstance(self.number, str) else None
        if cid is None:
            raise InvalidArgument("the number is a certificate identifier", field="number")
        if cid.type_code != self.type_code:
            raise InvalidArgument(f"the identifier's type code {cid.type_code} is not the "
                                  f"certificate's {self.type_code}", field="number")
        if cid.issuer_code != self.issuer_code:
            raise InvalidArgument(f"the identifier's issuer code {cid.issuer_code} is not "
                                  f"the issuer's {self.issuer_code}", field="number")
        _text(self.name, 64, "name")
        _text(self.issuer, 128, "issuer")
        _text(self.holder, 128, "holder")
        check_holder_id(self.holder_id_type, self.holder_id, field="holder_id")
        for name in ("issued_on", "valid_from"):
            if type(getattr(self, name)) is not date:
                raise InvalidArgument("a date", field=name)
        if self.valid_to is not None and (type(self.valid_to) is not date
                                          or self.valid_to < self.valid_from):
            raise InvalidArgument("a date not before valid_from, or none (长期)",
                                  field="valid_to")
        if not isinstance(self.status, Status):
            raise InvalidArgument("a status", field="status")
        if not isinstance(self.file, RenderedFile):
            raise InvalidArgument("the rendered file's hash, type and size", field="file")

    @property
    def identifier(self) -> CertificateId:
        return parse(self.number, field="number")

    @property
    def holder_ref(self) -> Holder:
        return Holder(self.holder_id_type, self.holder_id)

    def status_at(self, now: float) -> Status:
        """The signed status, or the one the calendar gives: a certificate outside its
        validity is never VALID."""
        if self.status is not Status.VALID:
            return self.status
        if now < datetime.combine(self.valid_from, time(), CHINA).timestamp():
            return Status.NOT_YET_VALID
        if self.valid_to is not None and now >= datetime.combine(
                self.valid_to + timedelta(days=1), time(), CHINA).timestamp():
            return Status.EXPIRED
        return Status.VALID

    def to_json(self) -> dict[str, Any]:
        """The JSON object of the metadata (docs/certificates.md, Documents)."""
        return {"type_code": self.type_code, "number": self.number, "name": self.name,
                "issuer": self.issuer, "issuer_code": self.issuer_code,
                "holder": self.holder, "holder_id_type": self.holder_id_type.value,
                "holder_id": self.holder_id, "issued_on": self.issued_on.isoformat(),
                "valid_from": self.valid_from.isoformat(),
                "valid_to": self.valid_to.isoformat() if self.valid_to else None,
                "status": self.status.value,
                "file": {"sha256": self.file.sha256, "media_type": self.file.media_type,
                         "size": self.file.size}}


METADATA_MEMBERS: Final = frozenset({"type_code", "number", "name", "issuer", "issuer_code",
                                     "holder", "holder_id_type", "holder_id", "issued_on",
                                     "valid_from", "valid_to", "status", "file"})
FILE_MEMBERS: Final = frozenset({"sha256", "media_type", "size"})


def canonical(value: object) -> bytes:
    """Canonical JSON (RFC 8785 for the values used here: strings, integers, null):
    members sorted, no spaces, UTF-8 unescaped. What an issuer signs, so the worked
    example is reproducible; a verifier reads the signed bytes and never re-serialises."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def issue(metadata: Metadata, key: SigningKey, *, now: float) -> str:
    """The document: a compact JWS by the issuing platform's key (kid ``<partner>#<key>``)
    over ``{"iss", "iat"} ∪ metadata``. NOT_YET_VALID is reported, never signed."""
    _signed_status(metadata.status)
    payload = {"iss": key.kid.split("#", 1)[0], "iat": int(now)} | metadata.to_json()
    return compact(key, TYP, canonical(payload))


def _signed_status(status: Status) -> None:
    if status not in SIGNED_STATUSES:
        raise InvalidArgument(f"one of {', '.join(sorted(SIGNED_STATUSES))}", field="status")


def parse_date(value: object, field: str) -> date:
    """A JSON date YYYY-MM-DD (fullmatch) that is a calendar date; else INVALID_ARGUMENT."""
    if not isinstance(value, str) or not DATE.fullmatch(value):
        raise InvalidArgument("a date YYYY-MM-DD", field=field)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidArgument("not a calendar date", field=field) from None


def metadata_from_json(data: dict[str, Any]) -> Metadata:
    """The metadata of a document's claims (members as in to_json); InvalidArgument
    naming the first bad field."""
    file = data["file"]
    if not isinstance(file, dict) or file.keys() != FILE_MEMBERS:
        raise InvalidArgument("an object of sha256, media_type and size", field="file")
    try:
        id_type = HolderIdType(data["holder_id_type"])
    except (ValueError, TypeError):
        raise InvalidArgument("unknown holder id type", field="holder_id_type") from None
    try:
        status = Status(data["status"])
    except (ValueError, TypeError):
        raise InvalidArgument("unknown status", field="status") from None
    _signed_status(status)
    valid_to = data["valid_to"]
    return Metadata(
        type_code=data["type_code"], number=data["number"], name=data["name"],
        issuer=data["issuer"], issuer_code=data["issuer_code"], holder=data["holder"],
        holder_id_type=id_type, holder_id=data["holder_id"],
        issued_on=parse_date(data["issued_on"], "issued_on"),
        valid_from=parse_date(data["valid_from"], "valid_from"),
        valid_to=None if valid_to is None else parse_date(valid_to, "valid_to"), status=status,
        file=RenderedFile(file["sha256"], file["media_type"], file["size"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class CertStatus:
    """The issuer's signed answer about a certificate now (a status statement)."""

    iss: str  # the issuing platform
    number: str
    status: Status
    iat: int
    exp: int


def attest_status(number: str, status: Status, key: SigningKey, *, now: float,
                  ttl: int = STATUS_TTL_S) -> str:
    """The issuer's status statement for certificate ``number`` at ``now``."""
    parse(number, field="number")
    _signed_status(status)
    if not 0 < ttl <= STATUS_TTL_S:
        raise InvalidArgument(f"1..{STATUS_TTL_S} s", field="ttl")
    iat = int(now)
    payload = {"iss": key.kid.split("#", 1)[0], "iat": iat, "exp": iat + ttl,
               "number": number, "status": status.value}
    return compact(key, STATUS_TYP, canonical(payload))


_STATUS_MEMBERS: Final = frozenset({"iss", "iat", "exp", "number", "status"})


def verify_status(token: str, keys_for: KeyLookup, *, now: float) -> CertStatus:
    """Check a status statement: signature, the key's window at ``iat``, current at
    ``now`` (``0 < exp − iat ≤ 300``, 60 s skew). Unauthenticated otherwise."""
    claims, key = open_token(token, keys_for, STATUS_TYP, "status statement")
    check_members(claims, _STATUS_MEMBERS, frozenset(), "status statement")
    exp = check_window(claims["iat"], claims["exp"], now, STATUS_TTL_S, "status statement")
    try:
        number = str(parse(claims["number"], field="number")) \
            if isinstance(claims["number"], str) else ""
        status = Status(claims["status"])
    except (InvalidArgument, ValueError, TypeError):
        raise Unauthenticated("the status statement's number or status is malformed") from None
    if not number or status not in SIGNED_STATUSES:
        raise Unauthenticated("the status statement's number or status is malformed")
    return CertStatus(iss=key.owner, number=number, status=status, iat=claims["iat"], exp=exp)


_DOCUMENT_MEMBERS: Final = METADATA_MEMBERS | {"iss", "iat"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Document:
    """A verified document: its metadata with the status reported at ``now``, who signed
    it and when, and the status statement that was applied (if any)."""

    metadata: Metadata
    iss: str
    iat: int
    kid: str
    status: CertStatus | None = None


def verify_document(token: str, keys_for: KeyLookup, *, now: float,
                    status: str | None = None) -> Metadata:
    """The metadata of an issuer-signed document, its ``status`` the one that holds at
    ``now`` (see :func:`open_document`, which also returns who signed it)."""
    return open_document(token, keys_for, now=now, status=status).metadata


def open_document(token: str, keys_for: KeyLookup, *, now: float,
                  status: str | None = None) -> Document:
    """Check a document offline with only the issuer's public keys; Unauthenticated for
    anything forged, malformed or inconsistent.

    Checked: the JWS (typ ``tongban-cert+jwt``, kid, alg, signature); ``iss`` owns the
    key and the key was valid at ``iat``; ``iat ≤ now + 60 s``; exactly the members of
    a document; every metadata field (the identifier's check character, its type code
    and issuer code equal to the metadata's). Reported, not raised: the status at
    ``now`` — a fresh status statement of the same issuer about this number if given
    (REVOKED in the document stays final), else the signed status; then a VALID
    certificate outside its validity dates is EXPIRED or NOT_YET_VALID.
    """
    return report(read_document(token, keys_for, now=now), keys_for, now=now, status=status)


def read_document(token: str, keys_for: KeyLookup, *, now: float) -> Document:
    """The signature and form checks of :func:`open_document`, its metadata's status the
    one signed. What it returns never changes for a token (the keys being the same), so
    a gateway may keep it: only :func:`report` depends on the time and on the issuer's
    later word."""
    claims, key = open_token(token, keys_for, TYP, "certificate document")
    check_members(claims, _DOCUMENT_MEMBERS, frozenset(), "certificate document")
    iat = claims["iat"]
    if iat > now + 60:
        raise Unauthenticated(f"the certificate document is signed {int(iat - now)} s in the "
                              "future")
    try:
        metadata = metadata_from_json(claims)
    except (InvalidArgument, TypeError) as exc:
        where = exc.field if isinstance(exc, GatewayError) else "a field"
        why = exc.message if isinstance(exc, GatewayError) else "of the wrong JSON type"
        raise Unauthenticated(f"the certificate document's {where} is bad: {why}") from None
    return Document(metadata=metadata, iss=key.owner, iat=iat, kid=key.kid)


def report(document: Document, keys_for: KeyLookup, *, now: float,
           status: str | None = None) -> Document:
    """A read document with the status that holds at ``now`` (see open_document)."""
    metadata, answer = document.metadata, None
    if status is not None:
        answer = verify_status(status, keys_for, now=now)
        if answer.iss != document.iss:
            raise Unauthenticated(f"the status statement is by {answer.iss}, the document "
                                  f"by {document.iss}")
        if answer.number != metadata.number:
            raise Unauthenticated("the status statement is about another certificate")
        if metadata.status is not Status.REVOKED:
            metadata = with_status(metadata, answer.status)
    metadata = with_status(metadata, metadata.status_at(now))
    return dataclasses.replace(document, metadata=metadata, status=answer)


_METADATA_FIELDS: Final = tuple(f.name for f in dataclasses.fields(Metadata))


def with_status(metadata: Metadata, status: Status) -> Metadata:
    """The same checked metadata with another reported status. Not dataclasses.replace:
    that would run every field's check again (credit codes, the identifier's check
    character), which is most of a lookup's cost at a gateway (docs/benchmarks.md)."""
    if metadata.status is status:
        return metadata
    copy = object.__new__(Metadata)
    for name in _METADATA_FIELDS:
        object.__setattr__(copy, name, getattr(metadata, name))
    object.__setattr__(copy, "status", status)
    return copy


def require_valid(metadata: Metadata, *, field: str = "certificate") -> None:
    """FailedPrecondition unless the reported status is VALID: what a target does before
    it accepts a case citing the certificate."""
    if metadata.status is not Status.VALID:
        raise FailedPrecondition(f"certificate {metadata.number} is {metadata.status.value}",
                                 field=field)
