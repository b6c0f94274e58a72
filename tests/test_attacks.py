"""Attacks on the end-to-end statements, found by reading the code as an attacker would
(issue #12): a hostile handling platform, a rogue linked peer and a forger of evidence
files, each over real sockets or through the real CLI.
"""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway import evidence_file
from gateway.client import CallError
from gateway.evidence import rating_update_id
from gateway.evidence_file import FORMAT
from gateway.lifecycle import seconds, timestamp
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import gateway_pb2 as gw
from tests.federation import PARTNERS_TOML, FakeClock, Federation, federation
from tests.test_bad_input import CITIZEN, token
from tests.test_evidence import cli, edit_case, trusted
from tests.test_supervision import MONDAY_9AM, events_of, move, submit
from tests.test_trust import FORWARD, ROGUE, at_gateway, refused, submitted

K = pb.EventKind
SUBMIT = "/tongban.v1.Gateway/SubmitCase"
SUBMIT_BUNDLE = "/tongban.v1.Gateway/SubmitBundle"


@pytest.mark.asyncio
async def test_a_platform_cannot_take_the_update_ids_the_gateway_makes(
        tmp_path: Path) -> None:
    """The handling platform picks the `update_id` of its UpdateCase; the gateway keys its
    own changes the same way (`timer:<kind>:<due>`, `rate:<hash>`, `cancel:<case>`). A
    note sent under such an id used to take it first: the overdue alarm (电子监察) never
    fired, and the origin's 差评 and cancellation were answered `duplicate` and dropped."""
    clock = FakeClock(MONDAY_9AM)
    async with federation(tmp_path, auto="manual", clock=clock,
                          gateways=("320100-gw",)) as fed:
        late = await submit(fed, "RES-1")
        rated = await submit(fed, "RES-2")
        cancelled = await submit(fed, "RES-3")
        handler = fed.client("320100")
        squatted = {
            late.case_id: f"timer:overdue:{seconds(late.deadline):.3f}",
            rated.case_id: rating_update_id(1, pb.RATING_CHANNEL_WEB, ""),
            cancelled.case_id: f"cancel:{cancelled.case_id}",
        }
        for case_id, update_id in squatted.items():
            with pytest.raises(CallError) as err:
                await handler.update(pb.CaseUpdate(case_id=case_id, update_id=update_id,
                                                   note="x"))
            assert err.value.status is grpc.StatusCode.INVALID_ARGUMENT, err.value
            assert "update.update_id" in str(err.value), err.value

        # the gateway's own changes still happen
        for n, state in enumerate((pb.CASE_STATE_ACCEPTED, pb.CASE_STATE_PROCESSING,
                                   pb.CASE_STATE_COMPLETED)):
            await move(fed, rated.case_id, f"r{n}", state)
        answer = await fed.client("320105").rate(rated.case_id, 1, pb.RATING_CHANNEL_WEB)
        assert not answer.duplicate and answer.case.rating.score == 1
        gone = await fed.client("320105").cancel(cancelled.case_id, "moved away")
        assert gone.state == pb.CASE_STATE_CANCELLED
        clock.t = seconds(late.deadline) + 1
        await fed.apps["320100-gw"].monitor.sweep()
        kinds = [e.kind for e in await events_of(fed, "320100-gw", late.case_id)]
        assert K.EVENT_KIND_DEADLINE_OVERDUE in kinds


