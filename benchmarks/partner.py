"""A PartnerPlatform server for benchmarks, in its own process.

--sign: verify the gateway's request signature and sign the answer, as a real platform
behind the grpc_partner adapter must (the gateway refuses unsigned answers). Without it,
an echo: the ceiling for one gRPC hop ("direct"). --linger S: answers share batch
signatures (docs/signing.md §7), the signer waiting up to S seconds for company.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import grpc

from benchmarks.common import ROOT, install_uvloop
from gateway.batchsign import BatchSigner
from gateway.config import load_config
from gateway.pb.tongban.v1 import partner_pb2 as pp
from gateway.signing import HEADER, load_private_key
from gateway.verifier import Verifier

EMPTY_CASE = pp.ReceiveCaseResponse(platform_case_number="P").SerializeToString()
EMPTY_UPDATE = pp.ReceiveUpdateResponse().SerializeToString()


async def serve(port: int, partner_id: str, gateway_id: str, signed: bool,
                config: str | None, linger: float | None) -> None:
    received = 0
    signer: BatchSigner | None = None

    if signed:
        assert config is not None
        cfg = load_config(config, self_id=gateway_id)
        keys = cfg.me.keys
        verifier = Verifier(audience=partner_id, keys_for=lambda i: keys if i == gateway_id
                            else ())
        key = load_private_key((ROOT / "demo-keys" / f"{partner_id}.pem").read_bytes(),
                               kid=f"{partner_id}#k1")
        signer = BatchSigner(key, partner_id, linger_s=linger or 0.0)

    def handler(method: str, out: bytes) -> Any:
        async def handle(body: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            nonlocal received
            received += 1
            if signed:
                token = next((str(v) for k, v in context.invocation_metadata() or ()
                              if k == HEADER), None)
                now = time.time()
                claims = verifier.verify_request(token, method=method, body=body, now=now)
                assert signer is not None
                answer, _ = await signer.sign(aud=gateway_id, method=method, body=out,
                                              now=now, request=claims, alone=linger is None)
                context.set_trailing_metadata(((HEADER, answer),))
            return out

        return grpc.unary_unary_rpc_method_handler(handle)

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "tongban.v1.PartnerPlatform", {
            "ReceiveCase": handler("/tongban.v1.PartnerPlatform/ReceiveCase", EMPTY_CASE),
            "ReceiveUpdate": handler("/tongban.v1.PartnerPlatform/ReceiveUpdate",
                                     EMPTY_UPDATE)}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("READY", flush=True)
    try:
        while True:
            await asyncio.sleep(0.5)
            # alone-signed answers are not counted by the signer: one signature each
            signatures = signer.signatures if signer is not None and linger is not None \
                else received
            print(f"RECEIVED {received} signatures {signatures}", flush=True)
    finally:
        await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--partner", default="310115")
    parser.add_argument("--gateway", default="310000-gw")
    parser.add_argument("--config")
    parser.add_argument("--sign", action="store_true")
    parser.add_argument("--linger", type=float, help="batch-sign answers (seconds to wait)")
    args = parser.parse_args()
    install_uvloop()
    asyncio.run(serve(args.port, args.partner, args.gateway, args.sign, args.config,
                      args.linger))


if __name__ == "__main__":
    main()
