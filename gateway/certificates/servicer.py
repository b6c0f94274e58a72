"""The certificate methods of the Gateway service: thin glue from the shared wrapper
(gateway/server.Edge: verify, limit, parse, audit, sign, refuse) to the job
(gateway/certificates/service.py). Answers are the bytes the job built or passed on,
sent without another serialization."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.message import Message

from gateway.pb.tongban.v1 import certificate_pb2 as cpb
from gateway.server import Call, Edge, Handler

from .service import REQUESTS, CertificateService


class CertificateServicer:
    def __init__(self, service: CertificateService, edge: Edge) -> None:
        self.service, self.edge = service, edge

    def handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        table: dict[str, tuple[type[Message], Handler]] = {
            name: (cls, self._consumer(name)) for name, cls in REQUESTS.items()}
        table["ForwardCertificateCall"] = (cpb.ForwardCertificateCallRequest, self._forward)
        return self.edge.unary_handlers(table)

    def _consumer(self, name: str) -> Handler:
        async def handle(call: Call, request: Any) -> bytes:
            return await self.service.call(name, call.caller, request, call.statement(),
                                           call.audit)
        return handle

    async def _forward(self, call: Call, request: Any) -> bytes:
        response = await self.service.forward(call.caller, request, call.audit)
        return cpb.ForwardCertificateCallResponse(response=response).SerializeToString()
