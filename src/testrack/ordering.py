"""Seeded test order, a split over worker slots that never depends on timing, and replay.

Random order exposes tests that depend on each other; it is only useful when the order
that broke can be had again. So nothing here draws a random number except
:func:`choose_seed`: a test's place is a hash of the seed and its id, its module's place a
hash of the seed and the module's id (pytest-randomly shuffles, so adding one test moves
every other; hashing does not: two tests compare by their own ids only). The split over
slots depends on the seed, the test set and the slots alone, so a seed gives every worker
the same sequence on every run, which is what dynamic balancing cannot give (pytest-xdist
#1055). :func:`replay_sequences` reads the sequences back from a stored run.

All of it is pure and tested without processes (``tests/test_ordering.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from collections.abc import Iterable, Mapping, Sequence

from testrack.scheduling import Slot
from testrack.store.base import ImportCost, Result

#: ``--rack-random-bucket``: what stays together while the order is shuffled.
BUCKETS = ("module", "class", "global")
DEFAULT_BUCKET = "module"
#: Seeds are chosen below this, so that they are short enough to type back.
SEED_LIMIT = 10**8

SEP = "::"


def choose_seed() -> int:
    """A fresh seed for ``--rack-random`` (printed, stored, typed back with ``--rack-seed``)."""
    return secrets.randbelow(SEED_LIMIT)


def _hash(seed: int, name: str) -> int:
    """A stable 64-bit hash (the same in every process and on every machine, unlike hash())."""
    digest = hashlib.blake2b(f"{seed}\0{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def module_of(nodeid: str) -> str:
    """``tests/test_x.py`` of ``tests/test_x.py::TestA::test_b[1]``."""
    return nodeid.partition(SEP)[0]


def group_of(nodeid: str) -> str:
    """The test's parent: its module or class (``tests/test_x.py::TestA``).

    Parameters (``[...]``) may contain ``::``, so only the part before them is split.
    """
    base = nodeid.partition("[")[0]
    parent, sep, _name = base.rpartition(SEP)
    return parent if sep else base


def sort_key(nodeid: str, seed: int, bucket: str = DEFAULT_BUCKET) -> tuple[int | str, ...]:
    """Where a test goes in the seeded order; it depends on this test's id alone.

    ``module``: modules by hash(seed, module), tests within a module by hash(seed, test).
    ``class``: as ``module``, but a module's classes (and its module-level tests, as one
    group) stay together, ordered by hash(seed, class). ``global``: by hash(seed, test) only.
    Each hash is followed by the id it hashed, so that even a collision orders the same way.
    """
    own = (_hash(seed, nodeid), nodeid)
    if bucket == "global":
        return own
    module = module_of(nodeid)
    outer = (_hash(seed, module), module)
    if bucket == "module":
        return (*outer, *own)
    if bucket == "class":
        group = group_of(nodeid)
        return (*outer, _hash(seed, group), group, *own)
    raise ValueError(f"unknown bucket {bucket!r}; use one of {', '.join(BUCKETS)}")


def seeded_order(nodeids: Iterable[str], seed: int, bucket: str = DEFAULT_BUCKET) -> list[str]:
    """The tests in the order ``seed`` gives them (each id once)."""
    return sorted(set(nodeids), key=lambda nodeid: sort_key(nodeid, seed, bucket))


# ---------------------------------------------------------------------------------- the split


@dataclasses.dataclass(frozen=True)
class RoutedTest:
    """A test and the devices that may run it (routing: its markers against the rack)."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    nodeid: str
    eligible: frozenset[str]


@dataclasses.dataclass(frozen=True)
class Split:
    """Each slot's fixed sequence, and the tests that no slot may run."""

    sequences: dict[str, tuple[str, ...]]
    """Slot id -> node ids in the order that slot runs them (every slot has an entry)."""
    unrunnable: tuple[str, ...]
    """Tests whose eligible devices have no slot among those given, in seeded order."""


