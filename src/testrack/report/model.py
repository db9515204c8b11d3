"""One run, as the HTML report draws it: plain data built from the results store.

The page gets this data once, written compactly (every test id once, the results as
columns of small integers, compressed): a 60,000-result run stays a few megabytes and
opens in a fraction of a second. Failure texts and captured output travel apart, so the
page decodes them only when someone asks to see one.

Everything here is computed in Python and tested without a browser; the page only draws.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from testrack.store import Result, Run, Store
from testrack.store.base import FAILING
from testrack.summary import SEVERITY, format_counts

#: How many earlier runs the per-test history shows.
HISTORY_RUNS = 10
#: Outcomes the page knows, worst first; a stored outcome it does not know is added at the end.
OUTCOMES = (*SEVERITY, "device_error")
#: Result flags: a later attempt replaced this one (a crash or a DeviceError that was retried).
SUPERSEDED = 1

_RANK = {name: i for i, name in enumerate(OUTCOMES)}


def _rank(outcome: str) -> int:
    """Worse is lower; an outcome from another plugin ranks with xpassed, as in the terminal."""
    return _RANK.get(outcome, _RANK["xpassed"])


@dataclasses.dataclass(frozen=True)
class Details:
    """What a failing result shows on demand."""

    longrepr: str
    sections: tuple[tuple[str, str], ...]


@dataclasses.dataclass
class Columns:
    """The results, one list per field, all the same length, in the order they were stored."""

    test: list[int] = dataclasses.field(default_factory=list)
    device: list[int] = dataclasses.field(default_factory=list)
    lane: list[int] = dataclasses.field(default_factory=list)
    """The worker slot's lane, or -1 for a result no worker produced (no device could run it)."""
    outcome: list[int] = dataclasses.field(default_factory=list)
    start: list[int] = dataclasses.field(default_factory=list)
    """Microseconds from the report's time origin."""
    stop: list[int] = dataclasses.field(default_factory=list)
    duration: list[int] = dataclasses.field(default_factory=list)
    """The test's own time (its phases), microseconds; start..stop is the slot's busy time."""
    message: list[int] = dataclasses.field(default_factory=list)
    """Index into ``Report.messages``, or -1."""
    detail: list[int] = dataclasses.field(default_factory=list)
    """Index into ``Report.details``, or -1."""
    flags: list[int] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.test)


