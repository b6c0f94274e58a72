"""Hash-chained audit log (DESIGN §7). Pure: entries in, hashes and verdicts out.

Each entry holds the SHA-256 of its predecessor, so editing, deleting or reordering any
entry breaks the chain at that point; `tongban audit verify` names the first bad entry.
Texts are masked before they are written: id numbers keep their first 6 and last 4;
what a caller chose (a case id, an error text) is escaped and cut short.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace

from gateway.errors import DETAILS_LIMIT, clean
from gateway.identifiers import mask_text

GENESIS = "0" * 64
CASE_ID_LIMIT = 64  # characters of case_id kept (the gateway's own ids are 26)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One exchange: who called what, about which case, with which bytes, and the outcome."""

    at: float
    caller: str
    method: str
    case_id: str
    digest: str  # bdg of the request
    kid: str
    jti: str
    outcome: str  # gRPC status name
    detail: str = ""

    def masked(self) -> AuditEntry:
        """As written to the log: the detail masked, and every text a caller chose
        escaped and cut short (a signed 3 MiB case_id must not make a 3 MB row)."""
        # masked before the cut (an id cut in two would escape the mask), but only a
        # prefix: the cut keeps DETAILS_LIMIT of at least 4x as many characters
        detail = mask_text(self.detail[:4 * DETAILS_LIMIT])
        return replace(self, detail=clean(detail, DETAILS_LIMIT),
                       case_id=clean(self.case_id, CASE_ID_LIMIT))

    def row(self) -> tuple[float, str, str, str, str, str, str, str, str]:
        """The fields in order (dataclasses.astuple deep-copies each one: 10x slower)."""
        return (self.at, self.caller, self.method, self.case_id, self.digest, self.kid,
                self.jti, self.outcome, self.detail)


@dataclass(slots=True)
class PendingAudit:
    """The audit entry of the call being served, for the store to append in the same
    transaction as the call's own change (one commit, one fsync, instead of two).

    The servicer makes it and hands it, as a parameter, through the job to the store
    write that makes the call's change (``audit=`` of create_case, create_bundle,
    update_case, and CertificateUseStore.record_uses); that write appends it (outcome
    OK, with the write's case id) and records the seq. A call whose change was not
    written that way (a read, a duplicate, a refusal) is audited on its own.
    """

    entry: AuditEntry
    seq: int | None = None


def chain_hash(seq: int, entry: AuditEntry, prev: str) -> str:
    """SHA-256 over the canonical JSON of [seq, *fields, prev]."""
    data = json.dumps([seq, *entry.row(), prev], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    checked: int
    first_bad: int | None = None
    reason: str = ""


def verify(rows: Iterable[tuple[int, AuditEntry, str, str]]) -> Verdict:
    """Check (seq, entry, prev_hash, hash) rows in seq order: contiguous, linked, unedited."""
    prev, expected_seq, checked = GENESIS, 1, 0
    for seq, entry, prev_hash, digest in rows:
        if seq != expected_seq:
            return Verdict(False, checked, expected_seq,
                           f"entry {expected_seq} is missing (next is {seq})")
        if prev_hash != prev:
            return Verdict(False, checked, seq, f"entry {seq} does not follow entry {seq - 1}")
        if chain_hash(seq, entry, prev_hash) != digest:
            return Verdict(False, checked, seq, f"entry {seq} was altered")
        prev, expected_seq, checked = digest, seq + 1, checked + 1
    return Verdict(True, checked)
