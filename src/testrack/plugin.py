"""The pytest plugin: decides controller, worker or neither (options: :mod:`testrack.options`;
fixtures: :mod:`testrack.fixtures`).

Loaded in every pytest process through the ``pytest11`` entry point. In the
process the user started it reads the rack and, when there is one, registers
a :class:`~testrack.controller.Controller`; inside a testrack worker it only
serves fixtures (the worker's own plugin, :mod:`testrack.worker`, runs the
loop); without a rack it stays out of the way.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from testrack import envs, fixtures, hookspecs, leasing, options, progress, sharedrun
from testrack.fixtures import local_device_key, rack_key
from testrack.rack import Device, Rack, RackError, discover_rack, load_rack
from testrack.report import plugin as report_plugin

#: sys.path before any conftest touched it; workers start from the same one.
_STARTUP_SYS_PATH = tuple(sys.path)

if TYPE_CHECKING:
    from testrack.workers import Launcher

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
    options.addoption(group)
    report_plugin.addoption(group)
    progress.addoption(group)
    leasing.addoption(group)
    sharedrun.addoption(group)
    envs.addoption(group)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> Generator[None, object, object]:
    """Start the workers now, while this process still loads conftests and plugins.

    Anything doubtful (a bad rack, a listing option, xdist's -n) skips the head
    start; pytest_configure then decides, and reports errors, with the full config.
    A wrapper, so that this runs before other plugins' own early hooks: pytest-cov
    decides here whether the run is distributed (it reads ``distload``), and the
    workers are forked before any plugin starts tracing this process.
    """
    if any(getattr(p, "is_testrack_worker", False) for p in early_config.pluginmanager.get_plugins()):
        return (yield)
    ns = early_config.known_args_namespace
    spec = getattr(ns, "rack", None)
    single = getattr(ns, "rack_sequence", None) or getattr(ns, "rack_outcomes", None)
    if (spec is not None and spec.lower() in OFF) or single:
        _apply_device_env(early_config)
        return (yield)
    listing = ("collectonly", "help", "version", "showfixtures", "show_fixtures_per_test", "markers")
    doubtful = (*listing, "numprocesses", "usepdb", "trace", "rack_device")  # --rack-device: refused
    if any(getattr(ns, name, False) for name in doubtful):
        return (yield)
    try:
        rack = (
            load_rack(spec, early_config.invocation_params.dir)
            if spec
            else discover_rack(early_config.rootpath)
        )
    except RackError:
        return (yield)
    if rack is None or rack.environments:  # environments are built once plugins are known
        return (yield)
    from testrack.workers import Launcher, start_method

    try:
        start_method()
    except ValueError:
        return (yield)  # said once the configuration is known

    params = early_config.invocation_params
    launcher = Launcher(rack, str(params.dir), worker_args(early_config), _STARTUP_SYS_PATH)
    launcher.prestart(early_config.hook)
    early_config.stash[launcher_key] = launcher
    ns.distload = True  # pytest-cov: measure in the workers and combine here, as under xdist
    return (yield)


def worker_args(config: pytest.Config) -> tuple[str, ...]:
    """The command line for workers: the user's, with the controller's rootdir and config file
    pinned. pytest works both out from the paths on the command line that exist; a file this
    run creates (a store given as ``--rack-store PATH``) exists for a worker started later but
    did not for the controller, and moved the worker's rootdir: its test ids differed."""
    pinned = [f"--rootdir={config.rootpath}"]
    if config.inipath is not None:
        pinned.append(f"--config-file={config.inipath}")
    return (*config.invocation_params.args, *pinned)


def _apply_device_env(early_config: pytest.Config) -> None:
    """``--rack off``: this process plays one device of the rack; its env applies before
    conftests and test modules are imported, as it does in a worker."""
    ns = early_config.known_args_namespace
    try:
        rack = discover_rack(early_config.rootpath)
    except RackError:
        return
    if rack is None or not rack.devices:
        return
    name = getattr(ns, "rack_device", None)
    device = next((d for d in rack.devices if d.name == name), None) if name else rack.devices[0]
    if device is not None:
        os.environ.update(device.env)
        os.environ["TESTRACK_DEVICE"] = device.name


def pytest_configure(config: pytest.Config) -> None:
    # The fixtures (``device``, ``devices``, ``testrack_sim``) come with this plugin, in every
    # process it is loaded in. Registered, not listed in ``pytest_plugins``: pytest would try to
    # rewrite the module's asserts, and warn that it was imported already.
    config.pluginmanager.register(fixtures, "testrack-fixtures")
    config.addinivalue_line(
        "markers",
        "rack_timeout(seconds): fail the test when it runs longer (overrides --rack-timeout)",
    )
    config.addinivalue_line(
        "markers",
        "device(kind=None, **attrs): run the test only on devices of this kind whose attrs "
        "match (a list of values means any of them)",
    )
    config.addinivalue_line(
        "markers",
        "devices(*count, **roles): the test needs several devices at once",
    )
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:  # a testrack or xdist worker: the controller is elsewhere
        if workerinput.get("testrack") and not config.pluginmanager.hasplugin("xdist"):
            _register_xdist_compat(config)
        return
    rack = _read_rack(config)
    _check_device_option(config, rack)
    if rack is None:
        if config.getoption("rack_sequence") or config.getoption("rack_outcomes"):
            from testrack.sequence import SequencePlugin

            config.pluginmanager.register(SequencePlugin(config), "testrack-sequence")
        _check_rack_options(config)
        return
    config.stash[rack_key] = rack
    if not _runs_tests(config):
        return
    _check_compatible(config, rack)
    if not config.pluginmanager.hasplugin("xdist"):
        _register_xdist_compat(config)
    from testrack.controller import Controller
    from testrack.workers import Launcher, start_method

    try:
        start_method()
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    launcher = config.stash.get(launcher_key, None)
    if launcher is None or launcher.rack != rack:
        if launcher is not None:
            launcher.discard()
        params = config.invocation_params
        launcher = config.stash[launcher_key] = Launcher(
            rack, str(params.dir), worker_args(config), _STARTUP_SYS_PATH
        )
    notes: list[str] = []
    if rack.environments:
        rack, notes = _prepare_environments(config, rack, launcher)
        launcher = config.stash[launcher_key]  # a new one if an environment was left out
    over_environments = any(d.kind == envs.KIND for d in rack.devices)
    mode = config.getoption("rack_mode") or rack.mode or ("each" if over_environments else "load")
    sequential = _needs_one_worker(config, mode)
    from testrack.recorder import Recorder

    recorder = Recorder.open(sharedrun.store_spec(config, rack), config.rootpath)
    collect = config.getoption("rack_collect")
    controller = Controller(config, rack, mode, launcher, recorder, collect=collect, sequential=sequential)
    controller.notes.extend(notes)
    config.pluginmanager.register(controller, "testrack-controller")
    report_plugin.configure(config, controller)
    progress.configure(config, controller)


def _prepare_environments(config: pytest.Config, rack: Rack, launcher: Any) -> tuple[Rack, list[str]]:
    """Build the rack's environments and point their slots at their interpreters; an
    environment left out (its interpreter is missing) leaves the rack."""
    import dataclasses

    rack_dir = Path(rack.source).parent
    option = config.getoption("rack_envs_dir")
    cache = Path(option) if option else config.rootpath / ".testrack" / "envs"

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)  # before pytest's terminal exists

    dists = [(dist.project_name, dist.version) for _, dist in config.pluginmanager.list_plugin_distinfo()]
    started = time.perf_counter()
    try:
        prepared = envs.prepare(
            rack.environments, config.rootpath, rack_dir, cache, dists,
            config.getoption("rack_envs_missing"), os.environ, say,
        )  # fmt: skip
    except envs.EnvironmentProblem as exc:
        raise pytest.UsageError(str(exc)) from None
    for name, built in prepared.built.items():
        launcher.interpreters[name] = built.python
    for device in rack.devices:  # a device that runs its tests in an environment
        chosen = prepared.built.get(device.attrs.get("environment", ""))
        if chosen is not None:
            launcher.interpreters[device.name] = chosen.python
    ready = ", ".join(f"{name} ({'cached' if b.reused else 'built'})" for name, b in prepared.built.items())
    took = time.perf_counter() - started
    config.stash[envs.header_key] = f"testrack: environments {ready} ready in {took:.2f} s"
    config.stash[envs.environments_key] = prepared.built
    if not prepared.left_out:
        return rack, prepared.notes
    kept = tuple(
        d
        for d in rack.devices
        if d.name not in prepared.left_out and d.attrs.get("environment") not in prepared.left_out
    )
    if not kept:
        raise pytest.UsageError(
            "; ".join(prepared.left_out.values()) + ": no environment is left to run the tests"
        )
    rack = dataclasses.replace(
        rack,
        devices=kept,
        environments=tuple(e for e in rack.environments if e.name not in prepared.left_out),
    )
    launcher.discard()
    params = config.invocation_params
    from testrack.workers import Launcher

    args = worker_args(config)
    fresh = config.stash[launcher_key] = Launcher(rack, str(params.dir), args, _STARTUP_SYS_PATH)
    fresh.interpreters.update(launcher.interpreters)
    return rack, prepared.notes


