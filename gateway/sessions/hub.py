"""The live 屏对屏 sessions of one gateway (docs/sessions.md): clerks' WebSockets in, the
relay to the other side's gateway, materials, and the transcript at close.

The hub only moves messages: what a message does is the sequencer's decision
(gateway/sessions/machine.Session, at the origin side's gateway), and the remote side's
gateway keeps a replica of what the sequencer decided. Frames between gateways go
through one Link each way (gateway/sessions/link.py), so a dropped relay resumes with
nothing lost or applied twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import WSMsgType, web

from gateway.batchsign import BatchSigner
from gateway.client import CallError
from gateway.config import Config
from gateway.errors import GatewayError, PermissionDenied, Unauthenticated, Unavailable
from gateway.limits import TokenBucket
from gateway.pb.tongban.v1 import session_pb2 as spb
from gateway.signing import SigningKey
from gateway.types import Clock
from gateway.verifier import KeyLookup

from .link import Link
from .machine import Session
from .relay import Pipe, RelayClient
from .tokens import Join, Side, verify_delegation, verify_join
from .transcript import sign_head, verify_head

log = logging.getLogger("tongban.sessions")
RTC_KINDS: Final = frozenset({"offer", "answer", "candidate", "bye"})
MAX_MESSAGE: Final = 64 * 1024  # bytes of one WebSocket message (docs/sessions.md §4)
MAX_MATERIAL: Final = 10 * 1024 * 1024
CHUNK: Final = 1024 * 1024
RATE: Final = 20.0  # messages per second per connection
BURST: Final = 40
HELLO_S: Final = 10.0
RECONNECT_S: Final = (0.2, 5.0)  # the relay's reopen backoff, first and longest


@dataclass(eq=False)
class Clerk:
    """One browser connection, joined."""

    ws: web.WebSocketResponse
    join: Join
    token: str
    bucket: TokenBucket = field(
        default_factory=lambda: TokenBucket(RATE, BURST, time.monotonic()))
    over: int = 0  # messages refused in a row

    def allow(self) -> bool:
        """RATE messages a second, BURST at once: False when the clerk sends too fast."""
        if self.bucket.take(time.monotonic()) > 0.0:
            self.over += 1
            return False
        self.over = 0
        return True

    async def send(self, message: Mapping[str, Any]) -> None:
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_str(json.dumps(message, ensure_ascii=False))


@dataclass(eq=False)
class Live:
    """One session at this gateway: the sequencer's state (origin side) or a replica of
    what it decided (remote side)."""

    id: str
    case: str
    side: str  # this gateway's side: origin or remote
    origin: str  # the origin platform
    remote: str  # the remote platform
    # the sequencer at the origin side's gateway; a mirror replaying its events at the
    # remote side's (the same form, materials, closed state and chain on both)
    session: Session
    clerks: set[Clerk] = field(default_factory=set)
    materials: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    partial: dict[str, bytearray] = field(default_factory=dict)
    out: Link[bytes] = field(default_factory=Link)  # reliable frames to the other gateway
    inn: Link[bytes] = field(default_factory=Link)  # ... and from it
    pipe: Pipe | None = None
    relay_task: asyncio.Task[None] | None = None
    peer_clerks: list[str] = field(default_factory=list)
    signatures: dict[str, str] = field(default_factory=dict)  # gateway id -> head token
    windows: dict[str, str] = field(default_factory=dict)  # side -> its window (fixed)
    proposed: set[tuple[str, str]] = field(default_factory=set)  # (clerk, cid) relayed
    writable: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def seq(self) -> int:
        return self.session.seq

    @property
    def sequencer(self) -> bool:
        return self.side == "origin"


class SessionHub:
    def __init__(self, config: Config, clock: Clock, keys_for: KeyLookup,
                 signing_key: SigningKey, signer: BatchSigner,
                 catalogue: Mapping[str, tuple[tuple[str, ...], Mapping[str, str]]],
                 on_transcript: Callable[[Live], Any] | None = None) -> None:
        """keys_for: every platform's keys (join and delegation tokens); catalogue: item
        code -> (required materials, form hints) for guidance; on_transcript: told when
        a session's head is signed by both gateways (the store keeps it)."""
        self.config, self.clock, self._keys = config, clock, keys_for
        self._key, self._signer = signing_key, signer
        self.catalogue = catalogue
        self._on_transcript = on_transcript
        self.sessions: dict[str, Live] = {}
        self._clients: dict[str, RelayClient] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def close(self) -> None:
        for live in self.sessions.values():
            if live.relay_task is not None:
                live.relay_task.cancel()
            if live.pipe is not None:
                live.pipe.close()
            for clerk in list(live.clerks):
                await clerk.ws.close(code=1001, message=b"gateway stopping")
        for task in self._tasks:
            task.cancel()
        for client in self._clients.values():
            await client.close()

    # -- joining -----------------------------------------------------------------------
    def _gateway_of(self, platform: str) -> str:
        partner = self.config.partners.get(platform)
        return partner.gateway if partner is not None else ""

    def _relayed(self, live: Live) -> bool:
        """The two sides are behind two gateways (else one gateway serves both, and
        there is no relay)."""
        return self._gateway_of(live.origin) != self._gateway_of(live.remote)

    def check_join(self, token: str) -> Join:
        """A join token of a clerk of this gateway's platforms (Unauthenticated or
        PermissionDenied otherwise)."""
        join = verify_join(token, self._keys, now=self.clock.now())
        if self._gateway_of(join.iss) != self.config.self_id:
            raise PermissionDenied(f"{join.iss} is not a platform of this gateway")
        other = self._gateway_of(join.other)
        if not other or (other != self.config.self_id and not self.config.linked(other)):
            raise PermissionDenied(f"{join.other}'s gateway is not linked with this one")
        return join

    def _live(self, join: Join) -> Live:
        origin, remote = (join.iss, join.other) if join.side == "origin" else (join.other, join.iss)
        live = self.sessions.get(join.session)
        if live is None:
            here = "origin" if self._gateway_of(origin) == self.config.self_id else "remote"
            live = Live(id=join.session, case=join.case, side=here, origin=origin,
                        remote=remote, session=Session(join.session, case=join.case,
                                                       origin=origin, remote=remote,
                                                       catalogue=self.catalogue))
            live.writable.set()
            self.sessions[join.session] = live
        if (live.case, live.origin, live.remote) != (join.case, origin, remote):
            raise PermissionDenied("this session belongs to another case or window")
        window = live.windows.setdefault(join.side, join.window)  # the first join fixes it
        if window != join.window:
            raise PermissionDenied("this session is served at another window")
        return live

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        """GET /sessions/ws: one clerk's browser (docs/sessions.md §4)."""
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, heartbeat=20.0)
        await ws.prepare(request)
        clerk: Clerk | None = None
        try:
            clerk = await self._hello(ws)
            if clerk is None:
                return ws
            live = self.sessions[clerk.join.session]
            async for msg in ws:
                if not clerk.allow():
                    await _refuse(clerk, "", "RATE", "发送过快，请稍候")
                    if clerk.over > 2 * BURST:
                        await ws.close(code=4429, message=b"too many messages")
                    continue
                if msg.type is not WSMsgType.TEXT:
                    await _refuse(clerk, "", "MALFORMED", "只接受 JSON 文本消息")
                    continue
                await self._message(live, clerk, msg.data)
        finally:
            if clerk is not None:
                gone = self.sessions.get(clerk.join.session)
                if gone is not None:
                    gone.clerks.discard(clerk)
                    await self._presence(gone)
        return ws

    async def _hello(self, ws: web.WebSocketResponse) -> Clerk | None:
        try:
            async with asyncio.timeout(HELLO_S):
                msg = await ws.receive()
        except TimeoutError:
            await ws.close(code=4400, message=b"hello expected")
            return None
        hello = _json(msg.data) if msg.type is WSMsgType.TEXT else None
        if not isinstance(hello, dict) or hello.get("type") != "hello" \
                or not isinstance(hello.get("token"), str):
            await ws.send_json({"type": "refused", "reason": "MALFORMED",
                                "message": "第一条消息应为 hello"})
            await ws.close(code=4400, message=b"hello expected")
            return None
        after = hello.get("after", 0)
        try:
            join = self.check_join(hello["token"])
            live = self._live(join)
        except Unauthenticated as exc:
            await ws.send_json({"type": "refused", "reason": "TOKEN",
                                "message": f"入会凭证无效: {exc.message}"})
            await ws.close(code=4401, message=b"bad join token")
            return None
        except PermissionDenied as exc:
            await ws.send_json({"type": "refused", "reason": "FORBIDDEN",
                                "message": f"无权加入该会话: {exc.message}"})
            await ws.close(code=4403, message=b"not this window's session")
            return None
        clerk = Clerk(ws=ws, join=join, token=hello["token"])
        live.clerks.add(clerk)
        await clerk.send(self._welcome(live, clerk))
        start = after if isinstance(after, int) and not isinstance(after, bool) \
            and 0 <= after <= live.seq else 0
        for event in live.session.events_after(start):
            await clerk.send({"type": "event", "event": event})
        self._ensure_relay(live)
        await self._presence(live)
        return clerk

    def _welcome(self, live: Live, clerk: Clerk) -> dict[str, Any]:
        welcome = live.session.welcome(Side(clerk.join.side), clerk.join.clerk)
        welcome.update(name=clerk.join.name, closed=live.session.closed,
                       peer="online" if self._other_online(live, clerk.join.side)
                       else "offline")
        return welcome

    def _other_online(self, live: Live, side: str) -> bool:
        here = any(c.join.side != side for c in live.clerks)
        return here or bool(live.peer_clerks)

    async def _presence(self, live: Live, *, relay: bool = True) -> None:
        """Tell this side's browsers who of the other side is online; with relay, tell
        the other gateway who of this side is (never in answer to its own word: two
        gateways answering each other's presence would never stop)."""
        mine = sorted({c.join.name for c in live.clerks})
        if relay and live.pipe is not None:
            live.pipe.send(spb.RelayFrame(presence=spb.RelayPresence(clerks=mine)))
        up = "up" if live.pipe is not None and not live.pipe.done.is_set() else "down"
        if up == "down":
            live.peer_clerks = []  # nobody is known to be there while the link is down
        for clerk in list(live.clerks):
            names = sorted({c.join.name for c in live.clerks if c.join.side != clerk.join.side})
            await clerk.send({"type": "presence", "side": _other(clerk.join.side),
                              "clerks": names + live.peer_clerks,
                              "link": up if self._relayed(live) else "up"})

    # -- messages from clerks ------------------------------------------------------------
    async def _message(self, live: Live, clerk: Clerk, data: str) -> None:
        message = _json(data)
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await _refuse(clerk, "", "MALFORMED", "消息格式错误")
            return
        kind = message["type"]
        if kind == "ack":
            return
        if kind == "rtc":
            await self._rtc(live, clerk.join.side, clerk.join.clerk, message)
            return
        if kind == "hello":
            await _refuse(clerk, "", "MALFORMED", "已加入会话")
            return
        await live.writable.wait()  # back-pressure: the relay has 256 frames in flight
        if live.sequencer:
            await self._apply(live, clerk.join.side, clerk.join, message, clerk)
            return
        live.proposed.add((clerk.join.clerk, str(message.get("cid", ""))))
        self._reliable(live, spb.RelayFrame(propose=spb.RelayPropose(
            join=clerk.token, message=json.dumps(message, ensure_ascii=False).encode())))

    async def _apply(self, live: Live, side: str, join: Join, message: dict[str, Any],
                     author: Clerk | None) -> None:
        outcome = live.session.receive(
            Side(side), join.clerk, join.name, message, at=self.clock.now(),
            verify_delegation=lambda token: verify_delegation(token, self._keys,
                                                              now=self.clock.now()))
        for refusal in outcome.refusals:
            if author is not None:
                await author.send(refusal)
            else:  # a remote clerk's: back over the relay, for that clerk
                self._reliable(live, spb.RelayFrame(refused=spb.RelayRefused(
                    clerk=join.clerk, message=json.dumps(refusal, ensure_ascii=False).encode())))
        for event in outcome.events:
            await self._publish(live, event)

    async def _publish(self, live: Live, event: Mapping[str, Any]) -> None:
        """A sequenced event (chained by the session already): to this side's browsers
        and, from the sequencer, to the other side's gateway as its chained bytes."""
        if live.sequencer and self._relayed(live):
            body = live.session.transcript.events[event["seq"] - 1]
            self._reliable(live, spb.RelayFrame(event=spb.RelayEvent(seq=event["seq"],
                                                                     event=body)))
        for clerk in list(live.clerks):
            await clerk.send({"type": "event", "event": event})
        if event.get("type") == "closed":
            await self._closing(live)

    async def _rtc(self, live: Live, side: str, clerk_id: str,
                   message: Mapping[str, Any]) -> None:
        """WebRTC signalling: to the other side's browsers, not sequenced (§4)."""
        data = message.get("data")
        if message.get("kind") not in RTC_KINDS \
                or len(json.dumps(data)) > 16 * 1024:
            return
        out = {"type": "rtc", "side": side, "clerk": clerk_id, "kind": message["kind"],
               "data": data}
        for clerk in list(live.clerks):
            if clerk.join.side != side:
                await clerk.send(out)
        if live.pipe is not None and live.side == side:
            live.pipe.send(spb.RelayFrame(rtc=spb.RelayRtc(
                side=side, clerk=clerk_id, message=json.dumps(out).encode())))

    # -- materials ---------------------------------------------------------------------
    def _clerk_of(self, request: web.Request) -> tuple[Live, Join]:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            raise Unauthenticated("Authorization: Bearer <join token> is required")
        join = self.check_join(auth.removeprefix("Bearer ").strip())
        live = self.sessions.get(join.session)
        if live is None or join.session != request.match_info["session"]:
            raise PermissionDenied("not a session of this clerk")
        return live, join

    async def upload(self, request: web.Request) -> web.Response:
        """POST /sessions/{session}/materials (docs/sessions.md §5)."""
        try:
            live, _ = self._clerk_of(request)
        except GatewayError as exc:
            return _http_refusal(exc)
        if request.content_length is not None and request.content_length > MAX_MATERIAL:
            return web.json_response({"reason": "TOO_LARGE", "message": "材料不能超过 10 MiB"},
                                     status=413)
        body = bytearray()
        async for chunk in request.content.iter_chunked(64 * 1024):
            body.extend(chunk)
            if len(body) > MAX_MATERIAL:
                break
        data = bytes(body)
        if len(data) > MAX_MATERIAL or not data:
            return web.json_response({"reason": "TOO_LARGE", "message": "材料为空或超过 10 MiB"},
                                     status=413)
        media_type = request.headers.get("Content-Type", "application/octet-stream")[:100]
        digest = hashlib.sha256(data).hexdigest()
        self._hold(live, digest, media_type, data)
        if self._relayed(live):
            for offset in range(0, len(data), CHUNK):
                self._reliable(live, spb.RelayFrame(blob=spb.RelayBlob(
                    sha256=digest, media_type=media_type, total=len(data), offset=offset,
                    data=data[offset:offset + CHUNK])))
        return web.json_response({"sha256": digest, "size": len(data),
                                  "media_type": media_type})

    async def download(self, request: web.Request) -> web.Response:
        try:
            live, _ = self._clerk_of(request)
        except GatewayError as exc:
            return _http_refusal(exc)
        held = live.materials.get(request.match_info["sha256"])
        if held is None:
            return web.json_response({"reason": "UNKNOWN_MATERIAL", "message": "没有该材料"},
                                     status=404)
        return web.Response(body=held[1], content_type="application/octet-stream",
                            headers={"Content-Disposition": "inline",
                                     "X-Content-Type-Options": "nosniff",
                                     "X-Media-Type": held[0]})

    def _hold(self, live: Live, digest: str, media_type: str, data: bytes) -> None:
        live.materials[digest] = (media_type, data)
        live.session.hold(digest)

    # -- the relay ---------------------------------------------------------------------
    def _reliable(self, live: Live, frame: spb.RelayFrame) -> None:
        """A frame the other gateway must get exactly once, in order."""
        frame.n = live.out.send(frame.SerializeToString())  # kept without its number
        if live.out.window_full:
            live.writable.clear()
        if live.pipe is not None:
            live.pipe.send(frame)

    def _ensure_relay(self, live: Live) -> None:
        """The origin side's gateway keeps a stream open to the remote's while the
        session is open, reopening it after a drop."""
        if not live.sequencer or not self._relayed(live) or live.relay_task is not None \
                or live.session.closed:
            return
        task = asyncio.create_task(self._keep_relay(live, self._gateway_of(live.remote)))
        live.relay_task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _keep_relay(self, live: Live, peer: str) -> None:
        delay = RECONNECT_S[0]
        client = self._clients.get(peer)
        if client is None:
            client = self._clients[peer] = RelayClient(self.config.gateways[peer],
                                                       self._signer, self.clock)
        origin_join = next((c.token for c in live.clerks if c.join.side == "origin"), "")
        while not (live.session.closed and len(live.signatures) == 2):
            pipe = Pipe()
            live.pipe = pipe
            first = spb.RelayFrame(open=spb.RelayOpen(
                session_id=live.id, case_id=live.case, origin_join=origin_join,
                received=live.inn.received))
            pipe.send(spb.RelayFrame(presence=spb.RelayPresence(
                clerks=sorted({c.join.name for c in live.clerks}))))  # who is here, once
            try:
                await client.run(first, pipe, functools.partial(self._frame, live, pipe=pipe))
                delay = RECONNECT_S[0]
            except (CallError, GatewayError, TimeoutError, OSError) as exc:
                log.info("relay of session %s to %s dropped: %s", live.id, peer,
                         str(exc)[:120])
            finally:
                live.pipe = None
                pipe.close()
                await self._presence(live)
            await asyncio.sleep(delay)
            delay = min(RECONNECT_S[1], delay * 2)

    async def accept_relay(self, caller: str, opened: spb.RelayOpen,
                           pipe: Pipe) -> Callable[[spb.RelayFrame], Any]:
        """The remote side's gateway: a stream the origin's gateway opened."""
        join = verify_join(opened.origin_join, self._keys, now=self.clock.now()) \
            if opened.origin_join else None
        live = self.sessions.get(opened.session_id)
        if live is None:
            if join is None or join.side != "origin" or join.session != opened.session_id:
                raise PermissionDenied("no such session here, and no origin join to open it",
                                       field="frame.open.origin_join")
            if self._gateway_of(join.other) != self.config.self_id:
                raise PermissionDenied("the session's remote platform is not here",
                                       field="frame.open.origin_join")
            if self._gateway_of(join.iss) != caller:
                raise PermissionDenied("the session's origin is not behind this caller",
                                       field="frame.open")
            live = Live(id=join.session, case=join.case, side="remote", origin=join.iss,
                        remote=join.other, session=Session(
                            join.session, case=join.case, origin=join.iss, remote=join.other,
                            catalogue=self.catalogue))
            live.writable.set()
            self.sessions[live.id] = live
        if live.side != "remote" or self._gateway_of(live.origin) != caller:
            raise PermissionDenied("the session's origin is not behind this caller",
                                   field="frame.open")
        if live.pipe is not None:
            live.pipe.close()
        live.pipe = pipe
        pipe.send(spb.RelayFrame(ack=spb.RelayAck(n=live.inn.received)))
        _resend(live, pipe, opened.received)
        await self._presence(live)

        async def on_frame(frame: spb.RelayFrame) -> None:
            await self._frame(live, frame, pipe=pipe)
        return on_frame

    async def _frame(self, live: Live, frame: spb.RelayFrame, *, pipe: Pipe) -> None:
        kind = frame.WhichOneof("frame")
        if kind == "ack":
            try:
                live.out.ack(frame.ack.n)
            except GatewayError:  # acknowledges what was never sent: drop the stream
                raise Unavailable(f"session {live.id}: the other gateway acknowledged "
                                  f"frame {frame.ack.n}, never sent") from None
            if not live.out.window_full:
                live.writable.set()
            if live.side == "origin" and not pipe.synced:  # the remote's answer to open
                pipe.synced = True
                _resend(live, pipe, frame.ack.n)
            return
        if kind == "presence":
            live.peer_clerks = [str(name)[:32] for name in frame.presence.clerks][:16]
            await self._presence(live, relay=False)
            return
        if kind == "rtc":
            message = _json(frame.rtc.message.decode("utf-8", "replace"))
            other = _other(live.side)
            if isinstance(message, dict) and frame.rtc.side == other \
                    and message.get("kind") in RTC_KINDS \
                    and len(json.dumps(message.get("data"))) <= 16 * 1024:
                out = {"type": "rtc", "side": other, "clerk": str(frame.rtc.clerk)[:64],
                       "kind": message["kind"], "data": message.get("data")}
                for clerk in list(live.clerks):
                    if clerk.join.side != other:
                        await clerk.send(out)
            return
        if kind in ("event", "propose", "blob", "sign", "refused"):
            body = live.inn.accept(frame.n, frame.SerializeToString())
            pipe.send(spb.RelayFrame(ack=spb.RelayAck(n=live.inn.received)))
            if body is None:
                return  # had it already (a resend after a drop)
            await self._reliable_frame(live, frame, kind)

    async def _reliable_frame(self, live: Live, frame: spb.RelayFrame, kind: str) -> None:
        if kind == "blob":
            blob = frame.blob
            part = live.partial.setdefault(blob.sha256, bytearray())
            if blob.offset == len(part) and blob.total <= MAX_MATERIAL \
                    and blob.offset + len(blob.data) <= blob.total:
                part.extend(blob.data)
            else:  # not the next piece of a material within its stated size
                live.partial.pop(blob.sha256, None)
                return
            if len(part) == blob.total:
                del live.partial[blob.sha256]
                if hashlib.sha256(part).hexdigest() == blob.sha256:
                    self._hold(live, blob.sha256, blob.media_type, bytes(part))
        elif kind == "event" and live.side == "remote":
            said = _json(frame.event.event.decode("utf-8", "replace"))
            if isinstance(said, dict) and said.get("side") == "remote" and (
                    str(said.get("clerk")), str(said.get("cid"))) not in live.proposed:
                # no gateway speaks for a clerk: a remote-side event answers a proposal
                log.warning("session %s: event %d in a remote clerk's name it never sent",
                            live.id, frame.event.seq)
                return
            try:
                event = live.session.replay(frame.event.event)
            except GatewayError as exc:  # not the next event of a well-formed chain
                log.warning("session %s: event %d refused: %s", live.id, frame.event.seq,
                            exc.message)
                return
            await self._publish(live, event)
        elif kind == "propose" and live.sequencer:
            try:
                join = verify_join(frame.propose.join, self._keys, now=self.clock.now())
            except GatewayError:
                return
            message = _json(frame.propose.message.decode("utf-8", "replace"))
            if join.session == live.id and join.side == "remote" and join.iss == live.remote \
                    and join.case == live.case and join.other == live.origin \
                    and isinstance(message, dict):
                await self._apply(live, "remote", join, message, None)
        elif kind == "refused" and live.side == "remote":
            refusal = _json(frame.refused.message.decode("utf-8", "replace"))
            for clerk in list(live.clerks):
                if clerk.join.clerk == frame.refused.clerk and isinstance(refusal, dict):
                    await clerk.send(refusal)
        elif kind == "sign":
            await self._countersigned(live, frame.sign.token)

    # -- closing -------------------------------------------------------------------------
    async def _closing(self, live: Live) -> None:
        """Both gateways sign the head of the chain they hold; each checks the other's."""
        chain = live.session.transcript
        token = sign_head(self._key, gateway=self.config.self_id, session=live.id,
                          case=live.case, n=chain.n, head=chain.head, now=self.clock.now())
        live.signatures[self.config.self_id] = token
        if self._relayed(live):
            self._reliable(live, spb.RelayFrame(sign=spb.RelaySign(token=token)))
        else:
            await self._transcript_done(live)

    async def _countersigned(self, live: Live, token: str) -> None:
        try:
            head = verify_head(token, self._gateway_keys)
        except GatewayError as exc:
            log.warning("session %s: the other gateway's head does not verify: %s", live.id,
                        exc.message)
            return
        chain = live.session.transcript
        other = self._gateway_of(live.remote if live.sequencer else live.origin)
        if head.iss != other:
            log.warning("session %s: a head signed by %s, not the other side's gateway",
                        live.id, head.iss)
            return
        if head.session != live.id or head.n != chain.n or head.head != chain.head:
            log.warning("session %s: the other gateway signed another transcript", live.id)
            return
        live.signatures[head.iss] = token
        if len(live.signatures) == 2:
            await self._transcript_done(live)

    def _gateway_keys(self, gateway_id: str) -> Any:
        gateway = self.config.gateways.get(gateway_id)
        return gateway.keys if gateway is not None else ()

    async def _transcript_done(self, live: Live) -> None:
        if self._on_transcript is not None:
            result = self._on_transcript(live)
            if asyncio.iscoroutine(result):
                await result
        if live.pipe is not None and live.side == "origin":
            live.pipe.close()


