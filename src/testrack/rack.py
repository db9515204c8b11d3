"""Rack files: where the devices come from.

A rack is read from a TOML file (``testrack.toml``, ``[tool.testrack]`` in
``pyproject.toml``, or any file given with ``--rack``), from the classic
``devices.json`` (a JSON list of addresses), or made up from ``local:N``.
Every problem becomes one :class:`RackError` whose text names the file, the
device, the field and the fix, because the user reads it instead of a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from testrack.envs import KIND as ENVIRONMENT_KIND
from testrack.envs import Environment, EnvironmentProblem
from testrack.envs import parse as parse_environments

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "Device",
    "Rack",
    "RackError",
    "discover_rack",
    "dump_rack",
    "load_rack",
    "local_rack",
]

RACK_FILE = "testrack.toml"
MODES = ("load", "each")
_DEVICE_FIELDS = {"name", "kind", "address", "capacity", "attrs", "env", "environment"}
_REQUIRED_FIELDS = ("name", "kind", "address")
#: the largest seed: the results store keeps it as a signed 64-bit number
MAX_SEED = 2**63 - 1

_TOP_LEVEL_KEYS = {"devices", "environments", "mode", "random", "seed", "share"}
_ATTR_VALUE_TYPES = (str, int, float, bool)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$")


class RackError(Exception):
    """A rack that cannot be used; the message says where and how to fix it."""


@dataclasses.dataclass(frozen=True)
class Device:
    """One device (or resource) of the rack, as a test sees it through the ``device`` fixture."""

    name: str
    kind: str
    address: str
    capacity: int = 1
    attrs: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)
    env: Mapping[str, str] = dataclasses.field(default_factory=dict, hash=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for ``workerinput`` and the wire."""
        return {
            "name": self.name,
            "kind": self.kind,
            "address": self.address,
            "capacity": self.capacity,
            "attrs": dict(self.attrs),
            "env": dict(self.env),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Device:
        return cls(
            name=data["name"],
            kind=data["kind"],
            address=data["address"],
            capacity=data.get("capacity", 1),
            attrs=dict(data.get("attrs", {})),
            env=dict(data.get("env", {})),
        )


@dataclasses.dataclass(frozen=True)
class Rack:
    """The devices a run may use, and where they were described."""

    devices: tuple[Device, ...]
    source: str
    mode: str | None = None
    #: ``random = true`` / ``seed = N``: run in a seeded random order (as --rack-random / --rack-seed).
    random: bool = False
    seed: int | None = None
    #: ``share = "..."``: where runs of this rack lease their devices (as --rack-share).
    share: str | None = None
    #: ``[[environments]]``: virtualenvs that are resources of their own (envs.py); each is
    #: also in ``devices``, as a device of kind ``environment``.
    environments: tuple[Environment, ...] = dataclasses.field(default=(), hash=False)

    @property
    def slots(self) -> int:
        return sum(d.capacity for d in self.devices)

    @property
    def kinds(self) -> dict[str, list[str]]:
        """Device names by kind, in rack order (for messages)."""
        out: dict[str, list[str]] = {}
        for d in self.devices:
            out.setdefault(d.kind, []).append(d.name)
        return out

    def describe_kinds(self) -> str:
        return ", ".join(f"{k} ({', '.join(names)})" for k, names in self.kinds.items())


def local_rack(spec: str) -> Rack:
    """``local:N`` or ``local:auto``: one local device with N slots, no hardware."""
    _, _, count = spec.partition(":")
    if count == "auto":
        n = os.cpu_count() or 1
    else:
        try:
            n = int(count)
        except ValueError:
            raise RackError(
                f"--rack {spec}: {count!r} is not a number of slots; "
                "use --rack local:N with N >= 1 (for example local:4) or --rack local:auto"
            ) from None
        if n < 1:
            raise RackError(
                f"--rack {spec}: needs at least 1 slot; use --rack local:N with N >= 1 "
                "or --rack local:auto for one slot per CPU"
            )
    return Rack((Device("local", "local", "localhost", capacity=n),), source=spec)


def load_rack(spec: str, base: Path) -> Rack:
    """Read the rack named by ``--rack`` (a file path, ``local:N`` or ``local:auto``)."""
    if spec.startswith("local:"):
        return local_rack(spec)
    path = Path(spec)
    if not path.is_absolute():
        path = base / path
    if path.is_dir():
        raise RackError(
            f"--rack {spec}: {path} is a directory; give a rack file such as "
            f"{path / RACK_FILE}, a devices.json, or local:N"
        )
    text = _read(path, spec)
    if path.suffix == ".json":
        return _parse_json(text, path)
    if path.name == "pyproject.toml":
        section = _pyproject_section(_parse_toml(text, path), path)
        if section is None:
            raise RackError(
                f"{path}: has no [tool.testrack] section; add [[tool.testrack.devices]] tables "
                f"or point --rack at a {RACK_FILE}"
            )
        return _parse_rack(section, path, prefix="tool.testrack.")
    return _parse_rack(_parse_toml(text, path), path, prefix="")


def discover_rack(rootdir: Path) -> Rack | None:
    """The rack a project declares for itself: ``testrack.toml``, else ``[tool.testrack]``."""
    candidate = rootdir / RACK_FILE
    if candidate.is_file():
        return _parse_rack(_parse_toml(_read(candidate, str(candidate)), candidate), candidate, "")
    pyproject = rootdir / "pyproject.toml"
    if pyproject.is_file():
        data = _parse_toml(_read(pyproject, str(pyproject)), pyproject)
        section = _pyproject_section(data, pyproject)
        if section is not None:  # a [tool.testrack] with a typo must not mean "no rack"
            return _parse_rack(section, pyproject, prefix="tool.testrack.")
    return None


def _pyproject_section(data: Mapping[str, Any], path: Path) -> dict[str, Any] | None:
    """``[tool.testrack]`` of a parsed pyproject.toml, or None; an error when it is not a table."""
    tool = data.get("tool", {})
    section = tool.get("testrack") if isinstance(tool, dict) else None
    if section is not None and not isinstance(section, dict):
        raise RackError(
            f"{path}: tool.testrack = {_toml_value(section)} is not a table; write "
            "[[tool.testrack.devices]] tables, or name a rack file with --rack FILE"
        )
    return section


def _read(path: Path, spec: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RackError(
            f"--rack {spec}: no such file {path}; create it (see `testrack sim --help` for an "
            "example rack) or use --rack local:N to run on N local slots"
        ) from None
    except UnicodeDecodeError as exc:
        raise RackError(
            f"{path}: the rack file is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
            f"offset {exc.start}); save it as UTF-8"
        ) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise RackError(f"{path}: cannot read the rack file ({reason}); check its permissions") from None


def _parse_toml(text: str, path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RackError(f"{path}: invalid TOML: {exc}; fix the syntax at that line") from None


def _parse_json(text: str, path: Path) -> Rack:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RackError(
            f"{path}:{exc.lineno}: invalid JSON ({exc.msg}); a devices.json is a list of "
            'addresses, for example ["192.168.1.10", "192.168.1.11"]'
        ) from None
    example = '["192.168.1.10", "192.168.1.11"]'
    instead = f"for names, kinds and attributes write a {RACK_FILE} instead"
    if not isinstance(data, list):
        raise RackError(
            f"{path}: a devices.json must be a list of addresses, and this one is {_json_kind(data)}; "
            f"for example {example}; {instead}"
        )
    bad = [
        f"entry #{index} ({json.dumps(entry)}) is {_json_kind(entry)}"
        for index, entry in enumerate(data, start=1)
        if not (isinstance(entry, str) and entry.strip())
    ]
    if bad:
        listed = ", ".join(bad[:3]) + (f" (and {len(bad) - 3} more)" if len(bad) > 3 else "")
        raise RackError(
            f"{path}: {listed}; each entry must be an address in quotes, for example {example}; {instead}"
        )
    if not data:
        raise _empty(path, "add at least one address to the list")
    seen: set[str] = set()
    for address in data:
        if address in seen:
            raise RackError(
                f"{path}: address {address!r} is listed twice; remove the duplicate "
                "(or give it capacity in a testrack.toml to run several tests on it at once)"
            )
        seen.add(address)
    devices = tuple(Device(name=a, kind="device", address=a) for a in data)
    return Rack(devices, source=str(path))


def _json_kind(value: object) -> str:
    """What a JSON value is, in words (for saying why it is not an address)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "an empty string" if not value.strip() else "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _empty(path: Path, fix: str) -> RackError:
    return RackError(f"{path}: the rack is empty: {fix}, or use --rack local:N")


def _parse_rack(data: Mapping[str, Any], path: Path, prefix: str) -> Rack:
    unknown = sorted(set(data) - _TOP_LEVEL_KEYS)
    if unknown:
        raise RackError(
            f"{path}: unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(prefix + k for k in unknown)}; a rack has [[{prefix}devices]] tables "
            f"and optional {prefix}mode, {prefix}random, {prefix}seed and {prefix}share"
        )
    mode = data.get("mode")
    if mode is not None and mode not in MODES:
        raise RackError(f'{path}: {prefix}mode = {_toml_value(mode)} is not a mode; use "load" or "each"')
    random = data.get("random", False)
    if not isinstance(random, bool):
        raise RackError(
            f"{path}: {prefix}random = {_toml_value(random)} is not true or false; write random = true"
        )
    seed = data.get("seed")
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED
    ):
        raise RackError(
            f"{path}: {prefix}seed = {_toml_value(seed)} is not a seed; use a whole number from 0 to "
            f"{MAX_SEED}, for example seed = 1234 (the one a random run printed)"
        )
    share = data.get("share")
    if share is not None and (not isinstance(share, str) or not share.strip()):
        raise RackError(
            f"{path}: {prefix}share = {_toml_value(share)} is not a share; write the path of an SQLite "
            'file, a postgresql:// URL, or "off", for example share = "postgresql://db.lab/racks"'
        )
    try:
        environments = parse_environments(data.get("environments"), path, prefix)
    except EnvironmentProblem as exc:
        raise RackError(str(exc)) from None
    raw = data.get("devices")
    if environments and raw is None:
        raw = []
    elif raw is None or raw == []:
        raise _empty(path, f"add a [[{prefix}devices]] table with name, kind and address")
    if not isinstance(raw, list) or not all(isinstance(d, dict) for d in raw):
        raise RackError(
            f"{path}: {prefix}devices must be an array of tables: write each device as "
            f"[[{prefix}devices]] followed by name = ..., kind = ..., address = ..."
        )
    devices: list[Device] = [
        Device(e.name, ENVIRONMENT_KIND, "", capacity=e.slots, attrs={"python": e.python or "this one"})
        for e in environments
    ]
    names: dict[str, int] = {}
    for index, entry in enumerate(raw, start=1):
        device = _parse_device(entry, index, path, prefix)
        if device.name in names:
            raise RackError(
                f"{path}: device #{index} reuses the name {device.name!r} of device "
                f"#{names[device.name]}; give every device a unique name"
            )
        names[device.name] = index
        devices.append(device)
    taken = {d.name for d in devices[: len(environments)]} & set(names)
    if taken:
        raise RackError(
            f"{path}: {', '.join(sorted(taken))} names both a device and an environment; rename one"
        )
    # A device may run its tests in one of the environments (environment = "NAME"): that
    # environment then serves the devices that name it, and has no slots of its own.
    known = [e.name for e in environments]
    used: set[str] = set()
    for device in devices[len(environments) :]:
        wanted = device.attrs.get("environment")
        if wanted is None:
            continue
        if wanted not in known:
            listed = ", ".join(known) if known else "none: add an [[environments]] table"
            raise RackError(
                f"{path}: device {device.name}: environment = {wanted!r} is not one of the rack's "
                f"[[environments]] ({listed}); fix the name or add it"
            )
        used.add(wanted)
    devices = [d for d in devices if not (d.kind == ENVIRONMENT_KIND and d.name in used)]
    return Rack(
        tuple(devices), source=str(path), mode=mode, random=random or seed is not None, seed=seed,
        share=share, environments=environments,
    )  # fmt: skip


def _parse_device(entry: Mapping[str, Any], index: int, path: Path, prefix: str) -> Device:
    label = f"device #{index}"
    if isinstance(entry.get("name"), str) and entry["name"]:
        label += f" ({entry['name']})"
    where = f"{path}: {label}"
    unknown = sorted(set(entry) - _DEVICE_FIELDS)
    if unknown:
        raise RackError(
            f"{where}: unknown field {', '.join(repr(k) for k in unknown)}; a device has "
            "name, kind, address, capacity, attrs, env and environment (put your own keys in attrs = { ... })"
        )
    for field in _REQUIRED_FIELDS:
        if field not in entry:
            raise RackError(
                f'{where}: missing field {field!r}; add {field} = "..." to [[{prefix}devices]] #{index}'
            )
        value = entry[field]
        if not isinstance(value, str) or not value.strip():
            raise RackError(f"{where}: field {field!r} must be a non-empty string, not {_toml_value(value)}")
    if not _NAME_RE.match(entry["name"]):
        raise RackError(
            f"{where}: name {entry['name']!r} may use only letters, digits and . _ : @ -; rename the device"
        )
    capacity = entry.get("capacity", 1)
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise RackError(
            f"{where}: capacity = {_toml_value(capacity)} is not a number of slots; use a whole "
            "number >= 1 (how many tests may use the device at once), or leave it out for 1"
        )
    attrs = entry.get("attrs", {})
    if not isinstance(attrs, dict):
        raise RackError(f'{where}: attrs must be a table, for example attrs = {{ revision = "C" }}')
    for key, value in attrs.items():
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, _ATTR_VALUE_TYPES) for v in values):
            raise RackError(
                f"{where}: attrs.{key} must be a string, number, boolean or a list of them, "
                f"not {_toml_value(value)}"
            )
    environment = entry.get("environment")
    if environment is not None:
        if not isinstance(environment, str) or not environment.strip():
            raise RackError(
                f"{where}: environment = {_toml_value(environment)} must name one of the rack's "
                '[[environments]], for example environment = "django5"'
            )
        if "environment" in attrs:
            raise RackError(f"{where}: environment is given twice (as a field and in attrs); keep the field")
        attrs = {**attrs, "environment": environment}
    env = entry.get("env", {})
    if not isinstance(env, dict):
        raise RackError(f'{where}: env must be a table, for example env = {{ CUDA_VISIBLE_DEVICES = "0" }}')
    for key, value in env.items():
        if not isinstance(value, str):
            raise RackError(
                f"{where}: env.{key} = {_toml_value(value)} must be a string; quote it: "
                f"{_toml_key(key)} = {json.dumps(_toml_value(value), ensure_ascii=False)}"
            )
    return Device(
        name=entry["name"],
        kind=entry["kind"],
        address=entry["address"],
        capacity=capacity,
        attrs=dict(attrs),
        env=dict(env),
    )


def dump_rack(devices: Sequence[Device], mode: str | None = None) -> str:
    """A rack file for ``devices`` (TOML), as ``testrack sim`` writes it."""
    lines = []
    if mode is not None:
        lines += [f"mode = {_toml_value(mode)}", ""]
    for d in devices:
        lines.append("[[devices]]")
        lines.append(f"name = {_toml_value(d.name)}")
        lines.append(f"kind = {_toml_value(d.kind)}")
        lines.append(f"address = {_toml_value(d.address)}")
        if d.capacity != 1:
            lines.append(f"capacity = {d.capacity}")
        if d.attrs:
            lines.append(f"attrs = {_inline_table(d.attrs)}")
        if d.env:
            lines.append(f"env = {_inline_table(d.env)}")
        lines.append("")
    return "\n".join(lines)


def _inline_table(table: Mapping[str, Any]) -> str:
    items = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items())
    return "{ " + items + " }"


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, Mapping):
        return _inline_table(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # A JSON string is a valid TOML basic string, except for the \uXXXX surrogate pairs that
    # ensure_ascii writes for characters beyond the BMP (an emoji): keep non-ASCII as it is.
    return json.dumps(str(value), ensure_ascii=False)
