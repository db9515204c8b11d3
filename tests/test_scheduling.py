"""Pure scheduling, without processes: marker requirements, matching, estimates and the Dispatcher."""

from __future__ import annotations

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
    DEFAULT_IMPORT_COST,
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


@pytest.mark.parametrize("seed", range(30))
def test_every_job_is_handed_out_once_to_an_eligible_slot(seed: int) -> None:
    """Random racks, estimates, import costs, homes, take orders, crashes: each job runs once, where it fits.

    Also: ``has_work_for`` says exactly whether ``take`` gives something, and some slot
    always has work while jobs remain that a slot can run (refusing to split a module
    never leaves its jobs behind).
    """
    rng = random.Random(seed)
    devices = [f"d{i}" for i in range(rng.randint(1, 4))]
    rack = [Slot(f"gw{i}", rng.choice(devices)) for i in range(rng.randint(1, 6))]
    with_slots = sorted({s.device for s in rack})
    device_of = {s.id: s.device for s in rack}
    modules = [f"m{i}" for i in range(45)]
    import_cost = {m: rng.choice([0.0, 0.01, 0.5, 5.0]) for m in modules if rng.random() < 0.7}
    dispatcher = Dispatcher(rack, divisor=rng.choice([1, 2, 4]), import_cost=import_cost)
    all_jobs: list[Job] = []
    batches: dict[str | None, list[Job]] = {}
    for index in range(rng.randint(0, 300)):
        eligible = frozenset(rng.sample(with_slots, rng.randint(1, len(with_slots))))
        estimate = rng.choice([0.0, rng.uniform(0.001, 0.05), rng.uniform(0.5, 3.0)])
        job = Job(f"m{index // 7}.py::t{index}", f"m{index // 7}", index, eligible, estimate)
        all_jobs.append(job)
        home = rng.choice([None, *device_of])
        batches.setdefault(home, []).append(job)
    for home, batch in batches.items():
        dispatcher.add(batch, home=home)
    assert dispatcher.remaining == len(all_jobs)
    expected = sum(j.estimate or DEFAULT_ESTIMATE for j in all_jobs)
    assert dispatcher.remaining_time == pytest.approx(expected)

    ran: Counter[Job] = Counter()
    orphaned: list[Job] = []
    live = dict(device_of)
    while dispatcher.remaining:
        ready = [s for s in live if dispatcher.has_work_for(s)]
        assert ready, f"{dispatcher.remaining} jobs left but no slot has work"
        for idle in set(live) - set(ready):
            assert dispatcher.take(idle) == []
        slot_id = rng.choice(ready)
        chunk = dispatcher.take(slot_id)
        assert chunk, f"has_work_for({slot_id}) but take() gave nothing"
        assert indices(chunk) == sorted(indices(chunk))
        for job in chunk:
            assert live[slot_id] in job.eligible, f"{job} went to {slot_id}"
        roll = rng.random()
        if len(chunk) > 1 and roll < 0.2:  # the worker dies after its first test and restarts
            ran[chunk[0]] += 1
            dispatcher.requeue(chunk[1:])
            dispatcher.drop_slot(slot_id, permanently=rng.random() < 0.3 and len(live) > 1)
        else:
            ran.update(chunk)
        if roll > 0.97 and len(live) > 1:  # a slot is given up
            gone = rng.choice(sorted(live))
            dispatcher.drop_slot(gone, permanently=True)
        elif roll > 0.9:
            dispatcher.mark_imported(rng.choice(sorted(live)), rng.sample(modules, 3))
        live = {s: d for s, d in live.items() if s in dispatcher._slots}
        orphaned.extend(dispatcher.orphans())
    assert all(dispatcher.take(s) == [] for s in live)
    assert not any(dispatcher.has_work_for(s) for s in live)
    assert dispatcher.remaining_time == 0
    assert sorted([*ran, *orphaned], key=lambda j: j.index) == all_jobs
    assert set(ran.values()) <= {1}
    live_devices = set(live.values())
    assert all(not (j.eligible & live_devices) for j in orphaned)


def test_a_slot_takes_its_own_home_jobs_first() -> None:
    """A slot runs the tests of modules it already imported before anything else, in order."""
    dispatcher = Dispatcher(slots("a", "b"))
    dispatcher.add(jobs("m0", range(0, 20)))  # nobody imported m0 yet
    dispatcher.add(jobs("m1", range(20, 40)), home="gw0")
    dispatcher.add(jobs("m2", range(40, 60)), home="gw1")
    assert indices(dispatcher.take("gw1")) == [40, 41, 42, 43, 44, 45, 46, 47]  # ceil(60 / 8)
    assert indices(dispatcher.take("gw0")) == [20, 21, 22, 23, 24, 25, 26]  # ceil(52 / 8)


