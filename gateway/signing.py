"""JWS request/response signing as in docs/signing.md (DESIGN §4). No I/O.

A call is signed by a compact JWS in metadata ``x-tongban-signature`` whose ``bdg``
claim is the SHA-256 of the exact message bytes on the wire, so the receiver verifies
what it received, never a re-serialisation. Key objects are parsed once at load time.
This module makes tokens and holds the keys; gateway/verifier.py checks them.

The compact serialisation (RFC 7515 §7.1) is done here and the signatures by
`cryptography`: a gateway verifies two signatures and makes two per routed call, and
PyJWT's generic path (the token parsed twice, headers re-validated, keys re-checked)
cost as much again as the Ed25519 arithmetic (issue #5 profile). Tokens are
byte-compatible with PyJWT's both ways; tests/test_signing.py holds that.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from nacl.exceptions import BadSignatureError

from gateway import merkle

HEADER = "x-tongban-signature"
TYP = "tongban+jwt"
BATCH_TYP = "tongban-batch+jwt"  # the JWS over a batch's tree root
ALGORITHMS = ("EdDSA", "ES256")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


def b64url_decode(text: str) -> bytes:
    """Strict: characters outside the base64url alphabet are an error, not skipped.

    binascii in strict mode, not base64.b64decode(validate=True), which checks with a
    regular expression first: a token has four of these, and that was 7 µs each.
    """
    data = text.encode("ascii").translate(_FROM_URLSAFE)  # non-ASCII: UnicodeEncodeError
    return binascii.a2b_base64(data + b"=" * (-len(data) % 4), strict_mode=True)


def _sign_bytes(key: SigningKey, data: bytes) -> bytes:
    if key.alg == "EdDSA":  # Ed25519 is deterministic: the same bytes OpenSSL would make
        return crypto_sign(data, key.sodium)[:64]
    r, s = decode_dss_signature(key.key.sign(data, ec.ECDSA(hashes.SHA256())))  # type: ignore[call-arg,arg-type]
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")  # JWS ES256: raw R || S


def _verify_bytes(key: PublicKey, signature: bytes, data: bytes) -> None:
    """Raise InvalidSignature unless signature is key's signature of data.

    Ed25519 goes through libsodium (PyNaCl), about twice as fast as OpenSSL here
    (issue #5); it is also the stricter of the two (no small-order keys, canonical S).
    """
    if key.alg == "EdDSA":
        if len(signature) != 64:
            raise InvalidSignature("Ed25519 signatures are 64 bytes")
        try:
            crypto_sign_open(signature + data, key.raw_public)
        except (BadSignatureError, ValueError, TypeError) as exc:
            raise InvalidSignature(str(exc)) from None
        return
    if len(signature) != 64:
        raise InvalidSignature("ES256 signatures are 64 bytes (R || S)")
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                               int.from_bytes(signature[32:], "big"))
    key.key.verify(der, data, ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg,arg-type,union-attr]


def body_digest(body: bytes) -> str:
    """bdg: base64url (no padding) of SHA-256 over the exact message bytes."""
    return b64url(hashlib.sha256(body).digest())


PublicKeyObject = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
PrivateKeyObject = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True, kw_only=True)
class PublicKey:
    """One verification key of a party, with its validity window."""

    kid: str  # "<party-id>#<key-id>"
    alg: str
    key: PublicKeyObject = field(repr=False, compare=False)
    raw_public: bytes = field(repr=False)
    not_before: datetime | None = None
    not_after: datetime | None = None

    @property
    def owner(self) -> str:
        return self.kid.split("#", 1)[0]

    def valid_at(self, t: float) -> bool:
        if self.not_before is not None and t < self.not_before.timestamp():
            return False
        return not (self.not_after is not None and t > self.not_after.timestamp())

    def jwk(self) -> dict[str, str | int]:
        """The public JWK (RFC 7517) served at /.well-known/jwks.json."""
        out: dict[str, str | int] = {"kid": self.kid, "alg": self.alg, "use": "sig"}
        if self.alg == "EdDSA":
            out |= {"kty": "OKP", "crv": "Ed25519", "x": b64url(self.raw_public)}
        else:
            numbers = self.key.public_numbers()  # type: ignore[union-attr]
            out |= {"kty": "EC", "crv": "P-256", "x": b64url(numbers.x.to_bytes(32, "big")),
                    "y": b64url(numbers.y.to_bytes(32, "big"))}
        # the validity window, in seconds since the epoch (members of our own: RFC 7517
        # §4 lets a JWK carry more; a receiver that ignores them loses only the window)
        if self.not_before is not None:
            out["nbf"] = int(self.not_before.timestamp())
        if self.not_after is not None:
            out["exp"] = int(self.not_after.timestamp())
        return out


@dataclass(frozen=True, kw_only=True)
class SigningKey:
    """This gateway's private key and its kid."""

    kid: str
    alg: str
    key: PrivateKeyObject = field(repr=False, compare=False)
    raw_public: bytes = field(repr=False)
    sodium: bytes = field(default=b"", repr=False, compare=False)  # libsodium's 64-byte key


def _raw_public(key: PublicKeyObject) -> bytes:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return key.public_bytes(serialization.Encoding.X962,
                            serialization.PublicFormat.UncompressedPoint)


def public_key_from_jwk(jwk: Mapping[str, Any], *, kid: str, not_before: datetime | None = None,
                        not_after: datetime | None = None) -> PublicKey:
    """Parse an OKP/Ed25519 or EC/P-256 JWK; raise ValueError saying what is wrong."""
    kty, crv = jwk.get("kty"), jwk.get("crv")
    try:
        if kty == "OKP" and crv == "Ed25519":
            raw = b64url_decode(str(jwk["x"]))
            key: PublicKeyObject = ed25519.Ed25519PublicKey.from_public_bytes(raw)
            alg = "EdDSA"
        elif kty == "EC" and crv == "P-256":
            x = int.from_bytes(b64url_decode(str(jwk["x"])), "big")
            y = int.from_bytes(b64url_decode(str(jwk["y"])), "big")
            key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
            alg = "ES256"
        else:
            raise ValueError(f"unsupported key type {kty}/{crv} (use OKP/Ed25519 or EC/P-256)")
    except (KeyError, ValueError, TypeError) as exc:
        if isinstance(exc, ValueError) and "unsupported" in str(exc):
            raise
        raise ValueError(f"not a valid {kty}/{crv} public key: {exc}") from exc
    if not_before and not_after and not_after <= not_before:
        raise ValueError("not_after must be later than not_before")
    return PublicKey(kid=kid, alg=alg, key=key, raw_public=_raw_public(key),
                     not_before=not_before, not_after=not_after)


def load_private_key(pem: bytes, *, kid: str) -> SigningKey:
    """Load a PEM (PKCS#8) Ed25519 or P-256 private key."""
    key = serialization.load_pem_private_key(pem, password=None)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
        return SigningKey(kid=kid, alg="EdDSA", key=key, raw_public=_raw_public(key.public_key()),
                          sodium=crypto_sign_seed_keypair(seed)[1])
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return SigningKey(kid=kid, alg="ES256", key=key, raw_public=_raw_public(key.public_key()))
    raise ValueError("only Ed25519 and P-256 private keys are supported")


def generate_private_key(alg: str = "EdDSA") -> tuple[bytes, dict[str, str]]:
    """A new private key as PEM, and its public JWK (without kid)."""
    key: PrivateKeyObject = (ed25519.Ed25519PrivateKey.generate() if alg == "EdDSA"
                             else ec.generate_private_key(ec.SECP256R1()))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    public = load_private_key(pem, kid="x#x")
    jwk = PublicKey(kid="x#x", alg=public.alg, key=key.public_key(),
                    raw_public=public.raw_public).jwk()
    return pem, {k: str(v) for k, v in jwk.items() if k not in ("kid", "use")}


@dataclass(frozen=True, kw_only=True)
class Claims:
    """The verified claims of a request or response signature."""

    iss: str
    aud: str
    iat: int
    exp: int
    jti: str
    mth: str
    bdg: str
    rti: str = ""
    rdg: str = ""
    kid: str = ""


def claims_for(key: SigningKey, *, iss: str, aud: str, method: str, body: bytes, now: float,
               ttl: int = 120, request: Claims | None = None, jti: str | None = None
               ) -> tuple[Claims, bytes]:
    """The claims of a signature over body for method, and their JSON (the JWS payload).

    jti is random unless given (only docs/signing.md's worked example fixes it).
    """
    iat = int(now)
    claims = Claims(iss=iss, aud=aud, iat=iat, exp=iat + ttl,
                    jti=jti or b64url(os.urandom(16)), mth=method, bdg=body_digest(body),
                    rti=request.jti if request else "", rdg=request.bdg if request else "",
                    kid=key.kid)
    data: dict[str, Any] = {"iss": iss, "aud": aud, "iat": iat, "exp": claims.exp,
                            "jti": claims.jti, "mth": method, "bdg": claims.bdg}
    if request is not None:
        data |= {"rti": claims.rti, "rdg": claims.rdg}
    return claims, json.dumps(data, separators=(",", ":")).encode()


def compact(key: SigningKey, typ: str, payload: bytes) -> str:
    """A compact JWS (RFC 7515 §7.1) of payload."""
    signing_input = f"{_header(key.alg, key.kid, typ)}.{b64url(payload)}"
    signature = _sign_bytes(key, signing_input.encode("ascii"))
    return f"{signing_input}.{b64url(signature)}"


def sign(key: SigningKey, *, iss: str, aud: str, method: str, body: bytes, now: float,
         ttl: int = 120, request: Claims | None = None, jti: str | None = None
         ) -> tuple[str, Claims]:
    """A compact JWS over body for method, and its claims; with request, a response bound to it."""
    claims, payload = claims_for(key, iss=iss, aud=aud, method=method, body=body, now=now,
                                 ttl=ttl, request=request, jti=jti)
    return compact(key, TYP, payload), claims


def seal(key: SigningKey, iss: str, payloads: Sequence[bytes]) -> list[str]:
    """One token per claims payload, all under one signature (docs/signing.md §7).

    A single payload gets an ordinary compact JWS. Several get a batch token each,
    ``<JWS of the tree root>~<the payload>~<its path to the root>``, so one Ed25519
    signature serves a whole batch and the receiver checks it once (Verifier caches
    roots it has verified).
    """
    if len(payloads) == 1:
        return [compact(key, TYP, payloads[0])]
    root, paths = merkle.build(payloads)
    head = json.dumps({"iss": iss, "mrk": b64url(root), "n": len(payloads)},
                      separators=(",", ":")).encode()
    jws = compact(key, BATCH_TYP, head)
    return [f"{jws}~{b64url(payload)}~{b64url(path)}"
            for payload, path in zip(payloads, paths, strict=True)]


_HEADERS: dict[tuple[str, str, str], str] = {}


def _header(alg: str, kid: str, typ: str = TYP) -> str:
    """The protected header, encoded once per key (as PyJWT orders its members)."""
    encoded = _HEADERS.get((alg, kid, typ))
    if encoded is None:
        header = {"alg": alg, "kid": kid, "typ": typ}
        encoded = b64url(json.dumps(header, separators=(",", ":"), sort_keys=True).encode())
        _HEADERS[(alg, kid, typ)] = encoded
    return encoded
