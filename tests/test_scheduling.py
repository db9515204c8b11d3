"""Pure scheduling, without processes: marker requirements, matching, estimates and the Dispatcher."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence

import pytest

from testrack.rack import Device
from testrack.scheduling import (
    DEFAULT_ESTIMATE,
    Dispatcher,
    Job,
    Slot,
    describe_requirements,
    estimate_durations,
    lower_bound,
    lpt_makespan,
    matches,
)
from testrack.scheduling.estimates import MIN_ESTIMATE
from testrack.scheduling.matching import requirement_from_marker

BAD_VALUE_FIX = "values must be strings, numbers or booleans (or a list of them, meaning any of them)"

BOARD = Device(
    "board-1",
    "board",
    "192.168.1.10",
    attrs={"revision": "C", "mem_gb": 16, "features": ["wifi", "bt"], "fast": False},
)


# -- requirement_from_marker ----------------------------------------------------------------------


def test_kind_positional() -> None:
    """device("gpu") is the same requirement as device(kind="gpu")."""
    assert requirement_from_marker(("gpu",), {}) == (("kind", ("gpu",)),)
    assert requirement_from_marker(("gpu",), {}) == requirement_from_marker((), {"kind": "gpu"})


def test_kwargs_become_sorted_pairs() -> None:
    """Keyword arguments become (key, values) pairs sorted by key: marker order does not matter."""
    assert requirement_from_marker(("board",), {"revision": "C", "mem_gb": 16, "fast": True}) == (
        ("fast", (True,)),
        ("kind", ("board",)),
        ("mem_gb", (16,)),
        ("revision", ("C",)),
    )


def test_no_arguments_is_no_requirement() -> None:
    """A bare @pytest.mark.device requires nothing (and matches every device)."""
    assert requirement_from_marker((), {}) == ()
    assert matches(BOARD, [requirement_from_marker((), {})])


def test_lists_and_tuples_mean_any_of_in_the_given_order() -> None:
    """A list (or tuple) of values keeps its order: any of them will do."""
    assert requirement_from_marker((), {"revision": ["C", "B"]}) == (("revision", ("C", "B")),)
    assert requirement_from_marker((["gpu", "tpu"],), {}) == (("kind", ("gpu", "tpu")),)
    assert requirement_from_marker((), {"mem_gb": (8, 16)}) == (("mem_gb", (8, 16)),)


def test_sets_are_sorted_for_a_stable_requirement() -> None:
    """A set has no order, so its values are deduplicated and sorted (by repr) for stable ids."""
    assert requirement_from_marker((), {"revision": {"C", "A", "B"}}) == (("revision", ("A", "B", "C")),)
    assert requirement_from_marker((), {"x": frozenset({2, "a"})}) == (("x", ("a", 2)),)


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({"mem_gb": None}, "mem_gb=None"),
        ({"revision": []}, "revision=[]"),
        ({"spec": {"mem": 16}}, "spec={'mem': 16}"),
        ({"revision": ["C", None]}, "revision=['C', None]"),
        ({"kind": object}, "kind=<class 'object'>"),
    ],
)
def test_bad_values_raise_with_the_fix(kwargs: dict[str, object], shown: str) -> None:
    """None, empty lists, dicts and objects are refused with the marker as written and the fix."""
    with pytest.raises(ValueError) as info:
        requirement_from_marker((), kwargs)
    assert str(info.value) == f"@pytest.mark.device({shown}): {BAD_VALUE_FIX}"


def test_two_positionals() -> None:
    """device("gpu", "tpu") is refused: the kind is the only positional argument."""
    with pytest.raises(ValueError) as info:
        requirement_from_marker(("gpu", "tpu"), {})
    assert str(info.value) == (
        "@pytest.mark.device takes at most one positional argument (the kind), got 2; "
        "write @pytest.mark.device(kind=..., attr=value)"
    )


def test_kind_twice() -> None:
    """device("gpu", kind="tpu") is refused: the kind is given twice."""
    with pytest.raises(ValueError) as info:
        requirement_from_marker(("gpu",), {"kind": "tpu"})
    assert str(info.value) == (
        "@pytest.mark.device got the kind both positionally and as kind=; give it once"
    )


# -- matches --------------------------------------------------------------------------------------


def req(*args: object, **kwargs: object) -> tuple[tuple[str, tuple[object, ...]], ...]:
    return requirement_from_marker(args, kwargs)


def test_matches_kind() -> None:
    """kind compares with the device's kind; a list of kinds means any of them."""
    assert matches(BOARD, [req("board")])
    assert not matches(BOARD, [req("gpu")])
    assert matches(BOARD, [req(["gpu", "board"])])


def test_matches_name_and_address() -> None:
    """name and address compare with the device's own fields, not with attrs."""
    assert matches(BOARD, [req(name="board-1")])
    assert not matches(BOARD, [req(name="board-2")])
    assert matches(BOARD, [req(address="192.168.1.10")])
    assert not matches(BOARD, [req(address="192.168.1.11")])
    named_attr = Device("d", "k", "a", attrs={"name": "d", "address": "a"})
    assert not matches(named_attr, [req(name="other")])


