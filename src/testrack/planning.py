"""From collected tests to jobs: routed, estimated, ready for the dispatcher.

A pure function of what the workers collected, the rack, the mode and the
history; the controller only feeds its result to the dispatcher and reports the
tests that cannot run. Tested without processes (``tests/test_planning.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from testrack import explain
from testrack import messages as m
from testrack.rack import Rack
from testrack.scheduling import Job, estimate_durations, matches


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


def plan_jobs(
    infos: Sequence[TestInfo],
    collected_on: Mapping[str, set[str]],
    rack: Rack,
    mode: str,
    history: Mapping[str, float],
    home: Mapping[str, str],
    rerun: Mapping[str, set[str]] | None = None,
    rerun_anywhere: bool = False,
) -> Plan:
    """Route each test to the devices that may run it and give it an estimate.

    ``collected_on`` maps a test to the devices whose workers collected it (each
    mode runs a test only where it was collected); ``rerun`` (``--rack-failed``)
    maps a test to the devices it is failing on: it runs once on every one of them
    (one job per device, in load mode too: each must pass there to stop failing).
    With ``rerun_anywhere`` it runs as the mode says, once on any matching device
    in load mode.
    """
    estimates = estimate_durations([(i.test.nodeid, i.unit) for i in infos], history)
    plan = Plan(jobs={}, unrunnable=[], runs=0)
    for info in infos:
        test = info.test
        if test.requirement_error:
            plan.unrunnable.append((info, test.requirement_error))
            continue
        eligible = [
            d.name
            for d in rack.devices
            if matches(d, test.requirements)
            and (mode == "load" or d.name in collected_on.get(test.nodeid, ()))
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
        # Each mode queues without a home (every worker imported every file); load mode
        # queues at the slot that imported the file, whatever the devices.
        queue = plan.jobs.setdefault(None if mode == "each" else home.get(info.unit), [])
        where_to = [frozenset([name]) for name in eligible] if per_device else [frozenset(eligible)]
        queue.extend(Job(test.nodeid, info.unit, info.index, w, estimate, guessed) for w in where_to)
        plan.runs += len(where_to)
    return plan
