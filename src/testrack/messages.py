"""Everything that crosses the process boundary, written down once.

The controller and its workers talk over one socket per worker
(:class:`multiprocessing.connection.Connection`, pickled frozen dataclasses).
Each direction has a closed set of message types; both sides dispatch with
``match`` on the type, so a new message is a new class here and a new case there.
Reports travel as the dicts of pytest's ``pytest_report_to_serializable`` hook,
so plugins that extend report serialization keep working; a plain passing report
travels as a few numbers when only pytest serializes reports (:mod:`testrack.compact`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeAlias

from testrack.rack import Device
from testrack.scheduling.requests import DeviceRequest

SerializedReport = dict[str, Any]


# --------------------------------------------------------------------------- worker -> controller


@dataclasses.dataclass(frozen=True)
class WorkerReady:
    """The worker's pytest session has started; it can take work."""

    pid: int
    python: str


@dataclasses.dataclass(frozen=True)
class CollectedTest:
    """What the controller needs to know about a test without importing it."""

    nodeid: str
    location: tuple[str, int | None, str]
    #: One tuple of (key, allowed values) pairs per ``@pytest.mark.device`` marker.
    requirements: tuple[tuple[tuple[str, tuple[Any, ...]], ...], ...]
    #: Set when the test's ``device`` marker cannot be understood.
    requirement_error: str | None = None
    #: Seconds from ``@pytest.mark.rack_timeout(S)``; None: the run's ``--rack-timeout``.
    timeout: float | None = None
    #: ``@pytest.mark.devices``: the devices the test needs at once, by role (then
    #: ``requirements`` is empty). From ``scheduling.requests.declaration(item)``.
    devices: DeviceRequest | None = None


@dataclasses.dataclass(frozen=True)
class CollectedUnit:
    """One file of a :class:`Collect` request: its tests, and what importing it cost."""

    key: str
    tests: tuple[CollectedTest, ...]
    #: Seconds spent collecting (importing) the file in this worker.
    seconds: float
    #: Node ids of the collectors that hold the file, outermost first, the file's own last
    #: (directories, packages, the module): a worker that left one never enters it again.
    scopes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Collected:
    """Result of a :class:`Collect` request: tests in collection order, after deselection."""

    units: tuple[CollectedUnit, ...]
    deselected: tuple[str, ...]
    #: Serialized ``CollectReport`` of collectors that failed or were skipped.
    reports: tuple[SerializedReport, ...]
    duration: float
    #: What plugins print after collection (``pytest_report_collectionfinish``), for these files.
    header: tuple[str, ...] = ()
    #: The files of ``Collect.only_import``, imported (or tried: an error shows where tests are made).
    imported: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class WantWork:
    """The worker is down to its last queued tests and needs to know what follows them."""


@dataclasses.dataclass(frozen=True)
class MayIStart:
    """The worker is about to start a test, and the deadline its controller set on its board
    (its slot's lease, certainly held until then) has passed: it starts nothing until told
    (``LeaseHeld``, with the board's deadline moved on) or stopped (``Shutdown``)."""


@dataclasses.dataclass(frozen=True)
class TestReports:
    """``TestReport`` objects, in order, for one or more tests: serialized, or compact
    (:mod:`testrack.compact`) when plain and passing."""

    reports: tuple[SerializedReport | tuple[Any, ...], ...]
    #: Node ids whose protocol (setup, call, teardown) is complete, in order.
    finished: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class WarningRecorded:
    """A warning captured in the worker, replayed through ``pytest_warning_recorded``."""

    message: str
    category: str
    filename: str
    lineno: int
    when: str
    nodeid: str


@dataclasses.dataclass(frozen=True)
class LogRecords:
    """Log records from outside any test, for the session's log file (``--log-file``)."""

    records: tuple[dict[str, Any], ...]


@dataclasses.dataclass(frozen=True)
class SuiteProperty:
    """``record_testsuite_property(name, value)`` in a worker, for the one JUnit file."""

    name: str
    value: str


@dataclasses.dataclass(frozen=True)
class WorkerFinished:
    """The worker's session ended (after :class:`Finish` or :class:`Shutdown`)."""

    exitstatus: int
    #: ``config.workeroutput``, for ``pytest_testnodedown`` (pytest-cov's coverage data, say).
    workeroutput: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class WorkerFailed:
    """The worker hit an internal error; the text is the traceback."""

    error: str