def test_matches_attrs() -> None:
    """Other keys compare with attrs, with their types (16 is not "16")."""
    assert matches(BOARD, [req(revision="C", mem_gb=16)])
    assert not matches(BOARD, [req(revision="B")])
    assert matches(BOARD, [req(revision=["A", "C"])])
    assert not matches(BOARD, [req(mem_gb="16")])
    assert matches(BOARD, [req(fast=False)])
    assert not matches(BOARD, [req(fast=True)])


def test_device_side_list_means_has_all() -> None:
    """features = ["wifi", "bt"] on the device matches a test needing wifi, or bt, not lte."""
    assert matches(BOARD, [req(features="wifi")])
    assert matches(BOARD, [req(features="bt")])
    assert not matches(BOARD, [req(features="lte")])
    assert matches(BOARD, [req(features=["lte", "bt"])])
    assert matches(BOARD, [req(features="wifi"), req(features="bt")])
    assert not matches(BOARD, [req(features="wifi"), req(features="lte")])


def test_missing_attr_does_not_match() -> None:
    """A test needing an attr the device lacks does not run there."""
    assert not matches(BOARD, [req(voltage=5)])
    assert not matches(BOARD, [req("board", voltage=5)])


def test_several_requirements_are_anded() -> None:
    """Class and function markers both apply: every requirement must hold."""
    assert matches(BOARD, [req("board"), req(revision="C")])
    assert not matches(BOARD, [req("board"), req(revision="B")])
    assert not matches(BOARD, [req("gpu"), req(revision="C")])
    assert matches(BOARD, [])


def test_describe_requirements() -> None:
    """The requirement reads as the user wrote it, for the "no device can run this" message."""
    assert describe_requirements([]) == "any device"
    assert describe_requirements([req()]) == "any device"
    assert describe_requirements([req("gpu", mem_gb=16)]) == "kind='gpu', mem_gb=16"
    assert describe_requirements([req("board"), req(revision=["B", "C"])]) == (
        "kind='board', revision=any of 'B', 'C'"
    )


# -- estimates ------------------------------------------------------------------------------------


def test_a_test_with_history_gets_its_own_duration() -> None:
    """A recorded duration is the estimate, whatever its neighbours took."""
    tests = [("a.py::t1", "a.py"), ("a.py::t2", "a.py")]
    assert estimate_durations(tests, {"a.py::t1": 2.5, "a.py::t2": 0.02}) == {
        "a.py::t1": 2.5,
        "a.py::t2": 0.02,
    }


def test_a_new_test_gets_the_median_of_its_module() -> None:
    """A new test is most like its own file's tests: the median of the known ones there."""
    tests = [("a.py::t1", "a.py"), ("a.py::t2", "a.py"), ("a.py::t3", "a.py"), ("a.py::new", "a.py")]
    tests += [("b.py::t1", "b.py")]
    history = {"a.py::t1": 1.0, "a.py::t2": 3.0, "a.py::t3": 100.0, "b.py::t1": 0.5}
    assert estimate_durations(tests, history)["a.py::new"] == 3.0  # the median, not the 34.7 mean


def test_a_new_module_gets_the_median_of_the_whole_history() -> None:
    """With nothing known in its module, the median of every recorded test, selected or not."""
    tests = [("new.py::t1", "new.py"), ("a.py::t1", "a.py")]
    history = {"a.py::t1": 1.0, "gone.py::t": 2.0, "deselected.py::t": 9.0}
    assert estimate_durations(tests, history) == {"new.py::t1": 2.0, "a.py::t1": 1.0}


def test_with_no_history_every_test_gets_the_default() -> None:
    """No history at all: the default, 0.1 s unless told otherwise."""
    tests = [("a.py::t1", "a.py"), ("b.py::t1", "b.py")]
    assert estimate_durations(tests, {}) == {"a.py::t1": DEFAULT_ESTIMATE, "b.py::t1": DEFAULT_ESTIMATE}
    assert DEFAULT_ESTIMATE == 0.1
    assert estimate_durations(tests, {}, default=2.0) == {"a.py::t1": 2.0, "b.py::t1": 2.0}
    assert estimate_durations([], {"a.py::t1": 1.0}) == {}


def test_corrupt_history_is_ignored_and_zero_stays_known() -> None:
    """Negative or non-finite records are ignored; a recorded 0.0 stays a tiny known time, not "none"."""
    tests = [("a.py::neg", "a.py"), ("a.py::nan", "a.py"), ("a.py::ok", "a.py"), ("a.py::zero", "a.py")]
    history = {"a.py::neg": -1.0, "a.py::nan": math.nan, "a.py::ok": 0.4, "a.py::zero": 0.0}
    got = estimate_durations(tests, history)
    assert got["a.py::neg"] == got["a.py::nan"] == statistics.median([0.4, MIN_ESTIMATE])
    assert got["a.py::zero"] == MIN_ESTIMATE > 0
    with pytest.raises(ValueError, match="default must be a positive number of seconds, got 0"):
        estimate_durations(tests, {}, default=0)


