"""End-to-end statements (DESIGN §4a, docs/signing.md §8). No I/O.

A gateway is a router, not a notary. Every statement about a case (the submission, a
status report, a supplement, a cancellation, a rating) is the author platform's own
signed request: its exact bytes and its token travel with the case over every hop.
This module turns such a statement into what it means for a case (the submission it
carries, the update it makes) the same way at every gateway, so each hop can rebuild
what the author said and refuse anything a neighbour added, dropped or changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from google.protobuf.message import DecodeError, Message

from gateway.errors import InvalidArgument, PermissionDenied, Unauthenticated
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import gateway_pb2 as gw
from gateway.signing import Claims, PublicKey
from gateway.validation import check_timestamps
from gateway.verifier import Verifier, verify_statement

SERVICE = "/tongban.v1.Gateway/"
SUBMIT = SERVICE + "SubmitCase"
SUBMIT_BUNDLE = SERVICE + "SubmitBundle"
UPDATE = SERVICE + "UpdateCase"
CANCEL = SERVICE + "CancelCase"
RATE = SERVICE + "RateCase"
SUBMISSIONS = frozenset({SUBMIT, SUBMIT_BUNDLE})
UPDATES = frozenset({UPDATE, CANCEL, RATE})

# what each gateway on a case's path decides for itself (its own policy and route), or
# checked apart: not compared with what the previous hop sent
HOP_CASE_FIELDS = frozenset({"target_partner", "deadline", "origin_statement"})
# what only a gateway fills in, on each hop, for an update: never compared
GATEWAY_UPDATE_FIELDS = ("actor", "at", "statement")
GATEWAY_RATING_FIELDS = ("at", "rater", "rectification_deadline")
# update ids the gateways make themselves (a submission, a delivery mark, a timer, a
# cancellation, a rating): an author's UpdateCase may not take one first, or the real
# change would be answered `duplicate` and dropped (an overdue alarm, a 差评)
RESERVED_UPDATE_IDS = ("submit:", "delivered:", "timer:", "cancel:", "rate:")


def rating_update_id(score: int, channel: int, comment: str) -> str:
    """The update id of a rating: the same rating twice is the same update (a retry)."""
    key = hashlib.sha256(f"{score}|{channel}|{comment}".encode()).hexdigest()
    return f"rate:{key[:32]}"


def _parse(cls: type[Message], data: bytes, what: str) -> Message:
    try:
        message = cls.FromString(data)
    except DecodeError:
        raise PermissionDenied(f"the {what} statement is not a valid "
                               f"{cls.DESCRIPTOR.full_name}") from None
    message.DiscardUnknownFields()  # what the gateway does not understand it does not use
    return message


def _given_or_parsed(parsed: Message | None, cls: type[Message], data: bytes,
                     what: str) -> Message:
    return parsed if parsed is not None else _parse(cls, data, what)


def submission_of(method: str, request: bytes, case_number: str) -> gw.SubmitCaseRequest:
    """The SubmitCaseRequest a submission statement makes for `case_number` (a bundle's
    statement holds every part: the part with that number)."""
    if method == SUBMIT:
        message = _parse(gw.SubmitCaseRequest, request, "submission")
        assert isinstance(message, gw.SubmitCaseRequest)
        return message
    if method != SUBMIT_BUNDLE:
        raise PermissionDenied(f"a case is submitted by SubmitCase or SubmitBundle, not "
                               f"{method[:64]}", field="case.origin_statement")
    bundle = _parse(gw.SubmitBundleRequest, request, "submission")
    assert isinstance(bundle, gw.SubmitBundleRequest)
    for part in bundle.parts:
        if part.case_number == case_number:
            return part
    raise PermissionDenied("the bundle its origin signed has no part with this case "
                           "number", field="case.case_number")


def update_from(method: str, request: bytes, parsed: Message | None = None) -> pb.CaseUpdate:
    """What an UpdateCase, CancelCase or RateCase statement says, as a CaseUpdate with
    only the author's fields (the gateway adds actor, at, statement and the rating's
    gateway fields). The same bytes give the same update at every gateway.

    parsed: those bytes already parsed (unknown fields dropped) by the servicer that
    received them, so the first gateway does not parse them twice; it is consumed."""
    if method == UPDATE:
        message = _given_or_parsed(parsed, gw.UpdateCaseRequest, request, "update")
        assert isinstance(message, gw.UpdateCaseRequest)
        update = message.update
        if update.update_id.startswith(RESERVED_UPDATE_IDS):
            raise InvalidArgument(f"update ids starting {', '.join(RESERVED_UPDATE_IDS)} "
                                  "are the gateway's own", field="update.update_id")
        check_timestamps(update, "update")  # as the author sent them, before `at` moves
        if update.HasField("rating"):
            raise InvalidArgument("ratings go through RateCase", field="update.rating")
        if update.HasField("at"):  # a time the author claims: kept as claimed
            update.claimed_at.CopyFrom(update.at)
        for name in GATEWAY_UPDATE_FIELDS:
            update.ClearField(name)  # type: ignore[arg-type]
        return update
    if method == CANCEL:
        cancel = _given_or_parsed(parsed, gw.CancelCaseRequest, request, "cancellation")
        assert isinstance(cancel, gw.CancelCaseRequest)
        return pb.CaseUpdate(case_id=cancel.case_id, update_id=f"cancel:{cancel.case_id}",
                             state=pb.CASE_STATE_CANCELLED, note=cancel.reason)
    if method == RATE:
        rate = _given_or_parsed(parsed, gw.RateCaseRequest, request, "rating")
        assert isinstance(rate, gw.RateCaseRequest)
        return pb.CaseUpdate(
            case_id=rate.case_id,
            update_id=rating_update_id(rate.score, rate.channel, rate.comment),
            rating=pb.Rating(score=rate.score, channel=rate.channel, comment=rate.comment))
    raise PermissionDenied(f"an update is made by UpdateCase, CancelCase or RateCase, not "
                           f"{method[:64]}", field="update.statement")


def author_part(update: pb.CaseUpdate) -> pb.CaseUpdate:
    """A copy of update without what gateways fill in: what its author must have said."""
    out = pb.CaseUpdate()
    out.CopyFrom(update)
    for name in GATEWAY_UPDATE_FIELDS:
        out.ClearField(name)  # type: ignore[arg-type]
    if out.HasField("rating"):
        for name in GATEWAY_RATING_FIELDS:
            out.rating.ClearField(name)  # type: ignore[arg-type]
    return out


def differing_field(said: Message, carried: Message,
                    skip: frozenset[str] = frozenset()) -> str | None:
    """The first field (by number, except `skip`) in which two messages of one type
    differ. Unknown fields count: a neighbour cannot smuggle bytes past the check."""
    for field in said.DESCRIPTOR.fields:
        if field.name not in skip and getattr(said, field.name) != getattr(carried,
                                                                             field.name):
            return field.name
    return None


class Statements:
    """Checks statements against the keys of every platform of the federation.

    A gateway accepts calls only from its own partners and linked peers, but a statement
    may come from any listed platform (the origin of a case three hops away), so it has
    a key lookup of its own.
    """

    def __init__(self, partners: Mapping[str, Sequence[PublicKey]], audience: str, *,
                 max_ttl_s: int = 300, homes: Mapping[str, str] | None = None) -> None:
        """homes: each platform's own gateway, the audience its statements must name."""
        self._keys = partners
        self._homes = homes or {}
        self._verifier = Verifier(audience=audience, keys_for=self._keys_of,
                                  max_ttl_s=max_ttl_s)

    def _keys_of(self, party: str) -> Sequence[PublicKey]:
        return self._keys.get(party, ())

    def check(self, statement: pb.Statement, *, methods: frozenset[str],
              field: str) -> Claims:
        """The verified claims of statement, made by one of `methods`; else refuse.

        A statement that does not verify is the neighbour's fault, not the caller's
        signature: PERMISSION_DENIED (its own token was fine), naming the field.
        """
        if not statement.token:
            raise PermissionDenied("the author's signed statement is missing", field=field)
        try:
            claims = verify_statement(self._verifier, statement.token, body=statement.request,
                                      home=self._homes.get)
        except Unauthenticated as exc:
            raise PermissionDenied(f"the author's statement does not verify: {exc.message}",
                                   field=field) from None
        if claims.mth not in methods:
            raise PermissionDenied(f"a statement made by {claims.mth[:64]} cannot stand "
                                   "here", field=field)
        return claims