@dataclasses.dataclass
class Report:
    """One run for the page: what it ran, where, when, how it ended, and what came before."""

    run: Run
    outcomes: list[str]
    devices: list[str]
    lanes: list[tuple[str, int]]
    """(worker slot, device index), one timeline lane each."""
    tests: list[str]
    results: Columns
    messages: list[str]
    details: list[Details]
    origin: float
    """Wall time (``time.time()``) that offsets count from: the run's start or its first result."""
    end: float
    quarantines: list[tuple[int, str, int]]
    """(device index, reason, microseconds from the origin)."""
    history_runs: list[Run]
    """Earlier runs, newest first."""
    history: list[list[int]]
    """Per earlier run, per test: the worst outcome's index over its devices, or -1."""
    environments: dict[str, str] = dataclasses.field(default_factory=dict)
    """An environment's identity by its name (interpreter, packages' hash), for its results."""

    # ------------------------------------------------------------------ what the summary says

    def final(self) -> list[int]:
        """Indexes of the results that count: every one not replaced by a later attempt."""
        flags = self.results.flags
        return [i for i in range(len(self.results)) if not flags[i] & SUPERSEDED]

    def counts(self) -> Counter[str]:
        """Final results per outcome."""
        outcome = self.results.outcome
        return Counter(self.outcomes[outcome[i]] for i in self.final())

    def device_counts(self) -> dict[str, Counter[str]]:
        counts: dict[str, Counter[str]] = {name: Counter() for name in self.devices}
        for i in self.final():
            name = self.devices[self.results.device[i]]
            counts[name][self.outcomes[self.results.outcome[i]]] += 1
        return counts

    def summary(self) -> dict[str, Any]:
        """The numbers at the top of the page, worded as the terminal words them."""
        counts = self.counts()
        quarantined = {self.devices[d]: reason for d, reason, _ in self.quarantines}
        devices = []
        for name, per_device in self.device_counts().items():
            failed = name in quarantined or any(o in FAILING for o in per_device)
            words = format_counts(per_device)
            if name in quarantined:
                before = f" (before that: {words})" if per_device else ""
                words = f"quarantined: {quarantined[name]}{before}"
            devices.append(
                {
                    "name": name if name != "-" else "(no device)",
                    "verdict": "FAILED" if failed else "ok",
                    "counts": words,
                    "environment": self.environments.get(name),
                }
            )
        retried = len(self.results) - len(self.final())
        return {
            "results": sum(counts.values()),
            "tests": len(self.tests),
            "counts": format_counts(counts),
            "by_outcome": dict(sorted(counts.items(), key=lambda kv: _rank(kv[0]))),
            "failing": sum(n for o, n in counts.items() if o in FAILING),
            "retried": retried,
            "devices": devices,
            "slots": len(self.lanes),
            "wall": self.end - self.origin,
        }

    # ------------------------------------------------------------------ what the page gets

    def payload(self) -> dict[str, Any]:
        """Everything but the details, as JSON-ready lists (the page's ``DATA``)."""
        run = self.run
        r = self.results
        return {
            "version": 1,
            "run": {
                "id": run.id,
                "uid": run.uid,
                "mode": run.mode,
                "rack": run.rack,
                "command": run.command,
                "started": run.started,
                "finished": run.finished,
                "outcome": run.outcome,
            },
            "origin": self.origin,
            "span": round((self.end - self.origin) * 1e6),
            "summary": self.summary(),
            "outcomes": self.outcomes,
            "rank": [_rank(name) for name in self.outcomes],
            "failing": [i for i, o in enumerate(self.outcomes) if o in FAILING],
            "devices": self.devices,
            "lanes": self.lanes,
            "tests": self.tests,
            "results": {
                "test": r.test,
                "device": r.device,
                "lane": r.lane,
                "outcome": r.outcome,
                "start": r.start,
                "stop": r.stop,
                "duration": r.duration,
                "message": r.message,
                "detail": r.detail,
                "flags": r.flags,
            },
            "messages": self.messages,
            "quarantines": self.quarantines,
            "history": {
                "runs": [{"id": h.id, "started": h.started, "outcome": h.outcome} for h in self.history_runs],
                "outcomes": self.history,
            },
        }

    def details_payload(self) -> list[list[Any]]:
        return [[d.longrepr, [list(s) for s in d.sections]] for d in self.details]


def build(store: Store, run: Run, history_runs: int = HISTORY_RUNS) -> Report:
    """The report of ``run``: its results (with the failures' details) and its tests' history."""
    results = store.results(run.id, details=True)
    earlier = [r for r in store.runs() if r.id < run.id][:history_runs]
    envs = store.environments(run.id)
    return from_results(
        run,
        results,
        quarantines=[(q.device, q.reason, q.at) for q in store.quarantines(run.id)],
        history_runs=earlier,
        history_rows=store.outcomes([r.id for r in earlier]) if earlier else (),
        environments={e.name: f"{e.implementation} {e.version}, packages {e.installed}" for e in envs},
    )


