"""Persistence: the store protocol and its records."""

from gateway.store.base import (
    BundleRecord,
    CaseRecord,
    Effects,
    NewOutbox,
    OutboxEntry,
    Store,
    Timer,
)

__all__ = ["BundleRecord", "CaseRecord", "Effects", "NewOutbox", "OutboxEntry", "Store", "Timer"]
