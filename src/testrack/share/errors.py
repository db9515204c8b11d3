"""What can go wrong when sharing a rack. Every message names the problem and the fix."""

from __future__ import annotations

from collections.abc import Sequence

from testrack.share.model import SlotKey, format_slots


class ShareError(Exception):
    """The share cannot do what was asked; the message says why and what to do."""


class ShareUnavailable(ShareError):
    """The share (its file or its server) cannot be reached or used now."""


class SchemaError(ShareError):
    """The share's tables are from another testrack version and cannot be brought up to date here."""


class LeaseLost(ShareError):
    """A write named a token that is no longer its slots' current one: stop using the device."""

    def __init__(self, slots: Sequence[SlotKey], token: int, reason: str) -> None:
        self.slots = tuple(slots)
        self.token = token
        self.reason = reason
        super().__init__(f"lost the lease on {format_slots(self.slots)} (token {token}): {reason}")


class WaitTimeout(ShareError):
    """Gave up waiting for slots (``--rack-wait``); the message names who holds them."""


class NotHolder(ShareError):
    """A release by someone who does not hold the lease (and did not say --force --holder)."""


class UnknownDevice(ShareError):
    """A device name no run has registered in this share."""


class QueueError(ShareError):
    """A shared run cannot be created, joined or used as asked."""


class TestSetMismatch(QueueError):
    """A host collected other tests than the run it joins."""

    __test__ = False  # not a pytest test class


class RunFinished(QueueError):
    """The run id names a run that already finished."""


class HostNameTaken(QueueError):
    """Another live host of the run uses the same --rack-host name."""
