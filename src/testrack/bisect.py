"""Which earlier tests make a test fail (or, in brittle mode, pass): every culprit, not one.

A pure algorithm over a probe oracle, ``probe(prefix) -> bool`` ("the victim failed when
these tests ran before it, in this order, in one fresh process"); ``testrack bisect`` gives
it real pytest processes, the tests give it simulated suites.

The search looks at prefixes of the tests that ran before the victim, in their order: a
binary search finds the shortest prefix that still shows the effect, so its last test is
needed (with some of the tests before it). If that test shows the effect alone it is a
culprit by itself; if not, its partners are among the tests before it, and the same search
runs again with it kept in every probe: a pair (or a triple) that only pollutes together is
found whole. The culprits found are then taken out, and if what is left still shows the
effect the search goes on: two independent polluters are both found. The boundaries of a
binary search hold whatever happens between them, so a cleaner among the candidates (a test
that undoes the pollution) can move the boundary but never make the search fail; every set
reported was seen to reproduce, exactly as reported.

Counting search probes (the confirmation apart), with L = ceil(log2 n) for n earlier tests,
each culprit test costs at most L + 1 (L to find it, 1 to see whether it acts alone) and
"is there another?" costs 1 or 2 in all (see :func:`_every_culprit`): one polluter within
L + 3, d culprit tests within d * (L + 1) + 2, the issue's targets (``tests/test_bisect.py``
checks them exhaustively). Each set found is probed once more (a "verify" probe, counted
apart): when it no longer reproduces, the evidence is inconsistent (a flaky victim) and the
result says so, with the last set that reproduced. Cleaners are then looked for, with the
same search, among the other tests of the worker (probes counted as "clean").
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable, Sequence
from typing import Protocol

#: ``probe(prefix)``: run ``prefix`` then the victim in one fresh process; did the victim fail?
Probe = Callable[[Sequence[str]], bool]

#: Confirmation probes of each kind (alone, after the full prefix) when history says nothing.
CONFIRMATIONS = 2
#: ... and when the history says the victim is flaky.
FLAKY_CONFIRMATIONS = 4


class Mode(enum.Enum):
    """What the culprits do to the victim."""

    POLLUTED = "polluted"
    """The victim passes alone and fails after the culprits (polluters)."""
    BRITTLE = "brittle"
    """The victim fails alone and passes after the culprits (state-setters)."""


class Verdict(enum.Enum):
    FOUND = "found"
    """Every culprit set was found and reproduced again when verified."""
    NOTHING_BEFORE = "nothing before"
    """No test ran before the victim: nothing to search."""
    ALONE = "alone"
    """Polluted mode: the victim fails alone too (brittle: passes alone): no earlier test is needed."""
    NOT_REPRODUCED = "not reproduced"
    """After the full prefix the victim does not fail (brittle: does not pass)."""
    INCONSISTENT = "inconsistent"
    """Probes of the same tests disagreed: the victim is flaky; the last reproducing set is kept."""


@dataclasses.dataclass
class ProbeCounts:
    confirm: int = 0
    search: int = 0
    verify: int = 0
    clean: int = 0

    @property
    def total(self) -> int:
        return self.confirm + self.search + self.verify + self.clean


@dataclasses.dataclass
class Culprit:
    """A minimal set of earlier tests that, run before the victim, reproduces the effect."""

    tests: tuple[str, ...]
    """In the order they ran."""
    cleaners: list[tuple[str, ...]] = dataclasses.field(default_factory=list)
    """Tests that, run between these and the victim, undo the effect (each set on its own)."""


@dataclasses.dataclass
class BisectResult:
    verdict: Verdict
    culprits: list[Culprit]
    counts: ProbeCounts
    detail: str = ""
    """One line on what the confirmation saw, or what disagreed."""
    last_reproduced: tuple[str, ...] | None = None
    """The last set of earlier tests seen to reproduce the effect (the full prefix at first)."""


def n_tests(n: int) -> str:
    """``1 test``, ``2 tests``."""
    return f"{n} test{'s' if n != 1 else ''}"


def search_target(n: int, culprits: int = 1) -> int:
    """The issue's budget of search probes: d * (ceil(log2 n) + 1) + 2 (one: ceil(log2 n) + 3)."""
    return culprits * (_log2(n) + 1) + 2


