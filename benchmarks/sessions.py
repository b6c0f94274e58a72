"""屏对屏 session relay (issue #14): clerks' WebSockets on two gateways, and a baseline.

    python -m benchmarks.sessions [--sessions 200] [--rates 0.5,2] [--duration 10]
                                  [--open-budget-s 20] [--rss-budget-mb 1024] [--profile DIR]

The bench starts every process (benchmarks/session_load.py: the load generator with
every clerk's socket, and the baseline server), samples their CPU and RSS from /proc and
prints the tables. First the baseline, a direct WebSocket server that sends each frame
to both sockets of its pair, then the gateways, each phase with the same sessions and
message rates, measured the same way.

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
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from benchmarks.common import ROOT, cpu_seconds, free_port, thread_cpu
from benchmarks.run import bench_config, healthy, scrape_totals
from benchmarks.session_load import DRAIN_S

GATEWAYS: Final = {"origin": "320000-gw", "remote": "310000-gw"}
DIRECTIONS: Final = {"o>r": "origin→remote", "r>o": "remote→origin",
                     "r>r": "remote round trip"}
GOAL_P99_MS: Final = 20.0
LOAD: Final = (sys.executable, "-m", "benchmarks.session_load")


# ---- the bench: processes, /proc, tables ---------------------------------------------

T0 = time.perf_counter()


def progress(what: str) -> None:
    print(f"  [{time.perf_counter() - T0:6.1f} s] {what}", file=sys.stderr, flush=True)


class Child:
    """A process of the bench: lines it prints are queued; commands go to its stdin."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log: Path | None) -> None:
        self.name, self.proc, self.log = name, proc, log
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self.tail: list[str] = []
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, name: str, *argv: str, logs: Path | None = None) -> Child:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        return cls(name, proc, logs / f"{name}.log" if logs is not None else None)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.tail = [*self.tail[-19:], line]
            if self.log is not None:
                with self.log.open("a", encoding="utf-8") as out:
                    out.write(f"{time.time():.3f} {line}\n")
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
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    async def stop(self) -> None:
        if self.name.startswith("load") and self.proc.stdin is not None:  # it ends with its input
            self.proc.stdin.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self.proc.wait()
        if self.proc.returncode is None:
            self.proc.send_signal(2)  # SIGINT: a gateway stops gracefully
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await self.proc.wait()
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self.reader.cancel()


async def spy(server: Child, args: argparse.Namespace, label: str
              ) -> asyncio.subprocess.Process:
    """py-spy on a server for the measured window (raw stacks, one file per server and
    step); it pauses the process to sample, so a profiled run's latencies are not the
    figures."""
    binary = shutil.which("py-spy") or "/tmp/pyspy/bin/py-spy"
    out = args.profile / f"sessions-{server.name}-{label}.txt"
    return await asyncio.create_subprocess_exec(
        binary, "record", "--pid", str(server.pid), "--duration", str(int(args.duration)),
        "--rate", "250", "--format", "raw", "--output", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)


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
        threads = {n: thread_cpu(p.pid) for n, p in servers.items()}
        spies = [await spy(p, args, f"r{rate:g}") for p in servers.values()] \
            if args.profile else []
        await load.expect("END", within=args.duration + 60)
        spent = {n: p.cpu() - before[n] for n, p in everyone.items()}
        elapsed = time.perf_counter() - t0
        for name, p in servers.items():  # where each server's CPU went, as benchmarks.run
            now = thread_cpu(p.pid)
            busy = {t: (v - threads[name].get(t, 0.0)) / elapsed for t, v in now.items()}
            progress(f"{name} threads, core: " + ", ".join(
                f"{t} {v:.3f}" for t, v in sorted(busy.items(), key=lambda kv: -kv[1])
                if v >= 0.001))
        for one in spies:
            await one.wait()
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
    echo = await Child.start("echo", *LOAD, "echo", "--port", str(port), logs=args.logs)
    procs.append(echo)
    await echo.expect("READY", within=30)
    load = await Child.start("load-echo", *LOAD, "load", "--echo",
                             f"http://127.0.0.1:{port}/ws", "--remote-every",
                             str(args.remote_every), logs=args.logs)
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
                                          "--config", str(config), "--as", gw, logs=args.logs)
        procs.append(servers[side])
        http[side] = ports[gw].split("|")[1]
        await healthy(http[side])
        progress(f"{gw} up")
    load = await Child.start("load-gateways", *LOAD, "load", "--origin",
                             f"http://{http['origin']}/sessions/ws", "--remote",
                             f"http://{http['remote']}/sessions/ws", "--remote-every",
                             str(args.remote_every), logs=args.logs)
    procs.append(load)
    result = await common_part(load, servers, args)
    result["capacity"] = await capacity(load, servers, args)
    for side in servers:  # relay streams (and calls) refused by the per-caller limits
        totals = await scrape_totals(http[side])
        result["capacity"][f"limited_{side}"] = totals.get("limited_calls", 0.0)
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
            why, error = "a session failed to open", opened["first_error"]
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


