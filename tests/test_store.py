"""The results store: the contract on both backends, migrations, and errors that say what to do."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from pathlib import Path

import pytest

from testrack.store import (
    ImportCost,
    MemoryStore,
    Pin,
    Quarantine,
    Result,
    RunInfo,
    SQLiteStore,
    StoreError,
    find_store,
)
from testrack.store.base import Trouble, failing_results, median_durations, median_import_costs
from testrack.store.sqlite import MIGRATIONS, SCHEMA_VERSION


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    """Each backend, fresh (PostgreSQL: a fresh database of the session's server, tests/pg.py)."""
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "sqlite":
        s = SQLiteStore(tmp_path / ".testrack" / "results.sqlite")
    else:
        from testrack.store.postgres import PostgresStore

        s = PostgresStore(request.getfixturevalue("pg_database"))
    yield s
    s.close()


def _result(
    nodeid: str, device: str = "board-1", outcome: str = "passed", duration: float = 1.0, **kw
) -> Result:
    return Result(nodeid, device, kw.pop("worker", "gw0"), outcome, duration, 100.0, 100.0 + duration, **kw)


def test_runs_are_listed_newest_first_and_finish_is_recorded(store) -> None:
    """begin_run/finish_run round-trip; runs() is newest first."""
    first = store.begin_run(RunInfo("uid-1", 10.0, "load", "rack.toml", "pytest"))
    second = store.begin_run(RunInfo("uid-2", 20.0, "each", "rack.toml", "pytest -x"))
    store.finish_run(first, 15.0, "tests_failed")
    runs = store.runs()
    assert [r.id for r in runs] == [second, first]
    assert runs[1].finished == 15.0 and runs[1].outcome == "tests_failed"
    assert runs[0].finished is None and runs[0].outcome is None
    assert runs[0].mode == "each" and runs[0].command == "pytest -x"
    assert [r.id for r in store.runs(limit=1)] == [second]


def test_a_second_controller_joins_the_run_with_the_same_uid(store) -> None:
    """Several controllers of one run share its id (room for shared racks)."""
    a = store.begin_run(RunInfo("shared", 1.0, "load", "r", "c"))
    b = store.begin_run(RunInfo("shared", 2.0, "load", "r", "c"))
    assert a == b and len(store.runs()) == 1


def test_results_keep_every_field_in_order(store) -> None:
    """add_results then results(): all fields, in recording order, per run."""
    run = store.begin_run(RunInfo("u", 1.0, "load", "r", "c"))
    other = store.begin_run(RunInfo("v", 2.0, "load", "r", "c"))
    rows = [
        _result("t.py::a", position=0),
        _result("t.py::b", "board-2", "crashed", 0.5, worker="gw1", position=3, message="killed by signal 9"),
    ]
    store.add_results(run, rows)
    store.add_results(other, [_result("t.py::c")])
    got = store.results(run)
    assert [(r.nodeid, r.device, r.worker, r.outcome, r.duration, r.position, r.message) for r in got] == [
        ("t.py::a", "board-1", "gw0", "passed", 1.0, 0, None),
        ("t.py::b", "board-2", "gw1", "crashed", 0.5, 3, "killed by signal 9"),
    ]
    assert all(r.run_id == run for r in got)


def test_the_role_of_each_device_of_a_test_on_several_is_kept(store) -> None:
    """A test on two devices is a result on each, with the role each took; history has them too."""
    run = store.begin_run(RunInfo("u", 1.0, "load", "r", "c"))
    pair = _result("t.py::call", "host-1", message="assert 1 == 2")
    store.add_results(
        run,
        [
            dataclasses.replace(pair, role="server", longrepr="E  assert 1 == 2"),
            dataclasses.replace(pair, device="phone-1", role="client", longrepr="E  assert 1 == 2"),
            _result("t.py::one"),
        ],
    )
    expected = [("host-1", "server"), ("phone-1", "client"), ("board-1", None)]
    assert [(r.device, r.role) for r in store.results(run)] == expected
    detailed = store.results(run, details=True)
    assert [(r.device, r.role) for r in detailed] == expected and detailed[0].longrepr == "E  assert 1 == 2"
    assert sorted((r.device, r.role) for _, r in store.history("t.py::call")) == [
        ("host-1", "server"),
        ("phone-1", "client"),
    ]


def test_history_spans_runs_and_devices_newest_first(store) -> None:
    """history(nodeid) returns each run's results for that test, newest first."""
    for i, outcome in enumerate(["passed", "failed", "passed"]):
        run = store.begin_run(RunInfo(f"u{i}", float(i), "each", "r", "c"))
        store.add_results(
            run, [_result("t.py::a", "board-1", outcome, 1.0 + i), _result("t.py::a", "board-2")]
        )
    rows = store.history("t.py::a", limit=10)
    assert len(rows) == 6
    assert rows[0][0].uid == "u2" and rows[-1][0].uid == "u0"
    assert {r.device for _, r in rows} == {"board-1", "board-2"}
    assert len(store.history("t.py::a", limit=2)) == 2
    assert store.history("t.py::missing") == []


def test_recent_results_and_imports_feed_medians(store) -> None:
    """The scheduler's estimates: median duration per test over recent runs; skips don't count."""
    for i, d in enumerate([1.0, 3.0, 2.0, 100.0]):
        run = store.begin_run(RunInfo(f"u{i}", float(i), "load", "r", "c"))
        store.add_results(
            run, [_result("t.py::a", duration=d), _result("t.py::s", outcome="skipped", duration=9)]
        )
        store.add_imports(run, [ImportCost("/x/t.py", "gw0", "board-1", 0.01 * (i + 1))])
    assert median_durations(store.timings(3)) == {"t.py::a": 3.0}
    assert median_durations(store.timings(10)) == {"t.py::a": 2.5}
    assert len(store.recent_results(2)) == 4
    assert median_import_costs(store.import_costs(2)) == {"/x/t.py": pytest.approx(0.035)}


def test_sqlite_store_is_shared_between_connections(tmp_path: Path) -> None:
    """A second connection (another process, say) sees committed results at once."""
    path = tmp_path / "r.sqlite"
    writer = SQLiteStore(path)
    run = writer.begin_run(RunInfo("u", 1.0, "load", "r", "c"))
    writer.add_results(run, [_result("t.py::a")])
    reader = SQLiteStore(path)
    assert [r.nodeid for r in reader.results(run)] == ["t.py::a"]
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    writer.close()
    reader.close()


def test_a_version_1_store_is_migrated_and_keeps_its_data(tmp_path: Path) -> None:
    """A store written by schema v1 (no position, message or imports) opens, migrated, data intact."""
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO runs (uid, started, finished, mode, rack, command, outcome) "
               "VALUES ('old', 5.0, 6.0, 'each', 'devices.json', 'pytest', 'ok')")  # fmt: skip
    db.execute("INSERT INTO results (run_id, nodeid, device, worker, outcome, duration, started, stopped) "
               "VALUES (1, 't.py::a', 'board-1', 'gw0', 'passed', 0.25, 5.0, 5.25)")  # fmt: skip
    db.commit()
    db.close()
    store = SQLiteStore(path)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    (run,) = store.runs()
    assert (run.uid, run.mode, run.outcome) == ("old", "each", "ok")
    (old,) = store.results(run.id)
    assert (old.nodeid, old.duration, old.position, old.message) == ("t.py::a", 0.25, 0, None)
    new = store.begin_run(RunInfo("new", 7.0, "load", "r", "c"))
    store.add_imports(new, [ImportCost("/t.py", "gw0", "board-1", 0.5)])
    assert store.import_costs(5)[0].seconds == 0.5
    store.close()


