"""The benchmark scripts still work (issue #5: CI runs each scenario for a few seconds).

Not a performance test: nothing here looks at a rate or a latency. It checks that every
scenario starts its processes, moves calls without errors, delivers every acknowledged
case, and prints its table and ratios.
"""

from __future__ import annotations

import re
import subprocess
import sys

from tests.federation import ROOT


def run(*args: str, timeout: float = 240) -> str:
    done = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_every_scenario_runs() -> None:
    out = run("benchmarks.run", "--duration", "0.8", "--warmup", "0.3", "--concurrency", "8",
              "--scenarios", "direct,bare,nginx,routed,routed-1sig,federated,mixed")
    rows = {m[0]: m for m in re.findall(r"^\| ([a-z0-9-]+) \| (\d+) \| (.*)$", out, re.M)}
    for name in ("direct", "bare", "routed", "routed-1sig", "federated", "mixed"):
        assert name in rows, out
        cells = [c.strip() for c in rows[name][2].split("|")]
        assert cells[0] != "skipped" and cells[3] == "0", (name, cells)  # calls, no errors
    for name in ("routed", "routed-1sig", "federated", "mixed"):
        delivered = re.search(rf"^\| {name} .*delivered (\d+)/(\d+)", out, re.M)
        assert delivered and delivered[1] == delivered[2] != "0", out
    assert "routed / direct throughput" in out
    assert "gateway CPU per routed call / bare forwarder CPU per call" in out
    assert "mixed: gateway CPU per case" in out


def test_memory_and_scaling_scripts_run() -> None:
    out = run("benchmarks.memory", "--cases", "200", "--watchers", "20")
    assert re.search(r"\d+(\.\d+)? MB", out), out
    out = run("benchmarks.scale", "--processes", "1,2", "--duration", "0.8", "--warmup", "0.3")
    assert "efficiency" in out, out
