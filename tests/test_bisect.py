"""The culprit search, exhaustively, against simulated suites (no processes).

A simulated victim's outcome is a function of the tests that ran before it: polluter sets
(each pollutes once all its tests have run), cleaners (undo the pollution) and, in brittle
mode, state-setters. Every scenario checks the culprits named and the probes counted against
the issue's targets: one polluter among n in ceil(log2 n) + 3 search probes, d polluters in
d * (ceil(log2 n) + 1) + 2.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testrack.bisect import Mode, Verdict, bisect, search_target


@dataclasses.dataclass
class Suite:
    """A victim and what the tests before it do to it."""

    polluters: list[frozenset[str]] = dataclasses.field(default_factory=list)
    cleaners: dict[str, int] = dataclasses.field(default_factory=dict)
    """cleaner -> the polluter set it undoes (-1: every one)."""
    setters: list[frozenset[str]] = dataclasses.field(default_factory=list)
    probes: list[tuple[str, ...]] = dataclasses.field(default_factory=list)

    def probe(self, prefix: Sequence[str]) -> bool:
        """Did the victim fail after ``prefix``?"""
        self.probes.append(tuple(prefix))
        seen: list[set[str]] = [set() for _ in self.polluters]
        polluted = [False] * len(self.polluters)
        ran = set(prefix)
        for test in prefix:
            for i, group in enumerate(self.polluters):
                if test in group:
                    seen[i].add(test)
                    polluted[i] = polluted[i] or seen[i] == group
            if test in self.cleaners:
                for i in range(len(self.polluters)):
                    if self.cleaners[test] in (-1, i):
                        polluted[i], seen[i] = False, set()
        if self.setters:
            return not any(group <= ran for group in self.setters)
        return any(polluted)


def names(n: int) -> list[str]:
    return [f"t{i:02d}" for i in range(n)]


def log2(n: int) -> int:
    return math.ceil(math.log2(n)) if n > 1 else 0


def test_the_targets_are_the_issues_formulas() -> None:
    """One culprit: ceil(log2 n) + 3; d culprits: d * (ceil(log2 n) + 1) + 2."""
    assert search_target(16) == 4 + 3
    assert search_target(100, 3) == 3 * (7 + 1) + 2
    assert search_target(1) == 3


@pytest.mark.parametrize("n", range(1, 41))
def test_one_polluter_anywhere_is_found_within_log2_n_plus_3(n: int) -> None:
    """Every position of a single polluter among n: found alone, within the target."""
    prior = names(n)
    for position in range(n):
        suite = Suite(polluters=[frozenset([prior[position]])])
        result = bisect(prior, suite.probe)
        assert result.verdict is Verdict.FOUND
        assert [c.tests for c in result.culprits] == [(prior[position],)]
        assert result.counts.search <= log2(n) + 3
        assert result.counts.confirm == 4 and result.counts.verify == 1
        assert result.counts.total == len(suite.probes)


@pytest.mark.parametrize(("d", "largest"), [(2, 20), (3, 16), (4, 12)])
def test_every_set_of_independent_polluters_is_found_within_the_target(d: int, largest: int) -> None:
    """Every placement of d polluters that each pollute alone: all d named, within d(L+1)+2."""
    for n in range(d, largest + 1):
        prior = names(n)
        for positions in itertools.combinations(range(n), d):
            suite = Suite(polluters=[frozenset([prior[p]]) for p in positions])
            result = bisect(prior, suite.probe)
            assert result.verdict is Verdict.FOUND
            assert sorted(c.tests for c in result.culprits) == [(prior[p],) for p in positions]
            assert result.counts.search <= search_target(n, d), (n, positions, result.counts)


@pytest.mark.parametrize("n", range(2, 21))
def test_a_pair_that_pollutes_only_together_is_found_whole(n: int) -> None:
    """Two tests that pollute only together are one culprit of two tests, within 2(L+1)+2."""
    prior = names(n)
    for a, b in itertools.combinations(range(n), 2):
        suite = Suite(polluters=[frozenset([prior[a], prior[b]])])
        result = bisect(prior, suite.probe)
        assert result.verdict is Verdict.FOUND
        assert [c.tests for c in result.culprits] == [(prior[a], prior[b])]
        assert result.counts.search <= search_target(n, 2)


def test_a_triple_and_a_single_polluter_are_both_found() -> None:
    """Three tests needed together, and an unrelated single polluter, in one prefix."""
    prior = names(16)
    suite = Suite(polluters=[frozenset(["t02", "t09", "t13"]), frozenset(["t06"])])
    result = bisect(prior, suite.probe)
    assert result.verdict is Verdict.FOUND
    assert sorted(c.tests for c in result.culprits) == [("t02", "t09", "t13"), ("t06",)]
    assert result.counts.search <= search_target(16, 4)


def test_a_cleaner_in_the_same_half_is_named_and_does_not_derail_the_search() -> None:
    """A cleaner that ran before the polluter, in the same half: polluter found, cleaner named."""
    prior = names(16)
    suite = Suite(polluters=[frozenset(["t05"])], cleaners={"t02": -1})
    result = bisect(prior, suite.probe)
    assert result.verdict is Verdict.FOUND
    (culprit,) = result.culprits
    assert culprit.tests == ("t05",) and culprit.cleaners == [("t02",)]
    assert result.counts.search <= search_target(16)


def test_a_polluter_hidden_by_a_cleaner_is_found_too() -> None:
    """t02 pollutes, t05 cleans, t08 pollutes again: t08 made the run fail; once t05 is known
    to clean, the tests without it show that t02 pollutes as well."""
    prior = names(12)
    suite = Suite(polluters=[frozenset(["t02"]), frozenset(["t08"])], cleaners={"t05": -1})
    result = bisect(prior, suite.probe)
    assert result.verdict is Verdict.FOUND
    found = [(c.tests, c.cleaners) for c in result.culprits]
    assert found == [(("t08",), [("t05",)]), (("t02",), [("t05",)])]
    assert result.counts.search <= search_target(12, 2)


@pytest.mark.parametrize("n", [1, 2, 7, 16, 33])
def test_brittle_mode_finds_the_state_setter(n: int) -> None:
    """The victim fails alone and passes after a setter: every position of the setter is found."""
    prior = names(n)
    for position in range(n):
        suite = Suite(setters=[frozenset([prior[position]])])
        result = bisect(prior, suite.probe, mode=Mode.BRITTLE)
        assert result.verdict is Verdict.FOUND
        assert [c.tests for c in result.culprits] == [(prior[position],)]
        assert result.counts.search <= search_target(n)


def test_brittle_mode_finds_two_setters_needed_together() -> None:
    prior = names(10)
    suite = Suite(setters=[frozenset(["t01", "t07"])])
    result = bisect(prior, suite.probe, mode=Mode.BRITTLE)
    assert [c.tests for c in result.culprits] == [("t01", "t07")]


def test_probes_keep_the_order_the_tests_ran_in() -> None:
    """Every probe is a subsequence of the prefix (cleaner probes put the culprit first)."""
    prior = names(16)
    suite = Suite(polluters=[frozenset(["t03", "t11"]), frozenset(["t07"])], cleaners={"t14": -1})
    bisect(prior, suite.probe, cleaner_pool=[*prior, "t14"])
    rank = {t: i for i, t in enumerate(prior)}
    search = [p for p in suite.probes if not p or p[0] not in ("t07", "t03")]
    assert search and all([rank[t] for t in p] == sorted(rank[t] for t in p) for p in search)


def test_a_victim_that_fails_alone_is_not_bisected() -> None:
    """Polluted mode, but the victim fails on its own: no search, and the words say why."""
    suite = Suite(setters=[frozenset(["never"])])
    result = bisect(names(8), suite.probe)
    assert result.verdict is Verdict.ALONE and result.counts.search == 0
    assert result.detail == "alone it failed 2 of 2 times; after the 8 tests before it, 2 of 2"


def test_a_failure_that_does_not_come_back_is_not_reproduced() -> None:
    suite = Suite(polluters=[frozenset(["elsewhere"])])
    result = bisect(names(8), suite.probe)
    assert result.verdict is Verdict.NOT_REPRODUCED
    assert result.detail == "alone it failed 0 of 2 times; after the 8 tests before it, 0 of 2"


def test_nothing_ran_before_it() -> None:
    result = bisect([], Suite().probe)
    assert result.verdict is Verdict.NOTHING_BEFORE and result.counts.total == 0


def test_more_confirmations_when_asked() -> None:
    suite = Suite(polluters=[frozenset(["t01"])])
    result = bisect(names(4), suite.probe, confirmations=4)
    assert result.counts.confirm == 8


@pytest.mark.parametrize("seed", range(40))
def test_a_flaky_victim_ends_in_words_never_in_a_traceback(seed: int) -> None:
    """Coin-flip outcomes: the result is inconsistent (or a plain verdict), never an exception,
    and the last set that reproduced is one a probe really saw reproduce."""
    rng = random.Random(seed)
    seen_failing: set[tuple[str, ...]] = set()

    def probe(prefix: Sequence[str]) -> bool:
        failed = rng.random() < 0.5
        if failed:
            seen_failing.add(tuple(prefix))
        return failed

    result = bisect(names(16), probe)
    assert result.verdict in (Verdict.INCONSISTENT, Verdict.ALONE, Verdict.NOT_REPRODUCED, Verdict.FOUND)
    if result.verdict is Verdict.INCONSISTENT:
        assert result.detail
        assert result.last_reproduced is None or result.last_reproduced in seen_failing
    assert result.counts.total <= 8 * (16 + 4)


def test_a_set_that_does_not_reproduce_when_verified_is_called_inconsistent() -> None:
    """The search's answer fails its verification: say so, and keep the last reproducing set."""
    calls: list[tuple[str, ...]] = []

    def probe(prefix: Sequence[str]) -> bool:
        calls.append(tuple(prefix))
        if prefix == ("t02",):  # reproduces during the search, not when verified
            return calls.count(("t02",)) == 1
        return "t02" in prefix

    result = bisect(names(8), probe)
    assert result.verdict is Verdict.INCONSISTENT
    assert result.detail == (
        "t02 reproduced once, then not when verified: the victim is flaky, so this set may be wrong"
    )
    assert result.last_reproduced == ("t02",)


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=200),
    data=st.data(),
)
def test_random_independent_polluters_in_long_prefixes(n: int, data: st.DataObject) -> None:
    """Larger prefixes, 1 to 5 independent polluters anywhere: all found, within the target."""
    d = data.draw(st.integers(min_value=1, max_value=min(5, n)))
    positions = sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=d, max_size=d)))
    prior = names(n) if n <= 100 else [f"t{i:03d}" for i in range(n)]
    suite = Suite(polluters=[frozenset([prior[p]]) for p in positions])
    result = bisect(prior, suite.probe)
    assert sorted(c.tests for c in result.culprits) == [(prior[p],) for p in positions]
    assert result.counts.search <= search_target(n, d)
