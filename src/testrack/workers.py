"""Worker processes as the controller sees them: start, talk, read output, bury.

Each worker is a ``python -m testrack.worker`` child in its own session (so a
Ctrl-C in the terminal reaches only the controller, which stops the workers in
order), with the device's ``env`` applied and xdist's worker variables set. It
talks over one end of a socket pair; its stdout and stderr are pipes the
controller reads, keeping the last lines for crash reports.
"""

from __future__ import annotations

import enum
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

from testrack import messages as m
from testrack.rack import Device, Rack
from testrack.scheduling import Job, Slot

OUTPUT_LINES = 40


class State(enum.Enum):
    """Where a worker is in its life."""

    STARTING = "starting"  #: spawned, its pytest session not started yet
    READY = "ready"  #: session started; collecting or running
    STOPPING = "stopping"  #: told to shut down
    FINISHED = "finished"  #: exited after a clean shutdown
    DEAD = "dead"  #: exited on its own: crash, os._exit, signal


class WorkerLabel:
    """Stands in for xdist's node on reports, so pytest's terminal shows ``[board-1]``."""

    def __init__(self, label: str, device: Device) -> None:
        self.id = label
        self.gateway = self
        # Shown above each failure in the summary, where xdist shows its worker info.
        self._workerinfocache = (
            f"[{label}] device {device.name} (kind {device.kind}, address {device.address})"
        )

    def __repr__(self) -> str:
        return f"<worker {self.id}>"


class WorkerHandle:
    """One worker process and everything the controller tracks about it."""

    def __init__(self, slot: Slot, device: Device, label: WorkerLabel, proc: subprocess.Popen[bytes], conn: Connection) -> None:
        self.slot = slot
        self.device = device
        self.label = label
        self.proc = proc
        self.conn = conn
        self.state = State.STARTING
        #: Jobs sent to the worker and not finished yet, in the order it runs them.
        self.assigned: deque[Job] = deque()
        #: Collection units this worker has imported (or been told to import).
        self.imported: set[str] = set()
        #: Units sent in Collect messages whose answer has not arrived.
        self.collecting: int = 0
        self.wants_work = False
        #: Phases ("setup", "call", "teardown") reported so far for the running test.
        self.phases: dict[str, set[str]] = {}
        self.output: deque[str] = deque(maxlen=OUTPUT_LINES)
        self._partial: dict[int, bytes] = {}
        self.streams = [s for s in (proc.stdout, proc.stderr) if s is not None]
        self.tests_done = 0

    @property
    def alive(self) -> bool:
        return self.state in (State.STARTING, State.READY, State.STOPPING)

    def send(self, message: m.ToWorker) -> bool:
        """Send, or return False if the worker is already gone."""
        try:
            self.conn.send(message)
        except OSError:
            return False
        return True

    def read_output(self, stream: Any, echo: bool) -> bool:
        """Read what the worker printed; return False at end of stream."""
        fd = stream.fileno()
        chunk = os.read(fd, 65536)
        if not chunk:
            self.streams.remove(stream)
            rest = self._partial.pop(fd, b"")
            if rest:
                self._line(rest, echo)
            return False
        data = self._partial.pop(fd, b"") + chunk
        *lines, rest = data.split(b"\n")
        for line in lines:
            self._line(line, echo)
        if rest:
            self._partial[fd] = rest
        return True

    def _line(self, raw: bytes, echo: bool) -> None:
        line = raw.decode("utf-8", "replace")
        self.output.append(line)
        if echo:
            sys.stdout.write(f"[{self.label.id}] {line}\n")
            sys.stdout.flush()

    def how_it_ended(self) -> str:
        """``killed by signal 9 (SIGKILL)`` or ``exited with code 3``."""
        code = self.proc.poll()
        if code is None:
            return "stopped answering"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = "unknown signal"
            return f"killed by signal {-code} ({name})"
        return f"exited with code {code}"

    def last_output(self) -> str:
        lines = [line for line in self.output if line.strip()]
        return "\n".join(lines[-15:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()

    def close(self) -> None:
        self.conn.close()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


class Launcher:
    """Lays out a rack's slots and starts their worker processes.

    Starting a Python process and importing pytest is most of a worker's start-up
    time, so the plugin creates the launcher as soon as the rack is known (before
    the controller has loaded conftests or configured plugins) and the workers
    start meanwhile; they wait for their :class:`~testrack.messages.Hello`.
    """

    def __init__(self, rack: Rack, cwd: str) -> None:
        self.rack = rack
        self.cwd = cwd
        self.testrunuid = uuid.uuid4().hex
        self.devices = {d.name: d for d in rack.devices}
        self.slots: list[Slot] = []
        self.labels: dict[str, WorkerLabel] = {}
        for device in rack.devices:
            for k in range(device.capacity):
                slot = Slot(id=f"gw{len(self.slots)}", device=device.name)
                self.slots.append(slot)
                if device.kind == "local":
                    label = slot.id
                elif device.capacity > 1:
                    label = f"{device.name}#{k}"
                else:
                    label = device.name
                self.labels[slot.id] = WorkerLabel(label, device)
        self._spare: dict[str, WorkerHandle] = {}

    def env_for(self, slot: Slot) -> dict[str, str]:
        """The worker's environment: ours, the device's env, and xdist's worker variables."""
        device = self.devices[slot.device]
        env = dict(os.environ)
        env.update(device.env)
        env.update(
            PYTEST_XDIST_WORKER=slot.id,
            PYTEST_XDIST_WORKER_COUNT=str(len(self.slots)),
            PYTEST_XDIST_TESTRUNUID=self.testrunuid,
            TESTRACK_DEVICE=device.name,
            TESTRACK_WORKER=slot.id,
        )
        env.pop("PYTEST_CURRENT_TEST", None)
        return env

    def prestart(self) -> None:
        for slot in self.slots:
            self._spare[slot.id] = self.start(slot)

    def take(self, slot: Slot) -> WorkerHandle:
        """A worker process for ``slot``: the prestarted one if there is one, else a new one."""
        spare = self._spare.pop(slot.id, None)
        if spare is not None and spare.proc.poll() is None:
            return spare
        return self.start(slot)

    def start(self, slot: Slot) -> WorkerHandle:
        parent_sock, child_sock = socket.socketpair()
        child_fd = child_sock.fileno()
        proc = subprocess.Popen(
            [sys.executable, "-m", "testrack.worker", str(child_fd)],
            pass_fds=[child_fd],
            env=self.env_for(slot),
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        child_sock.close()
        conn = Connection(parent_sock.detach())
        return WorkerHandle(slot, self.devices[slot.device], self.labels[slot.id], proc, conn)

    def discard(self) -> None:
        """Stop prestarted workers nobody took (the run turned out not to need them)."""
        for worker in self._spare.values():
            worker.close()  # the worker sees EOF instead of a Hello and exits
            try:
                worker.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.proc.wait()
        self._spare.clear()
