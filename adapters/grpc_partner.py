"""A regional platform that implements tongban.v1.PartnerPlatform over gRPC.

Settings: ``address = "host:port"`` and optionally ``timeout_s``; the partner's ``tls``
table (its CA and server name) makes the channel TLS, presenting this gateway's
certificate ([self.tls]) for mutual TLS. The stored
UpdateCaseRequest bytes are sent as ReceiveUpdateRequest unchanged: both messages carry
the CaseUpdate as field 1, so the wire bytes are identical.

It is a CertificateSource too: FetchCertificates, CertificateStatus and AnswerClaim are
signed calls like the others, answered synchronously; a refusal comes back with the
platform's status (gateway.client.refusal_of), anything else as UNAVAILABLE.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.client import CallError, Receipt, SignedChannel, refusal_of
from gateway.config import Partner, Party
from gateway.errors import ConfigError
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import partner_pb2 as pp
from gateway.types import AdapterContext

SERVICE = "/tongban.v1.PartnerPlatform/"


class GrpcPartnerAdapter:
    def __init__(self, party: Party, ctx: AdapterContext) -> None:
        assert isinstance(party, Partner)
        address = party.settings.get("address")
        if not isinstance(address, str) or ":" not in address:
            raise ConfigError(f"partners {party.id}: settings.address must be host:port")
        self._channel = SignedChannel(address, audience=party.id, signer=ctx.batch_signer,
                                      batch=party.batch_signatures, verifier=ctx.verifier,
                                      clock=ctx.clock,
                                      timeout_s=float(party.settings.get("timeout_s", 10.0)),
                                      tls=party.tls)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        await self._channel.close()

    async def deliver_case(self, payload: bytes) -> Receipt:
        return await self._channel.call_receipt(SERVICE + "ReceiveCase", payload)

    async def deliver_update(self, payload: bytes) -> Receipt:
        return await self._channel.call_receipt(SERVICE + "ReceiveUpdate", payload)

    async def list_items(self) -> Sequence[pb.Item]:
        raw = await self._channel.call(SERVICE + "ListPlatformItems",
                                       pp.ListPlatformItemsRequest().SerializeToString())
        return list(pp.ListPlatformItemsResponse.FromString(raw).items)

    # -- CertificateSource ------------------------------------------------------------------
    async def _certificate_call(self, method: str, request: bytes) -> bytes:
        try:
            return await self._channel.call(SERVICE + method, request)
        except CallError as exc:
            raise refusal_of(exc) from None

    async def fetch_certificates(self, request: bytes) -> bytes:
        return await self._certificate_call("FetchCertificates", request)

    async def certificate_status(self, request: bytes) -> bytes:
        return await self._certificate_call("CertificateStatus", request)

    async def answer_claim(self, request: bytes) -> bytes:
        return await self._certificate_call("AnswerClaim", request)
