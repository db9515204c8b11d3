"""``testrack bisect NODEID``: from a stored run to the tests that made NODEID fail.

Reads the run (``--run``, default the last), finds NODEID's failing result (on ``--device``
when given) and the tests its worker process ran before it, and hands them to
:func:`testrack.bisect.bisect` with real probes (:mod:`testrack.probing`): each a fresh
pytest process running a subsequence of those tests and then NODEID. ``--brittle`` looks
for the opposite: NODEID failed alone and passed in the run, after a test that set it up.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from testrack import history
from testrack.bisect import (
    CONFIRMATIONS,
    FLAKY_CONFIRMATIONS,
    BisectResult,
    Mode,
    Verdict,
    bisect,
    n_tests,
    search_target,
)
from testrack.ordering import WorkerSequence, replay_sequences
from testrack.probing import ProbeRunner
from testrack.store import Run, Store
from testrack.store.base import FAILING

#: pytest-randomly shuffles the tests named on a command line: a reproduction needs their order
_KEEP_ORDER = ["-p", "no:randomly"] if importlib.util.find_spec("pytest_randomly") else []


@dataclasses.dataclass(frozen=True)
class Target:
    """The victim's place in a stored run: which process, after which tests."""

    nodeid: str
    run: Run
    sequence: WorkerSequence
    index: int
    """Where the victim stands in ``sequence.tests``."""
    others: tuple[str, ...]
    """Other devices it came out the same way on, for the message."""

    @property
    def prior(self) -> tuple[str, ...]:
        return self.sequence.process_of(self.index)

    @property
    def pool(self) -> tuple[str, ...]:
        """Every other test of the victim's process, before and after it: the cleaner candidates."""
        start = max(p for p in self.sequence.processes if p <= self.index)
        ends = [p for p in self.sequence.processes if p > self.index]
        tests = self.sequence.tests[start : ends[0] if ends else len(self.sequence.tests)]
        return tuple(dict.fromkeys(t for t in tests if t != self.nodeid))


def find_target(store: Store, nodeid: str, run_spec: str | None, device: str | None, mode: Mode) -> Target:
    """The victim's failing (brittle: passing) result in the run, and its worker's sequence."""
    run = history.resolve_run(store, run_spec)
    sequences = replay_sequences(store.results(run.id), store.imports(run.id))
    seen: list[tuple[WorkerSequence, int, str]] = [
        (sequence, i, outcome)
        for sequence in sequences.values()
        for i, (test, outcome) in enumerate(zip(sequence.tests, sequence.outcomes, strict=True))
        if test == nodeid
    ]
    if not seen:
        hint = history._similar(store, nodeid)
        did_you_mean = f"; did you mean {', '.join(hint)}?" if hint else ""
        raise history.HistoryError(
            f"{nodeid} did not run in run {run.id}{did_you_mean} (`testrack history {nodeid}` lists its runs)"
        )
    if device is not None:
        here = [row for row in seen if row[0].device == device]
        if not here:
            ran_on = ", ".join(sorted({row[0].device for row in seen}))
            raise history.HistoryError(
                f"{nodeid} did not run on {device} in run {run.id}; it ran on {ran_on}"
            )
        seen = here

    def matches(outcome: str) -> bool:
        return outcome in FAILING if mode is Mode.POLLUTED else outcome == "passed"

    chosen = [row for row in seen if matches(row[2])]
    if not chosen:
        where = f" on {device}" if device else ""
        if mode is Mode.POLLUTED:
            raise history.HistoryError(
                f"{nodeid} did not fail in run {run.id}{where}; bisect needs a run where it failed: give one "
                f"with --run RUN (`testrack history {nodeid}` lists its runs), or use --brittle if it fails "
                "alone and passed here"
            )
        raise history.HistoryError(
            f"{nodeid} did not pass in run {run.id}{where}; --brittle needs a run where it passed after "
            "other tests: give one with --run RUN"
        )
    sequence, index, _ = chosen[0]
    others = tuple(sorted({row[0].device for row in chosen[1:]} - {sequence.device}))
    return Target(nodeid, run, sequence, index, others)


def seems_flaky(store: Store, nodeid: str) -> bool:
    """Has the test both passed and failed on one code revision (or, without revisions, at all)?"""
    outcomes: dict[str | None, set[bool]] = {}
    for run, result in store.history(nodeid, limit=200):
        if result.outcome == "passed" or result.outcome in FAILING:
            outcomes.setdefault(run.revision, set()).add(result.outcome == "passed")
    return any(len(kinds) == 2 for kinds in outcomes.values())


def root_of(store_path: Path | None, cwd: Path) -> Path:
    """The project a store belongs to: the directory holding ``.testrack/``, else ``cwd`` (also
    for a database store, which has no directory)."""
    if store_path is not None and store_path.parent.name == ".testrack":
        return store_path.parent.parent
    return cwd


