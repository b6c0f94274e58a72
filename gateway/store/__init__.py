"""Persistence: one protocol (base.py), SQLite as the embedded default (sqlite.py)."""

from gateway.store.base import CaseRecord, NewOutbox, OutboxEntry, Store

__all__ = ["CaseRecord", "NewOutbox", "OutboxEntry", "Store"]
