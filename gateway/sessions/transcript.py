"""A session's transcript: the hash chain of its sequenced events and the signed head. No I/O.

docs/sessions.md §7: ``h0 = SHA-256("tongban-session:" + session id)``,
``hn = SHA-256(h(n−1) ‖ canonical JSON of event n)``. An event is chained as the object
the browsers see (seq, at, side, clerk, name, cid, type and the type's members), in the
canonical JSON of docs/certificates.md, and travels between gateways as those bytes, so
no gateway re-serialises what the other chained. At close each gateway signs the head
(``typ`` ``tongban-transcript+jwt``); anyone holding the events, the two signatures and
the gateways' public keys checks the whole transcript offline, years later included.
"""

from __future__ import annotations

import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from gateway.certificates.documents import canonical
from gateway.certificates.tokens import check_members, is_int, open_token
from gateway.errors import FailedPrecondition, InvalidArgument, Unauthenticated
from gateway.ids import CASE_ID
from gateway.signing import SigningKey, b64url, b64url_decode, compact
from gateway.verifier import KeyLookup

TYP: Final = "tongban-transcript+jwt"
WHAT: Final = "transcript head"
_HEAD_MEMBERS: Final = frozenset({"iss", "iat", "ses", "cas", "n", "head"})


class BrokenChain(FailedPrecondition):
    """A transcript that is not what was sequenced: ``seq`` is the first event that
    differs (0 when only the count or the head does)."""

    def __init__(self, message: str, *, seq: int) -> None:
        super().__init__(message, field=f"transcript.events[{seq}]" if seq else "transcript")
        self.seq = seq


def genesis(session_id: str) -> bytes:
    """h0: the chain's start, bound to the session so no event moves to another."""
    return hashlib.sha256(b"tongban-session:" + session_id.encode("utf-8")).digest()


def chain(head: bytes, event: bytes) -> bytes:
    """hn from h(n−1) and the canonical bytes of event n."""
    return hashlib.sha256(head + event).digest()