def test_without_history_a_slot_keeps_to_its_modules_in_collection_order() -> None:
    """Equal estimates: each slot works through the modules it imported, front to back, and no others.

    Only the very last test goes elsewhere: gw1 is done first, and 0.1 s of work pays its 0.01 s import.
    """
    dispatcher = Dispatcher(slots("a", "b"))
    dispatcher.add(jobs("m0", range(0, 10)) + jobs("m2", range(20, 30)), home="gw0")
    dispatcher.add(jobs("m1", range(10, 20)) + jobs("m3", range(30, 40)), home="gw1")
    handouts = drain(dispatcher, ["gw1", "gw0"])
    by_slot = {s: [i for slot_id, chunk in handouts if slot_id == s for i in chunk] for s in ("gw0", "gw1")}
    assert by_slot == {"gw0": [*range(0, 10), *range(20, 29)], "gw1": [*range(10, 20), *range(30, 40), 29]}


def test_a_slot_whose_modules_are_done_moves_to_the_latest_module() -> None:
    """Its own modules done, a slot takes the latest module, away from the worker doing the earlier ones.

    It is the latest whether another slot imported it or nobody did: both cost the same import.
    """
    dispatcher = Dispatcher(slots("a", "b"))
    dispatcher.add(jobs("m0", range(0, 4)), home="gw0")
    dispatcher.add(jobs("m1", range(4, 24)) + jobs("m2", range(24, 44)), home="gw1")
    dispatcher.add(jobs("m3", range(44, 46)))  # nobody imported m3
    assert indices(dispatcher.take("gw0")) == [0, 1, 2, 3]  # chunk ceil(46 / 8) = 6, but m0 has 4
    assert indices(dispatcher.take("gw0")) == [44, 45]  # m3 is the latest: one queue per chunk
    assert indices(dispatcher.take("gw0")) == [24, 25, 26, 27, 28]  # then m2, from its front
    assert indices(dispatcher.take("gw1")) == [4, 5, 6, 7, 8]  # gw1 keeps to m1, from the front
    assert indices(dispatcher.take("gw0")) == [29, 30, 31, 32]  # gw0 imported m2 now: it stays there


def test_a_chunk_comes_from_one_queue() -> None:
    """A chunk never mixes modules, even when the chunk size would allow more."""
    dispatcher = Dispatcher(slots("a", "b"), divisor=1)
    dispatcher.add(jobs("m1", range(0, 2)), home="gw0")
    dispatcher.add(jobs("m2", range(2, 4)))
    dispatcher.add(jobs("m3", range(4, 10)), home="gw1")
    assert indices(dispatcher.take("gw0")) == [0, 1]  # chunk ceil(10 / 2) = 5
    assert indices(dispatcher.take("gw0")) == [4, 5, 6]  # the latest module: half of gw1's m3


def test_a_newcomer_takes_at_most_half_of_a_shared_module() -> None:
    """A slot that joins a module another slot imported takes at most half its queue, then no limit."""
    dispatcher = Dispatcher(slots("a", "b"), divisor=1)
    dispatcher.add(jobs("m1", range(0, 10)) + jobs("m2", range(10, 14)), home="gw0")
    assert indices(dispatcher.take("gw1")) == [10, 11]  # chunk ceil(14 / 2) = 7, half of m2 is 2
    assert indices(dispatcher.take("gw1")) == [12, 13]  # gw1 imported m2 now: no half limit
    assert indices(dispatcher.take("gw0")) == [0, 1, 2, 3, 4]  # ceil(10 / 2)
    assert indices(dispatcher.take("gw1")) == [5, 6]  # ceil(5 / 2) = 3, but at most half of 5
    assert dispatcher.remaining == 3


