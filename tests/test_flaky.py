"""``testrack flaky``: the classification from stored history, and real runs of each kind."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from testrack import flaky
from testrack.flaky import CLEAR_AFTER, Seen, device_dependence, find_flaky, hypergeometric_tail
from testrack.store import MemoryStore, Result, RunInfo

# ---------------------------------------------------------------------------------- from history


def add_run(store: MemoryStore, revision: str | None, rows: list[tuple[str, str, str, str]]) -> int:
    """A run whose workers ran ``rows`` (worker, device, nodeid, outcome) in this order."""
    run = store.begin_run(RunInfo(f"u{len(store.runs())}", 1.0, "each", "rack.toml", "pytest", revision))
    positions: dict[str, int] = {}
    results = []
    for worker, device, nodeid, outcome in rows:
        position = positions[worker] = positions.get(worker, -1) + 1
        results.append(Result(nodeid, device, worker, outcome, 0.1, 1.0, 1.1, position=position))
    store.add_results(run, results)
    return run


def each_mode(store: MemoryStore, failing_on: set[str], revision: str = "r1") -> None:
    add_run(
        store,
        revision,
        [(f"gw{i}", d, "t.py::test", "failed" if d in failing_on else "passed") for i, d in enumerate("abc")],
    )


def test_the_exact_test_is_the_hypergeometric_tail() -> None:
    """P(all 3 failures land on the device with 3 of 9 results) = 1 / C(9, 3)."""
    assert hypergeometric_tail(9, 3, 3, 3) == pytest.approx(1 / math.comb(9, 3))
    assert hypergeometric_tail(10, 0, 5, 0) == 1.0
    assert hypergeometric_tail(6, 2, 3, 1) == pytest.approx(1 - math.comb(4, 3) / math.comb(6, 3))


def test_a_device_is_named_only_when_chance_cannot_explain_it() -> None:
    """Two runs on three devices, failing on b: p = 3 / C(6,2) = 0.2, not named; three runs:
    p = 3 / C(9,3) = 0.036, named, with the numbers in the words."""
    store = MemoryStore()
    each_mode(store, {"b"})
    each_mode(store, {"b"})
    (two,) = find_flaky(store)
    assert two.kind == flaky.UNCLASSIFIED
    each_mode(store, {"b"})
    (three,) = find_flaky(store)
    assert three.kind == flaky.DEVICE and three.devices == ["b"]
    assert three.p_value == pytest.approx(3 / math.comb(9, 3))
    assert three.why == (
        "fails on b only: 3 of 3 results there, 0 of 6 elsewhere "
        "(Fisher's exact test, p = 0.0357 for 3 devices)"
    )
    assert (three.failed, three.passed, round(three.failure_rate, 3)) == (3, 6, 0.333)


def test_failures_spread_over_devices_are_not_called_device_dependent() -> None:
    rows = [Seen(i, "r", "abc"[i % 3], "failed" if i % 2 else "passed", (), False) for i in range(12)]
    assert device_dependence(rows)[0] == []


def test_only_outcomes_on_one_revision_count() -> None:
    """Failed on r1, passed on r2 (fixed, say): not flaky. Runs outside git: never compared."""
    store = MemoryStore()
    add_run(store, "r1", [("gw0", "a", "t.py::x", "failed")])
    add_run(store, "r2", [("gw0", "a", "t.py::x", "passed")])
    add_run(store, None, [("gw0", "a", "t.py::x", "failed")])
    add_run(store, None, [("gw0", "a", "t.py::x", "passed")])
    assert find_flaky(store) == []
    assert flaky.format_flaky([], 4, 2) == ["no flaky test in the last 4 runs"]
    assert flaky.format_flaky([], 2, 0) == [
        "none of the last 2 runs has a code revision (runs outside a git work tree have none), "
        "so no test can be called flaky"
    ]


def test_same_order_mixed_outcomes_is_nondeterministic() -> None:
    store = MemoryStore()
    for outcome in ("passed", "failed"):
        add_run(store, "r1", [("gw0", "a", "t.py::setup", "passed"), ("gw0", "a", "t.py::coin", outcome)])
    (found,) = find_flaky(store)
    assert found.kind == flaky.NONDETERMINISTIC
    assert found.why == "passed and failed after the same 1 test on a (runs 1, 2)"


def test_a_failure_on_a_second_run_in_one_process_is_non_idempotent() -> None:
    store = MemoryStore()
    add_run(store, "r1", [("gw0", "a", "t.py::once", "passed"), ("gw0", "a", "t.py::once", "failed")])
    (found,) = find_flaky(store)
    assert found.kind == flaky.NON_IDEMPOTENT
    assert found.why == "failed when it ran again in the same process (run 1, a)"


def test_a_flaky_test_stays_flaky_until_it_passes_n_times_in_a_row() -> None:
    store = MemoryStore()
    add_run(store, "r1", [("gw0", "a", "t.py::x", "failed")])
    for _ in range(CLEAR_AFTER - 1):
        add_run(store, "r1", [("gw0", "a", "t.py::x", "passed")])
    (still,) = find_flaky(store)
    assert still.streak == CLEAR_AFTER - 1
    assert flaky.format_flaky([still], 20, 20)[0] == (
        "1 flaky test (passed and failed on one revision; "
        "a test stays flaky until it passes 20 times in a row):"
    )
    add_run(store, "r2", [("gw0", "a", "t.py::x", "passed")])
    assert find_flaky(store) == []


# ---------------------------------------------------------------------------------- real runs


def git_commit(path: Path) -> None:
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "suite"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args], cwd=path, check=True
        )


def flaky_command(cwd: Path, *args: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "testrack", "flaky", "--json", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)


def test_a_failure_on_one_simulated_device_is_device_dependent(
    pytester: pytest.Pytester, testrack_sim
) -> None:
    """Each mode on three simulated boards, three runs: the test that fails on board-2 is named
    device-dependent, on board-2 only, with the exact test's p-value."""
    sim = testrack_sim(3)
    sim.write_rack(pytester.path / "testrack.toml", mode="each")
    pytester.makepyfile(
        test_dev="""
        from testrack.sim import SimClient

        def test_reads_its_serial(device):
            with SimClient(device.address) as client:
                assert client.identify()["name"] != "board-2", "board-2 answers wrong"

        def test_fine(device):
            pass
        """
    )
    git_commit(pytester.path)
    for _ in range(3):
        run(pytester).assert_outcomes(passed=5, failed=1)
    code, data = flaky_command(pytester.path)
    assert code == 1 and data["runs_with_revision"] == 3
    (found,) = data["flaky"]
    assert found["nodeid"] == "test_dev.py::test_reads_its_serial"
    assert (found["class"], found["devices"]) == ("device-dependent", ["board-2"])
    assert found["p_value"] == pytest.approx(3 / math.comb(9, 3))
    assert (found["failed"], found["passed"]) == (3, 6)


