"""JWS request/response signing as in docs/signing.md (DESIGN §4). No I/O.

A call is signed by a compact JWS in metadata ``x-tongban-signature`` whose ``bdg``
claim is the SHA-256 of the exact message bytes on the wire, so the receiver verifies
what it received, never a re-serialisation. Key objects are parsed once at load time;
claim checks use the caller's clock so tests can move time.

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
import heapq
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeGuard

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
from gateway.errors import ResourceExhausted, Unauthenticated, quote

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


class ReplayCache:
    """Remembers each (issuer, jti) as long as its token could still be accepted; a
    second sighting is a replay.

    Keyed by issuer as well as jti (RFC 7519 §4.1.7 makes a jti unique per issuer), so a
    party cannot spend another's jti first. Each issuer has its own quota, so one party
    (a compromised key, a client in a loop) fills only its own share and the others go
    on; the total is bounded as well. In-process: several gateway processes sharing one
    deployment need a shared store (see docs/signing.md §6).
    """

    def __init__(self, max_entries: int = 2_000_000, per_issuer: int = 300_000) -> None:
        self._seen: dict[tuple[str, str], float] = {}
        self._expiry: list[tuple[float, str, str]] = []  # (forget_at, issuer, jti)
        self._count: dict[str, int] = {}
        self.max_entries = max_entries
        self.per_issuer = per_issuer

    def _prune(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] < now:
            _, issuer, jti = heapq.heappop(self._expiry)
            if self._seen.pop((issuer, jti), None) is not None:
                left = self._count[issuer] - 1
                if left:
                    self._count[issuer] = left
                else:
                    del self._count[issuer]

    def _add(self, issuer: str, jti: str, until: float) -> None:
        self._seen[(issuer, jti)] = until
        self._count[issuer] = self._count.get(issuer, 0) + 1
        heapq.heappush(self._expiry, (until, issuer, jti))

    def check_and_add(self, issuer: str, jti: str, until: float, now: float) -> bool:
        """True if issuer's jti is fresh (and now remembered until `until`, the last
        instant its token could be accepted), False if seen before.

        Raises ResourceExhausted when issuer's quota (or the whole cache) is full: its
        calls wait until its own earlier tokens expire, nobody else's do.
        """
        self._prune(now)
        if (issuer, jti) in self._seen:
            return False
        if self._count.get(issuer, 0) >= self.per_issuer:
            raise ResourceExhausted(f"replay cache quota of {issuer} ({self.per_issuer} "
                                    "unexpired tokens) is full; retry shortly")
        if len(self._seen) >= self.max_entries:
            raise ResourceExhausted("replay cache full; retry shortly")
        self._add(issuer, jti, until)
        return True

    def preload(self, seen: Iterable[tuple[str, str, float]], now: float) -> int:
        """Remember (issuer, jti, until) triples read back at start (the audit log), so
        a restart does not reopen the replay window. Quotas are not enforced here (the
        tokens were accepted once); returns how many were remembered."""
        added = 0
        for issuer, jti, until in seen:
            if until >= now and (issuer, jti) not in self._seen:
                self._add(issuer, jti, until)
                added += 1
        return added

    def __len__(self) -> int:
        return len(self._seen)


KeyLookup = Callable[[str], Sequence[PublicKey]]
MAX_TOKEN_CHARS = 8192  # a whole x-tongban-signature value (batch tokens included)
MAX_CLAIMS_BYTES = 4096  # the claims JSON of one message
MAX_JTI_CHARS = 128  # base64url of 16..96 bytes


def _json(data: bytes, what: str) -> Any:
    """Parse UTF-8 JSON (RFC 7515 §5.2 step 8, RFC 8259 §8.1); any failure, a 3,000-deep
    nesting included (RecursionError), is an Unauthenticated naming what was bad."""
    try:
        return json.loads(data.decode("utf-8"))  # UnicodeDecodeError is a ValueError
    except RecursionError:
        raise Unauthenticated(f"malformed {what}: nests too deeply") from None
    except ValueError as exc:
        raise Unauthenticated(f"malformed {what}: not UTF-8 JSON ({exc})") from None


def _media_type(value: object) -> str | None:
    """A typ value as a full, lower-case media type: RFC 7515 §4.1.9 has a recipient
    treat a typ without "/" as if "application/" were prepended, and media type names
    are case-insensitive (RFC 2045 §5.1), so "tongban+jwt", "application/tongban+jwt"
    and "Application/Tongban+JWT" are one type."""
    if not isinstance(value, str):
        return None
    lowered = value.lower()
    return lowered if "/" in lowered else f"application/{lowered}"


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is no time


@dataclass(kw_only=True)
class Verifier:
    """Checks signatures over received bytes: kid, alg, aud, time window, jti replay."""

    audience: str
    keys_for: KeyLookup  # party id -> its keys (empty when unknown)
    skew_s: int = 60
    max_ttl_s: int = 300
    max_token_chars: int = MAX_TOKEN_CHARS
    max_claims_bytes: int = MAX_CLAIMS_BYTES
    replay: ReplayCache = field(default_factory=ReplayCache)
    root_cache_size: int = 4096  # verified batch roots kept (a batch lives milliseconds)
    _roots: dict[str, tuple[str, bytes]] = field(default_factory=dict, repr=False)
    signature_checks: int = 0  # public-key operations done (a batch's root counts once)
    _headers: dict[str, tuple[Any, Any, Any]] = field(default_factory=dict, repr=False)

    @property
    def replay_window_s(self) -> int:
        """How long after a token's acceptance its jti must still be remembered: its exp
        is at most max_ttl after its iat, which is at most skew after the acceptance,
        and it is accepted until exp + skew (docs/signing.md, Limits)."""
        return self.max_ttl_s + 2 * self.skew_s

    def preload(self, seen: Iterable[tuple[str, str, float]], now: float) -> int:
        """Remember the (issuer, jti, accepted at) of calls accepted before a restart
        (read from the audit log), each for replay_window_s after its acceptance."""
        window = self.replay_window_s
        return self.replay.preload(((issuer, jti, at + window) for issuer, jti, at in seen
                                    if jti), now)

    def _key(self, kid: str) -> PublicKey:
        key = next((k for k in self.keys_for(kid.split("#", 1)[0]) if k.kid == kid), None)
        if key is None:
            raise Unauthenticated(f"unknown key {kid}")  # GatewayError escapes and cuts it
        return key

    def _read_header(self, encoded: str) -> tuple[Any, Any, Any]:
        """typ, kid and alg of an encoded protected header. A party sends the same few
        headers over and over, so well-formed ones are remembered (a bounded number)."""
        known = self._headers.get(encoded)
        if known is not None:
            return known
        header = _json(b64url_decode(encoded), "signature header")
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        if "crit" in header:
            raise Unauthenticated("critical header parameters are not supported")
        fields = (header.get("typ"), header.get("kid"), header.get("alg"))
        if len(self._headers) < 256:
            self._headers[encoded] = fields
        return fields

    def _open(self, jws: str, typ: str) -> tuple[bytes, PublicKey]:
        """The payload of a compact JWS whose signature checks out, and the key it used."""
        parts = jws.split(".")
        try:
            if len(parts) != 3:
                raise ValueError("a compact JWS has three parts")
            header = self._read_header(parts[0])
            payload = b64url_decode(parts[1])
            signature = b64url_decode(parts[2])
        except (ValueError, binascii.Error) as exc:
            raise Unauthenticated(f"malformed signature: {exc}") from exc
        header_typ, kid, alg = header
        if (_media_type(header_typ) != f"application/{typ}" or not isinstance(kid, str)
                or "#" not in kid):
            raise Unauthenticated(f'signature header needs typ "{typ}" and kid "<id>#<key-id>"')
        key = self._key(kid)
        if alg != key.alg:
            raise Unauthenticated(f"key {kid} signs with {key.alg}, not {quote(alg)}")
        self.signature_checks += 1
        try:
            _verify_bytes(key, signature, f"{parts[0]}.{parts[1]}".encode("ascii"))
        except (InvalidSignature, UnicodeEncodeError) as exc:
            raise Unauthenticated(f"bad signature for {kid}") from exc
        return payload, key

    def _open_batch(self, token: str) -> tuple[bytes, PublicKey]:
        """The claims of one message of a batch (docs/signing.md §7), and the batch's key.

        The root's signature is checked once per batch: a verified (JWS, root) pair is
        kept, keyed by the whole JWS including its signature, so a hit proves exactly
        what a fresh check would. The key is looked up again on every hit: a key taken
        out of partners.toml stops working at once.
        """
        parts = token.split("~")
        if len(parts) != 3:
            raise Unauthenticated("malformed batch signature: expected <JWS>~<claims>~<path>")
        jws, leaf_b64, path_b64 = parts
        known = self._roots.get(jws)
        if known is None:
            head, key = self._open(jws, BATCH_TYP)
            root_claims = _json(head, f"batch root of {key.kid}")
            try:
                if not isinstance(root_claims, dict):
                    raise TypeError("not a JSON object")
                root = b64url_decode(root_claims["mrk"])
            except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
                raise Unauthenticated(f"bad batch root for {key.kid}: {exc!r}") from None
            if root_claims.get("iss") != key.owner:
                raise Unauthenticated(f"batch iss {quote(root_claims.get('iss'))} does not "
                                      f"own key {key.kid}")
            if len(root) != 32:
                raise Unauthenticated("batch mrk is not a SHA-256 hash")
            if len(self._roots) >= self.root_cache_size:
                del self._roots[next(iter(self._roots))]  # the oldest
            self._roots[jws] = (key.kid, root)
        else:
            kid, root = known
            key = self._key(kid)
        try:
            leaf = b64url_decode(leaf_b64)
            reached = merkle.root_of(leaf, b64url_decode(path_b64))
        except (ValueError, binascii.Error) as exc:
            raise Unauthenticated(f"malformed batch signature: {exc}") from None
        if reached != root:
            raise Unauthenticated(f"batch path does not lead to the root {key.kid} signed")
        return leaf, key

    def _decode(self, token: str | None, now: float) -> tuple[dict[str, Any], str]:
        if not token:
            raise Unauthenticated(f"missing {HEADER} metadata")
        if len(token) > self.max_token_chars:
            raise Unauthenticated(f"the signature is {len(token)} characters, more than "
                                  f"{self.max_token_chars}")
        payload, key = self._open_batch(token) if "~" in token else self._open(token, TYP)
        kid, owner = key.kid, key.owner
        if len(payload) > self.max_claims_bytes:
            raise Unauthenticated(f"claims of {len(payload)} bytes, more than "
                                  f"{self.max_claims_bytes}")
        claims = _json(payload, f"claims for {kid}")
        if not isinstance(claims, dict):
            raise Unauthenticated("claims must be a JSON object")
        if claims.get("iss") != owner:
            raise Unauthenticated(f"iss {quote(claims.get('iss'))} does not own key {kid}")
        iat, exp = claims.get("iat"), claims.get("exp")
        if not _is_int(iat) or not _is_int(exp):
            raise Unauthenticated("iat and exp must be integers (seconds)")
        if not key.valid_at(iat):
            raise Unauthenticated(f"key {kid} is not valid at iat {quote(iat)}")
        if iat > now + self.skew_s:
            raise Unauthenticated(f"iat is {quote(iat - int(now))} s in the future "
                                  f"(skew {self.skew_s} s)")
        if exp < now - self.skew_s:
            raise Unauthenticated("signature expired")
        if not 0 < exp - iat <= self.max_ttl_s:
            raise Unauthenticated(f"exp - iat must be 1..{self.max_ttl_s} s")
        for name in ("jti", "mth", "bdg"):
            if not isinstance(claims.get(name), str) or not claims[name]:
                raise Unauthenticated(f"claim {name} is required")
        aud = claims.get("aud")
        if not (isinstance(aud, str) and aud) and not (  # RFC 7519 §4.1.3: or an array
                isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud)):
            raise Unauthenticated("claim aud is required: a string or an array of strings")
        jti = claims["jti"]
        try:
            if len(jti) > MAX_JTI_CHARS:
                raise ValueError(f"at most {MAX_JTI_CHARS} characters")
            random_bytes = len(b64url_decode(jti))
        except (ValueError, binascii.Error) as exc:
            raise Unauthenticated(f"jti is not base64url: {exc}") from None
        if random_bytes < 16:
            raise Unauthenticated("jti needs at least 128 random bits")
        return claims, kid

    def _check(self, claims: dict[str, Any], method: str, body: bytes) -> None:
        aud = claims["aud"]
        if aud != self.audience and not (isinstance(aud, list) and self.audience in aud):
            raise Unauthenticated(f"aud {quote(aud)} is not this gateway ({self.audience})")
        if claims["mth"] != method:
            raise Unauthenticated(f"signature is for {quote(claims['mth'])}, not {method}")
        if claims["bdg"] != body_digest(body):
            raise Unauthenticated("bdg does not match the message bytes")

    def verify_request(self, token: str | None, *, method: str, body: bytes, now: float) -> Claims:
        claims, kid = self._decode(token, now)
        if "rti" in claims or "rdg" in claims:  # docs/signing.md §3: only answers bind
            raise Unauthenticated("a response signature (rti/rdg) is not a request")
        self._check(claims, method, body)
        # accepted until exp + skew (§2 step 5), so remembered that long
        if not self.replay.check_and_add(claims["iss"], claims["jti"],
                                         claims["exp"] + self.skew_s, now):
            raise Unauthenticated(f"replayed jti {claims['jti']}")
        return self._claims(claims, kid)

    def verify_response(self, token: str | None, *, peer: str, method: str, body: bytes,
                        request: Claims, now: float) -> Claims:
        """Check a response signature from peer, bound to the request we sent."""
        claims, kid = self._decode(token, now)
        rti, rdg = claims.get("rti"), claims.get("rdg")
        if not isinstance(rti, str) or not rti or not isinstance(rdg, str) or not rdg:
            raise Unauthenticated("a response signature carries rti and rdg")
        self._check(claims, method, body)
        if claims["iss"] != peer:
            raise Unauthenticated(f"response signed by {claims['iss']}, expected {peer}")
        if rti != request.jti or rdg != request.bdg:
            raise Unauthenticated("response is not bound to this request (rti/rdg)")
        return self._claims(claims, kid)

    def _claims(self, c: dict[str, Any], kid: str) -> Claims:
        aud = c["aud"] if isinstance(c["aud"], str) else self.audience  # the array held it
        return Claims(iss=c["iss"], aud=aud, iat=c["iat"], exp=c["exp"], jti=c["jti"],
                      mth=c["mth"], bdg=c["bdg"], rti=c.get("rti", ""), rdg=c.get("rdg", ""),
                      kid=kid)


def verify_statement(verifier: Verifier, token: str, *, body: bytes,
                     home: Callable[[str], str | None] | None = None) -> Claims:
    """Check a stored statement (docs/signing.md §8): the author's signature over exactly
    `body`, with a key of the author that was valid when it signed.

    No time window, audience or replay check here: a statement is evidence, checked again
    at every hop and years later by an auditor; what it may be used for (which method,
    which audience, which case) is for the caller to decide from the claims returned.
    A response token (one with `rti`/`rdg`) is never a statement.
    """
    return _verify_stored(verifier, token, body, response=False, home=home)


def verify_receipt(verifier: Verifier, token: str, *, body: bytes) -> Claims:
    """Check a stored receipt: a party's response token over exactly `body`, the answer
    it gave to one of our deliveries (rti/rdg present), as evidence, without a window."""
    return _verify_stored(verifier, token, body, response=True)


def _verify_stored(verifier: Verifier, token: str, body: bytes, *, response: bool,
                   home: Callable[[str], str | None] | None = None) -> Claims:
    what = "receipt" if response else "statement"
    if not token or len(token) > MAX_STATEMENT_TOKEN:
        raise Unauthenticated(f"a {what} needs its signer's token (at most "
                              f"{MAX_STATEMENT_TOKEN} characters)")
    payload, key = (verifier._open_batch(token) if "~" in token
                    else verifier._open(token, TYP))
    claims = _json(payload, f"{what} claims")
    if not isinstance(claims, dict):
        raise Unauthenticated(f"{what} claims must be a JSON object")
    if claims.get("iss") != key.owner:
        raise Unauthenticated(f"{what} iss does not own key {key.kid}")
    iat, exp = claims.get("iat"), claims.get("exp")
    if type(iat) is not int or type(exp) is not int or not 0 < exp - iat <= verifier.max_ttl_s:
        raise Unauthenticated(f"{what} iat/exp are not integers a valid token carries")
    if not key.valid_at(iat):
        raise Unauthenticated(f"key {key.kid} was not valid when the {what} was signed")
    aud = claims.get("aud")
    if isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud):
        # RFC 7519 §4.1.3: several audiences; the one that matters is the signer's own
        # gateway (home), which the receiver that first accepted the call was
        wanted = home(claims["iss"]) if home is not None else None
        claims["aud"] = aud = wanted if wanted in aud else aud[0]
    if not isinstance(aud, str):
        raise Unauthenticated(f"a {what} names its audience")
    for name in ("aud", "jti", "mth", "bdg", *(("rti", "rdg") if response else ())):
        if not isinstance(claims.get(name), str) or not claims[name]:
            raise Unauthenticated(f"{what} claim {name} is required")
    if not response and ("rti" in claims or "rdg" in claims):
        raise Unauthenticated("a response token is not a statement")
    if claims["bdg"] != body_digest(body):
        raise Unauthenticated(f"the {what}'s bdg does not match its bytes")
    return verifier._claims(claims, key.kid)


MAX_STATEMENT_TOKEN = 16 * 1024