def pytest_unconfigure(config: pytest.Config) -> None:
    launcher = config.stash.get(launcher_key, None)
    if launcher is not None:
        launcher.discard()


def _read_rack(config: pytest.Config) -> Rack | None:
    spec: str | None = config.getoption("rack")
    single = _single_process_option(config)
    if single is not None:
        if spec is not None and spec.lower() not in OFF:
            raise pytest.UsageError(
                f"{single} runs the tests in this one process, but --rack {spec} asks for workers; "
                "leave out one of them (or use --rack off)"
            )
        _play_one_device(config)
        return None  # these run here, in one process, whatever rack the project has
    try:
        if spec is None:
            return discover_rack(config.rootpath)
        if spec.lower() in OFF:
            _play_one_device(config)
            return None
        return load_rack(spec, config.invocation_params.dir)
    except RackError as exc:
        raise pytest.UsageError(str(exc)) from None


#: Options that only mean something when tests run on a rack, with what they default to.
_RACK_ONLY = {
    "rack_mode": None,
    "rack_failed": False,
    "rack_failed_anywhere": False,
    "rack_timeout": None,
    "rack_retry_crashed": 0,
    "rack_collect": "all",
    "rack_random": False,
    "rack_seed": None,
    "rack_random_bucket": None,
    "rack_replay": None,
    "rack_worker": None,
    "rack_replay_anywhere": False,
    "rack_rerun_failed": 0,
    "rack_flaky_ok": False,
    "rack_share": None,
    "rack_wait": None,
    "rack_priority": None,
    "rack_host": None,
    "rack_progress": "auto",
    "rack_progress_interval": progress.DEFAULT_INTERVAL,
    "rack_html": None,  # the report is of the run the controller records
}


