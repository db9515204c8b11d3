"""The plugins CI teams use, under testrack as under plain pytest (issue 14).

Every test runs the same small suite with plain pytest (``--rack off``, in one process)
and with ``--rack local:2``, with the real plugin installed from the package index as a
test dependency, and compares what the user sees.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET

import pytest

CALC = """
    def add(a, b):
        return a + b

    def sub(a, b):
        return a - b

    def mul(a, b):
        if a == 0:
            return 0
        return a * b

    def div(a, b):
        if b == 0:
            raise ZeroDivisionError("b")
        return a / b
"""

CALC_TESTS = {
    "test_calc_a": "import calc\n\ndef test_add():\n    assert calc.add(1, 2) == 3\n\n"
    "def test_sub():\n    assert calc.sub(3, 2) == 1\n",
    "test_calc_b": "import calc\n\ndef test_mul():\n    assert calc.mul(2, 3) == 6\n\n"
    "def test_div():\n    assert calc.div(6, 3) == 2\n",
}


def run(
    pytester: pytest.Pytester, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", *args],
        cwd=pytester.path,
        env=dict(os.environ, COLUMNS="200", **(env or {})),
        capture_output=True,
        text=True,
        timeout=300,
    )


def last_line(out: str) -> str:
    line = [x for x in out.splitlines() if x.strip()][-1]
    return re.sub(r" in [\d.]+s.*", "", line.strip("= "))


RACK = ("--rack", "local:2")


# -- pytest-cov ------------------------------------------------------------------------------------


TWO_BOARDS = """
[[devices]]
name = "board-1"
kind = "board"
address = "10.0.0.1"

[[devices]]
name = "board-2"
kind = "board"
address = "10.0.0.2"
"""


@pytest.mark.parametrize("mode", ["load", "each"])
def test_pytest_cov_combines_every_worker_into_plain_pytests_total(pytester, mode):
    pytester.makepyfile(calc=textwrap.dedent(CALC), **CALC_TESTS)
    pytester.path.joinpath("boards.toml").write_text(TWO_BOARDS)
    args = ["-q", "-p", "no:cacheprovider", "--cov=calc", "--cov-report=term-missing"]
    plain = run(pytester, *args, "--rack", "off")
    rack = run(pytester, *args, "--rack", "boards.toml", "--rack-mode", mode)
    assert rack.returncode == 0, rack.stdout + rack.stderr
    assert last_line(rack.stdout) == ("8 passed" if mode == "each" else "4 passed"), rack.stdout
    total = re.compile(r"^TOTAL\s+\d+\s+\d+\s+\d+%", re.M)
    assert total.search(plain.stdout), plain.stdout
    assert total.search(rack.stdout) and total.search(rack.stdout)[0] == total.search(plain.stdout)[0], (
        rack.stdout
    )
    assert rack.returncode == 0


def test_cloned_workers_each_bring_their_coverage_to_the_total(pytester):
    """The workers are clones of the first, which started measuring before the fork: each copy's
    coverage (of only the tests it ran) must reach the total, branches included."""
    funcs = "".join(f"def f{n}(x):\n    if x:\n        return {n}\n    return -{n}\n\n" for n in range(8))
    test = "import time, calc\n\ndef test_f(worker_id):\n    time.sleep(0.2)\n    print('RAN-BY', worker_id)"
    pytester.makepyfile(
        lib=funcs, **{f"test_f{n}": test + f"\n    assert calc.f{n}(1) == {n}\n" for n in range(8)}
    )
    pytester.path.joinpath("lib.py").rename(pytester.path / "calc.py")
    args = ["-s", "-p", "no:cacheprovider", "--cov=calc", "--cov-branch", "--cov-report=term-missing"]
    plain = run(pytester, *args, "--rack", "off")
    rack = run(pytester, *args, "--rack", "local:4")
    assert "(cloned after collection)" in rack.stdout, rack.stdout
    assert last_line(rack.stdout) == "8 passed", rack.stdout
    assert len(set(re.findall(r"RAN-BY (gw\d+)", rack.stdout))) > 1, rack.stdout
    row = re.compile(r"^calc\.py\s.*$", re.M)
    assert row.search(plain.stdout) and "4, 9, 14" in row.search(plain.stdout)[0], plain.stdout
    assert row.search(rack.stdout) and row.search(rack.stdout)[0] == row.search(plain.stdout)[0], rack.stdout
    assert sorted(p.name for p in pytester.path.glob(".coverage*")) == [".coverage"]


def test_coverage_run_is_refused_with_what_to_use(pytester):
    pytester.makepyfile(calc=textwrap.dedent(CALC), **CALC_TESTS)
    proc = subprocess.run(
        [sys.executable, "-m", "coverage", "run", "-m", "pytest", "-q", *RACK],
        cwd=pytester.path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR
    assert "coverage run measures this process only" in proc.stderr
    assert "pytest --cov=PACKAGE" in proc.stderr


def test_a_crashed_worker_says_its_coverage_is_missing(pytester):
    """pytest-cov alone blames the install ("ensure that pytest-cov is installed"); the run says
    what happened: the worker crashed, so the coverage of the tests it ran never came back."""
    crash = "import os\n\ndef test_crash():\n    os._exit(1)\n\ndef test_crash_again():\n    os._exit(1)\n"
    pytester.makepyfile(calc=textwrap.dedent(CALC), test_c=crash)
    rack = run(pytester, "-q", "-p", "no:cacheprovider", "--cov=calc", "--rack", "local:1")
    assert "2 failed" in last_line(rack.stdout), rack.stdout
    said = "gw0 (local) did not end cleanly, so what pytest-cov gathered in it never came back"
    assert rack.stdout.count(said) == 1, rack.stdout  # the worker and its replacement: once
    clean = run(pytester, "-q", "-p", "no:cacheprovider", "--cov=calc", "--rack", "local:1", "-k", "nothing")
    assert "did not end cleanly" not in clean.stdout


# -- pytest-randomly -------------------------------------------------------------------------------


def test_pytest_randomly_is_seeded_from_the_controller(pytester):
    """Merely installed it used to crash every worker (KeyError: 'randomly_seed'); now every
    worker gets the controller's seed (random.seed() is the same in each test as in plain pytest)."""
    pytester.makepyfile(
        test_r="import random\n\ndef test_draw():\n    print('draw', random.random())\n    assert 0\n"
    )
    args = ["-p", "randomly", "-p", "no:cacheprovider", "--randomly-seed=1234"]
    plain = run(pytester, *args, "--rack", "off")
    rack = run(pytester, *args, *RACK)
    assert "Using --randomly-seed=1234" in rack.stdout
    draw = re.compile(r"^draw (\S+)$", re.M)
    assert draw.findall(rack.stdout) == draw.findall(plain.stdout) != []


