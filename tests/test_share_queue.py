"""The shared run queue's contract, in memory and on a real PostgreSQL, with a driven clock:
create or join, routing, fenced claims and results, dead hosts, late joiners, the end."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator

import pytest

from testrack.share import (
    DeviceSpec,
    DrivenClock,
    Holder,
    HolderInfo,
    HostNameTaken,
    LeaseLost,
    RunFinished,
    SlotKey,
    TestSetMismatch,
)
from testrack.share.backend import ShareBackend
from testrack.share.errors import QueueError
from testrack.share.holder import Lease
from testrack.share.memory import MemoryShare
from testrack.share.memqueue import MemoryQueue
from testrack.share.queue import QueuedTest, RunPlan, RunQueue, format_stuck, wait_for_run
from testrack.store import MemoryStore, Result, Store

TTL = 15.0
TESTS = (QueuedTest("t.py::short", 0.1), QueuedTest("t.py::long", 3.0), QueuedTest("t.py::mid", 1.0))


@dataclasses.dataclass
class Host:
    """One host of a shared run: its share connection, queue, holder and leases."""

    name: str
    share: ShareBackend
    queue: RunQueue
    holder: Holder

    def lease(self, device: str) -> Lease:
        return self.holder.acquire([SlotKey(device)])

    def claim(self, lease: Lease, n: int = 10, run: str = "ci-1", among: int = 0) -> list[str]:
        device = lease.slots[0].device
        claims = self.queue.claim(run, self.name, self.holder.id, lease.token, device, n, among)
        self.claims = claims
        return [c.nodeid for c in claims]

    def finish(self, lease: Lease, outcome: str = "passed", run: str = "ci-1") -> list[str]:
        done = [(c, result(c.nodeid, c.device, outcome)) for c in self.claims]
        return [c.nodeid for c in self.queue.complete(run, self.holder.id, lease.token, done)]


def result(nodeid: str, device: str, outcome: str = "passed") -> Result:
    return Result(nodeid, device, "gw0", outcome, 0.5, 100.0, 100.5)


class World:
    def __init__(
        self, make: Callable[[], tuple[ShareBackend, RunQueue]], store: Store, clock: DrivenClock
    ) -> None:
        self.make, self.store, self.clock = make, store, clock
        first, _ = make()
        first.register_devices([DeviceSpec(f"board-{c}") for c in "abc"])

    def host(self, name: str) -> Host:
        share, queue = self.make()
        holder = Holder(share, HolderInfo("ci-1", name, os.getpid(), "pytest"), ttl=TTL)
        return Host(name, share, queue, holder)


@pytest.fixture(params=["memory", "postgresql"])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    clock = DrivenClock()
    if request.param == "memory":
        share, store = MemoryShare(clock), MemoryStore()
        queue = MemoryQueue(share, store)
        yield World(lambda: (share, queue), store, clock)
        return
    from testrack.share.pgqueue import PostgresQueue
    from testrack.share.postgres import PostgresShare
    from testrack.store.postgres import PostgresStore

    url = request.getfixturevalue("pg_database")
    opened: list[PostgresShare] = []

    def make() -> tuple[ShareBackend, RunQueue]:
        share = PostgresShare(url, clock=clock)
        opened.append(share)
        return share, PostgresQueue(share)

    made = World(make, store := PostgresStore(url), clock)
    yield made
    store.close()
    for share in opened:
        share.close()


def plan(
    mode: str = "load", tests: tuple[QueuedTest, ...] = TESTS, budget: int = 0, uid: str = "ci-1"
) -> RunPlan:
    return RunPlan(uid, mode, tests, budget, "rack.toml", "pytest --rack-run ci-1", 1.0)


def test_the_first_host_creates_the_run_and_the_others_join_it(world: World) -> None:
    """No leader election: whoever comes first creates; the rest join the same run and store run."""
    a, b = world.host("a"), world.host("b")
    first = a.queue.open_run(plan(), "a", a.holder.id)
    second = b.queue.open_run(plan(), "b", b.holder.id)
    assert (first.created, second.created) == (True, False)
    assert first.store_run_id == second.store_run_id
    assert [r.uid for r in world.store.runs()] == ["ci-1"]


def test_a_host_that_collected_other_tests_is_refused_with_the_difference(world: World) -> None:
    """The joiner names what it has that the run lacks, and what it lacks."""
    a, b = world.host("a"), world.host("b")
    a.queue.open_run(plan(), "a", a.holder.id)
    other = (QueuedTest("t.py::short"), QueuedTest("t.py::new"), QueuedTest("t.py::mid"))
    with pytest.raises(TestSetMismatch) as info:
        b.queue.open_run(plan(tests=other), "b", b.holder.id)
    assert str(info.value) == (
        "host b collected other tests than run ci-1: 1 test the run does not have (t.py::new) "
        "and lacks 1 it has (t.py::long); every host of a run must collect the same tests "
        "(same checkout, same arguments, -k and -m), or use another --rack-run ID"
    )
    with pytest.raises(QueueError, match="run ci-1 runs in load mode, this host asked for each"):
        b.queue.open_run(plan(mode="each"), "b", b.holder.id)


def test_host_names_are_unique_among_live_hosts(world: World) -> None:
    """A second live host with the same --rack-host is refused; a dead host's name may be reused."""
    a, twin = world.host("a"), world.host("a")
    a.queue.open_run(plan(), "a", a.holder.id)
    with pytest.raises(
        HostNameTaken, match="run ci-1 already has a live host named a: give this one another"
    ):
        twin.queue.open_run(plan(), "a", twin.holder.id)
    world.clock.advance(TTL / 2)
    twin.holder.heartbeat()
    world.clock.advance(TTL / 2 + 1)  # a stopped renewing: it is dead
    twin.queue.open_run(plan(), "a", twin.holder.id)


