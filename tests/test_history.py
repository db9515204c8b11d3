"""Acceptance: runs are recorded as they happen, and read back by the history commands."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import boards
from testrack.store import SQLiteStore
from testrack.store.sqlite import MIGRATIONS

pytestmark = pytest.mark.usefixtures("write_rack")

FLAKY_ON_BOARD_2 = """
    def test_ok(device):
        pass

    def test_board_2_breaks(device):
        assert device.name != "board-2", "board-2 is broken"

    def test_slow(device):
        import time
        time.sleep(0.3)
"""


def run_testrack(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the testrack command as users do, in ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "testrack", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def recorded(pytester, write_rack) -> Path:
    """One each-mode run on 3 boards where board-2 fails one test; returns the project dir."""
    write_rack(boards(3), mode="each")
    pytester.makepyfile(test_rec=FLAKY_ON_BOARD_2)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=8, failed=1)
    return pytester.path


def test_every_result_of_a_run_is_in_the_store(recorded: Path) -> None:
    """The store holds one result per test and device, with outcome, worker and timing."""
    store = SQLiteStore(recorded / ".testrack" / "results.sqlite")
    (run,) = store.runs()
    assert (run.mode, run.outcome) == ("each", "tests_failed") and run.finished is not None
    results = store.results(run.id)
    assert len(results) == 9
    failed = [(r.nodeid, r.device, r.outcome) for r in results if r.outcome != "passed"]
    assert failed == [("test_rec.py::test_board_2_breaks", "board-2", "failed")]
    slow = [r for r in results if r.nodeid.endswith("test_slow")]
    assert all(0.3 <= r.duration < 2 and r.stopped >= r.started + 0.3 for r in slow)
    assert {r.worker for r in results} == {"gw0", "gw1", "gw2"}
    assert sorted(r.position for r in results if r.device == "board-1") == [0, 1, 2]
    store.close()


def test_last_summarises_the_run_per_device(recorded: Path) -> None:
    """testrack last: the run, its outcome, and counts per device."""
    out = run_testrack(recorded, "last")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("run 1: ") and "each mode on" in lines[0]
    assert "outcome: tests failed (exit code 1); 9 results: 1 failed, 8 passed" in lines
    assert "board-2: 1 failed, 2 passed" in lines
    data = json.loads(run_testrack(recorded, "last", "--json").stdout)
    assert data["devices"]["board-1"] == {"passed": 3}
    assert data["run"]["mode"] == "each"


def test_failing_names_the_test_and_the_device_and_exits_1(recorded: Path) -> None:
    """testrack failing: what failed, where, and why; exit code 1 while something fails."""
    out = run_testrack(recorded, "failing")
    assert out.returncode == 1
    assert out.stdout.splitlines() == [
        "1 failing result: 1 test on 1 device, each failing until it passes there "
        "(rerun them with pytest --rack-failed):",
        "test_rec.py::test_board_2_breaks on board-2: failed in run 1: AssertionError: board-2 is broken",
    ]
    data = json.loads(run_testrack(recorded, "failing", "--json").stdout)
    assert [(f["nodeid"], f["device"]) for f in data["failing"]] == [
        ("test_rec.py::test_board_2_breaks", "board-2")
    ]


def test_slowest_lists_the_slow_test_first(recorded: Path) -> None:
    """testrack slowest: sorted by duration, with the device."""
    out = run_testrack(recorded, "slowest", "-n", "3")
    assert out.returncode == 0
    rows = out.stdout.splitlines()[1:]
    assert len(rows) == 3 and all("test_rec.py::test_slow" in row for row in rows)


def test_history_follows_one_test_over_runs_and_devices(recorded: Path, pytester) -> None:
    """testrack history NODEID: every run and device, newest first; a near miss gets a suggestion."""
    pytester.runpytest_subprocess("-p", "no:cacheprovider")
    out = run_testrack(recorded, "history", "test_rec.py::test_board_2_breaks")
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert lines[0] == "test_rec.py::test_board_2_breaks: 6 results, 2 failed, 4 passed"
    assert lines[1].startswith("run    2") and lines[-1].startswith("run    1")
    data = json.loads(run_testrack(recorded, "history", "test_rec.py::test_ok", "--json").stdout)
    assert {r["device"] for r in data["results"]} == {"board-1", "board-2", "board-3"}
    miss = run_testrack(recorded, "history", "test_board_2_breaks")
    assert miss.returncode == 2
    assert "did you mean test_rec.py::test_board_2_breaks?" in miss.stderr


def test_history_commands_without_a_store_say_what_to_do(tmp_path: Path) -> None:
    """No store found: one line naming where it looked and the fix; no traceback."""
    out = run_testrack(tmp_path, "last")
    assert out.returncode == 2
    assert out.stderr.startswith(
        f"testrack last: no testrack results in {tmp_path} or its parents: run pytest"
    )
    assert "Traceback" not in out.stderr


def test_rack_failed_reruns_only_failures_on_their_devices(recorded: Path, pytester) -> None:
    """--rack-failed: only the failed test, only on the device it failed on."""
    result = pytester.runpytest_subprocess("-v", "-p", "no:cacheprovider", "--rack-failed")
    result.assert_outcomes(failed=1, deselected=2)
    result.stdout.fnmatch_lines(["*--rack-failed: rerunning 1 failing test on the device it is failing on",
                                 "[[]board-2[]]*FAILED test_rec.py::test_board_2_breaks*"])  # fmt: skip


def test_rack_failed_anywhere_runs_them_on_any_device(recorded: Path, pytester) -> None:
    """--rack-failed-anywhere: the failed test runs on every matching device (each mode)."""
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--rack-failed-anywhere")
    result.assert_outcomes(passed=2, failed=1, deselected=2)


def test_rack_failed_names_a_device_that_left_the_rack(recorded: Path, pytester, write_rack) -> None:
    """When the device it failed on is gone, the error says so and offers --rack-failed-anywhere."""
    write_rack([b for b in boards(3) if b.name != "board-2"], mode="each")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--rack-failed")
    result.assert_outcomes(errors=1, deselected=2)
    result.stdout.fnmatch_lines(["*failed last time on board-2, which this rack*add --rack-failed-anywhere*"])


def test_rack_failed_without_history_is_a_usage_error(pytester, write_rack) -> None:
    """--rack-failed before any run: a usage error that says to run the suite first."""
    write_rack(boards(1))
    pytester.makepyfile(test_x="def test_a():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--rack-failed")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--rack-failed: no earlier run in the results store*run the suite once*"])


def test_an_old_store_is_migrated_by_a_run_and_keeps_its_history(pytester, write_rack) -> None:
    """A store written by schema v1 is upgraded in place by the next run; history spans both."""
    write_rack(boards(1))
    pytester.makepyfile(test_m="def test_a():\n    pass\n")
    path = pytester.path / ".testrack" / "results.sqlite"
    path.parent.mkdir()
    db = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    db.execute(
        "INSERT INTO runs (uid, started, mode, rack, command, outcome) "
        "VALUES ('v1', 1.0, 'load', 'r', 'c', 'ok')"
    )
    db.execute("INSERT INTO results (run_id, nodeid, device, worker, outcome, duration, started, stopped) "
               "VALUES (1, 'test_m.py::test_a', 'board-1', 'gw0', 'failed', 0.5, 1.0, 1.5)")  # fmt: skip
    db.commit()
    db.close()
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    out = run_testrack(pytester.path, "history", "test_m.py::test_a")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "test_m.py::test_a: 2 results, 1 failed, 1 passed"


def test_killing_the_controller_loses_no_reported_result(pytester, write_rack) -> None:
    """kill -9 of the controller mid-run: every result it had printed is in the store, workers exit."""
    write_rack(boards(2))
    pytester.makepyfile(
        test_k="".join(
            f"\ndef test_{i:02d}(device):\n    import os, time\n"
            f"    open(os.environ['OUT'] + '/pids', 'a').write(f'{{os.getpid()}}\\n')\n    time.sleep(0.15)\n"
            for i in range(40)
        )
    )
    out = pytester.mkdir("out")
    env = dict(os.environ, OUT=str(out), PYTHONUNBUFFERED="1")
    controller = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider"],
        cwd=pytester.path, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert controller.stdout is not None
    shown: set[tuple[str, str]] = set()
    deadline = time.monotonic() + 60
    while len(shown) < 8 and time.monotonic() < deadline:
        line = controller.stdout.readline()
        if line.startswith("[board-") and " PASSED " in line:
            device = line[1 : line.index("]")]
            shown.add((line.split(" PASSED ")[1].split()[0], device))
    controller.send_signal(signal.SIGKILL)
    controller.wait()
    assert len(shown) >= 8
    store = SQLiteStore(pytester.path / ".testrack" / "results.sqlite")
    (run,) = store.runs()
    assert run.finished is None, "the run was killed, so it has no end"
    stored = {(r.nodeid, r.device) for r in store.results(run.id)}
    assert shown <= stored, f"shown but not stored: {shown - stored}"
    pids = {int(p) for p in out.joinpath("pids").read_text().split()}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids), "a worker outlived its killed controller"


def test_killing_the_controller_loses_no_result_shown_from_batched_reports(pytester) -> None:
    """The same, with short tests on many slots: reports travel in batches, and a loop round
    stores several workers' batches in one commit before any of them is shown."""
    pytester.makepyfile(
        test_b="import time, pytest\n\n@pytest.mark.parametrize('i', range(2000))\n"
        "def test_short(i):\n    time.sleep(0.004)\n"
    )
    controller = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-p", "no:randomly",
         "--rack", "local:8"],
        cwd=pytester.path, stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )  # fmt: skip
    assert controller.stdout is not None
    shown: set[str] = set()
    deadline = time.monotonic() + 120
    while len(shown) < 400 and time.monotonic() < deadline:
        line = controller.stdout.readline()
        if " PASSED " in line:
            shown.add(line.split(" PASSED ")[1].split()[0])
    controller.send_signal(signal.SIGKILL)
    controller.wait()
    assert len(shown) >= 400
    store = SQLiteStore(pytester.path / ".testrack" / "results.sqlite")
    (run,) = store.runs()
    stored = {r.nodeid for r in store.results(run.id)}
    assert shown <= stored, f"shown but not stored: {sorted(shown - stored)[:5]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    return state != "Z"  # a zombie has exited; only its parent has not reaped it yet


