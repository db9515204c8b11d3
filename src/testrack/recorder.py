"""What the controller tells the results store, and what it learns from it.

The run loop hands every finished test here before its reports reach the
terminal, so a result that was shown is a result that was stored (even if the
controller is killed the next moment). A store that fails mid-run costs a warning,
never the run. The history it reads back gives the scheduler its estimates and
``--rack-failed`` its list.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import pytest

from testrack import messages as m
from testrack.envs import Built
from testrack.revision import code_revision
from testrack.share.pgschema import is_postgres_url
from testrack.store import (
    DEFAULT_PATH,
    ImportCost,
    MemoryStore,
    Result,
    RunInfo,
    SQLiteStore,
    Store,
    StoreError,
)
from testrack.store.base import (
    EnvironmentRecord,
    Trouble,
    failing_results,
    median_durations,
    median_import_costs,
)
from testrack.store.sqlite import describe, unwritable_reason, writable
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
    #: A failing test's full failure text and captured output, for the report (none for a pass).
    longrepr: str | None = None
    sections: tuple[tuple[str, str], ...] = ()

    def add(self, report: pytest.TestReport, outcome: str | None) -> None:
        """Fold in one phase; ``outcome`` is ``phase_outcome(report)``, computed once by the caller."""
        if outcome is not None and outcome != "rerun":
            self.outcome = worse(self.outcome, outcome)
        self.duration += report.duration
        self.started = min(self.started, report.start)
        self.stopped = max(self.stopped, report.stop)
        device_error = getattr(report, "testrack_device_error", None)
        if device_error is not None:
            self.device_error = str(device_error)
        if report.failed:
            if self.message is None:
                crash = getattr(getattr(report.longrepr, "reprcrash", None), "message", None)
                # The exception's own first line says most; else the report's last line.
                self.message = _line(crash, first=True) if crash else _line(report.longreprtext, first=False)
            self._keep_details(report)
        elif self.longrepr is not None and report.sections:
            self.sections = _sections(report)  # a later phase's report holds the output so far

    def _keep_details(self, report: pytest.TestReport) -> None:
        text = _cut(report.longreprtext)
        if self.longrepr is None:
            self.longrepr = text
        else:
            self.longrepr = f"{self.longrepr}\n\n--- {report.when} ---\n{text}"
        self.sections = _sections(report)

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
            longrepr=self.longrepr,
            sections=self.sections,
        )


#: How much of one failure text or captured stream is kept (its head and most of its tail).
DETAIL_LIMIT = 64 * 1024


def _cut(text: str) -> str:
    if len(text) <= DETAIL_LIMIT:
        return text
    head, tail = DETAIL_LIMIT // 4, DETAIL_LIMIT - DETAIL_LIMIT // 4
    return f"{text[:head]}\n[... {len(text) - head - tail} characters left out ...]\n{text[-tail:]}"


def _sections(report: pytest.TestReport) -> tuple[tuple[str, str], ...]:
    return tuple((str(title), _cut(str(text))) for title, text in report.sections)


def _line(text: str, first: bool) -> str | None:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    return (lines[0] if first else lines[-1])[:500]


class Recorder:
    """The controller's side of the store: one run, written as it happens.

    Whatever the store does, the run goes on: a damaged default store is moved aside and a
    new one made (once per run), a read-only store is still read but not written, and any
    other failure stops the recording, not the run. ``problem`` says what happened and what
    to do, for the end of the run's summary.
    """

    def __init__(self, store: Store | None, location: str, root: Path | None = None) -> None:
        self.store = store
        self.location = location
        #: The project's root: the code revision a run records is the one of its git tree.
        self.root = root
        self.run_id = 0
        self._problems: list[str] = []
        # Health checks pin identities from their own threads.
        self._lock = threading.RLock()
        self._pins: dict[str, str] = {}  # pinned this run, when the store cannot keep them
        self._info: RunInfo | None = None
        self._recorded = False  # whether any result was written (to say what is lost)
        self._writable = store is not None
        #: The default store's path: the only store testrack may move aside and make anew.
        self._renewable: Path | None = None
        #: ``HOST/`` in a shared run: every host's workers are gw0, gw1..., and a stored result
        #: must name the one process that ran it (a test counted once, a report's lanes,
        #: bisect's sequences), not a worker of another host with the same id.
        self.worker_prefix = ""

    def as_stored(self, results: Sequence[Result]) -> Sequence[Result]:
        """Results with the worker names the store keeps."""
        prefix = self.worker_prefix
        if not prefix:
            return results
        return [r if r.worker == "-" else dataclasses.replace(r, worker=prefix + r.worker) for r in results]

    @property
    def problem(self) -> str | None:
        """What went wrong with the store and what to do, one line per problem; None if nothing."""
        return "\ntestrack: ".join(self._problems) if self._problems else None

    @classmethod
    def open(cls, spec: str | None, rootdir: Path) -> Recorder:
        """``--rack-store``: an SQLite path (default: in the rootdir), ``memory`` or ``off``."""
        if spec in ("off", "none", "no"):
            return cls(None, "off")
        if spec == "memory":
            return cls(MemoryStore(), "memory", rootdir)
        if spec and is_postgres_url(spec):
            return cls._database(spec, rootdir)
        if not spec:
            path = rootdir / DEFAULT_PATH
            recorder = cls(None, str(path), rootdir)
            try:
                path.parent.mkdir(exist_ok=True)  # the default directory, and nothing above it
            except OSError as exc:
                recorder._problems.append(
                    f"cannot create {path.parent} for the results store ({exc.strerror}): this run is "
                    f"not recorded; make {rootdir} writable, or keep results elsewhere with "
                    "--rack-store PATH (or --rack-store off)"
                )
                return recorder
            recorder._renewable = path
        else:
            path = Path(spec)
            if not path.is_absolute():
                path = rootdir / path
            recorder = cls(None, str(path), rootdir)
        recorder._connect(path)
        return recorder

    @classmethod
    def _database(cls, url: str, rootdir: Path) -> Recorder:
        """A PostgreSQL store: shared by hosts, never moved aside; unreachable, the run goes on unrecorded."""
        from testrack.share.secrets import redact

        recorder = cls(None, redact(url), rootdir)
        try:
            from testrack.store.postgres import PostgresStore

            recorder.store, recorder._writable = PostgresStore(url), True
        except ImportError:
            recorder._problems.append(
                f"--rack-store {redact(url)} needs psycopg: this run is not recorded; "
                "pip install 'testrack[postgresql]'"
            )
        except StoreError as exc:
            recorder._problems.append(f"{exc}: this run is not recorded")
        return recorder

    def _connect(self, path: Path) -> None:
        """Open the store for the run; if it cannot be written, open it to read, or not at all."""
        if not path.exists() and path.parent.is_dir() and not writable(path):
            self._problems.append(
                f"cannot create the results store {path} ({unwritable_reason(path)}): this run is not "
                f"recorded; make {path.parent} writable, or choose another store with --rack-store PATH"
            )
            return
        try:
            if path.exists() and not writable(path):
                raise StoreError("", Trouble.READ_ONLY, str(path), unwritable_reason(path))
            self.store, self._writable = SQLiteStore(path, make_directory=False), True
        except StoreError as exc:
            if exc.trouble is Trouble.READ_ONLY:
                self._open_read_only(path, exc.cause)
            elif not self._renew(exc):
                self._problems.append(_unusable(exc, path))

    def _open_read_only(self, path: Path, why: str) -> None:
        """Keep the history (scheduling, --rack-failed) of a store this process cannot write."""
        try:
            self.store, self._writable = SQLiteStore(path, read_only=True), False
        except StoreError as exc:
            if exc.trouble is Trouble.OLDER:
                self._problems.append(
                    f"{describe(Trouble.OLDER, path, exc.cause)}, and this process cannot write it ({why}), "
                    "so it cannot be brought up to date: this run is not recorded; run pytest once as a "
                    "user who can write it, or choose another store with --rack-store PATH"
                )
            else:
                self._problems.append(_unusable(exc, path))
            return
        self._problems.append(
            f"the results store {path} is read-only for this process ({why}): this run is not recorded "
            "(its history is still used; the data in it is fine); to record runs, make it writable for "
            "this user or run as its owner, or choose another store with --rack-store PATH"
        )

    def _renew(self, exc: StoreError) -> bool:
        """A damaged default store: move it (and its log) aside, start a new one, and say so.

        Only the default store, and once per run; a store named with --rack-store is the
        user's to move. The run goes on recording into the new store (its earlier results are
        in the old one, with everything before)."""
        path = self._renewable
        if path is None or exc.trouble not in (Trouble.DAMAGED, Trouble.NOT_A_STORE):
            return False
        self._renewable = None
        old, self.store = self.store, None
        if old is not None:
            with contextlib.suppress(Exception):
                old.close()
        try:
            aside = move_aside(path)
        except OSError as error:
            self._problems.append(
                f"{describe(exc.trouble, path, exc.cause)}, and moving it aside failed ({error.strerror}): "
                f"this run is not recorded; move {path} away yourself (the next run starts a new store)"
            )
            return True
        what = describe(Trouble.DAMAGED, path, exc.cause)
        try:
            store = SQLiteStore(path, make_directory=False)
            if self._info is not None:
                self.run_id = store.begin_run(self._info)
        except StoreError as error:
            self._problems.append(
                f"{what}; it was moved to {aside}, and a new store could not be made ({error.cause}): "
                "this run is not recorded"
            )
            return True
        self.store, self._writable = store, True
        recorded = "the rest of this run is" if self._recorded else "this run is"
        self._problems.append(
            f"{what}; it was moved to {aside} and {recorded} recorded in a new store at {path}; "
            f"the history before this run stays in the damaged file (sqlite3 {aside} .recover may "
            "rescue it); delete it when you no longer need it"
        )
        return True

    # ------------------------------------------------------------------ writing

    def begin(self, info: RunInfo) -> None:
        """Record the run; its code revision is looked up here unless ``info`` brings one."""
        if self.store is not None and info.revision is None and self.root is not None:
            info = dataclasses.replace(info, revision=code_revision(self.root))
        self._info = info

        def begin(store: Store) -> None:
            self.run_id = store.begin_run(info)

        self._write(begin)

    def results(self, results: Sequence[Result]) -> None:
        if results:
            stored = self.as_stored(results)
            self._write(lambda store: store.add_results(self.run_id, stored))
            self._recorded = True

    def imports(self, worker: str, device: str, units: Iterable[m.CollectedUnit]) -> None:
        worker = self.worker_prefix + worker
        costs = [ImportCost(u.key, worker, device, u.seconds) for u in units]
        self._write(lambda store: store.add_imports(self.run_id, costs))

    def finish(self, outcome: str) -> None:
        """Record the end, then close the store from a (joined) thread: SQLite checkpoints its
        log on close, which need not hold up the summary."""
        self._write(lambda store: store.finish_run(self.run_id, time.time(), outcome))
        with self._lock:
            store, self.store = self.store, None
        if store is not None:
            threading.Thread(target=_close, args=(store,), name="testrack-store-close").start()

    def environments(self, built: Iterable[Built]) -> None:
        """What each environment of the run is (interpreter, installed packages)."""
        records = [
            EnvironmentRecord(self.run_id, b.name, b.implementation, b.version, b.installed) for b in built
        ]
        if records:
            self._write(lambda store: store.add_environments(records))

    def quarantine(self, device: str, reason: str) -> None:
        self._write(lambda store: store.add_quarantine(self.run_id, device, reason, time.time()))

    def verify_identity(self, device: str, identity: str) -> str | None:
        """Pin ``identity`` on first use; when it differs from the pin, say so and how to accept it."""
        with self._lock:
            pin = self._guard(lambda store: store.pinned_identity(device), None)
            if pin is not None:
                if pin.identity == identity:
                    return None
                return _identity_changed(device, pin.identity, identity, pin.pinned, pin.run_id)
            pinned = self._pins.setdefault(device, identity)  # this run's pin, whatever the store does
            if pinned != identity:
                return _identity_changed(device, pinned, identity, None, None)
            self._write(lambda store: store.pin_identity(device, identity, time.time(), self.run_id or None))
            return None

    def _write(self, action: Callable[[Store], None]) -> None:
        with self._lock:
            if self._writable:
                self._guard(action, None)

    def _guard(self, action: Callable[[Store], T], default: T) -> T:
        """``action(store)``, or ``default`` when there is no store or it fails; a failure is
        said once, and a damaged default store is replaced and the action tried again."""
        with self._lock:
            if self.store is None:
                return default
            try:
                return action(self.store)
            except Exception as exc:  # a damaged file, a full disk or a locked one must not cost the run
                if isinstance(exc, StoreError) and self._renew(exc):
                    return self._guard(action, default)
                self._fail(exc)
                return default

    def _fail(self, exc: Exception) -> None:
        path = Path(self.location)
        if isinstance(exc, StoreError) and exc.trouble is Trouble.READ_ONLY:
            self._writable = False  # still readable; a read failing later says so itself
            lost = "results from here on are not recorded" if self._recorded else "this run is not recorded"
            self._problems.append(
                f"the results store {path} is read-only for this process ({exc.cause}): {lost} (the run "
                "goes on); make it writable for this user, or choose another store with --rack-store PATH"
            )
            return
        store, self.store, self._writable = self.store, None, False
        if store is not None:
            _close(store)
        if isinstance(exc, StoreError) and exc.trouble is Trouble.DAMAGED:
            self._problems.append(_unusable(exc, path, mid_run=self._recorded))
            return
        cause = exc.cause if isinstance(exc, StoreError) else str(exc)
        lost = "results from here on are not recorded" if self._recorded else "this run is not recorded"
        self._problems.append(f"the results store {path} failed ({cause}); {lost} (the run goes on)")

    # ------------------------------------------------------------------ reading

    def durations(self) -> dict[str, float]:
        return self._guard(lambda store: median_durations(store.timings(HISTORY_RUNS)), {})

    def import_costs(self) -> dict[str, float]:
        return self._guard(lambda store: median_import_costs(store.import_costs(HISTORY_RUNS)), {})

    def last_failures(self) -> dict[str, set[str]] | None:
        """Per test, every device it is failing on (see ``failing_results``: its newest result
        there, over all earlier runs, is a failure); None if the store holds no earlier run."""

        def read(store: Store) -> dict[str, set[str]] | None:
            if not any(run.id != self.run_id for run in store.runs(limit=2)):
                return None
            failing: dict[str, set[str]] = {}
            for result in failing_results(store, exclude_run=self.run_id or None):
                failing.setdefault(result.nodeid, set()).add(result.device)
            return failing

        return self._guard(read, None)


T = TypeVar("T")


def move_aside(path: Path) -> Path:
    """Rename a damaged store (and its log files, so that SQLite finds them beside it) to
    ``<name>.damaged-<date>-<time>``; return the new name."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    number = 1
    while aside.exists():
        number += 1
        aside = path.with_name(f"{path.name}.damaged-{stamp}-{number}")
    path.rename(aside)
    for suffix in ("-wal", "-shm"):
        log = path.with_name(path.name + suffix)
        with contextlib.suppress(FileNotFoundError):
            log.rename(aside.with_name(aside.name + suffix))
    return aside


