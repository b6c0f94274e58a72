"""Print the worked examples of docs/certificates.md (tests/test_cert_documents.py checks
the doc): a document, a status statement and a holder authorization by 320105's demo key."""

from __future__ import annotations

import hashlib
import json
from datetime import date

from gateway.certificates.authorization import authorize
from gateway.certificates.documents import (
    Holder,
    HolderIdType,
    Metadata,
    RenderedFile,
    Status,
    attest_status,
    issue,
)
from gateway.signing import b64url, load_private_key
from tests.federation import ROOT

IAT = 1_790_000_000  # 2026-09-22T14:13:20Z
JTI = "AAECAwQFBgcICQoLDA0ODw"
FILE = b"%PDF-1.7\n"  # stands for the rendered certificate


def metadata() -> Metadata:
    return Metadata(
        type_code="11", number="1.2.156.3005.2.11.91320105MA1MXXXX0H.A0000123.001.4",
        name="不动产权证书", issuer="南京市建邺区不动产登记中心",
        issuer_code="91320105MA1MXXXX0H", holder="张三",
        holder_id_type=HolderIdType.RESIDENT, holder_id="11010519491231002X",
        issued_on=date(2026, 3, 2), valid_from=date(2026, 3, 2), valid_to=None,
        status=Status.VALID,
        file=RenderedFile(hashlib.sha256(FILE).hexdigest(), "application/pdf", len(FILE)))


def example() -> dict[str, str]:
    key = load_private_key((ROOT / "demo-keys" / "320105.pem").read_bytes(), kid="320105#k1")
    meta = metadata()
    return {
        "x": b64url(key.raw_public),
        "file_sha256": meta.file.sha256,
        "document": issue(meta, key, now=IAT),
        "status": attest_status(meta.number, Status.REVOKED, key, now=IAT + 3600, ttl=300),
        "authorization": authorize(
            key, holder=Holder(HolderIdType.RESIDENT, "11010519491231002X"),
            item="bdc-dy", consumer="310115", now=IAT, ttl=300, cert_types=["11"], jti=JTI),
    }


if __name__ == "__main__":
    print(json.dumps(example(), ensure_ascii=False, indent=2))
