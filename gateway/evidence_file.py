"""One file of evidence for one case, and its offline check (issue #12). No I/O.

`tongban evidence export CASE` writes what a gateway holds about a case: the case, every
author's signed statement applied to it (the origin's submission, each update, the
cancellation, the rating: request bytes and token), its audit entries and the public
keys of the authors. `tongban evidence verify FILE [--jwks JWKS]` checks it with nothing
else: each statement against its author's key, each statement against the case (the
case says what its origin submitted; every change a platform made has its signed
statement), the audit entries against their hashes. An auditor who trusts only the
federation's public keys (`tongban keys jwks`) learns who said what about the case, and
when each gateway says it received it, without trusting any gateway.
The format is JSON, documented in docs/signing.md §8.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError, Message

from gateway import evidence
from gateway.audit import AuditEntry, chain_hash
from gateway.errors import GatewayError
from gateway.lifecycle import seconds
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import gateway_pb2 as gw
from gateway.pb.tongban.v1 import partner_pb2 as pp
from gateway.signing import PublicKey, body_digest, public_key_from_jwk
from gateway.store import CaseEvidence
from gateway.verifier import Verifier, verify_receipt

FORMAT = "tongban-evidence/1"
# timeline entries that are not a platform's update
GATEWAY_MADE = ("submit:", "delivered:")
# a receipt time lies within its token's validity, give or take the receiving gateway's
# clock skew (`[limits] clock_skew_s`, 60 s by default; this bounds any sane setting)
TIME_SKEW_S = 300
TIME_TOLERANCE_S = 0.001  # a float of seconds against a Timestamp's nanoseconds
AUDIT_FIELDS = ("seq", "at", "caller", "method", "case_id", "digest", "kid", "jti",
                "outcome", "detail", "prev_hash", "hash")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def export(found: CaseEvidence, *, gateway: str, exported_at: float,
           keys: Iterable[PublicKey]) -> dict[str, Any]:
    """The evidence file of a case, from what a store holds of it, as a JSON-ready dict.

    keys: every key that may be needed (the federation's; those of parties that signed
    nothing in the file are dropped).
    """
    case, statements = found.record.case, found.statements
    items = [{"received_at": case.submitted_at.ToNanoseconds() / 1e9,
              "request": _b64(case.origin_statement.request),
              "token": case.origin_statement.token}]
    for received_at, raw in statements:
        statement = pb.Statement.FromString(raw)
        items.append({"received_at": received_at, "request": _b64(statement.request),
                      "token": statement.token})
    signers = {case.origin_partner, *(c.actor for c in case.timeline), case.rating.rater,
               *(r.party for r in found.receipts)}
    case_only = pb.Case()
    case_only.CopyFrom(case)
    case_only.ClearField("origin_statement")  # it is item 0
    return {
        "format": FORMAT, "gateway": gateway, "case_id": case.case_id,
        "exported_at": exported_at, "case": _b64(case_only.SerializeToString()),
        "items": items,
        "receipts": [{"party": r.party, "received_at": r.received_at,
                      "request": _b64(r.request), "response": _b64(r.response),
                      "token": r.token} for r in found.receipts],
        "audit": [dict(zip(AUDIT_FIELDS, (seq, *entry.row(), prev, digest), strict=True))
                  for seq, entry, prev, digest in found.audit],
        # 屏对屏 sessions held for the case: each transcript and both gateways' heads
        "sessions": [{"session_id": s.session_id, "n": s.n, "head": s.head,
                      "events": [_b64(e) for e in s.events],
                      "signatures": dict(sorted(s.signatures.items()))}
                     for s in found.sessions],
        "keys": {"keys": [key.jwk() for key in keys
                          if key.owner in signers | _session_signers(found)]},
    }


def _session_signers(found: CaseEvidence) -> set[str]:
    return {gateway for s in found.sessions for gateway in s.signatures}


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    summary: str  # what was proven, or the first bad item and why


class _Bad(Exception):
    """The first bad item of a file: where, and what is wrong with it."""


def keys_from_jwks(jwks: Mapping[str, Any]) -> dict[str, list[PublicKey]]:
    """Keys by owner from a JWKS (RFC 7517) whose kids are `<party>#<key id>`;
    `nbf`/`exp` members, when present, are the key's validity window."""
    from datetime import UTC, datetime

    out: dict[str, list[PublicKey]] = {}
    entries = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if not isinstance(entries, list):
        raise ValueError('a JWKS is an object with a "keys" array')
    for n, jwk in enumerate(entries):
        kid = jwk.get("kid") if isinstance(jwk, dict) else None
        if not isinstance(kid, str) or "#" not in kid:
            raise ValueError(f'keys[{n}]: kid must be "<party>#<key id>"')
        try:
            window = {name: datetime.fromtimestamp(jwk[member], UTC)
                      for name, member in (("not_before", "nbf"), ("not_after", "exp"))
                      if isinstance(jwk.get(member), int | float)}
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError(f"keys[{n}]: nbf/exp is not a time ({exc})") from None
        key = public_key_from_jwk(jwk, kid=kid, **window)
        out.setdefault(key.owner, []).append(key)
    return out