def test_a_seeded_nondeterministic_test_is_nondeterministic(pytester: pytest.Pytester) -> None:
    """The test draws from a random generator seeded by a run counter: deterministic itself,
    but it passes in the first run and fails in the second, in the same order."""
    pytester.makepyfile(
        test_coin="""
        import pathlib, random

        def test_coin():
            counter = pathlib.Path("runs.txt")
            n = int(counter.read_text()) if counter.exists() else 0
            counter.write_text(str(n + 1))
            assert random.Random(n).random() >= 0.5, f"seed {n} came up tails"
        """
    )
    git_commit(pytester.path)
    run(pytester, "--rack", "local:1").assert_outcomes(passed=1)  # Random(0) -> 0.84
    run(pytester, "--rack", "local:1").assert_outcomes(failed=1)  # Random(1) -> 0.13
    code, data = flaky_command(pytester.path)
    (found,) = data["flaky"]
    assert code == 1 and found["class"] == "nondeterministic"
    assert found["why"] == "passed and failed after the same 0 tests on local (runs 1, 2)"
    assert (found["failure_rate"], found["passes_in_a_row"]) == (0.5, 0)


def test_a_non_idempotent_test_is_named_with_confirm(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It keeps state in its module, so a second run in one process fails; in the stored runs it
    failed once (for another reason) and passed once. --confirm runs it twice in a fresh
    process: pass, then fail."""
    pytester.makepyfile(
        test_once="""
        import os

        CALLS = []

        def test_once():
            CALLS.append(1)
            assert not os.environ.get("GLITCH"), "the device hiccuped"
            assert len(CALLS) == 1, f"ran {len(CALLS)} times in this process"
        """
    )
    git_commit(pytester.path)
    monkeypatch.setenv("GLITCH", "1")
    run(pytester, "--rack", "local:1").assert_outcomes(failed=1)
    monkeypatch.delenv("GLITCH")
    run(pytester, "--rack", "local:1").assert_outcomes(passed=1)
    _, before = flaky_command(pytester.path)
    assert [f["class"] for f in before["flaky"]] == ["nondeterministic"]  # same order, both outcomes
    code, data = flaky_command(pytester.path, "--confirm")
    (found,) = data["flaky"]
    assert code == 1 and data["confirmed"]
    assert (found["class"], found["why"]) == (
        "non-idempotent",
        "run twice in one fresh process, it passed, then failed",
    )


def test_an_order_dependent_test_is_confirmed_by_replaying_its_order(pytester: pytest.Pytester) -> None:
    """Failed after a polluter, passed alone: --confirm replays the failing order (fails) and
    runs it alone (passes), and points at testrack bisect."""
    pytester.makepyfile(
        state="DIRT = set()\n",
        test_a="import state\n\ndef test_pollute():\n    state.DIRT.add(1)\n",
        test_b="import state\n\ndef test_clean_state():\n    assert not state.DIRT\n",
    )
    git_commit(pytester.path)
    run(pytester, "--rack", "local:1").assert_outcomes(passed=1, failed=1)
    run(pytester, "--rack", "local:1", "test_b.py").assert_outcomes(passed=1)
    code, data = flaky_command(pytester.path, "--confirm")
    (found,) = data["flaky"]
    assert code == 1 and found["nodeid"] == "test_b.py::test_clean_state"
    assert (found["class"], found["why"]) == (
        "order-dependent",
        "run 1's order (1 test before it) fails again; alone it passes "
        "(find the culprits: testrack bisect test_b.py::test_clean_state --run 1)",
    )
    text = subprocess.run(
        [sys.executable, "-m", "testrack", "flaky"], cwd=pytester.path, capture_output=True, text=True
    )
    assert text.stdout.splitlines()[1:] == [
        "test_b.py::test_clean_state: unclassified",
        "  its failing and passing runs ran different tests before it; --confirm runs the probes that tell",
        f"  1 failed, 1 passed (50% failures) on {found['revisions'][0][:12]}; "
        "1 pass in a row since its last failure",
    ]