def test_identities_are_pinned_replaced_listed_and_forgotten(store) -> None:
    """pin_identity/pinned_identity round-trip; a second pin replaces; forget says if there was one."""
    assert store.pinned_identity("board-1") is None
    assert store.identities() == []
    store.pin_identity("board-2", "SER-2", 20.0, 4)
    store.pin_identity("board-1", "SER-1", 10.0, None)
    assert store.pinned_identity("board-2") == Pin("board-2", "SER-2", 20.0, 4)
    assert store.pinned_identity("board-1") == Pin("board-1", "SER-1", 10.0, None)
    store.pin_identity("board-2", "SER-2b", 30.0, 5)
    assert store.pinned_identity("board-2") == Pin("board-2", "SER-2b", 30.0, 5)
    assert store.identities() == [Pin("board-1", "SER-1", 10.0, None), Pin("board-2", "SER-2b", 30.0, 5)]
    assert store.forget_identity("board-2") is True
    assert store.forget_identity("board-2") is False
    assert store.forget_identity("board-9") is False
    assert store.pinned_identity("board-2") is None
    assert store.identities() == [Pin("board-1", "SER-1", 10.0, None)]


def test_quarantines_are_kept_per_run_in_order(store) -> None:
    """add_quarantine then quarantines(run): that run's, in the order they were added, all fields."""
    run = store.begin_run(RunInfo("u", 1.0, "load", "r", "c"))
    other = store.begin_run(RunInfo("v", 2.0, "load", "r", "c"))
    store.add_quarantine(run, "board-2", "reported SER-X, pinned SER-2", 3.0)
    store.add_quarantine(other, "board-1", "no answer within 5 s", 4.0)
    store.add_quarantine(run, "board-1", "no answer within 5 s", 5.0)
    assert store.quarantines(run) == [
        Quarantine(run, "board-2", "reported SER-X, pinned SER-2", 3.0),
        Quarantine(run, "board-1", "no answer within 5 s", 5.0),
    ]
    assert store.quarantines(other) == [Quarantine(other, "board-1", "no answer within 5 s", 4.0)]
    assert store.quarantines(other + 1) == []


