#!/usr/bin/env python3
"""Probe counts of ``testrack bisect`` per scenario, against the targets and against the
halving search of detect-test-pollution, for docs/isolation.md.

Usage: python bench/isolation.py [--real]

Without ``--real`` (a few seconds): the search runs against simulated suites (a victim whose
outcome is a function of the tests before it), for every placement of the culprits or 200
random ones, with n = 10, 100 and 1000 earlier tests; the same suites go to a halving search
written after detect-test-pollution's description (confirm alone and with all, keep the half
that fails, check the last test), which assumes exactly one polluter. With ``--real``: the
acceptance scenarios (n = 10) as real projects, one real rack run each and real probes.
Prints Markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from testrack.bisect import Mode, Verdict, bisect, search_target


@dataclasses.dataclass
class Suite:
    polluters: list[frozenset[str]] = dataclasses.field(default_factory=list)
    cleaners: frozenset[str] = frozenset()
    setters: frozenset[str] = frozenset()

    def probe(self, prefix: Sequence[str]) -> bool:
        """Did the victim fail after ``prefix``?"""
        if self.setters:
            return not self.setters & set(prefix)
        seen: list[set[str]] = [set() for _ in self.polluters]
        dirty = False
        for test in prefix:
            for i, group in enumerate(self.polluters):
                if test in group:
                    seen[i].add(test)
                    dirty = dirty or seen[i] == group
            if test in self.cleaners:
                dirty, seen = False, [set() for _ in self.polluters]
        return dirty


def names(n: int) -> list[str]:
    return [f"t{i:04d}" for i in range(n)]


def halving(prior: list[str], probe: Callable[[Sequence[str]], bool]) -> tuple[list[str] | None, int]:
    """detect-test-pollution's method: what it names (None: it stops with an error) and its runs."""
    runs = 0

    def fails(tests: Sequence[str]) -> bool:
        nonlocal runs
        runs += 1
        return probe(tests)

    if fails([]) or not fails(prior):
        return None, runs
    ids = list(prior)
    while len(ids) != 1:
        half = len(ids) // 2
        ids = ids[half:] if not fails(ids[:half]) else ids[:half]
    if not fails(ids):
        return None, runs  # its "unreachable? unexpected pass?" error
    return ids, runs


@dataclasses.dataclass
class Scenario:
    name: str
    culprits: int
    mode: Mode
    make: Callable[[list[str], random.Random], tuple[Suite, list[tuple[str, ...]]]]
    """A suite over the given tests, and the culprit sets it must yield."""


def one(prior: list[str], rng: random.Random) -> tuple[Suite, list[tuple[str, ...]]]:
    p = rng.choice(prior)
    return Suite(polluters=[frozenset([p])]), [(p,)]


def independent(k: int) -> Callable[[list[str], random.Random], tuple[Suite, list[tuple[str, ...]]]]:
    def make(prior: list[str], rng: random.Random) -> tuple[Suite, list[tuple[str, ...]]]:
        chosen = sorted(rng.sample(prior, k))
        return Suite(polluters=[frozenset([c]) for c in chosen]), [(c,) for c in chosen]

    return make


def pair(prior: list[str], rng: random.Random) -> tuple[Suite, list[tuple[str, ...]]]:
    a, b = sorted(rng.sample(prior, 2))
    return Suite(polluters=[frozenset([a, b])]), [(a, b)]


