"""The lease contract, on every backend (in memory, SQLite, PostgreSQL), with a driven clock."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator

import pytest

from share_backends import make_share_factory
from testrack.share import (
    DeviceSpec,
    DrivenClock,
    Holder,
    HolderInfo,
    HolderKind,
    LeaseLost,
    NotHolder,
    SlotKey,
    UnknownDevice,
    WaitTimeout,
    format_waiting,
)
from testrack.share.backend import ShareBackend
from testrack.share.text import clock_time

TTL = 15.0
A0, A1, B0 = SlotKey("board-a", 0), SlotKey("board-a", 1), SlotKey("board-b", 0)

MakeHolder = Callable[..., Holder]


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def share_factory(request: pytest.FixtureRequest, tmp_path) -> Callable[[DrivenClock], ShareBackend]:
    """Each backend, fresh, on the test's clock."""
    return make_share_factory(request, tmp_path)


@pytest.fixture
def clock() -> DrivenClock:
    return DrivenClock()


@pytest.fixture
def backend(
    share_factory: Callable[[DrivenClock], ShareBackend], clock: DrivenClock
) -> Iterator[ShareBackend]:
    share = share_factory(clock)
    share.register_devices([DeviceSpec("board-a", 2, "10.0.0.1"), DeviceSpec("board-b", 1, "10.0.0.2")])
    yield share
    share.close()


@pytest.fixture
def holder(backend: ShareBackend) -> MakeHolder:
    """Holders of distinct runs on this host (this process's pid, so SQLite sees them alive)."""

    def make(
        run: str,
        priority: int = 0,
        kind: HolderKind = HolderKind.RUN,
        label: str = "pytest",
        ttl: float = TTL,
    ) -> Holder:
        return Holder(backend, HolderInfo(run, "host-1", os.getpid(), label, kind, priority), ttl=ttl)

    return make


def test_tokens_grow_with_every_grant(holder: MakeHolder) -> None:
    """Each grant gets a larger fencing token than any before it."""
    a = holder("run-a")
    tokens = []
    for _ in range(3):
        lease = a.acquire([A0])
        tokens.append(lease.token)
        a.release(lease)
    tokens.append(a.acquire([A0, B0]).token)
    assert tokens == sorted(tokens) and len(set(tokens)) == 4


def test_a_held_slot_is_not_granted_twice(holder: MakeHolder) -> None:
    """A second holder gets nothing while the first holds; it gets the slot once it is released."""
    a, b = holder("run-a"), holder("run-b")
    lease = a.acquire([A0])
    assert b.try_acquire([A0]) is None
    assert b.try_acquire([A1]) is not None  # another slot of the same device is free
    a.release(lease)
    assert b.try_acquire([A0]) is not None


def test_several_slots_are_granted_all_at_once_or_not_at_all(
    holder: MakeHolder, backend: ShareBackend
) -> None:
    """A request for two slots, one of them held, takes neither; it gets both when the other frees."""
    a, b = holder("run-a"), holder("run-b")
    lease = a.acquire([A0])
    assert b.try_acquire([A0, B0]) is None
    status = {d.name: d for d in backend.status().devices}
    assert status["board-b"].leases == ()  # no partial hold
    a.release(lease)
    both = b.try_acquire([A0, B0])
    assert both is not None and set(both.slots) == {A0, B0}


def test_the_queue_reserves_slots_for_the_request_ahead(
    holder: MakeHolder, backend: ShareBackend, clock: DrivenClock
) -> None:
    """A waiting two-slot request is not starved by later one-slot requests for its free slot."""
    a, big, small = holder("run-a"), holder("run-big"), holder("run-small")
    lease = a.acquire([A0])
    request, grant = backend.request(big.id, [A0, B0], 0)
    assert grant is None
    assert small.try_acquire([B0]) is None  # free, but reserved for the request ahead
    a.release(lease)
    granted = backend.try_grant(request)
    assert granted is not None and set(granted.slots) == {A0, B0}


def test_priority_first_then_arrival(holder: MakeHolder, backend: ShareBackend) -> None:
    """When a slot frees, the highest priority waiter gets it; among equals the first to arrive."""
    a = holder("run-a")
    lease = a.acquire([B0])
    first, second, urgent = holder("run-1"), holder("run-2"), holder("run-3", priority=5)
    r1, _ = backend.request(first.id, [B0], 0)
    r2, _ = backend.request(second.id, [B0], 0)
    r3, _ = backend.request(urgent.id, [B0], 5)
    assert [backend.wait_state(r).position for r in (r3, r1, r2)] == [1, 2, 3]
    a.release(lease)
    assert backend.try_grant(r1) is None and backend.try_grant(r2) is None
    g3 = backend.try_grant(r3)
    assert g3 is not None
    backend.release(urgent.id, g3.token)
    assert backend.try_grant(r2) is None
    assert backend.try_grant(r1) is not None


