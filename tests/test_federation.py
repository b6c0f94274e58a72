"""End to end over real sockets: three gateways, embedded platforms, signed calls."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import grpc
import pytest

from gateway.cases import State
from gateway.client import CallError
from gateway.pb.tongban.v1 import case_pb2 as pb
from tests.federation import Federation

CITIZEN = pb.Applicant(id_type=pb.ID_TYPE_RESIDENT, id_number="11010519491231002X",
                       name="张三", phone="13812345678")
PENSION = dict(target_division="310115", item_code="shebao-zy", applicant=CITIZEN)


async def wait_state(fed: Federation, partner: str, case_id: str, state: int) -> pb.Case:
    async with asyncio.timeout(10):
        async for case in fed.client(partner).watch(case_id):
            if case.state == state:
                return case
    raise AssertionError(f"watch ended before {State(state).name}")


@pytest.mark.asyncio
async def test_case_crosses_two_gateways_and_status_flows_back(fed: Federation) -> None:
    jianye = fed.client("320105")
    answer = await jianye.submit(case_number="JY-1", **PENSION)
    case = answer.case
    assert not answer.duplicate
    assert case.state == pb.CASE_STATE_SUBMITTED
    assert case.scope == pb.SCOPE_CROSS_PROVINCE
    assert case.origin_gateway == "320100-gw" and case.target_partner == "310115"

    done = await wait_state(fed, "320105", case.case_id, pb.CASE_STATE_COMPLETED)
    states = [State(c.state).name for c in done.timeline]
    assert states == ["SUBMITTED", "FORWARDED", "ACCEPTED", "PROCESSING", "COMPLETED"]
    assert {c.actor for c in done.timeline[2:]} == {"310115"}
    # the same case is held at every hop, under the same id
    for gateway in ("320000-gw", "310000-gw"):
        record = await fed.apps[gateway].store.get_case(case.case_id)
        assert record is not None and record.case.case_number == "JY-1"
    assert await fed.platform("310115").state_of(case.case_id) is State.COMPLETED
    assert (await jianye.get(case.case_id)).state == pb.CASE_STATE_COMPLETED


@pytest.mark.asyncio
async def test_resubmission_returns_the_same_case_and_delivers_once(fed: Federation) -> None:
    jianye = fed.client("320105")
    first = await jianye.submit(case_number="JY-2", **PENSION)
    again = await jianye.submit(case_number="JY-2", **PENSION)
    assert again.duplicate and again.case.case_id == first.case.case_id
    await wait_state(fed, "320105", first.case.case_id, pb.CASE_STATE_COMPLETED)
    platform = fed.platform("310115")
    async with platform.db.execute("SELECT COUNT(*) FROM cases") as cursor:
        assert (await cursor.fetchone()) == (1,)
    assert await fed.app_of("320105").store.count_cases() == 1


@pytest.mark.asyncio
async def test_reusing_a_case_number_for_another_case_is_refused(fed: Federation) -> None:
    jianye = fed.client("320105")
    await jianye.submit(case_number="JY-3", **PENSION)
    with pytest.raises(CallError) as err:
        await jianye.submit(case_number="JY-3", **{**PENSION, "item_code": "yb-ba"})
    assert err.value.status is grpc.StatusCode.ALREADY_EXISTS


@pytest.mark.asyncio
async def test_metro_circle_and_intra_province_scopes(fed: Federation) -> None:
    chuzhou = await fed.client("341100").submit(
        case_number="CZ-1", target_division="320100", item_code="gjj-tq", applicant=CITIZEN)
    assert chuzhou.case.scope == pb.SCOPE_METRO_CIRCLE
    assert chuzhou.case.alliance == "nanjing-metro"
    local = await fed.client("320105").submit(
        case_number="JY-4", target_division="320681", item_code="jdc-wf", applicant=CITIZEN)
    assert local.case.scope == pb.SCOPE_INTRA_PROVINCE
    await wait_state(fed, "341100", chuzhou.case.case_id, pb.CASE_STATE_COMPLETED)
    await wait_state(fed, "320105", local.case.case_id, pb.CASE_STATE_COMPLETED)


@pytest.mark.asyncio
async def test_retired_division_routes_to_its_successor(fed: Federation) -> None:
    answer = await fed.client("320105").submit(
        case_number="JY-5", target_division="310108", item_code="yyzz-bg", applicant=CITIZEN)
    assert answer.case.requested_division == "310108"
    assert answer.case.target_division == "310106"
    assert "闸北区" in answer.division_note and "310106" in answer.division_note
    assert answer.case.target_partner == "310000"


@pytest.mark.asyncio
async def test_clerk_updates_supplement_and_cancel_flow_both_ways(manual_fed: Federation) -> None:
    fed = manual_fed
    jianye = fed.client("320105")
    case = (await jianye.submit(case_number="JY-6", **PENSION)).case
    pudong = fed.platform("310115")
    async with asyncio.timeout(10):
        await pudong.wait_for(case.case_id)
    # 容缺受理: accepted with a material still owed, then a supplement is requested
    await pudong.transition(case.case_id, State.ACCEPTED, note="容缺受理",
                            missing=["股东会决议"])
    await pudong.transition(case.case_id, State.PROCESSING)
    await pudong.transition(case.case_id, State.SUPPLEMENT_REQUESTED, note="请补正")
    seen = await wait_state(fed, "320105", case.case_id, pb.CASE_STATE_SUPPLEMENT_REQUESTED)
    assert list(seen.timeline[2].missing_materials) == ["股东会决议"]

    material = pb.MaterialRef(name="股东会决议", sha256="ab" * 32, size_bytes=1024,
                              media_type="application/pdf")
    answer = await jianye.update(pb.CaseUpdate(case_id=case.case_id, update_id="sup-1",
                                               note="补正材料", supplement=[material]))
    assert answer.case.materials[-1].sha256 == "ab" * 32
    again = await jianye.update(pb.CaseUpdate(case_id=case.case_id, update_id="sup-1",
                                              note="补正材料", supplement=[material]))
    assert again.duplicate

    # the origin may not set target-side states
    with pytest.raises(CallError) as err:
        await jianye.update(pb.CaseUpdate(case_id=case.case_id, update_id="x-1",
                                          state=pb.CASE_STATE_COMPLETED))
    assert err.value.status is grpc.StatusCode.PERMISSION_DENIED

    cancelled = await jianye.cancel(case.case_id, "申请人撤回")
    assert cancelled.state == pb.CASE_STATE_CANCELLED
    async with asyncio.timeout(10):
        await pudong.wait_for(case.case_id, frozenset({State.CANCELLED}))
    # cancelling again is the same update: idempotent, nothing new in the timeline
    again_cancelled = await jianye.cancel(case.case_id, "申请人撤回")
    assert len(again_cancelled.timeline) == len(cancelled.timeline)
    # the target platform, calling its gateway over gRPC, cannot revive a cancelled case
    with pytest.raises(CallError) as err:
        await fed.client("310115").update(pb.CaseUpdate(
            case_id=case.case_id, update_id="late-1", state=pb.CASE_STATE_COMPLETED))
    assert err.value.status is grpc.StatusCode.FAILED_PRECONDITION
    assert "CANCELLED" in err.value.message


@pytest.mark.asyncio
async def test_another_partner_cannot_see_a_case(fed: Federation) -> None:
    case = (await fed.client("320105").submit(case_number="JY-7", **PENSION)).case
    with pytest.raises(CallError) as err:
        await fed.client("320100").get(case.case_id)
    assert err.value.status is grpc.StatusCode.NOT_FOUND
    with pytest.raises(CallError) as err:
        await fed.client("320100").cancel(case.case_id, "not mine")
    assert err.value.status is grpc.StatusCode.NOT_FOUND
    with pytest.raises(CallError) as err:
        async for _ in fed.client("320100").watch(case.case_id):
            pass
    assert err.value.status is grpc.StatusCode.NOT_FOUND


@pytest.mark.asyncio
async def test_a_foreign_case_and_an_unknown_one_get_the_same_refusal(fed: Federation) -> None:
    """Nothing in the answer (status, field path, wording) tells another partner's case
    from no case at all, whichever call asks, and a refused update changes nothing."""
    case = (await fed.client("320105").submit(case_number="JY-8", **PENSION)).case
    unknown = "01" + "Z" * 24
    stranger = fed.client("320100")

    def ask(case_id: str, call: str) -> Awaitable[object]:
        if call == "update":
            return stranger.update(pb.CaseUpdate(case_id=case_id, update_id="x-1",
                                                 state=pb.CASE_STATE_ACCEPTED))
        if call == "cancel":
            return stranger.cancel(case_id, "not mine")
        if call == "rate":
            return stranger.rate(case_id, 5, pb.RATING_CHANNEL_WINDOW)
        return stranger.get(case_id)

    async def refusal(case_id: str, call: str) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(CallError) as err:
            await ask(case_id, call)
        return err.value.status, err.value.message.replace(case_id, "<id>")

    for call in ("update", "cancel", "rate", "get"):
        assert await refusal(case.case_id, call) == await refusal(unknown, call), call
        assert (await refusal(unknown, call))[0] is grpc.StatusCode.NOT_FOUND
    assert (await refusal(case.case_id, "update"))[1].startswith("320100-gw: update.case_id:")
    after = await fed.client("320105").get(case.case_id)  # its own platform moves it on
    assert after.state != pb.CASE_STATE_CANCELLED and not after.HasField("rating")
    assert all(step.actor != "320100" and step.update_id != "x-1" for step in after.timeline)


@pytest.mark.asyncio
async def test_list_items_by_alliance(fed: Federation) -> None:
    items = await fed.client("320105").items("nanjing-metro")
    assert {i.code for i in items} == {"gjj-tq", "yyzz-bg", "jdc-wf"}
    everything = await fed.client("320105").items()
    assert len(everything) == len(fed.config.items) == 7
    gjj = next(i for i in everything if i.code == "gjj-tq")  # which certificates replace what
    assert sorted(gjj.certificate_types) == ["居民身份证=111", "购房合同=401"]
    with pytest.raises(CallError) as err:
        await fed.client("320105").items("no-such-alliance")
    assert err.value.status is grpc.StatusCode.NOT_FOUND
