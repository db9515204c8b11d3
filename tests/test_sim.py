"""The simulated rack: its wire protocol, its addresses, its rack file, its log."""

from __future__ import annotations

import asyncio
import errno
import gc
import json
import re
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testrack.rack import load_rack
from testrack.sim import (
    SimClient,
    SimDeviceError,
    SimRack,
    SimRecord,
    SimRequestLog,
    SimStartError,
)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimRack]:
    with SimRack(count=3) as rack:
        yield rack


@pytest.fixture(autouse=True)
def _fresh_log(sim: SimRack) -> None:
    sim.log.clear()


def raw_exchange(address: str, *lines: bytes) -> list[dict[str, Any]]:
    """Send raw lines on one connection and read one reply per line."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        replies = sock.makefile("rb")
        out = []
        for line in lines:
            sock.sendall(line)
            out.append(json.loads(replies.readline()))
        return out


def test_identify(sim: SimRack) -> None:
    """identify answers with the device's own name, kind, address and serial."""
    for device in sim.devices:
        assert SimClient(device.address).identify() == {
            "ok": True,
            "name": device.name,
            "kind": "board",
            "address": device.address,
            "serial": device.attrs["serial"],
        }


def test_echo(sim: SimRack) -> None:
    """echo returns any JSON value unchanged, several times over one connection."""
    data = {"nested": [1, 2.5, None, True], "text": "grüße"}
    with SimClient(sim.devices[0].address) as client:
        assert client.echo(data) == data
        assert client.echo("again") == "again"


def test_work_keeps_the_device_busy(sim: SimRack) -> None:
    """work(ms) answers only after about ms milliseconds and says how long it waited."""
    started = time.perf_counter()
    reply = SimClient(sim.devices[0].address).work(150)
    elapsed = time.perf_counter() - started
    assert 0.14 <= elapsed < 1.0
    assert reply == {
        "ok": True,
        "ms": 150,
        "waited_ms": reply["waited_ms"],
        "device": sim.devices[0].address,
    }
    assert reply["waited_ms"] < 50


def _work_in_threads(addresses: list[str], ms: int) -> tuple[float, list[dict[str, Any]]]:
    replies: list[dict[str, Any]] = []
    barrier = threading.Barrier(len(addresses))

    def client(address: str) -> None:
        with SimClient(address) as c:
            c.echo(None)  # connected before the race starts
            barrier.wait()
            replies.append(c.work(ms))

    threads = [threading.Thread(target=client, args=(a,)) for a in addresses]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started, replies


def test_work_on_one_device_is_exclusive(sim: SimRack) -> None:
    """Two clients of one device queue up: the second waits for the first, as with real boards."""
    address = sim.devices[0].address
    elapsed, replies = _work_in_threads([address, address], 200)
    assert elapsed >= 0.39
    waits = sorted(r["waited_ms"] for r in replies)
    assert waits[0] < 50 and waits[1] >= 150
    first, second = sorted(sim.log.records(device="board-1", op="work"), key=lambda r: r.start)
    assert second.start >= first.end - 0.001
    assert second.waited_ms == waits[1]


def test_different_devices_work_in_parallel(sim: SimRack) -> None:
    """Devices do not share a lock: two devices finish two works in the time of one."""
    elapsed, replies = _work_in_threads([sim.devices[0].address, sim.devices[1].address], 200)
    assert elapsed < 0.35
    assert all(r["waited_ms"] < 50 for r in replies)


def test_bad_requests_get_an_error_and_the_connection_stays_usable(sim: SimRack) -> None:
    """Bad JSON, non-objects, unknown ops and bad ms answer ok=false; the connection stays open."""
    address = sim.devices[1].address
    replies = raw_exchange(
        address,
        b"this is not json\n",
        b"[1, 2]\n",
        b'{"op": "reboot"}\n',
        b'{"op": "work", "ms": -5}\n',
        b'{"op": "work", "ms": "10"}\n',
        b'{"op": "identify"}\n',
    )
    assert [r["ok"] for r in replies] == [False] * 5 + [True]
    assert replies[0]["error"].startswith("invalid JSON")
    assert replies[1]["error"].startswith("a request must be a JSON object")
    assert replies[2]["error"] == "unknown op 'reboot'; use identify, echo or work"
    assert replies[3]["error"] == 'work needs "ms": a number >= 0, not -5'
    assert replies[4]["error"] == "work needs \"ms\": a number >= 0, not '10'"
    assert replies[5]["name"] == "board-2"
    assert [r.ok for r in sim.log.records(device="board-2")] == [False] * 5 + [True]