@dataclasses.dataclass
class Report:
    """What ``testrack bisect`` found, as data (``--json``) and as lines for people."""

    target: Target
    mode: Mode
    result: BisectResult
    device: str | None

    def reproduce(self, tests: Sequence[str]) -> str:
        device = ["--rack-device", self.device] if self.device else []
        return shlex.join(["pytest", "--rack", "off", *_KEEP_ORDER, *device, *tests, self.target.nodeid])

    def as_dict(self) -> dict[str, Any]:
        result = self.result
        n = len(self.target.prior)
        culprits = sum(len(c.tests) for c in result.culprits)
        return {
            "nodeid": self.target.nodeid,
            "run": self.target.run.id,
            "device": self.target.sequence.device,
            "worker": self.target.sequence.worker,
            "mode": self.mode.value,
            "before": n,
            "verdict": result.verdict.value,
            "detail": result.detail,
            "culprits": [
                {
                    "tests": list(c.tests),
                    "cleaners": [list(s) for s in c.cleaners],
                    "reproduce": self.reproduce(c.tests),
                }
                for c in result.culprits
            ],
            "probes": dataclasses.asdict(result.counts) | {"total": result.counts.total},
            "target": search_target(n, max(culprits, 1)),
            "last_reproduced": list(result.last_reproduced) if result.last_reproduced is not None else None,
        }

    def lines(self) -> list[str]:
        data = self.as_dict()
        target = self.target
        what = "failed" if self.mode is Mode.POLLUTED else "passed"
        also = f" (also on {', '.join(target.others)})" if target.others else ""
        lines = [
            f"{target.nodeid} {what} in run {target.run.id} on {target.sequence.device}{also} "
            f"({target.sequence.worker}), after {n_tests(len(target.prior))} in its worker process"
        ]
        verdict = self.result.verdict
        polluted = self.mode is Mode.POLLUTED
        culprit, cleaner = ("polluter", "cleaned by") if polluted else ("state-setter", "undone by")
        if verdict is Verdict.NOTHING_BEFORE:
            lines.append("nothing ran before it in its worker process: no earlier test can have caused this")
        elif verdict is Verdict.ALONE:
            alone = "fails on its own" if self.mode is Mode.POLLUTED else "passes on its own"
            lines.append(f"it {alone}: {self.result.detail}; no earlier test is needed")
        elif verdict is Verdict.NOT_REPRODUCED:
            lines.append(
                f"the run's order did not reproduce it: {self.result.detail}; "
                "it may be flaky, or depend on something besides the tests before it"
            )
        elif verdict is Verdict.FOUND:  # inconsistent evidence says its detail below
            lines.append(f"confirmed: {self.result.detail}")
        for found in self.result.culprits:
            together = " (only together)" if len(found.tests) > 1 else ""
            lines.append(f"{culprit}: {' + '.join(found.tests)}{together}")
            lines += [f"  {cleaner}: {' + '.join(s)}" for s in found.cleaners]
            lines.append(f"  reproduce: {self.reproduce(found.tests)}")
        if verdict is Verdict.INCONSISTENT:
            lines.append(f"inconsistent evidence: {self.result.detail}")
            last = self.result.last_reproduced
            if last is not None:
                lines.append(f"  last set that reproduced ({n_tests(len(last))}): {self.reproduce(last)}")
        counts = self.result.counts
        if verdict in (Verdict.FOUND, Verdict.INCONSISTENT):
            n = data["before"]
            culprits = sum(len(c.tests) for c in self.result.culprits)
            lines.append(
                f"probes: {counts.search} to search (target for {max(culprits, 1)} among {n}: "
                f"at most {data['target']}), {counts.confirm} to confirm, {counts.verify} to verify, "
                f"{counts.clean} for cleaners; {counts.total} in all"
            )
        else:
            lines.append(f"probes: {counts.total} to confirm")
        return lines


def run_bisect(
    store: Store,
    root: Path,
    nodeid: str,
    run_spec: str | None,
    device: str | None,
    mode: Mode,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Find the culprits of ``nodeid`` in a stored run, probing in ``root``."""
    target = find_target(store, nodeid, run_spec, device, mode)
    on = None
    if not target.run.rack.startswith("local:"):
        on = target.sequence.device  # a real device: its environment and fixture matter
    runner = ProbeRunner(root, on)
    count = 0

    def probe(prefix: Sequence[str]) -> bool:
        nonlocal count
        count += 1
        failed = runner.victim_failed(prefix, nodeid)
        if progress is not None:
            outcome = "failed" if failed else "passed"
            progress(f"probe {count}: {n_tests(len(prefix))}, then the victim {outcome}")
        return failed

    confirmations = FLAKY_CONFIRMATIONS if seems_flaky(store, nodeid) else CONFIRMATIONS
    result = bisect(target.prior, probe, mode, confirmations=confirmations, cleaner_pool=target.pool)
    return Report(target, mode, result, on)
