"""Accounting of certificate uses (issue #13, DESIGN §8): the store's certificate_uses
table and its audit entries, holder digests, `tongban stats certs` and the metric."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from gateway.audit import AuditEntry, PendingAudit, verify
from gateway.certificates.accounting import (
    EMPTY,
    format_table,
    holder_key,
    holder_secret,
)
from gateway.errors import AlreadyExists
from gateway.metrics import Metrics
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.signing import generate_private_key, load_private_key
from gateway.store import CaseRecord, Effects
from gateway.store.base import CertificateUse, UseCount
from gateway.store.offline import read_audit, read_use_counts
from gateway.store.sqlite import SqliteStore
from tests.test_cli_web import run

SECRET = b"s" * 32
ZHANG = holder_key(SECRET, "resident", "11010519491231002X")
LI = holder_key(SECRET, "resident", "110105194912310038")


def use(n: int, *, at: float | None = None, holder: str = ZHANG, issuer: str = "320000-gw",
        cert_type: str = "11", item: str = "bdc-dy", consumer: str = "310115",
        outcome: str = "OK", role: str = "origin",
        method: str = "LookupCertificate") -> CertificateUse:
    return CertificateUse(use_id=f"U{n:05}", at=float(n) if at is None else at,
                          method=method, consumer=consumer, item=item, cert_type=cert_type,
                          number=f"1.2.156.3005.2.{cert_type}.X.{n}.001.0", issuer=issuer,
                          outcome=outcome, holder_key=holder, role=role,
                          statement=b"signed-request-%d" % n)


def entry(n: int, detail: str = "") -> AuditEntry:
    return AuditEntry(at=float(n), caller="310115", method="/tongban.v1.Certificates/Lookup",
                      case_id="", digest=f"d{n}", kid="310115#k1", jti=f"j{n}",
                      outcome="OK", detail=detail)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "gateway.sqlite3"


async def opened(path: Path) -> SqliteStore:
    store = SqliteStore(path)
    await store.open()
    return store


# -- the store ---------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_uses_are_kept_with_their_audit_entry_in_the_chain(path: Path) -> None:
    store = await opened(path)
    case = pb.Case(case_id="C1", case_number="N1", origin_partner="320105",
                   state=pb.CASE_STATE_SUBMITTED)
    # a case write carrying its entry, between the uses: one chain for both
    await store.create_case(CaseRecord(case=case, upstream="320105", downstream="x"),
                            Effects(), audit=PendingAudit(entry(0)))
    seqs = [await store.record_uses([use(1), use(2)], entry(1)),
            await store.append_audit(entry(2)),
            await store.record_uses([use(3)], entry(3, "申请人 11010519491231002X")),
            await store.record_uses([], entry(4))]  # a call that used nothing: audited
    assert seqs == [2, 3, 4, 5]
    await store.close()
    rows = read_audit(path)
    assert verify(rows).ok and verify(rows).checked == 5
    assert rows[3][1].detail == "申请人 110105********002X"  # masked like any entry
    assert [u.use_id for u in await _uses(path, ZHANG)] == ["U00001", "U00002", "U00003"]


async def _uses(path: Path, holder: str) -> list[CertificateUse]:
    store = await opened(path)
    try:
        return await store.uses_of(holder, issuers=None, since=0.0, limit=100)
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_a_use_costs_no_commit_beyond_its_audit_entry(path: Path) -> None:
    store = await opened(path)
    before = store.commits
    await store.record_uses([use(n) for n in range(1, 30)], entry(1))
    assert store.commits == before + 1  # 29 rows and the entry: one transaction
    before = store.commits
    await asyncio.gather(*(store.record_uses([use(n)], entry(n)) for n in range(100, 200)),
                         *(store.append_audit(entry(n)) for n in range(200, 300)))
    assert store.commits - before <= 3  # concurrent calls share group commits
    await store.close()
    assert verify(read_audit(path)).checked == 201
    assert sum(c.count for c in read_use_counts(path)) == 129


@pytest.mark.asyncio
async def test_a_repeated_use_id_refuses_the_call_alone(path: Path) -> None:
    store = await opened(path)
    await store.record_uses([use(1)], entry(1))
    results = await asyncio.gather(
        store.record_uses([use(2), use(1, at=9.0)], entry(2)),  # U00001 again
        store.record_uses([use(3), use(3)], entry(3)),  # twice in one call
        store.record_uses([use(4)], entry(4)), return_exceptions=True)
    assert isinstance(results[0], AlreadyExists) and results[0].field == "use_id"
    assert isinstance(results[1], AlreadyExists)
    assert results[2] == 2  # the batch's other call is kept, with the next seq
    assert store.writable  # a caller's bug, not a disk that refuses writes
    got = await store.uses_of(ZHANG, issuers=None, since=0.0, limit=10)
    assert [(u.use_id, u.at) for u in got] == [("U00001", 1.0), ("U00004", 4.0)]
    await store.close()
    assert verify(read_audit(path)).checked == 2  # no entry for the refused calls


@pytest.mark.asyncio
async def test_a_use_with_an_unknown_role_is_a_bug(path: Path) -> None:
    store = await opened(path)
    with pytest.raises(ValueError, match="role"):
        await store.record_uses([use(1, role="consumer")], entry(1))
    assert await store.use_counts() == []
    await store.close()
    assert read_audit(path) == []


@pytest.mark.asyncio
async def test_uses_of_filters_by_holder_issuers_since_and_limit(path: Path) -> None:
    store = await opened(path)
    await store.record_uses([
        use(1, at=50.0), use(2, at=10.0, issuer="330000-gw"), use(3, at=30.0, holder=LI),
        use(4, at=30.0, role="both"), use(5, at=20.0, issuer="330000-gw", outcome="NOT_FOUND"),
        use(6, at=40.0, holder=""),  # a call with no holder
    ], entry(1))

    async def ids(holder: str, issuers: frozenset[str] | None = None, since: float = 0.0,
                  limit: int = 100) -> list[str]:
        found = await store.uses_of(holder, issuers=issuers, since=since, limit=limit)
        return [u.use_id for u in found]

    assert await ids(ZHANG) == ["U00002", "U00005", "U00004", "U00001"]  # oldest first
    assert await ids(LI) == ["U00003"]
    assert await ids(holder_key(SECRET, "passport", "E12345678")) == []
    assert await ids("") == []  # no holder names nobody
    assert await ids(ZHANG, frozenset({"330000-gw"})) == ["U00002", "U00005"]
    assert await ids(ZHANG, frozenset({"330000-gw", "320000-gw"})) == \
        ["U00002", "U00005", "U00004", "U00001"]
    assert await ids(ZHANG, frozenset()) == []  # no issuer allowed: nothing
    assert await ids(ZHANG, since=20.0) == ["U00005", "U00004", "U00001"]  # at >= since
    assert await ids(ZHANG, since=50.5) == []
    assert await ids(ZHANG, limit=2) == ["U00002", "U00005"]
    assert await ids(ZHANG, limit=0) == []
    [full] = await store.uses_of(LI, issuers=None, since=0.0, limit=1)
    assert full == use(3, at=30.0, holder=LI)  # every field comes back as kept
    await store.close()


@pytest.mark.asyncio
async def test_use_counts_group_largest_first_and_survive_a_reopen(path: Path) -> None:
    store = await opened(path)
    await store.record_uses([use(1), use(2), use(3, holder=LI)], entry(1))
    await store.record_uses([use(4, outcome="PERMISSION_DENIED"),
                             use(5, item="gsyyzz", cert_type="21"),
                             use(6, item="gsyyzz", cert_type="21"),
                             use(7, cert_type="", method="ListCertificates", issuer="")],
                            entry(2))
    expected = [UseCount("11", "bdc-dy", "310115", "320000-gw", "OK", 3),
                UseCount("21", "gsyyzz", "310115", "320000-gw", "OK", 2),
                UseCount("", "bdc-dy", "310115", "", "OK", 1),
                UseCount("11", "bdc-dy", "310115", "320000-gw", "PERMISSION_DENIED", 1)]
    assert await store.use_counts() == expected
    await store.close()
    assert read_use_counts(path) == expected  # offline, as the CLI reads them
    store = await opened(path)
    assert await store.use_counts() == expected
    assert len(await store.uses_of(ZHANG, issuers=None, since=0.0, limit=100)) == 6
    await store.close()


@pytest.mark.asyncio
async def test_an_older_store_file_gets_the_table_on_open(path: Path) -> None:
    store = await opened(path)
    seq = await store.append_audit(entry(1))
    await store.close()
    conn = sqlite3.connect(path)  # as a version before certificates left the file
    conn.execute("DROP TABLE certificate_uses")  # its index goes with it
    conn.close()
    assert read_use_counts(path) == []  # read-only: the offline reader does not add it
    result = run("stats", "certs", "--db", str(path))
    assert result.returncode == 0 and EMPTY in result.stdout.decode()
    store = await opened(path)
    assert await store.record_uses([use(1)], entry(2)) == seq + 1
    assert await store.use_counts() == [UseCount("11", "bdc-dy", "310115", "320000-gw",
                                                 "OK", 1)]
    await store.close()
    conn = sqlite3.connect(path)
    indexes = {row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='certificate_uses'")}
    conn.close()
    assert "certificate_uses_holder" in indexes
    assert verify(read_audit(path)).checked == 2


# -- holder digests ----------------------------------------------------------------------
def test_holder_key_is_stable_per_secret_and_differs_across_secrets() -> None:
    number = "11010519491231002X"
    again = holder_key(b"s" * 32, "resident", number)
    assert again == ZHANG and len(again) == 43  # base64url of 32 bytes, no padding
    assert set(again) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert holder_key(b"t" * 32, "resident", number) != ZHANG
    assert holder_key(SECRET, "passport", number) != ZHANG  # the scheme is part of it
    assert holder_key(SECRET, "resident", "110105194912310038") != ZHANG
    assert "19491231" not in ZHANG


@pytest.mark.parametrize(("secret", "id_type", "number"), [
    (b"short", "resident", "11010519491231002X"),
    (SECRET, "", "11010519491231002X"),
    (SECRET, "resident", ""),
    (SECRET, "res\0ident", "X"),
])
def test_holder_key_refuses_what_would_make_weak_or_ambiguous_digests(
        secret: bytes, id_type: str, number: str) -> None:
    with pytest.raises(ValueError, match="holder key") as info:
        holder_key(secret, id_type, number)
    assert "11010519491231002X" not in str(info.value)


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_the_secret_derives_from_the_signing_key(alg: str) -> None:
    pem, _ = generate_private_key(alg)
    key = load_private_key(pem, kid="320100-gw#k1")
    secret = holder_secret(key)
    assert len(secret) == 32
    assert holder_secret(load_private_key(pem, kid="320100-gw#k2")) == secret  # same key
    other, _ = generate_private_key(alg)
    assert holder_secret(load_private_key(other, kid="320100-gw#k1")) != secret
    assert secret not in pem  # not the key itself


# -- the table, the command, the metric --------------------------------------------------
def test_format_table_aligns_counts_and_escapes_cells() -> None:
    assert format_table([]).splitlines() == [
        "type  item  consumer  issuer  outcome  count", EMPTY]
    lines = format_table([UseCount("11", "bdc-dy", "310115", "320000-gw", "OK", 12),
                          UseCount("", "x\nforged", "310115", "", "NOT_FOUND", 3)]).splitlines()
    assert lines == [
        "type  item       consumer  issuer     outcome    count",
        "11    bdc-dy     310115    320000-gw  OK            12",
        "-     x\\nforged  310115    -          NOT_FOUND      3",
        "15 uses"]


@pytest.mark.asyncio
async def test_stats_certs_prints_the_counts_of_the_store(path: Path) -> None:
    result = run("stats", "certs", "--db", str(path))
    assert result.returncode == 2 and b"no store at" in result.stderr
    store = await opened(path)
    await store.close()
    result = run("stats", "certs", "--data-dir", str(path.parent))
    assert result.returncode == 0
    assert result.stdout.decode().splitlines() == [
        "type  item  consumer  issuer  outcome  count", EMPTY]
    store = await opened(path)
    await store.record_uses([use(1), use(2), use(3, outcome="PERMISSION_DENIED")], entry(1))
    result = run("stats", "certs", "--db", str(path))  # beside the running store
    await store.close()
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == [
        "type  item    consumer  issuer     outcome            count",
        "11    bdc-dy  310115    320000-gw  OK                     2",
        "11    bdc-dy  310115    320000-gw  PERMISSION_DENIED      1",
        "3 uses"]


def test_the_metric_counts_uses_by_their_labels() -> None:
    metrics = Metrics("320100-gw")
    metrics.record_certificate_uses([use(1), use(2), use(3, outcome="NOT_FOUND")])
    metrics.record_certificate_uses([])
    labels = {"method": "LookupCertificate", "cert_type": "11", "item": "bdc-dy",
              "consumer": "310115", "issuer": "320000-gw", "outcome": "OK"}
    sample = metrics.registry.get_sample_value
    assert sample("tongban_certificate_uses_total", labels) == 2.0
    assert sample("tongban_certificate_uses_total", labels | {"outcome": "NOT_FOUND"}) == 1.0
    assert sample("tongban_certificate_uses_total", labels | {"item": "gsyyzz"}) is None
    assert b"tongban_certificate_uses_total{" in metrics.render()
    assert Metrics("320000-gw").registry.get_sample_value(  # one registry per gateway
        "tongban_certificate_uses_total", labels) is None
