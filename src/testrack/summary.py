"""What a test did on a device, and the per-device tables at the end of a run.

Pure functions over plain data: the controller records one outcome per
(test, device) and the terminal summary formats them. In each mode the matrix
answers "which device failed which test"; in load mode the per-device line
shows how the work was spread.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import pytest

from testrack.store.base import FAILING

#: Worst first: the outcome shown for a test is the worst of its phases.
SEVERITY = ("crashed", "timeout", "error", "failed", "xpassed", "unmatched", "xfailed", "skipped", "passed")
_RANK = {name: i for i, name in enumerate(SEVERITY)}
#: An outcome from another plugin ("rerun", say) ranks with xpassed: below any failure.
_UNKNOWN = _RANK["xpassed"]
_FAILING = frozenset(FAILING)


def phase_outcome(report: pytest.TestReport) -> str | None:
    """The outcome one phase report contributes (None for a passed setup or teardown).

    ``rerun`` (pytest-rerunfailures) ends one attempt of a test that runs again.
    """
    if str(report.outcome) == "rerun":  # not one of pytest's own three
        return "rerun"
    if report.failed:
        return "failed" if report.when == "call" else "error"
    if report.skipped:
        return "xfailed" if hasattr(report, "wasxfail") else "skipped"
    if report.when == "call":
        return "xpassed" if hasattr(report, "wasxfail") else "passed"
    return None


def worse(a: str | None, b: str) -> str:
    if a is None:
        return b
    return a if _RANK.get(a, _UNKNOWN) <= _RANK.get(b, _UNKNOWN) else b


def device_counts(
    outcomes: Mapping[str, Mapping[str, str]],
    devices: Sequence[str],
    reruns: Mapping[str, int] | None = None,
) -> dict[str, Counter[str]]:
    """Final outcomes per device, and the failed attempts that were run again there (``rerun``)."""
    counts: dict[str, Counter[str]] = {d: Counter() for d in devices}
    for per_device in outcomes.values():
        for device, outcome in per_device.items():
            counts.setdefault(device, Counter())[outcome] += 1
    for device, n in (reruns or {}).items():
        counts.setdefault(device, Counter())["rerun"] += n
    return counts


#: pytest's order on its summary line, then testrack's own outcomes.
COUNT_ORDER = (
    "failed",
    "passed",
    "skipped",
    "xfailed",
    "xpassed",
    "error",
    "rerun",
    "crashed",
    "timeout",
    "unmatched",
)
_COUNT_RANK = {name: i for i, name in enumerate(COUNT_ORDER)}


def format_counts(counter: Counter[str]) -> str:
    """``1 failed, 3 passed, 2 errors``: pytest's order and words."""
    if not counter:
        return "no tests"
    ordered = sorted(counter.items(), key=lambda kv: (_COUNT_RANK.get(kv[0], len(COUNT_ORDER)), kv[0]))
    return ", ".join(f"{n} {o}s" if o == "error" and n != 1 else f"{n} {o}" for o, n in ordered)


def matrix_lines(
    outcomes: Mapping[str, Mapping[str, str]],
    devices: Sequence[str],
    quarantined: Mapping[str, str] | None = None,
    everything: bool = False,
    width: int = 80,
    not_run: Mapping[str, int] | None = None,
    not_collected: Mapping[str, set[str]] | None = None,
    reruns: Mapping[str, int] | None = None,
) -> list[str]:
    """Rows: tests (only those not passing everywhere unless ``everything``); columns: devices.

    ``not_run`` counts, per device, the runs it never made (it was quarantined first);
    ``not_collected`` names, per test, the devices whose workers did not collect it (another
    environment may define other tests): shown as such, never as a failure.
    """
    quarantined = quarantined or {}
    not_run = not_run or {}
    not_collected = not_collected or {}
    rows = [
        nodeid
        for nodeid, per_device in outcomes.items()
        if everything
        or any(v in _FAILING or v == "xpassed" for v in per_device.values())
        or len(set(per_device.values())) > 1
        or nodeid in not_collected
    ]
    lines: list[str] = []
    short = {d for nodeid in rows for d in not_collected.get(nodeid, ())}
    cols = [max(len(d), 13 if d in short else 9) for d in devices]
    test_width = max([len("test")] + [len(r) for r in rows])
    test_width = min(test_width, max(20, width - sum(c + 2 for c in cols) - 1))
    if rows:
        columns = list(zip(devices, cols, strict=True))
        header = "test".ljust(test_width) + "".join("  " + d.ljust(c) for d, c in columns)
        lines.append(header.rstrip())
        for nodeid in rows:
            shown = nodeid if len(nodeid) <= test_width else "..." + nodeid[-(test_width - 3) :]
            absent = not_collected.get(nodeid, set())
            cells = "".join(
                "  " + outcomes[nodeid].get(d, "not collected" if d in absent else "-").ljust(c)
                for d, c in columns
            )
            lines.append((shown.ljust(test_width) + cells).rstrip())
    elif outcomes and not not_run:
        what = "the only test" if len(outcomes) == 1 else f"all {len(outcomes)} tests"
        lines.append(f"{what} gave the same outcome on every device")
    elif outcomes:
        lines.append("every test that ran gave the same outcome on every device it ran on")
    counts = device_counts(outcomes, devices, reruns)
    for device in devices:
        ran = format_counts(counts[device])
        missing = f", {not_run[device]} not run" if not_run.get(device) else ""
        status = f"quarantined: {quarantined[device]} ({ran}{missing})" if device in quarantined else ran
        verdict = "FAILED" if device in quarantined or any(o in _FAILING for o in counts[device]) else "ok"
        lines.append(f"{device}: {verdict} - {status}")
    return lines
