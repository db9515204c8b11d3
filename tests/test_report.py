"""The report's data, page and JUnit XML, checked without a browser (tests/test_report_browser.py
checks what a person sees), and ``testrack report``'s messages."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pytest
from _pytest.junitxml import mangle_test_address

from testrack.cli import main
from testrack.report import html, junit
from testrack.report.model import SUPERSEDED, build, from_results, natural_key
from testrack.store import Result, Run, RunInfo, SQLiteStore

T0 = 1_800_000_000.0
RUN = Run(7, "uid-7", T0, "each", "testrack.toml", "pytest --rack-mode=each", T0 + 10, "tests_failed")
NO_DEVICE = "no device in the rack can run this test"
TRACEBACK = "def test_b():\n>       assert 1 == 2\nE       assert 1 == 2"
OUTPUT = (
    ("Captured stdout call", "out\n"),
    ("Captured stderr call", "err\n"),
    ("Captured log call", "log\n"),
)


def _r(nodeid, device, worker, outcome, start, stop, **kw) -> Result:
    return Result(nodeid, device, worker, outcome, stop - start, T0 + start, T0 + stop, **kw)


def each_mode_results() -> list[Result]:
    """Two tests on board-2 and board-10; test_b fails on board-10, and crashes once before that."""
    return [
        _r("t.py::test_a", "board-2", "gw0", "passed", 1.0, 2.0),
        _r("t.py::test_a", "board-10", "gw1", "passed", 1.0, 1.5),
        _r("t.py::test_b", "board-10", "gw1", "crashed", 1.5, 2.5, message="worker exited with code 7"),
        _r("t.py::test_b", "board-2", "gw0", "passed", 2.0, 3.0),
        _r("t.py::test_b", "board-10", "gw1", "failed", 3.0, 4.0, message="assert 1 == 2",
           longrepr=TRACEBACK, sections=OUTPUT),
        _r("t.py::test_c", "-", "-", "unmatched", 0.5, 0.5, message=NO_DEVICE),
    ]  # fmt: skip


def test_results_become_columns_with_each_name_once() -> None:
    """Tests, devices, lanes and messages are tables; results are columns of indexes into them."""
    report = from_results(RUN, each_mode_results(), quarantines=[("board-2", "gone", T0 + 5)])
    assert report.tests == ["t.py::test_a", "t.py::test_b", "t.py::test_c"]
    assert report.devices == ["-", "board-2", "board-10"]  # natural order: board-2 before board-10
    assert report.lanes == [("gw0", 1), ("gw1", 2)]
    r = report.results
    assert len({len(column) for column in vars(r).values()}) == 1 == len({len(r)})
    assert [report.tests[t] for t in r.test] == [x.nodeid for x in each_mode_results()]
    assert r.lane == [0, 1, 1, 0, 1, -1]
    assert report.messages == ["worker exited with code 7", "assert 1 == 2", NO_DEVICE]
    assert r.detail == [-1, -1, -1, -1, 0, -1] and report.details[0].longrepr == TRACEBACK
    assert report.origin == T0 and r.start[0] == 1_000_000 and r.stop[4] == 4_000_000
    assert report.quarantines == [(1, "gone", 5_000_000)]


def test_a_test_on_several_devices_is_on_the_lane_of_each_of_its_devices() -> None:
    """Stored once per device under its first device's slot: each copy goes on its device's lane."""
    results = [
        _r("t.py::test_one", "board-1", "gw0", "passed", 0.0, 1.0),
        _r("t.py::test_one", "board-2", "gw1", "passed", 0.0, 1.0),
        _r("t.py::test_pair", "board-1", "gw0", "passed", 1.0, 2.0),
        _r("t.py::test_pair", "board-2", "gw0", "passed", 1.0, 2.0),
    ]
    report = from_results(RUN, results)
    assert report.lanes == [("gw0", 0), ("gw1", 1)]
    assert report.results.lane == [0, 1, 0, 1]


def test_a_test_on_several_devices_is_one_attempt_on_each_of_them() -> None:
    """Its rows (one per device, the same worker and times) are one attempt: a retry replaces all
    of them, they do not replace each other, and in each mode a run on the same devices in other
    roles is another run, not a retry. A device whose worker ran nothing else gets a lane."""
    load = dataclasses.replace(RUN, mode="load")
    crash = [_r("t.py::pair", d, "gw0", "crashed", 1.0, 2.0) for d in ("board-1", "board-2")]
    final = [_r("t.py::pair", d, "gw0", "passed", 3.0, 4.0) for d in ("board-1", "board-2")]
    report = from_results(load, [*crash, *final])
    assert [f & SUPERSEDED for f in report.results.flags] == [1, 1, 0, 0]
    assert report.summary()["retried"] == 2 and report.summary()["counts"] == "2 passed"
    assert sorted(report.lanes) == [("board-2 (lent)", 1), ("gw0", 0)]
    assert sorted(report.results.lane) == [0, 0, 1, 1]
    swapped = [
        *[_r("t.py::call", d, "gw0", "failed", 1.0, 2.0) for d in ("phone-1", "phone-2")],
        *[_r("t.py::call", d, "gw1", "passed", 3.0, 4.0) for d in ("phone-2", "phone-1")],
    ]
    each = from_results(RUN, swapped)
    assert each.results.flags == [0, 0, 0, 0] and each.summary()["failing"] == 2


def test_a_retried_attempt_is_marked_and_not_counted() -> None:
    """The crash that was retried on the same device (each mode) is superseded; the summary counts finals."""
    report = from_results(RUN, each_mode_results())
    assert [f & SUPERSEDED for f in report.results.flags] == [0, 0, 1, 0, 0, 0]
    summary = report.summary()
    assert summary["results"] == 5 and summary["retried"] == 1 and summary["failing"] == 2
    assert summary["by_outcome"] == {"failed": 1, "unmatched": 1, "passed": 3}
    devices = {d["name"]: (d["verdict"], d["counts"]) for d in summary["devices"]}
    assert devices == {
        "(no device)": ("FAILED", "1 unmatched"),
        "board-2": ("ok", "2 passed"),
        "board-10": ("FAILED", "1 failed, 1 passed"),
    }


def test_in_load_mode_a_retry_elsewhere_supersedes_the_first_attempt() -> None:
    run = Run(3, "u", T0, "load", "local:2", "pytest")
    results = [
        _r("t.py::x", "board-1", "gw0", "device_error", 0.0, 1.0),
        _r("t.py::x", "board-2", "gw1", "passed", 1.0, 2.0),
    ]
    report = from_results(run, results)
    assert report.results.flags == [SUPERSEDED, 0]
    assert report.summary()["counts"] == "1 passed"


def test_a_quarantined_device_says_so_with_what_it_ran_before() -> None:
    report = from_results(RUN, each_mode_results()[:2], quarantines=[("board-10", "does not answer", T0 + 3)])
    devices = {d["name"]: d for d in report.summary()["devices"]}
    assert devices["board-10"]["verdict"] == "FAILED"
    assert devices["board-10"]["counts"] == "quarantined: does not answer (before that: 1 passed)"


def test_history_is_the_worst_outcome_per_earlier_run() -> None:
    """Per earlier run (newest first) and test of this run: its worst outcome over devices, -1 if absent."""
    earlier = [Run(6, "u6", T0 - 100, "each", "r", "c"), Run(5, "u5", T0 - 200, "each", "r", "c")]
    rows = [
        (6, "t.py::test_a", "passed"),
        (6, "t.py::test_a", "failed"),  # on another device
        (6, "t.py::gone", "failed"),  # not in this run: not shown
        (5, "t.py::test_b", "skipped"),
    ]
    report = from_results(RUN, each_mode_results(), history_runs=earlier, history_rows=rows)
    names = [[report.outcomes[o] if o >= 0 else None for o in per_run] for per_run in report.history]
    assert names == [["failed", None, None], [None, "skipped", None]]


def test_build_reads_the_store(tmp_path: Path) -> None:
    """build() gives what from_results gives, with the details and the earlier runs from the store."""
    store = SQLiteStore(tmp_path / "results.sqlite")
    old = store.begin_run(RunInfo("old", T0 - 50, "each", "testrack.toml", "pytest"))
    store.add_results(old, [_r("t.py::test_b", "board-2", "gw0", "error", -50, -49)])
    run_id = store.begin_run(RunInfo(RUN.uid, RUN.started, RUN.mode, RUN.rack, RUN.command))
    store.add_results(run_id, each_mode_results())
    store.add_quarantine(run_id, "board-2", "gone", T0 + 5)
    store.finish_run(run_id, T0 + 10, "tests_failed")
    run = store.runs()[0]
    report = build(store, run)
    store.close()
    assert report.details[0].sections == OUTPUT
    assert [h.id for h in report.history_runs] == [old]
    assert report.outcomes[report.history[0][1]] == "error"
    assert report.quarantines == [(1, "gone", 5_000_000)]
    assert (
        report.payload()["summary"]
        == from_results(run, each_mode_results(), quarantines=[("board-2", "gone", T0 + 5)]).summary()
    )


def _blocks(page: str) -> dict[str, object]:
    blocks = r'<script id="(report-\w+)" type="application/octet-stream">([^<]*)</script>'
    found = dict(re.findall(blocks, page))
    return {name: json.loads(zlib.decompress(base64.b64decode(text))) for name, text in found.items()}


def test_the_page_carries_the_data_compressed_and_fetches_nothing() -> None:
    """One file: the payload and the details inflate to the model's data; no address outside the page."""
    results = [*each_mode_results(), _r("t.py::test_</script><b>x", "board-2", "gw0", "passed", 4, 5)]
    report = from_results(RUN, results)
    page = html.render(report)
    blocks = _blocks(page)
    assert blocks["report-data"] == json.loads(json.dumps(report.payload()))
    assert blocks["report-details"] == [[TRACEBACK, [list(s) for s in OUTPUT]]]
    assert "default-src 'none'" in page
    assert not re.search(r"(?:https?:)?//[\w.-]+\.\w+/", page.replace("http-equiv", ""))
    assert page.count("<script") == 3  # the two data blocks and the page's own code; a test id cannot add one
    assert "<title>testrack run 7: 1 failed, 4 passed, 1 unmatched</title>" in page  # the crash was retried


