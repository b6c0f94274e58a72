"""电子监察 and 审管联动: the deadline sweep, and the event feed supervisors subscribe to.

Deadlines are timers in the store, written in the same transaction as the change that
set them; the sweep fires the due ones. Firing goes through the store's update_case with
a deterministic update id, so a sweep that runs twice (two processes, a restart in the
middle) records each warning or alarm once.

Subscribe reads the event log from the store by cursor: a subscriber that reconnects
with the last seq it saw misses nothing and sees nothing twice, and a slow one costs a
cursor, not a queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from gateway.config import Supervisor
from gateway.engine import Engine
from gateway.errors import InvalidArgument, StoreClosed, Unavailable
from gateway.faults import LogThrottle
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import gateway_pb2 as gw
from gateway.types import Clock

log = logging.getLogger("tongban.supervision")
PAGE = 500


def in_scope(event: pb.CaseEvent, supervisor: Supervisor) -> bool:
    """A supervisor sees cases that start or end in its divisions."""
    origin = event.origin_partner[:6]
    return any(event.target_division.startswith(p) or origin.startswith(p)
               for p in supervisor.prefixes)


def subscribe(engine: Engine, caller: str,
              req: gw.SubscribeRequest) -> AsyncIterator[pb.CaseEvent]:
    """Check the caller and the request now (so a refusal comes before any wait), then
    return the feed: events after the cursor, in the caller's scope, forever."""
    supervisor = engine.supervisor(caller)
    if req.after < 0:
        raise InvalidArgument("a cursor is a seq this gateway sent, or 0", field="after")
    for i, kind in enumerate(req.kinds):
        if kind not in pb.EventKind.values() or kind == pb.EVENT_KIND_UNSPECIFIED:
            raise InvalidArgument(f"unknown event kind {kind}", field=f"kinds[{i}]")
    return _feed(engine, supervisor, req.after, frozenset(req.kinds))


async def _feed(engine: Engine, supervisor: Supervisor, after: int,
                kinds: frozenset[int]) -> AsyncIterator[pb.CaseEvent]:
    while True:
        tick = engine.next_tick()  # taken before reading: nothing slips between the two
        page = await engine.store.read_events(after, PAGE)
        for event in page:
            after = event.seq
            if (not kinds or event.kind in kinds) and in_scope(event, supervisor):
                yield event
        if len(page) < PAGE:
            # woken by this process's commits; the timeout catches those of other
            # processes sharing the store (serve --reuse-port)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await tick.wait()


class Monitor:
    """Fires due deadline timers every `interval_s` (and on demand, for tests).

    The sweep must outlive every fault (issue #12: it died on a full disk and no alarm
    fired until a restart). A store that cannot write fails the whole sweep, which is
    tried again soon (1 s, doubling up to interval_s); any other error is one timer's,
    which is skipped for this sweep while the others fire. Either way one log line per
    interval, and nothing is lost: a timer stays due in the store until it fires.
    """

    def __init__(self, engine: Engine, clock: Clock, interval_s: float) -> None:
        self.engine, self.clock, self.interval_s = engine, clock, interval_s
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._throttle = LogThrottle(log, 10.0)

    async def sweep(self) -> int:
        """Fire every timer due now; return how many fired. Raises Unavailable when the
        store cannot read or write."""
        seen: set[tuple[str, str, float]] = set()
        fired = 0
        while True:
            due = [t for t in await self.engine.store.due_timers(self.clock.now(), PAGE)
                   if (t.case_id, t.kind, t.due_at) not in seen]
            for timer in due:
                seen.add((timer.case_id, timer.kind, timer.due_at))
                try:
                    await self.engine.fire_timer(timer.case_id, timer.kind, timer.due_at)
                except Unavailable:
                    raise
                except Exception as exc:  # one timer's fault: the others still fire
                    self._throttle.log(logging.ERROR, "timer", "timer %s of case %s failed: "
                                       "%s", timer.kind, timer.case_id, exc, exc_info=exc)
                else:
                    fired += 1
            if len(due) < PAGE:
                return fired

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tongban-monitor")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            pause = self.interval_s
            try:
                await self.sweep()
            except StoreClosed:
                return
            except Exception as exc:  # the sweep must outlive any fault
                failures += 1
                pause = min(self.interval_s, 2.0 ** (failures - 1))
                self._throttle.log(logging.ERROR, "sweep", "deadline sweep failed, retrying: "
                                   "%s", exc, exc_info=None if isinstance(exc, Unavailable)
                                   else exc)
            else:
                failures = 0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._stopping.wait()
