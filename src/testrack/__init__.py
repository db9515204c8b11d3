"""testrack: run a pytest suite against a rack of devices, on every device or spread over them.

The public surface is what this module exports; everything else is private.

PYTEST_DONT_REWRITE: workers import testrack before their pytest session starts,
so pytest must not try (and warn about failing) to rewrite its asserts.
"""

from testrack.devices import Devices
from testrack.errors import DeviceError
from testrack.hookspecs import hookimpl
from testrack.rack import Device, Rack, RackError, discover_rack, load_rack

__all__ = ["Device", "DeviceError", "Devices", "Rack", "RackError", "discover_rack", "hookimpl", "load_rack"]
__version__ = "0.1.0.dev0"
