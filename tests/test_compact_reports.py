"""Plain passing reports travel compact (testrack.compact); plugins must not tell the difference.

Every report the controller replays is compared, field by field, with what plain pytest hands
its plugins for the same suite; the form on the wire is checked on real reports.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap

import pytest

from testrack.compact import Packer, Unpacker

#: Writes what every report the session's plugins see holds (in the controller only).
RECORDER = """
    import json, os
    import pytest

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(item, call):
        report = yield
        if item.name == "test_one":
            report.extra = ["added by a plugin", call.when]  # as pytest-html adds its extras
        return report

    def pytest_runtest_logreport(report):
        if os.environ.get("TESTRACK_WORKER"):
            return  # a worker: the controller records what it replays
        props = [list(p) for p in report.user_properties if p[0] not in ("device", "devices", "roles")]
        row = dict(
            nodeid=report.nodeid, when=report.when, outcome=report.outcome,
            keywords=sorted(report.keywords), location=list(report.location),
            sections=[list(s) for s in report.sections], props=props, type=type(report).__name__,
            longrepr=report.longrepr is not None, extra=getattr(report, "extra", None),
        )
        with open(os.environ["REPORTS_FILE"], "a") as fh:
            fh.write(json.dumps(row) + "\\n")
"""

SUITE = {
    "test_many": """
        import pytest

        @pytest.mark.parametrize("i", range(30))
        def test_case(i):
            assert i >= 0

        @pytest.mark.slow
        @pytest.mark.parametrize("word", ["a", "b"])
        def test_marked(word):
            pass

        class TestGroup:
            def test_one(self):
                pass

            def test_two(self, record_property):
                record_property("size", 3)

        @pytest.fixture
        def tagged(request):
            request.node.add_marker("added_at_setup")

        def test_marker_added_by_a_fixture(tagged):
            pass

        def test_prints():
            print("hello from the test")

        def test_fails():
            assert 1 == 2

        @pytest.mark.skip(reason="not today")
        def test_skipped():
            pass

        @pytest.mark.xfail(reason="known")
        def test_xfails():
            assert False
    """,
    "test_other": """
        import pytest

        @pytest.mark.parametrize("n", range(20))
        def test_other(n):
            pass
    """,
}


WHEN = ("setup", "call", "teardown")


def reports_seen(pytester: pytest.Pytester, *args: str) -> list[dict[str, object]]:
    out = pytester.path / f"reports-{len(list(pytester.path.glob('reports-*')))}.jsonl"
    env = dict(__import__("os").environ, REPORTS_FILE=str(out), TESTRACK_SHARE="off")
    subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", "-q", *args],
        cwd=pytester.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return sorted(rows, key=lambda r: (r["nodeid"], WHEN.index(r["when"])))


def test_every_report_reaches_plugins_as_in_plain_pytest(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(RECORDER)
    pytester.makepyfile(**{name: textwrap.dedent(text) for name, text in SUITE.items()})
    plain = reports_seen(pytester, "--rack", "off")
    racked = reports_seen(pytester, "--rack", "local:2", "--rack-store", "memory")
    assert len(plain) == 3 * 59 - 1  # the skipped test has no call
    assert {row["outcome"] for row in plain} == {"passed", "failed", "skipped"}
    assert [row["extra"] for row in plain if row["extra"]] == [["added by a plugin", w] for w in WHEN]
    assert racked == plain


def test_a_plugin_that_serializes_reports_its_own_way_sees_every_report(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import os

        def pytest_report_to_serializable(report):
            if type(report).__name__ == "TestReport":
                data = report._to_json()
                data["stamp"] = "from " + os.environ.get("TESTRACK_WORKER", "here")
                return data

        def pytest_report_from_serializable(data):
            if "stamp" in data:
                from _pytest.reports import TestReport
                report = TestReport._from_json(data)
                report.stamp = data["stamp"]
                return report

        def pytest_runtest_logreport(report):
            if not os.environ.get("TESTRACK_WORKER"):
                with open("stamps.txt", "a") as fh:
                    fh.write(getattr(report, "stamp", "none") + "\\n")
        """
    )
    pytester.makepyfile(
        test_p="import pytest\n\n@pytest.mark.parametrize('i', range(10))\ndef test_p(i):\n    pass\n"
    )
    result = pytester.runpytest_subprocess("--rack", "local:2", "--rack-store", "memory", "-p", "no:randomly")
    result.assert_outcomes(passed=10)
    stamps = (pytester.path / "stamps.txt").read_text().splitlines()
    assert len(stamps) == 30
    assert all(stamp.startswith("from gw") for stamp in stamps), stamps


def _reports(pytester: pytest.Pytester) -> list[pytest.TestReport]:
    pytester.makepyfile(
        test_r="""
        import pytest

        @pytest.mark.parametrize("i", range(3))
        def test_plain(i):
            pass

        def test_output():
            print("out")

        def test_fails():
            assert False
        """
    )
    return [
        r
        for r in pytester.inline_run("-p", "no:randomly", "--rack", "off").getreports(
            "pytest_runtest_logreport"
        )
    ]


def test_plain_passing_reports_travel_as_a_few_numbers_and_come_back_whole(pytester: pytest.Pytester) -> None:
    reports = _reports(pytester)
    packer, unpacker = Packer(), Unpacker()
    sent = []
    for report in reports:
        packed = packer.pack(report)
        if packed is None:
            data = report._to_json()
            packer.full(data)
        sent.append(pickle.loads(pickle.dumps(packed if packed is not None else data)))
    compact = [data for data in sent if isinstance(data, tuple)]
    # Three phases of three plain tests, both setups of the other two, and the failing test's
    # teardown (the printing test's teardown carries its captured output).
    assert len(compact) == 12
    assert sum(len(data) == 4 for data in compact) == 7  # the same test as the report before
    for report, data in zip(reports, sent, strict=True):
        if isinstance(data, tuple):
            back = unpacker.unpack(data)
        else:
            unpacker.full(data)
            back = pytest.TestReport._from_json(data)
        assert back.__dict__.keys() == report.__dict__.keys()
        for field in ("nodeid", "location", "keywords", "outcome", "when", "duration", "start", "stop"):
            assert getattr(back, field) == getattr(report, field), field
        assert (back.longrepr is None) == (report.longrepr is None)
        assert back.sections == report.sections
