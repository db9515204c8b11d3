"""The run loop: one thread waits on every worker's socket, its output pipes, the device
checks and the signals at once, and hands each event to the part of the run it belongs to.

It never blocks on a send (what a socket does not take now is written when it can be,
:mod:`testrack.channel`), and a signal only sets a flag and wakes it: a Ctrl-C raised in the
middle of replaying a report would lose that report, so the loop stops at a safe point.
"""

from __future__ import annotations

import contextlib
import enum
import os
import selectors
import signal
import time
from typing import TYPE_CHECKING

from testrack import messages as m
from testrack import nodes, relay
from testrack.trace import trace
from testrack.workers import State, WorkerHandle

if TYPE_CHECKING:
    from testrack.controller import Controller

#: Seconds between copies of the leases' deadlines to the workers' boards (the heartbeat renews
#: the leases every ttl / 3; a worker past its board's deadline asks before its next test).
BOARDS_EVERY = 0.5


class Phase(enum.Enum):
    """Where the run is."""

    COLLECTING = "collecting"
    RUNNING = "running"
    STOPPING = "stopping"


class RunLoop:
    """Waits for what the workers, the device checks and the signals say, and dispatches it."""

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self._selector = selectors.DefaultSelector()
        self._selector.register(ctl.health.wakeup, selectors.EVENT_READ, None)
        # Ctrl-C and SIGTERM set a flag and wake the loop (and so does another thread with a
        # lease granted or lost, or a line to show).
        self.stop_signals = 0
        self.interrupting = False
        read, self._signal_write = os.pipe()
        os.set_blocking(read, False)
        os.set_blocking(self._signal_write, False)
        self._signal_read = os.fdopen(read, "rb", buffering=0)
        self._selector.register(self._signal_read, selectors.EVENT_READ, "signal")
        self._boards_due = 0.0

    def watch(self, worker: WorkerHandle) -> None:
        """Listen to a new worker: its socket and its output pipes."""
        self._selector.register(worker.channel, selectors.EVENT_READ, (worker, None))
        for stream in worker.streams:
            self._selector.register(stream, selectors.EVENT_READ, (worker, stream))

    def close(self) -> None:
        self._selector.close()
        self._signal_read.close()
        os.close(self._signal_write)

    def wake(self) -> None:
        """Wake the run loop from another thread (a lease granted, lost, or a line to show)."""
        with contextlib.suppress(OSError, ValueError):
            os.write(self._signal_write, b"l")

    def on_stop_signal(self, signum: int, frame: object) -> None:
        self.stop_signals += 1
        with contextlib.suppress(OSError):
            os.write(self._signal_write, b"!")

    def on_suspend(self, signum: int, frame: object) -> None:
        """Ctrl-Z. Workers run in sessions of their own (a Ctrl-C reaches them through the
        controller, which keeps what they report), so the terminal stops the controller alone:
        the tests would go on, on devices the user meant to pause. Stop every worker's process
        group first, then this process; resume them when it resumes."""
        groups = [w.proc.pid for w in self.ctl.workers.values() if w.alive and not w.pending]
        for pid in groups:
            _signal_group(pid, signal.SIGSTOP)
        os.kill(os.getpid(), signal.SIGSTOP)  # returns once the shell continues this process
        for pid in groups:
            _signal_group(pid, signal.SIGCONT)

    def send(self, worker: WorkerHandle, message: m.ToWorker) -> None:
        """Queue a message for a worker; the loop writes what the socket does not take now."""
        worker.send(message)
        self._watch_writes(worker)

    def _watch_writes(self, worker: WorkerHandle) -> None:
        with contextlib.suppress(KeyError, ValueError):
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if worker.channel.wants_write else 0)
            key = self._selector.get_key(worker.channel)
            if key.events != events:
                self._selector.modify(worker.channel, events, key.data)

    def forget(self, worker: WorkerHandle) -> None:
        for fileobj in (worker.channel, *worker.streams):
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(fileobj)

    def pump(self, timeout: float | None = None) -> None:
        """Wait for the next messages or output from any worker (or a device check) and handle them."""
        ctl = self.ctl
        if not self._selector.get_map():
            return
        if ctl.leasing is not None and (now := time.monotonic()) >= self._boards_due:
            self._boards_due = now + BOARDS_EVERY  # the heartbeat renews the leases meanwhile
            for worker in ctl.alive_workers():
                ctl.slot_leases.allow_starts(worker)
            for slot in ctl.slots:  # a worker that ended while work for others was queued
                ctl.slot_leases.release_idle_lease(slot)
        try:
            self._handle_events(self._selector.select(timeout))
        finally:
            ctl.replay.end_round()  # what this round stored is shown before anything else
        if self.stop_signals and not self.interrupting:
            raise KeyboardInterrupt

    def _handle_events(self, ready: list[tuple[selectors.SelectorKey, int]]) -> None:
        ctl = self.ctl
        for key, events in ready:
            if not (isinstance(key.data, tuple) and key.data[1] is None):  # not a worker's channel
                ctl.replay.end_round()  # a device check, a signal, a worker's output: in order
            if key.data is None:
                self.on_checks()
                continue
            if key.data == "signal":
                with contextlib.suppress(BlockingIOError):
                    self._signal_read.read()
                if ctl.leasing is not None:
                    ctl.slot_leases.on_leases()
                continue
            worker, stream = key.data
            if stream is not None:
                if stream in worker.streams and not worker.read_output(stream, ctl.echo_output):
                    with contextlib.suppress(KeyError, ValueError):
                        self._selector.unregister(stream)
                continue
            if events & selectors.EVENT_WRITE:
                worker.channel.flush()
                self._watch_writes(worker)
            if events & selectors.EVENT_READ and (worker.alive or worker.state is State.FINISHED):
                # A finished worker's end of file too: left unread, it would wake every select
                # at once (a busy loop) and its slot would never be freed for leftovers.
                self.receive(worker)

    def receive(self, worker: WorkerHandle) -> None:
        try:
            messages = worker.channel.receive()
        except EOFError:
            self.ctl.replay.end_round()
            self.forget(worker)
            self.ctl.faults.on_exit(worker)
            return
        for message in messages:
            self.on_message(worker, message)

    def on_message(self, worker: WorkerHandle, message: m.FromWorker) -> None:
        ctl = self.ctl
        if type(message) not in _IN_ROUND:
            ctl.replay.end_round()  # shown first: what a worker said before this came first
        match message:
            case m.TestReports():
                ctl.replay.on_reports(worker, message)
            case m.WantWork():
                worker.wants_work = True
                if ctl.phase is Phase.RUNNING:
                    ctl.feeder.feed(worker)
            case m.MayIStart():
                ctl.slot_leases.on_may_i_start(worker)
            case m.Collected():
                ctl.collection.on_collected(worker, message)
            case m.WorkerReady(pid=pid):
                ctl.cloning.on_ready(worker, pid)
                self.on_ready(worker)
            case m.CloneRefused(reason=reason):
                ctl.cloning.give_up(reason)
            case m.WarningRecorded():
                ctl.warnings.show(message)
            case m.LogRecords(records=records):
                relay.replay_logs(ctl.config, list(records), None)
            case m.SuiteProperty(name=name, value=value):
                relay.add_suite_property(ctl.config, name, value)
            case m.WorkerFinished(workeroutput=output):
                worker.state = State.FINISHED
                worker.workeroutput = output
                # As xdist does: the node is down once its session is, not when its process exits
                # (which the run does not wait for).
                ctl.node_down(worker, None)
            case m.WorkerFailed(error=error):
                ctl.problems.append(
                    f"internal error in worker {worker.slot.id} ({worker.device.name}):\n{error}"
                )
            case _:
                raise TypeError(f"testrack controller: unexpected message {message!r}")

    def on_ready(self, worker: WorkerHandle) -> None:
        trace(f"controller: {worker.slot.id} ready")
        node = getattr(worker, "node", None)
        if node is not None:
            nodes.ready(node)
        if worker.state is not State.STARTING:
            return  # told to stop while it started (its device was quarantined): it ends now
        worker.state = State.READY
        self.ctl.collection.on_ready(worker)

    def on_checks(self) -> None:
        """Device checks ended: put healthy devices to work, take quarantined ones out."""
        ctl = self.ctl
        for result in ctl.health.finished():
            trace(f"controller: check of {result.device}: {result.reason or 'ok'}")
            if result.ok:
                for worker in ctl.alive_workers():
                    if (
                        worker.device.name == result.device
                        and worker.wants_work
                        and ctl.phase is Phase.RUNNING
                    ):
                        ctl.feeder.feed(worker)
                if ctl.phase is Phase.RUNNING:
                    ctl.restart_for_leftovers()
            else:
                ctl.faults.take_out(result.device)


#: Messages handled without ending the loop round: the round's results wait to be stored in one
#: commit and shown. A WantWork may wait with them: its worker's finished tests left its queue
#: when their reports came (Feeder.unassign), shown or not. Ending the round on every WantWork
#: was most of a run's commits (W6 on 64 slots: 2,600 for 540 loop rounds).
_IN_ROUND = (m.TestReports, m.WantWork)


def _signal_group(pid: int, signum: int) -> None:
    """A worker's process group (its tests' children too), or the worker alone before it has one."""
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
