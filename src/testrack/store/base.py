"""What a results store keeps and answers, whatever it is built on.

Runs are identified by a uid (the run's ``testrunuid``) as well as a number, so
that several controllers working on one run (a shared rack, later) can join it.
A result is one test on one device: its outcome over all phases, how long the
slot was busy with it, and where in its worker's sequence it ran.

The store also remembers which identity each device reported the first time it
was seen (a :class:`Pin`, trust on first use, like SSH's known_hosts), and which
devices a run took out of service, and why (a :class:`Quarantine`).
"""

from __future__ import annotations

import dataclasses
import enum
import statistics
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable


class Trouble(enum.Enum):
    """Why a store cannot be used: each asks for a different fix, so callers say different things."""

    UNUSABLE = "unusable"
    """Anything else (a locked file, a full disk): the message has SQLite's words."""
    DAMAGED = "damaged"
    """The file is a store, but its pages are damaged: its history is (partly) lost."""
    NOT_A_STORE = "not a store"
    """The file is not a testrack results store at all (another file, another database)."""
    READ_ONLY = "read-only"
    """The store can be read but not written by this process; the data in it is fine."""
    UNREADABLE = "unreadable"
    """This process may not open the file (permissions)."""
    NEWER = "newer"
    """Written by a newer testrack, with a schema this one does not know."""
    OLDER = "older"
    """Written by an older testrack, and read-only here, so it cannot be brought up to date."""
    IS_DIRECTORY = "is a directory"
    NO_DIRECTORY = "no such directory"
    """The file's directory does not exist (and is not made silently)."""


