"""The pytest plugin: options, markers and fixtures; decides controller or worker.

Loaded in every pytest process through the ``pytest11`` entry point. In the
process the user started it reads the rack and, when there is one, registers
a :class:`~testrack.controller.Controller`; inside a testrack worker it only
serves fixtures (the worker's own plugin, :mod:`testrack.worker`, runs the
loop); without a rack it stays out of the way.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from testrack import hookspecs
from testrack.rack import MODES, Device, Rack, RackError, discover_rack, load_rack

#: sys.path before any conftest touched it; workers start from the same one.
_STARTUP_SYS_PATH = tuple(sys.path)

if TYPE_CHECKING:
    from testrack.sim import SimRack
    from testrack.workers import Launcher

rack_key = pytest.StashKey[Rack]()
launcher_key: pytest.StashKey[Launcher] = pytest.StashKey()

OFF = ("off", "no", "none")


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """Take testrack's own modules off pytest's assertion-rewriting list.

    pytest rewrites the asserts of every installed plugin package; testrack's code
    does not rely on that, and rewriting (re-parsing, where bytecode is not cached)
    its modules would cost every run tens of milliseconds of start-up.
    """
    hook = getattr(pluginmanager, "rewrite_hook", None)
    must_rewrite = getattr(hook, "_must_rewrite", None)
    if isinstance(must_rewrite, set) and "testrack" in must_rewrite:
        must_rewrite.discard("testrack")
        cache = getattr(hook, "_marked_for_rewrite_cache", None)
        if isinstance(cache, dict):
            cache.clear()


def pytest_plugin_registered(plugin: object, manager: pytest.PytestPluginManager) -> None:
    """conftest.py files and plugins that implement testrack's hooks join testrack's hooks."""
    hookspecs.offer(plugin, manager)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("testrack", "testrack: run the suite against a rack of devices")
    group.addoption(
        "--rack",
        metavar="SPEC",
        default=None,
        help="the rack to run on: a rack file (TOML, or a devices.json list of addresses), "
        "local:N for N local workers, local:auto for one per CPU, or 'off'. "
        "Default: testrack.toml or [tool.testrack] in pyproject.toml when present.",
    )
    group.addoption(
        "--rack-store",
        metavar="PATH",
        default=None,
        help="where results are recorded: an SQLite file (default <rootdir>/.testrack/results.sqlite), "
        "'memory', or 'off'.",
    )
    group.addoption(
        "--rack-failed",
        action="store_true",
        help="run only the tests that failed in the last recorded run, on the devices they failed on.",
    )
    group.addoption(
        "--rack-failed-anywhere",
        action="store_true",
        help="like --rack-failed, but run them on any matching device.",
    )
    group.addoption(
        "--rack-timeout",
        type=_positive_seconds,
        default=None,
        metavar="SECONDS",
        help="fail a test that runs longer than this (its worker's stacks are shown, the worker "
        "is replaced); @pytest.mark.rack_timeout(SECONDS) sets it per test.",
    )
    group.addoption(
        "--rack-retry-crashed",
        type=int,
        default=0,
        metavar="N",
        help="rerun a test whose worker crashed (or timed out) up to N times on other devices "
        "(default 0: a crashing test could take down another device).",
    )
    group.addoption(
        "--rack-sequence",
        metavar="FILE",
        default=None,
        help="run exactly the tests listed in FILE (one node id a line), in that order, repeats "
        "included, in this process (implies --rack off).",
    )
    group.addoption(
        "--rack-outcomes",
        metavar="FILE",
        default=None,
        help="write one JSON line per test to FILE as it finishes: its node id and outcome "
        "(implies --rack off).",
    )
    group.addoption(
        "--rack-mode",
        choices=MODES,
        default=None,
        help="load: each test runs once, on any matching device (default); "
        "each: every test runs on every matching device.",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Start the workers now, while this process still loads conftests and plugins.

    Anything doubtful (a bad rack, a listing option, xdist's -n) skips the head
    start; pytest_configure then decides, and reports errors, with the full config.
    """
    if any(getattr(p, "is_testrack_worker", False) for p in early_config.pluginmanager.get_plugins()):
        return
    ns = early_config.known_args_namespace
    spec = getattr(ns, "rack", None)
    single = getattr(ns, "rack_sequence", None) or getattr(ns, "rack_outcomes", None)
    if (spec is not None and spec.lower() in OFF) or single:
        return
    listing = ("collectonly", "help", "version", "showfixtures", "show_fixtures_per_test", "markers")
    if any(getattr(ns, name, False) for name in (*listing, "numprocesses", "usepdb")):
        return
    try:
        rack = (
            load_rack(spec, early_config.invocation_params.dir)
            if spec
            else discover_rack(early_config.rootpath)
        )
    except RackError:
        return
    if rack is None:
        return
    from testrack.workers import Launcher

    params = early_config.invocation_params
    launcher = Launcher(rack, str(params.dir), params.args, _STARTUP_SYS_PATH)
    launcher.prestart()
    early_config.stash[launcher_key] = launcher


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0, for example 60")
    return value


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "rack_timeout(seconds): fail the test when it runs longer (overrides --rack-timeout)",
    )
    config.addinivalue_line(
        "markers",
        "device(kind=None, **attrs): run the test only on devices of this kind whose attrs "
        "match (a list of values means any of them)",
    )
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:  # a testrack or xdist worker: the controller is elsewhere
        if workerinput.get("testrack") and not config.pluginmanager.hasplugin("xdist"):
            _register_xdist_compat(config)
        return
    rack = _read_rack(config)
    if rack is None:
        if config.getoption("rack_sequence") or config.getoption("rack_outcomes"):
            from testrack.sequence import SequencePlugin

            config.pluginmanager.register(SequencePlugin(config), "testrack-sequence")
        return
    config.stash[rack_key] = rack
    if not _runs_tests(config):
        return
    _check_compatible(config, rack)
    if not config.pluginmanager.hasplugin("xdist"):
        _register_xdist_compat(config)
    from testrack.controller import Controller
    from testrack.workers import Launcher

    launcher = config.stash.get(launcher_key, None)
    if launcher is None or launcher.rack != rack:
        if launcher is not None:
            launcher.discard()
        params = config.invocation_params
        launcher = config.stash[launcher_key] = Launcher(
            rack, str(params.dir), params.args, _STARTUP_SYS_PATH
        )
    mode = config.getoption("rack_mode") or rack.mode or "load"
    from testrack.recorder import Recorder

    recorder = Recorder.open(config.getoption("rack_store"), config.rootpath)
    controller = Controller(config, rack, mode, launcher, recorder)
    config.pluginmanager.register(controller, "testrack-controller")


