"""Trust the verdict: what a new user hit, locked in (issue 7).

Each test runs real pytest sessions (subprocesses, real workers) and compares
with what plain pytest does on the same suite, where plain pytest is the reference.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from conftest import boards


def run(pytester: pytest.Pytester, *args: str, env: dict[str, str] | None = None, timeout: float = 300):
    """pytest in a subprocess, as users run it, without the cache plugin unless asked."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", *args],
        cwd=pytester.path,
        env=dict(os.environ, **(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def outcome_line(out: str) -> str:
    """pytest's last line: ``== 1 failed, 2 passed in 0.1s ==`` (without the ``=`` under -q)."""
    return [line for line in out.splitlines() if line.strip()][-1]


# -- 1. no message of any size blocks the run ------------------------------------------------------


@pytest.mark.parametrize("mode", ["load", "each"])
def test_files_of_20000_parametrized_cases_run_to_the_end(pytester, mode):
    """Collecting and assigning 20,000 cases sends messages far larger than a socket buffer both
    ways at once; the run ends with every result (a controller and a worker each blocked in a
    send used to hang forever)."""
    pytester.makepyfile(
        test_big="import pytest\n\n@pytest.mark.parametrize('i', range(20000))\ndef test_p(i):\n    pass\n"
    )
    proc = run(pytester, "-q", "-p", "no:cacheprovider", "--rack", "local:2", "--rack-mode", mode)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "20000 passed" in outcome_line(proc.stdout)


@pytest.mark.parametrize("mode", ["load", "each"])
def test_tiny_socket_buffers_only_cut_messages_into_pieces(pytester, mode):
    """With 4 KiB socket buffers every message of a few hundred tests is written in pieces, in both
    directions, while the other side writes too: nothing blocks and nothing is lost."""
    pytester.makepyfile(
        **{
            f"test_m{k}": "import pytest\n\n@pytest.mark.parametrize('i', range(400))\n"
            f"def test_p{k}(i):\n    pass\n"
            for k in range(4)
        }
    )
    write = pytester.path / "testrack.toml"
    write.write_text(
        "".join(f'[[devices]]\nname = "d{i}"\nkind = "k"\naddress = "x"\ncapacity = 2\n\n' for i in range(2))
    )
    proc = run(
        pytester, "-q", "-p", "no:cacheprovider", "--rack-mode", mode, env={"TESTRACK_SOCKET_BUFFER": "4096"}
    )
    expected = 1600 if mode == "load" else 3200
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"{expected} passed" in outcome_line(proc.stdout)


# -- 2. every file a worker runs is imported before its first test --------------------------------

POLLUTER = """
    import sys

    class TestWithoutSsl:
        @classmethod
        def setup_class(cls):
            sys.modules.pop("ssl", None)  # simulate a Python without ssl, and never put it back

        def test_no_ssl(self):
            assert "ssl" not in sys.modules
"""

USES_SSL = """
    import ssl

    def test_context_{k}():
        context = ssl.create_default_context()
        import sys
        assert isinstance(context, sys.modules.get("ssl", ssl).SSLContext)
"""


def _ssl_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a_polluter=textwrap.dedent(POLLUTER))
    for k in range(6):
        pytester.makepyfile(**{f"test_b_ssl_{k}": textwrap.dedent(USES_SSL).replace("{k}", str(k))})


def test_a_test_that_unloads_a_module_changes_nothing_imported_later(pytester):
    """Plain pytest imports every file before the first test; so does testrack by default, so a
    class that pops ``ssl`` from sys.modules does not make later files bind a second ssl."""
    _ssl_suite(pytester)
    plain = run(pytester, "-q", "-p", "no:cacheprovider", "--rack", "off")
    assert "7 passed" in outcome_line(plain.stdout), plain.stdout
    for _ in range(3):
        rack = run(pytester, "-q", "-p", "no:cacheprovider", "--rack", "local:2", "--rack-store", "off")
        assert "7 passed" in outcome_line(rack.stdout), rack.stdout


IMPORTS_A_SUBMODULE = """
    import pkg.sub

    def test_a():
        pass
"""

USES_THE_SUBMODULE = """
    import time, pkg

    def test_uses_{k}():
        time.sleep(0.2)
        assert pkg.sub.VALUE == 1  # bound by test_a's import, as plain pytest imports every file first
"""


@pytest.mark.parametrize("start", ["clone", "fork"])
def test_a_test_relying_on_another_files_import_passes_as_in_plain_pytest(pytester, start):
    """click's suite does this: a test reads a submodule as an attribute of its package, which
    only some other test file imported. By default every worker imports every file first, as
    plain pytest does, so it passes on every slot; ``eager`` says what it risks. Workers that
    are not clones import every file too (they make a file's tests only where one runs)."""
    pkg = pytester.mkpydir("pkg")
    pkg.joinpath("sub.py").write_text("VALUE = 1\n")
    pytester.makepyfile(test_a=textwrap.dedent(IMPORTS_A_SUBMODULE))
    for k in range(12):  # 12 files on 6 slots: before, 8-10 of them failed
        pytester.makepyfile(**{f"test_b{k}": textwrap.dedent(USES_THE_SUBMODULE).replace("{k}", str(k))})
    plain = run(pytester, "-q", "-p", "no:cacheprovider", "--rack", "off")
    assert "13 passed" in outcome_line(plain.stdout), plain.stdout
    six = ("-p", "no:cacheprovider", "--rack", "local:6", "--rack-store", "off")
    rack = run(pytester, "-q", *six, env={"TESTRACK_START": start})
    assert "13 passed" in outcome_line(rack.stdout), rack.stdout
    eager = run(pytester, *six, "--rack-collect", "eager")
    assert "--rack-collect eager: a worker imports only the test files it will run" in eager.stdout


def test_lazy_collection_says_what_it_risks(pytester):
    """--rack-collect lazy keeps importing on demand, and the header says what that can change."""
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    proc = run(pytester, "-p", "no:cacheprovider", "--rack", "local:2", "--rack-collect", "lazy")
    assert proc.returncode == 0
    assert (
        "--rack-collect lazy: a worker imports a test file when it first gets one of its tests" in proc.stdout
    )


# -- 3. fixtures live as long as in plain pytest ------------------------------------------------------

LIFETIMES = """
    import os, pytest

    def note(what):
        with open(os.environ["LOG"], "a") as f:
            f.write(f"{os.getpid()} {what}\\n")

    @pytest.fixture(scope="session")
    def session_thing():
        note("session")
        yield
        note("session-end")

    @pytest.fixture(scope="module")
    def module_thing(request):
        note(f"module {request.module.__name__}")
        yield
"""


def test_session_and_module_fixtures_are_set_up_once_per_worker(pytester):
    """In any worker, a session fixture is set up once and torn down at the end, and a module
    fixture once per module: never set up, torn down and set up again in one process."""
    pytester.makeconftest(textwrap.dedent(LIFETIMES))
    for name in ("a", "b", "c"):
        pytester.makepyfile(
            **{
                f"test_{name}": "import pytest\n\n@pytest.mark.parametrize('i', range(12))\n"
                "def test_p(session_thing, module_thing, i):\n    pass\n"
            }
        )
    log = pytester.path / "log"
    for _ in range(4):
        log.write_text("")
        proc = run(
            pytester,
            "-q",
            "-p",
            "no:cacheprovider",
            "--rack",
            "local:3",
            "--rack-store",
            "off",
            env={"LOG": str(log)},
        )
        assert "36 passed" in outcome_line(proc.stdout), proc.stdout
        by_pid: dict[str, list[str]] = {}
        for line in log.read_text().splitlines():
            pid, what = line.split(" ", 1)
            by_pid.setdefault(pid, []).append(what)
        assert len(by_pid) >= 2, by_pid
        for pid, events in by_pid.items():
            assert events.count("session") == 1 and events[-1] == "session-end", (pid, events)
            modules = [e for e in events if e.startswith("module")]
            assert len(modules) == len(set(modules)), (pid, events)


# -- 4. --stepwise stops and resumes where plain pytest does ----------------------------------------

STEPWISE = """
    import os, pytest

    @pytest.mark.parametrize("i", range(10))
    def test_t(i):
        assert str(i) not in os.environ.get("BROKEN", "").split(",")
"""


def _stepwise_runs(pytester: pytest.Pytester, *rack: str) -> list[tuple[str, int]]:
    pytester.makepyfile(test_sw=textwrap.dedent(STEPWISE))
    cache = pytester.path / ".pytest_cache"
    if cache.exists():
        import shutil

        shutil.rmtree(cache)
    outcomes = []
    for broken in ("2,5,8", "2"):
        proc = run(pytester, "-q", "--sw", *rack, env={"BROKEN": broken})
        outcomes.append((outcome_line(proc.stdout).strip("= ").rsplit(" in ", 1)[0], proc.returncode))
    return outcomes


def test_stepwise_stops_and_resumes_as_plain_pytest(pytester):
    """--sw: run 1 stops at [2]; run 2 (with [5] and [8] fixed) resumes at [2], which still fails."""
    plain = _stepwise_runs(pytester, "--rack", "off")
    assert plain == [("1 failed, 2 passed", 2), ("1 failed, 2 deselected", 2)]
    assert _stepwise_runs(pytester, "--rack", "local:2", "--rack-store", "off") == plain


def test_stepwise_in_each_mode_is_refused_with_the_fix(pytester):
    pytester.makepyfile(test_sw=textwrap.dedent(STEPWISE))
    proc = run(pytester, "--sw", "--rack", "local:2", "--rack-mode", "each")
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR
    assert "use --rack-mode load (or --rack off) with --sw" in proc.stderr


# -- 5. a test is reported passed only if it ran and passed ------------------------------------------


@pytest.mark.parametrize("option", ["--trace", "--pdb"])
def test_debugger_options_are_refused_with_the_fix(pytester, option):
    pytester.makepyfile(test_t="def test_t():\n    assert False\n")
    proc = run(pytester, option, "--rack", "local:1")
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR
    assert f"{option} needs the test to run in this terminal" in proc.stderr
    assert "add --rack off to debug in one process" in proc.stderr


def test_breakpoint_in_a_worker_fails_the_test_with_the_fix(pytester):
    """A breakpoint() cannot reach the user's terminal from a worker: the test fails, saying how to
    debug it, instead of passing as if the debugger had been continued."""
    pytester.makepyfile(test_t="def test_t(tmp_path):\n    breakpoint()\n    assert False\n")
    proc = run(pytester, "-q", "-p", "no:cacheprovider", "--rack", "local:1", "--rack-store", "off")
    assert "1 failed" in outcome_line(proc.stdout)
    assert "breakpoint() needs a terminal" in proc.stdout
    assert "pytest --rack off test_t.py::test_t" in proc.stdout


# -- 8. --rack off plays one device of the rack -----------------------------------------------------

ROUTED = """
    import os, pytest

    @pytest.mark.device(kind="phone")
    def test_phone(device):
        assert device.kind == "phone" and os.environ["ROLE"] == "phone"

    @pytest.mark.device(kind="board")
    def test_board(device):
        assert device.kind == "board" and os.environ["ROLE"] == "board"
"""


def test_rack_off_runs_as_one_device_with_its_env_and_skips_what_it_cannot_run(pytester, write_rack):
    from testrack.rack import Device

    write_rack(
        [
            Device("board-1", "board", "a", env={"ROLE": "board"}),
            Device("phone-1", "phone", "b", env={"ROLE": "phone"}),
        ]
    )
    pytester.makepyfile(test_r=textwrap.dedent(ROUTED))
    first = run(pytester, "-rs", "-p", "no:cacheprovider", "--rack", "off", env={"COLUMNS": "300"})
    assert "1 passed, 1 skipped" in outcome_line(first.stdout), first.stdout
    assert (
        "needs kind='phone'; --rack off runs as board-1 (board): pick a matching one with --rack-device NAME"
        in first.stdout
    )
    phone = run(pytester, "-q", "-p", "no:cacheprovider", "--rack", "off", "--rack-device", "phone-1")
    assert "1 passed, 1 skipped" in outcome_line(phone.stdout), phone.stdout
    wrong = run(pytester, "-p", "no:cacheprovider", "--rack", "off", "--rack-device", "nope")
    assert wrong.returncode == pytest.ExitCode.USAGE_ERROR
    assert "--rack-device nope:" in wrong.stderr and "it has board-1, phone-1" in wrong.stderr


# -- 9. the summary agrees with the exit code --------------------------------------------------------


def test_runs_a_quarantined_device_never_made_are_counted_and_the_line_is_not_green(pytester, testrack_sim):
    sim = testrack_sim(2)
    sim.write_rack(pytester.path / "testrack.toml", mode="each")
    pytester.makepyfile(test_q="def test_a(device):\n    pass\n\ndef test_b(device):\n    pass\n")
    first = run(pytester, "-q", "-p", "no:cacheprovider")  # pins the identities
    assert first.returncode == 0, first.stdout
    sim.set_serial("board-2", "swapped")
    proc = run(pytester, "-p", "no:cacheprovider", "--color=yes")
    assert proc.returncode == pytest.ExitCode.TESTS_FAILED, proc.stdout
    plain = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout)
    assert "2 passed, 2 not run (quarantined)" in outcome_line(plain), plain
    assert "board-2: FAILED - quarantined: identity changed" in plain
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith(("\x1b[31m", "\x1b[33m")), f"the final line is not red or yellow: {last!r}"


