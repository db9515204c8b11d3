"""Which pending tests start now, and on which slots: all of a test's devices at once, or none.

A test that needs several devices must get them together. Taking them one by one
(LAVA multinode, labgrid's one-place reservations) holds some devices idle while
waiting for the rest and can deadlock; granting whatever is free starves the big
tests, because some of their devices are always busy with small ones. This module
does what batch schedulers do (EASY backfilling, Lifka 1995), on devices:

1. Walk the queue in order. A test starts at once when every one of its positions
   can take a free slot on a different eligible device (a grant is all or nothing,
   so nothing is ever held while waiting: no hold-and-wait, no deadlock).
2. The first test that cannot start is the **head**. It reserves one slot on each
   of the devices it will use: the set that is free soonest by the estimates (a
   bottleneck matching), preferring devices that are busy anyway, so that the free
   ones stay useful. The reservation is kept from one decision to the next (the
   caller passes it back) until the head starts.
3. The tests behind the head **backfill**: they start now if they fit in free slots
   that are not reserved, or in reserved slots when they will be done before the
   head needs them: their estimate, with ``BACKFILL_MARGIN`` to spare, ends before
   the reserved slots are all free. A test whose estimate is a guess (no history of
   its own) never takes a reserved slot.

Guarantee (``tests/test_allocation.py`` checks it by simulation): a test that heads
the queue at time t starts by t + R + O, where R is the longest remaining time of
the tests running at t (actual, or as estimated if that is longer) and O is the
most that a test backfilled onto its reserved slots overran its estimate grown by
the margin. With estimates right within the margin, O is 0. Every test is served
(the queue is finite and the head always starts), so neither small nor big tests
starve.

Pure: no clock, no processes. Times are relative to the decision ("seconds from
now") and kept as integer nanoseconds, so ties are exact.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from testrack.scheduling.estimates import DEFAULT_ESTIMATE

#: A test backfilled onto a reserved slot must be estimated to end before the reservation
#: even when it takes this much longer than its estimate (0.25: 25 % longer). testrack's
#: estimates are medians of recent runs; device tests vary by some 10-20 % around theirs.
BACKFILL_MARGIN = 0.25


@dataclasses.dataclass(frozen=True)
class SlotState:
    """One worker slot at the moment of the decision."""

    id: str
    device: str
    #: False: the slot can take a test now.
    busy: bool = False
    #: Estimated seconds until the slot is free (its running test's remaining time plus
    #: whatever is queued behind it); 0 for a free slot and for one that has overrun.
    remaining: float = 0.0


@dataclasses.dataclass(frozen=True)
class Pending:
    """A pending test: which devices each of its positions may take, and its estimate.

    One position for a single-device test; in each mode every position is pinned to
    one device. ``estimate`` is in seconds, 0.0 meaning "none given" (counted as
    ``DEFAULT_ESTIMATE``); ``guessed`` says it is not the test's own history.
    """

    id: str
    positions: tuple[frozenset[str], ...]
    estimate: float = 0.0
    guessed: bool = False


@dataclasses.dataclass(frozen=True)
class Grant:
    """A test that starts now: one slot (on a different device) per position."""

    request: str
    #: By position; the worker of ``slots[0]`` runs the test, the others are held for it.
    slots: tuple[str, ...]
    devices: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Reservation:
    """The head of the queue and the slots it will start on; pass it to the next decision."""

    request: str
    #: By position, like a grant's.
    slots: tuple[str, ...]
    #: Estimated seconds until every reserved slot is free.
    ready_in: float
    #: The longest estimate (not a guess) that may start now on a free reserved slot.
    backfill_limit: float


@dataclasses.dataclass(frozen=True)
class Decision:
    """What starts now, what waits for what, and what can never start."""

    grants: tuple[Grant, ...]
    reservation: Reservation | None
    #: Requests that no set of the given slots' devices can serve: report them, and leave
    #: them out of the next queue.
    impossible: tuple[str, ...]


def _ns(seconds: float) -> int:
    return max(0, round(seconds * 1e9))


_DEFAULT_NS = _ns(DEFAULT_ESTIMATE)


def allocate(
    slots: Sequence[SlotState],
    queue: Iterable[Pending],
    held: Reservation | None = None,
    margin: float = BACKFILL_MARGIN,
) -> Decision:
    """Decide which of ``queue`` (in order) start now on ``slots``.

    ``held`` is the previous decision's reservation: while its test is still the
    head, it keeps the same slots, which is what bounds the head's wait. Call this
    whenever a slot becomes free, a slot or device comes or goes, or the queue
    changes; nothing changes between calls unless the caller applies the grants.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin!r}")
    return _Decider(slots, held, margin).run(queue)


