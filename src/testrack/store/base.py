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
import statistics
from collections.abc import Iterable, Sequence
from typing import Protocol


class StoreError(Exception):
    """The store cannot be used; the message says which file and what to do."""


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


#: Outcomes that mean "this test did not pass on this device".
FAILING = ("failed", "error", "crashed", "timeout", "unmatched")
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

    def results(self, run_id: int) -> list[Result]:
        """In the order they were recorded."""

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

    def close(self) -> None: ...


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
