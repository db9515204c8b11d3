"""One run over many hosts (``--rack-run ID``), as CI starts it: several real pytest processes,
each with its own rack file and ``--rack-host`` name, sharing one run's tests through a real
PostgreSQL server; ``testrack report --run ID --wait`` waits for them all. Who ran what is read
from a log the tests write, not from testrack."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from testrack.rack import Device, dump_rack

pytestmark = pytest.mark.timeout(300)

#: Each test appends "nodeid device pid start end" (wall times) to ran.log when it has run (one
#: short write: atomic).
SUITE = """
    import os, time
    import pytest

    @pytest.mark.parametrize("n", range({count}))
    def test_work(device, n):
        start = time.time()
        time.sleep({seconds})
        line = f"test_work[{{n}}] {{device.name}} {{os.getpid()}} {{start}} {{time.time()}}\\n"
        fd = os.open(os.environ["RAN_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, line.encode())
        os.close(fd)
"""


def _suite(pytester: pytest.Pytester, count: int, seconds: float) -> None:
    pytester.makepyfile(test_work=SUITE.format(count=count, seconds=seconds))


def _racks(pytester: pytest.Pytester, hosts: int, per_host: int = 2, mode: str | None = None) -> list[Path]:
    paths = []
    for h in range(hosts):
        devices = [Device(f"h{h}-board-{i}", "board", f"127.0.{h + 1}.{i + 1}:1") for i in range(per_host)]
        path = pytester.path / f"host{h}.toml"
        path.write_text(dump_rack(devices, mode=mode))
        paths.append(path)
    return paths


def _host(
    pytester: pytest.Pytester, rack: Path, name: str, run: str, share: str, *args: str
) -> subprocess.Popen[str]:
    env = {**os.environ, "RAN_LOG": str(pytester.path / "ran.log"), "PYTEST_ADDOPTS": "-p no:randomly"}
    env.pop("TESTRACK_SHARE", None)
    return subprocess.Popen(
        [
            # option=value: a value that names an existing path would otherwise move pytest's rootdir
            sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--rack={rack}",
            f"--rack-share={share}", f"--rack-run={run}", f"--rack-host={name}", *args,
        ],
        cwd=pytester.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip


def _report(pytester: pytest.Pytester, run: str, share: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TESTRACK_SHARE"}
    return subprocess.run(
        [sys.executable, "-m", "testrack", "report", "--run", run, "--share", share, *args],
        cwd=pytester.path, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip


def _ran(pytester: pytest.Pytester) -> list[tuple[str, str, str]]:
    """(node id, device, pid) of each test that ran, in the order they ended."""
    return [(nodeid, device, pid) for nodeid, device, pid, _, _ in _ran_at(pytester)]


def _ran_at(pytester: pytest.Pytester) -> list[tuple[str, str, str, float, float]]:
    """``_ran`` with the wall times each test started and ended."""
    log = pytester.path / "ran.log"
    if not log.exists():
        return []
    rows = (line.split() for line in log.read_text().splitlines())
    return [(nodeid, device, pid, float(start), float(end)) for nodeid, device, pid, start, end in rows]


def _process_tree(pid: int) -> list[int]:
    """``pid`` and every process under it, parents first (Linux: /proc/PID/task/TID/children)."""
    tree, i = [pid], 0
    while i < len(tree):
        for task in Path(f"/proc/{tree[i]}/task").iterdir():
            with open(task / "children") as f:
                tree.extend(int(child) for child in f.read().split())
        i += 1
    return tree


def test_two_hosts_share_one_run_and_each_test_runs_once(pytester: pytest.Pytester, pg_database: str) -> None:
    """Two hosts of two boards each start the same command with the same --rack-run ID: every test
    runs exactly once, on some device of either host; report --wait prints the combined outcome
    and writes one JUnit file over all four devices."""
    _suite(pytester, 60, 0.15)
    racks = _racks(pytester, 2)
    hosts = [_host(pytester, rack, f"ci-{h}", "pipeline-1", pg_database) for h, rack in enumerate(racks)]
    waited = _report(pytester, "pipeline-1", pg_database, "--wait", "--timeout", "60", "--junitxml", "x.xml")
    outputs = [p.communicate(timeout=240)[0] for p in hosts]
    for proc, out in zip(hosts, outputs, strict=True):
        assert proc.returncode == 0, out
        assert "shared run pipeline-1 as host ci-" in out, out
    assert any("created shared run pipeline-1" in out for out in outputs), outputs
    assert any("joined shared run pipeline-1" in out for out in outputs), outputs
    ran = _ran(pytester)
    counts = Counter(nodeid for nodeid, _, _ in ran)
    assert sorted(counts) == sorted(f"test_work[{n}]" for n in range(60)), counts
    assert set(counts.values()) == {1}, [n for n, c in counts.items() if c > 1]
    devices = {device for _, device, _ in ran}
    assert {d[:2] for d in devices} == {"h0", "h1"}, devices  # both hosts did work
    # what each host printed adds up to the whole run
    passed = [int(out.rsplit(" passed", 1)[0].split()[-1]) for out in outputs]
    assert sum(passed) == 60, outputs
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert "pipeline-1: 60 passed" in waited.stdout, waited.stdout
    xml = (pytester.path / "x.xml").read_text()
    assert xml.count("<testcase ") == 60, xml[:2000]
    assert all(f'hostname="h{h}-board-{i}"' in xml for h in (0, 1) for i in (0, 1)), xml[:2000]


def test_a_host_that_collected_other_tests_is_refused_naming_them(
    pytester: pytest.Pytester, pg_database: str
) -> None:
    """A host whose -k selects other tests may not join: it stops with a usage error that names
    the difference, without a traceback and without running a test; the run goes on."""
    _suite(pytester, 20, 0.2)
    first, second = _racks(pytester, 2)
    creator = _host(pytester, first, "ci-0", "pipeline-2", pg_database)
    deadline = time.monotonic() + 120
    while not _ran(pytester):
        assert time.monotonic() < deadline and creator.poll() is None, creator.communicate()[0]
        time.sleep(0.1)
    other = _host(pytester, second, "ci-1", "pipeline-2", pg_database, "-k", "not test_work[3]")
    out = other.communicate(timeout=120)[0]
    assert other.returncode == 4, out
    assert "host ci-1 collected other tests than run pipeline-2" in out, out
    assert "lacks 1 it has (test_work.py::test_work[3])" in out, out
    assert "Traceback" not in out, out
    assert creator.communicate(timeout=120)[0] and creator.returncode == 0
    assert len(_ran(pytester)) == 20
    # A finished run is not run again: the message says how to rerun what failed.
    again = _host(pytester, first, "ci-0", "pipeline-2", pg_database)
    out = again.communicate(timeout=120)[0]
    assert again.returncode == 4, out
    assert "run pipeline-2 finished at" in out and "give a new --rack-run ID" in out, out


def test_the_tests_of_a_host_killed_mid_run_are_run_by_another(
    pytester: pytest.Pytester, pg_database: str
) -> None:
    """kill -9 of one host (controller and workers) mid-run: the tests it claimed go back to the
    queue, the other host runs them, and report --wait ends with every test's result."""
    _suite(pytester, 40, 0.25)
    first, second = _racks(pytester, 2)
    args = ("--rack-retry-crashed", "1")
    doomed = _host(pytester, first, "ci-0", "pipeline-3", pg_database, *args)
    deadline = time.monotonic() + 120
    while not any(device.startswith("h0") for _, device, _ in _ran(pytester)):
        assert time.monotonic() < deadline and doomed.poll() is None, doomed.communicate()[0]
        time.sleep(0.05)
    survivor = _host(pytester, second, "ci-1", "pipeline-3", pg_database, *args)
    while not any(device.startswith("h1") for _, device, _ in _ran(pytester)):
        assert time.monotonic() < deadline and survivor.poll() is None, survivor.communicate()[0]
        time.sleep(0.05)
    for pid in _process_tree(doomed.pid):  # the whole host: its workers are in sessions of their own
        os.kill(pid, signal.SIGKILL)
    doomed.communicate(timeout=60)
    out = survivor.communicate(timeout=180)[0]
    assert survivor.returncode == 0, out
    waited = _report(pytester, "pipeline-3", pg_database, "--wait", "--timeout", "30")
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert "pipeline-3: 40 passed" in waited.stdout, waited.stdout
    counts = Counter(nodeid for nodeid, _, _ in _ran(pytester))
    assert sorted(counts) == sorted(f"test_work[{n}]" for n in range(40)), counts


def test_rack_run_without_a_postgresql_share_says_what_to_give(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    _suite(pytester, 2, 0.0)
    (rack,) = _racks(pytester, 1)
    proc = _host(pytester, rack, "ci-0", "pipeline-4", str(tmp_path / "share.sqlite"))
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 4, out
    assert "--rack-run pipeline-4 spreads a run over many hosts through a PostgreSQL share" in out, out
    assert "Traceback" not in out, out
    empty = _host(pytester, rack, "ci-0", "  ", str(tmp_path / "share.sqlite"))
    out = empty.communicate(timeout=120)[0]
    assert empty.returncode == 4, out
    assert "--rack-run needs an ID, the same on every host of the run" in out, out


def test_each_mode_over_two_hosts_gives_every_device_every_test_and_one_verdict(
    pytester: pytest.Pytester, pg_database: str
) -> None:
    """Each mode: every test runs once on each of the four devices of two hosts; report --wait
    prints every device's counts and fails the whole run for one failure on one device."""
    pytester.makepyfile(
        test_each="""
        import os

        def test_ok(device):
            pass

        def test_not_on_h1_board_0(device):
            assert device.name != "h1-board-0"
        """
    )
    racks = []
    for h in range(2):
        devices = [Device(f"h{h}-board-{i}", "board", f"127.0.{h + 1}.{i + 1}:1") for i in range(2)]
        racks.append(pytester.path / f"each{h}.toml")
        racks[-1].write_text(dump_rack(devices, mode="each"))
    hosts = [_host(pytester, rack, f"ci-{h}", "pipeline-5", pg_database) for h, rack in enumerate(racks)]
    outputs = [p.communicate(timeout=240)[0] for p in hosts]
    assert sorted(p.returncode for p in hosts) == [0, 1], outputs
    waited = _report(pytester, "pipeline-5", pg_database, "--wait", "--timeout", "30")
    assert waited.returncode == 1, waited.stdout + waited.stderr
    lines = waited.stdout.splitlines()
    assert lines[0].startswith("pipeline-5: 1 failed, 7 passed (hosts: "), lines
    assert "  h1-board-0: 1 failed, 1 passed" in lines, lines
    assert [line for line in lines if line.endswith(": 2 passed")] == [
        "  h0-board-0: 2 passed",
        "  h0-board-1: 2 passed",
        "  h1-board-1: 2 passed",
    ], lines


def test_report_wait_says_what_to_give_for_wrong_input(pytester: pytest.Pytester, pg_database: str) -> None:
    """A run number instead of an ID, no PostgreSQL share, and an ID no host ever started: each a
    one-line error naming the fix, never a traceback."""
    number = _report(pytester, "3", pg_database, "--wait")
    assert number.returncode != 0 and "give --run the ID every host ran with" in number.stderr, number.stderr
    sqlite = _report(pytester, "p", str(pytester.path / "share.sqlite"), "--wait")
    assert sqlite.returncode != 0 and "is not one: give --share postgresql://" in sqlite.stderr, sqlite.stderr
    never = _report(pytester, "nobody-started-this", pg_database, "--wait", "--timeout", "2")
    assert never.returncode != 0, never.stdout
    assert "no shared run nobody-started-this in the share" in never.stderr, never.stderr
    assert "start the hosts with pytest --rack-run nobody-started-this" in never.stderr, never.stderr
    assert all("Traceback" not in r.stderr for r in (number, sqlite, never))


def test_a_seeded_host_runs_its_share_and_says_the_seed_does_not_order_it(
    pytester: pytest.Pytester, pg_database: str
) -> None:
    """--rack-seed on a shared run: the queue decides the order (said in the output), and the
    host's verdict counts what it ran (it used to exit 5, "no tests", after passing them all)."""
    _suite(pytester, 6, 0.0)
    (rack,) = _racks(pytester, 1)
    host = _host(pytester, rack, "ci-0", "pipeline-6", pg_database, "--rack-seed", "7")
    out = host.communicate(timeout=120)[0]
    assert host.returncode == 0, out
    assert "6 passed" in out, out
    assert "the order of --rack-seed does not apply to shared run pipeline-6" in out, out


def test_a_host_frozen_past_its_ttl_rejoins_and_its_verdict_matches_the_runs(
    pytester: pytest.Pytester, pg_database: str
) -> None:
    """The whole host SIGSTOPped for longer than its leases' ttl (15 s), then woken: it finds its
    leases gone, joins the run again as a new holder, leases its devices again and runs what went
    back to the queue. Every test gets one final result; a test it was running when frozen is the
    queue's 'crashed' and is shown so here (not hidden as another host's); what the host prints and
    its exit code match the run's record. No worker of the frozen run starts a test after waking.
    A test runs twice only when it started before the freeze and the share had not heard of its
    start or its end (its result, on its way when the host froze, is refused on waking: the lease
    had expired), and then the host says so."""
    _suite(pytester, 60, 0.1)
    (rack,) = _racks(pytester, 1)
    host = _host(pytester, rack, "ci-0", "pipeline-9", pg_database)
    deadline = time.monotonic() + 120
    while len(_ran(pytester)) < 6:
        assert time.monotonic() < deadline and host.poll() is None, host.communicate()[0]
        time.sleep(0.02)
    # The whole run: its workers are in sessions of their own. The controller first, so that its
    # workers' last results are on their way when they freeze too (a loaded machine does that by
    # itself, now and then).
    os.kill(host.pid, signal.SIGSTOP)
    time.sleep(0.35)
    run = _process_tree(host.pid)
    for pid in run:
        os.kill(pid, signal.SIGSTOP)
    frozen = time.time()
    time.sleep(17.0)  # past the 15 s ttl: the share takes the host for dead
    woken = time.time()
    for pid in reversed(run):
        os.kill(pid, signal.SIGCONT)
    out = host.communicate(timeout=180)[0]
    waited = _report(pytester, "pipeline-9", pg_database, "--wait", "--timeout", "30")
    assert waited.returncode in (0, 1), waited.stdout + waited.stderr
    summary = next(line for line in waited.stdout.splitlines() if line.startswith("pipeline-9: "))
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|crashed|failed)", summary)}
    assert counts.get("failed", 0) == 0, waited.stdout
    assert counts.get("passed", 0) + counts.get("crashed", 0) == 60, waited.stdout
    ran_at = _ran_at(pytester)
    ran = Counter(nodeid for nodeid, _, _, _, _ in ran_at)
    assert sorted(ran) == sorted(f"test_work[{n}]" for n in range(60)), ran
    twice = sorted(nodeid for nodeid, count in ran.items() if count > 1)
    assert twice and set(ran.values()) == {1, 2}, (ran, out)
    for nodeid in twice:
        first, second = sorted(start for n, _, _, start, _ in ran_at if n == nodeid)
        assert first < frozen < woken < second, (nodeid, first, second, frozen, woken)
    before = {pid for _, _, pid, start, _ in ran_at if start < frozen}
    assert not [n for n, _, pid, start, _ in ran_at if pid in before and start > woken], ran_at
    assert f"{len(twice)} result" in out and "not shown: the lease was lost meanwhile" in out, out
    assert "KeyError" not in out and "INTERNALERROR" not in out, out
    last = out.strip().splitlines()[-1]
    assert f"{counts['passed']} passed" in last, (last, summary)
    crashed = counts.get("crashed", 0)
    assert (f"{crashed} failed" in last) == bool(crashed), (last, summary)
    assert host.returncode == (1 if crashed else 0), out


def test_each_mode_a_late_host_runs_on_its_devices_and_a_retried_host_is_refused(
    pytester: pytest.Pytester, pg_database: str
) -> None:
    """Each mode: a host that starts after the others finished (the run had ended) still runs
    every test on its devices, and the run's verdict covers them; a host started again with
    devices that ran the run already is refused, naming the fix."""
    _suite(pytester, 4, 0.0)
    early, late = _racks(pytester, 2, mode="each")
    first = _host(pytester, early, "ci-0", "pipeline-10", pg_database)
    assert first.wait(timeout=120) == 0, first.communicate()[0]
    second = _host(pytester, late, "ci-1", "pipeline-10", pg_database)
    out = second.communicate(timeout=120)[0]
    assert second.returncode == 0, out
    assert "joined shared run pipeline-10 as host ci-1" in out, out
    again = _host(pytester, early, "ci-0", "pipeline-10", pg_database)
    refused = again.communicate(timeout=120)[0]
    assert again.returncode == 4, refused
    assert "a finished run is not run again: give a new --rack-run ID" in refused, refused
    waited = _report(pytester, "pipeline-10", pg_database, "--wait", "--timeout", "30")
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert waited.stdout.splitlines()[0].startswith("pipeline-10: 16 passed"), waited.stdout
    counts = Counter(device for _, device, _ in _ran(pytester))
    assert counts == {f"h{h}-board-{i}": 4 for h in (0, 1) for i in (0, 1)}, counts


#: Single-device tests and tests on two devices at once; each appends what it ran on, and a test
#: on two devices leaves a file named for its devices when it begins.
PAIRS = """
    import os, time
    import pytest

    def _log(line):
        fd = os.open(os.environ["RAN_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, line.encode())
        os.close(fd)

    @pytest.mark.parametrize("n", range({work}))
    def test_work(device, n):
        start = time.time()
        time.sleep({work_seconds})
        _log(f"test_work[{{n}}] {{device.name}} {{os.getpid()}} {{start}} {{time.time()}}\\n")

    @pytest.mark.parametrize("g", range({pairs}))
    @pytest.mark.devices(2, kind="board")
    def test_pair(devices, g):
        start = time.time()
        names = "+".join(d.name for d in devices)
        with open(f"began-{{names}}", "w"):
            pass
        time.sleep({pair_seconds})
        _log(f"test_pair[{{g}}] {{names}} {{os.getpid()}} {{start}} {{time.time()}}\\n")
"""


def _stored(database: str) -> list[tuple[str, str, str]]:
    """Every result the hosts stored: (node id, device, worker)."""
    import psycopg

    with psycopg.connect(database) as conn:
        return conn.execute("SELECT nodeid, device, worker FROM testrack.results").fetchall()


def _no_device_twice_at_once(ran: list[tuple[str, str, str, float, float]]) -> None:
    """From the tests' own log: no device ran two tests at once."""
    spans: dict[str, list[tuple[float, float, str]]] = {}
    for nodeid, devices, _, start, end in ran:
        for device in devices.split("+"):
            spans.setdefault(device, []).append((start, end, nodeid))
    for device, used in spans.items():
        used.sort()
        for (_, end, first), (start, _, second) in itertools.pairwise(used):
            assert end <= start, f"{device} ran {first} and {second} at once"


@pytest.mark.parametrize("mode", ["load", "each"])
def test_tests_on_several_devices_run_in_a_shared_run_on_one_hosts_devices(
    pytester: pytest.Pytester, pg_database: str, mode: str
) -> None:
    """Two hosts of two boards each, a suite with tests on two devices at once (issue 11, point
    6): such a test runs on two distinct devices of one host, claimed once from the queue under
    both devices' leases (load: once in the run; each: on every set of every host); no device
    runs two tests at once; report --wait counts them with the rest."""
    pytester.makepyfile(test_pairs=PAIRS.format(work=16, work_seconds=0.1, pairs=4, pair_seconds=0.3))
    racks = _racks(pytester, 2, mode=None if mode == "load" else "each")
    run = f"pipeline-pairs-{mode}"
    hosts = [_host(pytester, rack, f"ci-{h}", run, pg_database) for h, rack in enumerate(racks)]
    waited = _report(pytester, run, pg_database, "--wait", "--timeout", "60")
    outputs = [p.communicate(timeout=240)[0] for p in hosts]
    for proc, out in zip(hosts, outputs, strict=True):
        assert proc.returncode == 0, out
    ran = _ran_at(pytester)
    _no_device_twice_at_once(ran)
    pairs = [(nodeid, devices) for nodeid, devices, _, _, _ in ran if nodeid.startswith("test_pair")]
    for nodeid, devices in pairs:
        first, second = devices.split("+")
        assert first != second and first[:2] == second[:2], (nodeid, devices)  # one host's two boards
    work = Counter(nodeid for nodeid, _, _, _, _ in ran if nodeid.startswith("test_work"))
    if mode == "load":
        assert sorted(Counter(n for n, _ in pairs).items()) == [(f"test_pair[{g}]", 1) for g in range(4)]
        assert set(work.values()) == {1} and len(work) == 16, work
        assert waited.returncode == 0 and f"{run}: 20 passed" in waited.stdout, waited.stdout
    else:
        # each: every device of every host takes part (two positions, no roles: one set a host)
        sets = Counter(devices for _, devices in pairs)
        assert sets == {"h0-board-0+h0-board-1": 4, "h1-board-0+h1-board-1": 4}, sets
        assert set(work.values()) == {4} and len(work) == 16, work  # on each of the 4 boards
        assert waited.returncode == 0 and f"{run}: 72 passed" in waited.stdout, waited.stdout
    # Both hosts have a gw0 and run the same tests in the same order in each mode: a stored result
    # names its host's worker, or two hosts' runs of a test on a coarse clock count as one.
    for nodeid, device, worker in _stored(pg_database):
        assert worker.startswith(f"ci-{device[1]}/gw"), (nodeid, device, worker)


def test_a_test_on_several_devices_whose_host_is_killed_runs_on_another_host(
    pytester: pytest.Pytester, pg_database: str
) -> None:
    """kill -9 of the host running a test on two devices: with --rack-retry-crashed 1 the test goes
    back to the queue and the other host, which had found it taken, claims it and runs it on two
    of its own devices; report --wait ends with every test passed."""
    pytester.makepyfile(test_pairs=PAIRS.format(work=24, work_seconds=0.2, pairs=1, pair_seconds=3.0))
    racks = _racks(pytester, 2)
    args = ("--rack-retry-crashed", "1")
    hosts = [
        _host(pytester, rack, f"ci-{h}", "pipeline-11", pg_database, *args) for h, rack in enumerate(racks)
    ]
    deadline = time.monotonic() + 120
    while not (began := list(pytester.path.glob("began-*"))):
        assert time.monotonic() < deadline and all(h.poll() is None for h in hosts), "no test_pair began"
        time.sleep(0.02)
    doomed = int(began[0].name.split("-")[1][1])  # began-h0-board-0+h0-board-1: host 0
    for pid in _process_tree(hosts[doomed].pid):  # the whole host: its workers are in sessions of their own
        os.kill(pid, signal.SIGKILL)
    hosts[doomed].communicate(timeout=60)
    survivor = hosts[1 - doomed]
    out = survivor.communicate(timeout=180)[0]
    assert survivor.returncode == 0, out
    waited = _report(pytester, "pipeline-11", pg_database, "--wait", "--timeout", "30")
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert "pipeline-11: 25 passed" in waited.stdout, waited.stdout
    pairs = [devices for nodeid, devices, _ in _ran(pytester) if nodeid == "test_pair[0]"]
    assert len(pairs) == 1 and pairs[0].startswith(f"h{1 - doomed}-"), pairs
