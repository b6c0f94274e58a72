"""Delivery under failure: a partner outage (breaker opens, nothing lost, each case once),
permanent refusals (dead letter, order kept) and the operator's re-drive."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from gateway import cli
from gateway.breaker import BreakerState
from gateway.demo import free_port
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.store.offline import list_outbox
from tests.federation import Federation, federation, until
from tests.platform import Platform, grpc_partner_text, serving

FAST = """
[outbox]
backoff_base_s = 0.05
backoff_cap_s = 0.2
breaker_failures = {failures}
breaker_cooldown_s = 0.3
breaker_max_cooldown_s = 0.6
max_attempts = {attempts}
"""
APPLICANT = pb.Applicant(id_type=pb.ID_TYPE_RESIDENT, id_number="11010519491231002X",
                         name="张三")


async def submit(fed: Federation, n: int, prefix: str = "OUT") -> list[str]:
    ids = []
    for i in range(n):
        answer = await fed.client("320105").submit(
            case_number=f"{prefix}-{i}", target_division="310115", item_code="shebao-zy",
            applicant=APPLICANT)
        ids.append(answer.case.case_id)
    return ids


def attempts(db: Path) -> int:
    return sum(row.attempts for row in list_outbox(db))


@pytest.mark.asyncio
async def test_outage_queues_opens_the_breaker_then_delivers_each_case_once(
        tmp_path: Path) -> None:
    port = free_port()
    text = grpc_partner_text(port, extra=FAST.format(failures=3, attempts=1000))
    async with federation(tmp_path, text=text) as fed:
        shanghai = fed.apps["310000-gw"]
        db = shanghai.config.data_dir / "gateway.sqlite3"
        ids = await submit(fed, 20)

        async def arrived() -> bool:
            return await shanghai.store.count_outbox() == 20

        await until(arrived)

        async def opened() -> bool:
            return shanghai.engine.outbox.breaker_states().get("310115") is not None and \
                shanghai.engine.outbox.breaker_states()["310115"] is not BreakerState.CLOSED

        await until(opened)
        await asyncio.sleep(0.5)
        before = attempts(db)
        await asyncio.sleep(1.5)
        # while open only single probes go out (cool-off 0.3 s doubling to 0.6 s); without
        # the breaker 20 entries backing off at ≤ 0.2 s would make ~150 attempts here
        assert attempts(db) - before <= 6
        assert not any(row.dead for row in list_outbox(db))

        platform = Platform(shanghai.config.me.keys)
        async with serving(platform, port):
            async def drained() -> bool:
                return await shanghai.store.count_outbox() == 0

            await until(drained, within=20)
            assert sorted(platform.cases) == sorted(ids)
            assert set(platform.calls.values()) == {1}, platform.calls  # each case once
            assert shanghai.engine.outbox.breaker_states().get(
                "310115", BreakerState.CLOSED) is BreakerState.CLOSED
            origin = fed.apps["320100-gw"]
            for case_id in ids:
                record = await origin.store.get_case(case_id)
                assert record is not None
                assert record.case.state >= pb.CASE_STATE_FORWARDED


@pytest.mark.asyncio
async def test_permanent_refusal_is_dead_lettered_keeps_order_and_redrives(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    text = grpc_partner_text(port, extra=FAST.format(failures=3, attempts=1000))
    async with federation(tmp_path, text=text) as fed:
        shanghai = fed.apps["310000-gw"]
        db = shanghai.config.data_dir / "gateway.sqlite3"
        platform = Platform(shanghai.config.me.keys, refuse=grpc.StatusCode.PERMISSION_DENIED)
        async with serving(platform, port):
            [case_id] = await submit(fed, 1, "DEAD")

            async def dead() -> bool:
                return len(list_outbox(db, dead_only=True)) == 1

            await until(dead)
            [row] = list_outbox(db, dead_only=True)
            assert (row.case_id, row.kind, row.attempts) == (case_id, "case", 1)
            assert "PERMISSION_DENIED" in row.last_error or "refuses" in row.last_error
            # the cancellation queues behind the dead case: order is part of the promise
            await fed.client("320105").cancel(case_id, "申请人撤回")

            async def queued_behind() -> bool:
                return len(list_outbox(db)) == 2

            await until(queued_behind)
            await asyncio.sleep(0.4)
            assert [r.kind for r in list_outbox(db)] == ["case", "update"]
            assert not platform.cases and not platform.updates

            # refusing to guess what to re-drive
            assert cli.main(["outbox", "redrive", "--db", str(db)]) == 2
            assert cli.main(["outbox", "list", "--db", str(db), "--dead"]) == 0
            assert f"DEAD\t310115\tcase\t{case_id}" in capsys.readouterr().out

            platform.refuse = None  # the operator fixed the partner's key configuration
            assert cli.main(["outbox", "redrive", "--db", str(db), "--destination",
                             "310115"]) == 0
            assert "re-drove 1" in capsys.readouterr().out

            async def delivered() -> bool:
                return await shanghai.store.count_outbox() == 0

            await until(delivered)
            assert list(platform.cases) == [case_id]
            [update] = platform.updates.values()
            assert update.state == pb.CASE_STATE_CANCELLED
            assert set(platform.calls.values()) == {1}


@pytest.mark.asyncio
async def test_retryable_failures_dead_letter_after_max_attempts(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    text = grpc_partner_text(port, extra=FAST.format(failures=1000, attempts=3))
    async with federation(tmp_path, text=text) as fed:
        shanghai = fed.apps["310000-gw"]
        db = shanghai.config.data_dir / "gateway.sqlite3"
        await submit(fed, 1, "MAX")

        async def dead() -> bool:
            return len(list_outbox(db, dead_only=True)) == 1

        await until(dead)
        [row] = list_outbox(db)
        assert row.attempts == 3 and row.dead
        await asyncio.sleep(0.5)
        assert list_outbox(db)[0].attempts == 3  # parked: no more attempts


@pytest.mark.asyncio
async def test_an_outage_longer_than_max_attempts_dead_letters_nothing(tmp_path: Path) -> None:
    """Probes of a destination that is down spend no attempt: with max_attempts 3 and a
    probe every 0.3-0.6 s, three seconds of outage leave the case queued, then delivered
    (before, the probe after the two failures that opened the breaker killed it)."""
    port = free_port()  # nothing listens there yet
    text = grpc_partner_text(port, extra=FAST.format(failures=2, attempts=3))
    async with federation(tmp_path, text=text) as fed:
        shanghai = fed.apps["310000-gw"]
        db = shanghai.config.data_dir / "gateway.sqlite3"
        ids = await submit(fed, 1, "LONG")

        async def opened() -> bool:
            return shanghai.engine.outbox.breaker_states().get(
                "310115", BreakerState.CLOSED) is not BreakerState.CLOSED

        await until(opened)
        await asyncio.sleep(3.0)  # ten probe intervals: the outage outlasts max_attempts
        assert not any(row.dead for row in list_outbox(db)), list_outbox(db)
        platform = Platform(shanghai.config.me.keys)
        async with serving(platform, port):
            async def drained() -> bool:
                return await shanghai.store.count_outbox() == 0

            await until(drained, within=20)
        assert sorted(platform.cases) == sorted(ids)
