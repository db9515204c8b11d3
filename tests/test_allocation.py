"""Allocating several devices at once: all or nothing, a reservation for the head, backfill behind it."""

from __future__ import annotations

import dataclasses
import heapq
import math
import random
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testrack.scheduling.allocation import (
    BACKFILL_MARGIN,
    Decision,
    Pending,
    Reservation,
    SlotState,
    allocate,
)
from testrack.scheduling.requests import perfect_matching


def free(slot: str, device: str | None = None) -> SlotState:
    return SlotState(slot, device or slot.upper())


def busy(slot: str, remaining: float, device: str | None = None) -> SlotState:
    return SlotState(slot, device or slot.upper(), busy=True, remaining=remaining)


def pending(key: str, *positions: str, estimate: float = 1.0, guessed: bool = False) -> Pending:
    """``pending("t", "AB", "AB")``: two positions, each on device A or B."""
    return Pending(key, tuple(frozenset(p) for p in positions), estimate, guessed)


def granted(decision: Decision) -> dict[str, tuple[str, ...]]:
    return {g.request: g.slots for g in decision.grants}


# -- unit behaviour --------------------------------------------------------------------------------


def test_all_free_grants_in_queue_order_on_distinct_devices() -> None:
    """With every slot free, tests start in queue order, each on different devices."""
    decision = allocate(
        [free("a"), free("b"), free("c")],
        [pending("pair", "ABC", "ABC"), pending("one", "AB"), pending("last", "ABC")],
    )
    assert granted(decision) == {"pair": ("a", "b"), "last": ("c",)}
    assert decision.reservation == Reservation("one", ("a",), 1.0, 0.8)


def test_no_partial_grant_and_the_head_reserves() -> None:
    """A two-device test with one free device takes nothing; it reserves and the free device waits."""
    decision = allocate([free("a"), busy("b", 10.0)], [pending("pair", "AB", "AB", estimate=5)])
    assert decision.grants == ()
    assert decision.reservation == Reservation("pair", ("a", "b"), 10.0, 8.0)


def test_backfill_fits_in_the_gap_and_not_beyond() -> None:
    """Behind the head, a test takes a reserved free slot only if it ends (with margin) before the gap."""
    slots = [free("a"), busy("b", 10.0), free("c")]
    queue = [
        pending("pair", "AB", "AB"),
        pending("too-long", "A", estimate=8.001),
        pending("guess", "A", estimate=0.1, guessed=True),
        pending("fits", "A", estimate=8.0),
        pending("anywhere", "C", estimate=100),
    ]
    decision = allocate(slots, queue)
    assert granted(decision) == {"fits": ("a",), "anywhere": ("c",)}
    assert 8.0 * (1 + BACKFILL_MARGIN) == 10.0  # "fits" ends exactly when the reservation needs it


def test_backfill_prefers_unreserved_devices() -> None:
    """A short test that may go anywhere goes where it does not touch the reservation."""
    decision = allocate(
        [free("a"), busy("b", 10.0), free("c")],
        [pending("pair", "AB", "AB"), pending("short", "AC", estimate=1)],
    )
    assert granted(decision) == {"short": ("c",)}


def test_reservation_leans_on_busy_devices() -> None:
    """Of the sets free equally soon, the head reserves the one that leaves free devices to others."""
    slots = [free("a"), free("b"), busy("c", 5.0), busy("d", 5.0)]
    decision = allocate(slots, [pending("trio", "ABCD", "ABCD", "ABCD"), pending("long", "AB", estimate=60)])
    assert decision.reservation is not None
    assert set(decision.reservation.slots) == {"a", "c", "d"}
    assert granted(decision) == {"long": ("b",)}


def test_the_reservation_is_kept_while_its_test_is_the_head() -> None:
    """Passing the reservation back keeps its slots; another head or a lost slot drops it."""
    slots = [free("a"), busy("b", 10.0), busy("c", 10.0)]
    queue = [pending("pair", "ABC", "ABC")]
    first = allocate(slots, queue).reservation
    assert first == Reservation("pair", ("b", "c"), 10.0, 8.0)
    held = Reservation("pair", ("a", "c"), 10.0, 8.0)
    assert allocate(slots, queue, held).reservation == held
    other = dataclasses.replace(held, request="another")
    assert allocate(slots, queue, other).reservation == first
    assert allocate([free("a"), busy("b", 10.0), busy("d", 10.0)], queue, held).reservation == Reservation(
        "pair", ("a", "b"), 10.0, 8.0
    )


