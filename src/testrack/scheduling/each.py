"""Each mode for a test that needs several devices: which sets of devices it runs on.

Each mode proves every device meets the spec. For a test on one device that means
one run per matching device. For a test with roles it means: **every device takes
every role it matches at least once, in as few runs as possible.** A call test
with ``caller`` and ``callee`` phones runs until each phone has called and been
called; a ``server`` host with two ``client`` boards runs until every host has
served and every board has been a client. A device that matches a role but can
never take it in a complete set (the other roles would run out of devices) is left
out of that role.

No schedule can use fewer runs than the larger of: for each role, its matching
devices divided by its count, rounded up; for each device, the number of roles it
matches. :func:`lower_bound` computes it. :func:`each_runs` builds the runs greedily,
each one a complete set (a minimum-cost assignment) that covers as many new
(device, role) pairs as it can, the pairs of the devices and roles with the most
left to cover first, and every run's first device (the one that runs the test)
different where it can be; it tries a few weightings until one meets the bound.
On roles whose devices do not overlap it always meets the bound. With overlapping
roles it can need more: on 2,000 random small racks it used the true minimum in
1,998 and one run more in 2 (``docs/multi-device.md``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from testrack.rack import Device
from testrack.scheduling.matching import matches
from testrack.scheduling.requests import DeviceRequest, perfect_matching

#: Costs of the assignment problem, all integers: a new (device, role) pair outweighs any
#: number of tie-breaks; an ineligible device outweighs everything.
_NEW_PAIR = 1_000_000
_NEVER = 1 << 60

Run = tuple[str, ...]


def each_runs(request: DeviceRequest, devices: Sequence[Device]) -> tuple[Run, ...]:
    """The runs (device names by position) that give every device every role it can take.

    Empty when no set of ``devices`` can serve the request at all
    (``requests.shortfall`` says why).
    """
    role_of = _role_of(request)
    names = [d.name for d in devices]
    fits = _fits(request, devices)
    pairs = _coverable(role_of, fits, names)
    if not pairs:
        return ()
    bound = lower_bound(request, devices)
    best: list[Run] = []
    for weights in _WEIGHTS:
        runs = _greedy(request, role_of, fits, names, pairs, weights)
        if not best or len(runs) < len(best):
            best = runs
        if len(best) == bound:
            break
    return tuple(best)


#: How much a new pair gains, per pair still to cover on its device, per run its role still
#: needs, and per role its device fits. Each greedy is tried in turn until one meets the bound.
_WEIGHTS = ((1000, 1000, 0), (1000, 1000, 1000), (0, 1000, 1000), (1000, 0, 1000), (2000, 1000, 500))


def _greedy(
    request: DeviceRequest,
    role_of: list[int],
    fits: list[list[bool]],
    names: list[str],
    pairs: set[tuple[int, int]],
    weights: tuple[int, int, int],
) -> list[Run]:
    """Runs, each the complete set that covers the most (and most urgent) new pairs."""
    per_device, per_role, per_fit = weights
    roles = request.roles
    fit_count = [sum(fits[r][j] for r in range(len(roles))) for j in range(len(names))]
    pending = set(pairs)
    runners: set[int] = set()
    runs: list[Run] = []
    while pending:
        by_device = [0] * len(names)
        by_role = [0] * len(roles)
        for r, j in pending:
            by_device[j] += 1
            by_role[r] += 1
        cost = []
        for position, r in enumerate(role_of):
            row = []
            for j in range(len(names)):
                if not fits[r][j]:
                    row.append(_NEVER)
                    continue
                gain = 0
                if (r, j) in pending:
                    gain = (
                        _NEW_PAIR
                        + per_device * by_device[j]
                        + per_role * math.ceil(by_role[r] / roles[r].count)
                        + per_fit * fit_count[j]
                    )
                if position == 0 and j not in runners:
                    gain += 1
                row.append(-gain)
            cost.append(row)
        chosen = min_cost_assignment(cost)
        before = len(pending)
        pending -= {(role_of[p], j) for p, j in enumerate(chosen)}
        assert len(pending) < before, "a run that covers nothing new"
        runners.add(chosen[0])
        runs.append(tuple(names[j] for j in chosen))
    return runs


def lower_bound(request: DeviceRequest, devices: Sequence[Device]) -> int:
    """Fewer runs than this cannot give every device every role it can take."""
    pairs = _coverable(_role_of(request), _fits(request, devices), [d.name for d in devices])
    if not pairs:
        return 0
    per_role = [0] * len(request.roles)
    per_device = [0] * len(devices)
    for r, j in pairs:
        per_role[r] += 1
        per_device[j] += 1
    by_role = max(math.ceil(n / role.count) for n, role in zip(per_role, request.roles, strict=True))
    return max(by_role, max(per_device))


def _role_of(request: DeviceRequest) -> list[int]:
    return [i for i, role in enumerate(request.roles) for _ in range(role.count)]


def _fits(request: DeviceRequest, devices: Sequence[Device]) -> list[list[bool]]:
    return [[matches(d, [role.requirement]) for d in devices] for role in request.roles]


def _coverable(role_of: list[int], fits: list[list[bool]], names: list[str]) -> set[tuple[int, int]]:
    """(role, device index) pairs that some complete set of devices has; none if there is no set."""
    if not _complete(role_of, fits, names, None):
        return set()
    pairs = {(r, j) for r in range(len(fits)) for j in range(len(names)) if fits[r][j]}
    return {pair for pair in pairs if _complete(role_of, fits, names, pair)}


def _complete(
    role_of: list[int], fits: list[list[bool]], names: list[str], pinned: tuple[int, int] | None
) -> bool:
    """Is there a complete set of devices (with device ``j`` in role ``r``, if pinned)?"""
    candidates = []
    pin_used = False
    for r in role_of:
        options = [names[j] for j in range(len(names)) if fits[r][j]]
        if pinned is not None:
            pr, pj = pinned
            if r == pr and not pin_used:
                options = [names[pj]]
                pin_used = True
            else:
                options = [n for n in options if n != names[pj]]
        candidates.append(options)
    taken, _ = perfect_matching(candidates)
    return None not in taken


def min_cost_assignment(cost: Sequence[Sequence[int]]) -> list[int]:
    """The column of each row in a minimum-cost assignment (Hungarian method, rows <= columns).

    Ties go to the earlier columns, so the answer follows the rack's order.
    """
    n, m = len(cost), len(cost[0])
    u = [0] * (n + 1)
    v = [0] * (m + 1)
    row_of = [0] * (m + 1)  # column -> row (1-based), 0: unassigned
    way = [0] * (m + 1)
    for i in range(1, n + 1):
        row_of[0] = i
        j0 = 0
        minv = [_NEVER * 4] * (m + 1)
        used = [False] * (m + 1)
        while True:
            used[j0] = True
            i0 = row_of[j0]
            delta = _NEVER * 4
            j1 = 0
            for j in range(1, m + 1):
                if not used[j]:
                    reduced = cost[i0 - 1][j - 1] - u[i0] - v[j]
                    if reduced < minv[j]:
                        minv[j] = reduced
                        way[j] = j0
                    if minv[j] < delta:
                        delta = minv[j]
                        j1 = j
            for j in range(m + 1):
                if used[j]:
                    u[row_of[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if row_of[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            row_of[j0] = row_of[j1]
            j0 = j1
    out = [0] * n
    for j in range(1, m + 1):
        if row_of[j]:
            out[row_of[j] - 1] = j - 1
    return out
