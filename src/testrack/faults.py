"""When a worker dies, a test overruns its limit, or a device goes bad.

A worker that dies takes with it the reports it had not sent yet, so the
controller reads its :mod:`~testrack.scoreboard` to know exactly what happened:
the test that was running is the one reported (with the device, the signal or
exit code, and the worker's last output); tests that had finished but whose
reports were lost run again; tests not started go back to the queue. A time limit
is enforced from the same board: the controller sees when the running test
started, and at its deadline dumps the worker's stacks and kills it. Device
errors rerun the test elsewhere; a quarantined device's work moves to others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import signal
import time
from typing import TYPE_CHECKING

from testrack import explain
from testrack.health import DeviceState
from testrack.recorder import Attempt
from testrack.scheduling import Job
from testrack.trace import trace
from testrack.workers import State

if TYPE_CHECKING:
    from testrack.controller import Controller
    from testrack.gangs import GangRun
    from testrack.replay import When
    from testrack.workers import WorkerHandle

#: How often one slot's worker may be replaced after crashes before the slot is given up.
MAX_RESPAWNS = 5
#: How often a test that raised DeviceError is tried again (elsewhere when it can).
DEVICE_ERROR_RETRIES = 2
#: How long a timed-out worker gets to write its stacks before it is killed.
STACK_DUMP_WAIT = 1.0
#: Once its stacks started coming, a timed-out worker is killed after this long without output.
STACK_DUMP_QUIET = 0.1
#: How often the run loop looks at the scoreboards when some test has a time limit.
LIMIT_TICK = 0.02


class Faults:
    """The controller's answers to things going wrong."""

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self.retries: dict[str, int] = {}
        self.respawns: dict[str, int] = {}
        #: Slots given up, and why.
        self.dead_slots: dict[str, str] = {}
        self.retry_crashed = int(ctl.config.getoption("rack_retry_crashed", 0) or 0)
        self.timeout: float | None = ctl.config.getoption("rack_timeout", None)

    # ------------------------------------------------------------------ time limits

    def limit_for(self, nodeid: str) -> tuple[float | None, str]:
        info = self.ctl.tests.get(nodeid)
        if info is not None and info.test.timeout:
            return info.test.timeout, "@pytest.mark.rack_timeout"
        return self.timeout, "--rack-timeout"

    @functools.cached_property
    def limits_apply(self) -> bool:
        """Some test has a time limit (asked once the tests are known: the loop asks often)."""
        return bool(self.timeout) or any(i.test.timeout for i in self.ctl.tests.values())

    def enforce_limits(self) -> float | None:
        """Kill workers whose running test passed its deadline; seconds until the next check."""
        if not self.limits_apply:
            return None
        now = time.monotonic()
        for worker in self.ctl.alive_workers():
            if worker.kill_at is not None:
                dumped = worker.last_output_at > worker.kill_at - STACK_DUMP_WAIT
                if now >= worker.kill_at or (dumped and now - worker.last_output_at >= STACK_DUMP_QUIET):
                    worker.kill()
                    worker.kill_at = None
                continue
            if worker.timed_out is not None or worker.state is State.STARTING:
                continue
            seen = worker.board.read()
            if not seen.running:
                continue
            limit, _ = self.limit_for(seen.nodeid)
            if limit and now - seen.started_at >= limit:
                self.time_out(worker, seen.nodeid)
        return LIMIT_TICK

    def time_out(self, worker: WorkerHandle, nodeid: str) -> None:
        """A test ran over its limit: have the worker dump its stacks (the loop reads them as they
        come and kills it once they are in); on_exit reports the test. Nothing here waits, so
        other workers' limits are kept meanwhile."""
        limit, source = self.limit_for(nodeid)
        worker.timed_out = (nodeid, limit or 0.0, source)
        trace(f"controller: {nodeid} timed out on {worker.slot.id}")
        worker.kill_at = time.monotonic() + STACK_DUMP_WAIT
        try:
            os.kill(worker.proc.pid, signal.SIGUSR1)
        except ProcessLookupError:
            worker.kill_at = None

    # ------------------------------------------------------------------ a worker ended

    def on_exit(self, worker: WorkerHandle) -> None:
        if self.ctl.cloning.on_lost(worker):
            return  # a clone that never was: its slot's own worker starts instead
        try:
            self._on_exit(worker)
        finally:
            worker.close()  # reaped and accounted for: its ends are closed, not left to the gc

    def _on_exit(self, worker: WorkerHandle) -> None:
        ctl = self.ctl
        finished = worker.state is State.FINISHED
        was_ready = worker.state is not State.STARTING
        worker.state = State.FINISHED if finished else State.DEAD
        worker.reap(time.monotonic() + 5.0, ctl.echo_output)
        slot = worker.slot
        running = ctl.phase.name == "RUNNING"
        if finished:
            ctl.node_down(worker, None)
            ctl.collection.on_worker_stopped(worker)
            # A clean exit: after Finish, after Shutdown, or on its own at --maxfail.
            current = ctl.workers.get(slot.id) is worker  # else a new worker has the slot already
            if worker.assigned and running:
                jobs = list(worker.assigned)
                self.requeue(ctl.gangs.take_back(worker, jobs) if current else jobs)
            worker.assigned.clear()
            if current:
                ctl.gangs.worker_gone(worker)
                ctl.dispatcher.drop_slot(slot.id, permanently=False)
            if slot.id in ctl.slot_leases.giving_back:
                ctl.slot_leases.after_give_back(slot)
            if running and not ctl.gangs.active:
                ctl.restart_for_leftovers()
                ctl.share_free_slots()
            elif running:  # the allocator starts what its tests need, on this slot too
                ctl.feeder.feed_idle()
            ctl.slot_leases.release_idle_lease(slot)
            return
        how = worker.how_it_ended()
        outcome = "crashed"
        output = worker.last_output()
        if worker.timed_out is not None:
            _, limit, source = worker.timed_out
            how = f"timed out after {limit:g} s (the limit set by {source}) and was killed"
            outcome = "timeout"
            output = explain.trim_stacks(worker.last_output(200))
        elif (dump := explain.plugin_timeout(worker.last_output(400))) is not None:
            how = f"was stopped by pytest-timeout ({how}), which dumped every thread's stack"
            outcome = "timeout"
            output = dump
        ctl.node_down(worker, f"worker {how}")
        crashed, lost = self.what_was_running(worker)
        gangs = ctl.gangs
        gang = gangs.run_of(slot.id, crashed.nodeid) if crashed is not None else gangs.running.get(slot.id)
        # Tests on several devices it finished but whose results died, or held: waiting again, whole.
        unrun = gangs.take_back(worker, [j for j in worker.assigned if j is not crashed])
        gangs.worker_gone(worker)  # the devices its tests on several devices had are free again
        borrowed = gang.devices[1:] if gang is not None else ()
        if borrowed:
            how += f" (its test also had {', '.join(borrowed)})"
            if running:
                for name in borrowed:
                    ctl.health.check(name)
        if lost:
            ctl.notes.append(
                f"{worker.label.id} ({worker.device.name}) {how} after finishing {len(lost)} "
                f"test{'s' if len(lost) != 1 else ''} whose results died with it; "
                "they run again"
            )
        for job in [*lost, *[j for j in worker.assigned if j is not crashed and j not in lost]]:
            worker.attempts.pop(job.nodeid, None)
        leftovers = unrun
        worker.assigned.clear()
        if crashed is not None:
            whole = gang is not None and gang.gang.nodeid == crashed.nodeid
            key = ctl.replay.run_key(worker, crashed.nodeid, gang if whole else None)
            if self.retries.get(key, 0) < self.retry_crashed and running:
                attempt = worker.attempts.pop(crashed.nodeid, Attempt())
                attempt.message = f"worker {how}"
                device = worker.device.name
                tried = attempt.result(crashed.nodeid, device, slot.id, worker.tests_done, outcome)
                # Stored on each of its devices (with its role), and counted on their summary
                # lines as a rerun.
                tries = ctl.replay.on_each_device(tried, gang if whole else None)
                ctl.recorder.results(tries)
                ctl.replay.rerun_on.update(r.device for r in tries)
                if whole:
                    assert gang is not None
                    self.retries[key] = self.retries.get(key, 0) + 1
                    ctl.gangs.retry(gang)  # whole, on whichever devices fit it next
                    where = "on devices free after their checks"
                else:
                    where = self.requeue_elsewhere(worker, crashed, key)
                ctl.notes.append(
                    f"{key}: worker {how} on {worker.device.name}; retried {where} "
                    f"({self.retries[key]} of {self.retry_crashed}, --rack-retry-crashed)"
                )
            else:
                on = gang if gang is not None and gang.gang.nodeid == crashed.nodeid else None
                self.report_crash(worker, crashed, how, output, outcome, on)
        elif running and worker.tests_done:
            ctl.problems.append(f"{worker.label.id} ({worker.device.name}) {how} between tests")
        if leftovers and running:
            self.requeue(leftovers)
        if running:
            ctl.health.check(worker.device.name)  # a crash may be the device's doing
        ctl.collection.on_worker_lost(worker, how, output)
        ctl.dispatcher.drop_slot(slot.id, permanently=False)
        respawns = self.respawns.get(slot.id, 0)
        if ctl.phase.name == "STOPPING" or ctl.health.state(slot.device) is DeviceState.QUARANTINED:
            if running:
                ctl.feeder.feed_idle()
            return
        if was_ready and respawns < MAX_RESPAWNS:
            self.respawns[slot.id] = respawns + 1
            ctl.replace_worker(worker)
        else:
            reason = f"worker {how} {'at start' if not was_ready else 'repeatedly'}"
            self.dead_slots[slot.id] = reason
            ctl.dispatcher.drop_slot(slot.id, permanently=True)
            detail = f"\n{output}" if output else ""
            ctl.problems.append(f"gave up on {slot.id} ({worker.device.name}): {reason}{detail}")
            self.report_orphans()
        if running:
            ctl.feeder.feed_idle()

    def what_was_running(self, worker: WorkerHandle) -> tuple[Job | None, list[Job]]:
        """From the dead worker's board: the job it was running (None between tests), and the
        jobs that finished but whose reports were never received."""
        assigned = list(worker.assigned)
        if worker.timed_out is not None:
            nodeid = worker.timed_out[0]
            index = next((i for i, j in enumerate(assigned) if j.nodeid == nodeid), None)
            if index is None:
                return None, []
            return assigned[index], assigned[:index]
        seen = worker.board.read()
        done = max(0, min(seen.finished - worker.reported, len(assigned)))
        crashed = None
        if seen.running:
            position = seen.started - 1 - worker.reported
            if 0 <= position < len(assigned) and assigned[position].nodeid == seen.nodeid:
                crashed = assigned[position]
        return crashed, assigned[:done]

    def report_crash(
        self, worker: WorkerHandle, job: Job, how: str, output: str, outcome: str, gang: GangRun | None = None
    ) -> None:
        """The test the worker died in, reported (on every device of a test on several)."""
        ctl = self.ctl
        phases = worker.phases.pop(job.nodeid, set())
        seen = worker.board.read()
        if seen.nodeid == job.nodeid and seen.started_at:
            # When it started, by the board: the report's timeline shows how long it ran.
            attempt = worker.attempts.setdefault(job.nodeid, Attempt())
            attempt.started = min(attempt.started, time.time() - (time.monotonic() - seen.started_at))
        text = explain.crash(
            worker.slot.id, worker.device.name, how, output, bool(self.retry_crashed), outcome == "timeout"
        )
        when: When = "teardown" if "call" in phases else "call"
        ctl.replay.synthetic(
            ctl.tests[job.nodeid],
            worker,
            text,
            when=when,
            started=bool(phases),
            outcome_name=outcome,
            gang=gang,
        )

    # ------------------------------------------------------------------ devices

    def retry_device_error(self, worker: WorkerHandle, nodeid: str) -> bool:
        """A test raised DeviceError: run it again (elsewhere when it can) and recheck the device."""
        ctl = self.ctl
        attempt = worker.attempts.get(nodeid)
        if attempt is None or attempt.device_error is None:
            return False
        device = worker.device.name
        ctl.health.check(device)
        key = ctl.replay.run_key(worker, nodeid)  # before the devices of a test on several go
        if self.retries.get(key, 0) >= DEVICE_ERROR_RETRIES:
            ctl.notes.append(f"{key}: DeviceError on {device} again; not retried any more")
            return False
        devices = ctl.gangs.again(worker, nodeid)
        if devices:
            self.retries[key] = self.retries.get(key, 0) + 1
            for name in devices[1:]:
                ctl.health.check(name)
            ctl.notes.append(
                f"{key}: DeviceError on {'+'.join(devices)} ({attempt.device_error}); retried on "
                "devices free after their checks"
            )
            return True
        job = next((j for j in worker.assigned if j.nodeid == nodeid), None)
        if job is None:
            return False
        where = self.requeue_elsewhere(worker, job, key)
        ctl.notes.append(f"{key}: DeviceError on {device} ({attempt.device_error}); retried {where}")
        return True

    def requeue_elsewhere(self, worker: WorkerHandle, job: Job, key: str) -> str:
        """Queue a test again, away from this worker's device when another can run it; say where.
        ``key`` is the run whose retry budget this uses (``Replay.run_key``)."""
        ctl = self.ctl
        self.retries[key] = self.retries.get(key, 0) + 1
        device = worker.device.name
        others = ctl.dispatcher.devices_for(job) - {device} - set(ctl.health.quarantined())
        retry = dataclasses.replace(job, eligible=frozenset(others)) if others else job
        ctl.dispatcher.requeue([retry])
        return f"on {', '.join(sorted(others))}" if others else f"on {device} after it is checked again"

    def take_out(self, name: str) -> None:
        """A quarantined device: its workers stop, its work goes to other matching devices."""
        ctl = self.ctl
        reason = ctl.health.reasons.get(name, "failed its check")
        for slot in (s for s in ctl.slots if s.device == name):
            self.dead_slots[slot.id] = f"quarantined: {reason}"
            worker = ctl.workers.get(slot.id)
            if worker is not None and worker.alive and worker.state is not State.STOPPING:
                # It finishes the test it is running; what it had queued comes back on its exit.
                ctl.feeder.shutdown_worker(worker)
            ctl.dispatcher.drop_slot(slot.id, permanently=True)
        self.report_orphans()
        if ctl.phase.name == "RUNNING":
            ctl.feeder.feed_idle()

    def requeue(self, jobs: list[Job]) -> None:
        """Tests a worker ended without running go to another worker; in a shared run, those
        claimed from the run's queue go back to the queue instead (the lease they were claimed
        under may be gone, and the queue gives them out again: run here too, they would run twice)."""
        ctl = self.ctl
        if ctl.shared is not None:
            jobs = ctl.shared.give_back_all(jobs)
        if jobs:
            ctl.dispatcher.requeue(jobs)

    def dead_devices(self) -> dict[str, str]:
        """Devices with no slot left, and why."""
        ctl = self.ctl
        out: dict[str, str] = {}
        for device in ctl.rack.devices:
            slots = [s for s in ctl.slots if s.device == device.name]
            if slots and all(s.id in self.dead_slots for s in slots):
                out[device.name] = self.dead_slots[slots[0].id]
        return out

    def report_orphans(self) -> None:
        """Tests no remaining device can run are errors; except, in each mode, the runs of a
        quarantined device: the summary counts them as not run, with the device's reason."""
        ctl = self.ctl
        quarantined = ctl.health.quarantined()
        for job in ctl.dispatcher.orphans():
            if ctl.shared is not None and ctl.shared.give_back(job):
                continue  # claimed from a shared run's queue: another host runs it
            if ctl.mode == "each" and len(job.eligible) == 1:
                name = next(iter(job.eligible))
                if name in quarantined:
                    ctl.not_run.setdefault(name, []).append(job.nodeid)
                    continue
            names = sorted(job.eligible)
            text = explain.no_device_left(names, self.dead_devices())
            device = names[0] if len(names) == 1 else None
            ctl.replay.synthetic(ctl.tests[job.nodeid], None, text, when="setup", device=device)


def kill_all(workers: list[WorkerHandle]) -> None:
    for worker in workers:
        with contextlib.suppress(ProcessLookupError):
            worker.kill()