def test_a_lease_not_renewed_expires_and_stays_lost(holder: MakeHolder, clock: DrivenClock) -> None:
    """Past its ttl without a heartbeat, a lease is lost for good, even if nobody took the slot."""
    a = holder("run-a")
    lease = a.acquire([A0])
    clock.advance(TTL - 1)
    assert a.heartbeat() == []  # renewed: good for another ttl
    clock.advance(TTL - 1)
    assert a.heartbeat() == []
    clock.advance(TTL + 0.5)
    lost = a.heartbeat()
    assert lost == [lease] and lease.lost is not None
    assert "lost the lease on board-a slot 0" in str(lease.lost)
    with pytest.raises(LeaseLost):
        a.check(lease)
    with pytest.raises(LeaseLost):
        a.release(lease)


def test_a_frozen_holders_slot_goes_to_the_next_and_its_writes_are_refused(
    holder: MakeHolder, clock: DrivenClock
) -> None:
    """Another holder takes the slot after the ttl; the old holder's release is refused, not merged."""
    a, b = holder("run-a"), holder("run-b")
    old = a.acquire([A0])
    assert b.try_acquire([A0]) is None
    clock.advance(TTL / 2)  # a is frozen: no heartbeat; b renews
    assert b.heartbeat() == []
    clock.advance(TTL / 2 + 0.1)
    new = b.try_acquire([A0])
    assert new is not None and new.token > old.token
    with pytest.raises(LeaseLost, match=r"lost the lease on board-a slot 0 \(token \d+\)"):
        a.release(old)
    assert b.heartbeat() == []  # b's lease was untouched by a's stale release
    b.check(new)


def test_the_local_answer_is_valid_until_the_renewal_was_sent_plus_the_ttl(
    holder: MakeHolder, clock: DrivenClock
) -> None:
    """Lease.valid_at is a cheap local deadline: last renewal sent + ttl; check() is authoritative."""
    a = holder("run-a")
    sent = clock.monotonic()
    lease = a.acquire([A0])
    assert lease.valid_at(sent + TTL - 0.01) and not lease.valid_at(sent + TTL)
    clock.advance(10)
    a.heartbeat()
    assert lease.valid_at(clock.monotonic() + TTL - 0.01)
    clock.advance(TTL + 1)
    assert not lease.valid_at(clock.monotonic())
    with pytest.raises(LeaseLost):
        a.check(lease)


def test_a_dead_holders_request_does_not_block_the_queue(
    holder: MakeHolder, backend: ShareBackend, clock: DrivenClock
) -> None:
    """A waiter that stops renewing (its process froze or died) loses its place after its ttl."""
    a, ghost, c = holder("run-a", ttl=60), holder("run-ghost"), holder("run-c", ttl=60)
    lease = a.acquire([B0])
    ghost_request, _ = backend.request(ghost.id, [B0], 0)
    later, _ = backend.request(c.id, [B0], 0)
    a.release(lease)
    assert backend.try_grant(later) is None  # the ghost is ahead and still alive
    clock.advance(TTL + 1)  # the ghost misses its heartbeats; c renews
    c.heartbeat()
    assert backend.try_grant(later) is not None
    with pytest.raises(LeaseLost, match="the request was dropped"):
        backend.try_grant(ghost_request)


def test_an_expired_holder_is_registered_again_and_told_its_leases_are_lost(
    holder: MakeHolder, clock: DrivenClock
) -> None:
    """After missing its heartbeats, a holder learns all its leases are lost and can ask again."""
    a = holder("run-a")
    first_id = a.id
    lease = a.acquire([A0])
    clock.advance(TTL + 1)
    assert a.heartbeat() == [lease]
    assert a.id != first_id
    again = a.acquire([A0])
    assert again.token > lease.token


def test_waiting_says_who_holds_and_the_place_in_the_queue(holder: MakeHolder, backend: ShareBackend) -> None:
    """The waiting line names the holder, since when, and who is ahead."""
    a = holder("1234", label="pytest")
    lease = a.acquire([B0])
    first = holder("99")
    backend.request(first.id, [B0], 0)
    me = holder("run-me")
    request, _ = backend.request(me.id, [B0], 0)
    state = backend.wait_state(request)
    assert state.position == 2
    assert format_waiting(state) == (
        f"waiting for board-b slot 0: board-b slot 0 held by run 1234 on host-1 (pid {os.getpid()}, pytest) "
        f"since {clock_time(lease.grant.granted)}; 2nd in the queue, 1 request ahead "
        f"(run 99 on host-1 (pid {os.getpid()}, pytest))"
    )


