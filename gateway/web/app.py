"""HTTP endpoints: GET /.well-known/jwks.json (our public keys) and GET /healthz."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from gateway.config import Config


def make_app(config: Config, ready: Callable[[], bool]) -> web.Application:
    jwks = {"keys": [key.jwk() for key in config.me.keys]}

    async def keys(_: web.Request) -> web.Response:
        return web.json_response(jwks, headers={"Cache-Control": "max-age=300"})

    async def health(_: web.Request) -> web.Response:
        ok = ready()
        return web.json_response({"status": "ok" if ok else "starting", "gateway": config.self_id},
                                 status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", keys)
    app.router.add_get("/healthz", health)
    return app
