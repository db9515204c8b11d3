"""A simulated rack: real loopback TCP servers that behave like exclusive devices.

Users try testrack without hardware (``testrack sim``, ``testrack demo``) and testrack's own
tests check scheduling against it, so the simulator is product code, not a test helper.

Each device listens on its own loopback address (``127.0.0.11``, ``127.0.0.12``, ...; Linux
routes all of 127/8 to loopback) and all share one port, so a device is told apart by its
address the way real boards on a lab network are. The wire protocol is newline-delimited JSON;
one connection may carry many requests in turn:

* ``{"op": "identify"}`` -> ``{"ok": true, "name", "kind", "address", "serial"}``
* ``{"op": "echo", "data": X}`` -> ``{"ok": true, "data": X}``
* ``{"op": "work", "ms": N}`` -> busy for N ms, one ``work`` at a time per device, then
  ``{"ok": true, "ms": N, "waited_ms": W, "device": address}``; W is the time spent queueing
  behind other clients, so device contention is visible.
* A request with ``"ms"`` and no ``"op"`` is ``work``: the benchmark workloads send that.
* Anything else -> ``{"ok": false, "error": "..."}`` and the connection stays usable.

Devices can also fail the way real ones do, for tests of health checks and quarantine:
:meth:`SimRack.freeze` makes a device hang (it accepts connections and reads requests but
answers nothing until :meth:`SimRack.thaw`), and :meth:`SimRack.stop_device` switches it off
(connections are refused until :meth:`SimRack.start_device`).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import errno
import functools
import hashlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Coroutine, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from testrack.rack import Device, dump_rack

__all__ = [
    "SimClient",
    "SimDeviceError",
    "SimRack",
    "SimRecord",
    "SimRequestLog",
    "SimStartError",
]

ADDRESS_ENV = "TESTRACK_SIM_ADDRESS"
_LAST_HOST = 254
_BIND_ATTEMPTS = 8
_MAX_LINE = 1 << 20
_KIND_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_OPS = "identify, echo or work"


class SimStartError(Exception):
    """The simulated rack could not listen; ``host``, ``port`` and ``errno`` say where and why."""

    def __init__(self, message: str, *, host: str, port: int, errno: int | None) -> None:
        super().__init__(message)
        self.host = host
        self.port = port
        self.errno = errno


class SimDeviceError(Exception):
    """A simulated device was unreachable or answered ``ok: false``; the message names it."""

    def __init__(self, message: str, *, address: str, reply: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.address = address
        self.reply = reply


@dataclasses.dataclass(frozen=True)
class SimRecord:
    """One request a device served: lets tests check which device did what, and when.

    What :class:`SimRack` did to a device is recorded too, as ``op`` ``"freeze"``, ``"thaw"``,
    ``"stop"`` or ``"start"`` (``start == end``, the time it happened).
    """

    device: str
    address: str
    op: str
    ok: bool
    start: float
    """Wall time (``time.time()``) the device started serving, after any wait for its lock."""
    end: float
    waited_ms: float = 0.0
    ms: float | None = None
    test: str | None = None
    """The ``test`` field of the request: :class:`SimClient` sends the current pytest node id."""
    error: str | None = None


class SimRequestLog:
    """The records of every request, appended by the server thread, read by any thread.

    Only the newest ``maxlen`` are kept, so a simulator left serving for days stays small.
    """

    def __init__(self, maxlen: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._records: collections.deque[SimRecord] = collections.deque(maxlen=maxlen)

    def append(self, record: SimRecord) -> None:
        with self._lock:
            self._records.append(record)

    def records(self, device: str | None = None, op: str | None = None) -> list[SimRecord]:
        """A snapshot, optionally only one device's or one op's records, in arrival order."""
        with self._lock:
            snapshot = list(self._records)
        return [r for r in snapshot if (device is None or r.device == device) and (op is None or r.op == op)]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def __iter__(self) -> Iterator[SimRecord]:
        return iter(self.records())


@dataclasses.dataclass
class _SimDevice:
    """Server-side state of one device."""

    name: str
    kind: str
    host: str
    serial: str
    port: int = 0
    lock: asyncio.Lock | None = None
    answering: asyncio.Event | None = None
    """Set unless frozen: requests wait for it before they are answered, and again before the reply."""
    server: asyncio.Server | None = None
    """None while the device (or the whole rack) is stopped."""
    on: bool = False
    """Set before the server starts, cleared before it stops: connections find the device on."""
    connections: set[asyncio.Task[None]] = dataclasses.field(default_factory=set)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class SimRack:
    """``count`` simulated devices served from one asyncio loop in a daemon thread.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. Device ``i`` (from 0)
    is named ``f"{kind}-{i+1}"`` and listens on ``127.0.0.{first_host+i}``; all devices share
    one port, picked by the system when ``port`` is 0.
    """

    def __init__(self, count: int = 3, kind: str = "board", first_host: int = 11, port: int = 0) -> None:
        if count < 1:
            raise ValueError(f"a simulated rack needs at least 1 device, not {count}")
        if not 1 <= first_host <= _LAST_HOST:
            raise ValueError(f"first_host must be 1..{_LAST_HOST} (127.0.0.first_host), not {first_host}")
        if first_host + count - 1 > _LAST_HOST:
            raise ValueError(
                f"{count} devices from 127.0.0.{first_host} do not fit below "
                f"127.0.0.{_LAST_HOST + 1}; "
                f"use at most {_LAST_HOST - first_host + 1} devices or a lower first_host"
            )
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535 (0 picks a free port), not {port}")
        if not _KIND_RE.match(kind):
            raise ValueError(
                f"kind {kind!r} may use only letters, digits and . _ - (and start with a letter "
                "or digit), because it becomes part of the device names"
            )
        self.kind = kind
        self._requested_port = port
        self._devices = [
            _SimDevice(
                name=f"{kind}-{i + 1}",
                kind=kind,
                host=f"127.0.0.{first_host + i}",
                serial=_default_serial(kind, i + 1),
            )
            for i in range(count)
        ]
        self.log = SimRequestLog()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> SimRack:
        """Listen on every device address; returns once all accept connections."""
        if self._loop is not None:
            raise RuntimeError("this SimRack is already running")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=_run_loop, args=(loop,), name="testrack-sim", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            asyncio.run_coroutine_threadsafe(self._open(), loop).result(timeout=30)
        except BaseException:
            self._halt_loop()
            raise
        return self

    def stop(self) -> None:
        """Close every server and connection; a stopped rack may be started again."""
        loop = self._loop
        if loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout=30)
        except (concurrent.futures.TimeoutError, RuntimeError):
            pass  # the loop is wedged or gone: halting it below is all that is left to do
        finally:
            self._halt_loop()

    def __enter__(self) -> SimRack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._loop is not None

    # -- what tests and the CLI read ----------------------------------------------------------

    @property
    def port(self) -> int:
        """The port every device listens on."""
        self._require_running()
        return self._port

    @property
    def devices(self) -> tuple[Device, ...]:
        """The devices as a rack file describes them (with the serial each reports now)."""
        self._require_running()
        return tuple(
            Device(
                name=d.name,
                kind=d.kind,
                address=d.address,
                attrs={"serial": d.serial, "simulated": True},
                env={ADDRESS_ENV: d.address},
            )
            for d in self._devices
        )

    def write_rack(self, path: str | os.PathLike[str], mode: str | None = None) -> Path:
        """Write a rack file for these devices (overwriting ``path``) and return its path."""
        target = Path(path)
        header = "# Simulated rack written by testrack; valid while its simulator runs.\n"
        target.write_text(header + dump_rack(self.devices, mode=mode), encoding="utf-8")
        return target

    def set_serial(self, name: str, serial: str) -> None:
        """Make device ``name`` report another serial, as if the board had been swapped."""
        self._device(name).serial = serial  # one attribute store: atomic for the server thread

    # -- failures, for health checks to find (call from any thread but the simulator's) -------

    def freeze(self, name: str) -> None:
        """Make device ``name`` hang: it still accepts connections and reads requests, but answers
        none (not even work already under way) until :meth:`thaw`. Effective on return."""
        device = self._running_device(name)
        self._call(self._switch(device, answering=False))

    def thaw(self, name: str) -> None:
        """Let a frozen device answer again; the requests it held proceed, in order."""
        device = self._running_device(name)
        self._call(self._switch(device, answering=True))

    def stop_device(self, name: str) -> None:
        """Switch device ``name`` off: its connections are closed, new ones refused, requests
        under way get no answer. Does nothing if it is off already."""
        device = self._running_device(name)
        self._call(self._stop_device(device))

    def start_device(self, name: str) -> None:
        """Switch device ``name`` back on, on the same address, answering (a device frozen before
        is thawed, as by a power cycle). Does nothing if it is on; raises :class:`SimStartError`
        if its address was taken meanwhile."""
        device = self._running_device(name)
        self._call(self._start_device(device))

    def _call(self, coroutine: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None  # checked by _running_device before the coroutine is made
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def _device(self, name: str) -> _SimDevice:
        for d in self._devices:
            if d.name == name:
                return d
        known = ", ".join(d.name for d in self._devices)
        raise ValueError(f"no simulated device named {name!r}; this rack has {known}")

    def _running_device(self, name: str) -> _SimDevice:
        device = self._device(name)
        self._require_running()
        return device

    def _require_running(self) -> None:
        if self._loop is None:
            raise RuntimeError(
                "the SimRack is not running, so it has no addresses yet; "
                "use it as a context manager or call start() first"
            )

    # -- server side (runs in the loop thread) ------------------------------------------------

    async def _open(self) -> None:
        attempts = 1 if self._requested_port else _BIND_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = self._requested_port
            servers: list[asyncio.Server] = []
            try:
                for d in self._devices:
                    d.lock = asyncio.Lock()
                    d.answering = asyncio.Event()
                    d.answering.set()
                    d.on = True
                    server = await asyncio.start_server(
                        functools.partial(self._serve, d),
                        d.host,
                        port,
                        limit=_MAX_LINE,
                        backlog=512,
                    )
                    servers.append(server)
                    d.server = server
                    if port == 0:
                        port = server.sockets[0].getsockname()[1]
                    d.port = port  # before any await: no connection is served before this
            except OSError as exc:
                for device in self._devices:
                    device.server, device.on = None, False
                for server in servers:
                    server.close()
                    await server.wait_closed()
                # A port the system chose for the first address may be taken on another one:
                # try again with a fresh port, a few times.
                retry = servers and exc.errno == errno.EADDRINUSE and attempt < attempts
                if not retry:
                    raise _start_error(exc, d.host, port) from None
                continue
            self._port = port
            return

    async def _close(self) -> None:
        await asyncio.gather(*(self._stop_device(d, record=False) for d in self._devices))

    async def _stop_device(self, device: _SimDevice, record: bool = True) -> None:
        server, device.server = device.server, None
        device.on = False
        if server is None:
            return  # off already
        if record:
            self._event(device, "stop")
        server.close()
        tasks = list(device.connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    async def _start_device(self, device: _SimDevice) -> None:
        if device.server is not None:
            return  # on already
        assert device.answering is not None  # set by _open
        device.answering.set()
        device.on = True
        try:
            device.server = await asyncio.start_server(
                functools.partial(self._serve, device),
                device.host,
                self._port,
                limit=_MAX_LINE,
                backlog=512,
            )
        except OSError as exc:
            device.on = False
            raise _start_error(exc, device.host, self._port) from None
        self._event(device, "start")

    async def _switch(self, device: _SimDevice, *, answering: bool) -> None:
        """Freeze or thaw, recorded before any held request goes on; nothing if it already was."""
        event = device.answering
        assert event is not None  # set by _open
        if event.is_set() == answering:
            return
        self._event(device, "thaw" if answering else "freeze")
        if answering:
            event.set()
        else:
            event.clear()

    def _event(self, device: _SimDevice, op: str) -> None:
        now = time.time()
        self._record(device, op, now, now)

    def _halt_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=10)
        if not loop.is_running():
            loop.close()

    async def _serve(
        self, device: _SimDevice, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Answer one connection's requests in turn until the client hangs up."""
        task = asyncio.current_task()
        assert task is not None  # a connection callback always runs in a task
        assert device.answering is not None  # set by _open before the server accepts anything
        if not device.on:  # accepted just before the device was stopped
            writer.close()
            return
        device.connections.add(task)
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # longer than _MAX_LINE: the stream cannot be resynchronised
                    await device.answering.wait()
                    await _send(writer, _error(f"request longer than {_MAX_LINE} bytes"))
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                await device.answering.wait()  # frozen: hold the request
                reply = await self._answer(device, line)
                await device.answering.wait()  # frozen while it worked: hold the answer too
                await _send(writer, reply)
        except OSError:
            pass  # the client went away, possibly in the middle of a work request
        except asyncio.CancelledError:
            # stop() cancels open connections. End quietly: before 3.12, asyncio logs a
            # connection task that ends cancelled as an error.
            pass
        finally:
            device.connections.discard(task)
            writer.close()

    async def _answer(self, device: _SimDevice, line: bytes) -> dict[str, Any]:
        now = time.time()
        try:
            request = json.loads(line)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            return self._refuse(device, "?", now, f"invalid JSON ({exc}); send one JSON object per line")
        if not isinstance(request, dict):
            return self._refuse(
                device, "?", now, 'a request must be a JSON object, for example {"op": "identify"}'
            )
        op = request.get("op")
        if op is None and "ms" in request:
            op = "work"  # the benchmark workloads' request: {"ms": N, "test": ..., ...}
        test = request.get("test") if isinstance(request.get("test"), str) else None
        if op == "identify":
            self._record(device, "identify", now, now, test=test)
            return {
                "ok": True,
                "name": device.name,
                "kind": device.kind,
                "address": device.address,
                "serial": device.serial,
            }
        if op == "echo":
            self._record(device, "echo", now, now, test=test)
            return {"ok": True, "data": request.get("data")}
        if op == "work":
            return await self._work(device, request.get("ms"), test)
        return self._refuse(device, str(op), now, f"unknown op {op!r}; use {_OPS}")

    async def _work(self, device: _SimDevice, ms: Any, test: str | None) -> dict[str, Any]:
        if isinstance(ms, bool) or not isinstance(ms, (int, float)) or ms < 0:
            now = time.time()
            return self._refuse(device, "work", now, f'work needs "ms": a number >= 0, not {ms!r}')
        assert device.lock is not None  # set by _open before the server accepts anything
        arrived = time.monotonic()
        async with device.lock:
            waited_ms = round((time.monotonic() - arrived) * 1000, 2)
            start = time.time()
            await asyncio.sleep(ms / 1000)
            end = time.time()
        self._record(device, "work", start, end, waited_ms=waited_ms, ms=ms, test=test)
        return {"ok": True, "ms": ms, "waited_ms": waited_ms, "device": device.address}

    def _refuse(self, device: _SimDevice, op: str, now: float, error: str) -> dict[str, Any]:
        self._record(device, op, now, now, error=error)
        return _error(error)

    def _record(
        self,
        device: _SimDevice,
        op: str,
        start: float,
        end: float,
        *,
        waited_ms: float = 0.0,
        ms: float | None = None,
        test: str | None = None,
        error: str | None = None,
    ) -> None:
        self.log.append(
            SimRecord(
                device=device.name,
                address=device.address,
                op=op,
                ok=error is None,
                start=start,
                end=end,
                waited_ms=waited_ms,
                ms=ms,
                test=test,
                error=error,
            )
        )


