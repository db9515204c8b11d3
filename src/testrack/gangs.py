"""Tests on several devices at once, in the run loop.

A test marked ``@pytest.mark.devices(...)`` runs in the worker of its first device, with all
its devices in its ``devices`` fixture, while the workers of its other devices run nothing:
their slots are lent to it. All the slots are granted at once or none
(:func:`testrack.scheduling.allocation.allocate`), so nothing is held while waiting for the
rest and nothing deadlocks; the first such test that cannot start reserves the slots it will
use, which then take no new work until it starts, so it is not starved by single-device tests.

A worker that holds its last test waits for an answer before it can run it, so it is never
kept waiting here: only idle workers (nothing queued) are lent, reserved or asked to wait for
a multi-device test; a busy one on a reserved slot is told to finish, and a fresh worker is
started on it when the test needs it.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from testrack import explain
from testrack.health import DeviceState
from testrack.planning import Gang
from testrack.scheduling import Job
from testrack.scheduling.allocation import Pending, Reservation, SlotState, allocate
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
        self.lent: dict[str, str] = {}  # slot id -> primary slot id of the test it is lent to
        self.reservation: Reservation | None = None

    @property
    def active(self) -> bool:
        return bool(self.pending or self.running)

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
                ctl.lease_again({slot.id})
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
            labels = [ctl.launcher.labels[slot_id] for slot_id in grant.slots]
            label = WorkerLabel.joint(labels, [ctl.devices[name] for name in grant.devices])
            run = GangRun(gang, grant.slots, grant.devices, label)
            self.running[primary.slot.id] = run
            for slot_id in grant.slots[1:]:
                self.lent[slot_id] = primary.slot.id
            job = Job(
                gang.nodeid,
                gang.module,
                gang.index,
                frozenset([grant.devices[0]]),
                gang.estimate,
                gang.guessed,
            )
            ctl.assign_gang(primary, job, [ctl.devices[name] for name in grant.devices])
        return others

    def finished(self, worker: WorkerHandle, nodeid: str) -> None:
        """The worker of a multi-device test reported it: its other slots are free again."""
        run = self.running.get(worker.slot.id)
        if run is not None and run.gang.nodeid == nodeid:
            self._release(worker.slot.id)

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

    def worker_gone(self, worker: WorkerHandle) -> GangRun | None:
        """The first device's worker died: its test on several devices, whose others are free again."""
        run = self.running.get(worker.slot.id)
        if run is None:
            return None
        self._release(worker.slot.id)
        return run

    def _release(self, primary: str) -> None:
        self.running.pop(primary, None)
        for slot_id in [s for s, p in self.lent.items() if p == primary]:
            del self.lent[slot_id]

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
