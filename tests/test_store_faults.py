"""Acceptance: a damaged, read-only or misplaced results store never costs a run, and every
message names the real cause and the right fix (issue 7, points 6 and 13)."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
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


@pytest.mark.parametrize(
    "command", [["report", "--html", "r.html"], ["flaky"], ["bisect", "test_many.py::test_p[5]"]]
)
def test_report_flaky_and_bisect_on_a_damaged_store_say_so_in_one_line(
    recorded: Path, command: list[str]
) -> None:
    """They read the store as last does, and say the same one line (they ended in a traceback,
    exit 1). The audit's recipe: every 7th byte after the first page, so every table is hit."""
    path = recorded / STORE
    data = bytearray(path.read_bytes())
    for offset in range(4096, len(data), 7):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    out = run_testrack(recorded, *command)
    assert "Traceback" not in out.stderr
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == (
        f"testrack {command[0]}: the results store {path} is damaged (database disk image is malformed); "
        f"move it aside (mv {path} {path}.damaged; sqlite3 {path}.damaged .recover may rescue its "
        "history): the next pytest run starts a new store\n"
    )
    assert not (recorded / "r.html").exists()


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


# -- point 13: a store this user may read but not write, and stores that are not there ----------


def as_plain_user() -> list[str]:
    """A command prefix under which file permissions apply: root (as in CI) keeps its identity
    but loses the capabilities that let it ignore them; another user needs nothing."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv (util-linux): cannot make a file unwritable for root")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"]


def run_pytest(cwd: Path, *args: str, prefix: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def summary_outcomes(out: subprocess.CompletedProcess[str]) -> str:
    return out.stdout.strip().splitlines()[-1].strip("= ").rsplit(" in ", 1)[0]


def run_count(path: Path) -> int:
    """Runs in the store, read without leaving a log file beside it (as root could, even in a
    directory it made read-only: the plain user could then write through that log)."""
    db = sqlite3.connect(f"{path.as_uri()}?immutable=1", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM runs").fetchone()[0])
    finally:
        db.close()


@pytest.fixture
def restore_modes(recorded: Path):
    """Give back write permission to everything a test took it from, so the files can be removed."""
    yield
    for path in [recorded, *recorded.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)


@pytest.mark.usefixtures("restore_modes")
@pytest.mark.parametrize("unwritable", ["file", "directory"])
def test_a_read_only_store_is_read_not_written_and_the_message_says_why(
    recorded: Path, unwritable: str
) -> None:
    """A store this user cannot write: the run goes on unrecorded, still uses the history, and
    says why and what to do (not "move it away": the data is fine); the commands read it."""
    path = recorded / STORE
    prefix = as_plain_user()
    pins = SQLiteStore(path)
    pins.pin_identity("board-1", "serial-1", 1.0, 1)
    pins.close()
    target = path if unwritable == "file" else path.parent
    target.chmod(0o444 if unwritable == "file" else 0o555)
    before = path.read_bytes()
    out = run_pytest(recorded, "--rack-failed", prefix=prefix)
    assert out.returncode == 1, out.stdout + out.stderr
    assert summary_outcomes(out) == "3 failed, 97 deselected"  # --rack-failed read the history
    user = pwd.getpwuid(os.geteuid()).pw_name
    why = (
        f"the file is not writable by {user}; it belongs to {user}"
        if unwritable == "file"
        else f"its directory {path.parent} is not writable by {user}; it belongs to {user}"
    )
    assert (
        f"testrack: the results store {path} is read-only for this process ({why}): this run is not "
        "recorded (its history is still used; the data in it is fine); to record runs, make it writable "
        "for this user or run as its owner, or choose another store with --rack-store PATH"
    ) in out.stdout.splitlines()
    assert "away" not in out.stdout
    assert path.read_bytes() == before and run_count(path) == 1
    last = run_testrack(recorded, "last", prefix=prefix)
    assert last.returncode == 0 and last.stderr == ""
    assert "outcome: tests failed (exit code 1); 100 results: 3 failed, 97 passed" in last.stdout
    failing = run_testrack(recorded, "--json", "failing", prefix=prefix)
    assert failing.returncode == 1 and len(json.loads(failing.stdout)["failing"]) == 3
    trust = run_testrack(recorded, "trust", "board-1", prefix=prefix)
    assert trust.returncode == 2
    assert trust.stderr == (
        f"testrack trust: the results store {path} is read-only for this process ({why}); this command "
        "changes the store: run it as a user who can write it, or make it writable\n"
    )
    assert path.read_bytes() == before


@pytest.mark.usefixtures("restore_modes")
def test_an_unwritable_rootdir_runs_unrecorded_and_says_how_to_record(recorded: Path) -> None:
    """No .testrack/ yet and a rootdir this user cannot write: the run goes on and says why."""
    prefix = as_plain_user()
    shutil.rmtree(recorded / ".testrack")
    recorded.chmod(0o555)
    out = run_pytest(recorded, prefix=prefix)
    assert out.returncode == 1 and summary_outcomes(out) == "3 failed, 97 passed"
    assert (
        f"testrack: cannot create {recorded / '.testrack'} for the results store (Permission denied): "
        f"this run is not recorded; make {recorded} writable, or keep results elsewhere with "
        "--rack-store PATH (or --rack-store off)"
    ) in out.stdout.splitlines()
    assert not (recorded / ".testrack").exists()


def test_rack_store_naming_a_directory_or_a_missing_one_says_so(recorded: Path) -> None:
    """--rack-store DIR and --rack-store /no/such/dir/x.sqlite: the cause and the fix; no directory made."""
    directory = recorded / "stores"
    directory.mkdir()
    out = run_pytest(recorded, "--rack-store", str(directory))
    assert summary_outcomes(out) == "3 failed, 97 passed"
    assert (
        f"testrack: --rack-store {directory} is a directory: this run is not recorded; give a file in it, "
        f"such as --rack-store {directory / 'results.sqlite'}"
    ) in out.stdout.splitlines()
    missing = recorded / "no" / "such" / "x.sqlite"
    out = run_pytest(recorded, "--rack-store", str(missing))
    assert summary_outcomes(out) == "3 failed, 97 passed"
    assert (
        f"testrack: --rack-store {missing}: the directory {missing.parent} does not exist: this run is not "
        f"recorded; create it first (mkdir -p {missing.parent}), or give a path in an existing directory"
    ) in out.stdout.splitlines()
    assert not (recorded / "no").exists()


def test_the_commands_say_what_a_store_option_names_and_how_to_fix_it(recorded: Path) -> None:
    """testrack last --store FILE|DIR: not a store, a directory; the CLI names its own --store."""
    (recorded / "test_route.py").write_text("def test_route():\n    pass\n")
    out = run_testrack(recorded, "last", "--store", "test_route.py")
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == (
        "testrack last: --store test_route.py is not a testrack results store (not an SQLite database); "
        "give the path of a results store (a run keeps it in <rootdir>/.testrack/results.sqlite)\n"
    )
    out = run_testrack(recorded.parent, "--store", recorded.name, "failing")
    assert out.returncode == 2
    assert out.stderr == (
        f"testrack failing: --store {recorded.name} is a directory; give --store {recorded.name / STORE}\n"
    )
    for command in (["last", "--store", "test_route.py"], ["slowest", "--store", "."], ["trust", "--list"]):
        assert "--rack-store" not in run_testrack(recorded, *command).stderr
