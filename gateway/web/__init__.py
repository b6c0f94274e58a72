"""aiohttp side of the gateway: JWKS, health; the console and dashboard come later."""
