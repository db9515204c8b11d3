"""pytest-xdist's node contract, honoured: what plugins that support xdist read and write.

Plugins such as pytest-cov, pytest-randomly and pytest-rerunfailures work under xdist
through a small contract: the controller calls ``pytest_configure_node(node)`` for
every worker, where a plugin puts what its workers need into ``node.workerinput``;
the worker reads ``config.workerinput``, fills ``config.workeroutput``, and the
controller gets that back in ``pytest_testnodedown(node, error)``;
``pytest_testnodeready(node)`` says a worker is up. testrack's workers look like
xdist workers to plugins (``workerinput``, ``PYTEST_XDIST_WORKER``), so testrack
makes the whole contract true, with node objects that carry what those plugins read
(``workerinput``, ``workeroutput``, ``gateway.id``, ``config``, ``nodemanager.roots``,
``gateway._rinfo()``). The hooks exist only when pytest-xdist is installed; without
it, plugins do not look for them either.
"""

from __future__ import annotations

import os
import platform
import sys
import traceback
from typing import Any

import pytest


class _RemoteInfo:
    """What ``gateway._rinfo()`` answers under xdist (pytest-cov reads it)."""

    def __init__(self) -> None:
        self.platform = sys.platform
        self.version_info = sys.version_info
        self.executable = sys.executable
        self.cwd = "."
        self.implementation = platform.python_implementation()


class _Gateway:
    def __init__(self, gateway_id: str) -> None:
        self.id = gateway_id
        self.spec = f"popen//id={gateway_id}"

    def _rinfo(self) -> _RemoteInfo:
        return _RemoteInfo()


class _NodeManager:
    """xdist's NodeManager, as far as plugins look: no rsync roots (workers share the disk)."""

    roots: tuple[str, ...] = ()
    rsyncoptions: tuple[str, ...] = ()


class WorkerNode:
    """One worker process as pytest-xdist's hooks present it to plugins."""

    def __init__(self, config: pytest.Config, gateway_id: str, workerinput: dict[str, Any]) -> None:
        self.config = config
        self.gateway = _Gateway(gateway_id)
        self.workerinput = workerinput
        self.workeroutput: dict[str, Any] = {}
        self.workerinfo: dict[str, Any] = {}
        self.nodemanager = _NodeManager()
        self.shutting_down = False

    def __repr__(self) -> str:
        return f"<WorkerNode {self.gateway.id}>"


def configure(node: WorkerNode) -> None:
    """``pytest_configure_node``: plugins add to ``node.workerinput`` before the worker starts."""
    hook = getattr(node.config.hook, "pytest_configure_node", None)
    if hook is not None:
        hook(node=node)


def hook_site(exc: BaseException) -> str:
    """`` at conftest.py:57``: where in the user's code a hook raised (its last frame)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""


def ready(node: WorkerNode) -> None:
    hook = getattr(node.config.hook, "pytest_testnodeready", None)
    if hook is not None:
        hook(node=node)


def down(node: WorkerNode, error: str | None) -> None:
    """``pytest_testnodedown``: the worker ended; ``error`` says how, when it did not end cleanly."""
    hook = getattr(node.config.hook, "pytest_testnodedown", None)
    if hook is not None:
        hook(node=node, error=error)


def listeners(config: pytest.Config) -> list[str]:
    """The plugins that take a worker's ``workeroutput`` (pytest-cov's coverage data, say)."""
    hook = getattr(config.hook, "pytest_testnodedown", None)
    if hook is None:
        return []
    names = []
    for impl in hook.get_hookimpls():
        name = config.pluginmanager.get_name(impl.plugin) or impl.plugin_name
        if name and not name.startswith("testrack"):
            names.append(_KNOWN.get(name, name))
    return names


#: plugin names as the user knows them
_KNOWN = {"_cov": "pytest-cov", "randomly": "pytest-randomly", "rerunfailures": "pytest-rerunfailures"}
