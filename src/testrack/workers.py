"""Worker processes as the controller sees them: start, talk, read output, bury.

Each worker is a ``python -m testrack.worker`` child in its own session (so a
Ctrl-C in the terminal reaches only the controller, which stops the workers in
order), with the device's ``env`` applied and xdist's worker variables set. It
talks over one end of a socket pair (the controller's end a non-blocking
:class:`~testrack.channel.Channel`), writes what it runs on a
:class:`~testrack.scoreboard.Scoreboard`, and its stdout and stderr are pipes the
controller reads, keeping the last lines for crash reports.
"""

from __future__ import annotations

import contextlib
import enum
import gc
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Union

from testrack import messages as m
from testrack.channel import Channel, socket_pair
from testrack.compact import Unpacker
from testrack.rack import Device, Rack
from testrack.scheduling import Job, Slot
from testrack.scoreboard import Scoreboard
from testrack.trace import trace

if TYPE_CHECKING:  # the controller's bookkeeping; kept out of what forked workers import
    from testrack.recorder import Attempt

OUTPUT_LINES = 300


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
        where = f", address {device.address}" if device.address else ""
        self._workerinfocache = f"[{label}] device {device.name} (kind {device.kind}{where})"

    @classmethod
    def joint(cls, labels: list[WorkerLabel], devices: list[Device]) -> WorkerLabel:
        """A test on several devices reads ``[phone-1+phone-2]``, each device named above a failure."""
        label = cls.__new__(cls)
        label.id = "+".join(each.id for each in labels)
        label.gateway = label
        described = ", ".join(f"{d.name} (kind {d.kind}, address {d.address})" for d in devices)
        label._workerinfocache = f"[{label.id}] devices {described}"
        return label

    def __repr__(self) -> str:
        return f"<worker {self.id}>"


class ForkedProcess:
    """What the controller needs of :class:`subprocess.Popen`, for a worker made by ``os.fork``."""

    def __init__(self, pid: int, stdout: Any, stderr: Any) -> None:
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0)
            time.sleep(0.002)
        return code

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


class PendingClone(ForkedProcess):
    """A worker the template will fork (testrack.cloning): no process yet, so nothing to signal
    or wait for. Alive while the template is; adopted once the clone says it is ready."""

    def __init__(self, template: ForkedProcess, stdout: Any, stderr: Any) -> None:
        super().__init__(0, stdout, stderr)
        self.template = template
        self.known = False

    def adopt(self, pid: int) -> None:
        self.pid = pid
        self.known = True

    def poll(self) -> int | None:
        if self.known:
            return super().poll()
        if self.returncode is None and self.template.poll() is not None:
            self.returncode = -signal.SIGKILL  # never forked: the template is gone
        return self.returncode

    def kill(self) -> None:
        if self.known:
            super().kill()
        elif self.returncode is None:
            self.returncode = -signal.SIGKILL  # forgotten: a clone forked later finds no controller


Process = Union["subprocess.Popen[bytes]", ForkedProcess]


