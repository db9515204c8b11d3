"""Tests that need several devices at once: ``@pytest.mark.devices(...)``.

A request is a tuple of roles. Each role has a requirement, read and matched exactly
as ``@pytest.mark.device``'s (``matching.py``), and a count. Positions number the
devices role after role, in the order the marker names the roles, so
``devices(server={"kind": "host"}, client={"kind": "phone", "count": 2})`` has the
positions server, client, client; the short form ``devices(2, kind="phone")`` is one
unnamed role of count 2. Every position gets a different device.

Everything here is plain, picklable data and pure functions: a request travels from
a worker to the controller inside ``messages.CollectedTest``, and whether a rack can
ever serve it is a question about two lists, answered without processes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from testrack.rack import Device
from testrack.scheduling.matching import (
    Requirement,
    describe_requirements,
    matches,
    requirement_from_items,
    requirement_from_marker,
)

if TYPE_CHECKING:
    import pytest

#: Keys of a role that are not requirements.
COUNT = "count"
ATTRS = "attrs"
#: The device's own fields: matched as such, never as attributes.
_FIELDS = ("kind", "name", "address")
_MARKERS = ("device", "devices")

_EXAMPLE = '@pytest.mark.devices(server={"kind": "host"}, client={"kind": "phone", "count": 2})'
_SHORT_EXAMPLE = '@pytest.mark.devices(2, kind="phone")'


@dataclasses.dataclass(frozen=True)
class Role:
    """One role of a request: what its devices must match, and how many it needs."""

    #: None in the short form, whose devices have positions only.
    name: str | None
    requirement: Requirement
    count: int = 1

    def describe(self) -> str:
        """``client (kind='phone', 2 devices)``, or ``2 devices with kind='phone'`` unnamed."""
        wanted = describe_requirements([self.requirement])
        if self.name is None:
            return f"{self.count} device{'s' if self.count != 1 else ''} with {wanted}"
        many = f", {self.count} devices" if self.count != 1 else ""
        return f"{self.name} ({wanted}{many})"


@dataclasses.dataclass(frozen=True)
class DeviceRequest:
    """All the devices one test needs at once, by role."""

    roles: tuple[Role, ...]

    @property
    def size(self) -> int:
        """How many devices (positions) the test takes."""
        return sum(role.count for role in self.roles)

    @property
    def named(self) -> bool:
        """False for the short form, whose devices are reached by position only."""
        return self.roles[0].name is not None

    def positions(self) -> tuple[Role, ...]:
        """The role of each position, in order."""
        return tuple(role for role in self.roles for _ in range(role.count))

    def describe(self) -> str:
        return ", ".join(role.describe() for role in self.roles)


@dataclasses.dataclass(frozen=True)
class Declaration:
    """What a test's markers ask for: one device (``requirements``) or several (``request``)."""

    #: One requirement per ``@pytest.mark.device`` marker that applies (empty for a multi-device test).
    requirements: tuple[Requirement, ...] = ()
    #: Set when the nearest of the test's device markers is ``@pytest.mark.devices``.
    request: DeviceRequest | None = None
    #: Set when a marker cannot be understood; the text says how to fix it.
    error: str | None = None


def request_from_marker(args: Sequence[Any], kwargs: Mapping[str, Any]) -> DeviceRequest:
    """Turn one ``@pytest.mark.devices`` marker into a request; raise ValueError with the fix."""
    if not args and not kwargs:
        raise ValueError(
            f"@pytest.mark.devices needs roles or a number of devices; write {_EXAMPLE} or {_SHORT_EXAMPLE}"
        )
    if len(args) > 1:
        raise ValueError(
            "@pytest.mark.devices takes at most one positional argument (the number of devices), "
            f"got {len(args)}; write {_SHORT_EXAMPLE}"
        )
    if args:
        return DeviceRequest((_short_form(args[0], kwargs),))
    return DeviceRequest(tuple(_role(name, value) for name, value in kwargs.items()))


def _short_form(count: Any, kwargs: Mapping[str, Any]) -> Role:
    if not _is_count(count):
        raise ValueError(
            f"@pytest.mark.devices({count!r}, ...): the positional argument is the number of devices, "
            f"a whole number >= 1; write {_SHORT_EXAMPLE}"
        )
    roles = [key for key, value in kwargs.items() if isinstance(value, Mapping) and key != ATTRS]
    if roles:
        raise ValueError(
            f"@pytest.mark.devices({count}, {roles[0]}=...): give either a number of devices and one "
            f"requirement ({_SHORT_EXAMPLE}) or roles ({_EXAMPLE}), not both"
        )
    if COUNT in kwargs:
        raise ValueError(
            f"@pytest.mark.devices({count}, count=...): the number of devices is the positional "
            "argument, so count is reserved; to match an attribute named count write "
            'attrs={"count": ...}'
        )

    def where(shown: str) -> str:
        return f"@pytest.mark.devices({count}, {shown})"

    return Role(None, requirement_from_items(_items(kwargs, where), where), count)


