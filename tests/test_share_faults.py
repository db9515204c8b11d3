"""The share under real faults, with real processes: a holder killed with SIGKILL, a run frozen
with SIGSTOP past its expiry and woken, PostgreSQL restarted under holders, and 50 processes
over 4 slots checked from the logs each of them writes."""

from __future__ import annotations

import itertools
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pg import PgServer, wait_until
from testrack.share import DeviceSpec, Holder, HolderInfo, SlotKey
from testrack.share.backend import ShareBackend
from testrack.share.postgres import PostgresShare
from testrack.share.processes import this_host
from testrack.share.sqlite import SQLiteShare

HOLDER = str(Path(__file__).with_name("share_holder.py"))
# A hung holder process must fail its test, not the session.
pytestmark = pytest.mark.timeout(300)


class RealShare:
    """A share that separate processes can open: its spec, and a backend on it for the test."""

    def __init__(self, spec: str, postgres: PgServer | None) -> None:
        self.spec = spec
        self.postgres = postgres
        self.backends: list[ShareBackend] = []

    def open(self) -> ShareBackend:
        backend: ShareBackend = PostgresShare(self.spec) if self.postgres else SQLiteShare(Path(self.spec))
        self.backends.append(backend)
        return backend

    def holder(self, run: str, ttl: float = 15.0) -> Holder:
        return Holder(self.open(), HolderInfo(run, this_host(), os.getpid(), "test"), ttl=ttl)

    def wait_for_uptime(self, seconds: float) -> None:
        """A missing advisory lock means death only once the server has been up longer than the ttl."""
        if self.postgres is None:
            return
        with self.postgres.admin() as conn:
            row = conn.execute("SELECT extract(epoch FROM now() - pg_postmaster_start_time())").fetchone()
        assert row is not None
        time.sleep(max(0.0, seconds + 0.5 - float(row[0])))


@pytest.fixture(params=["sqlite", "postgresql"])
def share(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RealShare]:
    if request.param == "sqlite":
        real = RealShare(str(tmp_path / "share.sqlite"), None)
    else:
        real = RealShare(request.getfixturevalue("pg_database"), request.getfixturevalue("postgres"))
    yield real
    for backend in real.backends:
        backend.close()


