"""``--rack-sequence FILE`` and ``--rack-outcomes FILE``: an exact sequence in one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import boards

SUITE_A = """
    import pytest

    CALLS = []

    @pytest.fixture(scope="module")
    def shared():
        with open("setups.txt", "a") as log:
            log.write("module setup\\n")

    def test_1(): pass
    def test_2(): pass

    def test_once(shared):
        CALLS.append(1)
        assert len(CALLS) == 1, f"ran {len(CALLS)} times in this process"

    class TestK:
        seen = []

        def test_fresh(self):
            assert not hasattr(self, "mark")
            self.mark = True

    @pytest.mark.parametrize("p", ["x", "a::b"])
    def test_p(p): pass
"""
SUITE_B = """
    def test_1(): pass
    def test_2(): pass
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_a=SUITE_A, test_b=SUITE_B)
    return pytester


def ran(result: pytest.RunResult) -> list[str]:
    """Node ids in the order pytest -v reported them."""
    words = ("PASSED", "FAILED", "ERROR")
    return [
        line.split(" ")[0] for line in result.outlines if any(f" {w}" in line for w in words) and "::" in line
    ]


def outcomes(path: Path) -> list[tuple[str, str]]:
    return [(row["nodeid"], row["outcome"]) for row in map(json.loads, path.read_text().splitlines())]


def test_plain_pytest_keeps_command_line_order_but_runs_a_repeat_once(suite: pytest.Pytester) -> None:
    """What --rack-sequence is for: pytest keeps node id order across and within files, and
    drops a repeated node id (so a test cannot run twice in one process from the command line)."""
    args = ["test_b.py::test_2", "test_a.py::test_2", "test_b.py::test_1", "test_a.py::test_1"]
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "--rack", "off", "-v", *args)
    assert ran(result) == args
    result = suite.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--rack",
        "off",
        "-v",
        "test_a.py::test_2",
        "test_a.py::test_1",
        "test_a.py::test_2",
    )
    assert ran(result) == ["test_a.py::test_2", "test_a.py::test_1"]


def test_a_sequence_runs_exactly_in_its_order_repeats_included(suite: pytest.Pytester) -> None:
    """Across files, within a file, twice in one process: the function runs again, its module
    fixture is kept, and each run has its own outcome line."""
    sequence = [
        "test_b.py::test_2",
        "test_a.py::TestK::test_fresh",
        "test_a.py::test_once",
        "test_a.py::test_p[a::b]",
        "test_a.py::test_once",
        "test_a.py::TestK::test_fresh",
        "test_b.py::test_1",
    ]
    Path(suite.path, "seq.txt").write_text("# bisect probe\n\n" + "\n".join(sequence) + "\n")
    result = suite.runpytest_subprocess(
        "-p", "no:cacheprovider", "-v", "--rack-sequence", "seq.txt", "--rack-outcomes", "out.jsonl"
    )
    assert ran(result) == sequence
    assert outcomes(suite.path / "out.jsonl") == [
        ("test_b.py::test_2", "passed"),
        ("test_a.py::TestK::test_fresh", "passed"),
        ("test_a.py::test_once", "passed"),
        ("test_a.py::test_p[a::b]", "passed"),
        ("test_a.py::test_once", "failed"),
        ("test_a.py::TestK::test_fresh", "passed"),
        ("test_b.py::test_1", "passed"),
    ]
    assert (suite.path / "setups.txt").read_text() == "module setup\n"
    result.stdout.fnmatch_lines(["*AssertionError: ran 2 times in this process*"])


def test_the_sequence_wins_over_a_plugin_that_reorders(suite: pytest.Pytester) -> None:
    suite.makeconftest(
        """
        def pytest_collection_modifyitems(items):
            items.reverse()
        """
    )
    Path(suite.path, "seq.txt").write_text("test_a.py::test_1\ntest_a.py::test_2\ntest_b.py::test_1\n")
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "-v", "--rack-sequence", "seq.txt")
    assert ran(result) == ["test_a.py::test_1", "test_a.py::test_2", "test_b.py::test_1"]


def test_deselected_tests_are_left_out(suite: pytest.Pytester) -> None:
    Path(suite.path, "seq.txt").write_text("test_a.py::test_1\ntest_a.py::test_2\ntest_b.py::test_2\n")
    result = suite.runpytest_subprocess(
        "-p", "no:cacheprovider", "-v", "--rack-sequence", "seq.txt", "-k", "not test_2"
    )
    assert ran(result) == ["test_a.py::test_1"]


def test_a_test_that_is_not_there_is_named_with_its_line(suite: pytest.Pytester) -> None:
    Path(suite.path, "seq.txt").write_text("test_a.py::test_1\ntest_a.py::test_gone\n")
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "--rack-sequence", "seq.txt")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "test_a.py::test_gone" in result.stderr.str()


def test_a_sequence_with_paths_or_workers_is_a_usage_error(suite: pytest.Pytester) -> None:
    Path(suite.path, "seq.txt").write_text("test_a.py::test_1\n")
    with_paths = suite.runpytest_subprocess(
        "-p", "no:cacheprovider", "--rack-sequence", "seq.txt", "test_b.py"
    )
    assert with_paths.ret == pytest.ExitCode.USAGE_ERROR
    with_paths.stderr.fnmatch_lines(
        [
            "ERROR: --rack-sequence seq.txt names the tests to run; "
            "leave out the paths and node ids (test_b.py) or the option"
        ]
    )
    with_rack = suite.runpytest_subprocess(
        "-p", "no:cacheprovider", "--rack-sequence", "seq.txt", "--rack", "local:2"
    )
    assert with_rack.ret == pytest.ExitCode.USAGE_ERROR
    with_rack.stderr.fnmatch_lines(
        [
            "ERROR: --rack-sequence runs the tests in this one process, but --rack local:2 asks for workers; "
            "leave out one of them (or use --rack off)"
        ]
    )
    Path(suite.path, "empty.txt").write_text("# nothing\n")
    empty = suite.runpytest_subprocess("-p", "no:cacheprovider", "--rack-sequence", "empty.txt")
    assert empty.ret == pytest.ExitCode.USAGE_ERROR
    empty.stderr.fnmatch_lines(
        ["ERROR: --rack-sequence empty.txt: no test in it; write one node id per line*"]
    )


def test_a_projects_rack_does_not_stop_a_sequence(suite: pytest.Pytester, write_rack) -> None:
    """With a testrack.toml in the project the sequence still runs here, in one process."""
    write_rack(boards(2))
    Path(suite.path, "seq.txt").write_text("test_b.py::test_1\ntest_a.py::test_1\n")
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "-v", "--rack-sequence", "seq.txt")
    assert ran(result) == ["test_b.py::test_1", "test_a.py::test_1"]
    assert "testrack: collected" not in result.stdout.str()  # no workers: it ran here
