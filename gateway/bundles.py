"""The state of a 一件事 bundle (多地联办), aggregated from its parts. No I/O.

The applicant cares about one thing: is my whole matter done, and if not, what is it
waiting for? So, in this order:
1. any part REJECTED, CANCELLED or EXPIRED: the bundle cannot complete as asked; it shows
   the first such state (REJECTED before CANCELLED before EXPIRED), because that is what
   the applicant must act on;
2. any part SUPPLEMENT_REQUESTED: the applicant owes materials; that is the bundle's state;
3. otherwise the least advanced part sets the pace: a bundle is COMPLETED only when every
   part is, and RESULT_DELIVERED only when every result is out.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.cases import State

FAILED = (State.REJECTED, State.CANCELLED, State.EXPIRED)
PROGRESS = (State.SUBMITTED, State.FORWARDED, State.ACCEPTED, State.PROCESSING,
            State.COMPLETED, State.RESULT_DELIVERED)


def aggregate(parts: Sequence[State]) -> State:
    if not parts:
        raise ValueError("a bundle has parts")
    for failed in FAILED:
        if failed in parts:
            return failed
    if State.SUPPLEMENT_REQUESTED in parts:
        return State.SUPPLEMENT_REQUESTED
    return min(parts, key=PROGRESS.index)
