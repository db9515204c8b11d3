"""See the run live: what each device slot runs now, how far the run is, when it should end.

Without it a rack run shows a test only when its batched reports arrive: a test that runs
for minutes is invisible, and a CI log shows nothing between "collected" and the summary.
Every worker already writes the test it starts, and when, on its scoreboard
(:mod:`testrack.scoreboard`), so this module learns what runs where by reading shared
memory, not from a message per test; the dispatcher's estimates give the ETA.

``--rack-progress``:

- ``live`` (``auto`` on a terminal): a few lines under pytest's output, one per device slot
  and one for the run, redrawn five times a second and erased at the end. While they are up,
  what pytest writes is held and written above them at the next redraw. rich draws them: the
  cursor movement is rich's, not ours.
- ``lines`` (``auto`` when stdout is not a terminal, as in CI): a compact line every
  ``--rack-progress-interval`` seconds through pytest's terminal writer, so never a cursor
  movement, and colour only where pytest colours (``--color``).
- ``off``.

With ``-v`` a test's line is shown when it starts on its device, as pytest-xdist shows it,
and not again when its result comes.

The run loop calls :meth:`Progress.tick` at each turn: the view is drawn on the loop's own
thread, so it reads what the loop owns without locks and pytest's terminal is written from
one thread only. ``TESTRACK_PROGRESS_THREAD=1`` redraws the live view from a thread of its
own instead, for ``bench/progress.py`` to compare the two (docs/benchmarks.md).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import sys
import threading
import time
from collections.abc import Generator, Iterable
from typing import TYPE_CHECKING, Any

import pytest

from testrack import options

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult
    from rich.live import Live
    from rich.text import Text

    from testrack.controller import Controller
    from testrack.scheduling import Slot
    from testrack.workers import WorkerHandle

MODES = ("auto", "live", "lines", "off")
#: Seconds between two progress lines in lines mode (``--rack-progress-interval``).
DEFAULT_INTERVAL = 30.0
#: Seconds between two redraws of the live view, and between two looks for tests that started (-v).
REDRAW_PERIOD = 0.2
#: A running test is SLOW past SLOW_FACTOR times its estimate plus SLOW_MARGIN seconds...
SLOW_FACTOR = 2.0
SLOW_MARGIN = 1.0
#: ...and, when the estimate is a guess (no history of its own), past this many seconds at least.
SLOW_GUESSED = 10.0
#: An ETA this short, while a test runs past its estimate, says "overdue" instead.
OVERDUE = 1.0
#: Running tests a progress line names, longest running first.
LONGEST_SHOWN = 3


def addoption(group: Any) -> None:
    group.addoption(
        "--rack-progress",
        choices=MODES,
        default="auto",
        help="how the run shows its progress: live (lines per device slot under the output, "
        "redrawn in place), lines (a line every --rack-progress-interval seconds, for CI logs), "
        "off; auto (default): live on a terminal, lines otherwise.",
    )
    group.addoption(
        "--rack-progress-interval",
        type=options.seconds(30),
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between two progress lines in lines mode (default {DEFAULT_INTERVAL:g}).",
    )


def configure(config: pytest.Config, controller: Controller) -> None:
    """Register the controller's progress view as a plugin, unless it is off."""
    if controller.progress.requested != "off":
        config.pluginmanager.register(controller.progress, "testrack-progress")


def choose(requested: str, terminal: bool, term: str | None) -> str:
    """The mode ``auto`` stands for: live on a terminal that can move its cursor, lines otherwise."""
    if requested != "auto":
        return requested
    if terminal and (term or "").lower() not in ("dumb", "unknown"):
        return "live"
    return "lines"


# ---------------------------------------------------------------------- what is shown


@dataclasses.dataclass(frozen=True)
class SlotView:
    """One device slot at one moment."""

    label: str
    device: str
    doing: str
    """The running test's id, or what the slot does instead (idle, starting, done, ...)."""
    running: bool = False
    elapsed: float = 0.0
    slow: bool = False
    done: int = 0
    """Runs finished on the slot's device."""
    total: int | None = None
    """Runs the device has in all (None in load mode over several devices: any slot takes any test)."""


