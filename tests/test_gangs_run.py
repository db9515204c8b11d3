"""Tests on several devices at once (``@pytest.mark.devices``), run by real rack sessions.

Every test of these suites writes down which devices it held and when; the checks read that
log, so a test that shared a device with another one, or got the wrong devices, shows up.
"""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import boards, results
from testrack.rack import Device
from testrack.store import SQLiteStore

#: Every test of a suite logs its devices and times here (one JSON line, appended).
LOGGING_CONFTEST = """
import json, os, time
import pytest

LOG = os.path.join(os.path.dirname(__file__), "held.jsonl")

@pytest.fixture(autouse=True)
def _held(request):
    names = []
    if "devices" in request.fixturenames:
        names = [d.name for d in request.getfixturevalue("devices")]
    elif "device" in request.fixturenames:
        names = [request.getfixturevalue("device").name]
    start = time.monotonic()
    yield
    end = time.monotonic()
    line = json.dumps({"test": request.node.nodeid, "devices": names, "start": start, "end": end})
    with open(LOG, "a") as log:
        log.write(line + "\\n")
"""


def held(pytester: pytest.Pytester) -> list[dict]:
    path = pytester.path / "held.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def overlaps(entries: list[dict]) -> list[tuple[str, str, str]]:
    """(device, test, test) for every two tests that held one device at the same time."""
    found = []
    for i, a in enumerate(entries):
        for b in entries[i + 1 :]:
            for name in set(a["devices"]) & set(b["devices"]):
                if a["start"] < b["end"] and b["start"] < a["end"]:
                    found.append((name, a["test"], b["test"]))
    return found


def test_load_mode_gives_a_test_all_its_devices_and_nobody_else_meanwhile(
    pytester: pytest.Pytester, write_rack: Callable[..., None]
) -> None:
    """Tests on two boards run among single-board tests: each gets two distinct boards,
    and no other test uses either board while it runs."""
    write_rack(boards(4))
    pytester.makeconftest(LOGGING_CONFTEST)
    pytester.makepyfile(
        test_pairs="""
        import time, pytest

        @pytest.mark.parametrize("i", range(3))
        @pytest.mark.devices(2, kind="board")
        def test_pair(devices, device, i):
            assert len({d.name for d in devices}) == 2
            assert device == devices[0]
            time.sleep(0.3)

        @pytest.mark.parametrize("i", range(12))
        def test_single(device, i):
            time.sleep(0.1)
        """
    )
    result = pytester.runpytest_subprocess("--rack", "testrack.toml", "-v")
    result.assert_outcomes(passed=15)
    entries = held(pytester)
    assert len(entries) == 15
    pairs = [e for e in entries if "::test_pair[" in e["test"]]
    assert len(pairs) == 3 and all(len(set(e["devices"])) == 2 for e in pairs)
    assert overlaps(entries) == []
    # The terminal names every device of the test, as xdist names its worker.
    shown = {device for device, _word, nodeid in results(result.outlines) if "::test_pair[" in nodeid}
    assert shown and all(len(label.split("+")) == 2 for label in shown)


def test_roles_get_the_devices_that_match_them(
    pytester: pytest.Pytester, write_rack: Callable[..., None]
) -> None:
    """Named roles with their own requirements: a host and two phones, by role and in order."""
    write_rack([Device("host-1", "host", "127.0.0.9:1"), *boards(3, kind="phone")])
    pytester.makeconftest(LOGGING_CONFTEST)
    pytester.makepyfile(
        test_call="""
        import pytest

        @pytest.mark.devices(server={"kind": "host"}, client={"kind": "phone", "count": 2})
        def test_call(devices, device):
            assert devices["server"].kind == "host"
            clients = devices["client"]
            assert [d.kind for d in clients] == ["phone", "phone"]
            assert clients[0].name != clients[1].name
            assert device == devices["server"] == devices[0]
        """
    )
    result = pytester.runpytest_subprocess("--rack", "testrack.toml", "--junitxml", "j.xml")
    result.assert_outcomes(passed=1)
    (entry,) = held(pytester)
    assert entry["devices"][0] == "host-1" and len(set(entry["devices"][1:])) == 2
    # The store keeps the role each device took; history and JUnit say it.
    roles = dict(zip(entry["devices"], ["server", "client", "client"], strict=True))
    store = SQLiteStore(pytester.path / ".testrack" / "results.sqlite")
    (run,) = store.runs()
    assert {r.device: r.role for r in store.results(run.id)} == roles
    store.close()
    shown = pytester.run(sys.executable, "-m", "testrack", "history", "test_call.py::test_call")
    assert shown.ret == 0, shown.stdout.str()
    for device, role in roles.items():
        shown.stdout.fnmatch_lines([f"*{device} as {role} *passed*"])
    case = ET.parse(pytester.path / "j.xml").getroot().find(".//testcase")
    assert case is not None
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["roles"] == ",".join(f"{role}={device}" for device, role in roles.items()), props
    # Which worker ran it, and its device's suite has a time, as for a test on one device.
    assert props.get("worker", "").startswith("gw"), props
    root = ET.parse(pytester.path / "j.xml").getroot()
    suite = root.find(".//testsuite[@name='pytest@host-1']")
    assert suite is not None and suite.get("timestamp"), ET.tostring(root)