def test_each_mode_duplicates_count_once_in_the_module_median() -> None:
    """The same test listed once per device is one known test of its module, not several."""
    tests = [("a.py::t1", "a.py")] * 3 + [("a.py::t2", "a.py"), ("a.py::t3", "a.py"), ("a.py::new", "a.py")]
    history = {"a.py::t1": 1.0, "a.py::t2": 2.0, "a.py::t3": 3.0}
    assert estimate_durations(tests, history)["a.py::new"] == 2.0


def test_lower_bound_is_the_larger_of_the_even_share_and_the_longest_test() -> None:
    """max(total / slots, longest): 0 for nothing, and a refusal of zero slots."""
    assert lower_bound([1.0, 1.0, 1.0, 1.0], 2) == 2.0
    assert lower_bound([5.0, 1.0, 1.0], 4) == 5.0
    assert lower_bound([], 3) == 0.0
    assert lower_bound(iter([0.5, 0.25]), 1) == 0.75
    with pytest.raises(ValueError, match="slots must be at least 1, got 0"):
        lower_bound([1.0], 0)


def test_lpt_makespan_is_greedy_longest_first() -> None:
    """LPT puts each test, longest first, on the least loaded slot; it is not always optimal."""
    assert lpt_makespan([3, 3, 2, 2, 2], 2) == 7  # 3+2+2 | 3+2, where 3+3 | 2+2+2 gives 6
    assert lpt_makespan([2, 3, 1], 1) == 6
    assert lpt_makespan([4, 1, 1, 1, 1], 2) == 4
    assert lpt_makespan([], 4) == 0.0
    with pytest.raises(ValueError, match="slots must be at least 1, got 0"):
        lpt_makespan([1.0], 0)


# -- Dispatcher -----------------------------------------------------------------------------------

ALL = frozenset({"a", "b", "c"})


def jobs(
    module: str, indices: Iterable[int], eligible: Iterable[str] = ALL, estimate: float = 0.0
) -> list[Job]:
    return [Job(f"{module}.py::test_{i}", module, i, frozenset(eligible), estimate) for i in indices]


def indices(chunk: Sequence[Job]) -> list[int]:
    return [j.index for j in chunk]


def slots(*devices: str) -> list[Slot]:
    return [Slot(f"gw{i}", d) for i, d in enumerate(devices)]


def drain(dispatcher: Dispatcher, order: Sequence[str]) -> list[tuple[str, list[int]]]:
    """Take round-robin over ``order`` until no slot gets anything; the handouts in order."""
    out = []
    while True:
        got = False
        for slot_id in order:
            chunk = dispatcher.take(slot_id)
            if chunk:
                got = True
                out.append((slot_id, indices(chunk)))
        if not got:
            return out


