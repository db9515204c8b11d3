"""The controller: the story of a rack run.

It lives in the ``pytest`` process the user started, never imports a test
module, and drives the session through pytest's own hooks so that the
terminal, ``--junitxml``, ``-x``, ``--lf`` and other plugins see the reports
as if the tests had run here:

1. ``pytest_sessionstart``: start one worker per device slot (plugins fill each
   worker's ``workerinput`` through xdist's ``pytest_configure_node``).
2. ``pytest_collection``: workers import the test files and say what tests they
   hold; the imports each worker needs are planned before any test runs
   (:mod:`testrack.collecting`).
3. ``pytest_runtestloop``: hand out tests on demand (:mod:`testrack.scheduling`),
   replay the reports (:mod:`testrack.replay`), deal with crashes, time limits and
   bad devices (:mod:`testrack.faults`), stop on ``-x``.
4. The summary: per device in load mode, the matrix in each mode (:mod:`testrack.summary`).

The run loop waits on every worker's socket, its output pipes and the device
checks at once, and never blocks on a send (:mod:`testrack.channel`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import gc
import os
import selectors
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from testrack import compact, envs, nodes, relay, sequencing
from testrack import messages as m
from testrack.collecting import Collection, RemoteItem
from testrack.collection import FileUnit
from testrack.faults import Faults
from testrack.gangs import Gangs
from testrack.health import DeviceState, Health
from testrack.leasing import Leasing
from testrack.planning import TestInfo
from testrack.progress import Progress
from testrack.rack import Device, Rack
from testrack.recorder import Recorder
from testrack.replay import Replay
from testrack.scheduling import Dispatcher, Job, Slot
from testrack.scheduling.sequences import SequenceDispatcher
from testrack.share import ShareError
from testrack.sharedrun import SharedRun
from testrack.store import RunInfo
from testrack.summary import device_counts, format_counts, matrix_lines
from testrack.trace import trace
from testrack.workers import Launcher, State, WorkerHandle

#: Seconds a worker gets to finish its session after Shutdown before it is killed.
SHUTDOWN_GRACE = 30.0
#: Seconds workers get to stop after a Ctrl-C before they are killed (a second Ctrl-C: at once).
INTERRUPT_GRACE = 10.0
#: How long a finished run waits for device checks still under way.
CHECK_WAIT_AT_END = 10.0
#: A test known to take this long (seconds) has the reports before it sent first (worker.FLUSH_AFTER).
LONG_TEST = 0.05
#: Seconds a worker started mid-run costs before its first test (a new interpreter, pytest's
#: configuration, the collection of its file), measured at 0.4-0.8 s on a small machine: a free
#: slot joins a module left to busy workers only when its share is worth twice that.
FRESH_WORKER_COST = 1.0
#: Seconds between copies of the leases' deadlines to the workers' boards (the heartbeat renews
#: the leases every ttl / 3; a worker past its board's deadline asks before its next test).
BOARDS_EVERY = 0.5


class Phase(enum.Enum):
    """Where the run is."""

    COLLECTING = "collecting"
    RUNNING = "running"
    STOPPING = "stopping"


class Controller:
    """Runs a session's tests on the rack's workers (registered as a pytest plugin)."""

    def __init__(
        self,
        config: pytest.Config,
        rack: Rack,
        mode: str,
        launcher: Launcher,
        recorder: Recorder,
        lazy: bool = False,
        sequential: str | None = None,
    ) -> None:
        self.config = config
        self.rack = rack
        self.mode = mode
        self.launcher = launcher
        self.recorder = recorder
        self.lazy = lazy
        #: Why the run uses one worker in collection order (``--sw``), or None.
        self.sequential = sequential
        self.devices: dict[str, Device] = {d.name: d for d in rack.devices}
        self.slots: list[Slot] = launcher.slots[:1] if sequential else launcher.slots
        self.dispatcher: Dispatcher | SequenceDispatcher = Dispatcher(self.slots)
        self.workers: dict[str, WorkerHandle] = {}
        self.testrunuid = launcher.testrunuid
        self.echo_output = config.getoption("capture") == "no"
        self.phase = Phase.COLLECTING
        self.session: pytest.Session | None = None
        self.basetemp: Path | None = None
        self.tests: dict[str, TestInfo] = {}
        self.unmatched: list[tuple[TestInfo, str]] = []
        self.durations: dict[str, float] = {}
        self.rerun: dict[str, set[str]] | None = None
        self.runs = 0
        self.import_plan: dict[str, list[str]] = {}
        self.notes: list[str] = []
        #: What pytest_configure_node gave each slot's first worker (see _configure_node).
        self._node_inputs: dict[str, dict[str, Any]] = {}
        self.problems: list[str] = []
        #: Each mode: tests a quarantined device did not run, by device.
        self.not_run: dict[str, list[str]] = {}
        #: A seed or a stored run fixing each worker's sequence (decided at session start, once
        #: every plugin is configured: pytest-randomly's seed may be the one).
        self.order = sequencing.Order()
        self.health = Health(config, recorder, rack.devices)
        self.collection = Collection(self)
        self.gangs = Gangs(self)
        self.replay = Replay(self)
        #: Whether workers may send plain passing reports compact: only pytest's own plugins
        #: read serialized reports here (testrack.compact).
        self.compact_reports = compact.only_pytest_serializes(config.hook.pytest_report_from_serializable)
        self.faults = Faults(self)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.health.wakeup, selectors.EVENT_READ, None)
        # Ctrl-C and SIGTERM set a flag and wake the loop, which stops at a safe point: an
        # exception raised in the middle of replaying a report would lose that report.
        self._stop_signals = 0
        self._interrupting = False
        self._old_handlers: dict[int, Any] = {}
        read, self._signal_write = os.pipe()
        os.set_blocking(read, False)
        os.set_blocking(self._signal_write, False)
        self._signal_read = os.fdopen(read, "rb", buffering=0)
        self._selector.register(self._signal_read, selectors.EVENT_READ, "signal")
        self._checks_deadline: float | None = None
        self._boards_due = 0.0
        self._warnings_seen: set[tuple[str, str, str, int, str, str]] = set()
        #: The live view or progress lines (progress.py); the run loop ticks it.
        self.progress = Progress(config, self)
        #: Leases on the devices' slots when the rack is shared (leasing.py); None: not shared.
        self._said: list[str] = []
        self.leasing = Leasing.open(config, rack, self.slots, self.testrunuid, self._wake, self._said.append)
        if self.leasing is not None:  # a quarantine is the share's, for every run of it
            self.health.on_quarantine = self._quarantine_in_share
            self.health.on_pass = self._passed_check
        #: Slots whose workers end to give their leases back to a run that waits (fairness), and
        #: how often each device was given back.
        self.giving_back: set[str] = set()
        #: Slots whose lease went back because nothing left in the run could use them: another
        #: run may have the device meanwhile; work that comes back for it (a retry) waits again.
        self.released_idle: dict[str, Slot] = {}
        self.gave_back: dict[str, int] = {}
        #: This host's part of a run over many hosts (--rack-run), or None.
        self.shared: SharedRun | None = None
        try:
            self.shared = SharedRun.open(self)
        except pytest.UsageError:
            if self.leasing is not None:
                self.leasing.close()
            raise

    # ------------------------------------------------------------------ pytest hooks

    def decide_order(self) -> None:
        config = self.config
        if config.getoption("rack_worker") and not config.getoption("rack_replay"):
            raise pytest.UsageError(
                "--rack-worker picks a worker of --rack-replay RUN; add --rack-replay RUN"
            )
        if config.getoption("rack_replay_anywhere") and not config.getoption("rack_replay"):
            raise pytest.UsageError(
                "--rack-replay-anywhere moves the sequences of --rack-replay RUN to other devices; "
                "add --rack-replay RUN"
            )
        if config.getoption("rack_replay"):
            if config.getoption("rack_seed") is not None or config.getoption("rack_random"):
                raise pytest.UsageError(
                    "--rack-replay runs a stored run's own order; leave out --rack-random/--rack-seed"
                )
            if self.recorder.store is None:
                raise pytest.UsageError(
                    f"--rack-replay needs the results store, and it is {self.recorder.location}: "
                    "replay from the store the run was recorded in (--rack-store PATH)"
                )
            self.order = sequencing.from_store(config, self.recorder.store, self.slots, self.rack)
        elif not self.sequential:
            self.order = sequencing.choose(config, self.rack)

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        names = ", ".join(f"{d.name} x{d.capacity}" if d.capacity > 1 else d.name for d in self.rack.devices)
        count = len(self.slots)
        lines = [
            f"testrack: {self.mode} mode on {self.rack.source}: {names} "
            f"({count} worker{'s' if count != 1 else ''})"
        ]
        if envs.header_key in self.config.stash:
            lines.append(self.config.stash[envs.header_key])
        if self.sequential:
            lines.append(f"testrack: one worker, tests in collection order ({self.sequential})")
        if self.order.seed is not None:
            lines.append(
                f"testrack: random order, seed {self.order.seed} (from {self.order.source}; "
                f"--rack-seed {self.order.seed} repeats it)"
            )
        elif self.order.replay is not None:
            lines.append(
                f"testrack: replaying {self.order.source}: each worker runs the sequence it ran then"
            )
        if self.lazy:
            lines.append(
                "testrack: --rack-collect lazy: a worker imports a test file when it first gets one of "
                "its tests, possibly after other tests ran there (plain pytest imports every file first)"
            )
        return lines

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        trace("controller: sessionstart")
        self.session = session
        self.decide_order()
        # The workers wait for their Start: send it first, before the header and the store.
        factory = getattr(self.config, "_tmp_path_factory", None)
        if factory is not None:
            self.basetemp = factory.getbasetemp()
        for slot in self.slots:
            if self.leasing is None or self.leasing.take_now(slot):
                self.start_worker(slot)
        if self.leasing is not None:
            # Quarantined by another run: checked before use, as after any other run; a run with
            # no check to run keeps it out too.
            for name, why in self.leasing.quarantined_elsewhere().items():
                if not self.health.needs_check(self.devices[name]):
                    self.health.quarantine(name, f"{why} (no check here can clear it)", shared=True)
        for device in {s.device for s in self.slots if s.id in self.workers}:
            self.health.check(device)
        if self.leasing is not None:
            self._wait_for_a_first_lease()
        self.recorder.begin(
            RunInfo(
                uid=self.testrunuid if self.shared is None else self.shared.uid,
                started=time.time(),
                mode=self.mode,
                rack=self.rack.source,
                command=shlex.join(["pytest", *map(str, self.config.invocation_params.args)]),
                seed=self.order.seed,
            )
        )
        built = self.config.stash.get(envs.environments_key, {})
        self.recorder.environments(envs.in_use(built, self.rack.devices))
        if threading.current_thread() is threading.main_thread():
            # SIGTERM (a CI job cancelled) ends the run as Ctrl-C does: summarised and stored.
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._old_handlers[signum] = signal.signal(signum, self._on_stop_signal)

    def _wait_for_a_first_lease(self) -> None:
        """No slot was free: collecting needs a worker, so wait here for the first grant."""
        assert self.leasing is not None
        while not self.workers:
            self.pump(0.5)
            if not self.workers and len(self.leasing.refused) == len(self.slots):
                self._say_leasing()
                raise pytest.UsageError(
                    "no device of the rack could be leased: "
                    + "; ".join(dict.fromkeys(self.leasing.refused.values()))
                )

    def _wake(self) -> None:
        """Wake the run loop from another thread (a lease granted, lost, or a line to show)."""
        with contextlib.suppress(OSError, ValueError):
            os.write(self._signal_write, b"l")

    def on_leases(self) -> None:
        """Grants that arrived start their slots' workers; lost leases stop theirs."""
        leasing = self.leasing
        assert leasing is not None
        self._say_leasing()
        for slot, refused in leasing.granted():
            if refused is not None:
                self.problems.append(f"{slot.id} ({slot.device}) was not leased: {refused}")
                self.faults.dead_slots[slot.id] = f"not leased: {refused}"
                if self.phase is Phase.RUNNING:
                    self.dispatcher.drop_slot(slot.id, permanently=True)
                    self.faults.report_orphans()
                    if self.gangs.pending:  # a test on several devices may have no set left now
                        self.gangs.start()
                        self.feed_idle()
                continue
            if self.phase is Phase.STOPPING:
                leasing.release(slot.id)
                continue
            trace(f"controller: {slot.id} leased")
            worker = self.start_worker(slot, fresh=True)
            self.health.check(slot.device)  # a device another run used is checked again
            self.give_imports(worker, self.planned_for(worker))
        for slot_id in leasing.lost():
            self.lease_lost(slot_id)

    def lease_lost(self, slot_id: str) -> None:
        """The slot is no longer this run's: its worker takes no more tests, and the lease is
        waited for again (what the worker held goes back to the queue when it ends)."""
        assert self.leasing is not None
        slot = next(s for s in self.slots if s.id == slot_id)
        self.notes.append(f"{slot_id} ({slot.device}) lost its lease mid-run and waited for it again")
        worker = self.workers.get(slot_id)
        if worker is not None and worker.alive and not worker.winding_down:
            self.shutdown_worker(worker)
        if self.phase is not Phase.STOPPING:
            self.leasing.wait_for(slot)

    def _quarantine_in_share(self, device: str, reason: str) -> None:
        assert self.leasing is not None
        try:
            self.leasing.quarantine(device, reason)
        except ShareError as exc:
            self.problems.append(f"could not tell the share that {device} is quarantined: {exc}")

    def _passed_check(self, device: str) -> None:
        assert self.leasing is not None
        try:
            if self.leasing.passed_check(device):
                self.notes.append(f"{device} passed its check: its quarantine in the share is lifted")
        except ShareError as exc:
            self.problems.append(f"could not lift {device}'s quarantine in the share: {exc}")

    def _say_leasing(self) -> None:
        if not self._said:
            return
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        lines, self._said[:] = list(self._said), []
        for line in lines:
            if reporter is not None:
                reporter.write_line(line)
            else:
                print(line, file=sys.stderr)

    def _on_stop_signal(self, signum: int, frame: object) -> None:
        self._stop_signals += 1
        with contextlib.suppress(OSError):
            os.write(self._signal_write, b"!")

    def _restore_signals(self) -> None:
        """Back to pytest's own behaviour once no loop is there to answer; a pending stop raises."""
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        self._old_handlers.clear()

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection(self, session: pytest.Session) -> bool:
        trace("controller: collection starts")
        self.durations = self.recorder.durations()
        self.collection.start(session)
        try:
            while not self.collection.done():
                self.pump()
        except KeyboardInterrupt:
            raise KeyboardInterrupt(self.interrupt()) from None
        self.collection.finish(session)
        trace("controller: collection done")
        return True

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        if session.testsfailed and not session.config.option.continue_on_collection_errors:
            raise session.Interrupted(
                f"{session.testsfailed} error{'s' if session.testsfailed != 1 else ''} during collection"
            )
        self.phase = Phase.RUNNING
        for info, text in self.unmatched:
            self.replay.synthetic(info, None, text, when="setup")
        self.faults.report_orphans()
        for worker in list(self.workers.values()):
            if worker.wants_work:
                self.feed(worker)
        try:
            while not self.run_done():
                tick = self.faults.enforce_limits()
                wait = 0.2 if self._checks_deadline is not None else tick
                wait = self.progress.tick(wait)
                if self.shared is not None:
                    wait = self.shared.tick(wait)
                self.pump(wait)
                if (session.shouldfail or session.shouldstop) and self.phase is Phase.RUNNING:
                    self.stop()
        except KeyboardInterrupt:
            raise KeyboardInterrupt(self.interrupt()) from None
        finally:
            self.shutdown()
            self._restore_signals()
        if self.not_run:
            session.testsfailed += 1  # a device that could not run its tests fails the run
        if self.replay.flaky and not self.config.getoption("rack_flaky_ok", False):
            session.testsfailed += 1  # flaky is not passing, unless --rack-flaky-ok says it is
        if session.shouldfail:
            # Tests already running when the limit was reached may have failed too;
            # the message keeps the count that stopped the run, as in plain pytest.
            session.shouldfail = self.replay.stop_reason or session.shouldfail
            raise session.Failed(session.shouldfail)
        if session.shouldstop:
            raise session.Interrupted(session.shouldstop)
        return True

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        quarantined = self.health.quarantined()
        outcomes = self.replay.outcomes
        dead = self.faults.dead_slots
        if self.recorder.problem and self.recorder.problem not in self.problems:
            self.problems.append(self.recorder.problem)
        if (hidden := self.replay.hidden_note()) is not None:
            self.notes.append(hidden)
        if not (outcomes or dead or self.problems or self.notes or quarantined):
            return
        names = [d.name for d in self.rack.devices]
        if self.not_run:
            # Counted on pytest's last line, which is then not green: the run failed.
            missed = [RunSlot(nodeid, device) for device, ids in self.not_run.items() for nodeid in ids]
            add_stats = getattr(terminalreporter, "_add_stats", None)
            if add_stats is not None:
                add_stats("not run (quarantined)", missed)
            else:  # pragma: no cover - a pytest without it
                terminalreporter.stats.setdefault("not run (quarantined)", []).extend(missed)
        if self.mode == "each":
            title = f"testrack: each mode, results per device ({_n(len(names), 'device')})"
            terminalreporter.write_sep("=", title)
            verbose = self.config.get_verbosity() > 1  # -vv: every test, not only the differing ones
            for line in matrix_lines(
                outcomes,
                names,
                quarantined,
                everything=verbose,
                width=terminalreporter._tw.fullwidth,
                not_run={d: len(ids) for d, ids in self.not_run.items()},
                not_collected=self.collection.not_collected,
                reruns=self.replay.rerun_on,
            ):
                _write(terminalreporter, line)
        else:
            counts = device_counts(outcomes, names, self.replay.rerun_on)
            slots = len(self.slots)
            spread = (
                _n(slots, "slot") if len(names) == 1 else f"{_n(len(names), 'device')}, {_n(slots, 'slot')}"
            )
            terminalreporter.write_sep("-", f"testrack: load mode over {spread}")
            gone = self.faults.dead_devices()
            for name in names:
                extra = ""
                if name in quarantined:
                    extra = f" (quarantined: {quarantined[name]})"
                elif name in gone:
                    extra = f" (no workers: {gone[name]})"
                _write(terminalreporter, f"{name}: {format_counts(counts[name])}{extra}")
        if self.recorder.problem and self.recorder.problem not in self.problems:
            self.problems.append(self.recorder.problem)  # the store failed while the summary was made
        if self.replay.flaky:
            add_stats = getattr(terminalreporter, "_add_stats", None)
            if add_stats is not None:
                add_stats("flaky", [RunSlot(nodeid, where[1]) for nodeid, where in self.replay.flaky.items()])
            ok = self.config.getoption("rack_flaky_ok", False)
            for nodeid, (failed, passed) in self.replay.flaky.items():
                terminalreporter.write_line(
                    f"testrack: flaky: {nodeid} failed on {', '.join(failed)}, then passed on {passed}"
                    + ("" if ok else " (the run fails; --rack-flaky-ok lets flaky tests pass)"),
                    yellow=True,
                )
        if self.order.seed is not None:
            seed = self.order.seed
            other = sequencing.randomly_differs(self.config, self.order)
            if other is None:
                again = f"pytest --rack-seed {seed} runs it again"
            else:  # two seeds given: the order's and what random draws
                again = (
                    f"pytest-randomly reseeds random with {other}: pytest --rack-seed {seed} "
                    f"--randomly-seed={other} runs it again"
                )
            terminalreporter.write_line(f"testrack: random order, seed {seed}: {again}")
        for note in self.notes:
            terminalreporter.write_line(f"testrack: {note}")
        for problem in self.problems:
            terminalreporter.write_line(f"testrack: {problem}", yellow=True)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.replay.fix_last_failed()  # before the cache plugin writes it
        try:
            outcome = pytest.ExitCode(exitstatus).name.lower()
        except ValueError:
            outcome = f"exit {exitstatus}"
        if self.shared is None or self.shared.finished_run:
            self.recorder.finish(outcome if self.shared is None else self.shared.outcome)
        # This process ran no test code, so its heap holds nothing for pytest's final
        # gc.collect() calls to find: freezing it makes them (and exit) cheaper.
        gc.freeze()

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self._restore_signals()
        self.health.close()
        if self.leasing is not None:
            self.leasing.close()
        deadline = time.monotonic() + 5.0
        for worker in self.workers.values():
            if worker.state is State.FINISHED and not self.echo_output:
                # Its session is over and reported: let it exit in its own time, unwaited.
                worker.reap_in_background(SHUTDOWN_GRACE)
            else:
                worker.reap(deadline, self.echo_output)
                worker.close()
        self._selector.close()
        self._signal_read.close()
        os.close(self._signal_write)
        trace("controller: workers reaped")

    # ------------------------------------------------------------------ what the parts ask for

    def filter_units(self, units: list[FileUnit]) -> list[FileUnit]:
        """Only the files that can hold what ``--lf`` and ``--rack-failed`` rerun."""
        units = self._last_failed_filter(units)
        return self._rack_failed_filter(units)

    def order_tests(self, infos: list[TestInfo]) -> list[TestInfo]:
        """The order (and, for ``--lf``, the selection) pytest's cache plugin gives the whole
        session: failed first (``--ff``), new first (``--nf``). The workers each saw only their
        own files, so the controller applies it again to every test, by id and file, and prints
        the lines pytest prints after collection (``run-last-failure: ...``)."""
        if self.sequential:
            return infos  # one worker collected everything: its own plugins did it all
        items = [RemoteItem(info.test.nodeid, self.config.rootpath) for info in infos]
        for name, kwargs in (("lfplugin", {"config": self.config}), ("nfplugin", {})):
            plugin = self.config.pluginmanager.get_plugin(name)
            wrapper = getattr(plugin, "pytest_collection_modifyitems", None)
            if wrapper is not None:
                _drive(wrapper(items=items, **kwargs))
        lines = self.config.hook.pytest_report_collectionfinish(
            config=self.config, start_path=self.config.invocation_params.dir, items=items
        )
        self.collection.header.extend(line for group in reversed(lines) for line in _as_lines(group))
        by_id = {info.test.nodeid: info for info in infos}
        kept = [by_id[item.nodeid] for item in items]
        remaining = {item.nodeid for item in items}
        for info in infos:
            if info.test.nodeid not in remaining:  # deselected by --lf
                self.tests.pop(info.test.nodeid, None)
        return [dataclasses.replace(info, index=k) for k, info in enumerate(kept)]

    # ------------------------------------------------------------------ workers

    def start_worker(self, slot: Slot, fresh: bool = False) -> WorkerHandle:
        """A worker for ``slot``: prestarted if there is one (``fresh``: always a new process)."""
        worker = self.launcher.start(slot) if fresh else self.launcher.take(slot)
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            worker.echo_to = reporter.write_line
        workerinput = dict(self.launcher.hello_for(slot).workerinput)
        if self.order.fixed:
            workerinput["testrack_ordered"] = True  # the order is the controller's, not a plugin's
        worker.node = nodes.WorkerNode(self.config, worker.label.id, workerinput)
        self._configure_node(worker)
        basetemp = str(self.basetemp / slot.id) if self.basetemp else None
        self.workers[slot.id] = worker
        self.dispatcher.open_slot(slot.id)
        self._selector.register(worker.channel, selectors.EVENT_READ, (worker, None))
        for stream in worker.streams:
            self._selector.register(stream, selectors.EVENT_READ, (worker, stream))
        self.send(worker, m.Start(basetemp, worker.node.workerinput, self.compact_reports))
        self.allow_starts(worker)
        return worker

    def _configure_node(self, worker: WorkerHandle) -> None:
        """``pytest_configure_node`` for a new worker. A worker that replaces one (after a crash,
        say) gets what the plugin gave its slot's first worker when the plugin fails for it: the
        classic recipe pops a device from a pool it never refills, which would end the whole run
        (pytest-xdist stops there). A first worker's failure stays the run's error."""
        slot_id = worker.slot.id
        before = self._node_inputs.get(slot_id)
        if before is None:
            nodes.configure(worker.node)
            self._node_inputs[slot_id] = dict(worker.node.workerinput)
            return
        try:
            nodes.configure(worker.node)
        except Exception as exc:
            worker.node.workerinput = dict(before)
            where = nodes.hook_site(exc)
            self.notes.append(
                f"pytest_configure_node failed for the worker that replaced {worker.label.id}'s "
                f"({type(exc).__name__}: {exc}{where}); it was given what its first worker got. "
                "A plugin that hands out devices there should take a dead worker's back in "
                "pytest_testnodedown, or use the device testrack gives each worker (its device "
                "fixture, or $TESTRACK_DEVICE)"
            )

    def allow_starts(self, worker: WorkerHandle) -> None:
        """Write the slot's lease deadline on its worker's board: past it (this run was frozen or
        cut off), the worker asks before its next test (``MayIStart``) instead of touching a
        device that may be another run's by now."""
        if self.leasing is not None and (deadline := self.leasing.deadline(worker.slot.id)):
            worker.board.allow_until(deadline)

    def on_may_i_start(self, worker: WorkerHandle) -> None:
        """A worker found its lease's deadline passed: confirm the lease with the share, or stop
        the worker (what it held goes back to the queue)."""
        if worker.state is State.STOPPING or not worker.alive:
            return  # Shutdown is on its way (a worker told to Finish still runs what it holds)
        assert self.leasing is not None
        if not self.leasing.holds(worker.slot.id):
            self.lease_lost(worker.slot.id)
            return
        self.allow_starts(worker)
        self.send(worker, m.LeaseHeld())

    def replace_worker(self, dead: WorkerHandle) -> None:
        """A new worker in a dead one's slot; it imports what the slot was planned to run."""
        worker = self.start_worker(dead.slot)
        self.give_imports(worker, self.planned_for(dead))

    def planned_for(self, worker: WorkerHandle) -> list[str]:
        if isinstance(self.dispatcher, SequenceDispatcher):
            return self.dispatcher.modules_of(worker.slot.id)
        if self.mode == "each" or self.sequential or self.shared is not None:
            return [u.key for u in self.collection.units]
        return list(self.import_plan.get(worker.slot.id, worker.imported))

    def give_imports(self, worker: WorkerHandle, modules: list[str]) -> None:
        if self.phase is Phase.COLLECTING and self.mode == "load" and not self.sequential:
            return  # it pulls files like everyone else
        if modules:
            self.dispatcher.mark_imported(worker.slot.id, modules)
            self.collection.send(worker, modules)

    def restart_for_leftovers(self) -> None:
        """Jobs no live worker may take (they left their module, or passed them): start a
        fresh worker for them on a free slot of a device that can run them."""
        left = self.dispatcher.unreachable()
        if not left:
            return
        for slot in self.free_slots():
            mine = [j for j in left if slot.id in self.dispatcher.slots_for(j)]
            if not mine:
                continue
            fresh = self.start_worker(slot, fresh=True)
            self.give_imports(fresh, list(dict.fromkeys(j.module for j in mine)))
            left = [j for j in left if j not in mine]
            if not left:
                return
        self.lease_again({s for j in left for s in self.dispatcher.slots_for(j)})

    def release_idle_lease(self, slot: Slot) -> None:
        """Nothing left in this run can use the slot: its lease goes back now, not at the run's
        end, so another run waiting for the device need not wait for all of this one."""
        if (
            self.leasing is None
            or self.shared is not None  # a shared run's hosts claim more from the queue
            or self.phase is not Phase.RUNNING
            or self.gangs.active
            or slot.id in self.giving_back
            or ((worker := self.workers.get(slot.id)) is not None and worker.alive)
            or not self.leasing.holds(slot.id)
            or self.dispatcher.wants(slot.id)  # last: it walks the queues (swept every 0.5 s)
        ):
            return
        trace(f"controller: {slot.id} has nothing left here: its lease goes back")
        self.leasing.release(slot.id)
        self.released_idle[slot.id] = slot

    def lease_again(self, slot_ids: set[str]) -> None:
        """Work came back for slots whose lease went back idle: queue for them again."""
        for slot_id in slot_ids & self.released_idle.keys():
            if self.leasing is not None and self.phase is Phase.RUNNING:
                self.leasing.wait_for(self.released_idle.pop(slot_id))

    def share_free_slots(self) -> None:
        """A worker finished its part while others still work through modules it did not
        import: start a fresh worker in each free slot where a share of them pays its start.
        Not while tests on several devices wait (their slots are held for them)."""
        if (
            self.phase is not Phase.RUNNING
            or self.gangs.active
            or not isinstance(self.dispatcher, Dispatcher)
        ):
            return
        for slot in self.free_slots():
            shared = self.dispatcher.worth_sharing(slot.id, FRESH_WORKER_COST)
            if shared:
                trace(f"controller: {slot.id} restarts to share {', '.join(shared)}")
                fresh = self.start_worker(slot, fresh=True)
                self.give_imports(fresh, shared)

    def free_slots(self) -> list[Slot]:
        """This run's slots with no live worker whose device may take work."""
        free = []
        for slot in self.slots:
            worker = self.workers.get(slot.id)
            if (worker is not None and worker.alive) or slot.id in self.faults.dead_slots:
                continue
            if self.leasing is not None and not self.leasing.holds(slot.id):
                continue  # not this run's (yet): the grant starts its worker
            if (
                not self.health.usable(slot.device)
                and self.health.state(slot.device) is not DeviceState.CHECKING
            ):
                continue
            free.append(slot)
        return free

    def alive_workers(self) -> list[WorkerHandle]:
        return [w for w in self.workers.values() if w.alive]

    def send(self, worker: WorkerHandle, message: m.ToWorker) -> None:
        """Queue a message for a worker; the loop writes what the socket does not take now."""
        worker.send(message)
        self._watch_writes(worker)

    def _watch_writes(self, worker: WorkerHandle) -> None:
        with contextlib.suppress(KeyError, ValueError):
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if worker.channel.wants_write else 0)
            key = self._selector.get_key(worker.channel)
            if key.events != events:
                self._selector.modify(worker.channel, events, key.data)

    def node_down(self, worker: WorkerHandle, error: str | None) -> None:
        node = getattr(worker, "node", None)
        if node is not None and not node.shutting_down:
            node.shutting_down = True
            node.workeroutput = worker.workeroutput or {}
            nodes.down(node, error)
            if error is not None and (listeners := nodes.listeners(self.config)):
                self.notes.append(
                    f"{worker.label.id} ({worker.slot.device}) did not end cleanly, so what "
                    f"{', '.join(listeners)} gathered in it never came back: that report lacks the "
                    "tests this worker ran (pytest-xdist loses it the same way)"
                )

    def _forget(self, worker: WorkerHandle) -> None:
        for fileobj in (worker.channel, *worker.streams):
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(fileobj)

    # ------------------------------------------------------------------ the event pump

    def pump(self, timeout: float | None = None) -> None:
        """Wait for the next messages or output from any worker (or a device check) and handle them."""
        if not self._selector.get_map():
            return
        if self.leasing is not None and (now := time.monotonic()) >= self._boards_due:
            self._boards_due = now + BOARDS_EVERY  # the heartbeat renews the leases meanwhile
            for worker in self.alive_workers():
                self.allow_starts(worker)
            for slot in self.slots:  # a worker that ended while work for others was queued
                self.release_idle_lease(slot)
        try:
            self._handle_events(self._selector.select(timeout))
        finally:
            self.replay.end_round()  # what this round stored is shown before anything else
        if self._stop_signals and not self._interrupting:
            raise KeyboardInterrupt

    def _handle_events(self, ready: list[tuple[selectors.SelectorKey, int]]) -> None:
        for key, events in ready:
            if not (isinstance(key.data, tuple) and key.data[1] is None):  # not a worker's channel
                self.replay.end_round()  # a device check, a signal, a worker's output: in order
            if key.data is None:
                self.on_checks()
                continue
            if key.data == "signal":
                with contextlib.suppress(BlockingIOError):
                    self._signal_read.read()
                if self.leasing is not None:
                    self.on_leases()
                continue
            worker, stream = key.data
            if stream is not None:
                if stream in worker.streams and not worker.read_output(stream, self.echo_output):
                    with contextlib.suppress(KeyError, ValueError):
                        self._selector.unregister(stream)
                continue
            if events & selectors.EVENT_WRITE:
                worker.channel.flush()
                self._watch_writes(worker)
            if events & selectors.EVENT_READ and (worker.alive or worker.state is State.FINISHED):
                # A finished worker's end of file too: left unread, it would wake every select
                # at once (a busy loop) and its slot would never be freed for leftovers.
                self.receive(worker)

    def receive(self, worker: WorkerHandle) -> None:
        try:
            messages = worker.channel.receive()
        except EOFError:
            self.replay.end_round()
            self._forget(worker)
            self.faults.on_exit(worker)
            return
        for message in messages:
            self.on_message(worker, message)

    def on_message(self, worker: WorkerHandle, message: m.FromWorker) -> None:
        if type(message) is not m.TestReports:
            self.replay.end_round()  # e.g. a WantWork: its worker's finished tests are off its list
        match message:
            case m.TestReports():
                self.replay.on_reports(worker, message)
            case m.WantWork():
                worker.wants_work = True
                if self.phase is Phase.RUNNING:
                    self.feed(worker)
            case m.MayIStart():
                self.on_may_i_start(worker)
            case m.Collected():
                self.collection.on_collected(worker, message)
            case m.WorkerReady():
                self.on_ready(worker)
            case m.WarningRecorded():
                self.on_warning(message)
            case m.LogRecords(records=records):
                relay.replay_logs(self.config, list(records), None)
            case m.SuiteProperty(name=name, value=value):
                relay.add_suite_property(self.config, name, value)
            case m.WorkerFinished(workeroutput=output):
                worker.state = State.FINISHED
                worker.workeroutput = output
                # As xdist does: the node is down once its session is, not when its process exits
                # (which the run does not wait for).
                self.node_down(worker, None)
            case m.WorkerFailed(error=error):
                self.problems.append(
                    f"internal error in worker {worker.slot.id} ({worker.device.name}):\n{error}"
                )
            case _:
                raise TypeError(f"testrack controller: unexpected message {message!r}")

    def on_ready(self, worker: WorkerHandle) -> None:
        trace(f"controller: {worker.slot.id} ready")
        node = getattr(worker, "node", None)
        if node is not None:
            nodes.ready(node)
        if worker.state is not State.STARTING:
            return  # told to stop while it started (its device was quarantined): it ends now
        worker.state = State.READY
        self.collection.on_ready(worker)

    @pytest.hookimpl(trylast=True)
    def pytest_report_teststatus(self, report: Any) -> tuple[str, str, tuple[str, dict[str, bool]]] | None:
        """A ``rerun`` attempt (--rack-rerun-failed) reads as pytest-rerunfailures shows one."""
        if getattr(report, "outcome", None) == "rerun" and report.when == "call":
            return "rerun", "R", ("RERUN", {"yellow": True})
        return None

    def pytest_warning_recorded(self, warning_message: Any, when: str, nodeid: str) -> None:
        """Every warning this session shows, its own included: a worker's copy is not shown again."""
        self._warnings_seen.add(
            (
                _category_name(warning_message.category),
                str(warning_message.message),
                str(warning_message.filename),
                int(warning_message.lineno),
                when,
                nodeid,
            )
        )

    def on_warning(self, message: m.WarningRecorded) -> None:
        """A worker's warning, shown once: every worker that imports a file or configures
        the same plugins raises the same warning, and plain pytest shows it once."""
        import warnings

        key = (
            message.category,
            message.message,
            message.filename,
            message.lineno,
            message.when,
            message.nodeid,
        )
        if key in self._warnings_seen:
            return
        category = _resolve_category(message.category)
        record = warnings.WarningMessage(
            message=category(message.message),
            category=category,
            filename=message.filename,
            lineno=message.lineno,
        )
        self.config.hook.pytest_warning_recorded.call_historic(
            kwargs=dict(warning_message=record, when=message.when, nodeid=message.nodeid, location=None)
        )

    # ------------------------------------------------------------------ running

    def feed(self, worker: WorkerHandle) -> None:
        """Answer a worker's WantWork: a chunk of tests, or Finish (no more will come).

        A worker whose device is being checked waits for the verdict (its WantWork
        is answered when the check ends); one whose device is quarantined stops.
        """
        if worker.winding_down or not worker.alive:
            return
        if self.leasing is not None and not self.leasing.holds(worker.slot.id):
            self.lease_lost(worker.slot.id)  # asked before each test: never touch a device not ours
            return
        if (
            self.leasing is not None
            and self.phase is Phase.RUNNING
            and self.leasing.should_give_back(worker.slot.id)
        ):
            self.give_back(worker)
            return
        state = self.health.state(worker.device.name)
        if state in (DeviceState.UNCHECKED, DeviceState.CHECKING):
            worker.wants_work = True
            return
        worker.wants_work = False
        if state is DeviceState.QUARANTINED:
            self.shutdown_worker(worker)
            return
        gangs = self.gangs
        kept = False
        if gangs.active:
            worker.wants_work = True  # idle and asking: the allocator may lend this slot
            gangs.start()
            if not worker.wants_work:
                return  # it was given a test on several devices
            if not worker.assigned and gangs.holds(worker):
                return  # lent to such a test, or kept for the first one waiting: it waits, idle
            if worker.assigned and gangs.follow(worker):
                return  # such a test is queued behind what it holds
            if gangs.waits_behind(worker):
                return  # one is: asked again when the test before it ends (its worker waits)
            worker.wants_work = False
            kept = gangs.reservation is not None and worker.slot.id in gangs.reservation.slots
        jobs: list[Job] = []
        if not kept and not (worker.assigned and self.reserve_would_starve(worker)):
            jobs = self.dispatcher.take(worker.slot.id)
        if not jobs and not kept and self.shared is not None:
            jobs = self.shared.take(worker)  # the run's queue, when this host has nothing of its own
        if jobs:
            self.assign(worker, jobs)
        elif gangs.pending and gangs.may_need(worker):
            worker.wants_work = True  # a test on several devices may need it soon
            if worker.assigned and not worker.told_idle:
                # Busy: it may not wait for an answer to run its last test. It runs that test
                # as a session's last and stays, to be lent (no fresh worker in its slot).
                worker.told_idle = True
                self.send(worker, m.Idle())
        elif self.shared is not None and not worker.assigned and self.shared.may_have_more():
            # Idle, while tests may still come back to the queue (a host died): asked again. A
            # busy one is finished instead: its last test must not wait for a successor.
            worker.wants_work = True
        else:
            self.finish_worker(worker)

    def assign_gang(self, worker: WorkerHandle, job: Job, devices: list[Device]) -> None:
        """A test on several devices, to the worker of its first; the others are lent meanwhile."""
        if job.module not in worker.imported:
            # A worker started late (a replacement, or one for leftovers) may not have its file yet.
            self.collection.send(worker, [job.module])
        worker.wants_work = worker.told_idle = False
        worker.assigned.append(job)
        unknown = (job.nodeid,) if job.guessed else ()
        self.send(worker, m.Run((job.nodeid,), unknown=unknown, devices=tuple(devices)))

    def assign(self, worker: WorkerHandle, jobs: list[Job]) -> None:
        if self.dispatcher.lazy:
            missing = list(dict.fromkeys(j.module for j in jobs if j.module not in worker.imported))
            if missing:
                self.collection.send(worker, missing)
        worker.told_idle = False
        worker.assigned.extend(jobs)
        long = tuple(j.nodeid for j in jobs if not j.guessed and j.estimate >= LONG_TEST)
        unknown = tuple(j.nodeid for j in jobs if j.guessed)
        self.send(worker, m.Run(tuple(j.nodeid for j in jobs), long, unknown))

    def finish_job(self, worker: WorkerHandle, nodeid: str) -> None:
        """A test's reports are all in: it leaves the worker's queue (in order)."""
        if worker.assigned and worker.assigned[0].nodeid == nodeid:
            worker.assigned.popleft()
        else:
            for i, job in enumerate(worker.assigned):
                if job.nodeid == nodeid:
                    del worker.assigned[i]
                    break
        worker.reported += 1
        started = worker.phases.pop(nodeid, None) is not None
        if started:
            self.replay.logfinish(worker, nodeid, worker.device.name)
        if self.gangs.active:  # running, waiting, or queued behind this test
            self.gangs.finished(worker, nodeid)
            self.feed_idle()  # the slots it had borrowed take work again, or wait for another

    def give_back(self, worker: WorkerHandle) -> None:
        """Another run waits for this slot and has had less of it: the worker ends after the
        tests it holds, then the lease goes back and this run waits for it again."""
        slot_id = worker.slot.id
        trace(f"controller: {slot_id} gives its lease back")
        self.giving_back.add(slot_id)
        self.gave_back[worker.device.name] = self.gave_back.get(worker.device.name, 0) + 1
        self.finish_worker(worker)

    def after_give_back(self, slot: Slot) -> None:
        """The slot's worker ended: release the lease and queue for it again (fairly)."""
        assert self.leasing is not None
        self.giving_back.discard(slot.id)
        self.leasing.release(slot.id)
        if self.phase is Phase.RUNNING and (self.dispatcher.remaining or self.shared is not None):
            self.leasing.wait_for(slot)

    def finish_worker(self, worker: WorkerHandle) -> None:
        """No more work for this worker: it runs what it holds, then ends its session."""
        trace(f"controller: {worker.slot.id} finishes")
        worker.winding_down = True
        self.dispatcher.retire(worker.slot.id)
        self.send(worker, m.Finish())

    def shutdown_worker(self, worker: WorkerHandle) -> None:
        """Stop a worker now: it runs nothing more it holds (that goes back to the queue)."""
        trace(f"controller: {worker.slot.id} shuts down")
        worker.winding_down = True
        worker.state = State.STOPPING
        self.dispatcher.retire(worker.slot.id)
        self.send(worker, m.Shutdown())

    def reserve_would_starve(self, worker: WorkerHandle) -> bool:
        """Would giving a busy worker its next test take it from a slot that could start it now?

        A worker asks for its next test while still running one; when the tests
        left are no more than the idle or starting slots, they go to those instead.
        """
        idle = sum(
            1
            for w in self.alive_workers()
            if w is not worker
            and not w.assigned
            and not w.winding_down
            and self.dispatcher.has_work_for(w.slot.id)
        )
        return self.dispatcher.remaining <= idle

    def feed_idle(self) -> None:
        """Offer work to workers waiting for it (after a requeue or a device check)."""
        for worker in self.alive_workers():
            if worker.wants_work and self.phase is Phase.RUNNING:
                self.feed(worker)
        if self.gangs.pending and self.phase is Phase.RUNNING:
            self.gangs.start()  # one came back (a DeviceError): its devices may need fresh workers
        self.restart_for_leftovers()

    def run_done(self) -> bool:
        if self.phase is Phase.STOPPING:
            return not any(
                w.state in (State.READY, State.STARTING) and w.assigned for w in self.workers.values()
            )
        if self.dispatcher.remaining or self.gangs.active:
            if self.alive_workers() or (self.leasing is not None and self.leasing.waiting):
                return False
            self.restart_for_leftovers()  # a fresh worker, or a lease given back waited for again
            self.gangs.start()
            if self.alive_workers() or (self.leasing is not None and self.leasing.waiting):
                return False
            self._orphan_all()
            return True
        if any(w.assigned for w in self.alive_workers()):
            return False
        if self.shared is not None and self.shared.waiting():
            return False
        return not self.awaiting_checks()

    def _orphan_all(self) -> None:
        left = self.dispatcher.unreachable()
        for job in left:
            info = self.tests.get(job.nodeid)
            if info is not None:
                names = sorted(job.eligible)
                text = (
                    f"no worker could run this test: it can run on {', '.join(names)}, and no worker "
                    "there was left alive to take it"
                )
                self.replay.synthetic(
                    info, None, text, when="setup", device=names[0] if len(names) == 1 else None
                )
        self.dispatcher = Dispatcher(self.slots)

    def awaiting_checks(self) -> bool:
        """The work is done but a device is being rechecked: wait (a while) for its verdict,
        so that a device that went bad is quarantined and recorded as such."""
        checking = [n for n, s in self.health.states.items() if s is DeviceState.CHECKING]
        if not checking:
            return False
        if self._checks_deadline is None:
            self._checks_deadline = time.monotonic() + CHECK_WAIT_AT_END
        if time.monotonic() < self._checks_deadline:
            return True
        self.notes.append(
            f"the check of {', '.join(checking)} had not ended {CHECK_WAIT_AT_END:g} s after the last test"
        )
        return False

    def stop(self) -> None:
        """``-x``/``--maxfail`` reached: let running tests finish, start nothing new."""
        trace("controller: stops")
        self.phase = Phase.STOPPING
        assert self.session is not None
        self.replay.stop_reason = self.replay.stop_reason or self.session.shouldfail
        for worker in self.alive_workers():
            if worker.state is not State.STOPPING:
                self.shutdown_worker(worker)

    def shutdown(self) -> None:
        """End every worker's session cleanly; kill what does not end in time."""
        trace("controller: shutdown")
        self.phase = Phase.STOPPING
        for worker in self.alive_workers():
            if not worker.winding_down:
                self.shutdown_worker(worker)
        deadline = time.monotonic() + SHUTDOWN_GRACE
        # Wait for every session to finish; the processes exit while the summary prints.
        while self.alive_workers():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.pump(timeout=min(left, 0.5))
        for worker in self.alive_workers():
            self.problems.append(
                f"worker {worker.slot.id} ({worker.device.name}) did not finish its session within "
                f"{SHUTDOWN_GRACE:.0f} s of being asked to stop, and was killed"
            )
            worker.kill()
            worker.state = State.DEAD
        for device, times in self.gave_back.items():
            self.notes.append(
                f"{device} was given back {times} time{'s' if times != 1 else ''} to a run waiting "
                "for it with less device time or a higher priority, and waited for again (fair share)"
            )
        if self.shared is not None:
            self.shared.leave()  # before the share closes: what is still claimed goes back
        if self.leasing is not None:
            self.leasing.close()  # the devices are free for the next run as soon as the workers are gone
        if self.echo_output:
            # With -s the workers' last words belong before the summary, not after it.
            reap_by = time.monotonic() + 5.0
            for worker in self.workers.values():
                worker.reap(reap_by, echo=True)
        trace("controller: workers gone")

    # ------------------------------------------------------------------ device health

    def on_checks(self) -> None:
        """Device checks ended: put healthy devices to work, take quarantined ones out."""
        for result in self.health.finished():
            trace(f"controller: check of {result.device}: {result.reason or 'ok'}")
            if result.ok:
                for worker in self.alive_workers():
                    if (
                        worker.device.name == result.device
                        and worker.wants_work
                        and self.phase is Phase.RUNNING
                    ):
                        self.feed(worker)
                if self.phase is Phase.RUNNING:
                    self.restart_for_leftovers()
            else:
                self.faults.take_out(result.device)

    # ------------------------------------------------------------------ interrupts

    def interrupt(self) -> str:
        """Ctrl-C or SIGTERM: stop every worker, keep what they report; a second one kills them.

        Returns what was running where, which becomes the interruption's message."""
        trace("controller: interrupted")
        self._interrupting = True
        self._stop_signals = max(self._stop_signals, 1)
        self.phase = Phase.STOPPING
        running = []
        for worker in self.alive_workers():
            job = worker.running_job() if worker.state is not State.STARTING else None
            if job is not None:
                where = worker.device.name
                if worker.label.id != where:
                    where += f" ({worker.label.id})"
                running.append(f"{job.nodeid} on {where}")
            worker.state = State.STOPPING
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.proc.pid, signal.SIGINT)
        what = "interrupted while running " + "; ".join(running) if running else "interrupted between tests"
        deadline = time.monotonic() + INTERRUPT_GRACE
        while self.alive_workers() and time.monotonic() < deadline:
            self.pump(timeout=0.2)
            if self._stop_signals > 1:  # a second Ctrl-C: no more waiting
                for worker in self.workers.values():
                    worker.kill()
                return what + "; workers killed by a second interrupt"
        return what

    # ------------------------------------------------------------------ selections

    def _last_failed_filter(self, units: list[FileUnit]) -> list[FileUnit]:
        """With ``--lf``, send only files that hold a recorded failure (as pytest skips the rest)."""
        if not self.config.getoption("lf", False):
            return units
        lfplugin = self.config.pluginmanager.get_plugin("lfplugin")
        paths = getattr(lfplugin, "_last_failed_paths", None)
        if not getattr(lfplugin, "lastfailed", None) or not paths:
            return units
        kept = [u for u in units if Path(u.path) in paths]
        return kept or units

    def _rack_failed_filter(self, units: list[FileUnit]) -> list[FileUnit]:
        """``--rack-failed``: only files holding a test still failing on some device."""
        if not (self.config.getoption("rack_failed") or self.config.getoption("rack_failed_anywhere")):
            return units
        anywhere = bool(self.config.getoption("rack_failed_anywhere"))
        option = "--rack-failed-anywhere" if anywhere else "--rack-failed"
        failures = self.recorder.last_failures()
        if failures is None:
            if self.recorder.problem:
                raise pytest.UsageError(f"{option}: no earlier run to rerun from: {self.recorder.problem}")
            raise pytest.UsageError(
                f"{option}: no earlier run in the results store ({self.recorder.location}); "
                "run the suite once without it first"
            )
        self.rerun = failures
        files = {nodeid.split("::")[0] for nodeid in failures}
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            tests = f"{len(failures)} failing test{'s' if len(failures) != 1 else ''}"
            if not failures:
                what = "nothing failed in the last runs; nothing to rerun"
            elif anywhere:
                where = "on every matching device" if self.mode == "each" else "once, on any matching device"
                what = f"rerunning {tests} {where}"
            elif len(failures) == 1:
                (devices,) = failures.values()
                on = "the device" if len(devices) == 1 else f"the {len(devices)} devices"
                what = f"rerunning {tests} on {on} it is failing on"
            else:
                runs = sum(len(devices) for devices in failures.values())
                what = f"rerunning {tests}, each on every device it is failing on ({runs} runs)"
            reporter.write_line(f"testrack: {option}: {what}")
        return [u for u in units if self.collection.unit_nodeids.get(u.key, "").split("::")[0] in files]


