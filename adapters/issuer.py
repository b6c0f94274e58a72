"""A platform's certificate register (电子证照库): the reference issuer of issue #13 §8.

It keeps the certificates a platform issued on its own aiosqlite connection, signs each
one once as a document (gateway.certificates.documents) with the platform's key, and
answers the gateway's three PartnerPlatform calls with serialized messages:
FetchCertificates (the holder's documents, each with a fresh status statement),
CertificateStatus (a fresh status statement) and AnswerClaim (a signed yes or no).

A revocation or suspension changes the register only: the document stays as it was
signed, and every later status statement says what is true now. Before it hands out a
document or an answer it checks the consumer's own signed call and the holder's
authorization in it (adapters/issuer_requests.py), as the gateway did before it.
Holder ids reach logs and messages masked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import date
from typing import Any, Final

import aiosqlite
from google.protobuf.message import DecodeError, Message

from gateway.certificate_ids import format_id, parse
from gateway.certificates import claims as cl
from gateway.certificates.documents import (
    SIGNED_STATUSES,
    Holder,
    HolderIdType,
    Metadata,
    RenderedFile,
    Status,
    attest_status,
    metadata_from_json,
)
from gateway.certificates.documents import issue as sign_document
from gateway.certificates.wire import cert_type_of, claim_of, holder_of
from gateway.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    quote,
)
from gateway.evidence import Statements
from gateway.pb.tongban.v1 import certificate_pb2 as cp
from gateway.signing import SigningKey, b64url_decode
from gateway.types import Clock
from gateway.verifier import KeyLookup

from .issuer_requests import (
    CLAIMS,
    FETCHES,
    cert_types_of,
    certificate_id_of,
    check_claim,
    check_fetch,
    consumer_call,
)

log = logging.getLogger("tongban.issuer")
SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS certificates (number TEXT PRIMARY KEY, type_code TEXT NOT NULL,
  holder_id_type TEXT NOT NULL, holder_id TEXT NOT NULL, issued_at REAL NOT NULL,
  document TEXT NOT NULL, file BLOB NOT NULL, status TEXT NOT NULL, facts TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS certificates_holder
  ON certificates (holder_id_type, holder_id, type_code);
"""
MAX_FETCHED: Final = 100  # certificates one FetchCertificates answer carries at most
_COLUMNS: Final = "number, document, file, status, facts"
_NEWEST_FIRST: Final = "ORDER BY issued_at DESC, rowid DESC"


def _parse(cls: type[Message], request: bytes) -> Any:
    try:
        return cls.FromString(request)
    except DecodeError:
        raise InvalidArgument(f"not a {cls.DESCRIPTOR.full_name}") from None


def _metadata(document: str, status: str) -> Metadata:
    """The metadata this register signed, with the status it holds now. Read back from
    our own document: what we signed is what we answer about."""
    payload = json.loads(b64url_decode(document.split(".")[1]))
    return metadata_from_json(payload | {"status": status})


def _facts(facts: Mapping[str, int]) -> str:
    for name, value in facts.items():
        if not isinstance(name, str) or not cl.FACT_NAME.fullmatch(name):
            raise InvalidArgument(f"a fact name is a-z, then up to 31 of a-z, 0-9 and _, "
                                  f"not {quote(name, 32)}", field="facts")
        if isinstance(value, bool) or not isinstance(value, int) \
                or not -cl.MAX_SAFE <= value <= cl.MAX_SAFE:
            raise InvalidArgument(f"fact {name} is an integer of at most 2^53 - 1",
                                  field="facts")
    return json.dumps(dict(sorted(facts.items())))


