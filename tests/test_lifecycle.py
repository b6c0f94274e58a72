"""The rest of the 办件 lifecycle over real sockets: 容缺受理/告知承诺, result delivery
(通办通取, 邮政寄递, electronic), 好差评 with rectification, and 一件事 bundles."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from gateway.client import CallError
from gateway.lifecycle import seconds, timestamp
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import gateway_pb2 as gw
from tests.federation import FakeClock, Federation, federation, until
from tests.test_supervision import APPLICANT, DAY, MONDAY_9AM, events_of, move, submit

K = pb.EventKind
ONE = ("320100-gw",)


def doc(name: str, fill: str = "a") -> pb.MaterialRef:
    return pb.MaterialRef(name=name, sha256=fill * 64, size_bytes=100,
                          media_type="application/pdf")


async def refused(call: object, status: grpc.StatusCode, field: str = "") -> CallError:
    with pytest.raises(CallError) as info:
        await call  # type: ignore[misc]
    assert info.value.status is status, info.value
    if field:
        assert field in info.value.message, info.value.message
    return info.value


async def completed(fed: Federation, number: str) -> pb.Case:
    case = await submit(fed, number)
    for uid, state in (("a", pb.CASE_STATE_ACCEPTED), ("p", pb.CASE_STATE_PROCESSING),
                       ("c", pb.CASE_STATE_COMPLETED)):
        await move(fed, case.case_id, f"{number}-{uid}", state)
    return case


@pytest.mark.asyncio
async def test_accept_with_materials_owed_then_supplied(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_9AM)
    async with federation(tmp_path, auto="manual", clock=clock, gateways=ONE) as fed:
        nanjing = fed.apps["320100-gw"]
        case = await submit(fed, "RQ-1")
        due = timestamp(MONDAY_9AM + 2 * DAY)
        accepted = await move(fed, case.case_id, "acc", pb.CASE_STATE_ACCEPTED,
                              note="容缺受理", missing_materials=["股东会决议", "章程"],
                              commitment_deadline=due)
        assert list(accepted.missing_materials) == ["股东会决议", "章程"]
        assert accepted.commitment_deadline == due
        seen = await fed.client("320105").get(case.case_id)  # the origin sees what is owed
        assert list(seen.missing_materials) == ["股东会决议", "章程"]

        partial = await fed.client("320105").update(pb.CaseUpdate(
            case_id=case.case_id, update_id="sup-1", supplement=[doc("章程")]))
        assert list(partial.case.missing_materials) == ["股东会决议"]
        done = await fed.client("320105").update(pb.CaseUpdate(
            case_id=case.case_id, update_id="sup-2", supplement=[doc("股东会决议", "b")]))
        assert list(done.case.missing_materials) == [] and len(done.case.materials) == 2
        clock.advance(3 * DAY)
        await nanjing.monitor.sweep()
        kinds = [e.kind for e in await events_of(fed, "320100-gw", case.case_id)]
        assert kinds.count(K.EVENT_KIND_SUPPLEMENTED) == 2
        assert K.EVENT_KIND_COMMITMENT_MISSED not in kinds


@pytest.mark.asyncio
async def test_a_missed_commitment_raises_an_event(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_9AM)
    async with federation(tmp_path, auto="manual", clock=clock, gateways=ONE) as fed:
        nanjing = fed.apps["320100-gw"]
        case = await submit(fed, "RQ-2")
        await move(fed, case.case_id, "acc", pb.CASE_STATE_ACCEPTED, missing_materials=["章程"],
                   commitment_deadline=timestamp(MONDAY_9AM + DAY))
        clock.advance(DAY - 1)
        await nanjing.monitor.sweep()
        clock.advance(2)
        await nanjing.monitor.sweep()
        missed = [e for e in await events_of(fed, "320100-gw", case.case_id)
                  if e.kind == K.EVENT_KIND_COMMITMENT_MISSED]
        assert len(missed) == 1 and "章程" in missed[0].note
        assert seconds(missed[0].deadline) == MONDAY_9AM + DAY


@pytest.mark.asyncio
async def test_commitment_bad_input_changes_nothing(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_9AM)
    async with federation(tmp_path, auto="manual", clock=clock, gateways=ONE) as fed:
        case = await submit(fed, "RQ-3")
        await refused(move(fed, case.case_id, "x1", pb.CASE_STATE_ACCEPTED,
                           commitment_deadline=timestamp(MONDAY_9AM + DAY)),
                      grpc.StatusCode.INVALID_ARGUMENT, "update.commitment_deadline")
        await refused(move(fed, case.case_id, "x2", pb.CASE_STATE_ACCEPTED,
                           missing_materials=["章程"],
                           commitment_deadline=timestamp(MONDAY_9AM - DAY)),
                      grpc.StatusCode.INVALID_ARGUMENT, "update.commitment_deadline")
        now = await fed.client("320105").get(case.case_id)
        assert now.state == pb.CASE_STATE_FORWARDED and not now.missing_materials


@pytest.mark.asyncio
async def test_result_delivery_postal_then_window(tmp_path: Path) -> None:
    async with federation(tmp_path, auto="manual", gateways=ONE) as fed:
        early = await submit(fed, "DL-0")
        await refused(fed.client("320100").update(pb.CaseUpdate(
            case_id=early.case_id, update_id="d0", delivery=pb.ResultDelivery(
                method=pb.DELIVERY_METHOD_WINDOW, window="3号窗口"))),
            grpc.StatusCode.FAILED_PRECONDITION, "update.delivery")

        case = await completed(fed, "DL-1")
        await refused(move(fed, case.case_id, "rd0", pb.CASE_STATE_RESULT_DELIVERED),
                      grpc.StatusCode.INVALID_ARGUMENT, "update.delivery")
        await refused(fed.client("320100").update(pb.CaseUpdate(
            case_id=case.case_id, update_id="d1", delivery=pb.ResultDelivery(
                method=pb.DELIVERY_METHOD_POSTAL, carrier="EMS"))),
            grpc.StatusCode.INVALID_ARGUMENT, "update.delivery.tracking_number")
        await refused(fed.client("320100").update(pb.CaseUpdate(
            case_id=case.case_id, update_id="d2", delivery=pb.ResultDelivery())),
            grpc.StatusCode.INVALID_ARGUMENT, "update.delivery.method")

        posted = await fed.client("320100").update(pb.CaseUpdate(
            case_id=case.case_id, update_id="d3", note="已寄出",
            delivery=pb.ResultDelivery(method=pb.DELIVERY_METHOD_POSTAL, carrier="EMS",
                                       tracking_number="1234567890123")))
        assert posted.case.state == pb.CASE_STATE_COMPLETED
        assert posted.case.delivery.tracking_number == "1234567890123"
        # the origin window hands it over when the citizen signs for it (通办通取)
        handed = await fed.client("320105").update(pb.CaseUpdate(
            case_id=case.case_id, update_id="rd1", state=pb.CASE_STATE_RESULT_DELIVERED))
        assert handed.case.state == pb.CASE_STATE_RESULT_DELIVERED
        kinds = [e.kind for e in await events_of(fed, "320100-gw", case.case_id)]
        assert K.EVENT_KIND_DELIVERY in kinds

        other = await completed(fed, "DL-2")
        electronic = await move(fed, other.case_id, "rd2", pb.CASE_STATE_RESULT_DELIVERED,
                                delivery=pb.ResultDelivery(
                                    method=pb.DELIVERY_METHOD_ELECTRONIC,
                                    certificate_ref="91320105MA1MXXXX0H-2026"))
        assert electronic.delivery.method == pb.DELIVERY_METHOD_ELECTRONIC


@pytest.mark.asyncio
async def test_one_rating_per_case_and_a_bad_one_opens_rectification(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_9AM)
    async with federation(tmp_path, auto="manual", clock=clock, gateways=ONE) as fed:
        nanjing = fed.apps["320100-gw"]
        origin = fed.client("320105")
        open_case = await submit(fed, "RT-0")
        await refused(origin.rate(open_case.case_id, 5, pb.RATING_CHANNEL_WINDOW),
                      grpc.StatusCode.FAILED_PRECONDITION)

        case = await completed(fed, "RT-1")
        await refused(origin.rate(case.case_id, 0, pb.RATING_CHANNEL_WINDOW),
                      grpc.StatusCode.INVALID_ARGUMENT, "score")
        await refused(origin.rate(case.case_id, 3, pb.RATING_CHANNEL_UNSPECIFIED),
                      grpc.StatusCode.INVALID_ARGUMENT, "channel")
        await refused(origin.update(pb.CaseUpdate(
            case_id=case.case_id, update_id="sneak", rating=pb.Rating(
                score=5, channel=pb.RATING_CHANNEL_WEB))),
            grpc.StatusCode.INVALID_ARGUMENT, "update.rating")

        rated = await origin.rate(case.case_id, 2, pb.RATING_CHANNEL_SMS, "等待时间太长")
        assert not rated.duplicate and rated.case.rating.score == 2
        # five working days from Monday: Tue..Mon -> Tuesday 00:00 of the next week
        assert seconds(rated.case.rating.rectification_deadline) == MONDAY_9AM - 9 * 3600 + \
            8 * DAY
        again = await origin.rate(case.case_id, 2, pb.RATING_CHANNEL_SMS, "等待时间太长")
        assert again.duplicate  # a retry of the same rating
        await refused(origin.rate(case.case_id, 5, pb.RATING_CHANNEL_WEB),
                      grpc.StatusCode.ALREADY_EXISTS)
        # the rating reached the handling side
        target = await fed.client("320100").get(case.case_id)
        assert target.rating.score == 2

        # only the handling side answers, once
        await refused(origin.update(pb.CaseUpdate(
            case_id=case.case_id, update_id="rect-o", rectification_report="我们改")),
            grpc.StatusCode.PERMISSION_DENIED, "rectification_report")
        fixed = await fed.client("320100").update(pb.CaseUpdate(
            case_id=case.case_id, update_id="rect-1", rectification_report="已增设自助取号"))
        assert fixed.case.rating.rectification_report == "已增设自助取号"
        await refused(fed.client("320100").update(pb.CaseUpdate(
            case_id=case.case_id, update_id="rect-2", rectification_report="again")),
            grpc.StatusCode.ALREADY_EXISTS)

        # an unanswered 差评 goes overdue
        late = await completed(fed, "RT-2")
        await origin.rate(late.case_id, 1, pb.RATING_CHANNEL_HOTLINE)
        good = await completed(fed, "RT-3")
        assert not (await origin.rate(good.case_id, 5, pb.RATING_CHANNEL_APP)
                    ).case.rating.HasField("rectification_deadline")
        clock.advance(10 * DAY)
        await nanjing.monitor.sweep()
        kinds = {cid: [e.kind for e in await events_of(fed, "320100-gw", cid)]
                 for cid in (case.case_id, late.case_id, good.case_id)}
        assert K.EVENT_KIND_RECTIFIED in kinds[case.case_id]
        assert K.EVENT_KIND_RECTIFICATION_OVERDUE not in kinds[case.case_id]
        assert K.EVENT_KIND_RECTIFICATION_OVERDUE in kinds[late.case_id]
        assert K.EVENT_KIND_RECTIFICATION_OPENED not in kinds[good.case_id]


@pytest.mark.asyncio
async def test_bundle_fans_out_to_several_regions_and_aggregates(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        client = fed.client("320105")
        parts = [gw.SubmitCaseRequest(case_number="B1-a", target_division="320100",
                                      item_code="gjj-tq", applicant=APPLICANT),
                 gw.SubmitCaseRequest(case_number="B1-b", target_division="310115",
                                      item_code="shebao-zy", applicant=APPLICANT)]
        answer = await client.submit_bundle(bundle_number="B1", name="迁居一件事", parts=parts)
        bundle = answer.bundle
        assert not answer.duplicate and len(bundle.parts) == 2
        assert {p.target_partner for p in bundle.parts} == {"320100", "310115"}
        assert all(p.bundle_id == bundle.bundle_id for p in bundle.parts)
        assert bundle.state == pb.CASE_STATE_SUBMITTED

        async def bundle_completed() -> bool:
            return (await client.bundle(bundle.bundle_id)).state == pb.CASE_STATE_COMPLETED

        await until(bundle_completed, within=20)
        again = await client.submit_bundle(bundle_number="B1", name="迁居一件事", parts=parts)
        assert again.duplicate and again.bundle.bundle_id == bundle.bundle_id
        await refused(client.submit_bundle(bundle_number="B1", name="另一件事", parts=parts),
                      grpc.StatusCode.ALREADY_EXISTS, "bundle_number")
        await refused(fed.client("320100").bundle(bundle.bundle_id), grpc.StatusCode.NOT_FOUND)

        # one bad part refuses the whole bundle and stores none of it
        nanjing = fed.apps["320100-gw"]
        before = await nanjing.store.count_cases()
        bad = [gw.SubmitCaseRequest(case_number="B2-a", target_division="320100",
                                  item_code="gjj-tq", applicant=APPLICANT),
               gw.SubmitCaseRequest(case_number="B2-b", target_division="99",
                                  item_code="gjj-tq", applicant=APPLICANT)]
        await refused(client.submit_bundle(bundle_number="B2", name="x", parts=bad),
                      grpc.StatusCode.INVALID_ARGUMENT, "parts[1].target_division")
        taken = [gw.SubmitCaseRequest(case_number="B3-a", target_division="320100",
                                    item_code="gjj-tq", applicant=APPLICANT),
                 gw.SubmitCaseRequest(case_number="B1-a", target_division="320100",
                                    item_code="gjj-tq", applicant=APPLICANT)]
        await refused(client.submit_bundle(bundle_number="B3", name="x", parts=taken),
                      grpc.StatusCode.ALREADY_EXISTS, "parts[1].case_number")
        await refused(client.submit_bundle(bundle_number="B4", name="x", parts=parts[:1]),
                      grpc.StatusCode.INVALID_ARGUMENT, "parts")
        assert await nanjing.store.count_cases() == before
