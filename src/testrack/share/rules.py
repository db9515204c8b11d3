"""The share's decisions as pure functions: who is alive, which lease still counts, who may be
granted what, and who should give a slot back.

The in-memory and SQLite backends load rows and ask these functions; the PostgreSQL backend
states the same rules in SQL (``sql/postgresql/``), and one contract test suite runs on all
three, so the two spellings cannot drift apart unnoticed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from testrack.share.model import HolderInfo, HolderKind, LeaseView, SlotKey


@dataclasses.dataclass
class HolderRow:
    id: int
    info: HolderInfo
    ttl: float
    started: float
    expires: float
    """Wall time its last heartbeat runs out."""
    pid_start: str = ""
    """When its process started (to tell a reused pid from the holder's), where the OS says."""


@dataclasses.dataclass
class LeaseRow:
    slot: SlotKey
    token: int
    holder_id: int
    granted: float
    expires: float


@dataclasses.dataclass
class WaiterRow:
    id: int
    holder_id: int
    priority: int
    slots: tuple[SlotKey, ...]
    since: float


@dataclasses.dataclass
class GrantRecord:
    """A grant's lifetime, for device-time accounting (``released`` None while held)."""

    token: int
    run: str
    slots: int
    granted: float
    released: float | None


def holder_alive(holder: HolderRow | None, now: float, process_gone: bool) -> bool:
    """Alive: it renewed within its ttl, and nothing says its process is gone."""
    return holder is not None and holder.expires >= now and not process_gone


def lease_live(lease: LeaseRow, holder: HolderRow | None, now: float, alive: bool) -> bool:
    """A lease counts until it expires; a run's lease also dies with its holder, a person's
    reservation does not (the ``reserve`` command is long gone)."""
    if holder is None or lease.expires < now:
        return False
    return holder.info.kind is HolderKind.PERSON or alive


def queue_key(waiter: WaiterRow) -> tuple[int, int]:
    """Priority first (higher first), then arrival."""
    return (-waiter.priority, waiter.id)


def ahead_of(waiter: WaiterRow, live_waiters: Iterable[WaiterRow]) -> list[WaiterRow]:
    """The live requests before ``waiter`` in the queue that want one of its slots."""
    mine = set(waiter.slots)
    key = queue_key(waiter)
    return sorted(
        (w for w in live_waiters if w.id != waiter.id and queue_key(w) < key and mine.intersection(w.slots)),
        key=queue_key,
    )


def may_grant(waiter: WaiterRow, held: Iterable[SlotKey], live_waiters: Iterable[WaiterRow]) -> bool:
    """All of its slots are free, and nobody ahead wants any of them (the queue reserves them
    for whoever is ahead, so that a request for many slots is not starved)."""
    if set(waiter.slots).intersection(held):
        return False
    return not ahead_of(waiter, live_waiters)


def device_time(records: Iterable[GrantRecord], run: str, since: float, now: float) -> float:
    """Slot-seconds ``run`` held since ``since``."""
    total = 0.0
    for record in records:
        if record.run != run:
            continue
        end = now if record.released is None else record.released
        total += max(0.0, end - max(record.granted, since)) * record.slots
    return total


def should_give_back(
    me: HolderRow,
    slots: Sequence[SlotKey],
    waiting: Iterable[tuple[WaiterRow, HolderRow]],
    records: Sequence[GrantRecord],
    now: float,
) -> bool:
    """Give the slots back between tests when the first live request of another run that wants
    one of them has a higher priority, or the same priority and less device time than this run
    since both were in the share. People's reservations are never asked to give back."""
    if me.info.kind is HolderKind.PERSON:
        return False
    wanted = set(slots)
    others = sorted(
        ((w, h) for w, h in waiting if h.info.run != me.info.run and wanted.intersection(w.slots)),
        key=lambda pair: queue_key(pair[0]),
    )
    if not others:
        return False
    waiter, holder = others[0]
    if waiter.priority != me.info.priority:
        return waiter.priority > me.info.priority
    since = max(me.started, holder.started)
    return device_time(records, holder.info.run, since, now) < device_time(records, me.info.run, since, now)


def may_release(view: LeaseView, holder: str | None, user: str) -> bool:
    """Whether ``release`` may free this lease: the person's own reservation, or the holder the
    caller named with --force --holder."""
    if holder is None:
        return view.holder.kind is HolderKind.PERSON and view.holder.label == user
    return holder in (view.holder.label, view.holder.run)