def _log2(n: int) -> int:
    return math.ceil(math.log2(n)) if n > 1 else 0


class _Inconsistent(Exception):
    """Two probes of the same tests disagreed."""


class _Asks(Protocol):
    def effect(self, prefix: Sequence[str], kind: str, fresh: bool = False) -> bool: ...


class _Oracle:
    """The probe, counted by kind, with each distinct sequence asked once during the search."""

    def __init__(self, probe: Probe, mode: Mode, counts: ProbeCounts, limit: int) -> None:
        self._probe = probe
        self._mode = mode
        self.counts = counts
        self._limit = limit
        self._seen: dict[tuple[str, ...], bool] = {}
        self.last_reproduced: tuple[str, ...] | None = None

    def effect(self, prefix: Sequence[str], kind: str, fresh: bool = False) -> bool:
        """Does running ``prefix`` before the victim show the effect (polluted: the victim fails)?"""
        key = tuple(prefix)
        if not fresh and key in self._seen:
            return self._seen[key]
        if self.counts.total >= self._limit:
            raise _Inconsistent(f"gave up after {self.counts.total} probes without a stable answer")
        setattr(self.counts, kind, getattr(self.counts, kind) + 1)
        failed = self._probe(key)
        shown = failed if self._mode is Mode.POLLUTED else not failed
        self._seen.setdefault(key, shown)
        if shown and kind != "clean":
            self.last_reproduced = key
        return shown


def bisect(
    prior: Sequence[str],
    probe: Probe,
    mode: Mode = Mode.POLLUTED,
    confirmations: int = CONFIRMATIONS,
    cleaner_pool: Sequence[str] | None = None,
    limit: int | None = None,
) -> BisectResult:
    """Find every set of tests in ``prior`` (the tests that ran before the victim, in order) that
    makes the victim fail (brittle: pass), then the cleaners of each among ``cleaner_pool``
    (default: the other tests of ``prior``; an empty pool skips the cleaner search).

    ``limit`` caps the probes (default: generous, 8 * (n + 4)), so a flaky victim cannot keep
    the search going for ever. Never raises for what the probes say; the probe's own errors
    propagate.
    """
    prior = list(dict.fromkeys(prior))
    counts = ProbeCounts()
    oracle = _Oracle(probe, mode, counts, limit if limit is not None else 8 * (len(prior) + 4))
    if not prior:
        return BisectResult(Verdict.NOTHING_BEFORE, [], counts, "no test ran before it in its worker")
    alone = [oracle.effect((), "confirm", fresh=True) for _ in range(confirmations)]
    full = [oracle.effect(prior, "confirm", fresh=True) for _ in range(confirmations)]
    detail = _confirmation(mode, sum(alone), sum(full), confirmations, len(prior))
    if any(alone) != all(alone) or any(full) != all(full):
        return BisectResult(Verdict.INCONSISTENT, [], counts, detail, oracle.last_reproduced)
    if all(alone):
        return BisectResult(Verdict.ALONE, [], counts, detail)
    if not any(full):
        return BisectResult(Verdict.NOT_REPRODUCED, [], counts, detail)
    culprits: list[Culprit] = []
    candidates = prior
    try:
        while True:
            found = [Culprit(tests) for tests in _every_culprit(candidates, oracle)]
            for culprit in found:
                if not oracle.effect(culprit.tests, "verify", fresh=True):
                    raise _Inconsistent(
                        f"{' '.join(culprit.tests)} reproduced once, then not when verified: "
                        "the victim is flaky, so this set may be wrong"
                    )
            culprits += found
            blamed = {t for c in culprits for t in c.tests}
            everyone = dict.fromkeys(prior if cleaner_pool is None else cleaner_pool)
            pool = [t for t in everyone if t not in blamed]
            for culprit in found:
                culprit.cleaners = _cleaners(culprit.tests, pool, oracle) if pool else []
            # A cleaner can hide a polluter that ran before it: look again without the cleaners.
            cleaned = {t for c in culprits for s in c.cleaners for t in s}
            candidates = [t for t in prior if t not in blamed and t not in cleaned]
            if not found or not cleaned or not candidates or not oracle.effect(candidates, "clean"):
                break
    except _Inconsistent as exc:
        return BisectResult(Verdict.INCONSISTENT, culprits, counts, str(exc), oracle.last_reproduced)
    return BisectResult(Verdict.FOUND, culprits, counts, detail, oracle.last_reproduced)


