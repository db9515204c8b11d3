"""The worker process: one per device slot.

Started by the controller as ``python -m testrack.worker FD BOARD`` with the device's
environment already applied, so ``CUDA_VISIBLE_DEVICES`` and friends are set
before any test code is imported. It runs a normal pytest session built from
the controller's own command line, except that collection happens on demand
(only the files it is sent) and the run loop obeys the controller.

Fixtures live as in plain pytest: pytest tears down exactly what the next test
does not need, so the worker holds its last queued test until it knows what
follows it: more tests (it asks while it still has some, so the round trip
overlaps a running test) or :class:`~testrack.messages.Finish`, after which it
runs that test with ``nextitem=None``, ends its session and exits. A session
fixture is therefore set up once per worker and torn down when the worker ends;
except after :class:`~testrack.messages.Idle` (its slot will be lent to a test on
several devices): the last test then ends as a session's last, and the worker
waits for more, setting fixtures up again for them.

Before each test the worker writes on its :mod:`~testrack.scoreboard` which test
starts and when; reports travel in batches.
"""

from __future__ import annotations

import contextlib
import faulthandler
import gc
import logging
import os
import pickle
import select
import signal
import sys
import time
import traceback
import warnings
from collections import deque
from collections.abc import Generator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NoReturn, TextIO, cast

import pytest
from _pytest._io import TerminalWriter
from _pytest.doctest import DoctestModule
from _pytest.outcomes import OutcomeException
from _pytest.warnings import catch_warnings_for_item

from testrack import cloning, compact, relay
from testrack import messages as m
from testrack.collection import FileUnit, matches_selector, walk_files
from testrack.devices import Devices
from testrack.errors import DeviceError
from testrack.fixtures import devices_key
from testrack.scheduling.requests import declaration
from testrack.scoreboard import Scoreboard
from testrack.trace import trace

#: Reports travel in batches: a batch goes once its oldest report has waited this long (seconds),
#: before a test expected to run longer than FLUSH_AFTER or not known to be short, after a
#: failure, and whenever the worker waits. (Not while a test runs: one known to be short that
#: hangs holds the batch.) Each batch costs the controller a store commit and a wake-up, which
#: were a third of its cost per test at 50 ms (docs/architecture.md); a human does not see 0.2 s.
BATCH_WINDOW = 0.2
#: A test that takes this long (seconds) is not short: the reports before it are sent first.
FLUSH_AFTER = 0.05
#: A worker asks for more work while it still has this many tests to start, so that the answer
#: (the controller's, or a claim from a shared run's queue: a database round trip) arrives while
#: the one before its last runs; asked with one left, its device waited for every answer.
ASK_AHEAD = 2
#: What a worker says when a test used pytest-benchmark's fixture (it turns itself off in workers).
BENCHMARKS_OFF = (
    "Benchmarks are automatically disabled because xdist plugin is active. Benchmarks cannot be "
    "performed reliably in a parallelized environment. (testrack runs tests in worker processes, "
    "which pytest-benchmark treats as xdist workers; benchmark with --rack off.)"
)
#: Set when this worker was forked from the controller (see testrack.workers.Launcher.fork).
FORKED = False
_STACKS: Any = None


