"""Acceptance: a test stays failing on a device until it passes there; ``testrack failing`` lists
every such (test, device) pair and ``--rack-failed`` reruns the test on every one of those
devices, in each mode and in load mode (issue 7, point 10)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import boards, results

#: test_flaky fails on the devices listed in broken.txt; test_ok passes everywhere.
SUITE = """
    from pathlib import Path

    def test_ok(device):
        pass

    def test_flaky(device):
        broken = Path(__file__).with_name("broken.txt").read_text().split()
        assert device.name not in broken, f"{device.name} is broken"
"""
FLAKY = "test_f.py::test_flaky"


def run_testrack(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "testrack", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def failing_pairs(cwd: Path) -> list[tuple[str, str, int]]:
    """(test, device, run it last failed in), from ``testrack --json failing``."""
    out = run_testrack(cwd, "--json", "failing")
    assert out.returncode in (0, 1), out.stderr
    return [(row["nodeid"], row["device"], row["run"]) for row in json.loads(out.stdout)["failing"]]


def ran(result: pytest.RunResult) -> list[tuple[str, str]]:
    """(device, WORD) of every result of test_flaky, sorted."""
    return sorted((device, word) for device, word, nodeid in results(result.outlines) if nodeid == FLAKY)


@pytest.fixture
def project(pytester: pytest.Pytester, write_rack) -> Path:
    write_rack(boards(4))
    pytester.makepyfile(test_f=SUITE)
    return pytester.path


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-v", "-p", "no:cacheprovider", *args)


def test_a_test_failing_on_three_devices_is_rerun_on_all_three_until_each_passes(
    project: Path, pytester: pytest.Pytester
) -> None:
    """Each mode: test_flaky fails on 3 of 4 boards. --rack-failed in load mode reruns it on those
    3 (not once); it stays listed on each board until it passes there; then nothing is rerun."""
    broken = project / "broken.txt"
    broken.write_text("board-1 board-2 board-3")
    run(pytester, "--rack-mode=each").assert_outcomes(passed=5, failed=3)
    assert failing_pairs(project) == [(FLAKY, f"board-{i}", 1) for i in (1, 2, 3)]
    out = run_testrack(project, "failing")
    assert out.returncode == 1
    assert out.stdout.splitlines() == [
        "3 failing results: 1 test on 3 devices, each failing until it passes there "
        "(rerun them with pytest --rack-failed):",
        *(f"{FLAKY} on board-{i}: failed in run 1: AssertionError: board-{i} is broken" for i in (1, 2, 3)),
    ]

    broken.write_text("board-1 board-3")  # board-2 is repaired
    second = run(pytester, "--rack-mode=load", "--rack-failed")
    second.stdout.fnmatch_lines(
        ["testrack: --rack-failed: rerunning 1 failing test on the 3 devices it is failing on"]
    )
    assert ran(second) == [("board-1", "FAILED"), ("board-2", "PASSED"), ("board-3", "FAILED")]
    second.assert_outcomes(passed=1, failed=2, deselected=1)
    assert failing_pairs(project) == [(FLAKY, "board-1", 2), (FLAKY, "board-3", 2)]

    # A pass elsewhere does not end a failure on board-1 or board-3.
    anywhere = run(pytester, "--rack-mode=load", "--rack-failed-anywhere")
    anywhere.stdout.fnmatch_lines(
        ["testrack: --rack-failed-anywhere: rerunning 1 failing test once, on any matching device"]
    )
    assert len(ran(anywhere)) == 1
    assert [pair[:2] for pair in failing_pairs(project)] == [(FLAKY, "board-1"), (FLAKY, "board-3")]

    each = run(pytester, "--rack-mode=each", "--rack-failed")
    assert ran(each) == [("board-1", "FAILED"), ("board-3", "FAILED")]
    assert [pair[:2] for pair in failing_pairs(project)] == [(FLAKY, "board-1"), (FLAKY, "board-3")]

    broken.write_text("")  # all repaired
    fixed = run(pytester, "--rack-mode=load", "--rack-failed")
    assert ran(fixed) == [("board-1", "PASSED"), ("board-3", "PASSED")]
    assert failing_pairs(project) == []
    out = run_testrack(project, "failing")
    assert out.returncode == 0
    assert (
        out.stdout
        == "nothing is failing: every test passed or was skipped where it last ran (newest run: 5)\n"
    )
    nothing = run(pytester, "--rack-failed")
    nothing.stdout.fnmatch_lines(
        ["testrack: --rack-failed: nothing failed in the last runs; nothing to rerun"]
    )
    assert ran(nothing) == []


def test_a_skip_ends_a_failure_and_a_device_error_retry_does_not(project: Path, pytester) -> None:
    """As pytest's --lf: a skip (or a pass) ends a failure; outcomes that say nothing don't."""
    from testrack.store import Result, RunInfo, SQLiteStore

    store = SQLiteStore(project / ".testrack" / "results.sqlite")
    try:
        for uid, outcome in (("a", "failed"), ("b", "device_error")):
            run_id = store.begin_run(RunInfo(uid, 1.0, "load", "r", "c"))
            store.add_results(run_id, [Result("t.py::x", "board-1", "gw0", outcome, 0.1, 1.0, 1.1)])
            store.add_results(run_id, [Result("t.py::y", "board-1", "gw0", outcome, 0.1, 1.0, 1.1)])
        run_id = store.begin_run(RunInfo("c", 2.0, "load", "r", "c"))
        store.add_results(run_id, [Result("t.py::y", "board-1", "gw0", "skipped", 0.0, 2.0, 2.0)])
    finally:
        store.close()
    assert failing_pairs(project) == [("t.py::x", "board-1", 1)]