def test_calls_from_several_threads_do_not_share_a_transaction(store) -> None:
    """A health-check thread may write and read while the run loop does: no call fails, none is lost."""
    run = store.begin_run(RunInfo("u", 1.0, "load", "r", "c"))
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def hammer(n: int) -> None:
        try:
            start.wait()
            for i in range(40):
                store.pin_identity(f"board-{n}", f"SER-{i}", float(i), run)
                store.add_quarantine(run, f"board-{n}", f"reason {i}", float(i))
                store.add_results(run, [_result(f"t.py::t{n}_{i}")])
                assert store.pinned_identity(f"board-{n}").identity == f"SER-{i}"
                store.identities()
                store.quarantines(run)
                if i % 10 == 9:
                    assert store.forget_identity(f"board-{n}") is True
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.quarantines(run)) == 6 * 40
    assert len(store.results(run)) == 6 * 40
    assert store.identities() == []


def test_sqlite_pins_and_quarantines_are_durable_on_return(tmp_path: Path) -> None:
    """Another connection (the testrack trust command, say) sees each pin, unpin and quarantine at once."""
    path = tmp_path / "r.sqlite"
    writer, reader = SQLiteStore(path), SQLiteStore(path)
    writer.pin_identity("board-1", "SER-1", 1.0, None)
    assert reader.pinned_identity("board-1") == Pin("board-1", "SER-1", 1.0, None)
    assert reader.forget_identity("board-1") is True
    assert writer.pinned_identity("board-1") is None
    run = writer.begin_run(RunInfo("u", 1.0, "load", "r", "c"))
    writer.add_quarantine(run, "board-1", "gone", 2.0)
    assert reader.quarantines(run) == [Quarantine(run, "board-1", "gone", 2.0)]
    writer.close()
    reader.close()


