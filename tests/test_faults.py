"""Fault injection: real processes, simulated devices, and nothing lost.

Every scenario runs a real pytest session on a simulated rack (real TCP servers),
injects one fault, and checks the same things: every other test ran and was
reported exactly once (JUnit XML), every reported result is in the results store,
and the message the user reads names the device and the fix.

With ``TESTRACK_FAULT_REPORT=FILE`` each scenario appends one JSON line (fault,
mode, tests expected, reported, stored); ``bench/reliability.py`` turns that into
``docs/reliability.md``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from testrack.store import SQLiteStore

WORK_TESTS = 8  # ordinary tests around the faulty one

SUITE = """
    import os, signal, time
    import pytest
    from testrack.sim import SimClient

    FAULT = os.environ.get("FAULT", "")
    ON = os.environ.get("FAULT_ON", "any")

    {tests}

    def test_faulty(device):
        if ON in ("any", device.name):
            if FAULT == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            elif FAULT == "exit":
                os._exit(7)
            elif FAULT == "exit-once" and not os.path.exists("crashed-once"):
                open("crashed-once", "w").close()
                os._exit(7)
            elif FAULT == "exit-once-each" and not os.path.exists("crashed-" + device.name):
                open("crashed-" + device.name, "w").close()
                os._exit(7)
            elif FAULT == "hang":
                time.sleep(120)
        SimClient(device.address).work(20)
"""


def _suite() -> str:
    tests = "\n".join(
        f"def test_work_{i}(device):\n    SimClient(device.address, timeout=60).work(40)\n"
        for i in range(WORK_TESTS)
    )
    return textwrap.dedent(SUITE).replace("{tests}", tests)


class Run:
    """One faulty session: its output, what JUnit says was reported, what the store holds."""

    def __init__(self, path: Path, proc: subprocess.CompletedProcess[str]) -> None:
        self.path = path
        self.ret = proc.returncode
        self.out = proc.stdout + proc.stderr
        self.reported: Counter[tuple[str, str]] = Counter()
        junit = path / "junit.xml"
        if junit.exists():
            for case in ET.parse(junit).getroot().iter("testcase"):
                if not case.get("name"):
                    continue  # junitxml's trace of a test interrupted after its setup (as with plain pytest)
                device = next(
                    (p.get("value") for p in case.iter("property") if p.get("name") == "device"), "-"
                )
                name = (case.get("name") or "").removesuffix(f"@{device}")  # each mode: name@device
                self.reported[(name, device or "-")] += 1
        store = SQLiteStore(path / ".testrack" / "results.sqlite")
        runs = store.runs()
        self.stored: Counter[tuple[str, str]] = Counter()
        self.quarantines = []
        if runs:
            for result in store.results(runs[0].id):
                if result.outcome != "device_error":
                    self.stored[(result.nodeid.split("::")[-1], result.device)] += 1
            self.quarantines = store.quarantines(runs[0].id)
        self.run = runs[0] if runs else None
        store.close()


def run_session(pytester, sim, mode: str, *args: str, env: dict[str, str] | None = None) -> Run:
    """Write the suite and rack, run pytest in a subprocess (as users do), and read back.

    The fault strikes wherever test_faulty runs in load mode, and on board-2 in each mode.
    """
    sim.write_rack(pytester.path / "testrack.toml", mode=mode)
    pytester.path.joinpath("test_suite.py").write_text(_suite())
    full_env = {**os.environ, "FAULT_ON": "any" if mode == "load" else "board-2", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--junitxml=junit.xml", *args],
        cwd=pytester.path, env=full_env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    return Run(pytester.path, proc)


def expect_every_other_test(run: Run, devices: list[str], mode: str, fault_test: str = "test_faulty") -> int:
    """Every ordinary test reported exactly once per device it should run on, and stored."""
    others = [f"test_work_{i}" for i in range(WORK_TESTS)]
    if mode == "each":
        for name in others:
            for device in devices:
                assert run.reported[(name, device)] == 1, (name, device, run.out[-3000:])
    else:
        for name in others:
            count = sum(n for (t, _d), n in run.reported.items() if t == name)
            assert count == 1, (name, run.reported, run.out[-3000:])
    for key, count in run.reported.items():
        assert run.stored[key] >= count, f"{key} reported but not stored"
    return sum(run.reported.values())


def record(fault: str, mode: str, expected: int, run: Run, reported: int | None = None) -> None:
    """Append this scenario's counts for docs/reliability.md (``reported``: when not from JUnit)."""
    target = os.environ.get("TESTRACK_FAULT_REPORT")
    if not target:
        return
    with open(target, "a", encoding="utf-8") as out:
        out.write(json.dumps({
            "fault": fault, "mode": mode, "faults": 1, "expected": expected,
            "reported": sum(run.reported.values()) if reported is None else reported,
            "stored": sum(run.stored.values()),
            "exit": run.ret,
        }) + "\n")  # fmt: skip


