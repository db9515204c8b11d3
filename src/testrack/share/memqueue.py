"""The shared run queue in memory: the reference for unit tests, on a MemoryShare (for the
fence) and a MemoryStore (for the results), under the share's lock."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence

from testrack.share.errors import HostNameTaken, LeaseLost, QueueError
from testrack.share.memory import MemoryShare
from testrack.share.queue import (
    MODES,
    Claim,
    HostView,
    JoinedRun,
    RunPlan,
    RunProgress,
    Unrunnable,
    guided,
    refuse_finished,
    refuse_mismatch,
)
from testrack.store.base import Result, RunInfo
from testrack.store.memory import MemoryStore


@dataclasses.dataclass
class _Run:
    plan: RunPlan
    store_run_id: int
    created: float
    finished: float | None = None


@dataclasses.dataclass
class _Host:
    holder_id: int
    joined: float
    left: float | None = None


@dataclasses.dataclass
class _Item:
    id: int
    run: str
    idx: int
    device: str | None
    estimate: float
    state: str = "queued"
    attempts: int = 0
    started: bool = False
    claim_holder: int | None = None
    claim_host: str | None = None
    claim_device: str | None = None
    claim_token: int | None = None
    outcome: str | None = None

    def unclaim(self, charge: bool) -> None:
        self.state, self.started = "queued", False
        self.claim_holder = self.claim_host = self.claim_device = self.claim_token = None
        if not charge:
            self.attempts -= 1


class MemoryQueue:
    """Implements :class:`~testrack.share.queue.RunQueue` in memory."""

    def __init__(self, share: MemoryShare, store: MemoryStore) -> None:
        self.share = share
        self.store = store
        self._runs: dict[str, _Run] = {}
        self._hosts: dict[tuple[str, str], _Host] = {}
        self._routes: dict[tuple[str, str, int], str] = {}
        self._items: dict[int, _Item] = {}
        self._ids = itertools.count(1)

    def open_run(self, plan: RunPlan, host: str, holder_id: int, devices: Sequence[str] = ()) -> JoinedRun:
        if plan.mode not in MODES:
            raise QueueError(f"run {plan.uid}: mode {plan.mode!r} is not one of {', '.join(MODES)}")
        with self.share.lock:
            now = self.share.clock.time()
            store_run = self.store.begin_run(
                RunInfo(plan.uid, plan.started, plan.mode, plan.rack, plan.command)
            )
            run = self._runs.get(plan.uid)
            created = run is None
            if run is None:
                run = self._runs[plan.uid] = _Run(plan, store_run, now)
                if plan.mode == "load":
                    for idx, test in enumerate(plan.tests):
                        self._add_item(plan.uid, idx, None, test.estimate)
            else:
                had = {i.device for i in self._items.values() if i.run == plan.uid}
                if run.finished is not None and run.plan.mode == plan.mode == "each" and set(devices) - had:
                    run.finished = None  # a late host, with devices that have not run the tests
                if run.finished is not None:
                    raise refuse_finished(plan.uid, run.finished, self._outcomes(plan.uid))
                if run.plan.mode != plan.mode:
                    raise QueueError(
                        f"run {plan.uid} runs in {run.plan.mode} mode, this host asked for {plan.mode}: "
                        "every host of a run uses the same --rack-mode"
                    )
                if run.plan.digest() != plan.digest():
                    raise refuse_mismatch(
                        plan.uid, host, [t.nodeid for t in run.plan.tests], [t.nodeid for t in plan.tests]
                    )
            known = self._hosts.get((plan.uid, host))
            if (
                known is not None
                and known.left is None
                and self._alive(known.holder_id, now)
                and known.holder_id != holder_id
            ):
                raise HostNameTaken(
                    f"run {plan.uid} already has a live host named {host}: give this one another "
                    "name with --rack-host NAME (names are unique within a run)"
                )
            self._hosts[(plan.uid, host)] = _Host(holder_id, now)
            return JoinedRun(plan.uid, run.store_run_id, created, run.plan.mode)

    def add_routes(self, run: str, host: str, routes: Mapping[str, Sequence[str]]) -> None:
        with self.share.lock:
            plan = self._runs[run].plan
            ids = {t.nodeid: i for i, t in enumerate(plan.tests)}
            for device, nodeids in routes.items():
                for nodeid in nodeids:
                    if nodeid not in ids:
                        continue
                    self._routes[(run, device, ids[nodeid])] = host
                    if plan.mode == "each" and not any(
                        i.run == run and i.idx == ids[nodeid] and i.device == device
                        for i in self._items.values()
                    ):
                        self._add_item(run, ids[nodeid], device, plan.tests[ids[nodeid]].estimate)

    def claim(
        self, run: str, host: str, holder_id: int, token: int, device: str, n: int, among: int = 0
    ) -> list[Claim]:
        with self.share.lock:
            self._fence(holder_id, token, f"claim tests for {device}")
            plan = self._runs[run].plan
            queued = sorted(
                (
                    i
                    for i in self._items.values()
                    if i.run == run and i.state == "queued" and i.device in (None, device)
                    and (run, device, i.idx) in self._routes
                ),
                key=lambda i: (-i.estimate, i.id),
            )  # fmt: skip
            queued = queued[: guided(n, len(queued), among)]
            claims = []
            for item in queued:
                item.state, item.attempts, item.started = "claimed", item.attempts + 1, False
                item.claim_holder, item.claim_host, item.claim_device, item.claim_token = (
                    holder_id,
                    host,
                    device,
                    token,
                )
                claims.append(Claim(item.id, plan.tests[item.idx].nodeid, device, item.attempts, token))
        if len(claims) < n and self.recover(
            run
        ):  # tests of a dead host came back: claim again, longest first
            self.unclaim(holder_id, token, claims)
            return self.claim(run, host, holder_id, token, device, n, among)
        return claims

    def mark_started(self, holder_id: int, token: int, claims: Sequence[Claim]) -> None:
        with self.share.lock:
            if claims:
                self._fence(holder_id, token, "mark tests started")
            for claim in claims:
                item = self._items[claim.item]
                if item.state == "claimed" and item.claim_token == token:
                    item.started = True

    def claim_test(
        self, run: str, host: str, holder_id: int, tokens: Sequence[int], nodeid: str, device: str
    ) -> Claim | None:
        with self.share.lock:
            for token in tokens:
                self._fence(holder_id, token, f"claim {nodeid} on {device}")
            plan = self._runs[run].plan
            item = next(
                (
                    i
                    for i in self._items.values()
                    if i.run == run and plan.tests[i.idx].nodeid == nodeid and i.state == "queued"
                    and i.device in (None, device) and (run, device, i.idx) in self._routes
                ),
                None,
            )  # fmt: skip
            if item is None:
                return None
            item.state, item.attempts, item.started = "claimed", item.attempts + 1, False
            item.claim_holder, item.claim_host, item.claim_device, item.claim_token = (
                holder_id,
                host,
                device,
                tokens[0],
            )
            return Claim(item.id, nodeid, device, item.attempts, tokens[0])

    def complete(
        self,
        run: str,
        holder_id: int,
        token: int,
        finished: Sequence[tuple[Claim, Result]],
        also: Sequence[int] = (),
    ) -> list[Claim]:
        with self.share.lock:
            if not finished:
                return []
            for fence in (token, *also):
                self._fence(holder_id, fence, "write results")
            accepted, rows = [], []
            for claim, result in finished:
                item = self._items[claim.item]
                if item.claim_token != token:
                    continue
                if item.state == "claimed":
                    item.state, item.outcome = "done", result.outcome
                    rows.append(result)
                accepted.append(claim)
            self.store.add_results(self._runs[run].store_run_id, rows)
            return accepted

    def unclaim(self, holder_id: int, token: int, claims: Sequence[Claim]) -> None:
        with self.share.lock:
            for claim in claims:
                item = self._items[claim.item]
                if item.state == "claimed" and item.claim_token == token and not item.started:
                    item.unclaim(charge=False)

    def recover(self, run: str) -> list[tuple[str, str]]:
        with self.share.lock:
            now = self.share.clock.time()
            state = self.share.state
            live_tokens = {
                lease.token for slot, lease in state.leases.items() if state.live_lease(slot, now) is not None
            }
            plan, budget = self._runs[run].plan, self._runs[run].plan.retry_budget
            changed = []
            for item in self._items.values():
                if item.run != run or item.state != "claimed" or item.claim_token in live_tokens:
                    continue
                dead = item.claim_holder is None or not state.alive(item.claim_holder, now)
                nodeid = plan.tests[item.idx].nodeid
                if item.started and dead and item.attempts > budget:
                    item.state, item.outcome = "done", "crashed"
                    message = (
                        f"host {item.claim_host} stopped (no heartbeat, or its connection closed) while "
                        f"running it on {item.claim_device} (attempt {item.attempts} of {budget + 1}; "
                        "--rack-retry-crashed allows more)"
                    )
                    crash = Result(
                        nodeid,
                        item.claim_device or "",
                        item.claim_host or "",
                        "crashed",
                        0.0,
                        now,
                        now,
                        0,
                        message,
                    )
                    self.store.add_results(self._runs[run].store_run_id, [crash])
                    changed.append((nodeid, "crashed"))
                else:
                    item.unclaim(charge=item.started and dead)
                    changed.append((nodeid, "queued"))
            return changed

    def leave(self, run: str, host: str) -> bool:
        with self.share.lock:
            known = self._hosts.get((run, host))
            if known is not None:
                known.left = self.share.clock.time()
            return self._finish_if_done(run)

    def rejoin(self, run: str, host: str, holder_id: int) -> None:
        with self.share.lock:
            known = self._hosts.get((run, host))
            if known is not None:
                known.holder_id, known.left = holder_id, None

    def fates(self, items: Sequence[int]) -> dict[int, tuple[str, str | None, str | None]]:
        with self.share.lock:
            return {i: (it.state, it.outcome, it.claim_host) for i in items if (it := self._items.get(i))}

    def progress(self, run: str, unrunnable: bool = True) -> RunProgress:
        with self.share.lock:
            if run not in self._runs:
                raise QueueError(f"there is no shared run {run} in the share {self.share.location}")
            self._finish_if_done(run)
            now = self.share.clock.time()
            items = [i for i in self._items.values() if i.run == run]
            counts = {s: sum(1 for i in items if i.state == s) for s in ("queued", "claimed", "done")}
            hosts = tuple(
                HostView(name, h.joined, h.left, self._alive(h.holder_id, now))
                for (r, name), h in sorted(self._hosts.items())
                if r == run
            )
            live = {h.name for h in hosts if h.alive and h.left is None}
            plan = self._runs[run].plan
            stuck = []
            for item in sorted(items, key=lambda i: (i.idx, i.id)):
                if item.state != "queued" or not unrunnable:
                    continue
                routes = [
                    (h, d)
                    for (r, d, idx), h in self._routes.items()
                    if r == run and idx == item.idx and item.device in (None, d)
                ]
                if not any(h in live for h, _ in routes):
                    names = tuple(sorted(f"{h}:{d}" for h, d in routes))
                    stuck.append(Unrunnable(plan.tests[item.idx].nodeid, item.device, names))
            return RunProgress(
                run, len(items), counts["queued"], counts["claimed"], counts["done"], self._outcomes(run),
                hosts, tuple(stuck), self._runs[run].finished,
            )  # fmt: skip

    # -- inside the lock -----------------------------------------------------------------

    def _add_item(self, run: str, idx: int, device: str | None, estimate: float) -> None:
        item_id = next(self._ids)
        self._items[item_id] = _Item(item_id, run, idx, device, estimate)

    def _alive(self, holder_id: int, now: float) -> bool:
        return self.share.state.alive(holder_id, now)

    def _fence(self, holder_id: int, token: int, what: str) -> None:
        now = self.share.clock.time()
        if not any(
            lease.token == token and lease.holder_id == holder_id and lease.expires >= now
            for lease in self.share.state.leases.values()
        ):
            raise LeaseLost((), token, f"cannot {what}: the lease is no longer this holder's")

    def _outcomes(self, run: str) -> dict[str, int]:
        outcomes: dict[str, int] = {}
        for item in self._items.values():
            if item.run == run and item.state == "done" and item.outcome is not None:
                outcomes[item.outcome] = outcomes.get(item.outcome, 0) + 1
        return outcomes

    def _finish_if_done(self, run: str) -> bool:
        entry = self._runs[run]
        if entry.finished is not None:
            return False
        now = self.share.clock.time()
        if any(i.run == run and i.state != "done" for i in self._items.values()):
            return False
        if any(
            r == run and h.left is None and self._alive(h.holder_id, now) for (r, _), h in self._hosts.items()
        ):
            return False
        entry.finished = now
        return True
