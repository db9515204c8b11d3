"""Where each worker's next tests come from, and when the run's work is done.

A worker asks for work (``WantWork``) two tests ahead; the answer is a chunk of tests from the
in-memory dispatcher (:mod:`testrack.scheduling`), or from the shared run's queue when this
host has nothing of its own (:mod:`testrack.sharedrun`), or a test on several devices
(:mod:`testrack.gangs`), or ``Finish``. A worker whose device is being checked waits for the
verdict; one whose lease must go back to a waiting run ends after what it holds.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from testrack import messages as m
from testrack.health import DeviceState
from testrack.rack import Device
from testrack.runloop import Phase
from testrack.scheduling import Dispatcher, Job
from testrack.trace import trace
from testrack.workers import State, WorkerHandle

if TYPE_CHECKING:
    from testrack.controller import Controller

#: How long a finished run waits for device checks still under way.
CHECK_WAIT_AT_END = 10.0
#: A test known to take this long (seconds) has the reports before it sent first (worker.FLUSH_AFTER).
LONG_TEST = 0.05


class Feeder:
    """Answers the workers' requests for work, and says when the run is done."""

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        #: When a run whose tests are done stops waiting for device checks still under way.
        self.checks_deadline: float | None = None

    def feed(self, worker: WorkerHandle) -> None:
        """Answer a worker's WantWork: a chunk of tests, or Finish (no more will come).

        A worker whose device is being checked waits for the verdict (its WantWork
        is answered when the check ends); one whose device is quarantined stops.
        """
        ctl = self.ctl
        if worker.winding_down or not worker.alive:
            return
        if ctl.leasing is not None and not ctl.leasing.holds(worker.slot.id):
            # Asked before each test: never touch a device that is not this run's.
            ctl.slot_leases.lease_lost(worker.slot.id)
            return
        if (
            ctl.leasing is not None
            and ctl.phase is Phase.RUNNING
            and ctl.leasing.should_give_back(worker.slot.id)
        ):
            ctl.slot_leases.give_back(worker)
            return
        state = ctl.health.state(worker.device.name)
        if state in (DeviceState.UNCHECKED, DeviceState.CHECKING):
            worker.wants_work = True
            return
        worker.wants_work = False
        if state is DeviceState.QUARANTINED:
            self.shutdown_worker(worker)
            return
        gangs = ctl.gangs
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
            jobs = ctl.dispatcher.take(worker.slot.id)
        if not jobs and not kept and ctl.shared is not None:
            jobs = ctl.shared.take(worker)  # the run's queue, when this host has nothing of its own
        if jobs:
            self.assign(worker, jobs)
        elif gangs.pending and gangs.may_need(worker):
            worker.wants_work = True  # a test on several devices may need it soon
            if worker.assigned and not worker.told_idle:
                # Busy: it may not wait for an answer to run its last test. It runs that test
                # as a session's last and stays, to be lent (no fresh worker in its slot).
                worker.told_idle = True
                ctl.loop.send(worker, m.Idle())
        elif ctl.shared is not None and not worker.assigned and ctl.shared.may_have_more():
            # Idle, while tests may still come back to the queue (a host died): asked again. A
            # busy one is finished instead: its last test must not wait for a successor.
            worker.wants_work = True
        else:
            self.finish_worker(worker)

    def assign_gang(self, worker: WorkerHandle, job: Job, devices: list[Device]) -> None:
        """A test on several devices, to the worker of its first; the others are lent meanwhile."""
        if job.module not in worker.imported:
            # A worker started late (a replacement, or one for leftovers) may not have its file yet.
            self.ctl.collection.send(worker, [job.module])
        worker.wants_work = worker.told_idle = False
        worker.assigned.append(job)
        unknown = (job.nodeid,) if job.guessed else ()
        self.ctl.loop.send(worker, m.Run((job.nodeid,), unknown=unknown, devices=tuple(devices)))

    def assign(self, worker: WorkerHandle, jobs: list[Job]) -> None:
        ctl = self.ctl
        # Lazy collection, or files a worker only imported (--rack-collect all): their tests first.
        missing = list(dict.fromkeys(j.module for j in jobs if j.module not in worker.imported))
        if missing:
            ctl.collection.send(worker, missing)
        worker.told_idle = False
        worker.assigned.extend(jobs)
        long = tuple(j.nodeid for j in jobs if not j.guessed and j.estimate >= LONG_TEST)
        unknown = tuple(j.nodeid for j in jobs if j.guessed)
        ctl.loop.send(worker, m.Run(tuple(j.nodeid for j in jobs), long, unknown))

    def unassign(self, worker: WorkerHandle, nodeid: str) -> None:
        """A test's reports are all in: it leaves the worker's queue (in order), before its
        reports are shown when they wait for the loop round's end (a WantWork must not see it)."""
        if worker.assigned and worker.assigned[0].nodeid == nodeid:
            worker.assigned.popleft()
        else:
            for i, job in enumerate(worker.assigned):
                if job.nodeid == nodeid:
                    del worker.assigned[i]
                    break
        worker.reported += 1

    def finish_job(self, worker: WorkerHandle, nodeid: str, unassigned: bool = False) -> None:
        """A test's reports are shown: it ends (pytest_runtest_logfinish)."""
        ctl = self.ctl
        if not unassigned:
            self.unassign(worker, nodeid)
        started = worker.phases.pop(nodeid, None) is not None
        if started:
            ctl.replay.logfinish(worker, nodeid, worker.device.name)
        if ctl.gangs.active:  # running, waiting, or queued behind this test
            ctl.gangs.finished(worker, nodeid)
            self.feed_idle()  # the slots it had borrowed take work again, or wait for another

    def finish_worker(self, worker: WorkerHandle) -> None:
        """No more work for this worker: it runs what it holds, then ends its session."""
        trace(f"controller: {worker.slot.id} finishes")
        worker.winding_down = True
        self.ctl.dispatcher.retire(worker.slot.id)
        self.ctl.loop.send(worker, m.Finish())

    def shutdown_worker(self, worker: WorkerHandle) -> None:
        """Stop a worker now: it runs nothing more it holds (that goes back to the queue)."""
        trace(f"controller: {worker.slot.id} shuts down")
        worker.winding_down = True
        worker.state = State.STOPPING
        self.ctl.dispatcher.retire(worker.slot.id)
        self.ctl.loop.send(worker, m.Shutdown())

    def reserve_would_starve(self, worker: WorkerHandle) -> bool:
        """Would giving a busy worker its next test take it from a slot that could start it now?

        A worker asks for its next test while still running one; when the tests
        left are no more than the idle or starting slots, they go to those instead.
        """
        ctl = self.ctl
        if ctl.dispatcher.remaining > len(ctl.workers):
            return False  # more tests left than workers to take them: the common case, at once
        idle = sum(
            1
            for w in ctl.alive_workers()
            if w is not worker
            and not w.assigned
            and not w.winding_down
            and ctl.dispatcher.has_work_for(w.slot.id)
        )
        return ctl.dispatcher.remaining <= idle

    def feed_idle(self) -> None:
        """Offer work to workers waiting for it (after a requeue or a device check)."""
        ctl = self.ctl
        for worker in ctl.alive_workers():
            if worker.wants_work and ctl.phase is Phase.RUNNING:
                self.feed(worker)
        if ctl.gangs.pending and ctl.phase is Phase.RUNNING:
            ctl.gangs.start()  # one came back (a DeviceError): its devices may need fresh workers
        ctl.restart_for_leftovers()

    def run_done(self) -> bool:
        ctl = self.ctl
        if ctl.phase is Phase.STOPPING:
            return not any(
                w.state in (State.READY, State.STARTING) and w.assigned for w in ctl.workers.values()
            )
        if ctl.dispatcher.remaining or ctl.gangs.active:
            if ctl.alive_workers() or (ctl.leasing is not None and ctl.leasing.waiting):
                return False
            ctl.restart_for_leftovers()  # a fresh worker, or a lease given back waited for again
            ctl.gangs.start()
            if ctl.alive_workers() or (ctl.leasing is not None and ctl.leasing.waiting):
                return False
            self._orphan_all()
            return True
        if any(w.assigned for w in ctl.alive_workers()):
            return False
        if ctl.shared is not None and ctl.shared.waiting():
            return False
        return not self.awaiting_checks()

    def _orphan_all(self) -> None:
        ctl = self.ctl
        left = ctl.dispatcher.unreachable()
        for job in left:
            info = ctl.tests.get(job.nodeid)
            if info is not None:
                names = sorted(job.eligible)
                text = (
                    f"no worker could run this test: it can run on {', '.join(names)}, and no worker "
                    "there was left alive to take it"
                )
                ctl.replay.synthetic(
                    info, None, text, when="setup", device=names[0] if len(names) == 1 else None
                )
        ctl.dispatcher = Dispatcher(ctl.slots)

    def awaiting_checks(self) -> bool:
        """The work is done but a device is being rechecked: wait (a while) for its verdict,
        so that a device that went bad is quarantined and recorded as such."""
        checking = [n for n, s in self.ctl.health.states.items() if s is DeviceState.CHECKING]
        if not checking:
            return False
        if self.checks_deadline is None:
            self.checks_deadline = time.monotonic() + CHECK_WAIT_AT_END
        if time.monotonic() < self.checks_deadline:
            return True
        self.ctl.notes.append(
            f"the check of {', '.join(checking)} had not ended {CHECK_WAIT_AT_END:g} s after the last test"
        )
        return False
