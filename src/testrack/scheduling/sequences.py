"""Fixed sequences: each slot runs exactly the tests it was given, in the given order.

Random order (``--rack-random``, ``--rack-seed``) and replay (``--rack-replay``) decide up
front which tests each slot runs and in what order (:mod:`testrack.ordering`): that is what
makes an order reproducible, and why no dynamic balancing happens here. The controller uses
this exactly as it uses :class:`~testrack.scheduling.dispatch.Dispatcher`; the differences:

- a slot takes the next tests of its own sequence, never another slot's;
- tests a dead worker never ran (or whose results died with it) go back to the front of its
  slot's sequence, for the worker that replaces it;
- a slot given up for good hands what is left of its sequence to the next slot of the same
  device, if the device has one; otherwise those tests cannot run (``orphans``).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable, Mapping, Sequence

from testrack.scheduling.dispatch import Job, Slot, _weight


@dataclasses.dataclass
class _Lane:
    device: str
    pending: deque[Job] = dataclasses.field(default_factory=deque)
    imported: set[str] = dataclasses.field(default_factory=set)
    live: bool = True


class SequenceDispatcher:
    """Hands each slot its own sequence, in order, in chunks sized by time."""

    def __init__(
        self,
        slots: Sequence[Slot],
        sequences: Mapping[str, Sequence[Job]],
        divisor: int = 4,
        matching: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self._divisor = divisor
        #: load mode: every device a test may run on (a sequence's job names its slot's only)
        self._matching = dict(matching or {})
        self._lanes: dict[str, _Lane] = {s.id: _Lane(s.device) for s in slots}
        self._owner: dict[tuple[str, frozenset[str]], str] = {}
        self._orphans: list[Job] = []
        self._remaining = 0
        self._remaining_ns = 0
        for slot_id, jobs in sequences.items():
            lane = self._lanes[slot_id]
            for job in jobs:
                lane.pending.append(job)
                self._owner[(job.nodeid, job.eligible)] = slot_id
                self._count(job, +1)

    @property
    def remaining(self) -> int:
        return self._remaining

    @property
    def remaining_time(self) -> float:
        return self._remaining_ns / 1e9

    def remaining_by_device(self) -> dict[str, int]:
        """Jobs not handed out yet, by the device of the slot whose sequence holds them."""
        counts: dict[str, int] = {}
        for lane in self._lanes.values():
            counts[lane.device] = counts.get(lane.device, 0) + len(lane.pending)
        return counts

    @property
    def lazy(self) -> bool:
        return False

    def slot_ids(self) -> list[str]:
        return list(self._lanes)

    def slots_for(self, job: Job) -> list[str]:
        """The slot whose sequence holds ``job``: only its worker may run it."""
        owner = self._owner.get((job.nodeid, job.eligible))
        return [owner] if owner in self._lanes else []

    def devices_for(self, job: Job) -> frozenset[str]:
        """Every device ``job``'s test may run on: where a rerun or a retry may go."""
        return self._matching.get(job.nodeid, job.eligible)

    def add(self, jobs: Iterable[Job], home: str | None = None) -> None:
        raise TypeError("fixed sequences are given whole, when the dispatcher is made")

    def requeue(self, jobs: Iterable[Job]) -> None:
        """Back to the front of their slot's sequence, in their order."""
        by_slot: dict[str, list[Job]] = {}
        for job in jobs:
            owner = self._owner.get((job.nodeid, job.eligible))
            if owner is None or owner not in self._lanes:
                owner = self._elsewhere(job)
                if owner is None:
                    self._orphans.append(job)
                    continue
                self._owner[(job.nodeid, job.eligible)] = owner
            by_slot.setdefault(owner, []).append(job)
            self._count(job, +1)
        for slot_id, back in by_slot.items():
            self._lanes[slot_id].pending.extendleft(reversed(back))

    def _elsewhere(self, job: Job) -> str | None:
        """A rerun or retry sent to other devices (its ``eligible`` changed): the slot of those
        devices with the least left to do, live ones first. It is not part of the seeded
        sequences, so where it goes does not change what they reproduce."""
        lanes = [(s, lane) for s, lane in self._lanes.items() if lane.device in job.eligible]
        if not lanes:
            return None
        return min(lanes, key=lambda sl: (not sl[1].live, sum(_weight(j) for j in sl[1].pending)))[0]

    def mark_imported(self, slot_id: str, modules: Iterable[str]) -> None:
        lane = self._lanes.get(slot_id)
        if lane is not None:
            lane.imported.update(modules)

    def imported_by(self, slot_id: str) -> set[str]:
        lane = self._lanes.get(slot_id)
        return set(lane.imported) if lane else set()

    def modules_of(self, slot_id: str) -> list[str]:
        """The files a slot's sequence needs, in the order it first needs them."""
        lane = self._lanes.get(slot_id)
        return list(dict.fromkeys(job.module for job in lane.pending)) if lane else []

    def retire(self, slot_id: str) -> None:
        lane = self._lanes.get(slot_id)
        if lane is not None:
            lane.live = False

    def open_slot(self, slot_id: str) -> None:
        lane = self._lanes.get(slot_id)
        if lane is not None:
            lane.live = True
            lane.imported.clear()

    def drop_slot(self, slot_id: str, permanently: bool) -> None:
        lane = self._lanes.get(slot_id)
        if lane is None:
            return
        lane.live = False
        if not permanently:
            return
        del self._lanes[slot_id]
        heir = next((s for s, other in self._lanes.items() if other.device == lane.device), None)
        for job in lane.pending:
            if heir is None:
                self._count(job, -1)
                self._orphans.append(job)
            else:
                self._owner[(job.nodeid, job.eligible)] = heir
        if heir is not None:
            self._lanes[heir].pending.extend(lane.pending)

    def wants(self, slot_id: str) -> bool:
        """Is any job left in this slot's sequence, or in another's that this slot's device
        could take over?"""
        lane = self._lanes.get(slot_id)
        return lane is not None and any(
            lane.device in self.devices_for(job) for other in self._lanes.values() for job in other.pending
        )

    def has_work_for(self, slot_id: str) -> bool:
        lane = self._lanes.get(slot_id)
        return bool(lane and lane.live and lane.pending)

    def take(self, slot_id: str) -> list[Job]:
        lane = self._lanes.get(slot_id)
        if lane is None or not lane.live or not lane.pending:
            return []
        share = self._divisor * max(1, len(self._lanes))
        taken: list[Job] = []
        taken_ns = 0
        while lane.pending:
            job = lane.pending.popleft()
            taken.append(job)
            taken_ns += _weight(job)
            self._count(job, -1)
            if taken_ns * share >= self._remaining_ns + taken_ns:
                break
        return taken

    def orphans(self) -> list[Job]:
        out, self._orphans = self._orphans, []
        return sorted(out, key=lambda j: j.index)

    def unreachable(self) -> list[Job]:
        """Pending tests of slots with no live worker: a fresh worker there runs them."""
        return [job for lane in self._lanes.values() if not lane.live for job in lane.pending]

    def _count(self, job: Job, sign: int) -> None:
        self._remaining += sign
        self._remaining_ns += sign * _weight(job)