def test_a_version_2_store_is_migrated_and_keeps_its_data(tmp_path: Path) -> None:
    """A store written by schema v2 (no identities, no quarantines) opens, migrated, data intact."""
    path = tmp_path / "v2.sqlite"
    db = sqlite3.connect(path)
    for statement in (*MIGRATIONS[0], *MIGRATIONS[1]):
        db.execute(statement)
    db.execute("PRAGMA user_version = 2")
    db.execute("INSERT INTO runs (uid, started, finished, mode, rack, command, outcome) "
               "VALUES ('old', 5.0, 6.0, 'load', 'testrack.toml', 'pytest', 'ok')")  # fmt: skip
    db.execute("INSERT INTO results (run_id, nodeid, device, worker, outcome, duration, started, stopped, "
               "position, message) "
               "VALUES (1, 't.py::a', 'board-2', 'gw1', 'failed', 0.5, 5.0, 5.5, 3, 'boom')")  # fmt: skip
    db.execute("INSERT INTO imports (run_id, module, worker, device, seconds) "
               "VALUES (1, '/t.py', 'gw1', 'board-2', 0.125)")  # fmt: skip
    db.commit()
    db.close()
    store = SQLiteStore(path)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    (run,) = store.runs()
    assert (run.id, run.uid, run.finished, run.mode, run.outcome) == (1, "old", 6.0, "load", "ok")
    (old,) = store.results(run.id)
    assert (old.nodeid, old.device, old.outcome, old.duration, old.position, old.message) == (
        "t.py::a", "board-2", "failed", 0.5, 3, "boom",
    )  # fmt: skip
    assert store.import_costs(1) == [ImportCost("/t.py", "gw1", "board-2", 0.125)]
    assert store.identities() == [] and store.quarantines(run.id) == []
    store.pin_identity("board-2", "SER-2", 7.0, run.id)
    store.add_quarantine(run.id, "board-2", "gone", 8.0)
    store.close()
    reopened = SQLiteStore(path)
    assert reopened.pinned_identity("board-2") == Pin("board-2", "SER-2", 7.0, 1)
    assert reopened.quarantines(1) == [Quarantine(1, "board-2", "gone", 8.0)]
    reopened.close()


def test_a_store_from_a_newer_testrack_is_refused_and_says_so(tmp_path: Path) -> None:
    """A store with a schema newer than this testrack knows: refused, naming both versions."""
    path = tmp_path / "new.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY)")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError) as caught:
        SQLiteStore(path)
    assert caught.value.trouble is Trouble.NEWER
    assert str(caught.value) == (
        f"the results store {path} was written by a newer testrack (schema v{SCHEMA_VERSION + 1}; "
        f"this one knows up to v{SCHEMA_VERSION})"
    )


@pytest.mark.parametrize(
    ("content", "cause"),
    [
        (b"this is not a database at all, not even close" * 50, "not an SQLite database"),
        (None, "an SQLite database without testrack's tables"),
    ],
    ids=["text", "foreign-database"],
)
def test_a_file_that_is_not_a_store_is_refused_and_left_unchanged(
    tmp_path: Path, content: bytes | None, cause: str
) -> None:
    """Another file, or another program's database, is named as not a store, and not written."""
    path = tmp_path / "results.sqlite"
    if content is None:
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE contacts (name TEXT)")
        db.commit()
        db.close()
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    for read_only in (False, True):
        with pytest.raises(StoreError) as caught:
            SQLiteStore(path, read_only=read_only)
        assert caught.value.trouble is Trouble.NOT_A_STORE
        assert str(caught.value) == f"{path} is not a testrack results store ({cause})"
    assert path.read_bytes() == before


def test_directories_are_made_only_when_asked(tmp_path: Path) -> None:
    """make_directory=False (a path the user gave) refuses a missing directory; a directory is no file."""
    with pytest.raises(StoreError) as caught:
        SQLiteStore(tmp_path / "no" / "such" / "x.sqlite", make_directory=False)
    assert caught.value.trouble is Trouble.NO_DIRECTORY
    assert str(caught.value) == (
        f"the directory {tmp_path / 'no' / 'such'} of the results store {tmp_path / 'no/such/x.sqlite'} "
        "does not exist"
    )
    assert not (tmp_path / "no").exists()
    with pytest.raises(StoreError) as caught:
        SQLiteStore(tmp_path)
    assert caught.value.trouble is Trouble.IS_DIRECTORY