def test_giving_up_names_the_holders(holder: MakeHolder) -> None:
    """--rack-wait's message names who holds the slot and what to do."""
    a = holder("1234", label="pytest")
    lease = a.acquire([A1])
    b = holder("run-b")
    with pytest.raises(WaitTimeout) as info:
        b.acquire([A1], wait=0)
    assert str(info.value) == (
        f"gave up after 0 s waiting for board-a slot 1: board-a slot 1 held by run 1234 on host-1 "
        f"(pid {os.getpid()}, pytest) since {clock_time(lease.grant.granted)}; "
        "wait longer with --rack-wait SECONDS, or see who holds what with testrack status"
    )
    assert b.try_acquire([A0]) is not None  # the cancelled request reserves nothing


def test_a_run_with_less_device_time_is_given_the_slot_back(
    holder: MakeHolder, backend: ShareBackend, clock: DrivenClock
) -> None:
    """Two equal runs take turns: the holder gives back when the waiter has had less device time."""
    a, b = holder("run-a"), holder("run-b")
    lease_a = a.acquire([B0])
    clock.advance(1)
    assert not a.should_give_back(lease_a)  # nobody waits
    request_b, _ = backend.request(b.id, [B0], 0)
    clock.advance(1)
    assert a.should_give_back(lease_a)  # b waits and has had nothing
    a.release(lease_a)
    grant_b = backend.try_grant(request_b)
    assert grant_b is not None
    request_a, _ = backend.request(a.id, [B0], 0)
    clock.advance(1)
    assert not backend.give_back(b.id, grant_b.token)  # b has had 1 s, a 2 s
    clock.advance(1.5)
    assert backend.give_back(b.id, grant_b.token)  # b now 2.5 s > a's 2 s
    backend.cancel(request_a)


def test_a_person_waiting_goes_first_and_is_given_the_slot(holder: MakeHolder, backend: ShareBackend) -> None:
    """A reservation (priority 100) waits ahead of runs, and a run holding the slot gives it back."""
    run = holder("run-a")
    lease = run.acquire([B0])
    other = holder("run-b")
    backend.request(other.id, [B0], 0)
    alice = holder("reserve-alice", priority=100, kind=HolderKind.PERSON, label="alice", ttl=1800)
    request, _ = backend.request(alice.id, [B0], 100)
    assert backend.wait_state(request).position == 1
    assert run.should_give_back(lease)
    run.release(lease)
    grant = backend.try_grant(request)
    assert grant is not None and grant.expires - grant.granted == 1800


def test_a_reservation_outlives_its_command_and_only_its_holder_releases_it(
    holder: MakeHolder, backend: ShareBackend, clock: DrivenClock
) -> None:
    """A person's lease needs no heartbeat until its --for ends; release checks who asks."""
    alice = holder("reserve-alice", kind=HolderKind.PERSON, label="alice", ttl=1800)
    alice.acquire([B0])
    clock.advance(1000)  # the reserve command exited long ago; no heartbeat
    run = holder("run-a")
    assert run.try_acquire([B0]) is None
    with pytest.raises(
        NotHolder,
        match=r"board-b is held by alice \(alice on host-1 \(reservation\)\), not by you \(bob\); "
        r"to free it anyway: testrack release board-b --force --holder alice",
    ):
        backend.force_release("board-b", None, "bob")
    with pytest.raises(NotHolder, match="not by carol"):
        backend.force_release("board-b", "carol", "bob")
    freed = backend.force_release("board-b", "alice", "bob")
    assert [v.slot for v in freed] == [B0]
    assert run.try_acquire([B0]) is not None
    with pytest.raises(NotHolder, match="board-a is not held by anyone: nothing to release"):
        backend.force_release("board-a", None, "alice")


def test_a_reservation_ends_when_its_time_is_up(holder: MakeHolder, clock: DrivenClock) -> None:
    """--for 30m: after 30 minutes the slot is free again."""
    alice = holder("reserve-alice", kind=HolderKind.PERSON, label="alice", ttl=1800)
    alice.acquire([B0])
    run = holder("run-a", ttl=4000)
    clock.advance(1799)
    assert run.try_acquire([B0]) is None
    clock.advance(2)
    assert run.try_acquire([B0]) is not None