# -- 11. rack options do not go unheard --------------------------------------------------------------


@pytest.mark.parametrize("option", [["--rack-failed"], ["--rack-mode=each"], ["--rack-timeout", "0.1"]])
def test_rack_options_without_a_rack_are_refused_with_the_fix(pytester, option):
    pytester.makepyfile(test_t="def test_t():\n    pass\n")
    proc = run(pytester, *option)
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR
    assert "needs a rack, and there is none" in proc.stderr
    assert "pass --rack FILE, or --rack local:N" in proc.stderr


@pytest.mark.parametrize("rack", [[], ["--rack-mode", "each"], ["--rack", "local:2"]])
def test_rack_device_on_a_rack_run_is_refused_with_the_fix(pytester, write_rack, rack):
    """--rack-device picks the device --rack off plays; a rack run ignored it without a word."""
    write_rack(boards(2))
    pytester.makepyfile(test_t="def test_t(device):\n    pass\n")
    proc = run(pytester, "-p", "no:cacheprovider", *rack, "--rack-device", "board-2")
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout
    fix = "use --rack off instead of --rack local:2" if "local:2" in rack else "add --rack off"
    source = "local:2" if "local:2" in rack else str(pytester.path / "testrack.toml")
    assert proc.stderr == (
        "ERROR: --rack-device board-2 picks the device that --rack off runs the tests as, in this "
        f"process, but this run spreads them over the rack {source}; {fix} to run them as board-2, "
        "or leave out --rack-device\n\n"
    )
    assert "passed" not in proc.stdout and "Traceback" not in proc.stdout + proc.stderr


