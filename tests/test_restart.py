"""An acknowledged case survives its gateway stopping while the next hop is down."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import gateway_pb2 as gw
from gateway.signing import HEADER, load_private_key, sign
from tests.federation import ROOT, Federation, federation


@pytest.mark.asyncio
async def test_outbox_resumes_after_restart(tmp_path: Path) -> None:
    async with federation(tmp_path, gateways=("320100-gw",)) as alone:
        answer = await alone.client("320105").submit(
            case_number="R-1", target_division="320681", item_code="jdc-wf",
            applicant=pb.Applicant(id_type=pb.ID_TYPE_RESIDENT,
                                   id_number="11010519491231002X", name="张三"))
        store = alone.apps["320100-gw"].store
        assert await store.count_outbox() == 1  # 江苏 gateway is not running
    # the same data_dir, now with the whole federation up
    async with federation(tmp_path) as fed:
        async with asyncio.timeout(20):
            async for case in fed.client("320105").watch(answer.case.case_id):
                if case.state == pb.CASE_STATE_COMPLETED:
                    break
        qidong = fed.platform("320681")
        async with qidong.db.execute("SELECT case_id FROM cases") as cursor:
            assert await cursor.fetchall() == [(answer.case.case_id,)]  # delivered once


@pytest.mark.asyncio
async def test_a_captured_token_is_refused_after_a_restart(tmp_path: Path) -> None:
    """The replay cache lives in memory; the audit log holds each accepted call's jti,
    and a starting gateway reads back those still inside the replay window."""
    submit = "/tongban.v1.Gateway/SubmitCase"
    key = load_private_key((ROOT / "demo-keys" / "320105.pem").read_bytes(), kid="320105#k1")
    body = gw.SubmitCaseRequest(
        case_number="R-REPLAY", target_division="320681", item_code="jdc-wf",
        applicant=pb.Applicant(id_type=pb.ID_TYPE_RESIDENT, id_number="11010519491231002X",
                               name="张三")).SerializeToString()
    refused = gw.GetCaseRequest(case_id="no-such-case").SerializeToString()
    captured = [
        (submit, body, sign(key, iss="320105", aud="320100-gw", method=submit, body=body,
                            now=time.time(), ttl=300)[0]),
        # a call refused after its signature checked out spent its jti all the same
        ("/tongban.v1.Gateway/GetCase", refused,
         sign(key, iss="320105", aud="320100-gw", method="/tongban.v1.Gateway/GetCase",
              body=refused, now=time.time(), ttl=300)[0]),
    ]
    replayed = (grpc.StatusCode.UNAUTHENTICATED, "replayed jti")
    async with federation(tmp_path, gateways=("320100-gw",)) as before:
        for method, request, signed in captured:  # accepted once: OK, then NOT_FOUND
            code, _ = await send(before, method, request, signed)
            assert code in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND)
            assert await send(before, method, request, signed) == replayed
    async with federation(tmp_path, gateways=("320100-gw",)) as after:  # same data_dir
        for method, request, signed in captured:
            assert await send(after, method, request, signed) == replayed


async def send(fed: Federation, method: str, body: bytes,
               signed: str) -> tuple[grpc.StatusCode, str]:
    """The status of one call with the given token and its text ("replayed jti" for a
    replay, whichever jti it names)."""
    address = fed.apps["320100-gw"].config.me.grpc
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            await channel.unary_unary(method)(body, metadata=((HEADER, signed),), timeout=5)
        except grpc.aio.AioRpcError as err:
            text = err.details() or ""
            return err.code(), "replayed jti" if text.startswith("replayed jti") else text
    return grpc.StatusCode.OK, ""
