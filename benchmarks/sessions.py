"""屏对屏 session relay (issue #14): clerks' WebSockets on two gateways, and a baseline.

    python -m benchmarks.sessions [--sessions 200] [--rates 0.5,2] [--duration 10]
                                  [--open-budget-s 20] [--rss-budget-mb 1024] [--profile DIR]

Three roles of this one file, each its own process: the bench (this command: it starts
the others, samples their CPU and RSS from /proc and prints the tables), a load
generator (``--role load``: every clerk's socket, aiohttp, 25 sessions per connection
pool) and the baseline server (``--role echo``: an aiohttp WebSocket server that sends
each text frame to every socket of its pair, the sender's too, as the gateway sends each
event to every clerk of the session). The bench drives the load generator over its stdin
(``open N``, ``step RATE SECONDS WARMUP COUNT``, ``close``) and reads what it prints.

The gateways: 320000-gw with the origin window 启东 320681 and 310000-gw with the remote
region 上海 310000, linked (the demo federation on fresh ports). Each session has one
origin clerk at 320000-gw and one remote clerk at 310000-gw. Messages are chat lines with
the send time (perf_counter_ns, one process) as their text, spread evenly over the
sessions at RATE per session per second; every ``--remote-every``-th message of a
session is the remote clerk's (a proposal through the sequencer). Latency is send →
the sequenced event at a socket: origin→remote (through both gateways and the relay),
remote→origin, and the remote clerk's round trip (its own proposal back, sequenced).
Every message must reach both sockets once and in order: lost, duplicated and
out-of-order events are counted and make the command fail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import web

from benchmarks.common import ROOT, cpu_seconds, free_port, install_uvloop
from benchmarks.run import bench_config, healthy

ORIGIN, REMOTE = "320681", "310000"  # 启东 window, 上海 handling region
GATEWAYS: Final = {"origin": "320000-gw", "remote": "310000-gw"}
PER_POOL: Final = 25  # sessions per aiohttp.ClientSession
OPENING: Final = 16  # sessions opened at once
READY_S: Final = 20.0  # a session's two clerks see each other (the relay is up) within
DRAIN_S: Final = 10.0
DIRECTIONS: Final = {"o>r": "origin→remote", "r>o": "remote→origin",
                     "r>r": "remote round trip"}
GOAL_P99_MS: Final = 20.0


# ---- the baseline: a WebSocket server that relays within pairs, in its own process ----

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

@dataclass(eq=False)
class Sent:
    side: str  # "o" or "r"
    measured: bool
    cross: bool = False  # reached the other side's socket
    own: bool = False  # came back to the sender's socket


@dataclass(eq=False)
class Socket:
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
        self.pools: list[aiohttp.ClientSession] = []
        self.sent: dict[str, Sent] = {}
        self.latency: dict[str, list[float]] = {k: [] for k in DIRECTIONS}
        self.problems: Counter[str] = Counter()
        self.presence = 0
        self.first_error = ""
        self._keys: dict[str, Any] = {}

    # -- opening ---------------------------------------------------------------------
    def _pool(self, index: int) -> aiohttp.ClientSession:
        while len(self.pools) <= index // PER_POOL:
            self.pools.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
        return self.pools[index // PER_POOL]

    def _hello(self, session: str, side: str, index: int) -> dict[str, Any]:
        if not self.gateway:
            return {"type": "hello", "session": session}
        from gateway.sessions.tokens import sign_join
        from gateway.signing import load_private_key

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
        from gateway.ids import new_ulid

        session = new_ulid()
        urls = {"origin": self.args.origin or self.args.echo,
                "remote": self.args.remote or self.args.echo}
        socks = [await self._connect(urls[side], self._hello(session, side, index), side,
                                     index) for side in ("origin", "remote")]
        async with asyncio.timeout(READY_S):
            for sock in socks:
                await sock.welcomed.wait()
            if self.gateway:  # each sees the other's clerk: the relay is up
                for sock in socks:
                    await sock.peer_seen.wait()
        return Pair(index, *socks)

    def _new_problems(self, since: Counter[str]) -> dict[str, int]:
        return dict(self.problems - since)

    async def open(self, n: int) -> dict[str, Any]:
        t0, failed, since = time.perf_counter(), 0, self.problems.copy()
        slots = asyncio.Semaphore(OPENING)
        base = len(self.pairs)

        async def one(index: int) -> Pair | None:
            nonlocal failed
            async with slots:
                try:
                    return await self.open_one(index)
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    failed += 1
                    self.first_error = self.first_error or f"open: {type(exc).__name__} {exc}"
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
        return {"rate_per_session": rate, "sessions": len(pairs), "messages": in_window,
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


# ---- the bench: processes, /proc, tables ---------------------------------------------

T0 = time.perf_counter()


def progress(what: str) -> None:
    print(f"  [{time.perf_counter() - T0:6.1f} s] {what}", file=sys.stderr, flush=True)


class Child:
    """A process of the bench: lines it prints are queued; commands go to its stdin."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, profiled: bool) -> None:
        self.name, self.proc, self.profiled = name, proc, profiled
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self.tail: list[str] = []
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, name: str, *argv: str, profile: Path | None = None) -> Child:
        if profile is not None:
            spy = shutil.which("py-spy") or "/tmp/pyspy/bin/py-spy"
            argv = (spy, "record", "--format", "raw", "--rate", "250", "-o",
                    str(profile / f"sessions-{name}.txt"), "--", *argv)
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        return cls(name, proc, profile is not None)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.tail = [*self.tail[-19:], line]
            await self.lines.put(line)

    async def expect(self, prefix: str, within: float = 120.0) -> str:
        """The rest of the next line that starts with prefix (other lines are skipped)."""
        async with asyncio.timeout(within):
            while True:
                if self.proc.returncode is not None and self.lines.empty():
                    raise RuntimeError(f"{self.name} exited: {self.tail[-8:]}")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        line = await self.lines.get()
                        if line.startswith(prefix):
                            return line[len(prefix):].strip()

    async def command(self, line: str, answer: str, within: float = 300.0) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        return json.loads(await self.expect(answer, within))

    @property
    def pid(self) -> int:
        if self.profiled:  # py-spy's child is the process measured
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
            return int(children.split()[0])
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    async def stop(self) -> None:
        if self.name == "load" and self.proc.stdin is not None:  # it ends with its input
            self.proc.stdin.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self.proc.wait()
        if self.proc.returncode is None:
            self.proc.send_signal(2)  # SIGINT: py-spy writes its profile
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await self.proc.wait()
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self.reader.cancel()


