"""The controller: the story of a rack run.

It lives in the ``pytest`` process the user started, never imports a test
module, and drives the session through pytest's own hooks so that the
terminal, ``--junitxml``, ``-x``, ``--lf`` and other plugins see the reports
as if the tests had run here:

1. ``pytest_sessionstart``: decide the order (:mod:`testrack.sequencing`) and start
   one worker per device slot (plugins fill each worker's ``workerinput`` through
   xdist's ``pytest_configure_node``); on a shared rack, a slot's worker starts once
   its lease is granted (:mod:`testrack.slotleases`).
2. ``pytest_collection``: workers import the test files and say what tests they
   hold; the imports each worker needs are planned before any test runs
   (:mod:`testrack.collecting`, :mod:`testrack.selection`).
3. ``pytest_runtestloop``: the run loop (:mod:`testrack.runloop`) hands out tests on
   demand (:mod:`testrack.feeding`: from :mod:`testrack.scheduling`, or a shared run's
   queue, :mod:`testrack.sharedrun`), replays the reports (:mod:`testrack.replay`),
   deals with crashes, time limits and bad devices (:mod:`testrack.faults`), and stops
   on ``-x``.
4. The summary: per device in load mode, the matrix in each mode, and what the run
   did differently from plain pytest (:mod:`testrack.run_summary`).

This module keeps the workers themselves: started, replaced, restarted for
leftovers, and ended.
"""

from __future__ import annotations

import gc
import shlex
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from testrack import compact, envs, nodes, relay, run_summary, sequencing
from testrack import messages as m
from testrack.cloning import Cloning
from testrack.collecting import Collection
from testrack.faults import Faults
from testrack.feeding import Feeder
from testrack.gangs import Gangs
from testrack.health import DeviceState, Health
from testrack.leasing import Leasing
from testrack.planning import TestInfo
from testrack.progress import Progress
from testrack.rack import Device, Rack
from testrack.recorder import Recorder
from testrack.replay import Replay
from testrack.runloop import Phase, RunLoop
from testrack.scheduling import Dispatcher, Slot
from testrack.scheduling.sequences import SequenceDispatcher
from testrack.sharedrun import SharedRun
from testrack.slotleases import SlotLeases
from testrack.store import RunInfo
from testrack.trace import trace
from testrack.workers import Launcher, State, WorkerHandle

#: Seconds a worker gets to finish its session after Shutdown before it is killed.
SHUTDOWN_GRACE = 30.0
#: Seconds workers get to stop after a Ctrl-C before they are killed (a second Ctrl-C: at once).
INTERRUPT_GRACE = 10.0
#: Seconds a worker started mid-run costs before its first test (a new interpreter, pytest's
#: configuration, the collection of its file), measured at 0.4-0.8 s on a small machine: a free
#: slot joins a module left to busy workers only when its share is worth twice that.
FRESH_WORKER_COST = 1.0


