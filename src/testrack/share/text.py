"""The words people read about the share: waiting, giving up, ``testrack status``."""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from typing import Any

from testrack.share.model import (
    DeviceSpec,
    DeviceStatus,
    LeaseView,
    ShareStatus,
    SlotKey,
    WaiterView,
    WaitState,
    format_slots,
)


def clock_time(at: float) -> str:
    """``10:32:05`` in local time (what people compare with the clock on the wall)."""
    return datetime.datetime.fromtimestamp(at).strftime("%H:%M:%S")


def duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``1 h 30 min``."""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{round(seconds)} s"
    minutes = round(seconds / 60)
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _holders(leases: Sequence[LeaseView]) -> str:
    by_holder: dict[int, list[LeaseView]] = {}
    for lease in leases:
        by_holder.setdefault(lease.holder_id, []).append(lease)
    parts = []
    for views in by_holder.values():
        first = views[0]
        parts.append(
            f"{format_slots(v.slot for v in views)} held by {first.holder.describe()} "
            f"since {clock_time(min(v.granted for v in views))}"
        )
    return "; ".join(parts)


def _requests(waiters: Sequence[WaiterView]) -> str:
    n = len(waiters)
    who = ", ".join(w.holder.describe() for w in waiters[:3]) + (", ..." if n > 3 else "")
    return f"{n} request{'s' if n != 1 else ''} ahead ({who})"


def format_waiting(state: WaitState) -> str:
    """One line for a run that waits: who holds what, and its place in the queue."""
    parts = [f"waiting for {format_slots(state.slots)}"]
    if state.holders:
        parts.append(_holders(state.holders))
    if state.ahead:
        parts.append(f"{_ordinal(state.position)} in the queue, {_requests(state.ahead)}")
    elif not state.holders:
        parts.append("free: taking it")
    else:
        parts.append("first in the queue")
    return ": ".join(parts[:2]) + ("; " + "; ".join(parts[2:]) if len(parts) > 2 else "")


def format_wait_timeout(state: WaitState, waited: float, option: str = "--rack-wait") -> str:
    """Why ``--rack-wait`` gave up, naming the holders, and what to do about it."""
    why = []
    if state.holders:
        why.append(_holders(state.holders))
    if state.ahead:
        why.append(_requests(state.ahead))
    reason = "; ".join(why) if why else "the slots were taken by requests ahead in the queue"
    return (
        f"gave up after {duration(waited)} waiting for {format_slots(state.slots)}: {reason}; "
        f"wait longer with {option} SECONDS, or see who holds what with testrack status"
    )


def status_data(status: ShareStatus) -> dict[str, Any]:
    """What ``testrack status --json`` prints: every device, its holders, waiters and quarantine."""
    return {
        "share": status.location,
        "now": status.now,
        "devices": [_device_data(d) for d in status.devices],
    }


def _device_data(device: DeviceStatus) -> dict[str, Any]:
    return {
        "name": device.name,
        "capacity": device.capacity,
        "address": device.address,
        "leases": [
            {
                "slot": lease.slot.index,
                "holder": lease.holder.label,
                "kind": lease.holder.kind.value,
                "run": lease.holder.run,
                "host": lease.holder.host,
                "pid": lease.holder.pid,
                "since": lease.granted,
                "expires": lease.expires,
                "token": lease.token,
            }
            for lease in device.leases
        ],
        "waiting": [
            {
                "holder": w.holder.label,
                "kind": w.holder.kind.value,
                "run": w.holder.run,
                "host": w.holder.host,
                "priority": w.priority,
                "slots": [s.index for s in w.slots if s.device == device.name],
                "since": w.since,
            }
            for w in device.waiting
        ],
        "quarantine": None
        if device.quarantine is None
        else {
            "reason": device.quarantine.reason,
            "run": device.quarantine.run,
            "since": device.quarantine.at,
        },
    }


def format_status(status: ShareStatus) -> list[str]:
    """``testrack status`` for people: one block per device."""
    lines = [f"share: {status.location}"]
    if not status.devices:
        lines.append("no devices yet: a device is added to the share by the first run that uses it")
        return lines
    for device in status.devices:
        slots = "1 slot" if device.capacity == 1 else f"{device.capacity} slots"
        head = f"{device.name} ({slots})"
        if device.quarantine is not None:
            q = device.quarantine
            head += f" QUARANTINED since {clock_time(q.at)} by run {q.run}: {q.reason}"
        lines.append(head)
        held = {lease.slot.index: lease for lease in device.leases}
        for index in range(device.capacity):
            lease = held.get(index)
            if lease is None:
                lines.append(f"  slot {index}: free")
                continue
            h = lease.holder
            left = f"until {clock_time(lease.expires)}" if h.kind.value == "person" else "heartbeat"
            lines.append(
                f"  slot {index}: {h.label} ({h.kind.value} {h.run}) on {h.host}, pid {h.pid}, "
                f"since {clock_time(lease.granted)} ({left})"
            )
        for w in device.waiting:
            which = ", ".join(str(s.index) for s in w.slots if s.device == device.name)
            lines.append(
                f"  waiting: {w.holder.label} ({w.holder.kind.value} {w.holder.run}) on {w.holder.host}, "
                f"priority {w.priority}, slot {which}, since {clock_time(w.since)}"
            )
    return lines


def not_holder_message(device: str, views: Sequence[LeaseView], holder: str | None, user: str) -> str:
    if not views:
        return f"{device} is not held by anyone: nothing to release"
    held_by = "; ".join(f"{_holder_name(v)}" for v in views)
    if holder is None:
        return (
            f"{device} is held by {held_by}, not by you ({user}); to free it anyway: "
            f"testrack release {device} --force --holder {views[0].holder.label}"
        )
    return (
        f"{device} is held by {held_by}, not by {holder}; name the holder testrack status shows with --holder"
    )


def _holder_name(view: LeaseView) -> str:
    return f"{view.holder.label} ({view.holder.describe()})"


def unknown_slot_message(location: str, slot: SlotKey, devices: dict[str, DeviceSpec]) -> str:
    known = ", ".join(sorted(devices)) or "none yet"
    spec = devices.get(slot.device)
    if spec is not None:
        return (
            f"{slot.device} has {spec.capacity} slot(s) in the share {location}; "
            f"there is no slot {slot.index}"
        )
    return (
        f"{slot.device} is not a device of the share {location} (known: {known}); "
        "a device joins the share when a run that has it in its rack starts"
    )


def address_warning(location: str, device: DeviceSpec, known: str) -> str:
    return (
        f"device {device.name} has address {device.address} in this rack but {known} in another rack of "
        f"the share {location}: one name must mean one device; rename one of them"
    )


def home_relative(path: str) -> str:
    """``~/.local/state/...`` instead of the home directory spelled out."""
    home = os.path.expanduser("~")
    return "~" + path[len(home) :] if home not in ("", "/") and path.startswith(home + os.sep) else path
