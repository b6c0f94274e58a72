"""Attacks on the end-to-end statements, found by reading the code as an attacker would
(issue #12): a hostile handling platform, a rogue linked peer and a forger of evidence
files, each over real sockets or through the real CLI.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import grpc
import pytest

from gateway import evidence_file
from gateway.client import CallError
from gateway.evidence import rating_update_id
from gateway.evidence_file import FORMAT
from gateway.lifecycle import seconds
from gateway.pb.tongban.v1 import case_pb2 as pb
from tests.federation import FakeClock, federation
from tests.test_evidence import cli
from tests.test_supervision import MONDAY_9AM, events_of, move, submit

K = pb.EventKind


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