def verify(document: Mapping[str, Any],
           keys: Mapping[str, Sequence[PublicKey]] | None = None) -> Verdict:
    """Check an evidence file; keys: the trusted keys by owner (None: the file's own
    keys, which proves the file is consistent, not who made it)."""
    try:
        if not isinstance(document, Mapping):
            raise _Bad("not a JSON object")
        return Verdict(True, _verify(document, keys))
    except _Bad as bad:
        return Verdict(False, str(bad))


def _verify(document: Mapping[str, Any], keys: Mapping[str, Sequence[PublicKey]] | None
            ) -> str:
    if document.get("format") != FORMAT:
        raise _Bad(f"not a {FORMAT} file")
    trusted = "the given JWKS"
    if keys is None:
        trusted = "the keys inside the file (give --jwks to prove authorship)"
        try:
            keys = keys_from_jwks(document.get("keys") or {})
        except (ValueError, TypeError) as exc:
            raise _Bad(f"keys: {exc}") from None
    case = _case(document)
    checker = evidence.Statements(keys, document.get("gateway", ""), max_ttl_s=300)
    items = document.get("items")
    if not isinstance(items, list) or not items:
        raise _Bad("items: the case's statements are missing")
    # (author, update id) -> author, said, when: each author's update ids are its own
    # (the gateways dedup by case, author and update id)
    proven: dict[tuple[str, str], tuple[str, pb.CaseUpdate, float]] = {}
    authors = []
    for n, item in enumerate(items):
        where = f"item {n}"
        statement = _statement(item, where)
        methods = evidence.SUBMISSIONS if n == 0 else evidence.UPDATES
        try:
            claims = checker.check(statement, methods=methods, field=where)
            received = _received(item, claims, where)
            if n == 0:
                submitted = _same_submission(case, claims.iss, claims.mth,
                                             statement.request)
                if abs(received - seconds(case.submitted_at)) > TIME_TOLERANCE_S:
                    raise _Bad(f"{where}: the case's submitted_at is not its receipt time")
            else:
                update = evidence.update_from(claims.mth, statement.request)
                if update.case_id != case.case_id:
                    raise _Bad(f"{where} ({claims.mth} by {claims.iss}): it is about case "
                               f"{update.case_id[:40]!r}, not this one")
                proven[claims.iss, update.update_id] = (claims.iss, update, received)
        except GatewayError as exc:
            raise _Bad(f"{where}: {exc.message}") from None
        authors.append(f"{claims.iss} {claims.mth.rsplit('/', 1)[-1]}")
    _same_changes(case, proven, submitted)
    receipts = _receipts(document.get("receipts", []), keys, case.case_id)
    checked = _audit(document.get("audit"), case.case_id)
    sessions = _sessions(document.get("sessions", []), keys, case.case_id)
    return (f"OK: case {case.case_id}: {len(items)} signed statements ("
            f"{', '.join(authors)}), {receipts} signed delivery receipts, {sessions} "
            f"session transcripts signed by both gateways, checked with {trusted}; "
            f"{checked} audit entries intact")


def _sessions(rows: Any, keys: Mapping[str, Sequence[PublicKey]], case_id: str) -> int:
    """Each 屏对屏 transcript: its chain, and both gateways' signatures of its head."""
    from gateway.sessions.transcript import verify_transcript

    if not isinstance(rows, list):
        raise _Bad("sessions: not a list")
    for n, row in enumerate(rows):
        where = f"session {n}"
        try:
            session_id = row["session_id"]
            events = [base64.b64decode(e, validate=True) for e in row["events"]]
            signatures = row["signatures"]
            if not isinstance(signatures, dict) or len(signatures) < 2:
                raise _Bad(f"{where}: both gateways' head signatures are needed")
            verify_transcript(str(session_id), case_id, events,
                              [str(v) for v in signatures.values()],
                              lambda owner: keys.get(owner, ()))
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise _Bad(f"{where}: malformed ({type(exc).__name__})") from None
        except GatewayError as exc:
            raise _Bad(f"{where}: {exc.message}") from None
    return len(rows)


