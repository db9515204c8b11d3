"""The reference backend: the lease contract in memory, for unit tests with a driven clock.

It keeps exactly the rules of :mod:`testrack.share.rules` (through
:class:`~testrack.share.state.ShareState`); what a real backend learns from the operating
system or the server (a holder's process is gone) a test says with
:meth:`MemoryShare.process_gone`.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence

from testrack.share import rules, text
from testrack.share.clock import SYSTEM_CLOCK, Clock
from testrack.share.model import (
    DeviceSpec,
    Grant,
    HolderInfo,
    LeaseView,
    QuarantineView,
    ShareStatus,
    SlotKey,
    WaitState,
)
from testrack.share.state import ShareState


class MemoryShare:
    """Implements :class:`~testrack.share.backend.ShareBackend` on one ShareState and one lock."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self.location = "memory"
        self._lock = threading.Condition()
        self._gone: set[int] = set()
        self.state = ShareState(self.location, process_gone=lambda holder: holder.id in self._gone)
        self._ids = itertools.count(1)
        self._tokens = itertools.count(1)

    @property
    def lock(self) -> threading.Condition:
        """The lock every operation holds (the in-memory queue holds it too)."""
        return self._lock

    def process_gone(self, holder_id: int) -> None:
        """The holder's process died (its connection closed, its pid is gone)."""
        with self._lock:
            self._gone.add(holder_id)
            self._lock.notify_all()

    # -- the contract --------------------------------------------------------------------

    def register_devices(self, devices: Sequence[DeviceSpec]) -> list[str]:
        warnings = []
        with self._lock:
            for device in devices:
                known = self.state.devices.get(device.name)
                if known is not None and device.address and known.address and known.address != device.address:
                    warnings.append(text.address_warning(self.location, device, known.address))
                capacity = max(device.capacity, known.capacity if known else 0)
                address = (known.address if known else "") or device.address
                self.state.devices[device.name] = DeviceSpec(device.name, capacity, address)
        return warnings

    def add_holder(self, info: HolderInfo, ttl: float) -> int:
        with self._lock:
            now = self.clock.time()
            holder_id = next(self._ids)
            self.state.holders[holder_id] = rules.HolderRow(holder_id, info, ttl, now, now + ttl)
            return holder_id

    def remove_holder(self, holder_id: int) -> None:
        with self._lock:
            now = self.clock.time()
            for slot, lease in list(self.state.leases.items()):
                if lease.holder_id == holder_id:
                    self._free(slot, lease, now)
            for request_id, waiter in list(self.state.waiters.items()):
                if waiter.holder_id == holder_id:
                    del self.state.waiters[request_id]
            self.state.holders.pop(holder_id, None)
            self._lock.notify_all()

    def request(self, holder_id: int, slots: Sequence[SlotKey], priority: int) -> tuple[int, Grant | None]:
        with self._lock:
            self.state.check_slots(slots)
            request_id = next(self._ids)
            now = self.clock.time()
            self.state.waiters[request_id] = rules.WaiterRow(
                request_id, holder_id, priority, tuple(slots), now
            )
            return request_id, self._try(request_id, now)

    def try_grant(self, request_id: int) -> Grant | None:
        with self._lock:
            return self._try(request_id, self.clock.time())

    def cancel(self, request_id: int) -> None:
        with self._lock:
            self.state.waiters.pop(request_id, None)
            self._lock.notify_all()

    def renew(self, holder_id: int, tokens: Sequence[int]) -> list[int] | None:
        with self._lock:
            now = self.clock.time()
            if not self.state.alive(holder_id, now):
                return None
            holder = self.state.holders[holder_id]
            holder.expires = now + holder.ttl
            kept = []
            for lease in self.state.leases.values():
                if lease.holder_id == holder_id and lease.token in tokens and lease.expires >= now:
                    lease.expires = now + holder.ttl
                    kept.append(lease.token)
            return kept

    def release(self, holder_id: int, token: int) -> bool:
        with self._lock:
            now = self.clock.time()
            mine = [
                (slot, lease)
                for slot, lease in self.state.leases.items()
                if lease.token == token and lease.holder_id == holder_id
            ]
            for slot, lease in mine:
                self._free(slot, lease, now)
            self._lock.notify_all()
            return bool(mine) and all(lease.expires >= now for _, lease in mine)

    def give_back(self, holder_id: int, token: int) -> bool:
        with self._lock:
            return self.state.give_back(holder_id, token, self.clock.time())

    def wait_state(self, request_id: int) -> WaitState:
        with self._lock:
            return self.state.wait_state(request_id, self.clock.time())

    def wait_for_change(self, timeout: float, slots: Sequence[SlotKey] = ()) -> None:
        with self._lock:
            self._lock.wait(min(timeout, 0.01) if self.clock.driven else timeout)

    def status(self) -> ShareStatus:
        with self._lock:
            return self.state.status(self.clock.time())

    def force_release(self, device: str, holder: str | None, user: str) -> list[LeaseView]:
        with self._lock:
            now = self.clock.time()
            chosen = self.state.release_candidates(device, holder, user, now)
            for view in chosen:
                self._free(view.slot, self.state.leases[view.slot], now)
            self._lock.notify_all()
            return chosen

    def set_quarantine(self, device: str, reason: str, run: str) -> None:
        with self._lock:
            self.state.quarantines[device] = QuarantineView(device, reason, run, self.clock.time())

    def clear_quarantine(self, device: str) -> bool:
        with self._lock:
            return self.state.quarantines.pop(device, None) is not None

    def close(self) -> None:
        pass

    def grant_records(self) -> list[rules.GrantRecord]:
        """Every grant's lifetime (device time per run, for fairness measurements)."""
        with self._lock:
            return list(self.state.records)

    # -- inside the lock -----------------------------------------------------------------

    def _try(self, request_id: int, now: float) -> Grant | None:
        if not self.state.grantable(request_id, now):
            return None
        waiter = self.state.waiters.pop(request_id)
        holder = self.state.holders[waiter.holder_id]
        token = next(self._tokens)
        for slot in waiter.slots:
            stale = self.state.leases.get(slot)
            if stale is not None:
                self._free(slot, stale, now)
            self.state.leases[slot] = rules.LeaseRow(slot, token, holder.id, now, now + holder.ttl)
        self.state.records.append(rules.GrantRecord(token, holder.info.run, len(waiter.slots), now, None))
        return Grant(token, waiter.slots, now, now + holder.ttl)

    def _free(self, slot: SlotKey, lease: rules.LeaseRow, now: float) -> None:
        del self.state.leases[slot]
        for record in self.state.records:
            if record.token == lease.token and record.released is None:
                record.released = min(now, lease.expires)
