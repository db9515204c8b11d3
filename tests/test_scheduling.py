"""Pure scheduling, without processes: marker requirements, matching, and the Dispatcher."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence

import pytest

from testrack.rack import Device
from testrack.scheduling import Dispatcher, Job, Slot, describe_requirements, matches
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


# -- Dispatcher -----------------------------------------------------------------------------------

ALL = frozenset({"a", "b", "c"})


def jobs(module: str, indices: Iterable[int], eligible: Iterable[str] = ALL) -> list[Job]:
    return [Job(f"{module}.py::test_{i}", module, i, frozenset(eligible)) for i in indices]


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


@pytest.mark.parametrize("seed", range(20))
def test_every_job_is_handed_out_once_to_an_eligible_slot(seed: int) -> None:
    """Random racks, jobs, homes, take orders, crashes: each job runs once, on a device it fits."""
    rng = random.Random(seed)
    devices = [f"d{i}" for i in range(rng.randint(1, 4))]
    rack = [Slot(f"gw{i}", rng.choice(devices)) for i in range(rng.randint(1, 6))]
    with_slots = sorted({s.device for s in rack})
    device_of = {s.id: s.device for s in rack}
    dispatcher = Dispatcher(rack, divisor=rng.choice([1, 2, 4]))
    all_jobs: list[Job] = []
    batches: dict[str | None, list[Job]] = {}
    for index in range(rng.randint(0, 300)):
        eligible = frozenset(rng.sample(with_slots, rng.randint(1, len(with_slots))))
        job = Job(f"m{index // 7}.py::t{index}", f"m{index // 7}", index, eligible)
        all_jobs.append(job)
        home = rng.choice([None, *device_of])
        batches.setdefault(home, []).append(job)
    for home, batch in batches.items():
        dispatcher.add(batch, home=home)
    assert dispatcher.remaining == len(all_jobs)

    ran: Counter[Job] = Counter()
    while dispatcher.remaining:
        ready = [s for s in device_of if dispatcher.has_work_for(s)]
        assert ready, f"{dispatcher.remaining} jobs left but no slot has work"
        slot_id = rng.choice(ready)
        chunk = dispatcher.take(slot_id)
        assert chunk, f"has_work_for({slot_id}) but take() gave nothing"
        assert indices(chunk) == sorted(indices(chunk))
        for job in chunk:
            assert device_of[slot_id] in job.eligible, f"{job} went to {slot_id}"
        if len(chunk) > 1 and rng.random() < 0.2:  # the worker dies after its first test
            ran[chunk[0]] += 1
            dispatcher.requeue(chunk[1:])
        else:
            ran.update(chunk)
    assert all(dispatcher.take(s) == [] for s in device_of)
    assert not any(dispatcher.has_work_for(s) for s in device_of)
    assert sorted(ran, key=lambda j: j.index) == all_jobs
    assert set(ran.values()) <= {1}


def test_a_slot_takes_its_own_home_jobs_first() -> None:
    """A slot runs the tests of modules it already imported before anything else, in order."""
    dispatcher = Dispatcher(slots("a", "b"))
    dispatcher.add(jobs("m0", range(0, 20)))  # nobody imported m0 yet
    dispatcher.add(jobs("m1", range(20, 40)), home="gw0")
    dispatcher.add(jobs("m2", range(40, 60)), home="gw1")
    assert indices(dispatcher.take("gw1")) == [40, 41, 42, 43, 44, 45, 46, 47]  # ceil(60 / 8)
    assert indices(dispatcher.take("gw0")) == [20, 21, 22, 23, 24, 25, 26]  # ceil(52 / 8)


def test_homeless_jobs_come_before_stealing() -> None:
    """A slot with no home jobs takes unimported tests before stealing a busy slot's tests."""
    dispatcher = Dispatcher(slots("a", "b"))
    dispatcher.add(jobs("m1", range(0, 30)), home="gw0")
    dispatcher.add(jobs("m2", range(30, 32)))
    assert indices(dispatcher.take("gw1")) == [30, 31]  # chunk 4, but only 2 homeless
    assert indices(dispatcher.take("gw1")) == [26, 27, 28, 29]  # now it steals


def test_own_home_then_homeless_then_stealing() -> None:
    """Once its home is empty, a slot moves to homeless tests, and only then to others' homes."""
    dispatcher = Dispatcher(slots("a", "b"), divisor=1)
    dispatcher.add(jobs("m1", range(0, 2)), home="gw0")
    dispatcher.add(jobs("m2", range(2, 4)))
    dispatcher.add(jobs("m3", range(4, 10)), home="gw1")
    assert indices(dispatcher.take("gw0")) == [0, 1, 2, 3]  # chunk 5: all its home, then homeless
    assert indices(dispatcher.take("gw0")) == [7, 8, 9]  # steal half of gw1's 6, from the back


