"""Device-time fairness, simulated on the in-memory share with a driven clock: runs that give a
device back when another run waits with less device time finish together and share evenly."""

from __future__ import annotations

import os

from testrack.share import DeviceSpec, DrivenClock, Holder, HolderInfo, MemoryShare, SlotKey
from testrack.share.holder import Lease

TEST = 1.0  # seconds of device time per test


class Run:
    """A run with its own list of tests and one holder; per device, a lease or a queued request."""

    def __init__(self, share: MemoryShare, name: str, tests: int) -> None:
        self.name, self.left, self.finished = name, tests, 0.0
        self.holder = Holder(share, HolderInfo(name, "host", os.getpid(), "pytest"), ttl=1e9)
        self.leases: dict[str, Lease] = {}
        self.requests: dict[str, int] = {}


def simulate(runs: int, tests: int, devices: int) -> tuple[list[Run], MemoryShare]:
    """Every run wants every device; each step every held device runs one test of its holder;
    between tests a holder gives the device back if the share says so, and asks again."""
    clock = DrivenClock()
    start = clock.time()
    share = MemoryShare(clock)
    names = [f"dev-{i}" for i in range(devices)]
    share.register_devices([DeviceSpec(n) for n in names])
    all_runs = [Run(share, f"run-{i}", tests) for i in range(runs)]
    for run in all_runs:
        for device in names:
            request, grant = share.request(run.holder.id, [SlotKey(device)], 0)
            if grant is None:
                run.requests[device] = request
            else:
                run.leases[device] = Lease(grant, float("inf"))
    while any(run.left for run in all_runs):
        busy = [(run, device) for run in all_runs for device in list(run.leases) if run.left]
        clock.advance(TEST)
        for run, _device in busy:
            if run.left:
                run.left -= 1
                if not run.left:
                    run.finished = clock.time() - start
        for run, device in busy:
            lease = run.leases[device]
            if not run.left or run.holder.should_give_back(lease):
                run.holder.release(lease)
                del run.leases[device]
                if run.left:
                    run.requests[device], _ = share.request(run.holder.id, [SlotKey(device)], 0)
        for run in all_runs:
            for device, request in list(run.requests.items()):
                grant = share.try_grant(request)
                if grant is not None:
                    del run.requests[device]
                    if run.left:
                        run.leases[device] = Lease(grant, float("inf"))
                    else:
                        share.release(run.holder.id, grant.token)
        clock.advance(0.3)  # past the give-back answer's cache
    return all_runs, share


def test_two_equal_runs_on_a_two_device_rack_finish_together() -> None:
    """The first run takes both devices; it gives one back as soon as the second waits with less
    device time, and from then on they take turns: they finish within 10 % of each other."""
    (a, b), _ = simulate(runs=2, tests=40, devices=2)
    assert abs(a.finished - b.finished) <= 0.1 * max(a.finished, b.finished), (a.finished, b.finished)


def test_four_equal_runs_waiting_for_one_device_share_it_evenly() -> None:
    """Jain's index of the device time 4 equal runs get while all wait for one device is >= 0.95."""
    runs, share = simulate(runs=4, tests=30, devices=1)
    start = share.grant_records()[0].granted
    until = start + min(run.finished for run in runs)  # while all four still wanted the device
    used = []
    for run in runs:
        total = 0.0
        for record in share.grant_records():
            if record.run == run.name:
                end = until if record.released is None else min(record.released, until)
                total += max(0.0, end - max(record.granted, start))
        used.append(total)
    jain = sum(used) ** 2 / (len(used) * sum(u * u for u in used))
    assert jain >= 0.95, used