def test_rack_device_without_a_rack_is_refused_with_the_fix(pytester):
    pytester.makepyfile(test_t="def test_t():\n    pass\n")
    proc = run(pytester, "-p", "no:cacheprovider", "--rack-device", "board-2")
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout
    assert (
        "ERROR: --rack-device board-2 picks the device that --rack off runs the tests as, and there is no "
        f"rack file (testrack.toml or [tool.testrack] in pyproject.toml) under {pytester.path} to take it "
        "from; leave out --rack-device"
    ) in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("has_rack", [True, False])
@pytest.mark.parametrize(
    ("single", "how"),
    [(["--rack", "off"], "--rack off"), (["--rack-sequence", "seq.txt"], "--rack-sequence")],
)
def test_rack_html_where_the_tests_run_in_this_process_is_refused_with_the_fix(
    pytester, write_rack, has_rack, single, how
):
    """--rack off records nothing for --rack-html to report: it wrote no file and said nothing."""
    if has_rack:
        write_rack(boards(1))
    pytester.makepyfile(test_t="def test_t():\n    pass\n")
    (pytester.path / "seq.txt").write_text("test_t.py::test_t\n")
    proc = run(pytester, "-p", "no:cacheprovider", *single, "--rack-html", "r.html")
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout
    assert (
        f"ERROR: --rack-html reports what a rack run records, and with {how} the tests run in "
        "this process unrecorded; run them on the rack (or --rack local:1, one local worker) for the "
        "report, or leave out --rack-html"
    ) in proc.stderr
    assert not (pytester.path / "r.html").exists()
    assert "Traceback" not in proc.stdout + proc.stderr


