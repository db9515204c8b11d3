"""Which test a free slot runs next.

Dispatch is a pull: a worker asks when it is down to its last queued tests and
gets a chunk. The goal is the lower bound, max(total / slots, longest test): it
is approached when the big work starts first, the short tests fill the gaps, and
no worker pays for imports it did not need.

Plain pytest is the reference for what a worker may see, so the order each slot
gets keeps fixture lifetimes exactly as pytest has them:

- within a module a slot takes tests in collection order (its cursor there only
  moves forward), so class fixtures and module-scoped parametrized fixtures are set
  up once per worker; several slots may share a module, each taking the next tests
  at the front;
- a slot that has left a module, a package or a directory never enters it again,
  since its module and package fixtures were torn down when it left;
- a slot runs only modules it imported before its first test (``mark_imported``,
  decided by the import plan), unless the dispatcher is ``lazy``, where any slot may
  take any module and pays its import cost.

So pending tests wait in queues by (module, eligible devices), in collection order.
A free slot keeps to its current module while it has work there; otherwise it
enters, among the modules that leave the fewest of its packages and directories (a
sibling before a cousin, as plain pytest's order goes), the one with the most
estimated work per slot already in it (so the big modules, and with history the long
tests in them, start first and are shared), less the import it would pay. Chunks
are sized by time (guided self-scheduling: ``remaining_time / (divisor * slots)``),
so a long test travels alone, many tiny ones travel in few messages, and the tail is
handed out one test at a time; a slot entering a module that others work in takes
at most half of what is left there.

Times are integer nanoseconds, so sums and comparisons are exact and ties real.
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
    ``DEFAULT_ESTIMATE``. ``guessed`` says the estimate is not this test's own
    history (a module or suite median, or the default). ``scopes`` are the node ids
    of the collectors that hold its module, outermost first (see
    :class:`testrack.messages.CollectedUnit`). ``queue`` groups jobs that are handed
    out in order, front to back; by default a job's module, but when an ordering
    option splits a module (``--ff``: failed tests first), each contiguous run of it.
    """

    nodeid: str
    module: str
    index: int
    eligible: frozenset[str]
    estimate: float = 0.0
    guessed: bool = False
    scopes: tuple[str, ...] = ()
    queue: str = ""

    @property
    def unit(self) -> str:
        """What the dispatcher keeps together: the queue, else the module."""
        return self.queue or self.module


#: The slow start's ceiling (guessed jobs in one chunk).
MAX_ALLOWANCE = 1 << 16


def _ns(seconds: float) -> int:
    return max(0, round(seconds * 1e9))


_DEFAULT_NS = _ns(DEFAULT_ESTIMATE)


def _weight(job: Job) -> int:
    """The job's estimate in nanoseconds, with "none given" read as the default."""
    return _ns(job.estimate) if job.estimate > 0 else _DEFAULT_NS


def _index(job: Job) -> int:
    return job.index


@dataclasses.dataclass
class _Module:
    """A module's pending jobs (or a run of them), one queue per set of eligible devices, each
    in collection order. ``file`` is what a worker must have imported to run them."""

    key: str
    file: str
    scopes: tuple[str, ...] = ()
    queues: dict[frozenset[str], list[Job]] = dataclasses.field(default_factory=dict)
    ns: int = 0
    count: int = 0


@dataclasses.dataclass
class _SlotState:
    """What one slot's current worker has seen: the order constraints above."""

    device: str
    imported: set[str] = dataclasses.field(default_factory=set)
    closed: set[str] = dataclasses.field(default_factory=set)
    cursor: dict[str, int] = dataclasses.field(default_factory=dict)
    current: str | None = None
    current_scopes: tuple[str, ...] = ()
    #: False once its worker was told no more work comes (or is gone for good).
    live: bool = True