def test_each_mode_gives_every_device_every_role(
    pytester: pytest.Pytester, write_rack: Callable[..., None]
) -> None:
    """In each mode a test on two boards runs on sets that cover every board of the rack;
    the matrix has a result for each board, and single-board tests still run on all."""
    write_rack(boards(3), mode="each")
    pytester.makeconftest(LOGGING_CONFTEST)
    pytester.makepyfile(
        test_each="""
        import pytest

        @pytest.mark.devices(first={"kind": "board"}, second={"kind": "board"})
        def test_link(devices):
            assert devices["first"].name != devices["second"].name

        def test_alone(device):
            pass
        """
    )
    result = pytester.runpytest_subprocess("--rack", "testrack.toml")
    assert result.ret == 0
    entries = held(pytester)
    links = [e["devices"] for e in entries if "test_link" in e["test"]]
    alone = sorted(e["devices"][0] for e in entries if "test_alone" in e["test"])
    assert alone == ["board-1", "board-2", "board-3"]
    for role in (0, 1):  # every board took every role at least once
        assert {names[role] for names in links} == {"board-1", "board-2", "board-3"}
    assert overlaps(entries) == []


def test_a_test_no_set_of_devices_can_run_is_an_error_that_says_why(
    pytester: pytest.Pytester, write_rack: Callable[..., None]
) -> None:
    write_rack(boards(2))
    pytester.makepyfile(
        test_big="""
        import pytest

        @pytest.mark.devices(3, kind="board")
        def test_three(devices):
            pass

        def test_other(device):
            pass
        """
    )
    result = pytester.runpytest_subprocess("--rack", "testrack.toml")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*needs 3 devices with kind='board'*has only 2 that match (board-1, board-2)*"]
    )
    assert "Traceback" not in result.stdout.str() and "INTERNALERROR" not in result.stdout.str()


def test_a_crash_in_a_test_on_several_devices_names_them_and_the_run_goes_on(
    pytester: pytest.Pytester, write_rack: Callable[..., None]
) -> None:
    """The worker of a two-board test dies: the test is reported with both boards, and the
    other tests run, on the borrowed board too."""
    write_rack(boards(3))
    pytester.makepyfile(
        test_crash="""
        import os, time, pytest

        @pytest.mark.devices(2, kind="board")
        def test_dies(devices):
            os._exit(3)

        @pytest.mark.parametrize("i", range(9))
        def test_after(device, i):
            time.sleep(0.05)
        """
    )
    result = pytester.runpytest_subprocess("--rack", "testrack.toml", "-v")
    result.assert_outcomes(passed=9, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_dies _*",
            "[[]board-*+board-*[]] devices board-* (kind board, *), board-* (kind board, *)",
            "*exited with code 3 (its test also had board-*) while running this test*",
        ]
    )
    assert len({device for device, _word, nodeid in results(result.outlines) if "test_after" in nodeid}) >= 2
    store = SQLiteStore(pytester.path / ".testrack" / "results.sqlite")
    try:  # a result on each of its devices, as for a test that ends on its own
        rows = [r for r in store.results(store.runs(limit=1)[0].id) if r.nodeid.endswith("test_dies")]
    finally:
        store.close()
    assert sorted(r.outcome for r in rows) == ["crashed", "crashed"] and len({r.device for r in rows}) == 2, (
        rows
    )


