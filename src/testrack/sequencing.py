"""Runs whose order is fixed before they start: a seed (``--rack-random``) or a stored run
(``--rack-replay``).

Both turn the run's jobs into one sequence per worker slot, run as given by
:class:`~testrack.scheduling.sequences.SequenceDispatcher`: the same seed gives every worker the
same sequence on every run (:func:`testrack.ordering.split_tests`), and a replay gives each
worker the sequence it ran then (:func:`testrack.ordering.replay_sequences`). Dynamic
balancing and the history's longest-first order give way: an order can only be found again
if nothing about it depends on timing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import pytest

from testrack import ordering
from testrack.rack import Rack
from testrack.scheduling import Job, Slot
from testrack.scheduling.sequences import SequenceDispatcher


@dataclasses.dataclass(frozen=True)
class Order:
    """How this run's order is fixed: a seed and bucket, or a stored run's sequences."""

    seed: int | None = None
    bucket: str = ordering.DEFAULT_BUCKET
    #: ``--rack-replay``: slot id -> the node ids that slot ran, in order.
    replay: Mapping[str, tuple[str, ...]] | None = None
    #: ``--rack-replay``: slot id -> the files it imported, in the order it imported them.
    imports: Mapping[str, tuple[str, ...]] | None = None
    #: Where the seed came from, for the run's header.
    source: str = ""

    @property
    def fixed(self) -> bool:
        return self.seed is not None or self.replay is not None


def decide(
    config: pytest.Config,
    store: object | None,
    location: str,
    slots: Sequence[Slot],
    rack: Rack,
    sequential: str | None,
) -> Order:
    """The run's order, once every plugin is configured (pytest-randomly's seed may be the one):
    a stored run's sequences (``--rack-replay``), a seed, or none (``--sw``: collection order)."""
    if config.getoption("rack_worker") and not config.getoption("rack_replay"):
        raise pytest.UsageError("--rack-worker picks a worker of --rack-replay RUN; add --rack-replay RUN")
    if config.getoption("rack_replay_anywhere") and not config.getoption("rack_replay"):
        raise pytest.UsageError(
            "--rack-replay-anywhere moves the sequences of --rack-replay RUN to other devices; "
            "add --rack-replay RUN"
        )
    if config.getoption("rack_replay"):
        if config.getoption("rack_seed") is not None or config.getoption("rack_random"):
            raise pytest.UsageError(
                "--rack-replay runs a stored run's own order; leave out --rack-random/--rack-seed"
            )
        if store is None:
            raise pytest.UsageError(
                f"--rack-replay needs the results store, and it is {location}: "
                "replay from the store the run was recorded in (--rack-store PATH)"
            )
        return from_store(config, store, slots, rack)
    if sequential:
        return Order()
    return choose(config, rack)


def choose(config: pytest.Config, rack: Rack) -> Order:
    """The seed, from ``--rack-seed``, ``--rack-random``, the rack file, or pytest-randomly's.

    With pytest-randomly active and no testrack option, its seed orders the run: testrack is in
    charge of the order (across every worker), pytest-randomly of reseeding ``random`` per test.
    A testrack seed also becomes pytest-randomly's unless ``--randomly-seed`` was given, so
    one seed repeats both the order and what ``random`` draws.
    """
    order = _choose(config, rack)
    if order.seed is not None and order.source != "pytest-randomly" and _randomly_active(config):
        given = getattr(config.known_args_namespace, "randomly_seed", "default")
        if given == "default":
            config.option.randomly_seed = order.seed
            if getattr(config, "cache", None) is not None:  # what --randomly-seed=last reads
                config.cache.set("randomly_seed", order.seed)
    return order


def randomly_differs(config: pytest.Config, order: Order) -> int | None:
    """pytest-randomly's seed when it is not the order's (both given): the header says so."""
    if order.seed is None or not _randomly_active(config):
        return None
    seed = getattr(config.option, "randomly_seed", None)
    return seed if isinstance(seed, int) and seed != order.seed else None


def _randomly_active(config: pytest.Config) -> bool:
    reorganize = getattr(config.option, "randomly_reorganize", False)
    return config.pluginmanager.has_plugin("randomly") and bool(reorganize)


def _choose(config: pytest.Config, rack: Rack) -> Order:
    bucket = config.getoption("rack_random_bucket", None) or ordering.DEFAULT_BUCKET
    seed = config.getoption("rack_seed", None)
    if seed is not None:
        return Order(seed, bucket, source="--rack-seed")
    if config.getoption("rack_random", False):
        return Order(
            rack.seed if rack.seed is not None else ordering.choose_seed(), bucket, source="--rack-random"
        )
    if rack.random or rack.seed is not None:
        seed = rack.seed if rack.seed is not None else ordering.choose_seed()
        return Order(seed, bucket, source=f"{rack.source}")
    if _randomly_active(config):
        randomly_seed = getattr(config.option, "randomly_seed", None)
        if isinstance(randomly_seed, int):
            return Order(randomly_seed, bucket, source="pytest-randomly")
    return Order()


