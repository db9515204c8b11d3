"""The HTML report in a real browser (Debian's Chromium, driven by Playwright): what a person sees.

The reports come from real rack runs: pytest sessions on simulated devices (real TCP servers)
in each mode, twice so that the history has an earlier run, and one on ``--rack local:2``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from testrack.report import html
from testrack.report.model import from_results
from testrack.sim import SimRack
from testrack.store import Result, Run

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run",
]  # fmt: skip
FAILED_RED = (214, 58, 58)  # --o-failed in page.css

SUITE = """
    import os, sys, time
    import pytest
    from testrack.sim import SimClient

    @pytest.mark.parametrize("n", range(4))
    def test_work(device, n):
        SimClient(device.address).work(30)

    def test_broken_on_board_2(device):
        print("checking", device.name)
        sys.stderr.write("stderr of " + device.name + "\\n")
        if os.environ.get("BREAK"):
            assert device.name != "board-2", "board-2 is broken"

    def test_skipped(device):
        pytest.skip("not today")
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Chromium from the system's packages (scripts/system-packages.sh installs it)."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/system-packages.sh (installs Debian's chromium)")
    args = [*CHROMIUM_ARGS, *(["--no-sandbox"] if os.geteuid() == 0 else [])]
    with playwright_api.sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        viewport = {"width": 1400, "height": 900}
        context = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=args, viewport=viewport
        )
        yield context
        context.close()


@pytest.fixture(scope="module")
def each_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real each-mode runs on 3 simulated devices; the second breaks test_broken_on_board_2 on board-2."""
    root = tmp_path_factory.mktemp("each")
    (root / "test_suite.py").write_text(textwrap.dedent(SUITE))
    with SimRack(3) as sim:
        sim.write_rack(root / "testrack.toml", mode="each")
        for env, extra in (({}, []), ({"BREAK": "1"}, ["--rack-html", "report.html"])):
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra],
                cwd=root, env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert proc.returncode == (1 if env else 0), proc.stdout[-3000:]
    return root / "report.html"


def open_report(browser, path: Path, requests: list[str] | None = None):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    if requests is not None:
        page.on("request", lambda request: requests.append(request.url))
    page.goto(path.as_uri())
    page.wait_for_selector("html[data-ready='1']", timeout=10_000)
    assert errors == []
    return page


def pixel(page, x: float, y: float) -> tuple[int, int, int]:
    """The colour the timeline's canvas shows at a point of the page."""
    return tuple(
        page.evaluate(
            """([x, y]) => {
                const canvas = document.getElementById("tl-canvas"), box = canvas.getBoundingClientRect();
                const dpr = canvas.width / box.width;
                const ctx = canvas.getContext("2d");
                const data = ctx.getImageData((x - box.left) * dpr, (y - box.top) * dpr, 1, 1).data;
                return [data[0], data[1], data[2]];
            }""",
            [x, y],
        )
    )


def test_the_summary_and_the_matrix_show_which_device_failed_which_test(browser, each_report: Path) -> None:
    """The header gives the verdict and counts; the broken test's matrix row: failed on board-2 only."""
    requests: list[str] = []
    page = open_report(browser, each_report, requests)
    assert page.inner_text("#verdict") == "tests failed"
    assert page.inner_text("#counts") == "18 results of 6 tests: 1 failed, 14 passed, 3 skipped"
    assert "board-2: FAILED - 1 failed, 4 passed, 1 skipped" in page.inner_text("#devices")
    assert page.locator("#tests-head span").all_inner_texts() == [
        "test", "board-1", "board-2", "board-3", "time", "history",
    ]  # fmt: skip
    row = page.locator('.row[data-test="test_suite.py::test_broken_on_board_2"]')
    cells = row.locator(".cell")
    assert cells.all_inner_texts() == ["passed", "failed", "passed"]
    assert [cells.nth(k).get_attribute("data-device") for k in range(3)] == ["board-1", "board-2", "board-3"]
    background = cells.nth(1).evaluate("cell => getComputedStyle(cell).backgroundColor")
    assert background == "rgb({}, {}, {})".format(*FAILED_RED)
    skipped = page.locator('.row[data-test="test_suite.py::test_skipped"] .cell')
    assert skipped.all_inner_texts() == ["skipped"] * 3
    assert requests == [each_report.as_uri()]  # nothing fetched but the file itself
    page.close()


def test_the_timeline_has_a_lane_per_slot_with_bars_that_say_what_ran(browser, each_report: Path) -> None:
    """Three lanes with bars; hovering the failed bar names the test, the device and the duration."""
    page = open_report(browser, each_report)
    page.click('#tabs button[data-view="timeline"]')
    labels = page.locator(".lane-label")
    assert labels.all_inner_texts() == ["gw0 · board-1", "gw1 · board-2", "gw2 · board-3"]
    for k in range(3):
        assert int(labels.nth(k).get_attribute("data-bars") or 0) >= 6  # every test of the run drew a bar
    box = page.evaluate("testrackReport.barBox('test_suite.py::test_broken_on_board_2', 'board-2')")
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    assert pixel(page, x, y) == FAILED_RED
    work = page.evaluate("testrackReport.barBox('test_suite.py::test_work[0]', 'board-1')")
    assert work["width"] > 3  # a 30 ms test is a visible bar, not a hairline
    page.mouse.move(x, y)
    tip = page.locator("#tip")
    tip.wait_for(state="visible")
    text = tip.inner_text()
    assert text.startswith("test_suite.py::test_broken_on_board_2\nfailed on board-2 (worker gw1)\ntook ")
    assert "board-2 is broken" in text
    page.mouse.click(x, y)
    assert page.inner_text("#detail h2") == "test_suite.py::test_broken_on_board_2"
    page.close()


