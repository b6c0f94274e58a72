"""Persistence: the store protocol and its records."""

from gateway.store.base import (
    BundleRecord,
    CaseEvidence,
    CaseRecord,
    Effects,
    NewOutbox,
    OutboxEntry,
    Store,
    StoredReceipt,
    Timer,
)

__all__ = ["BundleRecord", "CaseEvidence", "CaseRecord", "Effects", "NewOutbox",
           "OutboxEntry", "Store", "StoredReceipt", "Timer"]
