"""The 办件 state machine: every legal transition and who may make it, in one table. No I/O.

DESIGN §6: SUBMITTED → FORWARDED → ACCEPTED | REJECTED → PROCESSING ⇄ SUPPLEMENT_REQUESTED
→ COMPLETED → RESULT_DELIVERED; CANCELLED and EXPIRED from any open state.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum, IntEnum
from typing import Final

from gateway.errors import FailedPrecondition, PermissionDenied


class State(IntEnum):
    """Mirrors tongban.v1.CaseState (numbers are the wire values)."""

    SUBMITTED = 1
    FORWARDED = 2
    ACCEPTED = 3
    REJECTED = 4
    PROCESSING = 5
    SUPPLEMENT_REQUESTED = 6
    COMPLETED = 7
    RESULT_DELIVERED = 8
    CANCELLED = 9
    EXPIRED = 10


class Side(Enum):
    """Where a change comes from, relative to the gateway holding the case."""

    ORIGIN = "origin"  # the origin partner, or the gateway the case came from
    TARGET = "target"  # the target partner, or the gateway the case went on to
    GATEWAY = "gateway"  # this gateway itself (delivery, deadlines)


S = State
_OPEN_END: Final = frozenset({S.CANCELLED, S.EXPIRED})
TRANSITIONS: Final[Mapping[State, frozenset[State]]] = {
    S.SUBMITTED: frozenset({S.FORWARDED}) | _OPEN_END,
    S.FORWARDED: frozenset({S.ACCEPTED, S.REJECTED}) | _OPEN_END,
    S.ACCEPTED: frozenset({S.PROCESSING}) | _OPEN_END,
    S.PROCESSING: frozenset({S.SUPPLEMENT_REQUESTED, S.COMPLETED}) | _OPEN_END,
    S.SUPPLEMENT_REQUESTED: frozenset({S.PROCESSING}) | _OPEN_END,
    S.COMPLETED: frozenset({S.RESULT_DELIVERED}),
    S.REJECTED: frozenset(),
    S.RESULT_DELIVERED: frozenset(),
    S.CANCELLED: frozenset(),
    S.EXPIRED: frozenset(),
}

# Who may move a case into each state.
SETTERS: Final[Mapping[State, frozenset[Side]]] = {
    S.SUBMITTED: frozenset(),
    S.FORWARDED: frozenset({Side.GATEWAY}),
    S.ACCEPTED: frozenset({Side.TARGET}),
    S.REJECTED: frozenset({Side.TARGET}),
    S.PROCESSING: frozenset({Side.TARGET}),
    S.SUPPLEMENT_REQUESTED: frozenset({Side.TARGET}),
    S.COMPLETED: frozenset({Side.TARGET}),
    # 通办通取: the result may be handed over at the origin window or by the target
    S.RESULT_DELIVERED: frozenset({Side.TARGET, Side.ORIGIN}),
    S.CANCELLED: frozenset({Side.ORIGIN, Side.TARGET}),
    S.EXPIRED: frozenset({Side.TARGET, Side.GATEWAY}),
}

OPEN: Final = frozenset(s for s, nxt in TRANSITIONS.items() if nxt)


def plan(current: State, wanted: State, side: Side) -> list[State]:
    """The states to pass through to reach `wanted`, or raise.

    A report from the target side proves the next hop holds the case, so a case still
    SUBMITTED here (its delivery acknowledgement racing the report) passes FORWARDED first.
    """
    if side not in SETTERS[wanted]:
        raise PermissionDenied(f"the {side.value} side may not set {wanted.name}",
                               field="update.state")
    steps = []
    if current is S.SUBMITTED and side is Side.TARGET and wanted is not S.FORWARDED:
        steps.append(S.FORWARDED)
        current = S.FORWARDED
    if wanted not in TRANSITIONS[current]:
        raise FailedPrecondition(f"a case in {current.name} cannot become {wanted.name}",
                                 field="update.state")
    return [*steps, wanted]