def _received(item: Mapping[str, Any], claims: Any, where: str) -> float:
    """An item's receipt time: a gateway stamps it while the author's token is valid
    (give or take a clock skew; TIME_SKEW_S bounds any configured one)."""
    received = item.get("received_at")
    if not isinstance(received, int | float) or isinstance(received, bool) or not (
            claims.iat - TIME_SKEW_S <= received <= claims.exp + TIME_SKEW_S):
        raise _Bad(f"{where}: received_at is not a time while its token was valid")
    return float(received)


def _same_changes(case: pb.Case,
                  proven: Mapping[tuple[str, str], tuple[str, pb.CaseUpdate, float]],
                  submitted: int) -> None:
    """Every change the case records a platform made is what that platform signed, at
    the time the gateway received it; the case's state, delivery, rating, rectification
    and supplemented materials each come from a statement."""
    for change in case.timeline:
        # the submission is item 0; FORWARDED is a gateway's delivery mark: every other
        # change was made by a platform and must have its statement
        if change.update_id.startswith(GATEWAY_MADE):
            # the submission's own entry, or a gateway's delivery mark: nothing else
            if change.update_id != f"submit:{case.case_id}" and not (
                    change.update_id.startswith("delivered:")
                    and change.state == pb.CASE_STATE_FORWARDED):
                raise _Bad(f"case timeline: {change.update_id[:40]!r} is a gateway's id on "
                           f"a change to {pb.CaseState.Name(change.state)}")
            continue
        author, said, received = proven.get((change.actor, change.update_id),
                                            ("", pb.CaseUpdate(), 0.0))
        what = (f"case timeline: the change to {pb.CaseState.Name(change.state)} by "
                f"{change.actor} ({change.update_id})")
        if author != change.actor:
            raise _Bad(f"{what} has no signed statement")
        # a target's first report passes FORWARDED on its way (gateway/cases.py plan)
        if (change.state not in (said.state, pb.CASE_STATE_FORWARDED)
                or change.note != said.note or change.claimed_at != said.claimed_at
                or abs(seconds(change.at) - received) > TIME_TOLERANCE_S):
            raise _Bad(f"{what} is not what its statement says, when it was received")
    if case.timeline and case.state != case.timeline[-1].state:
        raise _Bad("case state: not the state its last timeline change set")
    updates = [said for _, said, _ in proven.values()]
    if case.HasField("delivery") and not any(u.delivery == case.delivery for u in updates):
        raise _Bad("case delivery: no signed statement gives this delivery")
    rating = case.rating
    if case.HasField("rating") and not any(
            author == rating.rater == case.origin_partner and said.HasField("rating")
            and (said.rating.score, said.rating.channel, said.rating.comment)
            == (rating.score, rating.channel, rating.comment)
            for author, said, _ in proven.values()):
        raise _Bad("case rating: no signed statement of the origin gives this rating")
    if rating.rectification_report and not any(
            author != case.origin_partner
            and said.rectification_report == rating.rectification_report
            for author, said, _ in proven.values()):
        raise _Bad("case rating: no signed statement of the handling side gives this "
                   "rectification report")
    supplied = {m.SerializeToString(deterministic=True) for u in updates for m in u.supplement}
    for ref in case.materials[submitted:]:
        if ref.SerializeToString(deterministic=True) not in supplied:
            raise _Bad(f"case materials: {ref.name[:40]!r} was supplied by no statement")


def _case(document: Mapping[str, Any]) -> pb.Case:
    try:
        return pb.Case.FromString(base64.b64decode(document["case"], validate=True))
    except (KeyError, TypeError, ValueError, binascii.Error, DecodeError) as exc:
        raise _Bad(f"case: not a base64 tongban.v1.Case ({type(exc).__name__})") from None


def _statement(item: Any, where: str) -> pb.Statement:
    try:
        return pb.Statement(request=base64.b64decode(item["request"], validate=True),
                            token=str(item["token"]))
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise _Bad(f"{where}: needs base64 request and a token ({type(exc).__name__})"
                   ) from None


