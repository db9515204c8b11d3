"""``testrack report``: a stored run as an HTML page and/or JUnit XML.

Three steps, each its own function so that others can join between them (waiting for a
shared run to end belongs between choosing the run and writing it): open the store,
choose the run, write what was asked for.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from testrack import history
from testrack.report.junit import LOGGING, JunitError
from testrack.store import Run, Store
from testrack.store import location as store_location

EPILOG = (
    "RUN is a run number (testrack last shows the newest), 'last', or a run's uid.\n"
    "The HTML page opens from disk with no network: summary, per-device matrix, a timeline per\n"
    "worker slot, failures with tracebacks and captured output, and each test's history.\n"
    "The JUnit file has one test case per result and one <testsuite> per device (hostname set\n"
    "to the device); in each mode a case's name is <name>@<device>."
)


class ReportError(Exception):
    """Nothing (more) can be written; the message says why and what to do."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run", dest="run_spec", default="last", metavar="RUN", help="the run to report (default: last)"
    )
    parser.add_argument("--html", type=Path, metavar="FILE", help="write the HTML report to FILE")
    parser.add_argument("--junitxml", type=Path, metavar="FILE", help="write JUnit XML to FILE")
    parser.add_argument(
        "--junit-logging", choices=LOGGING, default="no", metavar="WHAT",
        help="captured output of failing results in the JUnit file, as pytest's junit_logging: "
        f"{', '.join(LOGGING)} (default: no)",
    )  # fmt: skip
    parser.add_argument(
        "--store", type=store_location, metavar="PATH", default=argparse.SUPPRESS,
        help="the results store (default: the nearest .testrack/results.sqlite above the current directory; "
        "with --wait, the share's database)",
    )  # fmt: skip
    parser.add_argument(
        "--wait", action="store_true",
        help="RUN is a shared run's ID (pytest --rack-run ID): wait until every test of every host has "
        "its final result, print the run's outcome over every host's devices, and exit with its code",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=float, default=300.0, metavar="SECONDS",
        help="with --wait: stop waiting once the tests left have had no live host to run them for "
        "SECONDS, naming them (default: 300)",
    )  # fmt: skip
    parser.add_argument(
        "--share", default=None, metavar="URL",
        help="with --wait: the shared run's PostgreSQL share (default: TESTRACK_SHARE)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> tuple[list[str], int]:
    """Write the files asked for (after waiting, with --wait); return the lines to print and the
    exit code. Raises ReportError."""
    if args.wait:
        from testrack.report import waiting

        return waiting.run(args)
    if args.html is None and args.junitxml is None:
        raise ReportError(
            "nothing to write: give --html FILE, --junitxml FILE, or both (or --wait, for a shared run)"
        )
    for option, path in (("--html", args.html), ("--junitxml", args.junitxml)):
        if path is not None and path.is_dir():
            raise ReportError(f"{option} {path} is a directory; give a file path such as {path / 'report'}")
    store = open_store(args)
    try:
        chosen = choose_run(store, args)
        return write(store, chosen, args), 0
    finally:
        store.close()


def open_store(args: argparse.Namespace) -> Store:
    try:
        return history.open_for_reading(args.store, Path.cwd())
    except history.HistoryError as exc:
        raise ReportError(str(exc)) from None


def choose_run(store: Store, args: argparse.Namespace) -> Run:
    try:
        return history.resolve_run(store, args.run_spec)
    except history.HistoryError as exc:
        raise ReportError(str(exc)) from None


def write(store: Store, chosen: Run, args: argparse.Namespace) -> list[str]:
    from testrack.report import html, junit
    from testrack.report.model import build

    started = time.perf_counter()
    report = build(store, chosen)
    lines = []
    if chosen.outcome is None and not getattr(args, "wait", False):
        lines.append(
            f"run {chosen.id} has no recorded end (still running, or stopped): reporting what it stored"
        )
    if args.html is not None:
        try:
            size = html.write(report, args.html)
        except OSError as exc:
            raise ReportError(f"cannot write {args.html} ({exc.strerror or exc})") from None
        lines.append(
            f"wrote {args.html}: run {chosen.id}, {len(report.final())} results ({size / 1e6:.1f} MB)"
        )
    if args.junitxml is not None:
        try:
            written = junit.from_report(report, args.junitxml, logging=args.junit_logging)
        except JunitError as exc:
            raise ReportError(str(exc)) from None
        lines.append(
            f"wrote {args.junitxml}: run {chosen.id}, {written.cases} test cases in {written.suites} "
            f"suite{'s' if written.suites != 1 else ''} ({written.bytes / 1e6:.1f} MB)"
        )
    took = time.perf_counter() - started
    if took >= 1.0:
        lines.append(f"took {took:.1f} s")
    return lines
