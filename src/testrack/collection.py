"""Collection down to files, without importing a single test module.

The controller must know which files hold tests, with everything users rely on
to shape that list (``testpaths``, ``--ignore``, ``python_files``,
``collect_ignore`` in conftests, ``norecursedirs``), yet it must not import test
code. So it runs pytest's own collection, driven from the command line
arguments exactly as ``Session.perform_collect`` does, but stops at
:class:`pytest.File` nodes. Workers run the same walk (to get the same
directory and package nodes, which own package-scoped fixtures) and then expand
only the files they are given.

``path::Class::test`` arguments are split: the walk sees the path, and the
worker filters the file's items by the rest, with the same matching rules as
pytest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from _pytest import nodes
from _pytest.main import (
    CollectionArgument,
    Session,
    normalize_collection_arguments,
    resolve_collection_argument,
)
from _pytest.runner import collect_one_node

SEP = "::"


@dataclasses.dataclass(frozen=True)
class FileUnit:
    """A file to collect, and the ``::`` selectors that narrow it (none: the whole file)."""

    path: str
    selectors: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """Wire form: ``/abs/test_x.py`` or ``/abs/test_x.py::A::b`` (one per selector)."""
        return self.path if not self.selectors else self.path + SEP + "|".join(self.selectors)

    @classmethod
    def from_key(cls, key: str) -> FileUnit:
        path, sep, rest = key.partition(SEP)
        return cls(path, tuple(rest.split("|")) if sep else ())


def walk_files(
    session: Session, args: Sequence[str] | None = None
) -> list[tuple[FileUnit, list[pytest.File]]]:
    """Resolve the command line arguments and collect down to (but not into) files.

    Returns the units in collection order, each with its File nodes (a path can
    yield several, e.g. a module and its doctests). Failed directory-level
    collect reports go through ``pytest_collectreport`` as usual.
    """
    config = session.config
    if args is None:
        args = config.args
    consider_ns: bool = config.getini("consider_namespace_packages")
    resolved = [
        resolve_collection_argument(
            config.invocation_params.dir,
            arg,
            i,
            as_pypath=config.option.pyargs,
            consider_namespace_packages=consider_ns,
        )
        for i, arg in enumerate(args)
    ]
    selectors: dict[Path, list[str]] = {}
    whole: set[Path] = set()
    stripped: list[CollectionArgument] = []
    for arg in resolved:
        if arg.parts:
            selectors.setdefault(arg.path, []).append(SEP.join(arg.parts) + (arg.parametrization or ""))
        else:
            whole.add(arg.path)
        stripped.append(dataclasses.replace(arg, parts=[], parametrization=None))
    if not config.getoption("keepduplicates"):
        stripped = normalize_collection_arguments(stripped)

    # The private state Session.collect() reads; perform_collect() sets it the same way.
    session._notfound = []
    session._initial_parts = stripped
    session._collection_cache = {}
    initialpaths = [a.path for a in stripped]
    session._initialpaths = frozenset(initialpaths)
    session._initialpaths_with_parents = frozenset(
        [*initialpaths, *(p for a in stripped for p in a.path.parents)]
    )
    rep = collect_one_node(session)
    session.ihook.pytest_collectreport(report=rep)
    if session._notfound:
        errors = [f"found no collectors for {arg}" for arg, _ in session._notfound]
        session._notfound = []
        raise pytest.UsageError(*errors)

    by_path: dict[Path, list[pytest.File]] = {}
    if rep.passed:
        for node in rep.result:
            for file_node in _expand(session, node):
                by_path.setdefault(file_node.path, []).append(file_node)
    units = []
    for path, file_nodes in by_path.items():
        sel = () if path in whole else tuple(selectors.get(path, ()))
        units.append((FileUnit(str(path), sel), file_nodes))
    return units


def _expand(session: Session, node: nodes.Node) -> Iterator[pytest.File]:
    if isinstance(node, nodes.File):
        yield node
        return
    if not isinstance(node, nodes.Collector):
        return
    rep, duplicate = session._collect_one_node(node, handle_dupes=True)
    if rep.passed:
        for sub in rep.result:
            yield from _expand(session, sub)
    if not duplicate:
        node.ihook.pytest_collectreport(report=rep)


def matches_selector(item: nodes.Item, file_node: nodes.Node, selector: str) -> bool:
    """Does ``item`` (below ``file_node``) match ``Class::test[param]`` as pytest would?"""
    parts = selector.split(SEP)
    chain = item.listchain()
    names = [n.name for n in chain[chain.index(file_node) + 1 :]]
    if len(names) < len(parts):
        return False
    for i, part in enumerate(parts):
        name = names[i]
        if i < len(parts) - 1 or "[" in part:
            if name != part:
                return False
        elif name.split("[")[0] != part:
            return False
    return True
