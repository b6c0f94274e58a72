"""Durable delivery: entries written with the state change are sent after commit.

At-least-once with receiver dedup (case_id, update_id) gives exactly-once effect. Entries
of one case go strictly in order; failures back off exponentially with full jitter; a
circuit breaker per destination stops hammering a partner that is down (its entries wait
and spend no attempts); an entry that fails permanently, or `max_attempts` times, is
dead-lettered: it stays in the store, blocks later entries of its case and waits for
`tongban outbox redrive`.

Two paths, one order. The fast path: the engine pushes each entry right after its
commit, and the worker sends it from memory, in a per-case *lane*, with no store read
(the budget in issue #5 allows no per-call re-read). The safety net: a poll of the store
every `idle_s` finds whatever the fast path did not take (entries from before a restart,
retries after a failure, entries held by an open breaker). Entries carry a lease: the
process that wrote an entry (or claimed it in a poll) owns it until the lease runs out,
so several gateway processes can share one store without sending each other's entries;
an entry written while older entries of its case are still stored is left unleased,
and the poll (which only ever takes a case's oldest entry) keeps the order.

Faults are kept apart (issue #12). The breaker measures whether a destination can take
calls: transport failures (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, CANCELLED,
no answer within the deadline) count towards it, and so does the first retryable refusal
of an entry (a destination that refuses every entry is as good as down), but not a
refusal repeated for one entry: that entry backs off alone, so one poison case never
holds back the other cases for its destination; a half-open probe takes the due entry
that failed least. Each destination has its own bound on sends in flight, so a silent
one cannot take the slots of the others. A failing store is nobody's fault but ours: it
spends no attempt and opens no breaker, and the poll loop outlives it (and any other
exception) and drains the queue once writes work again. Repeated faults log one line per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import grpc

from gateway.breaker import Breakers, BreakerState
from gateway.client import CallError
from gateway.config import OutboxSettings
from gateway.errors import StoreClosed, StoreUnavailable, Unavailable
from gateway.faults import LogThrottle
from gateway.store import OutboxEntry, Store
from gateway.types import Clock

log = logging.getLogger("tongban.outbox")

Deliver = Callable[[OutboxEntry], Awaitable[None]]
# (event, destination): "sent" | "failed" | "dead" | "opened" | "unauthenticated"
Observer = Callable[[str, str], None]
DELIVERY_DEADLINE_S = 60.0  # the outer bound on one delivery, whatever the adapter sets
LOG_EVERY_S = 10.0  # one line per kind of repeated fault per this many seconds
MAX_PAUSE_S = 5.0  # the longest the poll waits after it failed before trying again


def backoff(attempts: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base·2^n)]."""
    return rng.uniform(0, min(cap, base * 2 ** min(attempts, 30)))


def unreachable(exc: BaseException) -> bool:
    """Does this failure say the destination as a whole cannot take calls now? Only such
    failures count towards its breaker. Adapters raise Unavailable for that (types.py);
    our own store failing is not the destination's fault."""
    if isinstance(exc, CallError):
        return exc.unreachable
    return isinstance(exc, Unavailable | TimeoutError) and not isinstance(exc, StoreUnavailable)


