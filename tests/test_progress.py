"""The run's progress: the live view in a real terminal, progress lines in CI logs, -v start lines.

The terminal tests run pytest in a pseudo-terminal (pexpect) and read its screen as a VT100
terminal shows it (pyte). A test that must be seen running waits for a file the test creates
once it saw what it looks for, so nothing depends on how fast the machine is.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pexpect
import pyte
import pytest
from pexpect.popen_spawn import PopenSpawn

from testrack import progress
from testrack.progress import (
    RunView,
    SlotView,
    board_lines,
    choose,
    duration,
    eta,
    is_slow,
    line_parts,
    shorten,
)
from testrack.scheduling import Dispatcher, Job, Slot

WAITING_SUITE = """
import os, time
from pathlib import Path

GO = Path(__file__).with_name("go")

def test_quick_1():
    pass

def test_quick_2():
    pass

def test_fails():
    assert 1 == 2

def test_wait():
    deadline = time.monotonic() + 120
    while not GO.exists():
        assert time.monotonic() < deadline, "the test never saw what it waited for"
        time.sleep(0.05)
"""

#: Any escape sequence, and the only kind allowed in lines mode: colour (SGR).
ESCAPE = re.compile(rb"\x1b(\[[0-9;?]*[A-Za-z]|[^\[])")
COLOUR = re.compile(rb"\x1b\[[0-9;]*m")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    names = ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "PY_COLORS", "CI", "TTY_COMPATIBLE")
    for name in (*names, "TESTRACK_PROGRESS_THREAD"):
        env.pop(name, None)
    env["TERM"] = "xterm-256color"
    return env


class Terminal:
    """pytest in a real pseudo-terminal; its screen as a VT100 terminal shows it."""

    def __init__(
        self, cwd: Path, args: list[str], rows: int = 30, cols: int = 110, env: dict[str, str] | None = None
    ) -> None:
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = bytearray()
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "pytest", *args],
            cwd=str(cwd),
            env=dict(_env(), **(env or {})),
            dimensions=(rows, cols),
        )
        self.ended = False

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def _read(self, timeout: float) -> None:
        try:
            data = self.child.read_nonblocking(65536, timeout=timeout)
        except pexpect.TIMEOUT:
            return
        except pexpect.EOF:
            self.ended = True
            return
        self.raw += data
        self.stream.feed(data)

    def wait_for(self, seen: Callable[[list[str]], bool], what: str, timeout: float = 90.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while not seen(self.lines()):
            if self.ended or time.monotonic() > deadline:
                raise AssertionError(f"never saw {what}; the screen:\n" + "\n".join(self.lines()))
            self._read(0.1)
        return self.lines()

    def finish(self, timeout: float = 90.0) -> int:
        deadline = time.monotonic() + timeout
        while not self.ended:
            assert time.monotonic() < deadline, "pytest did not end:\n" + "\n".join(self.lines())
            self._read(0.2)
        self.child.close()
        status = self.child.exitstatus
        assert status is not None
        return status


class Piped:
    """pytest with its output into a pipe (not a terminal), as in CI, read as it comes."""

    def __init__(self, cwd: Path, args: list[str]) -> None:
        self.child = PopenSpawn([sys.executable, "-m", "pytest", *args], cwd=str(cwd), env=_env())
        self.raw = bytearray()

    def text(self) -> str:
        return self.raw.decode("utf-8", "replace")

    def wait_for(self, pattern: str, timeout: float = 90.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.text(), re.MULTILINE)
            if match:
                return match
            assert time.monotonic() < deadline, f"never saw {pattern!r} in:\n{self.text()}"
            try:
                self.raw += self.child.read_nonblocking(65536, timeout=0.1)
            except pexpect.TIMEOUT:
                pass
            except pexpect.EOF:
                raise AssertionError(f"pytest ended before {pattern!r} showed:\n{self.text()}") from None

    def finish(self, timeout: float = 90.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            assert time.monotonic() < deadline, "pytest did not end:\n" + self.text()
            try:
                self.raw += self.child.read_nonblocking(65536, timeout=0.2)
            except pexpect.TIMEOUT:
                pass
            except pexpect.EOF:
                break
        status = self.child.wait()
        return int(status)


@pytest.fixture
def waiting_suite(pytester: pytest.Pytester) -> Path:
    pytester.makepyfile(test_run=WAITING_SUITE)
    return pytester.path


# ---------------------------------------------------------------------- in a real terminal


@pytest.mark.parametrize("thread", ["", "1"], ids=["tick", "thread"])
def test_live_lines_show_the_running_test_then_vanish(waiting_suite: Path, thread: str) -> None:
    """On a terminal, a line per slot shows the test it runs and for how long, with the run's
    line under them; pytest's own lines stay above; at the end the live lines are gone. The
    same whether the run loop's tick or a thread of its own draws them."""
    term = Terminal(
        waiting_suite,
        ["--rack", "local:2", "--rack-store", "memory"],
        env={"TESTRACK_PROGRESS_THREAD": thread},
    )
    slot_line = re.compile(r"^gw[01] +test_run\.py::test_wait +\d+\.\ds +\d+/4$")
    screen = term.wait_for(
        lambda lines: (
            any(slot_line.match(line) for line in lines)
            and any(line.startswith("testrack 3/4 runs  1 failed") for line in lines)
        ),
        "a slot running test_wait, and 3 of 4 runs done",
    )
    idle = re.compile(r"^gw[01] +(idle|finishing|done) +3/4$")
    assert any(idle.match(line) for line in screen), screen
    # pytest's line of results is above the live lines, as far as it has come
    results = [k for k, line in enumerate(screen) if line.startswith("test_run.py ")]
    live = [k for k, line in enumerate(screen) if slot_line.match(line)]
    assert results and results[0] < live[0], screen
    assert sorted(screen[results[0]].split()[1]) == sorted("..F"), screen
    waiting_suite.joinpath("go").touch()
    assert term.finish() == 1
    final = term.lines()
    assert not [line for line in final if line.startswith(("gw0 ", "gw1 ", "testrack 3/4", "testrack 4/4"))]
    assert any(re.match(r"^test_run\.py [.F]{4} +\[100%\]$", line) for line in final), final
    assert any(re.search(r"=+ 1 failed, 3 passed in [\d.]+s =+$", line) for line in final), final
    assert b"\x1b[?25h" in term.raw  # the cursor, hidden while the lines are drawn, is back


