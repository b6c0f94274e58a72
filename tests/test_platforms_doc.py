"""docs/platforms.md's ReceiveCase walkthrough must match what the code builds, signs and
verifies, and its §9 (issuing certificates) what the gateway and the reference issuer do.
`python -m tests.test_platforms_doc` prints the walkthrough's values."""

from __future__ import annotations

import json
import re
from typing import Any

import grpc

from adapters import issuer_requests
from gateway import evidence
from gateway.client import CallError, refusal_of
from gateway.config import load_config
from gateway.engine import Engine
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import gateway_pb2 as gw
from gateway.pb.tongban.v1 import partner_pb2 as pp
from gateway.signing import b64url, body_digest, load_private_key, sign
from gateway.verifier import Verifier
from tests.federation import PARTNERS_TOML, ROOT, FakeClock

SUBMIT = "/tongban.v1.Gateway/SubmitCase"
RECEIVE = "/tongban.v1.PartnerPlatform/ReceiveCase"
SUBMITTED_AT = 1_790_000_000.5  # 310000-gw's 320100-gw's receipt time (exact in binary)
IAT_ORIGIN, IAT_HOP = 1_790_000_000, 1_790_000_002
JTI_ORIGIN, JTI_HOP, JTI_ANSWER = (b64url(bytes(range(n, n + 16))) for n in (0, 16, 32))
# a ULID for 1790000000500 ms with fixed "random" bits 0x0102…0a (gateway/ids.py)
CASE_ID = "01M3250VFM041061050R3GG28A"


def _key(party: str) -> Any:
    return load_private_key((ROOT / "demo-keys" / f"{party}.pem").read_bytes(),
                            kid=f"{party}#k1")


def submission() -> gw.SubmitCaseRequest:
    return gw.SubmitCaseRequest(
        case_number="JY-2026-000101", target_division="310115", item_code="shebao-zy",
        applicant=pb.Applicant(id_type=pb.ID_TYPE_RESIDENT, id_number="11010519491231002X",
                               name="张三"), form={"reason": "迁居"})


def example() -> dict[str, Any]:
    """Every value the walkthrough shows, made by the gateway's own code."""
    body = submission().SerializeToString(deterministic=True)
    statement, _ = sign(_key("320105"), iss="320105", aud="320100-gw", method=SUBMIT,
                        body=body, now=IAT_ORIGIN, jti=JTI_ORIGIN)
    # what 310000-gw delivers: the case rebuilt from the origin's statement (engine._rebuild)
    config = load_config(PARTNERS_TOML, self_id="310000-gw")
    engine = Engine(config, None, {}, FakeClock(SUBMITTED_AT))  # type: ignore[arg-type]
    case, route, _ = engine.admission.build("320105", submission(), case_id=CASE_ID,
                                        at=SUBMITTED_AT, origin_gateway="320100-gw",
                                        bundle_id="", prefix="case.")
    assert route.local and route.destination.partner == "310115"
    case.origin_statement.CopyFrom(pb.Statement(request=body, token=statement))
    request = pp.ReceiveCaseRequest(case=case).SerializeToString()
    hop, hop_claims = sign(_key("310000-gw"), iss="310000-gw", aud="310115", method=RECEIVE,
                           body=request, now=IAT_HOP, jti=JTI_HOP)
    response = pp.ReceiveCaseResponse(platform_case_number="PD-2026-0001").SerializeToString()
    answer, _ = sign(_key("310115"), iss="310115", aud="310000-gw", method=RECEIVE,
                     body=response, now=IAT_HOP, request=hop_claims, jti=JTI_ANSWER)
    shown = pb.Case()
    shown.CopyFrom(case)
    shown.ClearField("origin_statement")  # shown apart: the submission bytes and token
    return {"submit_hex": body.hex(), "submit_bdg": body_digest(body), "statement": statement,
            "case": str(shown), "request_len": len(request), "request_hex": request.hex(),
            "request_bdg": body_digest(request), "hop": hop, "response_hex": response.hex(),
            "response_bdg": body_digest(response), "answer": answer}


def wrapped(hex_text: str, width: int = 64) -> str:
    return "\n".join(hex_text[i:i + width] for i in range(0, len(hex_text), width))


def test_walkthrough_is_current() -> None:
    doc = (ROOT / "docs" / "platforms.md").read_text(encoding="utf-8")
    ex = example()
    for name, value in ex.items():
        text = wrapped(value) if name.endswith("_hex") else str(value)
        assert text in doc, name


