"""Durable delivery: entries written with the state change are sent after commit.

At-least-once with receiver dedup (case_id, update_id) gives exactly-once effect. Entries
of one case go in order; failures back off exponentially with full jitter; a circuit
breaker per destination stops hammering a partner that is down (its entries wait and
spend no attempts); an entry that fails permanently, or `max_attempts` times, is
dead-lettered: it stays in the store, blocks later entries of its case (order is part
of the promise) and waits for `tongban outbox redrive`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

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
        self._wake = asyncio.Event()
        self._rng = random.Random()
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False

    def observe(self, observer: Observer) -> None:
        self._observe = observer

    def kick(self) -> None:
        self._wake.set()

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

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            now = self._clock.now()
            try:
                due = await self._store.due_outbox(now, self._batch,
                                                   skip=self.breakers.blocked(now))
            except GatewayError:
                return  # store closed
            started = 0
            for entry in due:
                if entry.id in self._inflight or not self.breakers.allow(entry.destination, now):
                    continue
                await self._slots.acquire()
                if self._stopping:
                    self._slots.release()
                    return
                self._inflight.add(entry.id)
                task = asyncio.create_task(self._send(entry))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                started += 1
            if started == 0 or len(due) < self._batch:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._idle):
                        await self._wake.wait()

    async def _send(self, entry: OutboxEntry) -> None:
        try:
            await self._deliver(entry)
        except Exception as exc:
            await self._failed(entry, exc)
        else:
            self.breakers.success(entry.destination)
            self._observe("sent", entry.destination)
        finally:
            self._inflight.discard(entry.id)
            self._slots.release()
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
