"""``testrack flaky``: tests that passed and failed on the same code, and why.

A test is flaky when it both passed and failed on one code revision (runs outside git have
no revision and are left out: nothing says their code was the same). It stays flaky until
it has passed :data:`CLEAR_AFTER` times in a row. Each flaky test gets one class, from the
strongest evidence first:

- **device-dependent**: it fails on certain devices more than chance allows. For each device
  it failed on, a one-sided Fisher exact test (hypergeometric) asks how likely that many of
  its failures would fall on that device if the device did not matter; p-values are
  multiplied by the number of devices (Bonferroni) and a device is named below 0.05. Exact,
  small, and it needs a few runs: 3 failures in 3 runs on one of 3 devices is enough.
- **non-idempotent**: it failed when it ran a second time in one process (seen in a run, or
  with ``--confirm``: run twice in a fresh process, it passed, then failed).
- **order-dependent** (``--confirm``): the failing run's order, replayed, fails; alone it
  passes (or the other way round: it fails alone and passes in a passing run's order).
- **nondeterministic**: it passed and failed after exactly the same tests on the same device
  (seen in the history, which random order with a fixed seed makes likely; or ``--confirm``:
  the failing order, replayed, passed).

Anything else is "unclassified"; ``--confirm`` runs the probes that can tell.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

from testrack.bisect import n_tests
from testrack.ordering import replay_sequences
from testrack.revision import short
from testrack.store import Run, Store

#: Passes in a row after which a flaky test is no longer called flaky.
CLEAR_AFTER = 20
#: How many recent runs are read.
RUNS = 200
#: A device is named when its corrected p-value is below this.
SIGNIFICANCE = 0.05
#: Outcomes that count as a failure here ("rerun": an attempt that failed and was run again).
FAILED = ("failed", "error", "crashed", "timeout", "rerun")

DEVICE = "device-dependent"
NON_IDEMPOTENT = "non-idempotent"
ORDER = "order-dependent"
NONDETERMINISTIC = "nondeterministic"
UNCLASSIFIED = "unclassified"


@dataclasses.dataclass(frozen=True)
class Seen:
    """One result of a test, with where and after what it ran."""

    run: int
    revision: str
    device: str
    outcome: str
    before: tuple[str, ...]
    """The tests its worker process ran before it (the order that led to it)."""
    repeat: bool
    """It had already run (and passed) earlier in the same process."""

    @property
    def failed(self) -> bool:
        return self.outcome in FAILED


@dataclasses.dataclass
class Flaky:
    nodeid: str
    revisions: list[str]
    """The revisions it both passed and failed on, newest first."""
    passed: int
    failed: int
    streak: int
    """Passes in a row since its last failure (all revisions, newest first)."""
    kind: str = UNCLASSIFIED
    why: str = ""
    devices: list[str] = dataclasses.field(default_factory=list)
    p_value: float | None = None
    failing_run: int | None = None
    """The newest run it failed in (what ``--confirm`` replays and ``testrack bisect --run`` takes)."""

    @property
    def failure_rate(self) -> float:
        return self.failed / (self.passed + self.failed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "nodeid": self.nodeid,
            "class": self.kind,
            "why": self.why,
            "devices": self.devices,
            "p_value": self.p_value,
            "passed": self.passed,
            "failed": self.failed,
            "failure_rate": round(self.failure_rate, 4),
            "revisions": self.revisions,
            "passes_in_a_row": self.streak,
            "flaky_until_passes_in_a_row": CLEAR_AFTER,
            "failing_run": self.failing_run,
        }


def observations(store: Store, runs: int = RUNS) -> tuple[dict[str, list[Seen]], list[Run]]:
    """Every result of the newest ``runs`` runs that have a revision, per test, newest run first."""
    seen: dict[str, list[Seen]] = {}
    recent = store.runs(limit=runs)
    for run in recent:
        if run.revision is None:
            continue
        for sequence in replay_sequences(store.results(run.id)).values():
            passed_here: set[str] = set()
            for i, (nodeid, outcome) in enumerate(zip(sequence.tests, sequence.outcomes, strict=True)):
                if i in sequence.processes:
                    passed_here = set()
                seen.setdefault(nodeid, []).append(
                    Seen(
                        run.id,
                        run.revision,
                        sequence.device,
                        outcome,
                        sequence.process_of(i),
                        nodeid in passed_here,
                    )
                )
                if outcome == "passed":
                    passed_here.add(nodeid)
    return seen, recent


def find_flaky(store: Store, runs: int = RUNS) -> list[Flaky]:
    """Tests that passed and failed on one revision and have not passed CLEAR_AFTER times since."""
    seen, _ = observations(store, runs)
    found = []
    for nodeid, rows in seen.items():
        flaky = _flaky(nodeid, rows)
        if flaky is not None:
            found.append(flaky)
    return sorted(found, key=lambda f: (-f.failure_rate, f.nodeid))


def _flaky(nodeid: str, rows: list[Seen]) -> Flaky | None:
    by_revision: dict[str, list[Seen]] = {}
    for row in rows:
        if row.failed or row.outcome == "passed":
            by_revision.setdefault(row.revision, []).append(row)
    mixed = [
        r for r, rs in by_revision.items() if any(x.failed for x in rs) and any(not x.failed for x in rs)
    ]
    if not mixed:
        return None
    streak = 0
    for row in rows:  # newest run first; within a run, the order results were recorded
        if row.failed:
            break
        if row.outcome == "passed":
            streak += 1
    if streak >= CLEAR_AFTER:
        return None
    evidence = [row for r in mixed for row in by_revision[r]]
    flaky = Flaky(
        nodeid,
        mixed,
        passed=sum(not r.failed for r in evidence),
        failed=sum(r.failed for r in evidence),
        streak=streak,
        failing_run=next(r.run for r in evidence if r.failed),
    )
    classify(flaky, evidence)
    return flaky


def classify(flaky: Flaky, evidence: Sequence[Seen]) -> None:
    """Give ``flaky`` its class from the history alone (``confirm`` can refine it)."""
    named, p = device_dependence(evidence)
    if named:
        flaky.kind, flaky.devices, flaky.p_value = DEVICE, named, p
        failing = [r for r in evidence if r.device in named]
        elsewhere = [r for r in evidence if r.device not in named]
        only = " only" if not any(r.failed for r in elsewhere) else ""
        flaky.why = (
            f"fails on {', '.join(named)}{only}: {sum(r.failed for r in failing)} of {len(failing)} results "
            f"there, {sum(r.failed for r in elsewhere)} of {len(elsewhere)} elsewhere "
            f"(Fisher's exact test, p = {p:.3g} for {len({r.device for r in evidence})} devices)"
        )
        return
    repeats = [r for r in evidence if r.repeat and r.failed]
    if repeats:
        flaky.kind = NON_IDEMPOTENT
        flaky.why = (
            f"failed when it ran again in the same process (run {repeats[0].run}, {repeats[0].device})"
        )
        return
    same: dict[tuple[str, tuple[str, ...]], list[Seen]] = {}
    for row in evidence:
        if not row.repeat:
            same.setdefault((row.device, row.before), []).append(row)
    for (device, before), rows in same.items():
        if any(r.failed for r in rows) and any(not r.failed for r in rows):
            runs = sorted({r.run for r in rows})
            flaky.kind = NONDETERMINISTIC
            flaky.why = (
                f"passed and failed after the same {n_tests(len(before))} on {device} "
                f"(runs {', '.join(map(str, runs))})"
            )
            return
    flaky.kind = UNCLASSIFIED
    flaky.why = (
        "its failing and passing runs ran different tests before it; --confirm runs the probes that tell"
    )


def device_dependence(evidence: Sequence[Seen]) -> tuple[list[str], float]:
    """The devices it fails on more than chance allows, and the smallest corrected p-value."""
    devices = sorted({r.device for r in evidence})
    if len(devices) < 2:
        return [], 1.0
    total = len(evidence)
    failures = sum(r.failed for r in evidence)
    named: list[str] = []
    best = 1.0
    for device in devices:
        here = [r for r in evidence if r.device == device]
        failed_here = sum(r.failed for r in here)
        if not failed_here:
            continue
        p = min(1.0, len(devices) * hypergeometric_tail(total, failures, len(here), failed_here))
        best = min(best, p)
        if p < SIGNIFICANCE:
            named.append(device)
    return named, best


def hypergeometric_tail(population: int, failures: int, drawn: int, at_least: int) -> float:
    """P(X >= at_least) for X ~ Hypergeometric: ``drawn`` of ``population`` results, ``failures``
    of them failures (the one-sided Fisher exact test for "more failures on this device")."""
    whole = math.comb(population, drawn)
    top = min(failures, drawn)
    return (
        sum(
            math.comb(failures, k) * math.comb(population - failures, drawn - k)
            for k in range(at_least, top + 1)
        )
        / whole
    )


# ---------------------------------------------------------------------------------- --confirm

#: ``run(tests) -> [(nodeid, outcome)]``: a probe (testrack.probing.ProbeRunner.run).
RunTests = Callable[[Sequence[str]], list[tuple[str, str]]]


def device_for_probes(flaky: Flaky, rows: Sequence[Seen], runs: Sequence[Run]) -> str | None:
    """The device probes should run with: where it failed, unless that run's rack was local:N."""
    failing = next((r for r in rows if r.failed and r.revision in flaky.revisions), None)
    rack = {run.id: run.rack for run in runs}
    if failing is None or rack.get(failing.run, "local:").startswith("local:"):
        return None
    return failing.device


