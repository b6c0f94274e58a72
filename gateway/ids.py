"""ULIDs for case and update ids: 48-bit millisecond time + 80 random bits, Crockford base32."""

from __future__ import annotations

import base64
import os
import re
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CASE_ID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")  # a ULID (fullmatch it)
# base32hex (RFC 4648 §7) and Crockford's base32 both list their 32 symbols in value
# order, so one encodes in C and a translation turns it into the other
_CROCKFORD = bytes.maketrans(b"0123456789ABCDEFGHIJKLMNOPQRSTUV", _ALPHABET.encode())


def new_ulid(now: float | None = None) -> str:
    """26 characters: the 128-bit value as 130 bits (two leading zero bits), 5 per character.

    Shifting the value left by 30 bits puts those 130 bits at the start of 20 bytes, which
    base32hex encodes 5 bits per character from the first bit; the first 26 are the ULID.
    """
    ms = int((time.time() if now is None else now) * 1000)
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    encoded = base64.b32hexencode((value << 30).to_bytes(20, "big"))
    return encoded[:26].translate(_CROCKFORD).decode("ascii")
