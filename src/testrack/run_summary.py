"""The run's own lines at the end of pytest's summary: the per-device counts (load mode) or
the matrix (each mode), flaky tests, the seed that repeats the order, and every note and
problem the run gathered, so that what testrack did differently from plain pytest is said
where the user reads the result."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from testrack import sequencing
from testrack.summary import device_counts, format_counts, matrix_lines

if TYPE_CHECKING:
    from testrack.controller import Controller


def write(ctl: Controller, terminalreporter: Any) -> None:
    quarantined = ctl.health.quarantined()
    outcomes = ctl.replay.outcomes
    dead = ctl.faults.dead_slots
    if ctl.recorder.problem and ctl.recorder.problem not in ctl.problems:
        ctl.problems.append(ctl.recorder.problem)
    if (hidden := ctl.replay.hidden_note()) is not None:
        ctl.notes.append(hidden)
    if not (outcomes or dead or ctl.problems or ctl.notes or quarantined):
        return
    names = [d.name for d in ctl.rack.devices]
    if ctl.not_run:
        # Counted on pytest's last line, which is then not green: the run failed.
        missed = [RunSlot(nodeid, device) for device, ids in ctl.not_run.items() for nodeid in ids]
        add_stats = getattr(terminalreporter, "_add_stats", None)
        if add_stats is not None:
            add_stats("not run (quarantined)", missed)
        else:  # pragma: no cover - a pytest without it
            terminalreporter.stats.setdefault("not run (quarantined)", []).extend(missed)
    if ctl.mode == "each":
        title = f"testrack: each mode, results per device ({_n(len(names), 'device')})"
        terminalreporter.write_sep("=", title)
        verbose = ctl.config.get_verbosity() > 1  # -vv: every test, not only the differing ones
        for line in matrix_lines(
            outcomes,
            names,
            quarantined,
            everything=verbose,
            width=terminalreporter._tw.fullwidth,
            not_run={d: len(ids) for d, ids in ctl.not_run.items()},
            not_collected=ctl.collection.not_collected,
            reruns=ctl.replay.rerun_on,
        ):
            _write(terminalreporter, line)
    else:
        counts = device_counts(outcomes, names, ctl.replay.rerun_on)
        slots = len(ctl.slots)
        spread = _n(slots, "slot") if len(names) == 1 else f"{_n(len(names), 'device')}, {_n(slots, 'slot')}"
        terminalreporter.write_sep("-", f"testrack: load mode over {spread}")
        gone = ctl.faults.dead_devices()
        for name in names:
            extra = ""
            if name in quarantined:
                extra = f" (quarantined: {quarantined[name]})"
            elif name in gone:
                extra = f" (no workers: {gone[name]})"
            _write(terminalreporter, f"{name}: {format_counts(counts[name])}{extra}")
    if ctl.recorder.problem and ctl.recorder.problem not in ctl.problems:
        ctl.problems.append(ctl.recorder.problem)  # the store failed while the summary was made
    if ctl.replay.flaky:
        add_stats = getattr(terminalreporter, "_add_stats", None)
        if add_stats is not None:
            add_stats("flaky", [RunSlot(nodeid, where[1]) for nodeid, where in ctl.replay.flaky.items()])
        ok = ctl.config.getoption("rack_flaky_ok", False)
        for nodeid, (failed, passed) in ctl.replay.flaky.items():
            terminalreporter.write_line(
                f"testrack: flaky: {nodeid} failed on {', '.join(failed)}, then passed on {passed}"
                + ("" if ok else " (the run fails; --rack-flaky-ok lets flaky tests pass)"),
                yellow=True,
            )
    if ctl.order.seed is not None:
        seed = ctl.order.seed
        other = sequencing.randomly_differs(ctl.config, ctl.order)
        if other is None:
            again = f"pytest --rack-seed {seed} runs it again"
        else:  # two seeds given: the order's and what random draws
            again = (
                f"pytest-randomly reseeds random with {other}: pytest --rack-seed {seed} "
                f"--randomly-seed={other} runs it again"
            )
        terminalreporter.write_line(f"testrack: random order, seed {seed}: {again}")
    for note in ctl.notes:
        terminalreporter.write_line(f"testrack: {note}")
    for problem in ctl.problems:
        terminalreporter.write_line(f"testrack: {problem}", yellow=True)


class RunSlot:
    """A test-device run that did not happen, as an entry of the terminal's stats."""

    def __init__(self, nodeid: str, device: str) -> None:
        self.nodeid = f"{nodeid}@{device}"
        self.when = "call"


def _write(terminalreporter: Any, line: str) -> None:
    """A summary line, coloured as pytest colours outcomes."""
    markup: dict[str, bool] = {}
    lowered = line.lower()
    if "failed" in lowered or "crashed" in lowered or "quarantined" in lowered or "error" in lowered:
        markup = {"red": True}
    elif ": ok - " in line or lowered.endswith("passed"):
        markup = {"green": True}
    terminalreporter.write_line(line, **markup)


def _n(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"