def split_tests(
    tests: Iterable[RoutedTest],
    slots: Sequence[Slot],
    seed: int,
    bucket: str = DEFAULT_BUCKET,
    mode: str = "load",
) -> Split:
    """Give each slot a fixed sequence: a function of the seed, the tests and the slots only.

    In ``load`` mode each test runs once; in ``each`` mode once on every device it may run on.
    A slot's sequence keeps the seeded order, so a test's neighbours do not depend on how many
    slots there are, and a module stays in one piece within a slot. Tests are balanced by count
    (no timing: the order must be the same on every run): each group of tests with the same
    eligible slots is poured onto its slots to level their counts, most constrained group first,
    and is cut into contiguous runs of the seeded order, so a module is split between two slots
    only where a cut falls (at most one module per cut, fewer when a cut meets a module boundary).
    """
    if mode not in ("load", "each"):
        raise ValueError(f"unknown mode {mode!r}; use load or each")
    slot_ids = [slot.id for slot in slots]
    slots_of: dict[str, list[str]] = {}
    for slot in slots:
        slots_of.setdefault(slot.device, []).append(slot.id)
    eligible_of: dict[str, set[str]] = {}
    for test in tests:
        eligible_of.setdefault(test.nodeid, set()).update(test.eligible)
    order = seeded_order(eligible_of, seed, bucket)
    # (eligible slots) -> the tests of that group, in seeded order
    groups: dict[tuple[str, ...], list[str]] = {}
    unrunnable: list[str] = []
    rank = {slot_id: i for i, slot_id in enumerate(slot_ids)}
    for nodeid in order:
        devices = sorted(d for d in eligible_of[nodeid] if d in slots_of)
        if not devices:
            unrunnable.append(nodeid)
            continue
        if mode == "each":
            for device in devices:
                groups.setdefault(tuple(slots_of[device]), []).append(nodeid)
        else:
            open_to = sorted((s for d in devices for s in slots_of[d]), key=rank.__getitem__)
            groups.setdefault(tuple(open_to), []).append(nodeid)
    load = dict.fromkeys(slot_ids, 0)
    assigned: dict[str, list[str]] = {slot_id: [] for slot_id in slot_ids}
    for eligible in sorted(groups, key=lambda e: (len(e), [rank[s] for s in e])):
        members = groups[eligible]
        shares = _level(members, eligible, load)
        start = 0
        for slot_id, share in zip(eligible, shares, strict=True):
            assigned[slot_id].extend(members[start : start + share])
            load[slot_id] += share
            start += share
    position = {nodeid: i for i, nodeid in enumerate(order)}
    sequences = {slot_id: tuple(sorted(assigned[slot_id], key=position.__getitem__)) for slot_id in slot_ids}
    return Split(sequences, tuple(unrunnable))


def _level(members: Sequence[str], eligible: Sequence[str], load: Mapping[str, int]) -> list[int]:
    """How many of ``members`` each eligible slot takes so that their loads end up as level as can be.

    Water filling: the lowest level L such that the slots below it can absorb every member;
    slots in ``eligible`` order take the rounding remainder, one each.
    """
    count = len(members)
    loads = [load[s] for s in eligible]
    low, high = min(loads), min(loads) + count

    def room(level: int) -> int:
        return sum(max(0, level - x) for x in loads)

    while low < high:  # the smallest level whose room holds every member
        mid = (low + high) // 2
        if room(mid) >= count:
            high = mid
        else:
            low = mid + 1
    shares = [max(0, low - 1 - x) for x in loads]
    left = count - sum(shares)
    for i, x in enumerate(loads):
        if left and x < low:
            shares[i] += 1
            left -= 1
    return shares


# ---------------------------------------------------------------------------------- replay


@dataclasses.dataclass(frozen=True)
class WorkerSequence:
    """What one worker slot ran in a stored run, in order, and where its processes began."""

    worker: str
    """The slot's id (``gw0``); ``--rack-worker`` picks it."""
    device: str
    tests: tuple[str, ...]
    """Every test the slot ran, in the order it ran them (a test retried on it appears twice)."""
    outcomes: tuple[str, ...]
    """The stored outcome of each of ``tests``."""
    processes: tuple[int, ...]
    """Index into ``tests`` where each worker process began: ``(0,)``, or more after a crash."""
    imports: tuple[str, ...]
    """The files the slot imported, in the order it first imported them."""

    def process_of(self, index: int) -> tuple[str, ...]:
        """The tests that ran in the same process as ``tests[index]``, before it."""
        start = max(p for p in self.processes if p <= index)
        return self.tests[start:index]


def replay_sequences(
    results: Iterable[Result], imports: Iterable[ImportCost] | None = None
) -> dict[str, WorkerSequence]:
    """Each worker's exact sequence in a stored run, from its results (worker, position).

    ``results`` in the order they were recorded (``Store.results``). Positions count from 0 in
    each worker process; a position that does not grow means the slot's worker was replaced (it
    crashed), so a new process begins there. Results no worker ran (``worker == "-"``: no
    device could run them) are left out. ``imports`` (``Store.imports``, in recorded order)
    gives the files each slot imported, in that order, as the run recorded them (collection
    unit keys); without it, each test file in the order its first test ran.
    """
    rows: dict[str, list[list[tuple[int, str, str]]]] = {}
    devices: dict[str, str] = {}
    for result in results:
        if result.worker == "-":
            continue
        devices.setdefault(result.worker, result.device)
        processes = rows.setdefault(result.worker, [])
        if not processes or result.position <= processes[-1][-1][0]:
            processes.append([])
        processes[-1].append((result.position, result.nodeid, result.outcome))
    imported: dict[str, dict[str, None]] = {}
    for cost in imports or ():
        imported.setdefault(cost.worker, {})[cost.module] = None
    out: dict[str, WorkerSequence] = {}
    for worker, processes in rows.items():
        ran: list[tuple[int, str, str]] = []
        starts: list[int] = []
        for process in processes:
            starts.append(len(ran))
            ran.extend(sorted(process, key=lambda row: row[0]))
        tests = tuple(nodeid for _, nodeid, _ in ran)
        files = imported.get(worker) or dict.fromkeys(module_of(nodeid) for nodeid in tests)
        out[worker] = WorkerSequence(
            worker, devices[worker], tests, tuple(o for _, _, o in ran), tuple(starts), tuple(files)
        )
    return out
