"""Outcomes per phase, the worst-of ordering, and the per-device matrix at the end of a run."""

from __future__ import annotations

import itertools
from typing import Any, Literal

import pytest

from testrack.summary import SEVERITY, matrix_lines, phase_outcome, worse

DEVICES = ["board-1", "board-2"]


def report(
    when: Literal["setup", "call", "teardown"],
    outcome: Literal["passed", "failed", "skipped"],
    **extra: Any,
) -> pytest.TestReport:
    longrepr: Any = None
    if outcome == "skipped":
        longrepr = ("test_a.py", 3, "Skipped: no board")
    elif outcome == "failed":
        longrepr = "assert 0"
    return pytest.TestReport(
        "test_a.py::test_x", ("test_a.py", 3, "test_x"), {}, outcome, longrepr, when, **extra
    )


# -- phase_outcome --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "outcome", "extra", "expected"),
    [
        ("call", "passed", {}, "passed"),
        ("call", "failed", {}, "failed"),
        ("setup", "failed", {}, "error"),
        ("teardown", "failed", {}, "error"),
        ("setup", "passed", {}, None),
        ("teardown", "passed", {}, None),
        ("setup", "skipped", {}, "skipped"),
        ("call", "skipped", {}, "skipped"),
        ("call", "skipped", {"wasxfail": "flaky radio"}, "xfailed"),
        ("setup", "skipped", {"wasxfail": ""}, "xfailed"),
        ("call", "passed", {"wasxfail": "flaky radio"}, "xpassed"),
    ],
)
def test_phase_outcome(
    when: Literal["setup", "call", "teardown"],
    outcome: Literal["passed", "failed", "skipped"],
    extra: dict[str, str],
    expected: str | None,
) -> None:
    """Each phase report maps to the word the summary shows (None: a phase that adds nothing)."""
    assert phase_outcome(report(when, outcome, **extra)) == expected


def test_phase_outcome_of_real_reports(pytester: pytest.Pytester) -> None:
    """Reports from a real pytest run (skip, xfail, strict xpass, setup error) map as expected."""
    pytester.makepyfile(
        test_real="""
        import pytest

        @pytest.fixture
        def broken():
            raise RuntimeError("no board")

        def test_pass():
            pass

        def test_fail():
            assert 0

        def test_error(broken):
            pass

        def test_skip():
            pytest.skip("not today")

        @pytest.mark.xfail(reason="known")
        def test_xfail():
            assert 0

        @pytest.mark.xfail(reason="fixed?", strict=False)
        def test_xpass():
            pass

        @pytest.mark.xfail(reason="fixed?", strict=True)
        def test_xpass_strict():
            pass
        """
    )
    recorder = pytester.inline_run("-p", "no:cacheprovider", "--rack", "off")
    worst: dict[str, str | None] = {}
    for rep in recorder.getreports("pytest_runtest_logreport"):
        name = rep.nodeid.split("::")[-1]
        outcome = phase_outcome(rep)
        worst[name] = worse(worst.get(name), outcome) if outcome else worst.get(name)
    assert worst == {
        "test_pass": "passed",
        "test_fail": "failed",
        "test_error": "error",
        "test_skip": "skipped",
        "test_xfail": "xfailed",
        "test_xpass": "xpassed",
        "test_xpass_strict": "failed",
    }


# -- worse ----------------------------------------------------------------------------------------


def test_severity_order() -> None:
    """The order the summary uses to pick a test's outcome, worst first."""
    assert SEVERITY == (
        "crashed",
        "timeout",
        "error",
        "failed",
        "xpassed",
        "unmatched",
        "xfailed",
        "skipped",
        "passed",
    )


def test_worse_picks_the_earlier_in_severity() -> None:
    """worse(a, b) is whichever of the two comes first in SEVERITY, in either argument order."""
    for a, b in itertools.product(SEVERITY, repeat=2):
        assert worse(a, b) == min(a, b, key=SEVERITY.index), (a, b)


def test_worse_of_nothing_yet() -> None:
    """The first outcome recorded for a test is taken as it is."""
    assert worse(None, "passed") == "passed"
    assert worse(None, "crashed") == "crashed"


def test_worse_over_phases() -> None:
    """A test that failed in call and errored in teardown shows as error."""
    outcome = None
    phases = [report("setup", "passed"), report("call", "failed"), report("teardown", "failed")]
    for phase in phases:
        result = phase_outcome(phase)
        if result is not None:
            outcome = worse(outcome, result)
    assert outcome == "error"


def test_unknown_outcome_ranks_with_xpassed() -> None:
    """An outcome word the table does not know ranks in the middle, never hiding a failure."""
    assert worse("rerun", "passed") == "rerun"
    assert worse("passed", "rerun") == "rerun"
    assert worse("rerun", "failed") == "failed"
    assert worse("failed", "rerun") == "failed"


# -- matrix_lines ---------------------------------------------------------------------------------

OUTCOMES = {
    "test_a.py::test_ok": {"board-1": "passed", "board-2": "passed"},
    "test_a.py::test_b": {"board-1": "passed", "board-2": "failed"},
    "test_a.py::test_skip": {"board-1": "skipped", "board-2": "skipped"},
    "test_a.py::test_x": {"board-1": "xpassed", "board-2": "xpassed"},
    "test_a.py::test_c": {"board-1": "passed"},
    "test_a.py::test_d": {"board-1": "passed", "board-2": "skipped"},
}


