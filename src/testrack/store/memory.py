"""A store in memory: for tests, and for runs that should leave nothing behind."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence

from testrack.share.secrets import redact_command
from testrack.store.base import EnvironmentRecord, ImportCost, Pin, Quarantine, Result, Run, RunInfo


class MemoryStore:
    """Implements :class:`~testrack.store.base.Store` with lists; one lock makes each call whole."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._runs: list[Run] = []
        self._results: list[Result] = []
        self._imports: list[tuple[int, ImportCost]] = []
        self._pins: dict[str, Pin] = {}
        self._quarantines: list[Quarantine] = []
        self._environments: list[EnvironmentRecord] = []

    def begin_run(self, info: RunInfo) -> int:
        with self._lock:
            for run in self._runs:
                if run.uid == info.uid:
                    return run.id
            run = Run(
                len(self._runs) + 1, info.uid, info.started, info.mode, info.rack,
                redact_command(info.command), revision=info.revision, seed=info.seed,
            )  # fmt: skip
            self._runs.append(run)
            return run.id

    def add_results(self, run_id: int, results: Sequence[Result]) -> None:
        with self._lock:
            self._results.extend(dataclasses.replace(r, run_id=run_id) for r in results)

    def add_imports(self, run_id: int, imports: Sequence[ImportCost]) -> None:
        with self._lock:
            self._imports.extend((run_id, i) for i in imports)

    def finish_run(self, run_id: int, finished: float, outcome: str) -> None:
        with self._lock:
            index = run_id - 1
            self._runs[index] = dataclasses.replace(self._runs[index], finished=finished, outcome=outcome)

    def runs(self, limit: int | None = None) -> list[Run]:
        with self._lock:
            newest = list(reversed(self._runs))
        return newest if limit is None else newest[:limit]

    def results(self, run_id: int, details: bool = False) -> list[Result]:
        with self._lock:
            found = [r for r in self._results if r.run_id == run_id]
        if details:
            return found
        return [
            dataclasses.replace(r, longrepr=None, sections=()) if r.longrepr or r.sections else r
            for r in found
        ]

    def outcomes(self, run_ids: Sequence[int]) -> list[tuple[int, str, str]]:
        wanted = set(run_ids)
        with self._lock:
            return [(r.run_id, r.nodeid, r.outcome) for r in self._results if r.run_id in wanted]

    def history(self, nodeid: str, limit: int = 50) -> list[tuple[Run, Result]]:
        with self._lock:
            found = [(self._runs[r.run_id - 1], r) for r in self._results if r.nodeid == nodeid]
        return list(reversed(found))[:limit]

    def recent_results(self, runs: int) -> list[Result]:
        with self._lock:
            ids = {run.id for run in self.runs(limit=runs)}
            return [r for r in self._results if r.run_id in ids]

    def timings(self, runs: int) -> list[tuple[str, str, float]]:
        return [(r.nodeid, r.outcome, r.duration) for r in self.recent_results(runs)]

    def import_costs(self, runs: int) -> list[ImportCost]:
        with self._lock:
            ids = {run.id for run in self.runs(limit=runs)}
            return [i for run_id, i in self._imports if run_id in ids]

    def imports(self, run_id: int) -> list[ImportCost]:
        with self._lock:
            return [i for rid, i in self._imports if rid == run_id]

    def pinned_identity(self, device: str) -> Pin | None:
        with self._lock:
            return self._pins.get(device)

    def pin_identity(self, device: str, identity: str, pinned: float, run_id: int | None) -> None:
        with self._lock:
            self._pins[device] = Pin(device, identity, pinned, run_id)

    def forget_identity(self, device: str) -> bool:
        with self._lock:
            return self._pins.pop(device, None) is not None

    def identities(self) -> list[Pin]:
        with self._lock:
            return sorted(self._pins.values(), key=lambda pin: pin.device)

    def add_quarantine(self, run_id: int, device: str, reason: str, at: float) -> None:
        with self._lock:
            self._quarantines.append(Quarantine(run_id, device, reason, at))

    def quarantines(self, run_id: int) -> list[Quarantine]:
        with self._lock:
            return [q for q in self._quarantines if q.run_id == run_id]

    def add_environments(self, records: Sequence[EnvironmentRecord]) -> None:
        with self._lock:
            self._environments.extend(records)

    def environments(self, run_id: int) -> list[EnvironmentRecord]:
        with self._lock:
            return sorted((e for e in self._environments if e.run_id == run_id), key=lambda e: e.name)

    def close(self) -> None:
        pass
