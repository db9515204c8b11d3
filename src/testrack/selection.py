"""Which tests a run holds, and in what order, when an option picks them from history.

Each worker collects only its own files, so what pytest's cache plugin does for the
whole session (``--lf``, ``--ff``, ``--nf``) the controller does again over every test,
by id; ``--rack-failed`` picks from the results store. Files that cannot hold a chosen
test are not imported at all, as pytest skips them.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from testrack.collection import FileUnit
from testrack.planning import TestInfo
from testrack.replay import node_key

if TYPE_CHECKING:
    from testrack.controller import Controller


class RemoteItem:
    """A test known by id only; stands in for an Item where pytest's own plugins look at the
    whole session (``pytest_deselected``, the cache plugin's ordering)."""

    def __init__(self, nodeid: str, rootpath: Path | None = None) -> None:
        self.nodeid = nodeid
        self._rootpath = rootpath

    # Made when read: a run makes one per test, and most plugins read only the node id.
    @functools.cached_property
    def id(self) -> Any:
        return node_key(self.nodeid)

    @functools.cached_property
    def path(self) -> Path:
        return (self._rootpath or Path()) / self.nodeid.split("::")[0]

    def __repr__(self) -> str:
        return f"<RemoteItem {self.nodeid}>"


def filter_units(ctl: Controller, units: list[FileUnit]) -> list[FileUnit]:
    """Only the files that can hold what ``--lf`` and ``--rack-failed`` rerun."""
    return _rack_failed_filter(ctl, _last_failed_filter(ctl.config, units))


def order_tests(ctl: Controller, infos: list[TestInfo]) -> list[TestInfo]:
    """The order (and, for ``--lf``, the selection) pytest's cache plugin gives the whole
    session: failed first (``--ff``), new first (``--nf``). The workers each saw only their
    own files, so the controller applies it again to every test, by id and file, and prints
    the lines pytest prints after collection (``run-last-failure: ...``)."""
    if ctl.sequential:
        return infos  # one worker collected everything: its own plugins did it all
    config = ctl.config
    items = [RemoteItem(info.test.nodeid, config.rootpath) for info in infos]
    for name, kwargs in (("lfplugin", {"config": config}), ("nfplugin", {})):
        plugin = config.pluginmanager.get_plugin(name)
        wrapper = getattr(plugin, "pytest_collection_modifyitems", None)
        if wrapper is not None:
            _drive(wrapper(items=items, **kwargs))
    lines = config.hook.pytest_report_collectionfinish(
        config=config, start_path=config.invocation_params.dir, items=items
    )
    ctl.collection.header.extend(line for group in reversed(lines) for line in _as_lines(group))
    by_id = {info.test.nodeid: info for info in infos}
    kept = [by_id[item.nodeid] for item in items]
    remaining = {item.nodeid for item in items}
    for info in infos:
        if info.test.nodeid not in remaining:  # deselected by --lf
            ctl.tests.pop(info.test.nodeid, None)
    return [info if info.index == k else dataclasses.replace(info, index=k) for k, info in enumerate(kept)]


def _last_failed_filter(config: pytest.Config, units: list[FileUnit]) -> list[FileUnit]:
    """With ``--lf``, send only files that hold a recorded failure (as pytest skips the rest)."""
    if not config.getoption("lf", False):
        return units
    lfplugin = config.pluginmanager.get_plugin("lfplugin")
    paths = getattr(lfplugin, "_last_failed_paths", None)
    if not getattr(lfplugin, "lastfailed", None) or not paths:
        return units
    kept = [u for u in units if Path(u.path) in paths]
    return kept or units


def _rack_failed_filter(ctl: Controller, units: list[FileUnit]) -> list[FileUnit]:
    """``--rack-failed``: only files holding a test still failing on some device."""
    config = ctl.config
    if not (config.getoption("rack_failed") or config.getoption("rack_failed_anywhere")):
        return units
    anywhere = bool(config.getoption("rack_failed_anywhere"))
    option = "--rack-failed-anywhere" if anywhere else "--rack-failed"
    recorder = ctl.recorder
    failures = recorder.last_failures()
    if failures is None:
        if recorder.problem:
            raise pytest.UsageError(f"{option}: no earlier run to rerun from: {recorder.problem}")
        raise pytest.UsageError(
            f"{option}: no earlier run in the results store ({recorder.location}); "
            "run the suite once without it first"
        )
    ctl.rerun = failures
    files = {nodeid.split("::")[0] for nodeid in failures}
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        tests = f"{len(failures)} failing test{'s' if len(failures) != 1 else ''}"
        if not failures:
            what = "nothing failed in the last runs; nothing to rerun"
        elif anywhere:
            where = "on every matching device" if ctl.mode == "each" else "once, on any matching device"
            what = f"rerunning {tests} {where}"
        elif len(failures) == 1:
            (devices,) = failures.values()
            on = "the device" if len(devices) == 1 else f"the {len(devices)} devices"
            what = f"rerunning {tests} on {on} it is failing on"
        else:
            runs = sum(len(devices) for devices in failures.values())
            what = f"rerunning {tests}, each on every device it is failing on ({runs} runs)"
        reporter.write_line(f"testrack: {option}: {what}")
    unit_nodeids = ctl.collection.unit_nodeids
    return [u for u in units if unit_nodeids.get(u.key, "").split("::")[0] in files]


def _drive(wrapper: Any) -> None:
    """Run a ``wrapper=True`` hook implementation around an empty inner call."""
    try:
        next(wrapper)
        wrapper.send(None)
    except StopIteration:
        pass


def _as_lines(group: str | list[str]) -> list[str]:
    return [group] if isinstance(group, str) else list(group)
