"""The SQLite store: ``<rootdir>/.testrack/results.sqlite``.

WAL mode, so readers (``testrack last`` while a run goes on) never block the
writer and each commit is one append; ``synchronous=NORMAL``, so a result that
was committed survives the process being killed. The schema carries its version
in ``PRAGMA user_version`` and :data:`MIGRATIONS` brings any older store up to
date, one transaction per step, when it is opened.

One connection serves every thread of the process (the run loop, a health check, the
thread that closes the store): a lock makes each transaction and each read whole, so
two threads never share a transaction.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testrack.share.secrets import redact_command
from testrack.store.base import ImportCost, Pin, Quarantine, Result, Run, RunInfo, StoreError

DEFAULT_PATH = Path(".testrack") / "results.sqlite"

#: Schema steps; MIGRATIONS[i] takes a store from version i to version i + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # v1: runs and their results
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            uid TEXT NOT NULL UNIQUE,
            started REAL NOT NULL,
            finished REAL,
            mode TEXT NOT NULL,
            rack TEXT NOT NULL,
            command TEXT NOT NULL,
            outcome TEXT
        )""",
        """CREATE TABLE results (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs (id),
            nodeid TEXT NOT NULL,
            device TEXT NOT NULL,
            worker TEXT NOT NULL,
            outcome TEXT NOT NULL,
            duration REAL NOT NULL,
            started REAL NOT NULL,
            stopped REAL NOT NULL
        )""",
        "CREATE INDEX results_by_run ON results (run_id)",
        "CREATE INDEX results_by_test ON results (nodeid)",
    ),
    (  # v2: where in its worker's sequence a test ran, why it failed, and import costs
        "ALTER TABLE results ADD COLUMN position INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE results ADD COLUMN message TEXT",
        """CREATE TABLE imports (
            run_id INTEGER NOT NULL REFERENCES runs (id),
            module TEXT NOT NULL,
            worker TEXT NOT NULL,
            device TEXT NOT NULL,
            seconds REAL NOT NULL
        )""",
        "CREATE INDEX imports_by_run ON imports (run_id)",
    ),
    (  # v3: the identity each device was first seen with, and the devices a run quarantined
        """CREATE TABLE identities (
            device TEXT PRIMARY KEY,
            identity TEXT NOT NULL,
            pinned REAL NOT NULL,
            run_id INTEGER
        )""",
        """CREATE TABLE quarantines (
            run_id INTEGER NOT NULL,
            device TEXT NOT NULL,
            reason TEXT NOT NULL,
            at REAL NOT NULL
        )""",
        "CREATE INDEX quarantines_by_run ON quarantines (run_id)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

_RESULT_COLUMNS = "nodeid, device, worker, outcome, duration, started, stopped, position, message, run_id"
_RUN_COLUMNS = "id, uid, started, mode, rack, command, finished, outcome"
_PIN_COLUMNS = "device, identity, pinned, run_id"


def find_store(start: Path) -> Path | None:
    """The nearest ``.testrack/results.sqlite`` in ``start`` or a parent directory."""
    for directory in (start, *start.parents):
        candidate = directory / DEFAULT_PATH
        if candidate.is_file():
            return candidate
    return None


def open_store(path: Path) -> SQLiteStore:
    return SQLiteStore(path)


class SQLiteStore:
    """Implements :class:`~testrack.store.base.Store` on one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fix = f"move {path} away (a new store is made on the next run) or choose another with --rack-store"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Any thread, one at a time (self._lock); the last one (closing it) may not be the first.
            self._lock = threading.RLock()
            self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: not a usable testrack results store ({exc}); {fix}") from None
        except OSError as exc:
            raise StoreError(f"{path}: cannot open the results store ({exc.strerror}); {fix}") from None

    def _migrate(self) -> None:
        version = self._version()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: written by a newer testrack (schema v{version}; this one knows up to "
                f"v{SCHEMA_VERSION}); upgrade testrack, or choose another store with --rack-store"
            )
        while version < SCHEMA_VERSION:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                version = self._version()  # another process may have migrated meanwhile
                if version < SCHEMA_VERSION:
                    for statement in MIGRATIONS[version]:
                        self._db.execute(statement)
                    version += 1
                    self._db.execute(f"PRAGMA user_version = {version}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    # ------------------------------------------------------------------ writes

    def begin_run(self, info: RunInfo) -> int:
        with self._transaction():
            row = self._db.execute("SELECT id FROM runs WHERE uid = ?", (info.uid,)).fetchone()
            if row is not None:
                return int(row[0])
            cursor = self._db.execute(
                "INSERT INTO runs (uid, started, mode, rack, command) VALUES (?, ?, ?, ?, ?)",
                (info.uid, info.started, info.mode, info.rack, redact_command(info.command)),
            )
            return int(cursor.lastrowid or 0)

    def add_results(self, run_id: int, results: Sequence[Result]) -> None:
        if not results:
            return
        with self._transaction():
            self._db.executemany(
                f"INSERT INTO results ({_RESULT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (r.nodeid, r.device, r.worker, r.outcome, r.duration, r.started, r.stopped,
                     r.position, r.message, run_id)
                    for r in results
                ],
            )  # fmt: skip

    def add_imports(self, run_id: int, imports: Sequence[ImportCost]) -> None:
        if not imports:
            return
        with self._transaction():
            self._db.executemany(
                "INSERT INTO imports (run_id, module, worker, device, seconds) VALUES (?, ?, ?, ?, ?)",
                [(run_id, i.module, i.worker, i.device, i.seconds) for i in imports],
            )

    def finish_run(self, run_id: int, finished: float, outcome: str) -> None:
        with self._transaction():
            self._db.execute(
                "UPDATE runs SET finished = ?, outcome = ? WHERE id = ?", (finished, outcome, run_id)
            )

    # ------------------------------------------------------------------ reads

    def runs(self, limit: int | None = None) -> list[Run]:
        rows = self._read(
            f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT ?", (-1 if limit is None else limit,)
        )
        return [Run(*row) for row in rows]

    def results(self, run_id: int) -> list[Result]:
        rows = self._read(f"SELECT {_RESULT_COLUMNS} FROM results WHERE run_id = ? ORDER BY id", (run_id,))
        return [Result(*row) for row in rows]

    def history(self, nodeid: str, limit: int = 50) -> list[tuple[Run, Result]]:
        rows = self._read(
            f"SELECT {', '.join('r.' + c.strip() for c in _RESULT_COLUMNS.split(','))}, "
            f"{', '.join('u.' + c.strip() for c in _RUN_COLUMNS.split(','))} "
            "FROM results r JOIN runs u ON u.id = r.run_id WHERE r.nodeid = ? ORDER BY r.id DESC LIMIT ?",
            (nodeid, limit),
        )
        return [(Run(*row[10:]), Result(*row[:10])) for row in rows]

    def recent_results(self, runs: int) -> list[Result]:
        rows = self._read(
            f"SELECT {_RESULT_COLUMNS} FROM results WHERE run_id IN "
            "(SELECT id FROM runs ORDER BY id DESC LIMIT ?) ORDER BY id",
            (runs,),
        )
        return [Result(*row) for row in rows]

    def timings(self, runs: int) -> list[tuple[str, str, float]]:
        return self._read(
            "SELECT nodeid, outcome, duration FROM results WHERE run_id IN "
            "(SELECT id FROM runs ORDER BY id DESC LIMIT ?)",
            (runs,),
        )

    def import_costs(self, runs: int) -> list[ImportCost]:
        rows = self._read(
            "SELECT module, worker, device, seconds FROM imports WHERE run_id IN "
            "(SELECT id FROM runs ORDER BY id DESC LIMIT ?)",
            (runs,),
        )
        return [ImportCost(*row) for row in rows]

    # ------------------------------------------------------------------ identities and quarantines

    def pinned_identity(self, device: str) -> Pin | None:
        rows = self._read(f"SELECT {_PIN_COLUMNS} FROM identities WHERE device = ?", (device,))
        return Pin(*rows[0]) if rows else None

    def pin_identity(self, device: str, identity: str, pinned: float, run_id: int | None) -> None:
        with self._transaction():
            self._db.execute(
                f"INSERT OR REPLACE INTO identities ({_PIN_COLUMNS}) VALUES (?, ?, ?, ?)",
                (device, identity, pinned, run_id),
            )

    def forget_identity(self, device: str) -> bool:
        with self._transaction():
            cursor = self._db.execute("DELETE FROM identities WHERE device = ?", (device,))
            return cursor.rowcount > 0

    def identities(self) -> list[Pin]:
        rows = self._read(f"SELECT {_PIN_COLUMNS} FROM identities ORDER BY device")
        return [Pin(*row) for row in rows]

    def add_quarantine(self, run_id: int, device: str, reason: str, at: float) -> None:
        with self._transaction():
            self._db.execute(
                "INSERT INTO quarantines (run_id, device, reason, at) VALUES (?, ?, ?, ?)",
                (run_id, device, reason, at),
            )

    def quarantines(self, run_id: int) -> list[Quarantine]:
        rows = self._read(
            "SELECT run_id, device, reason, at FROM quarantines WHERE run_id = ? ORDER BY rowid", (run_id,)
        )
        return [Quarantine(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ helpers

    def _read(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, parameters).fetchall()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db, self._lock)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``: one durable step, rolled back on error, and the
    connection held by this thread until then."""

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock) -> None:
        self._db = db
        self._lock = lock

    def __enter__(self) -> None:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                try:
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:  # a failed COMMIT (a full disk) leaves it open
                        self._db.execute("ROLLBACK")
                    raise
            else:
                self._db.execute("ROLLBACK")
        finally:
            self._lock.release()