@pytest.mark.parametrize("seed", range(40))
def test_every_job_runs_once_where_it_fits_and_no_worker_reenters_a_scope(seed: int) -> None:
    """Random racks, estimates, imports, take orders and crashes (a fresh worker takes over):

    - every job is handed out once to a slot of a device it may run on, or is an orphan;
    - each worker (a slot between two ``open_slot``) sees each module's tests in collection
      order and never comes back to a module or directory it left (fixture lifetimes as in
      plain pytest), and runs only modules it imported unless the dispatcher is lazy;
    - ``has_work_for`` says exactly whether ``take`` gives something, and what no live
      worker may take is exactly what ``unreachable`` reports.
    """
    rng = random.Random(seed)
    devices = [f"d{i}" for i in range(rng.randint(1, 4))]
    rack = [Slot(f"gw{i}", rng.choice(devices)) for i in range(rng.randint(1, 6))]
    with_slots = sorted({s.device for s in rack})
    device_of = {s.id: s.device for s in rack}
    lazy = rng.random() < 0.5
    dispatcher = Dispatcher(rack, divisor=rng.choice([1, 2, 4]), lazy=lazy)
    modules = [f"m{i}" for i in range(45)]
    scopes = {m: (f"dir{i % 3}", f"dir{i % 3}/{m}.py") for i, m in enumerate(modules)}
    all_jobs: list[Job] = []
    for index in range(rng.randint(0, 300)):
        module = f"m{index // 7}"
        eligible = frozenset(rng.sample(with_slots, rng.randint(1, len(with_slots))))
        estimate = rng.choice([0.0, rng.uniform(0.001, 0.05), rng.uniform(0.5, 3.0)])
        all_jobs.append(
            Job(f"{module}.py::t{index}", module, index, eligible, estimate, scopes=scopes[module])
        )
    dispatcher.add(rng.sample(all_jobs, len(all_jobs)))
    plans = {s: set(rng.sample(modules, rng.randint(0, len(modules)))) for s in device_of}
    for slot_id, planned in plans.items():
        dispatcher.mark_imported(slot_id, planned)

    ran: Counter[Job] = Counter()
    orphaned: list[Job] = []
    live = dict(device_of)
    seen: dict[str, list[Job]] = {s: [] for s in live}  # the current worker's sequence

    def check(slot_id: str) -> None:
        order = seen[slot_id]
        left: set[str] = set()
        for before, after in itertools.pairwise(order):
            if before.module == after.module:
                assert before.index < after.index, (slot_id, before, after)
            else:
                left.update(s for s in before.scopes if s not in after.scopes)
                assert not (left & set(after.scopes)), (slot_id, "re-entered", after)
        if not lazy:
            assert {j.module for j in order} <= plans[slot_id]

    def fresh(slot_id: str) -> None:
        dispatcher.open_slot(slot_id)
        plans[slot_id] = set(rng.sample(modules, rng.randint(0, len(modules))))
        dispatcher.mark_imported(slot_id, plans[slot_id])
        seen[slot_id] = []

    steps = 0
    while dispatcher.remaining and steps < 5000:
        steps += 1
        ready = [s for s in live if dispatcher.has_work_for(s)]
        for idle in set(live) - set(ready):
            assert dispatcher.take(idle) == []
        if not ready:
            stuck = dispatcher.unreachable()
            assert stuck, f"{dispatcher.remaining} jobs left that someone may take, yet nobody has work"
            slot_id = rng.choice(sorted(live))
            fresh(slot_id)  # the controller starts a fresh worker for them
            if not lazy:
                plans[slot_id] |= {j.module for j in stuck}
                dispatcher.mark_imported(slot_id, plans[slot_id])
            continue
        slot_id = rng.choice(ready)
        chunk = dispatcher.take(slot_id)
        assert chunk, f"has_work_for({slot_id}) but take() gave nothing"
        assert len({j.module for j in chunk}) == 1
        for job in chunk:
            assert live[slot_id] in job.eligible, f"{job} went to {slot_id}"
        seen[slot_id].extend(chunk)
        check(slot_id)
        roll = rng.random()
        if len(chunk) > 1 and roll < 0.2:  # the worker dies during its second test
            ran[chunk[0]] += 1
            dispatcher.requeue(chunk[1:])
            if rng.random() < 0.3 and len(live) > 1:
                dispatcher.drop_slot(slot_id, permanently=True)
                del live[slot_id]
            else:
                fresh(slot_id)
        else:
            ran.update(chunk)
        if roll > 0.97 and len(live) > 1:  # a slot is given up
            gone = rng.choice(sorted(live))
            dispatcher.drop_slot(gone, permanently=True)
            del live[gone]
        elif roll > 0.9:  # a worker is told no more work comes, and a fresh one follows later
            done = rng.choice(sorted(live))
            dispatcher.retire(done)
            assert dispatcher.take(done) == []
            fresh(done)
        orphaned.extend(dispatcher.orphans())
    assert dispatcher.remaining == 0, "the run did not end"
    assert dispatcher.remaining_time == 0
    assert sorted([*ran, *orphaned], key=lambda j: j.index) == sorted(all_jobs, key=lambda j: j.index)
    assert set(ran.values()) <= {1}
    live_devices = set(live.values())
    assert all(not (j.eligible & live_devices) for j in orphaned)


def test_a_slot_keeps_to_its_module_in_collection_order() -> None:
    """A slot works through one module front to back before it moves on."""
    dispatcher = Dispatcher(slots("a"), divisor=8)
    dispatcher.add(jobs("m0", range(0, 10)) + jobs("m1", range(10, 20)))
    order = [i for _, chunk in drain(dispatcher, ["gw0"]) for i in chunk]
    assert order == list(range(10)) + list(range(10, 20)) or order == list(range(10, 20)) + list(range(10))


def test_slots_share_a_module_from_its_front() -> None:
    """Two slots in one module each take the next tests at its front; each sees them in order."""
    dispatcher = Dispatcher(slots("a", "b"), divisor=1)
    dispatcher.add(jobs("m", range(0, 20)))
    assert indices(dispatcher.take("gw0")) == list(range(0, 10))  # 20 / 2
    assert indices(dispatcher.take("gw1")) == list(range(10, 15))  # half of what is left: shared
    assert indices(dispatcher.take("gw0")) == [15, 16]  # 5 / 2, at most half
    assert indices(dispatcher.take("gw1")) == [17]
    assert indices(dispatcher.take("gw0")) == [18]
    assert indices(dispatcher.take("gw0")) == [19]


