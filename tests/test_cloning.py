"""Workers cloned from the first one after it collected (testrack.cloning), with real processes.

pytest-rerunfailures (a test dependency here) is left out of these runs, as of most users';
tests/test_plugins.py checks that its workers are cloned too.
"""

from __future__ import annotations

import re

import pytest

from conftest import boards

NO_SOCKET_PLUGIN = ("-p", "no:rerunfailures")

#: Each test writes who ran it.
RECORDING = """
import os, pathlib, time
import pytest

OUT = pathlib.Path({out!r})

@pytest.mark.parametrize("n", range(12))
def test_who(n, worker_id, tmp_path):
    time.sleep(0.05)
    print(f"OUT-{{n}}-{{worker_id}}")
    with open(OUT / "runs.txt", "a") as f:
        env = os.environ
        f.write(f"{{n}} {{worker_id}} {{env['PYTEST_XDIST_WORKER']}} {{env['TESTRACK_WORKER']}} "
                f"{{os.getpid()}} {{tmp_path}}\\n")
    assert n != 5
"""


def _runs(out):
    return [line.split() for line in (out / "runs.txt").read_text().splitlines()]


@pytest.mark.parametrize(("collect", "stage"), [("all", "collection"), ("eager", "configuration")])
def test_workers_are_cloned_from_the_first_and_each_keeps_its_identity(pytester, tmp_path, collect, stage):
    """Load mode clones the first worker once it has imported every file (by default, where
    every worker imports every file) or once it has configured (``eager``); every copy runs
    tests as itself: its id in the fixture and the environment, its own process and temporary
    directory, and its own captured output in a failure's report."""
    out = tmp_path / "out"
    out.mkdir()
    pytester.makepyfile(test_who=RECORDING.format(out=str(out)))
    result = pytester.runpytest_subprocess(
        "--rack", "local:3", "--rack-store", "memory", "--rack-collect", collect, *NO_SOCKET_PLUGIN
    )
    result.assert_outcomes(passed=11, failed=1)
    result.stdout.fnmatch_lines([f"*collected 12 tests in 1 file on 3 workers (cloned after {stage})*"])
    runs = _runs(out)
    assert len(runs) == 12
    pids: dict[str, set[str]] = {}
    for n, fixture_id, env_id, testrack_id, pid, tmp in runs:
        assert fixture_id == env_id == testrack_id, (n, fixture_id, env_id, testrack_id)
        assert f"/{fixture_id}/" in tmp, tmp
        pids.setdefault(fixture_id, set()).add(pid)
    assert len(pids) == 3, pids  # every clone ran tests
    assert all(len(p) == 1 for p in pids.values())
    assert len(set.union(*pids.values())) == 3
    failure = result.stdout.str().split("test_who[5]")[1]
    worker = re.search(r"\[(gw\d)\] device", failure)
    assert worker is not None
    assert f"OUT-5-{worker.group(1)}" in failure
    assert not re.search(r"OUT-(?!5-)\d+-", failure.split("short test summary")[0])


def test_a_clone_ends_without_a_word_of_its_own_under_s(pytester):
    """With ``-s`` a clone's stderr reaches the terminal: each clone said, as it ended, that
    closing the template's connection failed ("Bad file descriptor"), the second close of a
    descriptor whose number another file may have had by then."""
    quick = "import pytest\n\n@pytest.mark.parametrize('n', range(6))\ndef test_q(n):\n    pass\n"
    pytester.makepyfile(test_q=quick)
    args = ("-s", "--rack", "local:3", "--rack-store", "memory", *NO_SOCKET_PLUGIN)
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*on 3 workers (cloned after collection)*"])
    said = result.stdout.str() + result.stderr.str()
    assert "Exception ignored" not in said and "Bad file descriptor" not in said, said


CRASH_ONCE = """
import os, pathlib, time
import pytest

FLAG = pathlib.Path({flag!r})

@pytest.mark.parametrize("n", range(9))
def test_maybe_crash(n, worker_id):
    time.sleep(0.05)
    if worker_id != "gw0" and not FLAG.exists():
        FLAG.write_text(worker_id)
        os._exit(3)
"""


def test_a_clone_that_crashes_is_reported_with_its_exit_code_and_its_test_runs_again(pytester, tmp_path):
    """The controller waits for a clone as for any worker it forked (it adopted it), so it
    tells how it ended; the test runs again elsewhere and no result is lost."""
    flag = tmp_path / "crashed"
    pytester.makepyfile(test_crash=CRASH_ONCE.format(flag=str(flag)))
    result = pytester.runpytest_subprocess(
        "--rack", "local:3", "--rack-store", "memory", "--rack-retry-crashed", "1", *NO_SOCKET_PLUGIN
    )
    assert flag.exists(), result.stdout.str()  # a clone (not the template) crashed
    result.assert_outcomes(passed=9)
    result.stdout.fnmatch_lines(["*cloned after collection*", "*exited with code 3*"])


HANGS = """
import time

def test_hangs(worker_id):
    time.sleep(60)

def test_quick_a():
    time.sleep(0.2)

def test_quick_b():
    time.sleep(0.2)
"""


def test_a_clone_over_its_time_limit_shows_its_own_stacks(pytester):
    """The stacks a timed-out clone dumps reach the controller through its own output pipe."""
    pytester.makepyfile(test_hang=HANGS)
    result = pytester.runpytest_subprocess(
        "--rack", "local:3", "--rack-store", "memory", "--rack-timeout", "1", *NO_SOCKET_PLUGIN
    )
    result.assert_outcomes(passed=2, failed=1)
    text = result.stdout.str()
    assert "cloned after collection" in text
    assert "timed out after 1 s" in text
    assert "test_hangs" in text.split("timed out after 1 s")[1]
    assert "time.sleep(60)" in text or "in test_hangs" in text


