"""Seeded order, the split over slots and replay, as pure functions (property tests)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testrack.ordering import (
    BUCKETS,
    SEED_LIMIT,
    RoutedTest,
    choose_seed,
    group_of,
    module_of,
    replay_sequences,
    seeded_order,
    split_tests,
)
from testrack.scheduling import Slot
from testrack.store import ImportCost, Result

# Node ids of a small made-up suite: modules, classes, parameters (one holding "::").
_modules = st.sampled_from(["tests/test_a.py", "tests/test_b.py", "test_c.py", "sub/test_d.py", "test_e.py"])
_classes = st.sampled_from(["", "TestOne::", "TestTwo::", "TestOne::TestInner::"])
_names = st.sampled_from(["test_x", "test_y", "test_z", "test_w"])
_params = st.sampled_from(["", "[1]", "[2]", "[a::b]", "[c-d]"])
nodeids = st.builds(lambda m, c, n, p: f"{m}::{c}{n}{p}", _modules, _classes, _names, _params)
suites = st.lists(nodeids, min_size=1, max_size=60, unique=True)
seeds = st.integers(min_value=0, max_value=2**40)
buckets = st.sampled_from(BUCKETS)
modes = st.sampled_from(["load", "each"])


def test_parts_of_a_node_id() -> None:
    assert module_of("tests/test_a.py::TestOne::test_x[a::b]") == "tests/test_a.py"
    assert group_of("tests/test_a.py::TestOne::test_x[a::b]") == "tests/test_a.py::TestOne"
    assert group_of("tests/test_a.py::test_x[1]") == "tests/test_a.py"


def test_a_chosen_seed_is_short() -> None:
    assert all(0 <= choose_seed() < SEED_LIMIT for _ in range(100))


@given(suite=suites, seed=seeds, bucket=buckets, data=st.data())
def test_the_order_depends_on_the_seed_and_the_ids_only(suite, seed, bucket, data) -> None:
    """The same tests in any input order, in any process, give the same order."""
    shuffled = data.draw(st.permutations(suite))
    order = seeded_order(suite, seed, bucket)
    assert order == seeded_order(shuffled, seed, bucket)
    assert sorted(order) == sorted(suite)


@given(suite=suites, extra=suites, seed=seeds, bucket=buckets)
def test_adding_or_removing_tests_keeps_the_others_relative_order(suite, extra, seed, bucket) -> None:
    """Adding tests (or removing them) never reorders the tests that were already there."""
    before = seeded_order(suite, seed, bucket)
    after = seeded_order(suite + extra, seed, bucket)
    kept = set(suite)
    assert [t for t in after if t in kept] == before
    removed = set(suite[: len(suite) // 2])
    assert seeded_order([t for t in suite if t not in removed], seed, bucket) == [
        t for t in before if t not in removed
    ]


def _contiguous(sequence: list[str], key) -> bool:
    seen: list[str] = []
    for item in sequence:
        k = key(item)
        if seen and seen[-1] == k:
            continue
        if k in seen:
            return False
        seen.append(k)
    return True


@given(suite=suites, seed=seeds)
def test_module_bucket_keeps_modules_together(suite, seed) -> None:
    assert _contiguous(seeded_order(suite, seed, "module"), module_of)


@given(suite=suites, seed=seeds)
def test_class_bucket_keeps_modules_and_classes_together(suite, seed) -> None:
    order = seeded_order(suite, seed, "class")
    assert _contiguous(order, module_of) and _contiguous(order, group_of)


def test_the_seed_changes_the_order() -> None:
    """Different seeds give different orders, of modules and within them."""
    suite = [f"test_{m}.py::test_{i}" for m in "abcdef" for i in range(8)]
    orders = {tuple(seeded_order(suite, seed)) for seed in range(20)}
    assert len(orders) == 20
    modules = {tuple(dict.fromkeys(module_of(t) for t in order)) for order in orders}
    assert len(modules) > 5


def test_an_unknown_bucket_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown bucket 'file'; use one of module, class, global"):
        seeded_order(["a.py::t"], 1, "file")


# ---------------------------------------------------------------------------------- the split

_devices = ["board-1", "board-2", "board-3"]


@st.composite
def racks(draw) -> list[Slot]:
    """1-3 devices with 1-3 slots each, numbered gw0.. as the launcher numbers them."""
    slots = []
    for device in _devices[: draw(st.integers(1, 3))]:
        for _ in range(draw(st.integers(1, 3))):
            slots.append(Slot(f"gw{len(slots)}", device))
    return slots


@st.composite
def routed_suites(draw) -> list[RoutedTest]:
    tests = draw(suites)
    everywhere = draw(st.booleans())
    routed = []
    for nodeid in tests:
        eligible = (
            frozenset(_devices)
            if everywhere
            else frozenset(draw(st.sets(st.sampled_from(_devices), min_size=0, max_size=3)))
        )
        routed.append(RoutedTest(nodeid, eligible))
    return routed


@settings(max_examples=150)
@given(tests=routed_suites(), slots=racks(), seed=seeds, bucket=buckets, mode=modes)
def test_the_split_respects_routing_and_runs_everything_once(tests, slots, seed, bucket, mode) -> None:
    """Load: each runnable test once, on an eligible device. Each: once per eligible device."""
    split = split_tests(tests, slots, seed, bucket, mode)
    device_of = {s.id: s.device for s in slots}
    ran = [(nodeid, device_of[slot]) for slot, sequence in split.sequences.items() for nodeid in sequence]
    present = set(device_of.values())
    runnable = [t for t in tests if t.eligible & present]
    if mode == "load":
        assert sorted(n for n, _ in ran) == sorted(t.nodeid for t in runnable)
    else:
        assert sorted(ran) == sorted((t.nodeid, d) for t in runnable for d in t.eligible & present)
    eligible = {t.nodeid: t.eligible for t in tests}
    assert all(device in eligible[nodeid] for nodeid, device in ran)
    assert sorted(split.unrunnable) == sorted(t.nodeid for t in tests if not t.eligible & present)
    assert set(split.sequences) == set(device_of)


@settings(max_examples=150)
@given(tests=routed_suites(), slots=racks(), seed=seeds, bucket=buckets, mode=modes)
def test_each_slot_runs_its_tests_in_the_seeded_order(tests, slots, seed, bucket, mode) -> None:
    """A slot's sequence is a subsequence of the seeded order: its modules stay together."""
    order = {n: i for i, n in enumerate(seeded_order([t.nodeid for t in tests], seed, bucket))}
    split = split_tests(tests, slots, seed, bucket, mode)
    for sequence in split.sequences.values():
        assert [order[n] for n in sequence] == sorted(order[n] for n in sequence)
        if bucket != "global":
            assert _contiguous(list(sequence), module_of)


