"""Matching tests to devices: ``@pytest.mark.device(kind=..., **attrs)``.

A requirement is a tuple of ``(key, allowed values)`` pairs. ``kind``, ``name``
and ``address`` compare with the device's own fields; any other key compares
with ``device.attrs``. A list of values on the test side means "any of these"; a
list on the device side means "has all of these" (so ``features = ["wifi", "bt"]``
matches ``device(features="wifi")``). A test with several ``device`` markers
(class and function, say) needs all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from testrack.rack import Device

Requirement = tuple[tuple[str, tuple[Any, ...]], ...]

_SCALARS = (str, int, float, bool)


def requirement_from_marker(args: Sequence[Any], kwargs: Mapping[str, Any]) -> Requirement:
    """Turn one marker's arguments into a requirement; raise ValueError with the fix."""
    if len(args) > 1:
        raise ValueError(
            f"@pytest.mark.device takes at most one positional argument (the kind), got {len(args)}; "
            "write @pytest.mark.device(kind=..., attr=value)"
        )
    items: dict[str, Any] = dict(kwargs)
    if args:
        if "kind" in items:
            raise ValueError("@pytest.mark.device got the kind both positionally and as kind=; give it once")
        items["kind"] = args[0]
    return requirement_from_items(items, lambda shown: f"@pytest.mark.device({shown})")


def requirement_from_items(items: Mapping[str, Any], where: Callable[[str], str]) -> Requirement:
    """``{key: value or list of values}`` as a requirement; ``where("key=value")`` names a bad one.

    Shared by ``@pytest.mark.device`` and the roles of ``@pytest.mark.devices``, so that both
    accept and refuse exactly the same values.
    """
    out = []
    for key in sorted(items):
        value = items[key]
        values = tuple(value) if isinstance(value, (list, tuple, set, frozenset)) else (value,)
        if not values or not all(isinstance(v, _SCALARS) for v in values):
            raise ValueError(
                f"{where(f'{key}={value!r}')}: values must be strings, numbers or booleans "
                "(or a list of them, meaning any of them)"
            )
        out.append(
            (key, tuple(sorted(set(values), key=repr)) if isinstance(value, (set, frozenset)) else values)
        )
    return tuple(out)


def _device_value(device: Device, key: str) -> Any:
    if key in ("kind", "name", "address"):
        return getattr(device, key)
    return device.attrs.get(key, _MISSING)


_MISSING = object()


def matches(device: Device, requirements: Iterable[Requirement]) -> bool:
    """True when ``device`` satisfies every requirement."""
    for requirement in requirements:
        for key, allowed in requirement:
            have = _device_value(device, key)
            if have is _MISSING:
                return False
            held = have if isinstance(have, list) else [have]
            if not any(_same(h, v) for h in held for v in allowed):
                return False
    return True


def _same(a: Any, b: Any) -> bool:
    """Equal, but ``True`` is not ``1``: a rack's booleans and numbers mean different things."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


def describe_requirements(requirements: Iterable[Requirement]) -> str:
    """``kind='gpu', mem_gb=16`` - the requirement as the user wrote it."""
    parts = []
    for requirement in requirements:
        for key, allowed in requirement:
            shown = repr(allowed[0]) if len(allowed) == 1 else "any of " + ", ".join(map(repr, allowed))
            parts.append(f"{key}={shown}")
    return ", ".join(parts) if parts else "any device"