def test_overdue_reservation_takes_no_backfill() -> None:
    """When a reserved slot has overrun its estimate, nothing new starts on the reserved free slots."""
    decision = allocate(
        [free("a"), busy("b", 0.0)], [pending("pair", "AB", "AB"), pending("tiny", "A", estimate=1e-6)]
    )
    assert decision.grants == ()
    assert decision.reservation is not None and decision.reservation.ready_in == 0.0


def test_impossible_requests_are_reported_and_never_head() -> None:
    """A request no set of the slots' devices can serve is reported, and the queue goes on."""
    decision = allocate(
        [busy("a", 3.0), free("b")],
        [pending("three", "AB", "AB", "AB"), pending("gone", "Z"), pending("next", "A"), pending("b", "B")],
    )
    assert decision.impossible == ("three", "gone")
    assert decision.reservation is not None and decision.reservation.request == "next"
    assert granted(decision) == {"b": ("b",)}


def test_one_slot_per_device_even_with_capacity() -> None:
    """A device with two free slots still counts once for a test's positions."""
    slots = [free("a1", "A"), free("a2", "A"), free("b1", "B")]
    decision = allocate(slots, [pending("trio", "AB", "AB", "AB"), pending("pair", "AB", "AB")])
    assert decision.impossible == ("trio",)
    assert granted(decision) == {"pair": ("a1", "b1")}


def test_capacity_leaves_the_unreserved_slot_open() -> None:
    """On a two-slot device the head reserves one slot; the other takes any test."""
    slots = [free("a1", "A"), free("a2", "A"), busy("b1", 10.0, "B")]
    decision = allocate(slots, [pending("pair", "AB", "AB"), pending("long", "A", estimate=60)])
    assert decision.reservation is not None and set(decision.reservation.slots) == {"a1", "b1"}
    assert granted(decision) == {"long": ("a2",)}


def test_the_answer_does_not_depend_on_the_order_of_slots() -> None:
    """Slots are a set: shuffling them gives the same decision."""
    slots = [free("a"), busy("b", 4.0), free("c"), busy("d", 2.0), free("e"), free("f", "E")]
    queue = [
        pending("big", "ABCDE", "ABCDE", "ABCDE", "ABCDE"),
        pending("x", "ACE", estimate=1),
        pending("y", "AE", "ACE", estimate=9),
        pending("z", "CE", estimate=30),
    ]
    expected = allocate(slots, queue)
    rng = random.Random(7)
    for _ in range(20):
        shuffled = list(slots)
        rng.shuffle(shuffled)
        assert allocate(shuffled, queue) == expected


def test_bad_input_is_refused() -> None:
    """Duplicate slots, requests without positions and a negative margin are caller bugs."""
    with pytest.raises(ValueError, match="slot 'a' is given twice"):
        allocate([free("a"), free("a")], [])
    with pytest.raises(ValueError, match="request 'x' has no positions"):
        allocate([free("a")], [Pending("x", ())])
    with pytest.raises(ValueError, match="margin must be >= 0"):
        allocate([free("a")], [], margin=-0.1)


# -- the randomised simulation ---------------------------------------------------------------------

KINDS = ("phone", "board", "host")
REVISIONS = ("A", "B")


@dataclasses.dataclass(frozen=True)
class SimDevice:
    name: str
    kind: str
    revision: str
    capacity: int


@dataclasses.dataclass(frozen=True)
class SimTest:
    request: Pending
    actual: float
    #: When the test joins the queue (seconds from the start of the run).
    arrival: float = 0.0


def make_rack(capacities: Sequence[int]) -> list[SimDevice]:
    """16 devices of 3 kinds (7 phones, 5 boards, 4 hosts), two revisions each."""
    kinds = ["phone"] * 7 + ["board"] * 5 + ["host"] * 4
    return [SimDevice(f"{kind}-{i}", kind, REVISIONS[i % 2], capacities[i]) for i, kind in enumerate(kinds)]


