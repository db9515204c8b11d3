"""Every share backend, made fresh for a test: in memory, SQLite in tmp_path, PostgreSQL in a
fresh database of the session's server (tests/pg.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from testrack.share import MemoryShare
from testrack.share.backend import ShareBackend
from testrack.share.clock import Clock


def make_share_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[Clock], ShareBackend]:
    kind = request.param
    if kind == "memory":
        shared: list[MemoryShare] = []  # one share: a second "connection" is the same object

        def memory(clock: Clock) -> ShareBackend:
            if not shared:
                shared.append(MemoryShare(clock))
            return shared[0]

        return memory
    if kind == "sqlite":
        from testrack.share.sqlite import SQLiteShare

        return lambda clock: SQLiteShare(tmp_path / "share.sqlite", clock=clock)
    from testrack.share.postgres import PostgresShare

    url = request.getfixturevalue("pg_database")
    return lambda clock: PostgresShare(url, clock=clock)