def test_natural_order() -> None:
    names = ["gw10", "gw2", "board-10", "board-9"]
    assert sorted(names, key=natural_key) == ["board-9", "board-10", "gw2", "gw10"]


# ---------------------------------------------------------------------------------- JUnit


@pytest.mark.parametrize(
    "nodeid",
    ["t.py::test_a", "tests/sub/test_x.py::TestK::test_y[1-2]", "a/b.py::test_p[x::y/z.py]", "t.py::C::D::e"],
)
def test_classname_and_name_are_what_pytest_writes(nodeid: str) -> None:
    names = mangle_test_address(nodeid)
    assert junit.classname_and_name(nodeid) == (".".join(names[:-1]), names[-1])


PYTEST_JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">
<testsuite name="pytest" errors="1" failures="1" skipped="0" tests="5" time="3.2"
 timestamp="2027-01-15T10:00:00+01:00" hostname="ci-7">
<properties><property name="build" value="42"/></properties>
<testcase classname="t" name="test_a" time="1.0"><properties><property name="device" value="board-2"/>
<property name="worker" value="gw1"/></properties></testcase>
<testcase classname="t" name="test_a" time="1.0"><properties><property name="device" value="board-1"/>
<property name="worker" value="gw0"/></properties><failure message="boom">E boom</failure></testcase>
<testcase classname="t" name="test_b[1]" time="0.5"><properties><property name="device" value="board-1"/>
</properties><system-out>hi</system-out></testcase>
<testcase classname="t" name="test_b[1]" time="0.5"><properties><property name="device" value="board-2"/>
</properties></testcase>
<testcase classname="t" name="test_c" time="0"><error message="no device">none fits</error></testcase>
</testsuite></testsuites>"""


def _suites(path: Path) -> list[tuple[dict[str, str], list[str]]]:
    root = ET.parse(path).getroot()
    suites = root.iter("testsuite")
    return [(dict(s.attrib), [c.get("name") or "" for c in s.iter("testcase")]) for s in suites]


def test_rewrite_each_mode_names_cases_per_device_in_one_suite_per_device(tmp_path: Path) -> None:
    """Each mode: name@device, one <testsuite> per device (rack order, hostname, timestamp, counts)."""
    path = tmp_path / "junit.xml"
    path.write_text(PYTEST_JUNIT)
    spans = {"board-1": junit.DeviceSpan(T0, T0 + 2.5)}
    written = junit.rewrite(path, "each", ["board-1", "board-2"], spans)
    assert (written.cases, written.suites) == (5, 3)
    (one, names1), (two, names2), (rest, names3) = _suites(path)
    assert names1 == ["test_a@board-1", "test_b[1]@board-1"]
    assert names2 == ["test_a@board-2", "test_b[1]@board-2"]
    assert names3 == ["test_c"]
    assert one["hostname"] == "board-1" and one["name"] == "pytest@board-1"
    assert one["timestamp"] == junit._iso(T0) and one["time"] == "2.500"
    assert (one["tests"], one["failures"], one["errors"], one["skipped"]) == ("2", "1", "0", "0")
    assert two["hostname"] == "board-2" and two["time"] == "1.500"
    assert two["timestamp"] == "2027-01-15T10:00:00+01:00"  # no span known: the run's
    assert rest["hostname"] == "ci-7" and rest["errors"] == "1"
    root = ET.parse(path).getroot()
    assert root.get("tests") == "5" and root.get("failures") == "1" and root.get("errors") == "1"
    for suite in root.iter("testsuite"):
        assert [p.get("value") for p in suite.findall("properties/property")] == ["42"]  # kept per suite
    assert root.find(".//system-out") is not None  # pytest's own decision about output stands


def test_rewrite_load_mode_keeps_pytest_names(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    path.write_text(PYTEST_JUNIT)
    junit.rewrite(path, "load", ["board-2", "board-1"])
    assert [(s["hostname"], names) for s, names in _suites(path)] == [
        ("board-2", ["test_a", "test_b[1]"]),
        ("board-1", ["test_a", "test_b[1]"]),
        ("ci-7", ["test_c"]),
    ]


def test_rewrite_of_a_broken_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    path.write_text("<testsuites><testcase")
    with pytest.raises(junit.JunitError, match=r"cannot read the JUnit file .*junit.xml that pytest wrote"):
        junit.rewrite(path, "each")
    assert path.read_text() == "<testsuites><testcase"


def test_junit_from_the_store_has_final_results_only_with_pytest_shapes(tmp_path: Path) -> None:
    report = from_results(RUN, each_mode_results())
    path = tmp_path / "out.xml"
    written = junit.from_report(report, path)
    assert (written.cases, written.suites) == (5, 3)
    suites = _suites(path)
    assert [(s["hostname"], s["name"], names) for s, names in suites[:2]] == [
        ("board-2", "pytest@board-2", ["test_a@board-2", "test_b@board-2"]),
        ("board-10", "pytest@board-10", ["test_a@board-10", "test_b@board-10"]),
    ]
    assert suites[2][1] == ["test_c"]
    root = ET.parse(path).getroot()
    failed = root.find(".//testcase[@name='test_b@board-10']")
    assert failed is not None
    failure = failed.find("failure")
    assert failure is not None and failure.get("message") == "assert 1 == 2" and failure.text == TRACEBACK
    assert [(p.get("name"), p.get("value")) for p in failed.iter("property")] == [
        ("device", "board-10"),
        ("worker", "gw1"),
    ]
    assert failed.find("system-out") is None  # junit_logging "no", as pytest's default
    unmatched = root.find(".//testcase[@name='test_c']/error")
    assert unmatched is not None and unmatched.get("message") == "no device in the rack can run this test"


@pytest.mark.parametrize(
    "logging,out,err",
    [
        ("no", None, None),
        ("system-out", "out", None),
        ("system-err", None, "err"),
        ("out-err", "out", "err"),
        ("log", "log", None),
        ("all", "log+out", "err"),
    ],
)
def test_junit_logging_follows_pytest(tmp_path: Path, logging: str, out: str | None, err: str | None) -> None:
    report = from_results(RUN, each_mode_results())
    path = tmp_path / "out.xml"
    junit.from_report(report, path, logging=logging)
    case = ET.parse(path).getroot().find(".//testcase[@name='test_b@board-10']")
    assert case is not None

    def text(tag: str) -> str | None:
        node = case.find(tag)
        if node is None:
            return None
        return "+".join(line for line in (node.text or "").splitlines() if not line.startswith("---"))

    assert (text("system-out"), text("system-err")) == (out, err)


# ---------------------------------------------------------------------------------- testrack report


def _store(tmp_path: Path) -> Path:
    path = tmp_path / ".testrack" / "results.sqlite"
    store = SQLiteStore(path)
    run_id = store.begin_run(RunInfo(RUN.uid, RUN.started, RUN.mode, RUN.rack, RUN.command))
    store.add_results(run_id, each_mode_results())
    store.close()
    return path


def test_testrack_report_writes_both_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = _store(tmp_path)
    html_path, xml_path = tmp_path / "out" / "r.html", tmp_path / "j.xml"
    args = ["report", "--store", str(store), "--html", str(html_path), "--junitxml", str(xml_path)]
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "run 1 has no recorded end (still running, or stopped): reporting what it stored"
    assert re.fullmatch(rf"wrote {re.escape(str(html_path))}: run 1, 5 results \(0\.0 MB\)", out[1])
    cases = r"run 1, 5 test cases in 3 suites \(0\.0 MB\)"
    assert re.fullmatch(rf"wrote {re.escape(str(xml_path))}: {cases}", out[2])
    assert _blocks(html_path.read_text())["report-data"]["run"]["id"] == 1  # type: ignore[index]


@pytest.mark.parametrize(
    "extra,message",
    [
        ([], "testrack report: nothing to write: give --html FILE, --junitxml FILE, or both "
             "(or --wait, for a shared run)"),
        (["--html", "{tmp}"],
         "testrack report: --html {tmp} is a directory; give a file path such as {tmp}/report"),
        (["--html", "x.html", "--run", "5"],
         "testrack report: no run 5 in the store (runs are numbered 1 to 1); "
         "`testrack last` shows the newest"),
    ],
)  # fmt: skip
def test_testrack_report_says_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    store = _store(tmp_path)
    args = ["report", "--store", str(store), *(a.replace("{tmp}", str(tmp_path)) for a in extra)]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == message.replace("{tmp}", str(tmp_path))


def test_testrack_report_without_a_store_says_how_to_make_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--html", "r.html"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"testrack report: no testrack results in {tmp_path} or its parents")