def pytest_unconfigure(config: pytest.Config) -> None:
    launcher = config.stash.get(launcher_key, None)
    if launcher is not None:
        launcher.discard()


def _read_rack(config: pytest.Config) -> Rack | None:
    spec: str | None = config.getoption("rack")
    wanted = {"--rack-sequence": "rack_sequence", "--rack-outcomes": "rack_outcomes"}
    single = next((flag for flag, dest in wanted.items() if config.getoption(dest)), None)
    if single is not None:
        if spec is not None and spec.lower() not in OFF:
            raise pytest.UsageError(
                f"{single} runs the tests in this one process, but --rack {spec} asks for workers; "
                "leave out one of them (or use --rack off)"
            )
        return None  # these run here, in one process, whatever rack the project has
    try:
        if spec is None:
            return discover_rack(config.rootpath)
        if spec.lower() in OFF:
            return None
        return load_rack(spec, config.invocation_params.dir)
    except RackError as exc:
        raise pytest.UsageError(str(exc)) from None


def _runs_tests(config: pytest.Config) -> bool:
    """Listing modes (--collect-only, --fixtures, ...) run in this process, as plain pytest."""
    option = config.option
    return not (
        option.collectonly
        or getattr(option, "showfixtures", False)
        or getattr(option, "show_fixtures_per_test", False)
        or getattr(option, "markers", False)
        or getattr(option, "help", False)
    )


def _check_compatible(config: pytest.Config, rack: Rack) -> None:
    numprocesses = config.getoption("numprocesses", None)
    dist = config.getoption("dist", "no")
    if numprocesses or dist not in (None, "no"):
        raise pytest.UsageError(
            "testrack and pytest-xdist's -n/--dist both run tests in parallel; use one: "
            f"testrack already runs one worker per device slot of {rack.source}. For N local "
            "workers without devices use --rack local:N, or pass --rack off to use xdist."
        )
    if config.getoption("usepdb"):
        raise pytest.UsageError(
            "--pdb needs the test to run in this terminal, but testrack runs tests in worker "
            "processes; add --rack off to debug in one process."
        )


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> Device:
    """The device this worker runs on (in a plain run: the rack's first device)."""
    workerinput: dict[str, Any] | None = getattr(request.config, "workerinput", None)
    if workerinput and isinstance(workerinput.get("device"), dict):
        return Device.from_dict(workerinput["device"])
    rack = request.config.stash.get(rack_key, None)
    if rack is None:
        try:
            rack = discover_rack(request.config.rootpath)
        except RackError as exc:
            pytest.fail(str(exc), pytrace=False)
    if rack is None:
        pytest.fail(
            "the device fixture needs a rack: run with --rack FILE (or --rack local:N), "
            "or add a testrack.toml with [[devices]] to the project root",
            pytrace=False,
        )
    return rack.devices[0]


@pytest.fixture
def testrack_sim() -> Iterator[Callable[..., SimRack]]:
    """Start simulated devices for one test: ``sim = testrack_sim(3, kind="board")``.

    Returns a started :class:`testrack.sim.SimRack` (``.devices``, ``.write_rack(path)``,
    ``.log``); every rack started this way is stopped when the test ends.
    """
    from testrack.sim import SimRack

    started: list[SimRack] = []

    def start(count: int = 3, kind: str = "board", **kwargs: Any) -> SimRack:
        rack = SimRack(count, kind=kind, **kwargs).start()
        started.append(rack)
        return rack

    yield start
    for rack in started:
        rack.stop()


def _register_xdist_compat(config: pytest.Config) -> None:
    from testrack import xdist_compat

    config.pluginmanager.register(xdist_compat, "testrack-xdist-compat")