def test_one_rack_seed_repeats_the_order_and_what_random_draws(pytester):
    """--rack-seed N used to order the run while pytest-randomly reseeded random with a fresh seed
    each run; now N is randomly's seed too, unless --randomly-seed says otherwise (then the run
    names both)."""
    body = "import random\n\ndef test_d():\n    print('draw', random.random())\n"
    pytester.makepyfile(**{f"test_r{i}": body for i in range(4)})
    args = ["-s", "-p", "randomly", "-p", "no:cacheprovider", *RACK]
    draw = re.compile(r"draw (\S+)$", re.M)
    first, second = (run(pytester, *args, "--rack-seed", "7") for _ in range(2))
    assert "Using --randomly-seed=7" in first.stdout
    assert sorted(draw.findall(first.stdout)) == sorted(draw.findall(second.stdout)) != []
    other = run(pytester, *args, "--rack-seed", "8")
    assert sorted(draw.findall(other.stdout)) != sorted(draw.findall(first.stdout))
    both = run(pytester, *args, "--rack-seed", "7", "--randomly-seed=5")
    again = "pytest-randomly reseeds random with 5: pytest --rack-seed 7 --randomly-seed=5 runs it again"
    assert again in both.stdout, both.stdout


def test_without_xdist_loaded_randomly_is_refused_and_reruns_still_reported(pytester):
    """pytest-randomly hands its seed over only when pytest-xdist is loaded: with -p no:xdist every
    worker crashed (KeyError: 'randomly_seed'); now the run is refused with the fix. Reruns need
    xdist installed, not loaded (a testrack dependency): they are still reported."""
    pytester.makepyfile(test_f=textwrap.dedent(FLAKY))
    refused = run(pytester, "-q", "-p", "randomly", "-p", "no:xdist", *RACK)
    assert refused.returncode == pytest.ExitCode.USAGE_ERROR, refused.stdout + refused.stderr
    assert "pytest-xdist is not loaded" in refused.stderr and "-p no:randomly" in refused.stderr
    reruns = run(
        pytester,
        "-q",
        "-p",
        "no:xdist",
        "-p",
        "no:cacheprovider",
        "-p",
        "rerunfailures",
        "--reruns",
        "2",
        *RACK,
    )
    assert last_line(reruns.stdout) == "1 failed, 2 passed, 4 rerun", reruns.stdout


