"""The shared run queue with real host processes on a real PostgreSQL: a host killed mid-run,
and the server restarted mid-run. Every test ends with exactly one result in the store."""

from __future__ import annotations

import collections
import json
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pg import PgServer
from testrack.store.postgres import PostgresStore

HOST = str(Path(__file__).with_name("share_host.py"))
pytestmark = pytest.mark.timeout(300)


class HostProc:
    def __init__(self, url: str, run: str, host: str, devices: str, *extra: str) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, HOST, "--share", url, "--run", run, "--host", host, "--devices", devices, *extra],  # noqa: E501
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.events: list[dict[str, Any]] = []

    def next(self, timeout: float = 120) -> dict[str, Any]:
        assert self.popen.stdout is not None
        ready, _, _ = select.select([self.popen.stdout], [], [], timeout)
        line = self.popen.stdout.readline() if ready else ""
        if not line:
            err = self.popen.stderr.read() if self.popen.poll() is not None and self.popen.stderr else ""
            raise AssertionError(f"the host said nothing more (exit code {self.popen.poll()}): {err[-2000:]}")
        event = dict(json.loads(line))
        self.events.append(event)
        return event

    def until(self, kind: str, timeout: float = 120) -> dict[str, Any]:
        while True:
            event = self.next(timeout)
            if event["event"] == kind:
                return event


@pytest.fixture
def hosts() -> Iterator[list[HostProc]]:
    started: list[HostProc] = []
    yield started
    for proc in started:
        if proc.popen.poll() is None:
            proc.popen.kill()
        proc.popen.wait(30)
        for stream in (proc.popen.stdout, proc.popen.stderr):
            if stream is not None:
                stream.close()


def _uptime_at_least(postgres: PgServer, seconds: float) -> None:
    with postgres.admin() as conn:
        row = conn.execute("SELECT extract(epoch FROM now() - pg_postmaster_start_time())").fetchone()
    assert row is not None
    time.sleep(max(0.0, seconds + 0.5 - float(row[0])))


def _one_result_each(url: str, count: int) -> collections.Counter[str]:
    store = PostgresStore(url)
    try:
        (run,) = store.runs()
        per_test = collections.Counter(r.nodeid for r in store.results(run.id))
    finally:
        store.close()
    assert sorted(per_test) == [f"t.py::test_{i:03d}" for i in range(count)]
    return per_test


def test_a_host_killed_mid_run_loses_no_test_and_none_counts_twice(
    postgres: PgServer, pg_database: str, hosts: list[HostProc]
) -> None:
    """kill -9 of one host while it runs a test: the other host runs what it had claimed (the running
    test again, within --rack-retry-crashed 1), and every test has exactly one result."""
    ttl = 4.0
    _uptime_at_least(postgres, ttl)
    extra = ("--tests", "30", "--seconds", "0.1", "--budget", "1", "--ttl", str(ttl))
    a = HostProc(pg_database, "ci-7", "host-a", "board-a", *extra)
    hosts.append(a)
    assert a.until("joined")["created"] is True
    b = HostProc(pg_database, "ci-7", "host-b", "board-b", *extra)
    hosts.append(b)
    assert b.until("joined")["created"] is False
    for _ in range(3):
        a.until("done")
    a.until("started")
    a.popen.send_signal(signal.SIGKILL)
    a.popen.wait(30)
    assert a.popen.stdout is not None
    a.events.extend(json.loads(line) for line in a.popen.stdout.read().splitlines())
    done_by_a = {e["nodeid"] for e in a.events if e["event"] == "done"}
    running = {e["nodeid"] for e in a.events if e["event"] == "started"} - done_by_a
    b.until("left")
    assert _finished(pg_database, "ci-7")
    per_test = _one_result_each(pg_database, 30)
    assert set(per_test.values()) == {1}, per_test
    run_by_b = {e["nodeid"] for e in b.events if e["event"] == "done"}
    assert running <= run_by_b  # the test a died running was run again by b (budget 1)
    assert not done_by_a & run_by_b


def test_a_postgresql_restart_mid_run_loses_nothing(
    postgres: PgServer, pg_database: str, hosts: list[HostProc]
) -> None:
    """The server restarts while two hosts work: they reconnect and go on; every test has exactly one
    result, all passed."""
    extra = ("--tests", "40", "--seconds", "0.05", "--batch", "3")
    a = HostProc(pg_database, "ci-8", "host-a", "board-a", *extra)
    hosts.append(a)
    a.until("joined")
    b = HostProc(pg_database, "ci-8", "host-b", "board-b", *extra)
    hosts.append(b)
    b.until("joined")
    for _ in range(5):
        a.until("done")
    postgres.restart("fast")
    left = [a.until("left"), b.until("left")]
    assert sum(e["reconnections"] for e in left) >= 2
    assert _finished(pg_database, "ci-8")
    assert not [e for h in (a, b) for e in h.events if e["event"] == "lost"]
    per_test = _one_result_each(pg_database, 40)
    assert set(per_test.values()) == {1}, per_test


def _finished(url: str, run: str) -> bool:
    """Whether the shared run is marked finished (by whichever host's call saw it done first:
    a host's last progress check can finish it before that host's leave does)."""
    from testrack.share.pgqueue import PostgresQueue
    from testrack.share.postgres import PostgresShare

    share = PostgresShare(url)
    try:
        return PostgresQueue(share).progress(run).finished is not None
    finally:
        share.close()