def _unusable(exc: StoreError, path: Path, mid_run: bool = False) -> str:
    """What to say about a store the run cannot use (and did not replace), with the fix."""
    not_recorded = (
        "results from here on are not recorded (the run goes on)" if mid_run else ("this run is not recorded")
    )
    what = describe(exc.trouble, path, exc.cause)
    match exc.trouble:
        case Trouble.DAMAGED:
            fix = (
                f"move it aside (sqlite3 FILE .recover may rescue its history): the next run with "
                f"--rack-store {path} starts a new store; or give another file with --rack-store PATH"
            )
        case Trouble.NOT_A_STORE:
            what = f"--rack-store {path} is not a testrack results store ({exc.cause})"
            fix = "give a new file name or an existing results store with --rack-store PATH"
        case Trouble.NEWER:
            fix = "upgrade testrack, or choose another store with --rack-store PATH"
        case Trouble.IS_DIRECTORY:
            what = f"--rack-store {path} is a directory"
            fix = f"give a file in it, such as --rack-store {path / 'results.sqlite'}"
        case Trouble.NO_DIRECTORY:
            what = f"--rack-store {path}: the directory {path.parent} does not exist"
            fix = f"create it first (mkdir -p {path.parent}), or give a path in an existing directory"
        case Trouble.UNREADABLE:
            fix = "make it readable for this user, or choose another store with --rack-store PATH"
        case _:
            fix = "choose another store with --rack-store PATH (or --rack-store off)"
    return f"{what}: {not_recorded}; {fix}"


def _close(store: Store) -> None:
    with contextlib.suppress(Exception):  # a store that fails to close has nothing more to lose
        store.close()


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
