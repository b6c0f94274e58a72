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

from gateway import lifecycle
from gateway.bundles import aggregate
from gateway.cases import TRANSITIONS, Side, State
from gateway.config import Config, Gateway, Item, Partner, Supervisor
from gateway.divisions import resolve
from gateway.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from gateway.identifiers import mask_id
from gateway.ids import new_ulid
from gateway.lifecycle import timestamp
from gateway.mailbox import Latest
from gateway.outbox import OutboxWorker
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import gateway_pb2 as gw
from gateway.pb.tongban.v1 import partner_pb2 as pp
from gateway.routing import Route, RouteTable, Scope, admit
from gateway.store import BundleRecord, CaseRecord, Effects, NewOutbox, OutboxEntry, Store
from gateway.types import Clock, PartnerAdapter
from gateway.validation import MODE_NAMES, check_delivery, check_rating, check_submit, check_update

log = logging.getLogger("tongban.engine")
SCOPES = {Scope.INTRA_PROVINCE: pb.SCOPE_INTRA_PROVINCE,
          Scope.CROSS_PROVINCE: pb.SCOPE_CROSS_PROVINCE,
          Scope.METRO_CIRCLE: pb.SCOPE_METRO_CIRCLE}
MAX_BUNDLE_PARTS = 20


class Engine:
    def __init__(self, config: Config, store: Store, adapters: Mapping[str, PartnerAdapter],
                 clock: Clock, *, on_events: Callable[[list[pb.CaseEvent]], None] | None = None
                 ) -> None:
        self.config, self.store, self.adapters, self.clock = config, store, adapters, clock
        self.routes = RouteTable.from_config(config)
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

    @staticmethod
    def _side(record: CaseRecord, caller: str) -> Side:
        if caller == record.upstream:
            return Side.ORIGIN
        if caller == record.downstream:
            return Side.TARGET
        # one partner never learns of another's cases: unknown and foreign look the same
        raise NotFound(f"case {record.case.case_id} not found", field="case_id")

    # -- admission -----------------------------------------------------------------------
    def _new_case(self, partner: Partner, req: gw.SubmitCaseRequest, digest: str,
                  field: str = "", bundle_id: str = "") -> tuple[CaseRecord, Effects, str]:
        """Check a submission and build its case, ready to store. No I/O."""
        prefix = f"{field}." if field else ""
        item = check_submit(req, dict(self.config.items), prefix)
        if req.HasField("delivery_preference"):
            check_delivery(req.delivery_preference, f"{prefix}delivery_preference")
        resolution = resolve(req.target_division)
        if resolution is None:
            raise NotFound(f"{req.target_division} is not a GB/T 2260 division code",
                           field=f"{prefix}target_division")
        route = self.routes.route(resolution.current, field=f"{prefix}target_division")
        admission = admit(partner.id[:6], resolution.current, item,
                          self.config.alliances.values())
        now = self.clock.now()
        case = pb.Case(
            case_id=new_ulid(now), case_number=req.case_number, origin_partner=partner.id,
            origin_gateway=self.config.self_id, target_division=resolution.current,
            requested_division=req.target_division,
            target_partner=route.destination.partner or "",
            item_code=item.code, mode=MODE_NAMES[item.mode], scope=SCOPES[admission.scope],
            alliance=admission.alliance, applicant=req.applicant, form=req.form,
            materials=req.materials, state=pb.CASE_STATE_SUBMITTED,
            submitted_at=timestamp(now), updated_at=timestamp(now),
            deadline=timestamp(self._deadline(item, now)), bundle_id=bundle_id)
        if req.HasField("delivery_preference"):
            case.delivery_preference.CopyFrom(req.delivery_preference)
        case.timeline.add(state=pb.CASE_STATE_SUBMITTED, at=timestamp(now), actor=partner.id,
                          update_id=f"submit:{case.case_id}")
        record = CaseRecord(case=case, upstream=partner.id, downstream=self._downstream(route),
                            request_digest=digest)
        effects = lifecycle.admitted(case, partner.id, self.ratio)
        effects.outbox.append(self._case_outbox(case, route, hops=0, path=[]))
        return record, effects, resolution.note

    def _deadline(self, item: Item, now: float) -> float:
        return self.config.calendar.add(now, item.time_limit_days)

    async def submit(self, caller: str, req: gw.SubmitCaseRequest,
                     digest: str) -> gw.SubmitCaseResponse:
        """Admit a partner's case; return only once it is durable here."""
        partner = self._partner(caller)
        new, effects, note = self._new_case(partner, req, digest)
        record, duplicate = await self.store.create_case(new, effects)
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

    async def submit_bundle(self, caller: str, req: gw.SubmitBundleRequest,
                            digest: str) -> gw.SubmitBundleResponse:
        """Admit a 一件事 bundle: every part checked first, then all stored in one commit."""
        partner = self._partner(caller)
        if not req.bundle_number or len(req.bundle_number) > 64:
            raise InvalidArgument("is required (1..64 characters)", field="bundle_number")
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
            part_digest = hashlib.sha256(part.SerializeToString()).hexdigest()
            built.append(self._new_case(partner, part, part_digest, f"parts[{i}]",
                                        bundle_id)[:2])
        bundle = BundleRecord(bundle_id=bundle_id, bundle_number=req.bundle_number,
                              origin_partner=partner.id, name=req.name,
                              case_ids=tuple(r.case.case_id for r, _ in built),
                              request_digest=digest)
        stored, duplicate = await self.store.create_bundle(bundle, built)
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

    async def forward(self, caller: str, req: gw.ForwardCaseRequest) -> gw.ForwardCaseResponse:
        """Accept a case from a linked gateway and pass it on (federation)."""
        peer = self._peer(caller)
        case = req.case
        if not case.case_id or not case.origin_partner or not case.case_number:
            raise FailedPrecondition("a forwarded case carries case_id, origin_partner and "
                                     "case_number", field="case.case_id")
        if self.config.self_id in req.path or req.hops >= self.config.limits.max_hops:
            raise FailedPrecondition(f"routing loop or hop cap ({req.hops} hops via "
                                     f"{' → '.join(req.path)})", field="hops")
        route = self.routes.route(case.target_division, field="case.target_division")
        if route.next_hop == peer.id:
            raise FailedPrecondition(f"{peer.id} sent back a case this gateway routes to it",
                                     field="case.target_division")
        effects = lifecycle.admitted(case, peer.id, self.ratio)
        effects.outbox.append(self._case_outbox(case, route, hops=req.hops,
                                                path=list(req.path)))
        record, duplicate = await self.store.create_case(
            CaseRecord(case=case, upstream=peer.id, downstream=self._downstream(route)),
            effects)
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
    async def update(self, caller: str, update: pb.CaseUpdate, *,
                     field: str = "update.case_id") -> gw.UpdateCaseResponse:
        """Apply a change from either side of a case and pass it on to the other side."""
        check_update(update)
        from_partner = isinstance(self.config.party(caller), Partner)
        if from_partner and update.HasField("rating"):
            raise InvalidArgument("ratings go through RateCase", field="update.rating")
        if not update.HasField("at"):
            update.at.CopyFrom(timestamp(self.clock.now()))
        return await self._apply(caller, update, from_partner=from_partner, field=field)

    async def _apply(self, caller: str, update: pb.CaseUpdate, *, from_partner: bool,
                     field: str) -> gw.UpdateCaseResponse:
        if not update.actor or from_partner:
            update.actor = caller  # a partner speaks for itself; a peer relays the maker
        written: list[Effects] = []

        def guard(record: CaseRecord) -> None:  # on the row being changed: no read first
            self._side(record, caller)  # raises for a stranger, duplicates included

        def mutate(record: CaseRecord) -> Effects:
            side = self._side(record, caller)  # the guard passed on this very row
            fx = lifecycle.apply(record.case, update, side, self.ratio)
            other = record.downstream if side is Side.ORIGIN else record.upstream
            payload = gw.UpdateCaseRequest(update=update).SerializeToString()
            fx.outbox.append(NewOutbox(destination=other, case_id=update.case_id,
                                       kind="update", payload=payload))
            written[:] = [fx]
            return fx

        try:
            record, duplicate = await self.store.update_case(update.case_id, update.update_id,
                                                             mutate, guard=guard)
        except NotFound:  # unknown and foreign cases look the same, field path included
            raise NotFound(f"case {update.case_id} not found", field=field) from None
        if not duplicate:
            self._notify(record.case)
            self._committed(*written)
        return gw.UpdateCaseResponse(case=record.case, duplicate=duplicate)

    async def cancel(self, caller: str, req: gw.CancelCaseRequest) -> gw.CancelCaseResponse:
        update = pb.CaseUpdate(case_id=req.case_id, update_id=f"cancel:{req.case_id}",
                               state=pb.CASE_STATE_CANCELLED, note=req.reason)
        answer = await self.update(caller, update, field="case_id")
        return gw.CancelCaseResponse(case=answer.case)

    async def rate(self, caller: str, req: gw.RateCaseRequest) -> gw.RateCaseResponse:
        """好差评: one rating per case; the same rating again is a harmless retry."""
        self._partner(caller)
        check_rating(req.score, req.channel)
        if len(req.comment) > 1024:
            raise InvalidArgument("at most 1024 characters", field="comment")
        now = self.clock.now()
        rating = pb.Rating(score=req.score, channel=req.channel, comment=req.comment,
                           at=timestamp(now), rater=caller)
        if req.score <= 2:  # 差评 opens a rectification (整改) with its own deadline
            rating.rectification_deadline.CopyFrom(timestamp(self.config.calendar.add(
                now, self.config.supervision.rectification_days)))
        key = hashlib.sha256(f"{req.score}|{req.channel}|{req.comment}".encode()).hexdigest()
        update = pb.CaseUpdate(case_id=req.case_id, update_id=f"rate:{key[:32]}",
                               rating=rating, actor=caller, at=timestamp(now))
        answer = await self._apply(caller, update, from_partner=True, field="case_id")
        return gw.RateCaseResponse(case=answer.case, duplicate=answer.duplicate)

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
        if record is None:
            raise NotFound(f"case {case_id} not found", field="case_id")
        self._side(record, caller)
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
                          alliances=sorted(a.id for a in self.config.alliances.values()
                                           if item.code in a.items))
        return out

    # -- delivery --------------------------------------------------------------------
    async def _deliver(self, entry: OutboxEntry) -> None:
        adapter = self.adapters.get(entry.destination)
        if adapter is None:
            raise NotFound(f"no adapter for {entry.destination}")
        if entry.kind == "update":
            await adapter.deliver_update(entry.payload)
            await self.store.finish_outbox(entry.id)
            return
        await adapter.deliver_case(entry.payload)
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
            written[:] = [fx]
            return fx

        record, _ = await self.store.update_case(entry.case_id, f"delivered:{entry.id}",
                                                 forwarded, done_outbox=entry.id)
        self._notify(record.case)
        self._committed(*written)


def _bundle_message(record: BundleRecord, parts: list[CaseRecord]) -> gw.Bundle:
    cases = [p.case for p in parts]
    return gw.Bundle(bundle_id=record.bundle_id, bundle_number=record.bundle_number,
                     origin_partner=record.origin_partner, name=record.name,
                     state=int(aggregate([State(c.state) for c in cases])),  # type: ignore[arg-type]
                     parts=cases)