def test_claims_shrink_as_the_queue_drains_when_slots_share_it(world: World) -> None:
    """Guided claims: with 2 slots sharing the queue, a claim takes at most a quarter of what is
    left (at least one test), so that the hosts finish within a test of each other, not a claim."""
    tests = tuple(QueuedTest(f"t.py::test_{i:02d}", 1.0) for i in range(16))
    a = world.host("a")
    a.queue.open_run(plan(tests=tests), "a", a.holder.id)
    a.queue.add_routes("ci-1", "a", {"board-a": [t.nodeid for t in tests]})
    lease = a.lease("board-a")
    sizes = []
    while taken := a.claim(lease, n=3, among=2):
        sizes.append(len(taken))
        a.finish(lease)
    assert sizes == [3, 3, 3, 2, 2, 1, 1, 1], sizes  # 16 left: 3 (of 16/4), ... 3 left: 1
    assert a.queue.progress("ci-1").complete


def test_claims_are_longest_first_and_results_are_stored_once(world: World) -> None:
    """claim takes the longest tests first; complete stores each result once, even if repeated."""
    a = world.host("a")
    run = a.queue.open_run(plan(), "a", a.holder.id)
    a.queue.add_routes("ci-1", "a", {"board-a": [t.nodeid for t in TESTS]})
    lease = a.lease("board-a")
    assert a.claim(lease, n=2) == ["t.py::long", "t.py::mid"]
    assert a.finish(lease) == ["t.py::long", "t.py::mid"]
    assert a.finish(lease) == ["t.py::long", "t.py::mid"]  # a retried commit: accepted, not stored again
    assert a.claim(lease) == ["t.py::short"]
    a.finish(lease, "failed")
    stored = world.store.results(run.store_run_id)
    assert sorted((r.nodeid, r.outcome) for r in stored) == [
        ("t.py::long", "passed"), ("t.py::mid", "passed"), ("t.py::short", "failed"),
    ]  # fmt: skip
    progress = a.queue.progress("ci-1")
    assert (progress.total, progress.done, progress.complete) == (3, 3, True)
    assert dict(progress.outcomes) == {"passed": 2, "failed": 1}


