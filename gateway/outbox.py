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
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from gateway.breaker import Breakers, BreakerState
from gateway.client import CallError
from gateway.config import OutboxSettings
from gateway.errors import GatewayError
from gateway.store import OutboxEntry, Store
from gateway.types import Clock

log = logging.getLogger("tongban.outbox")

Deliver = Callable[[OutboxEntry], Awaitable[None]]
Observer = Callable[[str, str], None]  # (event, destination): "sent" | "failed" | "dead" | "opened"


def backoff(attempts: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base·2^n)]."""
    return rng.uniform(0, min(cap, base * 2 ** min(attempts, 30)))


class OutboxWorker:
    def __init__(self, store: Store, deliver: Deliver, clock: Clock,
                 settings: OutboxSettings | None = None, *, batch: int = 256,
                 concurrency: int = 128, idle_s: float = 0.5,
                 observe: Observer | None = None) -> None:
        self._store, self._deliver, self._clock = store, deliver, clock
        self.settings = settings or OutboxSettings()
        self._batch, self._idle = batch, idle_s
        self.breakers = Breakers(failures=self.settings.breaker_failures,
                                 cooldown_s=self.settings.breaker_cooldown_s,
                                 max_cooldown_s=self.settings.breaker_max_cooldown_s)
        self._observe = observe or (lambda event, destination: None)
        self._slots = asyncio.Semaphore(concurrency)
        self._inflight: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._lanes: dict[str, deque[OutboxEntry]] = {}  # fast path, per case, in order
        self._wake = asyncio.Event()
        self._rng = random.Random()
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
        task = asyncio.create_task(self._store.release_outbox(entry.id),
                                   context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _launch(self, entry: OutboxEntry, *, lane: bool) -> None:
        self._inflight.add(entry.id)
        # a fresh context: a push happens inside a served call, whose context (the
        # pending audit entry) must not travel into deliveries
        task = asyncio.create_task(self._send(entry, lane=lane), context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the poll ----------------------------------------------------------------------
    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                started = await self._poll()
            except GatewayError:
                return  # store closed
            if started < self._batch:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._idle):
                        await self._wake.wait()

    async def _poll(self) -> int:
        now = self._clock.now()
        snapshot = self.breakers.snapshot(now)
        half_open = frozenset(d for d, st in snapshot.items() if st is BreakerState.HALF_OPEN)
        heads = await self._store.poll_outbox(
            now, self._batch, skip=self.breakers.blocked(now), probe=half_open,
            exclude_ids=frozenset(self._inflight), exclude_cases=frozenset(self._lanes))
        started = 0
        for entry in heads:
            if self._stopping:
                break
            if entry.id in self._inflight:
                continue  # its send resets or ends the lease
            if entry.case_id in self._lanes or not self.breakers.allow(entry.destination, now):
                self._release(entry)  # claimed, but things changed while we read
                continue
            self._launch(entry, lane=False)
            started += 1
        return started

    # -- sending -----------------------------------------------------------------------
    async def _send(self, entry: OutboxEntry, *, lane: bool) -> None:
        await self._slots.acquire()
        ok = False
        try:
            await self._deliver(entry)
            ok = True
        except Exception as exc:
            await self._failed(entry, exc)
        finally:
            self._inflight.discard(entry.id)
            self._slots.release()
        if ok:
            self.breakers.success(entry.destination)
            self._observe("sent", entry.destination)
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

    async def _failed(self, entry: OutboxEntry, exc: Exception) -> None:
        now = self._clock.now()
        permanent = isinstance(exc, CallError) and not exc.retryable
        dead = permanent or entry.attempts + 1 >= self.settings.max_attempts
        if not permanent and self.breakers.failure(entry.destination, now):
            log.warning("circuit to %s opened after %d failures in a row",
                        entry.destination, self.settings.breaker_failures)
            self._observe("opened", entry.destination)
        self._observe("dead" if dead else "failed", entry.destination)
        delay = backoff(entry.attempts, base=self.settings.backoff_base_s,
                        cap=self.settings.backoff_cap_s, rng=self._rng)
        if dead:
            log.error("outbox %s (%s of case %s to %s) dead-lettered after %d attempts: %s",
                      entry.id, entry.kind, entry.case_id, entry.destination,
                      entry.attempts + 1, exc)
        else:
            log.warning("delivery of outbox %s (%s to %s) failed, retry in %.1fs: %s",
                        entry.id, entry.kind, entry.destination, delay, exc)
        with contextlib.suppress(GatewayError):  # the store is closing
            await self._store.retry_outbox(entry.id, now + delay, str(exc), dead=dead)