async def steps(load: Child, servers: dict[str, Child], args: argparse.Namespace
                ) -> list[dict[str, Any]]:
    """Each rate step with the CPU of every process over its measured window."""
    out = []
    everyone = {**servers, "load": load}
    for rate in (float(r) for r in args.rates.split(",")):
        assert load.proc.stdin is not None
        load.proc.stdin.write(f"step {rate} {args.duration} {args.warmup} {args.sessions}\n"
                              .encode())
        await load.expect("START")
        before, t0 = {n: p.cpu() for n, p in everyone.items()}, time.perf_counter()
        await load.expect("END", within=args.duration + 60)
        spent = {n: p.cpu() - before[n] for n, p in everyone.items()}
        elapsed = time.perf_counter() - t0
        result: dict[str, Any] = json.loads(await load.expect("RESULT", within=DRAIN_S + 60))
        messages = max(result["messages"], 1)
        result["cpu_us_per_message"] = {n: 1e6 * s / messages for n, s in spent.items()}
        result["cpu_util"] = {n: s / elapsed for n, s in spent.items()}
        out.append(result)
        progress(f"{'gateways' if 'origin' in servers else 'echo'} step: {json.dumps(result)}")
    return out


async def common_part(load: Child, servers: dict[str, Child], args: argparse.Namespace
                      ) -> dict[str, Any]:
    """Open one session (warm-up), then the rest of --sessions, RSS before and after;
    the idle CPU with them open; then the rate steps."""
    await load.expect("READY", within=60)
    progress("load generator ready")
    first = await load.command("open 1", "OPENED")
    await asyncio.sleep(0.5)
    rss0 = {n: p.rss_mb() for n, p in servers.items()}
    opened = await load.command(f"open {args.sessions - 1}", "OPENED")
    progress(f"opened {opened['sessions']} sessions in {opened['seconds']:.1f} s")
    await asyncio.sleep(0.5)
    rss1 = {n: p.rss_mb() for n, p in servers.items()}
    before = {n: p.cpu() for n, p in servers.items()}
    await asyncio.sleep(args.idle)
    idle = {n: (p.cpu() - before[n]) / args.idle for n, p in servers.items()}
    result = {"open": [first, opened], "rss_before": rss0, "rss_open": rss1,
              "idle_util": idle, "steps": await steps(load, servers, args),
              "rss_after_steps": {n: p.rss_mb() for n, p in servers.items()}}
    if opened["failed"] or first["failed"]:
        result["problem"] = f"{opened['failed']} sessions failed to open: " \
                            f"{opened['first_error']}"
    result["open_problems"] = {k: first["problems"].get(k, 0) + opened["problems"].get(k, 0)
                               for k in {*first["problems"], *opened["problems"]}}
    return result


