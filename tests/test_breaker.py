"""The circuit breaker's state table, on a hand-driven clock."""

from __future__ import annotations

from gateway.breaker import Breakers, BreakerState

CLOSED, OPEN, HALF = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def test_opens_after_threshold_and_probes_once_after_cooloff() -> None:
    b = Breakers(failures=3, cooldown_s=10, max_cooldown_s=25)
    assert not b.failure("p", 0) and not b.failure("p", 1)
    assert b.state("p", 1) is CLOSED and b.allow("p", 1)
    assert b.failure("p", 2)  # third failure in a row opens it
    assert b.state("p", 5) is OPEN and not b.allow("p", 5)
    assert b.blocked(5) == {"p"}
    assert b.state("p", 12) is HALF
    assert b.blocked(12) == frozenset()
    assert b.allow("p", 12)  # the one probe
    assert not b.allow("p", 12)  # nobody else while it is out
    assert b.blocked(12) == {"p"}
    b.failure("p", 13)  # probe failed: open again, cool-off doubled
    assert b.state("p", 32) is OPEN and b.state("p", 33) is HALF
    assert b.allow("p", 33)
    b.failure("p", 34)  # doubling is capped at 25 s
    assert b.state("p", 58) is OPEN and b.state("p", 59) is HALF
    assert b.allow("p", 59)
    b.success("p")
    assert b.state("p", 59) is CLOSED and b.blocked(59) == frozenset()


def test_a_success_resets_the_count_and_destinations_are_independent() -> None:
    b = Breakers(failures=2, cooldown_s=1)
    b.failure("p", 0)
    b.success("p")
    assert not b.failure("p", 0)  # count restarted
    assert b.failure("q", 0) is False and b.failure("q", 0) is True
    assert b.state("p", 0) is CLOSED and b.state("q", 0) is OPEN
    assert b.snapshot(0) == {"p": CLOSED, "q": OPEN}