def cleaner(prior: list[str], rng: random.Random) -> tuple[Suite, list[tuple[str, ...]]]:
    """A cleaner before the polluter, in the same half (the run still failed)."""
    half = prior[: len(prior) // 2] if rng.random() < 0.5 else prior[len(prior) // 2 :]
    c, p = sorted(rng.sample(half, 2))
    return Suite(polluters=[frozenset([p])], cleaners=frozenset([c])), [(p,)]


def hidden(prior: list[str], rng: random.Random) -> tuple[Suite, list[tuple[str, ...]]]:
    """A polluter, a cleaner after it, another polluter after that: the run failed."""
    p1, c, p2 = sorted(rng.sample(prior, 3))
    return Suite(polluters=[frozenset([p1]), frozenset([p2])], cleaners=frozenset([c])), [(p1,), (p2,)]


def setter(prior: list[str], rng: random.Random) -> tuple[Suite, list[tuple[str, ...]]]:
    s = rng.choice(prior)
    return Suite(setters=frozenset([s])), [(s,)]


SCENARIOS = [
    Scenario("one polluter", 1, Mode.POLLUTED, one),
    Scenario("two independent polluters", 2, Mode.POLLUTED, independent(2)),
    Scenario("three independent polluters", 3, Mode.POLLUTED, independent(3)),
    Scenario("a pair, polluting only together", 2, Mode.POLLUTED, pair),
    Scenario("a polluter and a cleaner in the same half", 1, Mode.POLLUTED, cleaner),
    Scenario("two polluters, a cleaner between them", 2, Mode.POLLUTED, hidden),
    Scenario("brittle: one state-setter", 1, Mode.BRITTLE, setter),
]


def cases(scenario: Scenario, n: int, rng: random.Random) -> Iterator[tuple[Suite, list[tuple[str, ...]]]]:
    prior = names(n)
    if scenario.make is one and n <= 100:
        for p in prior:  # every position
            yield Suite(polluters=[frozenset([p])]), [(p,)]
        return
    for _ in range(200):
        yield scenario.make(prior, rng)


def simulated() -> list[str]:
    rows = [
        "| scenario | n | culprits named | search probes, worst (mean) | target | all probes, worst | "
        "halving (detect-test-pollution): named | its runs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rng = random.Random(9)
    for scenario, n in itertools.product(SCENARIOS, (10, 100, 1000)):
        right = total = 0
        dtp_named: dict[str, int] = {}
        search: list[int] = []
        every: list[int] = []
        dtp_runs: list[int] = []
        for suite, expected in cases(scenario, n, rng):
            total += 1
            result = bisect(names(n), suite.probe, scenario.mode)
            right += result.verdict is Verdict.FOUND and sorted(c.tests for c in result.culprits) == expected
            search.append(result.counts.search)
            every.append(result.counts.total)
            if scenario.mode is Mode.POLLUTED:
                named, runs = halving(names(n), suite.probe)
                if named is None:
                    what = "stops with an error"
                elif [tuple(named)] == expected:
                    what = "all"
                elif (named[0],) in expected:
                    what = "one of them"
                else:
                    what = "a wrong one"
                dtp_named[what] = dtp_named.get(what, 0) + 1
                dtp_runs.append(runs)
        ranked = sorted(dtp_named.items(), key=lambda kv: -kv[1])
        shares = ", ".join(f"{what} {k / total:.0%}" for what, k in ranked)
        dtp = (shares, f"{max(dtp_runs)}") if dtp_runs else ("n/a (no brittle mode)", "-")
        rows.append(
            f"| {scenario.name} | {n} | {right / total:.0%} of {total} | {max(search)} "
            f"({statistics.mean(search):.1f}) | {search_target(n, scenario.culprits)} | {max(every)} | "
            f"{dtp[0]} | {dtp[1]} |"
        )
    return rows


# ---------------------------------------------------------------------------------- real runs

REAL = {
    "one polluter": ({6: "state.DIRT.add(6)"}, "assert not state.DIRT", 1, ()),
    "two independent polluters": (
        {1: "state.DIRT.add(1)", 8: "state.DIRT.add(8)"}, "assert not state.DIRT", 2, ()
    ),
    "a pair, polluting only together": (
        {2: "state.DIRT.add(2)", 7: "state.DIRT.add(7)"}, "assert len(state.DIRT) < 2", 2, ()
    ),
    "a polluter and a cleaner in the same half": (
        {1: "state.DIRT.clear()", 3: "state.DIRT.add(3)"}, "assert not state.DIRT", 1, ()
    ),
    "brittle: one state-setter": ({5: "state.READY.add(5)"}, "assert state.READY", 1, ("--brittle",)),
}  # fmt: skip


def real() -> list[str]:
    rows = [
        "| scenario (n = 10, real processes) | culprits | search probes | target | confirm | verify "
        "| cleaners | all | wall time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (bodies, victim, culprits, extra) in REAL.items():
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "state.py").write_text("DIRT = set()\nREADY = set()\n")
            layout = {"test_a.py": range(4), "test_b.py": range(4, 8), "test_c.py": range(8, 10)}
            for f, numbers in layout.items():
                body = "".join(f"def test_{i}():\n    {bodies.get(i, 'pass')}\n\n" for i in numbers)
                (root / f).write_text("import state\n\n" + body)
            (root / "test_z_victim.py").write_text(f"import state\n\ndef test_victim():\n    {victim}\n")
            pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rack", "local:1"]
            subprocess.run(pytest, cwd=root, capture_output=True, check=False)
            started = time.monotonic()
            command = [sys.executable, "-m", "testrack", "bisect", "test_z_victim.py::test_victim", "--json"]
            done = subprocess.run(
                [*command, *extra],
                cwd=root,
                capture_output=True,
                text=True,
                check=False,
            )
            wall = time.monotonic() - started
            data = json.loads(done.stdout)
            p = data["probes"]
            named = "; ".join(" + ".join(t.split("::")[1] for t in c["tests"]) for c in data["culprits"])
            rows.append(
                f"| {name} | {named} | {p['search']} | {search_target(10, culprits)} | {p['confirm']} | "
                f"{p['verify']} | {p['clean']} | {p['total']} | {wall:.1f} s |"
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--real", action="store_true", help="also run the scenarios as real projects")
    args = parser.parse_args(argv)
    print("\n".join(simulated()))
    if args.real:
        print()
        print("\n".join(real()))
    print(f"\nceil(log2 n): {', '.join(f'n={n}: {math.ceil(math.log2(n))}' for n in (10, 100, 1000))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
