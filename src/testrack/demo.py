"""``testrack demo``: the classic multi-device experiment, with simulated devices.

Three tests each keep a device busy for a few seconds. Run once with ``--rack-mode=each``
(every test on every device) and once with ``--rack-mode=load`` (tests spread over the
devices), the wall times show what each mode buys. Everything happens in real pytest
subprocesses, so the numbers include testrack's own start-up cost.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import TextIO

from testrack.history import counts, plural
from testrack.rack import RACK_FILE
from testrack.sim import SimRack

__all__ = [
    "DEMO_MODES",
    "DEMO_TESTS",
    "CaseResult",
    "DemoError",
    "DemoOptions",
    "JunitSummary",
    "ModeRun",
    "format_mode",
    "format_table",
    "ideal_wall_s",
    "parse_junit",
    "pytest_command",
    "run_child",
    "run_demo",
]

SUITE_DIR = Path(__file__).with_name("demo_suite")
SUITE_FILES = ("conftest.py", "pytest.ini", "test_demo.py")
DEMO_TESTS = 3
"""How many tests ``demo_suite/test_demo.py`` holds (a test checks the two agree)."""
DEMO_MODES = ("each", "load")
NO_DEVICE = "(no device)"
_SECONDS_LINE = re.compile(r"^demo_seconds\s*=.*$", re.MULTILINE)
_PYTEST_USAGE_ERROR = 4  # pytest.ExitCode.USAGE_ERROR, without importing pytest here
SELF_STOP_S = 1.0
"""How long an interrupted pytest run gets to notice a Ctrl+C of its own before it gets one."""
STOP_GRACE_S = 10.0
"""How long it then gets to stop its workers and report before it is killed."""


class DemoError(Exception):
    """The demo could not be set up or its report not read; the message says why."""


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    devices: int = 3
    seconds: float = 2.0
    plugin_args: tuple[str, ...] | None = None
    """How pytest loads testrack (``-p ...``); None: as an installed testrack would be found."""
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Extra environment for the pytest runs."""
    keep: Path | None = None
    """Where to write (and leave) the suite and rack file; None: a temporary directory."""


@dataclasses.dataclass(frozen=True)
class CaseResult:
    """One ``<testcase>`` of a JUnit report."""

    nodeid: str
    outcome: str  # passed, failed, error or skipped
    seconds: float
    device: str | None


@dataclasses.dataclass(frozen=True)
class JunitSummary:
    cases: tuple[CaseResult, ...]

    @property
    def serial_s(self) -> float:
        """The time the tests took one after another: what a single device would need."""
        return sum(c.seconds for c in self.cases)

    @property
    def per_device(self) -> dict[str, int]:
        """Results per device, devices in name order, results without a device last."""
        counts = Counter(c.device or NO_DEVICE for c in self.cases)
        return dict(sorted(counts.items(), key=lambda kv: (kv[0] == NO_DEVICE, kv[0])))

    @property
    def outcomes(self) -> dict[str, int]:
        return dict(Counter(c.outcome for c in self.cases))


@dataclasses.dataclass(frozen=True)
class ModeRun:
    """One pytest run of the demo: its exit code, wall time and report."""

    mode: str
    returncode: int
    wall_s: float
    ideal_s: float
    report: JunitSummary | None

    @property
    def passed(self) -> bool:
        return self.returncode == 0

    @property
    def speedup(self) -> float | None:
        if self.report is None or self.wall_s <= 0:
            return None
        return self.report.serial_s / self.wall_s