def test_a_thief_imports_a_module_only_when_the_work_per_slot_pays_for_it() -> None:
    """A module another slot imported is split only if its pending work per eligible slot pays its import."""
    # m1: 4 tests x 0.1 s on 2 eligible slots = 0.2 s per slot.
    cheap = Dispatcher(slots("a", "b"), import_cost={"m1": 0.2})
    cheap.add(jobs("m1", range(0, 4)), home="gw0")
    assert cheap.has_work_for("gw1")
    assert indices(cheap.take("gw1")) == [0]

    dear = Dispatcher(slots("a", "b"), import_cost={"m1": 0.25})
    dear.add(jobs("m1", range(0, 4)), home="gw0")
    assert not dear.has_work_for("gw1")
    assert dear.take("gw1") == []
    dear.add(jobs("m2", range(4, 8), estimate=0.5), home="gw0")  # 1 s per slot pays a 0.01 s import
    assert dear.take("gw1")[0].module == "m2"  # other queues stay open to it
    handouts = drain(dear, ["gw1", "gw0"])
    assert [i for slot_id, chunk in handouts if slot_id == "gw1" for i in chunk if i < 4] == []


def test_a_module_nobody_imported_is_always_open() -> None:
    """However dear the import, a module no slot has imported (or whose importer left) is open to all."""
    dispatcher = Dispatcher(slots("a", "b"), import_cost={"m1": 100.0})
    dispatcher.add(jobs("m1", range(0, 4)))
    assert indices(dispatcher.take("gw1")) == [0]
    assert not dispatcher.has_work_for("gw0")  # gw1 has it now, and 0.3 s of work pays no 100 s import
    dispatcher.drop_slot("gw1", permanently=False)  # its worker is replaced: nothing imported
    assert indices(dispatcher.take("gw0")) == [1]


def test_only_an_eligible_importer_makes_a_module_shared() -> None:
    """An importer that cannot run a queue does not hold it back: nobody else could run it."""
    dispatcher = Dispatcher(slots("a", "b", "b"), import_cost={"m1": 100.0})
    dispatcher.add(jobs("m1", [0], eligible={"a"}), home="gw1")  # gw1 (on b) imported m1
    dispatcher.add(jobs("m1", range(1, 5), eligible={"b"}))
    assert indices(dispatcher.take("gw0")) == [0]
    assert not dispatcher.has_work_for("gw2")  # gw1 could run these, and the import does not pay
    assert drain(dispatcher, ["gw2", "gw1"]) == [("gw1", [1]), ("gw1", [2]), ("gw1", [3]), ("gw1", [4])]


def test_mark_imported_tells_the_dispatcher_what_a_worker_holds() -> None:
    """The controller can say a worker imported a module; the slot then prefers it at no cost."""
    dispatcher = Dispatcher(slots("a", "b"))
    dispatcher.add(jobs("m0", range(0, 10)) + jobs("m1", range(10, 20)))
    dispatcher.mark_imported("gw0", ["m0"])
    dispatcher.mark_imported("gone", ["m1"])  # not a slot: ignored
    assert indices(dispatcher.take("gw0")) == [0, 1, 2]  # not m1, the latest
    assert indices(dispatcher.take("gw1")) == [10, 11, 12]  # m1: nobody imported it, unlike m0


def test_in_each_mode_marking_every_module_imported_keeps_collection_order() -> None:
    """Each-mode workers import every file; told so, each slot runs its device's jobs in collection order.

    Not told, every module looks unimported and equally dear, and the latest module goes first.
    """
    rack = slots("a", "b")

    def each_mode() -> Dispatcher:
        dispatcher = Dispatcher(rack)
        dispatcher.add(
            j for i in range(20) for device in ("a", "b") for j in jobs(f"m{i // 5}", [i], {device})
        )
        return dispatcher

    told = each_mode()
    for slot in rack:
        told.mark_imported(slot.id, ["m0", "m1", "m2", "m3"])
    for slot_id in ("gw0", "gw1"):
        assert [i for s, chunk in drain(told, [slot_id]) if s == slot_id for i in chunk] == list(range(20))
    assert drain(each_mode(), ["gw0"])[:2] == [("gw0", [15, 16, 17, 18, 19]), ("gw0", [10, 11, 12, 13, 14])]


def test_with_history_the_longest_head_wins_across_modules() -> None:
    """Known durations: a slot takes the longest pending test, even from a module it must import."""
    dispatcher = Dispatcher(slots("a", "b", "c"))
    dispatcher.add(jobs("m1", range(0, 20), estimate=0.05), home="gw0")
    dispatcher.add(jobs("m2", [20], estimate=0.5) + jobs("m2", [21], estimate=3.0), home="gw1")
    dispatcher.add(jobs("m3", [22], estimate=2.0))
    assert indices(dispatcher.take("gw0")) == [21]  # 3 s minus a 0.01 s import beats 0.05 s at home
    assert indices(dispatcher.take("gw2")) == [22]
    assert indices(dispatcher.take("gw1")) == [20]
    assert dispatcher.take("gw2")[0].module == "m1"


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
    """Job(...) without an estimate weighs DEFAULT_ESTIMATE, so v1 callers keep count-sized chunks."""
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
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[-9:] == [2, 2, 1, 1, 1, 1, 1, 1, 1]
    assert len(sizes) < 100