def _portable(value: object) -> bool:
    # canonical JSON is the same in every language for these only (RFC 8785): a float
    # such as 1.0 prints as 1 in JavaScript and 1.0 here, and would fork the chain
    if value is None or isinstance(value, bool | int):
        return True
    if isinstance(value, str):
        return not any(0xD800 <= ord(c) <= 0xDFFF for c in value)  # UTF-8 encodable
    if isinstance(value, list | tuple):
        return all(_portable(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _portable(k) and _portable(v)
                   for k, v in value.items())
    return False


def encode(event: Mapping[str, Any]) -> bytes:
    """The canonical JSON of an event; InvalidArgument for a value that has none (a
    float, a lone surrogate, an object of another kind)."""
    data = dict(event)
    if not _portable(data):
        raise InvalidArgument("an event holds strings, integers, booleans, null, lists "
                              "and objects only", field="event")
    return canonical(data)


def decode(data: bytes, seq: int) -> dict[str, Any]:
    """The event in ``data``, which must be canonical JSON of an object numbered ``seq``;
    BrokenChain naming ``seq`` otherwise."""
    try:
        event = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        raise BrokenChain(f"event {seq} is not UTF-8 JSON", seq=seq) from None
    if not isinstance(event, dict) or not _portable(event) or canonical(event) != data:
        raise BrokenChain(f"event {seq} is not the canonical JSON of an event", seq=seq)
    if event.get("seq") != seq or not is_int(event.get("seq")):
        raise BrokenChain(f"event {seq} is missing or out of order (found seq "
                          f"{str(event.get('seq'))[:20]})", seq=seq)
    if event.get("type") == "closed" and event.get("n") != seq - 1:
        raise BrokenChain(f"the closed event {seq} names n {str(event.get('n'))[:20]}",
                          seq=seq)
    return event


class Transcript:
    """The chain of one session's events, as bytes, with every link's hash."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self._events: list[bytes] = []
        self._hashes: list[bytes] = [genesis(session_id)]

    @property
    def n(self) -> int:
        return len(self._events)

    @property
    def head(self) -> bytes:
        return self._hashes[-1]

    @property
    def events(self) -> tuple[bytes, ...]:
        return tuple(self._events)

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """h1..hn: kept with the events, they let a check name the first edited one."""
        return tuple(self._hashes[1:])

    def append(self, event: Mapping[str, Any]) -> bytes:
        """Chain the next event (its ``seq`` must be n + 1); its canonical bytes."""
        data = encode(event)
        self.append_encoded(data)
        return data

    def append_encoded(self, data: bytes) -> dict[str, Any]:
        """Chain the next event as received (the remote side gets the sequencer's bytes);
        BrokenChain unless it is canonical and numbered n + 1. The event, parsed."""
        event = decode(data, self.n + 1)
        self._check_closed_head(event)
        self._events.append(data)
        self._hashes.append(chain(self.head, data))
        return event

    def _check_closed_head(self, event: Mapping[str, Any]) -> None:
        if event.get("type") == "closed" and event.get("head") != b64url(self.head):
            raise BrokenChain(f"the closed event {event['seq']} names another head",
                              seq=event["seq"])


def verify_chain(session_id: str, events: Sequence[bytes], *,
                 hashes: Sequence[bytes] | None = None) -> tuple[int, bytes]:
    """(n, hn) of a stored transcript; BrokenChain naming the first bad ``seq``.

    Each event must be canonical and numbered in order (a deletion or a reordering shows
    at the first gap), and a ``closed`` event must name the head before it. With the
    stored ``hashes`` (h1..hn) an edited event is named too; without them an edit shows
    only against a signed head (:func:`verify_transcript`), and so does a truncation.
    """
    if hashes is not None and len(hashes) != len(events):
        raise BrokenChain(f"{len(events)} events but {len(hashes)} hashes", seq=0)
    transcript = Transcript(session_id)
    for i, data in enumerate(events):
        transcript.append_encoded(data)
        if hashes is not None and hashes[i] != transcript.head:
            raise BrokenChain(f"event {i + 1} is not the one chained", seq=i + 1)
    return transcript.n, transcript.head


@dataclass(frozen=True, slots=True, kw_only=True)
class HeadClaims:
    """A gateway's signed word on a closed transcript: n events ending in ``head``."""

    iss: str  # the gateway
    session: str
    case: str
    n: int
    head: bytes  # hn, 32 bytes
    iat: int
    kid: str


def sign_head(key: SigningKey, *, gateway: str, session: str, case: str, n: int, head: bytes,
              now: float) -> str:
    """This gateway's signature over the head (``iat`` is ``now``: the key must have been
    valid then, as for every token)."""
    if gateway != key.kid.split("#", 1)[0]:
        raise InvalidArgument(f"the key {key.kid} is not the gateway's", field="gateway")
    if not CASE_ID.fullmatch(session) or not (case == "" or CASE_ID.fullmatch(case)):
        raise InvalidArgument("a ULID (case: or empty)", field="session")
    if not is_int(n) or n < 1 or len(head) != 32:
        raise InvalidArgument("at least one event and a SHA-256 head", field="head")
    payload = {"iss": gateway, "iat": int(now), "ses": session, "cas": case, "n": n,
               "head": b64url(head)}
    return compact(key, TYP, canonical(payload))


def verify_head(token: str, keys_for: KeyLookup) -> HeadClaims:
    """The claims of a genuine head signature (no time window: a transcript is checked
    years later; the key must have been valid at ``iat``); Unauthenticated otherwise."""
    claims, key = open_token(token, keys_for, TYP, WHAT)
    check_members(claims, _HEAD_MEMBERS, frozenset(), WHAT)
    ses, cas, n = claims["ses"], claims["cas"], claims["n"]
    if not isinstance(ses, str) or not CASE_ID.fullmatch(ses):
        raise Unauthenticated("the transcript head's ses must be a ULID")
    if not isinstance(cas, str) or not (cas == "" or CASE_ID.fullmatch(cas)):
        raise Unauthenticated("the transcript head's cas must be a ULID or empty")
    if not is_int(n) or n < 1:
        raise Unauthenticated("the transcript head's n must be a positive integer")
    try:
        head = b64url_decode(claims["head"]) if isinstance(claims["head"], str) else b""
    except (ValueError, binascii.Error):
        head = b""
    if len(head) != 32:
        raise Unauthenticated("the transcript head's head must be base64url of 32 bytes")
    return HeadClaims(iss=key.owner, session=ses, case=cas, n=n, head=head,
                      iat=claims["iat"], kid=key.kid)


def verify_transcript(session_id: str, case: str, events: Sequence[bytes],
                      heads: Sequence[str], keys_for: KeyLookup, *,
                      hashes: Sequence[bytes] | None = None) -> list[HeadClaims]:
    """What ``tongban sessions show`` checks: the chain (:func:`verify_chain`) and every
    head signature, each for this session and case, this many events and this head.
    Unauthenticated for a forged signature, BrokenChain for events that are not what
    was signed (edited, cut short or extended)."""
    n, head = verify_chain(session_id, events, hashes=hashes)
    signed = [verify_head(token, keys_for) for token in heads]
    for claims in signed:
        if (claims.session, claims.case) != (session_id, case):
            raise BrokenChain(f"{claims.iss} signed the head of another session or case",
                              seq=0)
        if claims.n != n:
            raise BrokenChain(f"{claims.iss} signed {claims.n} events, the transcript has "
                              f"{n}", seq=min(claims.n, n) + 1)
        if claims.head != head:
            raise BrokenChain(f"the events do not lead to the head {claims.iss} signed",
                              seq=0)
    return signed
