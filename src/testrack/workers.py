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
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

from testrack import messages as m
from testrack.rack import Device
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


def spawn(slot: Slot, device: Device, label: WorkerLabel, hello: m.Hello, env: dict[str, str], cwd: str) -> WorkerHandle:
    """Start a worker process for ``slot`` and send it its Hello."""
    parent_sock, child_sock = socket.socketpair()
    child_fd = child_sock.fileno()
    proc = subprocess.Popen(
        [sys.executable, "-m", "testrack.worker", str(child_fd)],
        pass_fds=[child_fd],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    child_sock.close()
    conn = Connection(parent_sock.detach())
    handle = WorkerHandle(slot, device, label, proc, conn)
    handle.send(hello)
    return handle