def make_tests(
    rack: Sequence[SimDevice],
    count: int,
    rng: random.Random,
    noise: float,
    outliers: float,
    guessed: float,
    load: float | None = None,
) -> list[SimTest]:
    """``count`` servable tests of 1 to 4 devices, with durations from 0.1 s to a minute.

    Each position wants a kind, sometimes also a revision; estimates are off by up
    to ``noise`` (a fraction), ``outliers`` of the tests take up to 3x their estimate
    and ``guessed`` of them have the default estimate and any duration. With
    ``load``, tests arrive at random over the time the rack needs for them divided
    by ``load`` (above 1: faster than the rack can serve them); else all at once.
    """
    tests: list[SimTest] = []
    while len(tests) < count:
        size = rng.choices((1, 2, 3, 4), weights=(55, 25, 12, 8))[0]
        positions = []
        for _ in range(size):
            kind = rng.choice(KINDS)
            revision = rng.choice((None, None, *REVISIONS))
            positions.append(
                frozenset(d.name for d in rack if d.kind == kind and revision in (None, d.revision))
            )
        taken, _ = perfect_matching([sorted(p) for p in positions])
        if None in taken:
            continue
        actual = math.exp(rng.uniform(math.log(0.1), math.log(60)))
        roll = rng.random()
        if roll < guessed:
            estimate, is_guess = 0.1, True
        elif roll < guessed + outliers:
            estimate, is_guess = actual / rng.uniform(1.0, 3.0), False
        else:
            estimate, is_guess = actual * rng.uniform(1 - noise, 1 + noise), False
        request = Pending(f"t{len(tests)}", tuple(positions), estimate, is_guess)
        tests.append(SimTest(request, actual))
    if load is None:
        return tests
    work = sum(t.actual * len(t.request.positions) for t in tests)
    span = work / sum(d.capacity for d in rack) / load
    times = sorted(rng.uniform(0, span) for _ in tests)
    return [dataclasses.replace(t, arrival=when) for t, when in zip(tests, times, strict=True)]


@dataclasses.dataclass
class Running:
    test: SimTest
    start: float
    slots: tuple[str, ...]

    @property
    def end(self) -> float:
        return self.start + self.test.actual

    @property
    def estimated_end(self) -> float:
        return self.start + self.test.request.estimate


@dataclasses.dataclass
class Waiting:
    """What a test saw when it first headed the queue, and what was backfilled onto its slots."""

    since: float
    longest_actual: float
    longest_estimated: float
    ready_in: float
    slots: frozenset[str]
    overrun: float = 0.0


def order(request: str) -> int:
    """Queue position of a simulated test: ids are t0, t1, ... in the order they arrive."""
    return int(request[1:])


@dataclasses.dataclass(frozen=True)
class Outcome:
    decisions: int
    #: When the last test ended.
    makespan: float
    #: The longest any test waited at the head of the queue, and its bound.
    longest_head_wait: float
    its_bound: float


def simulate(rack: Sequence[SimDevice], tests: Sequence[SimTest], margin: float = BACKFILL_MARGIN) -> Outcome:
    """Run ``tests`` on ``rack`` as the run loop would, checking every promise.

    Tests join the queue at their arrival times, in order; a decision is taken
    whenever tests end or arrive, as the run loop takes one whenever slots free up
    or work is added.
    """
    device_of = {f"{d.name}/{i}": d.name for d in rack for i in range(d.capacity)}
    arrivals = sorted(tests, key=lambda t: t.arrival)
    next_arrival = 0
    occupant: dict[str, Running] = {}
    queue: dict[str, SimTest] = {}
    ends: list[tuple[float, int, str]] = []  # (time, tiebreak, first slot)
    held: Reservation | None = None
    heads: dict[str, Waiting] = {}
    served: set[str] = set()
    now = 0.0
    decisions = 0
    longest = (0.0, 0.0)
    while next_arrival < len(arrivals) or queue or occupant:
        while next_arrival < len(arrivals) and arrivals[next_arrival].arrival <= now:
            queue[arrivals[next_arrival].request.id] = arrivals[next_arrival]
            next_arrival += 1
        slots = [
            SlotState(
                slot,
                device,
                busy=slot in occupant,
                remaining=max(0.0, occupant[slot].estimated_end - now) if slot in occupant else 0.0,
            )
            for slot, device in device_of.items()
        ]
        decision = allocate(slots, (t.request for t in queue.values()), held, margin)
        decisions += 1
        assert decision.impossible == ()
        reservation = decision.reservation
        for grant in decision.grants:
            test = queue.pop(grant.request)
            assert len(set(grant.slots)) == len(grant.slots) == len(test.request.positions)
            assert len({device_of[s] for s in grant.slots}) == len(grant.slots), "two positions, one device"
            for slot, eligible in zip(grant.slots, test.request.positions, strict=True):
                assert slot not in occupant, f"slot {slot} granted twice"
                assert device_of[slot] in eligible
            running = Running(test, now, grant.slots)
            for slot in grant.slots:
                occupant[slot] = running
            heapq.heappush(ends, (running.end, decisions * 1000 + len(ends), grant.slots[0]))
            waiting = heads.pop(grant.request, None)
            if waiting is not None:
                tight = max(waiting.longest_actual, waiting.ready_in + waiting.overrun)
                bound = max(waiting.longest_actual, waiting.longest_estimated) + waiting.overrun
                assert now - waiting.since <= tight + 1e-6 <= bound + 2e-6, (grant.request, now, waiting)
                longest = max(longest, (now - waiting.since, bound))
        if reservation is not None:
            waiting = heads.get(reservation.request)
            if waiting is None:
                running_now = {id(r): r for r in occupant.values()}.values()
                waiting = heads[reservation.request] = Waiting(
                    since=now,
                    longest_actual=max((r.end - now for r in running_now), default=0.0),
                    longest_estimated=max(
                        (max(0.0, r.estimated_end - now) for r in running_now), default=0.0
                    ),
                    ready_in=reservation.ready_in,
                    slots=frozenset(reservation.slots),
                )
            head = order(reservation.request)
            for grant in decision.grants:  # backfilled onto the reserved slots: how late can it end?
                if order(grant.request) > head and waiting.slots.intersection(grant.slots):
                    test = occupant[grant.slots[0]].test
                    assert not test.request.guessed, f"{grant.request}: a guess on a reserved slot"
                    assert test.request.estimate * (1 + margin) <= reservation.ready_in + 1e-9
                    over = test.actual - (1 + margin) * test.request.estimate
                    waiting.overrun = max(waiting.overrun, over)
        held = reservation
        assert occupant or not queue, f"deadlock: {len(queue)} tests wait and nothing runs"
        now = min(
            ends[0][0] if ends else math.inf,
            arrivals[next_arrival].arrival if next_arrival < len(arrivals) else math.inf,
        )
        while ends and ends[0][0] <= now:
            _, _, slot = heapq.heappop(ends)
            running = occupant[slot]
            for s in running.slots:
                del occupant[s]
            served.add(running.test.request.id)
    assert served == {t.request.id for t in tests}
    return Outcome(decisions, now, *longest)