def test_requeue_puts_jobs_ahead_of_equal_work() -> None:
    """Tests a dead worker never ran come back first, for any slot, before other pending tests."""
    dispatcher = Dispatcher(slots("a", "b"))
    dispatcher.add(jobs("m1", range(0, 16)), home="gw0")
    dispatcher.add(jobs("m2", range(16, 20)))
    taken = dispatcher.take("gw0")
    assert indices(taken) == [0, 1, 2]  # ceil(20 / 8)
    assert dispatcher.remaining == 17
    dispatcher.requeue(taken[1:])  # test 0 crashed the worker; 1 and 2 never ran
    assert dispatcher.remaining == 19
    assert indices(dispatcher.take("gw1")) == [1, 2]  # before m2, the latest module, and not halved
    assert indices(dispatcher.take("gw1")) == [3, 4, 5]  # gw1 has imported m1 now: it stays there


def test_requeued_jobs_are_open_to_every_eligible_slot() -> None:
    """Requeued jobs skip the rule against splitting a module: they are handed out at once."""
    dispatcher = Dispatcher(slots("a", "b"), import_cost={"m1": 100.0})
    dispatcher.add(jobs("m1", range(0, 4)), home="gw0")
    assert not dispatcher.has_work_for("gw1")
    dispatcher.requeue(jobs("m1", [9]))
    assert indices(dispatcher.take("gw1")) == [9]
    assert indices(dispatcher.take("gw1")) == [0]  # having imported m1 to run it, gw1 pays no more


def test_drop_slot_temporarily_makes_its_home_jobs_homeless() -> None:
    """A dead (restarting) worker's imported tests go to whoever asks, from the front."""
    dispatcher = Dispatcher(slots("a", "b"))
    dispatcher.add(jobs("m1", range(0, 10)), home="gw0")
    dispatcher.drop_slot("gw0", permanently=False)
    assert indices(dispatcher.take("gw1")) == [0, 1]  # homeless, so the whole chunk
    assert dispatcher.has_work_for("gw0")
    assert indices(dispatcher.take("gw0")) == [2]
    assert dispatcher.orphans() == []


def test_drop_slot_permanently_orphans_jobs_no_slot_can_run() -> None:
    """When a device's last slot is gone, its exclusive jobs are orphans; shared ones stay."""
    dispatcher = Dispatcher(slots("a", "b", "c", "c"))
    only_a = jobs("ma", [0, 4], eligible={"a"})
    a_or_b = jobs("mab", [1], eligible={"a", "b"})
    only_c = jobs("mc", [2], eligible={"c"})
    home_a = jobs("mh", [3], eligible={"a"})
    dispatcher.add(only_a + a_or_b + only_c)
    dispatcher.add(home_a, home="gw0")
    dispatcher.drop_slot("gw2", permanently=True)  # c still has gw3
    assert dispatcher.orphans() == []
    dispatcher.drop_slot("gw0", permanently=True)
    assert dispatcher.orphans() == [only_a[0], home_a[0], only_a[1]]
    assert dispatcher.orphans() == []
    assert dispatcher.remaining == 2
    assert indices(dispatcher.take("gw1")) == [1]
    assert indices(dispatcher.take("gw3")) == [2]
    assert dispatcher.remaining == 0
    assert dispatcher.remaining_time == 0


def test_handout_does_not_depend_on_the_order_jobs_were_added() -> None:
    """Like labgrid's test_sched: adding the same batches in any order gives the same handouts.

    What a slot is offered does depend on what it took before (it has imported those
    modules), so the order of take() calls matters; the order of add() calls does not.
    """
    batches: list[tuple[str | None, list[Job]]] = [
        ("gw0", jobs("m1", range(0, 6))),
        ("gw1", jobs("m2", range(6, 12))),
        (None, jobs("m3", range(12, 14), eligible={"a"})),
        (None, jobs("m4", range(14, 16), eligible={"c"})),
        ("gw2", jobs("m5", range(16, 20), estimate=0.5)),
    ]
    outcomes = set()
    for order in itertools.permutations(batches):
        dispatcher = Dispatcher(slots("a", "b", "c", "c"), import_cost={"m2": 0.2})
        for home, batch in order:
            dispatcher.add(batch, home=home)
        outcomes.add(repr(drain(dispatcher, ["gw3", "gw2", "gw1", "gw0"])))
    assert len(outcomes) == 1, "\n".join(sorted(outcomes))


