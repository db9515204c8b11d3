#!/usr/bin/env python3
"""Run the fault-injection suite and write docs/reliability.md from what it counted.

Usage: python bench/reliability.py [--out docs/reliability.md]

Runs ``pytest tests/test_faults.py`` (real sessions on simulated devices) with
``TESTRACK_FAULT_REPORT`` set, so every scenario appends its counts (tests expected,
reported in JUnit XML, stored in the results store), then renders the table
with what testrack does for each fault. Exits with pytest's exit code.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: What testrack does, per fault (the scenarios' names as the suite records them).
BEHAVIOUR = {
    "worker kill mid-test": "the test fails naming the device and the signal; the worker is replaced; "
    "its queued tests move on; not retried by default",
    "worker exit mid-test": "the test fails naming the device and the exit code; the worker is replaced",
    "worker exit mid-test, --rack-retry-crashed 1": "the crash is stored and noted; the test reruns "
    "(load: on another device) and its result counts",
    "test hangs (time limit)": "--rack-timeout: the worker's stacks are dumped into the report, the worker "
    "is killed and replaced, the device rechecked",
    "device stops answering mid-run": "its test times out; the recheck fails; the device is quarantined; "
    "load: its work moves to the other devices",
    "device fails its check at start": "quarantined before any test; load: its work moves; each: shown "
    "as quarantined, the run fails",
    "swapped device identity": "refused (quarantined) with the pinned and the new identity, when it was "
    "pinned, and `testrack trust DEVICE`",
    "DeviceError raised by a fixture": "not a test failure: the test reruns (load: elsewhere), the "
    "device is rechecked",
    "Ctrl-C mid-run": "workers interrupted at once; finished results reported and stored; exit code 2",
    "kill -9 of the controller": "every result it had shown is in the store; its workers exit",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "faults.jsonl"
        env = dict(os.environ, TESTRACK_FAULT_REPORT=str(report))
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_faults.py"],
            cwd=ROOT,
            env=env,
        )
        rows = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
    if not rows:
        print("error: the fault suite recorded nothing; see its output above", file=sys.stderr)
        return proc.returncode or 1
    args.out.write_text(render(rows, proc.returncode))
    print(f"wrote {args.out} ({len(rows)} scenarios)")
    return proc.returncode


#: The shared rack's faults, each proven by its own test (real processes, a real PostgreSQL).
SHARED_RACK = Path(__file__).with_name("reliability_shared.md")


def render(rows: list[dict[str, object]], exit_code: int) -> str:
    faults = sum(int(str(r["faults"])) for r in rows)
    expected = sum(int(str(r["expected"])) for r in rows)
    reported = sum(int(str(r["reported"])) for r in rows)
    stored = sum(int(str(r["stored"])) for r in rows)
    lines = [
        "# Reliability: faults tried, and what testrack does",
        "",
        "Every row is a scenario of `tests/test_faults.py`: a real pytest session on simulated devices",
        "(real TCP servers) with one fault injected. Each scenario checks that every other test ran and",
        "was reported exactly once (JUnit XML), that every reported result is in the results store, and",
        "that the message names the device and the fix. Regenerate this page with",
        "`python bench/reliability.py`.",
        "",
        f"Last run: {datetime.date.today().isoformat()}; the suite "
        f"{'passed' if exit_code == 0 else f'FAILED (exit code {exit_code})'}.",
        "",
        "| fault | mode | what testrack does | faults injected | tests expected | tests reported "
        "| results stored |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        fault = str(r["fault"])
        lines.append(
            f"| {fault} | {r['mode']} | {BEHAVIOUR.get(fault, '')} | {r['faults']} | {r['expected']} "
            f"| {r['reported']} | {r['stored']} |"
        )
    lines += [
        f"| **all** | | | **{faults}** | **{expected}** | **{reported}** | **{stored}** |",
        "",
        "Notes:",
        "- *tests reported* counts JUnit test cases (for kill -9: the results the terminal had shown);",
        "  *results stored* counts the results store's rows for",
        "  the run, which also holds attempts that were retried (a crash before its rerun, for example), so",
        "  it can exceed the reported count. For Ctrl-C and kill -9 the expected count is what the run had",
        "  finished (or shown) when it was stopped.",
        "- A device that stops answering mid-run costs the test it was running (reported as timed out);",
        "  in each mode its remaining tests are not run, and the summary shows it quarantined.",
    ]
    return "\n".join(lines) + "\n\n" + SHARED_RACK.read_text()


if __name__ == "__main__":
    sys.exit(main())
