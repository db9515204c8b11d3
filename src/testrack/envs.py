"""Environments as resources: one run, one matrix, over interpreters and dependency sets.

An ``[[environments]]`` entry of the rack file is a virtualenv that testrack builds with uv and
caches under ``.testrack/envs/`` by a hash of everything that goes into it: its definition, the
project's dependency files, the interpreter, and the testrack, pytest and plugin versions the
controller runs (workers must parse the same command line, so each environment gets exactly
those). To the rest of testrack an environment is a device of kind ``environment`` whose workers
are spawned with its interpreter, so routing, each mode's matrix, the store and the report need
nothing of their own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from testrack.rack import Device  # the rack file's parser imports this module

#: The kind of the device an environment becomes (``@pytest.mark.device(kind="environment")``).
KIND = "environment"
#: The marker file of a finished build: the environment's identity, as JSON.
READY = "testrack-environment.json"
_FIELDS = {"name", "python", "dependencies", "extras", "requirements", "slots"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$")
_VERSION = re.compile(r"^\d+(\.\d+){0,2}$")
#: Files whose content changes what an environment of the project holds.
PROJECT_FILES = ("pyproject.toml", "setup.cfg", "setup.py")


class EnvironmentProblem(Exception):
    """An environment cannot be declared or built; the message names it and the fix."""


class MissingInterpreter(EnvironmentProblem):
    """The interpreter an environment asks for is not on this machine."""


@dataclasses.dataclass(frozen=True)
class Environment:
    """One ``[[environments]]`` entry."""

    name: str
    python: str = ""
    """A path, a version (``"3.12"``, found on PATH or by ``uv python find``), or "" for the
    controller's own interpreter."""
    dependencies: tuple[str, ...] = ()
    extras: tuple[str, ...] = ()
    requirements: str | None = None
    """A requirements file, relative to the rack file."""
    slots: int = 1

    def definition(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Built:
    """A ready environment: the interpreter its workers run, and what identifies it."""

    name: str
    python: str
    implementation: str
    version: str
    installed: str
    """A short hash of every package installed in it (``uv pip freeze``)."""
    path: Path
    reused: bool

    def describe(self) -> str:
        return f"{self.implementation} {self.version}, packages {self.installed}"


def in_use(built: Mapping[str, Built], devices: Iterable[Device]) -> list[Built]:
    """What ran each device's tests: an environment of its own kind by its name, and a device
    that names an environment (``environment = "..."``) under the device's name."""
    out = []
    for device in devices:
        if device.kind == KIND and device.name in built:
            out.append(built[device.name])
        elif (chosen := built.get(str(device.attrs.get("environment", "")))) is not None:
            out.append(dataclasses.replace(chosen, name=device.name))
    return out


# ---------------------------------------------------------------------- declaring


def parse(raw: object, path: Path, prefix: str) -> tuple[Environment, ...]:
    """The ``[[environments]]`` tables of a rack file, checked; errors name file, entry, field, fix."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
        raise EnvironmentProblem(
            f"{path}: {prefix}environments must be an array of tables: write each as "
            f'[[{prefix}environments]] followed by name = "...", python = "3.12", dependencies = [...]'
        )
    found: list[Environment] = []
    for index, entry in enumerate(raw, start=1):
        name = entry.get("name")
        where = f"{path}: environment #{index}" + (f" ({name})" if isinstance(name, str) and name else "")
        unknown = sorted(set(entry) - _FIELDS)
        if unknown:
            raise EnvironmentProblem(
                f"{where}: unknown field {', '.join(map(repr, unknown))}; an environment has name, python, "
                "dependencies, extras, requirements and slots"
            )
        if not isinstance(name, str) or not _NAME.match(name):
            raise EnvironmentProblem(
                f'{where}: name must be a name of letters, digits and . _ : @ -, for example name = "django4"'
            )
        python = entry.get("python", "")
        if not isinstance(python, str):
            raise EnvironmentProblem(
                f'{where}: python must be a path or a version, for example python = "3.12"'
            )
        lists = {}
        for field in ("dependencies", "extras"):
            value = entry.get(field, [])
            if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                raise EnvironmentProblem(
                    f'{where}: {field} must be a list of strings, for example {field} = ["attrs>=23,<24"]'
                )
            lists[field] = tuple(v.strip() for v in value)
        requirements = entry.get("requirements")
        if requirements is not None and (not isinstance(requirements, str) or not requirements.strip()):
            raise EnvironmentProblem(
                f'{where}: requirements must be a file name, for example "requirements-old.txt"'
            )
        if requirements is not None and not (path.parent / requirements).is_file():
            raise EnvironmentProblem(
                f"{where}: requirements file {path.parent / requirements} does not exist; "
                "give a path relative to the rack file"
            )
        slots = entry.get("slots", 1)
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise EnvironmentProblem(
                f"{where}: slots = {slots!r} is not a number of workers; use a whole number >= 1"
            )
        if any(e.name == name for e in found):
            raise EnvironmentProblem(
                f"{where}: the name {name!r} is used twice; give every environment its own"
            )
        found.append(
            Environment(name, python.strip(), lists["dependencies"], lists["extras"], requirements, slots)
        )
    return tuple(found)


# ---------------------------------------------------------------------- building


def uv_binary() -> str:
    """uv: from the ``uv`` package when installed, else on PATH."""
    try:
        import uv

        return str(uv.find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found is None:
            raise EnvironmentProblem(
                "[[environments]] are built with uv, which is not installed: pip install uv"
            ) from None
        return found


def find_interpreter(env: Environment, uv: str) -> str:
    """The interpreter's path; MissingInterpreter when this machine has none that fits."""
    spec = env.python
    if not spec:
        return sys.executable
    if os.sep in spec or spec.startswith("."):
        if not Path(spec).exists():
            raise MissingInterpreter(f"environment {env.name}: python = {spec!r}: no such file")
        return spec
    if not _VERSION.match(spec):
        found = shutil.which(spec)  # "pypy3", "python3.12"
        if found is None:
            raise MissingInterpreter(f"environment {env.name}: python = {spec!r} is not on PATH")
        return found
    for name in (f"python{spec}",):
        found = shutil.which(name)
        if found is not None:
            return found
    proc = subprocess.run(
        [uv, "python", "find", "--no-python-downloads", spec], capture_output=True, text=True, check=False
    )
    if proc.returncode == 0 and proc.stdout.strip():
        return proc.stdout.strip().splitlines()[-1]
    raise MissingInterpreter(
        f"environment {env.name}: no Python {spec} on this machine (neither python{spec} on PATH nor "
        f"`uv python find {spec}`); install it (`uv python install {spec}`)"
    )


def describe_interpreter(python: str) -> dict[str, Any]:
    code = (
        "import json, platform, sys; print(json.dumps({'implementation': platform.python_implementation(), "
        "'version': platform.python_version(), 'info': list(sys.version_info[:3])}))"
    )
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise EnvironmentProblem(f"{python} does not run: {proc.stderr.strip()[-300:]}")
    return dict(json.loads(proc.stdout))


def refuse_too_old(env: Environment, python: str, found: Mapping[str, Any]) -> None:
    """An interpreter pytest or testrack cannot run on is refused before any test, with the
    versions they need."""
    from packaging.specifiers import SpecifierSet

    version = ".".join(map(str, found["info"]))
    needs = []
    for dist in ("testrack", "pytest"):
        try:
            wanted = metadata.metadata(dist)["Requires-Python"] or ""
        except metadata.PackageNotFoundError:
            continue
        if wanted and version not in SpecifierSet(wanted):
            needs.append(f"{dist} {metadata.version(dist)} needs Python {wanted}")
    if needs:
        raise EnvironmentProblem(
            f"environment {env.name}: {python} is {found['implementation']} {found['version']}, too old: "
            f"{'; '.join(needs)}. Point python at a newer interpreter, or leave this environment out"
        )


def controller_packages(plugin_dists: Iterable[tuple[str, str]]) -> list[str]:
    """What every environment gets so that its workers run what the controller runs: testrack
    from the same installation (its source when installed editable or from a directory), the
    same pytest, and the same versions of the plugins the controller loaded."""
    wanted: list[str] = []
    dist = metadata.distribution("testrack")
    direct = dist.read_text("direct_url.json")
    source = None
    if direct:
        info = json.loads(direct)
        url = str(info.get("url", ""))
        if url.startswith("file://") and "dir_info" in info:
            source = url[len("file://") :]
    wanted.append(f"-e{source}" if source else f"testrack=={dist.version}")
    wanted.append(f"pytest=={metadata.version('pytest')}")
    for name, version in sorted(set(plugin_dists)):
        if name.lower().replace("_", "-") not in ("testrack", "pytest"):
            wanted.append(f"{name}=={version}")
    return wanted


def cache_key(
    env: Environment, python: str, interpreter: Mapping[str, Any], root: Path, packages: Sequence[str]
) -> str:
    project = {name: (root / name).read_text() for name in PROJECT_FILES if (root / name).is_file()}
    payload = {
        "definition": env.definition(),
        "python": str(Path(python).resolve()),
        "interpreter": interpreter["version"],
        "project": project,
        "packages": list(packages),
    }
    if env.requirements:
        payload["requirements"] = (
            (root / env.requirements).read_text() if (root / env.requirements).is_file() else ""
        )
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def build(
    env: Environment,
    root: Path,
    rack_dir: Path,
    cache: Path,
    plugin_dists: Iterable[tuple[str, str]],
    say: Any = None,
) -> Built:
    """The environment, built with uv unless a build with the same key is cached."""
    uv = uv_binary()
    python = find_interpreter(env, uv)
    interpreter = describe_interpreter(python)
    refuse_too_old(env, python, interpreter)
    packages = controller_packages(plugin_dists)
    key = cache_key(env, python, interpreter, root, packages)
    target = cache / f"{env.name}-{key}"
    ready = target / READY
    if ready.is_file():
        data = json.loads(ready.read_text())
        return Built(env.name, str(target / "bin" / "python"), data["implementation"], data["version"],
                     data["installed"], target, True)  # fmt: skip
    if say is not None:
        say(
            f"testrack: building environment {env.name} "
            f"({interpreter['implementation']} {interpreter['version']}) in {target}"
        )
    if target.exists():
        shutil.rmtree(target)  # an unfinished build
    cache.mkdir(parents=True, exist_ok=True)
    _uv(env, [uv, "venv", "--quiet", "--python", python, str(target)], "create the virtualenv")
    venv_python = str(target / "bin" / "python")
    install = [uv, "pip", "install", "--quiet", "--python", venv_python, *packages]
    if any((root / name).is_file() for name in ("pyproject.toml", "setup.py")):
        extras = f"[{','.join(env.extras)}]" if env.extras else ""
        install.append(f"-e{root}{extras}")
    install += list(env.dependencies)
    if env.requirements:
        install += ["-r", str(rack_dir / env.requirements)]
    _uv(env, install, "install its packages", pinned=packages, interpreter=interpreter)
    freeze = _uv(env, [uv, "pip", "freeze", "--python", venv_python], "list its packages")
    installed = hashlib.sha256(freeze.encode()).hexdigest()[:12]
    ready.write_text(json.dumps({**interpreter, "installed": installed, "freeze": freeze.splitlines()}))
    return Built(
        env.name, venv_python, interpreter["implementation"], interpreter["version"], installed, target, False
    )


def _uv(
    env: Environment,
    command: list[str],
    what: str,
    pinned: Sequence[str] = (),
    interpreter: Mapping[str, str] | None = None,
) -> str:
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        text = "\n".join(line for line in proc.stderr.strip().splitlines() if line.strip())
        # A pin of the controller's own (pytest and the plugins it loaded) that this interpreter
        # cannot have is not the rack file's fault: say which, and what to do instead.
        ours = [p for p in pinned if "==" in p and re.search(rf"\b{re.escape(p)}\b", text)]
        python = f" {interpreter['implementation']} {interpreter['version']}" if interpreter else ""
        fix = (
            f"{ours[0]} is installed where testrack runs (workers get the same pytest and plugins), "
            f"and it does not install on this{python}: install a version of it that supports every "
            "environment's interpreter, or remove it from where testrack runs"
            if ours
            else "fix the environment's packages in the rack file"
        )
        raise EnvironmentProblem(
            f"environment {env.name}: uv could not {what}:\n{text[-2000:]}\n"
            f"({fix}; the command was: {' '.join(command[1:])})"
        )
    return proc.stdout


def is_ci(environ: Mapping[str, str]) -> bool:
    """``CI`` set to anything but empty, 0 or false counts as CI."""
    return environ.get("CI", "").strip().lower() not in ("", "0", "false")


# ---------------------------------------------------------------------- in a run


def addoption(group: Any) -> None:
    group.addoption(
        "--rack-envs-missing",
        choices=("warn", "fail"),
        default=None,
        help="an environment whose interpreter is not on this machine: warn and leave it out, or "
        "fail the run (default: fail when CI is set, warn otherwise).",
    )
    group.addoption(
        "--rack-envs-dir",
        metavar="DIR",
        default=None,
        help="where [[environments]] are built and cached (default <rootdir>/.testrack/envs).",
    )


#: The header line that says which environments were built or found cached, and how long it took.
header_key: pytest.StashKey[str] = pytest.StashKey()
#: The run's built environments, by name (set by the plugin, read by the controller).
environments_key: pytest.StashKey[dict[str, Built]] = pytest.StashKey()


@dataclasses.dataclass
class Prepared:
    """The environments of a run: built ones, and what to say about the others."""

    built: dict[str, Built]
    left_out: dict[str, str]
    notes: list[str]


def prepare(
    environments: Sequence[Environment],
    root: Path,
    rack_dir: Path,
    cache: Path,
    plugin_dists: Iterable[tuple[str, str]],
    missing: str | None,
    environ: Mapping[str, str],
    say: Any,
) -> Prepared:
    """Build (or find cached) every environment. A missing interpreter is left out with a note,
    or fails the run under CI / ``--rack-envs-missing=fail``; any other problem fails the run."""
    fail_missing = missing == "fail" or (missing is None and is_ci(environ))
    done = Prepared({}, {}, [])
    for env in environments:
        try:
            done.built[env.name] = build(env, root, rack_dir, cache, plugin_dists, say)
        except MissingInterpreter as exc:
            if fail_missing:
                why = "--rack-envs-missing=fail" if missing == "fail" else "CI is set"
                raise EnvironmentProblem(
                    f"{exc} ({why}: a missing interpreter fails the run; "
                    "--rack-envs-missing=warn leaves it out)"
                ) from None
            done.left_out[env.name] = str(exc)
            done.notes.append(
                f"{exc}: its tests were not run "
                "(under CI, or with --rack-envs-missing=fail, this fails the run)"
            )
    return done
