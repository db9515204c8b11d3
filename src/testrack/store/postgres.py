"""The results store on PostgreSQL (``--rack-store postgresql://...``): the same contract as the
SQLite store, shared by every host, so history, ``testrack last/failing/history`` and the
scheduler's estimates work across hosts.

Schema ``testrack``, component ``store`` in ``testrack.schema_versions``, migrated on first use
(``sql/postgresql/migrations``); queries by name in ``sql/postgresql/queries.sql``. One
connection per store, one lock: each call is one transaction, whole to other threads. A
broken connection (the server restarted) is made again once per call. The command line is
stored with passwords masked.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from testrack.share import sql
from testrack.share.errors import ShareError
from testrack.share.pgschema import connect, first_line, migrate
from testrack.share.secrets import redact, redact_command
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
    result_with_role,
)

if TYPE_CHECKING:
    import psycopg

Q = sql.queries("testrack.store", "postgresql")
MIGRATIONS = sql.migrations("testrack.store", "postgresql")
SCHEMA_VERSION = len(MIGRATIONS)
T = TypeVar("T")


def run_params(info: RunInfo) -> dict[str, Any]:
    """A run's row, with passwords masked in its rack and command line."""
    return {
        "uid": info.uid, "started": info.started, "mode": info.mode, "rack": redact(info.rack),
        "command": redact_command(info.command), "revision": info.revision, "seed": info.seed,
    }  # fmt: skip


def result_row(run_id: int, r: Result) -> dict[str, Any]:
    """A result's row (the shared run queue writes the same rows, in its fenced transaction)."""
    from psycopg.types.json import Jsonb

    return {
        "run_id": run_id, "nodeid": r.nodeid, "device": r.device, "worker": r.worker, "outcome": r.outcome,
        "duration": r.duration, "started": r.started, "stopped": r.stopped, "position": r.position,
        "message": r.message, "longrepr": r.longrepr or None,
        "sections": Jsonb([list(s) for s in r.sections]) if r.sections else None, "role": r.role,
    }  # fmt: skip


def begin_run(conn: psycopg.Connection[Any], params: dict[str, Any]) -> int:
    """The run's id, inserting it if it is new. A host that inserted the same uid at the same
    moment is waited for by the insert, but its row is not in this statement's snapshot: so if
    nothing came back, the next statement reads it."""
    row = conn.execute(Q["begin_run"], params).fetchone() or conn.execute(Q["run_id"], params).fetchone()
    if row is None:  # pragma: no cover - the row exists by now
        raise StoreError(f"run {params['uid']} vanished while it was being recorded; try again")
    return int(row[0])