MIXED = """
    import pytest

    def test_a(device):
        pass

    def test_b(device):
        pass

    def test_skip(device):
        pytest.skip("not here")

    @pytest.mark.xfail
    def test_xfail(device):
        assert False

    def test_fails(device):
        assert False, "broken"

    @pytest.fixture
    def bad():
        raise RuntimeError("setup broke")

    def test_error(bad):
        pass
"""


def test_last_says_the_outcome_in_words_and_counts_in_pytests_order(pytester, write_rack) -> None:
    """outcome in words with the exit code; counts as pytest's summary line orders and words them."""
    write_rack(boards(1))
    pytester.makepyfile(test_mixed=MIXED)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(
        passed=2, failed=1, skipped=1, xfailed=1, errors=1
    )
    out = run_testrack(pytester.path, "last")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[2:] == [
        "outcome: tests failed (exit code 1); 6 results: 1 failed, 2 passed, 1 skipped, 1 xfailed, 1 error",
        "board-1: 1 failed, 2 passed, 1 skipped, 1 xfailed, 1 error",
    ]


def test_counts_follow_pytest_then_testracks_own_outcomes() -> None:
    """pytest's KNOWN_TYPES order and plurals, then crashed, timed out, unmatched, device errors."""
    from testrack.history import counts, run_outcome

    assert counts({"device_error": 2, "timeout": 1, "error": 2, "passed": 670, "zzz": 1, "crashed": 1,
                   "skipped": 1, "failed": 1, "unmatched": 1, "xpassed": 1}) == (
        "1 failed, 670 passed, 1 skipped, 1 xpassed, 2 errors, 1 crashed, 1 timed out, 1 unmatched, "
        "2 device errors, 1 zzz"
    )  # fmt: skip
    assert counts({"error": 1, "device_error": 1}) == "1 error, 1 device error"
    assert run_outcome("ok") == "passed (exit code 0)"
    assert run_outcome("no_tests_collected") == "no tests collected (exit code 5)"
    assert run_outcome(None) == "did not finish (no end recorded: killed, or still running)"


