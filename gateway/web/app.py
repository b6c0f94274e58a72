"""HTTP endpoints: GET /.well-known/jwks.json (our public keys), GET /healthz (liveness)
and GET /readyz (readiness: keys loaded and the store writable) on the main site;
GET /metrics (Prometheus text format) on the admin site (docs/configuration.md,
Transport security: where /metrics is served)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from aiohttp import web

from gateway.config import Config

Metrics = Callable[[], Awaitable[bytes]]


def make_app(config: Config, ready: Callable[[], bool], metrics: Metrics | None, *,
             writable: Callable[[], Awaitable[bool]] | None = None,
             sessions: SessionRoutes | None = None) -> web.Application:
    """The main site; metrics None keeps /metrics off it (it is served on the admin site).

    ready: the process has started (keys loaded, listening); writable: the store takes
    writes now (a disk that filled turns /readyz red while /healthz stays green:
    restarting a process whose disk is full mends nothing, routing calls elsewhere does).
    """
    jwks = {"keys": [key.jwk() for key in config.me.keys]}

    async def keys(_: web.Request) -> web.Response:
        return web.json_response(jwks, headers={"Cache-Control": "max-age=300"})

    async def health(_: web.Request) -> web.Response:
        ok = ready()
        return web.json_response({"status": "ok" if ok else "starting", "gateway": config.self_id},
                                 status=200 if ok else 503)

    async def readiness(_: web.Request) -> web.Response:
        started = ready()
        store = started and (writable is None or await writable())
        ok = started and store
        return web.json_response({"status": "ready" if ok else "not ready",
                                  "gateway": config.self_id,
                                  "keys": "loaded" if started else "starting",
                                  "store": "writable" if store else "failing"},
                                 status=200 if ok else 503)

    app = web.Application()
    if metrics is not None:
        add_metrics(app, metrics)
    app.router.add_get("/.well-known/jwks.json", keys)
    app.router.add_get("/healthz", health)
    app.router.add_get("/readyz", readiness)
    if sessions is not None:
        add_sessions(app, sessions)
    return app


class SessionRoutes(Protocol):
    """What the 屏对屏 part of the site needs (gateway/sessions/hub.SessionHub)."""

    async def websocket(self, request: web.Request) -> web.StreamResponse: ...

    async def upload(self, request: web.Request) -> web.StreamResponse: ...

    async def download(self, request: web.Request) -> web.StreamResponse: ...


CONSOLE = Path(__file__).parent / "console"


def add_sessions(app: web.Application, sessions: SessionRoutes) -> None:
    """The clerk console (static files), its WebSocket and the session materials
    (docs/sessions.md §4–§5)."""
    app.router.add_get("/sessions/ws", sessions.websocket)
    app.router.add_post("/sessions/{session}/materials", sessions.upload)
    app.router.add_get("/sessions/{session}/materials/{sha256}", sessions.download)

    async def console_index(_: web.Request) -> web.StreamResponse:
        return web.FileResponse(CONSOLE / "index.html",
                                headers={"Cache-Control": "no-store"})

    async def console_slash(_: web.Request) -> web.StreamResponse:
        raise web.HTTPPermanentRedirect("/sessions/console/")

    if (CONSOLE / "index.html").exists():
        app.router.add_get("/sessions/console", console_slash)
        app.router.add_get("/sessions/console/", console_index)
        app.router.add_static("/sessions/console/", CONSOLE, show_index=False)


def add_metrics(app: web.Application, metrics: Metrics) -> None:
    async def scrape(_: web.Request) -> web.Response:
        return web.Response(body=await metrics(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    app.router.add_get("/metrics", scrape)


def make_admin_app(metrics: Metrics) -> web.Application:
    """The admin site (loopback unless allow_plaintext): what operators scrape."""
    app = web.Application()
    add_metrics(app, metrics)
    return app