def test_benchmark_style_request_is_work(sim: SimRack) -> None:
    """A request with "ms" and no "op" (the benchmark workloads' format) is served as work."""
    address = sim.devices[2].address
    request = {"ms": 30, "test": "test_w1.py::test_a", "worker": "gw0", "pid": 1234}
    [reply] = raw_exchange(address, json.dumps(request).encode() + b"\n")
    assert reply["ok"] is True and reply["device"] == address and "waited_ms" in reply
    [record] = sim.log.records(device="board-3")
    assert (record.op, record.ms, record.test) == ("work", 30, "test_w1.py::test_a")
    assert record.end - record.start >= 0.029


def test_log_names_the_test_that_asked(sim: SimRack, request: pytest.FixtureRequest) -> None:
    """SimClient.work labels its request with the running pytest test, so logs show who did what."""
    SimClient(sim.devices[0].address).work(1)
    SimClient(sim.devices[1].address).work(1, test="explicit")
    assert [(r.device, r.test) for r in sim.log.records(op="work")] == [
        ("board-1", request.node.nodeid),
        ("board-2", "explicit"),
    ]


def test_addresses_share_one_port_on_consecutive_loopback_hosts(sim: SimRack) -> None:
    """Device i listens on 127.0.0.(11+i), all on the same port, named board-1, board-2, ..."""
    port = sim.port
    assert port > 0
    assert [(d.name, d.kind, d.address) for d in sim.devices] == [
        (f"board-{i}", "board", f"127.0.0.{10 + i}:{port}") for i in (1, 2, 3)
    ]
    for d in sim.devices:
        assert d.env == {"TESTRACK_SIM_ADDRESS": d.address}
        assert d.attrs["simulated"] is True


def test_serials_are_stable_and_distinct() -> None:
    """Serials depend on kind and number only, so they survive restarts (for identity pinning)."""
    with SimRack(count=2, kind="probe", first_host=40) as one:
        first = [d.attrs["serial"] for d in one.devices]
    with SimRack(count=2, kind="probe", first_host=50) as two:
        second = [d.attrs["serial"] for d in two.devices]
    assert first == second
    assert len(set(first)) == 2
    assert all(re.fullmatch(rf"probe-{i}-SIM[0-9A-F]{{8}}", s) for i, s in enumerate(first, 1))


def test_rack_file_round_trip(sim: SimRack, tmp_path: Path) -> None:
    """write_rack writes a file that load_rack reads back as the very same devices and mode."""
    path = sim.write_rack(tmp_path / "testrack.toml", mode="load")
    rack = load_rack(str(path), tmp_path)
    assert rack.devices == sim.devices
    assert rack.mode == "load"


def test_set_serial_changes_the_reported_identity() -> None:
    """set_serial makes identify (and .devices) report the new serial, as a swapped board would."""
    with SimRack(count=2, first_host=60) as rack:
        rack.set_serial("board-2", "IMPOSTOR-1")
        assert SimClient(rack.devices[1].address).identify()["serial"] == "IMPOSTOR-1"
        assert rack.devices[1].attrs["serial"] == "IMPOSTOR-1"
        assert SimClient(rack.devices[0].address).identify()["serial"].startswith("board-1-SIM")
        with pytest.raises(
            ValueError, match=r"no simulated device named 'board-9'; this rack has board-1, board-2"
        ):
            rack.set_serial("board-9", "x")


def test_client_error_names_the_address(sim: SimRack) -> None:
    """A refused request raises SimDeviceError naming the device address and keeping the reply."""
    address = sim.devices[0].address
    with pytest.raises(SimDeviceError) as info:
        SimClient(address).request({"op": "bogus"})
    assert str(info.value) == (
        f"simulated device {address}: the device refused the request: "
        "unknown op 'bogus'; use identify, echo or work"
    )
    assert info.value.address == address
    assert info.value.reply == {
        "ok": False,
        "error": "unknown op 'bogus'; use identify, echo or work",
    }


def test_stop_closes_the_devices_and_start_reopens_them() -> None:
    """After stop() a device is unreachable (SimDeviceError naming it); start() serves again."""
    rack = SimRack(count=1, first_host=70).start()
    address = rack.devices[0].address
    rack.stop()
    assert not rack.running
    with pytest.raises(SimDeviceError, match=re.escape(f"simulated device {address}: cannot talk")):
        SimClient(address, timeout=2).identify()
    with rack:
        assert SimClient(rack.devices[0].address).identify()["name"] == "board-1"


def test_port_in_use_is_reported() -> None:
    """A port taken on a device's address fails start() with SimStartError naming host and port."""
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.80", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        rack = SimRack(count=1, first_host=80, port=port)
        with pytest.raises(SimStartError) as info:
            rack.start()
    assert not rack.running
    assert (info.value.host, info.value.port, info.value.errno) == (
        "127.0.0.80",
        port,
        errno.EADDRINUSE,
    )
    assert str(info.value) == (
        f"cannot listen on 127.0.0.80:{port}: port {port} is already in use on 127.0.0.80; "
        "pick another port, or port 0 for a free one"
    )