def _role(name: str, value: Any) -> Role:
    if not isinstance(value, Mapping):
        raise ValueError(
            f"@pytest.mark.devices({name}={value!r}): a role is a dict of requirements, for example "
            f'{name}={{"kind": "phone", "count": 2}}; for N devices alike write '
            '@pytest.mark.devices(N, kind="phone")'
        )
    where = f"@pytest.mark.devices role {name!r}"
    count = value.get(COUNT, 1)
    if not _is_count(count):
        raise ValueError(
            f"{where}: count = {count!r} is not a number of devices; use a whole number >= 1, or leave "
            'it out for 1 (to match an attribute named count write attrs={"count": ...})'
        )

    def at(shown: str) -> str:
        return f"{where}: {shown}"

    items = _items({k: v for k, v in value.items() if k != COUNT}, at)
    return Role(name, requirement_from_items(items, at), count)


def _items(given: Mapping[str, Any], where: Callable[[str], str]) -> dict[str, Any]:
    """The requirement's items: the keys as given, with ``attrs={...}`` merged in as attributes."""
    items = {k: v for k, v in given.items() if k != ATTRS}
    if ATTRS not in given:
        return items
    attrs = given[ATTRS]
    if not isinstance(attrs, Mapping):
        raise ValueError(
            f"{where(f'attrs={attrs!r}')}: attrs must be a dict of attribute requirements, "
            'for example attrs={"count": 2}'
        )
    for key, value in attrs.items():
        if key in _FIELDS:
            raise ValueError(
                f"{where(f'attrs={{{key!r}: ...}}')}: {key} is the device's own field, not an "
                f"attribute; write {key}=... beside attrs"
            )
        if key in items:
            raise ValueError(
                f"{where(f'{key}=...')}: {key} is given both directly and in attrs; give it once"
            )
        items[key] = value
    return items


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


# --------------------------------------------------------------------------- reading a test's markers


class _Marked(Protocol):
    def iter_markers_with_node(self, name: str | None = None) -> Iterator[tuple[Any, pytest.Mark]]: ...


def declaration(item: _Marked) -> Declaration:
    """What ``item``'s ``device`` and ``devices`` markers ask for.

    The nearest marker decides: a method's ``devices`` marker replaces a class's (or
    module's) ``device`` markers, and a method's ``device`` marker replaces a class's
    ``devices``. Single-device requirements still add up over every level, as before.
    """
    marks = [(node, mark) for node, mark in item.iter_markers_with_node() if mark.name in _MARKERS]
    if not marks:
        return Declaration()
    nearest = marks[0][0]
    here = [mark for node, mark in marks if node is nearest]
    if any(mark.name == "devices" for mark in here):
        if any(mark.name == "device" for mark in here):
            return Declaration(
                error="@pytest.mark.device and @pytest.mark.devices on the same test: use one; "
                "put the device's requirement into a role of @pytest.mark.devices"
            )
        if len(here) > 1:
            return Declaration(
                error=f"@pytest.mark.devices given {len(here)} times on the same test: merge them into one"
            )
        try:
            return Declaration(request=request_from_marker(here[0].args, here[0].kwargs))
        except ValueError as exc:
            return Declaration(error=str(exc))
    requirements = []
    error = None
    for _node, mark in marks:
        if mark.name != "device":
            continue
        try:
            requirements.append(requirement_from_marker(mark.args, mark.kwargs))
        except ValueError as exc:
            error = error or str(exc)
    return Declaration(requirements=tuple(requirements), error=error)


# --------------------------------------------------------------------------- requests against a rack


def eligibility(request: DeviceRequest, devices: Iterable[Device]) -> tuple[frozenset[str], ...]:
    """For each position, the names of the devices that match its role."""
    devices = list(devices)
    by_role = [frozenset(d.name for d in devices if matches(d, [role.requirement])) for role in request.roles]
    return tuple(names for role, names in zip(request.roles, by_role, strict=True) for _ in range(role.count))


