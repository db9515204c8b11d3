"""Tests on several devices at once, in the run loop.

A test marked ``@pytest.mark.devices(...)`` runs in the worker of its first device, with all
its devices in its ``devices`` fixture, while the workers of its other devices run nothing:
their slots are lent to it. All the slots are granted at once or none
(:func:`testrack.scheduling.allocation.allocate`), so nothing is held while waiting for the
rest and nothing deadlocks; the first such test that cannot start reserves the slots it will
use, which then take no new work until it starts, so it is not starved by single-device tests.

A worker that holds its last test waits for an answer before it can run it, so it is never
kept waiting here: only idle workers (nothing queued) are lent, reserved or asked to wait for
a multi-device test. A busy worker that asks instead gets the next such test queued behind
what it holds (:meth:`Gangs.follow`), on its own device and devices that are idle or already
lent to it: consecutive tests on several devices then run in one worker, with its module and
session fixtures kept as pytest keeps them, instead of a fresh worker for each.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from testrack import explain
from testrack.health import DeviceState
from testrack.planning import Gang
from testrack.scheduling import Job
from testrack.scheduling.allocation import Pending, Reservation, SlotState, allocate
from testrack.scheduling.requests import perfect_matching
from testrack.trace import trace
from testrack.workers import State, WorkerLabel

#: What the allocator is told a slot leased to another run has left: unknown, so long that a
#: test on several devices takes free slots first and holds these only when nothing else fits.
NOT_LEASED = 24 * 3600.0

if TYPE_CHECKING:
    from testrack.controller import Controller
    from testrack.workers import WorkerHandle


@dataclasses.dataclass
class GangRun:
    gang: Gang
    slots: tuple[str, ...]
    devices: tuple[str, ...]
    label: WorkerLabel  #: on its reports: the terminal shows ``[phone-1+phone-2]``


class Gangs:
    """Pending and running multi-device tests, and the slots lent to or kept for them."""

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self.pending: list[Gang] = []
        self.running: dict[str, GangRun] = {}  # by the primary slot's id
        self.queued: dict[str, GangRun] = {}  # by the primary slot's id: its worker runs it next
        self.lent: dict[str, str] = {}  # slot id -> primary slot id of the test it is lent to
        self.reservation: Reservation | None = None

    @property
    def active(self) -> bool:
        return bool(self.pending or self.running or self.queued)

    def run_of(self, slot_id: str, nodeid: str) -> GangRun | None:
        """The run of ``nodeid`` on several devices in this slot's worker (running, or queued
        next: its reports may arrive in the batch that ends the one before), if it is one."""
        if not (self.running or self.queued):
            return None  # the common case, on the per-result path
        for runs in (self.running, self.queued):
            run = runs.get(slot_id)
            if run is not None and run.gang.nodeid == nodeid:
                return run
        return None

    def add(self, gangs: list[Gang]) -> None:
        self.pending.extend(sorted(gangs, key=lambda g: g.index))

    def modules(self, device: str) -> list[str]:
        """Files a worker on ``device`` may run a multi-device test of (as its first device)."""
        return list(dict.fromkeys(g.module for g in self.pending if device in g.positions[0]))

    def devices_of(self, slot_id: str) -> tuple[str, ...]:
        run = self.running.get(slot_id)
        return run.devices if run else ()

    def holds(self, worker: WorkerHandle) -> bool:
        """Must this idle worker wait (its slot lent, or kept for the first waiting test)?"""
        slot = worker.slot.id
        return slot in self.lent or (self.reservation is not None and slot in self.reservation.slots)

    def may_need(self, worker: WorkerHandle) -> bool:
        """Could a waiting multi-device test use this worker's device?"""
        device = worker.device.name
        return any(device in position for gang in self.pending for position in gang.positions)

    def start(self) -> None:
        """Start every multi-device test whose devices are all free now (all or none)."""
        while self.pending and self._start_once():
            pass  # a shared run's queue gave tests to other hosts: decide again without them

    def _start_once(self) -> bool:
        """One allocation decision; True when a granted test turned out to be another host's."""
        ctl = self.ctl
        states: list[SlotState] = []
        idle: dict[str, WorkerHandle | None] = {}
        for slot in ctl.slots:
            if slot.id in ctl.faults.dead_slots or ctl.health.state(slot.device) is DeviceState.QUARANTINED:
                continue
            worker = ctl.workers.get(slot.id)
            if ctl.leasing is not None and not ctl.leasing.holds(slot.id):
                # Another run has it (or had it): free only when its lease comes, so never a
                # slot to hold the others for; queue for it again if this run gave it back.
                ctl.slot_leases.lease_again({slot.id})
                states.append(SlotState(slot.id, slot.device, busy=True, remaining=NOT_LEASED))
                continue
            if worker is None or not worker.alive:
                idle[slot.id] = None  # a fresh worker can be started there
                states.append(SlotState(slot.id, slot.device))
                continue
            free = self._idle(worker)
            if free:
                idle[slot.id] = worker
            remaining = sum(j.estimate for j in worker.assigned)
            states.append(SlotState(slot.id, slot.device, busy=not free, remaining=remaining))
        by_key = {gang.key: gang for gang in self.pending}
        decision = allocate(
            states,
            [Pending(g.key, g.positions, g.estimate, g.guessed) for g in self.pending],
            held=self.reservation,
        )
        self.reservation = decision.reservation
        others = False
        for key in decision.impossible:
            gang = by_key[key]
            self.pending.remove(gang)
            if ctl.shared is not None:  # this host's devices cannot take it now; another host's may
                ctl.shared.gangs_elsewhere.append(gang)
                others = True
                continue
            self._cannot_run(gang)
        for grant in decision.grants:
            gang = by_key[grant.request]
            missing = [s for s in grant.slots if idle.get(s) is None]
            if missing:
                for slot_id in missing:  # workers to lend first; the next decision grants it
                    slot = next(s for s in ctl.slots if s.id == slot_id)
                    if ctl.workers.get(slot_id) is None or not ctl.workers[slot_id].alive:
                        fresh = ctl.start_worker(slot, fresh=True)
                        modules = [gang.module] if slot_id == grant.slots[0] else []
                        if ctl.shared is not None:  # it may claim any test of the run later
                            modules = ctl.planned_for(fresh)
                        ctl.give_imports(fresh, modules)
                continue
            if ctl.shared is not None:  # a shared run: the test is this host's once claimed
                claimed = ctl.shared.claim_gang(gang, grant.slots, grant.devices)
                if claimed is None:
                    continue  # not now (a lease went, the share is away): the next decision
                if not claimed:
                    self.pending.remove(gang)  # another host runs it, or ran it
                    others = True
                    continue
            self.pending.remove(gang)
            primary = idle[grant.slots[0]]
            assert primary is not None
            self.running[primary.slot.id] = self._grant(gang, grant.slots, grant.devices)
            for slot_id in grant.slots[1:]:
                self.lent[slot_id] = primary.slot.id
            self._assign(primary, gang, grant.devices)
        return others

    def _grant(self, gang: Gang, slots: tuple[str, ...], devices: tuple[str, ...]) -> GangRun:
        labels = [self.ctl.launcher.labels[slot_id] for slot_id in slots]
        label = WorkerLabel.joint(labels, [self.ctl.devices[name] for name in devices])
        return GangRun(gang, slots, devices, label)

    def _assign(self, worker: WorkerHandle, gang: Gang, devices: tuple[str, ...]) -> None:
        job = Job(gang.nodeid, gang.module, gang.index, frozenset([devices[0]]), gang.estimate, gang.guessed)
        self.ctl.feeder.assign_gang(worker, job, [self.ctl.devices[name] for name in devices])

    def follow(self, worker: WorkerHandle) -> bool:
        """A busy worker asks what follows its last test: queue the first waiting test on
        several devices behind it when this worker's device can take its first position and
        the others are idle now or lent to this worker's running test. The slots it needs are
        lent from now on (they would wait for this worker's test anyway: none has other work).
        False when none fits, or this worker already has one queued."""
        ctl = self.ctl
        primary = worker.slot.id
        if not worker.assigned or primary in self.queued or primary in self.lent:
            return False
        held = {job.nodeid for job in worker.assigned}
        pool: dict[str, str] = {worker.device.name: primary}  # device -> slot
        current = self.running.get(primary)
        if current is None and (self.reservation is None or primary not in self.reservation.slots):
            return False  # behind single-device tests only where the allocator waits for them anyway
        for slot_id, device in zip(current.slots, current.devices, strict=True) if current else ():
            pool.setdefault(device, slot_id)
        for other in ctl.alive_workers():  # kept for a reservation: only its test is a candidate
            if other is not worker and self._idle(other):
                pool.setdefault(other.device.name, other.slot.id)
        pool = {d: s for d, s in pool.items() if ctl.health.usable(d) and s not in ctl.faults.dead_slots}
        if worker.device.name not in pool:
            return False
        waiting = self.pending
        if self.reservation is not None:  # the first test that waits keeps its place
            waiting = [g for g in self.pending if g.key == self.reservation.request]
        for gang in waiting:
            if gang.nodeid in held or worker.device.name not in gang.positions[0]:
                continue
            candidates = [[worker.device.name], *([d for d in pool if d in p] for p in gang.positions[1:])]
            taken, _ = perfect_matching(candidates)
            if None in taken:
                continue
            devices = tuple(d for d in taken if d is not None)
            slots = tuple(pool[d] for d in devices)
            if ctl.shared is not None:
                claimed = ctl.shared.claim_gang(gang, slots, devices)
                if claimed is None:
                    return False
                if not claimed:
                    self.pending.remove(gang)  # another host runs it, or ran it
                    continue
            self.pending.remove(gang)
            if self.reservation is not None and self.reservation.request == gang.key:
                self.reservation = None
            self.queued[primary] = self._grant(gang, slots, devices)
            for slot_id in slots[1:]:
                self.lent[slot_id] = primary
            trace(f"controller: {gang.nodeid} queued on {'+'.join(devices)} after {primary}'s test")
            self._assign(worker, gang, devices)
            return True
        return False

    def waits_behind(self, worker: WorkerHandle) -> bool:
        """Is a test on several devices queued in this worker behind a test still to end?"""
        following = self.queued.get(worker.slot.id)
        if following is None:
            return False
        if worker.assigned and worker.assigned[0].nodeid == following.gang.nodeid:
            self._release(worker.slot.id)  # it is the next (the one before it ended)
            self.running[worker.slot.id] = self.queued.pop(worker.slot.id)
            return False
        return True

    def finished(self, worker: WorkerHandle, nodeid: str) -> None:
        """The worker of a multi-device test reported it: its other slots are free again (but
        those of the one queued next in it). ``nodeid`` is the test that just left its queue."""
        primary = worker.slot.id
        run = self.running.get(primary)
        if run is not None and run.gang.nodeid == nodeid:
            self._release(primary)  # the slots of the one queued next stay lent
        following = self.queued.get(primary)
        if following is not None and worker.assigned and worker.assigned[0].nodeid == following.gang.nodeid:
            self.running[primary] = self.queued.pop(primary)

    def take_back(self, worker: WorkerHandle, jobs: list[Job]) -> list[Job]:
        """A worker ended holding ``jobs``: tests on several devices among them wait again,
        whole (never as a test of its one device); the others are returned."""
        runs = [r for r in (self.running.get(worker.slot.id), self.queued.get(worker.slot.id)) if r]
        rest = []
        for job in jobs:
            run = next((r for r in runs if r.gang.nodeid == job.nodeid), None)
            if run is None:
                rest.append(job)
            elif run.gang not in self.pending:
                self.retry(run)
        return rest

    def again(self, worker: WorkerHandle, nodeid: str) -> tuple[str, ...]:
        """The multi-device test this worker ran raised DeviceError: it waits again, whole (all
        its devices or none, like the first time); its devices, for their checks and the note."""
        run = self.running.get(worker.slot.id)
        if run is None or run.gang.nodeid != nodeid:
            return ()
        self._release(worker.slot.id)
        self.retry(run)
        return run.devices

    def retry(self, run: GangRun) -> None:
        """Run the test again, on any set of devices that fits it, when one is free."""
        self.pending.append(run.gang)
        self.pending.sort(key=lambda g: g.index)

    def worker_gone(self, worker: WorkerHandle) -> None:
        """The first device's worker ended: the devices lent to its tests on several devices
        are free again (what it left unrun was given to :meth:`take_back` first)."""
        self.queued.pop(worker.slot.id, None)
        self._release(worker.slot.id)

    def _release(self, primary: str) -> None:
        self.running.pop(primary, None)
        for slot_id in [s for s, p in self.lent.items() if p == primary]:
            del self.lent[slot_id]
        following = self.queued.get(primary)
        for slot_id in following.slots[1:] if following is not None else ():
            self.lent[slot_id] = primary  # still lent: to the test queued next in this worker

    def _idle(self, worker: WorkerHandle) -> bool:
        ctl = self.ctl
        return (
            worker.state is State.READY
            and worker.wants_work
            and not worker.assigned
            and not worker.winding_down
            and worker.slot.id not in self.lent
            and ctl.health.usable(worker.device.name)
        )

    def _cannot_run(self, gang: Gang) -> None:
        ctl = self.ctl
        info = ctl.tests.get(gang.nodeid)
        if info is None:
            return
        names = sorted({name for position in gang.positions for name in position})
        text = explain.no_set_left(names, ctl.faults.dead_devices(), len(gang.positions))
        ctl.replay.synthetic(info, None, text, when="setup", device=None)
