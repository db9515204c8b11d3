"""Shared helpers for testrack's own tests."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import psycopg.errors  # noqa: F401  (see below)
import pytest

from testrack.rack import Device, dump_rack

# Imported once, before any in-process pytester session: such a session takes psycopg's modules
# out of sys.modules when it ends if it imported them first, and the next import makes new
# exception classes that psycopg's compiled part does not raise (its _WaitTimeout then escaped
# conn.notifies() in tests/test_share_faults.py, depending on the order of the tests).

# A real PostgreSQL server (tests/pg.py): the `postgres` and `pg_database` fixtures.
pytest_plugins = ["pg"]

# pytest-randomly (a test dependency, for tests/test_plugins.py) loads itself into every pytest
# session, the pytester sessions and subprocesses of these tests included, and would shuffle
# them; tests that want it pass ``-p randomly``, which comes later on the command line.
# pytest-rerunfailures (the same) starts a server thread in every controller and a connection in
# every worker: runs leave it out, as most users' would, unless they pass ``-p rerunfailures``
# (tests/test_plugins.py); the engine's tests cover forked and spawned workers too (start_method).
# These tests start hundreds of Python processes; where the environment forbids writing bytecode
# (PYTHONDONTWRITEBYTECODE), each of them would compile pytest's plugins from source again.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
PLUGINS_KEPT_OUT = "-p no:randomly -p no:rerunfailures"
# Runs these tests start outside pytester (the demo's, say) lease in a share of this session's
# own, never in the user's (~/.local/state/testrack/share.sqlite), which a real run may be using.
os.environ.pop("TESTRACK_SHARE", None)
os.environ["XDG_STATE_HOME"] = _STATE = tempfile.mkdtemp(prefix="testrack-tests-state-")
atexit.register(shutil.rmtree, _STATE, ignore_errors=True)
os.environ["PYTEST_ADDOPTS"] = " ".join(filter(None, [PLUGINS_KEPT_OUT, os.environ.get("PYTEST_ADDOPTS")]))


@pytest.fixture
def pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """pytest's own, with pytest-randomly kept out again (pytester clears PYTEST_ADDOPTS)."""
    monkeypatch.setenv("PYTEST_ADDOPTS", PLUGINS_KEPT_OUT)
    # Each test's runs lease their devices in a share of their own (pytester's HOME is the test's
    # directory): the outer environment's share must not leak in.
    monkeypatch.delenv("TESTRACK_SHARE", raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    return pytester


#: A verbose rack-run result line: "[board-1] [ 33%] PASSED test_x.py::test_a" (in each mode
#: the id ends in "@board-1": each run of a test on a device is a result of its own).
RESULT_LINE = re.compile(
    r"^\[(?P<device>[^\]]+)\] (?:\[\s*\d+%\] )?(?P<word>[A-Z]+) "
    r"(?P<nodeid>\S+?)(?:@(?P<on>[^\s@\]]+))?(?:\s|$)"
)


def boards(n: int, kind: str = "board", **extra: Any) -> list[Device]:
    return [Device(f"{kind}-{i + 1}", kind, f"127.0.0.{11 + i}:1", **extra) for i in range(n)]


@pytest.fixture
def write_rack(pytester: pytest.Pytester) -> Callable[..., None]:
    """Write testrack.toml into the pytester directory."""

    def write(devices: Iterable[Device], mode: str | None = None) -> None:
        pytester.path.joinpath("testrack.toml").write_text(dump_rack(list(devices), mode=mode))

    return write


def results(lines: Iterable[str]) -> list[tuple[str, str, str]]:
    """(device, WORD, nodeid) for each verbose result line of a rack run."""
    out = []
    for line in lines:
        match = RESULT_LINE.match(line)
        if match:
            # each mode: test_x@board-2, or test_x[1@board-2] for a parametrized test
            nodeid = re.sub(r"@[^\s@\]]+(\]?)$", r"\1", match["nodeid"])
            out.append((match["device"], match["word"], nodeid))
    return out


def by_device(lines: Iterable[str]) -> Mapping[str, list[str]]:
    out: dict[str, list[str]] = {}
    for device, _word, nodeid in results(lines):
        out.setdefault(device, []).append(nodeid)
    return out