def test_a_slot_never_comes_back_to_a_module_it_left() -> None:
    """Its module and package fixtures were torn down when it left: the rest is for others."""
    dispatcher = Dispatcher(slots("a", "b"), divisor=1)
    dispatcher.add(jobs("m0", range(0, 4), estimate=1.0) + jobs("m1", range(4, 8), estimate=0.1))
    assert indices(dispatcher.take("gw0")) == [0, 1, 2]  # 3 s * 2 slots >= 4.4 s
    assert indices(dispatcher.take("gw1")) == [3]  # m0 has more work per slot than m1
    assert [i for _, chunk in drain(dispatcher, ["gw0"]) for i in chunk] == [4, 5, 6, 7]
    assert not dispatcher.has_work_for("gw1")
    dispatcher.requeue(jobs("m0", [1], estimate=1.0))  # gw0's results of test 1 were lost, say
    assert not dispatcher.has_work_for("gw0")  # it left m0
    assert not dispatcher.has_work_for("gw1")  # it passed test 1
    assert indices(dispatcher.unreachable()) == [1]
    dispatcher.open_slot("gw0")  # a fresh worker
    assert indices(dispatcher.take("gw0")) == [1]


def test_leaving_a_directory_closes_it() -> None:
    """A package's fixtures live until a worker leaves it: it does not return to its modules."""
    dispatcher = Dispatcher(slots("a", "b"), divisor=100)
    pkg = ("pkg", "pkg/test_a.py")
    other = ("tests", "tests/test_b.py")
    dispatcher.add(
        [Job(f"pkg/test_a.py::t{i}", "a", i, frozenset("a"), 1.0, scopes=pkg) for i in range(2)]
        + [Job(f"tests/test_b.py::t{i}", "b", i, frozenset("a"), 5.0, scopes=other) for i in range(2, 4)]
        + [Job("pkg/test_c.py::t4", "c", 4, frozenset("a"), 0.1, scopes=("pkg", "pkg/test_c.py"))]
    )
    assert indices(dispatcher.take("gw0")) == [2]  # the most work: tests/test_b.py
    assert indices(dispatcher.take("gw0")) == [3]
    assert indices(dispatcher.take("gw0")) == [0]  # into pkg: tests/ is closed now
    assert indices(dispatcher.take("gw0")) == [1]
    assert indices(dispatcher.take("gw0")) == [4]  # same package: it stays open
    assert dispatcher.remaining == 0


def test_a_slot_finishes_its_directory_before_it_leaves_it() -> None:
    """Leaving a directory closes it, so a slot first takes what is left there, however small,
    as plain pytest's order does: else every slot may leave it and strand its tests (click's
    tests/test_utils: 73 tests waited for a fresh worker importing every file)."""
    dispatcher = Dispatcher(slots("a"), divisor=100)
    dispatcher.add(
        [
            Job(f"pkg/test_a.py::t{i}", "a", i, frozenset("a"), 5.0, scopes=("pkg", "pkg/test_a.py"))
            for i in range(2)
        ]
        + [Job("pkg/test_c.py::t2", "c", 2, frozenset("a"), 0.1, scopes=("pkg", "pkg/test_c.py"))]
        + [Job(f"test_b.py::t{i}", "b", i, frozenset("a"), 1.0, scopes=("test_b.py",)) for i in range(3, 5)]
    )
    assert indices(dispatcher.take("gw0")) == [0]  # the most work: pkg/test_a.py
    assert indices(dispatcher.take("gw0")) == [1]
    assert indices(dispatcher.take("gw0")) == [2]  # pkg/test_c.py before the bigger test_b.py
    assert indices(dispatcher.take("gw0")) == [3]
    assert indices(dispatcher.take("gw0")) == [4]
    assert dispatcher.remaining == 0 and not dispatcher.unreachable()


def test_a_slot_that_must_leave_a_directory_stays_in_the_closest_one() -> None:
    """Done with a/x/, a slot goes on to a/y/ (leaving only a/x) before the bigger b/ (which would
    leave a/ too, stranding a/y/ for a fresh worker): networkx 3.6.1 on local:2 left 2,053
    tests to one fresh worker while the other slot stood idle, 72 s against 52 s."""
    dispatcher = Dispatcher(slots("a"), divisor=100)

    def job(path: str, index: int, estimate: float) -> Job:
        parts = path.split("/")
        scopes = tuple("/".join(parts[: n + 1]) for n in range(len(parts)))
        return Job(f"{path}::t{index}", path, index, frozenset("a"), estimate, scopes=scopes)

    dispatcher.add([job("a/x/test_1.py", 0, 1.0), job("a/y/test_2.py", 1, 0.1), job("b/test_3.py", 2, 5.0)])
    assert indices(dispatcher.take("gw0")) == [2]  # the most work first: b/
    assert indices(dispatcher.take("gw0")) == [0]  # b/ is done: into a/
    assert indices(dispatcher.take("gw0")) == [1]  # a/y/ leaves only a/x/
    assert dispatcher.remaining == 0 and not dispatcher.unreachable()
    nested = Dispatcher(slots("a"), divisor=100)
    nested.add([job("a/x/test_1.py", 0, 5.0), job("a/y/test_2.py", 1, 0.1), job("b/test_3.py", 2, 1.0)])
    assert indices(nested.take("gw0")) == [0]
    assert indices(nested.take("gw0")) == [1]  # the cousin in a/, though b/ has more work
    assert indices(nested.take("gw0")) == [2]
    assert nested.remaining == 0 and not nested.unreachable()