@settings(max_examples=100)
@given(tests=routed_suites(), slots=racks(), seed=seeds, bucket=buckets, data=st.data())
def test_the_split_depends_on_seed_tests_and_slots_only(tests, slots, seed, bucket, data) -> None:
    """The tests in another order (as another collection would list them) give the same split."""
    shuffled = data.draw(st.permutations(tests))
    for mode in ("load", "each"):
        expected = split_tests(tests, slots, seed, bucket, mode)
        assert split_tests(shuffled, slots, seed, bucket, mode) == expected


@given(suite=suites, count=st.integers(1, 8), seed=seeds, bucket=buckets)
def test_load_mode_levels_the_counts_and_splits_few_modules(suite, count, seed, bucket) -> None:
    """Open to every slot: counts differ by at most one, and at most count - 1 modules are cut."""
    slots = [Slot(f"gw{i}", "local") for i in range(count)]
    split = split_tests([RoutedTest(n, frozenset(["local"])) for n in suite], slots, seed, bucket)
    sizes = [len(s) for s in split.sequences.values()]
    assert max(sizes) - min(sizes) <= 1
    if bucket != "global":
        owners: dict[str, set[str]] = {}
        for slot, sequence in split.sequences.items():
            for nodeid in sequence:
                owners.setdefault(module_of(nodeid), set()).add(slot)
        cuts = sum(len(o) - 1 for o in owners.values())
        assert cuts <= count - 1


