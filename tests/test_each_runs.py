"""Each mode for multi-device tests: every device takes every role it can, in the fewest runs."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from testrack.rack import Device
from testrack.scheduling.each import each_runs, lower_bound, min_cost_assignment
from testrack.scheduling.matching import matches
from testrack.scheduling.requests import DeviceRequest, Role, request_from_marker


def phones(n: int) -> list[Device]:
    return [Device(f"phone-{i}", "phone", f"10.0.1.{i}") for i in range(1, n + 1)]


def req(*args: Any, **kwargs: Any) -> DeviceRequest:
    return request_from_marker(args, kwargs)


def covered(request: DeviceRequest, runs: Sequence[tuple[str, ...]]) -> set[tuple[str | None, str]]:
    """(role, device) pairs the runs give."""
    return {(role.name, name) for run in runs for role, name in zip(request.positions(), run, strict=True)}


def check_runs(request: DeviceRequest, devices: Sequence[Device], runs: Sequence[tuple[str, ...]]) -> None:
    """Every run is a complete set: distinct devices, each matching its position's role."""
    by_name = {d.name: d for d in devices}
    for run in runs:
        assert len(set(run)) == len(run) == request.size
        for role, name in zip(request.positions(), run, strict=True):
            assert matches(by_name[name], [role.requirement])


def test_caller_and_callee_take_turns_around_a_ring() -> None:
    """Two roles over the same three phones: three runs, every phone calls and is called."""
    request = req(caller={"kind": "phone"}, callee={"kind": "phone"})
    runs = each_runs(request, phones(3))
    assert runs == (("phone-1", "phone-2"), ("phone-3", "phone-1"), ("phone-2", "phone-3"))
    assert covered(request, runs) == {(r, f"phone-{i}") for r in ("caller", "callee") for i in (1, 2, 3)}
    assert lower_bound(request, phones(3)) == 3
    assert len({run[0] for run in runs}) == 3  # each run on a different worker


def test_short_form_covers_every_device_once() -> None:
    """devices(2) over five phones: three runs, the last one reusing a phone."""
    runs = each_runs(req(2, kind="phone"), phones(5))
    assert runs == (("phone-1", "phone-2"), ("phone-3", "phone-4"), ("phone-5", "phone-1"))


def test_disjoint_roles_meet_the_lower_bound() -> None:
    """One host serving two clients out of three phones: two runs, the host in both."""
    request = req(server={"kind": "host"}, client={"kind": "phone", "count": 2})
    devices = [Device("host-1", "host", "h"), *phones(3)]
    runs = each_runs(request, devices)
    assert runs == (("host-1", "phone-1", "phone-2"), ("host-1", "phone-3", "phone-1"))
    assert len(runs) == lower_bound(request, devices) == 2


def test_a_role_a_device_can_never_take_is_left_out() -> None:
    """phone-1 matches 'any' but the other role needs it every time: it only ever plays 'ios'."""
    devices = [Device("phone-1", "phone", "a", attrs={"os": "ios"}), Device("phone-2", "phone", "b")]
    request = req(any={"kind": "phone"}, ios={"os": "ios"})
    assert each_runs(request, devices) == (("phone-2", "phone-1"),)
    assert lower_bound(request, devices) == 1


def test_no_complete_set_no_runs() -> None:
    """A request the devices cannot serve has no runs (shortfall says why)."""
    assert each_runs(req(3, kind="phone"), phones(2)) == ()
    assert lower_bound(req(3, kind="phone"), phones(2)) == 0


def test_min_cost_assignment_is_optimal() -> None:
    """The Hungarian method matches brute force on random matrices."""
    rng = random.Random(3)
    for _ in range(200):
        rows, cols = rng.randint(1, 4), rng.randint(4, 6)
        cost = [[rng.randint(-9, 9) for _ in range(cols)] for _ in range(rows)]
        chosen = min_cost_assignment(cost)
        assert len(set(chosen)) == rows
        best = min(
            sum(cost[r][c] for r, c in enumerate(perm)) for perm in itertools.permutations(range(cols), rows)
        )
        assert sum(cost[r][c] for r, c in enumerate(chosen)) == best


