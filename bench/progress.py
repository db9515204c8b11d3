#!/usr/bin/env python3
"""What the live view costs: rack runs in a pseudo-terminal with --rack-progress live against off.

Usage: python bench/progress.py [--workloads W3,W6] [--pairs 5] [--drivers tick]
                                [--out table.md] [--screenshot docs/progress-live.png]

Generates W3 (5,000 trivial tests, --rack local:2) and W6 (20,000 tests of 10 ms, --rack
local:64) with ../shared/bench/gen.py (set PEERBENCH_SHARED when it is elsewhere) under
.peerbench/, then runs each in a real pseudo-terminal (pexpect, 40 x 120, output drained as
it comes) with ``--rack-progress off`` and ``live``, in pairs whose order alternates, and
reports the median wall time of each and the median of the paired overheads (target ≤ 2 %).
``--drivers tick,thread`` adds live runs whose view is redrawn by a thread of its own
(TESTRACK_PROGRESS_THREAD=1) instead of the run loop's tick. The CPU column is the user +
system time of the whole run (controller and workers), from the kernel's accounting.

``--screenshot FILE`` instead runs a small suite on three simulated devices in a pseudo-terminal,
keeps the screen (pyte) while a slow test runs, and draws it as a PNG in headless Chromium
(Debian's /usr/bin/chromium through Playwright), for the README.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pexpect
import pyte

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = Path(os.environ.get("PEERBENCH_SHARED", ROOT.parent / "shared" / "bench"))
CHROMIUM = "/usr/bin/chromium"
ROWS, COLS = 40, 120
TARGET = 0.02

#: workload -> pytest arguments of its rack run
WORKLOADS = {
    "W3": ["--rack", "local:2"],
    "W6": ["--rack", "local:64"],
}


#: A plugin that writes the controller's own CPU seconds (not its workers') when it ends.
CPU_PLUGIN = """
import os

def pytest_unconfigure(config):
    path = os.environ.get("TESTRACK_BENCH_CPU")
    if path and not hasattr(config, "workerinput"):
        times = os.times()
        with open(path, "w") as f:
            f.write(repr(times.user + times.system))
"""


def run_once(suite: Path, args: list[str], env: dict[str, str]) -> tuple[float, float, float, int]:
    """Wall seconds, CPU seconds (all processes; the controller's own) of one pytest run in a
    pseudo-terminal, and its exit status."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "testrack_bench_cpu.py").write_text(CPU_PLUGIN)
        env = dict(env, PYTHONPATH=os.pathsep.join(filter(None, [tmp, env.get("PYTHONPATH")])))
        env["TESTRACK_BENCH_CPU"] = str(Path(tmp, "cpu"))
        wall, status = _spawn(suite, ["-p", "testrack_bench_cpu", *args], env)
        controller = float(Path(tmp, "cpu").read_text())
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, controller, status


def _spawn(suite: Path, args: list[str], env: dict[str, str]) -> tuple[float, int]:
    started = time.perf_counter()
    child = pexpect.spawn(
        sys.executable, ["-m", "pytest", *args], cwd=str(suite), env=env, dimensions=(ROWS, COLS)
    )
    while True:
        try:
            child.read_nonblocking(1 << 16, timeout=5)
        except pexpect.TIMEOUT:
            continue
        except pexpect.EOF:
            break
    child.close()
    return time.perf_counter() - started, child.exitstatus if child.exitstatus is not None else -1


def _env(thread: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "CI")}
    env["TERM"] = "xterm-256color"
    env.pop("TESTRACK_PROGRESS_THREAD", None)
    if thread:
        env["TESTRACK_PROGRESS_THREAD"] = "1"
    return env