def test_each_mode_gives_a_one_slot_device_every_test_it_may_run_in_seeded_order() -> None:
    tests = [RoutedTest(f"test_{m}.py::test_{i}", frozenset(_devices)) for m in "abc" for i in range(4)]
    tests.append(RoutedTest("test_d.py::test_only_2", frozenset(["board-2"])))
    slots = [Slot("gw0", "board-1"), Slot("gw1", "board-2"), Slot("gw2", "board-3")]
    split = split_tests(tests, slots, seed=7, mode="each")
    order = seeded_order([t.nodeid for t in tests], 7)
    assert split.sequences["gw1"] == tuple(order)
    assert split.sequences["gw0"] == split.sequences["gw2"] == tuple(n for n in order if "only_2" not in n)


def test_a_constrained_group_is_placed_first() -> None:
    """Tests only board-2 may run fill board-2 first; the rest level around them."""
    tests = [RoutedTest(f"test_two.py::test_{i}", frozenset(["board-2"])) for i in range(4)]
    tests += [RoutedTest(f"test_any.py::test_{i}", frozenset(["board-1", "board-2"])) for i in range(6)]
    slots = [Slot("gw0", "board-1"), Slot("gw1", "board-2")]
    split = split_tests(tests, slots, seed=3)
    assert sorted(len(s) for s in split.sequences.values()) == [5, 5]
    assert all("test_two" not in n for n in split.sequences["gw0"])


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown mode 'all'; use load or each"):
        split_tests([], [Slot("gw0", "x")], 1, mode="all")


# ---------------------------------------------------------------------------------- replay


def _results(sequences: dict[str, tuple[str, list[list[str]]]], rng: random.Random) -> list[Result]:
    """Results as a run records them: workers interleaved, each worker's own in order."""
    streams = []
    for worker, (device, processes) in sequences.items():
        stream = []
        for process in processes:
            stream += [
                Result(nodeid, device, worker, "passed", 0.1, 0.0, 0.1, position=i)
                for i, nodeid in enumerate(process)
            ]
        streams.append(stream)
    out: list[Result] = []
    while any(streams):
        stream = rng.choice([s for s in streams if s])
        out.append(stream.pop(0))
    return out


@given(seed=st.integers(0, 1000))
def test_replay_gives_back_each_workers_sequence(seed: int) -> None:
    """Interleaved results (and a crash that restarted gw1's worker) -> each worker's sequence."""
    rng = random.Random(seed)
    ran = {
        "gw0": ("board-1", [["a.py::t1", "b.py::t1", "a.py::t2"]]),
        "gw1": ("board-2", [["c.py::t1", "c.py::t2"], ["c.py::t3", "a.py::t3"]]),
        "gw2": ("board-2", [["b.py::t2"]]),
    }
    results = _results(ran, rng)
    results.insert(rng.randrange(len(results) + 1), Result("d.py::t", "-", "-", "unmatched", 0, 0, 0))
    replay = replay_sequences(results)
    assert set(replay) == {"gw0", "gw1", "gw2"}
    assert replay["gw0"].tests == ("a.py::t1", "b.py::t1", "a.py::t2")
    assert replay["gw0"].imports == ("a.py", "b.py")
    gw1 = replay["gw1"]
    assert gw1.device == "board-2"
    assert gw1.tests == ("c.py::t1", "c.py::t2", "c.py::t3", "a.py::t3")
    assert gw1.processes == (0, 2)
    assert gw1.process_of(3) == ("c.py::t3",)
    assert gw1.process_of(1) == ("c.py::t1",)


def test_replay_uses_the_recorded_import_order_when_given() -> None:
    results = [Result("b.py::t", "local", "gw0", "passed", 0, 0, 0, position=0)]
    imports = [ImportCost("/p/a.py", "gw0", "local", 0.1), ImportCost("/p/b.py", "gw0", "local", 0.1)]
    assert replay_sequences(results, imports)["gw0"].imports == ("/p/a.py", "/p/b.py")


def test_replay_keeps_a_test_its_worker_ran_twice() -> None:
    """A DeviceError retry on the same worker runs the test again: the sequence has it twice."""
    results = [
        Result("a.py::t", "local", "gw0", "device_error", 0, 0, 0, position=0),
        Result("a.py::u", "local", "gw0", "passed", 0, 0, 0, position=1),
        Result("a.py::t", "local", "gw0", "passed", 0, 0, 0, position=2),
    ]
    replay = replay_sequences(results)["gw0"]
    assert replay.tests == ("a.py::t", "a.py::u", "a.py::t")
    assert replay.outcomes == ("device_error", "passed", "passed")