class Proc:
    """A holder process (tests/share_holder.py) and what it says on stdout."""

    def __init__(self, share: RealShare, mode: str, slots: str, log: Path, *extra: str) -> None:
        self.log = log
        self.popen = subprocess.Popen(
            [
                sys.executable,
                HOLDER,
                mode,
                "--share",
                share.spec,
                "--slots",
                slots,
                "--log",
                str(log),
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, as a whole run is
        )

    def event(self, timeout: float = 60.0) -> dict[str, Any]:
        assert self.popen.stdout is not None
        ready, _, _ = select.select([self.popen.stdout], [], [], timeout)
        if not ready:
            raise AssertionError(f"the holder process said nothing within {timeout} s")
        line = self.popen.stdout.readline()
        if not line:
            self.popen.wait(timeout)
            raise AssertionError(
                f"the holder process ended: {self.popen.stderr.read() if self.popen.stderr else ''}"
            )
        return dict(json.loads(line))

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(30)
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def procs() -> Iterator[Callable[..., Proc]]:
    started: list[Proc] = []

    def start(share: RealShare, mode: str, slots: str, log: Path, *extra: str) -> Proc:
        proc = Proc(share, mode, slots, log, *extra)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        with_group = proc.popen.poll() is None
        if with_group:
            os.killpg(proc.popen.pid, signal.SIGCONT)
        proc.stop()


def test_a_killed_holders_slot_is_free_in_under_two_seconds(share: RealShare, procs, tmp_path: Path) -> None:
    """kill -9 of a holder: its slot is granted to the next within 2 s, long before its ttl (6 s)."""
    ttl = 6.0
    share.open().register_devices([DeviceSpec("board-1")])
    share.wait_for_uptime(ttl)
    victim = procs(share, "hold", "board-1:0", tmp_path / "victim.log", "--ttl", str(ttl))
    assert victim.event()["event"] == "granted"
    waiter = share.holder("run-next", ttl=ttl)
    assert waiter.try_acquire([SlotKey("board-1")]) is None
    os.kill(victim.popen.pid, signal.SIGKILL)
    killed = time.monotonic()
    lease = waiter.acquire([SlotKey("board-1")], wait=ttl)
    freed = time.monotonic() - killed
    assert freed < 2.0, f"the slot took {freed:.2f} s to free"
    assert lease.token > 0


def test_a_frozen_run_loses_its_lease_at_expiry_and_finds_out_when_woken(
    share: RealShare, procs, tmp_path: Path
) -> None:
    """SIGSTOP of the whole run past its ttl: the next waiter gets the slot by ttl + 1 s; woken, the
    run finds its lease gone before it touches the device again (its own log says so)."""
    ttl = 2.0
    share.open().register_devices([DeviceSpec("board-1")])
    log = tmp_path / "frozen.log"
    frozen = procs(share, "hold", "board-1:0", log, "--ttl", str(ttl))
    granted = frozen.event()
    assert granted["event"] == "granted"
    time.sleep(0.3)  # it uses the device a few times
    os.killpg(frozen.popen.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    waiter = share.holder("run-next", ttl=15)
    lease = waiter.acquire([SlotKey("board-1")], wait=30)
    taken = time.monotonic()
    assert taken - stopped <= ttl + 1.0, f"the frozen run's slot took {taken - stopped:.2f} s to free"
    assert lease.token > granted["token"]
    os.killpg(frozen.popen.pid, signal.SIGCONT)
    woke = frozen.event(timeout=30)
    assert woke["event"] == "lost", woke
    assert "lost the lease on board-1 slot 0" in woke["why"]
    assert frozen.popen.wait(30) == 0
    uses = [float(line.split()[2]) for line in log.read_text().splitlines() if line.startswith("use ")]
    assert uses and max(uses) < taken, "the woken run used the device after another run was granted it"
    waiter.check(lease)  # the new holder's lease was never disturbed


def test_holders_survive_a_postgresql_restart_and_keep_their_leases(
    procs, tmp_path: Path, pg_database: str, postgres: PgServer
) -> None:
    """PostgreSQL restarted under two holders and a waiter: the holders reconnect, re-assert their
    leases with their tokens within the ttl, and the waiter never gets their slots meanwhile."""
    share = RealShare(pg_database, postgres)
    admin = share.open()
    admin.register_devices([DeviceSpec("board-1"), DeviceSpec("board-2")])
    ttl = 6.0
    holders = [
        procs(share, "hold", f"board-{i}:0", tmp_path / f"holder-{i}.log", "--ttl", str(ttl)) for i in (1, 2)
    ]
    tokens = [h.event()["token"] for h in holders]
    waiter_log = tmp_path / "waiter.log"
    waiter = procs(share, "cycle", "board-1:0", waiter_log, "--cycles", "1", "--ttl", str(ttl))
    assert wait_until(lambda: any(d.waiting for d in admin.status().devices), timeout=60)
    postgres.restart("fast")
    restarted = time.monotonic()
    time.sleep(2 * ttl)  # well past one ttl: anything not re-asserted would be gone by now
    admin_after = share.open()
    held = {lease.slot.device: lease.token for d in admin_after.status().devices for lease in d.leases}
    assert held == {"board-1": tokens[0], "board-2": tokens[1]}
    assert not waiter_log.exists() or waiter_log.read_text() == ""
    for holder in holders:
        assert holder.popen.poll() is None, "a holder died with the restart"
    for i in range(len(holders)):
        lines = (tmp_path / f"holder-{i + 1}.log").read_text().splitlines()
        after = [line for line in lines if float(line.split()[2]) > restarted + ttl]
        assert after and all(line.split()[1] == str(tokens[i]) for line in after)
    holders[0].stop()  # now the waiter gets board-1
    assert waiter.event(timeout=30)["event"] == "done"
    assert waiter_log.read_text().startswith("start board-1:0 ")


def test_fifty_holder_processes_over_four_slots_never_share_one(
    share: RealShare, procs, tmp_path: Path
) -> None:
    """50 processes taking and giving back 4 slots: the logs they write show no two holders of a
    slot at any moment, and tokens that grow slot by slot."""
    devices = [DeviceSpec(f"board-{i}") for i in range(4)]
    share.open().register_devices(devices)
    slots = ",".join(f"{d.name}:0" for d in devices)
    workers = [procs(share, "cycle", slots, tmp_path / f"h{i}.log", "--cycles", "4") for i in range(50)]
    for worker in workers:
        assert worker.event(timeout=240)["event"] == "done"
    intervals: dict[str, list[tuple[float, float, int]]] = {}
    for i in range(50):
        lines = (tmp_path / f"h{i}.log").read_text().splitlines()
        assert len(lines) == 8
        for start, end in zip(lines[::2], lines[1::2], strict=True):
            kind_s, slot, token, t0 = start.split()
            kind_e, slot_e, token_e, t1 = end.split()
            assert (kind_s, kind_e, slot, token) == ("start", "end", slot_e, token_e)
            intervals.setdefault(slot, []).append((float(t0), float(t1), int(token)))
    assert sum(len(v) for v in intervals.values()) == 200
    for slot, spans in intervals.items():
        spans.sort()
        for (_, end, token), (start, _, next_token) in itertools.pairwise(spans):
            assert start > end, f"{slot}: two holders at once"
            assert next_token > token, f"{slot}: a token did not grow"