MODES = ["load", "each"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "fault,how", [("kill", "killed by signal 9 (SIGKILL)"), ("exit", "exited with code 7")]
)
def test_worker_dies_mid_test(pytester, testrack_sim, mode, fault, how):
    """A worker killed (or calling os._exit) mid-test: that test fails naming device and how; the rest run."""
    sim = testrack_sim(3)
    run = run_session(pytester, sim, mode, env={"FAULT": fault})
    devices = ["board-1", "board-2", "board-3"]
    reported = expect_every_other_test(run, devices, mode)
    assert re.search(rf"worker gw\d on device board-\d {re.escape(how)} while running this test", run.out)
    if mode == "each":
        assert f"worker gw1 on device board-2 {how}" in run.out
        assert run.stored[("test_faulty", "board-2")] == 1
    assert "--rack-retry-crashed N allows N retries on other devices" in run.out
    assert run.ret == pytest.ExitCode.TESTS_FAILED
    expected = (WORK_TESTS + 1) * (3 if mode == "each" else 1)
    assert reported == expected
    record(f"worker {fault} mid-test", mode, expected, run)


@pytest.mark.parametrize("mode", MODES)
def test_crashed_test_retried_elsewhere(pytester, testrack_sim, mode):
    """--rack-retry-crashed 1: the crashing test reruns (load: on another device) and passes there."""
    sim = testrack_sim(3)
    run = run_session(pytester, sim, mode, "--rack-retry-crashed", "1", env={"FAULT": "exit-once"})
    expect_every_other_test(run, ["board-1", "board-2", "board-3"], mode)
    shown = r"test_faulty(@board-\d)?: worker exited with code 7 on board-\d; retried on "
    assert re.search(shown, run.out), run.out[-2000:]
    assert run.ret == 0, run.out[-2000:]
    crashed = [k for k in run.stored if k[0] == "test_faulty"]
    assert sum(run.stored[k] for k in crashed) == (2 if mode == "load" else 4)  # the crash and its retry
    if mode == "load":
        (reported_on,) = [d for (t, d) in run.reported if t == "test_faulty"]
        crash_device = re.search(r"code 7 on (board-\d)", run.out).group(1)  # type: ignore[union-attr]
        assert reported_on != crash_device, "the retry ran on the device that crashed"
    record(
        "worker exit mid-test, --rack-retry-crashed 1",
        mode,
        (WORK_TESTS + 1) * (3 if mode == "each" else 1),
        run,
    )


def test_each_mode_gives_every_devices_run_its_own_retries(pytester, testrack_sim):
    """Each mode runs a test once on every device, so each run has its own --rack-retry-crashed
    budget: a test crashing once on each of three boards was retried on the first only, and the
    run failed on the other two. Now each is retried, and the message names the run."""
    sim = testrack_sim(3)
    env = {"FAULT": "exit-once-each", "FAULT_ON": "any"}
    run = run_session(pytester, sim, "each", "--rack-retry-crashed", "1", env=env)
    assert run.ret == 0, run.out[-3000:]
    for name in ("board-1", "board-2", "board-3"):
        assert f"test_faulty@{name}: worker exited with code 7 on {name}; retried on {name}" in run.out, (
            run.out[-3000:]
        )
        assert run.stored[("test_faulty", name)] == 2  # the crash and its retry
        assert run.reported[("test_faulty", name)] == 1


