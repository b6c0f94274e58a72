"""Reading a store file beside a running gateway, for the operator's commands (`tongban
outbox`, `tongban audit verify`, `tongban evidence export`, `tongban stats certs`) and the
tests: short-lived connections of their own, read-only except the outbox re-drive. WAL
lets them read committed data while the gateway writes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.audit import AuditEntry
from gateway.store.base import CaseEvidence, SessionTranscript, StoredReceipt, UseCount
from gateway.store.sqlite import AUDIT_COLUMNS, RECORD_COLUMNS, USE_COUNTS_SQL, _record


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """An outbox entry as `tongban outbox list` shows it."""

    id: int
    destination: str
    case_id: str
    kind: str
    attempts: int
    next_at: float
    dead: bool
    last_error: str


def _offline(path: Path | str) -> sqlite3.Connection:
    """A second connection beside a running gateway (WAL lets both work)."""
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=10.0)
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def list_outbox(path: Path | str, *, dead_only: bool = False) -> list[OutboxRow]:
    conn = _offline(path)
    try:
        rows = conn.execute(
            "SELECT id, destination, case_id, kind, attempts, next_at, dead, last_error "
            f"FROM outbox {'WHERE dead = 1 ' if dead_only else ''}ORDER BY id").fetchall()
    finally:
        conn.close()
    return [OutboxRow(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7]) for r in rows]


def redrive_outbox(path: Path | str, *, ids: Sequence[int] = (),
                   destination: str | None = None) -> int:
    """Put dead-lettered entries back in line (all of them, by id, or by destination).

    Attempts restart from zero; a running gateway picks them up on its next poll.
    """
    where: list[str] = ["dead = 1"]
    args: list[object] = []
    if ids:
        where.append(f"id IN ({','.join('?' * len(ids))})")
        args.extend(ids)
    if destination is not None:
        where.append("destination = ?")
        args.append(destination)
    conn = _offline(path)
    try:
        count: int = conn.execute(
            f"UPDATE outbox SET dead = 0, attempts = 0, next_at = 0 WHERE {' AND '.join(where)}",
            args).rowcount
    finally:
        conn.close()
    return count


def read_audit(path: Path | str) -> list[tuple[int, AuditEntry, str, str]]:
    """The audit chain of a store file, in seq order, for `tongban audit verify`."""
    with closing(_read_only(path)) as conn:
        rows = conn.execute(f"SELECT {AUDIT_COLUMNS} FROM audit ORDER BY seq").fetchall()
    return [_audit_row(row) for row in rows]


def case_ids(path: Path | str) -> list[str]:
    """Every case a store file holds, oldest first (offline, read-only)."""
    with closing(_read_only(path)) as conn:
        return [row[0] for row in conn.execute("SELECT case_id FROM cases ORDER BY rowid")]


def read_evidence(path: Path | str, case_id: str) -> CaseEvidence | None:
    """A case, the statements applied to it, the receipts of its deliveries and its
    audit entries; None when the store has no such case."""
    with closing(_read_only(path)) as conn:
        row = conn.execute(f"SELECT {RECORD_COLUMNS} FROM cases WHERE case_id=?",
                           (case_id,)).fetchone()
        if row is None:
            return None
        statements = conn.execute("SELECT received_at, statement FROM statements "
                                  "WHERE case_id=? ORDER BY id", (case_id,)).fetchall()
        receipts = conn.execute("SELECT party, received_at, response, token, request "
                                "FROM receipts "
                                "WHERE case_id=? ORDER BY id", (case_id,)).fetchall()
        audit = conn.execute(f"SELECT {AUDIT_COLUMNS} FROM audit WHERE case_id=? "
                             "ORDER BY seq", (case_id,)).fetchall()
        sessions = [] if conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND "
            "name='session_transcripts'").fetchone() is None else conn.execute(
            f"SELECT {TRANSCRIPT_COLUMNS} FROM session_transcripts WHERE case_id=? "
            "ORDER BY at", (case_id,)).fetchall()
    return CaseEvidence(
        record=_record(row),
        statements=[(float(at), bytes(body)) for at, body in statements],
        receipts=[StoredReceipt(party=r[0], received_at=float(r[1]), response=bytes(r[2]),
                                token=r[3], request=bytes(r[4])) for r in receipts],
        audit=[_audit_row(r) for r in audit],
        sessions=[_transcript(r) for r in sessions])


def read_use_counts(path: Path | str) -> list[UseCount]:
    """Certificate uses grouped by (type, item, consumer, issuer, outcome), largest first,
    as the store's use_counts gives them. A file written before the table existed (the
    gateway adds it when it next opens the file; this connection only reads) has none."""
    with closing(_read_only(path)) as conn:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND "
                        "name='certificate_uses'").fetchone() is None:
            return []
        return [UseCount(*row) for row in conn.execute(USE_COUNTS_SQL)]


def read_transcript(path: Path | str, session_id: str) -> SessionTranscript | None:
    """A closed session's transcript from a store file, read-only (`tongban sessions
    show`); None when the file holds none for that session."""
    with closing(_read_only(path)) as conn:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND "
                        "name='session_transcripts'").fetchone() is None:
            return None
        row = conn.execute(f"SELECT {TRANSCRIPT_COLUMNS} FROM session_transcripts "
                           "WHERE session_id=?", (session_id,)).fetchone()
    return None if row is None else _transcript(row)


TRANSCRIPT_COLUMNS = "session_id, case_id, n, head, events, signatures, at"


def _transcript(row: Any) -> SessionTranscript:
    events = bytes(row[4]).split(b"\n") if row[4] else []
    return SessionTranscript(row[0], row[1], row[2], row[3], events, json.loads(row[5]),
                             row[6])


def _read_only(path: Path | str) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def _audit_row(row: Any) -> tuple[int, AuditEntry, str, str]:
    """(seq, entry, prev_hash, hash) of a row of AUDIT_COLUMNS."""
    return row[0], AuditEntry(*row[1:10]), row[10], row[11]
