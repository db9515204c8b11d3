"""The results store: every run, every result, every import, remembered.

A small contract (:class:`~testrack.store.base.Store`) with an in-memory backend for
tests, an SQLite backend for one machine, and a PostgreSQL backend (``postgres.py``) for
racks shared between machines, named by a ``postgresql://`` URL.
"""

from pathlib import Path

from testrack.share.pgschema import is_postgres_url
from testrack.store.base import ImportCost, Pin, Quarantine, Result, Run, RunInfo, Store, StoreError
from testrack.store.memory import MemoryStore
from testrack.store.sqlite import DEFAULT_PATH, SQLiteStore, find_store, open_store


def location(text: str) -> Path | str:
    """``--store``'s type: a PostgreSQL URL stays a URL (``Path`` would fold its ``//``)."""
    return text if is_postgres_url(text) else Path(text)


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
    "location",
    "open_store",
]
