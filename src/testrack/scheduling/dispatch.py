"""Which test a free slot runs next.

Dispatch is a pull: a worker asks when it is down to its last queued test and
gets a chunk. The goal is the lower bound, max(total / slots, longest test): it
is reached when the long tests start first, the short ones fill the gaps, and no
worker pays for imports it did not need.

So each test carries an estimate (``estimates.estimate_durations``, from recorded
durations), and pending tests wait in queues by (module, eligible devices),
longest first, then in collection order. A free slot takes from ONE queue: the
one whose head is longest once the import the slot would need is charged
against it. With history that is the longest test anywhere (LPT); without it
every estimate is equal and the slot keeps to the modules it has imported, in
collection order, and moves on to the latest module when those are done (away
from the workers going through the earlier ones).

A module another worker has imported is split only when it pays: when its
pending work per eligible slot is at least the import a newcomer would pay, and
then the newcomer takes at most half the queue. Chunks are sized by time, not
count (guided self-scheduling: ``remaining_time / (divisor * slots)``), so a
long test travels alone, many tiny ones travel in few messages, and the tail is
handed out one test at a time. Each mode uses the same machinery with one job
per (test, device) and an eligibility of exactly that device.

Times are kept as integer nanoseconds, so that sums and comparisons are exact
and ties (all estimates equal, without history) are real ties.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from testrack.scheduling.estimates import DEFAULT_ESTIMATE, DEFAULT_IMPORT_COST


@dataclasses.dataclass(frozen=True)
class Slot:
    """One worker's place on a device."""

    id: str
    device: str


@dataclasses.dataclass(frozen=True)
class Job:
    """One run of one test; in each mode there is one job per device.

    ``estimate`` is in seconds; 0.0 means "none given" and counts as
    ``DEFAULT_ESTIMATE``, the same as a test in a suite with no history.
    ``guessed`` says the estimate is not this test's own history (a module or
    suite median, or the default), so the test may well be much longer.
    """

    nodeid: str
    module: str
    index: int
    eligible: frozenset[str]
    estimate: float = 0.0
    guessed: bool = False


#: The slow start's ceiling (guessed jobs in one chunk).
MAX_ALLOWANCE = 1 << 16


def _ns(seconds: float) -> int:
    return max(0, round(seconds * 1e9))


_DEFAULT_NS = _ns(DEFAULT_ESTIMATE)


def _weight(job: Job) -> int:
    """The job's estimate in nanoseconds, with "none given" read as the default."""
    return _ns(job.estimate) if job.estimate > 0 else _DEFAULT_NS


def _order(job: Job) -> tuple[int, int, str]:
    """Position in a queue: longest first, then collection order."""
    return (-_weight(job), job.index, job.nodeid)


@dataclasses.dataclass
class _Queue:
    """Pending jobs of one module with one eligibility, in ``_order``."""

    module: str
    eligible: frozenset[str]
    requeued: bool
    jobs: list[Job] = dataclasses.field(default_factory=list)
    ns: int = 0
    devices: tuple[str, ...] = ()  # the eligible devices, sorted: the last tie-break

    def __post_init__(self) -> None:
        self.devices = tuple(sorted(self.eligible))


# (module, eligible devices, requeued): requeued jobs wait apart, as their own queue,
# so that the rule about splitting modules never holds them back.
_Key = tuple[str, frozenset[str], bool]


