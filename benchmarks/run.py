"""Run the benchmark scenarios side by side and print one table with ratios.

    python -m benchmarks.run [--duration 5] [--concurrency 64] [--sweep 1,16,64,256]
                             [--scenarios direct,bare,nginx,routed,routed-1sig,federated,mixed,
                                          certificate,certificate-direct,certificate-nocache,
                                          sessions]
                             [--repeat 3] [--latency] [--profile DIR] [--sessions-args "..."]

"routed" and "federated" run with batch signatures between every party (docs/signing.md
§7); "routed-1sig" has every party sign each message on its own. "mixed" is a case's
whole life through one gateway, five calls per case (the origin submits and reads it
back, the target accepts, processes and completes it) and four deliveries (the case to
the target, each report to the origin); its calls/s counts all five kinds, and its
ratio holds the gateway's CPU per case against 4.5 bare forwarder calls (the same nine
gRPC hops).

"certificate" is a signed LookupCertificate from 浦东 310115 through 310000-gw and
320000-gw to 启东 320681, an issuing platform process (benchmarks/partner.py --register:
the reference issuer on an SQLite register); "certificate-direct" makes the one signed
FetchCertificates call of each lookup straight to that process; "certificate-nocache" is
"certificate" with both gateways' document cache off ([certificates] document_cache = 0).
Every answer is checked (benchmarks/certificate.py); a failed call or a wrong answer
fails the run.

"sessions" is not a row: it runs `python -m benchmarks.sessions` once, after everything
else (屏对屏 session relay latency through two gateways against a direct WebSocket
baseline, RSS and CPU per session; --sessions-args passes its options), and prints its
own tables; a lost, repeated or reordered event fails the run.

Every scenario starts its own processes on 127.0.0.1 (partner, proxy or gateways, and
a separate load generator), measures a fixed window after a warm-up, samples the CPU
time of each server process over that window from /proc, and stops them. Absolute
numbers on a shared machine are noise; the ratios within one run are the result.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shlex
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from benchmarks import certificate as cert
from benchmarks.common import ROOT, cpu_seconds, free_port, thread_cpu

PY = sys.executable
BATCH_PLATFORMS = ("310000", "310115", "320105", "320681")
# a platform's calls arrive one per loop turn: its signer waits this long for company
PARTNER_LINGER_S = "0.002"
CERTIFICATE_ROWS = ("certificate", "certificate-direct", "certificate-nocache")
DEFAULT_SCENARIOS = ",".join(("direct", "bare", "nginx", "routed", "routed-1sig", "federated",
                              "mixed", *CERTIFICATE_ROWS, "sessions"))
GRPC_PARTNER = ('adapter = "embedded"\nsettings = {{ auto = "complete", step_delay_s = 0.05 }}\n'
                '[[partners.keys]]\nid = "k1"\njwk = {{ kty = "OKP", crv = "Ed25519", x = "{x}')


@dataclass
class Proc:
    name: str
    proc: asyncio.subprocess.Process
    profiled: bool = False  # run under py-spy: CPU is the child's, not py-spy's
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip())

    async def wait_line(self, prefix: str, within: float = 30.0) -> str:
        async with asyncio.timeout(within):
            while True:
                for line in self.lines:
                    if line.startswith(prefix):
                        return line
                if self.proc.returncode is not None:
                    raise RuntimeError(f"{self.name} exited: {self.lines[-5:]}")
                await asyncio.sleep(0.02)

    def received(self) -> int:
        counts = [int(x.split()[1]) for x in self.lines if x.startswith("RECEIVED")]
        return counts[-1] if counts else 0

    @property
    def pid(self) -> int:
        if self.profiled:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
            if children.split():
                return int(children.split()[0])
        return self.proc.pid

    def signatures(self) -> int:
        """Signatures the partner made (fewer than calls when it batch-signs)."""
        counts = [int(x.split()[3]) for x in self.lines if x.startswith("RECEIVED")]
        return counts[-1] if counts else 0

    def cpu(self) -> float:
        return cpu_seconds(self.pid)


def profiled(argv: list[str], out: Path) -> list[str]:
    """argv under py-spy, writing raw stacks per thread (flame graphs, top-N self time)."""
    return ["py-spy", "record", "--format", "raw", "--threads", "--rate", "250", "-o", str(out),
            "--", *argv]


async def spawn(name: str, *argv: str) -> Proc:
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    p = Proc(name, proc)
    p.reader = asyncio.create_task(p._read())
    return p


async def stop(procs: list[Proc]) -> None:
    for p in procs:
        if p.proc.returncode is None:
            p.proc.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
    for p in procs:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await p.proc.wait()
        if p.proc.returncode is None:
            p.proc.kill()
            await p.proc.wait()
        if p.reader is not None:
            await p.reader


def bench_config(tmp: Path, partner_ports: dict[str, int], batch: bool,
                 document_cache: int | None = None) -> tuple[Path, dict[str, str]]:
    """The demo federation with the platforms of partner_ports (310115, 320681, 310000)
    behind grpc_partner, fresh ports; with batch, the platforms of the benchmarks verify
    and make batch tokens; document_cache: [certificates] document_cache of every
    gateway, if given."""
    text = (ROOT / "partners.toml").read_text(encoding="utf-8")
    if document_cache is not None:
        old = "\ndocument_cache = 4096 "
        assert old in text, "partners.toml's [certificates] document_cache moved"
        text = text.replace(old, f"\ndocument_cache = {document_cache} ")
    if batch:
        for pid in BATCH_PLATFORMS:
            text = text.replace(f'[[partners]]\nid = "{pid}"\n',
                                f'[[partners]]\nid = "{pid}"\nbatch_signatures = true\n')
    lines = text.splitlines()
    for partner, port in partner_ports.items():
        start = lines.index(f'id = "{partner}"')  # its block, up to its first key
        x = next(b for b in lines[start:start + 12] if "jwk" in b).split('x = "')[1][:7]
        old = GRPC_PARTNER.format(x=x)
        assert old in text, partner
        text = text.replace(old, old.replace(
            'adapter = "embedded"\nsettings = { auto = "complete", step_delay_s = 0.05 }',
            f'adapter = "grpc_partner"\nsettings = {{ address = "127.0.0.1:{port}", '
            'timeout_s = 10 }'))
    grpc_ports: dict[str, str] = {}
    for n, gw in enumerate(("320100-gw", "320000-gw", "310000-gw")):
        g, h = free_port(), free_port()
        text = text.replace(f"127.0.0.1:710{n + 1}", f"127.0.0.1:{g}")
        text = text.replace(f"127.0.0.1:810{n + 1}", f"127.0.0.1:{h}")
        grpc_ports[gw] = f"127.0.0.1:{g}|127.0.0.1:{h}"
    text = text.replace('data_dir = "var/{id}"', f'data_dir = "{tmp}/var/{{id}}"')
    (tmp / "demo-keys").symlink_to(ROOT / "demo-keys")
    path = tmp / "partners.toml"
    path.write_text(text, encoding="utf-8")
    return path, grpc_ports


async def scrape_totals(http: str) -> dict[str, float]:
    """The gateway's batching counters from /metrics (tongban_*_total)."""
    async with aiohttp.ClientSession() as session, \
            session.get(f"http://{http}/metrics") as answer:
        text = await answer.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name.startswith("tongban_") and name.endswith("_total"):
            out[name.removeprefix("tongban_").removesuffix("_total")] = float(value)
    return out


