"""Gateways of the demo federation as real `tongban serve` processes, each on its own
free loopback ports with its store under a test's tmp_path: what a browser test talks to
when the two sides of a session must be two processes (one can be killed and started
again on the same ports and data dir)."""

from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import aiohttp

from gateway.config import Config, load_config
from gateway.demo import on_free_ports
from tests.federation import PARTNERS_TOML, ROOT, until


def federation_file(tmp_path: Path) -> Path:
    """partners.toml rebound to free ports, data dirs under tmp_path/var: every gateway
    of the file gets fresh ports, so peers that are not started fail fast."""
    text = PARTNERS_TOML.read_text(encoding="utf-8")
    base = load_config(PARTNERS_TOML, text=text)
    for gateway_id, (grpc, http) in on_free_ports(base).items():
        known = base.gateways[gateway_id]
        text = text.replace(f'grpc = "{known.grpc}"', f'grpc = "{grpc}"')
        text = text.replace(f'http = "{known.http}"', f'http = "{http}"')
    text = text.replace('data_dir = "var/{id}"', f'data_dir = "{tmp_path}/var/{{id}}"')
    if not (tmp_path / "demo-keys").exists():
        (tmp_path / "demo-keys").symlink_to(ROOT / "demo-keys")  # private_key is relative
    path = tmp_path / "partners.toml"
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class Served:
    """One `tongban serve --as ID` process; its stderr goes to ``log``."""

    config_path: Path
    gateway_id: str
    log: Path
    log_level: str = "WARNING"
    proc: asyncio.subprocess.Process | None = field(default=None, repr=False)

    @cached_property
    def config(self) -> Config:
        return load_config(self.config_path, self_id=self.gateway_id)

    @property
    def http(self) -> str:
        return self.config.me.http

    async def start(self, within: float = 30.0) -> None:
        """Start the process and wait until its /readyz answers 200."""
        with self.log.open("ab") as sink:  # the child keeps its own descriptor
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway.cli", "--log-level", self.log_level, "serve",
                "--config", str(self.config_path), "--as", self.gateway_id, cwd=ROOT,
                stdout=asyncio.subprocess.DEVNULL, stderr=sink)
        await until(self._ready, within=within)

    async def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.returncode is not None:
            raise AssertionError(f"{self.gateway_id} exited {self.proc.returncode}: "
                                 f"{self.log.read_text(errors='replace')[-2000:]}")
        try:
            async with aiohttp.ClientSession() as http, http.get(
                    f"http://{self.http}/readyz") as answer:
                return answer.status == 200
        except aiohttp.ClientError:
            return False

    async def kill(self) -> None:
        """SIGKILL: no goodbye to anyone (sockets reset, memory gone)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> int:
        """SIGTERM and the exit status (0 for a clean stop); SIGKILL after 20 s."""
        if self.proc is None or self.proc.returncode is not None:
            return 0 if self.proc is None else self.proc.returncode or 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(20):
                return await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            return -signal.SIGKILL