def test_last_run_picks_a_run_by_number_last_or_uid(recorded: Path, pytester) -> None:
    """testrack last --run RUN: a run number, `last`, or the start of its uid; a wrong one is one line."""
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "test_ok")
    store = SQLiteStore(recorded / ".testrack" / "results.sqlite")
    first_uid = store.runs()[-1].uid
    store.close()
    for spec, run_id in (("1", 1), ("last", 2), (first_uid[:8], 1)):
        out = run_testrack(recorded, "last", "--run", spec)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(f"run {run_id}: ")
    # The start of a uid may be all digits (CI met one): a run number only when one has it.
    with contextlib.closing(sqlite3.connect(recorded / ".testrack" / "results.sqlite")) as db, db:
        db.execute("UPDATE runs SET uid = '52031287' || substr(uid, 9) WHERE id = 1")
    out = run_testrack(recorded, "last", "--run", "52031287")
    assert out.returncode == 0 and out.stdout.startswith("run 1: "), out.stderr
    assert json.loads(run_testrack(recorded, "--json", "last", "--run", "1").stdout)["results"] == 9
    assert run_testrack(recorded, "last").stdout.splitlines()[2].endswith("3 results: 3 passed")
    missing = run_testrack(recorded, "last", "--run", "7")
    assert (missing.returncode, missing.stdout) == (2, "")
    assert missing.stderr == (
        "testrack last: no run 7 in the store (runs are numbered 1 to 2); `testrack last` shows the newest\n"
    )


