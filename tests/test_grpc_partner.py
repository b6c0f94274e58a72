"""A real PartnerPlatform gRPC server behind the grpc_partner adapter: signed both ways,
down at first (the outbox retries), then up."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway.demo import free_port
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import partner_pb2 as pp
from gateway.signing import HEADER, Verifier, load_private_key, sign
from tests.federation import ROOT, federation, federation_text


class Platform:
    """A minimal regional platform: verifies the gateway's signature, dedups, signs back."""

    def __init__(self, gateway_keys: Any) -> None:
        self.key = load_private_key((ROOT / "demo-keys" / "310115.pem").read_bytes(),
                                    kid="310115#k1")
        self.verifier = Verifier(audience="310115",
                                 keys_for=lambda i: gateway_keys if i == "310000-gw" else ())
        self.cases: dict[str, pb.Case] = {}
        self.calls = 0
        self.arrived = asyncio.Event()

    async def receive(self, body: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        self.calls += 1
        method = "/tongban.v1.PartnerPlatform/ReceiveCase"
        token = next((str(v) for k, v in context.invocation_metadata() or () if k == HEADER), None)
        claims = self.verifier.verify_request(token, method=method, body=body, now=time.time())
        case = pp.ReceiveCaseRequest.FromString(body).case
        duplicate = case.case_id in self.cases
        self.cases.setdefault(case.case_id, case)
        out = pp.ReceiveCaseResponse(platform_case_number="PD-1",
                                     duplicate=duplicate).SerializeToString()
        answer, _ = sign(self.key, iss="310115", aud="310000-gw", method=method, body=out,
                         now=time.time(), request=claims)
        context.set_trailing_metadata(((HEADER, answer),))
        self.arrived.set()
        return out


@pytest.mark.asyncio
async def test_case_reaches_a_grpc_platform_after_it_comes_up(tmp_path: Path) -> None:
    port = free_port()
    text = federation_text().replace(
        'adapter = "embedded"\nsettings = { auto = "complete", step_delay_s = 0.01 }\n'
        '[[partners.keys]]\nid = "k1"\njwk = { kty = "OKP", crv = "Ed25519", x = "MmztfmH',
        f'adapter = "grpc_partner"\nsettings = {{ address = "127.0.0.1:{port}", '
        f'timeout_s = 2 }}\n[[partners.keys]]\nid = "k1"\n'
        'jwk = { kty = "OKP", crv = "Ed25519", x = "MmztfmH')
    assert "grpc_partner" in text
    async with federation(tmp_path, text=text) as fed:
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
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "tongban.v1.PartnerPlatform",
            {"ReceiveCase": grpc.unary_unary_rpc_method_handler(platform.receive)}),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        try:
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
        finally:
            await server.stop(0)
