"""The workhorse fixture: the demo federation of partners.toml on fresh loopback ports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from adapters.embedded import EmbeddedAdapter
from gateway.app import GatewayApp
from gateway.config import Config, load_config
from gateway.demo import GATEWAYS, client_for, on_free_ports, rebind
from gateway.partner_client import PartnerClient
from gateway.types import Clock

ROOT = Path(__file__).resolve().parent.parent
PARTNERS_TOML = ROOT / "partners.toml"


class FakeClock:
    """Wall time that moves only when a test says so; gateways and clients share it, so
    signatures stay valid across a jump of days."""

    def __init__(self, start: float) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class Federation:
    apps: dict[str, GatewayApp]
    clients: dict[str, PartnerClient] = field(default_factory=dict)
    clock: Clock | None = None

    @property
    def config(self) -> Config:
        return self.apps[GATEWAYS[0]].config

    def app_of(self, partner_id: str) -> GatewayApp:
        return self.apps[self.config.partners[partner_id].gateway]

    def client(self, partner_id: str) -> PartnerClient:
        if partner_id not in self.clients:
            self.clients[partner_id] = client_for(self.config, partner_id, self.clock)
        return self.clients[partner_id]

    def platform(self, partner_id: str) -> EmbeddedAdapter:
        adapter = self.app_of(partner_id).adapters[partner_id]
        assert isinstance(adapter, EmbeddedAdapter)
        return adapter


def federation_text(auto: str = "complete") -> str:
    text = PARTNERS_TOML.read_text(encoding="utf-8")
    return text.replace('auto = "complete", step_delay_s = 0.05',
                        f'auto = "{auto}", step_delay_s = 0.01')


@asynccontextmanager
async def federation(tmp_path: Path, *, auto: str = "complete", clock: Clock | None = None,
                     gateways: tuple[str, ...] = GATEWAYS,
                     text: str | None = None) -> AsyncIterator[Federation]:
    text = text or federation_text(auto)
    base = load_config(PARTNERS_TOML, text=text)
    ports = on_free_ports(base)
    apps = {g: GatewayApp(rebind(load_config(PARTNERS_TOML, self_id=g, text=text), ports,
                                 tmp_path), clock=clock)
            for g in gateways}
    fed = Federation(apps, clock=clock)
    started: list[GatewayApp] = []
    try:
        for app in apps.values():
            await app.start()
            started.append(app)
        yield fed
    finally:
        for client in fed.clients.values():
            await client.close()
        for app in reversed(started):
            await app.stop(grace_s=0.1)


async def until(predicate: Callable[[], Awaitable[bool]], *, within: float = 15.0) -> None:
    """Poll what has no change feed (another process's store, a counter) until it holds."""
    async with asyncio.timeout(within):
        while not await predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
