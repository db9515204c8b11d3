#!/usr/bin/env python3
"""What ``[[environments]]`` cost, measured in one run (docs/benchmarks.md, "Environments").

Usage: python bench/envs.py [--runs 3] [--dir .peerbench/envs]

1. A cached environment: how long a run takes to find it ready, as its header says (target < 2 s).
2. Two environments in each mode on a device-bound suite (40 tests that wait 100 ms each) against
   the slower one alone: wall time ratio (target <= 1.2).
3. The first build and run of both environments (empty cache) against nox running the same
   suite in the same two environments one after the other (nox installed in a throwaway venv
   here, not a project dependency), both with uv.

Figures are medians of ``--runs``; compare them only as ratios within one run.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

TWO = """
[[environments]]
name = "idna2"
dependencies = ["idna==2.10"]

[[environments]]
name = "idna3"
dependencies = ["idna==3.7"]
"""

SUITE = """
import time
import idna
import pytest

@pytest.mark.parametrize("i", range(40))
def test_device_bound(i):
    time.sleep(0.1)
    assert idna.__version__
"""

NOXFILE = """
import nox

nox.options.default_venv_backend = "uv"

@nox.session
@nox.parametrize("idna", ["2.10", "3.7"])
def tests(session, idna):
    session.install(f"idna=={idna}", "pytest")
    session.run("pytest", "-q", "-p", "no:cacheprovider", "-p", "no:testrack", "test_suite.py")
"""


def pytest_run(project: Path, *args: str) -> float:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *args],
        cwd=project,
        capture_output=True,
        text=True,
    )
    took = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(
            f"pytest {' '.join(args)} failed in {project}:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}"
        )
    return took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path(".peerbench") / "envs")
    args = parser.parse_args(argv)
    base = args.dir.resolve()
    if base.exists():
        shutil.rmtree(base)
    project = base / "project"
    project.mkdir(parents=True)
    (project / "test_suite.py").write_text(textwrap.dedent(SUITE))
    (project / "both.toml").write_text(TWO)
    (project / "one.toml").write_text(TWO.split("[[environments]]")[1].join(["[[environments]]", ""]))
    (project / "noxfile.py").write_text(textwrap.dedent(NOXFILE))
    cache = base / "cache"

    # 3 first: an empty cache, both environments built, then the run
    first = pytest_run(project, "--rack", "both.toml", f"--rack-envs-dir={cache}", "--rack-store", "memory")

    # 1: cached environments found ready (the run's header says how long that took)
    ready = []
    for _ in range(args.runs):
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "--rack",
             "both.toml", f"--rack-envs-dir={cache}", "--rack-store", "memory", "-k", "no_such_test"],
            cwd=project, capture_output=True, text=True,
        )  # fmt: skip
        found = re.search(r"environments (.*) ready in ([\d.]+) s", proc.stdout + proc.stderr)
        if found is None or "built" in found.group(1):
            raise SystemExit(
                f"the environments were not found cached:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
            )
        ready.append(float(found.group(2)) / 2)  # two environments

    # 2: both environments, each mode, against the slower one alone
    both, alone = [], []
    for _ in range(args.runs):
        both.append(
            pytest_run(project, "--rack", "both.toml", f"--rack-envs-dir={cache}", "--rack-store", "memory")
        )
        alone.append(
            pytest_run(project, "--rack", "one.toml", f"--rack-envs-dir={cache}", "--rack-store", "memory")
        )

    # 3 against nox, in a throwaway venv
    tools = Path(tempfile.mkdtemp(prefix="testrack-bench-nox-"))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from testrack import envs

    uv = envs.uv_binary()
    subprocess.run([uv, "venv", "-q", str(tools / "venv")], check=True)
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(tools / "venv" / "bin" / "python"), "nox", "uv"],
        check=True,
    )
    started = time.perf_counter()
    nox = subprocess.run(
        [str(tools / "venv" / "bin" / "nox"), "--envdir", str(base / "nox")],
        cwd=project,
        capture_output=True,
        text=True,
    )
    nox_first = time.perf_counter() - started
    if nox.returncode != 0:
        raise SystemExit(f"nox failed:\n{nox.stderr[-3000:]}")
    started = time.perf_counter()
    subprocess.run(
        [str(tools / "venv" / "bin" / "nox"), "--envdir", str(base / "nox"), "--reuse-existing-virtualenvs"],
        cwd=project,
        capture_output=True,
        check=True,
    )
    nox_again = time.perf_counter() - started
    shutil.rmtree(tools)

    med = statistics.median
    print("| measure | testrack | target | nox, serial |")
    print("|---|---|---|---|")
    what = f"cached environment ready (a run's header, per environment, median of {args.runs})"
    print(f"| {what} | {med(ready):.3f} s | < 2 s |  |")
    print(
        f"| 2 environments, each mode, 40 x 100 ms tests (median) | {med(both):.2f} s "
        f"= {med(both) / med(alone):.2f} x one alone ({med(alone):.2f} s) | <= 1.2 x "
        f"| {nox_again:.2f} s (reused venvs) |"
    )
    print(f"| first build + run of both (empty cache) | {first:.2f} s |  | {nox_first:.2f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
