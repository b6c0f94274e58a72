"""Accounting of certificate uses (DESIGN §8, issue #13): the holder's digest and the
operator's table. No I/O.

Every certificate call is kept as a CertificateUse (gateway/store/base.py) so that
`tongban stats certs` can count uses per type, item, consumer and issuer, and a holder can
ask who used their certificates. The second needs the same holder found again across
uses; the first must not turn the store into a second register of id numbers. So the
use rows carry ``holder_key``, a keyed digest of the holder id, never the id.

Why keyed, not a plain hash: a resident id number is 18 characters of known structure
(a division code from a published list, a birth date, a 3-digit sequence and a check
character computed from the rest): about 3,000 counties x 36,500 birth dates x 1,000
sequence numbers, some 10^11 candidates in all and far fewer for one region and age
group; one GPU computes SHA-256 over all of them in about a minute. Under HMAC with a
secret only this gateway holds, a copy of the table alone names nobody. The secret is
derived from the gateway's private signing key (holder_secret), which the gateway must
guard anyway, rather than being one more secret to provision, back up and rotate.

What follows from that: the digests are this gateway's own (another gateway's key
gives other digests: a holder is matched at each gateway by that gateway), and replacing
the signing key starts new digests, so uses kept under the old key are no longer found
for the holder (they still count in the table). A deployment that rotates keys and
wants the history joined keeps the old key's secret, or passes a secret of its own.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.errors import clean
from gateway.signing import SigningKey, b64url
from gateway.store.base import UseCount

HOLDER_KEY_LABEL: Final = b"tongban/v1 certificate holder key"  # binds the derived secret
MIN_SECRET_BYTES: Final = 16
COLUMNS: Final = ("type", "item", "consumer", "issuer", "outcome", "count")
CELL_LIMIT: Final = 40  # characters of one cell shown: a table row stays one line
EMPTY: Final = "no certificate uses recorded"


def holder_secret(key: SigningKey) -> bytes:
    """The HMAC key of holder digests: SHA-256 over a label and the signing key's raw
    private scalar (the Ed25519 seed or the P-256 private value, 32 bytes each).

    The label separates this use of the key from signing, so the secret says nothing
    about signatures and signatures say nothing about it.
    """
    private = key.key
    if isinstance(private, ed25519.Ed25519PrivateKey):
        raw = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                    serialization.NoEncryption())
    else:
        raw = private.private_numbers().private_value.to_bytes(32, "big")
    return hashlib.sha256(HOLDER_KEY_LABEL + b"\0" + raw).digest()


def holder_key(secret: bytes, id_type: str, number: str) -> str:
    """The holder's digest at this gateway: base64url (43 characters) of HMAC-SHA256 over
    the id scheme and number, so the same holder gives the same key every time and the
    number cannot be recovered from it without the secret.

    The scheme is part of the message (a passport number equal to some resident id is
    another holder); the NUL between them cannot occur in either. Numbers are digested
    as given: gateway/certificates/documents.py admits only their compact, upper-case
    form, so one holder has one spelling.
    """
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"a holder key secret has at least {MIN_SECRET_BYTES} bytes")
    if not id_type or not number or "\0" in id_type:
        raise ValueError("a holder key needs an id type and a number")
    message = id_type.encode("utf-8") + b"\0" + number.encode("utf-8")
    return b64url(hmac.new(secret, message, hashlib.sha256).digest())


def format_table(counts: Sequence[UseCount]) -> str:
    """`tongban stats certs`: one row per (type, item, consumer, issuer, outcome) with its
    count, columns aligned, and a total; "-" where a use had no such value. Cells are
    escaped and cut (they are what callers sent), so a row cannot forge a line."""
    rows = [(*(clean(value, CELL_LIMIT) or "-" for value in
               (c.cert_type, c.item, c.consumer, c.issuer, c.outcome)), str(c.count))
            for c in counts]
    widths = [max(len(cell) for cell in column) for column in zip(COLUMNS, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        body = "  ".join(cell.ljust(width) for cell, width in
                         zip(cells[:-1], widths[:-1], strict=True))
        return f"{body}  {cells[-1].rjust(widths[-1])}"

    lines = [line(COLUMNS)]
    if not rows:
        return "\n".join([*lines, EMPTY])
    lines.extend(line(row) for row in rows)
    lines.append(f"{sum(c.count for c in counts)} uses")
    return "\n".join(lines)
