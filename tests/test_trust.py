"""`testrack trust`: forget a device's pinned identity (or list the pins), as users run it."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testrack.store import Pin, RunInfo, SQLiteStore

#: 2026-11-21 02:30:00 UTC; the commands run with TZ=UTC, so this is how they print it.
PINNED = datetime.datetime(2026, 11, 21, 2, 30, tzinfo=datetime.timezone.utc).timestamp()


def run_testrack(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the testrack command as users do, in ``cwd``, with times printed in UTC."""
    return subprocess.run(
        [sys.executable, "-m", "testrack", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60, env=dict(os.environ, TZ="UTC"),
    )  # fmt: skip


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project whose store has 4 runs and pins for board-1 (no run) and board-2 (run 4)."""
    store = SQLiteStore(tmp_path / ".testrack" / "results.sqlite")
    for i in range(4):
        store.begin_run(RunInfo(f"u{i}", PINNED - 100 + i, "load", "testrack.toml", "pytest"))
    store.pin_identity("board-2", "SER-123", PINNED, 4)
    store.pin_identity("board-1", "board-1-SIM0A1B2C3D", PINNED - 3600, None)
    store.close()
    return tmp_path


def pins(project: Path) -> list[Pin]:
    store = SQLiteStore(project / ".testrack" / "results.sqlite")
    try:
        return store.identities()
    finally:
        store.close()


def test_trust_forgets_the_pin_and_says_what_it_was(project: Path) -> None:
    """trust DEVICE removes only that device's pin and names the identity, when and in which run."""
    out = run_testrack(project, "trust", "board-2")
    assert (out.returncode, out.stderr) == (0, "")
    assert out.stdout == (
        "board-2: forgot the pinned identity SER-123 (pinned 2026-11-21 02:30:00 in run 4); "
        "the next run will pin whatever it reports\n"
    )
    assert [p.device for p in pins(project)] == ["board-1"]


def test_trust_of_a_pin_from_no_run_leaves_out_the_run(project: Path) -> None:
    """A pin made outside a run is reported without a run number, not as "run None"."""
    out = run_testrack(project, "trust", "board-1")
    assert out.returncode == 0, out.stderr
    assert out.stdout == (
        "board-1: forgot the pinned identity board-1-SIM0A1B2C3D (pinned 2026-11-21 01:30:00); "
        "the next run will pin whatever it reports\n"
    )


def test_trust_of_an_unpinned_device_exits_2_and_lists_the_pinned(project: Path) -> None:
    """Naming a device with no pin is one line on stderr, exit 2, listing the devices that are pinned."""
    out = run_testrack(project, "trust", "board-9")
    assert (out.returncode, out.stdout) == (2, "")
    assert (
        out.stderr == "testrack trust: no identity is pinned for board-9; pinned devices: board-1, board-2\n"
    )
    assert len(pins(project)) == 2
    run_testrack(project, "trust", "board-1")
    run_testrack(project, "trust", "board-2")
    again = run_testrack(project, "trust", "board-2")
    assert (again.returncode, again.stderr) == (
        2,
        "testrack trust: no identity is pinned for board-2; pinned devices: none\n",
    )


def test_trust_json_gives_the_forgotten_pin(project: Path) -> None:
    """--json prints what was forgotten as data: device, identity, pinned time, run."""
    out = run_testrack(project, "trust", "board-2", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "device": "board-2",
        "forgot": {"device": "board-2", "identity": "SER-123", "pinned": PINNED, "run_id": 4},
    }
    assert [p.device for p in pins(project)] == ["board-1"]


def test_trust_list_prints_every_pin(project: Path) -> None:
    """--list shows device, identity and when (and in which run) for each pin, aligned, changing nothing."""
    out = run_testrack(project, "trust", "--list")
    assert (out.returncode, out.stderr) == (0, "")
    assert out.stdout.splitlines() == [
        "board-1  board-1-SIM0A1B2C3D  pinned 2026-11-21 01:30:00",
        "board-2  SER-123              pinned 2026-11-21 02:30:00 in run 4",
    ]
    data = json.loads(run_testrack(project, "trust", "--list", "--json").stdout)
    assert data == {
        "pins": [
            {"device": "board-1", "identity": "board-1-SIM0A1B2C3D", "pinned": PINNED - 3600, "run_id": None},
            {"device": "board-2", "identity": "SER-123", "pinned": PINNED, "run_id": 4},
        ]
    }
    assert len(pins(project)) == 2


def test_trust_list_of_an_empty_store_says_so(tmp_path: Path) -> None:
    """With nothing pinned, --list says so (exit 0) instead of printing nothing."""
    SQLiteStore(tmp_path / ".testrack" / "results.sqlite").close()
    out = run_testrack(tmp_path, "trust", "--list")
    assert (out.returncode, out.stdout) == (
        0,
        "no identity is pinned; the next run pins the identity each device reports\n",
    )


def test_trust_finds_the_store_from_a_subdirectory_or_with_store(project: Path, tmp_path_factory) -> None:
    """Like the history commands: the nearest store above the current directory, or --store PATH."""
    deep = project / "tests" / "unit"
    deep.mkdir(parents=True)
    assert run_testrack(deep, "trust", "board-1").returncode == 0
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    out = run_testrack(
        elsewhere, "trust", "board-2", "--store", str(project / ".testrack" / "results.sqlite")
    )
    assert out.returncode == 0, out.stderr
    assert pins(project) == []


def test_trust_without_a_store_says_where_it_looked(tmp_path: Path) -> None:
    """No store anywhere above: exit 2 with the history commands' message, and no store is made."""
    out = run_testrack(tmp_path, "trust", "board-1")
    assert out.returncode == 2
    assert out.stderr.startswith(f"testrack trust: no testrack results in {tmp_path} or its parents")
    missing = run_testrack(tmp_path, "trust", "board-1", "--store", "nope.sqlite")
    assert (
        missing.stderr
        == "testrack trust: --store nope.sqlite: no such file; give the path of a results.sqlite\n"
    )
    assert not (tmp_path / ".testrack").exists() and not (tmp_path / "nope.sqlite").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "one of the arguments DEVICE --list is required"),
        (["board-1", "--list"], "argument --list: not allowed with argument DEVICE"),
    ],
)
def test_trust_needs_a_device_or_list(project: Path, argv: list[str], message: str) -> None:
    """trust takes either DEVICE or --list: anything else is a one-line usage error, and no pin goes."""
    out = run_testrack(project, "trust", *argv)
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == f"testrack trust: error: {message}; see testrack trust --help\n"
    assert len(pins(project)) == 2
