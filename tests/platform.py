"""A real regional platform speaking tongban.v1.PartnerPlatform over gRPC, for tests.

It verifies the gateway's signatures and the author's own statement that travels with
each case and update (docs/signing.md §8), dedups by case_id and update_id as the
contract asks, signs its answers, and counts every call it gets (duplicates included),
so tests can tell "delivered once" from "delivered and deduplicated". Given an Issuer,
it also answers FetchCertificates, CertificateStatus and AnswerClaim from it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc

from adapters.issuer import Issuer
from gateway.batchsign import BatchSigner
from gateway.config import load_config
from gateway.errors import GatewayError
from gateway.evidence import SUBMISSIONS, UPDATES, Statements
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import partner_pb2 as pp
from gateway.signing import HEADER, PublicKey, load_private_key
from gateway.verifier import Verifier
from tests.federation import PARTNERS_TOML, ROOT, federation_text

PLATFORM_ID = "310115"
GATEWAY_ID = "310000-gw"


def grpc_partner_text(port: int, text: str | None = None, *, extra: str = "") -> str:
    """The demo federation with 浦东 (310115) behind the grpc_partner adapter on `port`."""
    text = (text or federation_text()).replace(
        'adapter = "embedded"\nsettings = { auto = "complete", step_delay_s = 0.01 }\n'
        '[[partners.keys]]\nid = "k1"\njwk = { kty = "OKP", crv = "Ed25519", x = "MmztfmH',
        f'adapter = "grpc_partner"\nsettings = {{ address = "127.0.0.1:{port}", '
        f'timeout_s = 2 }}\n[[partners.keys]]\nid = "k1"\n'
        'jwk = { kty = "OKP", crv = "Ed25519", x = "MmztfmH')
    assert "grpc_partner" in text
    return text + extra


class Platform:
    def __init__(self, gateway_keys: tuple[PublicKey, ...], *,
                 refuse: grpc.StatusCode | None = None, batch: bool = False,
                 issuer: Issuer | None = None) -> None:
        """batch: answers share signatures (the gateway then needs batch_signatures); calls
        arrive one per loop turn, so the signer lingers a little for company."""
        self.key = load_private_key((ROOT / "demo-keys" / f"{PLATFORM_ID}.pem").read_bytes(),
                                    kid=f"{PLATFORM_ID}#k1")
        self.verifier = Verifier(audience=PLATFORM_ID,
                                 keys_for=lambda i: gateway_keys if i == GATEWAY_ID else ())
        self.refuse = refuse
        self.signer = BatchSigner(self.key, PLATFORM_ID, linger_s=0.005)
        self.batch = batch
        self.tokens: list[str] = []  # the request signatures received, in order
        self.cases: dict[str, pb.Case] = {}
        self.updates: dict[str, pb.CaseUpdate] = {}  # by author/update_id
        self.calls: Counter[str] = Counter()  # case_id or update_id -> calls received
        self.arrived = asyncio.Event()
        partners = load_config(PARTNERS_TOML).partners.values()
        self.statements = Statements({p.id: p.keys for p in partners}, PLATFORM_ID)
        self.refused_statements: list[str] = []  # why, for each call refused for its statement
        self.issuer = issuer  # its certificate register, if it issues any

    async def _check(self, context: Any, statement: pb.Statement, methods: frozenset[str],
                     author: str) -> None:
        """A platform checks who said what before acting on it (docs/platforms.md)."""
        try:
            claims = self.statements.check(statement, methods=methods, field="statement")
            if claims.iss != author:
                raise GatewayError(f"signed by {claims.iss}, not {author}")
        except GatewayError as exc:
            self.refused_statements.append(exc.message)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, exc.message)

    async def _verify(self, method: str, body: bytes, context: Any) -> Any:
        """The gateway's token over these exact bytes, checked before anything is kept."""
        token = next((str(v) for k, v in context.invocation_metadata() or () if k == HEADER),
                     None)
        self.tokens.append(token or "")
        try:
            return self.verifier.verify_request(token, method=method, body=body,
                                                now=time.time())
        except GatewayError as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.message)

    async def _answer(self, method: str, claims: Any, context: Any, out: bytes) -> bytes:
        answer, _ = await self.signer.sign(aud=GATEWAY_ID, method=method, body=out,
                                           now=time.time(), request=claims,
                                           alone=not self.batch)
        context.set_trailing_metadata(((HEADER, answer),))
        return out

    async def receive(self, body: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        if self.refuse is not None:
            await context.abort(self.refuse, "this platform refuses the gateway for now")
        method = "/tongban.v1.PartnerPlatform/ReceiveCase"
        claims = await self._verify(method, body, context)
        case = pp.ReceiveCaseRequest.FromString(body).case
        await self._check(context, case.origin_statement, SUBMISSIONS, case.origin_partner)
        self.calls[case.case_id] += 1
        duplicate = case.case_id in self.cases
        self.cases.setdefault(case.case_id, case)
        out = pp.ReceiveCaseResponse(platform_case_number=f"PD-{len(self.cases)}",
                                     duplicate=duplicate).SerializeToString()
        self.arrived.set()
        return await self._answer(method, claims, context, out)

    async def receive_update(self, body: bytes,
                             context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        if self.refuse is not None:
            await context.abort(self.refuse, "this platform refuses the gateway for now")
        method = "/tongban.v1.PartnerPlatform/ReceiveUpdate"
        claims = await self._verify(method, body, context)
        update = pp.ReceiveUpdateRequest.FromString(body).update
        await self._check(context, update.statement, UPDATES, update.actor)
        key = f"{update.actor}/{update.update_id}"  # an update id is its author's
        self.calls[key] += 1
        duplicate = key in self.updates
        self.updates.setdefault(key, update)
        out = pp.ReceiveUpdateResponse(duplicate=duplicate).SerializeToString()
        return await self._answer(method, claims, context, out)

    def certificates(self, name: str) -> Any:
        """The handler of PartnerPlatform `name`, answered by the issuer's method of it."""
        async def handle(body: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            method = f"/tongban.v1.PartnerPlatform/{name}"
            claims = await self._verify(method, body, context)
            if self.issuer is None:
                await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no certificates here")
            try:
                out = await getattr(self.issuer, CERTIFICATE_CALLS[name])(body)
            except GatewayError as exc:
                await context.abort(exc.code, exc.details())
            return await self._answer(method, claims, context, out)
        return grpc.unary_unary_rpc_method_handler(handle)


# PartnerPlatform certificate methods -> the Issuer method that answers each
CERTIFICATE_CALLS = {"FetchCertificates": "fetch", "CertificateStatus": "status",
                     "AnswerClaim": "answer"}


@asynccontextmanager
async def serving(platform: Platform, port: int) -> AsyncIterator[grpc.aio.Server]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "tongban.v1.PartnerPlatform",
        {"ReceiveCase": grpc.unary_unary_rpc_method_handler(platform.receive),
         "ReceiveUpdate": grpc.unary_unary_rpc_method_handler(platform.receive_update),
         **{name: platform.certificates(name) for name in CERTIFICATE_CALLS}}),))
    assert server.add_insecure_port(f"127.0.0.1:{port}") == port
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0)