def test_a_read_only_store_reads_and_refuses_writes_without_touching_the_file(tmp_path: Path) -> None:
    """read_only: every read works, a write is a READ_ONLY StoreError, and the file is unchanged."""
    path = tmp_path / "results.sqlite"
    writer = SQLiteStore(path)
    run = writer.begin_run(RunInfo("u", 1.0, "load", "r", "c"))
    writer.add_results(run, [_result("t.py::a")])
    writer.close()
    before = path.read_bytes()
    reader = SQLiteStore(path, read_only=True)
    assert [r.nodeid for r in reader.results(run)] == ["t.py::a"]
    with pytest.raises(StoreError) as caught:
        reader.finish_run(run, 2.0, "ok")
    assert caught.value.trouble is Trouble.READ_ONLY
    reader.close()
    assert path.read_bytes() == before


def test_an_empty_file_is_no_store_to_read(tmp_path: Path) -> None:
    """Read-only, an empty file says it holds no run; opened to write, it becomes a store."""
    path = tmp_path / "results.sqlite"
    path.touch()
    with pytest.raises(StoreError, match=r"is not a testrack results store \(it is empty"):
        SQLiteStore(path, read_only=True)
    SQLiteStore(path).close()
    SQLiteStore(path, read_only=True).close()


def test_find_store_looks_in_parent_directories(tmp_path: Path) -> None:
    """The CLI finds the nearest .testrack/results.sqlite above the current directory."""
    SQLiteStore(tmp_path / ".testrack" / "results.sqlite").close()
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_store(deep) == tmp_path / ".testrack" / "results.sqlite"
    assert find_store(tmp_path.parent / "elsewhere") is None


def test_failing_results_are_the_pairs_whose_newest_result_failed(store) -> None:
    """Per (test, device), the newest pass, skip or failure decides; a device error says nothing;
    other devices do not count; the running run is left out."""
    first = store.begin_run(RunInfo("uid-1", 1.0, "each", "r", "c"))
    store.add_results(first, [
        _result("t.py::a", "b1", "failed", message="boom"), _result("t.py::a", "b2", "failed"),
        _result("t.py::b", "b1", "error"), _result("t.py::c", "b1", "failed"),
    ])  # fmt: skip
    second = store.begin_run(RunInfo("uid-2", 2.0, "load", "r", "c"))
    store.add_results(second, [
        _result("t.py::a", "b2", "passed"), _result("t.py::b", "b1", "device_error"),
        _result("t.py::c", "b1", "skipped"), _result("t.py::a", "b1", "timeout"),
    ])  # fmt: skip
    failing = failing_results(store)
    assert [(r.nodeid, r.device, r.outcome, r.run_id) for r in failing] == [
        ("t.py::a", "b1", "timeout", second),
        ("t.py::b", "b1", "error", first),
    ]
    assert [(r.nodeid, r.device, r.message) for r in failing_results(store, exclude_run=second)] == [
        ("t.py::a", "b1", "boom"),
        ("t.py::a", "b2", None),
        ("t.py::b", "b1", None),
        ("t.py::c", "b1", None),
    ]


def test_a_password_on_the_command_line_is_not_stored(store) -> None:
    """The command line is kept with URL passwords masked (a share or store URL may carry one)."""
    command = (
        "pytest --rack-share postgresql://ci:hunter2@db.lab:5432/racks "
        "--rack-store=postgres://ci:hunter2@db.lab/racks?sslmode=require -k 'password=x and y'"
    )
    run = store.begin_run(RunInfo("u", 1.0, "load", "r", command))
    (stored,) = [r for r in store.runs() if r.id == run]
    assert "hunter2" not in stored.command
    assert stored.command == (
        "pytest --rack-share postgresql://ci:***@db.lab:5432/racks "
        "--rack-store=postgres://ci:***@db.lab/racks?sslmode=require -k 'password=*** and y'"
    )


