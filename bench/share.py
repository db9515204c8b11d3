#!/usr/bin/env python3
"""Measure the shared rack on a local PostgreSQL with default settings, side by side in one run.

Usage: python bench/share.py [--seconds 5] [--quick] [--only NAME ...]

Starts its own server (``initdb`` + ``pg_ctl`` from Debian's packages, as tests/pg.py does,
default settings but for the port and socket), and measures with real client processes:

- ``lease``: lease grant+release cycles/s, 50 client processes (50 connections), each on its own
  device, then all 50 over 4 devices;
- ``queue``: claims+results/s of the shared run queue, 8 host processes, batches of 100;
- ``kill`` / ``freeze``: time until a killed (SIGKILL) or frozen (SIGSTOP) holder's slot is
  granted to a waiter, with the default 15 s expiry;
- ``fair``: Jain's index of the device time 4 equal runs waiting for one device got;
- ``two``: two equal runs on one 2-device rack: their finish times;
- ``hosts``: 4 hosts x 4 devices on one device-bound suite (simulated tests: a sleep, no pytest)
  against 1 host x 4 devices, and a trivial one-slot run for the start-up;
- ``pytest-hosts``: the same with real hosts, ``pytest --rack-run`` processes of simulated
  devices (and a trivial one-slot pytest run for the start-up).

Prints a Markdown table (docs/sharing.md shows one). The machine it ran on is named with its
CPU count: on a shared machine the figures are lower bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from install import warn_if_editable  # noqa: E402

from pg import PgServer, start_server, stop_server  # noqa: E402
from testrack.share import DeviceSpec, Holder, HolderInfo, SlotKey  # noqa: E402
from testrack.share.pgqueue import PostgresQueue  # noqa: E402
from testrack.share.postgres import PostgresShare  # noqa: E402
from testrack.share.queue import QueuedTest, RunPlan  # noqa: E402
from testrack.store import Result  # noqa: E402

# -- workers: each a process of its own, started as `share.py worker MODE ...` --------------


def _holder(url: str, run: str, ttl: float = 15.0) -> Holder:
    holder = Holder(PostgresShare(url), HolderInfo(run, "bench", os.getpid(), "bench"), ttl=ttl)
    holder.start_heartbeat(_lost)
    return holder


def _lost(leases: list[Any]) -> None:
    print(f"bench worker {os.getpid()}: lost {len(leases)} lease(s)", file=sys.stderr, flush=True)


def worker_lease(url: str, device: str, start: float, seconds: float) -> dict[str, Any]:
    """Take and give back one slot as often as possible between start and start + seconds."""
    holder = _holder(url, f"lease-{os.getpid()}")
    slot = [SlotKey(device)]
    while time.time() < start:
        time.sleep(0.001)
    cycles = 0
    while time.time() < start + seconds:
        holder.release(holder.acquire(slot))
        cycles += 1
    holder.close()
    return {"cycles": cycles}


def worker_queue(url: str, run: str, device: str, tests: int, batch: int, start: float) -> dict[str, Any]:
    """A host with one device that claims and completes batches, doing no work, until none is left."""
    share = PostgresShare(url)
    queue = PostgresQueue(share)
    holder = Holder(share, HolderInfo(run, device, os.getpid(), "bench"))
    holder.start_heartbeat(_lost)
    plan = RunPlan(run, "load", tuple(QueuedTest(f"t.py::t{i}", float(i % 7)) for i in range(tests)))
    queue.open_run(plan, device, holder.id)
    queue.add_routes(run, device, {device: [t.nodeid for t in plan.tests]})
    lease = holder.acquire([SlotKey(device)])
    while time.time() < start:
        time.sleep(0.001)
    done = 0
    while True:
        claims = queue.claim(run, device, holder.id, lease.token, device, batch)
        if not claims:
            break
        now = time.time()
        finished = [(c, Result(c.nodeid, device, "gw0", "passed", 0.0, now, now)) for c in claims]
        done += len(queue.complete(run, holder.id, lease.token, finished))
    return {"done": done, "end": time.time()}


def worker_hold(url: str, device: str) -> dict[str, Any]:
    """Hold a slot with the default expiry, heartbeating, until killed, frozen, or told it is lost."""
    holder = _holder(url, f"hold-{os.getpid()}")
    lost = threading.Event()
    holder.start_heartbeat(lambda leases: lost.set())
    lease = holder.acquire([SlotKey(device)])
    print(json.dumps({"granted": lease.token}), flush=True)
    while not lost.is_set():
        if not lease.valid_at(time.monotonic()):
            break
        time.sleep(0.02)
    return {"lost": True}


def worker_run(
    url: str, run: str, devices: str, tests: int, test_seconds: float, start: float, until: float
) -> dict:
    """One run: a thread per device takes its lease, runs tests from the run's own list, and gives
    the device back between tests when the share says another run has had less."""
    holder = _holder(url, run)
    work = list(range(tests)) if tests else None
    lock = threading.Lock()
    ends: list[float] = []

    def take() -> bool:
        with lock:
            if work is None:
                return time.time() < until
            if not work:
                return False
            work.pop()
            return True

    def device_thread(device: str) -> None:
        slot = [SlotKey(device)]
        lease = holder.acquire(slot)
        while take():
            time.sleep(test_seconds)
            if holder.should_give_back(lease):
                holder.release(lease)
                lease = holder.acquire(slot)
        holder.release(lease)
        ends.append(time.time())

    while time.time() < start:
        time.sleep(0.001)
    threads = [threading.Thread(target=device_thread, args=(d,)) for d in devices.split(",")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    holder.close()
    return {"finished": max(ends)}


def worker_host(
    url: str, run: str, host: str, devices: str, tests: int, test_seconds: float
) -> dict[str, Any]:
    """A host of a shared run with several devices (simulated tests: a sleep each)."""
    share = PostgresShare(url)
    queue = PostgresQueue(share)
    names = devices.split(",")
    share.register_devices([DeviceSpec(d) for d in names])
    holder = Holder(share, HolderInfo(run, host, os.getpid(), "bench"))
    holder.start_heartbeat(_lost)
    plan = RunPlan(run, "load", tuple(QueuedTest(f"t.py::t{i}", test_seconds) for i in range(tests)))
    queue.open_run(plan, host, holder.id)
    queue.add_routes(run, host, {d: [t.nodeid for t in plan.tests] for d in names})

    def device_thread(device: str) -> None:
        lease = holder.acquire([SlotKey(device)])
        while True:
            claims = queue.claim(run, host, holder.id, lease.token, device, 2)
            if not claims:
                break
            for claim in claims:
                began = time.time()
                time.sleep(test_seconds)
                result = Result(claim.nodeid, device, host, "passed", test_seconds, began, time.time())
                queue.complete(run, holder.id, lease.token, [(claim, result)])
        holder.release(lease)

    threads = [threading.Thread(target=device_thread, args=(d,)) for d in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queue.leave(run, host)
    return {"end": time.time()}


WORKERS: dict[str, Callable[..., dict[str, Any]]] = {
    "lease": worker_lease,
    "queue": worker_queue,
    "hold": worker_hold,
    "run": worker_run,
    "host": worker_host,
}


def _worker(argv: list[str]) -> int:
    mode, args = argv[0], json.loads(argv[1])
    print(json.dumps(WORKERS[mode](**args)), flush=True)
    return 0


# -- the measurements ------------------------------------------------------------------------


def _spawn(mode: str, **args: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "worker", mode, json.dumps(args)],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


def _results(procs: list[subprocess.Popen[str]], timeout: float = 600) -> list[dict[str, Any]]:
    out = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=timeout)
        lines = stdout.strip().splitlines()
        if proc.returncode or not lines:
            raise RuntimeError(f"a bench worker failed (exit code {proc.returncode}); its error is above")
        out.append(json.loads(lines[-1]))
    return out


def _fresh(server: PgServer, devices: list[DeviceSpec]) -> str:
    url = server.url(server.create_database("bench"))
    share = PostgresShare(url)
    share.register_devices(devices)
    share.close()
    return url


def measure_lease(server: PgServer, seconds: float) -> list[tuple[str, str, str]]:
    rows = []
    for label, devices in (("50 clients, own device each", 50), ("50 clients over 4 devices", 4)):
        url = _fresh(server, [DeviceSpec(f"dev-{i}") for i in range(devices)])
        start = time.time() + 8  # 50 Python processes take a few seconds to start on a small machine
        procs = [
            _spawn("lease", url=url, device=f"dev-{i % devices}", start=start, seconds=seconds)
            for i in range(50)
        ]
        total = sum(r["cycles"] for r in _results(procs))
        target = ">= 1,000/s" if devices == 50 else "(none: contention)"
        rows.append((f"lease grant+release, {label}", f"{total / seconds:,.0f} cycles/s", target))
    return rows


def measure_queue(server: PgServer, tests: int) -> list[tuple[str, str, str]]:
    url = _fresh(server, [DeviceSpec(f"host-{i}") for i in range(8)])
    start = time.time() + 6
    procs = [
        _spawn("queue", url=url, run="q", device=f"host-{i}", tests=tests, batch=100, start=start)
        for i in range(8)
    ]
    results = _results(procs)
    done = sum(r["done"] for r in results)
    wall = max(r["end"] for r in results) - start
    assert done == tests, (done, tests)
    measure = f"shared queue claims+results, 8 hosts, batches of 100 ({tests:,} tests)"
    return [(measure, f"{done / wall:,.0f} tests/s", ">= 5,000/s")]


def _uptime(server: PgServer) -> float:
    with server.admin() as conn:
        row = conn.execute("SELECT extract(epoch FROM now() - pg_postmaster_start_time())").fetchone()
    return float(row[0]) if row else 0.0


def measure_kill(server: PgServer, trials: int) -> list[tuple[str, str, str]]:
    url = _fresh(server, [DeviceSpec("victim")])
    time.sleep(max(0.0, 15.5 - _uptime(server)))  # a lock is a death signal once the server is up > ttl
    waiter = _holder(url, "waiter")
    times = []
    for _ in range(trials):
        proc = _spawn("hold", url=url, device="victim")
        assert proc.stdout is not None
        json.loads(proc.stdout.readline())
        proc.kill()
        killed = time.monotonic()
        lease = waiter.acquire([SlotKey("victim")], wait=30)
        times.append(time.monotonic() - killed)
        waiter.release(lease)
        proc.communicate(timeout=30)
    result = f"median {statistics.median(times):.2f} s, max {max(times):.2f} s ({trials} trials)"
    return [("slot of a killed holder (SIGKILL) granted to a waiter", result, "< 2 s")]


def measure_freeze(server: PgServer) -> list[tuple[str, str, str]]:
    url = _fresh(server, [DeviceSpec("frozen")])
    proc = _spawn("hold", url=url, device="frozen")
    assert proc.stdout is not None
    json.loads(proc.stdout.readline())
    os.killpg(proc.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    waiter = _holder(url, "waiter")
    waiter.acquire([SlotKey("frozen")], wait=60)
    took = time.monotonic() - stopped
    os.killpg(proc.pid, signal.SIGCONT)
    woke = json.loads(proc.communicate(timeout=60)[0].strip().splitlines()[-1])
    assert woke == {"lost": True}
    return [("slot of a frozen holder (SIGSTOP of its group) granted, expiry 15 s", f"{took:.2f} s",
             "<= expiry + 1 s = 16 s")]  # fmt: skip


def _jain(values: list[float]) -> float:
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values))


def measure_fair(server: PgServer, seconds: float) -> list[tuple[str, str, str]]:
    url = _fresh(server, [DeviceSpec("fair")])
    start = time.time() + 5
    until = start + seconds
    procs = [
        _spawn(
            "run",
            url=url,
            run=f"run-{i}",
            devices="fair",
            tests=0,
            test_seconds=0.02,
            start=start,
            until=until,
        )
        for i in range(4)
    ]
    _results(procs)
    share = PostgresShare(url)
    records = share.grant_records()
    share.close()
    window = (start + 1.0, until - 0.5)  # all four running, all waiting for the one device
    used = []
    for i in range(4):
        total = 0.0
        for r in records:
            if r.run == f"run-{i}":
                end = r.released if r.released is not None else window[1]
                total += max(0.0, min(end, window[1]) - max(r.granted, window[0]))
        used.append(total)
    return [("Jain index of device time, 4 equal runs waiting for 1 device",
             f"{_jain(used):.3f} ({', '.join(f'{u:.1f}' for u in used)} s)", ">= 0.95")]  # fmt: skip


def measure_two(server: PgServer, tests: int) -> list[tuple[str, str, str]]:
    url = _fresh(server, [DeviceSpec("pair-0"), DeviceSpec("pair-1")])
    start = time.time() + 4
    procs = [
        _spawn("run", url=url, run=f"equal-{i}", devices="pair-0,pair-1", tests=tests, test_seconds=0.05,
               start=start, until=0.0)
        for i in range(2)
    ]  # fmt: skip
    ends = [r["finished"] - start for r in _results(procs)]
    spread = abs(ends[0] - ends[1]) / max(ends)
    return [(f"two equal runs ({tests} x 50 ms each) on one 2-device rack: finish times",
             f"{ends[0]:.2f} s and {ends[1]:.2f} s ({spread:.0%} apart)", "within 10 %")]  # fmt: skip


def measure_hosts(server: PgServer, tests: int, test_seconds: float) -> list[tuple[str, str, str]]:
    def run_hosts(hosts: int, per_host: int, count: int, tag: str) -> float:
        url = server.url(server.create_database("bench"))
        started = time.time()
        procs = [
            _spawn(
                "host", url=url, run=tag, host=f"h{h}", tests=count, test_seconds=test_seconds,
                devices=",".join(f"{tag}-h{h}-d{d}" for d in range(per_host)),
            )
            for h in range(hosts)
        ]  # fmt: skip
        _results(procs)
        return time.time() - started

    startup = run_hosts(1, 1, 1, "startup")
    sixteen = run_hosts(4, 4, tests, "four")
    four = run_hosts(1, 4, tests, "one")
    ideal = tests * test_seconds / 16 + startup
    return [
        (f"{tests} tests x {test_seconds * 1000:.0f} ms, 4 hosts x 4 devices (simulated tests)",
         f"{sixteen:.2f} s = {sixteen / ideal:.2f} x (work/16 + start-up {startup:.2f} s)", "<= 1.15 x"),
        ("... against 1 host x 4 devices", f"{four:.2f} s: {four / sixteen:.2f} x faster with 4", ">= 3.5 x"),
    ]  # fmt: skip


#: The device-bound suite of ``pytest-hosts``: each test drives its device for a while (a sleep).
DEVICE_SUITE = """
import time
import pytest