def guidance_of(config: Config) -> dict[str, tuple[tuple[str, ...], dict[str, str]]]:
    """智能帮办 from the item catalogue: each item's checklist of materials, and as form
    hints which certificate can replace a material (docs/certificates.md)."""
    out: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {}
    for code, item in config.items.items():
        hints = {material: "可用电子证照替代（类型 " + "、".join(types) + "）"
                 for material, types in item.certificates.items()}
        out[code] = (item.required_materials, hints)
    return out


def _resend(live: Live, pipe: Pipe, after: int) -> None:
    """What the other gateway does not have yet, again, with the numbers it had."""
    for n, payload in live.out.pending_after(after):
        frame = spb.RelayFrame.FromString(payload)
        frame.n = n
        pipe.send(frame)


def _other(side: str) -> str:
    return "remote" if side == "origin" else "origin"


def _json(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


async def _refuse(clerk: Clerk, cid: str, reason: str, message: str) -> None:
    await clerk.send({"type": "refused", "cid": cid, "reason": reason, "message": message})


def _http_refusal(exc: GatewayError) -> web.Response:
    status = 401 if isinstance(exc, Unauthenticated) else 403
    return web.json_response({"reason": "TOKEN" if status == 401 else "FORBIDDEN",
                              "message": exc.message}, status=status)