@pytest.mark.parametrize("mode", MODES)
def test_hanging_test_times_out_and_the_rest_runs(pytester, testrack_sim, mode):
    """A test that hangs past --rack-timeout: reported as timed out with its stack; the rest runs."""
    sim = testrack_sim(3)
    run = run_session(pytester, sim, mode, "--rack-timeout", "3", env={"FAULT": "hang"})
    expect_every_other_test(run, ["board-1", "board-2", "board-3"], mode)
    assert re.search(
        r"worker gw\d on device board-\d timed out after 3 s \(the limit set by --rack-timeout\)", run.out
    )
    assert 'test_suite.py", line' in run.out and "in test_faulty" in run.out  # the stack points at the hang
    assert sum(n for (t, _d), n in run.stored.items() if t == "test_faulty") == (1 if mode == "load" else 3)
    record("test hangs (time limit)", mode, (WORK_TESTS + 1) * (3 if mode == "each" else 1), run)


@pytest.mark.parametrize("mode", MODES)
def test_device_stops_answering_mid_run(pytester, testrack_sim, mode):
    """A device that freezes mid-run: its test times out, its check fails, it is quarantined; work moves."""
    sim = testrack_sim(3)
    # board-2 freezes as soon as it has served its first request.
    freezer = _freeze_after(sim, "board-2", requests=1)
    run = run_session(pytester, sim, mode, "--rack-timeout", "3")
    freezer.join()
    assert [q.device for q in run.quarantines] == ["board-2"], run.out[-3000:]
    assert run.out.count("quarantined: does not answer at") == 1, "the reason is said once, in the summary"
    timed_out = [k for k in run.stored if k[1] == "board-2"]
    assert timed_out, "board-2 ran nothing before it froze"
    if mode == "load":
        # Everything but what board-2 was running when it froze ran elsewhere, once.
        names = [f"test_work_{i}" for i in range(WORK_TESTS)] + ["test_faulty"]
        for name in names:
            assert sum(n for (t, _d), n in run.reported.items() if t == name) == 1, (name, run.out[-3000:])
        expected = WORK_TESTS + 1
    else:
        for name in [f"test_work_{i}" for i in range(WORK_TESTS)] + ["test_faulty"]:
            for device in ("board-1", "board-3"):
                assert run.reported[(name, device)] == 1
        assert "board-2: FAILED - quarantined: does not answer" in run.out
        expected = (WORK_TESTS + 1) * 2 + len(timed_out)
    for key, count in run.reported.items():
        assert run.stored[key] >= count
    record("device stops answering mid-run", mode, expected, run)


def _freeze_after(sim, name: str, requests: int):
    import threading

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len(sim.log.records(device=name, op="work")) >= requests:
                sim.freeze(name)
                return
            time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("mode", MODES)
def test_device_failing_its_check_at_start_is_quarantined(pytester, testrack_sim, mode):
    """A device whose testrack_device_check raises is quarantined before any test; work moves."""
    sim = testrack_sim(3)
    pytester.makeconftest(
        """
        def testrack_device_check(device):
            if device.name == "board-3":
                raise RuntimeError("fan failure reported by the board")
        """
    )
    run = run_session(pytester, sim, mode)
    assert [q.device for q in run.quarantines] == ["board-3"]
    assert run.out.count("quarantined: RuntimeError: fan failure reported by the board") == 1, run.out[-2000:]
    assert not any(device == "board-3" for _t, device in run.reported), "a quarantined device ran a test"
    expect_every_other_test(run, ["board-1", "board-2"], mode)
    if mode == "each":
        assert "board-3: FAILED - quarantined: RuntimeError: fan failure" in run.out
        assert run.ret == pytest.ExitCode.TESTS_FAILED
    else:
        assert run.ret == 0
    record("device fails its check at start", mode, (WORK_TESTS + 1) * (2 if mode == "each" else 1), run)


