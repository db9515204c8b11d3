"""Hooks testrack calls, for conftest.py files and plugins to implement.

They live in testrack's own pluggy project ("testrack"), because pytest takes only
``pytest_*`` functions as its hooks: any plugin or conftest.py that pytest loads and
that defines ``testrack_device_check`` or ``testrack_device_identity`` is registered
here as well, no decorator needed (``@testrack.hookimpl(tryfirst=True)`` and friends
are there for ordering).

Both hooks run in the controller process, in a thread of their own per device,
before a device's first test and again after a crash, a timeout or a
:class:`testrack.DeviceError` on it; a slow check holds up only its own device.
"""

from __future__ import annotations

import inspect
import sys
import weakref
from typing import Any

import pluggy

from testrack.rack import Device

hookspec = pluggy.HookspecMarker("testrack")
hookimpl = pluggy.HookimplMarker("testrack")

#: The hooks; a function with one of these names in a plugin or conftest.py implements it.
NAMES = ("testrack_device_check", "testrack_device_identity")


@hookspec
def testrack_device_check(device: Device) -> None:
    """Check that ``device`` is fit to run tests; raise any exception to say it is not.

    A device that fails the check is quarantined for the rest of the run: its
    work moves to other matching devices, and the summary shows it as
    ``quarantined: <the exception's message>`` rather than as test failures.
    Simulated devices (``testrack sim``) are checked by testrack itself: they
    must answer an ``identify`` request.
    """


@hookspec(firstresult=True)
def testrack_device_identity(device: Device) -> str | None:
    """Return what identifies this physical device (a serial number, a host key
    fingerprint), or None when it cannot tell.

    The first identity a device reports is pinned in the results store. When it
    later reports another, the device is refused (quarantined) with both
    identities, when the first was pinned, and the command that accepts the new
    one: ``testrack trust DEVICE``. Simulated devices report their serial.
    """


class TestrackHooks(pluggy.PluginManager):
    """testrack's hooks; plain ``testrack_*`` functions count as implementations."""

    def __init__(self) -> None:
        super().__init__("testrack")
        self.add_hookspecs(sys.modules[__name__])

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> pluggy.HookimplOpts | None:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name in NAMES and inspect.isroutine(getattr(plugin, name, None)):
            return {
                "wrapper": False,
                "hookwrapper": False,
                "optionalhook": False,
                "tryfirst": False,
                "trylast": False,
                "specname": None,
            }
        return opts


_BY_PYTEST_MANAGER: weakref.WeakKeyDictionary[Any, TestrackHooks] = weakref.WeakKeyDictionary()


def hooks_for(pytest_manager: Any) -> TestrackHooks:
    """The testrack hooks that go with one pytest plugin manager (one per pytest session)."""
    hooks = _BY_PYTEST_MANAGER.get(pytest_manager)
    if hooks is None:
        hooks = _BY_PYTEST_MANAGER[pytest_manager] = TestrackHooks()
    return hooks


def offer(plugin: object, pytest_manager: Any) -> None:
    """Register ``plugin`` (a conftest module, a plugin) if it implements any testrack hook."""
    if any(inspect.isroutine(getattr(plugin, name, None)) for name in NAMES):
        hooks = hooks_for(pytest_manager)
        if not hooks.is_registered(plugin):
            hooks.register(plugin)