def test_port_zero_retries_when_the_chosen_port_is_taken_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With port=0, a port free on the first address but taken on another is traded for another."""
    with socket.socket() as probe:  # find a port, then occupy it on the second address only
        probe.bind(("127.0.0.91", 0))
        taken = probe.getsockname()[1]
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.92", taken))
        blocker.listen()
        real_start_server = asyncio.start_server
        ports = iter([taken])

        async def first_pick_is_taken(*args: Any, **kwargs: Any) -> Any:
            host, port = args[1], args[2]
            if host == "127.0.0.91" and port == 0:
                port = next(ports, 0)  # the "system" picks the taken port once, then any port
            return await real_start_server(args[0], host, port, *args[3:], **kwargs)

        monkeypatch.setattr("testrack.sim.asyncio.start_server", first_pick_is_taken)
        with SimRack(count=2, first_host=91) as rack:
            assert rack.port != taken
            assert SimClient(rack.devices[1].address).identify()["name"] == "board-2"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 0}, "a simulated rack needs at least 1 device, not 0"),
        ({"count": 10, "first_host": 250}, "10 devices from 127.0.0.250 do not fit"),
        ({"kind": "my board"}, "kind 'my board' may use only letters, digits and . _ -"),
        ({"port": 70000}, "port must be 0..65535"),
    ],
)
def test_bad_rack_parameters(kwargs: dict[str, Any], message: str) -> None:
    """Impossible racks are refused up front with a message that says what is allowed."""
    with pytest.raises(ValueError, match=re.escape(message)):
        SimRack(**kwargs)


def test_devices_need_a_running_rack() -> None:
    """Asking an unstarted rack for its devices says to start it, rather than invent addresses."""
    with pytest.raises(RuntimeError, match="not running"):
        SimRack().devices  # noqa: B018


def test_bad_address_is_refused_by_the_client() -> None:
    """An address without a port is refused when the client is made, naming the expected form."""
    with pytest.raises(SimDeviceError, match=r"'localhost' is not HOST:PORT"):
        SimClient("localhost")


def test_stop_interrupts_work_in_progress(caplog: pytest.LogCaptureFixture) -> None:
    """stop() does not wait for a long work request; the client hears of it; asyncio logs none."""
    rack = SimRack(count=1, first_host=100).start()
    address = rack.devices[0].address
    errors: list[SimDeviceError] = []

    def busy() -> None:
        try:
            SimClient(address).work(5000)
        except SimDeviceError as exc:
            errors.append(exc)

    worker = threading.Thread(target=busy)
    worker.start()
    time.sleep(0.2)  # let the request reach the device
    started = time.perf_counter()
    rack.stop()
    worker.join(timeout=5)
    assert time.perf_counter() - started < 1.0
    assert [str(e) for e in errors] == [
        f"simulated device {address}: the device closed the connection without answering"
    ]
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []


def test_bare_client_leaves_no_socket_open(sim: SimRack) -> None:
    """SimClient(address).work(ms), used bare, closes its connection itself."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        SimClient(sim.devices[0].address).identify()
        gc.collect()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []


def test_request_log_keeps_only_the_newest_records() -> None:
    """The log is bounded, so a long-running simulator does not grow without limit."""
    log = SimRequestLog(maxlen=2)
    for n in range(3):
        log.append(SimRecord(device=f"d{n}", address="a", op="echo", ok=True, start=0, end=0))
    assert [r.device for r in log] == ["d1", "d2"]


# -- devices that stop answering -------------------------------------------------------------


def test_a_frozen_device_accepts_connections_but_never_answers() -> None:
    """freeze: connections are accepted, requests time out with the address; other devices answer."""
    with SimRack(count=2, first_host=110) as rack:
        frozen, other = (d.address for d in rack.devices)
        rack.freeze("board-1")
        host, port = frozen.rsplit(":", 1)
        socket.create_connection((host, int(port)), timeout=2).close()  # accepted, not refused
        started = time.perf_counter()
        with pytest.raises(SimDeviceError) as info:
            SimClient(frozen, timeout=0.2).identify()
        assert time.perf_counter() - started < 2
        assert str(info.value) == f"simulated device {frozen}: no answer within 0.2 s"
        assert info.value.address == frozen
        assert SimClient(other, timeout=2).identify()["name"] == "board-2"
        assert [r.op for r in rack.log.records(device="board-1")] == ["freeze"]