def measure(workloads: Path, names: list[str], pairs: int, drivers: list[str]) -> str:
    variants = [("off", "off", False)] + [
        (f"live ({driver})", "live", driver == "thread") for driver in drivers
    ]
    rows = []
    for name in names:
        suite = workloads / name
        base = ["-q", "-p", "no:cacheprovider", "-p", "no:randomly", "--rack-store", "memory"]
        base += WORKLOADS[name]
        figures: dict[str, list[tuple[float, float, float]]] = {label: [] for label, _, _ in variants}
        run_once(suite, [*base, "--rack-progress", "off"], _env())  # warm-up: caches, bytecode
        for k in range(pairs):
            order = variants if k % 2 == 0 else list(reversed(variants))
            for label, mode, thread in order:
                wall, cpu, controller, status = run_once(
                    suite, [*base, "--rack-progress", mode], _env(thread)
                )
                if status != 0:
                    raise SystemExit(f"error: {name} {label} exited with {status}")
                figures[label].append((wall, cpu, controller))
                print(
                    f"{name} {label}: {wall:.2f} s wall, {cpu:.2f} s CPU, controller {controller:.2f} s",
                    file=sys.stderr,
                )
        for label, _, _ in variants:
            medians = [statistics.median(f[i] for f in figures[label]) for i in range(3)]
            cells = [f"{m:.2f}" for m in medians]
            for i in range(3):
                if label == "off":
                    cells.append("")
                else:
                    ratios = [f[i] / o[i] - 1 for f, o in zip(figures[label], figures["off"], strict=True)]
                    cells.append(f"{statistics.median(ratios):+.1%}")
            rows.append(f"| {name} | {label} | " + " | ".join(cells) + " |")
    head = (
        "| workload | --rack-progress | wall s | CPU s (all) | controller CPU s | wall vs off | "
        "CPU vs off | controller CPU vs off |\n|---|---|---|---|---|---|---|---|"
    )
    return (
        head
        + "\n"
        + "\n".join(rows)
        + f'\n\nMedians of {pairs} pairs; "vs off": the median of the paired ratios.\n'
    )


def redraw_cost(repeat: int = 300) -> str:
    """CPU milliseconds of one redraw of the live view (rich's rendering and writing, into memory),
    for a rack of 2 and of 64 slots on a 40 x 120 terminal, with and without held pytest lines."""
    import io

    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    from testrack.progress import REDRAW_PERIOD, RunView, SlotView, _Board

    out = []
    for slots in (2, 64):
        views = tuple(
            SlotView(f"gw{k}", "local", f"tests/test_mod_{k}.py::test_case[{k}]", True, 1.5, False, 100, 5000)
            for k in range(slots)
        )
        board = _Board()
        board.view = RunView(views, 3000, 5000, 2, 40.0)
        console = Console(
            file=io.StringIO(), force_terminal=True, force_interactive=True, width=COLS, height=ROWS
        )
        live = Live(board, console=console, auto_refresh=False, transient=True, redirect_stdout=False)
        live.start(refresh=True)
        started = time.process_time()
        for _ in range(repeat):
            live.refresh()
        plain = (time.process_time() - started) / repeat
        started = time.process_time()
        for _ in range(repeat):
            console.print(
                Text.from_ansi("test_x.py \x1b[32m....\x1b[0m\n[gw0] PASSED test_x.py::t"), soft_wrap=True
            )
        held = (time.process_time() - started) / repeat
        live.stop()
        out.append(
            f"- {slots} slots: {plain * 1e3:.2f} ms a redraw, {held * 1e3:.2f} ms with two held lines: "
            f"{max(plain, held) / REDRAW_PERIOD:.1%} of a core at {1 / REDRAW_PERIOD:g} Hz"
        )
    return "One redraw of the live view (CPU time):\n\n" + "\n".join(out) + "\n"


SCREENSHOT_SUITE = """
import time
from pathlib import Path

import pytest

SLOW = Path(__file__).with_name("slow")


@pytest.mark.parametrize("channel", range(12))
def test_adc_channel(device, channel):
    time.sleep(0.2)


def test_firmware_update(device):
    time.sleep(20 if SLOW.exists() and device.name == "board-2" else 1)


def test_reboot(device):
    assert device.name != "board-3", "board-3 did not come back within 5 s"


def test_camera_stream(device):
    time.sleep(2 if device.name == "board-1" else 6)
"""