class Controller:
    """Runs a session's tests on the rack's workers (registered as a pytest plugin)."""

    def __init__(
        self,
        config: pytest.Config,
        rack: Rack,
        mode: str,
        launcher: Launcher,
        recorder: Recorder,
        collect: str = "all",
        sequential: str | None = None,
    ) -> None:
        self.config = config
        self.rack = rack
        self.mode = mode
        self.launcher = launcher
        self.recorder = recorder
        #: --rack-collect: all (the default) has every worker import every file, as plain pytest
        #: does; eager only the files it runs; lazy each one when first needed.
        self.lazy = collect == "lazy"
        self.collect_all = collect == "all"
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
        #: Whether the first worker is cloned for the others once it has collected (cloning.py).
        self.cloning = Cloning(self)
        self.gangs = Gangs(self)
        self.replay = Replay(self)
        #: Whether workers may send plain passing reports compact: only pytest's own plugins
        #: read serialized reports here (testrack.compact).
        self.compact_reports = compact.only_pytest_serializes(config.hook.pytest_report_from_serializable)
        self.faults = Faults(self)
        self.loop = RunLoop(self)
        self.feeder = Feeder(self)
        self._old_handlers: dict[int, Any] = {}
        self.warnings = relay.WarningRelay(config)
        #: The live view or progress lines (progress.py); the run loop ticks it.
        self.progress = Progress(config, self)
        #: What the run does as its slots' leases come and go (slotleases.py), and the leases
        #: themselves when the rack is shared (leasing.py; None: not shared).
        self.slot_leases = SlotLeases(self)
        self.leasing = Leasing.open(
            config, rack, self.slots, self.testrunuid, self.loop.wake, self.slot_leases.said.append
        )
        if self.leasing is not None:  # a quarantine is the share's, for every run of it
            self.health.on_quarantine = self.slot_leases.quarantine_in_share
            self.health.on_pass = self.slot_leases.passed_check
        #: This host's part of a run over many hosts (--rack-run), or None.
        self.shared: SharedRun | None = None
        try:
            self.shared = SharedRun.open(self)
        except pytest.UsageError:
            if self.leasing is not None:
                self.leasing.close()
            raise

    # ------------------------------------------------------------------ pytest hooks

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
        if self.mode == "load" and not self.sequential and not self.collect_all and not self.lazy:
            lines.append(
                "testrack: --rack-collect eager: a worker imports only the test files it will run "
                "(plain pytest imports every file first; a test relying on another file's imports "
                "may fail: the default, all, imports every file everywhere)"
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
        self.order = sequencing.decide(
            self.config, self.recorder.store, self.recorder.location, self.slots, self.rack, self.sequential
        )
        # The workers wait for their Start: send it first, before the header and the store.
        factory = getattr(self.config, "_tmp_path_factory", None)
        if factory is not None:
            self.basetemp = factory.getbasetemp()
        for slot in self.slots:
            if self.leasing is None or self.leasing.take_now(slot):
                self.start_worker(slot)
        self.cloning.after_start()
        if self.leasing is not None:
            # Quarantined by another run: checked before use, as after any other run; a run with
            # no check to run keeps it out too.
            for name, why in self.leasing.quarantined_elsewhere().items():
                if not self.health.needs_check(self.devices[name]):
                    self.health.quarantine(name, f"{why} (no check here can clear it)", shared=True)
        for device in {s.device for s in self.slots if s.id in self.workers}:
            self.health.check(device)
        if self.leasing is not None:
            self.slot_leases.wait_for_a_first_lease()
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
                self._old_handlers[signum] = signal.signal(signum, self.loop.on_stop_signal)
            self._old_handlers[signal.SIGTSTP] = signal.signal(signal.SIGTSTP, self.loop.on_suspend)

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
                self.loop.pump(self.collection.wait_for())
                if self.collection.held and self.collection.wait_for() == 0.0:
                    self.collection.feed_held()
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
                self.feeder.feed(worker)
        try:
            while not self.feeder.run_done():
                tick = self.faults.enforce_limits()
                wait = 0.2 if self.feeder.checks_deadline is not None else tick
                wait = self.progress.tick(wait)
                if self.shared is not None:
                    wait = self.shared.tick(wait)
                self.loop.pump(wait)
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
        run_summary.write(self, terminalreporter)

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
        self.cloning.settle()  # a run that ended before every clone came up adopts no more
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
        self.loop.close()
        trace("controller: workers reaped")

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
        self.dispatcher.open_slot(slot.id)
        self.launch(worker)
        return worker

    def launch(self, worker: WorkerHandle) -> None:
        """Make ``worker`` its slot's, watch it and send its Start (its node is configured)."""
        self.workers[worker.slot.id] = worker
        self.loop.watch(worker)
        start = m.Start(self.basetemp_for(worker.slot), worker.node.workerinput, self.compact_reports)
        self.loop.send(worker, start)
        self.slot_leases.allow_starts(worker)

    def basetemp_for(self, slot: Slot) -> str | None:
        """The slot's worker's base temporary directory, as under xdist: the run's, per worker."""
        return str(self.basetemp / slot.id) if self.basetemp else None

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

    def replace_worker(self, dead: WorkerHandle) -> None:
        """A new worker in a dead one's slot; it imports what the slot was planned to run."""
        worker = self.start_worker(dead.slot)
        self.give_imports(worker, self.planned_for(dead))

    def planned_for(self, worker: WorkerHandle) -> list[str]:
        if isinstance(self.dispatcher, SequenceDispatcher):
            return self.dispatcher.modules_of(worker.slot.id)
        if self.mode == "each" or self.sequential or self.shared is not None or self.collect_all:
            return self.collection.keys
        return list(self.import_plan.get(worker.slot.id, worker.imported))

    def give_imports(self, worker: WorkerHandle, modules: list[str]) -> None:
        if self.phase is Phase.COLLECTING and self.mode == "load" and not self.sequential:
            return  # it pulls files like everyone else
        if self.collect_all:  # as plain pytest: every file first
            self.dispatcher.mark_imported(worker.slot.id, self.collection.keys)
            self.collection.send_every_file(worker)  # a file's tests come with its first Run
        elif modules:
            self.dispatcher.mark_imported(worker.slot.id, modules)
            self.collection.send(worker, modules)

    def restart_for_leftovers(self) -> None:
        """Jobs no live worker may take (they left their module, or passed them): start a
        fresh worker for them on a free slot of a device that can run them."""
        left = self.dispatcher.unreachable()
        if not left:
            return
        trace(f"controller: {len(left)} tests left that no live worker may take, in {left[0].module}")
        for slot in self.free_slots():
            mine = [j for j in left if slot.id in self.dispatcher.slots_for(j)]
            if not mine:
                continue
            fresh = self.start_worker(slot, fresh=True)
            self.give_imports(fresh, list(dict.fromkeys(j.module for j in mine)))
            left = [j for j in left if j not in mine]
            if not left:
                return
        self.slot_leases.lease_again({s for j in left for s in self.dispatcher.slots_for(j)})

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

    def node_down(self, worker: WorkerHandle, error: str | None) -> None:
        node = getattr(worker, "node", None)
        if node is not None and not node.shutting_down:
            node.shutting_down = True
            node.workeroutput = worker.workeroutput or {}
            nodes.down(node, error)
            if error is not None and (listeners := nodes.listeners(self.config)):
                note = (
                    f"{worker.label.id} ({worker.slot.device}) did not end cleanly, so what "
                    f"{', '.join(listeners)} gathered in it never came back: that report lacks the "
                    "tests this worker ran (pytest-xdist loses it the same way)"
                )
                if note not in self.notes:  # its replacement crashed too: said once
                    self.notes.append(note)

    @pytest.hookimpl(trylast=True)
    def pytest_report_teststatus(self, report: Any) -> tuple[str, str, tuple[str, dict[str, bool]]] | None:
        """A ``rerun`` attempt (--rack-rerun-failed) reads as pytest-rerunfailures shows one."""
        if getattr(report, "outcome", None) == "rerun" and report.when == "call":
            return "rerun", "R", ("RERUN", {"yellow": True})
        return None

    def pytest_warning_recorded(self, warning_message: Any, when: str, nodeid: str) -> None:
        self.warnings.seen(warning_message, when, nodeid)

    def stop(self) -> None:
        """``-x``/``--maxfail`` reached: let running tests finish, start nothing new."""
        trace("controller: stops")
        self.phase = Phase.STOPPING
        assert self.session is not None
        self.replay.stop_reason = self.replay.stop_reason or self.session.shouldfail
        for worker in self.alive_workers():
            if worker.state is not State.STOPPING:
                self.feeder.shutdown_worker(worker)

    def shutdown(self) -> None:
        """End every worker's session cleanly; kill what does not end in time."""
        trace("controller: shutdown")
        self.phase = Phase.STOPPING
        for worker in self.alive_workers():
            if not worker.winding_down:
                self.feeder.shutdown_worker(worker)
        deadline = time.monotonic() + SHUTDOWN_GRACE
        # Wait for every session to finish; the processes exit while the summary prints.
        while self.alive_workers():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.loop.pump(timeout=min(left, 0.5))
        for worker in self.alive_workers():
            self.problems.append(
                f"worker {worker.slot.id} ({worker.device.name}) did not finish its session within "
                f"{SHUTDOWN_GRACE:.0f} s of being asked to stop, and was killed"
            )
            worker.kill()
            worker.state = State.DEAD
        for device, times in self.slot_leases.gave_back.items():
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

    # ------------------------------------------------------------------ interrupts

    def interrupt(self) -> str:
        """Ctrl-C or SIGTERM: stop every worker, keep what they report; a second one kills them.

        Returns what was running where, which becomes the interruption's message."""
        trace("controller: interrupted")
        self.loop.interrupting = True
        self.loop.stop_signals = max(self.loop.stop_signals, 1)
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
            worker.signal(signal.SIGINT)
        what = "interrupted while running " + "; ".join(running) if running else "interrupted between tests"
        deadline = time.monotonic() + INTERRUPT_GRACE
        try:
            while self.alive_workers() and time.monotonic() < deadline:
                self.loop.pump(timeout=0.2)
                if self.loop.stop_signals > 1:  # a second Ctrl-C: no more waiting
                    for worker in self.workers.values():
                        worker.kill()
                    return what + "; workers killed by a second interrupt"
            return what
        finally:
            self.replay.end_round()
            for worker in self.workers.values():
                self.replay.keep_unfinished(worker)  # shown in part (a teardown cut short): stored
