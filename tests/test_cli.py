"""The testrack command line: `testrack sim`, `testrack demo` and their error messages."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import testrack.sim
from testrack import demo
from testrack.cli import main
from testrack.demo import CaseResult, DemoOptions, JunitSummary, ModeRun, parse_junit, run_demo
from testrack.rack import load_rack
from testrack.sim import SimClient

SRC = Path(testrack.sim.__file__).resolve().parents[1]


def _env(*paths: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (*paths, SRC))
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return env


# -- testrack sim ----------------------------------------------------------------------------


@pytest.mark.parametrize(("stop_signal", "edited"), [(signal.SIGINT, False), (signal.SIGTERM, True)])
def test_sim_serves_until_signalled(tmp_path: Path, stop_signal: signal.Signals, edited: bool) -> None:
    """`testrack sim` writes a usable rack file, serves its devices, stops cleanly on a signal."""
    rack_file = tmp_path / "rack.toml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "testrack", "sim", "--devices", "2", "--kind", "dut",
         "--rack-file", str(rack_file), "--mode", "load"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=tmp_path,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, f"sim exited early: {proc.wait()} {proc.stderr.read() if proc.stderr else ''}"
            lines.append(line.rstrip("\n"))
            if line.startswith("stop:"):
                break
        rack = load_rack(str(rack_file), tmp_path)
        assert rack.mode == "load"
        assert [d.name for d in rack.devices] == ["dut-1", "dut-2"]
        for d, line in zip(rack.devices, lines, strict=False):
            assert line == f"{d.name}  {d.address}  serial {d.attrs['serial']}"
        assert lines[2:] == [
            f"rack file: {rack_file} (mode load)",
            f"run: pytest --rack {rack_file}",
            "stop: Ctrl+C (removes the rack file)",
        ]
        with SimClient(rack.devices[1].address) as client:
            assert client.identify()["name"] == "dut-2"
            assert client.work(10)["ok"] is True
        if edited:
            with rack_file.open("a") as f:
                f.write("# my note\n")
        proc.send_signal(stop_signal)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert err == ""
    if edited:  # the user's changes are kept
        assert out == f"stopped; kept {rack_file} because it changed while sim ran\n"
        assert rack_file.read_text().endswith("# my note\n")
    else:  # the file described a rack that is gone
        assert out == f"stopped; removed {rack_file}\n"
        assert not rack_file.exists()


def test_sim_refuses_to_overwrite_a_rack_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An existing rack file (maybe the real one) is left alone unless --force is given."""
    rack_file = tmp_path / "testrack.toml"
    rack_file.write_text("# my real lab\n")
    assert main(["sim", "--rack-file", str(rack_file)]) == 2
    assert capsys.readouterr().err == (
        f"testrack sim: {rack_file} already exists; pass --force to overwrite it, "
        "or --rack-file PATH to write the rack somewhere else\n"
    )
    assert rack_file.read_text() == "# my real lab\n"


