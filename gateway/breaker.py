"""Per-destination circuit breaker for the outbox.

closed → (``failures`` consecutive failures) → open → (cool-off) → half-open: one probe
goes out; success closes the breaker, failure opens it again with twice the cool-off (up
to a cap). While a destination is open its entries stay queued and spend no attempts, so
an outage of any length never pushes cases into the dead letter. No I/O; the clock is
passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class _Circuit:
    failures: int = 0
    opened_at: float = 0.0
    cooldown: float = 0.0
    probing: bool = False
    open: bool = False


class Breakers:
    def __init__(self, *, failures: int = 5, cooldown_s: float = 2.0,
                 max_cooldown_s: float = 60.0) -> None:
        self._threshold, self._base, self._cap = failures, cooldown_s, max_cooldown_s
        self._circuits: dict[str, _Circuit] = {}

    def state(self, destination: str, now: float) -> BreakerState:
        c = self._circuits.get(destination)
        if c is None or not c.open:
            return BreakerState.CLOSED
        if now - c.opened_at < c.cooldown:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def blocked(self, now: float) -> frozenset[str]:
        """Destinations nothing may be sent to now (open, or half-open with a probe out)."""
        return frozenset(d for d, c in self._circuits.items()
                         if c.open and (c.probing or now - c.opened_at < c.cooldown))

    def allow(self, destination: str, now: float) -> bool:
        """May one entry go to destination now? A half-open circuit lets exactly one by."""
        state = self.state(destination, now)
        if state is BreakerState.CLOSED:
            return True
        c = self._circuits[destination]
        if state is BreakerState.HALF_OPEN and not c.probing:
            c.probing = True
            return True
        return False

    def success(self, destination: str) -> None:
        self._circuits.pop(destination, None)

    def failure(self, destination: str, now: float) -> bool:
        """Count a failed delivery; True when this failure opened the circuit."""
        c = self._circuits.setdefault(destination, _Circuit())
        if c.open:  # the half-open probe failed: back off harder
            c.probing = False
            c.opened_at = now
            c.cooldown = min(self._cap, c.cooldown * 2)
            return False
        c.failures += 1
        if c.failures < self._threshold:
            return False
        c.open, c.opened_at, c.cooldown = True, now, self._base
        return True

    def snapshot(self, now: float) -> dict[str, BreakerState]:
        return {d: self.state(d, now) for d in self._circuits}
