"""Numbered frames over a relay that drops, reorders and repeats (docs/sessions.md §6)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sessions.link import WINDOW, Link, LinkError


def test_in_order_delivery_and_acks() -> None:
    a, b = Link[bytes](), Link[bytes]()
    numbers = [a.send(p) for p in (b"e1", b"e2", b"e3")]
    assert numbers == [1, 2, 3] and a.unacked == 3
    assert [b.accept(n, p) for n, p in a.pending_after(0)] == [b"e1", b"e2", b"e3"]
    assert b.received == 3
    a.ack(b.received)
    assert a.pending_after(3) == [] and a.unacked == 0 and a.acked == 3


def test_resend_after_a_drop_loses_nothing_and_repeats_nothing() -> None:
    a, b = Link[bytes](), Link[bytes]()
    for i in range(1, 6):
        a.send(f"e{i}".encode())
    got = [b.accept(1, b"e1"), b.accept(2, b"e2")]
    # frames 3..5 are lost with the stream; frame 4 of the old stream arrives late
    assert b.accept(4, b"e4") is None and b.received == 2
    # resume: the remote's first frame is an ack of what it has; the rest is resent
    a.ack(b.received)
    resent = a.pending_after(b.received)
    assert [n for n, _ in resent] == [3, 4, 5]
    got += [b.accept(n, p) for n, p in resent]
    got += [b.accept(n, p) for n, p in resent]  # resent twice: taken once
    assert [p for p in got if p is not None] == [b"e1", b"e2", b"e3", b"e4", b"e5"]


def test_window_full_is_advice_not_refusal() -> None:
    a = Link[int](window=4)
    for i in range(4):
        assert not a.window_full
        a.send(i)
    assert a.window_full and a.send(99) == 5  # a sequenced event still goes out
    a.ack(2)
    assert not a.window_full and a.unacked == 3
    assert Link[bytes]().window == WINDOW == 256


def test_stale_acks_change_nothing() -> None:
    a = Link[bytes]()
    for i in range(5):
        a.send(bytes([i]))
    a.ack(4)
    a.ack(2)  # reordered
    assert a.acked == 4 and [n for n, _ in a.pending_after(4)] == [5]


@pytest.mark.parametrize(("acked", "asked"), [(0, 6), (3, 2), (3, -1)])
def test_impossible_resume_points(acked: int, asked: int) -> None:
    a = Link[bytes]()
    for i in range(5):
        a.send(bytes([i]))
    a.ack(acked)
    with pytest.raises(LinkError):
        a.pending_after(asked)


def test_impossible_acks_and_frame_numbers() -> None:
    a = Link[bytes]()
    a.send(b"x")
    with pytest.raises(LinkError, match="only 1 were sent"):
        a.ack(2)
    for n in (0, -1):
        with pytest.raises(LinkError):
            a.accept(n, b"x")


def test_both_directions_are_independent() -> None:
    origin, remote = Link[str](), Link[str]()
    assert origin.send("event 1") == 1 and remote.send("proposal 1") == 1
    assert origin.accept(1, "proposal 1") == "proposal 1"
    assert remote.accept(1, "event 1") == "event 1"
    assert (origin.sent, origin.received, remote.sent, remote.received) == (1, 1, 1, 1)


# op: 0 send, 1 deliver a frame in flight (any of them: reordering), 2 lose one,
# 3 repeat one, 4 the receiver acks, 5 an ack arrives, 6 an ack is lost, 7 the stream drops
OPS = st.lists(st.tuples(st.integers(0, 7), st.integers(0, 1000)), max_size=200)


@settings(max_examples=300, deadline=None)
@given(count=st.integers(0, 40), ops=OPS, window=st.integers(1, 8))
def test_the_receiver_ends_with_exactly_what_was_sent(
        count: int, ops: list[tuple[int, int]], window: int) -> None:
    sent = [f"frame {i}".encode() for i in range(count)]
    a, b = Link[bytes](window=window), Link[bytes]()
    flight: list[tuple[int, bytes]] = []
    acks: list[int] = []
    out: list[bytes] = []
    queued = iter(sent)

    def deliver(frame: tuple[int, bytes]) -> None:
        got = b.accept(*frame)
        if got is not None:
            out.append(got)

    for op, pick in ops:
        if op == 0 and not a.window_full:
            payload = next(queued, None)
            if payload is not None:
                flight.append((a.send(payload), payload))
        elif op in (1, 2, 3) and flight:
            frame = flight[pick % len(flight)]
            if op != 3:
                flight.remove(frame)
            if op != 2:
                deliver(frame)
        elif op == 4:
            acks.append(b.received)
        elif op in (5, 6) and acks:
            ack = acks.pop(pick % len(acks))
            if op == 5:
                a.ack(ack)
        elif op == 7:  # resume: what was in flight is gone; the remote says what it has
            flight, acks = [], []
            a.ack(b.received)
            flight = a.pending_after(b.received)
    # the rest, over a stream that holds: send all, resume once, deliver in order
    for payload in queued:
        a.send(payload)
    a.ack(b.received)
    for frame in a.pending_after(b.received):
        deliver(frame)
    a.ack(b.received)
    assert out == sent
    assert b.received == a.sent == a.acked == count and a.pending_after(count) == []
