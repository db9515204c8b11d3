"""From collected tests to jobs: routed, estimated, ready for the dispatcher.

A pure function of what the workers collected, the rack, the mode and the
history; the controller only feeds its result to the dispatcher and reports the
tests that cannot run. Tested without processes (``tests/test_planning.py``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from testrack import explain
from testrack import messages as m
from testrack.rack import Rack
from testrack.scheduling import Job, Slot, estimate_durations, matches
from testrack.scheduling.dispatch import _weight

#: An import this cheap (seconds) is made by every slot that may run the file: balance is worth more.
CHEAP_IMPORT = 0.005
#: How many slots' worth of work a file's importers are planned for, beyond its even share: a
#: little more, so that work can still move at the end, but every import is paid by a worker.
IMPORT_SLACK = 1.2


@dataclasses.dataclass
class TestInfo:
    """A collected test as the controller knows it: its description, its file, its place."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    test: m.CollectedTest
    unit: str
    index: int


@dataclasses.dataclass
class Plan:
    """Jobs by the slot that already imported their file (None: nobody), and what cannot run."""

    jobs: dict[str | None, list[Job]]
    unrunnable: list[tuple[TestInfo, str]]
    runs: int
    #: Tests that need several devices at once, one per run (each mode: per set of devices).
    gangs: list[Gang] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Gang:
    """One run of a test on several devices: the devices each position may take (each mode:
    one pinned device per position), and its estimate."""

    nodeid: str
    module: str
    index: int
    positions: tuple[frozenset[str], ...]
    estimate: float = 0.0
    guessed: bool = False

    @property
    def key(self) -> str:
        """Its id in the allocation queue (each mode runs a test on several sets of devices)."""
        pinned = ["|".join(sorted(p)) for p in self.positions]
        return f"{self.nodeid}@" + "+".join(pinned)


def plan_jobs(
    infos: Sequence[TestInfo],
    collected_on: Mapping[str, set[str]],
    rack: Rack,
    mode: str,
    history: Mapping[str, float],
    home: Mapping[str, str],
    rerun: Mapping[str, set[str]] | None = None,
    rerun_anywhere: bool = False,
    scopes: Mapping[str, tuple[str, ...]] | None = None,
    segments: Mapping[str, str] | None = None,
) -> Plan:
    """Route each test to the devices that may run it and give it an estimate.

    ``collected_on`` maps a test to the devices whose workers collected it (each
    mode runs a test only where it was collected); ``rerun`` (``--rack-failed``)
    maps a test to the devices it is failing on: it runs once on every one of them
    (one job per device, in load mode too: each must pass there to stop failing).
    With ``rerun_anywhere`` it runs as the mode says, once on any matching device
    in load mode. ``segments`` (when an ordering option reordered the session) names
    each test's contiguous run of its module: the unit the dispatcher keeps together,
    in order, instead of the whole module.
    """
    estimates = estimate_durations([(i.test.nodeid, i.unit) for i in infos], history)
    plan = Plan(jobs={}, unrunnable=[], runs=0)
    # A device whose workers collected nothing (quarantined, or dead, before they could) still
    # owes its runs in each mode: they are planned, and reported as not run.
    collecting = {device for devices in collected_on.values() for device in devices}
    for info in infos:
        test = info.test
        if test.requirement_error:
            plan.unrunnable.append((info, test.requirement_error))
            continue
        if test.devices is not None:
            _plan_gang(plan, info, rack, mode, estimates[test.nodeid], test.nodeid not in history)
            continue
        eligible = [
            d.name
            for d in rack.devices
            if matches(d, test.requirements)
            and (mode == "load" or d.name in collected_on.get(test.nodeid, ()) or d.name not in collecting)
        ]
        if not eligible:
            plan.unrunnable.append((info, explain.unmatched(test.requirements, rack)))
            continue
        per_device = mode == "each"
        if rerun is not None and not rerun_anywhere:
            where = rerun.get(test.nodeid, set())
            eligible = [name for name in eligible if name in where]
            if not eligible:
                plan.unrunnable.append((info, explain.failed_elsewhere(where, rack)))
                continue
            per_device = True
        estimate = estimates[test.nodeid]
        guessed = test.nodeid not in history
        held_by = (scopes or {}).get(info.unit, ())
        queue = ""
        if segments is not None:
            queue = segments[test.nodeid]
            held_by = (queue,)  # plain pytest re-enters what the order makes it re-enter
        # Each mode queues without a home (every worker imported every file); load mode
        # queues at the slot that imported the file, whatever the devices.
        batch = plan.jobs.setdefault(None if mode == "each" else home.get(info.unit), [])
        where_to = [frozenset([name]) for name in eligible] if per_device else [frozenset(eligible)]
        batch.extend(
            Job(test.nodeid, info.unit, info.index, w, estimate, guessed, held_by, queue) for w in where_to
        )
        plan.runs += len(where_to)
    return plan