def test_a_stale_lease_can_neither_claim_nor_write_a_result(world: World) -> None:
    """The fence: after its lease expired (another run took the device), the old holder's result is
    refused and nothing of it is stored; the test is run again."""
    a, b = world.host("a"), world.host("b")
    run = a.queue.open_run(plan(), "a", a.holder.id)
    b.queue.open_run(plan(), "b", b.holder.id)
    for host in (a, b):
        host.queue.add_routes("ci-1", host.name, {"board-a": [t.nodeid for t in TESTS]})
    old = a.lease("board-a")
    a.claim(old, n=1)
    world.clock.advance(TTL / 2)
    b.holder.heartbeat()
    world.clock.advance(TTL / 2 + 1)  # a froze past its ttl
    new = b.lease("board-a")
    with pytest.raises(LeaseLost, match="cannot write results: the lease is no longer this holder's"):
        a.finish(old)
    with pytest.raises(LeaseLost):
        a.claim(old)
    assert b.claim(new) == ["t.py::long", "t.py::mid", "t.py::short"]  # a's claim went back, longest first
    b.finish(new)
    assert sorted(r.nodeid for r in world.store.results(run.store_run_id)) == sorted(t.nodeid for t in TESTS)


def test_a_host_woken_past_its_ttl_cannot_blame_itself_for_tests_after_the_fact(world: World) -> None:
    """A frozen host that wakes with the starts of its claimed tests still to tell (they ran, and
    ended, while it held its lease) may not mark them started now: its lease is gone. Then the
    queue takes them back as not started, so they run again (their results were refused), instead
    of ending as 'crashed' on a host that never crashed while running them."""
    a, b = world.host("a"), world.host("b")
    run = a.queue.open_run(plan(budget=0), "a", a.holder.id)
    b.queue.open_run(plan(budget=0), "b", b.holder.id)
    for host in (a, b):
        host.queue.add_routes("ci-1", host.name, {"board-a": [t.nodeid for t in TESTS]})
    old = a.lease("board-a")
    a.claim(old, n=2)
    world.clock.advance(TTL / 2)
    b.holder.heartbeat()
    world.clock.advance(TTL / 2 + 1)  # a froze past its ttl; it wakes and reports the starts
    with pytest.raises(LeaseLost, match="cannot mark tests started: the lease is no longer this holder's"):
        a.queue.mark_started(a.holder.id, old.token, a.claims)
    new = b.lease("board-a")
    assert b.claim(new) == ["t.py::long", "t.py::mid", "t.py::short"]
    b.finish(new)
    outcomes = sorted((r.nodeid, r.outcome) for r in world.store.results(run.store_run_id))
    assert outcomes == sorted((t.nodeid, "passed") for t in TESTS)


def test_a_test_on_several_devices_is_claimed_once_under_all_its_leases(world: World) -> None:
    """A test on two devices (issue 11, point 6): a host claims it by name for the set it routed it
    to, in one transaction fenced by both leases; a second claim (another host's set) gets
    nothing; the result is refused if either lease is gone, and stored once when both hold."""
    a, b = world.host("a"), world.host("b")
    run = a.queue.open_run(plan(), "a", a.holder.id)
    b.queue.open_run(plan(), "b", b.holder.id)
    a.queue.add_routes("ci-1", "a", {"several devices of host a": ["t.py::long"], "board-a": ["t.py::short"]})
    b.queue.add_routes("ci-1", "b", {"several devices of host b": ["t.py::long"]})
    first, second = a.lease("board-a"), a.lease("board-b")
    stale = b.lease("board-c")
    world.clock.advance(TTL / 2)
    a.holder.heartbeat()
    b.holder.heartbeat()
    with pytest.raises(LeaseLost):  # one lease of the set is not b's: nothing is claimed
        b.queue.claim_test(
            "ci-1", "b", b.holder.id, [stale.token, first.token], "t.py::long", "several devices of host b"
        )
    tokens = [first.token, second.token]
    claim = a.queue.claim_test("ci-1", "a", a.holder.id, tokens, "t.py::long", "several devices of host a")
    assert claim is not None and claim.nodeid == "t.py::long" and claim.token == first.token
    assert (
        a.queue.claim_test("ci-1", "a", a.holder.id, tokens, "t.py::long", "several devices of host a")
        is None
    )
    b_tokens = [stale.token]
    assert (
        b.queue.claim_test("ci-1", "b", b.holder.id, b_tokens, "t.py::long", "several devices of host b")
        is None
    )
    assert a.claim(first) == ["t.py::short"]  # a device's own claims never take it
    a.holder.release(second)
    done = [(claim, result("t.py::long", "board-a"))]
    with pytest.raises(LeaseLost):
        a.queue.complete("ci-1", a.holder.id, first.token, done, also=[second.token])
    assert [r.nodeid for r in world.store.results(run.store_run_id)] == []
    again = a.lease("board-b")
    assert a.queue.complete("ci-1", a.holder.id, first.token, done, also=[again.token]) == [claim]
    assert [r.nodeid for r in world.store.results(run.store_run_id)] == ["t.py::long"]