def screenshot(out: Path) -> None:
    """A real terminal's screen during a run on simulated devices, drawn as a PNG: the suite
    runs once to have a history, then again with a firmware update that overruns on board-2."""
    from testrack.sim import SimRack

    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp)
        suite.joinpath("test_board.py").write_text(SCREENSHOT_SUITE)
        rack = SimRack(3, kind="board").start()
        # only testrack's plugin: the header shows what a project would see, not this venv's plugins
        env = dict(_env(), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
        args = ["-p", "testrack.plugin", "-p", "no:cacheprovider", "--rack-mode", "each"]
        rows, cols = 22, 100
        try:
            rack.write_rack(suite / "testrack.toml")
            subprocess.run(
                [sys.executable, "-m", "pytest", *args, "-q"], cwd=suite, env=env, stdout=subprocess.DEVNULL
            )
            suite.joinpath("slow").touch()
            screen = pyte.Screen(cols, rows)
            stream = pyte.ByteStream(screen)
            child = pexpect.spawn(
                sys.executable, ["-m", "pytest", *args], cwd=str(suite), env=env, dimensions=(rows, cols)
            )
            shot = None
            while shot is None:
                with contextlib.suppress(pexpect.TIMEOUT):
                    stream.feed(child.read_nonblocking(1 << 16, timeout=0.2))
                lines = [line.rstrip() for line in screen.display]
                if any("SLOW" in line for line in lines) and any(
                    "test_camera_stream" in line for line in lines
                ):
                    shot = _html(screen)
            child.terminate(force=True)
        finally:
            rack.stop()
        page = suite / "screen.html"
        page.write_text(shot)
        _draw(page, out)


def _html(screen: pyte.Screen) -> str:
    """The screen as HTML: one span per run of characters of one colour."""
    colours = {
        "default": "#d8dee9",
        "red": "#ef6b73",
        "green": "#8fc97a",
        "yellow": "#e6c46a",
        "blue": "#7aa6da",
        "magenta": "#c397d8",
        "cyan": "#70c0ba",
        "white": "#eceff4",
        "black": "#2e3440",
        "brightblack": "#6c7380",
    }
    used = max((y for y in range(screen.lines) if screen.display[y].strip()), default=0) + 1
    rows = []
    for y in range(used):
        line = screen.buffer[y]
        spans = []
        for x in range(screen.columns):
            char = line[x]
            # pyte names the 16 colours and gives 256-colour and true-colour ones as hex
            colour = colours.get(char.fg) or (f"#{char.fg}" if len(char.fg) == 6 else colours["default"])
            if char.fg == "default" and getattr(char, "bold", False):
                colour = colours["white"]
            weight = "bold" if char.bold else "normal"
            style = f"color:{colour};font-weight:{weight}"
            text = html.escape(char.data)
            if spans and spans[-1][0] == style:
                spans[-1][1].append(text)
            else:
                spans.append((style, [text]))
        rows.append("".join(f'<span style="{s}">{"".join(t)}</span>' for s, t in spans))
    body = "\n".join(rows)
    return (
        "<!doctype html><meta charset=utf-8><style>body{margin:0;background:#2e3440}"
        "pre{margin:0;padding:14px 16px;font:13px/1.35 'DejaVu Sans Mono',monospace;color:#d8dee9}"
        f"</style><pre>{body}</pre>"
    )


def _draw(page: Path, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, viewport={"width": 860, "height": 400}
        )
        try:
            tab = context.new_page()
            tab.goto(page.as_uri())
            tab.locator("pre").screenshot(path=str(out))
        finally:
            context.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="W3,W6")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--drivers", default="tick", help="tick, thread, or both (comma-separated)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--screenshot", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.screenshot:
        screenshot(args.screenshot)
        print(f"wrote {args.screenshot}")
        return 0
    if not (SHARED / "gen.py").is_file():
        print(
            f"error: no benchmark generator at {SHARED / 'gen.py'}; set PEERBENCH_SHARED to ../shared/bench",
            file=sys.stderr,
        )
        return 2
    workloads = ROOT / ".peerbench" / "workloads"
    if not all((workloads / name / "meta.json").is_file() for name in WORKLOADS):
        subprocess.run(
            [sys.executable, str(SHARED / "gen.py"), str(workloads)], check=True, stdout=subprocess.DEVNULL
        )
    names = [n for n in args.workloads.split(",") if n]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        print(f"error: --workloads {','.join(unknown)}: this benchmark runs W3 and W6", file=sys.stderr)
        return 2
    table = (
        redraw_cost()
        + "\n"
        + measure(workloads, names, args.pairs, [d for d in args.drivers.split(",") if d])
    )
    print(table)
    if args.out:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
