"""What one change does to a case beyond its state: timeline, 容缺 commitments, result
delivery, 好差评, deadlines and the events supervisors see. No I/O.

Every function mutates the case it is given and returns the Effects (events, timers) to
commit with it; the engine adds the outbox messages. Each gateway on a case's path runs
the same functions on the same updates (same `at`), so deadlines agree along the path;
values that need local policy (the item's time limit, the rectification period) are
computed once, by the gateway that first sees the change, and travel with it. `at` is
always a gateway's receipt time, never a time the author claims (that is `claimed_at`).
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from gateway.cases import OPEN, Side, State, plan
from gateway.errors import AlreadyExists, FailedPrecondition, InvalidArgument, PermissionDenied
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.store import Effects

DEADLINE_TIMERS = ("warning", "overdue")
ENDED = frozenset({State.REJECTED, State.CANCELLED, State.EXPIRED, State.RESULT_DELIVERED})
RATEABLE = frozenset({State.COMPLETED, State.RESULT_DELIVERED})
K = pb.EventKind


def seconds(ts: Timestamp) -> float:
    return ts.ToNanoseconds() / 1e9


def timestamp(t: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(t * 1e9))
    return ts


def event(case: pb.Case, kind: pb.EventKind.ValueType, at: Timestamp, *, actor: str = "",
          note: str = "", deadline: Timestamp | None = None, score: int = 0) -> pb.CaseEvent:
    out = pb.CaseEvent(kind=kind, case_id=case.case_id, state=case.state, at=at,
                       origin_partner=case.origin_partner, target_division=case.target_division,
                       item_code=case.item_code, actor=actor, note=note, score=score,
                       bundle_id=case.bundle_id)
    if deadline is not None:
        out.deadline.CopyFrom(deadline)
    return out


def deadline_timers(case: pb.Case, ratio: float) -> dict[str, float | None]:
    """Warning at `ratio` of the way from submission to the deadline, alarm at it."""
    if not case.HasField("deadline"):
        return {}
    start, end = seconds(case.submitted_at), seconds(case.deadline)
    return {"warning": start + ratio * (end - start), "overdue": end}


def admitted(case: pb.Case, actor: str, ratio: float) -> Effects:
    """A case new at this gateway: submitted here, or forwarded in by a peer."""
    return Effects(events=[event(case, K.EVENT_KIND_STATE_CHANGED, case.updated_at,
                                 actor=actor)],
                   timers=deadline_timers(case, ratio))


def apply(case: pb.Case, update: pb.CaseUpdate, side: Side, ratio: float) -> Effects:
    """Apply a checked update from `side` at `update.at`; raise and change nothing if it
    is not allowed (the store rolls the case back on an exception)."""
    fx = Effects()
    if update.state:
        _change_state(case, update, side, fx, ratio)
    elif State(case.state) not in OPEN and not (update.HasField("rating")
                                                or update.rectification_report):
        raise FailedPrecondition(f"case is {State(case.state).name}", field="update.case_id")
    if update.supplement and side is not Side.ORIGIN:
        # 补正: the applicant's side supplies what is owed; the handling side asks for it
        raise PermissionDenied("materials are supplied by the origin side (the applicant's)",
                               field="update.supplement")
    _supplement(case, update, fx)
    if update.HasField("delivery") and State(update.state or case.state) not in (
            State.COMPLETED, State.RESULT_DELIVERED):
        raise FailedPrecondition("a result is dispatched once the case is COMPLETED",
                                 field="update.delivery")
    if update.HasField("delivery"):
        case.delivery.CopyFrom(update.delivery)
        fx.events.append(event(case, K.EVENT_KIND_DELIVERY, update.at, actor=update.actor,
                               note=_delivery_note(update.delivery)))
    if update.HasField("rating"):
        if side is not Side.ORIGIN:
            raise PermissionDenied("the origin side rates a case (好差评), not the handling "
                                   "side", field="update.rating")
        _rate(case, update, fx)
    if update.rectification_report:
        _rectified(case, update, side, fx)
    case.updated_at.CopyFrom(update.at)
    return fx


def _change_state(case: pb.Case, update: pb.CaseUpdate, side: Side, fx: Effects,
                  ratio: float) -> None:
    at = seconds(update.at)
    for step in plan(State(case.state), State(update.state), side):
        if step is State.RESULT_DELIVERED and not (update.HasField("delivery")
                                                   or case.HasField("delivery")):
            raise InvalidArgument("say how the result was delivered (window, postal, "
                                  "electronic)", field="update.delivery")
        if State(case.state) is State.SUPPLEMENT_REQUESTED and step is State.PROCESSING:
            paused = at - seconds(case.timeline[-1].at)
            if paused > 0 and case.HasField("deadline"):  # 补正 time does not count
                case.deadline.CopyFrom(timestamp(seconds(case.deadline) + paused))
                fx.shift_s += paused
        case.state = int(step)  # type: ignore[assignment]
        change = case.timeline.add(state=int(step), at=update.at,  # type: ignore[arg-type]
                                   actor=update.actor, note=update.note,
                                   missing_materials=update.missing_materials,
                                   update_id=update.update_id)
        if update.HasField("claimed_at"):  # what the author said, never used for deadlines
            change.claimed_at.CopyFrom(update.claimed_at)
        fx.events.append(event(case, K.EVENT_KIND_STATE_CHANGED, update.at,
                               actor=update.actor, note=update.note))
        if step is State.COMPLETED or step in ENDED:
            fx.timers.update(dict.fromkeys(DEADLINE_TIMERS))  # the time limit is met/moot
        if step in ENDED and step is not State.RESULT_DELIVERED:
            fx.timers["commitment"] = None
    if update.HasField("commitment_deadline"):
        if seconds(update.commitment_deadline) <= at:
            raise InvalidArgument("must be later than the update",
                                  field="update.commitment_deadline")
        case.missing_materials[:] = update.missing_materials
        case.commitment_deadline.CopyFrom(update.commitment_deadline)
        fx.timers["commitment"] = seconds(update.commitment_deadline)


def _supplement(case: pb.Case, update: pb.CaseUpdate, fx: Effects) -> None:
    known = {m.sha256 for m in case.materials}
    case.materials.extend(m for m in update.supplement if m.sha256 not in known)
    if not update.supplement or not case.missing_materials:
        return
    names = {m.name for m in update.supplement}
    owed = [name for name in case.missing_materials if name not in names]
    if len(owed) == len(case.missing_materials):
        return
    case.missing_materials[:] = owed
    fx.events.append(event(case, K.EVENT_KIND_SUPPLEMENTED, update.at, actor=update.actor,
                           note=f"still owed: {', '.join(owed)}" if owed else "all in"))
    if not owed:
        fx.timers["commitment"] = None


def _rate(case: pb.Case, update: pb.CaseUpdate, fx: Effects) -> None:
    if State(case.state) not in RATEABLE:
        raise FailedPrecondition(f"a case is rated after completion; it is "
                                 f"{State(case.state).name}", field="case_id")
    if case.HasField("rating"):
        raise AlreadyExists("this case has been rated already (one rating per case)",
                            field="case_id")
    case.rating.CopyFrom(update.rating)
    fx.events.append(event(case, K.EVENT_KIND_RATED, update.at, actor=update.actor,
                           score=update.rating.score,
                           note=pb.RatingChannel.Name(update.rating.channel)))
    if update.rating.HasField("rectification_deadline"):
        fx.timers["rectification"] = seconds(update.rating.rectification_deadline)
        fx.events.append(event(case, K.EVENT_KIND_RECTIFICATION_OPENED, update.at,
                               actor=update.actor,
                               deadline=update.rating.rectification_deadline,
                               score=update.rating.score))


def _rectified(case: pb.Case, update: pb.CaseUpdate, side: Side, fx: Effects) -> None:
    if side is not Side.TARGET:
        raise PermissionDenied("the handling side answers a rectification",
                               field="update.rectification_report")
    if not case.rating.HasField("rectification_deadline"):
        raise FailedPrecondition("no rectification is open for this case",
                                 field="update.rectification_report")
    if case.rating.rectification_report:
        raise AlreadyExists("the rectification was answered already",
                            field="update.rectification_report")
    case.rating.rectification_report = update.rectification_report
    fx.timers["rectification"] = None
    fx.events.append(event(case, K.EVENT_KIND_RECTIFIED, update.at, actor=update.actor))


def fire(case: pb.Case, kind: str, due_at: float, ratio: float) -> Effects:
    """A deadline timer came due: the event it stands for, if it still applies."""
    # an overdue timer stays, marked, while the case is open: it is the overdue gauge
    fx = Effects(fired=kind) if kind == "overdue" else Effects(timers={kind: None})
    at = timestamp(due_at)
    if kind == "warning" and State(case.state) in OPEN:
        fx.events.append(event(case, K.EVENT_KIND_DEADLINE_WARNING, at,
                               deadline=case.deadline, note=f"{ratio:.0%} of the time limit used"))
    elif kind == "overdue" and State(case.state) in OPEN:
        fx.events.append(event(case, K.EVENT_KIND_DEADLINE_OVERDUE, at,
                               deadline=case.deadline, note="time limit passed"))
    elif kind == "commitment" and case.missing_materials:
        fx.events.append(event(case, K.EVENT_KIND_COMMITMENT_MISSED, at,
                               deadline=case.commitment_deadline,
                               note=f"still owed: {', '.join(case.missing_materials)}"))
    elif kind == "rectification" and not case.rating.rectification_report:
        fx.events.append(event(case, K.EVENT_KIND_RECTIFICATION_OVERDUE, at,
                               deadline=case.rating.rectification_deadline))
    return fx


def _delivery_note(delivery: pb.ResultDelivery) -> str:
    if delivery.method == pb.DELIVERY_METHOD_POSTAL:
        return f"{delivery.carrier} {delivery.tracking_number}"
    if delivery.method == pb.DELIVERY_METHOD_WINDOW:
        return f"window {delivery.window}"
    return f"certificate {delivery.certificate_ref}"
