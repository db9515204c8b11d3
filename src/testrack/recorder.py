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
from testrack.revision import code_revision
from testrack.store import ImportCost, MemoryStore, Result, RunInfo, SQLiteStore, Store, StoreError
from testrack.store.base import FAILING, median_durations, median_import_costs
from testrack.summary import worse

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
    #: Set when a phase raised testrack.DeviceError: the device failed, not the test.
    device_error: str | None = None

    def add(self, report: pytest.TestReport, outcome: str | None) -> None:
        """Fold in one phase; ``outcome`` is ``phase_outcome(report)``, computed once by the caller."""
        if outcome is not None:
            self.outcome = worse(self.outcome, outcome)
        self.duration += report.duration
        self.started = min(self.started, report.start)
        self.stopped = max(self.stopped, report.stop)
        device_error = getattr(report, "testrack_device_error", None)
        if device_error is not None:
            self.device_error = str(device_error)
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

    def __init__(self, store: Store | None, location: str, root: Path | None = None) -> None:
        self.store = store
        self.location = location
        #: The project's root: the code revision a run records is the one of its git tree.
        self.root = root
        self.run_id = 0
        self.problem: str | None = None
        # Health checks pin identities from their own threads.
        self._lock = threading.RLock()
        self._pins: dict[str, str] = {}  # when there is no store

    @classmethod
    def open(cls, spec: str | None, rootdir: Path) -> Recorder:
        """``--rack-store``: an SQLite path (default: in the rootdir), ``memory`` or ``off``."""
        if spec in ("off", "none", "no"):
            return cls(None, "off")
        if spec == "memory":
            return cls(MemoryStore(), "memory", rootdir)
        path = Path(spec) if spec else rootdir / ".testrack" / "results.sqlite"
        if not path.is_absolute():
            path = rootdir / path
        try:
            return cls(SQLiteStore(path), str(path), rootdir)
        except StoreError as exc:
            recorder = cls(None, str(path))
            recorder.problem = f"{exc}; this run is not recorded"
            return recorder

    # ------------------------------------------------------------------ writing

    def begin(self, info: RunInfo) -> None:
        """Record the run; its code revision is looked up here unless ``info`` brings one."""
        if self.store is not None and info.revision is None and self.root is not None:
            info = dataclasses.replace(info, revision=code_revision(self.root))
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
        with self._lock:
            store, self.store = self.store, None
        if store is not None:
            threading.Thread(target=store.close, name="testrack-store-close").start()

    def quarantine(self, device: str, reason: str) -> None:
        self._guard(lambda store: store.add_quarantine(self.run_id, device, reason, time.time()))

    def verify_identity(self, device: str, identity: str) -> str | None:
        """Pin ``identity`` on first use; when it differs from the pin, say so and how to accept it."""
        with self._lock:
            if self.store is None:
                pinned = self._pins.setdefault(device, identity)
                if pinned == identity:
                    return None
                return _identity_changed(device, pinned, identity, None, None)
            try:
                pin = self.store.pinned_identity(device)
                if pin is None:
                    self.store.pin_identity(device, identity, time.time(), self.run_id or None)
                    return None
            except Exception:
                return None  # an unusable store cannot pin; the check itself decides
            if pin.identity == identity:
                return None
            return _identity_changed(device, pin.identity, identity, pin.pinned, pin.run_id)

    def _guard(self, action: object) -> None:
        with self._lock:
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


def _identity_changed(device: str, pinned: str, now: str, when: float | None, run: int | None) -> str:
    since = ""
    if when is not None:
        since = " on " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
        if run:
            since += f" (run {run})"
    return (
        f"identity changed: pinned {pinned}{since}, now reports {now}. If this device was "
        f"replaced on purpose, accept the new identity with: testrack trust {device}"
    )