def test_hosts_get_only_what_their_devices_can_run(world: World) -> None:
    """Routing stays in the hosts: a device is offered only the tests its host said it can run."""
    a, b = world.host("a"), world.host("b")
    for host in (a, b):
        host.queue.open_run(plan(), host.name, host.holder.id)
    a.queue.add_routes("ci-1", "a", {"board-a": ["t.py::short", "t.py::mid"]})
    b.queue.add_routes("ci-1", "b", {"board-b": ["t.py::long"]})
    assert a.claim(a.lease("board-a")) == ["t.py::mid", "t.py::short"]
    assert b.claim(b.lease("board-b")) == ["t.py::long"]


def test_each_mode_runs_every_test_on_every_device_of_every_host(world: World) -> None:
    """each mode: one item per (test, device), queued as each host registers its devices."""
    a, b = world.host("a"), world.host("b")
    for host in (a, b):
        host.queue.open_run(plan("each"), host.name, host.holder.id)
    a.queue.add_routes("ci-1", "a", {"board-a": [t.nodeid for t in TESTS]})
    b.queue.add_routes("ci-1", "b", {"board-b": [t.nodeid for t in TESTS], "board-c": ["t.py::short"]})
    assert a.queue.progress("ci-1").total == 7
    la, lb, lc = a.lease("board-a"), b.lease("board-b"), b.lease("board-c")
    assert a.claim(la) == ["t.py::long", "t.py::mid", "t.py::short"]
    assert b.claim(lb) == ["t.py::long", "t.py::mid", "t.py::short"]
    assert b.claim(lc) == ["t.py::short"]


def test_a_dead_hosts_tests_go_back_to_the_queue_within_the_retry_budget(world: World) -> None:
    """The host dies: what it had not started is queued again for free; what it was running counts
    as an attempt and, past the budget, is a final 'crashed' result naming the host."""
    a, b = world.host("a"), world.host("b")
    run = a.queue.open_run(plan(budget=0), "a", a.holder.id)
    b.queue.open_run(plan(budget=0), "b", b.holder.id)
    for host in (a, b):
        host.queue.add_routes("ci-1", host.name, {f"board-{host.name}": [t.nodeid for t in TESTS]})
    lease_a = a.lease("board-a")
    assert a.claim(lease_a, n=2) == ["t.py::long", "t.py::mid"]
    a.queue.mark_started(a.holder.id, lease_a.token, a.claims[:1])
    world.clock.advance(TTL / 2)
    b.holder.heartbeat()
    world.clock.advance(TTL / 2 + 1)  # a died (no heartbeat for longer than its ttl)
    lease_b = b.lease("board-b")
    assert b.claim(lease_b) == ["t.py::mid", "t.py::short"]
    (crash,) = [r for r in world.store.results(run.store_run_id) if r.outcome == "crashed"]
    assert crash.nodeid == "t.py::long" and crash.device == "board-a"
    assert crash.message == (
        "host a stopped (no heartbeat, or its connection closed) while running it on board-a "
        "(attempt 1 of 1; --rack-retry-crashed allows more)"
    )