@dataclasses.dataclass(frozen=True)
class RunView:
    """The run at one moment."""

    slots: tuple[SlotView, ...]
    done: int
    total: int
    failed: int
    eta: float | None
    """Seconds left by the estimates (None: no estimate, as no worker is left)."""
    overdue: bool = False
    """Tests still run though the estimates say the run should have ended."""


def is_slow(elapsed: float, estimate: float, guessed: bool) -> bool:
    """Has a test overrun its estimate by the margin that makes it worth a mark?"""
    limit = SLOW_FACTOR * estimate + SLOW_MARGIN
    if guessed:
        limit = max(limit, SLOW_GUESSED)
    return elapsed > limit


def eta(left: float, done: float, wall: float, slots: int, longest_left: float = 0.0) -> float | None:
    """Seconds until the run ends: the estimated work ``left`` at the pace the run has kept
    (estimated work ``done`` per ``wall`` second, which corrects estimates that are all too
    short or too long alike), or spread over the ``slots`` before there is a pace; never less
    than what the longest running test has left."""
    if slots <= 0:
        return None
    guess = left * wall / done if done > 0 and wall >= 1.0 else left / slots
    return max(guess, longest_left)


def duration(seconds: float) -> str:
    """``0.4s``, ``12.3s``, ``1m05s``, ``2h03m``."""
    if seconds < 59.95:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def shorten(text: str, width: int) -> str:
    """``text`` in ``width`` columns; a test id keeps its end, where the test's name is."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    return "…" + text[len(text) - width + 1 :]


def running_longest(view: RunView, count: int = LONGEST_SHOWN) -> list[SlotView]:
    busy = [s for s in view.slots if s.running]
    return sorted(busy, key=lambda s: -s.elapsed)[:count]


def line_parts(view: RunView) -> list[tuple[str, dict[str, bool]]]:
    """The progress line of lines mode, as (text, pytest markup) parts."""
    parts: list[tuple[str, dict[str, bool]]] = [(f"testrack: {view.done}/{view.total} runs", {})]
    if view.failed:
        parts += [(", ", {}), (f"{view.failed} failed", {"red": True})]
    busy = sum(1 for s in view.slots if s.running)
    parts.append((f", {busy} of {len(view.slots)} slots running", {}))
    longest = running_longest(view)
    if longest:
        parts.append(("; longest: ", {}))
        for k, slot in enumerate(longest):
            if k:
                parts.append((", ", {}))
            parts.append((f"{slot.doing} {duration(slot.elapsed)} on {slot.label}", {}))
            if slot.slow:
                parts.append((" SLOW", {"yellow": True}))
    if view.overdue:
        parts.append(("; ETA overdue", {}))
    elif view.eta is not None:
        parts.append((f"; ETA {duration(view.eta)}", {}))
    return parts


def board_lines(view: RunView, width: int, height: int) -> list[Text]:
    """The live view: a line per slot and one for the run, in ``height`` lines at most.

    With more slots than lines, the slots running longest keep theirs (in slot order) and one
    line counts the others."""
    from rich.text import Text

    slots = list(view.slots)
    room = max(1, height - 1)
    hidden: list[SlotView] = []
    if len(slots) > room:
        keep = {id(s) for s in running_longest(view, room - 1)}
        if len(keep) < room - 1:
            keep.update(id(s) for s in [s for s in slots if id(s) not in keep][: room - 1 - len(keep)])
        hidden = [s for s in slots if id(s) not in keep]
        slots = [s for s in slots if id(s) in keep]
    label_width = max((len(s.label) for s in view.slots), default=0)
    counts = [_count(s) for s in slots]
    count_width = max((len(c) for c in counts), default=0)
    test_width = width - label_width - count_width - 15  # spaces, elapsed (6), " SLOW"
    lines = []
    for slot, count in zip(slots, counts, strict=True):
        line = Text(no_wrap=True, overflow="crop")
        line.append(slot.label.ljust(label_width), style="bold")
        line.append(" ")
        if slot.running:
            line.append(shorten(slot.doing, max(test_width, 8)).ljust(max(test_width, 8)))
            line.append(f" {duration(slot.elapsed):>6}", style="cyan")
            line.append(" SLOW" if slot.slow else "     ", style="bold yellow")
        else:
            wide = max(test_width, 8) + 12  # no elapsed time, no mark
            line.append(shorten(slot.doing, wide).ljust(wide), style="dim")
        line.append(" " + count.rjust(count_width), style="dim")
        lines.append(line)
    if hidden:
        busy = sum(1 for s in hidden if s.running)
        lines.append(Text(f"… {len(hidden)} more slots ({busy} running)", style="dim"))
    summary = Text(no_wrap=True, overflow="crop")
    summary.append("testrack ", style="bold")
    summary.append(f"{view.done}/{view.total} runs")
    if view.failed:
        summary.append("  ")
        summary.append(f"{view.failed} failed", style="bold red")
    if view.overdue:
        summary.append("  ETA overdue", style="yellow")
    elif view.eta is not None:
        summary.append(f"  ETA {duration(view.eta)}")
    lines.append(summary)
    return lines


def _count(slot: SlotView) -> str:
    return f"{slot.done}/{slot.total}" if slot.total is not None else f"{slot.done} done"


# ---------------------------------------------------------------------- the plugin


class Progress:
    """The run's progress in the terminal; the controller's run loop drives it (:meth:`tick`)."""

    def __init__(self, config: pytest.Config, ctl: Controller) -> None:
        self.config = config
        self.ctl = ctl
        #: pytest's terminal reporter, once the run starts (None without one: -p no:terminal).
        self.reporter: Any = None
        self.requested: str = config.getoption("rack_progress", "auto")
        self.interval: float = config.getoption("rack_progress_interval", DEFAULT_INTERVAL)
        self.verbose = config.get_verbosity() > 0
        self.mode = "off"
        #: Runs finished, by device, and runs (shown ids) with a failed report.
        self.done = 0
        self.done_by_device: dict[str, int] = {}
        self.failed: set[str] = set()
        self._device_of: dict[str, str | None] = {}
        #: When the loop should next call in (None: nothing to do, before the loop, after it, or off).
        self._due: float | None = None
        self._period = REDRAW_PERIOD
        self._next_line = 0.0
        self._screen: LiveScreen | None = None
        self._thread: _Redrawer | None = None
        self._started_at = 0.0
        self._work_at_start: float | None = None
        #: -v: each worker's board count of started tests already announced.
        self._announced: dict[WorkerHandle, int] = {}
        #: -v: the start line pytest wrote for a test, by shown id, until its result comes.
        self._prefixes: dict[str, str] = {}

    # ------------------------------------------------------------------ the run loop's side

    def tick(self, wait: float | None) -> float | None:
        """Draw when due; return how long the loop may wait for messages (``wait`` at most)."""
        due = self._due
        if due is None:
            return wait
        now = time.monotonic()
        if now >= due:
            self._turn(now)
            if self._due is None:
                return wait
            due = self._due = now + self._period
        left = due - now
        return left if wait is None or left < wait else wait

    def _turn(self, now: float) -> None:
        try:
            if self.verbose:
                self._announce()
            if self._screen is not None:
                if self._thread is None:
                    self._screen.show(self.view(now))
            elif now >= self._next_line:
                self._next_line = now + self.interval
                self._write_line(self.view(now))
        except Exception as exc:  # a bug in the view must not cost the run
            self._give_up(exc)

    def _give_up(self, exc: BaseException) -> None:
        self.ctl.problems.append(f"the progress view stopped: {exc!r}; the run went on without it")
        self.stop()

    # ------------------------------------------------------------------ pytest hooks

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, object, object]:
        try:
            self.start()
        except Exception as exc:  # the run goes on without its view
            self._give_up(exc)
        try:
            return (yield)
        finally:
            self.stop()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logstart(self, nodeid: str) -> None:
        prefix = self._prefixes.pop(nodeid, None)
        if prefix is not None:
            # Its start line is up already: pytest's logstart, next, writes it only when it differs.
            self.reporter.currentfspath = prefix

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed:
            self.failed.add(report.nodeid)
        if report.nodeid not in self._device_of:
            self._device_of[report.nodeid] = _device(report)

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        self.done += 1
        device = self._device_of.pop(nodeid, None)
        if device is not None:
            self.done_by_device[device] = self.done_by_device.get(device, 0) + 1

    # ------------------------------------------------------------------ start and stop

    def start(self) -> None:
        reporter = self.reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None or self.requested == "off":
            return
        writer = self.config.get_terminal_writer()
        # The writer's file is pytest's to choose; the live view must stand in for it to keep
        # pytest's lines above its own, and nothing public lets it.
        stream = getattr(writer, "_file", None)
        terminal = bool(stream is not None and _isatty(stream))
        self.mode = choose(self.requested, terminal, os.environ.get("TERM"))
        now = time.monotonic()
        self._started_at = now
        if self.mode == "live" and stream is not None:
            self._screen = LiveScreen(writer, stream, colour=bool(writer.hasmarkup))
            self._screen.open(self.view(now))
            if os.environ.get("TESTRACK_PROGRESS_THREAD"):
                self._thread = _Redrawer(self, self._screen)
                self._thread.start()
        self._next_line = now + self.interval
        live = self._screen is not None and self._thread is None
        self._period = REDRAW_PERIOD if live or self.verbose else self.interval
        self._due = now + self._period

    def stop(self) -> None:
        """Take the live view down (pytest's held lines written, the view's erased), or stop the lines."""
        self._due = None
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.stop()
        screen, self._screen = self._screen, None
        if screen is not None:
            try:
                screen.close()
            except Exception as exc:  # the run's own outcome, or exception, goes first
                self.ctl.problems.append(f"the live view could not be taken down: {exc!r}")

    # ------------------------------------------------------------------ reading the run

    def view(self, now: float) -> RunView:
        """Every slot from its worker's scoreboard; counts from the reports; the ETA from the estimates."""
        from testrack.scheduling.estimates import DEFAULT_ESTIMATE
        from testrack.workers import State

        ctl = self.ctl
        dispatcher = ctl.dispatcher
        quarantined = ctl.health.quarantined()
        labels = ctl.launcher.labels
        # A dispatcher that cannot say what waits for each device (a fixed order's) gets counts only.
        by_device: Any = getattr(dispatcher, "remaining_by_device", None)
        per_device = by_device is not None and (ctl.mode == "each" or len(ctl.rack.devices) == 1)
        held: dict[str, int] = {}
        left = dispatcher.remaining_time  # estimated seconds of work not done yet
        longest_left = 0.0
        overdue = False
        alive = 0
        slots: list[SlotView] = []
        for slot in ctl.slots:
            worker = ctl.workers.get(slot.id)
            label = labels[slot.id].id if slot.id in labels else slot.id
            view = SlotView(label, slot.device, _idle(worker, slot, quarantined, ctl.faults.dead_slots))
            if worker is not None and worker.alive:
                alive += 1
                held[slot.device] = held.get(slot.device, 0) + len(worker.assigned)
                seen = worker.board.read()
                waiting = max(0, seen.started - worker.reported)  # jobs held not started yet from here
                if seen.running and worker.state is not State.STARTING:
                    elapsed = max(0.0, now - seen.started_at)
                    view = dataclasses.replace(view, doing=seen.nodeid, running=True, elapsed=elapsed)
                    job = worker.running_job()
                    if job is not None and job.nodeid == seen.nodeid:
                        estimate = job.estimate or DEFAULT_ESTIMATE
                        view = dataclasses.replace(view, slow=is_slow(elapsed, estimate, job.guessed))
                        longest_left = max(longest_left, estimate - elapsed)
                        overdue = overdue or elapsed > estimate
                        left += max(0.0, estimate - elapsed)
                left += sum(
                    j.estimate or DEFAULT_ESTIMATE for j in itertools.islice(worker.assigned, waiting, None)
                )
            slots.append(view)
        if per_device:
            pending: dict[str, int] = by_device()
            slots = [
                dataclasses.replace(
                    s,
                    done=self.done_by_device.get(s.device, 0),
                    total=sum(n.get(s.device, 0) for n in (self.done_by_device, held, pending)),
                )
                for s in slots
            ]
        else:
            slots = [dataclasses.replace(s, done=self.done_by_device.get(s.device, 0)) for s in slots]
        if self._work_at_start is None:
            self._work_at_start = left
        seconds = eta(left, max(0.0, self._work_at_start - left), now - self._started_at, alive, longest_left)
        return RunView(
            slots=tuple(slots),
            done=self.done,
            total=max(ctl.runs, self.done),
            failed=len(self.failed),
            eta=seconds,
            overdue=overdue and seconds is not None and seconds < OVERDUE,
        )

    # ------------------------------------------------------------------ writing

    def _write_line(self, view: RunView) -> None:
        reporter = self.reporter
        reporter.ensure_newline()
        for text, markup in line_parts(view):
            reporter.write(text, **markup)
        reporter.line("")

    def _announce(self) -> None:
        """-v: pytest's start line for each test that started since the last look, as xdist shows
        it when a test starts; the tests whose results came meanwhile got theirs with the result."""
        from testrack.workers import State

        ctl = self.ctl
        reporter = self.reporter
        for worker in ctl.alive_workers():
            if worker.state is State.STARTING:
                continue
            started = worker.board.read().started
            last = self._announced.get(worker, 0)
            if started <= last:
                continue
            self._announced[worker] = started
            first = max(last, worker.reported) - worker.reported
            for job in itertools.islice(worker.assigned, first, started - worker.reported):
                info = ctl.tests.get(job.nodeid)
                if info is None or job.nodeid in worker.phases:
                    continue
                shown = ctl.replay.display_id(job.nodeid, worker.device.name)
                reporter.pytest_runtest_logstart(nodeid=shown, location=info.test.location)
                prefix = reporter.currentfspath
                if isinstance(prefix, str):
                    self._prefixes[shown] = prefix


