"""``--rack-html`` and ``--junitxml`` after real rack runs; ``testrack report`` on what they stored."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pytest

SUITE = """
    import sys
    import pytest

    @pytest.mark.parametrize("n", range(3))
    def test_work(device, n):
        print("working on", device.name, n)

    def test_broken_on_board_2(device):
        print("checking", device.name)
        sys.stderr.write("stderr of " + device.name + "\\n")
        assert device.name != "board-2", "board-2 is broken"

    def test_skipped(device):
        pytest.skip("not today")
"""


def _cases(
    path: Path,
) -> set[tuple[str | None, str | None, str | None, tuple[str, ...], tuple[tuple[str, str], ...]]]:
    """(suite hostname, classname, name, outcome tags, properties) of every test case."""
    found = set()
    for suite in ET.parse(path).getroot().iter("testsuite"):
        for case in suite.iter("testcase"):
            tags = tuple(sorted(c.tag for c in case if c.tag in ("failure", "error", "skipped")))
            props = tuple(sorted((p.get("name") or "", p.get("value") or "") for p in case.iter("property")))
            found.add((suite.get("hostname"), case.get("classname"), case.get("name"), tags, props))
    return found


def _payload(page: Path) -> dict:
    text = re.search(
        r'<script id="report-data" type="application/octet-stream">([^<]*)</script>', page.read_text()
    )
    assert text is not None
    return json.loads(zlib.decompress(base64.b64decode(text.group(1))))


def _testrack(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "testrack", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_each_mode_on_simulated_devices_gives_a_page_and_junit_per_device(pytester, testrack_sim) -> None:
    """Each mode on 3 simulated devices: distinct cases name@device in one suite per device, the
    HTML page written, and `testrack report --junitxml` from the store gives the same cases."""
    sim = testrack_sim(3)
    sim.write_rack(pytester.path / "testrack.toml", mode="each")
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--rack-html", "report.html", "--junitxml", "junit.xml"
    )  # fmt: skip
    result.assert_outcomes(passed=11, failed=1, skipped=3)
    result.stdout.re_match_lines(
        [rf"testrack: HTML report: {re.escape(str(pytester.path))}/report.html \(\d+\.\d MB, \d+\.\d s\)"]
    )
    cases = _cases(pytester.path / "junit.xml")
    assert len(cases) == 15
    names = sorted((host, name) for host, _c, name, _t, _p in cases)
    tests = ["test_broken_on_board_2", "test_skipped", "test_work[0]", "test_work[1]", "test_work[2]"]
    assert names == sorted((f"board-{i}", f"{t}@board-{i}") for t in tests for i in (1, 2, 3))
    for host, _classname, _name, _tags, props in cases:
        assert dict(props)["device"] == host and re.fullmatch(r"gw\d", dict(props)["worker"])
    failed = [(host, name) for host, _c, name, tags, _p in cases if tags == ("failure",)]
    assert failed == [("board-2", "test_broken_on_board_2@board-2")]
    suites = ET.parse(pytester.path / "junit.xml").getroot().findall("testsuite")
    assert [s.get("hostname") for s in suites] == ["board-1", "board-2", "board-3"]
    assert all(
        re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+[+-]\d\d:\d\d", s.get("timestamp") or "")
        for s in suites
    )

    data = _payload(pytester.path / "report.html")
    assert data["summary"]["counts"] == "1 failed, 11 passed, 3 skipped"
    assert data["run"]["mode"] == "each" and data["run"]["outcome"] == "tests_failed"
    assert len(data["lanes"]) == 3

    again = _testrack(pytester.path, "report", "--junitxml", "store.xml", "--html", "again.html")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        "wrote again.html: run 1, 15 results (0.0 MB)",
        "wrote store.xml: run 1, 15 test cases in 3 suites (0.0 MB)",
    ]
    assert _cases(pytester.path / "store.xml") == cases


def test_load_mode_keeps_pytest_names_with_device_and_worker(pytester) -> None:
    """Load mode on local:2: plain pytest names, one suite for the local device, worker properties."""
    pytester.makepyfile(
        test_load="import pytest\n\n@pytest.mark.parametrize('n', range(6))\ndef test_x(n):\n    pass\n"
    )
    result = pytester.runpytest_subprocess(
        "--rack", "local:2", "-p", "no:cacheprovider", "--junitxml", "j.xml"
    )
    result.assert_outcomes(passed=6)
    cases = _cases(pytester.path / "j.xml")
    assert sorted(name or "" for _h, _c, name, _t, _p in cases) == [f"test_x[{n}]" for n in range(6)]
    assert {host for host, *_ in cases} == {"local"}
    assert {dict(props)["worker"] for *_, props in cases} <= {"gw0", "gw1"}
    assert all(dict(props)["device"] == "local" for *_, props in cases)


def test_rack_html_with_the_store_off_says_why_there_is_no_report(pytester) -> None:
    pytester.makepyfile(test_a="def test_a():\n    pass\n")
    result = pytester.runpytest_subprocess(
        "--rack", "local:1", "--rack-store", "off", "--rack-html", "r.html", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "testrack: --rack-html: no report, as --rack-store off keeps no results; use --rack-store memory "
            "to keep this run's results for the report without a file"
        ]
    )
    assert not (pytester.path / "r.html").exists()


def test_rack_html_works_with_a_memory_store(pytester) -> None:
    pytester.makepyfile(test_a="def test_a():\n    pass\n\ndef test_b():\n    assert False\n")
    result = pytester.runpytest_subprocess(
        "--rack", "local:2", "--rack-store", "memory", "--rack-html", "out/r.html", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=1, failed=1)
    data = _payload(pytester.path / "out" / "r.html")
    assert data["summary"]["counts"] == "1 failed, 1 passed"
    assert not (pytester.path / ".testrack").exists()


@pytest.mark.parametrize("mode", ["load", "each"])
def test_junit_of_a_retried_crash_has_one_case_per_result(pytester, testrack_sim, mode) -> None:
    """A crash retried with --rack-retry-crashed (each mode: on board-1): pytest's file
    and the store's hold the final result only."""
    sim = testrack_sim(2)
    sim.write_rack(pytester.path / "testrack.toml", mode=mode)
    pytester.makepyfile(
        test_crash=f"""
        import os
        MODE = {mode!r}

        def test_crashes_once(device):
            if (MODE == "load" or device.name == "board-1") and not os.path.exists("crashed"):
                open("crashed", "w").close()
                os._exit(7)

        def test_fine(device):
            pass
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--rack-retry-crashed", "1", "--junitxml", "j.xml", "--rack-html", "r.html"
    )  # fmt: skip
    per_device = 2 if mode == "each" else 1
    result.assert_outcomes(passed=2 * per_device)
    assert (pytester.path / "crashed").exists()
    cases = _cases(pytester.path / "j.xml")
    assert len(cases) == 2 * per_device
    assert _testrack(pytester.path, "report", "--junitxml", "s.xml").returncode == 0
    assert _cases(pytester.path / "s.xml") == cases
    summary = _payload(pytester.path / "r.html")["summary"]
    assert summary["counts"] == f"{2 * per_device} passed" and summary["retried"] == 1


def test_a_report_that_cannot_be_written_costs_a_warning_not_the_verdict(pytester) -> None:
    """--rack-html into a path under a file: one line that says so, and the run still passes."""
    pytester.makepyfile(test_a="def test_a():\n    pass\n")
    pytester.path.joinpath("taken").write_text("a file, not a directory")
    result = pytester.runpytest_subprocess(
        "--rack", "local:1", "--rack-html", "taken/r.html", "-p", "no:cacheprovider"
    )  # fmt: skip
    assert result.ret == 0
    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines(
        [rf"testrack: --rack-html: cannot write {re.escape(str(pytester.path))}/taken/r.html \(.+\)"]
    )
