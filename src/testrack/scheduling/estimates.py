"""How long a test will take, and how good a schedule can be.

The dispatcher hands out the longest work first, which needs a number for every
test before it has run: its own recorded duration if it has one, else a guess
from its neighbours. ``lower_bound`` and ``lpt_makespan`` are the yardsticks a
schedule is measured against (in the docs and in ``tests/test_scheduling.py``).
"""

from __future__ import annotations

import heapq
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence

# A tenth of a second: longer than most unit tests and shorter than most device tests, so a test
# with no history is neither put ahead of tests known to be long nor treated as free. It is ten
# times DEFAULT_IMPORT_COST, so with no history at all a worker still prefers modules it has
# imported, yet imports a new one rather than idle.
DEFAULT_ESTIMATE = 0.1

# Seconds a worker needs to import a module nobody has measured: a small plain-Python module.
DEFAULT_IMPORT_COST = 0.01

# The dispatcher reads an estimate of 0.0 as "none given"; a recorded 0.0 (a coarse clock) is
# raised to this so that it stays a known, very short test.
MIN_ESTIMATE = 1e-6


def estimate_durations(
    tests: Sequence[tuple[str, str]],
    history: Mapping[str, float],
    default: float = DEFAULT_ESTIMATE,
) -> dict[str, float]:
    """Seconds each ``(nodeid, module)`` test is expected to take, keyed by node id.

    A test with history gets its own recorded duration. A new test is most like
    the other tests of its file (same fixtures, same device calls), so it gets the
    median of its module's known tests; failing that, the median of every test in
    ``history``; failing that, ``default``. Medians, because one hung or skipped
    test should not move the guess for its neighbours. Recorded values that are
    negative or not finite are ignored as corrupt.
    """
    if not (math.isfinite(default) and default > 0):
        raise ValueError(f"default must be a positive number of seconds, got {default!r}")
    known = {nodeid: max(s, MIN_ESTIMATE) for nodeid, s in history.items() if math.isfinite(s) and s >= 0}
    modules = dict(tests)  # one entry per node id, however many devices run it
    by_module: dict[str, list[float]] = {}
    for nodeid, module in modules.items():
        if nodeid in known:
            by_module.setdefault(module, []).append(known[nodeid])
    module_median = {module: statistics.median(values) for module, values in by_module.items()}
    suite_median = statistics.median(known.values()) if known else default
    return {
        nodeid: known.get(nodeid, module_median.get(module, suite_median))
        for nodeid, module in modules.items()
    }


def lower_bound(durations: Iterable[float], slots: int) -> float:
    """No schedule on ``slots`` workers can end sooner than this: max(total / slots, longest)."""
    if slots < 1:
        raise ValueError(f"slots must be at least 1, got {slots}")
    values = list(durations)
    if not values:
        return 0.0
    return max(math.fsum(values) / slots, max(values))


def lpt_makespan(durations: Iterable[float], slots: int) -> float:
    """When the last of ``slots`` workers ends under greedy longest-first list scheduling.

    Each test, longest first, goes to the worker that is free soonest, with no
    import or message overhead: the classic LPT rule, within 4/3 of the optimum.
    A dispatcher that knows every duration should come close to it.
    """
    if slots < 1:
        raise ValueError(f"slots must be at least 1, got {slots}")
    loads = [0.0] * slots
    for duration in sorted(durations, reverse=True):
        heapq.heapreplace(loads, loads[0] + duration)
    return max(loads)
