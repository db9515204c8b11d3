#!/usr/bin/env python3
"""Measure the HTML report and the JUnit file for a 60,000-result run.

Usage: python bench/report.py [--results 60000] [--history 5] [--repeat 5] [--mode each|load|both]
       python bench/report.py --screenshots docs/   # the README's pictures, from real runs

Builds a synthetic results store (``--history`` earlier runs of the same tests and the run
to report, ~1 % failing with a traceback and captured output, a crash that was retried, a
quarantined device), then measures what the issue's targets name:

- the HTML file's size (target <= 5 MB) and the time to generate it from the store
  (``build`` + ``write``, as ``testrack report --html`` does; target <= 3 s);
- in headless Chromium (Debian's ``/usr/bin/chromium`` through Playwright): first paint, from
  navigation start to the page's ``testrack-ready`` mark after its first frame (target < 1 s),
  and the time to apply a filter (typing into the text filter until the next frame is drawn;
  target < 100 ms), median of ``--repeat``;
- the size of ``testrack report --junitxml`` for the same run (GitLab reads up to 30 MB).

Each mode reports 20,000 tests x 3 devices; load mode 60,000 tests over 8 slots.

``--screenshots DIR`` instead runs a small suite twice in each mode on three simulated devices
(real pytest sessions) and saves the report's three views as PNG files in DIR.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from testrack.report import html, junit
from testrack.report.model import build
from testrack.store import Result, RunInfo, SQLiteStore

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run"]  # fmt: skip
TRACEBACK = """    def test_case(device, value):
        reading = device_reading(device, value)
>       assert reading == expected(value), f"reading off by {{reading - expected(value)}}"
E       AssertionError: reading off by {delta}
E       assert {reading} == {expected}

tests/hw/test_module_{module}.py:{line}: AssertionError"""


def _result(rnd: random.Random, nodeid: str, k: int, device: str, slot: int, started: float) -> Result:
    """One result: ~1 % failing with a traceback and captured output, like a real hardware suite."""
    duration = rnd.lognormvariate(-5.0, 1.0)
    outcome = rnd.choices(("passed", "failed", "skipped", "error"), (97.6, 1.0, 1.2, 0.2))[0]
    if outcome not in ("failed", "error"):
        return Result(nodeid, device, f"gw{slot}", outcome, duration, started, started + duration, k)
    delta = rnd.randrange(1, 9)
    text = TRACEBACK.format(delta=delta, reading=100 + delta, expected=100, module=k % 25, line=40 + k % 60)
    output = (
        ("Captured stdout call", f"measuring {nodeid} on {device}\n" * 3),
        ("Captured log call", "INFO  hw:probe.py:12 probe ready\n"),
    )
    message = f"AssertionError: reading off by {delta}"
    return Result(
        nodeid, device, f"gw{slot}", outcome, duration, started, started + duration, k,
        message=message, longrepr=text, sections=output,
    )  # fmt: skip


def synthetic_store(path: Path, results: int, mode: str, history: int, seed: int = 7) -> SQLiteStore:
    """``history`` earlier runs and one run to report, each with ``results`` results."""
    rnd = random.Random(seed)
    devices = [f"board-{d + 1}" for d in range(3)] if mode == "each" else ["local"]
    slots = 3 if mode == "each" else 8
    tests = results // len(devices) if mode == "each" else results
    ids = [
        f"tests/hw/test_module_{k % 25:02d}.py::TestGroup{k % 7}::test_case_{k % 97}[value-{k}]"
        for k in range(tests)
    ]
    store = SQLiteStore(path)
    for run_number in range(history + 1):
        t0 = 1_800_000_000.0 + run_number * 3600
        info = RunInfo(f"uid-{run_number}", t0, mode, "testrack.toml", f"pytest --rack-mode={mode}")
        run_id = store.begin_run(info)
        clock = [t0 + 0.4] * slots
        batch: list[Result] = []
        for k, nodeid in enumerate(ids):
            for d, device in enumerate(devices):
                slot = d if mode == "each" else min(range(slots), key=clock.__getitem__)
                result = _result(rnd, nodeid, k, device, slot, clock[slot] + rnd.random() * 0.0005)
                clock[slot] = result.stopped
                batch.append(result)
        crash = Result(
            ids[0], devices[0], "gw0", "crashed", 0.2, t0 + 1, t0 + 1.2, message="worker exited with code 7"
        )
        batch.insert(len(batch) // 2, crash)  # retried: the same test again later
        for start in range(0, len(batch), 5000):
            store.add_results(run_id, batch[start : start + 5000])
        if run_number == history and mode == "each":
            store.add_quarantine(run_id, devices[-1], "does not answer at 127.0.0.13", max(clock) - 1)
        store.finish_run(run_id, max(clock) + 0.2, "tests_failed")
    return store


def browser_figures(page_path: Path, repeat: int) -> tuple[float, float, list[float]]:
    """(first paint ms, median filter ms, every filter ms) in headless Chromium."""
    from playwright.sync_api import sync_playwright

    args = [*ARGS, *(["--no-sandbox"] if os.geteuid() == 0 else [])]
    paints, filters = [], []
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        viewport = {"width": 1400, "height": 900}
        context = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=args, viewport=viewport
        )
        for _ in range(repeat):
            page = context.new_page()
            page.goto(page_path.as_uri())
            page.wait_for_selector("html[data-ready='1']", timeout=60_000)
            paints.append(page.evaluate("performance.getEntriesByName('testrack-ready')[0].startTime"))
            for text in ("module_07", "value-4", ""):
                filters.append(
                    page.evaluate(
                        """async (text) => {
                            const input = document.getElementById("text");
                            const start = performance.now();
                            input.value = text;
                            input.dispatchEvent(new Event("input"));
                            await new Promise((done) => requestAnimationFrame(() => setTimeout(done, 0)));
                            return performance.now() - start;
                        }""",
                        text,
                    )
                )
            page.close()
        context.close()
    return statistics.median(paints), statistics.median(filters), filters


def measure(mode: str, results: int, history: int, repeat: int, tmp: Path) -> dict[str, float]:
    store_path = tmp / f"{mode}.sqlite"
    store = synthetic_store(store_path, results, mode, history)
    run = store.runs()[0]
    generate = []
    for _ in range(repeat):
        started = time.perf_counter()
        report = build(store, run)
        size = html.write(report, tmp / f"{mode}.html")
        generate.append(time.perf_counter() - started)
    started = time.perf_counter()
    written = junit.from_report(report, tmp / f"{mode}.xml", logging="all")
    junit_s = time.perf_counter() - started
    store.close()
    paint, filt, _ = browser_figures(tmp / f"{mode}.html", repeat)
    return {
        "results": len(report.results),
        "html_mb": size / 1e6,
        "generate_s": statistics.median(generate),
        "paint_ms": paint,
        "filter_ms": filt,
        "junit_mb": written.bytes / 1e6,
        "junit_s": junit_s,
    }


SCREENSHOT_SUITE = """
    import os, sys
    import pytest
    from testrack.sim import SimClient

    @pytest.mark.parametrize("ms", [40, 120, 80, 200, 60, 150, 90, 30, 250, 70])
    def test_transfer(device, ms):
        SimClient(device.address).work(ms)

    @pytest.mark.parametrize("channel", range(6))
    def test_adc_channel(device, channel):
        SimClient(device.address).work(25 + 10 * channel)
        if os.environ.get("SECOND") and device.name == "board-2" and channel == 4:
            print("channel 4 reads", 3.41, "V")
            assert 3.41 == pytest.approx(3.30, abs=0.05), "channel 4 out of range"

    def test_firmware_update(device):
        SimClient(device.address).work(300)
        if os.environ.get("SECOND") and device.name == "board-3":
            os._exit(3)

    @pytest.mark.skip(reason="needs a camera")
    def test_camera(device):
        pass