def seeded(
    jobs: Sequence[Job], slots: Sequence[Slot], order: Order, mode: str
) -> tuple[SequenceDispatcher, list[Job]]:
    """One sequence per slot from the seed; the jobs no slot may run."""
    assert order.seed is not None
    eligible: dict[str, set[str]] = {}
    by_test: dict[tuple[str, str], Job] = {}
    for job in jobs:
        eligible.setdefault(job.nodeid, set()).update(job.eligible)
        for device in job.eligible:
            by_test[(job.nodeid, device)] = job
    routed = [ordering.RoutedTest(nodeid, frozenset(devices)) for nodeid, devices in eligible.items()]
    split = ordering.split_tests(routed, slots, order.seed, order.bucket, mode)
    position = {
        nodeid: i for i, nodeid in enumerate(ordering.seeded_order(eligible, order.seed, order.bucket))
    }
    device_of = {slot.id: slot.device for slot in slots}
    sequences: dict[str, list[Job]] = {}
    for slot_id, nodeids in split.sequences.items():
        device = device_of[slot_id]
        sequences[slot_id] = [
            dataclasses.replace(
                by_test[(nodeid, device)], eligible=frozenset([device]), index=position[nodeid], queue=""
            )
            for nodeid in nodeids
        ]
    unrunnable = [job for job in jobs if job.nodeid in set(split.unrunnable)]
    matching = {nodeid: frozenset(devices) for nodeid, devices in eligible.items()} if mode == "load" else {}
    return SequenceDispatcher(slots, sequences, matching=matching), unrunnable


def replayed(
    jobs: Sequence[Job], slots: Sequence[Slot], order: Order
) -> tuple[SequenceDispatcher, list[str]]:
    """Each slot the sequence it ran in the stored run; the stored tests not collected now."""
    assert order.replay is not None
    by_test: dict[str, Job] = {}
    for job in jobs:
        by_test.setdefault(job.nodeid, job)
    device_of = {slot.id: slot.device for slot in slots}
    missing: list[str] = []
    sequences: dict[str, list[Job]] = {}
    offset = 0
    for slot_id, nodeids in order.replay.items():
        device = device_of[slot_id]
        lane: list[Job] = []
        for k, nodeid in enumerate(nodeids):
            found = by_test.get(nodeid)
            if found is None:
                missing.append(nodeid)
                continue
            lane.append(dataclasses.replace(found, eligible=frozenset([device]), index=offset + k, queue=""))
        sequences[slot_id] = lane
        offset += len(nodeids)
    return SequenceDispatcher(slots, sequences), missing


def from_store(config: pytest.Config, store: object, slots: Sequence[Slot], rack: Rack) -> Order:
    """``--rack-replay RUN [--rack-worker gwN] [--rack-replay-anywhere]``: read the stored run."""
    from testrack.history import HistoryError, resolve_run

    spec = config.getoption("rack_replay")
    try:
        run = resolve_run(store, spec)  # type: ignore[arg-type]
    except HistoryError as exc:
        raise pytest.UsageError(f"--rack-replay {spec}: {exc}") from None
    results = [r for r in store.results(run.id) if r.outcome != "rerun"]  # type: ignore[attr-defined]
    stored = ordering.replay_sequences(results, store.imports(run.id))  # type: ignore[attr-defined]
    only = config.getoption("rack_worker")
    if only:
        if only not in stored:
            raise pytest.UsageError(
                f"--rack-worker {only}: run {run.id} had no worker {only}; it had {', '.join(sorted(stored))}"
            )
        stored = {only: stored[only]}
    if not stored:
        raise pytest.UsageError(
            f"--rack-replay {spec}: run {run.id} ran no test on any worker; nothing to replay"
        )
    slot_ids = {slot.id: slot.device for slot in slots}
    anywhere = bool(config.getoption("rack_replay_anywhere"))
    gone = sorted({s.device for s in stored.values() if s.device not in {slot.device for slot in slots}})
    if gone and not anywhere:
        raise pytest.UsageError(
            f"--rack-replay {spec}: run {run.id} ran on {', '.join(gone)}, which "
            f"{'is' if len(gone) == 1 else 'are'} not in this rack ({rack.source}); add "
            "--rack-replay-anywhere to run their sequences on other slots"
        )
    replay: dict[str, tuple[str, ...]] = {}
    imports: dict[str, tuple[str, ...]] = {}
    free = [slot.id for slot in slots]
    for worker, sequence in sorted(stored.items()):
        if slot_ids.get(worker) == sequence.device and worker in free:
            target = worker
        else:
            same = [s for s in free if slot_ids[s] == sequence.device]
            target = (same or free or [None])[0]  # type: ignore[list-item]
        if target is None:
            raise pytest.UsageError(
                f"--rack-replay {spec}: run {run.id} had {len(stored)} workers and this rack has "
                f"{len(slots)} slots; replay one with --rack-worker gwN"
            )
        free.remove(target)
        replay[target] = sequence.tests
        imports[target] = sequence.imports
    return Order(replay=replay, imports=imports, source=f"run {run.id}")
