"""A probe: a given sequence of tests, run in one fresh pytest process, on one device.

The bisection and ``testrack flaky --confirm`` ask one question many times: "run these
tests, in this order, in a new process; how did each one come out?". Each probe is
``python -m pytest --rack off --rack-sequence FILE --rack-outcomes FILE`` in the project's
root (``--rack-device NAME`` when the device matters), so that nothing of one probe
survives into the next and the project's own configuration applies as in the run.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from testrack.sequence import write_sequence
from testrack.store.base import FAILING

#: How much of a failed probe's output goes into its error message.
OUTPUT_TAIL = 12


class ProbeError(Exception):
    """A probe did not say how the victim did (it was not collected, pytest could not start)."""


@dataclasses.dataclass(frozen=True)
class ProbeRunner:
    """Runs probes in ``root`` (the project's rootdir), on ``device`` when one is named."""

    root: Path
    device: str | None = None
    python: str = sys.executable
    timeout: float | None = None
    """Seconds a probe may take before it counts as an error (None: no limit)."""

    def command(self, sequence_file: Path, outcomes_file: Path) -> list[str]:
        device = [f"--rack-device={self.device}"] if self.device else []
        # One token each ("--opt=value"): before plugins load, pytest takes the value of an
        # option it does not know yet for a path, and would choose the rootdir from it.
        return [
            self.python, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--rootdir={self.root}",
            "--rack=off", *device, f"--rack-sequence={sequence_file}", f"--rack-outcomes={outcomes_file}",
        ]  # fmt: skip

    def run(self, tests: Sequence[str]) -> list[tuple[str, str]]:
        """Run ``tests`` in this order in one new process; (node id, outcome) for each test run."""
        with tempfile.TemporaryDirectory(prefix="testrack-probe-") as scratch:
            sequence_file = Path(scratch) / "sequence.txt"
            outcomes_file = Path(scratch) / "outcomes.jsonl"
            write_sequence(sequence_file, tests)
            try:
                done = subprocess.run(
                    self.command(sequence_file, outcomes_file),
                    cwd=self.root,
                    capture_output=True,
                    text=True,
                    timeout=self.timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise ProbeError(f"a probe ran longer than {self.timeout:g} s and was stopped") from None
            except OSError as exc:
                raise ProbeError(f"cannot start {self.python}: {exc.strerror or exc}") from None
            try:
                lines = outcomes_file.read_text(encoding="utf-8").splitlines()
            except FileNotFoundError:
                lines = []
        outcomes = [(row["nodeid"], row["outcome"]) for row in map(json.loads, lines)]
        if len(outcomes) < len(tests):
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-OUTPUT_TAIL:])
            raise ProbeError(
                f"a probe of {len(tests)} test{'s' if len(tests) != 1 else ''} in {self.root} ran "
                f"{len(outcomes)} of them "
                f"(pytest exit code {done.returncode}); its last output:\n{tail}"
            )
        return outcomes

    def victim_failed(self, prefix: Sequence[str], victim: str) -> bool:
        """Run ``prefix`` then ``victim``; did the victim fail (or error, crash, time out)?"""
        outcomes = self.run([*prefix, victim])
        return outcomes[-1][1] in FAILING