class Dispatcher:
    """Pending jobs, handed out in chunks that keep each worker's order as plain pytest's."""

    def __init__(
        self,
        slots: Sequence[Slot],
        divisor: int = 4,
        import_cost: Mapping[str, float] | None = None,
        lazy: bool = True,
        in_order: bool = False,
    ) -> None:
        self._divisor = divisor
        self._lazy = lazy
        #: The order of the jobs' indexes is the user's (--ff, --nf, a seed): keep to it.
        self._in_order = in_order
        self._import_ns = {module: _ns(s) for module, s in (import_cost or {}).items()}
        self._default_import_ns = _ns(DEFAULT_IMPORT_COST)
        self._modules: dict[str, _Module] = {}
        self._slots: dict[str, _SlotState] = {s.id: _SlotState(s.device) for s in slots}
        #: Live slots whose current module is the key.
        self._staffing: dict[str, int] = {}
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

    def remaining_by_device(self) -> dict[str, int]:
        """Jobs not handed out yet that one device alone may run, by device (in each mode:
        all of them), for the live view's done/total per device."""
        counts: dict[str, int] = {}
        for module in self._modules.values():
            for eligible, queue in module.queues.items():
                if len(eligible) == 1:
                    (device,) = eligible
                    counts[device] = counts.get(device, 0) + len(queue)
        return counts

    @property
    def lazy(self) -> bool:
        return self._lazy

    def slot_ids(self) -> list[str]:
        return list(self._slots)

    def slots_for(self, job: Job) -> list[str]:
        """Slots whose worker could run ``job`` (a fresh one, when no live worker may)."""
        return [slot_id for slot_id, state in self._slots.items() if state.device in job.eligible]

    # ------------------------------------------------------------------ feeding

    def add(self, jobs: Iterable[Job], home: str | None = None) -> None:
        """Queue ``jobs``; ``home`` is a slot whose worker already imported their modules."""
        for job in jobs:
            self._push(job)
            if home is not None:
                self.mark_imported(home, [job.module])

    def devices_for(self, job: Job) -> frozenset[str]:
        """Every device ``job``'s test may run on: where a rerun or a retry may go."""
        return job.eligible

    def requeue(self, jobs: Iterable[Job]) -> None:
        """Put back jobs a worker never ran (or whose results died with it)."""
        for job in jobs:
            self._push(job)

    def mark_imported(self, slot_id: str, modules: Iterable[str]) -> None:
        """``slot_id``'s worker has imported ``modules`` (or will, before its first test)."""
        state = self._slots.get(slot_id)
        if state is not None:
            state.imported.update(modules)

    def imported_by(self, slot_id: str) -> set[str]:
        state = self._slots.get(slot_id)
        return set(state.imported) if state else set()

    def retire(self, slot_id: str) -> None:
        """``slot_id``'s worker was told that no more work comes: it takes nothing more."""
        state = self._slots.get(slot_id)
        if state is not None and state.live:
            self._leave(state)
            state.live = False

    def open_slot(self, slot_id: str) -> None:
        """A new worker starts in ``slot_id``: it has imported nothing and left nothing behind."""
        state = self._slots.get(slot_id)
        if state is not None:
            if state.live:
                self._leave(state)
            self._slots[slot_id] = _SlotState(state.device)
            self._allowance.pop(slot_id, None)

    def drop_slot(self, slot_id: str, permanently: bool) -> None:
        """A slot's worker is gone: the slot takes nothing until ``open_slot``; with
        ``permanently``, the slot itself is gone."""
        state = self._slots.get(slot_id)
        if state is None:
            return
        if state.live:
            self._leave(state)
        if permanently:
            del self._slots[slot_id]
        else:
            self._slots[slot_id] = _SlotState(state.device, live=False)
        self._allowance.pop(slot_id, None)

    # ------------------------------------------------------------------ asking

    def wants(self, slot_id: str) -> bool:
        """Could any job not handed out yet run on ``slot_id``'s device (now or by a fresh
        worker)? When not, the slot's lease may go back before the run ends."""
        state = self._slots.get(slot_id)
        return state is not None and any(
            state.device in eligible for module in self._modules.values() for eligible in module.queues
        )

    def has_work_for(self, slot_id: str) -> bool:
        """Would ``take(slot_id)`` hand out anything now?"""
        return self._choose(slot_id) is not None

    def take(self, slot_id: str) -> list[Job]:
        """The next chunk for ``slot_id``, in collection order (empty when it may run nothing)."""
        chosen = self._choose(slot_id)
        if chosen is None:
            return []
        module, queue, start, shared = chosen
        state = self._slots[slot_id]
        share = self._divisor * max(1, len(self._slots))
        available = len(queue) - start
        limit = max(1, available // 2) if shared else available
        # Tests whose duration is only guessed go out one, then two, four... per chunk:
        # a chunk of unknowns may hide a run of long tests, and many tiny tests soon
        # earn large chunks anyway.
        allowance = self._allowance.get(slot_id, 1)
        count = taken_ns = guessed = 0
        while count < limit:
            job = queue[start + count]
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
        taken = queue[start : start + count]
        del queue[start : start + count]
        if not queue:
            del module.queues[taken[0].eligible]
        module.ns -= taken_ns
        module.count -= count
        self._remaining -= count
        self._remaining_ns -= taken_ns
        if state.current != module.key:
            self._leave(state)
            state.closed.update(s for s in state.current_scopes if s not in module.scopes)
            state.current = module.key
            state.current_scopes = module.scopes
            self._staffing[module.key] = self._staffing.get(module.key, 0) + 1
        state.cursor[module.key] = taken[-1].index
        state.imported.add(module.file)
        if not module.count:
            del self._modules[module.key]
        return taken

    def orphans(self) -> list[Job]:
        """Jobs no remaining slot's device can run: taken out and returned, in collection order."""
        devices = {s.device for s in self._slots.values()}
        out: list[Job] = []
        for module in list(self._modules.values()):
            for eligible in [e for e in module.queues if not (e & devices)]:
                queue = module.queues.pop(eligible)
                self._forget(module, queue)
                out.extend(queue)
        return sorted(out, key=_index)

    def unreachable(self) -> list[Job]:
        """Pending jobs that no live slot's worker may take (it left their module, or passed
        them, or never imported it): they need a fresh worker. Left in place."""
        out: list[Job] = []
        for module in self._modules.values():
            for eligible, queue in module.queues.items():
                last = queue[-1].index
                for state in self._slots.values():
                    if (
                        state.live
                        and state.device in eligible
                        and self._may_enter(state, module)
                        and state.cursor.get(module.key, -1) < last
                    ):
                        break
                else:
                    out.extend(queue)
        return sorted(out, key=_index)

    def worth_sharing(self, slot_id: str, start_cost: float) -> list[str]:
        """The files a fresh worker in ``slot_id`` (its worker is gone) should import to share
        the work left in them, when that ends the run sooner even after paying ``start_cost``
        seconds to start and each file's import; else nothing. Biggest share first.

        Only without ``lazy``: a live worker then takes no module it did not import before
        its first test, so near the end the work left may all sit in modules that busy workers
        imported while the slots that finished theirs stand idle. Only work the history knows
        counts: a guess must not pay for a worker's start (on 64 slots, guessed shares started
        17 workers in a run of 20,000 10 ms tests and cost it 12 s of wall time).
        """
        state = self._slots.get(slot_id)
        if self._lazy or state is None or state.live:
            return []
        shares: list[tuple[int, int, str]] = []
        for module in self._modules.values():
            mine = [q for eligible, q in module.queues.items() if state.device in eligible]
            ns = sum(_weight(job) for queue in mine for job in queue if not job.guessed)
            if not ns:
                continue
            staff = self._staffing.get(module.key, 0) + sum(
                1 for s in self._slots.values() if s.live and s.current is None and module.file in s.imported
            )
            shares.append((ns // (staff + 1), self._import_cost_ns(module.file), module.file))
        shares.sort(reverse=True)
        start_ns = _ns(start_cost)
        # Worth a worker: the biggest share that pays for the start; then every other share
        # that pays for its own import, taken by the same worker.
        if not any(share > 2 * (start_ns + cost) for share, cost, _ in shares):
            return []
        return list(dict.fromkeys(file for share, cost, file in shares if share > 2 * cost))

    # ------------------------------------------------------------------ internals

    def _push(self, job: Job) -> None:
        module = self._modules.get(job.unit)
        if module is None:
            module = self._modules[job.unit] = _Module(job.unit, job.module, job.scopes)
        queue = module.queues.setdefault(job.eligible, [])
        bisect.insort(queue, job, key=_index)
        weight = _weight(job)
        module.ns += weight
        module.count += 1
        self._remaining += 1
        self._remaining_ns += weight

    def _forget(self, module: _Module, queue: list[Job]) -> None:
        weight = sum(_weight(j) for j in queue)
        module.ns -= weight
        module.count -= len(queue)
        self._remaining -= len(queue)
        self._remaining_ns -= weight
        if not module.count:
            del self._modules[module.key]

    def _may_enter(self, state: _SlotState, module: _Module) -> bool:
        if not self._lazy and module.file not in state.imported:
            return False
        if module.key == state.current:
            return True
        return module.key not in state.cursor and not any(s in state.closed for s in module.scopes)

    def _import_cost_ns(self, module: str) -> int:
        return self._import_ns.get(module, self._default_import_ns)

    def _choose(self, slot_id: str) -> tuple[_Module, list[Job], int, bool] | None:
        """The module and queue ``slot_id`` takes from next, where in the queue it starts,
        and whether another slot is working through that module."""
        state = self._slots.get(slot_id)
        if state is None or not state.live:
            return None
        best: tuple[tuple[int, int, int, int], _Module, list[Job], int] | None = None
        holders = state.current_scopes[:-1]  # its packages and directories ([-1]: its module)
        for module in self._modules.values():
            if not self._may_enter(state, module):
                continue
            cursor = state.cursor.get(module.key)  # None: the slot never took from this module
            head: tuple[list[Job], int] | None = None
            for eligible, queue in module.queues.items():
                if state.device not in eligible:
                    continue
                start = 0 if cursor is None else bisect.bisect_right(queue, cursor, key=_index)
                if start < len(queue) and (head is None or queue[start].index < head[0][head[1]].index):
                    head = (queue, start)
            if head is None:
                continue
            if module.key == state.current:
                return module, head[0], head[1], self._staff(module.key, slot_id) > 0
            staff = self._staff(module.key, slot_id)
            imported = module.file in state.imported
            cost = 0 if imported else self._import_cost_ns(module.file)
            first = head[0][head[1]].index
            if self._in_order:
                rank = (first, 0, 0, 0)  # the user's order (--ff, --nf, a seed) comes first
            else:
                # First a module that leaves the fewest of the slot's packages and directories,
                # as plain pytest's order does (a sibling, then a cousin...): a slot that left
                # one never returns, and once every slot has, what is left there waits for a
                # fresh worker.
                leaves = sum(1 for s in holders if s not in module.scopes)
                rank = (leaves, -(module.ns // (staff + 1) - cost), not imported, first)
            if best is None or rank < best[0]:
                best = (rank, module, head[0], head[1])
        if best is None:
            return None
        _, module, queue, start = best
        return module, queue, start, self._staff(module.key, slot_id) > 0

    def _staff(self, module: str, slot_id: str) -> int:
        """How many other live slots are working through ``module`` now."""
        state = self._slots[slot_id]
        mine = 1 if state.live and state.current == module else 0
        return self._staffing.get(module, 0) - mine

    def _leave(self, state: _SlotState) -> None:
        """A live slot stops counting as working in its current module."""
        if state.current is not None:
            self._staffing[state.current] -= 1