def test_a_device_quarantined_while_its_worker_starts_loses_no_test(pytester, write_rack) -> None:
    """A check that fails at once (before the device's worker is up) stops that worker before it
    imports anything: the files go to the other worker, and every test runs there. (Its worker
    used to take a file after it was told to stop, and the run ended with no tests.)"""
    from conftest import boards

    write_rack(boards(2))
    pytester.makeconftest(
        """
        def testrack_device_check(device):
            if device.name == "board-2":
                raise RuntimeError("fan failure reported by the board")
        """
    )
    for k in range(3):
        body = "def test_a(device):\n    pass\n\ndef test_b(device):\n    pass\n"
        pytester.makepyfile(**{f"test_f{k}": body})
    for _ in range(4):  # a race: the check ends before or after the worker is up
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--rack-store", "memory")
        result.assert_outcomes(passed=6)
        assert "board-2: no tests (quarantined: RuntimeError: fan failure" in result.stdout.str()


def test_a_replaced_worker_leaves_no_resource_warning_for_a_strict_suite(pytester) -> None:
    """A suite with ``filterwarnings = error`` (click's, for one) fails on any unclosed file or
    socket the garbage collector finds. A crashed worker's socket, board and pipes are closed
    when it is reaped, not left for the collector: the run's verdict is the tests'."""
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    pytester.makepyfile(
        test_strict="""
        import os

        def test_crashes_once(tmp_path_factory):
            mark = tmp_path_factory.getbasetemp().parent.parent / "crashed"
            if not mark.exists():
                mark.write_text("once")
                os._exit(1)

        def test_other():
            pass
        """
    )
    result = pytester.runpytest_subprocess(
        "--rack", "local:2", "--rack-store", "memory", "--rack-retry-crashed", "1", "-p", "no:randomly"
    )
    assert "ResourceWarning" not in result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=2)
    assert result.ret == 0


def test_the_classic_recipe_that_pops_devices_survives_a_crashed_worker(pytester, write_rack) -> None:
    """The xdist recipe hands each worker a device in pytest_configure_node by popping a pool it
    never refills: the worker that replaces a crashed one finds it empty. The run goes on (xdist
    stops with an internal error), every result is reported, and the output says what happened."""
    from conftest import boards

    write_rack(boards(3))
    pytester.makeconftest(
        """
        import pytest

        def pytest_configure(config):
            if not hasattr(config, "workerinput"):
                config.device_pool = ["a", "b", "c"]

        @pytest.hookimpl(optionalhook=True)
        def pytest_configure_node(node):
            node.workerinput["pool_device"] = node.config.device_pool.pop()
        """
    )
    tests = "".join(f"def test_{i}(device):\n    pass\n\n" for i in range(6))
    crash = "def test_crash(device):\n    import os\n    if device.name == 'board-2':\n        os._exit(1)\n"
    pytester.makepyfile(test_pool=tests + crash)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--rack-store", "memory", "--rack-mode=each"
    )
    out = result.stdout.str()
    assert "INTERNALERROR" not in out
    result.assert_outcomes(passed=20, failed=1)  # 7 tests on 3 boards; the crash on board-2
    assert "pytest_configure_node failed for the worker that replaced" in out
    assert "IndexError: pop from empty list at conftest.py:" in out


@pytest.mark.parametrize("mode", MODES)
def test_swapped_identity_is_refused_with_the_trust_command(pytester, testrack_sim, mode):
    """A device whose identity changed since it was pinned is refused, naming both and the fix."""
    sim = testrack_sim(3)
    first = run_session(pytester, sim, mode)
    assert first.ret == 0 and not first.quarantines
    sim.set_serial("board-1", "SWAPPED-0001")
    run = run_session(pytester, sim, mode)
    assert [q.device for q in run.quarantines] == ["board-1"]
    assert "identity changed: pinned board-1-SIM" in run.out
    assert "now reports SWAPPED-0001" in run.out
    assert "accept the new identity with: testrack trust board-1" in run.out
    expect_every_other_test(run, ["board-2", "board-3"], mode)
    trust = subprocess.run(
        [sys.executable, "-m", "testrack", "trust", "board-1"],
        cwd=pytester.path,
        capture_output=True,
        text=True,
    )
    assert trust.returncode == 0, trust.stderr
    third = run_session(pytester, sim, mode)
    assert not third.quarantines and third.ret == 0
    record("swapped device identity", mode, (WORK_TESTS + 1) * (2 if mode == "each" else 1), run)