# -- pytest-benchmark ------------------------------------------------------------------------------


def test_pytest_benchmark_says_it_is_off_in_workers_and_refuses_what_needs_it(pytester):
    pytester.makepyfile(test_b="def test_speed(benchmark):\n    benchmark(lambda: sum(range(10)))\n")
    proc = run(pytester, "-q", "-p", "no:cacheprovider", *RACK)
    assert "1 passed, 1 warning" in last_line(proc.stdout)
    assert "Benchmarks are automatically disabled because xdist plugin is active" in proc.stdout
    refused = run(pytester, "-q", "--benchmark-only", *RACK)
    assert refused.returncode == pytest.ExitCode.USAGE_ERROR
    assert "--benchmark-only: pytest-benchmark turns itself off in worker processes" in refused.stderr
    assert "with --rack off" in refused.stderr


# -- pytest-rerunfailures --------------------------------------------------------------------------

FLAKY = """
    import os

    COUNT = {"n": 0}

    def test_flaky():
        COUNT["n"] += 1
        assert COUNT["n"] >= 3

    def test_broken():
        assert 0

    def test_fine():
        pass
"""


def test_rerun_reports_reach_the_summary_and_the_store(pytester):
    pytester.makepyfile(test_f=textwrap.dedent(FLAKY))
    args = ["-q", "-rR", "-p", "no:cacheprovider", "-p", "rerunfailures", "--reruns", "2"]
    plain = run(pytester, *args, "--rack", "off")
    rack = run(pytester, *args, *RACK)
    assert last_line(plain.stdout) == "1 failed, 2 passed, 4 rerun"
    assert last_line(rack.stdout) == last_line(plain.stdout), rack.stdout
    assert rack.stdout.count("RERUN test_f.py::") == plain.stdout.count("RERUN test_f.py::") == 4
    history = subprocess.run(
        [sys.executable, "-m", "testrack", "history", "test_f.py::test_flaky"],
        cwd=pytester.path, capture_output=True, text=True,
    )  # fmt: skip
    assert "3 results, 1 passed, 2 rerun" in history.stdout, history.stdout


CONNECTED = """
    import pathlib

    def test_where(request, worker_id):
        port = request.config.failures_db.sock.getsockname()[1]
        with open(pathlib.Path(__file__).parent / "ports.txt", "a") as f:
            f.write(f"{worker_id} {port}\\n")

    def test_broken():
        assert 0
"""


def test_workers_are_cloned_with_rerunfailures_each_with_its_own_connection(pytester):
    """pytest-rerunfailures keeps a connection in each worker to the controller's count of
    reruns (xdist installed): the workers are still cloned, each copy opens its own, and
    --max-suite-reruns caps the reruns of the whole run as in plain pytest."""
    for n in range(6):
        pytester.makepyfile(**{f"test_c{n}": textwrap.dedent(CONNECTED)})
    args = ["-p", "no:cacheprovider", "-p", "no:randomly", "-p", "rerunfailures", "--reruns", "2"]
    proc = run(pytester, *args, "--max-suite-reruns", "3", "--rack", "local:3")
    assert "(cloned after collection)" in proc.stdout, proc.stdout
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", last_line(proc.stdout))}
    assert counts.get("rerun") == 3 and counts.get("failed") == 6, proc.stdout  # the run's cap
    failed = re.findall(r"^FAILED (\S+)", proc.stdout, re.M)
    assert sorted(failed) == [f"test_c{n}.py::test_broken" for n in range(6)], proc.stdout
    # pytest-rerunfailures checks the budget at teardown and takes it after, in two steps: when
    # another worker takes the last rerun between them, the module is left set up and the next
    # test in another file errors ("previous item was not torn down properly"), as under xdist.
    assert counts.get("passed", 0) + counts.get("error", 0) == 6, proc.stdout
    ports = dict(line.split() for line in (pytester.path / "ports.txt").read_text().splitlines())
    assert len(ports) == 3 and len(set(ports.values())) == 3, ports  # one connection per worker