def test_rack_html_without_a_rack_is_refused_with_the_fix(pytester):
    pytester.makepyfile(test_t="def test_t():\n    pass\n")
    proc = run(pytester, "-p", "no:cacheprovider", "--rack-html", "r.html")
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout
    assert "ERROR: --rack-html needs a rack, and there is none" in proc.stderr
    assert "pass --rack FILE, or --rack local:N" in proc.stderr
    assert not (pytester.path / "r.html").exists()


# -- 12. a time limit is a limit ---------------------------------------------------------------------


def test_short_time_limits_are_kept_on_every_worker(pytester):
    """Tests of 0.5 s under a 0.2 s limit on two workers at once: every one times out."""
    pytester.makepyfile(
        test_t="import time, pytest\n\n@pytest.mark.parametrize('i', range(6))\n"
        "def test_s(i):\n    time.sleep(0.5)\n"
    )
    for _ in range(2):
        proc = run(
            pytester,
            "-q",
            "-p",
            "no:cacheprovider",
            "--rack",
            "local:2",
            "--rack-store",
            "off",
            "--rack-timeout",
            "0.2",
        )
        assert "6 failed" in outcome_line(proc.stdout), proc.stdout
        assert proc.stdout.count("timed out after 0.2 s") >= 6


@pytest.mark.parametrize("mode", ["load", "each"])
def test_a_test_just_over_its_limit_is_reported_as_timed_out_never_dropped(pytester, mode):
    """Tests ending 10-90 ms after a 0.2 s limit: the controller flagged each, asked its worker for
    stacks, then the test ended on its own and its worker went on; the test was never reported
    (`1 passed`, exit 0, for a suite of 6 tests). Every test is reported, the late ones as over."""
    pytester.makepyfile(
        test_t="import time, pytest\n\ndef test_ok():\n    pass\n\n"
        "@pytest.mark.parametrize('s', [0.21, 0.23, 0.26, 0.28, 0.3])\n"
        "def test_late(s):\n    time.sleep(s)\n"
    )
    args = ["-q", "-p", "no:cacheprovider", "--rack-store", "off", "--rack-timeout", "0.2"]
    proc = run(pytester, *args, "--rack", "local:1", "--rack-mode", mode, "--junitxml", "j.xml")
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (failed|passed)", outcome_line(proc.stdout))}
    # within the documented 50 ms a test may pass; past it, it is over its limit
    failed, passed = counts.get("failed", 0), counts.get("passed", 0)
    assert failed + passed == 6 and failed >= 3, proc.stdout
    assert proc.returncode == pytest.ExitCode.TESTS_FAILED
    over = proc.stdout.count("over its limit of 0.2 s") + proc.stdout.count("timed out after 0.2 s")
    assert over >= failed
    assert 'tests="6"' in (pytester.path / "j.xml").read_text()


