"""Opening the certificate tokens: one JWS ``typ`` each, the call tokens' machinery. No I/O.

The signature checks are gateway/verifier.py's own (``Verifier._open``: header, ``typ``,
``kid`` lookup, the key's ``alg``, the signature), so a certificate token is refused for
exactly the reasons a call token is. What differs is kept here: no audience of our own,
no replay cache (a document is evidence for years; an authorization may serve several
lookups), and each kind's limits.
"""

from __future__ import annotations

import binascii
from typing import Any, Final, TypeGuard

from gateway.errors import Unauthenticated, quote
from gateway.signing import PublicKey, b64url_decode
from gateway.verifier import MAX_JTI_CHARS, KeyLookup, Verifier, _json

MAX_TOKEN_CHARS: Final = 8192  # a whole token, as an x-tongban-signature value
MAX_PAYLOAD_BYTES: Final = 4096  # its payload JSON
SKEW_S: Final = 60  # clock skew allowed, as for call tokens (docs/signing.md §2)


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is no time


def open_token(token: object, keys_for: KeyLookup, typ: str, what: str
               ) -> tuple[dict[str, Any], PublicKey]:
    """The claims of a compact JWS of this ``typ`` whose signature checks out, and its key.

    Checked here, each failure Unauthenticated: a string of at most MAX_TOKEN_CHARS; the
    JWS (typ, kid of a known party, that key's alg, signature); a UTF-8 JSON object of
    at most MAX_PAYLOAD_BYTES; ``iss`` owns the key; ``iat`` an integer at which the
    key was valid. The time against ``now`` is each kind's own rule.
    """
    if not isinstance(token, str) or not token:
        raise Unauthenticated(f"missing {what}")
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthenticated(f"the {what} is {len(token)} characters, more than "
                              f"{MAX_TOKEN_CHARS}")
    payload, key = Verifier(audience="", keys_for=keys_for)._open(token, typ)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise Unauthenticated(f"the {what}'s payload is {len(payload)} bytes, more than "
                              f"{MAX_PAYLOAD_BYTES}")
    claims = _json(payload, f"{what} claims")
    if not isinstance(claims, dict):
        raise Unauthenticated(f"the {what}'s claims must be a JSON object")
    if claims.get("iss") != key.owner:
        raise Unauthenticated(f"{what} iss {quote(claims.get('iss'), 16)} does not own key "
                              f"{key.kid}")
    iat = claims.get("iat")
    if not is_int(iat):
        raise Unauthenticated(f"the {what}'s iat must be an integer (seconds)")
    if not key.valid_at(iat):
        raise Unauthenticated(f"key {key.kid} was not valid at the {what}'s iat {iat}")
    return claims, key


def check_members(claims: dict[str, Any], required: frozenset[str], optional: frozenset[str],
                  what: str) -> None:
    """Exactly these members: a token of another kind, or of a later version, is refused
    rather than half understood."""
    missing = required - claims.keys()
    if missing:
        raise Unauthenticated(f"the {what} lacks {', '.join(sorted(missing))}")
    extra = claims.keys() - required - optional
    if extra:
        raise Unauthenticated(f"the {what} has unknown members: "
                              f"{quote(', '.join(sorted(extra)), 48)}")


def check_window(iat: int, exp: object, now: float, max_ttl_s: int, what: str) -> int:
    """``exp`` an integer, ``0 < exp − iat ≤ max_ttl_s``, and ``now`` within
    ``[iat − skew, exp + skew]``: a short-lived token that is current."""
    if not is_int(exp):
        raise Unauthenticated(f"the {what}'s exp must be an integer (seconds)")
    if not 0 < exp - iat <= max_ttl_s:
        raise Unauthenticated(f"the {what}'s exp - iat must be 1..{max_ttl_s} s")
    if iat > now + SKEW_S:
        raise Unauthenticated(f"the {what} is issued {int(iat - now)} s in the future "
                              f"(skew {SKEW_S} s)")
    if exp < now - SKEW_S:
        raise Unauthenticated(f"the {what} expired {int(now - exp)} s ago")
    return exp


def check_jti(jti: object, what: str) -> str:
    """base64url (no padding) of 16..96 random bytes, as a call token's (signing.md §2)."""
    try:
        if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_CHARS:
            raise ValueError(f"a string of at most {MAX_JTI_CHARS} characters")
        size = len(b64url_decode(jti))
    except (ValueError, binascii.Error) as exc:
        raise Unauthenticated(f"the {what}'s jti is not base64url: {exc}") from None
    if not 16 <= size <= 96:
        raise Unauthenticated(f"the {what}'s jti must be 16 to 96 random bytes")
    return jti