def test_devices_unknown_slots_and_address_conflicts(backend: ShareBackend, holder: MakeHolder) -> None:
    """A device is known once a run registered it; two racks giving one name two addresses are warned."""
    warnings = backend.register_devices([DeviceSpec("board-a", 1, "10.9.9.9"), DeviceSpec("board-c", 1, "")])
    assert warnings == [
        f"device board-a has address 10.9.9.9 in this rack but 10.0.0.1 in another rack of the share "
        f"{backend.location}: one name must mean one device; rename one of them"
    ]
    names = {d.name: d.capacity for d in backend.status().devices}
    assert names == {"board-a": 2, "board-b": 1, "board-c": 1}  # capacity is the largest any rack gave
    a = holder("run-a")
    with pytest.raises(
        UnknownDevice, match=r"board-z is not a device of the share .* \(known: board-a, board-b, board-c\)"
    ):
        a.acquire([SlotKey("board-z", 0)])
    with pytest.raises(UnknownDevice, match="board-b has 1 slot"):
        a.acquire([SlotKey("board-b", 1)])


def test_a_quarantine_is_shared_until_cleared(backend: ShareBackend) -> None:
    """Any run sets it, every run sees it in status, it ends when the device passes its check again."""
    backend.set_quarantine("board-a", "no answer within 5 s", "run-a")
    quarantine = {d.name: d.quarantine for d in backend.status().devices}
    assert quarantine["board-b"] is None
    assert quarantine["board-a"] is not None and quarantine["board-a"].reason == "no answer within 5 s"
    assert quarantine["board-a"].run == "run-a"
    assert backend.clear_quarantine("board-a") is True
    assert backend.clear_quarantine("board-a") is False
    assert all(d.quarantine is None for d in backend.status().devices)


def test_status_shows_holders_and_waiters(holder: MakeHolder, backend: ShareBackend) -> None:
    """status: each device, its leases (holder, run, host, since) and its waiting requests."""
    a = holder("run-a", label="ci-pipeline")
    lease = a.acquire([A1])
    b = holder("run-b")
    backend.request(b.id, [A1], 0)
    devices = {d.name: d for d in backend.status().devices}
    (view,) = devices["board-a"].leases
    assert (view.slot, view.holder.label, view.holder.run, view.holder.host, view.token) == (
        A1, "ci-pipeline", "run-a", "host-1", lease.token,
    )  # fmt: skip
    assert [w.holder.run for w in devices["board-a"].waiting] == ["run-b"]
    assert devices["board-b"].leases == () and devices["board-b"].waiting == ()


def test_leaving_releases_everything(holder: MakeHolder, backend: ShareBackend) -> None:
    """close(): every lease freed and every request cancelled."""
    a, b = holder("run-a"), holder("run-b")
    a.acquire([A0, A1])
    backend.request(a.id, [B0], 0)
    a.close()
    assert b.try_acquire([A0, A1, B0]) is not None


def test_a_waiter_is_granted_when_the_slot_frees(holder: MakeHolder, clock: DrivenClock) -> None:
    """acquire() blocks in the queue and returns as soon as the holder releases."""
    a, b = holder("run-a"), holder("run-b")
    lease = a.acquire([B0])
    got: list[object] = []
    states: list[str] = []
    waiter = threading.Thread(
        target=lambda: got.append(b.acquire([B0], on_wait=lambda s: states.append(format_waiting(s))))
    )
    waiter.start()
    while not states:
        threading.Event().wait(0.01)
    a.release(lease)
    waiter.join(timeout=10)
    assert len(got) == 1 and states[0].startswith(
        "waiting for board-b slot 0: board-b slot 0 held by run run-a"
    )


def test_threads_never_hold_one_slot_together(
    share_factory: Callable[[DrivenClock], ShareBackend], backend: ShareBackend, clock: DrivenClock
) -> None:
    """Eight holders in threads, each with its own connection, cycling over two slots: at no
    moment do two hold the same slot."""
    connections = [share_factory(clock) for _ in range(8)]
    holders = [
        Holder(c, HolderInfo(f"run-{i}", "host-1", os.getpid(), "pytest"), ttl=TTL)
        for i, c in enumerate(connections)
    ]
    inside: dict[SlotKey, int] = {A0: 0, B0: 0}
    overlaps: list[SlotKey] = []
    guard = threading.Lock()

    def cycle(h: Holder, slot: SlotKey) -> None:
        for _ in range(25):
            lease = h.acquire([slot])
            with guard:
                inside[slot] += 1
                if inside[slot] > 1:
                    overlaps.append(slot)
            with guard:
                inside[slot] -= 1
            h.release(lease)

    threads = [threading.Thread(target=cycle, args=(h, A0 if i % 2 else B0)) for i, h in enumerate(holders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for c in connections:
        if c is not backend:
            c.close()
    assert overlaps == [] and not any(t.is_alive() for t in threads)
