"""Acceptance: a damaged, read-only or misplaced results store never costs a run, and every
message names the real cause and the right fix (issue 7, points 6 and 13)."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from conftest import boards
from testrack.store import SQLiteStore

pytestmark = pytest.mark.usefixtures("write_rack")

#: 100 tests, 3 of them failing: one run of them makes a store of 56 KiB.
SUITE = """
    import pytest

    @pytest.mark.parametrize("i", range(100))
    def test_p(device, i):
        assert i % 37 != 5
"""
STORE = Path(".testrack") / "results.sqlite"
DAMAGED_NAME = re.compile(r"results\.sqlite\.damaged-\d{8}-\d{6}(-\d+)?$")


def run_testrack(cwd: Path, *args: str, prefix: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """Run the testrack command as users do, in ``cwd``."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", "testrack", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def damage(path: Path) -> None:
    """The issue's recipe: alter every 7th byte between offsets 20000 and 30000."""
    data = bytearray(path.read_bytes())
    assert len(data) > 30000, f"{path} is too small ({len(data)} bytes) to damage as the issue did"
    for offset in range(20000, 30000, 7):
        data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def is_damaged(path: Path) -> bool:
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        return db.execute("PRAGMA quick_check").fetchone()[0] != "ok"
    except sqlite3.DatabaseError:
        return True
    finally:
        db.close()


def _first_run_uid(path: Path) -> str:
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        return str(db.execute("SELECT uid FROM runs WHERE id = 1").fetchone()[0])
    finally:
        db.close()


@pytest.fixture
def recorded(pytester: pytest.Pytester, write_rack) -> Path:
    """One load-mode run on 2 boards; returns the project directory."""
    write_rack(boards(2))
    pytester.makepyfile(test_many=SUITE)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=97, failed=3)
    return pytester.path


@pytest.fixture
def damaged(recorded: Path) -> Path:
    """The recorded project, its store damaged as the issue's reporter did."""
    damage(recorded / STORE)
    assert is_damaged(recorded / STORE)
    return recorded


# -- point 6: a damaged store -------------------------------------------------------------------


def test_a_damaged_default_store_is_moved_aside_and_the_run_goes_on(damaged: Path, pytester) -> None:
    """The run passes its verdict as usual, records into a fresh store, and says so once."""
    original_uid = _first_run_uid(damaged / STORE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=97, failed=3)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    output = result.outlines + result.errlines
    assert not any("INTERNALERROR" in line or "Traceback" in line for line in output), output
    (aside,) = [p for p in (damaged / ".testrack").iterdir() if DAMAGED_NAME.search(p.name)]
    assert _first_run_uid(aside) == original_uid, "the history before the run is kept aside"
    warnings = [line for line in output if "is damaged" in line]
    assert warnings == [
        f"testrack: the results store {damaged / STORE} is damaged (database disk image is malformed); "
        f"it was moved to {aside} and this run is recorded in a new store at {damaged / STORE}; "
        f"the history before this run stays in the damaged file (sqlite3 {aside} .recover may rescue it); "
        "delete it when you no longer need it"
    ]
    assert not is_damaged(damaged / STORE)
    fresh = SQLiteStore(damaged / STORE)
    try:
        (run,) = fresh.runs()
        assert run.outcome == "tests_failed" and len(fresh.results(run.id)) == 100
    finally:
        fresh.close()


def test_a_damaged_store_named_with_rack_store_is_left_alone(damaged: Path, pytester) -> None:
    """--rack-store names the user's file: it is not moved; the run goes on unrecorded and says so."""
    store = damaged / "mine.sqlite"
    (damaged / STORE).rename(store)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--rack-store", str(store))
    result.assert_outcomes(passed=97, failed=3)
    assert store.is_file() and not [p for p in damaged.iterdir() if "damaged" in p.name]
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(
        [
            f"testrack: the results store {store} is damaged (database disk image is malformed): "
            "this run is not recorded; move it aside (sqlite3 FILE .recover may rescue its history): "
            f"the next run with --rack-store {store} starts a new store; or give another file with "
            "--rack-store PATH"
        ]
    )


@pytest.mark.parametrize(
    "command", [["last"], ["failing"], ["slowest"], ["history", "test_many.py::test_p[5]"]]
)
def test_history_commands_on_a_damaged_store_say_so_in_one_line(damaged: Path, command: list[str]) -> None:
    """No traceback: one line on stderr naming the file and the fix, exit code 2."""
    out = run_testrack(damaged, *command)
    path = damaged / STORE
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == (
        f"testrack {command[0]}: the results store {path} is damaged (database disk image is malformed); "
        f"move it aside (mv {path} {path}.damaged; sqlite3 {path}.damaged .recover may rescue its "
        "history): the next pytest run starts a new store\n"
    )


@pytest.mark.parametrize("command", [["trust", "--list"], ["trust", "board-1"], ["last"]])
def test_a_store_with_a_damaged_header_is_named_damaged_at_open(recorded: Path, command: list[str]) -> None:
    """Damage SQLite finds as soon as it opens the file gives the same one line."""
    path = recorded / STORE
    data = bytearray(path.read_bytes())
    data[16:24] = b"\xff" * 8  # the page size and format bytes, after the "SQLite format 3" magic
    path.write_bytes(bytes(data))
    out = run_testrack(recorded, *command)
    assert out.returncode == 2
    assert out.stderr.startswith(
        f"testrack trust: the results store {path} is damaged (file is not a database); "
        if command[0] == "trust"
        else f"testrack last: the results store {path} is damaged (file is not a database); "
    )
    assert len(out.stderr.splitlines()) == 1
