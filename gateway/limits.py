"""Per-caller admission: token-bucket rates, unary concurrency and open-stream caps, and a
per-address budget of failed authentications.

Pure: no sockets, no `await`; time comes from the injected clock. The servicer asks
before it does any work for an authenticated caller (`admit`) and gives the slot back when
the call ends; before verifying a signature it asks whether the calling address has
failed too often lately (`check_address`), so a flood of bad tokens costs a dictionary
look-up instead of a public-key verification. A refusal is ResourceExhausted carrying the
time after which the same call would be admitted (google.rpc.RetryInfo on the wire).
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Mapping

from gateway.config import CallerLimits
from gateway.errors import ResourceExhausted
from gateway.types import Clock

# no release time is known for a slot held by another call: the hint is a short wait
CALL_RETRY_S = 0.1
STREAM_RETRY_S = 1.0
# addresses remembered for failed authentications; the least recently failing one is
# forgotten first (forgetting only ever lets an address verify again)
MAX_ADDRESSES = 4096


# what one caller may use is config.CallerLimits (docs/configuration.md, [limits])
CallerPolicy = CallerLimits


class TokenBucket:
    """`rate` tokens a second up to `capacity`; a call takes one. Starts full."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, capacity: int, now: float) -> None:
        self.rate, self.capacity = rate, float(capacity)
        self.tokens, self.stamp = float(capacity), now

    def _refill(self, now: float) -> None:
        # a wall clock stepped back refills nothing (and takes nothing away)
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now

    def wait(self, now: float) -> float:
        """Seconds until a token is there (0.0: one is there now); takes nothing."""
        self._refill(now)
        # a hair of slack: waiting exactly the announced time must be enough despite
        # floating-point rounding of tokens + elapsed * rate
        return 0.0 if self.tokens >= 1.0 - 1e-9 else (1.0 - self.tokens) / self.rate

    def take(self, now: float) -> float:
        """Take a token and return 0.0, or take nothing and return the wait for one."""
        wait = self.wait(now)
        if wait == 0.0:
            self.tokens -= 1.0
        return wait

    def spend(self, now: float) -> None:
        """Take a token whether or not one is there (the bucket may go below zero: a
        debt that later refills pay off first)."""
        self._refill(now)
        self.tokens -= 1.0


class Slot:
    """A call's hold on its caller's concurrency or stream count; release() once, at the
    end of the call, however it ends (a second release does nothing)."""

    __slots__ = ("_counts", "_key")

    def __init__(self, counts: Counter[str], key: str) -> None:
        self._counts: Counter[str] | None = counts
        self._key = key

    def release(self) -> None:
        if self._counts is not None:
            self._counts[self._key] -= 1
            if self._counts[self._key] <= 0:
                del self._counts[self._key]
            self._counts = None


class Limiter:
    """Admission of one gateway's callers and addresses (one instance per servicer)."""

    def __init__(self, *, default: CallerPolicy, overrides: Mapping[str, CallerPolicy],
                 failures_per_second: float, failures_burst: int, clock: Clock) -> None:
        """failures_per_second <= 0 turns the per-address guard off."""
        self.default, self.overrides, self.clock = default, dict(overrides), clock
        self.failures_per_second, self.failures_burst = failures_per_second, failures_burst
        self._buckets: dict[str, TokenBucket] = {}  # by caller id: bounded by the config
        self.calls: Counter[str] = Counter()  # unary calls in flight, by caller
        self.streams: Counter[str] = Counter()  # open streams, by caller
        self._failures: OrderedDict[str, TokenBucket] = OrderedDict()  # by address
        self.refused: Counter[str] = Counter()  # by ErrorInfo reason, for metrics

    def policy(self, caller: str) -> CallerPolicy:
        return self.overrides.get(caller, self.default)

    def admit(self, caller: str, *, stream: bool = False) -> Slot:
        """Admit one call of an authenticated caller or raise ResourceExhausted.

        A stream counts against the caller's rate when it opens and against its stream
        cap while it is open; a unary call against its rate and its concurrency cap.
        A call refused for its cap takes no token.
        """
        policy, now = self.policy(caller), self.clock.now()
        counts, cap = ((self.streams, policy.max_streams) if stream
                       else (self.calls, policy.max_concurrent_calls))
        if counts[caller] >= cap:
            kind = "streams" if stream else "concurrent calls"
            raise self._refuse("TOO_MANY_STREAMS" if stream else "TOO_MANY_CALLS",
                               f"{caller} has {cap} {kind} open, the most it may have",
                               STREAM_RETRY_S if stream else CALL_RETRY_S)
        bucket = self._buckets.get(caller)
        if bucket is None:
            bucket = self._buckets[caller] = TokenBucket(policy.calls_per_second,
                                                         policy.burst, now)
        wait = bucket.take(now)
        if wait:
            raise self._refuse("RATE_LIMITED", f"{caller} is over its rate of "
                               f"{policy.calls_per_second:g} calls/s", wait)
        counts[caller] += 1
        return Slot(counts, caller)

    def check_address(self, address: str) -> None:
        """Raise ResourceExhausted if this address has spent its budget of failed
        authentications: its calls are refused before any signature is checked."""
        if self.failures_per_second <= 0:
            return
        bucket = self._failures.get(address)
        if bucket is None:
            return
        wait = bucket.wait(self.clock.now())
        if wait:
            raise self._refuse("TOO_MANY_FAILURES", "too many failed authentications from "
                               "this address", wait)

    def failed(self, address: str) -> None:
        """Count one failed authentication of address."""
        if self.failures_per_second <= 0:
            return
        now = self.clock.now()
        bucket = self._failures.pop(address, None)
        if bucket is None:
            bucket = TokenBucket(self.failures_per_second, self.failures_burst, now)
            while len(self._failures) >= MAX_ADDRESSES:
                self._failures.popitem(last=False)
        bucket.spend(now)
        self._failures[address] = bucket  # most recently failing last

    def _refuse(self, reason: str, message: str, retry_after_s: float) -> ResourceExhausted:
        self.refused[reason] += 1
        # whole milliseconds, rounded up: a client waiting that long is admitted
        return ResourceExhausted(message, retry_after_s=math.ceil(retry_after_s * 1000) / 1000,
                                 reason=reason)


def address_of(peer: str) -> str:
    """The host part of a gRPC peer string ("ipv4:10.0.0.7:52514" → "ipv4:10.0.0.7",
    "ipv6:[::1]:52514" → "ipv6:[::1]"): one budget per address, not per connection, so
    opening new connections does not reset it."""
    if peer.startswith(("ipv4:", "ipv6:")):
        host, _, port = peer.rpartition(":")
        if port.isdigit() and host not in ("ipv4", "ipv6"):
            return host
    return peer
