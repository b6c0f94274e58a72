"""The holder's authorization of a certificate lookup, and the purpose binding. No I/O.

Issue #13 §4–5: no certificate is looked up without the holder's say. The platform where
the holder authenticated (扫码/刷脸) signs a short-lived token (``typ``
``tongban-authz+jwt``, at most 600 s) naming the holder, the purpose item, the consumer
platform that may use it, and optionally the certificate types. The consumer sends it
with its lookup; whoever answers checks it with the authorizing platform's public key.
An authorization may serve several lookups within its life (a listing, then a lookup of
each certificate found) for that holder, item and consumer only; its ``jti`` names it
in the audit log. Forged, malformed or expired: Unauthenticated. For someone or
something else: PermissionDenied naming the field.

Purpose binding (DESIGN §8): the item catalogue lists the certificate types that may
replace its materials; a lookup of a type its item does not list is refused.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Final

from gateway.certificate_ids import TYPE_CODE
from gateway.errors import InvalidArgument, PermissionDenied, Unauthenticated, quote
from gateway.signing import SigningKey, b64url, compact
from gateway.verifier import KeyLookup

from .documents import Holder, HolderIdType, canonical
from .tokens import check_jti, check_members, check_window, open_token

TYP: Final = "tongban-authz+jwt"
MAX_TTL_S: Final = 600
MAX_TYPES: Final = 32  # certificate types one authorization may name
ITEM_CODE_CHARS: Final = 64  # as partners.toml's item codes (config.ITEM_CODE)
WHAT: Final = "authorization"


@dataclass(frozen=True, slots=True, kw_only=True)
class Authorization:
    """The verified claims of a holder authorization."""

    iss: str  # the platform where the holder authenticated
    aud: str  # the consumer platform
    holder: Holder
    item: str  # purpose: the item code
    cert_types: frozenset[str] | None  # None: any type the item allows
    iat: int
    exp: int
    jti: str
    kid: str


def authorize(key: SigningKey, *, holder: Holder, item: str, consumer: str, now: float,
              ttl: int = 300, cert_types: Collection[str] | None = None,
              jti: str | None = None) -> str:
    """The authorizing platform's token: ``holder`` lets ``consumer`` look up certificates
    for ``item`` until ``now + ttl``. ``jti`` is random unless given (only the worked
    example fixes it)."""
    if not 0 < ttl <= MAX_TTL_S:
        raise InvalidArgument(f"1..{MAX_TTL_S} s", field="ttl")
    _check_item(item, InvalidArgument)
    if not consumer or not consumer.isprintable() or len(consumer) > 64:
        raise InvalidArgument("a party id", field="consumer")
    iat = int(now)
    payload: dict[str, object] = {
        "iss": key.kid.split("#", 1)[0], "aud": consumer, "iat": iat, "exp": iat + ttl,
        "jti": jti or b64url(os.urandom(16)), "sbt": holder.id_type.value,
        "sub": holder.number, "itm": item}
    if cert_types is not None:
        payload["cts"] = sorted(_check_types(cert_types, InvalidArgument))
    return compact(key, TYP, canonical(payload))


def _check_item(item: object, error: type[InvalidArgument] | type[Unauthenticated]) -> str:
    if not isinstance(item, str) or not 0 < len(item) <= ITEM_CODE_CHARS \
            or not item.isascii() or not item.isprintable():
        raise error(f"an item code is 1 to {ITEM_CODE_CHARS} printable ASCII characters",
                    field="item")
    return item


def _check_types(types: object, error: type[InvalidArgument] | type[Unauthenticated]
                 ) -> frozenset[str]:
    if isinstance(types, str) or not isinstance(types, Collection) \
            or not 0 < len(types) <= MAX_TYPES \
            or not all(isinstance(t, str) and TYPE_CODE.fullmatch(t) for t in types) \
            or len(set(types)) != len(types):
        raise error(f"1 to {MAX_TYPES} distinct certificate type codes (1 to 8 digits)",
                    field="cert_types")
    return frozenset(types)


_REQUIRED: Final = frozenset({"iss", "aud", "iat", "exp", "jti", "sbt", "sub", "itm"})


def verify_authorization(token: str, keys_for: KeyLookup, *, now: float) -> Authorization:
    """The claims of a holder authorization that is genuine and current; Unauthenticated
    otherwise (docs/certificates.md, Holder authorization, the checks in order)."""
    claims, key = open_token(token, keys_for, TYP, WHAT)
    check_members(claims, _REQUIRED, frozenset({"cts"}), WHAT)
    exp = check_window(claims["iat"], claims["exp"], now, MAX_TTL_S, WHAT)
    jti = check_jti(claims["jti"], WHAT)
    aud = claims["aud"]
    if not isinstance(aud, str) or not aud:
        raise Unauthenticated("the authorization's aud is the consumer's id (a string)")
    try:
        holder = Holder(HolderIdType(claims["sbt"]), claims["sub"])
    except (InvalidArgument, ValueError, TypeError):
        raise Unauthenticated("the authorization's holder (sbt, sub) is malformed") from None
    try:
        item = _check_item(claims["itm"], Unauthenticated)
        types = _check_types(claims["cts"], Unauthenticated) if "cts" in claims else None
    except Unauthenticated as exc:
        raise Unauthenticated(f"the authorization's {exc.field}: {exc.message}") from None
    return Authorization(iss=key.owner, aud=aud, holder=holder, item=item, cert_types=types,
                         iat=claims["iat"], exp=exp, jti=jti, kid=key.kid)


def check_authorization(token: str, keys_for: KeyLookup, *, holder: Holder, item: str,
                        consumer: str, cert_type: str | None, now: float) -> Authorization:
    """A genuine, current authorization (Unauthenticated otherwise) for exactly this
    holder, item and consumer, and this certificate type if it names types
    (PermissionDenied naming the first field that differs). ``cert_type`` None: a
    listing, which the caller filters by :func:`types_for`."""
    authz = verify_authorization(token, keys_for, now=now)
    if authz.holder != holder:
        raise PermissionDenied(f"the authorization is for holder {authz.holder.masked()}, "
                               f"not {holder.masked()}", field="authorization.sub")
    if authz.item != item:
        raise PermissionDenied(f"the authorization is for item {quote(authz.item, 24)}, "
                               f"not {quote(item, 24)}", field="authorization.itm")
    if authz.aud != consumer:
        raise PermissionDenied(f"the authorization is for {quote(authz.aud, 24)}, not "
                               f"{quote(consumer, 24)}", field="authorization.aud")
    if cert_type is not None and authz.cert_types is not None \
            and cert_type not in authz.cert_types:
        raise PermissionDenied(f"the authorization does not name type "
                               f"{quote(cert_type, 12)}", field="authorization.cts")
    return authz


Catalogue = Mapping[str, frozenset[str]]  # item code -> certificate types it accepts


def types_for(catalogue: Catalogue, item: str, authz: Authorization | None = None
              ) -> frozenset[str]:
    """The certificate types a lookup for ``item`` may touch: those the item lists, and
    of them those the authorization names, if it names any."""
    allowed = catalogue.get(item, frozenset())
    if authz is not None and authz.cert_types is not None:
        allowed &= authz.cert_types
    return allowed


def check_purpose(catalogue: Catalogue, *, item: str, cert_type: str) -> None:
    """Purpose binding: PermissionDenied unless ``item`` lists ``cert_type`` among the
    certificate types that may replace its materials (an item not in the catalogue
    lists none)."""
    if not catalogue.get(item):  # not in the catalogue, or listing no certificate type
        raise PermissionDenied(f"item {quote(item, 24)} accepts no certificates",
                               field="purpose_item")
    if cert_type not in catalogue[item]:
        raise PermissionDenied(f"item {quote(item, 24)} does not accept certificate type "
                               f"{quote(cert_type, 12)}", field="cert_type")
