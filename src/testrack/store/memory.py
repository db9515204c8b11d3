"""A store in memory: for tests, and for runs that should leave nothing behind."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from testrack.store.base import ImportCost, Result, Run, RunInfo


class MemoryStore:
    """Implements :class:`~testrack.store.base.Store` with lists."""

    def __init__(self) -> None:
        self._runs: list[Run] = []
        self._results: list[Result] = []
        self._imports: list[tuple[int, ImportCost]] = []

    def begin_run(self, info: RunInfo) -> int:
        for run in self._runs:
            if run.uid == info.uid:
                return run.id
        run = Run(len(self._runs) + 1, info.uid, info.started, info.mode, info.rack, info.command)
        self._runs.append(run)
        return run.id

    def add_results(self, run_id: int, results: Sequence[Result]) -> None:
        self._results.extend(dataclasses.replace(r, run_id=run_id) for r in results)

    def add_imports(self, run_id: int, imports: Sequence[ImportCost]) -> None:
        self._imports.extend((run_id, i) for i in imports)

    def finish_run(self, run_id: int, finished: float, outcome: str) -> None:
        index = run_id - 1
        self._runs[index] = dataclasses.replace(self._runs[index], finished=finished, outcome=outcome)

    def runs(self, limit: int | None = None) -> list[Run]:
        newest = list(reversed(self._runs))
        return newest if limit is None else newest[:limit]

    def results(self, run_id: int) -> list[Result]:
        return [r for r in self._results if r.run_id == run_id]

    def history(self, nodeid: str, limit: int = 50) -> list[tuple[Run, Result]]:
        found = [(self._runs[r.run_id - 1], r) for r in self._results if r.nodeid == nodeid]
        return list(reversed(found))[:limit]

    def recent_results(self, runs: int) -> list[Result]:
        ids = {run.id for run in self.runs(limit=runs)}
        return [r for r in self._results if r.run_id in ids]

    def timings(self, runs: int) -> list[tuple[str, str, float]]:
        return [(r.nodeid, r.outcome, r.duration) for r in self.recent_results(runs)]

    def import_costs(self, runs: int) -> list[ImportCost]:
        ids = {run.id for run in self.runs(limit=runs)}
        return [i for run_id, i in self._imports if run_id in ids]

    def close(self) -> None:
        pass
