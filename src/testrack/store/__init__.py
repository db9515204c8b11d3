"""The results store: every run, every result, every import, remembered.

A small contract (:class:`~testrack.store.base.Store`) with an in-memory backend for
tests and an SQLite backend for real use; a PostgreSQL backend for racks shared
between machines can follow the same contract.
"""

from testrack.store.base import ImportCost, Pin, Quarantine, Result, Run, RunInfo, Store, StoreError
from testrack.store.memory import MemoryStore
from testrack.store.sqlite import DEFAULT_PATH, SQLiteStore, find_store, open_store

__all__ = [
    "DEFAULT_PATH",
    "ImportCost",
    "MemoryStore",
    "Pin",
    "Quarantine",
    "Result",
    "Run",
    "RunInfo",
    "SQLiteStore",
    "Store",
    "StoreError",
    "find_store",
    "open_store",
]
