"""The reports at the end of a rack run: ``--rack-html FILE`` and CI-grade ``--junitxml``.

Registered by testrack's plugin next to the controller when a rack run asks for either.
Both are written once, after the run: the HTML page from the results store (where the
controller has recorded every result and the run's end by then), the JUnit file by
rewriting what pytest's junitxml plugin wrote at session finish.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from testrack.controller import Controller


def addoption(group: Any) -> None:
    group.addoption(
        "--rack-html",
        metavar="FILE",
        default=None,
        help="write a self-contained HTML report of the rack run to FILE (summary, per-device matrix, "
        "timeline per worker slot, failures, history); 'testrack report --html FILE' does the same later.",
    )


def configure(config: pytest.Config, controller: Controller) -> None:
    """Register the reports' plugin when the rack run asks for an HTML report or JUnit XML."""
    html = config.getoption("rack_html", None)
    junit = getattr(config.option, "xmlpath", None)
    if html or junit:
        config.pluginmanager.register(RunReports(config, controller, html, junit), "testrack-reports")


class RunReports:
    """Writes the HTML report and rewrites the JUnit file once the run is over."""

    def __init__(
        self, config: pytest.Config, controller: Controller, html: str | None, junit: str | None
    ) -> None:
        self.config = config
        self.controller = controller
        self.html = Path(config.invocation_params.dir, html) if html else None
        # Where pytest's junitxml plugin writes it (it resolves the path the same way, now).
        self.junit = Path(os.path.abspath(os.path.expanduser(os.path.expandvars(junit)))) if junit else None
        self.done = False
        self.lines: list[tuple[str, bool]] = []
        # The memory store is gone from the recorder once the run is finished; keep hold of it.
        self.store = controller.recorder.store
        self.spans: dict[str, list[float]] = {}
        #: a worker's label id -> its slot; a test on several devices has a joint label, ``board-1+board-3``
        self.slots = {label.id: slot for slot, label in controller.launcher.labels.items()}

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Each result's worker slot as a property (junitxml reads it at teardown); each device's span."""
        if self.junit is None:
            return
        label = getattr(getattr(report, "node", None), "id", None)
        if not isinstance(label, str):
            return
        slot = self.slots.get(label) or self.slots.get(label.split("+")[0])
        if slot is None:
            return
        if report.when == "teardown" or report.failed:
            report.user_properties.append(("worker", slot))  # the worker that ran it
        properties = dict(report.user_properties)
        devices = str(properties.get("devices") or properties.get("device") or "")
        if not (devices and report.start):
            return
        for device in devices.split(","):  # a test on several devices spans each of them
            span = self.spans.get(device)
            if span is None:
                self.spans[device] = [report.start, report.stop]
            else:
                span[0] = min(span[0], report.start)
                span[1] = max(span[1], report.stop)

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        self.finish()
        for line, problem in self.lines:
            terminalreporter.write_line(f"testrack: {line}", yellow=problem)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """Without a terminal summary (an internal error, ``-p no:terminal``) the files are still written."""
        if not self.done:
            self.finish()

    def finish(self) -> None:
        """Write both; a report that cannot be written costs a warning line, never the run's verdict."""
        if self.done:
            return
        self.done = True
        from testrack.report.junit import DeviceSpan, JunitError, rewrite

        if self.junit is not None and self.junit.is_file():
            names = [d.name for d in self.controller.rack.devices]
            spans = {name: DeviceSpan(s[0], s[1]) for name, s in self.spans.items()}
            try:
                rewrite(self.junit, self.controller.mode, names, spans)
            except JunitError as exc:
                self.lines.append((f"{exc}; the file is left as pytest wrote it", True))
            except Exception as exc:  # a bug of ours must not cost the run its JUnit file
                self.lines.append(
                    (f"could not rewrite {self.junit} ({exc!r}); it is left as pytest wrote it", True)
                )
        if self.html is not None:
            try:
                self.lines.append(self._write_html(self.html))
            except Exception as exc:  # a damaged store, say: the run's verdict stands
                self.lines.append((f"--rack-html: cannot write {self.html} ({exc})", True))

    def _write_html(self, path: Path) -> tuple[str, bool]:
        from testrack.report.html import write
        from testrack.report.model import build
        from testrack.store import SQLiteStore, StoreError

        recorder = self.controller.recorder
        if recorder.location == "off":
            return (
                "--rack-html: no report, as --rack-store off keeps no results; use --rack-store memory "
                "to keep this run's results for the report without a file",
                True,
            )
        if not recorder.run_id:
            return (f"--rack-html: no report, as the results store {recorder.location} recorded no run", True)
        started = time.perf_counter()
        try:
            store = (
                self.store
                if self.store is not None and not isinstance(self.store, SQLiteStore)
                else SQLiteStore(Path(recorder.location))
            )
            try:
                run = next((r for r in store.runs() if r.id == recorder.run_id), None)
                if run is None:
                    return (
                        f"--rack-html: no report, run {recorder.run_id} is not in {recorder.location}",
                        True,
                    )
                report = build(store, run)
            finally:
                if store is not self.store:
                    store.close()
            size = write(report, path)
        except (StoreError, OSError) as exc:
            return (f"--rack-html: cannot write {path} ({exc})", True)
        took = time.perf_counter() - started
        partial = (
            " (the results store failed during the run: the report holds what it kept)"
            if recorder.problem
            else ""
        )
        return (f"HTML report: {path} ({size / 1e6:.1f} MB, {took:.1f} s){partial}", False)
