"""A run's leases on its devices' slots (docs/sharing.md): where devices come from when the rack
is shared with other runs, people and hosts.

A slot's worker starts only once the run holds that slot's lease. Slots free at the start are
taken at once; the others are waited for in a thread each (in the share's fair queue), and the
run loop starts their workers as the grants arrive (:meth:`Leasing.granted`). Before a worker
gets more tests, :meth:`Leasing.holds` asks whether the lease is certainly still held (a local
deadline; the share when it has passed), so a run that was frozen past its lease's expiry
stops using the device before it touches it again. ``local:N`` slots need no lease.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from testrack import options
from testrack.envs import KIND as ENVIRONMENT_KIND
from testrack.rack import Rack
from testrack.scheduling.dispatch import Slot
from testrack.share import (
    DEFAULT_PRIORITY,
    DeviceSpec,
    Holder,
    HolderInfo,
    Lease,
    LeaseLost,
    ShareError,
    SlotKey,
    WaitState,
    WaitTimeout,
    format_waiting,
)
from testrack.share.backend import ShareBackend
from testrack.share.location import open_share, resolve
from testrack.share.text import clock_time

#: The least a run holds a slot before it gives it back to a fairer claim (seconds).
GIVE_BACK_QUANTUM = 3.0


def addoption(group: Any) -> None:
    group.addoption(
        "--rack-share",
        metavar="PATH|URL|off",
        default=None,
        help="where runs lease the rack's devices so that no two drive one at once: an SQLite file "
        "(default $XDG_STATE_HOME/testrack/share.sqlite, one machine), a postgresql:// URL (many "
        "hosts), or off. Also TESTRACK_SHARE and share = ... in the rack file.",
    )
    group.addoption(
        "--rack-wait",
        type=options.seconds(600, zero=True),
        default=None,
        metavar="SECONDS",
        help="give up waiting for a leased device after SECONDS, naming who holds it (default: wait).",
    )
    group.addoption(
        "--rack-priority",
        type=int,
        default=None,
        metavar="N",
        help=f"this run's place in the share's wait queue: higher first (default {DEFAULT_PRIORITY}).",
    )
    group.addoption(
        "--rack-host",
        default=None,
        metavar="NAME",
        help="this host's name in the share (default: the machine's host name).",
    )


class Leasing:
    """The leases of one run: one per slot, taken before the slot's worker starts."""

    def __init__(
        self,
        backend: ShareBackend,
        holder: Holder,
        describe: str,
        wait: float | None,
        wake: Callable[[], None],
        say: Callable[[str], None],
    ) -> None:
        self.backend = backend
        self.holder = holder
        #: The share and where its setting came from, for messages.
        self.describe = describe
        self.wait = wait
        self._wake = wake
        self._say = say
        self.leases: dict[str, Lease] = {}
        self._slot_of: dict[int, str] = {}
        self._granted: queue.SimpleQueue[tuple[Slot, Lease | None, str | None]] = queue.SimpleQueue()
        self._lost: queue.SimpleQueue[Lease] = queue.SimpleQueue()
        self._waiting: set[str] = set()
        self._closed = threading.Event()
        #: Why a slot will never be had (its wait gave up), by slot id.
        self.refused: dict[str, str] = {}
        self.keys: dict[str, SlotKey] = {}
        self._names: set[str] = set()
        self._granted_at: dict[str, float] = {}

    @classmethod
    def open(
        cls,
        config: pytest.Config,
        rack: Rack,
        slots: list[Slot],
        run: str,
        wake: Callable[[], None],
        say: Callable[[str], None],
    ) -> Leasing | None:
        """The run's leasing, or None (``--rack-share off``, or a ``local:N`` rack)."""
        shared = [d for d in rack.devices if d.kind != ENVIRONMENT_KIND]  # environments are this run's own
        if rack.source.startswith("local:") or not shared:
            return None
        rack_file = None if rack.share is None else Path(rack.source)
        setting = resolve(config.getoption("rack_share"), os.environ, rack.share, rack_file)
        try:
            backend = open_share(setting)
        except ShareError as exc:
            raise pytest.UsageError(str(exc)) from None
        if backend is None:
            return None
        host = config.getoption("rack_host") or socket.gethostname()
        priority = config.getoption("rack_priority")
        try:
            warnings = backend.register_devices([DeviceSpec(d.name, d.capacity, d.address) for d in shared])
            holder = Holder(
                backend,
                HolderInfo(
                    run,
                    host,
                    os.getpid(),
                    "pytest",
                    priority=DEFAULT_PRIORITY if priority is None else priority,
                ),
            )
        except ShareError as exc:
            backend.close()
            raise pytest.UsageError(f"{exc} (or run without leases: --rack-share off)") from None
        leasing = cls(backend, holder, setting.describe(), config.getoption("rack_wait"), wake, say)
        names = leasing._names = {d.name for d in shared}
        leasing.keys = slot_keys([s for s in slots if s.device in names])
        for warning in warnings:
            say(f"testrack: {warning}")
        holder.start_heartbeat(leasing._on_lost)
        return leasing

    # ------------------------------------------------------------------ taking

    def take_now(self, slot: Slot) -> bool:
        """The slot's lease if it is free now; False: it is being waited for (see :meth:`granted`)."""
        if slot.id not in self.keys:
            return True  # an environment's slot: nobody else's to take
        try:
            lease = self.holder.try_acquire([self.keys[slot.id]])
        except ShareError as exc:
            raise pytest.UsageError(f"{exc} (or run without leases: --rack-share off)") from None
        if lease is not None:
            self._keep(slot, lease)
            return True
        self.wait_for(slot)
        return False

    def wait_for(self, slot: Slot) -> None:
        """Wait for the slot's lease in a thread; the grant (or the give-up) comes back through
        :meth:`granted`."""
        if slot.id in self._waiting or self._closed.is_set():
            return
        self._waiting.add(slot.id)
        threading.Thread(
            target=self._acquire, args=(slot,), name=f"testrack-lease-{slot.id}", daemon=True
        ).start()

    def _acquire(self, slot: Slot) -> None:
        shown: list[str] = []

        def on_wait(state: WaitState) -> None:
            text = format_waiting(state)
            if text not in shown:
                shown.append(text)
                self._say(f"testrack: {slot.id} ({slot.device}): {text}")

        try:
            lease = self.holder.acquire([self.keys[slot.id]], wait=self.wait, on_wait=on_wait)
        except WaitTimeout as exc:
            self._granted.put((slot, None, str(exc)))
        except ShareError as exc:
            if self._closed.is_set():
                return  # the run ended while this slot waited: nobody wants the answer
            self._granted.put((slot, None, f"the share {self.describe} failed while waiting: {exc}"))
        except Exception:
            if self._closed.is_set():
                return  # the share's connection closed under the wait, as the run ended
            raise
        else:
            if self._closed.is_set():  # granted as the run ended: give it back if the share still answers
                with contextlib.suppress(Exception):
                    self._release(lease)
                return
            self._granted.put((slot, lease, None))
        self._wake()

    def granted(self) -> list[tuple[Slot, str | None]]:
        """Slots whose wait ended since the last call: (slot, None) granted, or (slot, why not)."""
        out: list[tuple[Slot, str | None]] = []
        while True:
            try:
                slot, lease, why = self._granted.get_nowait()
            except queue.Empty:
                return out
            self._waiting.discard(slot.id)
            if lease is not None:
                self._keep(slot, lease)
            else:
                self.refused[slot.id] = why or "no lease"
            out.append((slot, why))

    def _keep(self, slot: Slot, lease: Lease) -> None:
        self.leases[slot.id] = lease
        self._slot_of[lease.token] = slot.id
        self._granted_at[slot.id] = time.monotonic()

    # ------------------------------------------------------------------ holding

    def deadline(self, slot_id: str) -> float:
        """Until when (monotonic) the slot's lease is certainly held; 0.0: the slot needs none."""
        lease = self.leases.get(slot_id)
        return 0.0 if lease is None else lease.deadline

    def holds(self, slot_id: str) -> bool:
        """Whether the slot's lease is held, asking the share when the local deadline passed."""
        lease = self.leases.get(slot_id)
        if lease is None:
            return slot_id not in self.keys
        if lease.valid_at(time.monotonic()):
            return True
        try:
            self.holder.check(lease)
        except LeaseLost:
            self.leases.pop(slot_id, None)
            return False
        except ShareError:
            return lease.valid_at(time.monotonic())
        return True

    def lost(self) -> list[str]:
        """Slots whose leases the heartbeat found lost since the last call."""
        out: list[str] = []
        while True:
            try:
                lease = self._lost.get_nowait()
            except queue.Empty:
                return out
            slot_id = self._slot_of.get(lease.token)
            if slot_id is not None and self.leases.get(slot_id) is lease:
                del self.leases[slot_id]
                out.append(slot_id)

    def _on_lost(self, leases: list[Lease]) -> None:
        for lease in leases:
            self._lost.put(lease)
        self._wake()

    # ------------------------------------------------------------------ giving back

    def release(self, slot_id: str) -> None:
        lease = self.leases.pop(slot_id, None)
        if lease is not None:
            self._release(lease)

    def _release(self, lease: Lease) -> None:
        with contextlib.suppress(ShareError):  # lost or unreachable: it expires on its own
            self.holder.release(lease)

    def should_give_back(self, slot_id: str) -> bool:
        """Give the slot back before its next test? When another run waits for it with a higher
        priority or less device time than this one (the share's rule), and this run has held it
        for GIVE_BACK_QUANTUM seconds at least: each give-back costs a worker's start, so two
        equal runs take turns in quanta, not test by test."""
        lease = self.leases.get(slot_id)
        if lease is None or time.monotonic() - self._granted_at.get(slot_id, 0.0) < GIVE_BACK_QUANTUM:
            return False
        try:
            return self.holder.should_give_back(lease)
        except ShareError:
            return False

    # ------------------------------------------------------------------ quarantines

    def quarantined_elsewhere(self) -> dict[str, str]:
        """This rack's devices the share has quarantined (by another run, or an earlier one), with
        why, by whom and since when."""
        try:
            status = self.backend.status()
        except ShareError:
            return {}
        out = {}
        for device in status.devices:
            q = device.quarantine
            if device.name in self._names and q is not None:
                since = clock_time(q.at)
                out[device.name] = f"quarantined in the share by run {q.run} since {since}: {q.reason}"
        return out

    def quarantine(self, device: str, reason: str) -> None:
        """Every run of the share keeps the device out until it passes its check again
        (ShareError when the share cannot be told)."""
        if device in self._names:
            self.backend.set_quarantine(device, reason, self.holder.info.run)

    def passed_check(self, device: str) -> bool:
        """The device passed its check: True when that lifted its quarantine in the share."""
        return device in self._names and self.backend.clear_quarantine(device)

    @property
    def waiting(self) -> bool:
        """Whether a slot's lease is still being waited for."""
        return bool(self._waiting) or not self._granted.empty()

    def close(self) -> None:
        """Give every lease back and leave the share (waiting threads give theirs back on grant)."""
        if self._closed.is_set():
            return
        self._closed.set()
        for slot_id in list(self.leases):
            self.release(slot_id)
        try:
            self.holder.close()
        finally:
            self.backend.close()


def slot_keys(slots: list[Slot]) -> dict[str, SlotKey]:
    """Each worker slot's place in the share: its device, and its rank among that device's slots."""
    seen: dict[str, int] = {}
    keys = {}
    for slot in slots:
        keys[slot.id] = SlotKey(slot.device, seen.get(slot.device, 0))
        seen[slot.device] = seen.get(slot.device, 0) + 1
    return keys