def _check_rack_options(config: pytest.Config) -> None:
    """Rack options without a rack would be silently ignored: refuse them, with the fix."""
    given = [name for name, default in _RACK_ONLY.items() if config.getoption(name, default) != default]
    if not given:
        return
    options = ", ".join("--" + name.replace("_", "-") for name in given)
    spec = config.getoption("rack")
    single = _single_process_option(config)
    if single is not None or (spec is not None and spec.lower() in OFF):
        how = single or "--rack off"
        if "rack_html" in given:
            raise pytest.UsageError(
                f"--rack-html reports what a rack run records, and with {how} the tests run in this "
                "process unrecorded; run them on the rack (or --rack local:1, one local worker) for the "
                "report, or leave out --rack-html"
            )
        raise pytest.UsageError(
            f"{options}: the tests run in this process with {how}, so there is no rack to apply this "
            "to; leave it out, or run on the rack"
        )
    raise pytest.UsageError(
        f"{options} needs a rack, and there is none: no testrack.toml or [tool.testrack] in "
        f"pyproject.toml under {config.rootpath}; pass --rack FILE, or --rack local:N for N local workers"
    )


def _single_process_option(config: pytest.Config) -> str | None:
    """``--rack-sequence`` or ``--rack-outcomes`` when given: they imply ``--rack off``."""
    wanted = {"--rack-sequence": "rack_sequence", "--rack-outcomes": "rack_outcomes"}
    return next((flag for flag, dest in wanted.items() if config.getoption(dest)), None)


def _check_device_option(config: pytest.Config, rack: Rack | None) -> None:
    """``--rack-device`` picks the device ``--rack off`` plays; where the tests run on a rack, or
    there is no rack at all, it would be silently ignored: refuse it, with the fix."""
    name = config.getoption("rack_device")
    if not name:
        return
    if rack is None:
        spec = config.getoption("rack")
        if _single_process_option(config) is not None or (spec is not None and spec.lower() in OFF):
            return  # this process plays the device (_play_one_device checked the name)
        raise pytest.UsageError(
            f"--rack-device {name} picks the device that --rack off runs the tests as, and there is no "
            f"rack file (testrack.toml or [tool.testrack] in pyproject.toml) under {config.rootpath} to "
            "take it from; leave out --rack-device"
        )
    spec = config.getoption("rack")
    fix = f"use --rack off instead of --rack {spec}" if spec else "add --rack off"
    raise pytest.UsageError(
        f"--rack-device {name} picks the device that --rack off runs the tests as, in this process, but "
        f"this run spreads them over the rack {rack.source}; {fix} to run them as {name}, or leave out "
        "--rack-device"
    )