def _same_submission(case: pb.Case, author: str, method: str, request: bytes) -> int:
    """The case says what its origin submitted (the fields its origin chose; materials
    supplemented later follow the submitted ones). Returns how many it submitted."""
    said = evidence.submission_of(method, request, case.case_number)
    if author != case.origin_partner:
        raise _Bad(f"item 0: signed by {author}, but the case's origin is "
                   f"{case.origin_partner}")
    pairs = (("case_number", said.case_number, case.case_number),
             ("requested_division", said.target_division, case.requested_division),
             ("item_code", said.item_code, case.item_code),
             ("applicant", said.applicant, case.applicant),
             ("form", dict(said.form), dict(case.form)),
             ("materials", list(said.materials),
              list(case.materials[:len(said.materials)])),
             ("delivery_preference", said.delivery_preference, case.delivery_preference))
    for name, signed, held in pairs:
        if signed != held:
            raise _Bad(f"item 0: the case's {name} is not what {author} submitted")
    return len(said.materials)


def _receipts(rows: Any, keys: Mapping[str, Sequence[PublicKey]], case_id: str) -> int:
    """Each receipt is its party's signed answer (a response token) over its bytes, to a
    delivery about this case: the delivered request is in the file, its digest is the
    token's rdg, and it names this case."""
    if not isinstance(rows, list):
        raise _Bad("receipts: not a list")
    verifier = Verifier(audience="", keys_for=lambda party: keys.get(party, ()))
    for n, row in enumerate(rows):
        where = f"receipts[{n}]"
        try:
            request = base64.b64decode(row["request"], validate=True)
            response = base64.b64decode(row["response"], validate=True)
            claims = verify_receipt(verifier, str(row["token"]), body=response)
            party = row["party"]
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise _Bad(f"{where}: malformed ({type(exc).__name__})") from None
        except GatewayError as exc:
            raise _Bad(f"{where}: {exc.message}") from None
        if claims.iss != party:
            raise _Bad(f"{where}: signed by {claims.iss}, not {str(party)[:40]}")
        if claims.rdg != body_digest(request):
            raise _Bad(f"{where}: the answer is not to the request kept with it (rdg)")
        if _delivered_case(claims.mth, request) != case_id:
            raise _Bad(f"{where}: it answers a delivery of another case")
    return len(rows)


def _delivered_case(method: str, request: bytes) -> str:
    """The case a delivery request (ReceiveCase, ForwardCase, ReceiveUpdate, UpdateCase)
    is about; empty for anything else."""
    kinds: dict[str, tuple[type[Message], str]] = {
        "/tongban.v1.PartnerPlatform/ReceiveCase": (pp.ReceiveCaseRequest, "case"),
        "/tongban.v1.Gateway/ForwardCase": (gw.ForwardCaseRequest, "case"),
        "/tongban.v1.PartnerPlatform/ReceiveUpdate": (pp.ReceiveUpdateRequest, "update"),
        "/tongban.v1.Gateway/UpdateCase": (gw.UpdateCaseRequest, "update"),
    }
    kind = kinds.get(method)
    if kind is None:
        return ""
    try:
        message = kind[0].FromString(request)
    except (DecodeError, RecursionError):
        return ""
    return str(getattr(message, kind[1]).case_id)


def _audit(rows: Any, case_id: str) -> int:
    """The case's audit entries (an export holds only those) are intact and in order."""
    if not isinstance(rows, list):
        raise _Bad("audit: missing")
    previous: tuple[int, str] | None = None
    for n, row in enumerate(rows):
        try:
            seq, prev, digest = int(row["seq"]), str(row["prev_hash"]), str(row["hash"])
            entry = AuditEntry(*(row[name] for name in AUDIT_FIELDS[1:10]))
        except (KeyError, TypeError, ValueError) as exc:
            raise _Bad(f"audit[{n}]: malformed ({type(exc).__name__})") from None
        try:
            altered = chain_hash(seq, entry, prev) != digest
        except (TypeError, ValueError) as exc:  # UnicodeEncodeError: a lone surrogate
            raise _Bad(f"audit[{n}]: malformed ({type(exc).__name__})") from None
        if altered:
            raise _Bad(f"audit[{n}] (seq {seq}): the entry was altered")
        if entry.case_id != case_id:  # intact, but another case's (or a bundle's)
            raise _Bad(f"audit[{n}] (seq {seq}): it is about {str(entry.case_id)[:40]!r}, "
                       "not this case")
        if previous is not None and seq == previous[0] + 1 and prev != previous[1]:
            raise _Bad(f"audit[{n}] (seq {seq}): does not follow seq {previous[0]}")
        if previous is not None and seq <= previous[0]:
            raise _Bad(f"audit[{n}] (seq {seq}): out of order")
        previous = (seq, digest)
    return len(rows)