def parse_junit(path: Path) -> JunitSummary:
    """Read a pytest ``--junitxml`` report; the device comes from each testcase's properties."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise DemoError(f"cannot read the JUnit report {path}: {exc}") from None
    cases = []
    for case in root.iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        device = None
        for prop in case.iter("property"):
            if prop.get("name") == "device":
                device = prop.get("value")
        cases.append(
            CaseResult(
                nodeid=f"{classname}::{name}" if classname else name,
                outcome=_outcome(case),
                seconds=float(case.get("time") or 0.0),
                device=device,
            )
        )
    return JunitSummary(tuple(cases))


def _outcome(case: ET.Element) -> str:
    for tag, outcome in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
        if case.find(tag) is not None:
            return outcome
    return "passed"


def ideal_wall_s(mode: str, devices: int, seconds: float) -> float:
    """The wall time with no overhead: each device runs its share of the tests in turn."""
    per_device = DEMO_TESTS if mode == "each" else math.ceil(DEMO_TESTS / devices)
    return per_device * seconds


def format_mode(run: ModeRun) -> list[str]:
    """The lines printed after one mode's pytest output."""
    head = f"{run.mode}: "
    if run.report is None:
        lines = [head + f"no JUnit report: pytest exited with code {run.returncode} before writing one"]
    else:
        outcomes = counts(run.report.outcomes)
        lines = [
            head + f"{plural(len(run.report.cases), 'result')} ({outcomes}) in {run.wall_s:.2f} s wall"
            f" (ideal {run.ideal_s:.2f} s)",
            "  per device: "
            + (", ".join(f"{name} {n}" for name, n in run.report.per_device.items()) or "none"),
            f"  serial time {run.report.serial_s:.2f} s (sum of test times), speed-up {_speedup(run)}",
        ]
    if run.returncode == _PYTEST_USAGE_ERROR:
        lines.append(
            "  pytest refused the command line: is testrack's pytest plugin installed in this "
            "Python? (python -m pip install testrack, then run testrack demo again)"
        )
    elif not run.passed:
        lines.append(f"  pytest exited with code {run.returncode}: see its output above")
    return lines


def format_table(runs: Sequence[ModeRun]) -> list[str]:
    """Both modes side by side, for the end of the demo."""
    rows = [("mode", "results", "wall s", "ideal s", "serial s", "speed-up", "outcome")]
    for run in runs:
        report = run.report
        rows.append(
            (
                run.mode,
                str(len(report.cases)) if report else "-",
                f"{run.wall_s:.2f}",
                f"{run.ideal_s:.2f}",
                f"{report.serial_s:.2f}" if report else "-",
                _speedup(run),
                "passed" if run.passed else f"exit {run.returncode}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def _speedup(run: ModeRun) -> str:
    return "-" if run.speedup is None else f"{run.speedup:.2f}x"


def pytest_command(mode: str, junit: str, plugin_args: Sequence[str] = ()) -> list[str]:
    """The pytest command for one mode, run in the suite directory. The demo's devices are its
    own (fresh ports, the usual names): leased in the user's share, they only collided with
    another demo's board-1 and made one demo wait for the other."""
    return [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *plugin_args,
        "--rack", RACK_FILE, f"--rack-mode={mode}", "--rack-share", "off", f"--junitxml={junit}",
    ]  # fmt: skip


def run_demo(options: DemoOptions, out: TextIO | None = None) -> int:
    """Run the demo; 0 if both modes passed, else 1. pytest's own output goes to our stdout."""
    if options.devices < 1:
        raise DemoError(f"--devices {options.devices}: the demo needs at least 1 device")
    if not options.seconds > 0:
        raise DemoError(f"--seconds {options.seconds}: give a positive number, for example 0.5")
    stream = out or sys.stdout
    plugin_args, env = _how_to_load_testrack(options)
    if options.keep is not None:
        _prepare_keep(options.keep)
    with contextlib.ExitStack() as stack:
        if options.keep is None:
            suite = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="testrack-demo-")))
            where = "suite and rack file in a temporary directory, removed at the end (--keep DIR keeps them)"
        else:
            suite = options.keep.resolve()
            where = f"suite and rack file in {suite} (kept)"
        sim = stack.enter_context(SimRack(options.devices))
        _copy_suite(suite, options.seconds)
        sim.write_rack(suite / RACK_FILE)
        names = [d.name for d in sim.devices]
        _say(
            stream,
            f"testrack demo: {plural(DEMO_TESTS, 'test')}, each keeps its device busy {options.seconds:g} s; "
            f"{plural(len(names), 'simulated device')} ({', '.join(names)})",
            where,
        )
        runs = [_run_mode(mode, suite, options, plugin_args, env, stream) for mode in DEMO_MODES]
    _say(stream, "", *format_table(runs))
    if options.keep is not None:
        _say(
            stream,
            "",
            f"kept in {suite}: the suite, its rack file and its results; the simulated devices are gone, "
            f"so to run it again start new ones with: testrack sim --devices {options.devices} "
            f"--rack-file {suite / RACK_FILE} --force, then in {suite}: pytest --rack-mode=each",
        )
    return 0 if all(run.passed for run in runs) else 1


