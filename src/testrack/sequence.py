"""``--rack-sequence FILE``: run exactly these tests, in this order, in this one process.

Plain pytest keeps the command line's order of node ids, from one file or from several
(``pytest b.py::t a.py::t2 a.py::t1`` runs them so), but it runs a test named twice only
once, and a plugin may reorder what it collected (pytest-randomly). A replayed worker
sequence, a bisection probe and the "run it twice in one process" check need the exact
sequence, repeats included; so this plugin collects the listed tests, puts them in the
file's order after every other plugin had its say, and runs a repeated test as a fresh
copy of its item (its function-scoped fixtures set up again, everything wider kept, as a
worker that got the same test twice would).

``--rack-outcomes FILE`` writes one JSON line per test as it finishes (node id, outcome),
so that a program driving pytest reads results without parsing the terminal; a repeated
test gets a line for each run.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import IO

import pytest

from testrack.summary import phase_outcome, worse

SEP = "::"


def read_sequence(path: Path, shown: str | None = None) -> list[str]:
    """The node ids in ``path``, one a line; blank lines and ``#`` comments are skipped.

    ``shown`` is the path as the user gave it, for messages (default: ``path``).
    """
    shown = shown or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise pytest.UsageError(
            f"--rack-sequence {shown}: cannot read it ({exc.strerror or exc}); "
            "give a file with one test node id per line"
        ) from None
    ids = [line.strip() for line in text.splitlines()]
    ids = [nodeid for nodeid in ids if nodeid and not nodeid.startswith("#")]
    if not ids:
        raise pytest.UsageError(
            f"--rack-sequence {shown}: no test in it; write one node id per line "
            "(as pytest -v prints them, relative to the rootdir)"
        )
    return ids


def write_sequence(path: Path, nodeids: Sequence[str]) -> None:
    path.write_text("".join(f"{nodeid}\n" for nodeid in nodeids), encoding="utf-8")


def collection_args(nodeids: Sequence[str], rootdir: Path, invocation_dir: Path) -> list[str]:
    """What pytest must collect: each listed test once, its path made absolute when the
    node id (relative to the rootdir) does not also name a file from where pytest started."""
    args: dict[str, None] = {}
    for nodeid in nodeids:
        path, sep, rest = nodeid.partition(SEP)
        if not (invocation_dir / path).exists() and (rootdir / path).exists():
            path = str(rootdir / path)
        args[path + sep + rest] = None
    return list(args)


def order_items(items: Sequence[pytest.Item], sequence: Sequence[str]) -> tuple[list[pytest.Item], list[str]]:
    """The items in ``sequence``'s order, a repeated test as a fresh copy; and the ids not found."""
    by_id = {item.nodeid: item for item in items}
    ordered: list[pytest.Item] = []
    missing: list[str] = []
    seen: set[str] = set()
    for nodeid in sequence:
        item = by_id.get(nodeid)
        if item is None:
            missing.append(nodeid)
            continue
        if nodeid in seen:
            copy = _fresh_copy(item)
            if copy is None:
                raise pytest.UsageError(
                    f"--rack-sequence: {nodeid} is listed twice, but it is a {type(item).__name__}, "
                    "which testrack can only run once per process; list it once"
                )
            item = copy
        seen.add(nodeid)
        ordered.append(item)
    return ordered, missing


def _fresh_copy(item: pytest.Item) -> pytest.Item | None:
    """A new item for the same test (as pytest makes them), so that it can run again."""
    if not isinstance(item, pytest.Function) or item.parent is None:
        return None
    return pytest.Function.from_parent(
        item.parent,
        name=item.name,
        callspec=getattr(item, "callspec", None),
        keywords=item.keywords,
        fixtureinfo=item._fixtureinfo,
        originalname=item.originalname,
    )


class SequencePlugin:
    """Registered by testrack's plugin when ``--rack-sequence`` or ``--rack-outcomes`` is given."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        path: str | None = config.getoption("rack_sequence")
        self.sequence: list[str] | None = None
        if path is not None:
            self.shown = path
            self.source = config.invocation_params.dir / path
            self.sequence = read_sequence(self.source, path)
            if config.args_source is pytest.Config.ArgsSource.ARGS:
                raise pytest.UsageError(
                    f"--rack-sequence {path} names the tests to run; leave out the paths and "
                    f"node ids ({' '.join(config.args)}) or the option"
                )
            config.args = collection_args(self.sequence, config.rootpath, config.invocation_params.dir)
        self.deselected: set[str] = set()
        outcomes: str | None = config.getoption("rack_outcomes")
        self.outcomes: IO[str] | None = None
        if outcomes is not None:
            self.outcomes = open(config.invocation_params.dir / outcomes, "w", encoding="utf-8")  # noqa: SIM115
        self.current: str | None = None

    def pytest_deselected(self, items: Sequence[pytest.Item]) -> None:
        self.deselected.update(item.nodeid for item in items)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> Generator[None, None, None]:
        """Outermost, so the file's order is put back after any plugin that reorders."""
        yield
        if self.sequence is None:
            return
        wanted = [nodeid for nodeid in self.sequence if nodeid not in self.deselected]
        ordered, missing = order_items(items, wanted)
        if missing and not session.testsfailed:
            lines = {nodeid: i for i, nodeid in reversed(list(enumerate(self._lines(), 1)))}
            where = ", ".join(f"{nodeid} (line {lines.get(nodeid, '?')})" for nodeid in missing[:3])
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise pytest.UsageError(
                f"--rack-sequence {self.shown}: not collected: {where}{more}; give node ids as "
                "pytest -v prints them (relative to the rootdir), and check that they still exist"
            )
        items[:] = ordered

    def _lines(self) -> list[str]:
        return [line.strip() for line in self.source.read_text(encoding="utf-8").splitlines()]

    # ------------------------------------------------------------------ --rack-outcomes

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self.current = None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        outcome = phase_outcome(report)
        if outcome is not None:
            self.current = worse(self.current, outcome)

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        if self.outcomes is not None:
            self.outcomes.write(json.dumps({"nodeid": nodeid, "outcome": self.current or "passed"}) + "\n")
            self.outcomes.flush()

    def pytest_unconfigure(self) -> None:
        if self.outcomes is not None:
            self.outcomes.close()