async def healthy(http: str, within: float = 30.0) -> None:
    async with asyncio.timeout(within), aiohttp.ClientSession() as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://{http}/healthz") as answer:
                    if answer.status == 200:
                        return
            await asyncio.sleep(0.1)


async def nginx(tmp: Path, port: int, upstream: int) -> Proc | None:
    # Debian installs it in /usr/sbin, which is not on every user's PATH
    binary = shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:/usr/bin:/usr/local/bin")
    if binary is None:
        return None
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
error_log {tmp}/nginx-error.log warn;
pid {tmp}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
  upstream partner {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} http2;
    location / {{ grpc_pass grpc://partner; }}
  }}
}}
""")
    proc = await spawn("nginx", binary, "-e", f"{tmp}/nginx-error.log", "-c", str(conf), "-p",
                       str(tmp), "-g", "daemon off; master_process off;")
    for _ in range(100):
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return proc
        await asyncio.sleep(0.05)
    raise RuntimeError("nginx did not start: " + (tmp / "nginx-error.log").read_text())


async def measure(load_argv: list[str], servers: dict[str, Proc]) -> dict[str, float]:
    load = await spawn("load", PY, "-m", "benchmarks.load", *load_argv)
    await load.wait_line("START", within=60)
    servers = {**servers, "load": load}  # the load generator shares the cores too
    before = {name: p.cpu() for name, p in servers.items()}
    threads_before = {name: thread_cpu(p.pid) for name, p in servers.items()}
    t0 = time.perf_counter()
    line = await load.wait_line("{", within=600)
    elapsed = time.perf_counter() - t0
    after = {name: p.cpu() for name, p in servers.items()}
    for name, p in servers.items():  # where each server's CPU went, for profiling
        now = thread_cpu(p.pid)
        spent = {t: now[t] - threads_before[name].get(t, 0.0) for t in now}
        print(f"    {name} threads: " + ", ".join(
            f"{t} {v / elapsed:.2f}" for t, v in sorted(spent.items(), key=lambda kv: -kv[1])
            if v > 0.01), file=sys.stderr)
    await load.proc.wait()
    result: dict[str, float] = json.loads(line)
    calls = max(result["calls"], 1)
    for name in servers:
        result[f"cpu_{name}_ms_per_1k"] = 1000 * 1000 * (after[name] - before[name]) / calls
        result[f"cpu_{name}_util"] = (after[name] - before[name]) / elapsed
    return result


async def start_gateway(name: str, gw: str, config: Path, args: argparse.Namespace,
                        concurrency: int) -> Proc:
    """`tongban serve` as gw (under py-spy with --profile, stacks named after the row)."""
    argv = [PY, "-m", "gateway.cli", "serve", "--config", str(config), "--as", gw]
    if args.profile:
        argv = profiled(argv, Path(args.profile) / f"{name}-{gw}-c{concurrency}.txt")
    proc = await spawn(gw, *argv)
    proc.profiled = bool(args.profile)
    return proc


async def certificate_scenario(name: str, tmp: Path, procs: list[Proc],
                               args: argparse.Namespace, concurrency: int,
                               common: list[str]) -> dict[str, float]:
    """Signed lookups from 310115 through 310000-gw and 320000-gw to the issuer 320681
    (or, certificate-direct, its FetchCertificates alone). Raises unless every measured
    call succeeded and every answer was the certificate asked for."""
    port = free_port()
    config, ports = bench_config(tmp, {cert.ISSUER: port}, batch=True,
                                 document_cache=0 if name == "certificate-nocache" else None)
    argv = [PY, "-m", "benchmarks.partner", "--port", str(port), "--sign", "--config",
            str(config), "--partner", cert.ISSUER, "--gateway", cert.ISSUER_GATEWAY,
            "--linger", PARTNER_LINGER_S, "--register", str(tmp / "register.sqlite3")]
    if args.profile:  # the issuer's own cost, to tell it from the gateways'
        argv = profiled(argv, Path(args.profile) / f"{name}-issuer-c{concurrency}.txt")
    issuer = await spawn("issuer", *argv)
    issuer.profiled = bool(args.profile)
    procs.append(issuer)
    await issuer.wait_line("READY")
    servers = {"issuer": issuer}
    if name == "certificate-direct":
        load = ["--kind", "fetch", "--target", f"127.0.0.1:{port}"]
    else:
        for n, gw in enumerate((cert.CONSUMER_GATEWAY, cert.ISSUER_GATEWAY)):
            servers[f"gateway{n + 1}"] = proc = await start_gateway(name, gw, config, args,
                                                                    concurrency)
            procs.append(proc)
            await healthy(ports[gw].split("|")[1])
        load = ["--kind", "certificate", "--gateway", cert.CONSUMER_GATEWAY]
    result = await measure([*load, "--config", str(config), *common], servers)
    if result["errors"] or result["invalid"] or not result["calls"]:
        raise RuntimeError(f"{name}: {int(result['calls'])} calls, {int(result['errors'])} "
                           f"failed, {int(result['invalid'])} wrong answers; first: "
                           f"{result.get('first_error', 'none')}")
    return result


async def scenario(name: str, args: argparse.Namespace, concurrency: int,
                   rate: float = 0.0) -> dict[str, float] | None:
    tmp = Path(tempfile.mkdtemp(prefix=f"tongban-bench-{name}-"))
    procs: list[Proc] = []
    common = ["--concurrency", str(concurrency), "--duration", str(args.duration),
              "--warmup", str(args.warmup), "--rate", str(rate)]
    try:
        if name in CERTIFICATE_ROWS:
            return await certificate_scenario(name, tmp, procs, args, concurrency, common)
        partner_port = free_port()
        if name in ("direct", "bare", "nginx"):
            partner = await spawn("partner", PY, "-m", "benchmarks.partner", "--port",
                                  str(partner_port))
            procs.append(partner)
            await partner.wait_line("READY")
            servers = {"partner": partner}
            target = f"127.0.0.1:{partner_port}"
            if name == "bare":
                port = free_port()
                argv = [PY, "-m", "benchmarks.forwarder", "--port", str(port), "--upstream",
                        target]
                if args.profile:  # the yardstick's profile, to hold the gateway's against
                    argv = profiled(argv, Path(args.profile) / f"bare-c{concurrency}.txt")
                fwd = await spawn("proxy", *argv)
                fwd.profiled = bool(args.profile)
                procs.append(fwd)
                await fwd.wait_line("READY")
                servers["proxy"], target = fwd, f"127.0.0.1:{port}"
            elif name == "nginx":
                port = free_port()
                proxy = await nginx(tmp, port, partner_port)
                if proxy is None:
                    return None
                procs.append(proxy)
                servers["proxy"], target = proxy, f"127.0.0.1:{port}"
            return await measure(["--kind", "raw", "--target", target, *common], servers)

        # routed: 310000 → 310000-gw → 310115; federated: 320105 → 320100-gw → 320000-gw → 320681
        # mixed: a case's whole life through 310000-gw, reports going back to 310000
        # "-1sig": every party signs each message on its own (no batch tokens)
        batch = not name.endswith("-1sig")
        mixed = name == "mixed"
        routed = name.startswith("routed") or mixed
        target_partner = "310115" if routed else "320681"
        platforms = {target_partner: partner_port, **({"310000": free_port()} if mixed else {})}
        config, ports = bench_config(tmp, platforms, batch)
        gateways = ["310000-gw"] if routed else ["320100-gw", "320000-gw"]
        partners: dict[str, Proc] = {}
        for pid, port in platforms.items():
            partners[pid] = await spawn(
                "partner", PY, "-m", "benchmarks.partner", "--port", str(port), "--sign",
                "--config", str(config), "--partner", pid, "--gateway", gateways[-1],
                *(["--linger", PARTNER_LINGER_S] if batch else []))
            procs.append(partners[pid])
            await partners[pid].wait_line("READY")
        partner = partners[target_partner]
        servers = {"partner": partner, **({"origin": partners["310000"]} if mixed else {})}
        for gw in gateways:
            proc = await start_gateway(name, gw, config, args, concurrency)
            procs.append(proc)
            await healthy(ports[gw].split("|")[1])
            servers[f"gateway{gateways.index(gw) + 1}" if not routed else "gateway"] = proc
        origin = "310000" if routed else "320105"
        division, item = ("310115", "yb-ba") if routed else ("320681", "jdc-wf")
        result = await measure(["--kind", "mixed" if mixed else "submit", "--config",
                                str(config), "--gateway", gateways[0], "--partner", origin,
                                "--target-partner", target_partner, "--division", division,
                                "--item", item, *common], servers)
        # delivery must keep up: wait for the platforms to have every acknowledged case
        # (and, mixed, the origin every acknowledged report)
        expected = {target_partner: result["cases_total"] if mixed else result["acked_total"],
                    **({"310000": result["updates_total"]} if mixed else {})}
        t0 = time.perf_counter()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(60):
                while any(partners[p].received() < n for p, n in expected.items()):  # noqa: ASYNC110
                    await asyncio.sleep(0.1)  # the platforms report their counts on stdout
        result["delivered"] = sum(partners[p].received() for p in expected)
        result["expected"] = sum(expected.values())
        result["partner_signatures"] = partner.signatures()
        unit = "case" if mixed else "acked call"
        for gw in gateways:  # how well batching worked, over the whole run
            totals = await scrape_totals(ports[gw].split("|")[1])
            acked = max(result["cases_total"] if mixed else result["acked_total"], 1)
            per_sig = totals["batch_signed_messages"] / max(totals["batch_signatures"], 1)
            print(f"    {gw} per {unit}: commits {totals['store_commits'] / acked:.2f}, "
                  f"signature checks {totals['signature_checks'] / acked:.2f}, messages per "
                  f"batch signature {per_sig:.1f}", file=sys.stderr)
        result["drain_s"] = time.perf_counter() - t0
        return result
    finally:
        await stop(procs)
        shutil.rmtree(tmp, ignore_errors=True)


def table(rows: list[tuple[str, int, dict[str, float] | None]]) -> str:
    out = ["| scenario | in flight | calls/s | p50 ms | p99 ms | errors "
           "| CPU ms / 1k calls (per process) |",
           "|---|---:|---:|---:|---:|---:|---|"]
    for name, conc, r in rows:
        if r is None:
            out.append(f"| {name} | {conc} | skipped (nginx not installed) | | | | |")
            continue
        cpu = ", ".join(f"{k[4:-len('_ms_per_1k')]} {v:,.0f}" for k, v in r.items()
                        if k.startswith("cpu_") and k.endswith("_ms_per_1k"))
        extra = ""
        if "delivered" in r:
            extra = f" (delivered {int(r['delivered'])}/{int(r['expected'])}, " \
                    f"drained in {r['drain_s']:.1f} s)"
        elif "answers_checked" in r:
            extra = f" (answers checked {int(r['answers_checked'])}, status verified in " \
                    f"{int(r['answers_in_full'])})"
        out.append(f"| {name} | {conc} | {r['rate']:,.0f} | {r['p50_ms']:.2f} | "
                   f"{r['p99_ms']:.2f} | {int(r['errors'])} | {cpu}{extra} |")
    return "\n".join(out)


def ratios(results: dict[str, dict[str, float] | None]) -> list[str]:
    lines = []
    direct, bare, plain, routed = (results.get(k) for k in ("direct", "bare", "nginx", "routed"))
    fed = results.get("federated")
    if routed and direct:
        lines.append(f"routed / direct throughput: {routed['rate'] / direct['rate']:.2f}  "
                     "(target ≥ 0.30 on 2 shared cores)")
    if routed and plain:
        lines.append(f"routed / nginx grpc_pass throughput: {routed['rate'] / plain['rate']:.2f}")
    if bare and direct:
        lines.append(f"bare forwarder / direct throughput: {bare['rate'] / direct['rate']:.2f}")
    if fed and direct:
        lines.append(f"federated / direct throughput: {fed['rate'] / direct['rate']:.2f}")
    for label in ("routed", "routed-1sig"):
        one = results.get(label)
        if one and bare:
            g, b = one["cpu_gateway_ms_per_1k"], bare["cpu_proxy_ms_per_1k"]
            lines.append(f"gateway CPU per {label} call / bare forwarder CPU per call: "
                         f"{g / b:.2f}  ({g:.0f} µs vs {b:.0f} µs; target ≤ 2.0, stretch 1.5)")
        if one and direct and label != "routed":
            lines.append(f"{label} / direct throughput: {one['rate'] / direct['rate']:.2f}")
    lines += certificate_ratios(results)
    mix = results.get("mixed")
    if mix and mix.get("by_call"):
        by_call = mix["by_call"]
        assert isinstance(by_call, dict)
        lines.append("mixed latency by call, p50 / p99 ms: " + ", ".join(
            f"{name} {p50:.1f} / {p99:.1f}" for name, (p50, p99) in by_call.items()))
    if mix and bare:
        # a case: 5 calls served, 4 deliveries made = 9 gRPC hops; a bare call is 2
        per_case, b = 5 * mix["cpu_gateway_ms_per_1k"], bare["cpu_proxy_ms_per_1k"]
        lines.append(f"mixed: gateway CPU per case / 4.5 bare forwarder calls (same 9 hops): "
                     f"{per_case / (4.5 * b):.2f}  ({per_case:,.0f} µs per case, "
                     f"{mix['rate'] / 5:,.0f} cases/s)")
    return lines


def certificate_ratios(results: dict[str, dict[str, float] | None]) -> list[str]:
    lines = []
    lookup, direct, nocache = (results.get(k) for k in CERTIFICATE_ROWS)
    if lookup and direct:
        lines.append(f"certificate / certificate-direct throughput: "
                     f"{lookup['rate'] / direct['rate']:.2f}  (goal ≥ 0.30 on 2 cores)")
    if lookup:
        gw = lookup["cpu_gateway1_ms_per_1k"] + lookup["cpu_gateway2_ms_per_1k"]
        lines.append(f"certificate: gateway CPU per lookup {gw:,.0f} µs (310000-gw "
                     f"{lookup['cpu_gateway1_ms_per_1k']:,.0f} + 320000-gw "
                     f"{lookup['cpu_gateway2_ms_per_1k']:,.0f}), issuer "
                     f"{lookup['cpu_issuer_ms_per_1k']:,.0f} µs"
                     + (f" (direct: {direct['cpu_issuer_ms_per_1k']:,.0f} µs)"
                        if direct else ""))
    if lookup and nocache:
        on = lookup["cpu_gateway1_ms_per_1k"] + lookup["cpu_gateway2_ms_per_1k"]
        off = nocache["cpu_gateway1_ms_per_1k"] + nocache["cpu_gateway2_ms_per_1k"]
        lines.append(f"certificate-nocache / certificate throughput: "
                     f"{nocache['rate'] / lookup['rate']:.2f}  (document cache off vs on; "
                     f"gateway CPU per lookup {off:,.0f} vs {on:,.0f} µs)")
    return lines


def by_round(runs: dict[str, list[dict[str, float] | None]]) -> list[str]:
    """The certificate ratios of each round on its own: the rounds ran minutes apart on a
    machine whose speed drifts, and the medians of two rows may come from different ones."""
    lines = []
    for top, bottom in (("certificate", "certificate-direct"),
                        ("certificate-nocache", "certificate")):
        pairs = list(zip(runs.get(top, []), runs.get(bottom, []), strict=False))
        if len(pairs) > 1:
            lines.append(f"{top} / {bottom} by round: " + ", ".join(
                f"{a['rate'] / b['rate']:.2f}" if a and b else "-" for a, b in pairs))
    return lines


def median_run(runs: list[dict[str, float] | None]) -> dict[str, float] | None:
    """The run with the median rate (a run, not a blend: its row stays consistent)."""
    done = sorted((r for r in runs if r is not None), key=lambda r: r["rate"])
    return done[len(done) // 2] if done else None


async def sessions_step(args: argparse.Namespace) -> int:
    """benchmarks/sessions.py in its own process, its tables on this one's stdout."""
    print("\n屏对屏 session relay (benchmarks/sessions.py)", flush=True)
    proc = await asyncio.create_subprocess_exec(
        PY, "-m", "benchmarks.sessions", *shlex.split(args.sessions_args), cwd=ROOT)
    return await proc.wait()