def test_each_mode_clones_after_collection_and_every_device_runs_every_test(pytester, write_rack, tmp_path):
    """Each mode imports every file in every worker: the template imports it once for all."""
    imports = tmp_path / "imports.txt"
    write_rack(boards(3))
    pytester.makepyfile(
        test_each=f"""
        import os

        with open({str(imports)!r}, "a") as f:
            f.write(f"{{os.getpid()}}\\n")

        def test_a(device):
            assert device.name

        def test_b(device, worker_id):
            assert device.name != "board-2"
        """
    )
    result = pytester.runpytest_subprocess("--rack-mode", "each", "--rack-store", "memory", *NO_SOCKET_PLUGIN)
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(["*cloned after collection*", "board-2: FAILED - 1 failed, 1 passed"])
    assert len(imports.read_text().split()) == 1  # not once per device


READS_ITS_ID = """
import os

WORKER = os.environ.get("PYTEST_XDIST_WORKER")

def pytest_sessionfinish(session):
    with open({out!r}, "a") as f:
        f.write(f"{{WORKER}}\\n")
"""


@pytest.mark.parametrize("reads", [True, False])
def test_a_configuration_that_reads_its_worker_or_ends_the_session_is_not_cloned(pytester, tmp_path, reads):
    """A conftest that reads which worker it is at import, or that does something at the
    session's end, gets a worker of its own in every slot, as without cloning."""
    out = tmp_path / "ends.txt"
    conftest = READS_ITS_ID.format(out=str(out))
    if not reads:
        conftest = conftest.replace('os.environ.get("PYTEST_XDIST_WORKER")', '"-"')
    pytester.makeconftest(conftest)
    pytester.makepyfile(
        test_x="""
        import pytest

        @pytest.mark.parametrize("n", range(6))
        def test_x(n):
            pass
        """
    )
    result = pytester.runpytest_subprocess("--rack", "local:3", "--rack-store", "memory", *NO_SOCKET_PLUGIN)
    result.assert_outcomes(passed=6)
    assert "cloned after" not in result.stdout.str()
    why = (
        "read PYTEST_XDIST_WORKER from the environment"
        if reads
        else "conftest.py implements pytest_sessionfinish"
    )
    result.stdout.fnmatch_lines(
        [f"*collected 6 tests in 1 file on 3 workers (not cloned: *{why}*"]
    )  # says why
    ends = sorted(out.read_text().split())  # the controller's session ends too ("None")
    assert ends == (["None", "gw0", "gw1", "gw2"] if reads else ["-"] * 4)


def test_a_session_end_marked_safe_is_cloned_and_runs_in_every_copy(pytester, tmp_path):
    """The "not cloned" words say how to mark a session-end hook that tears down nothing set up
    before the fork; marked, the workers are cloned and each copy runs it as its own."""
    out = tmp_path / "ends.txt"
    marked = READS_ITS_ID.format(out=str(out)).replace('os.environ.get("PYTEST_XDIST_WORKER")', '"-"')
    pytester.makeconftest(marked + "\npytest_sessionfinish.testrack_clone_safe = True\n")
    pytester.makepyfile(test_x="def test_x():\n    pass\n\ndef test_y():\n    pass\n")
    result = pytester.runpytest_subprocess("--rack", "local:3", "--rack-store", "memory", *NO_SOCKET_PLUGIN)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*on 3 workers (cloned after collection)*"])
    assert out.read_text().split() == ["-"] * 4  # every worker's session and the controller's
    out.unlink()
    pytester.makeconftest(marked)
    result = pytester.runpytest_subprocess("--rack", "local:3", "--rack-store", "memory", *NO_SOCKET_PLUGIN)
    result.stdout.fnmatch_lines(
        ["*(not cloned: *conftest.py implements pytest_sessionfinish, which every copy would run; if it "
         "tears down nothing set up while configuring or collecting, set "
         "pytest_sessionfinish.testrack_clone_safe = True)*"]
    )  # fmt: skip


def test_devices_with_different_env_are_not_cloned(pytester, write_rack):
    """A device's env may be read where no watch sees it (a C library at import): each such
    device's worker configures and imports with its own env."""
    devices = [
        d.__class__(d.name, d.kind, d.address, env={"BOARD_PORT": str(i)}) for i, d in enumerate(boards(2))
    ]
    write_rack(devices)
    pytester.makepyfile(
        test_env="""
        import os

        PORT = os.environ["BOARD_PORT"]

        def test_port(device):
            assert PORT == os.environ["BOARD_PORT"]
        """
    )
    result = pytester.runpytest_subprocess("--rack-mode", "each", "--rack-store", "memory", *NO_SOCKET_PLUGIN)
    result.assert_outcomes(passed=2)
    assert "cloned after" not in result.stdout.str()
    assert "(not cloned: the devices' env differ)" in result.stdout.str()


def test_testrack_start_fork_turns_cloning_off(pytester, monkeypatch):
    monkeypatch.setenv("TESTRACK_START", "fork")
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("--rack", "local:2", "--rack-store", "memory", *NO_SOCKET_PLUGIN)
    result.assert_outcomes(passed=1)
    assert "cloned after" not in result.stdout.str()


def test_an_unknown_testrack_start_is_a_usage_error_that_names_the_choices(pytester, monkeypatch):
    monkeypatch.setenv("TESTRACK_START", "frok")
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("--rack", "local:2", "--rack-store", "memory")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*TESTRACK_START='frok' is not a way testrack starts workers*clone, fork, spawn*"]
    )
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