def verify_cli(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli("evidence", "verify", str(path), *extra)


def test_verify_never_crashes_on_a_malformed_file(tmp_path: Path) -> None:
    """`tongban evidence verify` answers BAD or a clean error for any file, never a
    traceback: an auditor runs it on whatever file a party hands in."""
    ok_jwks = tmp_path / "jwks.json"
    ok_jwks.write_text('{"keys": []}', encoding="utf-8")
    files = {
        "a list": "[]",
        "a string": '"x"',
        "keys as a list": json.dumps({"format": FORMAT, "keys": [1]}),
        "a key valid until the year 10^300": json.dumps({"format": FORMAT, "keys": {"keys": [
            {"kid": "a#b", "kty": "OKP", "crv": "Ed25519", "x": "A" * 43, "exp": 1e300}]}}),
        "deep nesting": "[" * 100_000 + "]" * 100_000,
        "an audit row with a lone surrogate": json.dumps({
            "format": FORMAT, "keys": {"keys": []}, "items": [], "audit": [{
                "seq": 1, "at": 1.0, "caller": "x", "method": "m", "case_id": "",
                "digest": "", "kid": "", "jti": "", "outcome": "OK", "detail": "\ud800",
                "prev_hash": "", "hash": ""}]}),
    }
    for name, text in files.items():
        path = tmp_path / "file.json"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        for extra in ((), ("--jwks", str(ok_jwks))):
            done = verify_cli(path, *extra)
            assert done.returncode != 0, name
            assert "Traceback" not in done.stderr, f"{name}: {done.stderr[-400:]}"
    bad_jwks = tmp_path / "bad-jwks.json"
    bad_jwks.write_text("[]", encoding="utf-8")
    done = verify_cli(tmp_path / "file.json", "--jwks", str(bad_jwks))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-400:]
    direct = evidence_file.verify({"format": FORMAT, "keys": {"keys": []}, "items": [],
                                   "audit": [{"seq": 1, "detail": "\ud800"}]})
    assert not direct.ok


DOC = pb.MaterialRef(name="户口本", sha256="ab" * 32, size_bytes=1000,
                     media_type="application/pdf")