def _prepare_keep(directory: Path) -> None:
    """``--keep DIR``: a new or empty directory, or one holding only an earlier demo's files."""
    if directory.exists() and not directory.is_dir():
        raise DemoError(f"--keep {directory} is a file; give a new or empty directory")
    demo_files = {*SUITE_FILES, RACK_FILE, ".testrack", "__pycache__"} | {
        f"junit-{m}.xml" for m in DEMO_MODES
    }
    if directory.is_dir():
        others = sorted(p.name for p in directory.iterdir() if p.name not in demo_files)
        if others:
            raise DemoError(
                f"--keep {directory} holds other files ({', '.join(others[:3])}"
                f"{', ...' if len(others) > 3 else ''}); give a new or empty directory"
            )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DemoError(f"--keep {directory}: cannot create it ({exc.strerror})") from None


def _run_mode(
    mode: str,
    suite: Path,
    options: DemoOptions,
    plugin_args: Sequence[str],
    env: Mapping[str, str],
    stream: TextIO,
) -> ModeRun:
    junit = f"junit-{mode}.xml"
    command = pytest_command(mode, junit, plugin_args)
    what = "every test on every device" if mode == "each" else "tests spread over the devices"
    shown = shlex.join(["python", *command[1:]])
    _say(stream, "", f"== {mode} mode: {what} ==", f"$ {shown}")
    sys.stdout.flush()  # pytest writes to the same file descriptors
    sys.stderr.flush()
    started = time.perf_counter()
    returncode = run_child(command, suite, env)
    wall_s = time.perf_counter() - started
    report_path = suite / junit
    report = parse_junit(report_path) if report_path.exists() else None
    run = ModeRun(mode, returncode, wall_s, ideal_wall_s(mode, options.devices, options.seconds), report)
    _say(stream, *format_mode(run))
    return run


def run_child(command: Sequence[str], cwd: Path, env: Mapping[str, str]) -> int:
    """Run ``command`` to the end; if we are interrupted, see that it ends too, then re-raise."""
    child = subprocess.Popen(command, cwd=cwd, env=env)
    try:
        return child.wait()
    except BaseException:  # Ctrl+C, or SIGTERM turned into KeyboardInterrupt by the CLI
        _wind_down(child)
        raise


def _wind_down(child: subprocess.Popen[bytes]) -> None:
    """Let pytest stop its workers and report, as it does on Ctrl+C; kill it only if it hangs.

    After a Ctrl+C in the terminal pytest got the SIGINT too and is already stopping; after a
    SIGTERM sent to the demo alone it has not, so it gets a SIGINT of its own.
    """
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout=SELF_STOP_S)
        return
    child.send_signal(signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout=STOP_GRACE_S)
        return
    child.kill()
    child.wait()


def _how_to_load_testrack(options: DemoOptions) -> tuple[tuple[str, ...], dict[str, str]]:
    """The ``-p`` arguments and environment that let the pytest runs find this testrack.

    An installed testrack is a pytest11 entry point and loads by itself; naming it again with
    ``-p`` would register it twice. Run from a source tree, it is loaded by module name, and
    its directory goes on PYTHONPATH because the runs happen in another directory.
    """
    env = dict(os.environ)
    env.update(options.env)
    if options.plugin_args is not None:
        return options.plugin_args, env
    installed = any(ep.name == "testrack" for ep in entry_points(group="pytest11"))
    if installed and not env.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return (), env
    if not installed:
        source = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    return ("-p", "testrack.plugin"), env


def _copy_suite(target: Path, seconds: float) -> None:
    for name in SUITE_FILES:
        source = SUITE_DIR / name
        if not source.is_file():
            raise DemoError(
                f"the demo suite file {source} is missing from this testrack installation; "
                "reinstall it (python -m pip install --force-reinstall testrack)"
            )
        shutil.copyfile(source, target / name)
    ini = target / "pytest.ini"
    text, count = _SECONDS_LINE.subn(f"demo_seconds = {seconds!r}", ini.read_text(encoding="utf-8"))
    if count != 1:
        raise DemoError(f"{SUITE_DIR / 'pytest.ini'} has no single demo_seconds line; reinstall testrack")
    ini.write_text(text, encoding="utf-8")


def _say(stream: TextIO, *lines: str) -> None:
    for line in lines:
        print(line, file=stream)
    stream.flush()
