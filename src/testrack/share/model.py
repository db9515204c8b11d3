"""The share's plain data: slots, holders, grants and what ``status`` shows."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable

#: How long a lease lives without a heartbeat, unless the holder says otherwise.
DEFAULT_TTL = 15.0
#: Priority of a run, unless ``--rack-priority`` says otherwise.
DEFAULT_PRIORITY = 0
#: Priority of ``testrack reserve``: a person at the bench goes ahead of runs.
PERSON_PRIORITY = 100


@dataclasses.dataclass(frozen=True, order=True)
class SlotKey:
    """One slot of one device: what a lease covers."""

    device: str
    index: int = 0

    def __str__(self) -> str:
        return f"{self.device} slot {self.index}"


def format_slots(slots: Iterable[SlotKey]) -> str:
    """``board-1 slot 0, board-2 slot 1``; a whole device's slots are named once (``board-1``)."""
    return ", ".join(str(slot) for slot in sorted(slots))


class HolderKind(enum.Enum):
    """Who holds leases."""

    RUN = "run"
    """A pytest controller: its leases die with its process."""
    PERSON = "person"
    """``testrack reserve``: the lease outlives the command, until its ``--for`` ends."""


@dataclasses.dataclass(frozen=True)
class HolderInfo:
    """Who asks: one process of one run (or one person's reservation)."""

    run: str
    host: str
    pid: int
    label: str
    kind: HolderKind = HolderKind.RUN
    priority: int = DEFAULT_PRIORITY

    def describe(self) -> str:
        """``run 1234 on ci-7 (pid 4242, pytest)`` / ``alice on bench-2 (reservation)``."""
        if self.kind is HolderKind.PERSON:
            return f"{self.label} on {self.host} (reservation)"
        return f"run {self.run} on {self.host} (pid {self.pid}, {self.label})"


@dataclasses.dataclass(frozen=True)
class DeviceSpec:
    """A device as a run's rack describes it to the share."""

    name: str
    capacity: int = 1
    address: str = ""

    def slots(self) -> list[SlotKey]:
        return [SlotKey(self.name, i) for i in range(self.capacity)]


@dataclasses.dataclass(frozen=True)
class Grant:
    """Slots granted to a holder, all at once, under one fencing token."""

    token: int
    slots: tuple[SlotKey, ...]
    granted: float
    expires: float


@dataclasses.dataclass(frozen=True)
class LeaseView:
    """Who holds one slot, for ``status`` and waiting messages."""

    slot: SlotKey
    token: int
    holder_id: int
    holder: HolderInfo
    granted: float
    expires: float


@dataclasses.dataclass(frozen=True)
class WaiterView:
    """A request waiting in the queue."""

    id: int
    holder_id: int
    holder: HolderInfo
    priority: int
    slots: tuple[SlotKey, ...]
    since: float


@dataclasses.dataclass(frozen=True)
class QuarantineView:
    device: str
    reason: str
    run: str
    at: float


@dataclasses.dataclass(frozen=True)
class DeviceStatus:
    """One device of the share: who holds its slots, who waits, whether it is quarantined."""

    name: str
    capacity: int
    address: str
    leases: tuple[LeaseView, ...]
    waiting: tuple[WaiterView, ...]
    quarantine: QuarantineView | None


@dataclasses.dataclass(frozen=True)
class ShareStatus:
    location: str
    now: float
    devices: tuple[DeviceStatus, ...]


@dataclasses.dataclass(frozen=True)
class WaitState:
    """Where a waiting request stands: who holds its slots, and who is ahead of it."""

    request: int
    slots: tuple[SlotKey, ...]
    position: int
    """1 for the head: the number of live requests ahead that want one of its slots, plus one."""
    ahead: tuple[WaiterView, ...]
    holders: tuple[LeaseView, ...]
    """The live leases on its slots."""