class StoreError(Exception):
    """The store cannot be used. ``trouble`` says why, ``cause`` in the backend's own words, so
    that the caller can name its own option in the fix (``--rack-store`` for a run,
    ``--store`` for the ``testrack`` commands)."""

    def __init__(
        self, message: str, trouble: Trouble = Trouble.UNUSABLE, path: str | None = None, cause: str = ""
    ) -> None:
        super().__init__(message)
        self.trouble = trouble
        self.path = path
        self.cause = cause or message


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What is known of a run when it starts."""

    uid: str
    started: float
    mode: str
    rack: str
    command: str
    revision: str | None = None
    """The code it ran (:func:`testrack.revision.code_revision`); None outside git."""
    seed: int | None = None
    """The seed of its random order (``--rack-random``, ``--rack-seed``); None: not random."""


@dataclasses.dataclass(frozen=True)
class Run:
    """A run as stored; ``finished`` and ``outcome`` stay None if it never finished."""

    id: int
    uid: str
    started: float
    mode: str
    rack: str
    command: str
    finished: float | None = None
    outcome: str | None = None
    revision: str | None = None
    """The git commit it ran, ``<commit>-dirty-<hash of the changes>`` for a dirty tree, or None."""
    seed: int | None = None
    """The seed of its random order, or None."""


@dataclasses.dataclass(frozen=True)
class Result:
    """One test on one device: the worst outcome of its phases and the time it took."""

    nodeid: str
    device: str
    worker: str
    outcome: str
    duration: float
    started: float
    stopped: float
    position: int = 0
    message: str | None = None
    run_id: int = 0
    longrepr: str | None = None
    """A failing result's full failure text (pytest's ``longreprtext``), for the report."""
    sections: tuple[tuple[str, str], ...] = ()
    """A failing result's captured output, as pytest's ``(title, text)`` report sections."""
    role: str | None = None
    """For a test on several devices: the role this device took (None for the short form, whose
    devices have positions only, and for a test on one device)."""


def result_with_role(row: Sequence[Any]) -> Result:
    """A result from a row of its ten base columns (``Result``'s first fields) and its role."""
    return dataclasses.replace(Result(*row[:10]), role=row[10])


@dataclasses.dataclass(frozen=True)
class ImportCost:
    """How long a worker took to import (collect) one test file."""

    module: str
    worker: str
    device: str
    seconds: float


@dataclasses.dataclass(frozen=True)
class Pin:
    """The identity (a serial, say) a device is expected to report, since it was first seen."""

    device: str
    identity: str
    pinned: float
    """Wall time (``time.time()``) it was pinned."""
    run_id: int | None
    """The run that pinned it, if any."""


@dataclasses.dataclass(frozen=True)
class Quarantine:
    """A device a run stopped using, and why (a changed identity, no answer, ...)."""

    run_id: int
    device: str
    reason: str
    at: float
    """Wall time (``time.time()``) it was quarantined."""


@dataclasses.dataclass(frozen=True)
class EnvironmentRecord:
    """An environment a run's results come from (``[[environments]]``): what ran the tests."""

    run_id: int
    name: str
    implementation: str
    """``CPython``, ``PyPy``."""
    version: str
    installed: str
    """A short hash of every package installed in it."""


#: Outcomes that mean "this test did not pass on this device".
FAILING = ("failed", "error", "crashed", "timeout", "unmatched")
#: Outcomes that end a failure on a device: as pytest's ``--lf`` forgets a test that passed
#: or was skipped. Anything else (a DeviceError's retry, another plugin's word) says nothing.
CLEARING = ("passed", "skipped", "xfailed", "xpassed")
CONCLUSIVE = FAILING + CLEARING
#: Outcomes whose duration says how long the test takes (a skip says nothing).
TIMED = ("passed", "failed", "error", "xfailed", "xpassed")


class Store(Protocol):
    """The storage contract. Every write is durable when the call returns.

    Both backends may be called from several threads (a run loop and a health check, say);
    each call is one transaction and sees the others whole. None may be called after close().
    """

    def begin_run(self, info: RunInfo) -> int:
        """Record a run (or join the run with the same uid) and return its id."""

    def add_results(self, run_id: int, results: Sequence[Result]) -> None: ...

    def add_imports(self, run_id: int, imports: Sequence[ImportCost]) -> None: ...

    def finish_run(self, run_id: int, finished: float, outcome: str) -> None: ...

    def runs(self, limit: int | None = None) -> list[Run]:
        """Newest first."""

    def results(self, run_id: int, details: bool = False) -> list[Result]:
        """In the order they were recorded; ``longrepr`` and ``sections`` only with ``details``
        (they are stored compressed, and only the report reads them)."""

    def outcomes(self, run_ids: Sequence[int]) -> list[tuple[int, str, str]]:
        """(run id, node id, outcome) of every result of these runs: the report's history of
        many runs, read without building a Result per row."""

    def history(self, nodeid: str, limit: int = 50) -> list[tuple[Run, Result]]:
        """One test's results over runs and devices, newest first."""

    def recent_results(self, runs: int) -> list[Result]:
        """Every result of the newest ``runs`` runs."""

    def timings(self, runs: int) -> list[tuple[str, str, float]]:
        """(node id, outcome, duration) of every result of the newest ``runs`` runs: the scheduler's input."""

    def import_costs(self, runs: int) -> list[ImportCost]:
        """Every import measured in the newest ``runs`` runs."""

    def imports(self, run_id: int) -> list[ImportCost]:
        """The files ``run_id``'s workers imported, in the order they did (for replay)."""

    def pinned_identity(self, device: str) -> Pin | None:
        """The identity pinned for ``device``, or None if none is (yet)."""

    def pin_identity(self, device: str, identity: str, pinned: float, run_id: int | None) -> None:
        """Pin ``identity`` for ``device``, replacing any identity pinned before."""

    def forget_identity(self, device: str) -> bool:
        """Unpin ``device`` so that the next run pins what it reports; False if nothing was pinned."""

    def identities(self) -> list[Pin]:
        """Every pin, by device name."""

    def add_quarantine(self, run_id: int, device: str, reason: str, at: float) -> None: ...

    def quarantines(self, run_id: int) -> list[Quarantine]:
        """The devices ``run_id`` quarantined, in the order it did."""

    def add_environments(self, records: Sequence[EnvironmentRecord]) -> None: ...

    def environments(self, run_id: int) -> list[EnvironmentRecord]:
        """The environments ``run_id`` ran in, by name."""

    def close(self) -> None: ...


@runtime_checkable
class FailingResults(Protocol):
    """What a backend may offer to answer :func:`failing_results` in one query."""

    def failing_results(self, exclude_run: int | None = None) -> list[Result]: ...


def failing_results(store: Store, exclude_run: int | None = None) -> list[Result]:
    """Every (test, device) pair that is failing: its newest result on that device (over all
    runs; passes, skips and failures count, a DeviceError's retry does not) is a failure. A
    test stays failing on a device until it passes (or is skipped) there. Sorted by test, then
    device; each result carries the run it last failed in. ``exclude_run``: the run going on."""
    if isinstance(store, FailingResults):
        return store.failing_results(exclude_run)
    newest: dict[tuple[str, str], Result] = {}
    for run in store.runs():  # newest first
        if run.id == exclude_run:
            continue
        for result in reversed(store.results(run.id)):
            if result.outcome in CONCLUSIVE:
                newest.setdefault((result.nodeid, result.device), result)
    failing = [result for result in newest.values() if result.outcome in FAILING]
    return sorted(failing, key=lambda result: (result.nodeid, result.device))


def median_durations(timings: Iterable[tuple[str, str, float]]) -> dict[str, float]:
    """Per test, the median duration of its timed results (for scheduling)."""
    by_test: dict[str, list[float]] = {}
    for nodeid, outcome, duration in timings:
        if outcome in TIMED:
            by_test.setdefault(nodeid, []).append(duration)
    return {nodeid: statistics.median(values) for nodeid, values in by_test.items()}


def median_import_costs(imports: Iterable[ImportCost]) -> dict[str, float]:
    by_module: dict[str, list[float]] = {}
    for item in imports:
        by_module.setdefault(item.module, []).append(item.seconds)
    return {module: statistics.median(values) for module, values in by_module.items()}


def last_run(store: Store) -> Run | None:
    runs = store.runs(limit=1)
    return runs[0] if runs else None
