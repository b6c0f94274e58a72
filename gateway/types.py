"""Shared aliases and the narrow seams: clock and partner adapter."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from gateway.batchsign import BatchSigner
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.signing import SigningKey
from gateway.verifier import KeyLookup, Verifier

if TYPE_CHECKING:
    from gateway.client import Receipt
    from gateway.evidence import Statements


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (wall time: it goes into signatures and timelines)."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class PartnerAdapter(Protocol):
    """How a gateway reaches a partner platform or a peer gateway.

    Payloads are the exact request bytes stored in the outbox: adapters send them as
    they are (no re-serialisation). Raise Unavailable for a retryable failure.
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def deliver_case(self, payload: bytes) -> Receipt | None:
        """Hand over a case; the receiver dedups by case_id. Returns once it is durable
        there, with the receiver's signed answer when it gives one (kept as evidence)."""
        ...

    async def deliver_update(self, payload: bytes) -> Receipt | None:
        """Hand over a CaseUpdate; the receiver dedups by update_id."""
        ...

    async def list_items(self) -> Sequence[pb.Item]: ...


@runtime_checkable
class CertificateSource(Protocol):
    """How a gateway reaches an issuing platform's certificates (PartnerPlatform
    FetchCertificates, CertificateStatus, AnswerClaim) or a peer gateway
    (ForwardCertificateCall). Requests and answers are serialized messages, passed on
    as they are. Failures are GatewayErrors with the far side's status (NotFound,
    PermissionDenied, ...; Unavailable when it cannot be reached): an adapter maps them
    at its boundary, never to INTERNAL. Synchronous: nothing is queued.
    """

    async def fetch_certificates(self, request: bytes) -> bytes: ...

    async def certificate_status(self, request: bytes) -> bytes: ...

    async def answer_claim(self, request: bytes) -> bytes: ...


@runtime_checkable
class CertificateRelay(Protocol):
    """A peer gateway, for certificate calls: the ForwardCertificateCall request bytes
    in, its ``response`` bytes out."""

    async def forward_certificate_call(self, request: bytes) -> bytes: ...


# An in-process platform reports a change as its partner would over UpdateCase: with its
# own signed request (docs/signing.md §8), which the gateway checks and passes on.
Reporter = Callable[[str, pb.Statement], Awaitable[object]]
# ... and asks its gateway a certificate call (VerifyCertificate before it accepts a case
# citing certificates) with its own signed request: (partner, statement) -> the answer's
# serialized response, as the same call over the wire would answer
CertificateAsker = Callable[[str, pb.Statement], Awaitable[bytes]]


@dataclass(frozen=True, kw_only=True)
class AdapterContext:
    """What an adapter factory may use: identities, keys, clock, where to keep data."""

    gateway_id: str
    signing_key: SigningKey
    verifier: Verifier  # checks response signatures of the parties we call
    clock: Clock
    data_dir: Path
    report: Reporter
    batch_signer: BatchSigner  # for parties with batch_signatures (docs/signing.md §7)
    config_dir: Path  # where partners.toml is: adapter settings name files relative to it
    # checks a platform's signed statement (a case's origin, an update's author) against
    # the federation's keys; a target platform checks what it is handed with it
    statements: Statements
    # every party's public keys (partners.toml), for tokens signed by anyone in the
    # federation: a holder's authorization, a document, a status statement
    keys_for: KeyLookup | None = None
    certificates: CertificateAsker | None = None