def _play_one_device(config: pytest.Config) -> None:
    """``--rack off`` with a rack file: this process is one of its devices (``--rack-device``)."""
    name = config.getoption("rack_device")
    try:
        rack = discover_rack(config.rootpath)
    except RackError:
        if name:
            raise
        return  # --rack off is how to run the tests while the rack file is broken
    if rack is None or not rack.devices:
        if name:
            raise pytest.UsageError(
                f"--rack-device {name}: there is no rack file (testrack.toml or [tool.testrack] in "
                f"pyproject.toml) under {config.rootpath} to take the device from"
            )
        return
    device = next((d for d in rack.devices if d.name == name), None) if name else rack.devices[0]
    if device is None:
        names = ", ".join(d.name for d in rack.devices)
        raise pytest.UsageError(
            f"--rack-device {name}: {rack.source} has no device of that name; it has {names}"
        )
    config.stash[local_device_key] = device
    config.pluginmanager.register(_OneDevice(device), "testrack-one-device")


class _OneDevice:
    """``--rack off``: tests the device cannot run are skipped, saying why."""

    def __init__(self, device: Device) -> None:
        self.device = device

    def pytest_report_header(self) -> str:
        return (
            f"testrack: --rack off: running in this process as device {self.device.name} ({self.device.kind})"
        )

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        from testrack.scheduling import describe_requirements, matches
        from testrack.scheduling.requests import declaration

        for item in items:
            # The nearest marker decides, as on a rack: a method's @devices replaces its
            # class's @device (the devices fixture picks that test's set from the rack).
            declared = declaration(item)
            if declared.error is not None:
                continue  # reported when the test runs, as on a rack
            requirements = list(declared.requirements)
            if requirements and not matches(self.device, requirements):
                reason = (
                    f"needs {describe_requirements(requirements)}; --rack off runs as {self.device.name} "
                    f"({self.device.kind}): pick a matching one with --rack-device NAME"
                )
                item.add_marker(pytest.mark.skip(reason=reason))


def _needs_one_worker(config: pytest.Config, mode: str) -> str | None:
    """Options whose meaning depends on one process running every test in collection order."""
    if config.getoption("stepwise", False) or config.getoption("stepwise_skip", False):
        if mode == "each":
            raise pytest.UsageError(
                "--sw/--stepwise stops at the first failing test, but each mode runs every test on "
                "every device; use --rack-mode load (or --rack off) with --sw"
            )
        return "--sw stops at the first failure in collection order, as plain pytest does"
    return None


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
    benchmark = [
        option
        for option in ("only", "json", "save", "autosave", "compare", "histogram", "enable", "save_data")
        if config.getoption(f"benchmark_{option}", None)
    ]
    if benchmark:
        options = ", ".join("--benchmark-" + o.replace("_", "-") for o in benchmark)
        raise pytest.UsageError(
            f'{options}: pytest-benchmark turns itself off in worker processes ("Note that '
            '--benchmark-disable is automatically activated if xdist is on"), and testrack runs '
            "tests in worker processes; run the benchmarks in one process with --rack off."
        )
    coverage = sys.modules.get("coverage")
    current = getattr(getattr(coverage, "Coverage", None), "current", lambda: None)()
    if current is not None and not config.getoption("cov_source", None):
        raise pytest.UsageError(
            "coverage run measures this process only, and testrack runs the tests in worker "
            "processes, so the report would show next to nothing covered; measure with pytest-cov "
            "instead (pytest --cov=PACKAGE ..., which combines what every worker measured), or "
            "run the tests in one process with --rack off."
        )
    if not config.pluginmanager.hasplugin("xdist") and config.pluginmanager.hasplugin("randomly"):
        raise pytest.UsageError(
            "pytest-randomly hands its seed to worker processes only through pytest-xdist's hooks, "
            "and pytest-xdist is not loaded (-p no:xdist, or not installed), so every worker would "
            "fail; install pytest-xdist (a testrack dependency) and drop -p no:xdist, or add "
            "-p no:randomly."
        )
    for name, option in (("usepdb", "--pdb"), ("trace", "--trace")):
        if config.getoption(name, None):
            raise pytest.UsageError(
                f"{option} needs the test to run in this terminal, but testrack runs tests in worker "
                "processes; add --rack off to debug in one process (--rack-device NAME to be a "
                "given device of the rack)."
            )


def _register_xdist_compat(config: pytest.Config) -> None:
    from testrack import xdist_compat

    config.pluginmanager.register(xdist_compat, "testrack-xdist-compat")
