"""The collection phase of a rack run: files out to workers, tests back, imports planned.

The controller finds the test files without importing them
(:func:`testrack.collection.walk_files`); workers import them and answer with
their tests. In each mode every worker imports every file; in load mode each file
is first imported by one worker (pulled in shrinking chunks), and then, with the
tests known, :func:`testrack.planning.plan_imports` decides which other workers
import which files as well, before any test runs anywhere: plain pytest imports
every file before the first test, and suites rely on it. ``--rack-collect lazy``
skips that plan: a worker imports a file when it is first given one of its tests.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pytest

from testrack import explain, selection, sequencing
from testrack import messages as m
from testrack.collection import FileUnit, walk_files
from testrack.planning import TestInfo, plan_imports, plan_jobs, segment
from testrack.scheduling import Dispatcher, Job
from testrack.trace import trace
from testrack.workers import State

if TYPE_CHECKING:
    from testrack.controller import Controller
    from testrack.workers import WorkerHandle

#: For this long (seconds) after load mode's collection starts, a worker that has a file already
#: gets no more while workers still starting have none: the first workers up would otherwise
#: import most files, and a file's first importer is where the import plan prefers to run it.
SPREAD_GRACE = 2.0


class Collection:
    """What the workers were asked to import, and what they found."""

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self.units: list[FileUnit] = []
        self.unit_nodeids: dict[str, str] = {}
        self.to_collect: deque[str] = deque()
        #: Files sent to a worker whose answer has not come, by slot.
        self.in_flight: dict[str, list[str]] = {}
        #: Clones, by slot, whose files are their template's: answered when they are ready, unasked.
        self.from_template: dict[str, WorkerHandle] = {}
        #: What the first worker to import each file found in it (a clone's answer).
        self.found: dict[str, m.CollectedUnit] = {}
        #: Files that were in flight when a worker died: retried one at a time.
        self.suspects: set[str] = set()
        #: Tests of each file, by the device whose worker collected them.
        self.collected: dict[str, dict[str, list[m.CollectedTest]]] = {}
        self.scopes: dict[str, tuple[str, ...]] = {}
        #: What importing each file cost the worker that did it first (seconds).
        self.import_seconds: dict[str, float] = {}
        #: The slot whose worker imported a file first.
        self.home: dict[str, str] = {}
        self.deselected: dict[str, None] = {}
        self.reports: dict[str, Any] = {}
        #: Lines for after collection, as plugins print them (``run-last-failure: ...``).
        self.header: list[str] = []
        self.done_collecting = False
        #: Each mode: the devices that collected tests, but not this one, by node id.
        self.not_collected: dict[str, set[str]] = {}
        #: Until when files are left for workers still starting (load mode's first pass).
        self.spread_until = 0.0
        #: Ready workers that were given no file meanwhile: fed when that time is up.
        self.held: dict[str, WorkerHandle] = {}

    @property
    def keys(self) -> list[str]:
        """Every test file of the run, in collection order: what a worker imports to hold them all."""
        return [u.key for u in self.units]

    # ------------------------------------------------------------------ the phase

    def start(self, session: pytest.Session) -> None:
        units = walk_files(session)
        trace(f"controller: {len(units)} files found")
        self.units = [unit for unit, _ in units]
        self.unit_nodeids = {unit.key: nodes[0].nodeid for unit, nodes in units}
        self.units = selection.filter_units(self.ctl, self.units)
        keys = self.keys
        replay = self.ctl.order.imports
        if replay is not None:
            # A replay imports what each worker imported then, in that order, and nothing else.
            known = set(keys)
            for worker in self.ctl.workers.values():
                self.send(worker, [k for k in replay.get(worker.slot.id, ()) if k in known])
        elif self.ctl.mode == "each" or self.ctl.sequential:
            for worker in self.ctl.workers.values():
                self.send(worker, keys)
        else:
            self.to_collect.extend(keys)
            self.spread_until = time.monotonic() + SPREAD_GRACE
            for worker in self.ctl.workers.values():
                if worker.state is State.READY:
                    self.feed(worker)

    def done(self) -> bool:
        alive = self.ctl.alive_workers()
        if not alive:
            return True
        if self._pulls():
            return not self.to_collect and not any(w.collecting for w in alive)
        return not any(w.collecting for w in alive)

    def on_ready(self, worker: WorkerHandle) -> None:
        if self.from_template.get(worker.slot.id) is worker:
            # A clone of a template that had imported these files: what it found is the clone's
            # too, without a round trip (at 1,600 tests, 4 ms of pickling on each side per clone).
            del self.from_template[worker.slot.id]
            keys = self.in_flight.get(worker.slot.id, [])
            self.on_collected(worker, m.Collected(tuple(self.found[k] for k in keys), (), (), 0.0, ()))
        elif self._pulls():
            self.feed(worker)

    def _pulls(self) -> bool:
        """Load mode's first collection pass: workers pull files in chunks."""
        ctl = self.ctl
        return (
            not self.done_collecting
            and ctl.mode == "load"
            and not ctl.sequential
            and ctl.order.replay is None
        )

    def send(self, worker: WorkerHandle, keys: list[str], only_import: Iterable[str] = ()) -> None:
        """Have ``worker`` import ``keys`` (those it has not already), in order; of those in
        ``only_import`` it makes the tests only when it is given one (``Feeder.assign``)."""
        later = set(only_import)
        keys = [
            k for k in keys if k not in worker.imported and not (k in later and k in worker.imported_only)
        ]
        if not keys:
            return
        imports = tuple(k for k in keys if k in later)
        worker.imported.update(k for k in keys if k not in later)
        worker.imported_only.update(imports)
        worker.collecting += 1
        self.in_flight.setdefault(worker.slot.id, []).extend(keys)
        self.ctl.loop.send(worker, m.Collect(tuple(keys), only_import=imports))

    def send_every_file(self, worker: WorkerHandle) -> None:
        """``--rack-collect all``: ``worker`` imports every file before its first test, as plain
        pytest does, and makes a file's tests when it is given one. Making them all in every
        worker would cost what each file's collection costs, once per worker."""
        self.send(worker, self.keys, only_import=self.keys)

    def from_clone(self, clone: WorkerHandle, keys: list[str]) -> None:
        """``clone`` will be forked from a template that imported ``keys``: they count as in
        flight until it is ready (a clone that never comes up hands them to its successor)."""
        clone.imported.update(keys)
        clone.collecting += 1
        self.in_flight.setdefault(clone.slot.id, []).extend(keys)
        self.from_template[clone.slot.id] = clone

    def take_in_flight(self, slot_id: str) -> list[str]:
        """The files a worker that never came up was to import: for the one in its place."""
        self.from_template.pop(slot_id, None)
        return self.in_flight.pop(slot_id, [])

    def feed(self, worker: WorkerHandle) -> None:
        """Load mode: give a ready worker the next files to import, in chunks (by the workers
        the run will have, not those up yet), leaving a while the last ones to workers that
        have none yet."""
        if not self.to_collect or worker.collecting or worker.winding_down:
            return
        if worker.imported and self._left_for_others(worker):
            self.held[worker.slot.id] = worker
            return
        self.held.pop(worker.slot.id, None)
        if self.to_collect[0] in self.suspects:
            chunk = [self.to_collect.popleft()]
        else:
            workers = max(len(self.ctl.alive_workers()), len(self.ctl.workers), 1)
            size = max(1, len(self.to_collect) // (2 * workers))
            chunk = []
            while self.to_collect and len(chunk) < size and self.to_collect[0] not in self.suspects:
                chunk.append(self.to_collect.popleft())
        self.send(worker, chunk)

    def _left_for_others(self, worker: WorkerHandle) -> bool:
        if time.monotonic() >= self.spread_until:
            return False
        waiting = sum(
            1
            for w in self.ctl.alive_workers()
            if w is not worker and not w.imported and not w.winding_down and not w.pending
        )
        return len(self.to_collect) <= waiting

    def wait_for(self) -> float | None:
        """How long the collection loop may wait for a message: until the held workers are due."""
        if not self.held:
            return None
        return max(0.0, self.spread_until - time.monotonic())

    def feed_held(self) -> None:
        """Feed the workers held back, once their time is up or a worker they waited for is gone."""
        for worker in list(self.held.values()):
            if worker.alive and worker.state is State.READY:
                self.feed(worker)
            else:
                self.held.pop(worker.slot.id, None)

    def on_collected(self, worker: WorkerHandle, message: m.Collected) -> None:
        worker.collecting -= 1
        inflight = self.in_flight.get(worker.slot.id, [])
        for key in message.imported:
            if key in inflight:
                inflight.remove(key)
        for unit in message.units:
            if unit.key in inflight:
                inflight.remove(unit.key)
            self.found.setdefault(unit.key, unit)
            self.collected.setdefault(unit.key, {}).setdefault(worker.device.name, list(unit.tests))
            self.scopes.setdefault(unit.key, unit.scopes)
            self.import_seconds.setdefault(unit.key, unit.seconds)
            self.home.setdefault(unit.key, worker.slot.id)
        self.ctl.recorder.imports(worker.slot.id, worker.device.name, message.units)
        self.ctl.dispatcher.mark_imported(worker.slot.id, [unit.key for unit in message.units])
        for nodeid in message.deselected:
            self.deselected[nodeid] = None
        if self.ctl.sequential:
            self.header.extend(line for line in message.header if line not in self.header)
        config = self.ctl.config
        for data in message.reports:
            report = config.hook.pytest_report_from_serializable(config=config, data=data)
            if report.nodeid not in self.reports:
                self.reports[report.nodeid] = report
                config.hook.pytest_collectreport(report=report)
        if self._pulls():
            self.feed(worker)
        self.ctl.cloning.on_collected(worker)

    def on_worker_lost(self, worker: WorkerHandle, how: str, output: str) -> None:
        """A worker died while importing: retry its files, one by one once suspected."""
        keys = self.in_flight.pop(worker.slot.id, [])
        if self._pulls():
            self.held.pop(worker.slot.id, None)
            self.feed_held()  # it may have been one that the others left files for
        if not keys or self.done_collecting:
            return
        if self.ctl.mode == "load" and not self.ctl.sequential:
            if len(keys) == 1 and keys[0] in self.suspects:
                self.report_crash(worker, keys[0], how, output)
            else:
                self.suspects.update(keys)
                self.to_collect.extendleft(reversed(keys))

    def on_worker_stopped(self, worker: WorkerHandle) -> None:
        """A worker ended cleanly before it imported the files it was given (its device was
        quarantined meanwhile, say): others import them, or their tests would be lost."""
        keys = self.in_flight.pop(worker.slot.id, [])
        if self._pulls():
            self.held.pop(worker.slot.id, None)
            self.feed_held()
        if not keys or not self._pulls():
            return
        trace(f"controller: {worker.slot.id} stopped before importing {len(keys)} files: others will")
        self.to_collect.extendleft(reversed(keys))
        for other in self.ctl.alive_workers():
            if other.state is State.READY and not other.winding_down:
                self.feed(other)

    def report_crash(self, worker: WorkerHandle, key: str, how: str, output: str) -> None:
        nodeid = self.unit_nodeids.get(key, key)
        text = explain.import_crash(worker.slot.id, worker.device.name, how, output)
        report = pytest.CollectReport(nodeid, "failed", text, [])
        self.reports[nodeid] = report
        self.ctl.config.hook.pytest_collectreport(report=report)

    # ------------------------------------------------------------------ from tests to jobs

    def finish(self, session: pytest.Session) -> None:
        """Turn what the workers collected into jobs (ordered, routed, estimated), and plan
        which workers import which files before their first test."""
        self.done_collecting = True
        ctl = self.ctl
        infos: list[TestInfo] = []
        collected_on: dict[str, set[str]] = {}
        for unit in self.units:
            for device, tests in self.collected.get(unit.key, {}).items():
                for test in tests:
                    collected_on.setdefault(test.nodeid, set()).add(device)
                    if test.nodeid not in ctl.tests:
                        info = ctl.tests[test.nodeid] = TestInfo(test, unit.key, len(ctl.tests))
                        infos.append(info)
        if ctl.mode == "each":  # a device (an environment, say) that collected other tests
            collecting = {device for devices in collected_on.values() for device in devices}
            for nodeid, devices in collected_on.items():
                if collecting - devices:
                    self.not_collected[nodeid] = collecting - devices
        before = [i.test.nodeid for i in infos]
        infos = selection.order_tests(ctl, infos)
        ordered = [i.test.nodeid for i in infos] != [n for n in before if n in ctl.tests]
        if ctl.rerun is not None:
            for info in [i for i in infos if i.test.nodeid not in ctl.rerun]:
                del ctl.tests[info.test.nodeid]
                self.deselected[info.test.nodeid] = None
            infos = [i for i in infos if i.test.nodeid in ctl.tests]
        if self.deselected:
            ctl.config.hook.pytest_deselected(items=[selection.RemoteItem(n) for n in self.deselected])
        plan = plan_jobs(
            infos,
            collected_on,
            ctl.rack,
            ctl.mode,
            ctl.durations,
            self.home,
            rerun=ctl.rerun,
            rerun_anywhere=bool(ctl.config.getoption("rack_failed_anywhere")),
            scopes=self.scopes,
            segments=segment(infos) if ordered else None,
        )
        elsewhere = ctl.shared.adopt(plan) if ctl.shared is not None else []
        ctl.unmatched.extend(plan.unrunnable)
        ctl.runs = plan.runs
        ctl.gangs.add(plan.gangs)
        lazy = ctl.lazy and ctl.mode == "load" and not ctl.sequential
        ctl.dispatcher = Dispatcher(
            ctl.slots, import_cost=ctl.recorder.import_costs(), lazy=lazy, in_order=ordered
        )
        for slot in ctl.slots:
            worker = ctl.workers.get(slot.id)
            if slot.id in ctl.faults.dead_slots:  # given up, or its device quarantined meanwhile
                ctl.dispatcher.drop_slot(slot.id, permanently=True)
            elif worker is None or not worker.alive or worker.winding_down:
                ctl.dispatcher.drop_slot(slot.id, permanently=False)
            else:
                ctl.dispatcher.mark_imported(slot.id, worker.imported)
        jobs = [job for batch in plan.jobs.values() for job in batch]
        if ctl.shared is not None:
            # The tests come from the run's queue, claimed as workers ask; every worker imports
            # every file first, as plain pytest does (any of them may get any test).
            ctl.shared.begin(jobs, elsewhere)
            if ctl.mode == "load":
                self.import_more({slot.id: self.keys for slot in ctl.slots}, only_import=True)
        elif ctl.order.fixed:
            self._fixed_order(jobs)
        else:
            ctl.dispatcher.add(jobs)
            if ctl.mode == "load" and not lazy and not ctl.sequential:
                if ctl.collect_all:
                    imports = {slot.id: self.keys for slot in ctl.slots}
                else:
                    imports = plan_imports(jobs, ctl.slots, self.import_seconds, self.home)
                for slot in ctl.slots:  # a test on several devices runs in its first device's worker
                    imports.setdefault(slot.id, []).extend(
                        m for m in ctl.gangs.modules(slot.device) if m not in imports.get(slot.id, [])
                    )
                self.import_more(imports, only_import=ctl.collect_all)
        seen: set[str] = set()
        for job in jobs:
            if job.nodeid in seen:
                ctl.replay.several.add(job.nodeid)
            seen.add(job.nodeid)
        # Progress counts test-device runs (of a replay: those it replays), and the tests
        # reported without running (no device can take them).
        fixed = ctl.order.fixed and ctl.shared is None
        runs = ctl.dispatcher.remaining + len(plan.gangs) if fixed else plan.runs
        session.testscollected = runs + len(plan.unrunnable)
        reporter = ctl.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and ctl.config.get_verbosity() >= 0:
            reporter.write_line(self.describe(len(infos)))
            if ctl.shared is not None:
                reporter.write_line(ctl.shared.describe(len(elsewhere)))
            for line in self.header:
                reporter.write_line(line)

    def _fixed_order(self, jobs: list[Job]) -> None:
        """A seed or a stored run gives each slot its sequence; each worker imports its files."""
        ctl = self.ctl
        if ctl.order.replay is not None:
            dispatcher, missing = sequencing.replayed(jobs, ctl.slots, ctl.order)
            if missing:
                shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
                ctl.notes.append(
                    f"{len(missing)} test{'s' if len(missing) != 1 else ''} of {ctl.order.source} "
                    f"{'is' if len(missing) == 1 else 'are'} not collected now and not replayed: {shown}"
                )
        else:
            dispatcher, unrunnable = sequencing.seeded(jobs, ctl.slots, ctl.order, ctl.mode)
            for job in unrunnable:
                dispatcher.requeue([job])  # no slot of its devices: reported as an orphan
        ctl.dispatcher = dispatcher
        for slot in ctl.slots:
            worker = ctl.workers.get(slot.id)
            if slot.id in ctl.faults.dead_slots:
                dispatcher.drop_slot(slot.id, permanently=True)
            elif worker is None or not worker.alive or worker.winding_down:
                dispatcher.drop_slot(slot.id, permanently=False)
        every = ctl.collect_all and ctl.order.replay is None
        self.import_more(
            {slot.id: self.keys if every else dispatcher.modules_of(slot.id) for slot in ctl.slots},
            only_import=every,
        )

    def import_more(self, plan: dict[str, list[str]], only_import: bool = False) -> None:
        """Send each worker the files the plan gives it beyond those it imported already
        (``only_import``: their tests are made when it is given one)."""
        ctl = self.ctl
        for slot_id, modules in plan.items():
            worker = ctl.workers.get(slot_id)
            if worker is None or not worker.alive:
                continue
            ctl.dispatcher.mark_imported(slot_id, modules)
            self.send(worker, modules, only_import=modules if only_import else ())
        ctl.import_plan = plan

    def describe(self, count: int) -> str:
        ctl = self.ctl
        deselected = f" ({len(self.deselected)} deselected)" if self.deselected else ""
        each = f", {_n(ctl.runs, 'run')}" if ctl.mode == "each" else ""
        known = sum(1 for nodeid in ctl.tests if nodeid in ctl.durations)
        history = f"; history for {known}" if known else ""
        why_not = ctl.cloning.why_not
        cloned = (
            f" (cloned after {ctl.cloning.stage})"
            if ctl.cloning.cloned
            else f" (not cloned: {why_not})"
            if why_not
            else ""
        )
        return (
            f"testrack: collected {_n(len(ctl.tests), 'test')}{deselected}{each} "
            f"in {_n(len(self.units), 'file')} on {_n(len(ctl.slots), 'worker')}{cloned}{history}"
        )


def _n(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"