def test_a_postgres_store_survives_a_server_restart(postgres, pg_database: str) -> None:
    """PostgreSQL restarted between two writes: the store reconnects, and nothing written is lost."""
    from testrack.store.postgres import PostgresStore

    store = PostgresStore(pg_database)
    run = store.begin_run(RunInfo("u", 1.0, "load", "r", "pytest"))
    store.add_results(run, [_result("t.py::a")])
    postgres.restart("immediate")
    store.add_results(run, [_result("t.py::b")])
    store.finish_run(run, 2.0, "ok")
    again = PostgresStore(pg_database)
    assert [r.nodeid for r in again.results(run)] == ["t.py::a", "t.py::b"]
    assert again.runs()[0].outcome == "ok"
    store.close()
    again.close()


def test_a_postgres_store_from_a_newer_testrack_is_refused(postgres, pg_database: str) -> None:
    """A database whose store tables are newer than this testrack: named, with the fix."""
    import psycopg

    from testrack.store.postgres import SCHEMA_VERSION, PostgresStore

    PostgresStore(pg_database).close()
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("UPDATE testrack.schema_versions SET version = 99 WHERE component = 'store'")
    newer = (
        rf"its store tables are from a newer testrack \(schema v99; this one knows up to v{SCHEMA_VERSION}\)"
    )
    with pytest.raises(StoreError, match=newer + "; upgrade testrack on this host"):
        PostgresStore(pg_database)


def test_a_postgres_store_that_cannot_be_reached_says_so_without_the_password(postgres) -> None:
    """A wrong password: the message names the store with the password masked."""
    from testrack.store.postgres import PostgresStore

    postgres.create_role("store_user", "right-one")
    with pytest.raises(StoreError) as info:
        PostgresStore(postgres.url("postgres", user="store_user", password="wrong-one", tcp=True))
    message = str(info.value)
    assert "wrong-one" not in message
    assert (
        f"cannot connect to the results store postgresql://store_user:***@127.0.0.1:{postgres.port}/postgres"
        in message
    )


def test_hosts_beginning_one_run_at_the_same_moment_get_one_id(postgres, pg_database: str) -> None:
    """Eight connections begin the same run uid at once (hosts of a shared run): one run, one id."""
    from testrack.store.postgres import PostgresStore

    stores = [PostgresStore(pg_database) for _ in range(8)]
    ids: list[int] = []
    start = threading.Barrier(len(stores))

    def begin(store: PostgresStore) -> None:
        start.wait()
        ids.append(store.begin_run(RunInfo("ci-42", 1.0, "load", "r", "pytest")))

    threads = [threading.Thread(target=begin, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 8 and len(set(ids)) == 1
    assert [r.uid for r in stores[0].runs()] == ["ci-42"]
    for s in stores:
        s.close()


def test_environments_of_a_run_are_kept_by_name(store) -> None:
    """What each environment of a run was (interpreter, packages), per run, sorted by name."""
    from testrack.store.base import EnvironmentRecord

    first = store.begin_run(RunInfo("uid-e1", 1.0, "each", "r", "c"))
    second = store.begin_run(RunInfo("uid-e2", 2.0, "each", "r", "c"))
    store.add_environments([
        EnvironmentRecord(first, "new", "CPython", "3.12.1", "aaaa"),
        EnvironmentRecord(first, "old", "PyPy", "3.10.14", "bbbb"),
        EnvironmentRecord(second, "new", "CPython", "3.12.2", "cccc"),
    ])  # fmt: skip
    assert [(e.name, e.implementation, e.version, e.installed) for e in store.environments(first)] == [
        ("new", "CPython", "3.12.1", "aaaa"),
        ("old", "PyPy", "3.10.14", "bbbb"),
    ]
    assert [e.installed for e in store.environments(second)] == ["cccc"]
    assert store.environments(999) == []