# -- against the exhaustive optimum on small racks -------------------------------------------------

KIND_OPTIONS = (("a",), ("b",), ("a", "b"))


@st.composite
def instances(draw: st.DrawFn) -> tuple[DeviceRequest, list[Device]]:
    devices = [
        Device(f"d{i}", draw(st.sampled_from("ab")), "x", attrs={"f": draw(st.integers(1, 3))})
        for i in range(draw(st.integers(2, 6)))
    ]
    roles = []
    for r in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(("kind", "f")))
        values = (
            draw(st.sampled_from(KIND_OPTIONS))
            if key == "kind"
            else tuple(draw(st.sets(st.integers(1, 3), min_size=1)))
        )
        roles.append(Role(f"r{r}", ((key, values),), draw(st.integers(1, 2))))
    return DeviceRequest(tuple(roles)), devices


def fewest_runs(request: DeviceRequest, devices: Sequence[Device], pairs: set[tuple[str | None, str]]) -> int:
    """The true minimum, by iterative deepening over every complete set."""
    sets = set()
    for combo in itertools.permutations(devices, request.size):
        if all(matches(d, [role.requirement]) for role, d in zip(request.positions(), combo, strict=True)):
            sets.add(
                frozenset((role.name, d.name) for role, d in zip(request.positions(), combo, strict=True))
            )
    options = list(sets)

    counts = {role.name: role.count for role in request.roles}

    def cover(left: frozenset[tuple[str | None, str]], budget: int) -> bool:
        if not left:
            return True
        per_role: dict[str | None, int] = {}
        per_device: dict[str, int] = {}
        for role, name in left:
            per_role[role] = per_role.get(role, 0) + 1
            per_device[name] = per_device.get(name, 0) + 1
        needed = max(max(-(-n // counts[r]) for r, n in per_role.items()), max(per_device.values()))
        if needed > budget:
            return False
        first = min(left, key=str)
        return any(cover(left - run, budget - 1) for run in options if first in run)

    budget = 0
    while not cover(frozenset(pairs), budget):
        budget += 1
    return budget


@settings(max_examples=150, deadline=None)
@given(instances())
def test_runs_are_complete_sets_covering_every_pair(instance: tuple[DeviceRequest, list[Device]]) -> None:
    """Every (role, device) pair some complete set has is covered, by valid runs, never below the bound;
    when the roles' devices do not overlap, in exactly the lower bound."""
    request, devices = instance
    runs = each_runs(request, devices)
    check_runs(request, devices, runs)
    assert covered(request, runs) == possible_pairs(request, devices)
    if not runs:
        return
    assert lower_bound(request, devices) <= len(runs)
    matching = [{d.name for d in devices if matches(d, [role.requirement])} for role in request.roles]
    if all(a.isdisjoint(b) for a, b in itertools.combinations(matching, 2)):
        assert len(runs) == lower_bound(request, devices)


def test_overlapping_roles_can_take_one_run_more_than_the_minimum() -> None:
    """A case the property test found: 4 runs would do; the greedy covers everything in at most 5."""
    devices = [
        Device("d0", "a", "x", attrs={"f": 1}),
        Device("d1", "a", "x", attrs={"f": 1}),
        Device("d2", "b", "x", attrs={"f": 1}),
        Device("d3", "b", "x", attrs={"f": 1}),
        Device("d4", "b", "x", attrs={"f": 2}),
    ]
    request = req(r0={"kind": "b", "count": 2}, r1={"f": 1}, r2={"f": 1})
    pairs = possible_pairs(request, devices)
    runs = each_runs(request, devices)
    assert covered(request, runs) == pairs
    assert lower_bound(request, devices) == fewest_runs(request, devices, pairs) == 4
    assert len(runs) in (4, 5)


def possible_pairs(request: DeviceRequest, devices: Sequence[Device]) -> set[tuple[str | None, str]]:
    """(role, device) pairs of every complete set, by brute force."""
    possible = set()
    for combo in itertools.permutations(devices, request.size):
        if all(matches(d, [role.requirement]) for role, d in zip(request.positions(), combo, strict=True)):
            possible |= {(role.name, d.name) for role, d in zip(request.positions(), combo, strict=True)}
    return possible