def test_a_free_slot_enters_the_module_with_the_most_work_per_slot() -> None:
    """Big modules start first and are shared, so the long tests in them start early."""
    dispatcher = Dispatcher(slots("a", "b", "c"), divisor=100)
    dispatcher.add(jobs("small", range(0, 4), estimate=0.1))
    dispatcher.add(jobs("big", range(4, 8), estimate=2.0))
    dispatcher.add(jobs("mid", range(8, 12), estimate=1.0))
    assert dispatcher.take("gw0")[0].module == "big"  # 8 s
    assert dispatcher.take("gw1")[0].module == "mid"  # 4 s against big's 6 s / 2
    assert dispatcher.take("gw2")[0].module == "big"  # 6 s / 2 = 3 s against mid's 3 s / 2


def test_eager_dispatch_gives_a_slot_only_what_it_imported() -> None:
    """Not lazy: a worker may run only modules it imported before its first test."""
    dispatcher = Dispatcher(slots("a", "b"), lazy=False)
    dispatcher.add(jobs("m0", range(0, 4)) + jobs("m1", range(4, 8)))
    dispatcher.mark_imported("gw0", ["m0"])
    assert not dispatcher.has_work_for("gw1")
    assert {j.module for j in dispatcher.take("gw0")} == {"m0"}
    assert indices(dispatcher.unreachable()) == [4, 5, 6, 7]
    dispatcher.mark_imported("gw1", ["m1", "gone"])
    dispatcher.mark_imported("nobody", ["m1"])  # not a slot: ignored
    assert {j.module for j in dispatcher.take("gw1")} == {"m1"}


def test_a_slot_whose_worker_finished_shares_big_modules_only_when_it_pays() -> None:
    """Not lazy: gw1 ran out of its own modules while gw0 has 20 s left in big and 1 s in
    small. A fresh worker in gw1 is worth starting for half of big, and then takes small too
    (its share pays its import); not when big's share does not pay the start, and never in
    lazy mode (any live worker may take any module there)."""
    dispatcher = Dispatcher(slots("a", "a", "a"), lazy=False, import_cost={"big": 0.5, "small": 0.4})
    dispatcher.add(jobs("big", range(0, 20), estimate=1.0) + jobs("small", range(20, 22), estimate=0.5))
    dispatcher.mark_imported("gw0", ["big", "small"])
    dispatcher.take("gw0")
    assert dispatcher.worth_sharing("gw1", start_cost=1.0) == []  # gw1 still live: not free
    dispatcher.drop_slot("gw1", permanently=False)
    assert dispatcher.worth_sharing("gw1", start_cost=1.0) == ["big", "small"]
    assert dispatcher.worth_sharing("gw1", start_cost=4.0) == []  # 2 x (4 + 0.5) s > big's share
    # gw1 starts again and imports big: gw2, free too, now weighs a three-way share.
    dispatcher.open_slot("gw1")
    dispatcher.mark_imported("gw1", ["big"])
    dispatcher.drop_slot("gw2", permanently=False)
    share = dispatcher.remaining_time - 1.0  # big's part of what is left
    assert dispatcher.worth_sharing("gw2", start_cost=share / 3 / 2 - 0.6) == ["big", "small"]
    assert dispatcher.worth_sharing("gw2", start_cost=share / 3 / 2) == []
    # small's 1 s pays an import of 0.4 s, not one of 0.6 s.
    dear = Dispatcher(slots("a", "a"), lazy=False, import_cost={"small": 0.6})
    dear.add(jobs("big", range(0, 20), estimate=1.0) + jobs("small", range(20, 22), estimate=0.5))
    dear.drop_slot("gw1", permanently=False)
    assert dear.worth_sharing("gw1", start_cost=1.0) == ["big"]
    lazy = Dispatcher(slots("a", "a"))
    lazy.add(jobs("big", range(0, 20), estimate=1.0))
    lazy.drop_slot("gw1", permanently=False)
    assert lazy.worth_sharing("gw1", start_cost=0.0) == []
    # A guess never pays for a start: the same work with no history of its own is not shared.
    guessed = Dispatcher(slots("a", "a"), lazy=False)
    guessed.add([dataclasses.replace(j, guessed=True) for j in jobs("big", range(0, 20), estimate=1.0)])
    guessed.drop_slot("gw1", permanently=False)
    assert guessed.worth_sharing("gw1", start_cost=1.0) == []


def test_lazy_dispatch_weighs_the_import_a_slot_would_pay() -> None:
    """Lazy: any slot may take any module, and prefers those it imported when the work is equal."""
    dispatcher = Dispatcher(slots("a"), import_cost={"m1": 0.05})
    dispatcher.add(jobs("m0", range(0, 4)) + jobs("m1", range(4, 8)))
    dispatcher.mark_imported("gw0", ["m1"])
    assert dispatcher.take("gw0")[0].module == "m1"