@pytest.mark.parametrize("mode", MODES)
def test_device_error_reruns_the_test_and_rechecks_the_device(pytester, testrack_sim, mode):
    """DeviceError from a fixture: the test reruns, the device is rechecked; no test failure."""
    sim = testrack_sim(3)
    pytester.makeconftest(
        """
        import os
        import pytest
        import testrack

        CHECKS = []

        def testrack_device_check(device):
            CHECKS.append(device.name)
            with open("checks.log", "a") as f:
                f.write(device.name + "\\n")

        @pytest.fixture(autouse=True)
        def flaky_console(request, device):
            # The first device to run test_work_0 loses its console, once (O_EXCL: in each
            # mode the three devices may get there at the same moment).
            if request.node.name == "test_work_0":
                try:
                    fd = os.open("raised", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
                except FileExistsError:
                    return
                os.write(fd, device.name.encode())
                os.close(fd)
                raise testrack.DeviceError("lost the serial console")
        """
    )
    run = run_session(pytester, sim, mode)
    assert run.ret == 0, run.out[-3000:]
    failed_on = pytester.path.joinpath("raised").read_text()
    run_id = f"test_work_0@{failed_on}" if mode == "each" else "test_work_0"  # each mode: the test on it
    assert f"{run_id}: DeviceError on {failed_on} (lost the serial console); retried" in run.out
    expect_every_other_test(run, ["board-1", "board-2", "board-3"], mode)
    if mode == "load":
        assert run.reported[("test_work_0", failed_on)] == 0, "retried on the device that failed"
    checks = pytester.path.joinpath("checks.log").read_text().split()
    assert checks.count(failed_on) == 2, checks  # before its first test, and after the error
    record("DeviceError raised by a fixture", mode, (WORK_TESTS + 1) * (3 if mode == "each" else 1), run)


@pytest.mark.parametrize("mode", MODES)
def test_ctrl_c_mid_run_stops_fast_and_keeps_every_result(pytester, testrack_sim, mode):
    """Ctrl-C mid-run: workers stop at once, the partial run is summarised, stored, exit code 2.

    The interrupt comes once results are on the screen (not after a fixed sleep, which on a
    busy machine may land before the run started), and the run must stop well before the
    work left would have ended.
    """
    sim = testrack_sim(3)
    sim.write_rack(pytester.path / "testrack.toml", mode=mode)
    pytester.path.joinpath("test_suite.py").write_text(
        "from testrack.sim import SimClient\n"
        + "".join(
            f"\ndef test_slow_{i}(device):\n    SimClient(device.address).work(1000)\n" for i in range(30)
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "--junitxml=junit.xml"],
        cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )  # fmt: skip
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if " PASSED " in line:
            break
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out = "".join(lines) + proc.communicate(timeout=60)[0]
    took = time.monotonic() - started
    # 29 tests of 1 s each were left on 3 devices (load) or on each device (each): 9 s or more.
    assert took < 6, f"the interrupted run took {took:.1f} s to stop"
    assert proc.returncode == pytest.ExitCode.INTERRUPTED
    assert re.search(
        r"KeyboardInterrupt: interrupted while running test_suite.py::test_slow_\d+ on board-\d", out
    ), out
    run = Run(pytester.path, subprocess.CompletedProcess([], proc.returncode, out, ""))
    assert run.run is not None and run.run.outcome == "interrupted"
    assert run.reported
    for key, count in run.reported.items():
        if key[1] == "-":
            # Ctrl-C during a test's teardown: junitxml keeps the call's case without properties,
            # as with plain pytest (CI saw this once on a busy machine); the store has it under
            # its device (test_ctrl_c_in_a_teardown_stores_the_test_as_it_was_shown).
            continue
        assert count == 1 and run.stored[key] == 1, key
    record("Ctrl-C mid-run", mode, sum(run.reported.values()), run)