def test_filters_hide_rows_and_columns(browser, each_report: Path) -> None:
    """Text, outcome and device filters: rows that do not match go, and the count says so."""
    page = open_report(browser, each_report)
    rows = page.locator("#tests-rows .row")
    assert rows.count() == 6 and page.inner_text("#shown") == "6 of 6 tests shown"
    page.fill("#text", "work[")
    assert rows.count() == 4 and page.inner_text("#shown") == "4 of 6 tests shown"
    page.fill("#text", "is broken")  # messages match too
    (only,) = page.locator("#tests-rows .row").all_inner_texts()
    assert only.startswith("test_suite.py::test_broken_on_board_2")
    page.fill("#text", "")
    page.click("#only-failing")
    assert [r.get_attribute("data-test") for r in rows.all()] == ["test_suite.py::test_broken_on_board_2"]
    page.click("#all-outcomes")
    page.click('.chip[data-outcome="passed"]')
    assert sorted(r.get_attribute("data-test") or "" for r in rows.all()) == [
        "test_suite.py::test_broken_on_board_2",
        "test_suite.py::test_skipped",
    ]
    page.click('.chip[data-outcome="passed"]')
    page.select_option("#device", label="board-2")
    assert page.locator("#tests-head span").all_inner_texts() == ["test", "board-2", "time", "history"]
    page.click('#tabs button[data-view="timeline"]')
    assert page.locator(".lane-label").all_inner_texts() == ["gw1 · board-2"]
    page.close()


def test_a_failure_shows_its_traceback_after_a_click_and_output_on_demand(browser, each_report: Path) -> None:
    page = open_report(browser, each_report)
    page.click('#tabs button[data-view="failures"]')
    assert page.inner_text('#tabs button[data-view="failures"]') == "Failures (1)"
    assert page.locator("#detail").is_hidden()
    page.click('.row.failure[data-device="board-2"]')
    attempt = page.locator(".attempt.focus")
    traceback = attempt.locator("details.traceback pre")
    traceback.wait_for(state="visible")
    # Playwright's own matcher, polled in its utility world: the report's Content Security Policy
    # forbids eval, which wait_for_function uses for a string once its first check fails.
    playwright_api.expect(traceback).not_to_have_text(re.compile(r"^decoding"))
    text = traceback.inner_text()
    assert "def test_broken_on_board_2(device):" in text and "AssertionError: board-2 is broken" in text
    stdout = attempt.locator("details.captured", has_text="Captured stdout call")
    assert stdout.locator("pre").is_hidden()  # output only when asked for
    stdout.locator("summary").click()
    assert stdout.locator("pre").inner_text() == "checking board-2\n"
    assert attempt.locator("details.captured", has_text="Captured stderr call").count() == 1
    history = page.locator("#detail .hist-runs span").all_inner_texts()
    assert history == ["run 1: passed", "run 2: failed (this run)"]
    page.close()


def test_load_mode_on_local_slots_draws_one_lane_per_slot(pytester: pytest.Pytester, browser) -> None:
    """--rack local:2 --rack-html: two lanes of the one local device, each with bars; no matrix columns."""
    pytester.makepyfile(
        test_load="import time, pytest\n\n@pytest.mark.parametrize('n', range(8))\n"
        "def test_x(n):\n    time.sleep(0.05)\n"
    )
    result = pytester.runpytest_subprocess(
        "--rack", "local:2", "--rack-html", "r.html", "-p", "no:cacheprovider"
    )  # fmt: skip
    result.assert_outcomes(passed=8)
    page = open_report(browser, pytester.path / "r.html")
    assert page.locator("#tests-head span").all_inner_texts() == [
        "test", "outcome", "device", "worker", "time", "history",
    ]  # fmt: skip
    page.click('#tabs button[data-view="timeline"]')
    labels = page.locator(".lane-label")
    assert labels.all_inner_texts() == ["gw0 · local", "gw1 · local"]
    bars = [int(labels.nth(k).get_attribute("data-bars") or 0) for k in range(2)]
    assert sum(bars) == 8 and min(bars) >= 1
    page.close()


def test_a_large_run_draws_only_the_rows_on_screen(browser, tmp_path: Path) -> None:
    """20,000 results: a few dozen rows in the page, the right one after scrolling to the end."""
    run = Run(1, "u", 1000.0, "load", "local:4", "pytest", 1400.0, "ok")
    results = [
        Result(f"t{k % 40}.py::test_{k}", "local", f"gw{k % 4}", "passed", 0.01, start, start + 0.01)
        for k, start in ((k, 1000 + k * 0.02) for k in range(20_000))
    ]
    path = tmp_path / "big.html"
    html.write(from_results(run, results), path)
    page = open_report(browser, path)
    assert page.inner_text("#shown") == "20,000 of 20,000 tests shown"
    assert 10 < page.locator("#tests-rows .row").count() < 120
    page.eval_on_selector("#tests-scroll", "s => s.scrollTop = s.scrollHeight")
    page.wait_for_selector('.row[data-test="t39.py::test_19999"]')
    assert page.locator("#tests-rows .row").count() < 120
    page.close()
