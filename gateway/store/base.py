"""The store protocol: the one seam between the gateway and its database.

Mutations take a function that runs inside the store's transaction, so a state change,
the outbox rows it causes and the idempotency record commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.audit import AuditEntry
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


Mutation = Callable[[CaseRecord], Sequence[NewOutbox]]


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def create_case(self, record: CaseRecord,
                          outbox: Sequence[NewOutbox]) -> tuple[CaseRecord, bool]:
        """Insert a case unless its case_id or (origin_partner, case_number) exists.

        Returns the stored record and True when it existed already (nothing changed).
        """
        ...

    async def get_case(self, case_id: str) -> CaseRecord | None: ...

    async def update_case(self, case_id: str, update_id: str, mutate: Mutation, *,
                          done_outbox: int | None = None) -> tuple[CaseRecord, bool]:
        """Apply mutate to the case once per update_id, atomically with its outbox rows.

        A second call with the same update_id changes nothing and returns True.
        mutate may raise a GatewayError; then nothing of the call is kept.
        """
        ...

    async def due_outbox(self, now: float, limit: int,
                         skip: frozenset[str] = frozenset()) -> list[OutboxEntry]:
        """The oldest entry of each case, when it is due, not dead and its destination
        is not in skip (delivery is in order per case)."""
        ...

    async def finish_outbox(self, entry_id: int) -> None: ...

    async def retry_outbox(self, entry_id: int, next_at: float, error: str, *,
                           dead: bool = False) -> None:
        """Count a failed attempt; dead=True parks the entry until an operator re-drives it."""
        ...

    async def count_outbox(self) -> int: ...

    async def count_cases(self) -> int: ...

    async def append_audit(self, entry: AuditEntry) -> int:
        """Append to the hash-chained audit log (masked); returns the entry's seq."""
        ...