@pytest.mark.parametrize("n", range({count}))
def test_device_work(device, n):
    time.sleep({seconds})
"""


def measure_pytest_hosts(server: PgServer, tests: int, test_seconds: float) -> list[tuple[str, str, str]]:
    """The same as ``hosts`` with real hosts: pytest processes with ``--rack-run``, each with its
    own rack file of simulated devices, sharing one run through the PostgreSQL share."""
    import tempfile

    from testrack.rack import Device, dump_rack

    project = Path(tempfile.mkdtemp(prefix="testrack-bench-hosts-"))
    (project / "test_device.py").write_text(DEVICE_SUITE.format(count=tests, seconds=test_seconds))
    (project / "test_trivial.py").write_text("def test_trivial(device):\n    pass\n")
    env = {k: v for k, v in os.environ.items() if k not in ("TESTRACK_SHARE", "PYTHONDONTWRITEBYTECODE")}
    # pytest-rerunfailures (in the test extras, for tests/test_plugins.py) holds a socket in every
    # worker, which keeps testrack from cloning workers (docs/architecture.md, "Clones"); the
    # suite does not use it. (The figures users get come from a regular install without it.)
    env["PYTEST_ADDOPTS"] = "-p no:randomly -p no:cacheprovider -p no:rerunfailures"

    def run_hosts(hosts: int, per_host: int, tag: str, target: str) -> float:
        url = server.url(server.create_database("bench"))
        procs = []
        started = time.time()
        for h in range(hosts):
            rack = project / f"{tag}-{h}.toml"
            devices = [
                Device(f"{tag}-h{h}-d{d}", "board", f"127.0.{h + 1}.{d + 1}:1") for d in range(per_host)
            ]
            rack.write_text(dump_rack(devices))
            args = [sys.executable, "-m", "pytest", "-q", target, "--rack", str(rack), "--rack-share", url]
            if hosts > 1:
                args += ["--rack-run", tag, "--rack-host", f"h{h}"]
            procs.append(subprocess.Popen(args, cwd=project, env=env, stdout=subprocess.PIPE, text=True))
        for proc in procs:
            out, _ = proc.communicate(timeout=900)
            if proc.returncode != 0:
                raise RuntimeError(f"a bench host failed (exit code {proc.returncode}):\n{out[-3000:]}")
        return time.time() - started

    startup = run_hosts(1, 1, "startup", "test_trivial.py")
    sixteen = run_hosts(4, 4, "four", "test_device.py")
    four = run_hosts(1, 4, "one", "test_device.py")
    ideal = tests * test_seconds / 16 + startup
    return [
        (f"{tests} tests x {test_seconds * 1000:.0f} ms, 4 pytest hosts x 4 devices (--rack-run)",
         f"{sixteen:.2f} s = {sixteen / ideal:.2f} x (work/16 + start-up {startup:.2f} s)", "<= 1.15 x"),
        ("... against 1 pytest host x 4 devices", f"{four:.2f} s: {four / sixteen:.2f} x faster with 4",
         ">= 3.5 x"),
    ]  # fmt: skip


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        return _worker(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="length of each throughput run (default: 5)"
    )
    parser.add_argument("--quick", action="store_true", help="smaller runs (for a busy, shared machine)")
    parser.add_argument(
        "--only",
        nargs="*",
        choices=["lease", "queue", "kill", "freeze", "fair", "two", "hosts", "pytest-hosts"],
    )
    args = parser.parse_args()
    warn_if_editable(ROOT, "bench,postgresql")
    chosen = set(args.only or ["lease", "queue", "kill", "freeze", "fair", "two", "hosts", "pytest-hosts"])
    server = start_server()  # default settings
    rows: list[tuple[str, str, str]] = []
    try:
        steps: list[tuple[str, Callable[[], list[tuple[str, str, str]]]]] = [
            ("lease", lambda: measure_lease(server, args.seconds)),
            ("queue", lambda: measure_queue(server, 5_000 if args.quick else 20_000)),
            ("fair", lambda: measure_fair(server, args.seconds * 2)),
            ("two", lambda: measure_two(server, 40 if args.quick else 100)),
            ("kill", lambda: measure_kill(server, 3 if args.quick else 5)),
            ("freeze", lambda: measure_freeze(server)),
            (
                "hosts",
                lambda: measure_hosts(server, 320 if args.quick else 1600, 0.05 if args.quick else 0.1),
            ),
            (
                "pytest-hosts",
                lambda: measure_pytest_hosts(
                    server, 320 if args.quick else 1600, 0.05 if args.quick else 0.1
                ),
            ),
        ]
        for name, step in steps:
            if name in chosen:
                print(f"measuring {name} ...", file=sys.stderr, flush=True)
                rows.extend(step())
    finally:
        stop_server(server)
    print(
        f"\nPostgreSQL 15, default settings, local socket; {os.cpu_count()} CPUs; "
        f"{time.strftime('%Y-%m-%d')}\n"
    )
    print("| measure | result | target |\n|---|---|---|")
    for measure, result, target in rows:
        print(f"| {measure} | {result} | {target} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
