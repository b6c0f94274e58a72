"""A PartnerPlatform server for benchmarks, in its own process.

--sign: verify the gateway's request signature and sign the answer, as a real platform
behind the grpc_partner adapter must (the gateway refuses unsigned answers). Without it,
an echo: the ceiling for one gRPC hop ("direct"). --linger S: answers share batch
signatures (docs/signing.md §7), the signer waiting up to S seconds for company.
--register FILE: an issuing platform as well (the certificate rows): FetchCertificates,
CertificateStatus and AnswerClaim answered by the reference issuer (adapters/issuer.py)
from an SQLite register in FILE, seeded with the demo certificates it issues.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from adapters.issuer import Issuer
from adapters.issuer_seed import seed
from benchmarks.common import ROOT, install_uvloop
from gateway.batchsign import BatchSigner
from gateway.config import Config, load_config
from gateway.errors import GatewayError
from gateway.evidence import Statements
from gateway.pb.tongban.v1 import partner_pb2 as pp
from gateway.signing import HEADER, SigningKey, load_private_key
from gateway.types import SystemClock
from gateway.verifier import Verifier

EMPTY_CASE = pp.ReceiveCaseResponse(platform_case_number="P").SerializeToString()
EMPTY_UPDATE = pp.ReceiveUpdateResponse().SerializeToString()
SERVICE = "/tongban.v1.PartnerPlatform/"
Answer = Callable[[bytes], Awaitable[bytes]]


def constant(out: bytes) -> Answer:
    async def answer(body: bytes) -> bytes:
        return out
    return answer


async def open_register(cfg: Config, partner_id: str, key: SigningKey, path: str) -> Issuer:
    """The platform's certificate register, as an embedded issuer keeps it: it checks the
    consumer's statement and the holder's authorization with every platform's keys."""
    partners = cfg.partners.values()
    keys = {p.id: p.keys for p in partners}
    statements = Statements(keys, partner_id, homes={p.id: p.gateway for p in partners})
    issuer = Issuer(partner_id=partner_id, key=key, database=path, clock=SystemClock(),
                    statements=statements, keys_for=lambda party: keys.get(party, ()))
    await issuer.start()
    me = cfg.partners[partner_id]
    await seed(issuer, partner_id, me.issues, me.prefixes, time.time())
    return issuer


async def serve(port: int, partner_id: str, gateway_id: str, signed: bool,
                config: str | None, linger: float | None, register: str | None) -> None:
    received = 0
    signer: BatchSigner | None = None
    issuer: Issuer | None = None

    if signed:
        assert config is not None
        cfg = load_config(config, self_id=gateway_id)
        keys = cfg.me.keys
        verifier = Verifier(audience=partner_id, keys_for=lambda i: keys if i == gateway_id
                            else ())
        key = load_private_key((ROOT / "demo-keys" / f"{partner_id}.pem").read_bytes(),
                               kid=f"{partner_id}#k1")
        signer = BatchSigner(key, partner_id, linger_s=linger or 0.0)
        if register is not None:
            issuer = await open_register(cfg, partner_id, key, register)

    def handler(name: str, answer: Answer) -> Any:
        method = SERVICE + name

        async def handle(body: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            nonlocal received
            received += 1
            if not signed:
                return await answer(body)
            token = next((str(v) for k, v in context.invocation_metadata() or ()
                          if k == HEADER), None)
            now = time.time()
            claims = verifier.verify_request(token, method=method, body=body, now=now)
            try:
                out = await answer(body)
            except GatewayError as exc:  # the issuer's refusal, with its status
                await context.abort(exc.code, exc.details())
            assert signer is not None
            signed_answer, _ = await signer.sign(aud=gateway_id, method=method, body=out,
                                                 now=now, request=claims,
                                                 alone=linger is None)
            context.set_trailing_metadata(((HEADER, signed_answer),))
            return out

        return grpc.unary_unary_rpc_method_handler(handle)

    methods = {"ReceiveCase": handler("ReceiveCase", constant(EMPTY_CASE)),
               "ReceiveUpdate": handler("ReceiveUpdate", constant(EMPTY_UPDATE))}
    if issuer is not None:
        methods |= {"FetchCertificates": handler("FetchCertificates", issuer.fetch),
                    "CertificateStatus": handler("CertificateStatus", issuer.status),
                    "AnswerClaim": handler("AnswerClaim", issuer.answer)}
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "tongban.v1.PartnerPlatform", methods),))
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
        if issuer is not None:
            await issuer.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--partner", default="310115")
    parser.add_argument("--gateway", default="310000-gw")
    parser.add_argument("--config")
    parser.add_argument("--sign", action="store_true")
    parser.add_argument("--linger", type=float, help="batch-sign answers (seconds to wait)")
    parser.add_argument("--register", help="with --sign: issue certificates from this "
                        "SQLite file (seeded with the platform's demo certificates)")
    args = parser.parse_args()
    install_uvloop()
    asyncio.run(serve(args.port, args.partner, args.gateway, args.sign, args.config,
                      args.linger, args.register))


if __name__ == "__main__":
    main()