def plan_imports(
    jobs: Sequence[Job],
    slots: Sequence[Slot],
    import_cost: Mapping[str, float],
    home: Mapping[str, str],
) -> dict[str, list[str]]:
    """Which slots import which files before their first test (load mode), by slot.

    Plain pytest imports every file before the first test, and suites depend on it
    without knowing (a test that replaces a module in ``sys.modules`` changes what
    every file imported after it binds), so a worker never imports a file after a
    test ran in it. The price is that work can move only to workers that imported
    its file: each file is given to as many slots as its share of the work needs
    (its estimated work over an even share per slot, times ``IMPORT_SLACK``); a file
    this cheap to import (``CHEAP_IMPORT``) goes to every slot that may run it.

    Its ``home`` (the worker that collected it) imported it already, and keeps it
    while its planned load stays within a slot's share: a worker that collected many
    files early keeps only that much of them, else the slots that collected nothing
    would have nothing to run (22 of 64 idle on W6). The other importers are the
    slots with the least planned load, a new import counted as its cost.
    """
    work: dict[str, int] = {}
    devices: dict[str, set[str]] = {}
    for job in jobs:
        work[job.module] = work.get(job.module, 0) + _weight(job)
        devices.setdefault(job.module, set()).update(job.eligible)
    total = sum(work.values())
    if not slots or not total:
        return {}
    per_slot = total / len(slots)
    load = {slot.id: 0.0 for slot in slots}
    plan: dict[str, list[str]] = {slot.id: [] for slot in slots}
    modules = sorted(work, key=lambda m: (-work[m], m))
    candidates = {m: [s.id for s in slots if s.device in devices[m]] for m in modules}
    count: dict[str, int] = {}
    for module in modules:
        if import_cost.get(module, 0.0) <= CHEAP_IMPORT:
            count[module] = len(candidates[module])
        else:
            wanted = math.ceil(work[module] / per_slot * IMPORT_SLACK)
            count[module] = min(len(candidates[module]), max(1, wanted))
    for module in modules:  # homes first, within their share
        owner = home.get(module)
        share = work[module] / count[module] if count[module] else 0.0
        if owner in candidates[module] and load[owner] + share <= per_slot * IMPORT_SLACK:
            plan[owner].append(module)
            load[owner] += share
    for module in modules:  # then the least loaded slots, an import counted as its cost
        cost = import_cost.get(module, 0.0) * 1e9
        taken = [s for s in candidates[module] if module in plan[s]]
        others = sorted(
            (s for s in candidates[module] if s not in taken),
            key=lambda s: (load[s] + cost, candidates[module].index(s)),
        )
        for slot_id in others[: max(0, count[module] - len(taken))]:
            plan[slot_id].append(module)
            load[slot_id] += work[module] / count[module] + cost
    rank = {m: i for i, m in enumerate(modules)}  # each slot's files in the plan's order, either pass
    return {slot_id: sorted(chosen, key=rank.__getitem__) for slot_id, chosen in plan.items()}


def segment(infos: Sequence[TestInfo]) -> dict[str, str]:
    """Each test's contiguous run of its file, in the order given: ``file#0``, ``file#1``..."""
    out: dict[str, str] = {}
    runs: dict[str, int] = {}
    previous = None
    for info in infos:
        if info.unit != previous:
            runs[info.unit] = runs.get(info.unit, -1) + 1
            previous = info.unit
        out[info.test.nodeid] = f"{info.unit}#{runs[info.unit]}"
    return out


def _plan_gang(plan: Plan, info: TestInfo, rack: Rack, mode: str, estimate: float, guessed: bool) -> None:
    """A test on several devices: all of them at once, in load mode on any matching set, in
    each mode on as few sets as give every device every role it can take."""
    from testrack.scheduling.each import each_runs
    from testrack.scheduling.requests import eligibility, shortfall

    request = info.test.devices
    assert request is not None
    short = shortfall(request, rack.devices)
    if short is not None:
        plan.unrunnable.append((info, explain.unsatisfiable(short, rack)))
        return
    if mode == "each":
        sets = [tuple(frozenset([name]) for name in run) for run in each_runs(request, rack.devices)]
    else:
        sets = [eligibility(request, rack.devices)]
    for positions in sets:
        plan.gangs.append(Gang(info.test.nodeid, info.unit, info.index, positions, estimate, guessed))
        plan.runs += 1