@pytest.mark.parametrize("seed", range(10))
def test_random_handouts_do_not_depend_on_the_order_jobs_were_added(seed: int) -> None:
    """Random homes, eligibility and estimates: shuffling the add() calls (and their jobs) changes nothing."""
    rng = random.Random(seed)
    rack = slots("a", "a", "b", "c")
    by_key: dict[tuple[str | None, frozenset[str]], list[Job]] = {}
    for index in range(rng.randint(1, 80)):
        eligible = frozenset(rng.sample(["a", "b", "c"], rng.randint(1, 3)))
        home = rng.choice([None, "gw0", "gw1", "gw2", "gw3"])
        estimate = rng.choice([0.0, 0.1, rng.uniform(0.01, 2.0)])
        job = Job(f"m{index // 5}.py::t{index}", f"m{index // 5}", index, eligible, estimate)
        by_key.setdefault((home, eligible), []).append(job)
    batches = list(by_key.items())
    import_cost = {f"m{i}": rng.choice([0.0, 0.05, 1.0]) for i in range(16)}
    outcomes = set()
    for _ in range(6):
        rng.shuffle(batches)
        dispatcher = Dispatcher(rack, import_cost=import_cost)
        for (home, _eligible), batch in batches:
            dispatcher.add(rng.sample(batch, len(batch)), home=home)
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
        )
        for i, d in enumerate(durations)
    ]


# Collection spreads the files over the workers, as the controller does in load mode.
HOMES = {s.id: {f"w2_{f:02d}" for f in range(i, 20, 4)} for i, s in enumerate(W2_SLOTS)}


def simulate(dispatcher: Dispatcher, durations: dict[str, float], import_cost: float) -> float:
    """Greedy pull: the slot that is free first takes the next chunk and runs it; the makespan.

    A slot pays ``import_cost`` for each module it had not imported. A slot that gets
    nothing stops, as a worker told NoMoreWork does: with nothing added, requeued or
    dropped, the split rule only closes queues as they drain, never opens them.
    """
    clock = {s.id: 0.0 for s in W2_SLOTS}
    imported = {slot_id: set(modules) for slot_id, modules in HOMES.items()}
    working = set(clock)
    while dispatcher.remaining:
        assert working, "work left that no slot may take"
        slot_id = min(working, key=lambda s: (clock[s], s))
        chunk = dispatcher.take(slot_id)
        if not chunk:
            working.remove(slot_id)
            continue
        new = {j.module for j in chunk} - imported[slot_id]
        imported[slot_id] |= new
        clock[slot_id] += len(new) * import_cost + sum(durations[j.nodeid] for j in chunk)
    return max(clock.values())


def run_w2(seed: int, with_history: bool) -> tuple[float, float, float]:
    """(simulated makespan, lpt_makespan, lower_bound) of W2 on 4 slots."""
    durations = w2_durations(seed)
    all_jobs = w2_jobs(durations, with_history)
    dispatcher = Dispatcher(W2_SLOTS)
    for slot_id, modules in HOMES.items():
        dispatcher.add([j for j in all_jobs if j.module in modules], home=slot_id)
    makespan = simulate(
        dispatcher, {j.nodeid: d for j, d in zip(all_jobs, durations, strict=True)}, DEFAULT_IMPORT_COST
    )
    return makespan, lpt_makespan(durations, 4), lower_bound(durations, 4)


@pytest.mark.parametrize("seed", [2024, 7, 11])
def test_with_history_w2_comes_within_2_percent_of_lpt(seed: int) -> None:
    """Known durations: long tests go first across modules and the W2 makespan is LPT's, within 2%."""
    makespan, lpt, bound = run_w2(seed, with_history=True)
    assert bound <= lpt <= makespan <= 1.02 * lpt


def test_without_history_w2_runs_its_long_tests_last() -> None:
    """The same workload without history keeps collection order, so the long tests end it late."""
    makespan, lpt, _bound = run_w2(2024, with_history=False)
    assert makespan > 1.05 * lpt


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