@dataclasses.dataclass(frozen=True)
class Shortfall:
    """Roles that together need more distinct devices than the rack has for them."""

    roles: tuple[Role, ...]
    #: How many devices those roles need in all.
    needed: int
    #: The devices that match any of those roles, in rack order.
    matching: tuple[str, ...]


def shortfall(request: DeviceRequest, devices: Sequence[Device]) -> Shortfall | None:
    """None when some set of ``devices`` can serve ``request``; else the smallest reason why not.

    A maximum matching of positions to devices either covers every position (the
    request can run) or leaves one out; the roles reachable from that position by
    alternating paths are a set that needs more devices than match any of them
    (Hall's theorem), which is the most useful thing to tell the user.
    """
    order = {d.name: i for i, d in enumerate(devices)}
    # Counts beyond the rack's size answered before positions are spelled out one by one
    # (a count of 10**8 would take minutes and gigabytes to say "not enough").
    for role in request.roles:
        matching = tuple(d.name for d in devices if matches(d, [role.requirement]))
        if role.count > len(matching):
            return Shortfall(roles=(role,), needed=role.count, matching=matching)
    if request.size > len(devices):
        names = tuple(d.name for d in devices if any(matches(d, [r.requirement]) for r in request.roles))
        return Shortfall(roles=request.roles, needed=request.size, matching=names)
    positions = request.positions()
    options = eligibility(request, devices)
    candidates = [sorted(names, key=order.__getitem__) for names in options]
    owner = perfect_matching(candidates)[1]
    matched = set(owner.values())
    missing = next((p for p in range(len(positions)) if p not in matched), None)
    if missing is None:
        return None
    seen_positions = {missing}
    seen_devices: set[str] = set()
    frontier = [missing]
    while frontier:
        position = frontier.pop()
        for name in candidates[position]:
            if name not in seen_devices:
                seen_devices.add(name)
                holder = owner[name]  # every reachable device is matched, or the matching was not maximum
                if holder not in seen_positions:
                    seen_positions.add(holder)
                    frontier.append(holder)
    roles = tuple(role for role in request.roles if any(positions[p] is role for p in seen_positions))
    return Shortfall(
        roles=roles,
        needed=sum(role.count for role in roles),
        matching=tuple(sorted(seen_devices, key=order.__getitem__)),
    )


def perfect_matching(candidates: Sequence[Sequence[str]]) -> tuple[list[str | None], dict[str, int]]:
    """A maximum matching of positions to distinct devices (Kuhn's augmenting paths).

    ``candidates[p]`` lists the devices position ``p`` may take, best first; the
    result gives each position's device (None if unmatched) and each matched
    device's position. Requests have a handful of positions, so the simple
    algorithm is also the fast one.
    """
    owner: dict[str, int] = {}

    def augment(position: int, visited: set[str]) -> bool:
        for name in candidates[position]:
            if name in visited:
                continue
            visited.add(name)
            if name not in owner or augment(owner[name], visited):
                owner[name] = position
                return True
        return False

    for position in range(len(candidates)):
        free = next((name for name in candidates[position] if name not in owner), None)
        if free is not None:  # the best device nobody holds: keeps the answer in rack order
            owner[free] = position
        else:
            augment(position, set())
    taken: list[str | None] = [None] * len(candidates)
    for name, position in owner.items():
        taken[position] = name
    return taken, owner


def first_assignment(
    request: DeviceRequest, devices: Sequence[Device], first: str | None = None
) -> tuple[Device, ...] | None:
    """A set of devices for ``request`` (rack order), with ``first`` at position 0 when it can be.

    What a run without workers (``--rack off``) gives the ``devices`` fixture: one
    process can reach every device, and ``device`` is the rack's first device.
    """
    if request.size > len(devices):
        return None
    order = {d.name: i for i, d in enumerate(devices)}
    by_name = {d.name: d for d in devices}
    candidates = [sorted(names, key=order.__getitem__) for names in eligibility(request, devices)]
    if first is not None and candidates and first in candidates[0]:
        pinned = [[first], *([n for n in c if n != first] for c in candidates[1:])]
        taken, _ = perfect_matching(pinned)
        if None not in taken:
            return tuple(by_name[n] for n in taken if n is not None)
    taken, _ = perfect_matching(candidates)
    if None in taken:
        return None
    return tuple(by_name[n] for n in taken if n is not None)


def label(request: DeviceRequest | None, names: Sequence[str]) -> str:
    """``host-1 (server), phone-1 (client), phone-2 (client)``: a test's devices for messages."""
    if request is None or not request.named:
        return ", ".join(names)
    return ", ".join(f"{name} ({role.name})" for name, role in zip(names, request.positions(), strict=True))
