"""The audit chain records every exchange, masks PII, and any edit, deletion or
reordering is reported at the first bad entry by `tongban audit verify`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import grpc
import pytest

from gateway.audit import AuditEntry, chain_hash, verify
from gateway.client import CallError
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.store.offline import read_audit
from tests.federation import Federation, federation
from tests.test_cli_web import run

CITIZEN = pb.Applicant(id_type=pb.ID_TYPE_RESIDENT, id_number="11010519491231002X", name="张三",
                       phone="13812345678")


async def produce(fed: Federation) -> Path:
    client = fed.client("320105")
    answers = [await client.submit(case_number=f"A-{n}", target_division="320681",
                                   item_code="jdc-wf", applicant=CITIZEN) for n in range(4)]
    first = answers[0]
    with pytest.raises(CallError):  # a refusal is audited too
        await client.submit(case_number="A-x", target_division="310000", item_code="jdc-wf",
                            applicant=CITIZEN)
    async for case in client.watch(first.case.case_id):  # watching is an exchange too
        assert case.case_id == first.case.case_id
        break
    with pytest.raises(CallError):  # and so is a refused watch
        async for _ in fed.client("320105").watch("01JUNKNOWNCASE0000000000000"):
            pass
    return fed.apps["320100-gw"].config.data_dir / "gateway.sqlite3"


@pytest.mark.asyncio
async def test_every_exchange_is_chained_and_masked(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        path = await produce(fed)
    rows = list(read_audit(path))
    assert verify(rows).ok and verify(rows).checked == len(rows) >= 5
    outcomes = [(entry.method.rsplit("/", 1)[1], entry.outcome) for _, entry, _, _ in rows]
    assert ("SubmitCase", "PERMISSION_DENIED") in outcomes
    assert outcomes.count(("SubmitCase", "OK")) == 4
    assert ("WatchCase", "OK") in outcomes and ("WatchCase", "NOT_FOUND") in outcomes
    # status flowing back from the 江苏 gateway is an exchange too
    assert {entry.caller for _, entry, _, _ in rows} <= {"320105", "320000-gw"}
    assert all(entry.jti and entry.kid.startswith(entry.caller) for _, entry, _, _ in rows)


@pytest.mark.parametrize("tamper", ["edit", "delete", "reorder", "rehash_one"])
@pytest.mark.asyncio
async def test_tampering_is_found_at_the_first_bad_entry(tmp_path: Path, tamper: str) -> None:
    async with federation(tmp_path) as fed:
        path = await produce(fed)
    conn = sqlite3.connect(path)
    with conn:
        if tamper == "edit":
            conn.execute("UPDATE audit SET caller='320999' WHERE seq=3")
        elif tamper == "delete":
            conn.execute("DELETE FROM audit WHERE seq=3")
        elif tamper == "reorder":
            conn.execute("UPDATE audit SET seq=-1 WHERE seq=3")
            conn.execute("UPDATE audit SET seq=3 WHERE seq=4")
            conn.execute("UPDATE audit SET seq=4 WHERE seq=-1")
        else:  # an editor who also recomputes that entry's own hash still breaks the link
            row = conn.execute("SELECT * FROM audit WHERE seq=3").fetchone()
            entry = AuditEntry(*row[1:9], "forged")
            conn.execute("UPDATE audit SET detail='forged', hash=? WHERE seq=3",
                         (chain_hash(3, entry, row[10]),))
    conn.close()
    verdict = verify(read_audit(path))
    assert not verdict.ok
    assert verdict.first_bad == (4 if tamper == "rehash_one" else 3)
    result = run("audit", "verify", "--db", str(path))
    assert result.returncode == 1
    assert f"BROKEN at entry {verdict.first_bad}" in result.stdout.decode()


@pytest.mark.asyncio
async def test_audit_detail_masks_id_numbers(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        with pytest.raises(CallError) as err:
            await fed.client("320105").submit(
                case_number="M-1", target_division="320681", item_code="jdc-wf",
                applicant=pb.Applicant(id_type=pb.ID_TYPE_RESIDENT,
                                       id_number="110105194912310021", name="张三"))
        assert err.value.status is grpc.StatusCode.INVALID_ARGUMENT
        store = fed.apps["320100-gw"].store
        await store.append_audit(AuditEntry(
            at=0, caller="x", method="/m", case_id="", digest="", kid="", jti="",
            outcome="OK", detail="申请人 11010519491231002X 电话 13812345678"))
        path = fed.apps["320100-gw"].config.data_dir / "gateway.sqlite3"
    details = [entry.detail for _, entry, _, _ in read_audit(path)]
    assert "申请人 110105********002X 电话 138****5678" in details
    assert not any("11010519491231002X" in d for d in details)