def test_stealing_takes_from_the_back_one_module_at_a_time() -> None:
    """A thief takes the victim's last module, at most half its queue; the owner keeps the front."""
    dispatcher = Dispatcher(slots("a", "b"), divisor=1)
    dispatcher.add(jobs("m1", range(0, 10)) + jobs("m2", range(10, 14)), home="gw0")
    # chunk ceil(14 / 2) = 7 and half the queue is 7, but module m2 has only 4 tests
    assert indices(dispatcher.take("gw1")) == [10, 11, 12, 13]
    assert indices(dispatcher.take("gw0")) == [0, 1, 2, 3, 4]  # ceil(10 / 2), from the front
    assert indices(dispatcher.take("gw1")) == [8, 9]  # ceil(5 / 2) = 3, but at most half of 5
    assert dispatcher.remaining == 3


def test_thief_picks_the_fullest_queue() -> None:
    """A slot with nothing to do steals from the slot with the most pending tests."""
    dispatcher = Dispatcher(slots("a", "b", "c"))
    dispatcher.add(jobs("m1", range(0, 4)), home="gw0")
    dispatcher.add(jobs("m2", range(4, 40)), home="gw1")
    assert indices(dispatcher.take("gw2")) == [36, 37, 38, 39]  # ceil(40 / 12)


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


def test_requeue_puts_jobs_at_the_front() -> None:
    """Tests a dead worker never ran come back first, for any slot, before other pending tests."""
    dispatcher = Dispatcher(slots("a", "b"))
    dispatcher.add(jobs("m1", range(0, 16)), home="gw0")
    dispatcher.add(jobs("m2", range(16, 20)))
    taken = dispatcher.take("gw0")
    assert indices(taken) == [0, 1, 2]  # ceil(20 / 8)
    assert dispatcher.remaining == 17
    dispatcher.requeue(taken[1:])  # test 0 crashed the worker; 1 and 2 never ran
    assert dispatcher.remaining == 19
    assert indices(dispatcher.take("gw1")) == [1, 2, 16]  # not stolen from gw0's back


def test_drop_slot_temporarily_makes_its_home_jobs_homeless() -> None:
    """A dead (restarting) worker's imported tests go to whoever asks, from the front."""
    dispatcher = Dispatcher(slots("a", "b"))
    dispatcher.add(jobs("m1", range(0, 10)), home="gw0")
    dispatcher.drop_slot("gw0", permanently=False)
    assert indices(dispatcher.take("gw1")) == [0, 1]  # homeless, so from the front
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


def test_handout_does_not_depend_on_the_order_jobs_were_added() -> None:
    """Like labgrid's test_sched: adding the same batches in any order gives the same handouts."""
    batches: list[tuple[str | None, list[Job]]] = [
        ("gw0", jobs("m1", range(0, 6))),
        ("gw1", jobs("m2", range(6, 12))),  # as full as gw0's: a tie for a thief
        (None, jobs("m3", range(12, 14), eligible={"a"})),
        (None, jobs("m4", range(14, 16), eligible={"c"})),
    ]
    outcomes = set()
    for order in itertools.permutations(batches):
        dispatcher = Dispatcher(slots("a", "b", "c", "c"))
        for home, batch in order:
            dispatcher.add(batch, home=home)
        outcomes.add(repr(drain(dispatcher, ["gw3", "gw2", "gw1", "gw0"])))
    assert len(outcomes) == 1, "\n".join(sorted(outcomes))


@pytest.mark.parametrize("seed", range(10))
def test_random_handouts_do_not_depend_on_the_order_jobs_were_added(seed: int) -> None:
    """Random homes and eligibility: shuffling the order of the add() calls changes nothing."""
    rng = random.Random(seed)
    rack = slots("a", "a", "b", "c")
    by_key: dict[tuple[str | None, frozenset[str]], list[Job]] = {}
    for index in range(rng.randint(1, 80)):
        eligible = frozenset(rng.sample(["a", "b", "c"], rng.randint(1, 3)))
        home = rng.choice([None, "gw0", "gw1", "gw2", "gw3"])
        job = Job(f"m{index // 5}.py::t{index}", f"m{index // 5}", index, eligible)
        by_key.setdefault((home, eligible), []).append(job)
    batches = list(by_key.items())
    outcomes = set()
    for _ in range(6):
        rng.shuffle(batches)
        dispatcher = Dispatcher(rack)
        for (home, _eligible), batch in batches:
            dispatcher.add(batch, home=home)
        outcomes.add(repr(drain(dispatcher, ["gw3", "gw0", "gw2", "gw1"])))
    assert len(outcomes) == 1, "\n".join(sorted(outcomes))


def test_booleans_do_not_match_numbers() -> None:
    """device(count=1) does not match a device whose count is true (True == 1 in Python)."""
    from testrack.rack import Device as _Device
    from testrack.scheduling.matching import matches as _matches

    dev = _Device("a", "k", "x", attrs={"count": True, "n": 1})
    assert not _matches(dev, [(("count", (1,)),)])
    assert _matches(dev, [(("count", (True,)),)])
    assert not _matches(dev, [(("n", (True,)),)])
    assert _matches(dev, [(("n", (1,)),)])
