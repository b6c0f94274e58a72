"""The benchmark scripts still work (issue #5: CI runs each scenario for a few seconds).

Not a performance test: nothing here looks at a rate or a latency. It checks that every
scenario starts its processes, moves calls without errors, delivers every acknowledged
case, and prints its table and ratios.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import certificate as cert
from benchmarks import run as bench
from benchmarks import session_load as sessions
from benchmarks.partner import open_register
from gateway.config import load_config
from gateway.pb.tongban.v1 import certificate_pb2 as cpb
from gateway.signing import load_private_key
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


def test_certificate_rows_run() -> None:
    """Lookups through two gateways, the issuer alone, and the lookups without the document
    cache: each moves calls, every answer checked, and the ratios are printed."""
    out = run("benchmarks.run", "--duration", "0.8", "--warmup", "0.3", "--concurrency", "8",
              "--scenarios", "certificate,certificate-direct,certificate-nocache")
    for name in ("certificate", "certificate-direct", "certificate-nocache"):
        row = re.search(rf"^\| {name} \| 8 \| ([\d,]+) \|.*\| (\d+) \| .*answers checked "
                        r"(\d+), status verified in (\d+)\)", out, re.M)
        assert row, out
        assert row[1] != "0" and row[2] == "0" and int(row[3]) > 0, (name, row.groups())
    assert "certificate / certificate-direct throughput" in out
    assert "certificate-nocache / certificate throughput" in out


@pytest.mark.asyncio
async def test_a_certificate_row_fails_on_wrong_answers(tmp_path: Path) -> None:
    """The row stops the run, naming the trouble, when the answers are not a valid
    certificate: here the issuer's register (made before the row starts it) has revoked
    李四's 不动产权证书, so the gateways answer it with status REVOKED, as they must."""
    cfg = load_config(ROOT / "partners.toml", self_id=cert.ISSUER_GATEWAY)
    key = load_private_key((ROOT / "demo-keys" / f"{cert.ISSUER}.pem").read_bytes(),
                           kid=f"{cert.ISSUER}#k1")
    issuer = await open_register(cfg, cert.ISSUER, key, str(tmp_path / "register.sqlite3"))
    await issuer.revoke(cert.NUMBER)
    await issuer.close()
    args = argparse.Namespace(profile=None)
    procs: list[bench.Proc] = []
    try:
        with pytest.raises(RuntimeError) as failed:
            await bench.certificate_scenario(
                "certificate", tmp_path, procs, args, 2,
                ["--concurrency", "2", "--duration", "0.5", "--warmup", "0.2", "--rate", "0"])
    finally:
        await bench.stop(procs)
    assert "wrong answers" in str(failed.value) and "REVOKED" in str(failed.value), failed.value
    assert "0 wrong answers" not in str(failed.value)


def test_the_answer_check_refuses_what_was_not_asked() -> None:
    """No certificate, or one found elsewhere than at the issuer, is a wrong answer."""
    check = cert.AnswerCheck(())
    with pytest.raises(cert.BadAnswer, match="0 certificates"):
        check.fetched(cpb.FetchCertificatesResponse().SerializeToString())
    elsewhere = cpb.LookupCertificateResponse(certificate=cpb.Certificate(
        metadata=cpb.CertificateMetadata(number=cert.NUMBER,
                                         status=cpb.CERTIFICATE_STATUS_VALID),
        found_at=cpb.FoundAt(partner="320105", gateway="320100-gw")))
    with pytest.raises(cert.BadAnswer, match="from 320105"):
        check.lookup(elsewhere)
    with pytest.raises(cert.BadAnswer, match="does not verify"):
        check.issued("not.a.document", "")


def test_memory_and_scaling_scripts_run() -> None:
    out = run("benchmarks.memory", "--cases", "200", "--watchers", "20")
    assert re.search(r"\d+(\.\d+)? MB", out), out
    out = run("benchmarks.scale", "--processes", "1,2", "--duration", "0.8", "--warmup", "0.3")
    assert "efficiency" in out, out


def test_the_session_relay_step_runs() -> None:
    """`benchmarks.run`'s sessions step, tiny: two sessions, half a second per step, both
    directions. The command fails if any message does not reach both sockets once and in
    order; here the tables must show samples in every direction and no problems."""
    out = run("benchmarks.run", "--scenarios", "sessions", "--sessions-args",
              "--sessions 2 --rates 8 --duration 0.5 --warmup 0.2 --idle 0.2 "
              "--remote-every 2 --batch 2 --open-budget-s 0.1")
    for server in ("direct echo", "gateways"):
        cells = re.search(rf"^\| {server} \| ([\d,]+) \(8\) \| (.*)$", out, re.M)
        assert cells, out
        latency, problems = cells[2].split(" | ")[:3], cells[2].split(" | ")[3]
        assert int(cells[1]) > 0 and problems == "0", cells.groups()
        assert all(re.fullmatch(r"[\d.]+ / [\d.]+ / [\d.]+", c) for c in latency), latency
    assert "origin→remote p99 at" in out and "gateway CPU per relayed message" in out
    assert re.search(r"320000-gw: [\d.]+ → [\d.]+ → [\d.]+ MB", out), out
    assert re.search(r"closed \d+ sessions in [\d.]+ s \(0 failed\)", out), out
    assert "PROBLEMS" not in out


def test_the_session_load_counts_what_goes_wrong() -> None:
    """The load generator's bookkeeping: an event twice, a gap in the sequence, an event
    nobody sent: each is a problem (and a problem fails the command)."""
    load = sessions.Load(argparse.Namespace(echo=None, remote_every=4))
    origin = sessions.Socket(ws=None, side="o", name="origin-0")  # type: ignore[arg-type]
    remote = sessions.Socket(ws=None, side="r", name="remote-0")  # type: ignore[arg-type]
    load.sent["o0.0"] = sessions.Sent("o", measured=True)
    chat = {"seq": 1, "type": "chat", "cid": "o0.0", "text": "0"}
    load._event(remote, chat, now=1.0)
    assert load.sent["o0.0"].cross and not load.problems
    assert len(load.latency["o>r"]) == 1
    load._event(remote, {**chat, "seq": 2}, now=1.0)  # the same message again
    load._event(origin, {**chat, "seq": 2}, now=1.0)  # its own: seq 1 never came
    load._event(origin, {**chat, "seq": 3, "cid": "o0.9"}, now=1.0)  # never sent
    assert load.problems == {"events received twice": 1,
                             "events out of order or missing (seq gap)": 1,
                             "events after the drain (late)": 1}
    assert load.sent["o0.0"].own and len(load.latency["o>r"]) == 1
