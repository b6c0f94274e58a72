"""An acknowledged case survives its gateway stopping while the next hop is down."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.pb.tongban.v1 import case_pb2 as pb
from tests.federation import federation


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