def test_sim_reports_a_port_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A taken --port gives one line naming the port and the fix, exit 2, and no rack file."""
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.11", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        code = main(["sim", "--port", str(port), "--rack-file", str(tmp_path / "r.toml")])
    assert code == 2
    captured = capsys.readouterr()
    assert captured.err == (
        f"testrack sim: port {port} is already in use on 127.0.0.11; choose another with --port P, "
        "or leave out --port to let the system pick a free one\n"
    )
    assert captured.out == ""
    assert not (tmp_path / "r.toml").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["sim", "--devices", "many"],
            "testrack sim: error: argument --devices: 'many' is not a number of devices; give a "
            "whole number from 1 to 244, for example --devices 3; see testrack sim --help\n",
        ),
        (
            ["sim", "--devices", "0"],
            "testrack sim: error: argument --devices: '0' is not a number of devices; give a "
            "whole number from 1 to 244, for example --devices 3; see testrack sim --help\n",
        ),
        (
            ["sim", "--port", "99999"],
            "testrack sim: error: argument --port: '99999' is not a TCP port; give 1..65535 (below "
            "1024 only as root), or 0 to let the system pick a free one; see testrack sim --help\n",
        ),
        (
            ["--json", "sim"],
            "testrack: error: --json goes with last, failing, slowest, history, trust, bisect, flaky, "
            "status, reserve and release, not with sim; see testrack --help\n",
        ),
        (
            ["--store", "x.sqlite", "demo"],
            "testrack: error: --store goes with last, failing, slowest, history, trust, bisect, flaky and "
            "report, not with demo; see testrack --help\n",
        ),
        (
            ["sim", "--kind", "my board"],
            "testrack sim: kind 'my board' may use only letters, digits and . _ - (and start with "
            "a letter or digit), because it becomes part of the device names\n",
        ),
        (
            ["demo", "--seconds", "-1"],
            "testrack demo: error: argument --seconds: '-1' is not a duration; give seconds above "
            "0, for example --seconds 0.5; see testrack demo --help\n",
        ),
    ],
)
def test_usage_errors_are_one_line_with_the_fix(
    argv: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bad arguments give exit code 2 and exactly one line on stderr, never a traceback."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == message
    assert captured.out == ""


def test_sim_port_below_1024_is_accepted_and_refused_only_by_the_system(tmp_path: Path) -> None:
    """--port 80 is in the range the message gives; without the right to bind it, the system's
    refusal is explained (as root, the capability to bind low ports is dropped for the test)."""
    if int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text()) <= 80:
        pytest.skip("this system lets anyone bind port 80")
    prefix: list[str] = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("root without setpriv: cannot take away the right to bind port 80")
        prefix = ["setpriv", "--bounding-set=-net_bind_service", "--inh-caps=-net_bind_service"]
    out = subprocess.run(
        [*prefix, sys.executable, "-m", "testrack", "sim", "--port", "80", "--rack-file", "r.toml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == (
        "testrack sim: permission denied for port 80: ports below 1024 need root (or the "
        "CAP_NET_BIND_SERVICE capability); use --port with a port above 1023, or leave out --port to "
        "let the system pick a free one\n"
    )
    assert not (tmp_path / "r.toml").exists()


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown subcommand is one usage line naming it and pointing to --help."""
    assert main(["launch"]) == 2
    err = capsys.readouterr().err
    # argparse words the list of choices differently across Python versions
    assert err.startswith("testrack: error: argument COMMAND: invalid choice: 'launch' (choose from ")
    assert err.endswith("; see testrack --help\n") and err.count("\n") == 1


def test_sim_help_shows_a_valid_example_rack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`testrack sim --help` (which rack errors point to) shows an example rack that loads."""
    assert main(["sim", "--help"]) == 0
    help_text = capsys.readouterr().out
    example = help_text.split("for example:\n\n", 1)[1].split("\n\nTests get", 1)[0]
    (tmp_path / "example.toml").write_text(textwrap.dedent(example))
    rack = load_rack("example.toml", tmp_path)
    assert [(d.name, d.address, d.attrs["revision"]) for d in rack.devices] == [
        ("board-1", "127.0.0.11:47000", "C")
    ]


def test_no_command_shows_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    """`testrack` alone lists the commands on stderr and exits 2."""
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "sim" in err and "demo" in err and err.startswith("usage: testrack")


# -- testrack demo: report parsing and printing ----------------------------------------------

JUNIT = textwrap.dedent(
    """\
    <?xml version="1.0" encoding="utf-8"?>
    <testsuites name="pytest tests">
    <testsuite name="pytest" errors="0" failures="1" skipped="1" tests="4" time="2.5">
    <testcase classname="test_demo" name="test_device1" time="1.25">
      <properties>
        <property name="other" value="x"/><property name="device" value="board-2"/>
      </properties>
    </testcase>
    <testcase classname="test_demo" name="test_device2" time="0.5">
      <properties><property name="device" value="board-1"/></properties>
      <failure message="assert 0">boom</failure>
    </testcase>
    <testcase classname="test_demo" name="test_device3" time="0.25">
      <properties><property name="device" value="board-2"/></properties>
      <skipped message="no"/>
    </testcase>
    <testcase classname="" name="test_orphan" time="0.125"/>
    </testsuite></testsuites>
    """
)


def test_parse_junit_reads_outcomes_times_and_devices(tmp_path: Path) -> None:
    """Results per device come from each testcase's "device" property; times add up to serial."""
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT)
    report = parse_junit(path)
    assert report.cases == (
        CaseResult("test_demo::test_device1", "passed", 1.25, "board-2"),
        CaseResult("test_demo::test_device2", "failed", 0.5, "board-1"),
        CaseResult("test_demo::test_device3", "skipped", 0.25, "board-2"),
        CaseResult("test_orphan", "passed", 0.125, None),
    )
    assert report.serial_s == 2.125
    assert list(report.per_device.items()) == [("board-1", 1), ("board-2", 2), ("(no device)", 1)]
    assert report.outcomes == {"passed": 2, "failed": 1, "skipped": 1}


def test_parse_junit_reports_a_broken_file(tmp_path: Path) -> None:
    """A truncated report is a DemoError naming the file, not an XML traceback."""
    path = tmp_path / "junit.xml"
    path.write_text("<testsuites><testcase")
    with pytest.raises(demo.DemoError, match=r"cannot read the JUnit report .*junit.xml"):
        parse_junit(path)