def _idle(worker: WorkerHandle | None, slot: Slot, quarantined: dict[str, str], dead: dict[str, str]) -> str:
    """What a slot does when it runs no test."""
    from testrack.workers import State

    slot_id = slot.id
    if slot.device in quarantined:
        return f"quarantined: {quarantined[slot.device]}"
    if worker is None:
        return dead.get(slot_id, "no worker")
    if worker.state is State.STARTING:
        return "starting"
    if worker.state is State.FINISHED:
        return "done"
    if worker.state is State.DEAD:
        return dead.get(slot_id, "worker gone")
    if worker.winding_down or worker.state is State.STOPPING:
        return "finishing"
    return "idle"


def _device(report: pytest.TestReport) -> str | None:
    for key, value in reversed(report.user_properties):
        if key == "device":
            return str(value)
    return None


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


# ---------------------------------------------------------------------- the live view


class LiveScreen:
    """The live lines under pytest's output, drawn by rich.

    While they are up, pytest's terminal writer (and ``sys.stdout``, and ``sys.stderr`` on a
    terminal) write into a holder; each redraw writes what was held above the lines in the
    same write as the lines themselves. The line pytest has not finished yet (``test_x.py ..``)
    is shown as the view's first line, and written back as it was when the view goes."""

    def __init__(self, writer: Any, stream: Any, colour: bool) -> None:
        from rich.console import Console
        from rich.live import Live

        self._writer = writer
        self._stream = stream
        self._console: Console = Console(
            file=stream,
            force_terminal=True,
            force_interactive=True,
            color_system="auto" if colour else None,
            highlight=False,
            markup=False,
            emoji=False,
        )
        self._board = _Board()
        self._live: Live = Live(
            self._board,
            console=self._console,
            auto_refresh=False,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._lock = threading.RLock()
        self._lines: list[str] = []
        self._partial = ""
        self._restore: list[tuple[Any, str, Any]] = []

    def open(self, view: RunView) -> None:
        holder = _Holder(self, self._stream)
        self._restore.append((self._writer, "_file", self._writer._file))
        self._writer._file = holder
        if sys.stdout is self._stream:
            self._restore.append((sys, "stdout", sys.stdout))
            sys.stdout = holder
        if sys.stderr is not self._stream and _isatty(sys.stderr) and _isatty(self._stream):
            self._restore.append((sys, "stderr", sys.stderr))
            sys.stderr = _Holder(self, sys.stderr)
        self._board.view = view
        self._live.start(refresh=True)

    def hold(self, text: str) -> None:
        with self._lock:
            head, newline, tail = text.rpartition("\n")
            if newline:
                self._lines.append(self._partial + head)
                self._partial = tail
            else:
                self._partial += text

    def show(self, view: RunView) -> None:
        with self._lock:
            self._board.view = view
            self._board.partial = self._partial.rpartition("\r")[2]
            if self._lines:
                held = _verbatim(self._lines)
                self._lines.clear()
                self._console.print(held, soft_wrap=True)  # above the view, which rich redraws below
            else:
                self._live.refresh()

    def close(self) -> None:

        with self._lock:
            self._board.partial = ""
            if self._lines:
                self._console.print(_verbatim(self._lines), soft_wrap=True)
                self._lines.clear()
            self._board.view = None
            try:
                self._live.stop()
            finally:
                for owner, name, value in reversed(self._restore):
                    setattr(owner, name, value)
                self._restore.clear()
                if self._partial:
                    self._stream.write(self._partial)
                    self._partial = ""
                self._stream.flush()


class _Board:
    """What rich draws: the run as it is now (rich asks at each redraw)."""

    def __init__(self) -> None:
        self.view: RunView | None = None
        self.partial = ""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.text import Text

        if self.view is None:
            return
        height = max(3, options.size.height // 2)
        if self.partial:
            yield Text.from_ansi(self.partial, no_wrap=True, overflow="crop")
            height -= 1
        yield from board_lines(self.view, options.max_width, height)


def _verbatim(lines: list[str]) -> _Verbatim:
    """Held lines to print above the view; of a line rewritten with ``\\r``, its last state."""
    return _Verbatim("\n".join(line.rpartition("\r")[2] for line in lines))


class _Verbatim:
    """Lines pytest wrote, colours and all, passed to the terminal as they are: decoding their
    escape codes into rich's text to have them encoded again cost most of the view's CPU
    (0.19 + 0.16 s of a 4.7 s controller on 5,000 tests, profiled), for the same bytes."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.segment import Segment

        yield Segment(self.text)
        yield Segment.line()  # a Text ends its line itself; a renderable of its own must


class _Holder:
    """A file that stands in for the terminal while the live view is up."""

    def __init__(self, screen: LiveScreen, stream: Any) -> None:
        self._screen = screen
        self._stream = stream

    def write(self, text: str) -> int:
        self._screen.hold(text)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self._screen.hold(line)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, ...: the terminal's
        return getattr(self._stream, name)


class _Redrawer(threading.Thread):
    """The live view redrawn by a thread of its own (``TESTRACK_PROGRESS_THREAD=1``), to measure
    against the run loop's tick."""

    def __init__(self, progress: Progress, screen: LiveScreen) -> None:
        super().__init__(name="testrack-progress", daemon=True)
        self._progress = progress
        self._screen = screen
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(REDRAW_PERIOD):
            try:
                view = self._progress.view(time.monotonic())
            except RuntimeError:  # a queue changed under it: the loop owns them
                continue
            self._screen.show(view)

    def stop(self) -> None:
        self._done.set()
        self.join()
