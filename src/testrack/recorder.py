"""What the controller tells the results store, and what it learns from it.

The run loop hands every finished test here before its reports reach the
terminal, so a result that was shown is a result that was stored (even if the
controller is killed the next moment). A store that fails mid-run costs a warning,
never the run. The history it reads back gives the scheduler its estimates and
``--rack-failed`` its list.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

from testrack import messages as m
from testrack.store import ImportCost, MemoryStore, Result, RunInfo, SQLiteStore, Store, StoreError
from testrack.store.base import FAILING, median_durations, median_import_costs
from testrack.summary import phase_outcome, worse

#: How many recent runs the scheduler learns durations and import costs from.
HISTORY_RUNS = 5


@dataclasses.dataclass
class Attempt:
    """One test on one worker, built up phase by phase as its reports arrive."""

    outcome: str | None = None
    duration: float = 0.0
    started: float = math.inf
    stopped: float = 0.0
    message: str | None = None

    def add(self, report: pytest.TestReport) -> None:
        outcome = phase_outcome(report)
        if outcome is not None:
            self.outcome = worse(self.outcome, outcome)
        self.duration += report.duration
        self.started = min(self.started, report.start)
        self.stopped = max(self.stopped, report.stop)
        if report.failed and self.message is None:
            crash = getattr(getattr(report.longrepr, "reprcrash", None), "message", None)
            # The exception's own first line says most; else the report's last line.
            self.message = _line(crash, first=True) if crash else _line(report.longreprtext, first=False)

    def result(
        self, nodeid: str, device: str, worker: str, position: int, outcome: str | None = None
    ) -> Result:
        now = time.time()
        return Result(
            nodeid=nodeid,
            device=device,
            worker=worker,
            outcome=outcome or self.outcome or "passed",
            duration=self.duration,
            started=self.started if self.started != math.inf else now,
            stopped=self.stopped or now,
            position=position,
            message=self.message,
        )


def _line(text: str, first: bool) -> str | None:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    return (lines[0] if first else lines[-1])[:500]


class Recorder:
    """The controller's side of the store: one run, written as it happens."""

    def __init__(self, store: Store | None, location: str) -> None:
        self.store = store
        self.location = location
        self.run_id = 0
        self.problem: str | None = None

    @classmethod
    def open(cls, spec: str | None, rootdir: Path) -> Recorder:
        """``--rack-store``: an SQLite path (default: in the rootdir), ``memory`` or ``off``."""
        if spec in ("off", "none", "no"):
            return cls(None, "off")
        if spec == "memory":
            return cls(MemoryStore(), "memory")
        path = Path(spec) if spec else rootdir / ".testrack" / "results.sqlite"
        if not path.is_absolute():
            path = rootdir / path
        try:
            return cls(SQLiteStore(path), str(path))
        except StoreError as exc:
            recorder = cls(None, str(path))
            recorder.problem = f"{exc}; this run is not recorded"
            return recorder

    # ------------------------------------------------------------------ writing

    def begin(self, info: RunInfo) -> None:
        self._guard(lambda store: setattr(self, "run_id", store.begin_run(info)))

    def results(self, results: Sequence[Result]) -> None:
        if results:
            self._guard(lambda store: store.add_results(self.run_id, results))

    def imports(self, worker: str, device: str, units: Iterable[m.CollectedUnit]) -> None:
        costs = [ImportCost(u.key, worker, device, u.seconds) for u in units]
        self._guard(lambda store: store.add_imports(self.run_id, costs))

    def finish(self, outcome: str) -> None:
        """Record the end, then close the store from a (joined) thread: SQLite checkpoints its
        log on close, which need not hold up the summary."""
        self._guard(lambda store: store.finish_run(self.run_id, time.time(), outcome))
        store, self.store = self.store, None
        if store is not None:
            threading.Thread(target=store.close, name="testrack-store-close").start()

    def _guard(self, action: object) -> None:
        if self.store is None:
            return
        try:
            action(self.store)  # type: ignore[operator]
        except Exception as exc:  # a full disk or a locked file must not cost the run
            self.problem = (
                f"the results store {self.location} failed ({exc}); results from here on are not "
                "recorded (the run goes on)"
            )
            self.store = None

    # ------------------------------------------------------------------ reading

    def durations(self) -> dict[str, float]:
        if self.store is None:
            return {}
        return median_durations(self.store.timings(HISTORY_RUNS))

    def import_costs(self) -> dict[str, float]:
        if self.store is None:
            return {}
        return median_import_costs(self.store.import_costs(HISTORY_RUNS))

    def last_failures(self) -> dict[str, set[str]] | None:
        """Per test, the devices it failed on in the newest finished-or-interrupted run before this one."""
        if self.store is None:
            return None
        for run in self.store.runs(limit=5):
            if run.id == self.run_id:
                continue
            failed: dict[str, set[str]] = {}
            for result in self.store.results(run.id):
                if result.outcome in FAILING:
                    failed.setdefault(result.nodeid, set()).add(result.device)
            return failed
        return None
