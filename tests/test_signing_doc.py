"""docs/signing.md's worked example must match what the code produces and verifies."""

from __future__ import annotations

from gateway.signing import public_key_from_jwk
from gateway.verifier import Verifier
from scripts.signing_example import IAT, METHOD, example
from tests.federation import ROOT


def test_worked_example_is_current() -> None:
    doc = (ROOT / "docs" / "signing.md").read_text(encoding="utf-8")
    ex = example()
    for value in ex.values():
        assert value in doc
    public = public_key_from_jwk({"kty": "OKP", "crv": "Ed25519", "x": ex["x"]},
                                 kid="320105#k1")
    claims = Verifier(audience="320100-gw", keys_for=lambda _: [public]).verify_request(
        ex["token"], method=METHOD, body=bytes.fromhex(ex["body_hex"]), now=IAT + 1)
    assert claims.iss == "320105"