class Dispatcher:
    """Pending jobs, grouped by (module, eligible devices), handed out longest first in chunks."""

    def __init__(
        self,
        slots: Sequence[Slot],
        divisor: int = 4,
        import_cost: Mapping[str, float] | None = None,
    ) -> None:
        self._slots = {s.id: s for s in slots}
        self._divisor = divisor
        self._import_ns = {module: _ns(s) for module, s in (import_cost or {}).items()}
        self._default_import_ns = _ns(DEFAULT_IMPORT_COST)
        self._queues: dict[_Key, _Queue] = {}
        self._imported: dict[str, set[str]] = {s.id: set() for s in slots}  # slot -> modules
        self._importers: dict[str, set[str]] = {}  # module -> slots
        self._slot_counts: dict[frozenset[str], int] = {}  # eligible devices -> slots there
        self._remaining = 0
        self._remaining_ns = 0
        #: Slow start: how many guessed jobs a slot's next chunk may hold (doubles per chunk).
        self._allowance: dict[str, int] = {}

    @property
    def remaining(self) -> int:
        """Jobs not handed out yet."""
        return self._remaining

    @property
    def remaining_time(self) -> float:
        """Estimated seconds of the jobs not handed out yet."""
        return self._remaining_ns / 1e9

    def add(self, jobs: Iterable[Job], home: str | None = None) -> None:
        """Queue ``jobs``; ``home`` is the slot that already imported their modules.

        A ``home`` that is not (or no longer) a slot imported nothing anyone can use.
        """
        for job in jobs:
            self._push(job, requeued=False)
            if home is not None:
                self.mark_imported(home, [job.module])

    def requeue(self, jobs: Iterable[Job]) -> None:
        """Put back jobs a worker never ran: open to any eligible slot, ahead of equal scores."""
        for job in jobs:
            self._push(job, requeued=True)

    def mark_imported(self, slot_id: str, modules: Iterable[str]) -> None:
        """Record that ``slot_id``'s worker has imported ``modules`` (unknown slots are ignored)."""
        imported = self._imported.get(slot_id)
        if imported is None:
            return
        for module in modules:
            imported.add(module)
            self._importers.setdefault(module, set()).add(slot_id)

    def has_work_for(self, slot_id: str) -> bool:
        """Would ``take(slot_id)`` hand out anything now?"""
        return self._choose(slot_id) is not None

    def drop_slot(self, slot_id: str, permanently: bool) -> None:
        """A slot's worker is gone: forget what it imported; with ``permanently``, the slot too.

        Its modules then count as imported by nobody (unless another slot did), so any
        slot may take them.
        """
        for module in self._imported.get(slot_id, set()):
            self._importers[module].discard(slot_id)
        if permanently:
            self._slots.pop(slot_id, None)
            self._imported.pop(slot_id, None)
            self._slot_counts.clear()
        elif slot_id in self._imported:
            self._imported[slot_id] = set()

    def orphans(self) -> list[Job]:
        """Jobs that no remaining slot can run (their devices have no slots left)."""
        devices = {s.device for s in self._slots.values()}
        out: list[Job] = []
        for key in [k for k, q in self._queues.items() if not (q.eligible & devices)]:
            queue = self._queues.pop(key)
            self._remaining -= len(queue.jobs)
            self._remaining_ns -= queue.ns
            out.extend(queue.jobs)
        return sorted(out, key=lambda j: j.index)

    def take(self, slot_id: str) -> list[Job]:
        """The next chunk for ``slot_id``, in collection order (empty when it may run nothing now)."""
        chosen = self._choose(slot_id)
        if chosen is None:
            return []
        queue, shared = chosen
        # Stop once the chunk holds its share of the remaining time: taken >= remaining / (d * n).
        share = self._divisor * max(1, len(self._slots))
        limit = max(1, len(queue.jobs) // 2) if shared else len(queue.jobs)
        # Tests whose duration is only guessed go out one, then two, four... per chunk:
        # a chunk of unknowns may hide a run of long tests, and many tiny tests soon
        # earn large chunks anyway.
        allowance = self._allowance.get(slot_id, 1)
        count = taken_ns = guessed = 0
        while count < limit:
            job = queue.jobs[count]
            if job.guessed:
                if guessed >= allowance:
                    break
                guessed += 1
            taken_ns += _weight(job)
            count += 1
            if taken_ns * share >= self._remaining_ns:
                break
        if guessed:
            self._allowance[slot_id] = min(allowance * 2, MAX_ALLOWANCE)
        taken = queue.jobs[:count]
        del queue.jobs[:count]
        queue.ns -= taken_ns
        if not queue.jobs:
            del self._queues[(queue.module, queue.eligible, queue.requeued)]
        self._remaining -= count
        self._remaining_ns -= taken_ns
        self.mark_imported(slot_id, [queue.module])
        return sorted(taken, key=lambda j: j.index)

    # ------------------------------------------------------------------ internals

    def _push(self, job: Job, requeued: bool) -> None:
        key = (job.module, job.eligible, requeued)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue(job.module, job.eligible, requeued)
        bisect.insort(queue.jobs, job, key=_order)
        queue.ns += _weight(job)
        self._remaining += 1
        self._remaining_ns += _weight(job)

    def _import_cost_ns(self, module: str) -> int:
        return self._import_ns.get(module, self._default_import_ns)

    def _choose(self, slot_id: str) -> tuple[_Queue, bool] | None:
        """The queue ``slot_id`` takes from next, and whether another slot is working through it.

        Best score (head estimate minus the import the slot would pay) first; on a tie,
        requeued jobs, then modules the slot imported (earliest first), then modules it
        would import (latest first, away from the workers going through earlier ones).
        """
        device = self._slots[slot_id].device
        best: tuple[tuple[int, bool, bool, int, tuple[str, ...]], _Queue, bool] | None = None
        for queue in self._queues.values():
            if not queue.jobs or device not in queue.eligible:
                continue
            importers = self._importers.get(queue.module, set())
            mine = slot_id in importers
            # Requeued jobs are a dead worker's leftovers: like a module nobody imported, never split.
            shared = (
                not mine
                and not queue.requeued
                and any(self._slots[o].device in queue.eligible for o in importers if o in self._slots)
            )
            cost = 0 if mine else self._import_cost_ns(queue.module)
            if shared and not self._split_pays(queue, cost):
                continue
            head = queue.jobs[0]
            rank = (
                -(_weight(head) - cost),
                not queue.requeued,
                not mine,
                head.index if mine else -head.index,
                queue.devices,
            )
            if best is None or rank < best[0]:
                best = (rank, queue, shared)
        return None if best is None else (best[1], best[2])

    def _split_pays(self, queue: _Queue, cost_ns: int) -> bool:
        """Is the queue's pending work per eligible slot at least the import a newcomer pays?"""
        count = self._slot_counts.get(queue.eligible)
        if count is None:
            count = sum(1 for s in self._slots.values() if s.device in queue.eligible)
            self._slot_counts[queue.eligible] = count
        return queue.ns >= cost_ns * count
