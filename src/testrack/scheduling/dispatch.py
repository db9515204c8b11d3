"""Which test a free slot runs next.

Dispatch is a pull: a worker asks when it is down to its last queued test and
gets a chunk. The chunk shrinks as the queue drains (guided self-scheduling:
``remaining / (divisor * slots)``), so many tiny tests travel in few messages
while the tail is handed out one test at a time and no slot idles while another
holds a backlog.

Tests remember the worker that imported their module (their *home*). A slot
first takes its own home tests in collection order, then tests nobody has
imported yet, and only then steals from the back of the fullest other home
queue, keeping whole modules together so that stealing costs as few imports as
possible. Each mode uses the same machinery with one job per (test, device)
and an eligibility of exactly that device.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections import deque
from collections.abc import Iterable, Sequence


@dataclasses.dataclass(frozen=True)
class Slot:
    """One worker's place on a device."""

    id: str
    device: str


@dataclasses.dataclass(frozen=True)
class Job:
    """One run of one test; in each mode there is one job per device."""

    nodeid: str
    module: str
    index: int
    eligible: frozenset[str]


_Key = tuple[str | None, frozenset[str]]


class Dispatcher:
    """Pending jobs, grouped by (home slot, eligible devices), handed out in chunks."""

    def __init__(self, slots: Sequence[Slot], divisor: int = 4) -> None:
        self._slots = {s.id: s for s in slots}
        self._divisor = divisor
        self._queues: dict[_Key, deque[Job]] = {}
        self._remaining = 0

    @property
    def remaining(self) -> int:
        return self._remaining

    def add(self, jobs: Iterable[Job], home: str | None = None) -> None:
        """Queue ``jobs`` (in order); ``home`` is the slot that already imported them."""
        home_device = self._slots[home].device if home is not None else None
        for job in jobs:
            owner = home if home_device in job.eligible else None
            queue = self._queues.setdefault((owner, job.eligible), deque())
            if queue and queue[-1].index > job.index:
                # Another home's batch already queued later tests here: keep collection order.
                queue.insert(bisect.bisect(queue, job.index, key=lambda j: j.index), job)
            else:
                queue.append(job)
            self._remaining += 1

    def requeue(self, jobs: Iterable[Job]) -> None:
        """Put jobs back at the front (their worker died before running them)."""
        for job in reversed(list(jobs)):
            self._queues.setdefault((None, job.eligible), deque()).appendleft(job)
            self._remaining += 1

    def has_work_for(self, slot_id: str) -> bool:
        device = self._slots[slot_id].device
        return any(q and device in eligible for (_, eligible), q in self._queues.items())

    def drop_slot(self, slot_id: str, permanently: bool) -> None:
        """A slot's worker is gone: its home jobs become homeless; maybe the slot too."""
        if permanently:
            self._slots.pop(slot_id, None)
        for key in [k for k in self._queues if k[0] == slot_id]:
            queue = self._queues.pop(key)
            self._queues.setdefault((None, key[1]), deque()).extend(queue)

    def orphans(self) -> list[Job]:
        """Jobs that no remaining slot can run (their devices have no slots left)."""
        devices = {s.device for s in self._slots.values()}
        out: list[Job] = []
        for key in [k for k in self._queues if not (k[1] & devices)]:
            queue = self._queues.pop(key)
            self._remaining -= len(queue)
            out.extend(queue)
        return sorted(out, key=lambda j: j.index)

    def take(self, slot_id: str) -> list[Job]:
        """The next chunk for ``slot_id`` (empty when nothing it can run is pending)."""
        if self._remaining == 0:
            return []
        slot = self._slots[slot_id]
        chunk = max(1, math.ceil(self._remaining / (self._divisor * max(1, len(self._slots)))))
        mine = [
            (home is None, q)
            for (home, eligible), q in self._queues.items()
            if q and home in (slot_id, None) and slot.device in eligible
        ]
        if mine:
            # Own queues first, then homeless ones; each group front first, in collection order.
            mine.sort(key=lambda hq: (hq[0], hq[1][0].index))
            taken: list[Job] = []
            for _, queue in mine:
                while queue and len(taken) < chunk:
                    taken.append(queue.popleft())
                if len(taken) >= chunk:
                    break
            self._remaining -= len(taken)
            return sorted(taken, key=lambda j: j.index)
        victims = [
            q
            for (home, eligible), q in self._queues.items()
            if q and home not in (slot_id, None) and slot.device in eligible
        ]
        if not victims:
            return []
        # The fullest; on a tie the one holding the latest test, whatever the order of add().
        victim = max(victims, key=lambda q: (len(q), q[-1].index))
        # Steal from the back, one module at a time, so the owner keeps its order.
        module = victim[-1].module
        stolen: list[Job] = []
        limit = min(chunk, max(1, len(victim) // 2))  # at most half the victim's queue
        while victim and len(stolen) < limit and victim[-1].module == module:
            stolen.append(victim.pop())
        self._remaining -= len(stolen)
        return sorted(stolen, key=lambda j: j.index)
