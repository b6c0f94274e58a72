"""The SQLite store: group commit, per-operation rollback, dedup, durability, outbox order."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.audit import AuditEntry, PendingAudit, verify
from gateway.errors import FailedPrecondition, GatewayError, NotFound
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.store import CaseRecord, Effects, NewOutbox
from gateway.store.offline import read_audit
from gateway.store.sqlite import SqliteStore


def record(n: int, number: str | None = None) -> CaseRecord:
    case = pb.Case(case_id=f"C{n:05}", case_number=number or f"N{n}", origin_partner="320105",
                   state=pb.CASE_STATE_SUBMITTED)
    return CaseRecord(case=case, upstream="320105", downstream="320000-gw", request_digest="d")


class _Epoch:
    """Time zero: entries written here are not leased past any `now` the tests ask about."""

    def now(self) -> float:
        return 0.0


EPOCH = _Epoch()


def outbox(n: int, what: str = "case") -> NewOutbox:
    return NewOutbox(destination="320000-gw", case_id=f"C{n:05}", kind=what,
                     payload=what.encode())


@pytest.mark.asyncio
async def test_concurrent_writes_share_commits_and_all_land(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "g.sqlite3")
    await store.open()
    results = await asyncio.gather(*(store.create_case(record(n), Effects(outbox=[outbox(n)]))
                                     for n in range(500)))
    assert not any(dup for _, dup in results)
    assert await store.count_cases() == 500 and await store.count_outbox() == 500
    await store.close()
    reopened = SqliteStore(tmp_path / "g.sqlite3")
    await reopened.open()
    assert await reopened.count_cases() == 500
    got = await reopened.get_case("C00042")
    assert got is not None and got.case.case_number == "N42"
    await reopened.close()


@pytest.mark.asyncio
async def test_a_read_does_not_wait_for_the_writer(tmp_path: Path) -> None:
    """GetCase and GetBundle read what is committed, at once, even while the writer is
    held up (here another process holds SQLite's write lock); writes queue meanwhile."""
    path = tmp_path / "g.sqlite3"
    store = SqliteStore(path)
    await store.open()
    await store.create_case(record(1), Effects())
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the write lock, as a second gateway process would
    try:
        write = asyncio.ensure_future(store.create_case(record(2), Effects()))
        await asyncio.sleep(0.2)
        assert not write.done()  # the writer waits for the lock
        async with asyncio.timeout(0.5):
            got = await store.get_case("C00001")
        assert got is not None and got.case.case_number == "N1"
        assert await store.get_case("C00002") is None  # not committed: not seen
    finally:
        other.execute("ROLLBACK")
        other.close()
    await write
    again = await store.get_case("C00002")  # acknowledged, so a read sees it
    assert again is not None and again.case.case_number == "N2"
    await store.close()
    with pytest.raises(GatewayError):
        await store.get_case("C00001")


@pytest.mark.asyncio
async def test_dedup_by_case_id_and_by_case_number() -> None:
    store = SqliteStore(":memory:", clock=EPOCH, lease_s=0.0)
    await store.open()
    await store.create_case(record(1), Effects(outbox=[outbox(1)]))
    _, dup_id = await store.create_case(record(1, number="other"), Effects(outbox=[outbox(1)]))
    again, dup_number = await store.create_case(record(2, number="N1"), Effects(outbox=[outbox(2)]))
    assert dup_id and dup_number and again.case.case_id == "C00001"
    assert await store.count_cases() == 1 and await store.count_outbox() == 1
    # the same number twice in one group commit: one case, the other sees it
    both = await asyncio.gather(store.create_case(record(3, number="N3"), Effects(outbox=[outbox(3)])),
                                store.create_case(record(4, number="N3"), Effects(outbox=[outbox(4)])))
    assert sorted(dup for _, dup in both) == [False, True]
    assert {r.case.case_id for r, _ in both} == {"C00003"}
    assert await store.count_cases() == 2 and await store.count_outbox() == 2
    await store.close()


@pytest.mark.asyncio
async def test_a_failing_operation_rolls_back_alone() -> None:
    store = SqliteStore(":memory:", clock=EPOCH, lease_s=0.0)
    await store.open()
    await asyncio.gather(*(store.create_case(record(n), Effects()) for n in range(3)))

    def ok(rec: CaseRecord) -> Effects:
        rec.case.state = pb.CASE_STATE_FORWARDED
        return Effects(outbox=[outbox(0, "update")])

    def bad(rec: CaseRecord) -> Effects:
        rec.case.state = pb.CASE_STATE_COMPLETED
        raise FailedPrecondition("no")

    results = await asyncio.gather(store.update_case("C00000", "u1", ok),
                                   store.update_case("C00001", "u2", bad),
                                   store.update_case("C00002", "u3", ok),
                                   store.update_case("C99999", "u4", ok),
                                   return_exceptions=True)
    assert isinstance(results[1], FailedPrecondition)
    assert isinstance(results[3], NotFound)
    first, second = await store.get_case("C00000"), await store.get_case("C00001")
    assert first is not None and first.case.state == pb.CASE_STATE_FORWARDED
    assert second is not None and second.case.state == pb.CASE_STATE_SUBMITTED
    assert await store.count_outbox() == 2
    # u2 was rolled back, so the same update id may be applied once it is valid
    _, dup = await store.update_case("C00001", "u2", ok)
    assert not dup
    _, dup = await store.update_case("C00001", "u2", ok)
    assert dup
    await store.close()


@pytest.mark.asyncio
async def test_a_guard_refuses_on_the_stored_row_duplicates_included() -> None:
    store = SqliteStore(":memory:", clock=EPOCH, lease_s=0.0)
    await store.open()
    await asyncio.gather(*(store.create_case(record(n), Effects()) for n in range(2)))
    seen: list[str] = []

    def only(caller: str) -> Callable[[CaseRecord], None]:
        def guard(rec: CaseRecord) -> None:
            seen.append(rec.upstream)
            if rec.upstream != caller:
                raise NotFound(f"case {rec.case.case_id} not found", field="case_id")
        return guard

    def forward(rec: CaseRecord) -> Effects:
        rec.case.state = pb.CASE_STATE_FORWARDED
        return Effects(outbox=[outbox(0, "update")])

    commits = store.commits
    results = await asyncio.gather(
        store.update_case("C00000", "u1", forward, guard=only("320105")),
        store.update_case("C00001", "u2", forward, guard=only("320100")),
        return_exceptions=True)
    assert not isinstance(results[0], BaseException) and results[0][1] is False
    assert isinstance(results[1], NotFound)
    # each guard saw the row it was about to change, once: refused before writing, the
    # batch (one commit) did not have to run again with savepoints
    assert seen == ["320105", "320105"] and store.commits == commits + 1
    refused = await store.get_case("C00001")
    assert refused is not None and refused.case.state == pb.CASE_STATE_SUBMITTED
    assert await store.count_outbox() == 1
    # the refused caller cannot learn the case through a duplicate of an applied update
    with pytest.raises(NotFound):
        await store.update_case("C00000", "u1", forward, guard=only("320100"))
    _, dup = await store.update_case("C00000", "u1", forward, guard=only("320105"))
    assert dup
    await store.close()


@pytest.mark.asyncio
async def test_a_failing_operation_takes_only_its_own_events_and_audit_entry(
        tmp_path: Path) -> None:
    """A batch runs without savepoints first; an op that raises sends it round again with
    them. Whatever the undone attempt wrote (events, audit entries, their seqs) must not
    survive, and the chain must link the entries that did."""
    store = SqliteStore(tmp_path / "g.sqlite3", clock=EPOCH, lease_s=0.0)
    await store.open()
    await asyncio.gather(*(store.create_case(record(n), Effects()) for n in range(4)))
    before = len(await store.read_events(0, 100))

    def step(fail: bool) -> Callable[[CaseRecord], Effects]:
        def mutate(rec: CaseRecord) -> Effects:
            rec.case.state = pb.CASE_STATE_FORWARDED
            event = pb.CaseEvent(case_id=rec.case.case_id, kind=pb.EVENT_KIND_STATE_CHANGED)
            if fail:
                raise FailedPrecondition("no")
            return Effects(events=[event])
        return mutate

    async def call(n: int, fail: bool) -> PendingAudit:
        pending = PendingAudit(AuditEntry(at=1.0, caller="320105", method="/m", case_id="",
                                          digest="d", kid="k", jti=f"j{n}", outcome="OK"))
        with contextlib.suppress(FailedPrecondition):
            await store.update_case(f"C{n:05}", f"u{n}", step(fail), audit=pending)
        return pending

    pendings = await asyncio.gather(*(call(n, fail=n == 1) for n in range(4)))
    assert [p.seq is None for p in pendings] == [False, True, False, False]
    assert sorted(p.seq for p in pendings if p.seq) == [1, 2, 3]  # no gap, no reuse
    events = await store.read_events(0, 100)
    assert sorted(e.case_id for e in events[before:]) == ["C00000", "C00002", "C00003"]
    await store.close()
    rows = read_audit(tmp_path / "g.sqlite3")
    assert [r[1].jti for r in rows] == [p.entry.jti for p in sorted(
        (p for p in pendings if p.seq), key=lambda p: p.seq or 0)]
    assert verify(rows).ok


@pytest.mark.asyncio
async def test_a_delivery_mark_rides_with_the_next_commit(tmp_path: Path) -> None:
    """Marks are lazy: they join the next commit (or go after LAZY_S alone), and a
    closing store still writes the ones waiting, so no delivery is made twice for it."""
    store = SqliteStore(tmp_path / "g.sqlite3", clock=EPOCH, lease_s=0.0)
    await store.open()
    await asyncio.gather(*(store.create_case(record(n), Effects(outbox=[outbox(n)]))
                           for n in range(3)))
    ids = {e.case_id: e.id for e in await store.due_outbox(1.0, 10)}

    def forwarded(rec: CaseRecord) -> Effects:
        rec.case.state = pb.CASE_STATE_FORWARDED
        return Effects()

    before = store.commits
    async with asyncio.timeout(2):  # alone: it goes after LAZY_S
        _, dup = await store.update_case("C00000", "d0", forwarded, done_outbox=ids["C00000"])
    assert not dup and store.commits == before + 1
    # with company: one commit for both (the mark did not start one of its own)
    mark = asyncio.ensure_future(store.update_case("C00001", "d1", forwarded,
                                                   done_outbox=ids["C00001"]))
    await asyncio.sleep(0)
    await store.create_case(record(7), Effects())
    await mark
    assert store.commits == before + 2
    # the entry gone is the once-only check: the same mark again changes nothing
    _, dup = await store.update_case("C00001", "d1", forwarded, done_outbox=ids["C00001"])
    assert dup
    # closing: a waiting mark is written, not refused
    last = asyncio.ensure_future(store.update_case("C00002", "d2", forwarded,
                                                   done_outbox=ids["C00002"]))
    await asyncio.sleep(0)
    await store.close()
    assert (await last)[1] is False
    reopened = SqliteStore(tmp_path / "g.sqlite3", clock=EPOCH, lease_s=0.0)
    await reopened.open()
    assert await reopened.count_outbox() == 0
    got = await reopened.get_case("C00002")
    assert got is not None and got.case.state == pb.CASE_STATE_FORWARDED
    await reopened.close()


@pytest.mark.asyncio
async def test_outbox_gives_the_oldest_due_entry_of_each_case() -> None:
    store = SqliteStore(":memory:", clock=EPOCH, lease_s=0.0)
    await store.open()
    await store.create_case(record(1), Effects(outbox=[outbox(1), outbox(1, "update")]))
    await store.create_case(record(2), Effects(outbox=[outbox(2)]))
    due = await store.due_outbox(now=10.0, limit=10)
    assert [(e.case_id, e.kind) for e in due] == [("C00001", "case"), ("C00002", "case")]
    await store.retry_outbox(due[0].id, next_at=100.0, error="down")
    due = await store.due_outbox(now=10.0, limit=10)
    assert [e.case_id for e in due] == ["C00002"]  # C00001's update waits behind its case
    await store.finish_outbox(due[0].id)
    due = await store.due_outbox(now=200.0, limit=10)
    assert [(e.case_id, e.kind, e.attempts) for e in due] == [("C00001", "case", 1)]
    await store.close()


@pytest.mark.asyncio
async def test_dead_entries_hold_back_their_case_and_breakers_skip_destinations() -> None:
    store = SqliteStore(":memory:", clock=EPOCH, lease_s=0.0)
    await store.open()
    await store.create_case(record(1), Effects(outbox=[outbox(1), outbox(1, "update")]))
    await store.create_case(record(2), Effects(outbox=[NewOutbox(
        destination="310000-gw", case_id="C00002", kind="case", payload=b"x")]))
    due = await store.due_outbox(now=10.0, limit=10)
    await store.retry_outbox(due[0].id, next_at=0.0, error="refused", dead=True)
    due = await store.due_outbox(now=10.0, limit=10)
    assert [e.case_id for e in due] == ["C00002"]  # C00001's update waits behind the dead case
    assert await store.due_outbox(now=10.0, limit=10, skip=frozenset({"310000-gw"})) == []
    await store.close()


@pytest.mark.asyncio
async def test_events_timers_and_bundles_commit_with_their_case() -> None:
    store = SqliteStore(":memory:", clock=EPOCH, lease_s=0.0)
    await store.open()
    event = pb.CaseEvent(kind=pb.EVENT_KIND_STATE_CHANGED, case_id="C00001")
    await store.create_case(record(1), Effects(events=[event], timers={"warning": 5.0,
                                                                        "overdue": 9.0}))

    def pause(rec: CaseRecord) -> Effects:
        rec.case.state = pb.CASE_STATE_SUPPLEMENT_REQUESTED
        return Effects(events=[event, event])

    def resume(rec: CaseRecord) -> Effects:
        rec.case.state = pb.CASE_STATE_PROCESSING
        return Effects(shift_s=100.0, timers={"commitment": 50.0})

    await store.update_case("C00001", "p", pause)
    assert await store.due_timers(now=20.0, limit=10) == []  # paused in 补正
    await store.update_case("C00001", "r", resume)
    timers = await store.due_timers(now=200.0, limit=10)
    assert [(t.kind, t.due_at) for t in timers] == [("commitment", 50.0), ("warning", 105.0),
                                                    ("overdue", 109.0)]
    events = await store.read_events(after=0, limit=10)
    assert [e.seq for e in events] == [1, 2, 3]
    assert [e.seq for e in await store.read_events(after=2, limit=10)] == [3]

    def failing(rec: CaseRecord) -> Effects:
        raise FailedPrecondition("no")

    with pytest.raises(FailedPrecondition):
        await store.update_case("C00001", "x", failing)
    assert len(await store.read_events(after=0, limit=10)) == 3  # nothing of it kept
    await store.close()


@pytest.mark.asyncio
async def test_leases_keep_other_processes_off_and_order_behind_older_entries(
        tmp_path: Path) -> None:
    class At:
        def __init__(self, t: float) -> None:
            self.t = t

        def now(self) -> float:
            return self.t

    path = tmp_path / "shared.sqlite3"
    one = SqliteStore(path, clock=At(100.0), lease_s=15.0)
    two = SqliteStore(path, clock=At(100.0), lease_s=15.0, exclusive=False)
    await one.open()
    await two.open()
    first = Effects(outbox=[outbox(1)])
    await one.create_case(record(1), first)
    assert first.outbox_behind == [False]  # process one sends it itself
    # the other process's poll leaves a leased entry alone until the lease runs out
    assert await two.poll_outbox(110.0, 10) == []
    [claimed] = await two.poll_outbox(116.0, 10)
    assert claimed.id == first.outbox_ids[0]
    assert await one.poll_outbox(120.0, 10) == []  # now two holds it (until 131)

    def then(rec: CaseRecord) -> Effects:
        return Effects(outbox=[outbox(1, "update")])

    second: list[Effects] = []

    def capture(rec: CaseRecord) -> Effects:
        second.append(then(rec))
        return second[0]

    await one.update_case("C00001", "u", capture)
    assert second[0].outbox_behind == [True]  # the case's first entry is still stored
    await two.finish_outbox(claimed.id)
    [head] = await one.poll_outbox(121.0, 10)  # unleased, now the oldest: any poll takes it
    assert head.kind == "update"
    await one.release_outbox(head.id)
    assert [e.kind for e in await two.poll_outbox(121.0, 10)] == ["update"]
    await one.close()
    await two.close()
