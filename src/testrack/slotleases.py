"""A run's slots on a shared rack: what the controller does as their leases come and go.

A slot's worker starts once its lease is granted, stops taking tests when the lease is lost
(and the lease is waited for again), gives the lease back between tests to a run that waits
with less device time (fair share), and lets it go as soon as nothing left in the run can
use the slot. Workers learn their lease's deadline from their board: past it, they ask
before the next test rather than touch a device another run may hold by now.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import pytest

from testrack import messages as m
from testrack.runloop import Phase
from testrack.scheduling import Slot
from testrack.share import ShareError
from testrack.trace import trace
from testrack.workers import State, WorkerHandle

if TYPE_CHECKING:
    from testrack.controller import Controller


class SlotLeases:
    """The controller's side of its slots' leases (:mod:`testrack.leasing` holds them)."""

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        #: Lines the leasing thread has for the terminal, shown from the run loop.
        self.said: list[str] = []
        #: Slots whose workers end to give their leases back to a run that waits (fairness), and
        #: how often each device was given back.
        self.giving_back: set[str] = set()
        self.gave_back: dict[str, int] = {}
        #: Slots whose lease went back because nothing left in the run could use them: another
        #: run may have the device meanwhile; work that comes back for it (a retry) waits again.
        self.released_idle: dict[str, Slot] = {}

    def wait_for_a_first_lease(self) -> None:
        """No slot was free: collecting needs a worker, so wait here for the first grant."""
        ctl = self.ctl
        assert ctl.leasing is not None
        while not ctl.workers:
            ctl.loop.pump(0.5)
            if not ctl.workers and len(ctl.leasing.refused) == len(ctl.slots):
                self.say()
                raise pytest.UsageError(
                    "no device of the rack could be leased: "
                    + "; ".join(dict.fromkeys(ctl.leasing.refused.values()))
                )

    def on_leases(self) -> None:
        """Grants that arrived start their slots' workers; lost leases stop theirs."""
        ctl = self.ctl
        leasing = ctl.leasing
        assert leasing is not None
        self.say()
        for slot, refused in leasing.granted():
            if refused is not None:
                ctl.problems.append(f"{slot.id} ({slot.device}) was not leased: {refused}")
                ctl.faults.dead_slots[slot.id] = f"not leased: {refused}"
                if ctl.phase is Phase.RUNNING:
                    ctl.dispatcher.drop_slot(slot.id, permanently=True)
                    ctl.faults.report_orphans()
                    if ctl.gangs.pending:  # a test on several devices may have no set left now
                        ctl.gangs.start()
                        ctl.feeder.feed_idle()
                continue
            if ctl.phase is Phase.STOPPING:
                leasing.release(slot.id)
                continue
            trace(f"controller: {slot.id} leased")
            worker = ctl.start_worker(slot, fresh=True)
            ctl.health.check(slot.device)  # a device another run used is checked again
            ctl.give_imports(worker, ctl.planned_for(worker))
        for slot_id in leasing.lost():
            self.lease_lost(slot_id)

    def lease_lost(self, slot_id: str) -> None:
        """The slot is no longer this run's: its worker takes no more tests, and the lease is
        waited for again (what the worker held goes back to the queue when it ends)."""
        ctl = self.ctl
        assert ctl.leasing is not None
        slot = next(s for s in ctl.slots if s.id == slot_id)
        ctl.notes.append(f"{slot_id} ({slot.device}) lost its lease mid-run and waited for it again")
        worker = ctl.workers.get(slot_id)
        if worker is not None and worker.alive and not worker.winding_down:
            ctl.feeder.shutdown_worker(worker)
        if ctl.phase is not Phase.STOPPING:
            ctl.leasing.wait_for(slot)

    def quarantine_in_share(self, device: str, reason: str) -> None:
        ctl = self.ctl
        assert ctl.leasing is not None
        try:
            ctl.leasing.quarantine(device, reason)
        except ShareError as exc:
            ctl.problems.append(f"could not tell the share that {device} is quarantined: {exc}")

    def passed_check(self, device: str) -> None:
        ctl = self.ctl
        assert ctl.leasing is not None
        try:
            if ctl.leasing.passed_check(device):
                ctl.notes.append(f"{device} passed its check: its quarantine in the share is lifted")
        except ShareError as exc:
            ctl.problems.append(f"could not lift {device}'s quarantine in the share: {exc}")

    def say(self) -> None:
        if not self.said:
            return
        reporter = self.ctl.config.pluginmanager.get_plugin("terminalreporter")
        lines, self.said[:] = list(self.said), []
        for line in lines:
            if reporter is not None:
                reporter.write_line(line)
            else:
                print(line, file=sys.stderr)

    def allow_starts(self, worker: WorkerHandle) -> None:
        """Write the slot's lease deadline on its worker's board: past it (this run was frozen or
        cut off), the worker asks before its next test (``MayIStart``) instead of touching a
        device that may be another run's by now."""
        if self.ctl.leasing is not None and (deadline := self.ctl.leasing.deadline(worker.slot.id)):
            worker.board.allow_until(deadline)

    def on_may_i_start(self, worker: WorkerHandle) -> None:
        """A worker found its lease's deadline passed: confirm the lease with the share, or stop
        the worker (what it held goes back to the queue)."""
        ctl = self.ctl
        if worker.state is State.STOPPING or not worker.alive:
            return  # Shutdown is on its way (a worker told to Finish still runs what it holds)
        assert ctl.leasing is not None
        if not ctl.leasing.holds(worker.slot.id):
            self.lease_lost(worker.slot.id)
            return
        self.allow_starts(worker)
        ctl.loop.send(worker, m.LeaseHeld())

    def release_idle_lease(self, slot: Slot) -> None:
        """Nothing left in this run can use the slot: its lease goes back now, not at the run's
        end, so another run waiting for the device need not wait for all of this one."""
        ctl = self.ctl
        if (
            ctl.leasing is None
            or ctl.shared is not None  # a shared run's hosts claim more from the queue
            or ctl.phase is not Phase.RUNNING
            or ctl.gangs.active
            or slot.id in self.giving_back
            or ((worker := ctl.workers.get(slot.id)) is not None and worker.alive)
            or not ctl.leasing.holds(slot.id)
            or ctl.dispatcher.wants(slot.id)  # last: it walks the queues (swept every 0.5 s)
        ):
            return
        trace(f"controller: {slot.id} has nothing left here: its lease goes back")
        ctl.leasing.release(slot.id)
        self.released_idle[slot.id] = slot

    def lease_again(self, slot_ids: set[str]) -> None:
        """Work came back for slots whose lease went back idle: queue for them again."""
        ctl = self.ctl
        for slot_id in slot_ids & self.released_idle.keys():
            if ctl.leasing is not None and ctl.phase is Phase.RUNNING:
                ctl.leasing.wait_for(self.released_idle.pop(slot_id))

    def give_back(self, worker: WorkerHandle) -> None:
        """Another run waits for this slot and has had less of it: the worker ends after the
        tests it holds, then the lease goes back and this run waits for it again."""
        slot_id = worker.slot.id
        trace(f"controller: {slot_id} gives its lease back")
        self.giving_back.add(slot_id)
        self.gave_back[worker.device.name] = self.gave_back.get(worker.device.name, 0) + 1
        self.ctl.feeder.finish_worker(worker)

    def after_give_back(self, slot: Slot) -> None:
        """The slot's worker ended: release the lease and queue for it again (fairly)."""
        ctl = self.ctl
        assert ctl.leasing is not None
        self.giving_back.discard(slot.id)
        ctl.leasing.release(slot.id)
        if ctl.phase is Phase.RUNNING and (ctl.dispatcher.remaining or ctl.shared is not None):
            ctl.leasing.wait_for(slot)
