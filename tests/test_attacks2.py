"""Second round of attacks on issue #12's trust (evidence files, batch tokens, limits,
configuration), each over real sockets or through the real CLI, as a hostile platform,
a hostile peer, an auditor handed a forged file or a careless operator."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import pytest

from gateway import evidence_file
from gateway.pb.tongban.v1 import case_pb2 as pb
from tests.federation import PARTNERS_TOML, federation
from tests.test_evidence import cli, trusted
from tests.test_supervision import move, submit


@pytest.fixture(scope="module")
def two_cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The evidence files of two cases at 320100-gw; in case A both sides used the same
    update id (each side's ids are its own: the gateways dedup by author, update id)."""
    tmp = tmp_path_factory.mktemp("two-cases")

    async def life() -> dict[str, str]:
        async with federation(tmp, auto="manual", gateways=("320100-gw",)) as fed:
            a = await submit(fed, "A2-1")
            b = await submit(fed, "A2-2")
            await move(fed, a.case_id, "step-1", pb.CASE_STATE_ACCEPTED)
            await move(fed, a.case_id, "step-2", pb.CASE_STATE_PROCESSING)
            await move(fed, a.case_id, "step-3", pb.CASE_STATE_SUPPLEMENT_REQUESTED,
                       missing_materials=["户口本"], note="补正")
            # the origin's own "step-1": a supplement, another author's id space
            supplied = await move(fed, a.case_id, "step-1", 0, "320105", supplement=[
                pb.MaterialRef(name="户口本", sha256="ab" * 32, size_bytes=9,
                               media_type="application/pdf")])
            assert [m.name for m in supplied.materials] == ["户口本"], supplied
            await move(fed, b.case_id, "b-1", pb.CASE_STATE_ACCEPTED)
            return {"a": a.case_id, "b": b.case_id}

    ids = asyncio.run(life())
    files = {}
    for name, case_id in ids.items():
        out = tmp / f"{name}.json"
        done = cli("evidence", "export", case_id, "--config", str(PARTNERS_TOML), "--as",
                   "320100-gw", "--db", str(tmp / "320100-gw" / "gateway.sqlite3"),
                   "--out", str(out))
        assert done.returncode == 0, done.stderr
        files[name] = json.loads(out.read_text(encoding="utf-8"))
    return files


def test_both_sides_may_use_the_same_update_id_in_a_file_that_verifies(
        two_cases: dict[str, dict[str, Any]]) -> None:
    """The gateways key an update by (case, author, update id); the offline check keyed
    the statements by update id alone, so the origin's `step-1` hid the target's and a
    genuine file was called forged."""
    verdict = evidence_file.verify(two_cases["a"], trusted())
    assert verdict.ok, verdict.summary


def test_an_audit_list_from_another_case_is_bad(two_cases: dict[str, dict[str, Any]]
                                                ) -> None:
    """The audit entries of case B, intact and chained, were counted as case A's."""
    forged = copy.deepcopy(two_cases["b"])
    forged["audit"] = copy.deepcopy(two_cases["a"]["audit"])
    assert forged["audit"], "case A has audit entries"
    verdict = evidence_file.verify(forged, trusted())
    assert not verdict.ok and "audit[0]" in verdict.summary, verdict.summary
