"""Runs that share a rack, as users start them: real pytest processes leasing their devices
through the embedded SQLite share and a real PostgreSQL one. Who drove a device when is read
from the devices' own logs, written by the tests."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import boards

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("write_rack")]

#: Each test writes when it starts and stops driving its device, in the device's own log.
LOGGED = """
    import os, time

    def _drive(device, seconds):
        log = os.path.join(os.environ["DEVICE_LOGS"], device.name)
        with open(log, "a") as f:
            f.write(f"start {os.getpid()} {time.time()}\\n")
        time.sleep(seconds)
        with open(log, "a") as f:
            f.write(f"stop {os.getpid()} {time.time()}\\n")

    def test_long(device):
        _drive(device, 1.0)

    def test_short(device):
        _drive(device, 0.3)
"""


def _start(project: Path, logs: Path, *args: str, share: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "DEVICE_LOGS": str(logs),
        "TESTRACK_SHARE": share,
        "PYTEST_ADDOPTS": "-p no:randomly",
    }
    env.pop("XDG_STATE_HOME", None)
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rack-store", "memory", *args],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _reserve(project: Path, share: str, device: str, *args: str) -> None:
    """A person at the bench reserves ``device`` (after a run made the rack's devices known)."""
    _start(project, project, "-k", "no_such_test", share=share).communicate(timeout=120)
    env = {**os.environ, "USER": "alice", "LOGNAME": "alice"}
    reserve = subprocess.run(
        [sys.executable, "-m", "testrack", "reserve", device, "--share", share, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert reserve.returncode == 0, reserve.stderr


def _intervals(log: Path) -> list[tuple[float, float]]:
    """(start, stop) of every test that drove the device, in time order."""
    starts: dict[str, float] = {}
    spans = []
    for line in log.read_text().splitlines():
        word, pid, at = line.split()
        if word == "start":
            assert pid not in starts, f"{log.name}: pid {pid} started twice without stopping"
            starts[pid] = float(at)
        else:
            spans.append((starts.pop(pid), float(at)))
    assert not starts, f"{log.name}: a test never stopped: {starts}"
    return sorted(spans)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_runs_on_one_rack_never_drive_a_device_at_once(
    pytester: pytest.Pytester, write_rack, tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """Two runs of one each-mode suite start together on the same two boards: both pass with
    every result, the second says whom it waits for, and no device log shows two tests at once."""
    share = str(tmp_path / "share.sqlite") if backend == "sqlite" else request.getfixturevalue("pg_database")
    write_rack(boards(2), mode="each")
    pytester.makepyfile(test_logged=LOGGED)
    logs = tmp_path / "logs"
    logs.mkdir()
    first = _start(pytester.path, logs, share=share)
    time.sleep(0.3)
    second = _start(pytester.path, logs, share=share)
    outputs = [p.communicate(timeout=120)[0] for p in (first, second)]
    for proc, out in zip((first, second), outputs, strict=True):
        assert proc.returncode == 0, out
        assert "4 passed" in out, out
    assert any("waiting for board-" in out and "held by run" in out for out in outputs), outputs
    for name in ("board-1", "board-2"):
        spans = _intervals(logs / name)
        assert len(spans) == 4  # 2 tests x 2 runs
        for (_, stop), (start, _) in itertools.pairwise(spans):
            assert start >= stop, f"{name} was driven by two tests at once: {spans}"


def test_a_reserved_device_with_rack_wait_fails_its_runs_naming_the_holder(
    pytester: pytest.Pytester, write_rack, tmp_path: Path
) -> None:
    """A person reserved board-2: an each-mode run with --rack-wait 1 runs everything on board-1,
    reports board-2's runs as errors naming the reservation, and fails."""
    share = str(tmp_path / "share.sqlite")
    write_rack(boards(2), mode="each")
    pytester.makepyfile(test_logged=LOGGED)
    logs = tmp_path / "logs"
    logs.mkdir()
    _reserve(pytester.path, share, "board-2", "--for", "5m")
    run = _start(pytester.path, logs, "--rack-wait", "1", share=share)
    out = run.communicate(timeout=120)[0]
    assert run.returncode == 1, out
    assert "2 passed, 2 errors" in out, out
    assert "gw1 (board-2) was not leased: " in out and "alice" in out, out
    assert not (logs / "board-2").exists()  # nothing touched the reserved device
    assert len(_intervals(logs / "board-1")) == 2


def test_load_mode_goes_on_without_a_device_another_run_holds(
    pytester: pytest.Pytester, write_rack, tmp_path: Path
) -> None:
    """Load mode, board-2 reserved, no --rack-wait: the run does all its work on board-1 and
    ends; it does not wait for a device it no longer needs."""
    share = str(tmp_path / "share.sqlite")
    write_rack(boards(2))
    pytester.makepyfile(test_logged=LOGGED)
    logs = tmp_path / "logs"
    logs.mkdir()
    _reserve(pytester.path, share, "board-2")
    run = _start(pytester.path, logs, share=share)
    out = run.communicate(timeout=120)[0]
    assert run.returncode == 0, out
    assert "2 passed" in out
    assert not (logs / "board-2").exists()


def test_an_unusable_share_is_a_usage_error_naming_it_and_local_slots_need_none(
    pytester: pytest.Pytester, write_rack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A share whose directory cannot be made: the run stops before any test, naming the share,
    where the setting came from and --rack-share off; local:N runs need no share at all."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    share = str(blocker / "share.sqlite")
    write_rack(boards(1))
    pytester.makepyfile(test_ok="def test_a(device):\n    pass\n")
    monkeypatch.setenv("TESTRACK_SHARE", share)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    text = result.stderr.str()
    assert share in text and "TESTRACK_SHARE" in text and "--rack-share off" in text, text
    assert "Traceback" not in text
    local = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--rack", "local:2")
    local.assert_outcomes(passed=1)
    off = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--rack-share", "off")
    off.assert_outcomes(passed=1)


CHECKED = """
    import os

    def testrack_device_check(device):
        if device.name == "board-2" and os.path.exists(os.path.join(os.path.dirname(__file__), "broken")):
            raise RuntimeError("fan failure reported by the board")
"""


def _quarantine(project: Path, share: str, device: str) -> object:
    """The share's quarantine of ``device``, as ``testrack status --json`` shows it."""
    import json

    status = subprocess.run(
        [sys.executable, "-m", "testrack", "status", "--share", share, "--json"],
        cwd=project, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    return next(d["quarantine"] for d in json.loads(status.stdout)["devices"] if d["name"] == device)


def test_a_quarantine_is_the_shares_until_the_device_passes_its_check(
    pytester: pytest.Pytester, write_rack, tmp_path: Path
) -> None:
    """A device that fails its check is quarantined for every run of the share: a later run with
    no check keeps it out, naming who quarantined it; a run whose check passes lifts it."""
    share = str(tmp_path / "share.sqlite")
    write_rack(boards(2))
    pytester.makepyfile(test_logged=LOGGED)
    logs = tmp_path / "logs"
    logs.mkdir()
    pytester.makeconftest(CHECKED)
    pytester.path.joinpath("broken").write_text("")
    first = _start(pytester.path, logs, "-v", share=share)
    out = first.communicate(timeout=120)[0]
    assert first.returncode == 0 and "2 passed" in out, out
    quarantine = _quarantine(pytester.path, share, "board-2")
    assert isinstance(quarantine, dict) and "fan failure" in quarantine["reason"], quarantine
    assert _quarantine(pytester.path, share, "board-1") is None
    # no check in this run: board-2 stays out, and the run says why
    pytester.path.joinpath("conftest.py").unlink()
    (logs / "board-2").unlink(missing_ok=True)
    second = _start(pytester.path, logs, "-v", share=share)
    out = second.communicate(timeout=120)[0]
    assert second.returncode == 0 and "2 passed" in out, out
    assert "board-2" in out and "quarantined in the share by run" in out and "fan failure" in out, out
    assert not (logs / "board-2").exists(), "a device quarantined in the share ran a test"
    # the check passes again: the quarantine is lifted, and board-2 works
    pytester.makeconftest(CHECKED)
    pytester.path.joinpath("broken").unlink()
    third = _start(pytester.path, logs, "-v", share=share)
    out = third.communicate(timeout=120)[0]
    assert third.returncode == 0, out
    assert "board-2 passed its check: its quarantine in the share is lifted" in out, out
    assert _quarantine(pytester.path, share, "board-2") is None


TAKING_TURNS = """
    import os, time
    import pytest

    @pytest.mark.parametrize("n", range(20))
    def test_turn(device, n):
        log = os.path.join(os.environ["DEVICE_LOGS"], device.name)
        with open(log, "a") as f:
            f.write(f"{os.environ['RUN_NAME']} {time.time()}\\n")
        time.sleep(0.3)
"""


def test_two_equal_runs_on_one_device_take_turns_and_finish_together(
    pytester: pytest.Pytester, write_rack, tmp_path: Path
) -> None:
    """Two equal runs want one board: the first gives it back between tests once it has had its
    quantum and the second waits, and so on, so they finish together rather than one after the
    other (each alone: ~6 s of device time)."""
    share = str(tmp_path / "share.sqlite")
    write_rack(boards(1))
    pytester.makepyfile(test_turns=TAKING_TURNS)
    logs = tmp_path / "logs"
    logs.mkdir()
    started = time.monotonic()
    runs = []
    for name in ("first", "second"):
        os.environ["RUN_NAME"] = name
        try:
            runs.append(_start(pytester.path, logs, share=share))
        finally:
            del os.environ["RUN_NAME"]
        time.sleep(0.5)
    ends: dict[int, float] = {}
    while len(ends) < len(runs):
        assert time.monotonic() - started < 180, "the runs did not end"
        for k, run in enumerate(runs):
            if k not in ends and run.poll() is not None:
                ends[k] = time.monotonic() - started
        time.sleep(0.05)
    outputs = [run.communicate(timeout=60)[0] for run in runs]
    for run, out in zip(runs, outputs, strict=True):
        assert run.returncode == 0 and "20 passed" in out, out
    # When each run's last test started on the board (not when its process ended, which a
    # loaded machine delays by more than a test): alone, ~50 % apart.
    entries = [line.split() for line in (logs / "board-1").read_text().splitlines()]
    t0 = float(entries[0][1])
    first, second = (max(float(t) for run, t in entries if run == name) - t0 for name in ("first", "second"))
    assert abs(first - second) <= 0.25 * max(first, second), (first, second, ends)
    order = [run for run, _ in entries]
    last_first = len(order) - 1 - order[::-1].index("first")
    assert order.index("second") < last_first, f"the second run waited for the whole first: {order}"
    assert "board-1 was given back" in outputs[0] and "(fair share)" in outputs[0], outputs[0]
    switches = sum(1 for a, b in itertools.pairwise(order) if a != b)
    assert 1 <= switches <= 8, order  # turns in quanta, not test by test


HOLDS_BOARD_1 = """
    import os, time, pytest

    @pytest.mark.device(name="board-1")
    def test_hold(device):
        open(os.path.join(os.environ["DEVICE_LOGS"], "holding"), "w").close()
        time.sleep(60)
"""

BOARD_1_STARTS_LAST = """
    import time

    def pytest_sessionstart(session):
        workerinput = getattr(session.config, "workerinput", None)
        if workerinput and workerinput["device"]["name"] == "board-1":
            time.sleep(2)  # the others end before its test is handed out (as on a busy machine)
"""

PAIR = """
    import pytest

    def test_one(device):
        pass

    @pytest.mark.devices(2, kind="board")
    def test_pair(devices):
        assert len({d.name for d in devices}) == 2

    def test_two(device):
        pass
"""


def test_a_run_gives_back_what_it_has_no_work_for_and_a_pair_takes_the_free_boards(
    pytester: pytest.Pytester, write_rack, tmp_path: Path
) -> None:
    """Run A has one long test, on board-1. It used to keep board-2 and board-3 leased until it
    ended, so run B's tests (one on two boards) waited for all of run A; and B's pair chose
    board-1, which A holds, while two boards stood free. Now A's idle slots are released at
    once (also when their workers end before A's test is handed out:
    CI caught that), B runs everything on board-2 and board-3 meanwhile, and ends without a
    thread error."""
    share = str(tmp_path / "share.sqlite")
    write_rack(boards(3))
    holder_project = tmp_path / "a"
    holder_project.mkdir()
    (holder_project / "testrack.toml").write_text((pytester.path / "testrack.toml").read_text())
    (holder_project / "test_hold.py").write_text(textwrap.dedent(HOLDS_BOARD_1))
    (holder_project / "conftest.py").write_text(textwrap.dedent(BOARD_1_STARTS_LAST))
    pytester.makepyfile(test_pair=PAIR)
    logs = tmp_path / "logs"
    logs.mkdir()
    holder = _start(holder_project, logs, share=share)
    try:
        deadline = time.monotonic() + 60
        while not (logs / "holding").exists():
            assert time.monotonic() < deadline and holder.poll() is None, "run A never started its test"
            time.sleep(0.1)
        started = time.monotonic()
        second = _start(pytester.path, logs, "-v", share=share)
        out = second.communicate(timeout=120)[0]
        took = time.monotonic() - started
    finally:
        holder.kill()
        holder.communicate()
    assert second.returncode == 0, out
    assert "3 passed" in out, out
    assert "[board-2+board-3] " in out or "[board-3+board-2] " in out, out
    assert took < 30, f"run B waited for run A ({took:.1f} s):\n{out}"
    assert "Exception in thread" not in out, out
