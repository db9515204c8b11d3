"""What the report shows on demand: a failing result's full text and captured output, kept compactly."""

from __future__ import annotations

import sqlite3
import zlib
from pathlib import Path

import pytest

from testrack.recorder import DETAIL_LIMIT, Attempt
from testrack.store import MemoryStore, Result, RunInfo, SQLiteStore
from testrack.store.sqlite import MIGRATIONS, SCHEMA_VERSION
from testrack.summary import phase_outcome

TRACEBACK = "def test_x():\n>       assert 1 == 2\nE       assert 1 == 2\n\ntest_x.py:2: AssertionError"
OUTPUT = (("Captured stdout call", "hello from the test\n"), ("Captured log call", "INFO x:1 logged\n"))


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "memory":
        yield MemoryStore()
    else:
        s = SQLiteStore(tmp_path / ".testrack" / "results.sqlite")
        yield s
        s.close()


def _result(nodeid: str, outcome: str, **kw) -> Result:
    return Result(nodeid, "board-1", "gw0", outcome, 0.5, 10.0, 10.5, **kw)


def test_details_come_back_only_when_asked_for(store) -> None:
    """results(details=True) returns the failure text and sections; plain results() leaves them out."""
    run = store.begin_run(RunInfo("u", 1.0, "load", "r", "c"))
    store.add_results(
        run,
        [_result("t.py::a", "failed", message="assert 1 == 2", longrepr=TRACEBACK, sections=OUTPUT),
         _result("t.py::b", "passed")],
    )  # fmt: skip
    failed, passed = store.results(run, details=True)
    assert failed.longrepr == TRACEBACK and failed.sections == OUTPUT and failed.message == "assert 1 == 2"
    assert passed.longrepr is None and passed.sections == ()
    light = store.results(run)
    assert [(r.longrepr, r.sections) for r in light] == [(None, ()), (None, ())]
    assert light[0].message == "assert 1 == 2"


def test_outcomes_of_several_runs_in_one_read(store) -> None:
    """outcomes(run_ids): (run, test, outcome) rows of exactly those runs."""
    first = store.begin_run(RunInfo("u1", 1.0, "each", "r", "c"))
    second = store.begin_run(RunInfo("u2", 2.0, "each", "r", "c"))
    third = store.begin_run(RunInfo("u3", 3.0, "each", "r", "c"))
    store.add_results(first, [_result("t.py::a", "failed")])
    store.add_results(second, [_result("t.py::a", "passed"), _result("t.py::b", "skipped")])
    store.add_results(third, [_result("t.py::a", "error")])
    assert sorted(store.outcomes([first, second])) == [
        (first, "t.py::a", "failed"),
        (second, "t.py::a", "passed"),
        (second, "t.py::b", "skipped"),
    ]
    assert store.outcomes([]) == []


def test_sqlite_keeps_details_compressed(tmp_path: Path) -> None:
    """The stored blob is zlib data, far smaller than a long repetitive traceback."""
    path = tmp_path / "results.sqlite"
    store = SQLiteStore(path)
    run = store.begin_run(RunInfo("u", 1.0, "load", "r", "c"))
    text = TRACEBACK * 200
    store.add_results(run, [_result("t.py::a", "failed", longrepr=text, sections=OUTPUT)])
    store.close()
    (blob,) = sqlite3.connect(path).execute("SELECT longrepr FROM results").fetchone()
    assert zlib.decompress(blob).decode() == text
    assert len(blob) < len(text) / 20


