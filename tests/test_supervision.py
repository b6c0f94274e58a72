"""电子监察 and 审管联动 over real sockets, on a shared fake clock: deadlines in working days,
the 80 % warning and the overdue alarm (once each), the 补正 pause, metrics, and the
Subscribe feed with scope, filters, refusals and resume from a cursor."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import aiohttp
import grpc
import pytest

from gateway.client import CallError
from gateway.lifecycle import seconds
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.workdays import CHINA
from tests.federation import FakeClock, Federation, federation

MONDAY_9AM = datetime(2026, 11, 23, 9, tzinfo=CHINA).timestamp()
DAY = 86400.0
APPLICANT = pb.Applicant(id_type=pb.ID_TYPE_RESIDENT, id_number="11010519491231002X",
                         name="张三", phone="13812345678")
K = pb.EventKind


async def submit(fed: Federation, number: str, origin: str = "320105",
                 target: str = "320100", item: str = "gjj-tq") -> pb.Case:
    answer = await fed.client(origin).submit(case_number=number, target_division=target,
                                             item_code=item, applicant=APPLICANT)
    return answer.case


async def events_of(fed: Federation, gateway: str, case_id: str) -> list[pb.CaseEvent]:
    log = await fed.apps[gateway].store.read_events(0, 10_000)
    return [e for e in log if e.case_id == case_id]


async def move(fed: Federation, case_id: str, update_id: str, state: int,
               partner: str = "320100", **fields: object) -> pb.Case:
    update = pb.CaseUpdate(case_id=case_id, update_id=update_id, state=state,  # type: ignore[arg-type]
                           **fields)  # type: ignore[arg-type]
    return (await fed.client(partner).update(update)).case


@pytest.mark.asyncio
async def test_deadline_warning_and_alarm_fire_once_each(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_9AM)
    async with federation(tmp_path, auto="manual", clock=clock,
                          gateways=("320100-gw",)) as fed:
        nanjing = fed.apps["320100-gw"]
        case = await submit(fed, "D-1")  # gjj-tq: 3 working days
        friday = datetime(2026, 11, 27, tzinfo=CHINA).timestamp()
        assert seconds(case.deadline) == friday
        warn_at = MONDAY_9AM + 0.8 * (friday - MONDAY_9AM)

        clock.t = warn_at - 60
        assert await nanjing.monitor.sweep() == 0
        clock.t = warn_at + 1
        assert await nanjing.monitor.sweep() == 1
        assert await nanjing.monitor.sweep() == 0  # once
        clock.t = friday + 1
        assert await nanjing.monitor.sweep() == 1
        kinds = [e.kind for e in await events_of(fed, "320100-gw", case.case_id)]
        assert kinds.count(K.EVENT_KIND_DEADLINE_WARNING) == 1
        assert kinds.count(K.EVENT_KIND_DEADLINE_OVERDUE) == 1
        alarm = next(e for e in await events_of(fed, "320100-gw", case.case_id)
                 if e.kind == K.EVENT_KIND_DEADLINE_OVERDUE)
        assert seconds(alarm.deadline) == friday and alarm.item_code == "gjj-tq"

        async with aiohttp.ClientSession() as http, http.get(
                f"http://{nanjing.config.me.http}/metrics") as answer:
            text = await answer.text()
        assert "tongban_cases_overdue 1.0" in text
        assert 'tongban_case_events_total{kind="deadline_warning"} 1.0' in text
        assert "tongban_cases_open 1.0" in text

        # a case completed in time raises nothing
        other = await submit(fed, "D-2")
        await move(fed, other.case_id, "a", pb.CASE_STATE_ACCEPTED)
        await move(fed, other.case_id, "p", pb.CASE_STATE_PROCESSING)
        await move(fed, other.case_id, "c", pb.CASE_STATE_COMPLETED)
        clock.advance(30 * DAY)
        await nanjing.monitor.sweep()
        kinds = [e.kind for e in await events_of(fed, "320100-gw", other.case_id)]
        assert K.EVENT_KIND_DEADLINE_WARNING not in kinds
        assert kinds.count(K.EVENT_KIND_STATE_CHANGED) == 5  # submitted .. completed


@pytest.mark.asyncio
async def test_time_in_supplement_does_not_count(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_9AM)
    async with federation(tmp_path, auto="manual", clock=clock,
                          gateways=("320100-gw",)) as fed:
        nanjing = fed.apps["320100-gw"]
        case = await submit(fed, "S-1")
        deadline = seconds(case.deadline)
        await move(fed, case.case_id, "a", pb.CASE_STATE_ACCEPTED)
        await move(fed, case.case_id, "p", pb.CASE_STATE_PROCESSING)
        clock.advance(3600)
        await move(fed, case.case_id, "s", pb.CASE_STATE_SUPPLEMENT_REQUESTED,
                   note="请补正股东会决议", missing_materials=["股东会决议"])
        clock.advance(5 * DAY)  # past the original deadline, but waiting on the applicant
        assert await nanjing.monitor.sweep() == 0
        doc = pb.MaterialRef(name="股东会决议", sha256="a" * 64, size_bytes=10,
                             media_type="application/pdf")
        await fed.client("320105").update(pb.CaseUpdate(
            case_id=case.case_id, update_id="sup", supplement=[doc], note="已补正"))
        resumed = await move(fed, case.case_id, "p2", pb.CASE_STATE_PROCESSING)
        assert seconds(resumed.deadline) == deadline + 5 * DAY
        assert await nanjing.monitor.sweep() == 0  # the warning moved 5 days later too
        clock.t = seconds(resumed.deadline) + 1
        assert await nanjing.monitor.sweep() == 2  # warning and alarm, at the new times


@pytest.mark.asyncio
async def test_subscribe_sees_its_scope_and_resumes_without_loss(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        supervisor = fed.client("320100-jc")  # 南京 supervisor: prefix 3201
        mine = await submit(fed, "SUB-1", target="310115", item="shebao-zy")
        await submit(fed, "SUB-X", origin="341100", target="310000")  # 滁州 → 上海: not 3201

        async def take(n: int, after: int) -> list[pb.CaseEvent]:
            out: list[pb.CaseEvent] = []
            async with asyncio.timeout(15):
                async for event in supervisor.subscribe(after=after):
                    out.append(event)
                    if len(out) == n:
                        break
            return out

        first = await take(2, 0)
        assert all(e.case_id == mine.case_id for e in first)
        # the case goes on while nobody listens; then resume after the last seen seq
        async with asyncio.timeout(20):
            async for case in fed.client("320105").watch(mine.case_id):
                if case.state == pb.CASE_STATE_COMPLETED:
                    break
        rest = await take(3, first[-1].seq)
        seen = first + rest
        assert [e.seq for e in seen] == sorted({e.seq for e in seen})  # ordered, no repeats
        log = [e for e in await fed.apps["320100-gw"].store.read_events(0, 1000)
               if e.origin_partner.startswith("3201") or e.target_division.startswith("3201")]
        assert [e.seq for e in seen] == [e.seq for e in log]  # nothing missed, nothing extra
        assert [pb.CaseState.Name(e.state) for e in seen] == [
            "CASE_STATE_SUBMITTED", "CASE_STATE_FORWARDED", "CASE_STATE_ACCEPTED",
            "CASE_STATE_PROCESSING", "CASE_STATE_COMPLETED"]
        assert all(e.origin_partner != "341100" for e in seen)

        # live: a new case arrives while subscribed, filtered by kind
        async def first_new() -> pb.CaseEvent:
            async for event in supervisor.subscribe(after=seen[-1].seq,
                                                    kinds=[K.EVENT_KIND_STATE_CHANGED]):
                if event.state == pb.CASE_STATE_SUBMITTED:
                    return event
            raise AssertionError("feed ended")

        waiter = asyncio.create_task(first_new())
        await asyncio.sleep(0.2)
        live = await submit(fed, "SUB-2")
        async with asyncio.timeout(10):
            assert (await waiter).case_id == live.case_id


@pytest.mark.asyncio
async def test_subscribe_refusals(tmp_path: Path) -> None:
    async with federation(tmp_path, gateways=("320100-gw",)) as fed:
        async def first(client_id: str, **kw: object) -> None:
            async with asyncio.timeout(5):
                async for _ in fed.client(client_id).subscribe(**kw):  # type: ignore[arg-type]
                    return

        with pytest.raises(CallError) as denied:
            await first("320105")  # a partner platform is not a supervisor
        assert denied.value.status is grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(CallError) as bad:
            await first("320100-jc", after=-1)
        assert bad.value.status is grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(CallError) as kind:
            await first("320100-jc", kinds=[99])
        assert kind.value.status is grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(CallError) as submit_denied:
            await fed.client("320100-jc").submit(case_number="X", target_division="320100",
                                                 item_code="gjj-tq", applicant=APPLICANT)
        assert submit_denied.value.status is grpc.StatusCode.PERMISSION_DENIED