def latency_lines(echo: dict[str, Any], gw: dict[str, Any], args: argparse.Namespace
                  ) -> list[str]:
    """The latency table, baseline and gateways row by row, and the goal's ratios."""
    n = args.sessions
    out = [f"Session relay: {n} sessions ({2 * n} clerk sockets), 1 in {args.remote_every} "
           f"messages a remote clerk's, {args.duration:g} s per step", "",
           "| server | msgs/s (per session) | " + " | ".join(
               f"{d} p50 / p99 / max ms" for d in DIRECTIONS.values())
           + " | problems | presence msgs/s | CPU µs per message (per process) |",
           "|---|---:|" + "---:|" * len(DIRECTIONS) + "---:|---:|---|"]
    pairs = list(zip(echo["steps"], gw["steps"], strict=True))
    for one, two in pairs:
        out += [row("direct echo", one), row("gateways", two)]
    out.append("")
    for one, two in pairs:
        g, b = two["latency"]["o>r"]["p99"], one["latency"]["o>r"]["p99"]
        verdict = "met" if g <= GOAL_P99_MS else "NOT met"
        out.append(f"origin→remote p99 at {two['messages_per_s']:,.0f} msgs/s: {g:.1f} ms vs "
                   f"direct echo {b:.1f} ms, ratio {g / max(b, 1e-6):.2f} (goal ≤ "
                   f"{GOAL_P99_MS:g} ms on 2 cores: {verdict}); remote→origin p99 "
                   f"{two['latency']['r>o']['p99']:.1f} ms")
    for step in gw["steps"]:
        cpu, busy = step["cpu_us_per_message"], step["cpu_util"]
        out.append(f"gateway CPU per relayed message at {step['messages_per_s']:,.0f} msgs/s: "
                   f"320000-gw {cpu['origin']:,.0f} µs, 310000-gw {cpu['remote']:,.0f} µs "
                   f"(busy {busy['origin']:.2f} and {busy['remote']:.2f} core)")
    return out


def process_lines(echo: dict[str, Any], gw: dict[str, Any], args: argparse.Namespace
                  ) -> list[str]:
    """RSS per session and per message held, idle CPU, capacity, closing."""
    n = args.sessions
    out = [f"Sessions per process (RSS MB before → with {n} open → after the steps; per "
           "session over the last N−1 opened, per message sent in the steps)"]
    for label, key, res in (("320000-gw", "origin", gw), ("310000-gw", "remote", gw),
                            ("direct echo", "echo", echo)):
        rss = [res[k][key] for k in ("rss_before", "rss_open", "rss_after_steps")]
        sent = sum(step["sent"] for step in res["steps"])
        out.append(f"  {label}: {rss[0]:.1f} → {rss[1]:.1f} → {rss[2]:.1f} MB, "
                   f"{1024 * (rss[1] - rss[0]) / max(n - 1, 1):.1f} KB per session, "
                   f"{1024 * (rss[2] - rss[1]) / max(sent, 1):.2f} KB per message; idle CPU "
                   f"with {n} open {res['idle_util'][key]:.3f} core")
    cap, close = gw["capacity"], gw["close"]
    why = cap["stopped"] + (f"; {cap['first_error']}" if cap["first_error"] else "")
    out += [f"  capacity: {cap['sessions']:,} sessions open after {cap['seconds']:.0f} s "
            f"(stopped: {why}); RSS 320000-gw {cap['rss']['origin']:.1f} MB, 310000-gw "
            f"{cap['rss']['remote']:.1f} MB; KB per added session 320000-gw "
            f"{cap['kb_per_session']['origin']:.1f}, 310000-gw "
            f"{cap['kb_per_session']['remote']:.1f}; calls and streams refused by the "
            f"per-caller limits: 320000-gw {cap['limited_origin']:.0f}, 310000-gw "
            f"{cap['limited_remote']:.0f}",
            f"  closed {close['closed']:,} sessions in {close['seconds']:.1f} s "
            f"({close['failed']} failed); RSS after: 320000-gw "
            f"{gw['rss_closed']['origin']:.1f} MB, 310000-gw {gw['rss_closed']['remote']:.1f} MB"]
    return out


def warnings_of(gw: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """Misbehaviour that loses nothing but costs: presence messages with nobody coming or
    going (a clerk is told of a change; more than one a second per session is not that)."""
    out = []
    for step in gw["steps"]:
        if step["presence_per_s"] > args.sessions:
            out.append(f"{step['presence_per_s']:,.0f} presence messages/s to the clerks of "
                       f"{args.sessions} sessions while nobody joined or left (at "
                       f"{step['messages_per_s']:,.0f} msgs/s): presence frames go back and "
                       "forth over the relay")
    idle = gw["idle_util"]
    if max(idle.values()) > max(0.05, 0.00025 * args.sessions):  # heartbeats cost less
        out.append(f"idle gateways busy with {args.sessions} sessions open and no message: "
                   f"320000-gw {idle['origin']:.2f} core, 310000-gw {idle['remote']:.2f} core")
    return out


def problems_of(echo: dict[str, Any], gw: dict[str, Any]) -> list[str]:
    """What went wrong in either phase: lost, repeated or reordered events, refusals,
    sockets closed by the server, sessions that did not open (empty: nothing)."""
    out = []
    for name, res in (("direct echo", echo), ("gateways", gw)):
        out += [f"{name}: {k}: {v}" for step in res["steps"] for k, v in step["problems"].items()]
        out += [f"{name}: while opening: {k}: {v}" for k, v in res["open_problems"].items()]
        out += [f"{name}: {res['problem']}"] if "problem" in res else []
    return out


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
    print("\n" + "\n".join([*latency_lines(echo, gw, args), "",
                           *process_lines(echo, gw, args)]))
    warnings = warnings_of(gw, args)
    if warnings:
        print("\nWARNINGS:\n  " + "\n  ".join(warnings))
    problems = problems_of(echo, gw)
    if problems:
        print("\nPROBLEMS (the gateways must lose, repeat and reorder nothing):\n  "
              + "\n  ".join(problems))
        return 1
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
    parser.add_argument("--profile", type=Path, help="py-spy on the servers during each "
                        "measured window, raw stacks into this folder")
    parser.add_argument("--logs", type=Path, help="every process's output, one file each")
    args = parser.parse_args()
    for folder in (args.profile, args.logs):
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
    sys.exit(asyncio.run(bench(args)))


if __name__ == "__main__":
    main()
