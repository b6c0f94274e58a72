"""Checking signatures over received bytes (docs/signing.md §2, §3, §7, §8). No I/O.

The receiver's side of signing.py: the checks in order, the replay cache (a `jti` is
remembered until its token could no longer be accepted, per issuer, with a quota), the
size and nesting limits that turn hostile tokens into UNAUTHENTICATED, and the check of
stored statements and receipts, which travel with a case and are checked again at every
hop and years later, without a time window.
"""

from __future__ import annotations

import binascii
import heapq
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from cryptography.exceptions import InvalidSignature

from gateway import merkle
from gateway.errors import ResourceExhausted, Unauthenticated, quote
from gateway.signing import (
    BATCH_TYP,
    HEADER,
    TYP,
    Claims,
    PublicKey,
    _verify_bytes,
    b64url_decode,
    body_digest,
)


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
        claims, key = self._signed_claims(token, max_chars=self.max_token_chars, now=now)
        kid = key.kid
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

    def _signed_claims(self, token: str, *, max_chars: int, now: float | None
                       ) -> tuple[dict[str, Any], PublicKey]:
        """The claims of a token whose signature checks out, with the key that made it:
        sizes, iss owning the key, integer iat/exp inside the key's window, the lifetime,
        the claims every token carries. With now, the time window too (a call); without,
        none (a stored statement or receipt, checked again hours or years later)."""
        if len(token) > max_chars:
            raise Unauthenticated(f"the signature is {len(token)} characters, more than "
                                  f"{max_chars}")
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
        if now is not None:
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
        return claims, key

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
    if not token:
        raise Unauthenticated(f"a {what} needs its signer's token")
    claims, key = verifier._signed_claims(token, max_chars=MAX_STATEMENT_TOKEN, now=None)
    aud = claims["aud"]
    if isinstance(aud, list):
        # RFC 7519 §4.1.3: several audiences; the one that matters is the signer's own
        # gateway (home), which the receiver that first accepted the call was
        wanted = home(claims["iss"]) if home is not None else None
        claims["aud"] = wanted if wanted in aud else aud[0]
    for name in ("rti", "rdg") if response else ():
        if not isinstance(claims.get(name), str) or not claims[name]:
            raise Unauthenticated(f"{what} claim {name} is required")
    if not response and ("rti" in claims or "rdg" in claims):
        raise Unauthenticated("a response token is not a statement")
    if claims["bdg"] != body_digest(body):
        raise Unauthenticated(f"the {what}'s bdg does not match its bytes")
    return verifier._claims(claims, key.kid)


MAX_STATEMENT_TOKEN = 16 * 1024
