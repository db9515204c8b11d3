"""The ``devices`` fixture's object: a test's devices by role and by position.

Built in the worker from the test's request (its ``@pytest.mark.devices`` marker) and
the devices the controller granted it, in position order. Position 0 is the device
whose worker runs the test, so ``device`` and ``devices[0]`` are the same device.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, overload

from testrack.rack import Device

if TYPE_CHECKING:  # not at run time: `import testrack` stays free of the scheduling package
    from testrack.scheduling.requests import DeviceRequest


class Devices(Sequence[Device]):
    """A test's devices: ``devices["server"]``, ``devices["client"][1]``, ``devices[0]``, ``len``.

    A role of one device gives that device; a role with ``count`` > 1 gives a list.
    The short form (``@pytest.mark.devices(2, kind="phone")``) has positions only.
    """

    __slots__ = ("_devices", "_roles")

    def __init__(self, request: DeviceRequest | None, devices: Sequence[Device]) -> None:
        self._devices = tuple(devices)
        if request is not None and request.size != len(self._devices):
            raise ValueError(
                f"the test asks for {request.size} devices ({request.describe()}) but was given "
                f"{len(self._devices)} ({', '.join(d.name for d in self._devices)})"
            )
        self._roles: dict[str, tuple[int, int]] = {}  # role -> (first position, count)
        if request is not None and request.named:
            start = 0
            for role in request.roles:
                assert role.name is not None
                self._roles[role.name] = (start, role.count)
                start += role.count

    @property
    def roles(self) -> tuple[str, ...]:
        """The role names, in the marker's order (empty for the short form)."""
        return tuple(self._roles)

    def role(self, name: str) -> list[Device]:
        """The devices of one role, always as a list (handy in typed code)."""
        start, count = self._span(name)
        return list(self._devices[start : start + count])

    def _span(self, name: str) -> tuple[int, int]:
        span = self._roles.get(name)
        if span is not None:
            return span
        last = len(self._devices) - 1
        if not self._roles:
            raise KeyError(
                f"devices[{name!r}]: this test's devices have no roles; use positions, "
                f"devices[0] to devices[{last}] (or declare roles: "
                '@pytest.mark.devices(server={"kind": ...}, client={"kind": ...}))'
            )
        raise KeyError(
            f"devices[{name!r}]: this test has no role {name!r}; its roles are {', '.join(self._roles)}"
        )

    @overload
    def __getitem__(self, key: int) -> Device: ...
    @overload
    def __getitem__(self, key: slice) -> list[Device]: ...
    @overload
    def __getitem__(self, key: str) -> Device | list[Device]: ...
    def __getitem__(self, key: int | slice | str) -> Device | list[Device]:
        if isinstance(key, str):
            start, count = self._span(key)
            return self._devices[start] if count == 1 else list(self._devices[start : start + count])
        if isinstance(key, slice):
            return list(self._devices[key])
        try:
            return self._devices[key]
        except IndexError:
            raise IndexError(
                f"devices[{key}]: this test has {len(self._devices)} device"
                f"{'s' if len(self._devices) != 1 else ''} (positions 0 to {len(self._devices) - 1})"
            ) from None

    def __len__(self) -> int:
        return len(self._devices)

    def __iter__(self) -> Iterator[Device]:
        return iter(self._devices)

    def __repr__(self) -> str:
        if not self._roles:
            return f"Devices({', '.join(d.name for d in self._devices)})"
        parts = []
        for name, (start, count) in self._roles.items():
            names = [d.name for d in self._devices[start : start + count]]
            parts.append(f"{name}={names[0]}" if count == 1 else f"{name}=[{', '.join(names)}]")
        return f"Devices({', '.join(parts)})"
