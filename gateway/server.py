"""grpc.aio servicer: thin glue from signed wire bytes to the engine.

Handlers take the raw request bytes (no deserializer) so the signature is verified over
exactly what arrived, then parse once; responses are serialized once, signed, and sent
as those bytes. GatewayErrors become statuses with google.rpc details here and only here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from gateway.audit import AuditEntry, PendingAudit
from gateway.batchsign import BatchSigner
from gateway.config import Config, Gateway
from gateway.engine import Engine, meaning_digest
from gateway.errors import (
    GatewayError,
    InvalidArgument,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    quote,
)
from gateway.faults import LogThrottle
from gateway.ids import CASE_ID
from gateway.limits import Limiter, address_of
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import gateway_pb2 as gw
from gateway.signing import HEADER, Claims
from gateway.supervision import subscribe
from gateway.types import Clock
from gateway.verifier import Verifier

log = logging.getLogger("tongban.server")
SERVICE = "tongban.v1.Gateway"
# bytes of a request the gateway does not understand (unknown fields, padding): a newer
# client's few new fields pass, a megabyte of baggage does not (issue #12)
MAX_UNKNOWN_BYTES = 4096
UNAUTHENTICATED_LOG_INTERVAL_S = 10.0


@dataclass(frozen=True, slots=True)
class Call:
    """A verified call: its token's claims, and the exact bytes and token it came with."""

    claims: Claims
    body: bytes
    token: str
    # the call's audit entry: a handler whose change the store writes with it (a case's
    # ContextVar path, or CertificateUseStore.record_uses given it explicitly) marks seq
    audit: PendingAudit | None = None

    @property
    def caller(self) -> str:
        return self.claims.iss

    def statement(self) -> pb.Statement:
        """The call as its author's statement, to travel with the case (DESIGN §4a)."""
        return pb.Statement(request=self.body, token=self.token)


Handler = Callable[[Call, Any], Awaitable[Message | bytes]]  # bytes: already serialized


def _case_id(message: Any) -> str:
    """The case a request or response is about, for the audit log (a well-formed id only:
    a caller's huge or odd value never reaches the audit row)."""
    if message is None:
        return ""
    for holder in (message, getattr(message, "case", None), getattr(message, "update", None)):
        case_id = getattr(holder, "case_id", "")
        if case_id:
            return str(case_id) if CASE_ID.fullmatch(case_id) else quote(case_id, 32)
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


class Audit(Protocol):
    async def append_audit(self, entry: AuditEntry) -> int: ...


