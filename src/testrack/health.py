"""Device health: checks before first use and after trouble, identity pinning, quarantine.

Checks run in threads of the controller (one device's slow check holds up only
that device) and report back through a pipe that the run loop waits on with the
workers' sockets. A device is used only once its check passed; a device that fails
is quarantined for the rest of the run. The identity a device reports the first
time is pinned in the store (trust on first use, like SSH's known_hosts); a
different identity later fails the check with the command that accepts it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import enum
import os
import queue
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from testrack import hookspecs
from testrack.errors import DeviceError
from testrack.rack import Device
from testrack.recorder import Recorder

#: How long a simulated device gets to answer the built-in check.
SIM_CHECK_TIMEOUT = 2.0


class DeviceState(enum.Enum):
    """Where a device stands with the run."""

    UNCHECKED = "unchecked"
    CHECKING = "checking"
    HEALTHY = "healthy"
    QUARANTINED = "quarantined"


@dataclasses.dataclass(frozen=True)
class CheckResult:
    device: str
    reason: str | None  #: None: the device passed

    @property
    def ok(self) -> bool:
        return self.reason is None


class Health:
    """The devices' states, and the checks that change them."""

    def __init__(self, config: pytest.Config, recorder: Recorder, devices: Sequence[Device]) -> None:
        self.config = config
        self.recorder = recorder
        self.devices = {d.name: d for d in devices}
        self.states = dict.fromkeys(self.devices, DeviceState.UNCHECKED)
        self.reasons: dict[str, str] = {}
        self._done: queue.SimpleQueue[CheckResult] = queue.SimpleQueue()
        read, self._wake = os.pipe()
        os.set_blocking(read, False)
        #: Readable when a check finished: the run loop waits on it.
        self.wakeup = os.fdopen(read, "rb", buffering=0)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        #: A shared rack's: a quarantine here is the share's, and a passed check lifts it there.
        self.on_quarantine: Callable[[str, str], None] | None = None
        self.on_pass: Callable[[str], None] | None = None
        self.hooks = hookspecs.hooks_for(config.pluginmanager).hook
        self._user_hooks = bool(
            self.hooks.testrack_device_check.get_hookimpls()
            or self.hooks.testrack_device_identity.get_hookimpls()
        )

    def needs_check(self, device: Device) -> bool:
        return self._user_hooks or bool(device.attrs.get("simulated"))

    def state(self, name: str) -> DeviceState:
        return self.states[name]

    def usable(self, name: str) -> bool:
        return self.states[name] is DeviceState.HEALTHY

    def check(self, name: str) -> None:
        """Start a check of ``name`` (unless one is under way or it is quarantined)."""
        if self.states[name] in (DeviceState.CHECKING, DeviceState.QUARANTINED):
            return
        device = self.devices[name]
        if not self.needs_check(device):
            self.states[name] = DeviceState.HEALTHY
            return
        self.states[name] = DeviceState.CHECKING
        if self._pool is None:
            workers = min(8, max(1, len(self.devices)))
            self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="testrack-check")
        self._pool.submit(self._run, device)

    def _run(self, device: Device) -> None:
        try:
            reason = self._examine(device)
        except BaseException as exc:  # whatever the user's hook raises is the reason
            reason = str(exc) if isinstance(exc, DeviceError) else f"{type(exc).__name__}: {exc}"
        self._done.put(CheckResult(device.name, reason))
        os.write(self._wake, b".")

    def _examine(self, device: Device) -> str | None:
        hook = self.hooks
        identity = hook.testrack_device_identity(device=device)
        if device.attrs.get("simulated"):
            from testrack.sim import SimClient

            try:
                answer: dict[str, Any] = SimClient(device.address, timeout=SIM_CHECK_TIMEOUT).identify()
            except Exception as exc:
                return f"does not answer at {device.address} ({exc})"
            if identity is None:
                identity = str(answer.get("serial"))
        if identity is not None:
            changed = self.recorder.verify_identity(device.name, str(identity))
            if changed:
                return changed
        hook.testrack_device_check(device=device)
        return None

    def finished(self) -> list[CheckResult]:
        """Checks that ended since the last call; their devices are now healthy or quarantined."""
        with contextlib.suppress(BlockingIOError):
            self.wakeup.read()
        results = []
        while True:
            try:
                result = self._done.get_nowait()
            except queue.Empty:
                break
            if result.ok:
                self.states[result.device] = DeviceState.HEALTHY
                if self.on_pass is not None:
                    self.on_pass(result.device)
            else:
                self.quarantine(result.device, result.reason or "failed its check")
            results.append(result)
        return results

    def quarantine(self, name: str, reason: str, shared: bool = False) -> None:
        """Take ``name`` out of this run (``shared``: the share already has it quarantined)."""
        if self.states[name] is DeviceState.QUARANTINED:
            return
        self.states[name] = DeviceState.QUARANTINED
        self.reasons[name] = reason
        self.recorder.quarantine(name, reason)
        if self.on_quarantine is not None and not shared:
            self.on_quarantine(name, reason)

    def quarantined(self) -> dict[str, str]:
        return {name: self.reasons[name] for name, s in self.states.items() if s is DeviceState.QUARANTINED}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self.wakeup.close()
        os.close(self._wake)