async def echo_phase(args: argparse.Namespace, procs: list[Child]) -> dict[str, Any]:
    port = free_port()
    echo = await Child.start("echo", sys.executable, "-m", "benchmarks.sessions", "--role",
                             "echo", "--port", str(port))
    procs.append(echo)
    await echo.expect("READY", within=30)
    load = await Child.start("load", sys.executable, "-m", "benchmarks.sessions", "--role",
                             "load", "--echo", f"http://127.0.0.1:{port}/ws",
                             "--remote-every", str(args.remote_every))
    procs.append(load)
    result = await common_part(load, {"echo": echo}, args)
    await load.command("close", "CLOSED")
    return result


async def gateway_phase(args: argparse.Namespace, procs: list[Child], tmp: Path
                        ) -> dict[str, Any]:
    config, ports = bench_config(tmp, {}, batch=False)
    servers: dict[str, Child] = {}
    http = {}
    for side, gw in GATEWAYS.items():
        servers[side] = await Child.start(gw, sys.executable, "-m", "gateway.cli", "serve",
                                          "--config", str(config), "--as", gw,
                                          profile=args.profile)
        procs.append(servers[side])
        http[side] = ports[gw].split("|")[1]
        await healthy(http[side])
        progress(f"{gw} up")
    load = await Child.start("load", sys.executable, "-m", "benchmarks.sessions", "--role",
                             "load", "--origin", f"http://{http['origin']}/sessions/ws",
                             "--remote", f"http://{http['remote']}/sessions/ws",
                             "--remote-every", str(args.remote_every))
    procs.append(load)
    result = await common_part(load, servers, args)
    result["capacity"] = await capacity(load, servers, args)
    result["rss_capacity"] = {n: p.rss_mb() for n, p in servers.items()}
    result["close"] = await load.command("close", "CLOSED", within=600)
    progress(f"closed: {result['close']}")
    await asyncio.sleep(0.5)
    result["rss_closed"] = {n: p.rss_mb() for n, p in servers.items()}
    return result


async def capacity(load: Child, servers: dict[str, Child], args: argparse.Namespace
                   ) -> dict[str, Any]:
    """More sessions, --batch at a time, until a budget is spent or opening fails."""
    t0, total = time.perf_counter(), args.sessions
    rss0 = {n: p.rss_mb() for n, p in servers.items()}
    rss, why, error = rss0, "", ""
    while not why:
        opened = await load.command(f"open {args.batch}", "OPENED", within=600)
        total = opened["sessions"]
        progress(f"capacity: {total} sessions")
        await asyncio.sleep(0.3)
        rss = {n: p.rss_mb() for n, p in servers.items()}
        if opened["failed"]:
            why, error = f"{opened['failed']} of {args.batch} failed", opened["first_error"]
        elif max(rss.values()) >= args.rss_budget_mb:
            why = f"RSS budget ({args.rss_budget_mb} MB)"
        elif time.perf_counter() - t0 >= args.open_budget_s:
            why = f"time budget ({args.open_budget_s:g} s)"
        elif total >= args.max_sessions:
            why = f"--max-sessions {args.max_sessions}"
    added = max(total - args.sessions, 1)
    return {"sessions": total, "seconds": time.perf_counter() - t0, "stopped": why,
            "first_error": error, "rss": rss,
            "kb_per_session": {n: 1024 * (rss[n] - rss0[n]) / added for n in servers}}


def row(server: str, step: dict[str, Any]) -> str:
    def cell(d: str) -> str:
        s = step["latency"][d]
        return f"{s['p50']:.1f} / {s['p99']:.1f} / {s['max']:.1f}" if s["n"] else "–"
    cpu = ", ".join(f"{n} {v:,.0f}" for n, v in step["cpu_us_per_message"].items())
    bad = sum(step["problems"].values())
    return (f"| {server} | {step['messages_per_s']:,.0f} ({step['rate_per_session']:g}) | "
            + " | ".join(cell(d) for d in DIRECTIONS)
            + f" | {bad} | {step['presence_per_s']:,.0f} | {cpu} |")