"""


def screenshots(out: Path) -> None:
    """Two real each-mode runs on simulated devices, then the report's views as PNG files."""
    from playwright.sync_api import sync_playwright

    from testrack.sim import SimRack

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "test_board.py").write_text(textwrap.dedent(SCREENSHOT_SUITE))
        with SimRack(3) as sim:
            sim.write_rack(root / "testrack.toml", mode="each")
            for env in ({}, {"SECOND": "1"}):
                command = [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    "--rack-html",
                    "report.html",
                ]
                subprocess.run(command, cwd=root, env={**os.environ, **env}, capture_output=True, timeout=300)
        args = [*ARGS, *(["--no-sandbox"] if os.geteuid() == 0 else [])]
        with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
            viewport = {"width": 1200, "height": 640}
            context = p.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=args, viewport=viewport
            )
            page = context.new_page()
            page.goto((root / "report.html").as_uri())
            page.wait_for_selector("html[data-ready='1']")
            page.screenshot(path=out / "report-tests.png")
            page.click('#tabs button[data-view="timeline"]')
            page.mouse.move(600, 260)
            page.screenshot(path=out / "report-timeline.png")
            page.click('#tabs button[data-view="failures"]')
            page.click(".row.failure >> nth=1")
            decoded = "!document.querySelector('.attempt.focus pre').textContent.startsWith('decoding')"
            page.wait_for_function(decoded)
            page.screenshot(path=out / "report-failure.png")
            context.close()
    for name in ("report-tests.png", "report-timeline.png", "report-failure.png"):
        print(f"{out / name}: {(out / name).stat().st_size / 1024:.0f} KiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=int, default=60_000)
    parser.add_argument("--history", type=int, default=5, help="earlier runs in the store (default 5)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--mode", choices=("each", "load", "both"), default="both")
    parser.add_argument(
        "--screenshots", type=Path, metavar="DIR", help="save the report's views as PNG files in DIR"
    )
    args = parser.parse_args(argv)
    if args.screenshots:
        screenshots(args.screenshots)
        return 0
    modes = ("each", "load") if args.mode == "both" else (args.mode,)
    machine = (
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}, Python {platform.python_version()}"
    )
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')}, {machine}; median of {args.repeat}; {args.history} earlier runs"
    )
    print()
    print("| mode | results | HTML MB (<= 5) | generate s (<= 3) | first paint ms (< 1000) "
          "| filter ms (< 100) | JUnit MB (< 30) | JUnit s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            f = measure(mode, args.results, args.history, args.repeat, Path(tmp))
            cells = [
                f"{f['results']:,.0f}",
                f"{f['html_mb']:.2f}",
                f"{f['generate_s']:.2f}",
                f"{f['paint_ms']:.0f}",
            ]
            cells += [f"{f['filter_ms']:.0f}", f"{f['junit_mb']:.1f}", f"{f['junit_s']:.2f}"]
            print(f"| {mode} | {' | '.join(cells)} |")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