def test_in_each_mode_every_slot_runs_its_devices_jobs_in_collection_order() -> None:
    """Each mode: one job per (test, device); each device's worker goes through them in order."""
    rack = slots("a", "b")
    dispatcher = Dispatcher(rack, lazy=False)
    dispatcher.add(j for i in range(20) for device in ("a", "b") for j in jobs(f"m{i // 5}", [i], {device}))
    for slot in rack:
        dispatcher.mark_imported(slot.id, ["m0", "m1", "m2", "m3"])
    for slot_id in ("gw0", "gw1"):
        order = [i for s, chunk in drain(dispatcher, [slot_id]) if s == slot_id for i in chunk]
        assert sorted(order) == list(range(20))
        by_module = [order[k : k + 5] for k in range(0, 20, 5)]
        assert all(chunk == sorted(chunk) and len({i // 5 for i in chunk}) == 1 for chunk in by_module)


def test_chunks_are_sized_by_time() -> None:
    """A long test travels alone; short ones travel many at once, up to remaining_time / (divisor * slots)."""
    dispatcher = Dispatcher(slots("a", "b"))
    dispatcher.add(jobs("m", [0], estimate=8.0) + jobs("m", range(1, 81), estimate=0.1))
    assert dispatcher.remaining_time == pytest.approx(16.0)
    assert indices(dispatcher.take("gw0")) == [0]  # 8 s >= 16 s / 8
    assert dispatcher.remaining_time == pytest.approx(8.0)
    assert indices(dispatcher.take("gw0")) == list(range(1, 11))  # 10 x 0.1 s = 8 s / 8
    assert len(dispatcher.take("gw0")) == 9  # 7 s / 8 = 0.875 s


def test_a_job_without_an_estimate_counts_as_the_default() -> None:
    """Job(...) without an estimate weighs DEFAULT_ESTIMATE: without history, chunks are sized by count."""
    dispatcher = Dispatcher(slots("a"))
    dispatcher.add(jobs("m", range(10)) + jobs("m", [10], estimate=DEFAULT_ESTIMATE))
    assert dispatcher.remaining_time == pytest.approx(11 * DEFAULT_ESTIMATE)
    assert indices(dispatcher.take("gw0")) == [0, 1, 2]  # ceil(11 / 4), in collection order


def test_chunks_shrink_to_single_tests() -> None:
    """5000 tests on 2 slots: the first chunk is large, few messages in all, the tail one by one."""
    dispatcher = Dispatcher(slots("a", "b"))
    dispatcher.add(jobs("m", range(5000)))
    sizes = [len(chunk) for _, chunk in drain(dispatcher, ["gw0", "gw1"])]
    assert sizes[0] == math.ceil(5000 / 8) == 625
    assert sum(sizes) == 5000
    assert sizes[-3:] == [1, 1, 1]
    assert len(sizes) < 100


def test_orphans_are_jobs_no_slot_left_can_run() -> None:
    """When a device's last slot is gone, its exclusive jobs are orphans; shared ones stay."""
    dispatcher = Dispatcher(slots("a", "b", "c", "c"))
    only_a = jobs("ma", [0, 4], eligible={"a"})
    a_or_b = jobs("mab", [1], eligible={"a", "b"})
    only_c = jobs("mc", [2], eligible={"c"})
    dispatcher.add(only_a + a_or_b + only_c)
    dispatcher.drop_slot("gw2", permanently=True)  # c still has gw3
    assert dispatcher.orphans() == []
    dispatcher.drop_slot("gw0", permanently=True)
    assert dispatcher.orphans() == [only_a[0], only_a[1]]
    assert dispatcher.orphans() == []
    assert dispatcher.remaining == 2
    assert indices(dispatcher.take("gw1")) == [1]
    assert indices(dispatcher.take("gw3")) == [2]
    assert dispatcher.remaining == 0
    assert dispatcher.remaining_time == 0


@pytest.mark.parametrize("seed", range(10))
def test_handouts_do_not_depend_on_the_order_jobs_were_added(seed: int) -> None:
    """Like labgrid's test_sched: shuffling the add() calls (and their jobs) changes nothing."""
    rng = random.Random(seed)
    rack = slots("a", "a", "b", "c")
    all_jobs = []
    for index in range(rng.randint(1, 80)):
        eligible = frozenset(rng.sample(["a", "b", "c"], rng.randint(1, 3)))
        estimate = rng.choice([0.0, 0.1, rng.uniform(0.01, 2.0)])
        all_jobs.append(Job(f"m{index // 5}.py::t{index}", f"m{index // 5}", index, eligible, estimate))
    import_cost = {f"m{i}": rng.choice([0.0, 0.05, 1.0]) for i in range(16)}
    outcomes = set()
    for _ in range(6):
        dispatcher = Dispatcher(rack, import_cost=import_cost)
        batch = rng.sample(all_jobs, len(all_jobs))
        cut = rng.randint(0, len(batch))
        dispatcher.add(batch[:cut])
        dispatcher.add(batch[cut:])
        outcomes.add(repr(drain(dispatcher, ["gw3", "gw0", "gw2", "gw1"])))
    assert len(outcomes) == 1, "\n".join(sorted(outcomes))


# -- the W2 workload: long tests last in collection order ------------------------------------------

W2_SLOTS = [Slot(f"gw{i}", f"dev{i}") for i in range(4)]


def w2_durations(seed: int) -> list[float]:
    """183 tests of 10-50 ms, then 17 of 1-3 s (shuffled): the benchmark's skewed workload."""
    rng = random.Random(seed)
    short = [rng.randint(10, 50) / 1000 for _ in range(183)]
    long = [1.0 + 0.125 * i for i in range(17)]
    rng.shuffle(long)
    return short + long


def w2_jobs(durations: Sequence[float], with_history: bool) -> list[Job]:
    """20 files of 10 tests, as in the benchmark: the long ones are in the last two files."""
    eligible = frozenset(s.device for s in W2_SLOTS)
    return [
        Job(
            f"test_w2_{i // 10:02d}.py::test_{i:03d}",
            f"w2_{i // 10:02d}",
            i,
            eligible,
            d if with_history else 0.0,
            scopes=(f"test_w2_{i // 10:02d}.py",),
        )
        for i, d in enumerate(durations)
    ]


def simulate(dispatcher: Dispatcher, durations: dict[str, float]) -> float:
    """Greedy pull: the slot that is free first takes the next chunk and runs it; the makespan.

    A slot that gets nothing stops, as a worker told Finish does.
    """
    clock = {s.id: 0.0 for s in W2_SLOTS}
    working = set(clock)
    while dispatcher.remaining:
        assert working, "work left that no slot may take"
        slot_id = min(working, key=lambda s: (clock[s], s))
        chunk = dispatcher.take(slot_id)
        if not chunk:
            working.remove(slot_id)
            continue
        clock[slot_id] += sum(durations[j.nodeid] for j in chunk)
    return max(clock.values())


def run_w2(seed: int, with_history: bool) -> tuple[float, float, float]:
    """(simulated makespan, lpt_makespan, lower_bound) of W2 on 4 slots, every file imported everywhere
    (cheap imports: what the import plan gives)."""
    durations = w2_durations(seed)
    all_jobs = w2_jobs(durations, with_history)
    dispatcher = Dispatcher(W2_SLOTS, lazy=False)
    dispatcher.add(all_jobs)
    for slot in W2_SLOTS:
        dispatcher.mark_imported(slot.id, {j.module for j in all_jobs})
    makespan = simulate(dispatcher, {j.nodeid: d for j, d in zip(all_jobs, durations, strict=True)})
    return makespan, lpt_makespan(durations, 4), lower_bound(durations, 4)


@pytest.mark.parametrize("seed", [2024, 7, 11])
def test_with_history_w2_comes_close_to_lpt(seed: int) -> None:
    """Known durations: the big modules start first and are shared, so W2's makespan stays near LPT's
    even though each worker keeps to collection order within a module."""
    makespan, lpt, bound = run_w2(seed, with_history=True)
    assert bound <= lpt <= makespan <= 1.10 * lpt, (makespan, lpt, bound)


def test_booleans_do_not_match_numbers() -> None:
    """device(count=1) does not match a device whose count is true (True == 1 in Python)."""
    from testrack.rack import Device as _Device
    from testrack.scheduling.matching import matches as _matches

    dev = _Device("a", "k", "x", attrs={"count": True, "n": 1})
    assert not _matches(dev, [(("count", (1,)),)])
    assert _matches(dev, [(("count", (True,)),)])
    assert not _matches(dev, [(("n", (True,)),)])
    assert _matches(dev, [(("n", (1,)),)])


def test_guessed_durations_go_out_in_slowly_growing_chunks() -> None:
    """Slow start: tests with only a guessed duration go out 1, 2, 4, 8... per chunk to a slot."""
    dispatcher = Dispatcher([Slot("gw0", "d")])
    dispatcher.add(
        [Job(f"t{i}", "m", i, frozenset({"d"}), 0.1, guessed=True) for i in range(100)], home="gw0"
    )
    sizes = [len(dispatcher.take("gw0")) for _ in range(5)]
    assert sizes == [1, 2, 4, 8, 16]


def test_known_durations_are_not_slowed_down() -> None:
    """Tests with their own history get time-sized chunks at once (no slow start)."""
    dispatcher = Dispatcher([Slot("gw0", "d")])
    dispatcher.add([Job(f"t{i}", "m", i, frozenset({"d"}), 0.1) for i in range(100)], home="gw0")
    assert len(dispatcher.take("gw0")) == 25