def _drive(wrapper: Any) -> None:
    """Run a ``wrapper=True`` hook implementation around an empty inner call."""
    try:
        next(wrapper)
        wrapper.send(None)
    except StopIteration:
        pass


def _as_lines(group: str | list[str]) -> list[str]:
    return [group] if isinstance(group, str) else list(group)


class RunSlot:
    """A test-device run that did not happen, as an entry of the terminal's stats."""

    def __init__(self, nodeid: str, device: str) -> None:
        self.nodeid = f"{nodeid}@{device}"
        self.when = "call"


def _write(terminalreporter: Any, line: str) -> None:
    """A summary line, coloured as pytest colours outcomes."""
    markup: dict[str, bool] = {}
    lowered = line.lower()
    if "failed" in lowered or "crashed" in lowered or "quarantined" in lowered or "error" in lowered:
        markup = {"red": True}
    elif ": ok - " in line or lowered.endswith("passed"):
        markup = {"green": True}
    terminalreporter.write_line(line, **markup)


def _n(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _category_name(category: type[Warning]) -> str:
    return f"{category.__module__}.{category.__qualname__}"


def _resolve_category(name: str) -> type[Warning]:
    """The warning class by name, without importing anything (test modules stay unimported)."""
    module_name, _, qualname = name.rpartition(".")
    obj: Any = sys.modules.get(module_name)
    try:
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        return UserWarning
    if isinstance(obj, type) and issubclass(obj, Warning):
        return obj
    return UserWarning
