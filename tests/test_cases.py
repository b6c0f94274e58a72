"""The state table: every pair of states, every side."""

from __future__ import annotations

import itertools

import pytest

from gateway.cases import SETTERS, TRANSITIONS, Side, State, plan
from gateway.errors import FailedPrecondition, PermissionDenied
from gateway.pb.tongban.v1 import case_pb2 as pb


def test_enum_matches_the_wire() -> None:
    for state in State:
        assert pb.CaseState.Value(f"CASE_STATE_{state.name}") == state.value


@pytest.mark.parametrize(("current", "wanted"), list(itertools.product(State, State)))
def test_every_pair(current: State, wanted: State) -> None:
    for side in Side:
        allowed_side = side in SETTERS[wanted]
        implicit = current is State.SUBMITTED and side is Side.TARGET
        reachable = wanted in TRANSITIONS[State.FORWARDED if implicit else current]
        if not allowed_side:
            with pytest.raises(PermissionDenied):
                plan(current, wanted, side)
        elif not reachable:
            with pytest.raises(FailedPrecondition):
                plan(current, wanted, side)
        else:
            steps = plan(current, wanted, side)
            assert steps[-1] is wanted
            assert steps == ([State.FORWARDED, wanted] if implicit else [wanted])


def test_the_main_path_is_legal() -> None:
    path = [State.SUBMITTED, State.FORWARDED, State.ACCEPTED, State.PROCESSING,
            State.SUPPLEMENT_REQUESTED, State.PROCESSING, State.COMPLETED,
            State.RESULT_DELIVERED]
    for a, b in itertools.pairwise(path):
        assert b in TRANSITIONS[a]


def test_terminal_states_go_nowhere() -> None:
    for state in (State.REJECTED, State.RESULT_DELIVERED, State.CANCELLED, State.EXPIRED):
        assert not TRANSITIONS[state]
