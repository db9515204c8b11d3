"""The holder's side of a lease, written once for every backend: asking and waiting, the
heartbeat, the local deadline a worker checks before each test, and giving back.

A :class:`Holder` is one process of one run (the controller) or one person's reservation. It
may be used from several threads: the run loop acquires, checks and releases; the heartbeat
thread (:meth:`Holder.start_heartbeat`) renews every ``ttl / 3``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Sequence

from testrack.share.backend import ShareBackend
from testrack.share.errors import LeaseLost, ShareError, ShareUnavailable, WaitTimeout
from testrack.share.model import DEFAULT_TTL, Grant, HolderInfo, SlotKey, WaitState
from testrack.share.text import format_wait_timeout

#: How often a waiter looks again when nothing woke it (deaths and expiries send no notice).
POLL_SECONDS = 0.5
#: How long a should_give_back answer is reused.
GIVE_BACK_CACHE_SECONDS = 0.25
#: How often a waiting request's state is recomputed for on_wait.
WAIT_REPORT_SECONDS = 1.0


@dataclasses.dataclass
class Lease:
    """Slots held under one token. ``valid_at`` is the cheap local answer; Holder.check the
    authoritative one."""

    grant: Grant
    deadline: float
    """Local monotonic time until which the lease is certainly valid (last renewal sent + ttl)."""
    lost: LeaseLost | None = None

    @property
    def token(self) -> int:
        return self.grant.token

    @property
    def slots(self) -> tuple[SlotKey, ...]:
        return self.grant.slots

    def valid_at(self, monotonic_time: float) -> bool:
        """True if the lease is certainly still held at ``monotonic_time`` (the clock's
        monotonic time); False means: ask Holder.check before touching the device."""
        return self.lost is None and monotonic_time < self.deadline


class Holder:
    """Leases of one holder on one share backend."""

    def __init__(
        self,
        backend: ShareBackend,
        info: HolderInfo,
        ttl: float = DEFAULT_TTL,
        poll: float = POLL_SECONDS,
    ) -> None:
        self.backend = backend
        self.clock = backend.clock
        self.info = info
        self.ttl = ttl
        self.poll = poll
        self._lock = threading.RLock()
        self._leases: dict[int, Lease] = {}
        self._give_back_cache: dict[int, tuple[float, bool]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_renewal = self.clock.monotonic()
        self.id = backend.add_holder(info, ttl)

    # -- asking --------------------------------------------------------------------------

    def acquire(
        self,
        slots: Sequence[SlotKey],
        wait: float | None = None,
        priority: int | None = None,
        on_wait: Callable[[WaitState], None] | None = None,
        wait_option: str = "--rack-wait",
    ) -> Lease:
        """All of ``slots``, or nothing: wait in the queue until they are granted, or until
        ``wait`` seconds passed (then WaitTimeout, naming the holders). ``on_wait`` is called
        with the request's state when it starts waiting and whenever that state changes;
        ``wait_option`` is the option the give-up message tells the user to raise."""
        slots = tuple(sorted(set(slots)))
        self._renew_if_due()
        started = self.clock.monotonic()
        sent = started
        request, grant = self.backend.request(self._holder_id(), slots, self._priority(priority))
        last_state: WaitState | None = None
        next_report = started
        while grant is None:
            now = self.clock.monotonic()
            if wait is not None and now - started >= wait:
                state = self.backend.wait_state(request)
                self.backend.cancel(request)
                raise WaitTimeout(format_wait_timeout(state, now - started, wait_option))
            if on_wait is not None and now >= next_report:
                state = self.backend.wait_state(request)
                if last_state is None or _changed(last_state, state):
                    on_wait(state)
                last_state = state
                next_report = now + WAIT_REPORT_SECONDS
            self._renew_if_due()
            remaining = self.poll if wait is None else min(self.poll, max(0.0, started + wait - now))
            self.backend.wait_for_change(remaining, slots)
            sent = self.clock.monotonic()
            try:
                grant = self.backend.try_grant(request)
            except LeaseLost:  # this holder was found dead while it waited (a long freeze): ask again
                self.heartbeat()
                request, grant = self.backend.request(self._holder_id(), slots, self._priority(priority))
        lease = Lease(grant, sent + self.ttl)
        with self._lock:
            self._leases[grant.token] = lease
        return lease

    def try_acquire(self, slots: Sequence[SlotKey], priority: int | None = None) -> Lease | None:
        """All of ``slots`` if they can be granted now (free, nobody ahead), else None."""
        slots = tuple(sorted(set(slots)))
        self._renew_if_due()
        sent = self.clock.monotonic()
        request, grant = self.backend.request(self._holder_id(), slots, self._priority(priority))
        if grant is None:
            self.backend.cancel(request)
            return None
        lease = Lease(grant, sent + self.ttl)
        with self._lock:
            self._leases[grant.token] = lease
        return lease

    # -- holding -------------------------------------------------------------------------

    def leases(self) -> list[Lease]:
        with self._lock:
            return list(self._leases.values())

    def check(self, lease: Lease) -> None:
        """The authoritative answer: renew ``lease`` now, or raise LeaseLost."""
        if lease.lost is not None:
            raise lease.lost
        self.heartbeat()
        if lease.lost is not None:
            raise lease.lost

    def heartbeat(self) -> list[Lease]:
        """Renew the holder and every lease; the leases found lost (marked, and forgotten)."""
        with self._lock:
            leases = dict(self._leases)
            sent = self.clock.monotonic()
            try:
                kept = self.backend.renew(self.id, list(leases))
            except ShareUnavailable as exc:
                return self._expire_unreachable(sent, str(exc))
            self._last_renewal = sent
            if kept is None:
                reason = "this holder missed its heartbeats for longer than its ttl, or was found dead"
                with contextlib.suppress(ShareError):  # what is left of the old one (its lock, its requests)
                    self.backend.remove_holder(self.id)
                self.id = self.backend.add_holder(self.info, self.ttl)
                kept = []
            else:
                reason = "the lease expired or was released by someone else (testrack release --force)"
            lost = []
            for token, lease in leases.items():
                if token in kept:
                    lease.deadline = sent + self.ttl
                else:
                    lease.lost = LeaseLost(lease.slots, token, reason)
                    lost.append(lease)
                    del self._leases[token]
            return lost

    def _expire_unreachable(self, now: float, why: str) -> list[Lease]:
        """The share cannot be reached: leases whose local deadline passed are lost."""
        lost = []
        for token, lease in list(self._leases.items()):
            if not lease.valid_at(now):
                lease.lost = LeaseLost(
                    lease.slots, token, f"the share could not be reached to renew it ({why})"
                )
                lost.append(lease)
                del self._leases[token]
        return lost

    def release(self, lease: Lease) -> None:
        """Free the lease's slots (and wake whoever waits). LeaseLost if it was no longer held."""
        with self._lock:
            self._leases.pop(lease.token, None)
            self._give_back_cache.pop(lease.token, None)
        if lease.lost is not None:
            raise lease.lost
        if not self.backend.release(self.id, lease.token):
            lease.lost = LeaseLost(
                lease.slots, lease.token, "it had expired or been taken before the release"
            )
            raise lease.lost

    def should_give_back(self, lease: Lease) -> bool:
        """Release this lease between tests? True when another run waits for one of its slots
        and has a higher priority, or less device time than this run (answer cached 0.25 s)."""
        now = self.clock.monotonic()
        with self._lock:
            cached = self._give_back_cache.get(lease.token)
            if cached is not None and now - cached[0] < GIVE_BACK_CACHE_SECONDS:
                return cached[1]
        answer = self.backend.give_back(self.id, lease.token)
        with self._lock:
            self._give_back_cache[lease.token] = (now, answer)
        return answer

    # -- the heartbeat thread -----------------------------------------------------------

    def start_heartbeat(self, on_lost: Callable[[list[Lease]], None]) -> None:
        """Renew every ``ttl / 3`` in a daemon thread; ``on_lost`` gets the leases found lost,
        from that thread (keep it short: set a flag, wake the run loop)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._beat, args=(on_lost,), name=f"testrack-share-heartbeat-{self.id}", daemon=True
        )
        self._thread.start()

    def _beat(self, on_lost: Callable[[list[Lease]], None]) -> None:
        interval = self.ttl / 3
        while not self._stop.wait(interval):
            lost = self.heartbeat()
            if lost:
                on_lost(lost)

    def _renew_if_due(self) -> None:
        if self.clock.monotonic() - self._last_renewal >= self.ttl / 3:
            self.heartbeat()

    def close(self) -> None:
        """Stop the heartbeat, release everything, leave the share."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with self._lock:
            self._leases.clear()
        with contextlib.suppress(ShareUnavailable):  # if so, its leases expire on their own
            self.backend.remove_holder(self.id)

    # -- helpers -------------------------------------------------------------------------

    def _holder_id(self) -> int:
        with self._lock:
            return self.id

    def _priority(self, priority: int | None) -> int:
        return self.info.priority if priority is None else priority


def _changed(before: WaitState, after: WaitState) -> bool:
    return (
        before.position != after.position
        or [(v.slot, v.token) for v in before.holders] != [(v.slot, v.token) for v in after.holders]
        or [w.id for w in before.ahead] != [w.id for w in after.ahead]
    )
