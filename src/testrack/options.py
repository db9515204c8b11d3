"""testrack's own command-line options (the parts of the run each belongs to add theirs:
the report, the live view, leasing, the shared run, environments).

A value that cannot be right (a seed out of range, a negative count) is refused while the
command line is read, with what to give instead, never later as a traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from testrack.rack import MAX_SEED, MODES


def addoption(group: Any) -> None:
    group.addoption(
        "--rack",
        metavar="SPEC",
        default=None,
        help="the rack to run on: a rack file (TOML, or a devices.json list of addresses), "
        "local:N for N local workers, local:auto for one per CPU, or 'off'. "
        "Default: testrack.toml or [tool.testrack] in pyproject.toml when present.",
    )
    group.addoption(
        "--rack-store",
        metavar="PATH",
        default=None,
        help="where results are recorded: an SQLite file (default <rootdir>/.testrack/results.sqlite), "
        "a postgresql:// URL (shared by hosts), 'memory', or 'off'.",
    )
    group.addoption(
        "--rack-failed",
        action="store_true",
        help="run only the tests still failing (their latest result on a device is a failure), "
        "once on every device each is failing on.",
    )
    group.addoption(
        "--rack-failed-anywhere",
        action="store_true",
        help="like --rack-failed, but run them as the mode says: in load mode once, on any matching device.",
    )
    group.addoption(
        "--rack-timeout",
        type=seconds(60),
        default=None,
        metavar="SECONDS",
        help="fail a test that runs longer than this (its worker's stacks are shown, the worker "
        "is replaced); @pytest.mark.rack_timeout(SECONDS) sets it per test.",
    )
    group.addoption(
        "--rack-retry-crashed",
        type=int,
        default=0,
        metavar="N",
        help="rerun a test whose worker crashed (or timed out) up to N times on other devices "
        "(default 0: a crashing test could take down another device).",
    )
    group.addoption(
        "--rack-sequence",
        metavar="FILE",
        default=None,
        help="run exactly the tests listed in FILE (one node id a line), in that order, repeats "
        "included, in this process (implies --rack off).",
    )
    group.addoption(
        "--rack-outcomes",
        metavar="FILE",
        default=None,
        help="write one JSON line per test to FILE as it finishes: its node id and outcome "
        "(implies --rack off).",
    )
    group.addoption(
        "--rack-mode",
        choices=MODES,
        default=None,
        help="load: each test runs once, on any matching device (default); "
        "each: every test runs on every matching device.",
    )
    group.addoption(
        "--rack-collect",
        choices=("all", "eager", "lazy"),
        default="all",
        help="all (default): every worker imports every test file before its first test, as plain "
        "pytest does (a test may rely on what another file imported); eager: a worker imports only "
        "the files it will run, before its first test (faster where imports are dear); lazy: it "
        "imports a file when it first gets one of its tests, which balances better but lets a test "
        "that changes sys.modules affect later imports.",
    )
    group.addoption(
        "--rack-random",
        action="store_true",
        help="run the tests in a random order fixed by a seed (chosen, printed and stored): each "
        "worker's sequence depends only on the seed, the tests and the slots, so --rack-seed repeats it.",
    )
    group.addoption(
        "--rack-seed",
        type=_seed,
        default=None,
        metavar="N",
        help="random order with this seed (implies --rack-random; a run prints its seed).",
    )
    group.addoption(
        "--rack-random-bucket",
        choices=("module", "class", "global"),
        default=None,
        help="what stays together in random order: module (default: modules are shuffled, and the "
        "tests in each), class, or global (every test on its own).",
    )
    group.addoption(
        "--rack-replay",
        metavar="RUN",
        default=None,
        help="rerun a stored run's tests with each worker given exactly the sequence it ran (RUN: "
        "a run number, last, or a run's uid).",
    )
    group.addoption(
        "--rack-worker",
        metavar="gwN",
        default=None,
        help="with --rack-replay: replay only this worker's sequence.",
    )
    group.addoption(
        "--rack-replay-anywhere",
        action="store_true",
        help="with --rack-replay: run the sequences of devices that left the rack on other slots.",
    )
    group.addoption(
        "--rack-rerun-failed",
        type=_count,
        default=0,
        metavar="N",
        help="run a test that failed again, up to N times (on another device where one matches, in a "
        "fresh worker); a test that then passes is flaky, and the run still fails unless --rack-flaky-ok.",
    )
    group.addoption(
        "--rack-flaky-ok",
        action="store_true",
        help="with --rack-rerun-failed: a flaky test (failed, then passed on a rerun) does not fail the run.",
    )
    group.addoption(
        "--rack-device",
        metavar="NAME",
        default=None,
        help="with --rack off: run in this process as device NAME of the project's rack (its env "
        "and the device fixture; tests it cannot run are skipped). Default: the rack's first device.",
    )


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a seed; give a whole number from 0 to {MAX_SEED} (the results store keeps "
            "it as a 64-bit number), such as the one a random run printed"
        )
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count; give a whole number >= 0, such as 2")
    return value


def seconds(example: int, zero: bool = False) -> Callable[[str], float]:
    """An option's type for a number of seconds (above 0, or from 0 with ``zero``); a wrong
    value is refused with an example of a right one."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if value < 0 or (value == 0 and not zero):
            least = "0 or more" if zero else "above 0"
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a number of seconds {least}, for example {example}"
            )
        return value

    return parse