@dataclasses.dataclass(frozen=True)
class CloneRefused:
    """The first worker did not clone itself: what its configuration or collection read
    differs between slots (so each worker configures on its own), or it could not fork."""

    reason: str


FromWorker: TypeAlias = (
    WorkerReady
    | CloneRefused
    | Collected
    | WantWork
    | MayIStart
    | TestReports
    | WarningRecorded
    | LogRecords
    | SuiteProperty
    | WorkerFinished
    | WorkerFailed
)


# --------------------------------------------------------------------------- controller -> worker


@dataclasses.dataclass(frozen=True)
class Hello:
    """First message: who the worker is and what run it belongs to."""

    workerinput: dict[str, Any]
    #: The controller's command line, parsed again by the worker's own pytest.
    args: tuple[str, ...]
    #: The controller's ``sys.path`` before any conftest changed it.
    sys_path: tuple[str, ...]
    #: False for a worker in another environment: ``sys_path`` is then only what the controller
    #: added (the project, PYTHONPATH), put in front of the worker's own path.
    replace_sys_path: bool = True


@dataclasses.dataclass(frozen=True)
class Start:
    """Second message: what the controller knows only once configured; the worker then starts.

    The Hello goes out as soon as the worker is launched, so that the worker
    parses its command line and loads its conftests while the controller is
    still configuring; the Start follows from the controller's session start,
    once plugins have added what their workers need (``pytest_configure_node``).
    """

    basetemp: str | None
    #: The complete ``workerinput``, as plugins left it after ``pytest_configure_node``.
    workerinput: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: Plain passing reports may travel compact (:mod:`testrack.compact`): no plugin of the
    #: controller reads reports its own way.
    compact_reports: bool = False


@dataclasses.dataclass(frozen=True)
class Collect:
    """Import these files (collection arguments), in this order, and report their tests."""

    paths: tuple[str, ...]
    #: Of ``paths``, those only imported now: their tests are made when a Run first needs them
    #: (another Collect comes before it). A worker that runs a few of many files then imports
    #: every file first, as plain pytest does, without building every file's tests.
    only_import: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Run:
    """Append these tests to the worker's queue, to run in this order."""

    nodeids: tuple[str, ...]
    #: Those whose history says they run long: what finished before them is sent first.
    long: tuple[str, ...] = ()
    #: Those with no history of their own: unless another case of the same test function ran
    #: short in this worker, what finished before them is sent first (they may run for ever).
    unknown: tuple[str, ...] = ()
    #: For a multi-device test (then ``nodeids`` is that one test): its devices by position,
    #: this worker's device first. The worker builds the ``devices`` fixture from them.
    devices: tuple[Device, ...] = ()


@dataclasses.dataclass(frozen=True)
class Finish:
    """No more tests will come: run the ones queued (the last with ``nextitem=None``, so
    fixtures are torn down once, as in plain pytest), end the session and exit."""


@dataclasses.dataclass(frozen=True)
class Idle:
    """Nothing for now, but stay: run the tests queued (the last with ``nextitem=None``, so its
    fixtures are torn down as at a session's end) and wait for more, or for Finish. Sent to a
    busy worker whose slot a test on several devices will need: it is lent to that test when
    idle, instead of ending and a fresh worker starting in its slot."""


@dataclasses.dataclass(frozen=True)
class Shutdown:
    """Stop now: run nothing more that is queued, end the session and exit."""


@dataclasses.dataclass(frozen=True)
class LeaseHeld:
    """The answer to ``MayIStart`` when the share confirmed the lease: go on."""


@dataclasses.dataclass(frozen=True)
class Clone:
    """To the first worker once it has collected every file, before any test: fork a copy of
    itself for each of these slots (testrack.cloning), configured, with every file imported and
    every test collected, unless its configuration or collection read what differs between
    slots. Each copy then reads its own Hello and Start from its own socket."""

    slots: tuple[str, ...]
    #: Each slot's environment, as its own worker would have it.
    envs: tuple[dict[str, str], ...]
    #: ``workerinput`` keys whose values differ between the slots.
    differing: tuple[str, ...]


ToWorker: TypeAlias = Hello | Start | Collect | Run | Finish | Idle | Shutdown | LeaseHeld | Clone
