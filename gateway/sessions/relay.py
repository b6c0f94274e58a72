"""The relay between the two sides' gateways of a 屏对屏 session (docs/sessions.md §6):
one gRPC bidirectional stream per session, opened by the origin side's gateway and signed
at open over its first frame's bytes, as every other call is signed. This module only
moves frames: the hub (gateway/sessions/hub.py) decides what they mean."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import grpc

from gateway.batchsign import BatchSigner
from gateway.client import CallError
from gateway.config import Gateway
from gateway.errors import GatewayError, PermissionDenied
from gateway.logs import sanitize
from gateway.pb.tongban.v1 import gateway_pb2 as gw
from gateway.pb.tongban.v1 import session_pb2 as spb
from gateway.server import Edge
from gateway.signing import HEADER
from gateway.tls import open_channel
from gateway.types import Clock

log = logging.getLogger("tongban.sessions.relay")
RELAY: Final = "/tongban.v1.Gateway/RelaySession"
HEARTBEAT_S: Final = 5.0
SILENCE_S: Final = 15.0  # no frame for this long: the stream is dropped (§6)


class Pipe:
    """One open stream seen from either end: frames out through a queue, frames in
    handed to the hub. ``close`` ends the outgoing side; ``done`` is set when the
    stream is gone, however it went."""

    def __init__(self) -> None:
        self._out: asyncio.Queue[spb.RelayFrame | None] = asyncio.Queue()
        self.done = asyncio.Event()
        self.last_heard = 0.0
        self.synced = False  # the opener has resent what the other side lacked

    def send(self, frame: spb.RelayFrame) -> None:
        if not self.done.is_set():
            self._out.put_nowait(frame)

    def close(self) -> None:
        self._out.put_nowait(None)

    async def frames(self) -> AsyncIterator[spb.RelayFrame]:
        while (frame := await self._out.get()) is not None:
            yield frame


OnFrame = Callable[[spb.RelayFrame], Awaitable[None]]


class RelayClient:
    """The origin side's end: opens the stream to the remote side's gateway."""

    def __init__(self, peer: Gateway, signer: BatchSigner, clock: Clock) -> None:
        self.peer, self._signer, self._clock = peer, signer, clock
        self._channel = open_channel(peer.grpc, peer.tls)

    async def close(self) -> None:
        await self._channel.close()

    async def run(self, first: spb.RelayFrame, pipe: Pipe, on_frame: OnFrame) -> None:
        """Open the stream with ``first`` (an ``open`` frame), send what the pipe gets and
        hand every frame that arrives to on_frame, until either side ends it or it falls
        silent. Raises CallError when the peer refuses or the transport fails."""
        body = gw.RelaySessionRequest(frame=first).SerializeToString()
        token, _ = await self._signer.sign(aud=self.peer.id, method=RELAY, body=body,
                                           now=self._clock.now(), alone=True)

        async def requests() -> AsyncIterator[bytes]:
            yield body
            async for frame in pipe.frames():
                yield gw.RelaySessionRequest(frame=frame).SerializeToString()

        call = self._channel.stream_stream(
            RELAY, response_deserializer=gw.RelaySessionResponse.FromString,
        )(requests(), metadata=((HEADER, token),))
        try:
            await _pump(call, pipe, on_frame, self._clock)
        except grpc.aio.AioRpcError as exc:
            raise CallError(exc.code(), f"{self.peer.id}: {sanitize(exc.details() or '')}"
                            ) from None
        finally:
            call.cancel()
            pipe.done.set()


async def _pump(responses: AsyncIterator[Any], pipe: Pipe, on_frame: OnFrame,
                clock: Clock) -> None:
    """Read frames until the stream ends or is silent for SILENCE_S; heartbeats out."""
    pipe.last_heard = clock.now()

    async def beat() -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            pipe.send(spb.RelayFrame(heartbeat=spb.RelayHeartbeat(at=clock.now())))

    heart = asyncio.create_task(beat())
    incoming = aiter(responses)
    try:
        while True:
            try:  # a peer that says nothing, heartbeats included, is gone (§6)
                async with asyncio.timeout(SILENCE_S):
                    message = await anext(incoming)
            except StopAsyncIteration:
                break
            pipe.last_heard = clock.now()
            frame = message.frame if not isinstance(message, spb.RelayFrame) else message
            if frame.WhichOneof("frame") != "heartbeat":
                await on_frame(frame)
    finally:
        heart.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await heart


Accept = Callable[[str, spb.RelayOpen, Pipe], Awaitable[OnFrame]]


class RelayServicer:
    """The remote side's end: RelaySession on the Gateway service, through the shared
    wrapper's checks (the caller's token over the first frame's bytes, its limits, the
    audit log)."""

    def __init__(self, edge: Edge, accept: Accept, clock: Clock,
                 linked: Callable[[str], bool]) -> None:
        self.edge, self._accept, self._clock, self._linked = edge, accept, clock, linked

    def handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        return {"RelaySession": grpc.stream_stream_rpc_method_handler(
            self._relay, response_serializer=lambda m: m.SerializeToString())}

    async def _relay(self, requests: AsyncIterator[bytes],
                     context: grpc.aio.ServicerContext[Any, Any]
                     ) -> AsyncIterator[gw.RelaySessionResponse]:
        claims = None
        pipe = Pipe()
        reader: asyncio.Task[None] | None = None
        try:
            first = await anext(requests)
            claims = self.edge.admit(context, RELAY, first, stream=True).claims
            if not self._linked(claims.iss):
                raise PermissionDenied("only a linked gateway relays sessions")
            frame = self.edge.parse(gw.RelaySessionRequest, first).frame
            if frame.WhichOneof("frame") != "open":
                raise PermissionDenied("a relay opens with an open frame", field="frame.open")
            on_frame = await self._accept(claims.iss, frame.open, pipe)
            await self.edge.audit(RELAY, claims, frame.open.case_id, "OK",
                                  f"session {frame.open.session_id[:26]}")

            async def incoming() -> AsyncIterator[spb.RelayFrame]:
                async for raw in requests:
                    yield gw.RelaySessionRequest.FromString(raw).frame

            reader = asyncio.create_task(self._read(incoming(), pipe, on_frame))
            async for out in pipe.frames():
                yield gw.RelaySessionResponse(frame=out)
                if pipe.done.is_set():
                    break
        except Exception as exc:
            if isinstance(exc, GatewayError) or claims is None:
                await self.edge.refuse(context, exc, RELAY, claims, "")
            raise
        finally:
            pipe.done.set()
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader

    async def _read(self, frames: AsyncIterator[spb.RelayFrame], pipe: Pipe,
                    on_frame: OnFrame) -> None:
        try:
            await _pump(frames, pipe, on_frame, self._clock)
        except Exception as exc:  # the stream is gone or silent: the opener resumes
            log.info("relay stream ended: %s", sanitize(str(exc))[:120])
        finally:
            pipe.done.set()
            pipe.close()