def test_a_crashed_test_on_several_devices_is_retried_whole(
    pytester: pytest.Pytester, write_rack: Callable[..., None]
) -> None:
    """--rack-retry-crashed on a two-board test: it was requeued as a one-board test (an error,
    "this worker was not sent the devices"); now it runs again on two boards."""
    write_rack(boards(3))
    pytester.makeconftest(LOGGING_CONFTEST)
    pytester.makepyfile(
        test_crash="""
        import os, pytest

        @pytest.mark.devices(2, kind="board")
        def test_dies_once(devices):
            if not os.path.exists("died"):
                open("died", "w").close()
                os._exit(3)
        """
    )
    result = pytester.runpytest_subprocess(
        "--rack", "testrack.toml", "--rack-retry-crashed", "1", timeout=120
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*test_dies_once: worker exited with code 3 (its test also had board-*) on board-*; retried on dev*"]
    )
    assert [len(set(e["devices"])) for e in held(pytester)] == [2]  # the retry; the crash logged nothing
    # The crashed attempt is on both of its devices' summary lines (they said "no tests") and in
    # the store on both.
    crashed = re.search(r"code 3 \(its test also had (board-\d)\) on (board-\d)", result.stdout.str())
    assert crashed is not None
    for device in crashed.groups():
        result.stdout.fnmatch_lines([f"{device}: *1 rerun*"])
    store = SQLiteStore(pytester.path / ".testrack" / "results.sqlite")
    (run,) = store.runs()
    stored = sorted(r.device for r in store.results(run.id) if r.outcome == "crashed")
    assert stored == sorted(crashed.groups())
    store.close()


def test_a_device_error_in_a_test_on_several_devices_retries_it_whole_after_their_checks(
    pytester: pytest.Pytester, write_rack: Callable[..., None]
) -> None:
    """A two-board test raised DeviceError: it was retried as a one-board test, which errored
    ("this worker was not sent the devices of ..."), only the first board was checked, and when
    its worker had been told to finish meanwhile the run hung. Now it waits again for two boards,
    both are checked, and the retry passes."""
    write_rack(boards(3))
    pytester.makeconftest(
        LOGGING_CONFTEST + "\n\ndef testrack_device_check(device):\n"
        "    with open(os.path.join(os.path.dirname(__file__), 'checks'), 'a') as f:\n"
        "        f.write(device.name + '\\n')\n"
    )
    pytester.makepyfile(
        test_de="""
        import os, pytest, testrack

        @pytest.mark.devices(2, kind="board")
        def test_pair(devices):
            if not os.path.exists("raised"):
                open("raised", "w").close()
                raise testrack.DeviceError("the boards' link dropped")

        def test_one(device):
            pass
        """
    )
    result = pytester.runpytest_subprocess("--rack", "testrack.toml", "-p", "no:randomly", timeout=120)
    result.assert_outcomes(passed=2)
    pair = [e["devices"] for e in held(pytester) if e["test"].endswith("test_pair")]
    assert len(pair) == 2 and all(len(set(d)) == 2 for d in pair), pair
    result.stdout.fnmatch_lines(
        ["*test_pair: DeviceError on board-*+board-* (the boards' link dropped); retried*"]
    )
    checks = (pytester.path / "checks").read_text().split()
    assert all(checks.count(name) >= 2 for name in pair[0]), (checks, pair)  # checked again, each


def test_the_store_keeps_a_result_for_each_device_of_the_test(
    pytester: pytest.Pytester, write_rack: Callable[..., None], tmp_path: Path
) -> None:
    """History knows each device took part: a failure on a pair is a failure on both."""
    write_rack(boards(2))
    pytester.makepyfile(
        test_pair="""
        import pytest

        @pytest.mark.devices(2, kind="board")
        def test_pair(devices):
            assert False, "the link is down"
        """
    )
    store = tmp_path / "history.db"
    result = pytester.runpytest_subprocess("--rack", "testrack.toml", "--rack-store", str(store))
    result.assert_outcomes(failed=1)
    opened = SQLiteStore(store, read_only=True)
    (run,) = opened.runs()
    rows = opened.results(run.id)
    opened.close()
    assert sorted((r.device, r.outcome) for r in rows) == [("board-1", "failed"), ("board-2", "failed")]
    # `testrack last` counts it once in its headline, as pytest does, and once on each board.
    shown = pytester.run(sys.executable, "-m", "testrack", "last", "--store", str(store))
    shown.stdout.fnmatch_lines(
        ["outcome: tests failed (exit code 1); 1 result: 1 failed", "board-1: 1 failed"]
    )


