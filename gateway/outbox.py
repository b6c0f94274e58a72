"""Durable delivery: entries written with the state change are sent after commit.

At-least-once with receiver dedup (case_id, update_id) gives exactly-once effect. Entries
of one case go in order; failures back off exponentially with full jitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

from gateway.client import CallError
from gateway.errors import GatewayError
from gateway.store import OutboxEntry, Store
from gateway.types import Clock

log = logging.getLogger("tongban.outbox")

Deliver = Callable[[OutboxEntry], Awaitable[None]]


def backoff(attempts: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base·2^n)]."""
    return rng.uniform(0, min(cap, base * 2 ** min(attempts, 30)))


class OutboxWorker:
    def __init__(self, store: Store, deliver: Deliver, clock: Clock, *, base_s: float = 0.2,
                 cap_s: float = 30.0, batch: int = 256, concurrency: int = 128,
                 idle_s: float = 0.5) -> None:
        self._store, self._deliver, self._clock = store, deliver, clock
        self._base, self._cap, self._batch, self._idle = base_s, cap_s, batch, idle_s
        self._slots = asyncio.Semaphore(concurrency)
        self._inflight: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._rng = random.Random()
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False

    def kick(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="tongban-outbox")

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
            try:
                due = await self._store.due_outbox(self._clock.now(), self._batch)
            except GatewayError:
                return  # store closed
            fresh = [e for e in due if e.id not in self._inflight]
            for entry in fresh:
                await self._slots.acquire()
                if self._stopping:
                    self._slots.release()
                    return
                self._inflight.add(entry.id)
                task = asyncio.create_task(self._send(entry))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if len(fresh) < self._batch:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._idle):
                        await self._wake.wait()

    async def _send(self, entry: OutboxEntry) -> None:
        try:
            await self._deliver(entry)
        except Exception as exc:
            permanent = isinstance(exc, CallError) and not exc.retryable
            delay = backoff(entry.attempts, base=self._base, cap=self._cap, rng=self._rng)
            if permanent:
                delay = max(delay, self._cap)  # dead-letter handling comes with issue #4
            log.warning("delivery of outbox %s (%s to %s) failed, retry in %.1fs: %s",
                        entry.id, entry.kind, entry.destination, delay, exc)
            with contextlib.suppress(GatewayError):  # the store is closing
                await self._store.retry_outbox(entry.id, self._clock.now() + delay, str(exc))
        finally:
            self._inflight.discard(entry.id)
            self._slots.release()
            self._wake.set()
