"""The store protocol: the one seam between the gateway and its database.

Mutations take a function that runs inside the store's transaction, so a state change,
the outbox rows it causes and the idempotency record commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gateway.audit import AuditEntry, PendingAudit
from gateway.pb.tongban.v1 import case_pb2 as pb


@dataclass(slots=True)
class CaseRecord:
    """A case as this gateway holds it, and its two neighbours on the path."""

    case: pb.Case
    upstream: str  # origin partner, or the gateway it came from
    downstream: str  # target partner, or the gateway it went on to
    request_digest: str = ""  # what the origin's SubmitCase carried, to spot key reuse


@dataclass(frozen=True, slots=True)
class NewOutbox:
    """A message to deliver after commit: a case or an update, to a partner or a peer."""

    destination: str
    case_id: str
    kind: str  # "case" | "update"
    payload: bytes  # serialized tongban.v1.Case or CaseUpdate, sent as is


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    id: int
    destination: str
    case_id: str
    kind: str
    payload: bytes
    attempts: int


@dataclass(frozen=True, slots=True)
class StoredReceipt:
    """A party's signed answer to a delivery of ours (docs/signing.md §8): evidence that
    the next hop or the platform took the message."""

    party: str
    received_at: float
    response: bytes
    token: str
    request: bytes = b""  # what was delivered: its digest is the token's rdg


@dataclass(frozen=True, slots=True)
class SessionTranscript:
    """A closed 屏对屏 session's transcript (docs/sessions.md §7): the canonical JSON of
    every sequenced event, the chain's head, and each gateway's signature of it."""

    session_id: str
    case_id: str
    n: int
    head: str  # base64url of the last chain hash
    events: list[bytes]
    signatures: dict[str, str]  # gateway id -> tongban-transcript+jwt
    at: float


@dataclass(frozen=True, slots=True)
class CaseEvidence:
    """What a store file holds about one case, for `tongban evidence export`."""

    record: CaseRecord
    statements: list[tuple[float, bytes]]  # (receipt time, serialized Statement)
    receipts: list[StoredReceipt]
    audit: list[tuple[int, AuditEntry, str, str]]
    sessions: list[SessionTranscript] = field(default_factory=list)  # 屏对屏, closed


@dataclass(slots=True)
class Effects:
    """What a change causes, committed with it: messages, events, deadline timers."""

    outbox: list[NewOutbox] = field(default_factory=list)
    events: list[pb.CaseEvent] = field(default_factory=list)
    timers: dict[str, float | None] = field(default_factory=dict)  # kind -> due; None: cancel
    shift_s: float = 0.0  # move the case's deadline timers later (time spent in 补正)
    fired: str = ""  # a timer that went off but stays, marked (overdue: counted as such)
    # the author's signed statements this change applied, kept as the case's evidence:
    # (receipt time, serialized tongban.v1.Statement)
    statements: list[tuple[float, bytes]] = field(default_factory=list)
    receipts: list[StoredReceipt] = field(default_factory=list)  # answers to our deliveries
    outbox_ids: list[int] = field(default_factory=list)  # filled in by the store on insert
    outbox_behind: list[bool] = field(default_factory=list)  # ... True: older entries wait


@dataclass(frozen=True, slots=True)
class Timer:
    case_id: str
    kind: str  # "warning" | "overdue" | "commitment" | "rectification"
    due_at: float


@dataclass(frozen=True, slots=True)
class BundleRecord:
    bundle_id: str
    bundle_number: str
    origin_partner: str
    name: str
    case_ids: tuple[str, ...]
    request_digest: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateUse:
    """One use of a certificate call at this gateway (docs/certificates.md, Accounting):
    what `tongban stats certs` counts and what a holder's "who used my certificate"
    lists. The holder is kept only as a keyed digest (holder_key), never in clear."""

    use_id: str  # ULID, unique at this gateway
    at: float  # this gateway's clock
    method: str  # short name: LookupCertificate, ListCertificates, VerifyCertificate, ...
    consumer: str  # the platform that asked
    item: str  # the purpose item ("" when the call has none)
    cert_type: str  # "" when the call names none (a listing of several types: one row each)
    number: str  # the certificate identifier, when one was named or returned
    issuer: str  # the issuing platform asked ("" when none was reached)
    outcome: str  # "OK" or the refusal's status code name
    holder_key: str  # holder digest (gateway/certificates/accounting.py), "" if no holder
    role: str  # "origin" (the consumer's gateway), "issuer" (the issuer's) or "both"
    # the consumer's own signed request (serialized tongban.v1.Statement), with the
    # holder's authorization inside it: the use's evidence
    statement: bytes = b""


@dataclass(frozen=True, slots=True)
class UseCount:
    cert_type: str
    item: str
    consumer: str
    issuer: str
    outcome: str
    count: int


class CertificateUseStore(Protocol):
    """The certificate job's part of the store, apart from the cases'."""

    async def record_uses(self, uses: Sequence[CertificateUse], audit: AuditEntry) -> int:
        """Keep the uses and append the call's audit entry in one transaction (the
        entry is passed explicitly, not carried in a ContextVar); returns its seq."""
        ...

    async def uses_of(self, holder_key: str, *, issuers: frozenset[str] | None,
                      since: float, limit: int) -> list[CertificateUse]:
        """Uses of one holder's certificates, oldest first; issuers: only uses answered
        by these platforms (None: any); at >= since; at most limit."""
        ...

    async def recent_details(self, method: str, since: float) -> list[str]:
        """Details of the audit entries of ``method`` since ``since`` (seconds), newest
        first: what the certificate job noted there of the statements it forwarded, to
        refuse their replay after a restart too."""
        ...

    async def use_counts(self) -> list[UseCount]:
        """Uses grouped by (type, item, consumer, issuer, outcome), largest first."""
        ...


class SessionStore(Protocol):
    async def save_transcript(self, transcript: SessionTranscript) -> None: ...


Mutation = Callable[[CaseRecord], Effects]
Guard = Callable[[CaseRecord], None]  # raises to refuse


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def create_case(self, record: CaseRecord, effects: Effects, *,
                          audit: PendingAudit | None = None) -> tuple[CaseRecord, bool]:
        """Insert a case unless its case_id or (origin_partner, case_number) exists.

        Returns the stored record and True when it existed already (nothing changed).
        audit: the call's entry, appended (with the case id) in the same transaction when
        the case is new; its seq is set then, and stays None for a duplicate. The store
        also fills ``effects.outbox_ids`` and ``effects.outbox_behind`` as it inserts the
        outbox rows (their ids, and whether older entries of the case wait before them).
        """
        ...

    async def create_bundle(self, bundle: BundleRecord,
                            parts: Sequence[tuple[CaseRecord, Effects]], *,
                            audit: PendingAudit | None = None) -> tuple[BundleRecord, bool]:
        """Insert a bundle and all its cases at once, unless (origin, bundle_number) exists.

        A part whose (origin, case_number) is taken fails the whole bundle (AlreadyExists).
        audit as for create_case (with the bundle id).
        """
        ...

    async def get_bundle(self, bundle_id: str) -> tuple[BundleRecord, list[CaseRecord]] | None:
        ...

    async def read_events(self, after: int, limit: int) -> list[pb.CaseEvent]:
        """Events with seq > after, oldest first, seq filled in."""
        ...

    async def due_timers(self, now: float, limit: int) -> list[Timer]:
        """Timers due by now, except deadline timers of cases paused in 补正."""
        ...

    async def case_counts(self) -> dict[str, int]:
        """Gauges for /metrics: open, overdue (alarm raised, still open), outbox, dead."""
        ...

    async def get_case(self, case_id: str) -> CaseRecord | None: ...

    async def update_case(self, case_id: str, update_id: str, mutate: Mutation, *,
                          done_outbox: int | None = None, guard: Guard | None = None,
                          audit: PendingAudit | None = None) -> tuple[CaseRecord, bool]:
        """Apply mutate to the case once per update_id, atomically with its outbox rows.

        A second call with the same update_id changes nothing and returns True.
        With done_outbox (a delivery's mark), that entry's deletion is the once-only
        check instead: the entry gone means the mark was applied.
        guard sees the stored case first, duplicates included, and may raise a
        GatewayError to refuse the call (who may touch the case is decided on the row
        being changed, in the same operation: no read beforehand).
        mutate may raise a GatewayError; then nothing of the call is kept.
        audit: the call's entry, appended in the same transaction when the update is
        applied (not for a duplicate), as for create_case.
        """
        ...

    async def due_outbox(self, now: float, limit: int,
                         skip: frozenset[str] = frozenset()) -> list[OutboxEntry]:
        """The oldest entry of each case, when it is due, not dead and its destination
        is not in skip (delivery is in order per case)."""
        ...

    async def poll_outbox(self, now: float, limit: int, skip: frozenset[str] = frozenset(),
                          probe: frozenset[str] = frozenset(),
                          exclude_ids: frozenset[int] = frozenset(),
                          exclude_cases: frozenset[str] = frozenset()) -> list[OutboxEntry]:
        """Claim (lease) for this process the due, unleased oldest entry of each case,
        one per `probe` destination, leaving out the excluded ids and cases."""
        ...

    async def release_outbox(self, entry_id: int) -> None:
        """End this process's lease on an entry: the next poll of any process takes it."""
        ...

    async def finish_outbox(self, entry_id: int, *, case_id: str = "",
                            receipt: StoredReceipt | None = None) -> None:
        """A delivery is done: its entry goes, and the receiver's signed answer, if any,
        is kept with the case's evidence in the same transaction."""
        ...

    async def retry_outbox(self, entry_id: int, next_at: float, error: str, *,
                           dead: bool = False, spend: bool = True) -> None:
        """Count a failed attempt (spend=False: a try that says nothing about the entry,
        such as a probe of a destination that is down); dead=True parks the entry until
        an operator re-drives it."""
        ...

    async def count_outbox(self) -> int: ...

    async def count_cases(self) -> int: ...

    async def append_audit(self, entry: AuditEntry) -> int:
        """Append to the hash-chained audit log (masked); returns the entry's seq."""
        ...

    async def recent_jtis(self, since: float) -> list[tuple[str, str, float]]:
        """(caller, jti, at) of audit entries with at >= since and a jti, any outcome:
        what the replay cache must remember again after a restart."""
        ...
