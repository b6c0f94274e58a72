"""Keys for the certificate tests: a few parties with fresh Ed25519 keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from gateway.signing import (
    PublicKey,
    SigningKey,
    generate_private_key,
    load_private_key,
    public_key_from_jwk,
)


def party(kid: str, *, not_before: datetime | None = None, not_after: datetime | None = None
          ) -> tuple[SigningKey, PublicKey]:
    pem, jwk = generate_private_key()
    return (load_private_key(pem, kid=kid),
            public_key_from_jwk(jwk, kid=kid, not_before=not_before, not_after=not_after))


def lookup(*keys: PublicKey):  # type: ignore[no-untyped-def]
    def keys_for(owner: str) -> Sequence[PublicKey]:
        return [k for k in keys if k.owner == owner]
    return keys_for