async def main_async(args: argparse.Namespace) -> int:
    """The rows (with the latency and sweep parts), then the sessions step if chosen: its
    exit status (non-zero when the gateways lost, repeated or reordered an event)."""
    chosen = args.scenarios.split(",")
    rows = [name for name in chosen if name != "sessions"]
    if rows:
        await rows_async(args, rows)
    return await sessions_step(args) if "sessions" in chosen else 0


async def rows_async(args: argparse.Namespace, names: list[str]) -> None:
    runs: dict[str, list[dict[str, float] | None]] = {name: [] for name in names}
    for _ in range(args.repeat):  # rounds interleave the scenarios: noise hits them alike
        for name in names:
            result = await scenario(name, args, args.concurrency)
            runs[name].append(result)
            print(f"  {name}: {json.dumps(result) if result else 'skipped'}", file=sys.stderr)
    main = {name: median_run(runs[name]) for name in names}
    if args.repeat > 1:
        print(f"Median of {args.repeat} interleaved runs per scenario (by calls/s)\n")
    print(table([(name, args.concurrency, main[name]) for name in names]))
    print()
    print("\n".join(ratios(main) + by_round(runs)))
    routed = main.get("routed")
    if args.latency and routed:
        rate = routed["rate"] / 2
        added: list[tuple[float, dict[str, float], dict[str, float]]] = []
        for _ in range(args.repeat):
            direct_half = await scenario("direct", args, args.concurrency, rate)
            routed_half = await scenario("routed", args, args.concurrency, rate)
            if direct_half and routed_half:
                added.append((routed_half["p99_ms"] - direct_half["p99_ms"], direct_half,
                              routed_half))
        print(f"\nLatency at half the routed saturation rate ({rate:,.0f} calls/s, open loop)\n")
        if added:
            added.sort(key=lambda a: a[0])
            mid = added[len(added) // 2]
            print(table([("direct", 0, mid[1]), ("routed", 0, mid[2])]))
            spread = (f" (median of {len(added)}; range {added[0][0]:.2f}–{added[-1][0]:.2f})"
                      if len(added) > 1 else "")
            print(f"\np99 added by the gateway: {mid[0]:.2f} ms{spread} (target ≤ 5 ms)")
    if args.sweep:
        sweep_rows: list[tuple[str, int, dict[str, float] | None]] = []
        for conc in (int(c) for c in args.sweep.split(",")):
            for name in args.sweep_scenarios.split(","):
                sweep_rows.append((name, conc, await scenario(name, args, conc)))
        print("\nConcurrency sweep\n")
        print(table(sweep_rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=1,
                        help="interleaved rounds; each row is the median run (noisy hosts)")
    parser.add_argument("--scenarios", default=DEFAULT_SCENARIOS)
    parser.add_argument("--sweep", default="", help="e.g. 1,16,64,256")
    parser.add_argument("--latency", action="store_true",
                        help="also measure p99 at half the routed saturation rate")
    parser.add_argument("--sweep-scenarios", default="direct,bare,routed,mixed")
    parser.add_argument("--profile", help="run gateways, the bare forwarder and the issuer "
                        "under py-spy, stacks into this folder")
    parser.add_argument("--sessions-args", default="",
                        help='options of the sessions step, e.g. "--sessions 200 --duration 10"')
    args = parser.parse_args()
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