class OutboxWorker:
    def __init__(self, store: Store, deliver: Deliver, clock: Clock,
                 settings: OutboxSettings | None = None, *, batch: int = 256,
                 idle_s: float = 0.5, deadline_s: float = DELIVERY_DEADLINE_S,
                 observe: Observer | None = None) -> None:
        self._store, self._deliver, self._clock = store, deliver, clock
        self.settings = settings or OutboxSettings()
        self._batch, self._idle, self._deadline = batch, idle_s, deadline_s
        self.breakers = Breakers(failures=self.settings.breaker_failures,
                                 cooldown_s=self.settings.breaker_cooldown_s,
                                 max_cooldown_s=self.settings.breaker_max_cooldown_s)
        self._observe = observe or (lambda event, destination: None)
        self._slots: dict[str, asyncio.Semaphore] = {}  # per destination: a fair share
        self._busy: Counter[str] = Counter()  # launched, not finished, per destination
        self._inflight: set[int] = set()
        self._unreleased: set[int] = set()  # leases we could not give back (store failing)
        self._tasks: set[asyncio.Task[None]] = set()
        self._lanes: dict[str, deque[OutboxEntry]] = {}  # fast path, per case, in order
        self._wake = asyncio.Event()
        self._rng = random.Random()
        self._throttle = LogThrottle(log, LOG_EVERY_S)
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False

    def observe(self, observer: Observer) -> None:
        self._observe = observer

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="tongban-outbox")

    def breaker_states(self) -> dict[str, BreakerState]:
        return self.breakers.snapshot(self._clock.now())

    async def stop(self) -> None:
        # The flag, not only cancel(): on Python 3.11 asyncio.wait_for can swallow a
        # cancellation that races its inner future (gh-86296); the loop must end anyway.
        self._stopping = True
        self._wake.set()
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
            self._runner = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- fast path ---------------------------------------------------------------------
    def push(self, entries: Sequence[tuple[OutboxEntry, bool]]) -> None:
        """Entries just committed, in commit order, each with whether older entries of its
        case were still stored then: send them without reading them back."""
        now = self._clock.now()
        for entry, behind in entries:
            lane = self._lanes.get(entry.case_id)
            if lane is not None:
                lane.append(entry)  # this process wrote the older ones: same order
            elif behind:
                pass  # stored unleased behind older entries: the poll keeps the order
            elif (self._stopping
                  or self.breakers.state(entry.destination, now) is not BreakerState.CLOSED):
                self._release(entry)
            else:
                self._lanes[entry.case_id] = deque((entry,))
                self._launch(entry, lane=True)

    def _release(self, entry: OutboxEntry) -> None:
        """Give a leased entry back to the poll (its destination's circuit is not closed)."""
        self._spawn(self._give(entry.id))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        # a fresh context: a push happens inside a served call, whose context must not
        # travel into deliveries
        task = asyncio.create_task(work, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _launch(self, entry: OutboxEntry, *, lane: bool, probe: bool = False) -> None:
        self._inflight.add(entry.id)
        self._busy[entry.destination] += 1
        self._spawn(self._send(entry, lane=lane, probe=probe))

    async def _give(self, entry_id: int) -> None:
        """Release an entry's lease; if the store cannot write now, the poll tries again
        (until then the lease keeps other processes off it, as it would after a crash)."""
        try:
            await self._store.release_outbox(entry_id)
        except StoreClosed:
            pass
        except Exception as exc:  # the loop must outlive any fault
            self._unreleased.add(entry_id)
            self._throttle.log(logging.WARNING, "release", "outbox cannot release "
                               "entries now, will retry: %s", exc)

    # -- the poll ----------------------------------------------------------------------
    async def _run(self) -> None:
        """Poll until stopped. Nothing but a closed store ends this loop: a failing
        store, a bug in one delivery's bookkeeping, anything is logged (one line per
        interval: the store logs when its writes work again) and the next poll goes on,
        sooner after a success than after a failure."""
        failures = 0
        while not self._stopping:
            self._wake.clear()
            pause = self._idle
            try:
                started = await self._poll()
            except StoreClosed:
                return
            except Exception as exc:
                failures += 1
                started, pause = 0, min(MAX_PAUSE_S, self._idle * 2 ** min(failures - 1, 10))
                self._throttle.log(logging.ERROR, "poll", "outbox poll failed, retrying: %s",
                                   exc, exc_info=None if isinstance(exc, Unavailable) else exc)
            else:
                failures = 0
            if started < self._batch:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await self._wake.wait()

    async def _poll(self) -> int:
        if self._unreleased:  # leases a failed write left behind: ours to give back first
            ids, self._unreleased = self._unreleased - self._inflight, set()
            await asyncio.gather(*(self._give(i) for i in ids))
        now = self._clock.now()
        snapshot = self.breakers.snapshot(now)
        half_open = frozenset(d for d, st in snapshot.items() if st is BreakerState.HALF_OPEN)
        limit = self.settings.in_flight_per_destination
        full = frozenset(d for d, n in self._busy.items() if n >= limit)
        heads = await self._store.poll_outbox(
            now, self._batch, skip=self.breakers.blocked(now) | full, probe=half_open,
            exclude_ids=frozenset(self._inflight), exclude_cases=frozenset(self._lanes))
        started = 0
        for entry in heads:
            if self._stopping:
                break
            if entry.id in self._inflight:
                continue  # its send resets or ends the lease
            probe = entry.destination in half_open
            if entry.case_id in self._lanes or not self.breakers.allow(entry.destination, now):
                self._release(entry)  # claimed, but things changed while we read
                continue
            self._launch(entry, lane=False, probe=probe)
            started += 1
        return started

    # -- sending -----------------------------------------------------------------------
    async def _send(self, entry: OutboxEntry, *, lane: bool, probe: bool) -> None:
        destination = entry.destination
        slots = self._slots.get(destination)
        if slots is None:
            slots = self._slots[destination] = asyncio.Semaphore(
                self.settings.in_flight_per_destination)
        ok, held = False, False
        try:
            async with slots:
                # the circuit may have opened while this one waited for its slot
                if not probe and self.breakers.state(
                        destination, self._clock.now()) is not BreakerState.CLOSED:
                    held = True
                else:
                    try:
                        async with asyncio.timeout(self._deadline):
                            await self._deliver(entry)
                        ok = True
                    except Exception as exc:
                        await self._failed(entry, exc, probe=probe)
        finally:
            self._inflight.discard(entry.id)
            self._busy[destination] -= 1
            if not self._busy[destination]:
                del self._busy[destination]
        if ok:
            self.breakers.success(destination)
            self._observe("sent", destination)
        elif held:
            await self._give(entry.id)
        self._next(entry, ok=ok, lane=lane)

    def _next(self, entry: OutboxEntry, *, ok: bool, lane: bool) -> None:
        """After a send: the case's next entry goes now, from its lane or the store."""
        if not lane:
            if ok:
                self._wake.set()  # the case's next stored entry, if any, goes now
            return
        queue = self._lanes.get(entry.case_id)
        if queue is None:
            return
        queue.popleft()
        if ok and queue and not self._stopping:
            self._launch(queue[0], lane=True)
            return
        del self._lanes[entry.case_id]
        if queue or not ok:
            for rest in queue:  # the rest is in the store, in order, for the poll
                self._release(rest)
            self._wake.set()

    async def _failed(self, entry: OutboxEntry, exc: Exception, *, probe: bool) -> None:
        """Record a failed delivery. Never raises: a store that cannot write leaves the
        entry leased and listed for release at the next poll."""
        destination = entry.destination
        if isinstance(exc, StoreUnavailable):  # ours, not the destination's: no attempt
            # the engine marks a delivery only after the destination took it, so the
            # destination answered (a half-open probe has its answer)
            self.breakers.success(destination)
            self._throttle.log(logging.WARNING, "store", "deliveries wait: %s", exc.message)
            await self._give(entry.id)
            return
        if isinstance(exc, TimeoutError):
            exc = CallError(grpc.StatusCode.DEADLINE_EXCEEDED,
                            f"{destination}: no answer within {self._deadline:g} s")
        now = self._clock.now()
        permanent = isinstance(exc, CallError) and not exc.retryable
        # What the failure says about the destination: a transport failure says it is
        # down; a refusal of an entry's first try may be the destination refusing
        # everything (its database is down, our keys are stale there); a refusal of an
        # entry that was refused before says only that this entry is refused, and must
        # not open the circuit for the other cases. A half-open probe that fails reopens.
        counts = probe or unreachable(exc) or (entry.attempts == 0 and not permanent)
        alert = isinstance(exc, CallError) and exc.alert
        if counts and self.breakers.failure(destination, now):
            log.warning("circuit to %s opened after %d failures in a row",
                        destination, self.settings.breaker_failures)
            self._observe("opened", destination)
        if alert:
            self._observe("unauthenticated", destination)
            self._throttle.log(logging.WARNING, f"alert:{destination}",
                               "ALERT signatures between this gateway and %s do not check "
                               "out (clock skew? keys rotated?); retrying: %s",
                               destination, exc)
        # a probe that finds the destination still down says nothing about its entry: it
        # spends no attempt, so an outage of any length never dead-letters a case
        # Nor does an UNAUTHENTICATED answer (a clock skewed, keys stale in a rotation): it
        # is raised as an alert and retried until the operator mends it, never
        # dead-lettered for it
        spend = not (probe and unreachable(exc)) and not alert
        dead = permanent or (spend and entry.attempts + 1 >= self.settings.max_attempts)
        self._observe("dead" if dead else "failed", destination)
        delay = backoff(entry.attempts, base=self.settings.backoff_base_s,
                        cap=self.settings.backoff_cap_s, rng=self._rng)
        if dead:
            log.error("outbox %s (%s of case %s to %s) dead-lettered after %d attempts: %s",
                      entry.id, entry.kind, entry.case_id, destination,
                      entry.attempts + 1, exc)
        else:
            self._throttle.log(logging.WARNING, f"failed:{destination}",
                               "delivery of outbox %s (%s to %s) failed, retry in %.1fs: %s",
                               entry.id, entry.kind, destination, delay, exc)
        try:
            await self._store.retry_outbox(entry.id, now + delay, str(exc), dead=dead,
                                           spend=spend)
        except StoreClosed:
            pass
        except Exception as exc2:
            self._unreleased.add(entry.id)
            self._throttle.log(logging.WARNING, "release", "outbox cannot record a retry "
                               "now, will release the entry later: %s", exc2)