def test_live_view_keeps_verbose_results_above_it(waiting_suite: Path) -> None:
    """-v on a terminal: start and result lines scroll above the live lines while a test runs."""
    term = Terminal(
        waiting_suite, ["--rack", "local:2", "--rack-store", "memory", "-v", "-p", "no:cacheprovider"]
    )
    screen = term.wait_for(
        lambda lines: (
            any(re.match(r"^gw[01] +test_run\.py::test_wait +\d", line) for line in lines)
            and any(line.startswith("testrack 3/4 runs") for line in lines)
        ),
        "the live lines with test_wait running",
    )
    top = min(k for k, line in enumerate(screen) if line.startswith("testrack 3/4 runs")) - 2
    above = screen[:top]
    assert any(
        re.match(r"^\[gw[01]\] \[ *\d+%\] FAILED test_run\.py::test_fails$", line) for line in above
    ), screen
    assert "test_run.py::test_wait" in above, screen  # its start line, as pytest-xdist shows it
    waiting_suite.joinpath("go").touch()
    assert term.finish() == 1
    assert any(
        re.match(r"^\[gw[01]\] \[100%\] PASSED test_run\.py::test_wait$", line) for line in term.lines()
    )


# ---------------------------------------------------------------------- not a terminal


def test_lines_mode_prints_at_its_interval_without_escape_codes(waiting_suite: Path) -> None:
    """Output into a pipe: a compact line every --rack-progress-interval seconds naming the test
    running longest, and not one escape code in the whole output."""
    run = Piped(
        waiting_suite, ["--rack", "local:2", "--rack-store", "memory", "--rack-progress-interval", "0.3"]
    )
    pattern = (
        r"^testrack: 3/4 runs, 1 failed, 1 of 2 slots running; longest: test_run\.py::test_wait "
        r"(\d+\.\d)s on gw[01]; ETA [\w.]+$"
    )
    first = run.wait_for(pattern)
    # a later line: the interval has passed again while the test still runs
    later = run.wait_for(pattern[:-1] + r"\n(?:.*\n)*?" + pattern[1:])
    assert float(later.group(2)) > float(first.group(1))
    waiting_suite.joinpath("go").touch()
    assert run.finish() == 1
    assert ESCAPE.search(bytes(run.raw)) is None, run.text()
    assert re.search(r"^=+ 1 failed, 3 passed in [\d.]+s =+$", run.text(), re.MULTILINE)