class WorkerHandle:
    """One worker process and everything the controller tracks about it."""

    def __init__(
        self,
        slot: Slot,
        device: Device,
        label: WorkerLabel,
        proc: Process,
        channel: Channel,
        board: Scoreboard,
    ) -> None:
        self.slot = slot
        self.device = device
        self.label = label
        self.proc = proc
        self.channel = channel
        self.board = board
        self.state = State.STARTING
        #: Jobs sent to the worker and not finished yet, in the order it runs them.
        self.assigned: deque[Job] = deque()
        #: How many of the jobs sent have been reported finished (the board counts starts).
        self.reported = 0
        #: Told that no more work will come (Finish) or to stop (Shutdown).
        self.winding_down = False
        #: Collection units this worker has imported and made the tests of (or been told to).
        self.imported: set[str] = set()
        #: Units it was told only to import: their tests are made when it is first given one.
        self.imported_only: set[str] = set()
        #: Units sent in Collect messages whose answer has not arrived.
        self.collecting: int = 0
        self.wants_work = False
        #: Told Idle (it holds tests, and waits for more after them): not told again until given work.
        self.told_idle = False
        #: Phases ("setup", "call", "teardown") reported so far for the running test.
        self.phases: dict[str, set[str]] = {}
        #: What the reports so far say about each unfinished test (for the results store).
        self.attempts: dict[str, Attempt] = {}
        #: The test of the last report received: what a compact report leaves out.
        self.unpacker = Unpacker()
        self.closed = False
        #: Set when the controller killed this worker for a test that ran over its limit:
        #: (node id, limit, where the limit is from).
        self.timed_out: tuple[str, float, str] | None = None
        #: When a timed-out worker is killed, if its stacks have not all come before.
        self.kill_at: float | None = None
        #: ``time.monotonic()`` of the last output line read from the worker.
        self.last_output_at = 0.0
        #: ``workeroutput`` from the worker's WorkerFinished (for pytest_testnodedown).
        self.workeroutput: dict[str, Any] | None = None
        #: What xdist-aware plugins see of this worker (:class:`testrack.nodes.WorkerNode`).
        self.node: Any = None
        self.output: deque[str] = deque(maxlen=OUTPUT_LINES)
        #: Where echoed output lines go (the terminal reporter, so they start on a line of their own).
        self.echo_to: Callable[[str], None] | None = None
        self._partial: dict[int, bytes] = {}
        self.streams = [s for s in (proc.stdout, proc.stderr) if s is not None]
        self.tests_done = 0

    @property
    def alive(self) -> bool:
        return self.state in (State.STARTING, State.READY, State.STOPPING)

    def send(self, message: m.ToWorker) -> bool:
        """Queue a message (it never blocks), or return False if the worker is already gone."""
        return self.channel.send(message)

    def running_job(self) -> Job | None:
        """The job the worker is running now, by its scoreboard (None between tests)."""
        seen = self.board.read()
        if not seen.running:
            return None
        position = seen.started - 1 - self.reported
        if 0 <= position < len(self.assigned):
            return self.assigned[position]
        return None

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
        self.last_output_at = time.monotonic()
        if echo:
            text = f"[{self.label.id}] {line}"
            if self.echo_to is not None:
                self.echo_to(text)
            else:
                sys.stdout.write(text + "\n")
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

    def last_output(self, lines: int = 15) -> str:
        kept = [line for line in self.output if line.strip()]
        return "\n".join(kept[-lines:])

    def read_for(self, seconds: float, quiet: float = 0.2) -> None:
        """Read output for up to ``seconds``, stopping once nothing came for ``quiet`` seconds."""
        deadline = time.monotonic() + seconds
        while self.streams and time.monotonic() < deadline:
            ready, _, _ = select.select(
                self.streams, [], [], min(quiet, max(0.0, deadline - time.monotonic()))
            )
            if not ready:
                return
            for stream in ready:
                if stream in self.streams:
                    self.read_output(stream, echo=False)

    def reap(self, deadline: float, echo: bool) -> None:
        """Wait for the process until ``deadline`` (then kill it) and read its last output.

        Output is read until end of stream or until nothing more arrives for a
        moment, since a process the test started may still hold the pipe open.
        """
        try:
            self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait()
        for stream in list(self.streams):
            while stream in self.streams:
                ready, _, _ = select.select([stream], [], [], 0.2)
                if not ready:
                    self.streams.remove(stream)
                    break
                self.read_output(stream, echo)

    def reap_in_background(self, grace: float) -> None:
        """Reap a worker that finished its session from another thread, not blocking this one.

        The thread is not a daemon: the interpreter joins it before it exits, so no
        worker outlives the run (their atexit work, coverage data say, is done by then).
        """

        def reap() -> None:
            self.reap(time.monotonic() + grace, echo=False)
            self.close()

        threading.Thread(target=reap, name=f"testrack-reap-{self.slot.id}").start()

    @property
    def pending(self) -> bool:
        """A clone the template has not forked yet (no process to signal)."""
        return isinstance(self.proc, PendingClone) and not self.proc.known

    def signal(self, signum: int) -> None:
        """Send a signal to the worker's process, if it has one and it is still there."""
        if not self.pending:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signum)

    def kill(self) -> None:
        if self.pending:
            self.proc.kill()
        elif self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()

    def close(self) -> None:
        """Close the controller's ends (socket, board, pipes) once: left to the garbage
        collector they are ResourceWarnings, which a suite with ``filterwarnings = error``
        turns into a failed run."""
        if self.closed:
            return
        self.closed = True
        self.channel.close()
        self.board.close()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def _added_paths(paths: Sequence[str]) -> tuple[str, ...]:
    """The entries of the controller's ``sys.path`` that are not its installation's (the project's
    directories, PYTHONPATH): an environment's worker needs them, but not this installation."""
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    keep = []
    for path in paths:
        real = os.path.realpath(path) if path else path
        if (
            path
            and not any(real == p or real.startswith(p + os.sep) for p in prefixes)
            and "site-packages" not in real
        ):
            keep.append(path)
    return tuple(keep)


