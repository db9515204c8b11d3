"""The ``testrack`` command line.

Each subcommand is one :class:`Command`: a function that adds its arguments and a function
that runs it and returns an exit code. To add one, write those two and list it in
:data:`COMMANDS`. A problem the user can fix is raised as :class:`CliError` and printed as one
line on stderr (exit code 2), never as a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import enum
import errno
import json
import os
import signal
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from testrack import history
from testrack.demo import DemoError, DemoOptions, run_demo
from testrack.rack import MODES, RACK_FILE, Device, dump_rack
from testrack.report import command as report_command
from testrack.share.cli import SHARE_COMMANDS
from testrack.sim import SimRack, SimStartError
from testrack.store import Store, StoreError
from testrack.store import location as store_location

__all__ = ["COMMANDS", "CliError", "Command", "ExitCode", "build_parser", "main"]

_FIRST_HOST = 11
MAX_SIM_DEVICES = 254 - _FIRST_HOST + 1


class ExitCode(enum.IntEnum):
    """What ``testrack`` returns."""

    OK = 0
    """The command did what was asked (for ``demo``: both runs passed)."""
    TESTS_FAILED = 1
    """The command ran, but tests failed."""
    USAGE_ERROR = 2
    """Bad arguments or a problem the message explains; nothing (more) was run."""
    INTERRUPTED = 130
    """Stopped with Ctrl+C where that is not the normal way to end."""


class CliError(Exception):
    """A problem the user can fix; the message names it and the fix."""


@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    epilog: str = ""
    """Shown at the end of the command's --help, line breaks kept."""


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr that points to --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE_ERROR, f"{self.prog}: error: {message}; see {self.prog} --help\n")


# -- argument types --------------------------------------------------------------------------


