"""The clients and the baseline server of benchmarks/sessions.py, each in its own process.

    python -m benchmarks.session_load load --origin URL --remote URL [--remote-every 4]
    python -m benchmarks.session_load load --echo URL
    python -m benchmarks.session_load echo --port PORT

``load`` holds every clerk's WebSocket (aiohttp, 25 sessions per connection pool) and
takes commands on stdin, one per line, answering on stdout: ``open N`` (N more sessions,
each with an origin clerk at 320000-gw and a remote clerk at 310000-gw, joined with
tokens signed by the demo keys of 启东 320681 and 上海 310000; ready when each clerk
sees the other, that is when the relay is up), ``step RATE SECONDS WARMUP COUNT`` (chat
lines at RATE per session per second over the first COUNT sessions, START and END around
the measured part, then RESULT) and ``close`` (the origin clerk closes each session).
Each chat line's text is its send time (perf_counter_ns: sender and receiver are this
process); every message must reach both sockets of its session once and in order, and
what does not is counted as a problem.

``echo`` is the baseline: an aiohttp WebSocket server that sends each text frame to
every socket of its session, the sender's too, as a gateway sends each event to every
clerk of the session, with nothing else in between.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
from aiohttp import web

from benchmarks.common import ROOT, install_uvloop
from gateway.ids import new_ulid
from gateway.sessions.tokens import sign_join
from gateway.signing import SigningKey, load_private_key

ORIGIN, REMOTE = "320681", "310000"  # 启东 window, 上海 handling region
PER_POOL: Final = 25  # sessions per aiohttp.ClientSession
OPENING: Final = 16  # sessions opened at once
READY_S: Final = 20.0  # a session's two clerks see each other (the relay is up) within
DRAIN_S: Final = 10.0  # after a step, every message has reached both sockets within
DIRECTIONS: Final = ("o>r", "r>o", "r>r")  # origin→remote, remote→origin, round trip


async def serve_echo(port: int) -> None:
    """Each socket says {"type": "hello", "session": id}; every text frame after that
    goes to every socket of its session, the sender's included."""
    rooms: dict[str, set[web.WebSocketResponse]] = {}

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=64 * 1024, heartbeat=20.0)
        await ws.prepare(request)
        hello = json.loads((await ws.receive()).data)
        room = rooms.setdefault(hello["session"], set())
        room.add(ws)
        await ws.send_str('{"type": "welcome"}')
        try:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    for peer in list(room):
                        await peer.send_str(msg.data)
        finally:
            room.discard(ws)
        return ws

    app = web.Application()
    app.router.add_get("/ws", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("READY", flush=True)
    await asyncio.Event().wait()


# ---- the load generator: every clerk's socket ----------------------------------------

class OpenFailed(Exception):
    """A session's clerks were not both welcomed, or did not see each other, in time."""


@dataclass(eq=False)
class Sent:
    """A chat line sent in the current step, and which sockets have had it."""

    side: str  # "o" or "r"
    measured: bool
    cross: bool = False  # reached the other side's socket
    own: bool = False  # came back to the sender's socket


@dataclass(eq=False)
class Socket:
    """One clerk's WebSocket and what its reader has seen."""

    ws: aiohttp.ClientWebSocketResponse
    side: str  # "o" or "r"
    name: str
    seq: int = 0
    welcomed: asyncio.Event = field(default_factory=asyncio.Event)
    peer_seen: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None
    closed_event: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(eq=False)
class Pair:
    """One session's two clerks; count numbers its messages (every remote_every-th is
    the remote clerk's)."""

    index: int
    origin: Socket
    remote: Socket
    count: int = 0


class Load:
    """The clerks of every session, one process; numbers kept for the bench to read."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.gateway = args.echo is None
        self.pairs: list[Pair] = []
        self.numbered = 0  # sessions tried so far (their index names their clerks)
        self.pools: list[aiohttp.ClientSession] = []
        self.sent: dict[str, Sent] = {}
        self.latency: dict[str, list[float]] = {k: [] for k in DIRECTIONS}
        self.problems: Counter[str] = Counter()
        self.presence = 0
        self.first_error = ""
        self._keys: dict[str, SigningKey] = {}

    # -- opening ---------------------------------------------------------------------
    def _pool(self, index: int) -> aiohttp.ClientSession:
        while len(self.pools) <= index // PER_POOL:
            self.pools.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
        return self.pools[index // PER_POOL]

    def _hello(self, session: str, side: str, index: int) -> dict[str, Any]:
        if not self.gateway:
            return {"type": "hello", "session": session}
        partner, other = (ORIGIN, REMOTE) if side == "origin" else (REMOTE, ORIGIN)
        if partner not in self._keys:
            pem = (ROOT / "demo-keys" / f"{partner}.pem").read_bytes()
            self._keys[partner] = load_private_key(pem, kid=f"{partner}#k1")
        token = sign_join(self._keys[partner], clerk=f"{side[0]}{index}",
                          name=f"{side}-{index}", window=f"{partner}-w{index}",
                          session=session, case="", side=side, other=other, now=time.time())
        return {"type": "hello", "token": token, "after": 0}

    async def _connect(self, url: str, hello: dict[str, Any], side: str, index: int
                       ) -> Socket:
        ws = await self._pool(index).ws_connect(url)
        sock = Socket(ws, side[0], f"{side}-{index}")
        sock.reader = asyncio.create_task(self._read(sock))
        await ws.send_str(json.dumps(hello))
        return sock

    async def open_one(self, index: int) -> Pair:
        session = new_ulid()
        urls = {"origin": self.args.origin or self.args.echo,
                "remote": self.args.remote or self.args.echo}
        socks = [await self._connect(urls[side], self._hello(session, side, index), side,
                                     index) for side in ("origin", "remote")]
        try:
            async with asyncio.timeout(READY_S):
                for sock in socks:
                    await sock.welcomed.wait()
                if self.gateway:  # each sees the other's clerk: the relay is up
                    for sock in socks:
                        await sock.peer_seen.wait()
        except TimeoutError:
            waiting = [s.name for s in socks if not s.welcomed.is_set()]
            raise OpenFailed(f"no welcome for {waiting} within {READY_S:g} s" if waiting else
                             f"the clerks did not see each other within {READY_S:g} s "
                             "(the relay between the gateways is not up)") from None
        return Pair(index, *socks)

    def _new_problems(self, since: Counter[str]) -> dict[str, int]:
        return dict(self.problems - since)

    async def open(self, n: int) -> dict[str, Any]:
        """n more sessions, OPENING at a time; after a failure the rest are not tried."""
        t0, failed, since = time.perf_counter(), 0, self.problems.copy()
        slots = asyncio.Semaphore(OPENING)
        base, self.numbered = self.numbered, self.numbered + n

        async def one(index: int) -> Pair | None:
            nonlocal failed
            async with slots:
                if failed:
                    return None
                try:
                    return await self.open_one(index)
                except (OpenFailed, aiohttp.ClientError, OSError) as exc:
                    failed += 1
                    self.first_error = self.first_error or f"open: {exc}"
                    return None

        opened = await asyncio.gather(*(one(base + i) for i in range(n)))
        self.pairs += [p for p in opened if p is not None]
        return {"sessions": len(self.pairs), "failed": failed,
                "seconds": time.perf_counter() - t0, "first_error": self.first_error,
                "problems": self._new_problems(since)}

    # -- receiving -------------------------------------------------------------------
    async def _read(self, sock: Socket) -> None:
        async for msg in sock.ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            now = time.perf_counter()
            message = json.loads(msg.data)
            kind = message.get("type")
            if kind == "event":
                self._event(sock, message["event"], now)
            elif kind == "chat":  # the baseline sends the message itself
                self._chat(sock, message["cid"], message["text"], now)
            elif kind == "welcome":
                sock.welcomed.set()
            elif kind == "presence":
                self.presence += 1
                if message["clerks"]:
                    sock.peer_seen.set()
            elif kind == "refused":
                self.problems[f"refused {message.get('reason')}"] += 1
        if not sock.closed_event.is_set():
            self.problems["socket closed by the server"] += 1

    def _event(self, sock: Socket, event: dict[str, Any], now: float) -> None:
        if event["seq"] != sock.seq + 1:
            self.problems["events out of order or missing (seq gap)"] += 1
        sock.seq = event["seq"]
        if event["type"] == "chat":
            self._chat(sock, event["cid"], event["text"], now)
        elif event["type"] == "closed":
            sock.closed_event.set()

    def _chat(self, sock: Socket, cid: str, text: str, now: float) -> None:
        sent = self.sent.get(cid)
        if sent is None:
            self.problems["events after the drain (late)"] += 1
            return
        cross = sock.side != sent.side
        if (sent.cross if cross else sent.own):
            self.problems["events received twice"] += 1
            return
        if cross:
            sent.cross = True
        else:
            sent.own = True
        direction = f"{sent.side}>{sock.side}"
        if sent.measured and direction in self.latency:
            self.latency[direction].append(now - int(text) / 1e9)

    # -- sending ---------------------------------------------------------------------
    async def _send(self, pair: Pair, measured: bool) -> None:
        remote = pair.count % self.args.remote_every == self.args.remote_every - 1
        sock = pair.remote if remote else pair.origin
        cid = f"{sock.side}{pair.index}.{pair.count}"
        pair.count += 1
        t0 = time.perf_counter_ns()
        self.sent[cid] = Sent(sock.side, measured)
        await sock.ws.send_str(json.dumps({"type": "chat", "cid": cid, "text": str(t0)}))

    async def step(self, rate: float, seconds: float, warmup: float, count: int
                   ) -> dict[str, Any]:
        """Open loop: one message every 1/(rate × count) s, to the sessions in turn, for
        warmup + seconds; START and END bound the measured part; then wait for every
        message to reach both sockets (DRAIN_S at most)."""
        pairs, since = self.pairs[:count], self.problems.copy()
        interval = 1 / (rate * len(pairs))
        self.sent.clear()
        for samples in self.latency.values():
            samples.clear()
        start = time.perf_counter()
        measure_from, stop_at = start + warmup, start + warmup + seconds
        k, lag, due, in_window, presence0 = 0, 0.0, start, 0, 0
        started = False
        while (now := time.perf_counter()) < stop_at:
            if not started and now >= measure_from:
                started, presence0 = True, self.presence
                print("START", flush=True)
            if due > now:
                await asyncio.sleep(due - now)
                continue
            lag = max(lag, now - due)
            await self._send(pairs[k % len(pairs)], started)
            in_window += started
            k, due = k + 1, due + interval
        print("END", flush=True)
        presence = self.presence - presence0
        drained = time.perf_counter()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_S):
                while any(not (s.cross and s.own) for s in self.sent.values()):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        lost = sum(not s.cross for s in self.sent.values())
        lost_own = sum(not s.own for s in self.sent.values())
        if lost:
            self.problems["messages that never reached the other side"] += lost
        if lost_own:
            self.problems["messages that never came back to their sender"] += lost_own
        self.sent.clear()
        return {"rate_per_session": rate, "sessions": len(pairs), "messages": in_window, "sent": k,
                "messages_per_s": in_window / seconds, "pacer_lag_ms": 1000 * lag,
                "presence_per_s": presence / seconds,
                "drain_s": time.perf_counter() - drained,
                "latency": {d: spread(v) for d, v in self.latency.items()},
                "problems": self._new_problems(since), "first_error": self.first_error}

    async def close(self) -> dict[str, Any]:
        """Gateways: the origin clerk closes each session; both clerks must see it."""
        t0, failed = time.perf_counter(), 0
        slots = asyncio.Semaphore(OPENING)

        async def one(pair: Pair) -> None:
            nonlocal failed
            async with slots:
                try:
                    await pair.origin.ws.send_str(json.dumps({"type": "close",
                                                              "cid": f"x{pair.index}"}))
                    async with asyncio.timeout(READY_S):
                        await pair.origin.closed_event.wait()
                        await pair.remote.closed_event.wait()
                except (TimeoutError, ConnectionError) as exc:
                    failed += 1
                    self.first_error = self.first_error or f"close: {type(exc).__name__}"

        if self.gateway:
            await asyncio.gather(*(one(p) for p in self.pairs))
        for pair in self.pairs:
            for sock in (pair.origin, pair.remote):
                sock.closed_event.set()
                await sock.ws.close()
        return {"closed": len(self.pairs) - failed, "failed": failed,
                "seconds": time.perf_counter() - t0}

    async def serve(self) -> None:
        """Commands on stdin, one per line; answers on stdout."""
        print("READY", flush=True)
        while line := (await asyncio.to_thread(sys.stdin.readline)).split():
            if line[0] == "open":
                print("OPENED " + json.dumps(await self.open(int(line[1]))), flush=True)
            elif line[0] == "step":
                rate, seconds, warmup = (float(x) for x in line[1:4])
                result = await self.step(rate, seconds, warmup, int(line[4]))
                print("RESULT " + json.dumps(result), flush=True)
            elif line[0] == "close":
                print("CLOSED " + json.dumps(await self.close()), flush=True)
        for pool in self.pools:
            await pool.close()


def spread(samples: list[float]) -> dict[str, float]:
    """n, p50, p99 and max in ms of samples in seconds."""
    if not samples:
        return {"n": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(samples)
    return {"n": len(ordered), "p50": 1000 * statistics.median(ordered),
            "p99": 1000 * ordered[int(0.99 * (len(ordered) - 1))], "max": 1000 * ordered[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=("load", "echo"))
    parser.add_argument("--port", type=int, help="echo: the port")
    parser.add_argument("--echo", help="load: the baseline's WebSocket URL")
    parser.add_argument("--origin", help="load: 320000-gw's /sessions/ws URL")
    parser.add_argument("--remote", help="load: 310000-gw's /sessions/ws URL")
    parser.add_argument("--remote-every", type=int, default=4,
                        help="every Nth message of a session is the remote clerk's")
    args = parser.parse_args()
    install_uvloop()
    if args.role == "echo":
        asyncio.run(serve_echo(args.port))
    else:
        asyncio.run(Load(args).serve())


if __name__ == "__main__":
    main()