# -- 14, 15. each mode names the device where it matters ---------------------------------------------


def test_each_mode_names_the_device_in_every_result_line_and_counts_runs(pytester, write_rack):
    write_rack(boards(3), mode="each")
    pytester.makepyfile(test_e="def test_fails_everywhere(device):\n    assert 0\n")
    proc = run(
        pytester, "-rA", "--durations=0", "--durations-min=0", "-p", "no:cacheprovider", "--rack-store", "off"
    )
    out = proc.stdout
    for device in ("board-1", "board-2", "board-3"):
        assert f"FAILED test_e.py::test_fails_everywhere@{device} - assert 0" in out
        assert re.search(rf"call +test_e.py::test_fails_everywhere@{device}", out), out
    progress = re.findall(r"\[\s*(\d+)%\]", out)
    assert progress == ["33", "66", "100"] or progress == ["100"], progress


def test_a_crash_after_tiny_tests_blames_the_test_that_crashed(pytester):
    """Reports travel in batches; when a worker dies, the one test it was running is reported, and
    tests whose results died with it run again (they used to be blamed instead)."""
    body = "import os\n" + "".join(
        f"def test_{i:02d}():\n    if os.environ.get('CRASH') and {i} == 33:\n        os._exit(3)\n"
        for i in range(80)
    )
    pytester.makepyfile(test_c=body)
    run(pytester, "-q", "-p", "no:cacheprovider", "--rack", "local:1")  # history: all tiny
    proc = run(pytester, "-q", "-p", "no:cacheprovider", "--rack", "local:1", env={"CRASH": "1"})
    assert "1 failed, 79 passed" in outcome_line(proc.stdout), proc.stdout
    assert re.findall(r"^FAILED (\S+)", proc.stdout, re.M) == ["test_c.py::test_33"]


def test_a_worker_started_after_the_store_file_exists_has_the_controllers_test_ids(pytester):
    """``--rack-store ../elsewhere/h.db`` names a file that does not exist when the run starts; a
    worker started later (after a crash) saw it, and pytest put the rootdir at the common
    ancestor: its test ids had the project's directory in front, and the next test was an error
    ("collected on another worker"). Workers now take the controller's rootdir and config file."""
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_x="import os\ndef test_a_crash():\n    os._exit(3)\n\ndef test_b():\n    pass\n")
    elsewhere = pytester.path.parent / f"{pytester.path.name}-elsewhere"
    elsewhere.mkdir()
    result = pytester.runpytest_subprocess(
        "-p", "no:randomly", "--rack", "local:1", "--rack-store", str(elsewhere / "h.db")
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.no_fnmatch_line("*collected on another worker*")