def _number(convert: Callable[[str], float], low: float, high: float, fix: str) -> Callable[[str], Any]:
    """An argparse type: ``convert(text)`` within [low, high], else ``'text' <fix>``."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} {fix}")
        return value

    return parse


_device_count = _number(
    int, 1, MAX_SIM_DEVICES,
    f"is not a number of devices; give a whole number from 1 to {MAX_SIM_DEVICES}, for example --devices 3",
)  # fmt: skip
_port = _number(
    int, 0, 65535,
    "is not a TCP port; give 1..65535 (below 1024 only as root), or 0 to let the system pick a free one",
)  # fmt: skip
_seconds = _number(
    float, 1e-9, 3600, "is not a duration; give seconds above 0, for example --seconds 0.5"
)  # fmt: skip


# -- testrack sim ----------------------------------------------------------------------------


def _add_sim_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--devices", type=_device_count, default=3, metavar="N",
        help="how many devices to simulate (default: 3)",
    )  # fmt: skip
    parser.add_argument(
        "--kind",
        default="board",
        help="device kind; devices are named KIND-1, KIND-2, ... (default: board)",
    )
    parser.add_argument(
        "--port", type=_port, default=0, metavar="P",
        help="TCP port shared by all devices, one loopback address each (default: 0, a free port)",
    )  # fmt: skip
    parser.add_argument(
        "--rack-file", type=Path, default=Path(RACK_FILE), metavar="PATH",
        help=f"where to write the rack file (default: {RACK_FILE}); it is removed when sim stops",
    )  # fmt: skip
    parser.add_argument("--mode", choices=MODES, help="the run mode to write into the rack file")
    parser.add_argument("--force", action="store_true", help="overwrite an existing rack file")


def _sim_epilog() -> str:
    example = Device("board-1", "board", "127.0.0.11:47000", attrs={"serial": "A1B2", "revision": "C"})
    rack = textwrap.indent(dump_rack([example], mode="load").rstrip(), "  ")
    return (
        "A rack file lists one [[devices]] table per device; sim writes one for its devices.\n"
        "For real devices write your own, for example:\n\n"
        f"{rack}\n\n"
        "Tests get the device through the `device` fixture (device.address, device.attrs)."
    )


def run_sim(args: argparse.Namespace) -> int:
    """Serve simulated devices until SIGINT or SIGTERM, with a rack file that describes them."""
    path: Path = args.rack_file
    if path.is_dir():
        raise CliError(f"--rack-file {path} is a directory; give a file path such as {path / RACK_FILE}")
    if path.exists() and not args.force:
        raise CliError(
            f"{path} already exists; pass --force to overwrite it, "
            "or --rack-file PATH to write the rack somewhere else"
        )
    try:
        sim = SimRack(args.devices, kind=args.kind, first_host=_FIRST_HOST, port=args.port)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    with _stop_signals() as stop:
        _start(sim)
        try:
            try:
                sim.write_rack(path, mode=args.mode)
            except OSError as exc:
                raise CliError(f"cannot write the rack file {path}: {exc.strerror or exc}") from None
            written = path.read_text(encoding="utf-8")
            width = max(len(d.name) for d in sim.devices)
            for d in sim.devices:
                print(f"{d.name.ljust(width)}  {d.address}  serial {d.attrs['serial']}")
            print(f"rack file: {path}" + (f" (mode {args.mode})" if args.mode else ""))
            print(f"run: pytest --rack {path}")
            print("stop: Ctrl+C (removes the rack file)", flush=True)
            while not stop.wait(1.0):
                pass
        finally:
            sim.stop()
    if _remove_if_unchanged(path, written):
        print(f"stopped; removed {path}", flush=True)
    else:
        print(f"stopped; kept {path} because it changed while sim ran", flush=True)
    return ExitCode.OK


def _start(sim: SimRack) -> None:
    try:
        sim.start()
    except SimStartError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise CliError(
                f"port {exc.port} is already in use on {exc.host}; choose another with --port P, "
                "or leave out --port to let the system pick a free one"
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise CliError(f"{exc}; or simulate fewer devices with --devices") from None
        if exc.errno == errno.EACCES:
            raise CliError(
                f"permission denied for port {exc.port}: ports below 1024 need root (or the "
                "CAP_NET_BIND_SERVICE capability); use --port with a port above 1023, or leave out "
                "--port to let the system pick a free one"
            ) from None
        raise CliError(str(exc)) from None


def _remove_if_unchanged(path: Path, written: str) -> bool:
    """The file only describes a rack that is gone now; keep it if someone edited it."""
    try:
        if path.read_text(encoding="utf-8") != written:
            return False
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _stop_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM, so a server stops cleanly instead of with a traceback."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signals only reach the main thread; the caller stops another way
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            if old is not None:
                signal.signal(sig, old)


# -- testrack demo ---------------------------------------------------------------------------


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl+C, so temporary files, servers and child processes are cleaned."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--devices", type=_device_count, default=3, metavar="N",
        help="how many simulated devices (default: 3)",
    )  # fmt: skip
    parser.add_argument(
        "--seconds", type=_seconds, default=2.0, metavar="S",
        help="how long each of the 3 tests keeps its device busy (default: 2.0)",
    )  # fmt: skip
    parser.add_argument(
        "--keep", type=Path, metavar="DIR",
        help="write the suite and rack file into DIR (new or empty) and leave them there "
        "(default: a temporary directory, removed at the end)",
    )  # fmt: skip


def run_demo_command(args: argparse.Namespace) -> int:
    """Run the demo suite on simulated devices in each mode, then in load mode, and compare."""
    try:
        with _sigterm_as_interrupt():
            passed = run_demo(DemoOptions(devices=args.devices, seconds=args.seconds, keep=args.keep)) == 0
    except (DemoError, SimStartError) as exc:
        raise CliError(str(exc)) from None
    return ExitCode.OK if passed else ExitCode.TESTS_FAILED


# -- testrack last / failing / slowest / history (and trust) -------------------------------


_STORE_HELP = (
    "the results store: a results.sqlite file or a postgresql:// URL (default: the nearest "
    ".testrack/results.sqlite above the current directory)"
)
_JSON_HELP = "print JSON instead of text"


def _add_store_arguments(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: given after the command they override the same options given before it
    # (testrack --json failing), instead of resetting them to their defaults.
    parser.add_argument(
        "--store", type=store_location, metavar="PATH", default=argparse.SUPPRESS, help=_STORE_HELP
    )
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=_JSON_HELP)


def _add_last_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run", metavar="RUN", default="last", dest="run_spec",
        help="which run: its number, `last` (the default), or the start of its uid",
    )  # fmt: skip
    _add_store_arguments(parser)


_positive = _number(int, 1, float("inf"), "is not a positive whole number")


def _add_slowest_arguments(parser: argparse.ArgumentParser) -> None:
    _add_store_arguments(parser)
    parser.add_argument("-n", "--count", type=_positive, default=10, help="how many tests (default: 10)")


def _add_history_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("nodeid", help="the test's node id, as pytest -v prints it")
    _add_store_arguments(parser)
    parser.add_argument("-n", "--count", type=_positive, default=50, help="how many results (default: 50)")


@contextlib.contextmanager
def _store_trouble(args: argparse.Namespace) -> Iterator[None]:
    """A store that fails while report, bisect or flaky read it (a damaged file, say): one line
    with the cause and the fix, as for the other commands (see _history_command)."""
    try:
        yield
    except StoreError as exc:
        raise CliError(history.store_problem(exc, given=getattr(args, "store", None) is not None)) from None


def _history_command(
    query: Callable[[Store, argparse.Namespace], dict[str, Any]],
    render: Callable[[dict[str, Any]], list[str]],
    failed: Callable[[dict[str, Any]], bool] = lambda data: False,
    writes: Callable[[argparse.Namespace], bool] = lambda args: False,
) -> Callable[[argparse.Namespace], int]:
    """A command that reads the store (read-only, unless ``writes``) and prints what ``query``
    found, as text or JSON. A store that fails while being read is one line, as at open."""

    def run(args: argparse.Namespace) -> int:
        try:
            store = history.open_for_reading(args.store, Path.cwd(), write=writes(args))
            try:
                data = query(store, args)
            finally:
                store.close()
        except history.HistoryError as exc:
            raise CliError(str(exc)) from None
        except StoreError as exc:
            raise CliError(history.store_problem(exc, given=args.store is not None)) from None
        if args.json:
            print(json.dumps(data, indent=2))
        else:
            print("\n".join(render(data)))
        return ExitCode.TESTS_FAILED if failed(data) else ExitCode.OK

    return run


# -- testrack trust --------------------------------------------------------------------------


def _add_trust_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("device", nargs="?", metavar="DEVICE", help="the device's name in the rack file")
    which.add_argument("--list", action="store_true", help="list every pinned identity instead")
    _add_store_arguments(parser)


_TRUST_EPILOG = (
    "The first run that sees a device pins the identity it reports (its serial, say); a later\n"
    "run that sees another identity quarantines the device. If the device was replaced on\n"
    "purpose, trust DEVICE forgets its pin, and the next run pins whatever it reports."
)


def _trust_query(store: Store, args: argparse.Namespace) -> dict[str, Any]:
    return history.pins(store) if args.list else history.forget(store, args.device)


def _format_trust(data: dict[str, Any]) -> list[str]:
    return history.format_pins(data) if "pins" in data else history.format_forget(data)


# -- testrack report -------------------------------------------------------------------------


def run_report(args: argparse.Namespace) -> int:
    try:
        with _store_trouble(args):
            lines, code = report_command.run(args)
    except report_command.ReportError as exc:
        raise CliError(str(exc)) from None
    if lines:
        print("\n".join(lines))
    return code


# -- testrack bisect ------------------------------------------------------------------------


def _add_bisect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("nodeid", help="the test that failed, as pytest -v prints it")
    parser.add_argument(
        "--run", dest="run_spec", default="last", metavar="RUN",
        help="the run it failed in: a run number, last (the default), or a run's uid",
    )  # fmt: skip
    parser.add_argument(
        "--device", metavar="NAME",
        help="the device it failed on (default: the first it failed on); probes run with its setup",
    )  # fmt: skip
    parser.add_argument(
        "--brittle", action="store_true",
        help="the opposite case: it fails alone and passed in the run; find the tests that set it up",
    )  # fmt: skip
    _add_store_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="say what each probe did, on stderr")


_BISECT_EPILOG = (
    "Every probe is a fresh pytest process (--rack off --rack-sequence) in the project's root\n"
    "that runs some of the tests that ran before NODEID in its worker, in their order, then\n"
    "NODEID. It first confirms (alone it passes, after all of them it fails: each twice, more\n"
    "when its history says it is flaky), then finds every set of tests that makes it fail\n"
    "(pairs that only do it together included), then the tests that undo each set (cleaners).\n"
    "Exit code 0 when culprits were found, 1 when not (the output says why)."
)


def run_bisect_command(args: argparse.Namespace) -> int:
    from testrack.bisect import Mode, Verdict
    from testrack.isolation import root_of, run_bisect
    from testrack.probing import ProbeError

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        with _store_trouble(args):
            store = history.open_for_reading(args.store, Path.cwd())
            try:
                report = run_bisect(
                    store,
                    root_of(getattr(store, "path", None), Path.cwd()),
                    args.nodeid,
                    args.run_spec,
                    args.device,
                    Mode.BRITTLE if args.brittle else Mode.POLLUTED,
                    progress if args.verbose else None,
                )
            finally:
                store.close()
    except history.HistoryError as exc:
        raise CliError(str(exc)) from None
    except ProbeError as exc:
        raise CliError(f"a probe failed to run, so nothing can be concluded: {exc}") from None
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print("\n".join(report.lines()))
    return ExitCode.OK if report.result.verdict is Verdict.FOUND else ExitCode.TESTS_FAILED


# -- testrack flaky -------------------------------------------------------------------------


def _add_flaky_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--confirm", action="store_true",
        help="run probes (fresh pytest processes) that tell order-dependent, non-idempotent and "
        "nondeterministic tests apart",
    )  # fmt: skip
    parser.add_argument(
        "--runs", type=_positive, default=200, metavar="N", help="how many recent runs to read (default: 200)"
    )
    _add_store_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="say what each probe did, on stderr")


def run_flaky_command(args: argparse.Namespace) -> int:
    from testrack import flaky
    from testrack.isolation import root_of
    from testrack.probing import ProbeError, ProbeRunner

    try:
        with _store_trouble(args):
            store = history.open_for_reading(args.store, Path.cwd())
            try:
                seen, runs = flaky.observations(store, args.runs)
                found = flaky.find_flaky(store, args.runs)
            finally:
                store.close()
        root = root_of(getattr(store, "path", None), Path.cwd())
        for test in found if args.confirm else []:
            runner = ProbeRunner(root, flaky.device_for_probes(test, seen[test.nodeid], runs))

            def probe(tests: Sequence[str], runner: ProbeRunner = runner) -> list[tuple[str, str]]:
                outcomes = runner.run(tests)
                if args.verbose:
                    shown = ", ".join(outcome for _, outcome in outcomes[-2:])
                    print(f"probe: {len(tests)} tests, the last ones {shown}", file=sys.stderr, flush=True)
                return outcomes

            flaky.confirm(test, seen[test.nodeid], probe)
    except history.HistoryError as exc:
        raise CliError(str(exc)) from None
    except ProbeError as exc:
        raise CliError(f"a --confirm probe failed to run: {exc}") from None
    with_revision = sum(1 for run in runs if run.revision is not None)
    if args.json:
        data = {
            "flaky": [f.as_dict() for f in found],
            "runs": len(runs),
            "runs_with_revision": with_revision,
            "flaky_until_passes_in_a_row": flaky.CLEAR_AFTER,
            "confirmed": bool(args.confirm),
        }
        print(json.dumps(data, indent=2))
    else:
        print("\n".join(flaky.format_flaky(found, len(runs), with_revision)))
    return ExitCode.TESTS_FAILED if found else ExitCode.OK


# -- wiring ----------------------------------------------------------------------------------

COMMANDS: tuple[Command, ...] = (
    Command(
        "sim",
        "serve simulated devices on loopback addresses and write a rack file for them",
        _add_sim_arguments,
        run_sim,
        epilog=_sim_epilog(),
    ),
    Command(
        "demo",
        "run a small suite on simulated devices in each and load mode and compare wall times",
        _add_demo_arguments,
        run_demo_command,
    ),
    Command(
        "last",
        "summarise the last recorded run (or the one --run names), per device",
        _add_last_arguments,
        _history_command(lambda store, args: history.last(store, args.run_spec), history.format_last),
    ),
    Command(
        "failing",
        "list every test still failing, on each device where its latest result is a failure "
        "(exit code 1 if any)",
        _add_store_arguments,
        _history_command(
            lambda store, args: history.failing(store),
            history.format_failing,
            failed=lambda data: bool(data["failing"]),
        ),
    ),
    Command(
        "slowest",
        "list the slowest tests of the last run",
        _add_slowest_arguments,
        _history_command(lambda store, args: history.slowest(store, args.count), history.format_slowest),
    ),
    Command(
        "history",
        "show one test's outcomes and durations over runs and devices",
        _add_history_arguments,
        _history_command(
            lambda store, args: history.history(store, args.nodeid, args.count), history.format_history
        ),
    ),
    Command(
        "trust",
        "forget the identity pinned for DEVICE, so that the next run pins what it reports then",
        _add_trust_arguments,
        _history_command(_trust_query, _format_trust, writes=lambda args: not args.list),
        epilog=_TRUST_EPILOG,
    ),
    Command(
        "report",
        "write a stored run as a self-contained HTML page and/or JUnit XML (one case per result)",
        report_command.add_arguments,
        run_report,
        epilog=report_command.EPILOG,
    ),
    Command(
        "bisect",
        "find every test that, run before NODEID in its worker, made it fail (or --brittle: pass)",
        _add_bisect_arguments,
        run_bisect_command,
        epilog=_BISECT_EPILOG,
    ),
    Command(
        "flaky",
        "list tests that passed and failed on the same code revision, each with why (exit code 1 if any)",
        _add_flaky_arguments,
        run_flaky_command,
    ),
    *(Command(*spec) for spec in SHARE_COMMANDS),  # status, reserve, release: testrack/share/cli.py
)


#: The commands that read the results store and take --store and --json.
_STORE_COMMANDS = ("last", "failing", "slowest", "history", "trust", "bisect", "flaky")
_STORE_USERS = ", ".join(_STORE_COMMANDS[:-1]) + " and " + _STORE_COMMANDS[-1]
_STORE_READERS = ", ".join(_STORE_COMMANDS) + " and report"
#: The share's commands take --json of their own (testrack/share/cli.py).
_SHARE_NAMES = tuple(spec[0] for spec in SHARE_COMMANDS)
_JSON_USERS = ", ".join((*_STORE_COMMANDS, *_SHARE_NAMES)[:-1]) + " and " + _SHARE_NAMES[-1]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="testrack",
        description="Run a pytest suite against a rack of devices in parallel.",
        epilog="Tests run with pytest: pytest --rack testrack.toml [--rack-mode load|each]",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(
        "--store", type=store_location, metavar="PATH", help=_STORE_HELP + f"; for {_STORE_USERS}"
    )
    parser.add_argument("--json", action="store_true", help=_JSON_HELP + f"; for {_STORE_USERS}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        sub = subparsers.add_parser(
            command.name,
            help=command.help,
            description=command.help,
            epilog=command.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``testrack`` console script."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors end here
        return exc.code if isinstance(exc.code, int) else ExitCode.USAGE_ERROR
    if args.command is None:
        parser.print_help(sys.stderr)
        return ExitCode.USAGE_ERROR
    wrong = [
        (option, users)
        for option, given, commands, users in (
            ("--json", args.json, (*_STORE_COMMANDS, *_SHARE_NAMES), _JSON_USERS),
            ("--store", args.store is not None, (*_STORE_COMMANDS, "report"), _STORE_READERS),
        )
        if given and args.command not in commands
    ]
    if wrong:
        option, users = wrong[0]
        print(
            f"testrack: error: {option} goes with {users}, not with {args.command}; see testrack --help",
            file=sys.stderr,
        )
        return ExitCode.USAGE_ERROR
    try:
        return int(args.run(args))
    except CliError as exc:
        print(f"testrack {args.command}: {exc}", file=sys.stderr)
        return ExitCode.USAGE_ERROR
    except KeyboardInterrupt:
        print(f"testrack {args.command}: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:  # testrack history ... | head: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK


def _version() -> str:
    try:
        return version("testrack")
    except PackageNotFoundError:
        return "(not installed)"