class Edge:
    """The one wrapper every servicer of the Gateway service shares (grpclib's Server
    merges each service's method table the same way): verify the caller's token over the
    bytes that arrived, hold it to its limits, parse once, audit, sign the answer, and
    turn a GatewayError into its status. Cases (GatewayServicer) and certificates
    (gateway/certificates/servicer.py) only say what a method does."""

    def __init__(self, config: Config, store: Audit, verifier: Verifier, signer: BatchSigner,
                 clock: Clock) -> None:
        self.store, self.verifier, self.signer, self.clock = store, verifier, signer, clock
        self.self_id = config.self_id
        self._batch_to = frozenset(  # callers that verify batch tokens
            p.id for p in (*config.partners.values(), *config.gateways.values(),
                           *config.supervisors.values()) if p.batch_signatures)
        self.unauthenticated = 0  # calls refused before the caller was known (/metrics)
        self._refusals = LogThrottle(log, UNAUTHENTICATED_LOG_INTERVAL_S)
        limits = config.limits
        self.limits = Limiter(
            default=limits.callers, overrides=limits.caller_overrides,
            failures_per_second=limits.auth_failures_per_second,
            failures_burst=limits.auth_failures_burst, clock=clock)

    async def _answer(self, claims: Claims, method: str, out: bytes) -> str:
        """The response signature; shared with the other answers of this loop turn when
        the caller verifies batch tokens."""
        token, _ = await self.signer.sign(aud=claims.iss, method=method, body=out,
                                          now=self.clock.now(), request=claims,
                                          alone=claims.iss not in self._batch_to)
        return token

    def unary_handlers(self, table: Mapping[str, tuple[type[Message], Handler]]
                       ) -> dict[str, grpc.RpcMethodHandler]:
        return {name: grpc.unary_unary_rpc_method_handler(self._unary(name, cls, fn))
                for name, (cls, fn) in table.items()}

    def _verify(self, context: grpc.aio.ServicerContext[Any, Any], method: str,
                body: bytes) -> Call:
        token = next((str(v) for k, v in context.invocation_metadata() or () if k == HEADER),
                     None)
        claims = self.verifier.verify_request(token, method=method, body=body,
                                              now=self.clock.now())
        assert token is not None  # verified
        return Call(claims=claims, body=body, token=token)

    def admit(self, context: grpc.aio.ServicerContext[Any, Any], method: str,
               body: bytes, *, stream: bool = False) -> Call:
        """_verify behind the limits (gateway/limits.py): an address that failed
        authentication too often is refused before any signature check; an authenticated
        caller over its rate or caps is refused before any work. The caller's slot is
        given back when the call ends, however it ends."""
        address = address_of(context.peer() or "")
        self.limits.check_address(address)
        try:
            call = self._verify(context, method, body)
        except Unauthenticated:
            self.limits.failed(address)
            raise
        slot = self.limits.admit(call.caller, stream=stream)
        context.add_done_callback(lambda _: slot.release())
        return call

    @staticmethod
    def parse(cls: type[Message], body: bytes) -> Any:
        """Parse once; what the gateway does not understand is dropped (never stored or
        passed on), and more than a little of it is refused."""
        try:
            message = cls.FromString(body)
        except (DecodeError, RecursionError) as exc:
            raise InvalidArgument(f"not a valid {cls.DESCRIPTOR.full_name}: "
                                  f"{type(exc).__name__}") from None
        message.DiscardUnknownFields()
        junk = len(body) - message.ByteSize()
        if junk > MAX_UNKNOWN_BYTES:
            raise InvalidArgument(f"{junk} bytes of the request are fields this gateway does "
                                  f"not know (at most {MAX_UNKNOWN_BYTES})")
        return message

    async def _abort(self, context: grpc.aio.ServicerContext[Any, Any], exc: Exception,
                     method: str) -> None:
        if not isinstance(exc, GatewayError):
            log.exception("bug while serving %s", method, exc_info=exc)
            exc = GatewayError("internal error (logged at the gateway)")
        await context.abort_with_status(rpc_status.to_status(to_status(exc, self.self_id)))

    async def refuse(self, context: grpc.aio.ServicerContext[Any, Any], exc: Exception,
                     method: str, claims: Claims | None, case_id: str, *,
                     audited: bool = False) -> None:
        """Audit what an authenticated caller was refused (best effort: the refusal goes
        out regardless), then abort. A call refused before its caller is known writes
        nothing durable: anyone can send those, so they are counted and logged (at most
        one line per interval), never fsync'd per call (issue #12)."""
        error = exc if isinstance(exc, GatewayError) else GatewayError("internal")
        if claims is None:  # before the caller was known, or over its limits
            if not isinstance(error, ResourceExhausted):  # those are counted by the limiter
                self._unauthenticated_call(method, error)
        elif not audited:  # (a job that kept its refusal with the audit entry: done)
            with contextlib.suppress(GatewayError):
                await self.audit(method, claims, case_id, error.code.name, error.details())
        await self._abort(context, exc, method)

    def _unauthenticated_call(self, method: str, error: GatewayError) -> None:
        self.unauthenticated += 1
        self._refusals.log(logging.WARNING, "unauthenticated",
                           "refused %d call(s) before authentication so far; latest: %s %s",
                           self.unauthenticated, method, quote(error.details(), 120))

    def _unary(self, name: str, cls: type[Message],
               fn: Handler) -> Callable[[bytes, grpc.aio.ServicerContext[Any, Any]],
                                        Awaitable[bytes]]:
        method = f"/{SERVICE}/{name}"

        async def handle(body: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            claims: Claims | None = None
            request: Any = None
            pending: PendingAudit | None = None
            try:
                call = self.admit(context, method, body)
                claims = call.claims
                request = self.parse(cls, body)
                pending = PendingAudit(self._entry(method, claims, "", "OK"))
                # written with the call's own change where the handler passes it on
                call = dataclasses.replace(call, audit=pending)
                response = await fn(call, request)
                out = response if isinstance(response, bytes) else response.SerializeToString()
                answer = await self._answer(claims, method, out)
                if pending.seq is None:  # a read or a duplicate: audited on its own,
                    # with what the handler noted in its entry (a forwarded statement)
                    await self._append(dataclasses.replace(pending.entry,
                                                           case_id=_case_id(response)))
                context.set_trailing_metadata(((HEADER, answer),))
                return out
            except asyncio.CancelledError:
                # the caller gave up after its token checked out: its jti still goes into
                # the audit log, which is what refuses a replay of it after a restart
                if claims is not None and (pending is None or pending.seq is None):
                    with contextlib.suppress(GatewayError):
                        await asyncio.shield(self.audit(method, claims, _case_id(request),
                                                         "CANCELLED"))
                raise
            except Exception as exc:
                await self.refuse(context, exc, method, claims, _case_id(request),
                                  audited=pending is not None and pending.seq is not None)
                raise  # abort raises; this line is never reached

        return handle

    def _entry(self, method: str, claims: Claims, case_id: str, outcome: str,
               detail: str = "") -> AuditEntry:
        return AuditEntry(at=self.clock.now(), caller=claims.iss, method=method,
                          case_id=case_id, digest=claims.bdg, kid=claims.kid, jti=claims.jti,
                          outcome=outcome, detail=detail)

    async def audit(self, method: str, claims: Claims, case_id: str, outcome: str,
                    detail: str = "") -> None:
        """Every exchange of an authenticated caller, refused ones too, goes into the hash
        chain before the answer."""
        await self._append(self._entry(method, claims, case_id, outcome, detail))

    async def _append(self, entry: AuditEntry) -> None:
        try:
            await self.store.append_audit(entry)
        except GatewayError as exc:  # store closing: the call fails rather than go unaudited
            raise Unavailable(f"audit log unavailable: {exc.message}") from None



class GatewayServicer:
    """The case methods of the Gateway service (DESIGN §6)."""

    def __init__(self, engine: Engine, edge: Edge) -> None:
        self.engine, self.edge = engine, edge

    def handlers(self) -> dict[str, grpc.RpcMethodHandler]:
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
        handlers = self.edge.unary_handlers(unary)
        handlers["WatchCase"] = grpc.unary_stream_rpc_method_handler(
            self._watch, response_serializer=lambda m: m.SerializeToString())
        handlers["Subscribe"] = grpc.unary_stream_rpc_method_handler(
            self._subscribe, response_serializer=lambda m: m.SerializeToString())
        return handlers

    async def _submit(self, call: Call, req: gw.SubmitCaseRequest) -> Message:
        return await self.engine.submit(call.caller, req, meaning_digest(req), call.statement(),
                                        audit=call.audit)

    async def _forward(self, call: Call, req: gw.ForwardCaseRequest) -> Message:
        return await self.engine.forward(call.caller, req, audit=call.audit)

    async def _get(self, call: Call, req: gw.GetCaseRequest) -> Message:
        return gw.GetCaseResponse(case=await self.engine.get(call.caller, req.case_id))

    async def _update(self, call: Call, req: gw.UpdateCaseRequest) -> Message:
        if isinstance(self.engine.config.party(call.caller), Gateway):
            # a peer passes it on
            return await self.engine.relay(call.caller, req.update, audit=call.audit)
        return await self.engine.report(call.caller, call.statement(), call.claims, req,
                                        audit=call.audit)

    async def _cancel(self, call: Call, req: gw.CancelCaseRequest) -> Message:
        answer = await self.engine.report(call.caller, call.statement(), call.claims, req,
                                          audit=call.audit)
        return gw.CancelCaseResponse(case=answer.case)

    async def _items(self, call: Call, req: gw.ListItemsRequest) -> Message:
        return self.engine.list_items(req.alliance)

    async def _rate(self, call: Call, req: gw.RateCaseRequest) -> Message:
        answer = await self.engine.report(call.caller, call.statement(), call.claims, req,
                                          audit=call.audit)
        return gw.RateCaseResponse(case=answer.case, duplicate=answer.duplicate)

    async def _submit_bundle(self, call: Call, req: gw.SubmitBundleRequest) -> Message:
        return await self.engine.submit_bundle(call.caller, req, meaning_digest(req),
                                               call.statement(), audit=call.audit)

    async def _get_bundle(self, call: Call, req: gw.GetBundleRequest) -> Message:
        return gw.GetBundleResponse(bundle=await self.engine.bundle(call.caller,
                                                                    req.bundle_id))

    async def _subscribe(self, body: bytes,
                         context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Message]:
        """审管联动: a supervisor's event feed; audited when it opens."""
        method = f"/{SERVICE}/Subscribe"
        claims: Claims | None = None
        try:
            claims = self.edge.admit(context, method, body, stream=True).claims
            req = self.edge.parse(gw.SubscribeRequest, body)
            events = subscribe(self.engine, claims.iss, req)  # refuses before streaming
            await self.edge.audit(method, claims, "", "OK", f"after={req.after}")
            async for event in events:
                yield gw.SubscribeResponse(event=event)
        except Exception as exc:
            await self.edge.refuse(context, exc, method, claims, "")

    async def _watch(self, body: bytes,
                     context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Message]:
        """A case's changes as they happen; audited when it opens (the first read decides
        whether the caller may see the case at all), refusals too."""
        method = f"/{SERVICE}/WatchCase"
        claims: Claims | None = None
        case_id = ""
        try:
            claims = self.edge.admit(context, method, body, stream=True).claims
            req = self.edge.parse(gw.WatchCaseRequest, body)
            case_id = _case_id(req)
            async with contextlib.aclosing(self.engine.watch(claims.iss, req.case_id)) as cases:
                first = await anext(cases)  # NOT_FOUND for a case the caller may not see
                await self.edge.audit(method, claims, case_id, "OK")
                yield gw.WatchCaseResponse(case=first)
                async for case in cases:
                    yield gw.WatchCaseResponse(case=case)
        except Exception as exc:
            await self.edge.refuse(context, exc, method, claims, case_id)


def generic_handler(*tables: Mapping[str, grpc.RpcMethodHandler]) -> grpc.GenericRpcHandler:
    """One Gateway service from the method tables of its servicers (no name twice)."""
    merged: dict[str, grpc.RpcMethodHandler] = {}
    for table in tables:
        twice = merged.keys() & table.keys()
        if twice:
            raise ValueError(f"methods served twice: {sorted(twice)}")
        merged.update(table)
    return grpc.method_handlers_generic_handler(SERVICE, merged)