def test_global_options_work_before_the_command_too(recorded: Path, tmp_path: Path) -> None:
    """testrack --json failing, testrack --store PATH last: as after the command."""
    store = recorded / ".testrack" / "results.sqlite"
    before = run_testrack(tmp_path, "--json", "--store", str(store), "failing")
    after = run_testrack(tmp_path, "failing", "--json", "--store", str(store))
    assert before.returncode == after.returncode == 1
    assert json.loads(before.stdout) == json.loads(after.stdout)
    assert json.loads(before.stdout)["failing"][0]["device"] == "board-2"
    assert run_testrack(tmp_path, "--store", str(store), "last").stdout.startswith("run 1: ")


def test_one_of_a_thing_is_singular(recorded: Path) -> None:
    """1 result, 1 test, 1 device: no `1 results`."""
    out = run_testrack(recorded, "slowest", "-n", "1")
    assert out.stdout.splitlines()[0] == "slowest 1 test of run 1:"
    out = run_testrack(recorded, "history", "test_rec.py::test_ok", "-n", "1")
    assert out.stdout.splitlines()[0] == "test_rec.py::test_ok: 1 result, 1 passed"


def test_every_result_is_stored_before_any_plugin_sees_it(pytester) -> None:
    """Short tests on many slots: reports travel in batches, and a loop round stores several
    workers' batches in one commit; a plugin in the controller reads the store as it is shown."""
    pytester.makeconftest(
        """
        import os, sqlite3

        db = None
        missing = []

        def pytest_runtest_logreport(report):
            global db
            if os.environ.get("TESTRACK_WORKER") or report.when != "teardown":
                return
            if db is None:
                db = sqlite3.connect(".testrack/results.sqlite")
            (n,) = db.execute("SELECT count(*) FROM results WHERE nodeid = ?", (report.nodeid,)).fetchone()
            if not n:
                missing.append(report.nodeid)

        def pytest_unconfigure(config):
            if not os.environ.get("TESTRACK_WORKER"):
                with open("missing.txt", "w") as fh:
                    fh.write("\\n".join(missing))
        """
    )
    pytester.makepyfile(
        test_b="import time, pytest\n\n@pytest.mark.parametrize('i', range(1500))\n"
        "def test_short(i):\n    time.sleep(0.002)\n"
    )
    result = pytester.runpytest_subprocess("--rack", "local:8", "-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1500)
    assert (pytester.path / "missing.txt").read_text() == ""
