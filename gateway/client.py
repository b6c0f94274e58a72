"""Signed unary gRPC calls to partners and peers, with signed responses checked.

Requests go out as the bytes the caller hands in (identity serializer), so what the
outbox stored is what is signed and sent.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from gateway.batchsign import BatchSigner
from gateway.errors import (
    AlreadyExists,
    FailedPrecondition,
    GatewayError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from gateway.identifiers import mask_text
from gateway.logs import sanitize
from gateway.signing import HEADER
from gateway.tls import ChannelTls, open_channel
from gateway.types import Clock
from gateway.verifier import Verifier

# Statuses that say the far side as a whole cannot take calls now: these, and only these,
# count towards its circuit breaker (gateway/outbox.py).
UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                         grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED})
# Worth another try later. UNAUTHENTICATED is among them: a platform refuses our
# signature when its clock is off or its copy of our keys is stale during a rotation,
# both of which mend themselves; the outbox retries it with backoff and raises an alert.
RETRYABLE = UNREACHABLE | {grpc.StatusCode.ABORTED, grpc.StatusCode.INTERNAL,
                           grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAUTHENTICATED}


@dataclass(frozen=True, slots=True)
class Receipt:
    """A party's signed answer to a call: the exact response bytes and its response token
    (rti/rdg bind it to the request). A delivery's receipt is kept as evidence."""

    response: bytes
    token: str


class CallError(GatewayError):
    """A call failed; `status` is what the far side (or the transport) said.

    ``retryable``: another try may succeed. ``unreachable``: the far side as a whole is
    down or overloaded (not just this one message). ``alert``: signatures do not check
    out between us and the far side (its refusal of ours, or our refusal of its answer),
    which an operator must hear about even while retries continue.
    """

    def __init__(self, status: grpc.StatusCode, message: str, *,
                 bad_answer: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = status in RETRYABLE or bad_answer
        self.unreachable = status in UNREACHABLE and not bad_answer
        self.alert = bad_answer or status is grpc.StatusCode.UNAUTHENTICATED


class SignedChannel:
    """One channel to one party; every call signed by its signer for audience `audience`."""

    def __init__(self, target: str, *, audience: str, signer: BatchSigner, batch: bool,
                 verifier: Verifier, clock: Clock, timeout_s: float = 10.0,
                 tls: ChannelTls | None = None) -> None:
        """Calls are signed by signer as its issuer; with batch, a request shares its
        signature with the others of the loop turn (only for an audience that verifies
        batch tokens). With tls the channel verifies the far side's certificate and
        presents tls's client certificate, if any."""
        self.target, self.audience = target, audience
        self._signer, self._batch = signer, batch
        self._verifier, self._clock = verifier, clock
        self._timeout = timeout_s
        # the outbox's breaker paces retries; the channel must not add minutes of its own
        # reconnect backoff (gRPC's default grows to 120 s) once the far side is back
        self._channel = open_channel(target, tls, options=[
            ("grpc.use_local_subchannel_pool", 1),  # a connection of its own per channel
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ])
        self._methods: dict[str, grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = {}

    async def close(self) -> None:
        await self._channel.close()

    async def call(self, method: str, body: bytes) -> bytes:
        return (await self.call_receipt(method, body)).response

    async def call_receipt(self, method: str, body: bytes) -> Receipt:
        """The answer and the far side's verified signature over it: its receipt."""
        token, claims = await self._signer.sign(aud=self.audience, method=method, body=body,
                                                now=self._clock.now(), alone=not self._batch)
        stub = self._methods.get(method)
        if stub is None:  # a handful of methods per channel: made once, not per call
            stub = self._methods[method] = self._channel.unary_unary(method)
        call = stub(body, metadata=((HEADER, token),), timeout=self._timeout)
        try:
            response: bytes = await call
            trailing = await call.trailing_metadata()
        except grpc.aio.AioRpcError as exc:
            # the far side's text: escaped and cut (it reaches logs and audit details)
            # and any id number in it masked: it may be passed on to a caller (refusal_of)
            raise CallError(exc.code(), f"{self.audience}: "
                            f"{mask_text(sanitize(exc.details() or ''))}") from None
        answer = next((str(v) for k, v in (trailing or ()) if k == HEADER), None)
        try:
            self._verifier.verify_response(answer, peer=self.audience, method=method,
                                           body=response, request=claims, now=self._clock.now())
        except Unauthenticated as exc:
            # the far side may have applied it; retrying is safe, the receiver dedups
            raise CallError(grpc.StatusCode.UNAVAILABLE,
                            f"{self.audience} answered with a bad signature: {exc.message}",
                            bad_answer=True) from None
        assert answer is not None  # verified
        return Receipt(response=response, token=answer)


# A far side's refusal that says something about the request (the holder, the purpose,
# the certificate): passed on with its own status. Anything else (it is down, it refused
# our signature, it answered nonsense) is the far side's trouble: UNAVAILABLE.
_PASSED_ON: dict[grpc.StatusCode, type[GatewayError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
}


def refusal_of(exc: CallError) -> GatewayError:
    """The status a synchronous call's caller gets when our call to the next hop failed
    (httpcore's map_exceptions, at the boundary): never INTERNAL."""
    kind = _PASSED_ON.get(exc.status)  # a bad answer's status is UNAVAILABLE
    if exc.status is grpc.StatusCode.UNAUTHENTICATED:
        return Unavailable(f"{exc.message} (it refused this gateway's signature)")
    if kind is None:
        return Unavailable(exc.message)
    return kind(exc.message)
