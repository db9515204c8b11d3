"""Acceptance: ``testrack bisect`` on real suites, real runs and real probe processes.

Each scenario is a small project whose tests share state through a module (``state.py``):
polluters leave something behind, a cleaner clears it, a setter prepares what a brittle
test needs. One rack run (``--rack local:1``, so collection order) records the failure;
``testrack bisect`` must name the culprits and stay within the issue's probe targets:
one polluter among n in ceil(log2 n) + 3 search probes, d in d * (ceil(log2 n) + 1) + 2.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

VICTIM = "test_z_victim.py::test_victim"
#: what a printed reproduction adds when pytest-randomly is installed (it would shuffle the tests)
KEEP = "-p no:randomly " if importlib.util.find_spec("pytest_randomly") else ""
#: The tests that run before the victim: 10 of them, over three files.
LAYOUT = {"test_a.py": range(0, 4), "test_b.py": range(4, 8), "test_c.py": range(8, 10)}


def nodeid(i: int) -> str:
    name = next(f for f, r in LAYOUT.items() if i in r)
    return f"{name}::test_{i}"


def make_suite(pytester: pytest.Pytester, bodies: dict[int, str], victim: str) -> None:
    """Ten tests (``bodies`` gives some of them code), then the victim, in one worker."""
    pytester.makepyfile(state="DIRT = set()\nREADY = set()\n")
    for name, numbers in LAYOUT.items():
        lines = ["import state", ""]
        for i in numbers:
            lines += [f"def test_{i}():", f"    {bodies.get(i, 'pass')}", ""]
        pytester.path.joinpath(name).write_text("\n".join(lines))
    pytester.path.joinpath("test_z_victim.py").write_text(
        f"import state\n\ndef test_victim():\n    {victim}\n"
    )


def record(pytester: pytest.Pytester, **outcomes: int) -> None:
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "--rack", "local:1").assert_outcomes(**outcomes)


def bisect(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "testrack", "bisect", VICTIM, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def found(cwd: Path, *args: str) -> dict[str, Any]:
    done = bisect(cwd, "--json", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    assert data["verdict"] == "found" and data["before"] == 10
    assert data["probes"]["confirm"] == 4 and data["probes"]["search"] <= data["target"]
    return data


def target(culprits: int, n: int = 10) -> int:
    return culprits * (math.ceil(math.log2(n)) + 1) + 2


def test_a_known_polluter_is_named_with_the_command_that_reproduces_it(pytester: pytest.Pytester) -> None:
    """One polluter among 10: named, within ceil(log2 10) + 3 = 7 search probes, and the
    printed command reproduces the failure with plain pytest."""
    make_suite(
        pytester, {6: "state.DIRT.add('cache')"}, "assert not state.DIRT, 'left behind: ' + str(state.DIRT)"
    )
    record(pytester, passed=10, failed=1)
    done = bisect(pytester.path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:4] == [
        f"{VICTIM} failed in run 1 on local (gw0), after 10 tests in its worker process",
        "confirmed: alone it failed 0 of 2 times; after the 10 tests before it, 2 of 2",
        "polluter: test_b.py::test_6",
        f"  reproduce: pytest --rack off {KEEP}test_b.py::test_6 {VICTIM}",
    ]
    search = int(lines[4].split()[1])
    assert search <= math.ceil(math.log2(10)) + 3 == target(1)
    assert lines[4] == (
        f"probes: {search} to search (target for 1 among 10: at most 7), 4 to confirm, 1 to verify, "
        f"1 for cleaners; {search + 6} in all"
    )
    printed = lines[3].split("reproduce: pytest ")[1]  # the command as printed, run as is
    again = pytester.run(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *printed.split())
    again.assert_outcomes(passed=1, failed=1)
    again.stdout.fnmatch_lines(["*left behind: {'cache'}*"])


def test_two_polluters_that_each_pollute_alone_are_both_named(pytester: pytest.Pytester) -> None:
    make_suite(pytester, {1: "state.DIRT.add('one')", 8: "state.DIRT.add('eight')"}, "assert not state.DIRT")
    record(pytester, passed=10, failed=1)
    data = found(pytester.path)
    assert [c["tests"] for c in data["culprits"]] == [[nodeid(1)], [nodeid(8)]]
    assert data["target"] == target(2) and data["probes"]["search"] <= target(2)


def test_two_tests_that_pollute_only_together_are_named_as_a_pair(pytester: pytest.Pytester) -> None:
    make_suite(
        pytester,
        {2: "state.DIRT.add('half')", 7: "state.DIRT.add('other half')"},
        "assert len(state.DIRT) < 2",
    )
    record(pytester, passed=10, failed=1)
    data = found(pytester.path)
    assert [c["tests"] for c in data["culprits"]] == [[nodeid(2), nodeid(7)]]
    assert data["culprits"][0]["reproduce"] == f"pytest --rack off {KEEP}{nodeid(2)} {nodeid(7)} {VICTIM}"


def test_a_cleaner_in_the_same_half_is_named(pytester: pytest.Pytester) -> None:
    """The cleaner ran before the polluter (so the run failed), in the same half of the prefix."""
    make_suite(pytester, {1: "state.DIRT.clear()", 3: "state.DIRT.add('x')"}, "assert not state.DIRT")
    record(pytester, passed=10, failed=1)
    data = found(pytester.path)
    (culprit,) = data["culprits"]
    assert culprit["tests"] == [nodeid(3)] and culprit["cleaners"] == [[nodeid(1)]]
    assert data["probes"]["search"] <= target(1)


def test_brittle_mode_finds_the_state_setter(pytester: pytest.Pytester) -> None:
    """The victim fails alone and passed in the run, after the test that set it up."""
    make_suite(pytester, {5: "state.READY.add('db')"}, "assert state.READY, 'nothing set up'")
    record(pytester, passed=11)
    done = bisect(pytester.path, "--brittle")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:4] == [
        f"{VICTIM} passed in run 1 on local (gw0), after 10 tests in its worker process",
        "confirmed: alone it passed 0 of 2 times; after the 10 tests before it, 2 of 2",
        f"state-setter: {nodeid(5)}",
        f"  reproduce: pytest --rack off {KEEP}{nodeid(5)} {VICTIM}",
    ]
    assert int(lines[4].split()[1]) <= target(1)


def test_a_victim_that_fails_on_its_own_is_not_bisected(pytester: pytest.Pytester) -> None:
    make_suite(pytester, {}, "assert False, 'broken'")
    record(pytester, passed=10, failed=1)
    done = bisect(pytester.path)
    assert done.returncode == 1
    assert done.stdout.splitlines()[1:] == [
        "it fails on its own: alone it failed 2 of 2 times; after the 10 tests before it, 2 of 2; "
        "no earlier test is needed",
        "probes: 4 to confirm",
    ]


def test_bad_arguments_say_what_to_do(pytester: pytest.Pytester) -> None:
    make_suite(pytester, {}, "pass")
    record(pytester, passed=11)
    passed = bisect(pytester.path)
    assert passed.returncode == 2 and passed.stdout == ""
    assert passed.stderr == (
        f"testrack bisect: {VICTIM} did not fail in run 1; bisect needs a run where it failed: give one "
        f"with --run RUN (`testrack history {VICTIM}` lists its runs), or use --brittle if it fails alone "
        "and passed here\n"
    )
    elsewhere = bisect(pytester.path, "--device", "board-9")
    assert elsewhere.stderr == f"testrack bisect: {VICTIM} did not run on board-9 in run 1; it ran on local\n"
    no_run = bisect(pytester.path, "--run", "7")
    assert no_run.stderr.startswith("testrack bisect: no run 7 in the store (runs are numbered 1 to 1)")


def test_the_report_words_for_a_pair_a_cleaner_and_inconsistent_evidence() -> None:
    """Report.lines without processes: a pair, its cleaner, then a flaky verdict's last set."""
    from testrack.bisect import BisectResult, Culprit, Mode, ProbeCounts, Verdict
    from testrack.isolation import Report, Target
    from testrack.ordering import WorkerSequence
    from testrack.store import Run

    tests = ("a.py::t1", "a.py::t2", "b.py::t3", "v.py::victim")
    sequence = WorkerSequence("gw1", "board-2", tests, ("passed",) * 3 + ("failed",), (0,), ("a.py", "b.py"))
    target = Target(
        "v.py::victim", Run(4, "u", 1.0, "load", "testrack.toml", "pytest"), sequence, 3, ("board-3",)
    )
    assert target.prior == tests[:3] and target.pool == tests[:3]
    found = BisectResult(
        Verdict.FOUND,
        [Culprit(("a.py::t1", "b.py::t3"), [("a.py::t2",)])],
        ProbeCounts(confirm=4, search=5, verify=1, clean=2),
        "alone it failed 0 of 2 times; after the 3 tests before it, 2 of 2",
    )
    assert Report(target, Mode.POLLUTED, found, "board-2").lines() == [
        "v.py::victim failed in run 4 on board-2 (also on board-3) (gw1), "
        "after 3 tests in its worker process",
        "confirmed: alone it failed 0 of 2 times; after the 3 tests before it, 2 of 2",
        "polluter: a.py::t1 + b.py::t3 (only together)",
        "  cleaned by: a.py::t2",
        f"  reproduce: pytest --rack off {KEEP}--rack-device board-2 a.py::t1 b.py::t3 v.py::victim",
        "probes: 5 to search (target for 2 among 3: at most 8), 4 to confirm, 1 to verify, 2 for cleaners; "
        "12 in all",
    ]
    flaky = BisectResult(
        Verdict.INCONSISTENT,
        [],
        ProbeCounts(confirm=4, search=3),
        "a.py::t2 reproduced once, then not when verified: the victim is flaky, so this set may be wrong",
        ("a.py::t2",),
    )
    assert Report(target, Mode.POLLUTED, flaky, None).lines()[1:] == [
        "inconsistent evidence: a.py::t2 reproduced once, then not when verified: the victim is flaky, "
        "so this set may be wrong",
        f"  last set that reproduced (1 test): pytest --rack off {KEEP}a.py::t2 v.py::victim",
        "probes: 3 to search (target for 1 among 3: at most 5), 4 to confirm, 0 to verify, 0 for cleaners; "
        "7 in all",
    ]


def test_a_probe_is_one_fresh_pytest_on_the_device(tmp_path: Path) -> None:
    """One token per option (the rootdir never comes from the temp file's path); the device's
    setup through --rack-device when the run was on a real device."""
    from testrack.probing import ProbeRunner

    command = ProbeRunner(tmp_path, "board-2").command(Path("/tmp/s.txt"), Path("/tmp/o.jsonl"))
    assert command[1:] == [
        "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--rootdir={tmp_path}", "--rack=off",
        "--rack-device=board-2", "--rack-sequence=/tmp/s.txt", "--rack-outcomes=/tmp/o.jsonl",
    ]  # fmt: skip
    assert "--rack-device=board-2" not in ProbeRunner(tmp_path).command(Path("s"), Path("o"))
