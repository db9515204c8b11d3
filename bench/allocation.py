#!/usr/bin/env python3
"""How long one allocation decision takes on a rack of 100 devices (docs/multi-device.md).

Usage: python bench/allocation.py [--devices 100] [--decisions 2000] [--queues 100,1000,5000]

Times ``testrack.scheduling.allocate`` alone, on the decisions a run would take: a
simulated run of 100 devices (5 kinds, two revisions each, one in five devices with two
slots) where tests of 1 to 4 devices end and the queue is kept at a given length, one
decision per test that ends, the reservation passed back each time. "start" is the
first decision of a run: every slot free, a whole queue waiting. Prints the median and
99th percentile in microseconds, of the wall time and of the process's CPU time.
Single-threaded, a few seconds; on a shared machine the wall time's tail is the
machine's as much as the code's.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import math
import platform
import random
import statistics
import time
from collections.abc import Iterator, Sequence

from testrack.scheduling.allocation import Pending, Reservation, SlotState, allocate

KINDS = ("phone", "board", "host", "scope", "gpu")


def make_rack(count: int, rng: random.Random) -> dict[str, str]:
    """Slot id -> device name: ``count`` devices of five kinds, one in five with two slots."""
    slots = {}
    for i in range(count):
        device = f"{KINDS[i % len(KINDS)]}-{i}"
        for s in range(2 if rng.random() < 0.2 else 1):
            slots[f"{device}/{s}"] = device
    return slots


def make_test(key: str, devices: Sequence[str], rng: random.Random) -> tuple[Pending, float]:
    """A test of 1 to 4 devices (each position a kind, sometimes a revision) and its duration."""
    size = rng.choices((1, 2, 3, 4), weights=(55, 25, 12, 8))[0]
    positions = []
    for _ in range(size):
        kind = rng.choice(KINDS)
        parity = rng.choice((None, None, 0, 1))
        positions.append(
            frozenset(
                d
                for d in devices
                if d.startswith(kind) and (parity is None or int(d.rsplit("-", 1)[1]) % 2 == parity)
            )
        )
    duration = math.exp(rng.uniform(math.log(0.1), math.log(60)))
    estimate = duration * rng.uniform(0.8, 1.2)
    return Pending(key, tuple(positions), estimate, rng.random() < 0.05), duration


@contextlib.contextmanager
def timed(times: list[tuple[int, int]]) -> Iterator[None]:
    """Append (wall, CPU) nanoseconds of the block: the CPU time leaves out the moments another
    process had the core, which on a shared machine are most of the wall time's tail."""
    wall, cpu = time.perf_counter_ns(), time.process_time_ns()
    yield
    times.append((time.perf_counter_ns() - wall, time.process_time_ns() - cpu))


def steady(devices: int, queue_length: int, decisions: int, seed: int) -> list[tuple[int, int]]:
    """Nanoseconds per decision in a run whose queue stays ``queue_length`` long."""
    rng = random.Random(seed)
    device_of = make_rack(devices, rng)
    names = sorted(set(device_of.values()))
    queue: dict[str, tuple[Pending, float]] = {}
    made = 0

    def top_up() -> None:
        nonlocal made
        while len(queue) < queue_length:
            test = make_test(f"t{made}", names, rng)
            queue[test[0].id] = test
            made += 1

    top_up()
    busy: dict[str, tuple[float, float]] = {}  # slot -> (estimated end, end)
    ends: list[tuple[float, int, tuple[str, ...]]] = []
    held: Reservation | None = None
    now = 0.0
    times: list[tuple[int, int]] = []
    while len(times) < decisions:
        slots = [
            SlotState(s, d, s in busy, max(0.0, busy[s][0] - now) if s in busy else 0.0)
            for s, d in device_of.items()
        ]
        requests = [p for p, _ in queue.values()]
        with timed(times):
            decision = allocate(slots, requests, held)
        held = decision.reservation
        for grant in decision.grants:
            pending, duration = queue.pop(grant.request)
            for s in grant.slots:
                busy[s] = (now + pending.estimate, now + duration)
            heapq.heappush(ends, (now + duration, len(times) * 100 + len(ends), grant.slots))
        for key in decision.impossible:
            del queue[key]
        top_up()
        now, _, freed = heapq.heappop(ends)
        for s in freed:
            del busy[s]
    return times


def start(devices: int, queue_length: int, repeats: int, seed: int) -> list[tuple[int, int]]:
    """Nanoseconds for the first decision of a run: every slot free, the whole queue waiting."""
    rng = random.Random(seed)
    times: list[tuple[int, int]] = []
    for _ in range(repeats):
        device_of = make_rack(devices, rng)
        names = sorted(set(device_of.values()))
        slots = [SlotState(s, d) for s, d in device_of.items()]
        requests = [make_test(f"t{i}", names, rng)[0] for i in range(queue_length)]
        with timed(times):
            allocate(slots, requests)
    return times


def row(label: str, times: Sequence[tuple[int, int]]) -> str:
    cells = [label, str(len(times))]
    for clock in (0, 1):
        ordered = sorted(t[clock] for t in times)
        p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
        cells += [f"{statistics.median(ordered) / 1000:.0f}", f"{p99 / 1000:.0f}"]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--queues", default="100,1000,5000")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    queues = [int(q) for q in args.queues.split(",")]
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, {args.devices} devices"
    )
    print("| decision | count | wall median µs | wall p99 µs | CPU median µs | CPU p99 µs |")
    print("|---|---|---|---|---|---|")
    for q in queues:
        print(row(f"during a run, {q} tests waiting", steady(args.devices, q, args.decisions, args.seed)))
    for q in queues:
        print(row(f"start of a run, {q} tests waiting", start(args.devices, q, 50, args.seed)))


if __name__ == "__main__":
    main()