def test_ctrl_c_in_a_teardown_stores_the_test_as_it_was_shown(pytester):
    """Ctrl-C while a test's teardown runs: pytest shows its call as passed and stops; the
    store holds it too, as passed, saying that its teardown did not end (it held nothing)."""
    pytester.makepyfile(
        test_td="""
        import time, pytest

        @pytest.fixture
        def slow_teardown():
            yield
            open("tearing", "w").close()
            time.sleep(60)

        def test_first():
            pass

        def test_hangs_in_teardown(slow_teardown):
            pass
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "--rack", "local:1"],
        cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )  # fmt: skip
    tearing = pytester.path / "tearing"
    deadline = time.monotonic() + 60
    while not tearing.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert tearing.exists(), "the teardown never started"
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    assert "PASSED test_td.py::test_hangs_in_teardown" in out, out
    store = SQLiteStore(pytester.path / ".testrack" / "results.sqlite")
    try:
        run = store.runs()[0]
        stored = {r.nodeid.split("::")[-1]: r for r in store.results(run.id)}
    finally:
        store.close()
    assert run.outcome == "interrupted"
    assert stored["test_first"].outcome == "passed" and stored["test_first"].message is None
    hung = stored["test_hangs_in_teardown"]
    assert hung.outcome == "passed", hung
    assert hung.message == "interrupted: its teardown did not end", hung


def _state(pid: int) -> str:
    """A process's state letter from /proc ("T": stopped), "gone" once it has exited."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return "gone"


def test_ctrl_z_stops_the_workers_with_the_controller(pytester):
    """Ctrl-Z (SIGTSTP to the controller): no test runs while the run is stopped; it ends as
    usual once continued. Workers are in sessions of their own, out of the terminal's reach."""
    pytester.makepyfile(
        test_z="""
        import os, time, pytest

        @pytest.mark.parametrize("i", range(30))
        def test_tick(i):
            with open("ticks", "a") as f:
                f.write(f"{os.getpid()}\\n")
            time.sleep(0.1)
        """
    )
    ticks = pytester.path / "ticks"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rack", "local:2"],
        cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while (not ticks.exists() or len(ticks.read_text().split()) < 3) and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTSTP)
        while _state(proc.pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _state(proc.pid) == "T", "the controller did not stop"
        time.sleep(0.5)  # a test that was writing its line has written it
        before = ticks.read_text()
        time.sleep(1.0)
        assert ticks.read_text() == before, "tests ran while the run was stopped"
        workers = set(before.split())
        assert workers and all(_state(int(pid)) == "T" for pid in workers), workers
    finally:
        proc.send_signal(signal.SIGCONT)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, out
    assert "30 passed" in out, out
    assert len(ticks.read_text().split()) == 30


def test_kill_9_of_the_controller_loses_nothing(pytester, testrack_sim):
    """kill -9 of the controller: all results it had shown are stored; its workers exit."""
    sim = testrack_sim(2)
    sim.write_rack(pytester.path / "testrack.toml")
    pytester.path.joinpath("test_suite.py").write_text(
        "import os\nfrom testrack.sim import SimClient\n"
        + "".join(
            f"\ndef test_k_{i}(device):\n    open(os.environ['PIDS'], 'a').write(f'{{os.getpid()}}\\n')\n"
            f"    SimClient(device.address).work(150)\n"
            for i in range(40)
        )
    )
    pids_file = pytester.path / "pids"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider"],
        cwd=pytester.path, stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, PIDS=str(pids_file), PYTHONUNBUFFERED="1"),
    )  # fmt: skip
    assert proc.stdout is not None
    shown = set()
    while len(shown) < 6:
        line = proc.stdout.readline()
        if " PASSED " in line and line.startswith("[board-"):
            shown.add((line.split(" PASSED ")[1].split()[0].split("::")[-1], line[1 : line.index("]")]))
    proc.kill()
    proc.wait()
    run = Run(pytester.path, subprocess.CompletedProcess([], -9, "", ""))
    assert run.run is not None and run.run.finished is None
    assert shown <= set(run.stored), shown - set(run.stored)
    pids = {int(p) for p in pids_file.read_text().split()}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.1)
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().split(")")[-1].split()[0] == "Z", "a worker outlived it"
    record("kill -9 of the controller", "load", len(shown), run, reported=len(shown))