@pytest.fixture(scope="module")
def full_life(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The evidence file of a case that went through everything at 320100-gw: a 补正 and
    the origin's supplement, completion, postal delivery, a 差评 and its rectification."""
    tmp = tmp_path_factory.mktemp("full-life")

    async def life() -> str:
        async with federation(tmp, auto="manual", gateways=("320100-gw",)) as fed:
            case = await submit(fed, "FULL-1")
            steps: list[tuple[str, int, dict[str, Any]]] = [
                ("320100", pb.CASE_STATE_ACCEPTED, {}),
                ("320100", pb.CASE_STATE_PROCESSING, {}),
                ("320100", pb.CASE_STATE_SUPPLEMENT_REQUESTED,
                 {"missing_materials": ["户口本"], "note": "补正"}),
                ("320105", 0, {"supplement": [DOC]}),
                ("320100", pb.CASE_STATE_PROCESSING, {}),
                ("320100", pb.CASE_STATE_COMPLETED, {"note": "准予"}),
                ("320100", pb.CASE_STATE_RESULT_DELIVERED, {"delivery": pb.ResultDelivery(
                    method=pb.DELIVERY_METHOD_POSTAL, carrier="EMS",
                    tracking_number="EA123")}),
            ]
            for n, (partner, state, fields) in enumerate(steps):
                await move(fed, case.case_id, f"full-{n}", state, partner, **fields)
            await fed.client("320105").rate(case.case_id, 1, pb.RATING_CHANNEL_WEB, "慢")
            await fed.client("320100").update(pb.CaseUpdate(
                case_id=case.case_id, update_id="full-fix", rectification_report="已整改"))
            return case.case_id

    case_id = asyncio.run(life())
    out = tmp / "evidence.json"
    done = cli("evidence", "export", case_id, "--config", str(PARTNERS_TOML), "--as",
               "320100-gw", "--db", str(tmp / "320100-gw" / "gateway.sqlite3"), "--out",
               str(out))
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return document


def test_a_genuine_file_with_a_supplement_verifies(full_life: dict[str, Any]) -> None:
    verdict = evidence_file.verify(full_life, trusted())
    assert verdict.ok, verdict.summary


def test_a_file_whose_case_says_what_nobody_signed_is_bad(full_life: dict[str, Any]) -> None:
    """The case inside the file is the gateway's own record, signed by nobody: each thing
    it says a platform did must be what that platform's statement says, at the time the
    gateway received it. Each edit here used to verify OK."""
    assert evidence_file.verify(full_life, trusted()).ok

    def at(n: int, shift: int) -> Callable[[pb.Case], None]:
        return lambda case: setattr(case.timeline[n].at, "seconds",
                                    case.timeline[n].at.seconds + shift)

    edits: dict[str, Callable[[pb.Case], None]] = {
        "a state nobody set": lambda case: setattr(case, "state", pb.CASE_STATE_REJECTED),
        "a change dated a year later": at(3, 365 * 86400),
        "a change's note": lambda case: setattr(case.timeline[-1], "note", "驳回"),
        "a rectification nobody reported": lambda case: setattr(
            case.rating, "rectification_report", "已全部整改"),
        "a delivery nobody made": lambda case: setattr(
            case.delivery, "tracking_number", "EA999"),
        "a material nobody supplied": lambda case: case.materials.append(
            pb.MaterialRef(name="x", sha256="cd" * 32, size_bytes=1,
                           media_type="application/pdf")),
        "a submission dated a year earlier": lambda case: setattr(
            case.submitted_at, "seconds", case.submitted_at.seconds - 365 * 86400),
    }
    for name, change in edits.items():
        verdict = evidence_file.verify(edit_case(full_life, change), trusted())
        assert not verdict.ok, f"{name}: {verdict.summary}"
    moved = copy.deepcopy(full_life)  # a statement "received" years after it was signed
    moved["items"][1]["received_at"] += 3 * 365 * 86400
    verdict = evidence_file.verify(moved, trusted())
    assert not verdict.ok, verdict.summary


@pytest.mark.asyncio
async def test_a_peer_cannot_put_a_single_case_into_a_bundle(manual_fed: Federation) -> None:
    """`bundle_id` is the origin gateway's, not signed by the origin; it must still agree
    with what the origin signed: a SubmitCase makes a case of no bundle, a SubmitBundle
    a part of one. A rogue peer used to be able to pass a single case off as a 一件事
    part (and a part as a single case) to the gateways behind it."""
    fed = manual_fed
    real = await at_gateway(fed, "310000-gw", (await submitted(fed, "BND-REAL")).case_id)
    now = time.time()
    for n, (method, bundle_id) in enumerate((
            (SUBMIT, "01JB0000000000000000000BND"),
            (SUBMIT_BUNDLE, ""))):
        number = f"BND-{n}"
        single = gw.SubmitCaseRequest(case_number=number, target_division="310115",
                                      item_code="shebao-zy", applicant=CITIZEN)
        request = (single.SerializeToString() if method == SUBMIT else
                   gw.SubmitBundleRequest(bundle_number=f"B-{n}", name="一件事", parts=[
                       single, gw.SubmitCaseRequest(
                           case_number=f"{number}b", target_division="310115",
                           item_code="shebao-zy", applicant=CITIZEN)]).SerializeToString())
        case = pb.Case(case_id=f"01JB000000000000000000000{n}", case_number=number,
                       origin_partner="320105", origin_gateway="320100-gw",
                       target_division="310115", requested_division="310115",
                       target_partner="310115", item_code="shebao-zy",
                       mode=real.mode, scope=real.scope, alliance=real.alliance,
                       applicant=CITIZEN, state=pb.CASE_STATE_SUBMITTED,
                       submitted_at=timestamp(now), updated_at=timestamp(now),
                       bundle_id=bundle_id,
                       origin_statement=pb.Statement(request=request, token=token(
                           request, method=method, now=now)))
        case.timeline.add(state=pb.CASE_STATE_SUBMITTED, at=timestamp(now), actor="320105",
                          update_id=f"submit:{case.case_id}")
        body = gw.ForwardCaseRequest(case=case, hops=2,
                                     path=["320100-gw", ROGUE]).SerializeToString()
        await refused(fed, body, method=FORWARD, gateway="310000-gw", field="case.bundle_id")