def confirm(flaky: Flaky, rows: Sequence[Seen], run: RunTests) -> None:
    """Run the probes that tell order from chance, and reclassify (device-dependent tests keep
    their class: the probes run on one device)."""
    if flaky.kind == DEVICE:
        return
    nodeid = flaky.nodeid
    twice = run([nodeid, nodeid])
    alone, again = twice[0][1], twice[1][1]
    if alone == "passed" and again in FAILED:
        flaky.kind = NON_IDEMPOTENT
        flaky.why = "run twice in one fresh process, it passed, then failed"
        return
    failing = next((r for r in rows if r.failed and r.revision in flaky.revisions and not r.repeat), None)
    passing = next((r for r in rows if r.outcome == "passed" and r.revision in flaky.revisions), None)
    if alone == "passed" and failing is not None:
        replayed = run([*failing.before, nodeid])[-1][1]
        if replayed in FAILED:
            flaky.kind = ORDER
            flaky.why = (
                f"run {failing.run}'s order ({n_tests(len(failing.before))} before it) fails again; "
                f"alone it passes (find the culprits: testrack bisect {nodeid} --run {failing.run})"
            )
        else:
            flaky.kind = NONDETERMINISTIC
            flaky.why = f"run {failing.run}'s order, replayed, passed this time; alone it passes too"
        return
    if alone in FAILED and passing is not None and passing.before:
        replayed = run([*passing.before, nodeid])[-1][1]
        if replayed == "passed":
            flaky.kind = ORDER
            flaky.why = (
                f"alone it fails; after the {n_tests(len(passing.before))} before it in run {passing.run} "
                f"it passes (find the setter: testrack bisect {nodeid} --run {passing.run} --brittle)"
            )
            return
    flaky.kind = NONDETERMINISTIC
    flaky.why = (
        f"alone it {'failed' if alone in FAILED else 'passed'} this time, where it had both passed and failed"
    )


def format_flaky(found: Sequence[Flaky], runs_read: int, with_revision: int) -> list[str]:
    if not found:
        if runs_read and not with_revision:
            return [
                f"none of the last {runs_read} runs has a code revision (runs outside a git work tree "
                "have none), so no test can be called flaky"
            ]
        return [f"no flaky test in the last {runs_read} runs"]
    lines = [
        f"{len(found)} flaky test{'s' if len(found) != 1 else ''} (passed and failed on one revision; "
        f"a test stays flaky until it passes {CLEAR_AFTER} times in a row):"
    ]
    for f in found:
        lines.append(f"{f.nodeid}: {f.kind}")
        lines.append(f"  {f.why}")
        revisions = ", ".join(short(r) for r in f.revisions)
        lines.append(
            f"  {f.failed} failed, {f.passed} passed ({f.failure_rate:.0%} failures) on {revisions}; "
            f"{f.streak} pass{'es' if f.streak != 1 else ''} in a row since its last failure"
        )
    return lines