def from_results(
    run: Run,
    results: Sequence[Result],
    quarantines: Sequence[tuple[str, str, float]] = (),
    history_runs: Sequence[Run] = (),
    history_rows: Iterable[tuple[int, str, str]] = (),
    environments: dict[str, str] | None = None,
) -> Report:
    """The report from plain data (what :func:`build` reads from a store).

    Written as one pass per column: a 60,000-result run is built in a fraction of a second.
    """
    outcome_index = {name: i for i, name in enumerate(OUTCOMES)}
    for name in dict.fromkeys(r.outcome for r in results):
        outcome_index.setdefault(name, len(outcome_index))
    device_names = sorted({r.device for r in results} | {q[0] for q in quarantines}, key=natural_key)
    device_index = {name: i for i, name in enumerate(device_names)}
    slot_device: dict[str, str] = {}
    for r in results:
        if r.worker != "-" and r.worker not in slot_device:
            slot_device[r.worker] = r.device
    # A device that only took part in tests on several devices (its own worker ran nothing) gets
    # a lane of its own, so that those tests are drawn on it too.
    with_lane = set(slot_device.values())
    for r in results:
        if r.worker != "-" and r.device not in with_lane:
            with_lane.add(r.device)
            slot_device[f"{r.device} (lent)"] = r.device
    lanes = sorted(slot_device.items(), key=lambda kv: (natural_key(kv[1]), natural_key(kv[0])))
    lane_index = {slot: i for i, (slot, _) in enumerate(lanes)}
    # A test on several devices is stored on each, under its first device's slot: on another
    # device it goes on that device's (first) lane, so the timeline shows it on every device.
    device_lane: dict[str, int] = {}
    for i, (_, device) in enumerate(lanes):
        device_lane.setdefault(device, i)

    def lane(r: Result) -> int:
        if r.worker not in lane_index:
            return -1
        if slot_device[r.worker] == r.device:
            return lane_index[r.worker]
        return device_lane[r.device]

    test_index: dict[str, int] = {}
    message_index: dict[str, int] = {}
    starts = [r.started for r in results if r.started > 0]
    origin = min([run.started, *starts]) if starts else run.started
    end = max([run.finished or 0.0, *(r.stopped for r in results), origin])

    cols = Columns(
        test=[test_index.setdefault(r.nodeid, len(test_index)) for r in results],
        device=[device_index[r.device] for r in results],
        lane=[lane(r) for r in results],
        outcome=[outcome_index[r.outcome] for r in results],
        start=[round((r.started - origin) * 1e6) for r in results],
        stop=[round((max(r.stopped, r.started) - origin) * 1e6) for r in results],
        duration=[round(r.duration * 1e6) for r in results],
        message=[
            message_index.setdefault(r.message, len(message_index)) if r.message else -1 for r in results
        ],
        detail=[-1] * len(results),
        flags=[0] * len(results),
    )
    details: list[Details] = []
    for i, r in enumerate(results):
        if r.longrepr or r.sections:
            cols.detail[i] = len(details)
            details.append(Details(r.longrepr or "", r.sections))
    # An attempt is replaced by a later one of the same test (load mode) or of the same test on
    # the same devices (each mode: a retry stays on its devices). A test on several devices is
    # one attempt stored on each of them (the same worker and times): its rows go together.
    attempts: dict[tuple[str, str, float, float], list[int]] = {}
    for i, r in enumerate(results):
        attempts.setdefault((r.nodeid, r.worker, r.started, r.stopped), []).append(i)
    last_attempt: dict[tuple[int, tuple[int, ...]], list[int]] = {}
    for rows in attempts.values():
        on = tuple(cols.device[i] for i in rows) if run.mode == "each" else ()  # in role order
        key = (cols.test[rows[0]], on)
        for previous in last_attempt.get(key, ()):
            cols.flags[previous] |= SUPERSEDED
        last_attempt[key] = rows

    history = _history(history_runs, history_rows, test_index, outcome_index)
    return Report(
        run=run,
        outcomes=list(outcome_index),
        devices=device_names,
        lanes=[(slot, device_index[device]) for slot, device in lanes],
        tests=list(test_index),
        results=cols,
        messages=list(message_index),
        details=details,
        origin=origin,
        end=end,
        quarantines=[
            (device_index[name], reason, round((at - origin) * 1e6)) for name, reason, at in quarantines
        ],
        history_runs=list(history_runs),
        history=history,
        environments=dict(environments or {}),
    )


def _history(
    runs: Sequence[Run],
    rows: Iterable[tuple[int, str, str]],
    test_index: dict[str, int],
    outcome_index: dict[str, int],
) -> list[list[int]]:
    """Per earlier run, per test of this run: the index of its worst outcome there, or -1.

    Outcomes only earlier runs had are added to ``outcome_index``.
    """
    column = {run.id: k for k, run in enumerate(runs)}
    history = [[-1] * len(test_index) for _ in runs]
    rank = [_rank(name) for name in outcome_index]
    for run_id, nodeid, outcome in rows:
        t = test_index.get(nodeid)
        if t is None:
            continue
        o = outcome_index.get(outcome)
        if o is None:
            o = outcome_index[outcome] = len(outcome_index)
            rank.append(_rank(outcome))
        row = history[column[run_id]]
        if row[t] < 0 or rank[o] < rank[row[t]]:
            row[t] = o
    return history


def natural_key(text: str) -> tuple[Any, ...]:
    """board-2 before board-10, gw9 before gw10."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))
