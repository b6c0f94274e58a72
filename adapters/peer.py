"""Another tongban gateway (federation): cases go by ForwardCase, updates by UpdateCase,
certificate calls by ForwardCertificateCall (a CertificateRelay)."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.message import DecodeError

from gateway.client import CallError, Receipt, SignedChannel, refusal_of
from gateway.config import Gateway, Party
from gateway.errors import Unavailable
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import certificate_pb2 as cp
from gateway.pb.tongban.v1 import gateway_pb2 as gw
from gateway.types import AdapterContext


class PeerAdapter:
    def __init__(self, party: Party, ctx: AdapterContext) -> None:
        assert isinstance(party, Gateway)
        self.peer = party
        self._channel = SignedChannel(party.grpc, audience=party.id, signer=ctx.batch_signer,
                                      batch=party.batch_signatures, verifier=ctx.verifier,
                                      clock=ctx.clock, tls=party.tls)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        await self._channel.close()

    async def deliver_case(self, payload: bytes) -> Receipt:
        return await self._channel.call_receipt("/tongban.v1.Gateway/ForwardCase", payload)

    async def deliver_update(self, payload: bytes) -> Receipt:
        return await self._channel.call_receipt("/tongban.v1.Gateway/UpdateCase", payload)

    async def list_items(self) -> Sequence[pb.Item]:
        raw = await self._channel.call("/tongban.v1.Gateway/ListItems",
                                       gw.ListItemsRequest().SerializeToString())
        return list(gw.ListItemsResponse.FromString(raw).items)

    async def forward_certificate_call(self, request: bytes) -> bytes:
        """A ForwardCertificateCallRequest's answer: the bytes of the consumer's method's
        response, as the next gateway sent them (signed, so checked by the channel).
        Its refusal keeps its status (refusal_of); nonsense is UNAVAILABLE."""
        try:
            raw = await self._channel.call("/tongban.v1.Gateway/ForwardCertificateCall",
                                           request)
        except CallError as exc:
            raise refusal_of(exc) from None
        try:
            return cp.ForwardCertificateCallResponse.FromString(raw).response
        except DecodeError:
            raise Unavailable(f"{self.peer.id} answered ForwardCertificateCall with "
                              "something that is not its response") from None
