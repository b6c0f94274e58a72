"""The exchange core: admit, forward, update, rate and follow cases and bundles.

It owns no socket: callers (the gRPC servicer, in-process platforms) hand it verified
caller ids and parsed messages; it talks to the store, the route table and the outbox.
What a change means for the case (timeline, deadlines, events) is gateway/lifecycle.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncGenerator, Callable, Mapping

from google.protobuf.message import Message

from gateway import evidence, lifecycle
from gateway.admission import Admission
from gateway.audit import PendingAudit
from gateway.bundles import aggregate
from gateway.cases import TRANSITIONS, Side, State
from gateway.client import Receipt
from gateway.config import Config, Gateway, Partner, Supervisor
from gateway.errors import (
    AlreadyExists,
    FailedPrecondition,
    GatewayError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    quote,
)
from gateway.identifiers import mask_id
from gateway.ids import CASE_ID, new_ulid
from gateway.lifecycle import seconds, timestamp
from gateway.mailbox import Latest
from gateway.outbox import OutboxWorker
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import gateway_pb2 as gw
from gateway.pb.tongban.v1 import partner_pb2 as pp
from gateway.routing import Route, RouteTable
from gateway.signing import Claims
from gateway.store import (
    BundleRecord,
    CaseRecord,
    Effects,
    NewOutbox,
    OutboxEntry,
    Store,
    StoredReceipt,
)
from gateway.types import Clock, PartnerAdapter
from gateway.validation import (
    CASE_NUMBER,
    MODE_NAMES,
    check_rating,
    check_timestamps,
    check_update,
)

log = logging.getLogger("tongban.engine")
MAX_BUNDLE_PARTS = 20
# the field of a CancelCaseRequest or RateCaseRequest a refusal of its update is about
REQUEST_FIELDS = {(evidence.CANCEL, "update.note"): "reason",
                  (evidence.RATE, "update.rating"): "case_id"}


class Engine:
    def __init__(self, config: Config, store: Store, adapters: Mapping[str, PartnerAdapter],
                 clock: Clock, *, on_events: Callable[[list[pb.CaseEvent]], None] | None = None
                 ) -> None:
        self.config, self.store, self.adapters, self.clock = config, store, adapters, clock
        self.routes = RouteTable.from_config(config)
        self.statements = evidence.Statements(
            {p.id: p.keys for p in config.partners.values()}, config.self_id,
            max_ttl_s=config.limits.max_token_ttl_s,
            homes={p.id: p.gateway for p in config.partners.values()})
        self.admission = Admission(config, self.routes, self.statements)
        self.outbox = OutboxWorker(store, self._deliver, clock, config.outbox)
        self.ratio = config.supervision.warning_ratio
        self._watchers: dict[str, set[Latest[pb.Case]]] = {}
        self._tick = asyncio.Event()  # replaced and set whenever events were committed
        self._on_events = on_events or (lambda events: None)

    # -- who is calling ----------------------------------------------------------------
    def _partner(self, caller: str) -> Partner:
        party = self.config.party(caller)
        if not isinstance(party, Partner):
            raise PermissionDenied(f"{caller} is not a partner platform of this gateway")
        return party

    def _peer(self, caller: str) -> Gateway:
        party = self.config.party(caller)
        if not isinstance(party, Gateway):
            raise PermissionDenied(f"{caller} is not a gateway linked to this one")
        return party

    def supervisor(self, caller: str) -> Supervisor:
        party = self.config.party(caller)
        if not isinstance(party, Supervisor):
            raise PermissionDenied(f"{caller} is not a supervisor of this gateway")
        return party

    # -- admission -----------------------------------------------------------------------
    def _new_case(self, partner: Partner, req: gw.SubmitCaseRequest, digest: str,
                  statement: pb.Statement, field: str = "", bundle_id: str = ""
                  ) -> tuple[CaseRecord, Effects, str]:
        """Check a submission and build its case, ready to store. No I/O."""
        now = self.clock.now()
        case, route, note = self.admission.build(
            partner.id, req, case_id=new_ulid(now), at=now, origin_gateway=self.config.self_id,
            bundle_id=bundle_id, prefix=f"{field}." if field else "")
        case.origin_statement.CopyFrom(statement)
        record = CaseRecord(case=case, upstream=partner.id, downstream=self._downstream(route),
                            request_digest=digest)
        effects = lifecycle.admitted(case, partner.id, self.ratio)
        effects.outbox.append(self._case_outbox(case, route, hops=0, path=[]))
        return record, effects, note

    async def submit(self, caller: str, req: gw.SubmitCaseRequest, digest: str,
                     statement: pb.Statement, *, audit: PendingAudit | None = None
                     ) -> gw.SubmitCaseResponse:
        """Admit a partner's case; return only once it is durable here.

        digest identifies the submission by meaning (a deterministic serialisation: map
        order does not matter), so a resubmission gets the same case back; statement is
        the partner's own signed request, which travels with the case. audit: the call's
        entry, written in the same transaction as the case.
        """
        partner = self._partner(caller)
        new, effects, note = self._new_case(partner, req, digest, statement)
        record, duplicate = await self.store.create_case(new, effects, audit=audit)
        if duplicate and record.request_digest != digest:
            raise AlreadyExists(f"case_number {req.case_number} was used for a different case",
                                field="case_number")
        if not duplicate:
            if log.isEnabledFor(logging.INFO):  # its arguments cost more than the check
                log.info("case %s admitted from %s for %s (%s), applicant %s",
                         record.case.case_id, partner.id, record.case.target_division,
                         pb.Scope.Name(record.case.scope), mask_id(req.applicant.id_number))
            self._committed(effects)
        return gw.SubmitCaseResponse(case=record.case, duplicate=duplicate, division_note=note)

    async def submit_bundle(self, caller: str, req: gw.SubmitBundleRequest, digest: str,
                            statement: pb.Statement, *, audit: PendingAudit | None = None
                            ) -> gw.SubmitBundleResponse:
        """Admit a 一件事 bundle: every part checked first, then all stored in one commit."""
        partner = self._partner(caller)
        if not CASE_NUMBER.fullmatch(req.bundle_number):
            raise InvalidArgument("must be 1..64 letters, digits or -_./:", field="bundle_number")
        if not req.name.strip():
            raise InvalidArgument("is required", field="name")
        if not 2 <= len(req.parts) <= MAX_BUNDLE_PARTS:
            raise InvalidArgument(f"a bundle has 2..{MAX_BUNDLE_PARTS} parts", field="parts")
        numbers = [part.case_number for part in req.parts]
        for i, number in enumerate(numbers):
            if number in numbers[:i]:
                raise InvalidArgument(f"case_number {number} appears twice",
                                      field=f"parts[{i}].case_number")
        bundle_id = new_ulid(self.clock.now())
        built = []
        for i, part in enumerate(req.parts):
            built.append(self._new_case(partner, part, meaning_digest(part), statement,
                                        f"parts[{i}]", bundle_id)[:2])
        bundle = BundleRecord(bundle_id=bundle_id, bundle_number=req.bundle_number,
                              origin_partner=partner.id, name=req.name,
                              case_ids=tuple(r.case.case_id for r, _ in built),
                              request_digest=digest)
        stored, duplicate = await self.store.create_bundle(bundle, built, audit=audit)
        if duplicate and stored.request_digest != digest:
            raise AlreadyExists(f"bundle_number {req.bundle_number} was used for a different "
                                "bundle", field="bundle_number")
        if duplicate:
            return gw.SubmitBundleResponse(bundle=await self.bundle(caller, stored.bundle_id),
                                           duplicate=True)
        for _, fx in built:
            self._committed(fx)
        return gw.SubmitBundleResponse(bundle=_bundle_message(stored, [r for r, _ in built]))

    async def bundle(self, caller: str, bundle_id: str) -> gw.Bundle:
        found = await self.store.get_bundle(bundle_id)
        if found is None or found[0].origin_partner != caller:
            raise NotFound(f"bundle {bundle_id} not found", field="bundle_id")
        return _bundle_message(*found)

    async def forward(self, caller: str, req: gw.ForwardCaseRequest, *,
                      audit: PendingAudit | None = None) -> gw.ForwardCaseResponse:
        """Accept a case from a linked gateway and pass it on (federation).

        The peer only carries the case: what is stored and passed on is rebuilt here from
        the origin platform's signed request (DESIGN §4a), and a case that does not say
        what its origin signed is refused with nothing stored.
        """
        peer = self._peer(caller)
        case = req.case
        if self.config.self_id in req.path or req.hops >= self.config.limits.max_hops:
            raise FailedPrecondition(f"routing loop or hop cap ({req.hops} hops via "
                                     f"{quote(' → '.join(req.path), 200)})", field="hops")
        if not CASE_ID.fullmatch(case.case_id):
            raise InvalidArgument("a forwarded case carries the ULID its origin gateway gave "
                                  "it", field="case.case_id")
        check_timestamps(case, "case")
        expected, route = self.admission.rebuild(case, peer.id)
        if route.next_hop == peer.id:
            raise FailedPrecondition(f"{peer.id} sent back a case this gateway routes to it",
                                     field="case.target_division")
        effects = lifecycle.admitted(expected, peer.id, self.ratio)
        effects.outbox.append(self._case_outbox(expected, route, hops=req.hops,
                                                path=list(req.path)))
        record, duplicate = await self.store.create_case(
            CaseRecord(case=expected, upstream=peer.id, downstream=self._downstream(route)),
            effects, audit=audit)
        if duplicate and record.upstream != peer.id:
            # a case id seen from another neighbour: say so, but show nothing of it
            raise AlreadyExists(f"case {case.case_id} reached this gateway by another path",
                                field="case.case_id")
        if not duplicate:
            self._committed(effects)
        return gw.ForwardCaseResponse(case=record.case, duplicate=duplicate)

    def _downstream(self, route: Route) -> str:
        return route.next_hop or route.destination.partner or ""

    def _case_outbox(self, case: pb.Case, route: Route, *, hops: int,
                     path: list[str]) -> NewOutbox:
        if route.local:
            payload = pp.ReceiveCaseRequest(case=case).SerializeToString()
        else:
            payload = gw.ForwardCaseRequest(case=case, hops=hops + 1,
                                            path=[*path, self.config.self_id]
                                            ).SerializeToString()
        return NewOutbox(destination=self._downstream(route), case_id=case.case_id,
                         kind="case", payload=payload)

    # -- updates ---------------------------------------------------------------------
    async def report(self, caller: str, statement: pb.Statement, claims: Claims,
                     request: Message | None = None, *, audit: PendingAudit | None = None
                     ) -> gw.UpdateCaseResponse:
        """An UpdateCase, CancelCase or RateCase of this gateway's own partner: the update
        its signed request makes (claims are that request's verified token), stamped
        with this gateway's receipt time, passed on with the request itself."""
        self._partner(caller)
        update = evidence.update_from(claims.mth, statement.request, request)
        field = "update.case_id" if claims.mth == evidence.UPDATE else "case_id"
        now = self.clock.now()
        if update.HasField("rating"):
            check_rating(update.rating.score, update.rating.channel)
            if len(update.rating.comment) > 1024:
                raise InvalidArgument("at most 1024 characters", field="comment")
            self._rating_policy(update.rating, caller, now)
        else:
            check_update(update, now)
        update.actor = caller
        update.at.CopyFrom(timestamp(now))
        update.statement.CopyFrom(statement)
        try:
            return await self._apply(caller, update, field=field, audit=audit)
        except GatewayError as exc:
            # a CancelCase or RateCase made an update: name the field of what was sent
            if claims.mth != evidence.UPDATE and exc.field.startswith("update."):
                exc.field = REQUEST_FIELDS.get((claims.mth, exc.field), "case_id")
            raise

    async def relay(self, caller: str, update: pb.CaseUpdate, *,
                    audit: PendingAudit | None = None) -> gw.UpdateCaseResponse:
        """An update a linked gateway passes on: it must carry its author's statement and
        say what that says; the author must own the side of the case it acts for."""
        self._peer(caller)
        check_timestamps(update, "update")
        claims = self.statements.check(update.statement, methods=evidence.UPDATES,
                                       field="update.statement")
        said = evidence.update_from(claims.mth, update.statement.request)
        differs = evidence.differing_field(evidence.author_part(said),
                                           evidence.author_part(update))
        if differs is not None:
            raise PermissionDenied(f"the update does not say what {claims.iss} signed",
                                   field=f"update.{differs}")
        if update.actor != claims.iss:
            raise PermissionDenied(f"the update was made by {claims.iss}", field="update.actor")
        skew = self.config.limits.clock_skew_s
        at = seconds(update.at) if update.HasField("at") else 0.0
        if not claims.iat - skew <= at <= min(claims.exp + skew, self.clock.now() + skew):
            # the first gateway stamps its receipt time while the author's token is valid
            raise PermissionDenied("the update was not received while its author's token "
                                   "was valid", field="update.at")
        if update.HasField("rating"):
            check_rating(update.rating.score, update.rating.channel)
            if update.rating.rater != claims.iss:
                raise PermissionDenied(f"the rating was given by {claims.iss}",
                                       field="update.rating.rater")
            self._rating_policy(update.rating, claims.iss, at)
        else:
            check_update(update, self.clock.now())
        return await self._apply(caller, update, field="update.case_id", audit=audit)

    def _rating_policy(self, rating: pb.Rating, rater: str, at: float) -> None:
        """What a gateway adds to a rating: who gave it, when, and for a 差评 the
        rectification (整改) deadline, from the receipt time and this gateway's calendar."""
        rating.rater = rater
        rating.at.CopyFrom(timestamp(at))
        rating.ClearField("rectification_deadline")
        if rating.score <= 2:  # 差评 opens a rectification (整改) with its own deadline
            rating.rectification_deadline.CopyFrom(timestamp(self.config.calendar.add(
                at, self.config.supervision.rectification_days)))

    def _side(self, record: CaseRecord, caller: str, author: str) -> Side:
        """Which side of the case an update acts for: its author must own that side and
        it must arrive from that side's neighbour (a partner here, or the peer the case
        came from or went to)."""
        case = record.case
        if author == case.origin_partner and caller == record.upstream:
            return Side.ORIGIN
        if author and author == case.target_partner and caller == record.downstream:
            return Side.TARGET
        # one partner never learns of another's cases: unknown and foreign look the same
        raise NotFound(f"case {quote(case.case_id)} not found", field="case_id")

    async def _apply(self, caller: str, update: pb.CaseUpdate, *, field: str,
                     audit: PendingAudit | None = None) -> gw.UpdateCaseResponse:
        author = update.actor
        written: list[Effects] = []

        def guard(record: CaseRecord) -> None:  # on the row being changed: no read first
            self._side(record, caller, author)  # raises for a stranger, duplicates included

        def mutate(record: CaseRecord) -> Effects:
            side = self._side(record, caller, author)  # the guard passed on this very row
            fx = lifecycle.apply(record.case, update, side, self.ratio)
            other = record.downstream if side is Side.ORIGIN else record.upstream
            payload = gw.UpdateCaseRequest(update=update).SerializeToString()
            fx.outbox.append(NewOutbox(destination=other, case_id=update.case_id,
                                       kind="update", payload=payload))
            fx.statements.append((seconds(update.at), update.statement.SerializeToString()))
            written[:] = [fx]
            return fx

        try:
            # an update id is its author's: the other side cannot take it first and have
            # the real update answered as a duplicate ('/' is not allowed in update ids)
            record, duplicate = await self.store.update_case(
                update.case_id, f"{author}/{update.update_id}", mutate, guard=guard,
                audit=audit)
        except NotFound:  # unknown and foreign cases look the same, field path included
            raise NotFound(f"case {quote(update.case_id)} not found", field=field) from None
        if not duplicate:
            self._notify(record.case)
            self._committed(*written)
        return gw.UpdateCaseResponse(case=record.case, duplicate=duplicate)

    async def fire_timer(self, case_id: str, kind: str, due_at: float) -> None:
        """电子监察: a deadline came due; record its event once."""
        written: list[Effects] = []

        def mutate(record: CaseRecord) -> Effects:
            written[:] = [lifecycle.fire(record.case, kind, due_at, self.ratio)]
            return written[0]

        _, duplicate = await self.store.update_case(case_id, f"timer:{kind}:{due_at:.3f}",
                                                    mutate)
        if not duplicate:
            self._committed(*written)

    async def get(self, caller: str, case_id: str) -> pb.Case:
        record = await self.store.get_case(case_id)
        if record is None or caller not in (record.upstream, record.downstream):
            # one partner never learns of another's cases: unknown and foreign look the same
            raise NotFound(f"case {quote(case_id)} not found", field="case_id")
        return record.case

    async def watch(self, caller: str, case_id: str) -> AsyncGenerator[pb.Case, None]:
        """The case now, then as it changes, until it can change no more.

        A watcher holds at most one case, the latest (a one-slot mailbox): one that reads
        slowly skips intermediate versions but never sees an older state after a newer
        one, and always sees the final state (docs/lifecycle.md, WatchCase).
        """
        box: Latest[pb.Case] = Latest()
        self._watchers.setdefault(case_id, set()).add(box)
        try:
            case = await self.get(caller, case_id)
            yield case
            while TRANSITIONS[State(case.state)]:
                newer = await box.take()
                # a change committed before the read above may be notified after it:
                # the timeline only grows, so a shorter one is older than what was shown
                if len(newer.timeline) < len(case.timeline) or newer == case:
                    continue
                case = newer
                yield case
        finally:
            watchers = self._watchers.get(case_id)
            if watchers is not None:
                watchers.discard(box)
                if not watchers:
                    del self._watchers[case_id]

    def _notify(self, case: pb.Case) -> None:
        for box in self._watchers.get(case.case_id, ()):
            box.put(case)

    # -- events ------------------------------------------------------------------------
    def _committed(self, effects: Effects | None = None) -> None:
        """After a commit: hand its outbox entries to the worker, wake subscribers."""
        if effects is None:
            return
        if effects.outbox:
            self.outbox.push([
                (OutboxEntry(id=i, destination=o.destination, case_id=o.case_id, kind=o.kind,
                             payload=o.payload, attempts=0), behind)
                for i, o, behind in zip(effects.outbox_ids, effects.outbox,
                                        effects.outbox_behind, strict=True)])
        if effects.events:
            self._on_events(effects.events)
            tick, self._tick = self._tick, asyncio.Event()
            tick.set()

    def next_tick(self) -> asyncio.Event:
        """Set once more events are committed; take it before reading the log."""
        return self._tick

    def list_items(self, alliance: str) -> gw.ListItemsResponse:
        if alliance and alliance not in self.config.alliances:
            raise NotFound(f"alliance {alliance} is not configured", field="alliance")
        chosen = self.config.alliances[alliance].items if alliance else None
        out = gw.ListItemsResponse()
        for item in self.config.items.values():
            if chosen is not None and item.code not in chosen:
                continue
            out.items.add(code=item.code, name=item.name, mode=MODE_NAMES[item.mode],
                          required_materials=item.required_materials,
                          time_limit_days=item.time_limit_days,
                          cross_province=item.cross_province,
                          certificate_types=[f"{material}={cert_type}" for material, types
                                             in sorted(item.certificates.items())
                                             for cert_type in types],
                          alliances=sorted(a.id for a in self.config.alliances.values()
                                           if item.code in a.items))
        return out

    # -- delivery --------------------------------------------------------------------
    async def _deliver(self, entry: OutboxEntry) -> None:
        adapter = self.adapters.get(entry.destination)
        if adapter is None:
            raise NotFound(f"no adapter for {entry.destination}")
        if entry.kind == "update":
            answer = await adapter.deliver_update(entry.payload)
            await self.store.finish_outbox(entry.id, case_id=entry.case_id,
                                           receipt=self._receipt(entry, answer))
            return
        answer = await adapter.deliver_case(entry.payload)
        written: list[Effects] = []

        def forwarded(record: CaseRecord) -> Effects:
            fx = Effects()
            if record.case.state == pb.CASE_STATE_SUBMITTED:
                update = pb.CaseUpdate(case_id=entry.case_id, update_id=f"delivered:{entry.id}",
                                       state=pb.CASE_STATE_FORWARDED,
                                       actor=self.config.self_id,
                                       note=f"delivered to {entry.destination}",
                                       at=timestamp(self.clock.now()))
                fx = lifecycle.apply(record.case, update, Side.GATEWAY, self.ratio)
            receipt = self._receipt(entry, answer)
            if receipt is not None:
                fx.receipts.append(receipt)
            written[:] = [fx]
            return fx

        record, _ = await self.store.update_case(entry.case_id, f"delivered:{entry.id}",
                                                 forwarded, done_outbox=entry.id)
        self._notify(record.case)
        self._committed(*written)

    def _receipt(self, entry: OutboxEntry, answer: Receipt | None) -> StoredReceipt | None:
        """The receiver's signed answer to a delivery, kept with the case's evidence."""
        if answer is None:  # an in-process platform: nothing crossed a wire
            return None
        return StoredReceipt(party=entry.destination, received_at=self.clock.now(),
                             response=answer.response, token=answer.token,
                             request=entry.payload)


def meaning_digest(message: Message) -> str:
    """SHA-256 of a message's deterministic serialisation: the same request whatever order
    its map entries came in (protobuf fixes no map order across languages)."""
    return hashlib.sha256(message.SerializeToString(deterministic=True)).hexdigest()


def _bundle_message(record: BundleRecord, parts: list[CaseRecord]) -> gw.Bundle:
    cases = [p.case for p in parts]
    return gw.Bundle(bundle_id=record.bundle_id, bundle_number=record.bundle_number,
                     origin_partner=record.origin_partner, name=record.name,
                     state=int(aggregate([State(c.state) for c in cases])),  # type: ignore[arg-type]
                     parts=cases)