def test_walkthrough_verifies_as_the_doc_says() -> None:
    """The platform's three checks of the walkthrough pass with the federation's keys."""
    ex = example()
    config = load_config(PARTNERS_TOML)
    keys = {p.id: p.keys for p in (*config.partners.values(), *config.gateways.values())}
    request = bytes.fromhex(ex["request_hex"])
    platform = Verifier(audience="310115", keys_for=lambda i: keys.get(i, ()))
    hop = platform.verify_request(ex["hop"], method=RECEIVE, body=request, now=IAT_HOP + 1)
    case = pp.ReceiveCaseRequest.FromString(request).case
    claims = evidence.Statements(keys, "310115").check(
        case.origin_statement, methods=evidence.SUBMISSIONS, field="case.origin_statement")
    assert claims.iss == case.origin_partner == "320105"
    gateway = Verifier(audience="310000-gw", keys_for=lambda i: keys.get(i, ()))
    gateway.verify_response(ex["answer"], peer="310115", method=RECEIVE,
                            body=bytes.fromhex(ex["response_hex"]), request=hop,
                            now=IAT_HOP + 1)


def section(heading: str) -> str:
    """The text of docs/platforms.md under ``heading`` (a whole heading line's start),
    up to the next heading of any level."""
    doc = (ROOT / "docs" / "platforms.md").read_text(encoding="utf-8")
    start = doc.index(f"\n{heading}")
    end = doc.find("\n#", start + 1)
    return doc[start:] if end < 0 else doc[start:end]


def table_rows(text: str) -> list[list[str]]:
    """The cells of each body row of the markdown tables in ``text``."""
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines()
            if line.startswith("|") and not line.startswith("|---")]


def test_issuer_refusal_table_is_what_the_gateway_does() -> None:
    """§9.4: each status an issuer may answer reaches the consumer as the table says
    (gateway/client.refusal_of), and every status the table does not name is UNAVAILABLE."""
    text = section("### 9.4")
    mapping = text[text.index("| you answer |"):]  # the second table: the first says when
    rows = [r for r in table_rows(mapping) if r[0] != "you answer" and len(r) == 2]
    named: dict[str, str] = {}
    other = None
    for answered, got in rows:
        codes = re.findall(r"`([A-Z_]+)`", answered)
        becomes = re.findall(r"`([A-Z_]+)`", got)[0]
        if answered.startswith("any other status"):
            other = becomes
            continue
        for code in codes:
            named[code] = becomes
    assert other == "UNAVAILABLE"
    assert named, "the table of §9.4 was not found"
    for status in grpc.StatusCode:
        if status is grpc.StatusCode.OK:
            continue
        mapped = refusal_of(CallError(status, "320105: why"))
        assert mapped.code.name == named.get(status.name, other), status
        assert "320105: why" in mapped.message
    unauthenticated = refusal_of(CallError(grpc.StatusCode.UNAUTHENTICATED, "x")).message
    quoted = re.search(r"message ending `([^`]+)`", text)
    assert quoted is not None and unauthenticated.endswith(quoted.group(1))
    bad_answer = refusal_of(CallError(grpc.StatusCode.UNAVAILABLE, "x", bad_answer=True))
    assert bad_answer.code is grpc.StatusCode.UNAVAILABLE


def test_issuer_call_table_matches_what_the_issuer_admits() -> None:
    """§9.1: the consumer calls that lead to FetchCertificates and to AnswerClaim are the
    ones the reference issuer accepts as their consumer_statement."""
    leads: dict[str, set[str]] = {"FetchCertificates": set(), "AnswerClaim": set()}
    for row in table_rows(section("### 9.1")):
        if len(row) == 4 and row[2].strip("`") in leads:
            leads[row[2].strip("`")].add(re.findall(r"`(\w+)`", row[0])[0])
    assert leads["FetchCertificates"] == {m.rsplit("/", 1)[1] for m in issuer_requests.FETCHES}
    assert leads["AnswerClaim"] == {m.rsplit("/", 1)[1] for m in issuer_requests.CLAIMS}


def test_every_refusal_field_of_the_issuer_checks_is_documented() -> None:
    """§9.2: each ``consumer_statement.<field>`` the reference issuer refuses with
    (adapters/issuer_requests.py) is named in the doc, as `.<field>` or in full."""
    source = (ROOT / "adapters" / "issuer_requests.py").read_text(encoding="utf-8")
    fields = set(re.findall(r'_differs\("(\w+)"\)', source))
    fields |= set(re.findall(r'field=f"\{STATEMENT\}\.(\w+)"', source))
    assert {"claim", "cert_type", "certificate_id", "with_file", "cert_types", "purpose_item",
            "name", "holder", "authorization"} <= fields
    text = section("### 9.2")
    for name in fields:
        assert f"`.{name}`" in text or f"`consumer_statement.{name}`" in text, name


if __name__ == "__main__":
    print(json.dumps(example(), ensure_ascii=False, indent=2))
