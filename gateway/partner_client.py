"""A platform's side of the Gateway service: signed calls, signed answers checked.

What a regional platform written in Python would use; the demo and the tests use it too.
Platforms in other languages follow docs/signing.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from gateway.batchsign import BatchSigner
from gateway.client import CallError, SignedChannel
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import certificate_pb2 as cpb
from gateway.pb.tongban.v1 import gateway_pb2 as gw
from gateway.signing import HEADER, PublicKey, SigningKey
from gateway.tls import ChannelTls, open_channel
from gateway.types import Clock, SystemClock
from gateway.verifier import Verifier

M = TypeVar("M", bound=Message)
SERVICE = "/tongban.v1.Gateway/"


class PartnerClient:
    def __init__(self, address: str, *, partner_id: str, gateway_id: str, key: SigningKey,
                 gateway_keys: Sequence[PublicKey], clock: Clock | None = None,
                 batch_signatures: bool = False, tls: ChannelTls | None = None) -> None:
        """batch_signatures: concurrent calls share one signature (docs/signing.md §7);
        the gateway verifies those from any caller. tls: the gateway speaks TLS (its CA,
        its name, and the platform's client certificate when it requires one)."""
        self.partner_id, self.gateway_id = partner_id, gateway_id
        self._signer = BatchSigner(key, partner_id)
        self._clock = clock or SystemClock()
        verifier = Verifier(audience=partner_id,
                            keys_for=lambda i: gateway_keys if i == gateway_id else ())
        self._channel = SignedChannel(address, audience=gateway_id, signer=self._signer,
                                      batch=batch_signatures, verifier=verifier,
                                      clock=self._clock, tls=tls)
        self._stream_channel = open_channel(address, tls)

    async def close(self) -> None:
        await self._channel.close()
        await self._stream_channel.close()

    async def _call(self, name: str, request: Message, answer: type[M]) -> M:
        raw = await self._channel.call(SERVICE + name, request.SerializeToString())
        return answer.FromString(raw)

    async def submit(self, **fields: Any) -> gw.SubmitCaseResponse:
        return await self._call("SubmitCase", gw.SubmitCaseRequest(**fields),
                                gw.SubmitCaseResponse)

    async def get(self, case_id: str) -> pb.Case:
        return (await self._call("GetCase", gw.GetCaseRequest(case_id=case_id),
                                 gw.GetCaseResponse)).case

    async def update(self, update: pb.CaseUpdate) -> gw.UpdateCaseResponse:
        return await self._call("UpdateCase", gw.UpdateCaseRequest(update=update),
                                gw.UpdateCaseResponse)

    async def cancel(self, case_id: str, reason: str) -> pb.Case:
        return (await self._call("CancelCase", gw.CancelCaseRequest(case_id=case_id,
                                                                   reason=reason),
                                 gw.CancelCaseResponse)).case

    async def items(self, alliance: str = "") -> list[pb.Item]:
        return list((await self._call("ListItems", gw.ListItemsRequest(alliance=alliance),
                                      gw.ListItemsResponse)).items)

    async def rate(self, case_id: str, score: int, channel: pb.RatingChannel.ValueType,
                   comment: str = "") -> gw.RateCaseResponse:
        return await self._call("RateCase", gw.RateCaseRequest(
            case_id=case_id, score=score, channel=channel, comment=comment),
            gw.RateCaseResponse)

    async def submit_bundle(self, **fields: Any) -> gw.SubmitBundleResponse:
        return await self._call("SubmitBundle", gw.SubmitBundleRequest(**fields),
                                gw.SubmitBundleResponse)

    async def bundle(self, bundle_id: str) -> gw.Bundle:
        return (await self._call("GetBundle", gw.GetBundleRequest(bundle_id=bundle_id),
                                 gw.GetBundleResponse)).bundle

    # -- certificates (docs/certificates.md) ------------------------------------------
    async def lookup_certificate(self, **fields: Any) -> cpb.LookupCertificateResponse:
        return await self._call("LookupCertificate", cpb.LookupCertificateRequest(**fields),
                                cpb.LookupCertificateResponse)

    async def list_certificates(self, **fields: Any) -> cpb.ListCertificatesResponse:
        return await self._call("ListCertificates", cpb.ListCertificatesRequest(**fields),
                                cpb.ListCertificatesResponse)

    async def verify_certificate(self, **fields: Any) -> cpb.VerifyCertificateResponse:
        return await self._call("VerifyCertificate", cpb.VerifyCertificateRequest(**fields),
                                cpb.VerifyCertificateResponse)

    async def verify_identity(self, **fields: Any) -> cpb.VerifyIdentityResponse:
        return await self._call("VerifyIdentity", cpb.VerifyIdentityRequest(**fields),
                                cpb.VerifyIdentityResponse)

    async def certificate_uses(self, **fields: Any) -> cpb.ListCertificateUsesResponse:
        return await self._call("ListCertificateUses",
                                cpb.ListCertificateUsesRequest(**fields),
                                cpb.ListCertificateUsesResponse)

    async def _stream(self, name: str, request: Message, answer: type[M]) -> AsyncIterator[M]:
        body = request.SerializeToString()
        method = SERVICE + name
        token, _ = await self._signer.sign(aud=self.gateway_id, method=method, body=body,
                                           now=self._clock.now(), alone=True)
        call = self._stream_channel.unary_stream(method, response_deserializer=answer.FromString
                                                 )(body, metadata=((HEADER, token),))
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as exc:
            raise CallError(exc.code(), f"{self.gateway_id}: {exc.details()}") from None
        finally:
            call.cancel()

    async def watch(self, case_id: str) -> AsyncIterator[pb.Case]:
        async for answer in self._stream("WatchCase", gw.WatchCaseRequest(case_id=case_id),
                                         gw.WatchCaseResponse):
            yield answer.case

    async def subscribe(self, after: int = 0, kinds: Sequence[pb.EventKind.ValueType] = ()
                        ) -> AsyncIterator[pb.CaseEvent]:
        """审管联动 feed (supervisors only): events after the cursor, then live."""
        async for answer in self._stream("Subscribe", gw.SubscribeRequest(
                after=after, kinds=kinds), gw.SubscribeResponse):
            yield answer.event