def _confirmation(mode: Mode, alone: int, full: int, times: int, before: int) -> str:
    bad = "failed" if mode is Mode.POLLUTED else "passed"
    return (
        f"alone it {bad} {alone} of {times} times; after the {n_tests(before)} before it, {full} of {times}"
    )


def _every_culprit(prior: list[str], oracle: _Asks, kind: str = "search") -> list[tuple[str, ...]]:
    """Every culprit set, one after another: find one, take it out, look again while the rest
    still shows the effect. Known going in: the whole of ``prior`` shows it, nothing does not.

    After the first, "is there another?" is asked of the whole rest only while the range left
    to search (past the prefix known to be clean) is at most half of 2**L; a longer range is
    first asked about its first 2**(L-1) tests, so that finding a culprit there costs no more
    than the first one did. That keeps d independent culprits within d * (L + 1) + 2 probes.
    """
    half = 2 ** max(_log2(len(prior)) - 1, 0)
    found: list[tuple[str, ...]] = []
    remaining = list(prior)
    low = 0  # remaining[:low] is known not to show the effect
    high: int | None = len(remaining)  # remaining[:high] is known to show it (None: not known)
    while True:
        if high is None:
            if low >= len(remaining):
                return found
            if len(remaining) - low > half and oracle.effect(remaining[: low + half], kind):
                high = low + half
            else:
                if len(remaining) - low > half:
                    low += half
                if not oracle.effect(remaining, kind):
                    return found
                high = len(remaining)
        chosen, boundary = _minimal((), remaining[:high], low, oracle, kind)
        found.append(chosen)
        # With one test taken out, the clean prefix before it is the same list as before.
        low = boundary - 1 if len(chosen) == 1 else 0
        remaining = [t for t in remaining if t not in chosen]
        high = None


def _minimal(
    kept: tuple[str, ...], candidates: list[str], low: int, oracle: _Asks, kind: str
) -> tuple[tuple[str, ...], int]:
    """A minimal set that, with ``kept``, shows the effect; and where its last test stood.

    Known going in: ``kept`` + all of ``candidates`` shows the effect, ``kept`` +
    ``candidates[:low]`` does not. Probes keep the order the tests ran in.
    """
    order = {t: i for i, t in enumerate(candidates)}
    merged = _merger(kept, order)
    lo, hi = low, len(candidates)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if oracle.effect(merged(candidates[:mid]), kind):
            hi = mid
        else:
            lo = mid
    needed = candidates[hi - 1]
    before = candidates[: hi - 1]
    with_it = merged([needed])
    if not before or oracle.effect(with_it, kind):
        return with_it, hi
    # It needs company: some of the tests before it. Search them with it kept in every probe.
    chosen, _ = _minimal(with_it, before, 0, oracle, kind)
    return chosen, hi


def _merger(kept: tuple[str, ...], order: dict[str, int]) -> Callable[[Sequence[str]], tuple[str, ...]]:
    """Join ``kept`` and some candidates in the order they ran (kept tests come from later on)."""
    rank = dict(order)
    for i, t in enumerate(kept):
        rank.setdefault(t, len(order) + i)

    def merged(tests: Sequence[str]) -> tuple[str, ...]:
        return tuple(sorted({*kept, *tests}, key=rank.__getitem__))

    return merged


def _cleaners(culprit: tuple[str, ...], pool: list[str], oracle: _Oracle) -> list[tuple[str, ...]]:
    """Sets of ``pool`` tests that, run after ``culprit`` and before the victim, undo its effect.

    The same search with the question turned round: "does the victim come out clean?".
    """
    inverse = _Inverted(oracle, culprit)
    if not inverse.effect(pool, "clean"):
        return []
    return _every_culprit(pool, inverse, "clean")


class _Inverted:
    """The oracle asked "with the culprit first, does the effect go away?"."""

    def __init__(self, oracle: _Oracle, culprit: tuple[str, ...]) -> None:
        self._oracle = oracle
        self._culprit = culprit

    def effect(self, tests: Sequence[str], kind: str, fresh: bool = False) -> bool:
        return not self._oracle.effect((*self._culprit, *tests), "clean", fresh)
