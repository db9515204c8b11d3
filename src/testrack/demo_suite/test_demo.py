"""Three tests that each keep their device busy for a while.

The tests do not know how they are spread: with ``--rack-mode=each`` every device runs all
three, with ``--rack-mode=load`` each device runs about one. Only the wall time changes.
"""

from __future__ import annotations

from testrack.rack import Device
from testrack.sim import SimClient


def exercise(device: Device, work_ms: int) -> None:
    with SimClient(device.address) as client:
        identity = client.identify()
        assert identity["address"] == device.address, f"the fixture's {device} is not this device"
        reply = client.work(work_ms)
    assert reply["ms"] == work_ms


def test_device1(device: Device, work_ms: int) -> None:
    exercise(device, work_ms)


def test_device2(device: Device, work_ms: int) -> None:
    exercise(device, work_ms)


def test_device3(device: Device, work_ms: int) -> None:
    exercise(device, work_ms)