def test_a_version_3_store_gains_the_details_columns_and_keeps_its_results(tmp_path: Path) -> None:
    """Migration v4 adds the columns; older results read back with no details."""
    path = tmp_path / "v3.sqlite"
    db = sqlite3.connect(path)
    for step in MIGRATIONS[:3]:
        for statement in step:
            db.execute(statement)
    db.execute("PRAGMA user_version = 3")
    db.execute("INSERT INTO runs (uid, started, mode, rack, command) VALUES ('old', 5.0, 'load', 'r', 'c')")
    db.execute(
        "INSERT INTO results (run_id, nodeid, device, worker, outcome, duration, started, stopped, message) "
        "VALUES (1, 't.py::a', 'board-1', 'gw0', 'failed', 0.5, 5.0, 5.5, 'boom')"
    )
    db.commit()
    db.close()
    store = SQLiteStore(path)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 4
    (old,) = store.results(1, details=True)
    assert (old.nodeid, old.message, old.longrepr, old.sections) == ("t.py::a", "boom", None, ())
    store.add_results(1, [_result("t.py::b", "failed", longrepr="E   boom", sections=OUTPUT)])
    assert store.results(1, details=True)[1].longrepr == "E   boom"
    store.close()


def _report(when: str, outcome: str, longrepr: str | None = None, sections=()) -> pytest.TestReport:
    return pytest.TestReport(
        "t.py::a", ("t.py", 1, "a"), {}, outcome, longrepr, when, list(sections), 0.1, start=10.0, stop=10.1
    )


def test_an_attempt_keeps_details_of_failing_phases_only() -> None:
    """A pass keeps nothing; a failure keeps its text and the output of every phase so far, teardown too."""
    passed = Attempt()
    for report in (_report("setup", "passed"), _report("call", "passed", sections=OUTPUT)):
        passed.add(report, phase_outcome(report))
    assert (passed.longrepr, passed.sections) == (None, ())
    failed = Attempt()
    teardown_output = (*OUTPUT, ("Captured stdout teardown", "bye\n"))
    for report in (
        _report("setup", "passed"),
        _report("call", "failed", TRACEBACK, OUTPUT),
        _report("teardown", "passed", sections=teardown_output),
    ):
        failed.add(report, phase_outcome(report))
    result = failed.result("t.py::a", "board-1", "gw0", 0)
    assert result.outcome == "failed" and result.longrepr == TRACEBACK
    assert result.sections == teardown_output


def test_an_error_in_teardown_after_a_failure_adds_its_own_text() -> None:
    attempt = Attempt()
    for report in (_report("call", "failed", "E   first"), _report("teardown", "failed", "E   second")):
        attempt.add(report, phase_outcome(report))
    assert attempt.longrepr == "E   first\n\n--- teardown ---\nE   second"


def test_a_huge_failure_text_keeps_its_head_and_tail() -> None:
    attempt = Attempt()
    text = "HEAD" + "x" * (DETAIL_LIMIT * 3) + "TAIL"
    report = _report("call", "failed", text)
    attempt.add(report, phase_outcome(report))
    assert attempt.longrepr is not None and len(attempt.longrepr) < DETAIL_LIMIT + 100
    assert attempt.longrepr.startswith("HEAD") and attempt.longrepr.endswith("TAIL")
    assert "characters left out" in attempt.longrepr


def test_a_rack_run_stores_the_traceback_and_output_of_failing_tests(pytester: pytest.Pytester) -> None:
    """A real run on local:2: the failing test's traceback and stdout are stored, not the passing one's."""
    pytester.makepyfile(
        test_out="""
        def test_passes():
            print("output of a pass")

        def test_fails():
            print("output of a failure")
            value = 41
            assert value == 42
        """
    )
    result = pytester.runpytest_subprocess("--rack", "local:2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    store = SQLiteStore(pytester.path / ".testrack" / "results.sqlite")
    by_test = {r.nodeid: r for r in store.results(store.runs()[0].id, details=True)}
    store.close()
    failed = by_test["test_out.py::test_fails"]
    assert failed.longrepr is not None and "assert 41 == 42" in failed.longrepr
    assert "def test_fails():" in failed.longrepr
    assert ("Captured stdout call", "output of a failure\n") in failed.sections
    passed = by_test["test_out.py::test_passes"]
    assert (passed.longrepr, passed.sections) == (None, ())