class SimClient:
    """A small blocking client for one simulated device.

    Inside ``with SimClient(address) as client:`` requests share one connection; used bare,
    as in ``SimClient(device.address).work(500)``, each request opens and closes its own, so
    nothing is left open.
    """

    def __init__(self, address: str, timeout: float = 30.0) -> None:
        self.address = address
        self.timeout = timeout
        self._host, self._port = _split_address(address)
        self._sock: socket.socket | None = None
        self._lines: Any = None  # the socket's binary reader
        self._keep_open = False

    def __enter__(self) -> SimClient:
        self._keep_open = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._keep_open = False
        self.close()

    def close(self) -> None:
        sock, lines = self._sock, self._lines
        self._sock = self._lines = None
        if lines is not None:
            lines.close()
        if sock is not None:
            sock.close()

    def identify(self) -> dict[str, Any]:
        """The device's name, kind, address and serial."""
        return self.request({"op": "identify"})

    def echo(self, data: Any) -> Any:
        """``data`` back from the device: a round trip that does no work."""
        return self.request({"op": "echo", "data": data})["data"]

    def work(self, ms: int, *, test: str | None = None) -> dict[str, Any]:
        """Keep the device busy ``ms`` milliseconds (after any queue); the reply has ``waited_ms``.

        ``test`` labels the request in the device's log; it defaults to the running pytest test.
        """
        if test is None:
            current = os.environ.get("PYTEST_CURRENT_TEST")
            test = current.rsplit(" (", 1)[0] if current else None
        payload: dict[str, Any] = {"op": "work", "ms": ms}
        if test is not None:
            payload["test"] = test
        return self.request(payload, busy_s=ms / 1000)

    def request(self, payload: Mapping[str, Any], *, busy_s: float = 0.0) -> dict[str, Any]:
        """Send one request and return the reply; raises :class:`SimDeviceError` unless ok.

        The answer may take ``busy_s`` seconds of work plus ``timeout``.
        """
        try:
            if self._sock is None:
                self._sock = socket.create_connection((self._host, self._port), timeout=self.timeout)
                self._lines = self._sock.makefile("rb")
            self._sock.settimeout(self.timeout + busy_s)
            self._sock.sendall(json.dumps(payload).encode() + b"\n")
            line = self._lines.readline()
        except TimeoutError:
            self.close()
            raise self._fail(f"no answer within {self.timeout + busy_s:.1f} s") from None
        except OSError as exc:
            self.close()
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise self._fail(
                f"cannot talk to the device ({reason}); is the simulated rack still running? "
                "start one with `testrack sim`"
            ) from None
        finally:
            if not self._keep_open:
                self.close()
        if not line:
            self.close()
            raise self._fail("the device closed the connection without answering")
        try:
            reply = json.loads(line)
        except ValueError:
            raise self._fail(f"the device sent something that is not JSON: {line[:200]!r}") from None
        if not isinstance(reply, dict) or reply.get("ok") is not True:
            error = reply.get("error") if isinstance(reply, dict) else reply
            raise self._fail(f"the device refused the request: {error}", reply)
        return reply

    def _fail(self, what: str, reply: Mapping[str, Any] | None = None) -> SimDeviceError:
        return SimDeviceError(f"simulated device {self.address}: {what}", address=self.address, reply=reply)

    def __repr__(self) -> str:
        return f"SimClient({self.address!r})"


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.run_forever()


