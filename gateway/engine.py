"""The exchange core: admit, forward, update and follow cases.

It owns no socket: callers (the gRPC servicer, in-process platforms) hand it verified
caller ids and parsed messages; it talks to the store, the route table and the outbox.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence

from google.protobuf.timestamp_pb2 import Timestamp

from gateway.cases import OPEN, TRANSITIONS, Side, State, plan
from gateway.config import Config, Gateway, Partner
from gateway.divisions import resolve
from gateway.errors import AlreadyExists, FailedPrecondition, NotFound, PermissionDenied
from gateway.identifiers import mask_id
from gateway.ids import new_ulid
from gateway.outbox import OutboxWorker
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import gateway_pb2 as gw
from gateway.pb.tongban.v1 import partner_pb2 as pp
from gateway.routing import Route, RouteTable, Scope, admit
from gateway.store import CaseRecord, NewOutbox, OutboxEntry, Store
from gateway.types import Clock, PartnerAdapter
from gateway.validation import MODE_NAMES, check_submit, check_update

log = logging.getLogger("tongban.engine")
SCOPES = {Scope.INTRA_PROVINCE: pb.SCOPE_INTRA_PROVINCE,
          Scope.CROSS_PROVINCE: pb.SCOPE_CROSS_PROVINCE,
          Scope.METRO_CIRCLE: pb.SCOPE_METRO_CIRCLE}


def _timestamp(t: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(t * 1e9))
    return ts


class Engine:
    def __init__(self, config: Config, store: Store, adapters: Mapping[str, PartnerAdapter],
                 clock: Clock) -> None:
        self.config, self.store, self.adapters, self.clock = config, store, adapters, clock
        self.routes = RouteTable.from_config(config)
        self.outbox = OutboxWorker(store, self._deliver, clock, config.outbox)
        self._watchers: dict[str, set[asyncio.Queue[pb.Case]]] = {}

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

    @staticmethod
    def _side(record: CaseRecord, caller: str) -> Side:
        if caller == record.upstream:
            return Side.ORIGIN
        if caller == record.downstream:
            return Side.TARGET
        # one partner never learns of another's cases: unknown and foreign look the same
        raise NotFound(f"case {record.case.case_id} not found", field="case_id")

    # -- admission -----------------------------------------------------------------------
    async def submit(self, caller: str, req: gw.SubmitCaseRequest,
                     digest: str) -> gw.SubmitCaseResponse:
        """Admit a partner's case; return only once it is durable here."""
        partner = self._partner(caller)
        item = check_submit(req, dict(self.config.items))
        resolution = resolve(req.target_division)
        if resolution is None:
            raise NotFound(f"{req.target_division} is not a GB/T 2260 division code",
                           field="target_division")
        route = self.routes.route(resolution.current)
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
            submitted_at=_timestamp(now), updated_at=_timestamp(now))
        case.timeline.add(state=pb.CASE_STATE_SUBMITTED, at=_timestamp(now), actor=partner.id,
                          update_id=f"submit:{case.case_id}")
        record, duplicate = await self.store.create_case(
            CaseRecord(case=case, upstream=partner.id, downstream=self._downstream(route),
                       request_digest=digest),
            [self._case_outbox(case, route, hops=0, path=[])])
        if duplicate and record.request_digest != digest:
            raise AlreadyExists(f"case_number {req.case_number} was used for a different case",
                                field="case_number")
        if not duplicate:
            log.info("case %s admitted from %s for %s (%s), applicant %s", case.case_id,
                     partner.id, resolution.current, admission.scope.value,
                     mask_id(req.applicant.id_number))
            self.outbox.kick()
        return gw.SubmitCaseResponse(case=record.case, duplicate=duplicate,
                                     division_note=resolution.note)

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
        record, duplicate = await self.store.create_case(
            CaseRecord(case=case, upstream=peer.id, downstream=self._downstream(route)),
            [self._case_outbox(case, route, hops=req.hops, path=list(req.path))])
        if duplicate and record.upstream != peer.id:
            # a case id seen from another neighbour: say so, but show nothing of it
            raise AlreadyExists(f"case {case.case_id} reached this gateway by another path",
                                field="case.case_id")
        if not duplicate:
            self.outbox.kick()
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
    async def update(self, caller: str, update: pb.CaseUpdate) -> gw.UpdateCaseResponse:
        """Apply a change from either side of a case and pass it on to the other side."""
        check_update(update)
        current = await self.store.get_case(update.case_id)
        if current is None:
            raise NotFound(f"case {update.case_id} not found", field="update.case_id")
        side = self._side(current, caller)
        if not update.actor or isinstance(self.config.party(caller), Partner):
            update.actor = caller  # a partner speaks for itself; a peer relays the maker
        if not update.HasField("at"):
            update.at.CopyFrom(_timestamp(self.clock.now()))

        def mutate(record: CaseRecord) -> Sequence[NewOutbox]:
            case = record.case
            if update.state:
                for step in plan(State(case.state), State(update.state), side):
                    case.state = int(step)  # type: ignore[assignment]
                    case.timeline.add(state=int(step), at=update.at,  # type: ignore[arg-type]
                                      actor=update.actor, note=update.note,
                                      missing_materials=update.missing_materials,
                                      update_id=update.update_id)
            elif State(case.state) not in OPEN:
                raise FailedPrecondition(f"case is {State(case.state).name}",
                                         field="update.case_id")
            known = {m.sha256 for m in case.materials}
            case.materials.extend(m for m in update.supplement if m.sha256 not in known)
            case.updated_at.CopyFrom(update.at)
            other = record.downstream if side is Side.ORIGIN else record.upstream
            payload = gw.UpdateCaseRequest(update=update).SerializeToString()
            return [NewOutbox(destination=other, case_id=case.case_id, kind="update",
                              payload=payload)]

        record, duplicate = await self.store.update_case(update.case_id, update.update_id, mutate)
        if not duplicate:
            self._notify(record.case)
            self.outbox.kick()
        return gw.UpdateCaseResponse(case=record.case, duplicate=duplicate)

    async def cancel(self, caller: str, req: gw.CancelCaseRequest) -> gw.CancelCaseResponse:
        update = pb.CaseUpdate(case_id=req.case_id, update_id=f"cancel:{req.case_id}",
                               state=pb.CASE_STATE_CANCELLED, note=req.reason)
        answer = await self.update(caller, update)
        return gw.CancelCaseResponse(case=answer.case)

    async def get(self, caller: str, case_id: str) -> pb.Case:
        record = await self.store.get_case(case_id)
        if record is None:
            raise NotFound(f"case {case_id} not found", field="case_id")
        self._side(record, caller)
        return record.case

    async def watch(self, caller: str, case_id: str) -> AsyncIterator[pb.Case]:
        """The case now, then after every change, until it can change no more."""
        queue: asyncio.Queue[pb.Case] = asyncio.Queue()
        self._watchers.setdefault(case_id, set()).add(queue)
        try:
            case = await self.get(caller, case_id)
            yield case
            while TRANSITIONS[State(case.state)]:
                case = await queue.get()
                yield case
        finally:
            watchers = self._watchers.get(case_id)
            if watchers is not None:
                watchers.discard(queue)
                if not watchers:
                    del self._watchers[case_id]

    def _notify(self, case: pb.Case) -> None:
        for queue in self._watchers.get(case.case_id, ()):
            queue.put_nowait(case)

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

        def forwarded(record: CaseRecord) -> Sequence[NewOutbox]:
            if record.case.state == pb.CASE_STATE_SUBMITTED:
                now = _timestamp(self.clock.now())
                record.case.state = pb.CASE_STATE_FORWARDED
                record.case.updated_at.CopyFrom(now)
                record.case.timeline.add(state=pb.CASE_STATE_FORWARDED, at=now,
                                         actor=self.config.self_id,
                                         note=f"delivered to {entry.destination}",
                                         update_id=f"delivered:{entry.id}")
            return []

        record, _ = await self.store.update_case(entry.case_id, f"delivered:{entry.id}",
                                                 forwarded, done_outbox=entry.id)
        self._notify(record.case)