class Issuer:
    """One platform's register of the certificates it issued, and its answers about them."""

    def __init__(self, *, partner_id: str, key: SigningKey, database: str, clock: Clock,
                 statements: Statements, keys_for: KeyLookup | None = None) -> None:
        """database: an SQLite file name or ":memory:"; key: the platform's own (its kid
        ``<partner_id>#<key id>``); statements and keys_for check a consumer's call and
        the holder's authorization in it (without keys_for no authorization verifies)."""
        if key.kid.split("#", 1)[0] != partner_id:
            raise ValueError(f"key {key.kid} is not platform {partner_id}'s")
        self.partner_id, self._key, self._path = partner_id, key, database
        self._clock, self._statements = clock, statements
        self._keys_for: KeyLookup = keys_for or (lambda _party: ())
        self._db: aiosqlite.Connection | None = None

    async def start(self) -> None:
        async with self._errors():
            self._db = await aiosqlite.connect(self._path)
            self._db.row_factory = sqlite3.Row
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.executescript(SCHEMA)
            await self._db.commit()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise Unavailable(f"the certificate register of {self.partner_id} is not open")
        return self._db

    @asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        """SQLite's troubles are this register's unavailability, never INTERNAL."""
        try:
            yield
        except sqlite3.Error as exc:
            raise Unavailable(f"the certificate register of {self.partner_id} cannot "
                              f"answer now: {type(exc).__name__}") from None

    # -- the register ---------------------------------------------------------------------
    async def issue(self, *, type_code: str, name: str, issuer: str, issuer_code: str,
                    serial: str, holder: str, holder_id_type: HolderIdType, holder_id: str,
                    issued_on: date, valid_from: date | None = None,
                    valid_to: date | None = None, file: bytes,
                    media_type: str = "application/pdf",
                    facts: Mapping[str, int] | None = None, version: str = "001",
                    now: float | None = None) -> str:
        """Register and sign a certificate; its identifier. ``valid_from`` defaults to
        ``issued_on``; ``valid_to`` None is 长期. AlreadyExists for a number taken."""
        number = format_id(type_code, issuer_code, serial, version)
        metadata = Metadata(
            type_code=type_code, number=number, name=name, issuer=issuer,
            issuer_code=issuer_code, holder=holder, holder_id_type=holder_id_type,
            holder_id=holder_id, issued_on=issued_on, valid_from=valid_from or issued_on,
            valid_to=valid_to, status=Status.VALID,
            file=RenderedFile(hashlib.sha256(file).hexdigest(), media_type, len(file)))
        stored_facts = _facts(facts or {})
        at = self._clock.now() if now is None else now
        document = sign_document(metadata, self._key, now=at)
        async with self._errors():
            try:
                await self.db.execute(
                    "INSERT INTO certificates VALUES (?,?,?,?,?,?,?,?,?)",
                    (number, type_code, holder_id_type.value, holder_id, at, document, file,
                     Status.VALID.value, stored_facts))
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"certificate {number} is already registered",
                                    field="number") from None
            await self.db.commit()
        log.info("platform %s issued %s (type %s) to %s", self.partner_id, number, type_code,
                 metadata.holder_ref.masked())
        return number

    async def revoke(self, number: str, status: Status = Status.REVOKED) -> None:
        """Record a later status (吊销/注销, 暂扣, declared expired, or valid again after a
        suspension). The document is not signed again; status statements say it.
        REVOKED is final (FailedPrecondition); NotFound for an unknown number."""
        if status not in SIGNED_STATUSES:
            raise InvalidArgument(f"one of {', '.join(sorted(SIGNED_STATUSES))}",
                                  field="status")
        row = await self._row(number)
        if row["status"] == Status.REVOKED and status is not Status.REVOKED:
            raise FailedPrecondition(f"certificate {number} is revoked, for good",
                                     field="status")
        async with self._errors():
            await self.db.execute("UPDATE certificates SET status=? WHERE number=?",
                                  (status.value, number))
            await self.db.commit()
        log.info("platform %s: certificate %s is now %s", self.partner_id, number,
                 status.value)

    async def holds(self, number: str) -> bool:
        """Whether ``number`` is registered here."""
        async with self._errors(), self.db.execute(
                "SELECT 1 FROM certificates WHERE number=?", (number,)) as cursor:
            return await cursor.fetchone() is not None

    async def _row(self, number: str, holder: Holder | None = None) -> sqlite3.Row:
        """The register's row of ``number`` (of ``holder``'s, if given). The same NotFound
        whether it is absent or another holder's: a caller cannot probe the register."""
        sql, args = f"SELECT {_COLUMNS} FROM certificates WHERE number=?", [number]
        if holder is not None:
            sql += " AND holder_id_type=? AND holder_id=?"
            args += [holder.id_type.value, holder.number]
        rows = await self._select(sql, args)
        if not rows:
            whose = f" of holder {holder.masked()}" if holder is not None else ""
            raise NotFound(f"no certificate {number}{whose} on platform {self.partner_id}",
                           field="certificate_id" if holder is not None else "number")
        return rows[0]

    async def _select(self, sql: str, args: Sequence[object]) -> list[sqlite3.Row]:
        async with self._errors(), self.db.execute(sql, args) as cursor:
            return list(await cursor.fetchall())  # type: ignore[arg-type]

    async def _holders(self, holder: Holder, types: Sequence[str], limit: int
                       ) -> list[sqlite3.Row]:
        marks = ",".join("?" * len(types))
        return await self._select(
            f"SELECT {_COLUMNS} FROM certificates WHERE holder_id_type=? AND holder_id=? "
            f"AND type_code IN ({marks}) {_NEWEST_FIRST} LIMIT ?",
            [holder.id_type.value, holder.number, *types, limit])

    # -- the PartnerPlatform calls ----------------------------------------------------------
    async def fetch(self, request: bytes) -> bytes:
        """FetchCertificatesRequest → FetchCertificatesResponse: the holder's certificates
        of the asked types (or only ``certificate_id``), newest first, each with a fresh
        status statement and, with ``with_file``, its rendered file."""
        message: cp.FetchCertificatesRequest = _parse(cp.FetchCertificatesRequest, request)
        holder = holder_of(message.holder)
        types = cert_types_of(message.cert_types)
        certificate_id = certificate_id_of(message.certificate_id)
        now = self._clock.now()
        call = consumer_call(self._statements, message.consumer_statement,
                             consumer=message.consumer, methods=FETCHES)
        check_fetch(call, message, holder, types, certificate_id, self._keys_for, now=now)
        if certificate_id is not None:
            rows = [await self._row(certificate_id, holder)]
            if parse(certificate_id).type_code not in types:
                raise NotFound(f"certificate {certificate_id} is not of the types asked",
                               field="certificate_id")
        else:
            rows = await self._holders(holder, types, MAX_FETCHED)
        out = cp.FetchCertificatesResponse(certificates=[
            cp.IssuedCertificate(
                document=row["document"],
                status_statement=attest_status(row["number"], Status(row["status"]),
                                               self._key, now=now),
                file=row["file"] if message.with_file else b"")
            for row in rows])
        log.info("platform %s gave %s %d certificate(s) of %s (types %s)", self.partner_id,
                 message.consumer, len(rows), holder.masked(), ",".join(types))
        return out.SerializeToString()

    async def status(self, request: bytes) -> bytes:
        """CertificateStatusRequest → CertificateStatusResponse: a fresh status statement
        (NotFound for a number not registered here)."""
        message: cp.CertificateStatusRequest = _parse(cp.CertificateStatusRequest, request)
        number = certificate_id_of(message.number, field="number")
        if number is None:
            raise InvalidArgument("the certificate's identifier", field="number")
        row = await self._row(number)
        statement = attest_status(number, Status(row["status"]), self._key,
                                  now=self._clock.now())
        return cp.CertificateStatusResponse(status_statement=statement).SerializeToString()

    async def answer(self, request: bytes) -> bytes:
        """AnswerClaimRequest → AnswerClaimResponse: the signed yes or no about
        ``certificate_id``, or the holder's newest valid certificate of ``cert_type``."""
        message: cp.AnswerClaimRequest = _parse(cp.AnswerClaimRequest, request)
        holder = holder_of(message.holder)
        cert_type = cert_type_of(message.cert_type)
        certificate_id = certificate_id_of(message.certificate_id)
        claim = claim_of(message.claim)
        now = self._clock.now()
        call = consumer_call(self._statements, message.consumer_statement,
                             consumer=message.consumer, methods=CLAIMS)
        check_claim(call, message, holder, claim, certificate_id, self._keys_for, now=now)
        metadata, facts = await self._subject(holder, cert_type, certificate_id, now)
        token = cl.answer(metadata, claim, self._key, consumer=message.consumer, now=now,
                          facts=facts)
        log.info("platform %s answered %s a %s claim about %s", self.partner_id,
                 message.consumer, message.claim.name, metadata.number)
        return cp.AnswerClaimResponse(number=metadata.number, token=token).SerializeToString()

    async def _subject(self, holder: Holder, cert_type: str, certificate_id: str | None,
                       now: float) -> tuple[Metadata, dict[str, int]]:
        """The certificate a claim is about, with its facts."""
        if certificate_id is not None:
            row = await self._row(certificate_id, holder)
            metadata = _metadata(row["document"], row["status"])
            if metadata.type_code != cert_type:
                raise NotFound(f"certificate {certificate_id} is not of type "
                               f"{quote(cert_type, 12)}", field="certificate_id")
            return metadata, json.loads(row["facts"])
        for row in await self._holders(holder, [cert_type], -1):
            metadata = _metadata(row["document"], row["status"])
            if metadata.status_at(now) is Status.VALID:
                return metadata, json.loads(row["facts"])
        raise NotFound(f"holder {holder.masked()} has no valid certificate of type "
                       f"{quote(cert_type, 12)} on platform {self.partner_id}",
                       field="cert_type")

