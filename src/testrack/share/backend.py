"""The lease contract every share backend keeps (in memory, SQLite, PostgreSQL).

Each method is one transaction. The client side that builds on it (heartbeats, waiting,
local deadlines) is :class:`testrack.share.holder.Holder`, written once for all backends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from testrack.share.clock import Clock
from testrack.share.model import DeviceSpec, Grant, HolderInfo, LeaseView, ShareStatus, SlotKey, WaitState


class ShareBackend(Protocol):
    clock: Clock
    location: str
    """Where the share is, fit to print (passwords redacted)."""

    def register_devices(self, devices: Sequence[DeviceSpec]) -> list[str]:
        """Make the devices known (slots for their capacity); warnings for names another rack
        gave another address."""

    def add_holder(self, info: HolderInfo, ttl: float) -> int:
        """A new holder, alive for ``ttl`` seconds unless renewed; its id."""

    def remove_holder(self, holder_id: int) -> None:
        """Release the holder's leases and cancel its requests (a clean exit)."""

    def request(self, holder_id: int, slots: Sequence[SlotKey], priority: int) -> tuple[int, Grant | None]:
        """Queue a request for all of ``slots`` and try it at once: (request id, the grant or None).

        Raises UnknownDevice for a slot no run registered."""

    def try_grant(self, request_id: int) -> Grant | None:
        """Grant a queued request if its turn has come and its slots are free; None if not yet.

        Raises LeaseLost (with no slots) if the request is gone: its holder was found dead."""

    def cancel(self, request_id: int) -> None: ...

    def renew(self, holder_id: int, tokens: Sequence[int]) -> list[int] | None:
        """The heartbeat: keep the holder and its leases alive for another ttl.

        Returns the tokens still held (the others are lost), or None when the holder itself
        expired or was found dead: then every lease is lost and the holder id is void."""

    def release(self, holder_id: int, token: int) -> bool:
        """Free a grant's slots; False if the token was no longer current (nothing freed)."""

    def give_back(self, holder_id: int, token: int) -> bool:
        """Whether the holder should give the grant back between tests (see rules.should_give_back)."""

    def wait_state(self, request_id: int) -> WaitState: ...

    def wait_for_change(self, timeout: float, slots: Sequence[SlotKey] = ()) -> None:
        """Block until one of ``slots`` (any slot, if none are named) may have been freed, or
        ``timeout`` seconds pass."""

    def status(self) -> ShareStatus: ...

    def force_release(self, device: str, holder: str | None, user: str) -> list[LeaseView]:
        """Free ``device``'s leases: those a person ``user`` reserved, or (``holder`` given)
        those whose holder is named ``holder`` (its label or its run). Raises NotHolder, naming the
        holder, when there is nothing of the kind to free, and UnknownDevice."""

    def set_quarantine(self, device: str, reason: str, run: str) -> None: ...

    def clear_quarantine(self, device: str) -> bool:
        """The device passed its check again; False if it was not quarantined."""

    def close(self) -> None: ...