@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    capacities=st.lists(st.sampled_from((1, 1, 1, 2)), min_size=16, max_size=16),
    load=st.sampled_from((0.9, 1.2)),
)
def test_ten_thousand_mixed_requests(seed: int, capacities: list[int], load: float) -> None:
    """10,000 tests of 1-4 devices arriving on 16 devices of 3 kinds: no deadlock, no slot granted
    twice, every test served, every head starts within the longest running test plus the margin."""
    rng = random.Random(seed)
    rack = make_rack(capacities)
    simulate(rack, make_tests(rack, 10_000, rng, noise=0.2, outliers=0.05, guessed=0.05, load=load))


@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), order=st.sampled_from(("as collected", "longest first")))
def test_a_whole_suite_queued_at_once(seed: int, order: str) -> None:
    """2,000 tests queued before the first starts, as collected or longest first: the same promises."""
    rng = random.Random(seed)
    rack = make_rack([1] * 16)
    tests = make_tests(rack, 2000, rng, noise=0.2, outliers=0.05, guessed=0.05)
    if order == "longest first":
        tests.sort(key=lambda t: -t.request.estimate)
        tests = [SimTest(dataclasses.replace(t.request, id=f"t{i}"), t.actual) for i, t in enumerate(tests)]
    simulate(rack, tests)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    count=st.integers(1, 120),
    capacities=st.lists(st.sampled_from((1, 2)), min_size=16, max_size=16),
    noise=st.sampled_from((0.0, 0.2, 0.5)),
    margin=st.sampled_from((0.0, BACKFILL_MARGIN, 1.0)),
    load=st.sampled_from((None, 0.5, 2.0)),
)
def test_small_random_suites(
    seed: int, count: int, capacities: list[int], noise: float, margin: float, load: float | None
) -> None:
    """Many small suites, exact and noisy estimates, any margin: the same promises."""
    rng = random.Random(seed)
    rack = make_rack(capacities)
    simulate(rack, make_tests(rack, count, rng, noise=noise, outliers=0.1, guessed=0.1, load=load), margin)


def test_exact_estimates_need_no_margin() -> None:
    """With estimates exactly right a head waits at most for the longest test running when it got there."""
    rng = random.Random(11)
    rack = make_rack([1] * 16)
    tests = make_tests(rack, 2000, rng, noise=0.0, outliers=0.0, guessed=0.0)
    simulate(rack, tests, margin=0.0)