async def _send(writer: asyncio.StreamWriter, reply: Mapping[str, Any]) -> None:
    writer.write(json.dumps(reply).encode() + b"\n")
    await writer.drain()


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


def _default_serial(kind: str, number: int) -> str:
    """A serial that stays the same from run to run, so a pinned identity survives restarts."""
    digest = hashlib.sha256(f"{kind}-{number}".encode()).hexdigest()[:8].upper()
    return f"{kind}-{number}-SIM{digest}"


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise SimDeviceError(
            f"simulated device address {address!r} is not HOST:PORT, for example 127.0.0.11:47000",
            address=address,
        )
    return host.strip("[]"), int(port)


def _start_error(exc: OSError, host: str, port: int) -> SimStartError:
    where = f"{host}:{port}" if port else host
    if exc.errno == errno.EADDRINUSE:
        why = f"port {port} is already in use on {host}; pick another port, or port 0 for a free one"
    elif exc.errno == errno.EADDRNOTAVAIL:
        why = (
            f"{host} is not an address of this machine; Linux routes all of 127.0.0.0/8 to "
            f"loopback, elsewhere add an alias (macOS: sudo ifconfig lo0 alias {host} up)"
        )
    elif exc.errno == errno.EACCES:
        why = f"permission denied for port {port}; use a port above 1023, or port 0 for a free one"
    else:
        why = exc.strerror or str(exc)
    return SimStartError(f"cannot listen on {where}: {why}", host=host, port=port, errno=exc.errno)