def _report(*devices: str, seconds: float = 2.0) -> JunitSummary:
    return JunitSummary(tuple(CaseResult(f"t::{i}", "passed", seconds, d) for i, d in enumerate(devices)))


def test_format_mode_prints_results_devices_and_speedup() -> None:
    """The per-mode summary shows results, per-device counts, wall, serial time and speed-up."""
    run = ModeRun("each", 0, 6.5, 6.0, _report("board-1", "board-2", "board-1", "board-2"))
    assert demo.format_mode(run) == [
        "each: 4 results (4 passed) in 6.50 s wall (ideal 6.00 s)",
        "  per device: board-1 2, board-2 2",
        "  serial time 8.00 s (sum of test times), speed-up 1.23x",
    ]


def test_format_mode_explains_a_missing_plugin() -> None:
    """pytest's usage error (exit 4, e.g. --rack unknown) points to installing testrack's plugin."""
    assert demo.format_mode(ModeRun("load", 4, 0.3, 2.0, None)) == [
        "load: no JUnit report: pytest exited with code 4 before writing one",
        "  pytest refused the command line: is testrack's pytest plugin installed in this Python? "
        "(python -m pip install testrack, then run testrack demo again)",
    ]


def test_format_table_lines_up_both_modes() -> None:
    """The closing table compares the modes column by column."""
    runs = [
        ModeRun("each", 0, 6.52, 6.0, _report(*["b-1", "b-2", "b-3"] * 3)),
        ModeRun("load", 1, 2.5, 2.0, None),
    ]
    assert demo.format_table(runs) == [
        "mode  results  wall s  ideal s  serial s  speed-up  outcome",
        "each        9    6.52     6.00     18.00     2.76x   passed",
        "load        -    2.50     2.00         -         -   exit 1",
    ]


def test_ideal_wall_time() -> None:
    """each: every device runs all 3 tests; load: the busiest device runs ceil(3/N)."""
    assert demo.ideal_wall_s("each", 3, 2.0) == 6.0
    assert demo.ideal_wall_s("load", 3, 2.0) == 2.0
    assert demo.ideal_wall_s("load", 2, 2.0) == 4.0
    assert demo.ideal_wall_s("load", 5, 0.5) == 0.5


def test_pytest_command() -> None:
    """Each mode runs pytest as documented: no cache, quiet, rack file, mode, no share (the
    devices are the demo's own), a JUnit report."""
    assert demo.pytest_command("load", "junit-load.xml", ("-p", "x")) == [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-p", "x",
        "--rack", "testrack.toml", "--rack-mode=load", "--rack-share", "off", "--junitxml=junit-load.xml",
    ]  # fmt: skip