def test_lines_mode_colours_only_with_color_yes(waiting_suite: Path) -> None:
    """--color=yes: colour codes in the progress lines, never a cursor movement."""
    run = Piped(
        waiting_suite,
        ["--rack", "local:2", "--rack-store", "memory", "--rack-progress-interval", "0.3", "--color=yes"],
    )
    run.wait_for(r"testrack: 3/4 runs, \x1b\[31m1 failed\x1b\[0m, 1 of 2 slots running; longest: ")
    waiting_suite.joinpath("go").touch()
    assert run.finish() == 1
    escapes = {m.group(0) for m in ESCAPE.finditer(bytes(run.raw))}
    assert escapes and all(COLOUR.fullmatch(code) for code in escapes), escapes


def test_a_result_does_not_wait_for_a_test_of_unknown_length(pytester: pytest.Pytester) -> None:
    """Reports travel in batches, but the result of a quick test is not held back while the next
    test, which no history or sibling says is short, runs on: here it waits until told to go."""
    pytester.makepyfile(
        # A little (below the batch's age limit): the controller's "no more" comes meanwhile.
        test_run=WAITING_SUITE.replace(
            "def test_fails():\n    assert 1 == 2", "def test_a_little():\n    time.sleep(0.03)"
        )
    )
    args = ["--rack", "local:1", "--rack-store", "memory", "--rack-progress-interval", "0.3"]
    run = Piped(pytester.path, [*args, "-p", "no:randomly"])
    run.wait_for(r"^testrack: 3/4 runs, 1 of 1 slots running; longest: test_run\.py::test_wait ")
    pytester.path.joinpath("go").touch()
    assert run.finish() == 0
    assert re.search(r"^=+ 4 passed in [\d.]+s =+$", run.text(), re.MULTILINE), run.text()


def test_verbose_shows_a_test_when_it_starts(waiting_suite: Path) -> None:
    """-v: a test's line appears when it starts on its device, and once only."""
    run = Piped(
        waiting_suite, ["--rack", "local:2", "--rack-store", "memory", "-v", "-p", "no:cacheprovider"]
    )
    run.wait_for(r"^test_run\.py::test_wait\s*$")
    assert "PASSED test_run.py::test_wait" not in run.text()  # it runs still: the line came at its start
    waiting_suite.joinpath("go").touch()
    assert run.finish() == 1
    lines = run.text().splitlines()
    assert [line.strip() for line in lines].count("test_run.py::test_wait") == 1, lines
    start = lines.index("test_run.py::test_wait ")
    result = next(
        k for k, line in enumerate(lines) if line.rstrip().endswith("PASSED test_run.py::test_wait")
    )
    assert start < result


def test_off_and_quick_runs_print_no_progress(pytester: pytest.Pytester) -> None:
    """--rack-progress off: nothing; a run shorter than the interval: no progress line either."""
    pytester.makepyfile("def test_a():\n    pass\n")
    for args in (["--rack-progress", "off", "--rack-progress-interval", "0.01"], []):
        result = pytester.runpytest_subprocess("--rack", "local:2", "--rack-store", "memory", *args)
        result.assert_outcomes(passed=1)
        assert not [line for line in result.outlines if line.startswith("testrack: 0/1")]
        assert not [line for line in result.outlines if " runs, " in line]


def test_progress_options_are_checked(pytester: pytest.Pytester) -> None:
    """A bad interval names the option and a good value; progress options without a rack are refused."""
    pytester.makepyfile("def test_a():\n    pass\n")
    result = pytester.runpytest("--rack", "local:1", "--rack-progress-interval", "0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*argument --rack-progress-interval: '0' is not a number of seconds above 0, for example 30"]
    )
    result = pytester.runpytest("--rack", "off", "--rack-progress", "lines")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: --rack-progress: the tests run in this process with --rack off, so there is no rack*"]
    )