# -- pytest-timeout --------------------------------------------------------------------------------

HANGS = "import time\n\ndef test_hangs():\n    time.sleep(30)\n\ndef test_fine():\n    pass\n"


@pytest.mark.parametrize("method", ["signal", "thread"])
def test_pytest_timeout_stacks_reach_the_test_that_timed_out(pytester, method):
    """Both methods fail the hanging test with its stack, and the rest of the run goes on
    (plain pytest stops the whole session under the thread method)."""
    pytester.makepyfile(test_h=HANGS)
    # one slot: the test after the hanging one runs in the worker that replaced the killed one
    args = ["-q", "-p", "no:cacheprovider", "-p", "no:randomly", "--timeout", "1", "--timeout-method", method]
    proc = run(pytester, *args, "--rack", "local:1")
    assert last_line(proc.stdout) == "1 failed, 1 passed", proc.stdout
    assert re.search(r'test_h\.py(:4: Failed|", line 4, in test_hangs)', proc.stdout), proc.stdout
    assert "Timeout" in proc.stdout


# -- subtests, live logs, the log file, suite properties, warnings ----------------------------------


def test_subtests_show_their_real_parameters(pytester):
    pytester.makepyfile(
        test_s="def test_s(subtests):\n    for i in range(4):\n        with subtests.test(i=i):\n"
        "            assert i != 2\n"
    )
    args = ["-q", "-rA", "-p", "no:cacheprovider"]
    plain = run(pytester, *args, "--rack", "off")
    rack = run(pytester, *args, *RACK)
    assert "SUBFAILED(i=2) test_s.py::test_s - assert 2 != 2" in plain.stdout
    assert "SUBFAILED(i=2) test_s.py::test_s - assert 2 != 2" in rack.stdout, rack.stdout
    assert last_line(rack.stdout) == last_line(plain.stdout)


LOGS = """
    import logging

    log = logging.getLogger("app")

    def test_one():
        log.info("hello from one")

    def test_two():
        log.warning("careful in two")

    def test_three():
        log.info("three")
"""


def test_live_logs_show_as_in_plain_pytest(pytester):
    pytester.makepyfile(test_l=textwrap.dedent(LOGS))
    proc = run(pytester, "-p", "no:cacheprovider", "--log-cli-level=INFO", *RACK)
    out = proc.stdout
    assert out.count("live log call") == 3, out
    assert re.search(r"^INFO +app:test_l.py:\d+ hello from one$", out, re.M), out
    assert re.search(r"^WARNING +app:test_l.py:\d+ careful in two$", out, re.M), out


def test_the_log_file_is_written_once_and_complete(pytester):
    pytester.makepyfile(test_l=textwrap.dedent(LOGS))
    plain = pytester.path / "plain.log"
    rack = pytester.path / "rack.log"
    run(
        pytester,
        "-q",
        "-p",
        "no:cacheprovider",
        f"--log-file={plain}",
        "--log-file-level=INFO",
        "--rack",
        "off",
    )
    run(pytester, "-q", "-p", "no:cacheprovider", f"--log-file={rack}", "--log-file-level=INFO", *RACK)
    assert sorted(rack.read_text().splitlines()) == sorted(plain.read_text().splitlines())
    assert len(plain.read_text().splitlines()) == 3


def test_record_testsuite_property_reaches_the_junit_file(pytester):
    pytester.makepyfile(
        test_p="def test_a(record_testsuite_property):\n    record_testsuite_property('build', '42')\n\n"
        "def test_b(record_testsuite_property):\n    record_testsuite_property('arch', 'x86')\n"
    )
    run(pytester, "-q", "-p", "no:cacheprovider", "--junitxml=j.xml", *RACK)
    root = ET.parse(pytester.path / "j.xml").getroot()
    found = {(p.get("name"), p.get("value")) for p in root.iter("property")}
    assert {("build", "42"), ("arch", "x86")} <= found


