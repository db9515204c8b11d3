"""Sharing a rack between runs, people and hosts: leases on device slots, a fair wait queue,
a shared run queue, and the settings that say where the share is.

The contract and its guarantees are in ``docs/sharing.md``. Backends: in memory
(:class:`MemoryShare`, for tests), SQLite (the embedded default, one machine) and PostgreSQL
(many hosts); :func:`open_share` picks one from a setting.
"""

from testrack.share.clock import SYSTEM_CLOCK, Clock, DrivenClock, SystemClock
from testrack.share.errors import (
    HostNameTaken,
    LeaseLost,
    NotHolder,
    QueueError,
    RunFinished,
    SchemaError,
    ShareError,
    ShareUnavailable,
    TestSetMismatch,
    UnknownDevice,
    WaitTimeout,
)
from testrack.share.holder import Holder, Lease
from testrack.share.memory import MemoryShare
from testrack.share.model import (
    DEFAULT_PRIORITY,
    DEFAULT_TTL,
    PERSON_PRIORITY,
    DeviceSpec,
    DeviceStatus,
    Grant,
    HolderInfo,
    HolderKind,
    LeaseView,
    ShareStatus,
    SlotKey,
    WaiterView,
    WaitState,
)
from testrack.share.secrets import redact, redact_command
from testrack.share.text import format_status, format_wait_timeout, format_waiting

__all__ = [
    "DEFAULT_PRIORITY",
    "DEFAULT_TTL",
    "PERSON_PRIORITY",
    "SYSTEM_CLOCK",
    "Clock",
    "DeviceSpec",
    "DeviceStatus",
    "DrivenClock",
    "Grant",
    "Holder",
    "HolderInfo",
    "HolderKind",
    "HostNameTaken",
    "Lease",
    "LeaseLost",
    "LeaseView",
    "MemoryShare",
    "NotHolder",
    "QueueError",
    "RunFinished",
    "SchemaError",
    "ShareError",
    "ShareStatus",
    "ShareUnavailable",
    "SlotKey",
    "SystemClock",
    "TestSetMismatch",
    "UnknownDevice",
    "WaitState",
    "WaitTimeout",
    "WaiterView",
    "format_status",
    "format_wait_timeout",
    "format_waiting",
    "redact",
    "redact_command",
]