# ---------------------------------------------------------------------- the parts


def test_auto_is_live_only_on_a_terminal_that_moves_its_cursor() -> None:
    """auto: live on a terminal, lines into a pipe or on a dumb terminal; a named mode stays."""
    assert choose("auto", True, "xterm") == "live"
    assert choose("auto", False, "xterm") == "lines"
    assert choose("auto", True, "dumb") == "lines"
    assert choose("lines", True, "xterm") == "lines"
    assert choose("live", False, None) == "live"


def test_slow_needs_the_margin_and_more_for_a_guess() -> None:
    """SLOW past twice the estimate plus a second; a guessed estimate only after 10 s."""
    assert not is_slow(2.9, 1.0, guessed=False)
    assert is_slow(3.1, 1.0, guessed=False)
    assert not is_slow(9.0, 0.1, guessed=True)
    assert is_slow(10.5, 0.1, guessed=True)


def test_eta_keeps_the_pace_of_the_run() -> None:
    """Before any pace: work over slots; then work left at the pace so far; never under the
    longest running test's rest."""
    assert eta(100.0, 0.0, 0.5, 4) == 25.0
    assert eta(100.0, 50.0, 10.0, 4) == 20.0  # 5 estimated seconds done per wall second
    assert eta(1.0, 50.0, 10.0, 4, longest_left=30.0) == 30.0
    assert eta(1.0, 50.0, 10.0, 0) is None


def test_durations_and_ids_fit() -> None:
    assert [duration(s) for s in (0.04, 12.34, 59.96, 65, 3725)] == [
        "0.0s",
        "12.3s",
        "1m00s",
        "1m05s",
        "1h02m",
    ]
    assert shorten("tests/test_x.py::test_name", 14) == "…py::test_name"
    assert shorten("short", 14) == "short"


def _view(slots: int, running: int) -> RunView:
    views = tuple(
        SlotView(f"board-{k}", f"board-{k}", f"t.py::test_{k}", True, float(k), k == 1, 3, 9)
        if k < running
        else SlotView(f"board-{k}", f"board-{k}", "idle", done=9, total=9)
        for k in range(slots)
    )
    return RunView(views, done=30, total=40, failed=2, eta=75.0)


def test_the_progress_line_names_the_longest_running() -> None:
    text = "".join(part for part, _ in line_parts(_view(5, 4)))
    assert text == (
        "testrack: 30/40 runs, 2 failed, 4 of 5 slots running; longest: t.py::test_3 3.0s on board-3, "
        "t.py::test_2 2.0s on board-2, t.py::test_1 1.0s on board-1 SLOW; ETA 1m15s"
    )


def test_board_has_a_line_per_slot_and_folds_what_does_not_fit() -> None:
    lines = [line.plain.rstrip() for line in board_lines(_view(3, 2), 60, 10)]
    assert lines == [
        "board-0 t.py::test_0                          0.0s      3/9",
        "board-1 t.py::test_1                          1.0s SLOW 3/9",
        "board-2 idle                                            9/9",
        "testrack 30/40 runs  2 failed  ETA 1m15s",
    ]
    folded = [line.plain.rstrip() for line in board_lines(_view(8, 6), 60, 5)]
    assert len(folded) == 5
    assert [line.split()[0] for line in folded[:3]] == ["board-3", "board-4", "board-5"]
    assert folded[3] == "… 5 more slots (3 running)"


def test_remaining_by_device_counts_what_one_device_alone_may_run() -> None:
    slots = [Slot("gw0", "a"), Slot("gw1", "b")]
    dispatcher = Dispatcher(slots)
    dispatcher.add(
        [
            Job("t.py::x", "t.py", 0, frozenset({"a"})),
            Job("t.py::x", "t.py", 0, frozenset({"b"})),
            Job("t.py::y", "t.py", 1, frozenset({"a"})),
            Job("t.py::z", "t.py", 2, frozenset({"a", "b"})),
        ]
    )
    assert dispatcher.remaining_by_device() == {"a": 2, "b": 1}
    assert progress.MODES == ("auto", "live", "lines", "off")
