"""The controller: the run loop of a rack run.

It lives in the ``pytest`` process the user started, never imports a test
module, and drives the session through pytest's own hooks so that the
terminal, ``--junitxml``, ``-x``, ``--lf`` and other plugins see the reports
as if the tests had run here:

1. ``pytest_sessionstart``: start one worker per device slot.
2. ``pytest_collection``: find the test files (:mod:`testrack.collection`),
   have workers import them (each file once in load mode, everywhere in each
   mode) and learn every test's id and device requirement.
3. ``pytest_runtestloop``: hand out tests on demand (:mod:`testrack.scheduling`),
   replay reports, replace crashed workers, stop on ``-x``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import gc
import os
import shlex
import signal
import sys
import threading
import time
from collections import deque
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Literal

import pytest

from testrack import explain
from testrack import messages as m
from testrack.collection import FileUnit, walk_files
from testrack.health import DeviceState, Health
from testrack.planning import TestInfo, plan_jobs
from testrack.rack import Device, Rack
from testrack.recorder import Attempt, Recorder
from testrack.scheduling import Dispatcher, Job, Slot
from testrack.store import RunInfo
from testrack.summary import device_counts, format_counts, matrix_lines, phase_outcome, worse
from testrack.trace import trace
from testrack.workers import Launcher, State, WorkerHandle

#: How often one slot's worker may be replaced after crashes before the slot is given up.
MAX_RESPAWNS = 5
#: Seconds a worker gets to finish its session after Shutdown before it is killed.
SHUTDOWN_GRACE = 30.0
#: Seconds workers get to stop after a Ctrl-C before they are killed (a second Ctrl-C: at once).
INTERRUPT_GRACE = 10.0
#: How often a test that raised DeviceError is tried again (elsewhere when it can).
DEVICE_ERROR_RETRIES = 2
#: How long a timed-out worker gets to write its stacks before it is killed.
STACK_DUMP_WAIT = 1.0
#: How long a finished run waits for device checks still under way.
CHECK_WAIT_AT_END = 10.0


When = Literal["setup", "call", "teardown"]


class Phase(enum.Enum):
    """Where the run is."""

    COLLECTING = "collecting"
    RUNNING = "running"
    STOPPING = "stopping"


@dataclasses.dataclass(frozen=True)
class RemoteItem:
    """A test known by id only; stands in for an Item in ``pytest_deselected``."""

    nodeid: str


class Controller:
    """Runs a session's tests on the rack's workers (registered as a pytest plugin)."""

    def __init__(
        self, config: pytest.Config, rack: Rack, mode: str, launcher: Launcher, recorder: Recorder
    ) -> None:
        self.config = config
        self.rack = rack
        self.mode = mode
        self.launcher = launcher
        self.recorder = recorder
        self.devices: dict[str, Device] = {d.name: d for d in rack.devices}
        self.slots: list[Slot] = launcher.slots
        self.dispatcher = Dispatcher(self.slots)
        self.workers: dict[str, WorkerHandle] = {}
        self.respawns: dict[str, int] = {}
        self.dead_slots: dict[str, str] = {}
        self.testrunuid = launcher.testrunuid
        self.echo_output = config.getoption("capture") == "no"
        self.phase = Phase.COLLECTING
        self.session: pytest.Session | None = None
        self.basetemp: Path | None = None
        # collection state
        self.units: list[FileUnit] = []
        self.unit_nodeids: dict[str, str] = {}
        self.to_collect: deque[str] = deque()
        self.in_flight: dict[str, list[str]] = {}
        self.suspects: set[str] = set()
        self.collected: dict[str, dict[str, list[m.CollectedTest]]] = {}
        self.home: dict[str, str] = {}
        self.deselected: dict[str, None] = {}
        self.collect_reports: dict[str, Any] = {}
        self.tests: dict[str, TestInfo] = {}
        self.unmatched: list[tuple[TestInfo, str]] = []
        self.durations: dict[str, float] = {}
        self.rerun: dict[str, set[str]] | None = None
        # results
        self.outcomes: dict[str, dict[str, str]] = {}
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.stop_reason: str | bool = False
        # faults
        self.health = Health(config, recorder, rack.devices)
        self.retries: dict[str, int] = {}
        self.retry_crashed = int(config.getoption("rack_retry_crashed", 0) or 0)
        self.timeout: float | None = config.getoption("rack_timeout", None)
        self._sigterm: Any = None
        self._checks_deadline: float | None = None

    # ------------------------------------------------------------------ pytest hooks

    def pytest_report_header(self, config: pytest.Config) -> str:
        names = ", ".join(f"{d.name} x{d.capacity}" if d.capacity > 1 else d.name for d in self.rack.devices)
        return f"testrack: {self.mode} mode on {self.rack.source}: {names} ({len(self.slots)} workers)"

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        trace("controller: sessionstart")
        self.session = session
        # The workers wait for their Start: send it first, before the header and the store.
        factory = getattr(self.config, "_tmp_path_factory", None)
        if factory is not None:
            self.basetemp = factory.getbasetemp()
        for slot in self.slots:
            self.start_worker(slot)
        for device in self.rack.devices:
            self.health.check(device.name)
        self.recorder.begin(
            RunInfo(
                uid=self.testrunuid,
                started=time.time(),
                mode=self.mode,
                rack=self.rack.source,
                command=shlex.join(["pytest", *map(str, self.config.invocation_params.args)]),
            )
        )
        if threading.current_thread() is threading.main_thread():
            # SIGTERM (a CI job cancelled) ends the run as Ctrl-C does: summarised and stored.
            self._sigterm = signal.signal(signal.SIGTERM, _interrupt)

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection(self, session: pytest.Session) -> bool:
        trace("controller: collection starts")
        units = walk_files(session)
        trace(f"controller: {len(units)} files found")
        self.units = [unit for unit, _ in units]
        self.unit_nodeids = {unit.key: nodes[0].nodeid for unit, nodes in units}
        self.units = self._last_failed_filter(self.units)
        self.units = self._rack_failed_filter(self.units)
        self.durations = self.recorder.durations()
        self.dispatcher = Dispatcher(self.slots, import_cost=self.recorder.import_costs())
        keys = [u.key for u in self.units]
        if self.mode == "each":
            for worker in self.workers.values():
                self.send_collect(worker, keys)
        else:
            self.to_collect.extend(keys)
            for worker in self.workers.values():
                if worker.state is State.READY:
                    self.feed_collection(worker)
        try:
            while not self.collection_done():
                self.pump()
        except KeyboardInterrupt:
            self.interrupt()
            raise
        self.finish_collection(session)
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
            self.report_synthetic(info, None, text, when="setup")
        self.report_orphans()
        for worker in list(self.workers.values()):
            if worker.wants_work:
                self.feed(worker)
        try:
            while not self.run_done():
                self.pump(self.until_next_deadline() if self._checks_deadline is None else 0.2)
                self.enforce_deadlines()
                if (session.shouldfail or session.shouldstop) and self.phase is Phase.RUNNING:
                    self.stop()
        except KeyboardInterrupt:
            self.interrupt()
            raise
        finally:
            self.shutdown()
        if self.mode == "each" and self.health.quarantined():
            session.testsfailed += 1  # a device that could not run its tests fails the run
        if session.shouldfail:
            # Tests already running when the limit was reached may have failed too;
            # the message keeps the count that stopped the run, as in plain pytest.
            session.shouldfail = self.stop_reason or session.shouldfail
            raise session.Failed(session.shouldfail)
        if session.shouldstop:
            raise session.Interrupted(session.shouldstop)
        return True

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        quarantined = self.health.quarantined()
        if not (self.outcomes or self.dead_slots or self.problems or self.notes or quarantined):
            return
        names = [d.name for d in self.rack.devices]
        if self.mode == "each":
            terminalreporter.write_sep("=", f"testrack: each mode, results per device ({len(names)} devices)")
            verbose = self.config.get_verbosity() > 1  # -vv: every test, not only the differing ones
            for line in matrix_lines(
                self.outcomes,
                names,
                quarantined,
                everything=verbose,
                width=terminalreporter._tw.fullwidth,
            ):
                terminalreporter.write_line(line)
        else:
            counts = device_counts(self.outcomes, names)
            terminalreporter.write_sep("-", f"testrack: load mode over {len(names)} devices")
            dead = self.dead_devices()
            for name in names:
                extra = ""
                if name in quarantined:
                    extra = f" (quarantined: {quarantined[name]})"
                elif name in dead:
                    extra = f" (no workers: {dead[name]})"
                terminalreporter.write_line(f"{name}: {format_counts(counts[name])}{extra}")
        if self.recorder.problem:
            self.problems.append(self.recorder.problem)
        for note in self.notes:
            terminalreporter.write_line(f"testrack: {note}")
        for problem in self.problems:
            terminalreporter.write_line(f"testrack: {problem}", yellow=True)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        try:
            outcome = pytest.ExitCode(exitstatus).name.lower()
        except ValueError:
            outcome = f"exit {exitstatus}"
        self.recorder.finish(outcome)
        # This process ran no test code, so its heap holds nothing for pytest's final
        # gc.collect() calls to find: freezing it makes them (and exit) cheaper.
        gc.freeze()

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self._sigterm is not None:
            signal.signal(signal.SIGTERM, self._sigterm)
        self.health.close()
        deadline = time.monotonic() + 5.0
        for worker in self.workers.values():
            if worker.state is State.FINISHED and not self.echo_output:
                # Its session is over and reported: let it exit in its own time, unwaited.
                worker.reap_in_background(SHUTDOWN_GRACE)
            else:
                worker.reap(deadline, self.echo_output)
                worker.close()
        trace("controller: workers reaped")

    # ------------------------------------------------------------------ workers

    def start_worker(self, slot: Slot) -> WorkerHandle:
        worker = self.launcher.take(slot)
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            worker.echo_to = reporter.write_line
        worker.send(m.Start(basetemp=str(self.basetemp / slot.id) if self.basetemp else None))
        self.workers[slot.id] = worker
        return worker

    def alive_workers(self) -> list[WorkerHandle]:
        return [w for w in self.workers.values() if w.alive]

    def dead_devices(self) -> dict[str, str]:
        """Devices with no slot left, and why."""
        out: dict[str, str] = {}
        for device in self.rack.devices:
            slots = [s for s in self.slots if s.device == device.name]
            if slots and all(s.id in self.dead_slots for s in slots):
                out[device.name] = self.dead_slots[slots[0].id]
        return out

    # ------------------------------------------------------------------ the event pump

    def pump(self, timeout: float | None = None) -> None:
        """Wait for the next messages or output from any worker and handle them."""
        waitables: dict[Any, tuple[WorkerHandle, Any]] = {}
        for worker in self.workers.values():
            if worker.alive:
                waitables[worker.conn] = (worker, None)
            for stream in worker.streams:
                waitables[stream] = (worker, stream)
        if not waitables:
            return
        checks = self.health.wakeup.fileno()
        for obj in wait([*waitables, checks], timeout):
            if obj == checks:
                self.on_checks()
                continue
            worker, stream = waitables[obj]
            if stream is not None:
                if stream in worker.streams:  # not already drained by on_exit()
                    worker.read_output(stream, self.echo_output)
            elif worker.alive:
                self.receive(worker)

    def receive(self, worker: WorkerHandle) -> None:
        try:
            while worker.alive and worker.conn.poll():
                self.on_message(worker, worker.conn.recv())
        except (EOFError, OSError):
            self.on_exit(worker)

    def on_message(self, worker: WorkerHandle, message: m.FromWorker) -> None:
        match message:
            case m.TestReports():
                self.on_reports(worker, message)
            case m.TestStarted(nodeid=nodeid):
                self.on_test_started(worker, nodeid)
            case m.WantWork():
                worker.wants_work = True
                if self.phase is Phase.RUNNING:
                    self.feed(worker)
            case m.Collected():
                self.on_collected(worker, message)
            case m.WorkerReady():
                self.on_ready(worker)
            case m.WarningRecorded():
                self.on_warning(message)
            case m.WorkerFinished():
                worker.state = State.FINISHED
            case m.WorkerFailed(error=error):
                self.problems.append(
                    f"internal error in worker {worker.slot.id} ({worker.device.name}):\n{error}"
                )
            case _:
                raise TypeError(f"testrack controller: unexpected message {message!r}")

    # ------------------------------------------------------------------ collection

    def on_ready(self, worker: WorkerHandle) -> None:
        worker.state = State.READY
        trace(f"controller: {worker.slot.id} ready")
        if self.phase is Phase.COLLECTING and self.mode == "load":
            self.feed_collection(worker)
        elif self.phase is not Phase.COLLECTING and self.mode == "each":
            # A replacement worker in each mode needs every file its device runs.
            self.send_collect(worker, [u.key for u in self.units])

    def send_collect(self, worker: WorkerHandle, keys: list[str]) -> None:
        keys = [k for k in keys if k not in worker.imported]
        if not keys:
            return
        worker.imported.update(keys)
        worker.collecting += 1
        self.in_flight.setdefault(worker.slot.id, []).extend(keys)
        worker.send(m.Collect(tuple(keys)))

    def feed_collection(self, worker: WorkerHandle) -> None:
        """Load mode: give a ready worker the next files to import, in chunks."""
        if not self.to_collect or worker.collecting:
            return
        if self.to_collect[0] in self.suspects:
            chunk = [self.to_collect.popleft()]
        else:
            size = max(1, len(self.to_collect) // (2 * max(1, len(self.alive_workers()))))
            chunk = []
            while self.to_collect and len(chunk) < size and self.to_collect[0] not in self.suspects:
                chunk.append(self.to_collect.popleft())
        self.send_collect(worker, chunk)

    def on_collected(self, worker: WorkerHandle, message: m.Collected) -> None:
        worker.collecting -= 1
        inflight = self.in_flight.get(worker.slot.id, [])
        for unit in message.units:
            if unit.key in inflight:
                inflight.remove(unit.key)
            self.collected.setdefault(unit.key, {}).setdefault(worker.device.name, list(unit.tests))
            self.home.setdefault(unit.key, worker.slot.id)
        self.recorder.imports(worker.slot.id, worker.device.name, message.units)
        self.dispatcher.mark_imported(worker.slot.id, [unit.key for unit in message.units])
        for nodeid in message.deselected:
            self.deselected[nodeid] = None
        for data in message.reports:
            report = self.config.hook.pytest_report_from_serializable(config=self.config, data=data)
            if report.nodeid not in self.collect_reports:
                self.collect_reports[report.nodeid] = report
                self.config.hook.pytest_collectreport(report=report)
        if self.phase is Phase.COLLECTING and self.mode == "load":
            self.feed_collection(worker)

    def collection_done(self) -> bool:
        if not self.alive_workers():
            return True
        if self.mode == "load":
            return not self.to_collect and not any(w.collecting for w in self.alive_workers())
        return not any(w.collecting for w in self.alive_workers())

    def finish_collection(self, session: pytest.Session) -> None:
        """Turn what the workers collected into jobs: ordered, routed, estimated."""
        infos: list[TestInfo] = []
        collected_on: dict[str, set[str]] = {}
        for unit in self.units:
            for device, tests in self.collected.get(unit.key, {}).items():
                for test in tests:
                    collected_on.setdefault(test.nodeid, set()).add(device)
                    if test.nodeid not in self.tests:
                        info = self.tests[test.nodeid] = TestInfo(test, unit.key, len(self.tests))
                        infos.append(info)
        if self.rerun is not None:
            for info in [i for i in infos if i.test.nodeid not in self.rerun]:
                del self.tests[info.test.nodeid]
                self.deselected[info.test.nodeid] = None
            infos = [i for i in infos if i.test.nodeid in self.tests]
        if self.deselected:
            self.config.hook.pytest_deselected(items=[RemoteItem(n) for n in self.deselected])
        plan = plan_jobs(
            infos,
            collected_on,
            self.rack,
            self.mode,
            self.durations,
            self.home,
            rerun=self.rerun,
            rerun_anywhere=bool(self.config.getoption("rack_failed_anywhere")),
        )
        self.unmatched.extend(plan.unrunnable)
        runs = plan.runs
        jobs_by_home = plan.jobs
        for home, jobs in jobs_by_home.items():
            self.dispatcher.add(jobs, home=home if home in self.workers else None)
        session.testscollected = len(self.tests)
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and self.config.get_verbosity() >= 0:
            deselected = f" ({len(self.deselected)} deselected)" if self.deselected else ""
            each = f", {runs} runs" if self.mode == "each" else ""
            known = sum(1 for i in infos if i.test.nodeid in self.durations)
            history = f"; history for {known}" if known else ""
            reporter.write_line(
                f"testrack: collected {len(self.tests)} tests{deselected}{each} "
                f"in {len(self.units)} files on {len(self.slots)} workers{history}"
            )

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
        return [u for u in units if self.unit_nodeids.get(u.key, "").split("::")[0] in files]

    # ------------------------------------------------------------------ running

    def feed(self, worker: WorkerHandle) -> None:
        """Answer a worker's WantWork: a chunk of tests, or NoMoreWork.

        A worker whose device is being checked waits for the verdict (its WantWork
        is answered when the check ends); one whose device is quarantined gets nothing.
        """
        state = self.health.state(worker.device.name)
        if state in (DeviceState.UNCHECKED, DeviceState.CHECKING) and self.phase is Phase.RUNNING:
            worker.wants_work = True
            return
        worker.wants_work = False
        jobs: list[Job] = []
        if state is DeviceState.QUARANTINED:
            worker.send(m.NoMoreWork())
            return
        if self.phase is Phase.RUNNING and not (worker.assigned and self.reserve_would_starve(worker)):
            jobs = self.dispatcher.take(worker.slot.id)
        if not jobs:
            worker.send(m.NoMoreWork())
            return
        self.assign(worker, jobs)

    def assign(self, worker: WorkerHandle, jobs: list[Job]) -> None:
        missing = list(dict.fromkeys(j.module for j in jobs if j.module not in worker.imported))
        if missing:
            self.send_collect(worker, missing)
        worker.assigned.extend(jobs)
        worker.send(m.Run(tuple(j.nodeid for j in jobs)))

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
            and w.state is not State.STOPPING
            and self.dispatcher.has_work_for(w.slot.id)
        )
        return self.dispatcher.remaining <= idle

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
            else:
                self.take_out(result.device)

    def take_out(self, name: str) -> None:
        """A quarantined device: its workers stop, its work goes to other matching devices."""
        reason = self.health.reasons.get(name, "failed its check")
        for slot in (s for s in self.slots if s.device == name):
            self.dead_slots[slot.id] = f"quarantined: {reason}"
            worker = self.workers.get(slot.id)
            if worker is not None and worker.alive and worker.state is not State.STOPPING:
                # It finishes the test it is running; what it had queued comes back on its exit.
                worker.send(m.Shutdown())
                worker.state = State.STOPPING
            self.dispatcher.drop_slot(slot.id, permanently=True)
        self.notes.append(f"{name} quarantined: {reason}")
        self.report_orphans()
        if self.phase is Phase.RUNNING:
            self.feed_idle()

    def feed_idle(self) -> None:
        """Offer work to workers that were told there was none (after a requeue)."""
        for worker in self.alive_workers():
            if (
                worker.state is State.READY
                and not worker.assigned
                and self.health.usable(worker.device.name)
                and self.dispatcher.has_work_for(worker.slot.id)
            ):
                jobs = self.dispatcher.take(worker.slot.id)
                if jobs:
                    self.assign(worker, jobs)

    # ------------------------------------------------------------------ time limits

    def on_test_started(self, worker: WorkerHandle, nodeid: str) -> None:
        info = self.tests.get(nodeid)
        limit = info.test.timeout if info and info.test.timeout else self.timeout
        if limit:
            source = "@pytest.mark.rack_timeout" if info and info.test.timeout else "--rack-timeout"
            worker.running = (nodeid, time.monotonic() + limit, limit, source)

    def until_next_deadline(self) -> float | None:
        deadlines = [w.running[1] for w in self.alive_workers() if w.running]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def enforce_deadlines(self) -> None:
        now = time.monotonic()
        for worker in self.alive_workers():
            if worker.running and worker.running[1] <= now and worker.timed_out is None:
                self.time_out(worker)

    def time_out(self, worker: WorkerHandle) -> None:
        """A test ran over its limit: dump the worker's stacks, kill it; on_exit reports the rest."""
        nodeid, _, limit, source = worker.running or ("?", 0.0, 0.0, "")
        worker.timed_out = (nodeid, limit, source)
        trace(f"controller: {nodeid} timed out on {worker.slot.id}")
        try:
            os.kill(worker.proc.pid, signal.SIGUSR1)
            worker.read_for(STACK_DUMP_WAIT)
        except ProcessLookupError:
            pass
        worker.kill()

    # ------------------------------------------------------------------ interrupts

    def interrupt(self) -> None:
        """Ctrl-C or SIGTERM: stop every worker, keep what they report; a second one kills them."""
        trace("controller: interrupted")
        self.phase = Phase.STOPPING
        for worker in self.alive_workers():
            worker.state = State.STOPPING
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.proc.pid, signal.SIGINT)
        deadline = time.monotonic() + INTERRUPT_GRACE
        try:
            while self.alive_workers() and time.monotonic() < deadline:
                self.pump(timeout=0.2)
        except KeyboardInterrupt:
            for worker in self.workers.values():
                worker.kill()
            raise

    def on_reports(self, worker: WorkerHandle, message: m.TestReports) -> None:
        hook = self.config.hook
        device = worker.device.name
        reports = [hook.pytest_report_from_serializable(config=self.config, data=d) for d in message.reports]
        outcomes = [phase_outcome(report) for report in reports]
        for report, outcome in zip(reports, outcomes, strict=True):
            worker.attempts.setdefault(report.nodeid, Attempt()).add(report, outcome)
        retried = {nodeid for nodeid in message.finished if self.retry_device_error(worker, nodeid)}
        # Stored before they are shown: what the user saw survives a killed controller.
        self.recorder.results(
            [
                worker.attempts.pop(nodeid, Attempt()).result(
                    nodeid,
                    device,
                    worker.slot.id,
                    worker.tests_done + k,
                    outcome="device_error" if nodeid in retried else None,
                )
                for k, nodeid in enumerate(message.finished)
            ]
        )
        for report, outcome in zip(reports, outcomes, strict=True):
            if report.nodeid in retried:
                continue  # the device failed, not the test: it runs again, and reports then
            report.node = worker.label  # read by the terminal and junitxml, as with xdist
            report.user_properties.append(("device", device))
            phases = worker.phases.get(report.nodeid)
            if phases is None:
                phases = worker.phases[report.nodeid] = set()
                hook.pytest_runtest_logstart(nodeid=report.nodeid, location=report.location)
            phases.add(report.when)
            if outcome is not None:
                per_device = self.outcomes.setdefault(report.nodeid, {})
                per_device[device] = worse(per_device.get(device), outcome)
            hook.pytest_runtest_logreport(report=report)
            if not self.stop_reason and self.session is not None and self.session.shouldfail:
                # The count that reached --maxfail: later failures must not change the message.
                self.stop_reason = self.session.shouldfail
        for nodeid in message.finished:
            self.finish_job(worker, nodeid)

    def retry_device_error(self, worker: WorkerHandle, nodeid: str) -> bool:
        """A test raised DeviceError: run it again (elsewhere when it can) and recheck the device."""
        attempt = worker.attempts.get(nodeid)
        if attempt is None or attempt.device_error is None:
            return False
        device = worker.device.name
        self.health.check(device)
        if self.retries.get(nodeid, 0) >= DEVICE_ERROR_RETRIES:
            self.notes.append(f"{nodeid}: DeviceError on {device} again; not retried any more")
            return False
        where = self.requeue_elsewhere(worker, nodeid)
        self.notes.append(f"{nodeid}: DeviceError on {device} ({attempt.device_error}); retried {where}")
        return True

    def requeue_elsewhere(self, worker: WorkerHandle, nodeid: str) -> str:
        """Queue a test again, away from this worker's device when another can run it; say where."""
        job = next((j for j in worker.assigned if j.nodeid == nodeid), None)
        if job is None:
            return "nowhere (it was no longer queued)"
        self.retries[nodeid] = self.retries.get(nodeid, 0) + 1
        device = worker.device.name
        others = job.eligible - {device} - set(self.health.quarantined())
        retry = dataclasses.replace(job, eligible=frozenset(others)) if others else job
        self.dispatcher.requeue([retry])
        return f"on {', '.join(sorted(others))}" if others else f"on {device} after it is checked again"

    def finish_job(self, worker: WorkerHandle, nodeid: str) -> None:
        for i, job in enumerate(worker.assigned):
            if job.nodeid == nodeid:
                del worker.assigned[i]
                break
        started = worker.phases.pop(nodeid, None) is not None
        worker.tests_done += 1
        if worker.running and worker.running[0] == nodeid:
            worker.running = None
        if started:
            info = self.tests.get(nodeid)
            location = info.test.location if info else (nodeid.split("::")[0], None, nodeid)
            self.config.hook.pytest_runtest_logfinish(nodeid=nodeid, location=location)

    def on_warning(self, message: m.WarningRecorded) -> None:
        import warnings

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

    def run_done(self) -> bool:
        if self.phase is Phase.STOPPING:
            return not any(
                w.state in (State.READY, State.STARTING) and w.assigned for w in self.workers.values()
            )
        if self.dispatcher.remaining:
            return not self.alive_workers()
        if any(w.assigned for w in self.alive_workers()):
            return False
        return not self.awaiting_checks()

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
        self.phase = Phase.STOPPING
        assert self.session is not None
        self.stop_reason = self.stop_reason or self.session.shouldfail
        for worker in self.alive_workers():
            worker.send(m.Shutdown())
            worker.state = State.STOPPING

    def shutdown(self) -> None:
        """End every worker's session cleanly; kill what does not end in time."""
        trace("controller: shutdown")
        self.phase = Phase.STOPPING
        for worker in self.alive_workers():
            if worker.state is not State.STOPPING:
                worker.send(m.Shutdown())
                worker.state = State.STOPPING
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
        if self.echo_output:
            # With -s the workers' last words belong before the summary, not after it.
            reap_by = time.monotonic() + 5.0
            for worker in self.workers.values():
                worker.reap(reap_by, echo=True)
        trace("controller: workers gone")

    # ------------------------------------------------------------------ when a worker dies

    def on_exit(self, worker: WorkerHandle) -> None:
        finished = worker.state is State.FINISHED
        was_ready = worker.state is not State.STARTING
        worker.state = State.FINISHED if finished else State.DEAD
        worker.reap(time.monotonic() + 5.0, self.echo_output)
        if finished:
            # A clean exit: after Shutdown, or on its own at --maxfail (then the run stops too).
            if worker.assigned and self.phase is not Phase.STOPPING:
                self.dispatcher.requeue(list(worker.assigned))
            worker.assigned.clear()
            return
        how = worker.how_it_ended()
        outcome = "crashed"
        if worker.timed_out is not None:
            _, limit, source = worker.timed_out
            how = f"timed out after {limit:g} s (the limit set by {source}) and was killed"
            outcome = "timeout"
        output = explain.trim_stacks(worker.last_output(200)) if worker.timed_out else worker.last_output()
        slot = worker.slot
        if worker.assigned:
            crashed = worker.assigned[0]
            if self.retries.get(crashed.nodeid, 0) < self.retry_crashed and self.phase is Phase.RUNNING:
                attempt = worker.attempts.pop(crashed.nodeid, Attempt())
                attempt.message = f"worker {how}"
                self.recorder.results(
                    [attempt.result(crashed.nodeid, worker.device.name, slot.id, worker.tests_done, outcome)]
                )
                where = self.requeue_elsewhere(worker, crashed.nodeid)
                self.notes.append(
                    f"{crashed.nodeid}: worker {how} on {worker.device.name}; retried {where} "
                    f"({self.retries[crashed.nodeid]} of {self.retry_crashed}, --rack-retry-crashed)"
                )
            else:
                self.report_crash(worker, crashed, how, output, outcome)
            worker.assigned.popleft()
            self.dispatcher.requeue(list(worker.assigned))
            worker.assigned.clear()
            if self.phase is Phase.RUNNING:
                self.health.check(worker.device.name)  # a crash may be the device's doing
        self._requeue_collection(worker, how, output)
        # What it had imported is gone with it: its modules' tests are open to every slot.
        self.dispatcher.drop_slot(slot.id, permanently=False)
        respawns = self.respawns.get(slot.id, 0)
        if self.phase is Phase.STOPPING or self.health.state(slot.device) is DeviceState.QUARANTINED:
            if self.phase is Phase.RUNNING:
                self.feed_idle()
            return
        if was_ready and respawns < MAX_RESPAWNS:
            self.respawns[slot.id] = respawns + 1
            self.start_worker(slot)
        else:
            reason = f"worker {how} {'at start' if not was_ready else 'repeatedly'}"
            self.dead_slots[slot.id] = reason
            self.dispatcher.drop_slot(slot.id, permanently=True)
            detail = f"\n{output}" if output else ""
            self.problems.append(f"gave up on {slot.id} ({worker.device.name}): {reason}{detail}")
            self.report_orphans()
        if self.phase is Phase.RUNNING:
            self.feed_idle()

    def _requeue_collection(self, worker: WorkerHandle, how: str, output: str) -> None:
        keys = self.in_flight.pop(worker.slot.id, [])
        if not keys or self.phase is not Phase.COLLECTING:
            return
        if self.mode == "load":
            if len(keys) == 1 and keys[0] in self.suspects:
                self.report_collect_crash(worker, keys[0], how, output)
            else:
                self.suspects.update(keys)
                self.to_collect.extendleft(reversed(keys))

    def report_collect_crash(self, worker: WorkerHandle, key: str, how: str, output: str) -> None:
        nodeid = self.unit_nodeids.get(key, key)
        text = explain.import_crash(worker.slot.id, worker.device.name, how, output)
        report = pytest.CollectReport(nodeid, "failed", text, [])
        self.collect_reports[nodeid] = report
        self.config.hook.pytest_collectreport(report=report)

    def report_crash(
        self, worker: WorkerHandle, job: Job, how: str, output: str, outcome: str = "crashed"
    ) -> None:
        phases = worker.phases.pop(job.nodeid, set())
        text = explain.crash(
            worker.slot.id, worker.device.name, how, output, bool(self.retry_crashed), outcome == "timeout"
        )
        when: When = "teardown" if "call" in phases else "call"
        self.report_synthetic(
            self.tests[job.nodeid], worker, text, when=when, started=bool(phases), outcome_name=outcome
        )

    def report_orphans(self) -> None:
        """Tests no remaining device can run are errors; except, in each mode, the runs of a
        quarantined device: the summary shows the device as quarantined instead."""
        quarantined = self.health.quarantined()
        for job in self.dispatcher.orphans():
            if self.mode == "each" and len(job.eligible) == 1 and next(iter(job.eligible)) in quarantined:
                continue
            self.report_orphan(job)

    def report_orphan(self, job: Job) -> None:
        names = sorted(job.eligible)
        text = explain.no_device_left(names, self.dead_devices())
        device = names[0] if len(names) == 1 else None
        self.report_synthetic(self.tests[job.nodeid], None, text, when="setup", device=device)

    def report_synthetic(
        self,
        info: TestInfo,
        worker: WorkerHandle | None,
        text: str,
        when: When,
        started: bool = False,
        outcome_name: str | None = None,
        device: str | None = None,
    ) -> None:
        """Report a failure the test itself could not report (crash, no device)."""
        hook = self.config.hook
        test = info.test
        device = worker.device.name if worker else device
        properties = [("device", device)] if device else []
        outcome = outcome_name or ("unmatched" if worker is None else "error")
        attempt = worker.attempts.pop(test.nodeid, Attempt()) if worker else Attempt()
        attempt.message = text.splitlines()[0][:500]
        slot = worker.slot.id if worker else "-"
        position = worker.tests_done if worker else 0
        self.recorder.results([attempt.result(test.nodeid, device or "-", slot, position, outcome)])
        if not started:
            hook.pytest_runtest_logstart(nodeid=test.nodeid, location=test.location)
        reports = [
            pytest.TestReport(
                test.nodeid, test.location, {}, "failed", text, when, user_properties=list(properties)
            )
        ]
        if when != "teardown":
            reports.append(
                pytest.TestReport(
                    test.nodeid,
                    test.location,
                    {},
                    "passed",
                    None,
                    "teardown",
                    user_properties=list(properties),
                )
            )
        for report in reports:
            if worker is not None:
                report.node = worker.label  # type: ignore[attr-defined]  # read by the terminal and junitxml
            hook.pytest_runtest_logreport(report=report)
        key = device or "-"
        per_device = self.outcomes.setdefault(test.nodeid, {})
        per_device[key] = worse(per_device.get(key), outcome)
        hook.pytest_runtest_logfinish(nodeid=test.nodeid, location=test.location)


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


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
