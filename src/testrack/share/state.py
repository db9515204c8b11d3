"""The whole share at one moment, and the answers the rules give about it.

The in-memory backend keeps one :class:`ShareState` and changes it in place; the SQLite backend
reads one per transaction and writes back what changed. Either way every decision is made by
the same code, over the same rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from testrack.share import rules, text
from testrack.share.errors import LeaseLost, NotHolder, UnknownDevice
from testrack.share.model import (
    DeviceSpec,
    DeviceStatus,
    LeaseView,
    QuarantineView,
    ShareStatus,
    SlotKey,
    WaiterView,
    WaitState,
)


def _never_gone(holder: rules.HolderRow) -> bool:
    return False


@dataclasses.dataclass
class ShareState:
    location: str
    devices: dict[str, DeviceSpec] = dataclasses.field(default_factory=dict)
    quarantines: dict[str, QuarantineView] = dataclasses.field(default_factory=dict)
    holders: dict[int, rules.HolderRow] = dataclasses.field(default_factory=dict)
    leases: dict[SlotKey, rules.LeaseRow] = dataclasses.field(default_factory=dict)
    waiters: dict[int, rules.WaiterRow] = dataclasses.field(default_factory=dict)
    records: list[rules.GrantRecord] = dataclasses.field(default_factory=list)
    process_gone: Callable[[rules.HolderRow], bool] = _never_gone
    """What the OS or the server says about a holder's process (True: it is gone)."""

    # -- who is alive ---------------------------------------------------------------------

    def alive(self, holder_id: int, now: float) -> bool:
        holder = self.holders.get(holder_id)
        return holder is not None and rules.holder_alive(holder, now, self.process_gone(holder))

    def live_waiters(self, now: float) -> list[rules.WaiterRow]:
        return [w for w in self.waiters.values() if self.alive(w.holder_id, now)]

    def live_lease(self, slot: SlotKey, now: float) -> rules.LeaseRow | None:
        lease = self.leases.get(slot)
        if lease is None:
            return None
        holder = self.holders.get(lease.holder_id)
        return lease if rules.lease_live(lease, holder, now, self.alive(lease.holder_id, now)) else None

    # -- asking ----------------------------------------------------------------------------

    def check_slots(self, slots: Sequence[SlotKey]) -> None:
        """UnknownDevice for a slot no run registered."""
        for slot in slots:
            device = self.devices.get(slot.device)
            if device is None or not 0 <= slot.index < device.capacity:
                raise UnknownDevice(text.unknown_slot_message(self.location, slot, self.devices))

    def grantable(self, request_id: int, now: float) -> bool:
        """Whether the request's turn has come and its slots are free; LeaseLost if its holder is dead."""
        waiter = self.waiters.get(request_id)
        if waiter is None or not self.alive(waiter.holder_id, now):
            raise LeaseLost(
                (), 0, "the request was dropped: its holder missed its heartbeats or was found dead"
            )
        held = [s for s in waiter.slots if self.live_lease(s, now) is not None]
        return rules.may_grant(waiter, held, self.live_waiters(now))

    def give_back(self, holder_id: int, token: int, now: float) -> bool:
        holder = self.holders.get(holder_id)
        slots = [
            s for s, lease in self.leases.items() if lease.token == token and lease.holder_id == holder_id
        ]
        if holder is None or not slots:
            return False
        waiting = [(w, self.holders[w.holder_id]) for w in self.live_waiters(now)]
        return rules.should_give_back(holder, slots, waiting, self.records, now)

    def release_candidates(self, device: str, holder: str | None, user: str, now: float) -> list[LeaseView]:
        """The leases ``release DEVICE`` may free; NotHolder (naming the holder) if none."""
        spec = self.devices.get(device)
        if spec is None:
            raise UnknownDevice(text.unknown_slot_message(self.location, SlotKey(device, 0), self.devices))
        views = [self.lease_view(lease) for slot in spec.slots() if (lease := self.live_lease(slot, now))]
        chosen = [v for v in views if rules.may_release(v, holder, user)]
        if not chosen:
            raise NotHolder(text.not_holder_message(device, views, holder, user))
        return chosen

    # -- what people see ----------------------------------------------------------------

    def lease_view(self, lease: rules.LeaseRow) -> LeaseView:
        holder = self.holders[lease.holder_id]
        return LeaseView(lease.slot, lease.token, holder.id, holder.info, lease.granted, lease.expires)

    def waiter_view(self, waiter: rules.WaiterRow) -> WaiterView:
        holder = self.holders[waiter.holder_id]
        return WaiterView(waiter.id, holder.id, holder.info, waiter.priority, waiter.slots, waiter.since)

    def wait_state(self, request_id: int, now: float) -> WaitState:
        waiter = self.waiters.get(request_id)
        if waiter is None:
            return WaitState(request_id, (), 1, (), ())
        ahead = rules.ahead_of(waiter, self.live_waiters(now))
        holders = tuple(self.lease_view(lease) for s in waiter.slots if (lease := self.live_lease(s, now)))
        return WaitState(
            request_id, waiter.slots, len(ahead) + 1, tuple(map(self.waiter_view, ahead)), holders
        )

    def status(self, now: float) -> ShareStatus:
        live = sorted(self.live_waiters(now), key=rules.queue_key)
        devices = []
        for name in sorted(self.devices):
            spec = self.devices[name]
            leases = tuple(
                self.lease_view(lease) for slot in spec.slots() if (lease := self.live_lease(slot, now))
            )
            waiting = tuple(self.waiter_view(w) for w in live if any(s.device == name for s in w.slots))
            quarantine = self.quarantines.get(name)
            devices.append(DeviceStatus(name, spec.capacity, spec.address, leases, waiting, quarantine))
        return ShareStatus(self.location, now, tuple(devices))
