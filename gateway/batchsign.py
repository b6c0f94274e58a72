"""Batch signing: the messages signed in one event-loop turn share one signature.

Under load a gateway answers many calls at once (a group commit wakes every caller of
its batch in the same turn) and sends many deliveries at once. Each message still gets
its own claims (aud, jti, bdg, rti/rdg); only the Ed25519 operation is shared, over a
hash tree of those claims (gateway/merkle.py, docs/signing.md §7). Nothing waits for a
batch to fill: a flush runs on the next turn of the loop, so a lone message is signed
at once, as an ordinary compact JWS, and the added latency is one loop turn. A server
whose calls arrive one per loop turn (grpc.aio accepts one call per turn) and answer
without awaiting anything shared can choose ``linger_s``: wait that long for company.

Only parties that say they verify batch tokens (``batch_signatures`` in partners.toml,
on by default for gateways) are sent them.
"""

from __future__ import annotations

import asyncio

from gateway.signing import TYP, Claims, SigningKey, claims_for, compact, seal


class BatchSigner:
    def __init__(self, key: SigningKey, issuer: str, *, max_batch: int = 256,
                 linger_s: float = 0.0) -> None:
        self.key, self.issuer = key, issuer
        self._max, self._linger = max_batch, linger_s
        self._pending: list[tuple[bytes, asyncio.Future[str]]] = []
        self._scheduled = False
        self.signatures = 0  # Ed25519 operations made, for tests and /metrics
        self.messages = 0

    async def sign(self, *, aud: str, method: str, body: bytes, now: float,
                   request: Claims | None = None, alone: bool = False) -> tuple[str, Claims]:
        """The token for one message, signed together with the others of this turn;
        alone: an ordinary JWS at once, for a receiver that does not take batch tokens."""
        claims, payload = claims_for(self.key, iss=self.issuer, aud=aud, method=method,
                                     body=body, now=now, request=request)
        if alone:
            return compact(self.key, TYP, payload), claims
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        self._pending.append((payload, future))
        if len(self._pending) >= self._max:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            if self._linger > 0:
                loop.call_later(self._linger, self._flush)
            else:
                loop.call_soon(self._flush)
        return await future, claims

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            tokens = seal(self.key, self.issuer, [payload for payload, _ in batch])
        except Exception as exc:  # a broken key: every waiting caller hears it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.signatures += 1
        self.messages += len(batch)
        for (_, future), token in zip(batch, tokens, strict=True):
            if not future.done():  # its caller gave up (cancelled)
                future.set_result(token)