class WorkerSession:
    """Pytest plugin that turns a pytest session into a testrack worker."""

    is_testrack_worker = True

    def __init__(self, conn: Connection, hello: m.Hello, board: Scoreboard) -> None:
        self.conn = conn
        self.hello = hello
        self.board = board
        self.config: pytest.Config | None = None
        self.session: pytest.Session | None = None
        self.items: dict[str, pytest.Item] = {}
        self.files: dict[str, list[pytest.File]] | None = None
        self.queue: deque[str] = deque()
        self.asked = False
        #: Set by the controller's answer to MayIStart.
        self.lease_held = False
        self.finishing = False
        #: Told Idle: run the last queued test as a session's last, then wait for more.
        self.idle = False
        self.stopping = False
        self.buffer: list[m.SerializedReport | compact.CompactReport] = []
        self.finished: list[str] = []
        self.buffered_since = 0.0
        self.last_duration = 1.0
        self._collecting: list[m.SerializedReport] | None = None
        self._deselected: list[str] = []
        self._stdout: Any = None
        self.maxfail = 0
        self.failures = 0
        self.orphaned = False
        self._sending = False
        self._interrupted = False
        self.log_relay: relay.LogRelay | None = None
        self.benchmarked = False
        #: Tests the controller expects to run longer than FLUSH_AFTER (from their history).
        self.long_tests: set[str] = set()
        #: Tests with no history of their own, and the test functions that ran short here: a
        #: case of one of those is taken to be short too (the parametrized cases of a function).
        self.unknown_tests: set[str] = set()
        self.short_functions: set[str] = set()
        #: Tests on several devices given to this worker, and their devices by position.
        self.gangs: dict[str, tuple[Any, ...]] = {}
        #: Plain passing reports travel compact (testrack.compact) when both ends allow it.
        self.packer = compact.Packer()
        self._compact_allowed = False
        self._serializers: list[Any] = []
        self._poller: select.poll | None = None
        #: In a template worker (testrack.cloning): what it reads of what differs between slots.
        self.watch: cloning.Watch | None = None
        #: What this worker collected, by file: a clone answers a Collect of those from here.
        self.units: dict[str, m.CollectedUnit] = {}
        self.cloned = False

    # ------------------------------------------------------------------ pytest hooks

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_cmdline_main(self, config: pytest.Config) -> Generator[None, object, object]:
        """Wait for the Start, so that every plugin's pytest_configure sees the final
        ``workerinput`` (what plugins added in ``pytest_configure_node``), as under xdist."""
        self.config = config
        try:
            start = self.conn.recv()
        except EOFError:
            os._exit(0)  # prestarted, then not needed: the controller went another way
        if not isinstance(start, m.Start):
            raise TypeError(f"testrack worker: expected Start, got {start!r}")
        workerinput = dict(self.hello.workerinput)
        workerinput.update(start.workerinput)
        workerinput["basetemp"] = config.option.basetemp = start.basetemp
        config.workerinput = workerinput if self.watch is None else self.watch.workerinput(workerinput)  # type: ignore[attr-defined]
        config.workeroutput = {}  # type: ignore[attr-defined]
        self._compact_allowed = start.compact_reports
        if workerinput.get("testrack_ordered") and hasattr(config.option, "randomly_reorganize"):
            config.option.randomly_reorganize = False  # the controller orders the run (its seed)
        # What belongs to the user's session goes to the controller: log records for the live
        # log and the log file, suite properties for the JUnit file.
        self.log_relay = relay.worker_log_relay(config)
        if config.option.xmlpath:
            from _pytest.junitxml import xml_key

            family = str(config.getini("junit_family"))
            config.stash[xml_key] = relay.SuiteProperties(family, self._suite_property)  # type: ignore[misc]
        return (yield)

    def _suite_property(self, name: str, value: str) -> None:
        self.send(m.SuiteProperty(name, value))

    @pytest.hookimpl(tryfirst=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        # The controller counts failures across workers and owns the terminal; a worker
        # only stops itself at maxfail so that it runs nothing past its own failures.
        self.maxfail = int(config.option.maxfail or 0)
        self.failures = 0
        config.option.maxfail = 0
        config.option.usepdb = False
        # The controller sends SIGINT to stop the running test (Ctrl-C in the terminal).
        signal.signal(signal.SIGINT, self._on_interrupt)
        self._stdout, sys.stdout = sys.stdout, open(os.devnull, "w")  # noqa: SIM115

    @pytest.hookimpl(trylast=True, specname="pytest_configure")
    def pytest_configure_last(self, config: pytest.Config) -> None:
        """No terminal here: the controller shows everything. Without the reporter, the worker
        spends nothing on each report's progress letter nor on plugins' terminal summaries
        (hypothesis imports itself whole for one, in every worker)."""
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            config.pluginmanager.unregister(reporter)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if self._stdout is not None:  # the terminal reporter keeps writing to devnull
            sys.stdout, self._stdout = self._stdout, None
        if self.log_relay is not None:
            logging.getLogger().addHandler(self.log_relay)
        # This session's terminal is a blind one (the controller owns the user's): what a plugin
        # writes there (pytest-timeout's stacks, say) goes to the worker's stdout as it is then:
        # captured into the test's report during a test, else read by the controller, which
        # keeps it for the report of a test that killed the worker.
        writer = TerminalWriter(cast(TextIO, _CurrentStdout()))
        session.config.get_terminal_writer = lambda: writer  # type: ignore[method-assign]
        # After pytest's debugging plugin set its own: a debugger needs the user's terminal.
        sys.breakpointhook = _no_debugger
        import pdb

        pdb.set_trace = _no_debugger
        self.session = session
        trace("worker: ready")
        self.send(m.WorkerReady(pid=os.getpid(), python=sys.version.split()[0]))

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection(self, session: pytest.Session) -> bool:
        return True  # files are collected when the controller sends them

    @pytest.hookimpl(tryfirst=True)
    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """Take the JUnit stand-in away before pytest's junitxml plugin ends: it unregisters
        whatever it finds there as its writer, and the stand-in was never a plugin."""
        from _pytest.junitxml import xml_key

        if isinstance(config.stash.get(xml_key, None), relay.SuiteProperties):
            del config.stash[xml_key]

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        self.loop()
        return True

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        assert self.config is not None
        # What the terminal reporter would ask (there is none here); plugins settle the report's
        # outcome there (pytest's subtests fail a test whose subtests failed).
        self.config.hook.pytest_report_teststatus(report=report, config=self.config)
        data = self.packer.pack(report) if self._compact() else None
        if data is None:
            data = self.config.hook.pytest_report_to_serializable(config=self.config, report=report)
            self.packer.full(data)
        if not self.buffer:
            self.buffered_since = time.monotonic()
        self.buffer.append(data)
        if report.failed and not hasattr(report, "wasxfail"):
            self.failures += 1
            if self.maxfail and self.failures >= self.maxfail:
                self.stopping = True

    def _compact(self) -> bool:
        """Whether reports may travel compact: the controller takes them, and no plugin here
        serializes reports its own way (a conftest loaded since may bring one)."""
        if not self._compact_allowed:
            return False
        assert self.config is not None
        hook = self.config.hook.pytest_report_to_serializable
        impls = hook.get_hookimpls()
        if impls != self._serializers:
            self._serializers = impls
            self._compact_allowed = compact.only_pytest_serializes(hook)
        return self._compact_allowed

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        report = yield
        if self.log_relay is not None:
            report.testrack_logs = self.log_relay.take()  # replayed with the phase's report
        if call.excinfo is not None and call.excinfo.errisinstance(DeviceError):
            # Travels with the serialized report: the controller retries instead of failing.
            report.testrack_device_error = str(call.excinfo.value) or type(call.excinfo.value).__name__
        return report

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if self._collecting is not None and not report.passed:
            assert self.config is not None
            data = self.config.hook.pytest_report_to_serializable(config=self.config, report=report)
            self._collecting.append(data)

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self._deselected.extend(item.nodeid for item in items)

    def pytest_warning_recorded(
        self, warning_message: warnings.WarningMessage, when: str, nodeid: str, location: object
    ) -> None:
        category = warning_message.category
        if FORKED and category is pytest.PytestAssertRewriteWarning:
            return  # plugins the controller imported before forking us; not the user's concern
        self.send(
            m.WarningRecorded(
                message=str(warning_message.message),
                category=f"{category.__module__}.{category.__qualname__}",
                filename=str(warning_message.filename),
                lineno=int(warning_message.lineno),
                when=when,
                nodeid=nodeid,
            )
        )

    def pytest_internalerror(self, excrepr: object) -> None:
        self.send(m.WorkerFailed(error=str(excrepr)))

    def pytest_fixture_setup(self, fixturedef: pytest.FixtureDef[Any]) -> None:
        if fixturedef.argname == "benchmark":
            self.benchmarked = True

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_sessionfinish(self, exitstatus: int) -> Any:
        result = yield
        trace("worker: session finished")
        if self.benchmarked and getattr(
            getattr(self.config, "_benchmarksession", None), "xdist_warning", False
        ):
            # pytest-benchmark turned itself off here, as it does in an xdist worker: say so.
            self.send(
                m.WarningRecorded(
                    message=BENCHMARKS_OFF,
                    category="pytest_benchmark.logger.PytestBenchmarkWarning",
                    filename="pytest_benchmark",
                    lineno=0,
                    when="runtest",
                    nodeid="",
                )
            )
        self.flush()
        output = getattr(self.config, "workeroutput", {})
        self.send(m.WorkerFinished(exitstatus=int(exitstatus), workeroutput=_picklable(output)))
        return result

    # ------------------------------------------------------------------ the loop

    def send(self, message: m.FromWorker) -> None:
        """Send a whole message: a Ctrl-C that comes meanwhile waits until it is out, since half a
        message would corrupt the stream and a repeated one would duplicate results."""
        if self.orphaned:
            return
        self._sending = True
        try:
            self.conn.send(message)
        except OSError:
            self.controller_gone()
        finally:
            self._sending = False
        if self._interrupted:
            self._interrupted = False
            raise KeyboardInterrupt

    def _on_interrupt(self, signum: int, frame: object) -> None:
        if self._sending:
            self._interrupted = True
            return
        raise KeyboardInterrupt

    def receive(self) -> m.ToWorker | None:
        """The next message, or None when the controller is gone."""
        if not self.orphaned:
            try:
                message: m.ToWorker = self.conn.recv()
                return message
            except (EOFError, OSError):
                self.controller_gone()
        return None

    def controller_gone(self) -> None:
        """The controller died (killed, say): run nothing more, but still tear down cleanly."""
        self.orphaned = True
        self.stopping = True

    def flush(self) -> None:
        if self.log_relay is not None and self.log_relay.records:
            self.send(m.LogRecords(tuple(self.log_relay.take())))
        if self.buffer or self.finished:
            reports, finished = self.buffer, self.finished
            self.buffer, self.finished = [], []
            self.send(m.TestReports(tuple(reports), tuple(finished)))

    def loop(self) -> None:
        while not self.stopping:
            while not self.orphaned and self._readable():
                self.handle(self.receive())
            if self.stopping:
                break
            if len(self.queue) <= ASK_AHEAD and not self.asked and not self.finishing:
                self.flush()
                self.send(m.WantWork())
                self.asked = True
            if not self.queue and self.finishing:
                break
            if not self.queue or (len(self.queue) == 1 and not (self.finishing or self.idle)):
                # Nothing to run, or the last test's successor is still unknown.
                self.flush()
                self.handle(self.receive())
                continue
            if not self.board.may_start() and not self._lease_confirmed():
                continue
            nodeid = self.queue.popleft()
            self.run_one(nodeid, self._next_item())

    def _readable(self) -> bool:
        """A message (or the controller's end of file) is waiting. Asked before every test:
        ``Connection.poll()`` builds a selector on each call, a kept poll object does not."""
        if self._poller is None:
            self._poller = select.poll()
            self._poller.register(self.conn.fileno(), select.POLLIN)
        return bool(self._poller.poll(0))

    def _lease_confirmed(self) -> bool:
        """The slot's lease is not certainly held any more (the controller, or this whole run,
        was frozen or cut off for a while): ask, and start nothing until the answer. False
        when told to stop instead (the device is no longer this run's)."""
        self.flush()
        self.send(m.MayIStart())
        self.lease_held = False
        while not self.stopping and not self.lease_held:
            self.handle(self.receive())
        return not self.stopping

    def _next_item(self) -> pytest.Item | None:
        for nodeid in self.queue:
            item = self.items.get(nodeid)
            if item is not None:
                return item
        return None

    def run_one(self, nodeid: str, nextitem: pytest.Item | None) -> None:
        assert self.config is not None
        unknown = nodeid in self.unknown_tests
        if self.buffer and (
            nodeid in self.long_tests
            or self.last_duration >= FLUSH_AFTER
            or time.monotonic() - self.buffered_since >= BATCH_WINDOW
            or (unknown and _function(nodeid) not in self.short_functions)
        ):
            self.flush()  # what finished must not wait for a long test, or one that may be
        failures = self.failures
        self.board.start(nodeid)
        start = time.monotonic()
        item = self.items.get(nodeid)
        if item is None:
            self.report_missing(nodeid)
        else:
            gang = self.gangs.pop(nodeid, None)
            if gang is not None:
                item.stash[devices_key] = Devices(declaration(item).request, list(gang))
            self.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
        now = time.monotonic()
        self.board.finish()
        session = self.session
        if session is not None and (session.shouldfail or session.shouldstop):
            self.stopping = True  # --sw, or a plugin that stops the session: as pytest's own loop
        self.last_duration = now - start
        if unknown:
            self.unknown_tests.discard(nodeid)
            if self.last_duration < FLUSH_AFTER:
                self.short_functions.add(_function(nodeid))
        self.finished.append(nodeid)
        if self.failures > failures or now - self.buffered_since >= BATCH_WINDOW:
            self.flush()

    def handle(self, message: m.ToWorker | None) -> None:
        match message:
            case None:
                pass  # the controller is gone; the loop ends
            case m.Collect(paths=paths, only_import=later):
                self.collect(paths, frozenset(later))
            case m.Run(nodeids=nodeids, long=long, unknown=unknown, devices=devices):
                if devices:  # a test on several devices: its devices fixture, by role and position
                    self.gangs[nodeids[0]] = devices
                self.queue.extend(nodeids)
                self.long_tests.update(long)
                self.unknown_tests.update(unknown)
                self.asked = False
                self.idle = False
            case m.Finish():
                self.finishing = True
            case m.Idle():
                self.idle = True  # its last test runs as a session's last; more may come later
            case m.Shutdown():
                self.stopping = True
            case m.LeaseHeld():
                self.lease_held = True  # and the board's deadline moved on
            case m.Clone():
                self.clone(message)
            case _:
                raise TypeError(f"testrack worker: unexpected message {message!r}")

    # ------------------------------------------------------------------ collection

    def collect(self, keys: tuple[str, ...], later: frozenset[str] = frozenset()) -> None:
        """Import ``keys`` in order and report their tests; of those in ``later``, only import."""
        assert self.session is not None and self.config is not None
        if self.cloned and all(key in self.units for key in keys):
            # Imported and collected by the template before the fork: what it found is ours.
            self.send(m.Collected(tuple(self.units[key] for key in keys), (), (), 0.0, ()))
            return
        started = time.monotonic()
        if self.files is None:
            self.files = {unit.path: nodes for unit, nodes in walk_files(self.session)}
        self._collecting = []
        self._deselected = []
        made = [key for key in keys if key not in later]
        items: list[pytest.Item] = []
        key_of: dict[int, str] = {}
        seconds: dict[str, float] = {}
        scopes: dict[str, tuple[str, ...]] = {}
        # As pytest's own collection does: warnings are recorded (and -W applies), not lost.
        catching = catch_warnings_for_item(self.config, self.config.hook, when="collect", item=None)
        try:
            with catching:
                for key in keys:
                    unit_started = time.monotonic()
                    unit = FileUnit.from_key(key)
                    file_nodes = self.files.get(unit.path, [])
                    if key in later:
                        _import(file_nodes)
                        continue
                    if file_nodes:
                        scopes[key] = tuple(node.nodeid for node in file_nodes[0].listchain()[1:])
                    for file_node in file_nodes:
                        for item in self.session.genitems(file_node):
                            if not unit.selectors or any(
                                matches_selector(item, file_node, s) for s in unit.selectors
                            ):
                                items.append(item)
                                key_of[id(item)] = key
                    seconds[key] = time.monotonic() - unit_started
            if made:
                self.config.hook.pytest_collection_modifyitems(
                    session=self.session, config=self.config, items=items
                )
        finally:
            reports, self._collecting = self._collecting, None
        by_key: dict[str, list[m.CollectedTest]] = {key: [] for key in made}
        for item in items:
            self.items[item.nodeid] = item
            by_key[key_of.get(id(item), made[0])].append(describe(item))
        self.session.items.extend(items)
        self.session.testscollected = len(self.items)
        units = tuple(
            m.CollectedUnit(key, tuple(by_key[key]), seconds.get(key, 0.0), scopes.get(key, ()))
            for key in made
        )
        self.units.update((unit.key, unit) for unit in units)
        lines = (
            self.config.hook.pytest_report_collectionfinish(
                config=self.config, start_path=self.config.invocation_params.dir, items=items
            )
            if made
            else []
        )
        self.send(
            m.Collected(
                units=units,
                deselected=tuple(self._deselected),
                reports=tuple(reports),
                duration=time.monotonic() - started,
                header=tuple(line for group in reversed(lines) for line in _lines(group)),
                imported=tuple(key for key in keys if key in later),
            )
        )

    # ------------------------------------------------------------------ cloning

    def clone(self, message: m.Clone) -> None:
        """The template's part: fork a copy of this worker for each slot, or say why not."""
        assert self.config is not None
        watch, self.watch = self.watch, None
        if watch is not None:
            watch.stop()
        ends = cloning.ENDS
        own = {self.conn.fileno(), *(fd for e in ends.values() for fd in e.fds())}
        if not message.slots:  # nothing to clone after all: stop watching, give the ends up
            reason = None
        elif watch is None:
            reason = "this worker was not started as a template"
        else:
            reason = cloning.refusal(watch, message.differing, self.config, own)
        if reason is None and not set(message.slots) <= set(ends):
            reason = "the controller asked for slots this worker holds no ends for"
        self.config.workerinput = dict(self.config.workerinput)  # type: ignore[attr-defined]
        if reason is None and message.slots:
            trace(f"worker: cloning for {len(message.slots)} slots")
            # What is collected now is shared, unchanged, by every copy: frozen, no copy's
            # collections walk it (nor copy its pages by touching each object's header).
            gc.collect()
            gc.freeze()
            for slot, env in zip(message.slots, message.envs, strict=True):
                for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
                    with contextlib.suppress(Exception):
                        stream.flush()  # type: ignore[union-attr]
                if cloning.fork_clone():
                    self.become_clone(ends.pop(slot), env)
                    return
        elif reason is not None:
            trace(f"worker: clone refused: {reason}")
            self.send(m.CloneRefused(reason))
        for each in ends.values():
            for fd in each.fds():
                with contextlib.suppress(OSError):
                    os.close(fd)
        ends.clear()

    def become_clone(self, ends: cloning.Ends, env: dict[str, str]) -> None:
        """In a fresh copy of the template: take this slot's socket, board, output and
        environment, read its own Hello and Start, and carry on as that slot's worker."""
        assert self.config is not None
        os.setsid()
        cloning.redirect(1, ends.out_w)
        cloning.redirect(2, ends.err_w)
        template_fds = {self.board.fd, ends.out_w, ends.err_w}
        for other in cloning.ENDS.values():
            template_fds.update(other.fds())
        cloning.ENDS.clear()
        # Closed through its object: closed behind it, the template's connection would close
        # its descriptor's number again when freed (at the end of main), by then another file's.
        self.conn.close()
        self.board.close()
        for fd in template_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        os.environ.clear()
        os.environ.update(env)
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        if capman is not None and capman.is_globally_capturing():
            # Its temporary files are the template's (one shared offset): this copy gets its own.
            capman.stop_global_capturing()
            capman.start_global_capturing()
            capman.suspend_global_capture()
        self.conn = Connection(ends.sock)
        self._poller = None
        self.board = Scoreboard(ends.board)
        self.cloned = True
        hello, start = self.conn.recv(), self.conn.recv()
        if not isinstance(hello, m.Hello) or not isinstance(start, m.Start):
            raise TypeError(f"testrack clone: expected Hello and Start, got {hello!r}, {start!r}")
        self.hello = hello
        workerinput = {**hello.workerinput, **start.workerinput}
        workerinput["basetemp"] = self.config.option.basetemp = start.basetemp
        self.config.workerinput = workerinput  # type: ignore[attr-defined]
        cloning.renew_in_copy(self.config)
        factory = getattr(self.config, "_tmp_path_factory", None)
        if factory is not None:  # made from the template's basetemp at its configuration
            factory._given_basetemp = Path(os.path.abspath(start.basetemp)) if start.basetemp else None
            factory._basetemp = None
        self._compact_allowed = start.compact_reports
        self.queue.clear()
        self.asked = False
        if self.log_relay is not None:
            self.log_relay.take()
        trace("worker: cloned")
        self.send(m.WorkerReady(pid=os.getpid(), python=sys.version.split()[0]))

    def report_missing(self, nodeid: str) -> None:
        """The controller sent a test this worker did not collect: say so, as a test error."""
        assert self.config is not None
        device = self.hello.workerinput.get("device", {}).get("name", "?")
        text = (
            f"{nodeid} was collected on another worker but not on this one (device {device}); "
            "its id depends on where it is collected (parametrization from the environment?). "
            "Make the ids independent of the device, or run it in each mode."
        )
        location = (nodeid.split("::")[0], None, nodeid)
        self.pytest_runtest_logreport(pytest.TestReport(nodeid, location, {}, "failed", text, "setup"))
        self.pytest_runtest_logreport(pytest.TestReport(nodeid, location, {}, "passed", None, "teardown"))


class _CurrentStdout:
    """Writes to whatever ``sys.stdout`` is at the time (pytest's capture swaps it)."""

    encoding = "utf-8"

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()

    def isatty(self) -> bool:
        return False


def _import(nodes: list[pytest.File]) -> None:
    """Import a test file's module as its collection would, without making its tests. An error
    is left to the worker that makes them (it reports it, once); this one would run none."""
    for node in nodes:
        if isinstance(node, pytest.Module) and not isinstance(node, DoctestModule):
            with contextlib.suppress(Exception, OutcomeException):
                _ = node.obj


def _lines(group: str | list[str]) -> list[str]:
    return [group] if isinstance(group, str) else list(group)


def _no_debugger(*args: object, **kwargs: object) -> NoReturn:
    """``breakpoint()`` and ``pdb.set_trace()`` in a worker: no terminal to debug in."""
    current = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
    device = os.environ.get("TESTRACK_DEVICE", "")
    rerun = "pytest --rack off" + (f" --rack-device {device}" if device and device != "local" else "")
    pytest.fail(
        "breakpoint() needs a terminal, but testrack runs this test in a worker process "
        f"(device {device or '?'}) that has none; debug it in one process with: "
        f"{rerun} {current}".rstrip(),
        pytrace=False,
    )


def _function(nodeid: str) -> str:
    """A test's id without its parameters: what its parametrized cases share."""
    return nodeid.partition("[")[0]


def _picklable(data: dict[str, Any]) -> dict[str, Any]:
    """``workeroutput`` as far as it can cross the process boundary."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        try:
            pickle.dumps(value)
        except Exception:
            sys.stderr.write(f"testrack: workeroutput[{key!r}] cannot be sent to the controller\n")
            continue
        out[key] = value
    return out


#: (path, line) of test functions already described: a parametrized function's cases share it.
_PLACES: dict[int, tuple[Any, str, int | None]] = {}


def _location(item: pytest.Item) -> tuple[str, int | None, str]:
    """``item.location``, without finding the source line of one function again for each of its
    parametrized cases (for a file of 500 cases that was most of what describing it cost)."""
    if not isinstance(item, pytest.Function) or type(item).reportinfo is not pytest.Function.reportinfo:
        return item.location
    obj = item.obj
    known = _PLACES.get(id(obj))
    if known is None or known[0] is not obj:
        path, lineno, _ = item.location
        _PLACES[id(obj)] = (obj, path, lineno)
        return item.location
    return (known[1], known[2], item.getmodpath())


def describe(item: pytest.Item) -> m.CollectedTest:
    """What the controller needs from an item: its id, location, device requirements, time limit."""
    declared = declaration(item)
    error = declared.error
    timeout = None
    limit = item.get_closest_marker("rack_timeout")
    if limit is not None:
        try:
            timeout = float(limit.args[0] if limit.args else limit.kwargs["seconds"])
            if not timeout > 0:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            error = (
                "@pytest.mark.rack_timeout needs a positive number of seconds, "
                f"got {limit.args or limit.kwargs}; write @pytest.mark.rack_timeout(30)"
            )
    return m.CollectedTest(
        nodeid=item.nodeid,
        location=_location(item),
        requirements=declared.requirements,
        requirement_error=error,
        timeout=timeout,
        devices=declared.request,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m testrack.worker FD BOARD``."""
    trace("worker: main")
    argv = sys.argv[1:] if argv is None else argv
    conn = Connection(int(argv[0]))
    board = Scoreboard(int(argv[1]))
    # On SIGUSR1 (the controller's timeout) every thread's stack goes to the stderr pipe,
    # through a copy of the descriptor that pytest's output capture does not redirect.
    global _STACKS
    _STACKS = os.fdopen(os.dup(2), "w")
    faulthandler.register(signal.SIGUSR1, file=_STACKS, all_threads=True)
    try:
        hello: m.Hello = conn.recv()
    except EOFError:
        return 0  # prestarted, then not needed: the controller went another way
    if hello.replace_sys_path:
        sys.path[:] = list(hello.sys_path)
    else:  # an environment's worker keeps its own installation's path
        sys.path[:0] = [p for p in hello.sys_path if p not in sys.path]
    plugin = WorkerSession(conn, hello, board)
    if cloning.ENDS:  # a template: watch what its configuration reads, from the start
        plugin.watch = cloning.Watch()
        plugin.watch.start()
    profile_dir = os.environ.get("TESTRACK_PROFILE")
    profiler = None
    if profile_dir:  # where a worker's CPU goes (docs/architecture.md); the controller: python -m cProfile
        import cProfile

        profiler = cProfile.Profile(time.process_time)  # CPU, not time spent waiting
        profiler.enable()
    try:
        code = pytest.main(list(hello.args), plugins=[plugin])
    except BaseException:
        conn.send(m.WorkerFailed(error=traceback.format_exc()))
        raise
    finally:
        if profiler is not None and profile_dir:
            profiler.disable()
            profiler.dump_stats(os.path.join(profile_dir, f"worker-{os.getpid()}.prof"))
    return int(code)


def exit_now(code: int) -> None:
    """Exit without tearing the interpreter down module by module.

    The session is over and reported; atexit handlers (coverage saving its data,
    say) still run, but the slow part of interpreter shutdown is skipped.
    """
    import atexit

    trace("worker: exiting")
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