def test_simulated_devices_log_no_other_test_during_a_test_on_two_of_them(pytester: pytest.Pytester) -> None:
    """Real simulated boards (TCP servers) log every request they serve: while a test on two
    boards works on them one after the other, no other test's request reaches either board, and
    no request ever waited for a board another test was using."""
    from testrack.sim import SimRack

    pytester.makepyfile(
        test_sim_pairs="""
        import pytest
        from testrack.sim import SimClient

        @pytest.mark.parametrize("i", range(3))
        @pytest.mark.devices(2, kind="board")
        def test_pair(devices, i):
            for device in devices:
                with SimClient(device.address) as client:
                    client.work(150)

        @pytest.mark.parametrize("i", range(9))
        def test_single(device, i):
            with SimClient(device.address) as client:
                client.work(60)
        """
    )
    with SimRack(3) as sim:
        sim.write_rack(pytester.path / "testrack.toml")
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--rack-store", "memory")
        result.assert_outcomes(passed=12)
        work = sim.log.records(op="work")
    assert len(work) == 3 * 2 + 9
    assert all(r.waited_ms < 5 for r in work), [r for r in work if r.waited_ms >= 5]
    for pair in {r.test for r in work if r.test and "::test_pair[" in r.test}:
        mine = [r for r in work if r.test == pair]
        names = {r.device for r in mine}
        assert len(names) == 2
        begin, end = min(r.start for r in mine), max(r.end for r in mine)
        others = [r for r in work if r.test != pair and r.device in names and r.start < end and r.end > begin]
        assert others == [], f"{pair} held {sorted(names)}, yet {others} used them meanwhile"


def test_each_mode_with_only_tests_on_several_devices_ends_and_names_each_set_in_junit(
    pytester: pytest.Pytester, write_rack: Callable[..., None]
) -> None:
    """Only two-board tests, each mode, three boards: each needs two runs; the second never
    started (the first run's worker had been told to finish, and nothing woke the allocator
    when it ended): the run hung. JUnit named a case `test_pair@board-1+board-2@board-1`."""
    write_rack(boards(3), mode="each")
    pytester.makepyfile(
        test_j="""
        import pytest

        @pytest.mark.devices(2, kind="board")
        def test_pair(devices):
            pass

        @pytest.mark.devices(2, kind="board")
        @pytest.mark.parametrize("i", [1])
        def test_pp(devices, i):
            pass
        """
    )
    result = pytester.runpytest_subprocess("--rack", "testrack.toml", "--junitxml", "j.xml", timeout=60)
    result.assert_outcomes(passed=4)
    names = [case.get("name") for case in ET.parse(pytester.path / "j.xml").getroot().iter("testcase")]
    assert len(names) == 4 and all(
        re.fullmatch(r"test_(pair|pp\[1\])@board-\d\+board-\d", n) for n in names
    ), names


