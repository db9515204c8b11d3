"""Exceptions users raise to tell testrack something."""

from __future__ import annotations


class DeviceError(Exception):
    """The device, not the code under test, failed (raise it from a fixture or a test).

    testrack then reruns the test elsewhere (in each mode: on the same device once it
    passes its health check again) and rechecks the device, instead of reporting a
    test failure.
    """