class Launcher:
    """Lays out a rack's slots and starts their worker processes.

    Starting a Python process and importing pytest is most of a worker's start-up
    time, so the plugin creates the launcher as soon as the rack is known (before
    the controller has loaded conftests or configured plugins) and the workers
    start meanwhile; they wait for their :class:`~testrack.messages.Hello`.
    """

    def __init__(self, rack: Rack, cwd: str, args: Sequence[str], sys_path: Sequence[str]) -> None:
        self.rack = rack
        self.cwd = cwd
        self.args = tuple(str(a) for a in args)
        self.sys_path = tuple(sys_path)
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
        #: Devices whose workers run another interpreter (an environment's), by device name.
        self.interpreters: dict[str, str] = {}
        self._spare: dict[str, WorkerHandle] = {}
        #: Our ends of forked workers' sockets and pipes, closed in each later fork.
        self._parent_fds: list[int] = []
        #: Why the workers are not clones of the first, where that was the way to start them.
        self.not_cloned: str | None = None
        #: The first slot's worker when the others are to be its clones (testrack.cloning).
        self.template: WorkerHandle | None = None
        #: Workers forked beside a template, waiting for a Hello that comes only if it refuses.
        self._held: dict[str, WorkerHandle] = {}

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

    def hello_for(self, slot: Slot) -> m.Hello:
        workerinput: dict[str, Any] = {
            "workerid": slot.id,
            "workercount": len(self.slots),
            "testrunuid": self.testrunuid,
            "mainargv": list(sys.argv),
            "device": self.devices[slot.device].to_dict(),
            "testrack": True,
        }
        if slot.device in self.interpreters:
            return m.Hello(
                workerinput=workerinput,
                args=self.args,
                sys_path=_added_paths(self.sys_path),
                replace_sys_path=False,
            )
        return m.Hello(workerinput=workerinput, args=self.args, sys_path=self.sys_path)

    def prestart(self, hook: Any = None) -> None:
        """Start every slot's worker now; fork them when this process is still clean enough.
        Where the slots differ in nothing but their identity, start only the first, to be
        cloned once it has collected (testrack.cloning)."""
        fork = can_fork()
        clone = fork and self.clonable(hook)
        trace(f"launcher: prestart ({'clone' if clone else 'fork' if fork else 'spawn'})")
        if fork:
            import testrack.worker  # noqa: F401 - imported once here rather than in every child
        if clone:
            self._prestart_template()
            return
        for slot in self.slots:
            self._spare[slot.id] = self.fork(slot) if fork else self.start(slot)

    def clonable(self, hook: Any = None) -> bool:
        """Every slot's worker would start the same but for its identity: more than one slot,
        the same device ``env`` everywhere, no environment's interpreter, not turned off, and no
        plugin loaded so far that would make the template refuse (``hook``: pytest's)."""
        from testrack import cloning

        if start_method() != "clone" or len(self.slots) < 2:
            return False
        if self.interpreters or not sys.platform.startswith("linux"):
            return False
        if len({tuple(sorted(self.devices[slot.device].env.items())) for slot in self.slots}) > 1:
            self.not_cloned = "the devices' env differ"
            return False
        self.not_cloned = None if hook is None else cloning.session_end(hook)
        return self.not_cloned is None

    def _prestart_template(self) -> None:
        from testrack import cloning

        ends: dict[str, tuple[socket.socket, socket.socket, int, int, int, int, Scoreboard]] = {}
        for slot in self.slots[1:]:
            parent_sock, child_sock = socket_pair()
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            ends[slot.id] = (parent_sock, child_sock, out_r, out_w, err_r, err_w, Scoreboard())
        theirs = {
            slot: cloning.Ends(child.fileno(), board.fd, out_w, err_w)
            for slot, (_, child, _, out_w, _, err_w, board) in ends.items()
        }
        ours = [fd for p, _, out_r, _, err_r, _, _ in ends.values() for fd in (p.fileno(), out_r, err_r)]
        template = self.fork(self.slots[0], clone_ends=theirs, close_too=ours)
        self.template = template
        self._spare[self.slots[0].id] = template
        assert isinstance(template.proc, ForkedProcess)
        for slot in self.slots[1:]:
            parent_sock, child_sock, out_r, out_w, err_r, err_w, board = ends[slot.id]
            child_sock.close()
            os.close(out_w)
            os.close(err_w)
            self._parent_fds += [parent_sock.fileno(), out_r, err_r, board.fd]
            proc = PendingClone(
                template.proc, os.fdopen(out_r, "rb", buffering=0), os.fdopen(err_r, "rb", buffering=0)
            )
            worker = WorkerHandle(
                slot, self.devices[slot.device], self.labels[slot.id], proc, Channel(parent_sock), board
            )
            worker.send(self.hello_for(slot))  # read by the clone, once forked
            self._spare[slot.id] = worker
        for slot in self.slots[1:]:  # if the template refuses: forked already, told nothing yet
            self._held[slot.id] = self.fork(slot, hello=False)

    def clone_message(self, workers: list[WorkerHandle], inputs: list[dict[str, Any]]) -> m.Clone:
        """What the template needs to clone itself for these (pending) workers: their
        environments, and which ``workerinput`` keys differ between all slots' workers."""
        keys = {key for data in inputs for key in data}
        differing = tuple(sorted(key for key in keys if len({repr(data.get(key)) for data in inputs}) > 1))
        return m.Clone(
            slots=tuple(w.slot.id for w in workers),
            envs=tuple(self.env_for(w.slot) for w in workers),
            differing=differing,
        )

    def drop_pending(self) -> None:
        """Pending clones nobody took: their slots' workers start on their own if needed."""
        for slot_id, worker in list(self._spare.items()):
            if worker.pending:
                worker.kill()
                worker.close()
                del self._spare[slot_id]

    def take(self, slot: Slot) -> WorkerHandle:
        """A worker process for ``slot``: the prestarted one if there is one, else a new one."""
        spare = self._spare.pop(slot.id, None)
        if spare is not None and spare.proc.poll() is None:
            return spare
        if spare is not None:
            spare.close()
        return self.start(slot)

    def start(self, slot: Slot) -> WorkerHandle:
        parent_sock, child_sock = socket_pair()
        child_fd = child_sock.fileno()
        board = Scoreboard()
        proc = subprocess.Popen(
            [
                self.interpreters.get(slot.device, sys.executable),
                "-m",
                "testrack.worker",
                str(child_fd),
                str(board.fd),
            ],
            pass_fds=[child_fd, board.fd],
            env=self.env_for(slot),
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        child_sock.close()
        worker = WorkerHandle(
            slot, self.devices[slot.device], self.labels[slot.id], proc, Channel(parent_sock), board
        )
        worker.send(self.hello_for(slot))
        return worker

    def fork(
        self,
        slot: Slot,
        clone_ends: dict[str, Any] | None = None,
        close_too: Sequence[int] = (),
        hello: bool = True,
    ) -> WorkerHandle:
        """Start a worker by forking this process (only before conftests are loaded).

        A fork skips Python's start-up and the import of pytest, most of a worker's
        start-up cost. The child resets what it inherited (standard streams,
        environment, session, pytest's import hook) and runs an ordinary worker.
        """
        parent_sock, child_sock = socket_pair()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        board = Scoreboard()
        env = self.env_for(slot)
        for stream in (sys.__stdout__, sys.__stderr__):
            if stream is not None:
                stream.flush()
        gc.freeze()  # the child's collections skip what it inherited: fewer pages copied, less CPU
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns; its work is tested end to end
            _become_worker(
                child_sock,
                board.fd,
                [parent_sock.fileno(), out_r, err_r, *self._parent_fds, *close_too],
                out_w,
                err_w,
                env,
                self.cwd,
                clone_ends or {},
            )
        child_sock.close()
        os.close(out_w)
        os.close(err_w)
        self._parent_fds += [parent_sock.fileno(), out_r, err_r, board.fd]
        proc = ForkedProcess(pid, os.fdopen(out_r, "rb", buffering=0), os.fdopen(err_r, "rb", buffering=0))
        worker = WorkerHandle(
            slot, self.devices[slot.device], self.labels[slot.id], proc, Channel(parent_sock), board
        )
        if hello:
            worker.send(self.hello_for(slot))
        return worker

    def instead_of_clone(self, slot: Slot) -> WorkerHandle:
        """A worker for a slot whose clone will not be: the one held for it, else a new one."""
        held = self._held.pop(slot.id, None)
        if held is not None and held.proc.poll() is None:
            held.send(self.hello_for(slot))
            return held
        if held is not None:
            held.close()
        return self.start(slot)

    def release_held(self) -> None:
        """The clones came: the workers held in reserve exit (they see EOF, not a Hello)."""
        for worker in self._held.values():
            worker.close()
            threading.Thread(target=worker.proc.wait, name="testrack-held", daemon=True).start()
        self._held.clear()

    def discard(self) -> None:
        """Stop prestarted workers nobody took (the run turned out not to need them)."""
        self.drop_pending()
        self._spare.update(self._held)
        self._held.clear()
        for worker in self._spare.values():
            worker.close()  # the worker sees EOF instead of a Hello and exits
            try:
                worker.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.proc.wait()
        self._spare.clear()


#: How workers start (``TESTRACK_START``): cloned from the first one where they can be, else
#: forked from the controller; forked, every one; or spawned as new processes.
START_METHODS = ("clone", "fork", "spawn")


def start_method() -> str:
    """``TESTRACK_START``, or ValueError naming the choices."""
    value = os.environ.get("TESTRACK_START", "clone")
    if value not in START_METHODS:
        raise ValueError(
            f"TESTRACK_START={value!r} is not a way testrack starts workers: use one of "
            f"{', '.join(START_METHODS)} (clone, the default, when unset)"
        )
    return value


def can_fork() -> bool:
    """Forking is for Linux-like systems, and only while this process runs a single thread."""
    if start_method() == "spawn":
        return False
    return hasattr(os, "fork") and sys.platform != "darwin" and threading.active_count() == 1


def _become_worker(
    sock: socket.socket,
    board: int,
    close: list[int],
    out_w: int,
    err_w: int,
    env: dict[str, str],
    cwd: str,
    clone_ends: dict[str, Any],
) -> None:  # pragma: no cover - runs in the child
    """In a freshly forked child: shed the controller's state and run a worker; never returns."""
    code = 70
    try:
        os.setsid()
        for fd in close:
            with contextlib.suppress(OSError):
                os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        for fd in (devnull, out_w, err_w):
            os.close(fd)
        # The controller's pytest may be capturing output right now: write to the real fds.
        sys.stdin, sys.stdout, sys.stderr = sys.__stdin__, sys.__stdout__, sys.__stderr__
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        # The controller's half-built config installed an import hook; the worker makes its own.
        sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "AssertionRewritingHook"]
        from testrack import cloning, worker

        cloning.ENDS.update(clone_ends)
        worker.FORKED = True
        code = worker.main([str(sock.detach()), str(board)])
    except BaseException:
        traceback.print_exc()
    finally:
        from testrack import worker

        worker.exit_now(code)
