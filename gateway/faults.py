"""Fault reporting that cannot flood: one log line per kind of fault per interval.

A fault that repeats on every call (a full disk, a partner that refuses every entry)
would otherwise write a traceback per call: the issue #12 run logged 3,485 of them in
25 s and buried the one line an operator needed. A throttle keeps the first line of each
kind, counts the ones it holds back, and says how many in the next line it lets through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Slot:
    last: float
    held: int = 0


class LogThrottle:
    """At most one line per key every ``interval_s`` (monotonic time, not the wall
    clock: a test's FakeClock must not silence or unleash the log)."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._log, self._interval, self._now = logger, interval_s, monotonic
        self._slots: dict[str, _Slot] = {}

    def log(self, level: int, key: str, message: str, *args: object,
            exc_info: BaseException | None = None) -> bool:
        """Log one line unless one of this key went out less than interval_s ago;
        True when it was written. A traceback (exc_info) goes with the first line only."""
        now = self._now()
        slot = self._slots.get(key)
        if slot is not None and now - slot.last < self._interval:
            slot.held += 1
            return False
        held = slot.held if slot is not None else 0
        self._slots[key] = _Slot(last=now)
        if held:
            message += " (%d more like it in the last %.0f s)"
            args = (*args, held, self._interval)
        self._log.log(level, message, *args, exc_info=exc_info if slot is None else None)
        return True


class BadRequestFilter(logging.Filter):
    """For aiohttp's server logger: a malformed HTTP request (anyone can send one) is
    logged at most once per interval, without its traceback, whose text the sender
    chose (the fuzz run logged 317 tracebacks for 1,000 odd requests)."""

    def __init__(self, interval_s: float = 10.0, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._interval, self._now = interval_s, monotonic
        self._last = -interval_s
        self.held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = self._now()
        if now - self._last < self._interval:
            self.held += 1
            return False
        self._last = now
        kind = type(record.exc_info[1]).__name__ if record.exc_info and record.exc_info[1] \
            else "error"
        record.msg, record.args = ("HTTP request refused (%s); %d more held back since the "
                                   "last line", (kind, self.held))
        record.exc_info = record.exc_text = None
        self.held = 0
        return True