def test_a_test_whose_device_is_never_leased_is_reported_not_waited_for(
    pytester: pytest.Pytester,
    write_rack: Callable[..., None],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A shared rack where a person holds one of the three boards and --rack-wait gives up on
    it: the three-board test has no set left and is reported so (the run used to wait for ever)."""
    write_rack(boards(3))
    monkeypatch.setenv("TESTRACK_SHARE", str(tmp_path / "share.sqlite"))
    pytester.makepyfile(
        test_three="""
        import pytest

        @pytest.mark.devices(3, kind="board")
        def test_three(devices):
            pass

        def test_one(device):
            pass
        """
    )
    pytester.runpytest_subprocess("--rack", "testrack.toml", "-k", "test_one").assert_outcomes(passed=1)
    reserved = pytester.run(sys.executable, "-m", "testrack", "reserve", "board-2", "--for", "2m")
    assert reserved.ret == 0, reserved.stdout.str() + reserved.stderr.str()
    result = pytester.runpytest_subprocess("--rack", "testrack.toml", "--rack-wait", "2", timeout=60)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*board-2*was not leased: gave up after 2 s*", "ERROR *test_three*no set of*"]
    )


def test_tests_on_several_devices_in_a_row_run_in_one_worker_with_its_fixtures_kept(
    pytester: pytest.Pytester, write_rack: Callable[..., None]
) -> None:
    """Each test on two boards ended its worker and a fresh one started for the next (~0.4 s
    each, and the module's fixtures set up again, unlike plain pytest). Now the next one is
    queued behind it in the same worker: one module set-up per worker, in both modes."""
    write_rack(boards(2))
    pytester.makeconftest(LOGGING_CONFTEST)
    pytester.makepyfile(
        test_pairs="""
        import os, pytest

        @pytest.fixture(scope="module")
        def module_state():
            with open("setups.txt", "a") as f:
                f.write(f"{os.getpid()}\\n")
            yield

        def test_first(module_state, device):
            pass

        @pytest.mark.parametrize("i", range(6))
        @pytest.mark.devices(2, kind="board")
        def test_pair(module_state, devices, i):
            assert len({d.name for d in devices}) == 2

        def test_last(module_state, device):
            pass
        """
    )
    for mode, passed in (("load", 8), ("each", 8 + 2)):
        (pytester.path / "setups.txt").unlink(missing_ok=True)
        (pytester.path / "held.jsonl").unlink(missing_ok=True)
        result = pytester.runpytest_subprocess("--rack", "testrack.toml", "--rack-mode", mode, timeout=120)
        result.assert_outcomes(passed=passed)
        setups = (pytester.path / "setups.txt").read_text().split()
        assert len(setups) == len(set(setups)) <= 2, (mode, setups)  # once in each worker, two workers
        assert overlaps(held(pytester)) == []


def test_a_crash_in_a_queued_test_on_several_devices_retries_it_whole_and_the_rest_run(
    pytester: pytest.Pytester, write_rack: Callable[..., None]
) -> None:
    """Tests on two boards queued one behind another in a worker: the second kills it. It is
    retried on two boards, and the third (queued in the dead worker too) still runs on two."""
    write_rack(boards(2))
    pytester.makeconftest(LOGGING_CONFTEST)
    pytester.makepyfile(
        test_chain="""
        import os, pytest

        @pytest.mark.devices(2, kind="board")
        def test_a(devices):
            pass

        @pytest.mark.devices(2, kind="board")
        def test_b_dies_once(devices):
            if not os.path.exists("died"):
                open("died", "w").close()
                os._exit(3)

        @pytest.mark.devices(2, kind="board")
        def test_c(devices):
            pass
        """
    )
    result = pytester.runpytest_subprocess(
        "--rack", "testrack.toml", "--rack-retry-crashed", "1", "-v", timeout=120
    )
    result.assert_outcomes(passed=3)
    entries = held(pytester)
    assert sorted(e["test"].split("::")[1] for e in entries) == ["test_a", "test_b_dies_once", "test_c"]
    assert all(len(set(e["devices"])) == 2 for e in entries), entries
    assert overlaps(entries) == []
    assert "not sent the devices" not in result.stdout.str()


def test_a_crash_or_device_error_is_stored_on_each_device_with_its_role(
    pytester: pytest.Pytester, write_rack: Callable[..., None], tmp_path: Path
) -> None:
    """A DeviceError in a test on two boards was stored on its first board only, and a crash's
    rows had no role. Each attempt is now a row on each board, with the role that board took."""
    write_rack(boards(3))
    pytester.makepyfile(
        test_roles="""
        import os, pytest, testrack

        @pytest.mark.devices(near={"kind": "board"}, far={"kind": "board"})
        def test_link_drops_once(devices):
            if not os.path.exists("dropped"):
                open("dropped", "w").close()
                raise testrack.DeviceError("the link dropped")

        @pytest.mark.devices(near={"kind": "board"}, far={"kind": "board"})
        def test_dies(devices):
            os._exit(3)
        """
    )
    store = tmp_path / "history.db"
    result = pytester.runpytest_subprocess("--rack", "testrack.toml", "--rack-store", str(store), timeout=120)
    result.assert_outcomes(passed=1, failed=1)
    opened = SQLiteStore(store, read_only=True)
    (run,) = opened.runs()
    rows = opened.results(run.id)
    opened.close()
    for test, outcome in (("test_link_drops_once", "device_error"), ("test_dies", "crashed")):
        mine = [r for r in rows if r.nodeid.endswith(test) and r.outcome == outcome]
        assert sorted(r.role or "" for r in mine) == ["far", "near"], (test, rows)
        assert len({r.device for r in mine}) == 2, (test, rows)


def test_rack_off_lets_a_methods_devices_marker_replace_its_class_device_marker(
    pytester: pytest.Pytester, write_rack: Callable[..., None]
) -> None:
    """--rack off skipped a test on two boards because its class asks for a phone: it read
    every @device marker, where a rack run lets the nearest marker decide."""
    write_rack(boards(2))
    pytester.makepyfile(
        test_off="""
        import pytest

        @pytest.mark.device(kind="phone")
        class TestPhone:
            def test_phone(self, device):
                pass

            @pytest.mark.devices(2, kind="board")
            def test_pair(self, devices):
                assert len({d.name for d in devices}) == 2
        """
    )
    result = pytester.runpytest_subprocess("--rack", "off", "-rs", "-p", "no:randomly")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED * needs kind='phone'; --rack off runs as board-1 (board)*"])


def test_a_count_far_beyond_the_rack_is_an_error_at_once(
    pytester: pytest.Pytester, write_rack: Callable[..., None]
) -> None:
    """A role's count of 10**8 stalled the run: its positions were spelled out one by one
    before the rack's size was checked. Now it is the usual error, in both modes."""
    write_rack(boards(2))
    pytester.makepyfile(
        test_big="""
        import pytest

        @pytest.mark.devices(server={"kind": "board"}, client={"kind": "board", "count": 10**8})
        def test_huge(devices):
            pass

        def test_small(device):
            pass
        """
    )
    for mode in ("load", "each"):
        result = pytester.runpytest_subprocess("--rack", "testrack.toml", "--rack-mode", mode, timeout=60)
        result.assert_outcomes(passed=1 if mode == "load" else 2, errors=1)
        result.stdout.fnmatch_lines(["*it needs client (kind='board', 100000000 devices), and the rack*"])


def test_each_mode_lends_busy_workers_instead_of_starting_fresh_ones(
    pytester: pytest.Pytester, write_rack: Callable[..., None]
) -> None:
    """Each mode pins every position, so a test on several devices needs workers that are busy
    with their own device's tests. Each of them used to be told to finish and a fresh one
    started in its slot (about 0.4 s each: 9 s for 20 runs on 4 boards). Now a busy worker is
    told to stay idle after its tests and is lent: one process per board for the whole run."""
    write_rack(boards(4))
    pytester.makeconftest(LOGGING_CONFTEST)
    pytester.makepyfile(
        test_trio="""
        import os, pytest

        @pytest.fixture(scope="session", autouse=True)
        def process():
            with open("pids.txt", "a") as f:
                f.write(f"{os.getpid()}\\n")

        def test_single(device):
            pass

        @pytest.mark.parametrize("n", range(3))
        @pytest.mark.devices(server={"kind": "board"}, client={"kind": "board", "count": 2})
        def test_trio(devices, n):
            assert devices["server"].name not in {c.name for c in devices["client"]}

        @pytest.mark.parametrize("n", range(4))
        def test_more(device, n):
            pass
        """
    )
    result = pytester.runpytest_subprocess("--rack", "testrack.toml", "--rack-mode", "each", timeout=120)
    result.assert_outcomes(passed=4 * 5 + 3 * 4)  # every board: 5 tests; each trio: 4 runs
    pids = set((pytester.path / "pids.txt").read_text().split())
    assert len(pids) == 4, pids  # one worker per board, none started again
    assert overlaps(held(pytester)) == []


def test_a_test_on_several_devices_queued_behind_a_busy_worker_runs(
    pytester: pytest.Pytester, write_rack: Callable[..., None]
) -> None:
    """A test on two boards, back in the queue after a DeviceError while both boards were busy,
    was queued behind a worker's test; with nothing else waiting or running on several
    devices, it was never started and its worker waited for an answer for ever."""
    write_rack(boards(2))
    pytester.makeconftest(LOGGING_CONFTEST)
    pytester.makepyfile(
        test_one_pair="""
        import os, time, pytest, testrack

        @pytest.mark.devices(2, kind="board")
        def test_pair(devices):
            if not os.path.exists("raised"):
                open("raised", "w").close()
                raise testrack.DeviceError("the link dropped")

        @pytest.mark.parametrize("n", range(8))
        def test_slow(device, n):
            time.sleep(0.3)
        """
    )
    result = pytester.runpytest_subprocess("--rack", "testrack.toml", "-p", "no:randomly", timeout=60)
    result.assert_outcomes(passed=9)
    assert overlaps(held(pytester)) == []
