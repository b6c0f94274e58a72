"""Numbered frames delivered in order, once, over a relay stream that may drop. No I/O.

docs/sessions.md §6: each direction numbers its reliable frames from 1 with no gaps; the
receiver takes them in order, drops what it has and acknowledges the highest it has in
order; the sender keeps every frame until it is acknowledged, and after a drop resends
what the other side says it lacks. A :class:`Link` is both ends at one gateway: what it
sends (the origin: events, blobs, signatures, refusals; the remote: proposals, blobs,
signatures) and what it receives from the other side.
"""

from __future__ import annotations

from collections import deque
from typing import Final, Generic, TypeVar

from gateway.errors import FailedPrecondition

WINDOW: Final = 256  # unacknowledged frames in flight each way (§6 back-pressure)
P = TypeVar("P")


class LinkError(FailedPrecondition):
    """The other side acknowledged or asked for what cannot be: the stream is broken
    and the session's relay starts again from what both have stored."""


class Link(Generic[P]):
    """The two directions of one session's relay at one gateway.

    ``sent`` is the last number given out, ``acked`` the highest the other side has
    acknowledged, ``received`` the highest taken in order from the other side. Sending
    never refuses (a sequenced event must go out): ``window_full`` tells the caller to
    stop reading its browsers until acknowledgements come.
    """

    def __init__(self, *, window: int = WINDOW) -> None:
        self.window = window
        self.sent = 0
        self.acked = 0
        self.received = 0
        self._kept: deque[tuple[int, P]] = deque()

    @property
    def window_full(self) -> bool:
        return self.sent - self.acked >= self.window

    @property
    def unacked(self) -> int:
        return self.sent - self.acked

    def send(self, payload: P) -> int:
        """Number a frame and keep it until acknowledged; its number."""
        self.sent += 1
        self._kept.append((self.sent, payload))
        return self.sent

    def ack(self, n: int) -> None:
        """The other side has every frame up to ``n``: forget them. An older ack (a
        reordered or resent one) changes nothing; one beyond what was sent is an error."""
        if n > self.sent:
            raise LinkError(f"the peer acknowledges frame {n}, only {self.sent} were sent")
        while self._kept and self._kept[0][0] <= n:
            self._kept.popleft()
        self.acked = max(self.acked, n)

    def pending_after(self, n: int) -> list[tuple[int, P]]:
        """The frames after ``n`` (what the other side says it has), to resend on
        resume; LinkError if it says less than it acknowledged (those are gone here) or
        more than was sent."""
        if not self.acked <= n <= self.sent:
            raise LinkError(f"the peer has frame {n}; acknowledged {self.acked}, "
                            f"sent {self.sent}")
        return [(k, p) for k, p in self._kept if k > n]

    def accept(self, n: int, payload: P) -> P | None:
        """The payload if frame ``n`` is the next in order (``received`` moves on),
        None for one already taken or one beyond the next (the caller acknowledges
        ``received`` and the sender resends from there)."""
        if n < 1:
            raise LinkError(f"frame number {n}: reliable frames count from 1")
        if n != self.received + 1:
            return None
        self.received = n
        return payload