def test_interrupted_demo_stops_its_pytest_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """Interrupted (Ctrl+C, or SIGTERM via the CLI), the demo passes SIGINT on to pytest, waits."""
    ready, stopped = tmp_path / "ready", tmp_path / "stopped"
    child = tmp_path / "child.py"
    child.write_text(
        "import pathlib, signal, sys, time\n"
        "def stop(*_):\n"
        f"    pathlib.Path({str(stopped)!r}).touch()\n"
        "    sys.exit(3)\n"
        "signal.signal(signal.SIGINT, stop)\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(10)\n"
    )
    monkeypatch.setattr(demo, "SELF_STOP_S", 0.05)
    # A shell's background job starts with SIGINT ignored; this test needs Python's default.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))

    def interrupt_us_once_the_child_listens() -> None:
        deadline = time.monotonic() + 5
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)  # a Ctrl+C that reaches this process only

    started = time.monotonic()
    threading.Thread(target=interrupt_us_once_the_child_listens, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        demo.run_child([sys.executable, str(child)], tmp_path, dict(os.environ))
    assert stopped.exists()
    assert time.monotonic() - started < 5


def test_demo_suite_is_shipped_with_the_advertised_tests() -> None:
    """The bundled suite has its files and exactly DEMO_TESTS tests, as the printout assumes."""
    for name in demo.SUITE_FILES:
        assert (demo.SUITE_DIR / name).is_file()
    source = (demo.SUITE_DIR / "test_demo.py").read_text()
    assert source.count("\ndef test_") == demo.DEMO_TESTS


# -- testrack demo end to end, with a stand-in for the engine --------------------------------

# Until the engine exists, this plugin plays its part: --rack/--rack-mode/--rack-share, a `device` fixture,
# and the junit "device" property. It runs serially, so only the plumbing is checked here.
FAKE_ENGINE = """
import dataclasses, os
from pathlib import Path
import pytest
from testrack.rack import load_rack

def pytest_addoption(parser):
    parser.addoption("--rack")
    parser.addoption("--rack-mode")
    parser.addoption("--rack-share")

def pytest_generate_tests(metafunc):
    if "device" not in metafunc.fixturenames:
        return
    config = metafunc.config
    devices = load_rack(config.getoption("rack"), Path(config.rootpath)).devices
    if config.getoption("rack_mode") == "each":
        chosen = list(devices)
    else:
        index = getattr(config, "fake_next", 0)
        config.fake_next = index + 1
        chosen = [devices[index % len(devices)]]
    metafunc.parametrize("device", chosen, ids=[d.name for d in chosen], indirect=True)

@pytest.fixture
def device(request):
    request.node.user_properties.append(("device", request.param.name))
    if os.environ.get("FAKE_ENGINE_WRONG_ADDRESS"):
        return dataclasses.replace(request.param, address="127.0.0.1:9")
    return request.param
"""


@pytest.fixture
def fake_engine(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "fake_engine.py").write_text(FAKE_ENGINE)
    return _env(tmp_path)


def test_demo_runs_both_modes_and_reports(
    fake_engine: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    """The demo runs the suite in each and load mode and summarises the JUnit reports it gets."""
    options = DemoOptions(devices=2, seconds=0.05, plugin_args=("-p", "fake_engine"), env=fake_engine)
    assert run_demo(options) == 0
    out = capfd.readouterr().out
    assert (
        "testrack demo: 3 tests, each keeps its device busy 0.05 s; "
        "2 simulated devices (board-1, board-2)" in out
    )
    assert "== each mode: every test on every device ==" in out
    assert "each: 6 results (6 passed) in " in out
    assert "load: 3 results (3 passed) in " in out
    assert "  per device: board-1 3, board-2 3\n" in out
    assert "  per device: board-1 2, board-2 1\n" in out
    assert "6 passed" in out  # pytest's own output is streamed through
    assert out.splitlines()[-3].startswith("mode  results  wall s")


def test_demo_says_its_files_are_temporary_unless_kept(
    fake_engine: dict[str, str], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Without --keep no vanishing path is printed; with --keep DIR the suite and rack stay there."""
    options = DemoOptions(devices=1, seconds=0.01, plugin_args=("-p", "fake_engine"), env=fake_engine)
    assert run_demo(options) == 0
    out = capfd.readouterr().out
    assert "suite and rack file in a temporary directory, removed at the end (--keep DIR keeps them)" in out
    assert "testrack-demo-" not in out
    keep = tmp_path / "kept"
    assert run_demo(dataclasses.replace(options, keep=keep)) == 0
    out = capfd.readouterr().out
    assert f"suite and rack file in {keep} (kept)" in out
    assert out.splitlines()[-1] == (
        f"kept in {keep}: the suite, its rack file and its results; the simulated devices are gone, so to "
        f"run it again start new ones with: testrack sim --devices 1 --rack-file {keep / 'testrack.toml'} "
        f"--force, then in {keep}: pytest --rack-mode=each"
    )
    assert {"test_demo.py", "conftest.py", "pytest.ini", "testrack.toml"} <= {p.name for p in keep.iterdir()}
    assert load_rack("testrack.toml", keep).devices[0].name == "board-1"
    assert run_demo(dataclasses.replace(options, keep=keep)) == 0, "an earlier demo's directory is reused"
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(demo.DemoError, match=r"--keep .*kept holds other files \(notes.txt\); give a new"):
        run_demo(dataclasses.replace(options, keep=keep))


def test_demo_fails_when_the_tests_fail(
    fake_engine: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    """A device the tests cannot reach makes the demo exit 1 and say pytest failed."""
    fake_engine["FAKE_ENGINE_WRONG_ADDRESS"] = "1"
    options = DemoOptions(devices=1, seconds=0.01, plugin_args=("-p", "fake_engine"), env=fake_engine)
    assert run_demo(options) == 1
    out = capfd.readouterr().out
    assert "each: 3 results (3 failed)" in out
    assert "  pytest exited with code 1: see its output above" in out
    assert "simulated device 127.0.0.1:9: cannot talk to the device" in out


def test_demo_with_the_engine(capfd: pytest.CaptureFixture[str]) -> None:
    """`testrack demo` end to end on testrack's own engine: every device reports its results."""
    code = main(["demo", "--devices", "1", "--seconds", "0.01"])
    out = capfd.readouterr().out
    summary = [
        re.sub(r" in .* s wall.*", "", line)
        for line in out.splitlines()
        if line.startswith(("each:", "load:", "  per device:"))
    ]
    assert summary == [
        "each: 3 results (3 passed)",
        "  per device: board-1 3",
        "load: 3 results (3 passed)",
        "  per device: board-1 3",
    ], out
    assert code == 0, out