def test_with_a_retry_budget_a_crashed_test_runs_again_elsewhere(world: World) -> None:
    """--rack-retry-crashed 1: the test its host died running is offered again, as attempt 2."""
    a, b = world.host("a"), world.host("b")
    a.queue.open_run(plan(budget=1), "a", a.holder.id)
    b.queue.open_run(plan(budget=1), "b", b.holder.id)
    for host in (a, b):
        host.queue.add_routes("ci-1", host.name, {f"board-{host.name}": ["t.py::long"]})
    lease_a = a.lease("board-a")
    a.claim(lease_a, n=1)
    a.queue.mark_started(a.holder.id, lease_a.token, a.claims)
    world.clock.advance(TTL / 2)
    b.holder.heartbeat()
    world.clock.advance(TTL / 2 + 1)
    lease_b = b.lease("board-b")
    assert b.claim(lease_b) == ["t.py::long"] and b.claims[0].attempt == 2


def test_a_late_joiner_gets_work_and_unstarted_claims_can_be_given_back(world: World) -> None:
    """A host that joins while others work gets what is left, and what others give back."""
    a = world.host("a")
    a.queue.open_run(plan(), "a", a.holder.id)
    a.queue.add_routes("ci-1", "a", {"board-a": [t.nodeid for t in TESTS]})
    lease_a = a.lease("board-a")
    a.claim(lease_a, n=2)
    a.queue.unclaim(a.holder.id, lease_a.token, a.claims[1:])  # t.py::mid: given back unstarted
    late = world.host("late")
    late.queue.open_run(plan(), "late", late.holder.id)
    late.queue.add_routes("ci-1", "late", {"board-b": [t.nodeid for t in TESTS]})
    assert late.claim(late.lease("board-b")) == ["t.py::mid", "t.py::short"]
    assert late.claims[0].attempt == 1


def test_a_finished_run_is_not_reused_silently(world: World) -> None:
    """Once every result is in and every host left, the run id is refused, with the way forward."""
    a = world.host("a")
    a.queue.open_run(plan(), "a", a.holder.id)
    a.queue.add_routes("ci-1", "a", {"board-a": [t.nodeid for t in TESTS]})
    lease = a.lease("board-a")
    a.claim(lease)
    a.finish(lease, "failed")
    assert a.queue.leave("ci-1", "a") is True
    again = world.host("a2")
    finished = (
        r"run ci-1 finished at \d\d:\d\d:\d\d \(3 failed\); a finished run is not run again: "
        r"give a new --rack-run ID \(to rerun only what failed, add --rack-failed\)"
    )
    with pytest.raises(RunFinished, match=finished):
        again.queue.open_run(plan(), "a2", again.holder.id)


def test_report_wait_names_tests_no_live_host_can_run(world: World) -> None:
    """wait_for_run stops when what is left has had no live host for --timeout s, and says why."""
    a, b = world.host("a"), world.host("b")
    a.queue.open_run(plan(), "a", a.holder.id)
    b.queue.open_run(plan(), "b", b.holder.id)
    a.queue.add_routes("ci-1", "a", {"board-a": ["t.py::short", "t.py::mid"]})
    b.queue.add_routes("ci-1", "b", {"board-b": ["t.py::mid"]})
    lease = a.lease("board-a")
    a.claim(lease)
    a.finish(lease)
    assert a.queue.leave("ci-1", "a") is False  # t.py::long is still queued
    outcome = wait_for_run(a.queue, "ci-1", timeout=0, clock=world.clock)
    assert [u.reason() for u in outcome.stuck] == [
        "t.py::long: no host that joined the run has a device that can run it"
    ]
    assert format_stuck(outcome, 30) == [
        "run ci-1: 1 test had no live host to run it for 30 s (--timeout):",
        "  t.py::long: no host that joined the run has a device that can run it",
    ]
