"""The tongban command and the HTTP side, as an operator meets them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from gateway.pb.tongban.v1 import gateway_pb2 as gw
from gateway.signing import public_key_from_jwk, sign
from gateway.verifier import Verifier
from tests.federation import ROOT, Federation

TONGBAN = [sys.executable, "-m", "gateway.cli"]


def run(*args: str, stdin: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([*TONGBAN, *args], input=stdin, capture_output=True, cwd=ROOT,
                          timeout=timeout, env=env, check=False)


@pytest.mark.asyncio
async def test_jwks_and_health_over_http(fed: Federation) -> None:
    app = fed.apps["320100-gw"]
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://{app.config.me.http}/.well-known/jwks.json") as resp:
            assert resp.status == 200
            jwks = await resp.json()
        async with http.get(f"http://{app.config.me.http}/healthz") as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "ok"
    [jwk] = jwks["keys"]
    assert jwk["kid"] == "320100-gw#k1" and jwk["alg"] == "EdDSA"
    # a token signed by the gateway verifies with the key it publishes
    public = public_key_from_jwk(jwk, kid=jwk["kid"])
    token, _ = sign(app.config.signing_key, iss="320100-gw", aud="x", method="/m", body=b"b",
                    now=time.time())
    Verifier(audience="x", keys_for=lambda _: [public]).verify_request(
        token, method="/m", body=b"b", now=time.time())


def test_keys_generate_and_token(tmp_path: Path) -> None:
    made = run("keys", "generate", "--id", "320105", "--key-id", "k7", "--out", str(tmp_path))
    assert made.returncode == 0, made.stderr
    assert b'id = "k7"' in made.stdout and (tmp_path / "320105.pem").exists()
    assert run("keys", "generate", "--id", "320105", "--out", str(tmp_path)).returncode == 1

    body = gw.GetCaseRequest(case_id="01ABC").SerializeToString()
    minted = run("token", "--key", str(tmp_path / "320105.pem"), "--iss", "320105",
                 "--key-id", "k7", "--aud", "320100-gw", "--method",
                 "/tongban.v1.Gateway/GetCase", "--body", "-", stdin=body)
    assert minted.returncode == 0, minted.stderr
    jwk_line = next(line for line in made.stdout.decode().splitlines() if line.startswith("jwk"))
    x = jwk_line.split('x = "')[1].split('"')[0]
    public = public_key_from_jwk({"kty": "OKP", "crv": "Ed25519", "x": x}, kid="320105#k7")
    claims = Verifier(audience="320100-gw", keys_for=lambda _: [public]).verify_request(
        minted.stdout.decode().strip(), method="/tongban.v1.Gateway/GetCase", body=body,
        now=time.time())
    assert claims.iss == "320105"


def test_broken_config_stops_serve_with_one_line(tmp_path: Path) -> None:
    text = (ROOT / "partners.toml").read_text(encoding="utf-8")
    broken = tmp_path / "partners.toml"
    broken.write_text(text.replace("time_limit_days = 3\n", "time_limit_days = 0\n", 1),
                      encoding="utf-8")
    (tmp_path / "demo-keys").symlink_to(ROOT / "demo-keys")
    result = run("serve", "--config", str(broken), timeout=30)
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert "items[0].time_limit_days" in lines[0] and "partners.toml:" in lines[0]


def test_demo_runs_to_the_end() -> None:
    result = run("demo", timeout=120)
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert out.count("COMPLETED") == 6  # five case timelines and the bundle's aggregate
    assert "aggregate state: COMPLETED" in out and "rated 5/5" in out
    assert "320100-jc, Subscribe) saw:" in out and "state_changed" in out
    assert "PERMISSION_DENIED" in out and "duplicate=True" in out
    assert "闸北区并入静安区" in out
    assert "exported and verified offline with the federation's public keys (0 bad)" in out


def test_json_roundtrip_of_jwks_is_stable() -> None:
    jwk = json.loads(json.dumps({"kty": "OKP", "crv": "Ed25519",
                                 "x": "ELCiVN52KdFpG24JlczKgouJo_t-GbNJJfeXGpD38So"}))
    assert public_key_from_jwk(jwk, kid="a#b").jwk()["x"] == jwk["x"]
