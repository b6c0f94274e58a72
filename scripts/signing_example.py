"""Print the worked example of docs/signing.md (tests/test_signing_doc.py checks the doc)."""

from __future__ import annotations

import json

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import gateway_pb2 as gw
from gateway.signing import b64url, body_digest, load_private_key, sign

SEED = bytes(range(32))
IAT = 1_790_000_000
JTI = "AAECAwQFBgcICQoLDA0ODw"
METHOD = "/tongban.v1.Gateway/SubmitCase"


def example() -> dict[str, str]:
    private = ed25519.Ed25519PrivateKey.from_private_bytes(SEED)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    key = load_private_key(pem, kid="320105#k1")
    body = gw.SubmitCaseRequest(
        case_number="JY-2026-000101", target_division="310115", item_code="shebao-zy",
        applicant=pb.Applicant(id_type=pb.ID_TYPE_RESIDENT, id_number="11010519491231002X",
                               name="张三")).SerializeToString(deterministic=True)
    token, _ = sign(key, iss="320105", aud="320100-gw", method=METHOD, body=body, now=IAT,
                    ttl=120, jti=JTI)
    return {"seed_hex": SEED.hex(), "x": b64url(key.raw_public), "body_hex": body.hex(),
            "bdg": body_digest(body), "token": token}


if __name__ == "__main__":
    print(json.dumps(example(), ensure_ascii=False, indent=2))
