"""A real PartnerPlatform gRPC server behind the grpc_partner adapter: signed both ways,
down at first (the outbox retries), then up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.demo import free_port
from gateway.pb.tongban.v1 import case_pb2 as pb
from tests.federation import federation
from tests.platform import Platform, grpc_partner_text, serving


@pytest.mark.asyncio
async def test_case_reaches_a_grpc_platform_after_it_comes_up(tmp_path: Path) -> None:
    port = free_port()
    async with federation(tmp_path, text=grpc_partner_text(port)) as fed:
        answer = await fed.client("320105").submit(
            case_number="G-1", target_division="310115", item_code="shebao-zy",
            applicant=pb.Applicant(id_type=pb.ID_TYPE_RESIDENT,
                                   id_number="11010519491231002X", name="张三"))
        shanghai = fed.apps["310000-gw"]
        # the case waits in 310000-gw's outbox; the store has no change feed to wait on
        async with asyncio.timeout(10):
            while await shanghai.store.get_case(answer.case.case_id) is None:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert await shanghai.store.count_outbox() == 1

        platform = Platform(shanghai.config.me.keys)
        async with serving(platform, port):
            async with asyncio.timeout(30):
                await platform.arrived.wait()
                while (await shanghai.store.get_case(answer.case.case_id)).case.state != \
                        pb.CASE_STATE_FORWARDED:  # type: ignore[union-attr]  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            assert list(platform.cases) == [answer.case.case_id]
            assert await shanghai.store.count_outbox() == 0
            # the platform reports acceptance through its gateway, signed as itself
            update = pb.CaseUpdate(case_id=answer.case.case_id, update_id="pd-acc-1",
                                   state=pb.CASE_STATE_ACCEPTED, note="受理")
            accepted = await fed.client("310115").update(update)
            assert accepted.case.state == pb.CASE_STATE_ACCEPTED
            async with asyncio.timeout(10):
                async for case in fed.client("320105").watch(answer.case.case_id):
                    if case.state == pb.CASE_STATE_ACCEPTED:
                        break
