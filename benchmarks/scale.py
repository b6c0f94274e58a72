"""Scaling: the routed scenario with the gateway as N processes on one port.

    python -m benchmarks.scale --processes 1,2 [--loaders 2] [--duration 5]

Each gateway process is `tongban serve --reuse-port`: SO_REUSEPORT on the gRPC and HTTP
ports, one shared SQLite store (WAL; outbox leases keep the processes off each other's
deliveries). Load generators are separate processes with several connections each, so
the kernel spreads connections over the gateways. Prints calls/s for each N and the
per-process efficiency rate(N) / (N × rate(1)). On the 2-core machine client, partner
and gateways share the cores, so N = 2 shows contention, not scaling; rerun it where
there are cores for every process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.common import free_port
from benchmarks.run import PARTNER_LINGER_S, PY, Proc, bench_config, healthy, spawn, stop


async def one(n: int, args: argparse.Namespace) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix=f"tongban-scale-{n}-"))
    port = free_port()
    config, ports = bench_config(tmp, {"310115": port}, batch=True)
    procs: list[Proc] = []
    try:
        partner = await spawn("partner", PY, "-m", "benchmarks.partner", "--port", str(port),
                              "--sign", "--config", str(config), "--linger",
                              PARTNER_LINGER_S)
        procs.append(partner)
        await partner.wait_line("READY")
        for i in range(n):
            procs.append(await spawn(f"gateway{i}", PY, "-m", "gateway.cli", "serve",
                                     "--config", str(config), "--as", "310000-gw",
                                     "--reuse-port"))
            await healthy(ports["310000-gw"].split("|")[1])
        loaders = [await spawn(f"load{i}", PY, "-m", "benchmarks.load", "--kind", "submit",
                               "--config", str(config), "--partner", "310000",
                               "--channels", str(4 * n), "--concurrency",
                               str(args.concurrency), "--duration", str(args.duration),
                               "--warmup", str(args.warmup))
                   for i in range(args.loaders)]
        procs.extend(loaders)
        results = [json.loads(await p.wait_line("{", within=600)) for p in loaders]
        rate = sum(r["rate"] for r in results)
        errors = sum(r["errors"] for r in results)
        acked = sum(r["acked_total"] for r in results)
        async with asyncio.timeout(60):  # every acknowledged case must reach the partner
            while partner.received() < acked:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        return {"processes": n, "rate": rate, "errors": errors, "acked": acked,
                "delivered": partner.received(), "p99_ms": max(r["p99_ms"] for r in results)}
    finally:
        await stop(procs)
        shutil.rmtree(tmp, ignore_errors=True)


async def main_async(args: argparse.Namespace) -> None:
    rows = []
    for n in (int(x) for x in args.processes.split(",")):
        rows.append(await one(n, args))
        print(f"  N={n}: {json.dumps(rows[-1])}", file=sys.stderr)
    base = rows[0]["rate"] / rows[0]["processes"]
    print("| gateway processes | calls/s | p99 ms | errors | delivered / acked "
          "| per-process efficiency |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        eff = r["rate"] / (r["processes"] * base)
        print(f"| {r['processes']:.0f} | {r['rate']:,.0f} | {r['p99_ms']:.1f} | "
              f"{r['errors']:.0f} | {r['delivered']:.0f} / {r['acked']:.0f} | {eff:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--loaders", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64, help="per loader")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.5)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