class _Decider:
    """The state of one decision: which slots are still free, and the reservation."""

    def __init__(self, slots: Sequence[SlotState], held: Reservation | None, margin: float) -> None:
        self.held = held
        self.margin = margin
        self.device_of: dict[str, str] = {}
        self.ready: dict[str, int] = {}  # slot -> ns until free (0: free, or overdue)
        self.slots_of: dict[str, list[str]] = {}  # device -> its slots, by id
        self.free: dict[str, list[str]] = {}  # device -> its free slots, by id
        for slot in sorted(slots, key=lambda s: s.id):
            if slot.id in self.device_of:
                raise ValueError(f"slot {slot.id!r} is given twice")
            self.device_of[slot.id] = slot.device
            self.ready[slot.id] = _ns(slot.remaining) if slot.busy else 0
            self.slots_of.setdefault(slot.device, []).append(slot.id)
            if not slot.busy:
                self.free.setdefault(slot.device, []).append(slot.id)
        self.rank = {name: i for i, name in enumerate(sorted(self.slots_of))}
        self.free_devices = set(self.free)  # devices with a free slot
        self.open_devices = set(self.free)  # devices with a free slot that is not reserved
        self.reserved: set[str] = set()
        self.tau = 0  # ns until the reserved slots are all free
        self.limit = 0.0  # seconds: the longest estimate that may take a free reserved slot
        self.grants: list[Grant] = []
        self.impossible: list[str] = []
        self._possible: dict[tuple[frozenset[str], ...], bool] = {}

    # ------------------------------------------------------------------ the walk

    def run(self, queue: Iterable[Pending]) -> Decision:
        failed: set[tuple[tuple[frozenset[str], ...], bool]] = set()
        pending = iter(queue)
        reservation = None
        for request in pending:  # until the first test that cannot start: the head
            if not request.positions:
                raise ValueError(f"request {request.id!r} has no positions")
            if self._try(request, self.free_devices, failed, True):
                continue
            if not self._is_possible(request):
                self.impossible.append(request.id)
                continue
            reservation = self._reserve(request)
            break
        if reservation is not None:
            self._backfill(pending, failed)
        return Decision(tuple(self.grants), reservation, tuple(self.impossible))

    def _backfill(
        self, pending: Iterable[Pending], failed: set[tuple[tuple[frozenset[str], ...], bool]]
    ) -> None:
        """The tests behind the head: each starts now if it fits without delaying the head.

        This loop passes over most of the queue, so the cheap refusals come first.
        """
        free_devices, open_devices = self.free_devices, self.open_devices  # updated in place by grants
        limit = self.limit
        for request in pending:
            positions = request.positions
            if not positions:
                raise ValueError(f"request {request.id!r} has no positions")
            if len(open_devices) < len(free_devices):  # reserved slots are free too
                estimate = request.estimate if request.estimate > 0 else DEFAULT_ESTIMATE
                allowed = estimate <= limit and not request.guessed
            elif not free_devices:
                return
            else:
                allowed = False
            if allowed:
                usable = free_devices
            elif open_devices:
                usable = open_devices
            elif limit <= 0:
                return  # only reserved slots are free, and nothing may take them
            else:
                continue
            if len(positions) > len(usable) or positions[0].isdisjoint(usable):
                continue
            self._try(request, usable, failed, allowed)

    def _try(
        self,
        request: Pending,
        usable: set[str],
        failed: set[tuple[tuple[frozenset[str], ...], bool]],
        allowed: bool,
    ) -> bool:
        """Grant ``request`` on ``usable`` devices if it fits; remember shapes that did not."""
        positions = request.positions
        if len(positions) > len(usable):
            return False
        for eligible in positions:
            if eligible.isdisjoint(usable):
                return False
        key = (positions, allowed)
        if key in failed:
            return False
        taken = self._match(positions, usable)
        if taken is None:
            failed.add(key)  # slots only get taken during a decision, so it stays a failure
            return False
        self._grant(request, taken, allowed)
        return True

    def _match(self, positions: tuple[frozenset[str], ...], usable: set[str]) -> list[str] | None:
        """Distinct usable devices for every position, preferring unreserved ones, then rack order."""
        key = self._preference if self.reserved else self.rank.__getitem__
        if len(positions) == 1:
            options = usable.intersection(positions[0])
            return [min(options, key=key)] if options else None
        taken: list[str] = []
        for eligible in positions:  # greedily, each position its best device nobody took yet
            options = usable.intersection(eligible)
            options.difference_update(taken)
            if not options:
                break
            taken.append(min(options, key=key))
        else:
            return taken
        candidates = [sorted(eligible & usable, key=key) for eligible in positions]
        if not all(candidates):
            return None
        owner: dict[str, int] = {}  # the greedy pass ran out: Kuhn's augmenting paths

        def augment(position: int, visited: set[str]) -> bool:
            for name in candidates[position]:
                if name not in visited:
                    visited.add(name)
                    if name not in owner or augment(owner[name], visited):
                        owner[name] = position
                        return True
            return False

        for position in range(len(positions)):
            best = next((name for name in candidates[position] if name not in owner), None)
            if best is not None:
                owner[best] = position
            elif not augment(position, set()):
                return None
        taken = [""] * len(positions)
        for name, position in owner.items():
            taken[position] = name
        return taken

    def _preference(self, device: str) -> tuple[bool, int]:
        """Devices whose free slots are all reserved last, then rack order."""
        return (device not in self.open_devices, self.rank[device])

    def _grant(self, request: Pending, devices: list[str], allowed: bool) -> None:
        estimate = max(1, _ns(request.estimate)) if request.estimate > 0 else _DEFAULT_NS
        reserved = self.reserved
        chosen = []
        for device in devices:
            free = self.free[device]
            slot = free[0]
            if reserved and slot in reserved:
                slot = next((s for s in free if s not in reserved), slot)
                assert allowed or slot not in reserved, "a reserved slot went to a test that may not have it"
            free.remove(slot)
            self.ready[slot] = estimate
            chosen.append(slot)
            if not free:
                self.free_devices.discard(device)
                self.open_devices.discard(device)
            elif reserved and all(s in reserved for s in free):
                self.open_devices.discard(device)
        self.grants.append(Grant(request.id, tuple(chosen), tuple(devices)))

    # ------------------------------------------------------------------ the head

    def _is_possible(self, request: Pending) -> bool:
        """Could ``request`` ever start on these slots' devices, were they all free?"""
        known = self._possible.get(request.positions)
        if known is None:
            everything = set(self.slots_of)
            known = self._match(request.positions, everything) is not None
            self._possible[request.positions] = known
        return known

    def _reserve(self, request: Pending) -> Reservation:
        slots = self._held_slots(request)
        if slots is None:
            slots = self._soonest(request.positions)
        self.reserved = set(slots)
        self.tau = max(self.ready[s] for s in slots)
        self.limit = self.tau / (1 + self.margin) / 1e9
        for slot in slots:
            device = self.device_of[slot]
            if all(s in self.reserved for s in self.free.get(device, ())):
                self.open_devices.discard(device)
        return Reservation(request.id, tuple(slots), self.tau / 1e9, self.limit)

    def _held_slots(self, request: Pending) -> list[str] | None:
        """The previous reservation's slots, if it is this request's and they still serve it."""
        held = self.held
        if held is None or held.request != request.id or len(held.slots) != len(request.positions):
            return None
        devices = [self.device_of.get(s) for s in held.slots]
        if any(d is None for d in devices) or len(set(devices)) != len(devices):
            return None
        if not all(d in eligible for d, eligible in zip(devices, request.positions, strict=True)):
            return None
        return list(held.slots)

    def _soonest(self, positions: tuple[frozenset[str], ...]) -> list[str]:
        """A slot per position, on distinct devices, all free as soon as possible.

        Devices are added in the order they become free until the positions can all
        be matched (each new device either extends a maximum matching or does not);
        that device's time is the bottleneck. The matching is then redone over the
        devices free by then, latest first, and on each device the latest slot free
        by then is reserved: the reservation leans on what is busy anyway and leaves
        what is free to the backfill.
        """
        wanted = frozenset[str]().union(*positions) & self.slots_of.keys()
        first_free = {d: min(self.ready[s] for s in self.slots_of[d]) for d in wanted}
        order = sorted(wanted, key=lambda d: (first_free[d], self.rank[d]))
        owner: dict[str, int] = {}
        bottleneck = -1
        for device in order:
            if self._augment_from(device, positions, owner, set()) and len(owner) == len(positions):
                bottleneck = first_free[device]
                break
        assert bottleneck >= 0, "an impossible request became the head"
        within = [d for d in order if first_free[d] <= bottleneck]
        within.sort(key=lambda d: (first_free[d], d not in self.free_devices, -self.rank[d]), reverse=True)
        owner = {}
        for device in within:
            self._augment_from(device, positions, owner, set())
            if len(owner) == len(positions):
                break
        devices = self._match(positions, set(owner))  # the same devices, positions in rack order
        assert devices is not None
        taken = []
        for device in devices:
            free = self.free.get(device, [])
            usable = [s for s in self.slots_of[device] if self.ready[s] <= bottleneck]
            taken.append(max(usable, key=lambda s: (self.ready[s], s not in free)))
        return taken

    def _augment_from(
        self, device: str, positions: tuple[frozenset[str], ...], owner: dict[str, int], visited: set[int]
    ) -> bool:
        """Kuhn's step from the device side: match ``device`` to a position, moving others if needed."""
        holder = {p: d for d, p in owner.items()}
        for position, eligible in enumerate(positions):
            if device in eligible and position not in holder and position not in visited:
                owner[device] = position  # a free position first: keeps the positions in order
                return True
        for position, eligible in enumerate(positions):
            if device not in eligible or position in visited:
                continue
            visited.add(position)
            other = holder.get(position)
            if other is None or self._augment_from(other, positions, owner, visited):
                owner[device] = position
                return True
        return False