def test_matrix_shows_only_failing_or_differing_rows() -> None:
    """By default the matrix lists tests that failed, xpassed or differ by device, then verdicts."""
    assert matrix_lines(OUTCOMES, DEVICES) == [
        "test               board-1    board-2",
        "test_a.py::test_b  passed     failed",
        "test_a.py::test_x  xpassed    xpassed",
        "test_a.py::test_d  passed     skipped",
        "board-1: ok - 4 passed, 1 skipped, 1 xpassed",
        "board-2: FAILED - 1 failed, 1 passed, 2 skipped, 1 xpassed",
    ]


def test_matrix_everything_shows_all_rows_and_dash_for_not_run() -> None:
    """With everything=True every test is a row; "-" marks a device that did not run the test."""
    assert matrix_lines(OUTCOMES, DEVICES, everything=True) == [
        "test                  board-1    board-2",
        "test_a.py::test_ok    passed     passed",
        "test_a.py::test_b     passed     failed",
        "test_a.py::test_skip  skipped    skipped",
        "test_a.py::test_x     xpassed    xpassed",
        "test_a.py::test_c     passed     -",
        "test_a.py::test_d     passed     skipped",
        "board-1: ok - 4 passed, 1 skipped, 1 xpassed",
        "board-2: FAILED - 1 failed, 1 passed, 2 skipped, 1 xpassed",
    ]


def test_dash_for_a_failing_test_a_device_did_not_run() -> None:
    """A failing row shows "-" under the device that never ran the test."""
    outcomes = {"test_a.py::test_gpu": {"board-2": "failed"}}
    assert matrix_lines(outcomes, DEVICES) == [
        "test                 board-1    board-2",
        "test_a.py::test_gpu  -          failed",
        "board-1: ok - no tests",
        "board-2: FAILED - 1 failed",
    ]


def test_matrix_when_everything_agrees() -> None:
    """No row to show: one line says so, and every device still gets its verdict."""
    outcomes = {
        "test_a.py::test_ok": {"board-1": "passed", "board-2": "passed"},
        "test_a.py::test_skip": {"board-1": "skipped", "board-2": "skipped"},
    }
    assert matrix_lines(outcomes, DEVICES) == [
        "all 2 tests gave the same outcome on every device",
        "board-1: ok - 1 passed, 1 skipped",
        "board-2: ok - 1 passed, 1 skipped",
    ]


def test_matrix_with_no_tests() -> None:
    """A run without results still says, per device, that it ran nothing."""
    assert matrix_lines({}, DEVICES) == ["board-1: ok - no tests", "board-2: ok - no tests"]


def test_quarantined_device_fails_with_its_reason() -> None:
    """A quarantined device is FAILED with the reason, even when its tests passed."""
    outcomes = {"test_a.py::test_ok": {"board-1": "passed", "board-2": "passed"}}
    lines = matrix_lines(outcomes, DEVICES, quarantined={"board-1": "serial changed from 0042 to 0043"})
    assert lines == [
        "the only test gave the same outcome on every device",
        "board-1: FAILED - quarantined: serial changed from 0042 to 0043 (1 passed)",
        "board-2: ok - 1 passed",
    ]


def test_runs_a_quarantined_device_never_made_are_counted() -> None:
    """Each mode: a device quarantined before it ran everything says how many runs it missed."""
    outcomes = {
        "test_a.py::test_ok": {"board-1": "passed", "board-2": "passed"},
        "test_a.py::t2": {"board-2": "passed"},
    }
    lines = matrix_lines(outcomes, DEVICES, quarantined={"board-1": "no answer"}, not_run={"board-1": 1})
    assert lines == [
        "every test that ran gave the same outcome on every device it ran on",
        "board-1: FAILED - quarantined: no answer (1 passed, 1 not run)",
        "board-2: ok - 2 passed",
    ]


@pytest.mark.parametrize("outcome", ["crashed", "error", "failed", "unmatched"])
def test_failing_outcomes_make_the_device_fail(outcome: str) -> None:
    """crashed, error, failed and unmatched each turn a device's verdict to FAILED."""
    lines = matrix_lines({"t.py::t": {"board-1": outcome, "board-2": "passed"}}, DEVICES)
    assert lines[-2:] == [f"board-1: FAILED - 1 {outcome}", "board-2: ok - 1 passed"]


def test_long_node_ids_are_truncated_to_the_width() -> None:
    """A node id too long for the terminal keeps its end (the test name) behind "..."."""
    nodeid = "tests/integration/radio/test_radio_link.py::TestLink::test_handover[5GHz-roaming]"
    outcomes = {nodeid: {"board-1": "passed", "board-2": "failed"}}
    lines = matrix_lines(outcomes, DEVICES, width=60)
    # 60 - (2 + 9) * 2 - 1 = 37 columns for the node id: "..." and its last 34 characters
    assert lines == [
        "test                                   board-1    board-2",
        "...tLink::test_handover[5GHz-roaming]  passed     failed",
        "board-1: ok - 1 passed",
        "board-2: FAILED - 1 failed",
    ]
    assert all(len(line) < 60 for line in lines)


def test_node_id_column_never_shrinks_below_20() -> None:
    """On a very narrow terminal the node id column stays readable (20 columns)."""
    nodeid = "test_radio_link.py::test_handover"
    lines = matrix_lines({nodeid: {"board-1": "failed"}}, DEVICES, width=30)
    assert lines[:2] == [
        "test                  board-1    board-2",
        "...py::test_handover  failed     -",
    ]