def report(echo: dict[str, Any], gw: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """The tables and ratios; problems found, as the last lines (empty: none)."""
    n = args.sessions
    print(f"\nSession relay: {n} sessions ({2 * n} clerk sockets), every "
          f"{args.remote_every}th message a remote clerk's, {args.duration:g} s per step\n")
    print("| server | msgs/s (per session) | " + " | ".join(
        f"{d} p50 / p99 / max ms" for d in DIRECTIONS.values())
        + " | problems | presence msgs/s | CPU µs per message (per process) |")
    print("|---|---:|" + "---:|" * len(DIRECTIONS) + "---:|---:|---|")
    for one, two in zip(echo["steps"], gw["steps"], strict=True):
        print(row("direct echo", one))
        print(row("gateways", two))
    print()
    for one, two in zip(echo["steps"], gw["steps"], strict=True):
        g, b = two["latency"]["o>r"]["p99"], one["latency"]["o>r"]["p99"]
        verdict = "met" if g <= GOAL_P99_MS else "NOT met"
        print(f"origin→remote p99 at {two['messages_per_s']:,.0f} msgs/s: {g:.1f} ms vs "
              f"direct echo {b:.1f} ms, ratio {g / max(b, 1e-6):.1f} "
              f"(goal ≤ {GOAL_P99_MS:g} ms on 2 cores: {verdict}); remote→origin p99 "
              f"{two['latency']['r>o']['p99']:.1f} ms")
    for step in gw["steps"]:
        cpu = step["cpu_us_per_message"]
        print(f"gateway CPU per relayed message at {step['messages_per_s']:,.0f} msgs/s: "
              f"320000-gw {cpu['origin']:,.0f} µs, 310000-gw {cpu['remote']:,.0f} µs "
              f"(busy {step['cpu_util']['origin']:.2f} and {step['cpu_util']['remote']:.2f} "
              f"core)")
    print(f"\nSessions per process (RSS MB before → with {n} open → after the steps; "
          "per session over the last N−1 opened)")
    for label, part in (("320000-gw", ("origin", gw)), ("310000-gw", ("remote", gw)),
                        ("direct echo", ("echo", echo))):
        key, res = part
        per = 1024 * (res["rss_open"][key] - res["rss_before"][key]) / max(n - 1, 1)
        print(f"  {label}: {res['rss_before'][key]:.1f} → {res['rss_open'][key]:.1f} → "
              f"{res['rss_after_steps'][key]:.1f} MB, {per:.1f} KB per session; idle CPU "
              f"with {n} open {res['idle_util'][key]:.3f} core")
    cap = gw["capacity"]
    print(f"  capacity: {cap['sessions']:,} sessions open after {cap['seconds']:.0f} s "
          f"(stopped: {cap['stopped']}{'; ' + cap['first_error'] if cap['first_error'] else ''})"
          f"; RSS 320000-gw {cap['rss']['origin']:.1f} MB, 310000-gw "
          f"{cap['rss']['remote']:.1f} MB; KB per added session 320000-gw "
          f"{cap['kb_per_session']['origin']:.1f}, 310000-gw {cap['kb_per_session']['remote']:.1f}")
    close = gw["close"]
    print(f"  closed {close['closed']:,} sessions in {close['seconds']:.1f} s "
          f"({close['failed']} failed); RSS after: 320000-gw {gw['rss_closed']['origin']:.1f} MB,"
          f" 310000-gw {gw['rss_closed']['remote']:.1f} MB")
    problems = [f"{name}: {k}: {v}" for name, res in (("direct echo", echo), ("gateways", gw))
                for step in res["steps"] for k, v in step["problems"].items()]
    problems += [f"{name}: while opening: {k}: {v}" for name, res in
                 (("direct echo", echo), ("gateways", gw)) for k, v in res["open_problems"].items()]
    problems += [res["problem"] for res in (echo, gw) if "problem" in res]
    return problems


async def bench(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="tongban-bench-sessions-"))
    procs: list[Child] = []
    try:
        echo = await echo_phase(args, procs)
        for p in procs:
            await p.stop()
        procs.clear()
        progress("baseline done")
        gw = await gateway_phase(args, procs, tmp)
    finally:
        for p in procs:
            await p.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    problems = report(echo, gw, args)
    if problems:
        print("\nPROBLEMS (the gateways must lose, repeat and reorder nothing):\n  "
              + "\n  ".join(problems))
        return 1
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=("bench", "load", "echo"), default="bench")
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--rates", default="0.5,2", help="messages per session per second, "
                        "one step each (0.5 = 1 every 2 s: 100 msgs/s at 200 sessions)")
    parser.add_argument("--remote-every", type=int, default=4)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per step")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of idle CPU")
    parser.add_argument("--batch", type=int, default=200, help="capacity: sessions per batch")
    parser.add_argument("--open-budget-s", type=float, default=20.0)
    parser.add_argument("--rss-budget-mb", type=float, default=1024.0)
    parser.add_argument("--max-sessions", type=int, default=5000)
    parser.add_argument("--profile", type=Path, help="gateways under py-spy, stacks here")
    parser.add_argument("--port", type=int, help="echo: the port")
    parser.add_argument("--echo", help="load: the baseline's ws URL")
    parser.add_argument("--origin", help="load: 320000-gw's /sessions/ws URL")
    parser.add_argument("--remote", help="load: 310000-gw's /sessions/ws URL")
    args = parser.parse_args()
    if args.role == "bench":
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        sys.exit(asyncio.run(bench(args)))
    install_uvloop()
    if args.role == "echo":
        asyncio.run(serve_echo(args.port))
    else:
        asyncio.run(Load(args).serve())


if __name__ == "__main__":
    main()
