"""SQLite store (WAL) with group commit.

Every operation is a function run on the store's one thread inside a shared
transaction: the writer takes whatever operations are waiting, runs each under its own
SAVEPOINT (a failing one rolls back alone), commits once, and only then answers their
callers. One thread hand-off and one fsync serve a whole batch, which is what lets
persist-before-acknowledge keep up with the network (DESIGN §11: one commit per row tops
out near 4,500 rows/s; batches reach 170k rows/s). aiosqlite hands off per statement and
cannot run a transaction as one unit, so the gateway's store drives sqlite3 directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from gateway.audit import GENESIS, AuditEntry, PendingAudit, chain_hash
from gateway.errors import AlreadyExists, GatewayError, NotFound, StoreClosed, StoreUnavailable
from gateway.faults import LogThrottle
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.store.base import (
    BundleRecord,
    CaseRecord,
    CertificateUse,
    CertificateUseStore,
    Effects,
    Guard,
    Mutation,
    OutboxEntry,
    SessionTranscript,
    StoredReceipt,
    Timer,
    UseCount,
)
from gateway.types import Clock, SystemClock

log = logging.getLogger("tongban.store")
T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]

SCHEMA = """
CREATE TABLE IF NOT EXISTS cases (
  case_id TEXT PRIMARY KEY,
  origin_partner TEXT NOT NULL,
  case_number TEXT NOT NULL,
  state INTEGER NOT NULL,
  upstream TEXT NOT NULL,
  downstream TEXT NOT NULL,
  request_digest TEXT NOT NULL,
  record BLOB NOT NULL,
  UNIQUE (origin_partner, case_number)
);
CREATE TABLE IF NOT EXISTS applied_updates (
  case_id TEXT NOT NULL,
  update_id TEXT NOT NULL,
  PRIMARY KEY (case_id, update_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  destination TEXT NOT NULL,
  case_id TEXT NOT NULL,
  kind TEXT NOT NULL,
  payload BLOB NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_at REAL NOT NULL DEFAULT 0,
  last_error TEXT NOT NULL DEFAULT '',
  dead INTEGER NOT NULL DEFAULT 0,
  lease_until REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_case ON outbox (case_id, id);
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  case_id TEXT NOT NULL,
  body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS timers (
  case_id TEXT NOT NULL,
  kind TEXT NOT NULL,
  due_at REAL NOT NULL,
  fired INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (case_id, kind)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS timers_due ON timers (due_at);
CREATE TABLE IF NOT EXISTS bundles (
  bundle_id TEXT PRIMARY KEY,
  origin_partner TEXT NOT NULL,
  bundle_number TEXT NOT NULL,
  name TEXT NOT NULL,
  case_ids TEXT NOT NULL,
  request_digest TEXT NOT NULL,
  UNIQUE (origin_partner, bundle_number)
);
CREATE TABLE IF NOT EXISTS statements (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  case_id TEXT NOT NULL,
  received_at REAL NOT NULL,
  statement BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS statements_case ON statements (case_id, id);
CREATE TABLE IF NOT EXISTS receipts (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  case_id TEXT NOT NULL,
  party TEXT NOT NULL,
  received_at REAL NOT NULL,
  response BLOB NOT NULL,
  token TEXT NOT NULL,
  request BLOB NOT NULL DEFAULT x''
);
CREATE INDEX IF NOT EXISTS receipts_case ON receipts (case_id, id);
CREATE TABLE IF NOT EXISTS probe (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY,
  at REAL NOT NULL, caller TEXT NOT NULL, method TEXT NOT NULL, case_id TEXT NOT NULL,
  digest TEXT NOT NULL, kid TEXT NOT NULL, jti TEXT NOT NULL, outcome TEXT NOT NULL,
  detail TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS certificate_uses (
  use_id TEXT PRIMARY KEY,
  at REAL NOT NULL, method TEXT NOT NULL, consumer TEXT NOT NULL, item TEXT NOT NULL,
  cert_type TEXT NOT NULL, number TEXT NOT NULL, issuer TEXT NOT NULL,
  outcome TEXT NOT NULL, holder_key TEXT NOT NULL, role TEXT NOT NULL,
  statement BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS certificate_uses_holder ON certificate_uses (holder_key, at);
CREATE TABLE IF NOT EXISTS session_transcripts (
  session_id TEXT PRIMARY KEY, case_id TEXT NOT NULL, n INTEGER NOT NULL,
  head TEXT NOT NULL, events BLOB NOT NULL, signatures TEXT NOT NULL, at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS session_transcripts_case ON session_transcripts (case_id);
"""
RECORD_COLUMNS = "upstream, downstream, request_digest, record"
BUNDLE_COLUMNS = "bundle_id, origin_partner, bundle_number, name, case_ids, request_digest"
PEEK_BUSY_MS = 20  # the longest a point read on the loop waits for a busy file
LAZY_S = 0.005  # the longest a lazy op (a delivery's mark) waits for a commit to join
AUDIT_AT_SLACK_S = 600.0  # recent_jtis reads this far past its bound (see there)
PROBE_EVERY_S = 1.0  # while writes fail, how often a readiness check tries one
SETTLE_S = 1.0  # writes count as working again after a success this long after a failure
AUDIT_COLUMNS = ("seq, at, caller, method, case_id, digest, kid, jti, outcome, detail, "
                 "prev_hash, hash")
USE_COLUMNS = ("use_id, at, method, consumer, item, cert_type, number, issuer, outcome, "
               "holder_key, role, statement")
USE_ROLES = frozenset({"origin", "issuer", "both"})
# `tongban stats certs` and the store's use_counts: one query, read by both
USE_COUNTS_SQL = ("SELECT cert_type, item, consumer, issuer, outcome, COUNT(*) AS n "
                  "FROM certificate_uses GROUP BY cert_type, item, consumer, issuer, outcome "
                  "ORDER BY n DESC, cert_type, item, consumer, issuer, outcome")


class SqliteStore:
    """The embedded default store. ``path`` may be ":memory:" for throwaway runs."""

    def __init__(self, path: Path | str, *, synchronous: str = "FULL",
                 clock: Clock | None = None, lease_s: float = 15.0,
                 exclusive: bool = True) -> None:
        self._path = str(path)
        self._exclusive = exclusive
        self._clock = clock or SystemClock()
        self._lease_s = lease_s
        self._synchronous = synchronous
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="tongban-store",
                                            initializer=_name_thread, initargs=("tongban-store",))
        self._conn: sqlite3.Connection | None = None
        self._lconn: sqlite3.Connection | None = None  # point reads on the loop (see _peek)
        self._pending: list[tuple[Op, asyncio.Future[Any], bool]] = []  # op, waiter, lazy
        self._wake = asyncio.Event()
        self._lazy_timer: asyncio.TimerHandle | None = None
        self.commits = 0  # group commits made (for tests and the benchmarks)
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._health = _Health()
        self._wrote = False  # whether the last batch changed anything (the writer sets it)

    # -- lifecycle -------------------------------------------------------------------
    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._connect)
        if self._path != ":memory:":  # a second connection to :memory: is another database
            self._lconn = sqlite3.connect(self._path, isolation_level=None)
            self._lconn.execute(f"PRAGMA busy_timeout={PEEK_BUSY_MS}")
            self._lconn.execute("PRAGMA query_only=ON")  # it reads, whatever it is handed
        self._writer = asyncio.create_task(self._write_loop(), name="tongban-store-writer")

    def _connect(self) -> None:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            # case data is personal data: owner only. SQLite gives the -wal and -shm
            # files the mode of the database file (os_unix.c, findCreateFileMode)
            os.close(os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600))
            for suffix in ("", "-wal", "-shm"):  # files an older version left 0644
                with contextlib.suppress(FileNotFoundError):
                    os.chmod(self._path + suffix, 0o600)
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=10000")  # several gateway processes, one file
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.executescript(SCHEMA)
        _migrate(conn)
        if self._exclusive:  # the only process on this file: leases of a dead one are void
            conn.execute("UPDATE outbox SET lease_until=0 WHERE lease_until > 0")
        self._conn = conn

    async def close(self) -> None:
        """Finish the batch in flight (its callers get their answers) and the lazy ops,
        then refuse the rest.

        Cancelling the writer mid-batch would strand callers whose operations were already
        taken off the queue: they would wait forever on futures nobody resolves.
        """
        self._closing = True
        if self._writer is not None:
            self._wake.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        for _, fut, _ in self._pending:
            if not fut.done():
                fut.set_exception(StoreClosed("the gateway is shutting down; retry"))
        self._pending.clear()
        if self._lconn is not None:
            self._lconn.close()
            self._lconn = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)

    # -- group commit ----------------------------------------------------------------
    async def _run(self, op: Op, *, lazy: bool = False) -> Any:
        """Queue op for the next group commit and wait until it is durable.

        A lazy op (a delivery's mark: nobody waits on it but the outbox, and losing it
        only means a redelivery the receiver dedups) does not start a commit of its own:
        it rides with the next one, or goes after LAZY_S. Under load there is always a
        next one; under light load this halves the commits (and fsyncs) per routed call,
        and a SubmitCase no longer queues behind a commit that only marks a delivery.
        """
        if self._writer is None or self._closing:
            raise StoreClosed("the gateway is shutting down; retry")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append((op, fut, lazy))
        if not lazy:
            self._wake.set()
        elif self._lazy_timer is None:
            self._lazy_timer = loop.call_later(LAZY_S, self._wake.set)
        return await fut

    async def _peek(self, op: Op) -> Any:
        """A point read (a case, a bundle) on the event loop's own connection.

        In WAL mode a reader sees what is committed and never waits for the writer, and
        every write is committed before its caller hears of it, so a read after an
        answer sees it. Through the writer queue, a GetCase waited for the commit in
        flight and then for its own batch's fsync, and came out slower than a write under
        load (the mixed benchmark: 17.6 vs 12.8 ms p50 at 8 cases in flight); a reader
        thread of its own cost a hand-off per read, more at saturation than the wait it
        saved. A primary-key look-up here costs tens of µs, less than either. Should the
        file be busy (WAL recovery after a crash), the read goes through the writer.
        """
        if self._lconn is None or self._closing:
            return await self._run(op)
        try:
            return op(self._lconn)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise _unavailable(exc) from exc
            return await self._run(op)
        except sqlite3.Error as exc:
            raise _unavailable(exc) from exc

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._lazy_timer is not None:
                self._lazy_timer.cancel()
                self._lazy_timer = None
            if self._closing:  # lazy ops still go in; close() refuses the others
                lazy = [item for item in self._pending if item[2]]
                self._pending = [item for item in self._pending if not item[2]]
                if lazy:
                    await self._commit(lazy)
                return
            batch, self._pending = self._pending, []
            if batch:
                await self._commit(batch)

    async def _commit(self, batch: list[tuple[Op, asyncio.Future[Any], bool]]) -> None:
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._apply, [op for op, _, _ in batch])
        except Exception as exc:  # the commit itself failed: nobody's change is durable
            if isinstance(exc, sqlite3.Error):
                self._health.failed(exc)
                exc = _unavailable(exc)
            for _, fut, _ in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        failure: sqlite3.Error | None = None
        for (_, fut, _), (ok, value) in zip(batch, results, strict=True):
            if not ok and isinstance(value, sqlite3.Error):  # this op's write failed alone
                failure, value = value, _unavailable(value)
            if fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
        if failure is not None:
            self._health.failed(failure)
        elif self._wrote:
            self._health.succeeded()

    # -- health ----------------------------------------------------------------------
    @property
    def writable(self) -> bool:
        """False from a failed write until one succeeds again (what /readyz reports)."""
        return self._health.since is None

    async def check_writable(self) -> bool:
        """writable, and while it is False try one small write (at most once every
        PROBE_EVERY_S), so an idle gateway turns ready again once its disk has room."""
        if self._health.since is None or self._closing or self._writer is None:
            return self._health.since is None and not self._closing
        now = time.monotonic()
        if now - self._health.probed >= PROBE_EVERY_S:
            self._health.probed = now
            at = self._clock.now()
            with contextlib.suppress(StoreUnavailable):
                await self._run(lambda conn: conn.execute(
                    "INSERT OR REPLACE INTO probe VALUES (1, ?)", (at,)))
        return self._health.since is None

    def _apply(self, ops: list[Op]) -> list[tuple[bool, Any]]:
        """Run a batch in one transaction; each op's failure is its own.

        Ops rarely fail, so a batch first runs without a savepoint per op (four fewer
        statements per call, each a GIL round trip on this thread). If an op raises,
        the whole transaction is rolled back and the batch runs again with each op in a
        savepoint, so the failing one is undone alone. Ops are functions of the database
        (plus their arguments), so running one twice does what running it once does.
        """
        conn = self._conn
        assert conn is not None
        if conn.in_transaction:  # a failed write whose ROLLBACK failed too (I/O error)
            conn.execute("ROLLBACK")
        changes = conn.total_changes
        try:
            out = self._transaction(conn, ops, isolate=False)
        except _OpFailed:
            out = self._transaction(conn, ops, isolate=True)
        self.commits += 1
        # only a batch that wrote says the disk takes writes (a read commits on a full one)
        self._wrote = conn.total_changes != changes
        return out

    @staticmethod
    def _transaction(conn: sqlite3.Connection, ops: list[Op], *,
                     isolate: bool) -> list[tuple[bool, Any]]:
        txn = _Txn()
        _TXN.current = txn
        out: list[tuple[bool, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for op in ops:
                if not isolate:
                    try:
                        out.append((True, op(conn)))
                    except Exception as exc:
                        raise _OpFailed from exc
                    continue
                conn.execute("SAVEPOINT op")
                mark = txn.mark()
                try:
                    value = op(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    txn.undo(mark)
                    out.append((False, exc))
                else:
                    conn.execute("RELEASE op")
                    out.append((True, value))
            if txn.events:
                conn.executemany("INSERT INTO events (case_id, body) VALUES (?,?)", txn.events)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            txn.undo((0, 0))
            raise
        finally:
            _TXN.current = None
        return out

    def _lease(self) -> float:
        """Until when an entry this process writes is its own to send (other processes'
        polls leave it alone); a crash lets the lease run out and another takes over."""
        return self._clock.now() + self._lease_s

    # -- operations ------------------------------------------------------------------
    async def create_case(self, record: CaseRecord, effects: Effects, *,
                          audit: PendingAudit | None = None) -> tuple[CaseRecord, bool]:
        pending = audit
        lease = self._lease()

        def op(conn: sqlite3.Connection) -> tuple[CaseRecord, bool]:
            if not _insert_case(conn, record, effects, lease):
                existing = _find_case(conn, record.case)
                assert existing is not None  # it conflicted with this row just now
                return existing, True
            _attach_audit(conn, pending, record.case.case_id)
            return record, False

        result: tuple[CaseRecord, bool] = await self._run(op)
        return result

    async def create_bundle(self, bundle: BundleRecord,
                            parts: Sequence[tuple[CaseRecord, Effects]], *,
                            audit: PendingAudit | None = None) -> tuple[BundleRecord, bool]:
        pending = audit
        lease = self._lease()

        def op(conn: sqlite3.Connection) -> tuple[BundleRecord, bool]:
            row = conn.execute(
                f"SELECT {BUNDLE_COLUMNS} FROM bundles WHERE origin_partner=? AND "
                "bundle_number=?", (bundle.origin_partner, bundle.bundle_number)).fetchone()
            if row is not None:
                return _bundle(row), True
            for i, (record, effects) in enumerate(parts):
                if not _insert_case(conn, record, effects, lease):
                    raise AlreadyExists(f"case_number {record.case.case_number} is already "
                                        "used by another case", field=f"parts[{i}].case_number")
            conn.execute(f"INSERT INTO bundles ({BUNDLE_COLUMNS}) VALUES (?,?,?,?,?,?)",
                         (bundle.bundle_id, bundle.origin_partner, bundle.bundle_number,
                          bundle.name, json.dumps(bundle.case_ids), bundle.request_digest))
            _attach_audit(conn, pending, bundle.bundle_id)
            return bundle, False

        result: tuple[BundleRecord, bool] = await self._run(op)
        return result

    async def get_bundle(self, bundle_id: str) -> tuple[BundleRecord, list[CaseRecord]] | None:
        def op(conn: sqlite3.Connection) -> tuple[BundleRecord, list[CaseRecord]] | None:
            row = conn.execute(f"SELECT {BUNDLE_COLUMNS} FROM bundles WHERE bundle_id=?",
                               (bundle_id,)).fetchone()
            if row is None:
                return None
            bundle = _bundle(row)
            parts = []
            for case_id in bundle.case_ids:
                found = conn.execute(f"SELECT {RECORD_COLUMNS} FROM cases WHERE case_id=?",
                                     (case_id,)).fetchone()
                parts.append(_record(found))
            return bundle, parts

        result: tuple[BundleRecord, list[CaseRecord]] | None = await self._peek(op)
        return result

    async def read_events(self, after: int, limit: int) -> list[pb.CaseEvent]:
        def op(conn: sqlite3.Connection) -> list[pb.CaseEvent]:
            rows = conn.execute("SELECT seq, body FROM events WHERE seq > ? ORDER BY seq "
                                "LIMIT ?", (after, limit)).fetchall()
            out = []
            for seq, body in rows:
                event = pb.CaseEvent.FromString(body)
                event.seq = seq
                out.append(event)
            return out

        result: list[pb.CaseEvent] = await self._run(op)
        return result

    async def due_timers(self, now: float, limit: int) -> list[Timer]:
        def op(conn: sqlite3.Connection) -> list[Timer]:
            rows = conn.execute(
                "SELECT t.case_id, t.kind, t.due_at FROM timers t JOIN cases c "
                "ON c.case_id = t.case_id WHERE t.due_at <= ? AND t.fired = 0 "
                "AND NOT (c.state = ? AND t.kind IN ('warning', 'overdue')) "
                "ORDER BY t.due_at LIMIT ?",
                (now, pb.CASE_STATE_SUPPLEMENT_REQUESTED, limit)).fetchall()
            return [Timer(*row) for row in rows]

        result: list[Timer] = await self._run(op)
        return result

    async def case_counts(self) -> dict[str, int]:
        def op(conn: sqlite3.Connection) -> dict[str, int]:
            final = (pb.CASE_STATE_REJECTED, pb.CASE_STATE_RESULT_DELIVERED,
                     pb.CASE_STATE_CANCELLED, pb.CASE_STATE_EXPIRED)
            return {
                "open": conn.execute("SELECT COUNT(*) FROM cases WHERE state NOT IN "
                                     "(?,?,?,?)", final).fetchone()[0],
                "overdue": conn.execute("SELECT COUNT(*) FROM timers WHERE kind='overdue' "
                                        "AND fired = 1").fetchone()[0],
                "outbox": conn.execute("SELECT COUNT(*) FROM outbox WHERE dead=0"
                                       ).fetchone()[0],
                "dead": conn.execute("SELECT COUNT(*) FROM outbox WHERE dead=1").fetchone()[0],
            }

        result: dict[str, int] = await self._run(op)
        return result

    async def get_case(self, case_id: str) -> CaseRecord | None:
        def op(conn: sqlite3.Connection) -> CaseRecord | None:
            row = conn.execute(f"SELECT {RECORD_COLUMNS} FROM cases WHERE case_id=?",
                               (case_id,)).fetchone()
            return None if row is None else _record(row)

        result: CaseRecord | None = await self._peek(op)
        return result

    async def update_case(self, case_id: str, update_id: str, mutate: Mutation, *,
                          done_outbox: int | None = None, guard: Guard | None = None,
                          audit: PendingAudit | None = None) -> tuple[CaseRecord, bool]:
        pending = audit
        lease = self._lease()

        def op(conn: sqlite3.Connection) -> tuple[CaseRecord, bool] | GatewayError | None:
            row = conn.execute(f"SELECT {RECORD_COLUMNS} FROM cases WHERE case_id=?",
                               (case_id,)).fetchone()
            if row is None:
                return None
            record = _record(row)
            if guard is not None:
                try:
                    guard(record)
                except GatewayError as exc:  # refused before writing: nothing to undo, so
                    return exc  # the rest of the batch need not run again
            if done_outbox is not None:
                # the entry and its mark go in one transaction: the entry already gone
                # means the mark was applied (no applied_updates row per delivery)
                fresh = conn.execute("DELETE FROM outbox WHERE id=?", (done_outbox,)).rowcount
            else:
                fresh = conn.execute("INSERT OR IGNORE INTO applied_updates VALUES (?,?)",
                                     (case_id, update_id)).rowcount
            if not fresh:
                return record, True
            effects = mutate(record)
            conn.execute("UPDATE cases SET state=?, record=? WHERE case_id=?",
                         (record.case.state, record.case.SerializeToString(), case_id))
            _apply_effects(conn, case_id, effects, lease)
            _attach_audit(conn, pending, case_id)
            return record, False

        result: tuple[CaseRecord, bool] | GatewayError | None = await self._run(
            op, lazy=done_outbox is not None)
        if result is None:
            raise NotFound(f"case {case_id} not found", field="case_id")
        if isinstance(result, GatewayError):
            raise result
        return result

    async def due_outbox(self, now: float, limit: int,
                         skip: frozenset[str] = frozenset()) -> list[OutboxEntry]:
        result: list[OutboxEntry] = await self._run(lambda conn: _due(conn, now, limit, skip))
        return result

    async def poll_outbox(self, now: float, limit: int, skip: frozenset[str] = frozenset(),
                          probe: frozenset[str] = frozenset(),
                          exclude_ids: frozenset[int] = frozenset(),
                          exclude_cases: frozenset[str] = frozenset()) -> list[OutboxEntry]:
        lease = now + self._lease_s

        def op(conn: sqlite3.Connection) -> list[OutboxEntry]:
            heads: list[OutboxEntry] = []
            probes: dict[str, OutboxEntry] = {}
            for entry in _due(conn, now, limit, skip):
                if entry.id in exclude_ids or entry.case_id in exclude_cases:
                    continue
                if entry.destination in probe:
                    # a half-open circuit: one entry only, the one that failed least, so
                    # an entry that fails on its own never decides for the destination
                    best = probes.get(entry.destination)
                    if best is None or entry.attempts < best.attempts:
                        probes[entry.destination] = entry
                    continue
                heads.append(entry)
            heads.extend(probes.values())
            conn.executemany("UPDATE outbox SET lease_until=? WHERE id=?",
                             [(lease, e.id) for e in heads])  # claimed by this process
            return heads

        result: list[OutboxEntry] = await self._run(op)
        return result

    async def release_outbox(self, entry_id: int) -> None:
        await self._run(lambda conn: conn.execute(
            "UPDATE outbox SET lease_until=0 WHERE id=?", (entry_id,)))

    async def finish_outbox(self, entry_id: int, *, case_id: str = "",
                            receipt: StoredReceipt | None = None) -> None:
        def op(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM outbox WHERE id=?", (entry_id,)).rowcount and receipt:
                _insert_receipts(conn, case_id, [receipt])  # once: with the entry's deletion

        await self._run(op, lazy=True)

    async def retry_outbox(self, entry_id: int, next_at: float, error: str, *,
                           dead: bool = False, spend: bool = True) -> None:
        await self._run(lambda conn: conn.execute(
            "UPDATE outbox SET attempts=attempts+?, next_at=?, last_error=?, dead=?, "
            "lease_until=0 WHERE id=?",
            (int(spend), next_at, error[:500], int(dead), entry_id)))

    async def count_outbox(self) -> int:
        result: int = await self._run(
            lambda conn: conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        return result

    async def append_audit(self, entry: AuditEntry) -> int:
        """Append one masked entry to the hash chain; returns its seq."""
        masked = entry.masked()
        result: int = await self._run(lambda conn: _insert_audit(conn, masked))
        return result

    # -- certificate uses (CertificateUseStore) --------------------------------------
    async def record_uses(self, uses: Sequence[CertificateUse], audit: AuditEntry) -> int:
        """Keep the uses and append the call's audit entry as one op of the group commit:
        the rows ride the fsync the audit append costs anyway, and a use is never kept
        without its entry in the chain, nor the entry without its uses.

        A use_id already stored refuses the whole call (AlreadyExists): ULIDs do not
        repeat, so a repeat is a caller's bug, and it must not read as a full disk.
        """
        for use in uses:
            if use.role not in USE_ROLES:
                raise ValueError(f"certificate use role {use.role!r} is not one of "
                                 f"{sorted(USE_ROLES)}")
        masked = audit.masked()
        rows = [_use_row(use) for use in uses]

        def op(conn: sqlite3.Connection) -> int:
            inserted = conn.executemany(
                f"INSERT INTO certificate_uses ({USE_COLUMNS}) VALUES "
                "(?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING", rows).rowcount
            if rows and inserted != len(rows):
                raise AlreadyExists("a certificate use with this use_id is already kept",
                                    field="use_id")
            return _insert_audit(conn, masked)

        result: int = await self._run(op)
        return result

    async def save_transcript(self, transcript: SessionTranscript) -> None:
        """Keep a closed session's transcript with both gateways' head signatures, as
        part of its case's evidence (docs/sessions.md §7); a second save of one session
        changes nothing."""
        row = (transcript.session_id, transcript.case_id, transcript.n, transcript.head,
               b"\n".join(transcript.events), json.dumps(transcript.signatures, sort_keys=True),
               transcript.at)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO session_transcripts VALUES (?,?,?,?,?,?,?) "
                         "ON CONFLICT DO NOTHING", row)

        await self._run(op)

    async def uses_of(self, holder_key: str, *, issuers: frozenset[str] | None,
                      since: float, limit: int) -> list[CertificateUse]:
        """A holder's uses, oldest first, along the (holder_key, at) index. An empty
        holder_key (uses without a holder) names nobody and finds nothing."""
        if not holder_key or limit <= 0 or (issuers is not None and not issuers):
            return []
        chosen = sorted(issuers) if issuers is not None else []
        where = f" AND issuer IN ({','.join('?' * len(chosen))})" if issuers is not None else ""

        def op(conn: sqlite3.Connection) -> list[CertificateUse]:
            rows = conn.execute(
                f"SELECT {USE_COLUMNS} FROM certificate_uses WHERE holder_key=? AND at >= ?"
                f"{where} ORDER BY at, use_id LIMIT ?",
                (holder_key, since, *chosen, limit)).fetchall()
            return [use_from_row(row) for row in rows]

        result: list[CertificateUse] = await self._run(op)
        return result

    async def use_counts(self) -> list[UseCount]:
        def op(conn: sqlite3.Connection) -> list[UseCount]:
            return [UseCount(*row) for row in conn.execute(USE_COUNTS_SQL)]

        result: list[UseCount] = await self._run(op)
        return result

    async def recent_details(self, method: str, since: float) -> list[str]:
        """The details of the audit entries of ``method`` written at or after since, read
        as recent_jtis reads (newest first, stopped AUDIT_AT_SLACK_S before since): what a
        job noted there to remember after a restart (the statements forwarded lately)."""
        def op(conn: sqlite3.Connection) -> list[str]:
            out = []
            for name, detail, at in conn.execute(
                    "SELECT method, detail, at FROM audit ORDER BY seq DESC"):
                if at < since - AUDIT_AT_SLACK_S:
                    break
                if name == method and detail and at >= since:
                    out.append(detail)
            return out

        result: list[str] = await self._run(op)
        return result

    async def recent_jtis(self, since: float) -> list[tuple[str, str, float]]:
        """(caller, jti, at) of the audit entries written at or after since that carry a
        jti: the tokens accepted lately, for the replay cache after a restart.

        Read newest first along the primary key and stopped AUDIT_AT_SLACK_S before
        since (an entry's `at` is taken when its call starts, so seq order and `at`
        order differ by a call's duration): no index on `at` to keep up on every append.
        """
        def op(conn: sqlite3.Connection) -> list[tuple[str, str, float]]:
            out = []
            for caller, jti, at in conn.execute(
                    "SELECT caller, jti, at FROM audit ORDER BY seq DESC"):
                if at < since - AUDIT_AT_SLACK_S:
                    break
                if jti and at >= since:
                    out.append((caller, jti, at))
            return out

        result: list[tuple[str, str, float]] = await self._run(op)
        return result

    async def count_cases(self) -> int:
        result: int = await self._run(
            lambda conn: conn.execute("SELECT COUNT(*) FROM cases").fetchone()[0])
        return result


_IS_A_USE_STORE: type[CertificateUseStore] = SqliteStore  # mypy checks the protocol here


def _use_row(use: CertificateUse) -> tuple[str, float, str, str, str, str, str, str, str,
                                             str, str, bytes]:
    return (use.use_id, use.at, use.method, use.consumer, use.item, use.cert_type,
            use.number, use.issuer, use.outcome, use.holder_key, use.role, use.statement)


def use_from_row(row: Any) -> CertificateUse:
    """A CertificateUse from a row of USE_COLUMNS (the store's reads and offline.py's)."""
    return CertificateUse(use_id=row[0], at=float(row[1]), method=row[2], consumer=row[3],
                          item=row[4], cert_type=row[5], number=row[6], issuer=row[7],
                          outcome=row[8], holder_key=row[9], role=row[10],
                          statement=bytes(row[11]))


def _unavailable(exc: sqlite3.Error) -> StoreUnavailable:
    """What a caller hears when the database cannot do its part: UNAVAILABLE, retryable,
    in a few words (the raw sqlite text goes to the throttled log, not to callers)."""
    mapped = StoreUnavailable("the gateway cannot write to its store now; retry later")
    mapped.__cause__ = exc
    return mapped


@dataclass(slots=True)
class _Health:
    """Whether writes work, and one log line per interval while they do not."""

    since: float | None = None  # monotonic time of the first failure of this spell
    last: float = 0.0  # ... and of the latest one
    probed: float = 0.0
    failures: int = 0
    throttle: LogThrottle = field(default_factory=lambda: LogThrottle(log, 10.0))

    def failed(self, exc: sqlite3.Error) -> None:
        self.failures += 1
        self.last = time.monotonic()
        if self.since is None:
            self.since = self.last
        self.throttle.log(logging.ERROR, "write", "store writes fail: %s", _brief(exc))

    def succeeded(self) -> None:
        """A batch wrote. A disk with a few pages left lets some writes through between
        failures: the spell ends only with a write SETTLE_S after the last failure, so
        /readyz and the log do not flap."""
        now = time.monotonic()
        if self.since is None or now - self.last < SETTLE_S:
            return
        log.warning("store writes succeed again after %.1f s (%d failed batches)",
                    now - self.since, self.failures)
        self.since, self.failures = None, 0


def _brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a store written by an older version up to this schema (additive changes only)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(outbox)")}
    if "dead" not in columns:
        conn.execute("ALTER TABLE outbox ADD COLUMN dead INTEGER NOT NULL DEFAULT 0")
    if "lease_until" not in columns:
        conn.execute("ALTER TABLE outbox ADD COLUMN lease_until REAL NOT NULL DEFAULT 0")
    if "request" not in {row[1] for row in conn.execute("PRAGMA table_info(receipts)")}:
        conn.execute("ALTER TABLE receipts ADD COLUMN request BLOB NOT NULL DEFAULT x''")


def _name_thread(name: str) -> None:
    """Give the writer thread its name in the OS too (top -H, /proc/<pid>/task/*/comm),
    so operators and benchmarks can tell its CPU from the event loop's. Linux only."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


def _record(row: tuple[str, str, str, bytes]) -> CaseRecord:
    case = pb.Case()
    case.ParseFromString(row[3])
    return CaseRecord(case=case, upstream=row[0], downstream=row[1], request_digest=row[2])


class _OpFailed(Exception):
    """An op raised in a batch run without savepoints: run it again with them."""


@dataclass
class _Txn:
    """What the writer thread's current transaction has written that Python must know:
    the head of the audit chain (read once per transaction: the write lock is held, no
    other process can append), the event rows (inserted once, at the end), and the
    pending audit entries attached (their seq is void if the transaction is undone)."""

    head: tuple[int, str] | None = None
    events: list[tuple[str, bytes]] = field(default_factory=list)
    audits: list[PendingAudit] = field(default_factory=list)

    def mark(self) -> tuple[int, int]:
        return len(self.events), len(self.audits)

    def undo(self, mark: tuple[int, int]) -> None:
        del self.events[mark[0]:]
        for pending in self.audits[mark[1]:]:
            pending.seq = None
        del self.audits[mark[1]:]
        self.head = None  # re-read: the chain may have lost entries of the undone op


_TXN = threading.local()  # the writer thread's current _Txn


def _txn() -> _Txn:
    txn: _Txn | None = getattr(_TXN, "current", None)
    assert txn is not None, "store ops run inside SqliteStore._transaction"
    return txn


def _insert_audit(conn: sqlite3.Connection, masked: AuditEntry) -> int:
    txn = _txn()
    if txn.head is None:
        row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        txn.head = (row[0], row[1]) if row else (0, GENESIS)
    seq, prev = txn.head[0] + 1, txn.head[1]
    digest = chain_hash(seq, masked, prev)
    conn.execute(f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                 (seq, *masked.row(), prev, digest))
    txn.head = (seq, digest)
    return seq


def _attach_audit(conn: sqlite3.Connection, pending: PendingAudit | None, case_id: str) -> None:
    """Append the served call's audit entry in this write's transaction (see PendingAudit)."""
    if pending is None or pending.seq is not None:
        return
    entry = replace(pending.entry, case_id=case_id).masked()
    pending.seq = _insert_audit(conn, entry)
    _txn().audits.append(pending)


def _due(conn: sqlite3.Connection, now: float, limit: int,
         skip: frozenset[str]) -> list[OutboxEntry]:
    # a dead entry is its case's MIN(id): it holds back the later ones
    rows = conn.execute(
        "SELECT o.id, o.destination, o.case_id, o.kind, o.payload, o.attempts "
        "FROM outbox o WHERE o.next_at <= ? AND o.lease_until <= ? AND o.dead = 0 AND o.id = "
        "(SELECT MIN(id) FROM outbox WHERE case_id = o.case_id) "
        f"AND o.destination NOT IN ({','.join('?' * len(skip))}) "
        "ORDER BY o.id LIMIT ?",
        (now, now, *sorted(skip), limit)).fetchall()
    return [OutboxEntry(*row) for row in rows]


def _find_case(conn: sqlite3.Connection, case: pb.Case) -> CaseRecord | None:
    row = conn.execute(
        f"SELECT {RECORD_COLUMNS} FROM cases WHERE case_id=? "
        "OR (origin_partner=? AND case_number=?)",
        (case.case_id, case.origin_partner, case.case_number)).fetchone()
    return None if row is None else _record(row)


def _insert_case(conn: sqlite3.Connection, record: CaseRecord, effects: Effects,
                 lease: float) -> bool:
    """Insert a new case and its effects; False (and nothing written) if its case_id or
    its (origin_partner, case_number) is taken. The insert is the uniqueness check: no
    look-up first on the path every new case takes."""
    case = record.case
    if not conn.execute(
            "INSERT INTO cases VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
            (case.case_id, case.origin_partner, case.case_number, case.state,
             record.upstream, record.downstream, record.request_digest,
             case.SerializeToString())).rowcount:
        return False
    _apply_effects(conn, case.case_id, effects, lease, new_case=True)
    return True


def _apply_effects(conn: sqlite3.Connection, case_id: str, effects: Effects,
                   lease: float, *, new_case: bool = False) -> None:
    effects.outbox_ids.clear()
    effects.outbox_behind.clear()
    for o in effects.outbox:
        # an entry with older ones of its case still stored must wait for them, whichever
        # process wrote them: it is left unleased, for the poll that keeps the order
        behind = not new_case and conn.execute(
            "SELECT 1 FROM outbox WHERE case_id=? LIMIT 1", (o.case_id,)).fetchone() is not None
        new_case = False  # its second entry is behind its first
        effects.outbox_ids.append(conn.execute(
            "INSERT INTO outbox (destination, case_id, kind, payload, lease_until) "
            "VALUES (?,?,?,?,?)", (o.destination, o.case_id, o.kind, o.payload,
                                   0.0 if behind else lease)).lastrowid or 0)
        effects.outbox_behind.append(behind)
    if effects.events:  # inserted at the end of the transaction, in op order
        _txn().events.extend((e.case_id, e.SerializeToString()) for e in effects.events)
    if effects.shift_s:
        conn.execute("UPDATE timers SET due_at = due_at + ?, fired = 0 WHERE case_id=? AND "
                     "kind IN ('warning', 'overdue')", (effects.shift_s, case_id))
    gone = [(case_id, kind) for kind, due in effects.timers.items() if due is None]
    if gone:
        conn.executemany("DELETE FROM timers WHERE case_id=? AND kind=?", gone)
    due_rows = [(case_id, kind, due) for kind, due in effects.timers.items() if due is not None]
    if due_rows:
        conn.executemany("INSERT OR REPLACE INTO timers VALUES (?,?,?,0)", due_rows)
    if effects.fired:
        conn.execute("UPDATE timers SET fired = 1 WHERE case_id=? AND kind=?",
                     (case_id, effects.fired))
    if effects.receipts:
        _insert_receipts(conn, case_id, effects.receipts)
    if effects.statements:  # the case's evidence (docs/signing.md §8)
        conn.executemany("INSERT INTO statements (case_id, received_at, statement) "
                         "VALUES (?,?,?)", [(case_id, at, body)
                                            for at, body in effects.statements])


def _insert_receipts(conn: sqlite3.Connection, case_id: str,
                     receipts: Sequence[StoredReceipt]) -> None:
    conn.executemany("INSERT INTO receipts (case_id, party, received_at, response, token, "
                     "request) VALUES (?,?,?,?,?,?)",
                     [(case_id, r.party, r.received_at, r.response, r.token, r.request)
                      for r in receipts])


def _bundle(row: tuple[str, str, str, str, str, str]) -> BundleRecord:
    return BundleRecord(bundle_id=row[0], origin_partner=row[1], bundle_number=row[2],
                        name=row[3], case_ids=tuple(json.loads(row[4])),
                        request_digest=row[5])