WARNS = """
    import pytest

    @pytest.mark.slowish
    def test_a():
        pass

    def test_b():
        pass
"""


@pytest.mark.parametrize("extra", [[], ["-W", "error"]])
def test_collection_warnings_count_as_in_plain_pytest(pytester, extra):
    """Raised while workers collect: counted once each (not once per worker), and -W error turns
    them into the same collection errors."""
    pytester.makepyfile(
        test_w1=textwrap.dedent(WARNS), test_w2=textwrap.dedent(WARNS).replace("test_", "test_x")
    )
    plain = run(pytester, "-q", "-p", "no:cacheprovider", *extra, "--rack", "off")
    for mode in ("load", "each"):
        rack = run(pytester, "-q", "-p", "no:cacheprovider", *extra, *RACK, "--rack-mode", mode)
        assert last_line(rack.stdout) == last_line(plain.stdout), (mode, rack.stdout)


# -- ordering options ------------------------------------------------------------------------------

FAILS = "    assert not os.environ.get('FAIL')\n"
ORDERED = {
    "test_a": "import os\n\ndef test_a1():\n    pass\n\ndef test_a2():\n" + FAILS,
    "test_b": "import os\n\ndef test_b1():\n" + FAILS + "\ndef test_b2():\n    pass\n",
}


def _order(out: str) -> list[str]:
    """The passed tests in the order -v printed them (plain's or a rack run's line format)."""
    return [a or b for a, b in re.findall(r"(test_\w+\.py::\w+) PASSED|PASSED (test_\w+\.py::\w+)", out)]


def test_failed_first_and_last_failed_as_in_plain_pytest(pytester):
    pytester.makepyfile(**ORDERED)
    run(pytester, "-q", "--rack", "local:1", env={"FAIL": "1"})
    plain = run(pytester, "-v", "--ff", "--rack", "off")
    run(pytester, "-q", "--rack", "local:1", env={"FAIL": "1"})  # plain's passing run cleared them
    rack = run(pytester, "-v", "--ff", "--rack", "local:1")
    assert "run-last-failure: rerun previous 2 failures first" in rack.stdout
    expected = ["test_a.py::test_a2", "test_b.py::test_b1", "test_a.py::test_a1", "test_b.py::test_b2"]
    assert _order(plain.stdout) == expected, plain.stdout
    assert _order(rack.stdout) == expected, rack.stdout
    run(pytester, "-q", *RACK, env={"FAIL": "1"})
    plain_lf = run(pytester, "--lf", "--rack", "off", env={"FAIL": "1"})
    rack_lf = run(pytester, "--lf", *RACK, env={"FAIL": "1"})
    for out in (plain_lf.stdout, rack_lf.stdout):
        assert "run-last-failure: rerun previous 2 failures" in out
    assert last_line(rack_lf.stdout) == last_line(plain_lf.stdout) == "2 failed"


def test_new_first_puts_new_tests_first_and_remembers_them(pytester):
    pytester.makepyfile(**ORDERED)
    run(pytester, "-q", *RACK)
    pytester.makepyfile(test_c="def test_c1():\n    pass\n")
    for copy in ("plain", "two"):  # the same cache for each run: each run remembers what it saw
        shutil.copytree(pytester.path / ".pytest_cache", pytester.path / copy)
    plain = run(pytester, "-v", "--nf", "-o", "cache_dir=plain", "--rack", "off")
    first = run(pytester, "-v", "--nf", "--rack", "local:1")
    assert _order(first.stdout)[0] == "test_c.py::test_c1", first.stdout
    assert _order(first.stdout) == _order(plain.stdout), first.stdout + plain.stdout
    two = run(pytester, "-v", "--nf", "-o", "cache_dir=two", *RACK)
    firsts = {}  # the new test is the first its worker runs (workers print in any order)
    for worker, nodeid in re.findall(r"\[(gw\d+)\] \[ *\d+%\] PASSED (\S+)", two.stdout):
        firsts.setdefault(worker, nodeid)
    assert "test_c.py::test_c1" in firsts.values(), two.stdout
    cache = (pytester.path / ".pytest_cache" / "v" / "cache" / "nodeids").read_text()
    assert "test_c.py::test_c1" in cache
