"""RSS of a gateway holding 10,000 open cases and 1,000 live watchers.

    python -m benchmarks.memory [--cases 10000] [--watchers 1000]

The gateway (310000-gw) and a signing partner platform (310115) run as processes of
their own; this process submits the cases (they stay open: the platform never moves
them), then opens the WatchCase streams, and reads the gateway's VmRSS from /proc at
each step. Target (issue #5): ≤ 150 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.common import free_port, install_uvloop
from benchmarks.load import APPLICANT, FORM
from benchmarks.run import PARTNER_LINGER_S, PY, bench_config, healthy, spawn, stop
from gateway.config import load_config
from gateway.demo import client_for


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def main_async(cases: int, watchers: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="tongban-mem-"))
    port = free_port()
    config_path, ports = bench_config(tmp, {"310115": port}, batch=True)
    procs = []
    try:
        partner = await spawn("partner", PY, "-m", "benchmarks.partner", "--port", str(port),
                              "--sign", "--config", str(config_path), "--linger",
                              PARTNER_LINGER_S)
        procs.append(partner)
        await partner.wait_line("READY")
        gateway = await spawn("gateway", PY, "-m", "gateway.cli", "serve", "--config",
                              str(config_path), "--as", "310000-gw")
        procs.append(gateway)
        await healthy(ports["310000-gw"].split("|")[1])
        pid = gateway.proc.pid
        print(f"gateway idle: {rss_mb(pid):.1f} MB RSS")

        client = client_for(load_config(config_path, self_id="310000-gw"), "310000")
        ids: list[str] = []
        slots = asyncio.Semaphore(64)

        async def one(i: int) -> None:
            async with slots:
                answer = await client.submit(case_number=f"MEM-{i}", target_division="310115",
                                             item_code="yb-ba", applicant=APPLICANT, form=FORM)
                ids.append(answer.case.case_id)

        await asyncio.gather(*(one(i) for i in range(cases)))
        print(f"after {cases:,} open cases: {rss_mb(pid):.1f} MB RSS")

        ready = asyncio.Semaphore(0)

        async def watch(case_id: str) -> None:
            async for _ in client.watch(case_id):
                ready.release()

        tasks = [asyncio.create_task(watch(c)) for c in ids[:watchers]]
        async with asyncio.timeout(120):
            for _ in range(watchers):
                await ready.acquire()
        await asyncio.sleep(1)
        print(f"with {watchers:,} live WatchCase streams: {rss_mb(pid):.1f} MB RSS "
              "(target ≤ 150 MB)")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
    finally:
        await stop(procs)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--watchers", type=int, default=1_000)
    args = parser.parse_args()
    install_uvloop()
    asyncio.run(main_async(args.cases, args.watchers))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