class PostgresStore:
    """Implements :class:`~testrack.store.base.Store` on a PostgreSQL database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.location = redact(url)
        self._lock = threading.RLock()
        try:
            self._conn = connect(url, "the results store")
            migrate(self._conn, "store", MIGRATIONS, self.location)
        except ShareError as exc:
            raise StoreError(f"{exc} (or choose another store with --rack-store)") from None

    # ------------------------------------------------------------------ writes

    def begin_run(self, info: RunInfo) -> int:
        params = run_params(info)
        return int(self._call(lambda conn: begin_run(conn, params)))

    def add_results(self, run_id: int, results: Sequence[Result]) -> None:
        if not results:
            return
        rows = [result_row(run_id, r) for r in results]
        self._write(lambda c: c.cursor().executemany(Q["add_result"], rows))

    def add_imports(self, run_id: int, imports: Sequence[ImportCost]) -> None:
        if not imports:
            return
        rows = [
            {
                "run_id": run_id,
                "module": i.module,
                "worker": i.worker,
                "device": i.device,
                "seconds": i.seconds,
            }
            for i in imports
        ]
        self._write(lambda c: c.cursor().executemany(Q["add_import"], rows))

    def finish_run(self, run_id: int, finished: float, outcome: str) -> None:
        params = {"run_id": run_id, "finished": finished, "outcome": outcome}
        self._write(lambda c: c.execute(Q["finish_run"], params))

    # ------------------------------------------------------------------ reads

    def runs(self, limit: int | None = None) -> list[Run]:
        return [Run(*row) for row in self._rows(Q["runs"], {"limit": limit})]

    def results(self, run_id: int, details: bool = False) -> list[Result]:
        if not details:
            return [result_with_role(row) for row in self._rows(Q["results"], {"run_id": run_id})]
        rows = self._rows(Q["results_with_details"], {"run_id": run_id})
        return [
            dataclasses.replace(
                result_with_role(row),
                longrepr=row[11],
                sections=tuple((str(title), str(text)) for title, text in row[12] or ()),
            )
            for row in rows
        ]

    def outcomes(self, run_ids: Sequence[int]) -> list[tuple[int, str, str]]:
        if not run_ids:
            return []
        return [(int(r[0]), r[1], r[2]) for r in self._rows(Q["outcomes"], {"run_ids": list(run_ids)})]

    def failing_results(self, exclude_run: int | None = None) -> list[Result]:
        """What :func:`~testrack.store.base.failing_results` computes, in one query."""
        params = {
            "failing": list(FAILING),
            "conclusive": list(CONCLUSIVE),
            "exclude": -1 if exclude_run is None else exclude_run,
        }
        return [Result(*row) for row in self._rows(Q["failing_results"], params)]

    def imports(self, run_id: int) -> list[ImportCost]:
        return [ImportCost(*row) for row in self._rows(Q["imports"], {"run_id": run_id})]

    def history(self, nodeid: str, limit: int = 50) -> list[tuple[Run, Result]]:
        rows = self._rows(Q["history"], {"nodeid": nodeid, "limit": limit})
        return [(Run(*row[10:20]), result_with_role((*row[:10], row[20]))) for row in rows]

    def recent_results(self, runs: int) -> list[Result]:
        return [Result(*row) for row in self._rows(Q["recent_results"], {"runs": runs})]

    def timings(self, runs: int) -> list[tuple[str, str, float]]:
        return [(row[0], row[1], row[2]) for row in self._rows(Q["timings"], {"runs": runs})]

    def import_costs(self, runs: int) -> list[ImportCost]:
        return [ImportCost(*row) for row in self._rows(Q["import_costs"], {"runs": runs})]

    # ------------------------------------------------------------------ identities and quarantines

    def pinned_identity(self, device: str) -> Pin | None:
        rows = self._rows(Q["pinned_identity"], {"device": device})
        return Pin(*rows[0]) if rows else None

    def pin_identity(self, device: str, identity: str, pinned: float, run_id: int | None) -> None:
        params = {"device": device, "identity": identity, "pinned": pinned, "run_id": run_id}
        self._write(lambda c: c.execute(Q["pin_identity"], params))

    def forget_identity(self, device: str) -> bool:
        return bool(self._write(lambda c: c.execute(Q["forget_identity"], {"device": device}).rowcount))

    def identities(self) -> list[Pin]:
        return [Pin(*row) for row in self._rows(Q["identities"], {})]

    def add_quarantine(self, run_id: int, device: str, reason: str, at: float) -> None:
        params = {"run_id": run_id, "device": device, "reason": reason, "at": at}
        self._write(lambda c: c.execute(Q["add_quarantine"], params))

    def quarantines(self, run_id: int) -> list[Quarantine]:
        return [Quarantine(*row) for row in self._rows(Q["quarantines"], {"run_id": run_id})]

    def add_environments(self, records: Sequence[EnvironmentRecord]) -> None:
        rows = [dataclasses.asdict(e) for e in records]
        if rows:
            self._write(lambda c: c.cursor().executemany(Q["add_environment"], rows))

    def environments(self, run_id: int) -> list[EnvironmentRecord]:
        return [EnvironmentRecord(*row) for row in self._rows(Q["environments"], {"run_id": run_id})]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ------------------------------------------------------------------ helpers

    def _rows(self, query: str, params: dict[str, Any]) -> list[Any]:
        return self._call(lambda c: c.execute(query, params).fetchall())

    def _write(self, operation: Callable[[psycopg.Connection[Any]], T]) -> T:
        def in_transaction(conn: psycopg.Connection[Any]) -> T:
            with conn.transaction():
                return operation(conn)

        return self._call(in_transaction)

    def _call(self, operation: Callable[[psycopg.Connection[Any]], T]) -> T:
        import psycopg

        with self._lock:
            try:
                return operation(self._conn)
            except psycopg.OperationalError as exc:
                if not (self._conn.closed or self._conn.broken):
                    raise StoreError(f"the results store {self.location}: {first_line(exc)}") from None
            except psycopg.Error as exc:
                raise StoreError(f"the results store {self.location}: {first_line(exc)}") from None
            try:
                self._conn.close()
                self._conn = connect(self.url, "the results store")
                return operation(self._conn)
            except (ShareError, psycopg.Error) as exc:
                raise StoreError(f"the results store {self.location}: {first_line(exc)}") from None
