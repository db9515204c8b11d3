"""The SQLite store: ``<rootdir>/.testrack/results.sqlite``.

WAL mode, so readers (``testrack last`` while a run goes on) never block the
writer and each commit is one append; ``synchronous=NORMAL``, so a result that
was committed survives the process being killed. The schema carries its version
in ``PRAGMA user_version`` and :data:`MIGRATIONS` brings any older store up to
date, one transaction per step, when it is opened.

One connection serves every thread of the process (the run loop, a health check, the
thread that closes the store): a lock makes each transaction and each read whole, so
two threads never share a transaction.

Every SQLite error leaves as a :class:`StoreError` whose ``trouble`` says what kind of
problem it is (damaged, read-only, not a store, ...), so the run and the ``testrack``
commands can each say what to do, naming their own options. A store opened
``read_only`` (the commands that only read) never writes, not even its log: SQLite's
``mode=ro``, or ``immutable`` when the directory is not writable and no log is pending.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pwd
import sqlite3
import threading
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from testrack.share.secrets import redact_command
from testrack.store.base import (
    CONCLUSIVE,
    FAILING,
    EnvironmentRecord,
    ImportCost,
    Pin,
    Quarantine,
    Result,
    Run,
    RunInfo,
    StoreError,
    Trouble,
    result_with_role,
)

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
    (  # v4: a failing result's full failure text and captured output, zlib-compressed, for reports
        "ALTER TABLE results ADD COLUMN longrepr BLOB",
        "ALTER TABLE results ADD COLUMN sections BLOB",
    ),
    (  # v5: the code revision each run ran (git commit, and a hash of the changes if dirty)
        "ALTER TABLE runs ADD COLUMN revision TEXT",
        "ALTER TABLE runs ADD COLUMN seed INTEGER",  # and the seed of its random order
    ),
    (  # v6: the environments ([[environments]]) a run's results come from
        """CREATE TABLE environments (
            run_id INTEGER NOT NULL,
            name TEXT NOT NULL,
            implementation TEXT NOT NULL,
            version TEXT NOT NULL,
            installed TEXT NOT NULL
        )""",
        "CREATE INDEX environments_by_run ON environments (run_id)",
    ),
    (  # v7: the role a device took in a test on several devices
        "ALTER TABLE results ADD COLUMN role TEXT",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
#: The tables some version of testrack made; a database with others is not a results store.
_OWN_TABLES = frozenset({"runs", "results", "imports", "identities", "quarantines", "environments"})

_RESULT_COLUMNS = "nodeid, device, worker, outcome, duration, started, stopped, position, message, run_id"
_RUN_COLUMNS = "id, uid, started, mode, rack, command, finished, outcome, revision, seed"
_PIN_COLUMNS = "device, identity, pinned, run_id"

_SQLITE_MAGIC = b"SQLite format 3\x00"
# SQLite's primary result codes (the low byte of an extended code).
_PERM, _READONLY, _CORRUPT, _CANTOPEN, _NOTADB = 3, 8, 11, 14, 26


def find_store(start: Path) -> Path | None:
    """The nearest ``.testrack/results.sqlite`` in ``start`` or a parent directory."""
    for directory in (start, *start.parents):
        candidate = directory / DEFAULT_PATH
        if candidate.is_file():
            return candidate
    return None


#: Pages the write-ahead log may grow to before a commit folds it into the file (~40 MB).
WAL_PAGES = 10_000


def open_store(path: Path) -> SQLiteStore:
    return SQLiteStore(path)


def describe(trouble: Trouble, path: Path, cause: str) -> str:
    """What is wrong with the store at ``path``, without the fix (the caller knows its options)."""
    match trouble:
        case Trouble.DAMAGED:
            return f"the results store {path} is damaged ({cause})"
        case Trouble.NOT_A_STORE:
            return f"{path} is not a testrack results store ({cause})"
        case Trouble.READ_ONLY:
            return f"the results store {path} is read-only for this process ({cause})"
        case Trouble.UNREADABLE:
            return f"cannot read the results store {path} ({cause})"
        case Trouble.IS_DIRECTORY:
            return f"{path} is a directory, not a results store file"
        case Trouble.NO_DIRECTORY:
            return f"the directory {path.parent} of the results store {path} does not exist"
        case Trouble.NEWER | Trouble.OLDER:
            return f"the results store {path} was written by {cause}"
        case _:
            return f"cannot use the results store {path} ({cause})"


def unwritable_reason(path: Path) -> str:
    """Why this process cannot write ``path``, as far as the file system tells."""
    user = _user(os.geteuid())
    target = path if path.exists() else path.parent
    with contextlib.suppress(OSError):
        if os.statvfs(target).f_flag & os.ST_RDONLY:
            return f"{target} is on a read-only file system"
    if path.exists() and not os.access(path, os.W_OK):
        return f"the file is not writable by {user}; it belongs to {_owner(path)}"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return f"its directory {path.parent} is not writable by {user}; it belongs to {_owner(path.parent)}"
    return "SQLite could open it for reading only"


def writable(path: Path) -> bool:
    """Whether this process may write the store at ``path`` (and the log files beside it)."""
    directory_ok = os.access(path.parent, os.W_OK | os.X_OK)
    return directory_ok and (not path.exists() or os.access(path, os.W_OK))


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _owner(path: Path) -> str:
    try:
        return _user(path.stat().st_uid)
    except OSError:
        return "someone else"


class SQLiteStore:
    """Implements :class:`~testrack.store.base.Store` on one SQLite file.

    ``read_only``: open for reading only (``testrack last`` and friends), without writing
    anything, the log included. ``make_directory``: create the file's directory if missing
    (the run does this for its default ``.testrack/`` only, never for a path it was given).
    """

    def __init__(self, path: Path, *, read_only: bool = False, make_directory: bool = True) -> None:
        self.path = path
        self.read_only = read_only
        # Any thread, one at a time (self._lock); the last one (closing it) may not be the first.
        self._lock = threading.RLock()
        if path.is_dir():
            raise self._trouble(Trouble.IS_DIRECTORY, "a directory")
        if not path.parent.is_dir():
            if read_only or not make_directory:
                raise self._trouble(Trouble.NO_DIRECTORY, "no such directory")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise self._trouble(
                    Trouble.UNUSABLE, f"cannot create {path.parent}: {exc.strerror}"
                ) from None
        if read_only and not path.is_file():
            raise self._trouble(Trouble.UNUSABLE, "no such file")
        try:
            self._db = self._connect_read_only() if read_only else self._connect()
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        try:
            with self._errors():
                version = self._check()  # before anything is written: it may be someone else's file
                if not read_only:
                    self._db.execute("PRAGMA journal_mode=WAL")
                    self._db.execute("PRAGMA synchronous=NORMAL")
                    # A run commits every batch of results: checkpointing the log every 1,000
                    # pages (the default) was a third of a commit's cost. The log is folded
                    # in when the store closes (off the summary's path: Recorder.finish).
                    self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
                    self._db.execute("PRAGMA foreign_keys=ON")
                    self._migrate(version)
        except BaseException:
            self._db.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)

    def _connect_read_only(self) -> sqlite3.Connection:
        """``mode=ro``: reads the log too, but needs its index file, which SQLite makes beside
        the store; in a directory this process cannot write, ``immutable`` reads the file
        alone, which is right only when no log is waiting to be merged into it."""
        uri = self.path.resolve().as_uri()
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30.0, check_same_thread=False)
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.Error as exc:
            db.close()
            if _is(exc, _CORRUPT, _NOTADB) or os.access(self.path.parent, os.W_OK):
                raise
        log = self.path.with_name(self.path.name + "-wal")
        if log.exists() and log.stat().st_size > 0:
            raise self._trouble(
                Trouble.READ_ONLY,
                f"{unwritable_reason(self.path)}, and its log {log} holds results not yet merged into it, "
                "which SQLite can read only with write access to the directory",
            )
        db = sqlite3.connect(f"{uri}?immutable=1", uri=True, check_same_thread=False)
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except BaseException:
            db.close()
            raise
        return db

    def _check(self) -> int:
        """The store's schema version; refuse what is not a testrack store, or is one from a
        newer testrack, or (read-only: it cannot be brought up to date) from an older one."""
        version = self._version()
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if version == 0 and tables - _OWN_TABLES:
            raise self._trouble(Trouble.NOT_A_STORE, "an SQLite database without testrack's tables")
        if version > 0 and "runs" not in tables:
            raise self._trouble(Trouble.NOT_A_STORE, "an SQLite database without testrack's tables")
        if version > SCHEMA_VERSION:
            raise self._trouble(
                Trouble.NEWER,
                f"a newer testrack (schema v{version}; this one knows up to v{SCHEMA_VERSION})",
            )
        if version < SCHEMA_VERSION and self.read_only:
            if version == 0:
                raise self._trouble(Trouble.NOT_A_STORE, "it is empty: no run was ever recorded in it")
            raise self._trouble(
                Trouble.OLDER, f"an older testrack (schema v{version}; this one reads v{SCHEMA_VERSION})"
            )
        return version

    def _migrate(self, version: int) -> None:
        """Bring the store from ``version`` up to date, one transaction per step."""
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
                with contextlib.suppress(sqlite3.Error):
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
                "INSERT INTO runs (uid, started, mode, rack, command, revision, seed) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    info.uid,
                    info.started,
                    info.mode,
                    info.rack,
                    redact_command(info.command),
                    info.revision,
                    info.seed,
                ),
            )
            return int(cursor.lastrowid or 0)

    def add_results(self, run_id: int, results: Sequence[Result]) -> None:
        if not results:
            return
        rows = [
            (r.nodeid, r.device, r.worker, r.outcome, r.duration, r.started, r.stopped,
             r.position, r.message, run_id, _pack_text(r.longrepr), _pack_sections(r.sections), r.role)
            for r in results
        ]  # fmt: skip
        with self._transaction():
            self._db.executemany(
                f"INSERT INTO results ({_RESULT_COLUMNS}, longrepr, sections, role) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

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

    def results(self, run_id: int, details: bool = False) -> list[Result]:
        if not details:
            rows = self._read(
                f"SELECT {_RESULT_COLUMNS}, role FROM results WHERE run_id = ? ORDER BY id", (run_id,)
            )
            return [result_with_role(row) for row in rows]
        rows = self._read(
            f"SELECT {_RESULT_COLUMNS}, role, longrepr, sections FROM results WHERE run_id = ? ORDER BY id",
            (run_id,),
        )
        return [_with_details(result_with_role(row), row[11], row[12]) for row in rows]

    def outcomes(self, run_ids: Sequence[int]) -> list[tuple[int, str, str]]:
        if not run_ids:
            return []
        marks = ", ".join("?" * len(run_ids))
        return self._read(
            f"SELECT run_id, nodeid, outcome FROM results WHERE run_id IN ({marks})", list(run_ids)
        )

    def history(self, nodeid: str, limit: int = 50) -> list[tuple[Run, Result]]:
        rows = self._read(
            f"SELECT {', '.join('r.' + c.strip() for c in _RESULT_COLUMNS.split(','))}, "
            f"{', '.join('u.' + c.strip() for c in _RUN_COLUMNS.split(','))}, r.role "
            "FROM results r JOIN runs u ON u.id = r.run_id WHERE r.nodeid = ? ORDER BY r.id DESC LIMIT ?",
            (nodeid, limit),
        )
        return [(Run(*row[10:20]), result_with_role((*row[:10], row[20]))) for row in rows]

    def recent_results(self, runs: int) -> list[Result]:
        rows = self._read(
            f"SELECT {_RESULT_COLUMNS} FROM results WHERE run_id IN "
            "(SELECT id FROM runs ORDER BY id DESC LIMIT ?) ORDER BY id",
            (runs,),
        )
        return [Result(*row) for row in rows]

    def failing_results(self, exclude_run: int | None = None) -> list[Result]:
        """What :func:`~testrack.store.base.failing_results` computes, in one query: each failure
        that no later pass, skip or failure of the same test on the same device follows. The
        outer scan keeps only failures; the inner one walks the test's own rows by index."""
        failing, conclusive = ", ".join("?" * len(FAILING)), ", ".join("?" * len(CONCLUSIVE))
        exclude = -1 if exclude_run is None else exclude_run
        rows = self._read(
            f"SELECT {_RESULT_COLUMNS} FROM results f WHERE f.outcome IN ({failing}) AND f.run_id != ? "
            "AND NOT EXISTS (SELECT 1 FROM results later WHERE later.nodeid = f.nodeid "
            f"AND later.device = f.device AND later.id > f.id AND later.outcome IN ({conclusive}) "
            "AND later.run_id != ?) ORDER BY nodeid, device",
            (*FAILING, exclude, *CONCLUSIVE, exclude),
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

    def imports(self, run_id: int) -> list[ImportCost]:
        rows = self._read(
            "SELECT module, worker, device, seconds FROM imports WHERE run_id = ? ORDER BY rowid", (run_id,)
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

    def add_environments(self, records: Sequence[EnvironmentRecord]) -> None:
        with self._transaction():
            self._db.executemany(
                "INSERT INTO environments (run_id, name, implementation, version, installed) "
                "VALUES (?, ?, ?, ?, ?)",
                [(e.run_id, e.name, e.implementation, e.version, e.installed) for e in records],
            )

    def environments(self, run_id: int) -> list[EnvironmentRecord]:
        rows = self._read(
            "SELECT run_id, name, implementation, version, installed FROM environments WHERE run_id = ? "
            "ORDER BY name",
            (run_id,),
        )
        return [EnvironmentRecord(*row) for row in rows]

    def close(self) -> None:
        """Close; SQLite merges its log into the file here. A damaged store may refuse that:
        nothing is lost by not merging, so closing never raises."""
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.close()

    # ------------------------------------------------------------------ helpers

    def _read(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        with self._lock, self._errors():
            return self._db.execute(sql, parameters).fetchall()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``: one durable step, rolled back on error, and the
        connection held by this thread until then."""
        with self._lock, self._errors():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # a failed COMMIT (a full disk) leaves it open too
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def _error(self, exc: sqlite3.Error) -> StoreError:
        """An SQLite error as a StoreError that says what kind of trouble it is."""
        cause = str(exc)
        if _is(exc, _CORRUPT):
            return self._trouble(Trouble.DAMAGED, cause)
        if _is(exc, _NOTADB):
            if self._has_magic():  # it was a store once: its first page is damaged
                return self._trouble(Trouble.DAMAGED, cause)
            return self._trouble(Trouble.NOT_A_STORE, "not an SQLite database")
        if _is(exc, _READONLY):
            return self._trouble(Trouble.READ_ONLY, unwritable_reason(self.path))
        if _is(exc, _CANTOPEN, _PERM):
            if self.path.exists() and not os.access(self.path, os.R_OK):
                return self._trouble(Trouble.UNREADABLE, f"the file is not readable by {_user(os.geteuid())}")
            if not writable(self.path):
                return self._trouble(Trouble.READ_ONLY, unwritable_reason(self.path))
        return self._trouble(Trouble.UNUSABLE, cause)

    def _has_magic(self) -> bool:
        try:
            with self.path.open("rb") as file:
                return file.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
        except OSError:
            return False

    def _trouble(self, trouble: Trouble, cause: str) -> StoreError:
        return StoreError(describe(trouble, self.path, cause), trouble, str(self.path), cause)


def _is(exc: sqlite3.Error, *codes: int) -> bool:
    """Whether SQLite reported one of ``codes`` (its primary result codes)."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in codes
    text = str(exc)  # Python 3.10: SQLite's own words for each code
    words = {
        _PERM: "access permission denied",
        _READONLY: "readonly database",
        _CORRUPT: "malformed",
        _CANTOPEN: "unable to open database file",
        _NOTADB: "not a database",
    }
    return any(words[code] in text for code in codes)


def _with_details(result: Result, longrepr: bytes | None, sections: bytes | None) -> Result:
    if longrepr is None and sections is None:
        return result
    return dataclasses.replace(result, longrepr=_unpack_text(longrepr), sections=_unpack_sections(sections))


def _pack_text(text: str | None) -> bytes | None:
    return zlib.compress(text.encode("utf-8", "replace")) if text else None


def _unpack_text(blob: bytes | None) -> str | None:
    return zlib.decompress(blob).decode("utf-8", "replace") if blob else None


def _pack_sections(sections: Sequence[tuple[str, str]]) -> bytes | None:
    return zlib.compress(json.dumps(sections).encode("utf-8", "replace")) if sections else None


def _unpack_sections(blob: bytes | None) -> tuple[tuple[str, str], ...]:
    if not blob:
        return ()
    return tuple((str(title), str(text)) for title, text in json.loads(zlib.decompress(blob)))
