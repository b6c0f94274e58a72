"""Latest: a one-slot mailbox for a reader that only needs the newest value.

A WatchCase stream that is not read must not pile up every state the case went through
(an unbounded queue per watcher grew a gateway by 470 MB for 20 idle watchers and 150
updates): the writer replaces what is waiting, the reader takes the newest.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class Latest(Generic[T]):
    """Holds at most one value: put() replaces the waiting one, take() waits for one and
    empties the slot. What was replaced before anyone took it is never seen."""

    __slots__ = ("_ready", "_slot")

    def __init__(self) -> None:
        self._slot: list[T] = []
        self._ready = asyncio.Event()

    def put(self, value: T) -> None:
        self._slot[:] = [value]
        self._ready.set()

    async def take(self) -> T:
        await self._ready.wait()
        self._ready.clear()
        return self._slot.pop()

    def __len__(self) -> int:
        """0 or 1: how many values wait."""
        return len(self._slot)
