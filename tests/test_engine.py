"""Acceptance tests: real pytest sessions, real worker processes."""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET

import pytest

from conftest import boards, by_device, results
from testrack.rack import Device

pytestmark = pytest.mark.usefixtures("write_rack")

SLEEPY_TESTS = """
    import time

    def test_a(device):
        time.sleep({s})

    def test_b(device):
        time.sleep({s})

    def test_c(device):
        time.sleep({s})
"""


@pytest.fixture(params=["fork", "spawn"])
def start_method(request, monkeypatch):
    """Workers forked from the controller or started as new processes (the other tests get
    the default: clones of the first worker, where the run allows them)."""
    monkeypatch.setenv("TESTRACK_START", request.param)
    return request.param


@pytest.mark.usefixtures("start_method")
def test_load_mode_spreads_tests_over_distinct_devices(pytester, write_rack):
    """Load mode: 3 slow tests on 3 devices run once each, on 3 different devices."""
    write_rack(boards(3))
    pytester.makepyfile(test_w1=SLEEPY_TESTS.format(s=0.4))
    result = pytester.runpytest_subprocess("-v", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    placed = by_device(result.outlines)
    assert sorted(placed) == ["board-1", "board-2", "board-3"], result.outlines
    assert all(len(tests) == 1 for tests in placed.values())
    result.stdout.fnmatch_lines(["*testrack: load mode over 3 devices*", "board-1: 1 passed"])


def test_each_mode_runs_every_test_on_every_device_and_shows_the_matrix(pytester, write_rack):
    """Each mode: 3 tests x 3 devices = 9 results; the matrix names the device that failed."""
    write_rack(boards(3))
    pytester.makepyfile(
        test_each="""
        def test_a(device):
            pass

        def test_b(device):
            assert device.name != "board-2", "board-2 is broken"

        def test_c(device):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-v", "--rack-mode=each", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=8, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    placed = by_device(result.outlines)
    assert {d: len(t) for d, t in placed.items()} == {"board-1": 3, "board-2": 3, "board-3": 3}
    result.stdout.fnmatch_lines(
        [
            "*testrack: each mode, results per device (3 devices)*",
            "test * board-1 * board-2 * board-3",
            "test_each.py::test_b * passed * failed * passed",
            "board-1: ok - 3 passed",
            "board-2: FAILED - 1 failed, 2 passed",
            "board-3: ok - 3 passed",
        ]
    )
    assert "test_each.py::test_a " not in result.stdout.str().split("results per device")[1]


def test_each_mode_passes_when_every_device_passes(pytester, write_rack):
    """Each mode with no failure exits 0 and says every device is ok."""
    write_rack(boards(2), mode="each")
    pytester.makepyfile(test_ok="def test_a(device):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["board-1: ok - 1 passed", "board-2: ok - 1 passed"])


def test_device_fixture_gives_the_typed_device_with_attrs(pytester, write_rack):
    """The device fixture is a testrack.Device with name, kind, address and attrs."""
    write_rack([Device("board-1", "board", "10.0.0.11", attrs={"revision": "C", "ram_mb": 512})])
    pytester.makepyfile(
        test_dev="""
        import testrack

        def test_device(device):
            assert isinstance(device, testrack.Device)
            assert (device.name, device.kind, device.address) == ("board-1", "board", "10.0.0.11")
            assert device.attrs == {"revision": "C", "ram_mb": 512}
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_routing_sends_marked_tests_only_to_matching_devices(pytester, write_rack):
    """@pytest.mark.device(kind=..., attr=...) routes a test to matching devices only."""
    write_rack(
        [
            Device("board-b", "board", "a1", attrs={"revision": "B"}),
            Device("board-c", "board", "a2", attrs={"revision": "C", "features": ["wifi", "bt"]}),
            Device("phone-1", "phone", "a3"),
        ]
    )
    pytester.makepyfile(
        test_route="""
        import pytest

        @pytest.mark.device(kind="phone")
        def test_phone(device):
            assert device.kind == "phone"

        @pytest.mark.device(kind="board", revision="C")
        def test_rev_c(device):
            assert device.name == "board-c"

        @pytest.mark.device(revision=["B", "C"])
        def test_any_board(device):
            assert device.kind == "board"

        @pytest.mark.device(features="wifi")
        def test_wifi(device):
            assert device.name == "board-c"

        @pytest.mark.device("phone")
        class TestPhone:
            def test_in_class(self, device):
                assert device.kind == "phone"
        """
    )
    result = pytester.runpytest_subprocess("-v", "--rack-mode=each", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)
    ran = {(d, n.split("::", 1)[1]) for d, _w, n in results(result.outlines)}
    assert ran == {
        ("phone-1", "test_phone"),
        ("board-c", "test_rev_c"),
        ("board-b", "test_any_board"),
        ("board-c", "test_any_board"),
        ("board-c", "test_wifi"),
        ("phone-1", "TestPhone::test_in_class"),
    }


def test_unmatched_requirement_is_an_error_naming_it_and_the_racks_kinds(pytester, write_rack):
    """A test no device can run errors with its requirement and the kinds the rack has."""
    write_rack(boards(2))
    pytester.makepyfile(
        test_gpu="""
        import pytest

        @pytest.mark.device(kind="gpu", mem_gb=16)
        def test_needs_gpu(device):
            pass

        def test_plain(device):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*no device in the rack can run this test: it needs kind='gpu', mem_gb=16, and the rack "
            "(*testrack.toml) has board (board-1, board-2)*",
        ]
    )


def test_bad_device_marker_is_an_error_with_the_fix(pytester, write_rack):
    """A device marker with unusable values is reported on that test, with the fix."""
    write_rack(boards(1))
    pytester.makepyfile(
        test_bad="""
        import pytest

        @pytest.mark.device(kind={"not": "scalar"})
        def test_bad(device):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*values must be strings, numbers or booleans*"])


@pytest.fixture
def out_env(pytester, monkeypatch):
    """A directory for the tests under test to write to; its path is in $OUT."""
    out = pytester.mkdir("out")
    monkeypatch.setenv("OUT", str(out))
    return out


def test_capacity_runs_that_many_tests_at_once_on_one_device(pytester, write_rack, out_env):
    """capacity = 2 gives a device two slots: two tests overlap in time on it."""
    write_rack([Device("gpu-box", "gpu", "10.0.0.5", capacity=2)])
    pytester.makepyfile(
        test_cap="""
        import os, time, json

        def _record(device, name):
            start = time.time()
            time.sleep(0.5)
            with open(os.path.join(os.environ["OUT"], name), "w") as f:
                json.dump([device.name, os.environ["PYTEST_XDIST_WORKER"], start, time.time()], f)

        def test_one(device):
            _record(device, "one")

        def test_two(device):
            _record(device, "two")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--rack-mode=each")
    result.assert_outcomes(passed=2)
    one = json.loads(out_env.joinpath("one").read_text())
    two = json.loads(out_env.joinpath("two").read_text())
    assert one[0] == two[0] == "gpu-box"
    assert one[1] != two[1], "two tests held the same slot"
    assert one[2] < two[3] and two[2] < one[3], "the two tests did not overlap"


@pytest.mark.usefixtures("start_method")
def test_device_env_is_set_before_test_code_is_imported(pytester, write_rack):
    """A device's env table is in the worker's environment at conftest import time."""
    write_rack(
        [
            Device("gpu-0", "gpu", "local", env={"CUDA_VISIBLE_DEVICES": "0"}),
            Device("gpu-1", "gpu", "local", env={"CUDA_VISIBLE_DEVICES": "1"}),
        ]
    )
    pytester.makeconftest(
        """
        import os
        VISIBLE_AT_IMPORT = os.environ.get("CUDA_VISIBLE_DEVICES")
        """
    )
    pytester.makepyfile(
        test_env="""
        import conftest

        def test_env(device):
            assert conftest.VISIBLE_AT_IMPORT == device.name[-1]
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--rack-mode=each")
    result.assert_outcomes(passed=2)


def test_classic_devices_json_is_accepted(pytester):
    """The classic recipe's devices.json (a list of addresses) works as a rack."""
    pytester.path.joinpath("devices.json").write_text(json.dumps(["10.0.0.1", "10.0.0.2"]))
    pytester.makepyfile(test_j="def test_a(device):\n    assert device.address == device.name\n")
    result = pytester.runpytest_subprocess(
        "--rack", "devices.json", "--rack-mode=each", "-v", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=2)
    assert sorted(by_device(result.outlines)) == ["10.0.0.1", "10.0.0.2"]


def test_exitfirst_stops_the_run_after_the_first_failure(pytester, write_rack):
    """-x: after the first failure no new test starts; pytest's stop message is shown."""
    write_rack(boards(1))
    pytester.makepyfile(
        test_x="def test_1(device):\n    assert 0\n"
        + "".join(f"\ndef test_{i}(device):\n    pass\n" for i in range(2, 30))
    )
    result = pytester.runpytest_subprocess("-x", "-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] == 1
    assert outcomes.get("passed", 0) < 5, outcomes
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*stopping after 1 failures*"])


def test_maxfail_counts_failures_across_workers(pytester, write_rack):
    """--maxfail=2 stops after two failures, even when they happen on different devices."""
    write_rack(boards(2))
    pytester.makepyfile(test_m="".join(f"\ndef test_{i}(device):\n    assert 0\n" for i in range(20)))
    result = pytester.runpytest_subprocess("--maxfail=2", "-p", "no:cacheprovider")
    assert 2 <= result.parseoutcomes()["failed"] < 8
    result.stdout.fnmatch_lines(["*stopping after 2 failures*"])


def test_keyword_and_marker_selection_deselect_as_in_pytest(pytester, write_rack):
    """-k and -m deselect in the workers; the summary counts deselected tests once."""
    write_rack(boards(2), mode="each")
    pytester.makepyfile(
        test_k="""
        import pytest

        def test_alpha(device):
            pass

        def test_beta(device):
            pass

        @pytest.mark.slow
        def test_gamma(device):
            pass
        """
    )
    result = pytester.runpytest_subprocess(
        "-k",
        "not beta",
        "-m",
        "not slow",
        "-p",
        "no:cacheprovider",
        "-W",
        "ignore::pytest.PytestUnknownMarkWarning",
    )
    result.assert_outcomes(passed=2, deselected=2)


def test_junitxml_has_every_result_with_its_device(pytester, write_rack):
    """--junitxml: each mode's 6 results, named and grouped by device, each with a device property."""
    write_rack(boards(3))
    pytester.makepyfile(test_j="def test_a(device):\n    pass\n\ndef test_b(device):\n    assert 0\n")
    result = pytester.runpytest_subprocess("--rack-mode=each", "--junitxml=out.xml", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=3)
    output = result.stdout.str() + result.stderr.str()
    assert "internal error" not in output and "plugin is not registered" not in output, output
    root = ET.parse(pytester.path / "out.xml").getroot()
    assert root.get("tests") == "6" and root.get("failures") == "3"
    placed = sorted(
        (suite.get("hostname"), case.get("name"), prop.get("value"))
        for suite in root.iter("testsuite")
        for case in suite.iter("testcase")
        for prop in case.iter("property")
        if prop.get("name") == "device"
    )
    assert placed == sorted(
        (f"board-{i}", f"{t}@board-{i}", f"board-{i}") for t in ("test_a", "test_b") for i in (1, 2, 3)
    )


XDIST_CONTRACT = """
    import os

    def test_contract(request, worker_id, device):
        workerinput = request.config.workerinput
        assert worker_id == workerinput["workerid"] == os.environ["PYTEST_XDIST_WORKER"]
        assert worker_id in ("gw0", "gw1", "gw2")
        assert os.environ["PYTEST_XDIST_WORKER_COUNT"] == "3"
        assert workerinput["workercount"] == 3
        assert workerinput["device"]["name"] == device.name
        assert os.environ["TESTRACK_DEVICE"] == device.name
        assert os.environ["PYTEST_XDIST_TESTRUNUID"] == workerinput["testrunuid"]
"""


@pytest.mark.usefixtures("start_method")
@pytest.mark.parametrize("xdist", ["with xdist", "without xdist"])
def test_xdist_worker_environment_contract(pytester, write_rack, xdist):
    """worker_id, PYTEST_XDIST_WORKER(_COUNT) and config.workerinput look like xdist's."""
    write_rack([Device("a", "k", "x", capacity=2), Device("b", "k", "y")], mode="each")
    pytester.makepyfile(test_x=XDIST_CONTRACT + "\n" + XDIST_CONTRACT.replace("test_contract", "test_again"))
    extra = ["-p", "no:xdist"] if xdist == "without xdist" else []
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *extra)
    result.assert_outcomes(passed=4)
    assert "warning" not in result.stdout.lines[-1]


NODE_HOOKS = """
import json, os, time

def record(event, node, **more):
    with open(os.environ["NODE_LOG"], "a") as log:
        log.write(json.dumps({"event": event, "id": node.gateway.id, **more}) + "\\n")

def pytest_configure_node(node):
    record("configure", node)

def pytest_testnodeready(node):
    record("ready", node)

def pytest_testnodedown(node, error):
    record("down", node, error=error, output=node.workeroutput.get("pid"))

def pytest_configure(config):
    if hasattr(config, "workeroutput"):
        config.workeroutput["pid"] = os.getpid()

def pytest_sessionfinish(session):
    if not hasattr(session.config, "workerinput"):  # the controller: what did its loop cost?
        with open(os.environ["CONTROLLER_CPU"], "w") as out:
            out.write(str(time.process_time()))
"""


@pytest.mark.parametrize("mode", ["load", "each"])
def test_every_worker_node_comes_up_and_goes_down_once_with_its_output(pytester, mode, tmp_path):
    """xdist's node hooks, as pytest-cov and friends rely on them: each worker is configured,
    ready and down exactly once, down cleanly with its ``workeroutput`` -- the worker that
    finished early too, while the other still ran."""
    log, cpu = tmp_path / "nodes.jsonl", tmp_path / "cpu"
    pytester.makeconftest(NODE_HOOKS)
    pytester.makepyfile(
        test_quick="def test_quick():\n    pass\n",
        test_slow="import time\n\ndef test_slow():\n    time.sleep(0.5)\n",
    )
    env = {"NODE_LOG": str(log), "CONTROLLER_CPU": str(cpu)}
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        result = pytester.runpytest_subprocess(
            "--rack", "local:2", "--rack-mode", mode, "-p", "no:cacheprovider"
        )
    result.assert_outcomes(passed=2)  # local:2 is one device with two slots: each runs once too
    events = [json.loads(line) for line in log.read_text().splitlines()]
    for event in ("configure", "ready", "down"):
        assert sorted(e["id"] for e in events if e["event"] == event) == ["gw0", "gw1"], events
    for down in (e for e in events if e["event"] == "down"):
        assert down["error"] is None and isinstance(down["output"], int), down


def test_a_worker_that_finished_early_costs_the_controller_nothing_while_others_run(pytester, tmp_path):
    """One worker is done at once, the other sleeps for 4 s: the controller, which only waits,
    must not spin on the finished worker's closed connection meanwhile (it once did, at 100 %
    of a core). Its whole CPU time, start-up included, stays far below the 4 s."""
    cpu = tmp_path / "cpu"
    pytester.makeconftest(NODE_HOOKS)
    pytester.makepyfile(
        test_quick="def test_quick():\n    pass\n",
        test_slow="import time\n\ndef test_slow():\n    time.sleep(4)\n",
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NODE_LOG", str(tmp_path / "nodes.jsonl"))
        mp.setenv("CONTROLLER_CPU", str(cpu))
        result = pytester.runpytest_subprocess("--rack", "local:2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    # Spinning costs at least a share of a core for the whole 4 s, even with both cores busy.
    assert float(cpu.read_text()) < 2.0


def test_xdist_numprocesses_with_rack_is_a_usage_error(pytester, write_rack):
    """--rack with xdist's -n is refused with a message naming both and the fix."""
    write_rack(boards(2))
    pytester.makepyfile(test_n="def test_a():\n    pass\n")
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*testrack and pytest-xdist's -n/--dist both run tests in parallel; use one*"]
    )
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_local_slots_work_as_a_drop_in_parallel_runner(pytester):
    """--rack local:2 runs a plain suite (no device fixture) on two local workers."""
    pytester.makepyfile(
        test_plain="".join(
            f"\ndef test_{i}(worker_id):\n    assert worker_id in ('gw0', 'gw1')\n" for i in range(10)
        )
    )
    result = pytester.runpytest_subprocess("--rack", "local:2", "-v", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=10)
    assert set(by_device(result.outlines)) <= {"gw0", "gw1"}


@pytest.mark.parametrize("collect", ["all", "eager"])
def test_with_more_slots_than_files_every_slot_runs_tests(pytester, out_env, collect):
    """16 slots, 10 files that take a moment to import: every slot gets a file to run, however
    many files the first workers up collected (with eager, 11 of 16 slots ran nothing before)."""
    for k in range(10):
        pytester.makepyfile(
            **{
                f"test_f{k}": """
                import os, time, pytest
                time.sleep(0.02)

                @pytest.mark.parametrize("i", range(60))
                def test_t(i, worker_id, request):
                    time.sleep(0.05)
                    open(os.path.join(os.environ["OUT"], worker_id), "a").close()
                """
            }
        )
    result = pytester.runpytest_subprocess(
        "--rack", "local:16", "--rack-collect", collect, "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=600)
    assert sorted(p.name for p in out_env.iterdir()) == sorted(f"gw{i}" for i in range(16))


@pytest.mark.usefixtures("start_method")
def test_uncloned_workers_import_every_file_and_make_only_the_tests_they_run(pytester, out_env):
    """Where workers are not clones, each imports every file first, as plain pytest does, but
    makes the tests of a file only when it runs one: before, each of 4 workers made all 240
    tests (at 64 slots and 20,000 tests, 56 s instead of 17 s)."""
    for k in range(12):
        pytester.makepyfile(
            **{
                f"test_f{k}": """
                import os, time, pytest
                with open(os.path.join(os.environ["OUT"], "log"), "a") as log:
                    log.write(f"{os.getpid()} import {__name__}\\n")

                @pytest.mark.parametrize("i", range(20))
                def test_t(i):
                    time.sleep(0.005)
                    with open(os.path.join(os.environ["OUT"], "log"), "a") as log:
                        log.write(f"{os.getpid()} run {__name__}\\n")
                """
            }
        )
    pytester.makeconftest("""
        import os

        def pytest_itemcollected(item):
            with open(os.path.join(os.environ["OUT"], "log"), "a") as log:
                log.write(f"{os.getpid()} make {item.module.__name__}\\n")
        """)
    result = pytester.runpytest_subprocess("--rack", "local:4", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=240)

    events: dict[str, list[tuple[str, str]]] = {}  # by worker, in its order
    for line in (out_env / "log").read_text().splitlines():
        pid, what, module = line.split()
        events.setdefault(pid, []).append((what, module))
    workers = {pid: seen for pid, seen in events.items() if any(what == "run" for what, _ in seen)}
    assert len(workers) == 4
    made = 0
    for seen in workers.values():
        first_run = next(i for i, (what, _) in enumerate(seen) if what == "run")
        imported = [module for what, module in seen[:first_run] if what == "import"]
        assert sorted(imported) == sorted(f"test_f{k}" for k in range(12))  # all, once, before
        ran = {module for what, module in seen if what == "run"}
        made_first = {module for what, module in seen[:first_run] if what == "make"}
        made_later = {module for what, module in seen[first_run:] if what == "make"}
        assert made_later <= ran  # a file's tests are made where one of them runs
        assert ran <= made_first | made_later
        made += len(made_first | made_later)
    assert made < 4 * 12  # before, every worker made every file's tests


@pytest.mark.usefixtures("start_method")
def test_worker_dying_mid_test_is_reported_and_the_rest_still_run(pytester, write_rack):
    """A test that kills its worker fails naming the device and how; every other test runs."""
    write_rack(boards(2))
    pytester.makepyfile(
        test_crash=textwrap.dedent("""
        import os, signal

        def test_exit(device):
            os._exit(3)

        def test_kill(device):
            os.kill(os.getpid(), signal.SIGKILL)
        """)
        + "".join(f"\ndef test_ok_{i}(device):\n    pass\n" for i in range(10))
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(passed=10, failed=2)
    result.stdout.fnmatch_lines_random(
        [
            "*worker gw? on device board-? exited with code 3 while running this test*",
            "*worker gw? on device board-? killed by signal 9 (SIGKILL) while running this test*",
        ]
    )


def test_worker_dying_in_each_mode_keeps_that_devices_other_tests(pytester, write_rack):
    """Each mode: a crash on one device is reported there; that device still runs the rest."""
    write_rack(boards(3), mode="each")
    pytester.makepyfile(
        test_w5=textwrap.dedent("""
        import os

        def test_crash(device):
            if device.name == "board-2":
                os._exit(1)
        """)
        + "".join(f"\ndef test_{i:02d}(device):\n    pass\n" for i in range(9))
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v", timeout=60)
    result.assert_outcomes(passed=29, failed=1)
    assert len(by_device(result.outlines)["board-2"]) == 10
    result.stdout.fnmatch_lines(["test_w5.py::test_crash * passed * crashed * passed"])


def test_collection_error_interrupts_like_pytest(pytester, write_rack):
    """A module that fails to import stops the run before tests start, as in plain pytest."""
    write_rack(boards(2))
    pytester.makepyfile(test_ok="def test_a():\n    pass\n", test_broken="import nonexistent_module_xyz\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        ["*ERROR collecting test_broken.py*", "*Interrupted: 1 error during collection*"]
    )
    result.assert_outcomes(errors=1)


def test_module_level_skip_and_xfail_are_counted(pytester, write_rack):
    """Skipped modules, skips and xfails give the same counts as plain pytest."""
    write_rack(boards(2))
    pytester.makepyfile(
        test_skipmod="import pytest\npytest.skip('not here', allow_module_level=True)\n",
        test_misc="""
        import pytest

        def test_skip():
            pytest.skip("nope")

        @pytest.mark.xfail(reason="known")
        def test_xfail():
            assert 0

        def test_pass():
            pass
        """,
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=2, xfailed=1)


def test_last_failed_reruns_only_the_failures(pytester, write_rack):
    """--lf after a rack run reruns only what failed, on the rack."""
    write_rack(boards(2))
    pytester.makepyfile(
        test_a="def test_ok():\n    pass\n\ndef test_bad():\n    assert 0\n",
        test_b="def test_ok2():\n    pass\n",
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=2, failed=1)
    result = pytester.runpytest_subprocess("--lf")
    result.assert_outcomes(failed=1)  # plain pytest gives the same: the passing test is not collected


def test_warnings_from_workers_reach_the_summary(pytester, write_rack):
    """A warning raised in a worker shows in the controller's warnings summary."""
    write_rack(boards(1))
    pytester.makepyfile(
        test_w="""
        import warnings

        def test_warns():
            warnings.warn("mind the gap", UserWarning)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*UserWarning: mind the gap*"])


def test_no_capture_output_is_shown_with_the_device(pytester, write_rack):
    """With -s, what a test prints reaches the terminal, prefixed with its worker."""
    write_rack(boards(1))
    pytester.makepyfile(test_s="def test_p():\n    print('hello from the device')\n")
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["[[]board-1[]] hello from the device"])


def test_selecting_a_single_test_by_node_id(pytester, write_rack):
    """file::test arguments select just that test, without importing in the controller."""
    write_rack(boards(2))
    pytester.makepyfile(
        test_sel="def test_a():\n    pass\n\ndef test_b():\n    pass\n\ndef test_bb():\n    pass\n"
    )
    result = pytester.runpytest_subprocess("test_sel.py::test_b", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_controller_never_imports_test_modules(pytester, write_rack, out_env):
    """Test modules are imported only in workers (the controller's pid never imports one)."""
    write_rack(boards(2))
    pytester.makepyfile(
        test_imp="""
        import os
        with open(os.environ["OUT"] + "/imports", "a") as f:
            f.write(os.environ.get("PYTEST_XDIST_WORKER", "controller") + "\\n")

        def test_a():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    importers = out_env.joinpath("imports").read_text().split()
    assert "controller" not in importers and importers


def test_no_tests_collected_exit_code(pytester, write_rack):
    """A rack run that finds no tests exits with pytest's NO_TESTS_COLLECTED."""
    write_rack(boards(1))
    pytester.makepyfile(test_none="x = 1\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED


SIM_TESTS = """
    from testrack.sim import SimClient

    def test_a(device):
        SimClient(device.address).work(300)

    def test_b(device):
        SimClient(device.address).work(300)

    def test_c(device):
        SimClient(device.address).work(300)
"""


@pytest.mark.parametrize("mode", ["load", "each"])
def test_tests_drive_their_own_simulated_device(pytester, testrack_sim, mode):
    """On a simulated rack, each test talks to the device it was given, never to a busy one."""
    sim = testrack_sim(3)
    sim.write_rack(pytester.path / "testrack.toml", mode=mode)
    pytester.makepyfile(test_sim_rack=SIM_TESTS)
    result = pytester.runpytest_subprocess("-v", "-p", "no:cacheprovider")
    runs = 3 if mode == "load" else 9
    result.assert_outcomes(passed=runs)
    work = sim.log.records(op="work")
    assert len(work) == runs
    assert all(r.waited_ms < 50 for r in work), "two tests shared a device"
    served = sorted((r.device, r.test.rsplit("::", 1)[1]) for r in work if r.test)
    reported = sorted((d, n.rsplit("::", 1)[1]) for d, _w, n in results(result.outlines))
    assert served == reported, "a test talked to another device than the one it was reported on"
    if mode == "load":
        assert len({r.device for r in work}) == 3


def test_a_worker_done_with_its_files_restarts_to_share_a_big_one_left_to_another(pytester):
    """Every file is imported before the first test, by as few workers as its estimated share
    needs: here each by one. The worker whose files were quick does not stand idle while the
    other works through the slow one alone: a fresh worker in its slot imports that file and
    takes half of what is left."""
    quick = (
        "import time, pytest\ntime.sleep(0.05)\n\n"
        "@pytest.mark.parametrize('i', range(40))\ndef test_t(i):\n    pass\n"
    )
    pytester.makepyfile(**{f"test_{k}": quick for k in range(5)})
    pytester.makepyfile(
        test_slow="import time, pytest\ntime.sleep(0.05)\n\n"
        "@pytest.mark.parametrize('i', range(80))\ndef test_t(i):\n    time.sleep(0.08)\n"
    )
    # The history says how long the tests take (a guess never pays for a worker's start).
    pytester.runpytest_subprocess("--rack", "local:2", "-p", "no:cacheprovider").assert_outcomes(passed=280)
    result = pytester.runpytest_subprocess("--rack", "local:2", "-v", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=280)
    slow = [device for device, _word, nodeid in results(result.outlines) if nodeid.startswith("test_slow.py")]
    assert len(slow) == 80 and set(slow) == {"gw0", "gw1"}, sorted(set(slow))
