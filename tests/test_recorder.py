"""The recorder keeps the run going whatever the store does (unit tier: a real SQLite store, with
a wrapper that makes it fail at a chosen call)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from testrack.recorder import Recorder
from testrack.store import Result, RunInfo, SQLiteStore, StoreError
from testrack.store.base import Trouble

INFO = RunInfo("uid-1", 1.0, "load", "rack.toml", "pytest")


def _result(nodeid: str) -> Result:
    return Result(nodeid, "board-1", "gw0", "passed", 0.1, 1.0, 1.1)


class FailsOnce:
    """A store whose ``method`` raises ``error`` the first time it is called."""

    def __init__(self, store: SQLiteStore, method: str, error: StoreError) -> None:
        self._store, self._method, self._error = store, method, error

    def __getattr__(self, name: str) -> Any:
        if name == self._method and self._error is not None:
            error, self._error = self._error, None  # type: ignore[assignment]

            def fail(*args: object) -> None:
                raise error

            return fail
        return getattr(self._store, name)


def test_damage_found_mid_run_moves_the_default_store_aside_and_records_the_rest(tmp_path: Path) -> None:
    """The batch that met the damage and every later one go to a new store; the old one is kept."""
    recorder = Recorder.open(None, tmp_path)
    recorder.begin(INFO)
    recorder.results([_result("t.py::a")])
    path = tmp_path / ".testrack" / "results.sqlite"
    damage = StoreError("", Trouble.DAMAGED, str(path), "database disk image is malformed")
    recorder.store = FailsOnce(recorder.store, "add_results", damage)  # type: ignore[arg-type]
    recorder.results([_result("t.py::b")])
    recorder.results([_result("t.py::c")])
    recorder.finish("ok")
    (aside,) = [p for p in path.parent.iterdir() if ".damaged-" in p.name]
    assert recorder.problem == (
        f"the results store {path} is damaged (database disk image is malformed); it was moved to {aside} "
        f"and the rest of this run is recorded in a new store at {path}; the history before this run stays "
        f"in the damaged file (sqlite3 {aside} .recover may rescue it); delete it when you no longer need it"
    )
    old, new = SQLiteStore(aside, read_only=True), SQLiteStore(path, read_only=True)
    try:
        assert [r.nodeid for r in old.results(1)] == ["t.py::a"]
        (run,) = new.runs()
        assert (run.uid, run.outcome) == ("uid-1", "ok")
        assert [r.nodeid for r in new.results(run.id)] == ["t.py::b", "t.py::c"]
    finally:
        old.close()
        new.close()


def test_a_failing_explicit_store_stops_recording_not_the_run_and_pins_stay_for_the_run(
    tmp_path: Path,
) -> None:
    """--rack-store FILE that fails: nothing moved, nothing more written, one message; an identity
    seen in this run is still compared within it."""
    path = tmp_path / "mine.sqlite"
    recorder = Recorder.open(str(path), tmp_path)
    recorder.begin(INFO)
    full = StoreError("", Trouble.UNUSABLE, str(path), "database or disk is full")
    recorder.store = FailsOnce(recorder.store, "pinned_identity", full)  # type: ignore[arg-type]
    assert recorder.verify_identity("board-1", "serial-1") is None
    changed = recorder.verify_identity("board-1", "serial-2")
    assert changed is not None and changed.startswith(
        "identity changed: pinned serial-1, now reports serial-2"
    )
    recorder.results([_result("t.py::a")])
    assert recorder.durations() == {} and recorder.last_failures() is None
    recorder.finish("ok")
    assert recorder.problem == (
        f"the results store {path} failed (database or disk is full); this run is not recorded "
        "(the run goes on)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.sqlite"]
