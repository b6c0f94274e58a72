"""grpc.aio servicer: thin glue from signed wire bytes to the engine.

Handlers take the raw request bytes (no deserializer) so the signature is verified over
exactly what arrived, then parse once; responses are serialized once, signed, and sent
as those bytes. GatewayErrors become statuses with google.rpc details here and only here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from gateway.audit import PENDING_AUDIT, AuditEntry, PendingAudit
from gateway.batchsign import BatchSigner
from gateway.engine import Engine
from gateway.errors import (
    GatewayError,
    InvalidArgument,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from gateway.limits import CallerPolicy, Limiter, address_of
from gateway.pb.tongban.v1 import gateway_pb2 as gw
from gateway.signing import HEADER, Claims, Verifier, body_digest
from gateway.supervision import subscribe
from gateway.types import Clock

log = logging.getLogger("tongban.server")
SERVICE = "tongban.v1.Gateway"
# (caller, request, digest): digest is the request body's verified bdg, hashed once
Handler = Callable[[str, Any, str], Awaitable[Message]]


def _case_id(message: Any) -> str:
    """The case a request or response is about, for the audit log."""
    if message is None:
        return ""
    for holder in (message, getattr(message, "case", None), getattr(message, "update", None)):
        case_id = getattr(holder, "case_id", "")
        if case_id:
            return str(case_id)
    return ""


def to_status(error: GatewayError, domain: str) -> status_pb2.Status:
    """google.rpc.Status with ErrorInfo (reason) and, for a field, BadRequest."""
    status = status_pb2.Status(code=error.code.value[0], message=error.details())
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=domain)
    status.details.add().Pack(info)
    if isinstance(error, ResourceExhausted):  # when the same call would be admitted
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromNanoseconds(round(error.retry_after_s * 1e9))
        status.details.add().Pack(retry)
    if error.field:
        bad = error_details_pb2.BadRequest()
        bad.field_violations.add(field=error.field, description=error.message)
        status.details.add().Pack(bad)
    return status


class GatewayServicer:
    def __init__(self, engine: Engine, verifier: Verifier, signer: BatchSigner,
                 clock: Clock) -> None:
        self.engine, self.verifier, self.signer, self.clock = engine, verifier, signer, clock
        self.self_id = engine.config.self_id
        config = engine.config
        self._batch_to = frozenset(  # callers that verify batch tokens
            p.id for p in (*config.partners.values(), *config.gateways.values(),
                           *config.supervisors.values()) if p.batch_signatures)
        limits = config.limits
        self.limits = Limiter(
            default=CallerPolicy(**vars(limits.callers)),
            overrides={k: CallerPolicy(**vars(v)) for k, v in limits.caller_overrides.items()},
            failures_per_second=limits.auth_failures_per_second,
            failures_burst=limits.auth_failures_burst, clock=clock)

    async def _answer(self, claims: Claims, method: str, out: bytes) -> str:
        """The response signature; shared with the other answers of this loop turn when
        the caller verifies batch tokens."""
        token, _ = await self.signer.sign(aud=claims.iss, method=method, body=out,
                                          now=self.clock.now(), request=claims,
                                          alone=claims.iss not in self._batch_to)
        return token

    def generic_handler(self) -> grpc.GenericRpcHandler:
        unary: dict[str, tuple[type[Message], Handler]] = {
            "SubmitCase": (gw.SubmitCaseRequest, self._submit),
            "ForwardCase": (gw.ForwardCaseRequest, self._forward),
            "GetCase": (gw.GetCaseRequest, self._get),
            "UpdateCase": (gw.UpdateCaseRequest, self._update),
            "CancelCase": (gw.CancelCaseRequest, self._cancel),
            "ListItems": (gw.ListItemsRequest, self._items),
            "RateCase": (gw.RateCaseRequest, self._rate),
            "SubmitBundle": (gw.SubmitBundleRequest, self._submit_bundle),
            "GetBundle": (gw.GetBundleRequest, self._get_bundle),
        }
        handlers: dict[str, grpc.RpcMethodHandler] = {
            name: grpc.unary_unary_rpc_method_handler(self._unary(name, cls, fn))
            for name, (cls, fn) in unary.items()
        }
        handlers["WatchCase"] = grpc.unary_stream_rpc_method_handler(
            self._watch, response_serializer=lambda m: m.SerializeToString())
        handlers["Subscribe"] = grpc.unary_stream_rpc_method_handler(
            self._subscribe, response_serializer=lambda m: m.SerializeToString())
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    def _verify(self, context: grpc.aio.ServicerContext[Any, Any], method: str,
                body: bytes) -> Claims:
        token = next((str(v) for k, v in context.invocation_metadata() or () if k == HEADER),
                     None)
        return self.verifier.verify_request(token, method=method, body=body,
                                            now=self.clock.now())

    def _admit(self, context: grpc.aio.ServicerContext[Any, Any], method: str,
               body: bytes, *, stream: bool = False) -> Claims:
        """_verify behind the limits (gateway/limits.py): an address that failed
        authentication too often is refused before any signature check; an authenticated
        caller over its rate or caps is refused before any work. The caller's slot is
        given back when the call ends, however it ends."""
        address = address_of(context.peer() or "")
        self.limits.check_address(address)
        try:
            claims = self._verify(context, method, body)
        except Unauthenticated:
            self.limits.failed(address)
            raise
        slot = self.limits.admit(claims.iss, stream=stream)
        context.add_done_callback(lambda _: slot.release())
        return claims

    @staticmethod
    def _parse(cls: type[Message], body: bytes) -> Any:
        try:
            return cls.FromString(body)
        except DecodeError as exc:
            raise InvalidArgument(f"not a valid {cls.DESCRIPTOR.full_name}: {exc}") from None

    async def _abort(self, context: grpc.aio.ServicerContext[Any, Any], exc: Exception,
                     method: str) -> None:
        if not isinstance(exc, GatewayError):
            log.exception("bug while serving %s", method, exc_info=exc)
            exc = GatewayError("internal error (logged at the gateway)")
        await context.abort_with_status(rpc_status.to_status(to_status(exc, self.self_id)))

    async def _refuse(self, context: grpc.aio.ServicerContext[Any, Any], exc: Exception,
                      method: str, claims: Claims | None, body: bytes, case_id: str) -> None:
        """Audit a refused call (best effort: the refusal goes out regardless), then abort."""
        error = exc if isinstance(exc, GatewayError) else GatewayError("internal")
        with contextlib.suppress(GatewayError):
            await self._audit(method, claims, body, case_id, error.code.name, error.details())
        await self._abort(context, exc, method)

    def _unary(self, name: str, cls: type[Message],
               fn: Handler) -> Callable[[bytes, grpc.aio.ServicerContext[Any, Any]],
                                        Awaitable[bytes]]:
        method = f"/{SERVICE}/{name}"

        async def handle(body: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            claims: Claims | None = None
            request: Any = None
            try:
                claims = self._admit(context, method, body)
                request = self._parse(cls, body)
                pending = PendingAudit(self._entry(method, claims, body, "", "OK"))
                token = PENDING_AUDIT.set(pending)  # written with the call's own change
                try:
                    response = await fn(claims.iss, request, claims.bdg)
                finally:
                    PENDING_AUDIT.reset(token)
                out = response.SerializeToString()
                answer = await self._answer(claims, method, out)
                if pending.seq is None:  # a read or a duplicate: audited on its own
                    await self._audit(method, claims, body, _case_id(response), "OK")
                context.set_trailing_metadata(((HEADER, answer),))
                return out
            except Exception as exc:
                await self._refuse(context, exc, method, claims, body, _case_id(request))
                raise  # abort raises; this line is never reached

        return handle

    def _entry(self, method: str, claims: Claims | None, body: bytes, case_id: str,
               outcome: str, detail: str = "") -> AuditEntry:
        return AuditEntry(at=self.clock.now(), caller=claims.iss if claims else "",
                          method=method, case_id=case_id,
                          digest=claims.bdg if claims else body_digest(body),
                          kid=claims.kid if claims else "", jti=claims.jti if claims else "",
                          outcome=outcome, detail=detail)

    async def _audit(self, method: str, claims: Claims | None, body: bytes, case_id: str,
                     outcome: str, detail: str = "") -> None:
        """Every exchange, refused ones too, goes into the hash chain before the answer."""
        try:
            await self.engine.store.append_audit(
                self._entry(method, claims, body, case_id, outcome, detail))
        except GatewayError as exc:  # store closing: the call fails rather than go unaudited
            raise Unavailable(f"audit log unavailable: {exc.message}") from None

    async def _submit(self, caller: str, req: gw.SubmitCaseRequest, digest: str) -> Message:
        return await self.engine.submit(caller, req, digest)

    async def _forward(self, caller: str, req: gw.ForwardCaseRequest, digest: str) -> Message:
        return await self.engine.forward(caller, req)

    async def _get(self, caller: str, req: gw.GetCaseRequest, digest: str) -> Message:
        return gw.GetCaseResponse(case=await self.engine.get(caller, req.case_id))

    async def _update(self, caller: str, req: gw.UpdateCaseRequest, digest: str) -> Message:
        return await self.engine.update(caller, req.update)

    async def _cancel(self, caller: str, req: gw.CancelCaseRequest, digest: str) -> Message:
        return await self.engine.cancel(caller, req)

    async def _items(self, caller: str, req: gw.ListItemsRequest, digest: str) -> Message:
        return self.engine.list_items(req.alliance)

    async def _rate(self, caller: str, req: gw.RateCaseRequest, digest: str) -> Message:
        return await self.engine.rate(caller, req)

    async def _submit_bundle(self, caller: str, req: gw.SubmitBundleRequest,
                             digest: str) -> Message:
        return await self.engine.submit_bundle(caller, req, digest)

    async def _get_bundle(self, caller: str, req: gw.GetBundleRequest, digest: str) -> Message:
        return gw.GetBundleResponse(bundle=await self.engine.bundle(caller, req.bundle_id))

    async def _subscribe(self, body: bytes,
                         context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Message]:
        """审管联动: a supervisor's event feed; audited when it opens."""
        method = f"/{SERVICE}/Subscribe"
        claims: Claims | None = None
        try:
            claims = self._admit(context, method, body, stream=True)
            req = self._parse(gw.SubscribeRequest, body)
            events = subscribe(self.engine, claims.iss, req)  # refuses before streaming
            await self._audit(method, claims, body, "", "OK", f"after={req.after}")
            async for event in events:
                yield gw.SubscribeResponse(event=event)
        except Exception as exc:
            await self._refuse(context, exc, method, claims, body, "")

    async def _watch(self, body: bytes,
                     context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Message]:
        """A case's changes as they happen; audited when it opens (the first read decides
        whether the caller may see the case at all), refusals too."""
        method = f"/{SERVICE}/WatchCase"
        claims: Claims | None = None
        case_id = ""
        try:
            claims = self._admit(context, method, body, stream=True)
            req = self._parse(gw.WatchCaseRequest, body)
            case_id = req.case_id
            async with contextlib.aclosing(self.engine.watch(claims.iss, case_id)) as cases:
                first = await anext(cases)  # NOT_FOUND for a case the caller may not see
                await self._audit(method, claims, body, case_id, "OK")
                yield gw.WatchCaseResponse(case=first)
                async for case in cases:
                    yield gw.WatchCaseResponse(case=case)
        except Exception as exc:
            await self._refuse(context, exc, method, claims, body, case_id)