def test_thaw_releases_the_held_requests_in_order() -> None:
    """thaw: requests a frozen device held are answered then, in order, on their connection."""
    with SimRack(count=1, first_host=113) as rack:
        address = rack.devices[0].address
        rack.freeze("board-1")
        rack.freeze("board-1")  # frozen already: no second record
        replies: list[Any] = []

        def ask() -> None:
            with SimClient(address, timeout=10) as client:
                replies.append(client.echo("first"))
                replies.append(client.echo("second"))

        asker = threading.Thread(target=ask)
        asker.start()
        time.sleep(0.3)
        assert replies == [] and asker.is_alive()
        rack.thaw("board-1")
        asker.join(timeout=5)
        assert replies == ["first", "second"]
        assert [r.op for r in rack.log.records(device="board-1")] == ["freeze", "thaw", "echo", "echo"]


def test_a_device_frozen_mid_work_holds_the_answer_until_thawed() -> None:
    """Work under way when the device freezes is done, but its answer waits for thaw."""
    with SimRack(count=1, first_host=116) as rack:
        address = rack.devices[0].address
        replies: list[dict[str, Any]] = []
        worker = threading.Thread(target=lambda: replies.append(SimClient(address, timeout=10).work(300)))
        worker.start()
        time.sleep(0.15)  # the request is on the device
        rack.freeze("board-1")
        time.sleep(0.5)  # the work is done by now
        assert [r.op for r in rack.log.records(device="board-1")] == ["freeze", "work"]
        assert replies == [] and worker.is_alive()
        rack.thaw("board-1")
        worker.join(timeout=5)
        assert [r["ok"] for r in replies] == [True]


def test_a_stopped_device_refuses_connections_until_started_again() -> None:
    """stop_device: open connections close, new ones are refused (naming the address); start_device
    serves again on the same address, with the same serial."""
    with SimRack(count=2, first_host=120) as rack:
        address = rack.devices[0].address
        before = SimClient(address).identify()
        with SimClient(address, timeout=2) as open_client:
            open_client.echo(1)
            rack.stop_device("board-1")
            with pytest.raises(SimDeviceError, match=rf"^simulated device {re.escape(address)}: "):
                open_client.echo(2)
        with pytest.raises(SimDeviceError) as info:
            SimClient(address, timeout=2).identify()
        assert str(info.value).startswith(
            f"simulated device {address}: cannot talk to the device (Connection refused)"
        )
        assert info.value.address == address
        host, port = address.rsplit(":", 1)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, int(port)), timeout=2)
        assert SimClient(rack.devices[1].address).identify()["name"] == "board-2"
        rack.stop_device("board-1")  # off already: nothing happens
        rack.start_device("board-1")
        rack.start_device("board-1")  # on already: nothing happens
        assert rack.devices[0].address == address
        assert SimClient(address, timeout=2).identify() == before
        assert [r.op for r in rack.log.records(device="board-1") if r.op in ("stop", "start")] == [
            "stop",
            "start",
        ]


def test_stopping_a_frozen_device_drops_its_held_requests_and_restarting_thaws_it() -> None:
    """A frozen device switched off drops held requests at once; switched on it answers (a power cycle)."""
    with SimRack(count=1, first_host=123) as rack:
        address = rack.devices[0].address
        rack.freeze("board-1")
        errors: list[SimDeviceError] = []

        def ask() -> None:
            try:
                SimClient(address, timeout=10).identify()
            except SimDeviceError as exc:
                errors.append(exc)

        asker = threading.Thread(target=ask)
        asker.start()
        time.sleep(0.2)
        started = time.perf_counter()
        rack.stop_device("board-1")
        asker.join(timeout=5)
        assert time.perf_counter() - started < 2
        assert [str(e) for e in errors] == [
            f"simulated device {address}: the device closed the connection without answering"
        ]
        rack.start_device("board-1")
        assert SimClient(address, timeout=2).identify()["name"] == "board-1"


def test_restarting_the_rack_brings_back_stopped_and_frozen_devices() -> None:
    """stop() then start() of the whole rack serves every device again, thawed."""
    rack = SimRack(count=2, first_host=126).start()
    try:
        rack.stop_device("board-1")
        rack.freeze("board-2")
        rack.stop()
        rack.start()
        for device in rack.devices:
            assert SimClient(device.address, timeout=2).identify()["name"] == device.name
    finally:
        rack.stop()


def test_failures_need_a_known_device_on_a_running_rack() -> None:
    """freeze, thaw, stop_device, start_device: a bad name lists the rack's devices; they need it running."""
    rack = SimRack(count=2, first_host=130)
    with pytest.raises(RuntimeError, match="not running"):
        rack.freeze("board-1")
    with rack:
        for method in (rack.freeze, rack.thaw, rack.stop_device, rack.start_device):
            with pytest.raises(
                ValueError, match=r"no simulated device named 'board-9'; this rack has board-1, board-2"
            ):
                method("board-9")
