"""This host's part of one run spread over many hosts (``pytest --rack-run ID``).

Every host runs the same command, with its own rack file and the same ID, against one
PostgreSQL share (docs/sharing.md). The first host to come creates the run's queue, the
others join it, and each must have collected the same tests. Instead of the in-memory
dispatcher, a worker that wants work claims tests its device can run from the queue, under its
slot's lease; when their results come back they are stored in the same transaction as the
lease's fence check, before they are shown, so a result is neither lost nor counted twice. A
host that dies has its tests put back in the queue for the others (``recover``).

A test on several devices runs on one host's devices: the host routes it to a name for "a set
of my devices" (each mode: to the set's label, one queue item per set), and claims it when its
allocator has a whole set free, in one transaction fenced by every lease of the set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shlex
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from testrack.planning import Gang, Plan
from testrack.rack import Rack
from testrack.runloop import Phase
from testrack.scheduling.dispatch import Job
from testrack.scheduling.estimates import DEFAULT_ESTIMATE
from testrack.share.errors import LeaseLost, ShareError
from testrack.share.location import resolve
from testrack.share.queue import Claim, JoinedRun, QueuedTest, RunPlan
from testrack.store.base import FAILING, Result
from testrack.trace import trace

if TYPE_CHECKING:
    from testrack.controller import Controller
    from testrack.share.pgqueue import PostgresQueue
    from testrack.workers import WorkerHandle

#: A claim takes about this many seconds of estimated work for one device: fewer round trips
#: to the database, and little left on one host at the end.
CLAIM_SECONDS = 1.0
#: At most this many tests in one claim.
CLAIM_MOST = 64
#: How often a host asks the queue again (tests of a host that died come back, the run ends).
LOOK_AGAIN = 1.0
#: ... when none of its workers holds a test, it only waits for the others' last claims: it asks
#: this soon after it became idle (the run's end is likely near), then less often the longer it
#: waits (half the time idle so far), up to LOOK_AGAIN.
LOOK_AGAIN_IDLE = 0.05


def addoption(group: Any) -> None:
    group.addoption(
        "--rack-run",
        default=None,
        metavar="ID",
        help="one run over many hosts: every host runs the same command with its own rack and the "
        "same ID (a CI pipeline id, say) against one PostgreSQL share (--rack-share postgresql://...), "
        "and they share the run's tests. testrack report --run ID --wait waits for all of them.",
    )


def store_spec(config: pytest.Config, rack: Rack) -> str | None:
    """The results store of a run: with --rack-run and no --rack-store, the share's database (a
    result and its lease's fence check commit together there)."""
    given: str | None = config.getoption("rack_store")
    if config.getoption("rack_run") is None or given is not None:
        return given
    rack_file = None if rack.share is None else Path(rack.source)
    setting = resolve(config.getoption("rack_share"), os.environ, rack.share, rack_file)
    return setting.spec if setting.postgres else None


class SharedRun:
    """Claims tests from the run's queue for this host's devices, and completes them."""

    def __init__(self, ctl: Controller, queue: PostgresQueue, uid: str, host: str, holder_id: int) -> None:
        self.ctl = ctl
        self.queue = queue
        self.uid = uid
        self.host = host
        self._holder_id = holder_id
        #: The job to run for (node id, device): what the plan made of each test here.
        self.jobs: dict[tuple[str, str], Job] = {}
        #: What this host claimed and has not completed, by :meth:`key`.
        self.claims: dict[tuple[str, str], Claim] = {}
        #: Tests on several devices this host can run (claimed when a set is free), and those
        #: another host had claimed when this one tried (tried again if tests come back).
        self.gangs: list[Gang] = []
        self.gangs_elsewhere: list[Gang] = []
        #: A claimed test on several devices: its claim's key, by (node id, first device), and
        #: the leases of its other devices, which fence its result too (by claim item).
        self._gang_keys: dict[tuple[str, str], tuple[str, str]] = {}
        self._gang_fences: dict[int, tuple[int, ...]] = {}
        self.each = ctl.mode == "each"
        self.claim_size: dict[str, int] = {}
        self._started: set[tuple[str, str]] = set()
        self.joined: JoinedRun | None = None
        self._more = True
        self._looked = -math.inf
        self._ticked = -math.inf
        self._idle_since: float | None = None  # since when no worker here holds a test
        self._queued = 0
        #: Device slots sharing the queue, as this host sees it (live hosts x its own slots):
        #: claims shrink as the queue drains, so that the hosts finish together.
        self._among = len(ctl.slots)
        #: Tests of this host the queue recorded as crashed while it was unreachable (frozen, or
        #: cut off, for longer than its ttl): node id -> why. Shown here as crashed, not hidden.
        self.crashed_here: dict[str, str] = {}
        #: Set when this host was the last to leave: the whole run's outcome, for the store.
        self.finished_run = False
        self.outcome = "ok"
        ctl.recorder.worker_prefix = f"{host}/"

    @property
    def holder_id(self) -> int:
        """This host's holder in the share. When its holder was found dead (the run was frozen,
        or cut off, for longer than its ttl), it joins the share as a new holder: the run's host
        row then names the new one, or the other hosts would take this host for dead and its
        claims and results would be refused."""
        leasing = self.ctl.leasing
        assert leasing is not None
        now = leasing.holder.id
        if now != self._holder_id:
            trace(f"shared: holder {self._holder_id} is now {now}: joining run {self.uid} again")
            with contextlib.suppress(ShareError):  # asked again on the next claim
                self.queue.rejoin(self.uid, self.host, now)
                self._holder_id = now
        return now

    @classmethod
    def open(cls, ctl: Controller) -> SharedRun | None:
        """This host's part of the run ``--rack-run`` names, or None when it names none."""
        uid: str | None = ctl.config.getoption("rack_run")
        if uid is None:
            return None
        if not uid.strip():
            raise pytest.UsageError(
                "--rack-run needs an ID, the same on every host of the run: a CI pipeline id, say "
                '(--rack-run "$CI_PIPELINE_ID")'
            )
        from testrack.share.pgqueue import PostgresQueue
        from testrack.share.postgres import PostgresShare

        leasing = ctl.leasing
        if leasing is None or not isinstance(leasing.backend, PostgresShare):
            raise pytest.UsageError(
                f"--rack-run {uid} spreads a run over many hosts through a PostgreSQL share, and this "
                "run has none: add --rack-share postgresql://USER@HOST/DB (or TESTRACK_SHARE), with a "
                "rack file of devices (local:N slots are not shared)"
            )
        return cls(ctl, PostgresQueue(leasing.backend), uid, leasing.holder.info.host, leasing.holder.id)

    # ------------------------------------------------------------------ joining

    def begin(self, jobs: Sequence[Job], elsewhere: Sequence[str]) -> None:
        """Create or join the run with every test this host collected (``elsewhere``: those no
        device here can run), and say which tests each device here can run."""
        ctl = self.ctl
        estimates: dict[str, float] = {nodeid: 0.0 for nodeid in elsewhere}
        routes: dict[str, list[str]] = {}
        for job in jobs:
            estimates[job.nodeid] = max(estimates.get(job.nodeid, 0.0), job.estimate)
            for device in job.eligible:
                self.jobs[(job.nodeid, device)] = job
                routes.setdefault(device, []).append(job.nodeid)
        for gang in self.gangs:
            estimates[gang.nodeid] = max(estimates.get(gang.nodeid, 0.0), gang.estimate)
            routes.setdefault(self.gang_route(gang), []).append(gang.nodeid)
        self.claim_size = self._claim_sizes()  # once: a claim is on the run loop's path
        plan = RunPlan(
            self.uid,
            ctl.mode,
            tuple(QueuedTest(nodeid, estimate) for nodeid, estimate in estimates.items()),
            retry_budget=ctl.faults.retry_crashed,
            rack=ctl.rack.source,
            command=shlex.join(["pytest", *map(str, ctl.config.invocation_params.args)]),
            started=time.time(),
        )
        if ctl.order.fixed:
            ctl.notes.append(
                f"the order of {ctl.order.source} does not apply to shared run {self.uid}: its hosts "
                "claim tests from its queue, longest first"
            )
        try:
            self.joined = self.queue.open_run(plan, self.host, self.holder_id, sorted(routes))
            self.queue.add_routes(self.uid, self.host, routes)
        except ShareError as exc:
            raise pytest.UsageError(str(exc)) from None

    def adopt(self, plan: Plan) -> list[str]:
        """Fit this host's plan to a shared run; returns the tests no device here can run (they
        are queued for the other hosts, not reported here as errors)."""
        elsewhere = [i.test.nodeid for i, _ in plan.unrunnable if not i.test.requirement_error]
        plan.unrunnable = [(i, text) for i, text in plan.unrunnable if i.test.requirement_error]
        self.gangs = list(plan.gangs)
        return elsewhere

    def gang_route(self, gang: Gang) -> str:
        """The name a test on several devices is queued for: in each mode the label of its set
        (each set runs it once), in load mode one name for "a set of this host's devices"."""
        if self.each:
            return "+".join(name for position in gang.positions for name in sorted(position))
        return f"several devices of host {self.host}"

    def claim_gang(self, gang: Gang, slots: Sequence[str], devices: Sequence[str]) -> bool | None:
        """Claim a test on several devices from the queue for the set the allocator chose, in one
        transaction fenced by all their slots' leases. False: another host has it, or had it
        (it is not this host's to run); None: not now (a lease is gone, the share is away)."""
        leasing = self.ctl.leasing
        assert leasing is not None
        tokens = [lease.token for slot_id in slots if (lease := leasing.leases.get(slot_id)) is not None]
        if len(tokens) != len(slots):
            return None
        route = self.gang_route(gang)
        key = self.key(gang.nodeid, route)
        claim = self.claims.get(key)  # claimed already: it runs again (a DeviceError)
        if claim is None:
            try:
                claim = self.queue.claim_test(self.uid, self.host, self.holder_id, tokens, gang.nodeid, route)
            except LeaseLost as exc:
                trace(f"shared: {gang.nodeid} not claimed: {exc}")
                return None
            except ShareError as exc:
                self.ctl.problems.append(f"shared run {self.uid}: could not claim {gang.nodeid}: {exc}")
                return None
            if claim is None:
                trace(f"shared: {gang.nodeid} on {route} is another host's")
                self.gangs_elsewhere.append(gang)
                return False
            self.claims[key] = claim
        self._gang_keys[(gang.nodeid, devices[0])] = key
        self._gang_fences[claim.item] = tuple(t for t in tokens if t != claim.token)
        return True

    def describe(self, elsewhere: int) -> str:
        joined = self.joined
        how = "created" if joined is not None and joined.created else "joined"
        line = f"testrack: {how} shared run {self.uid} as host {self.host}"
        if elsewhere:
            tests = f"{elsewhere} test{'s' if elsewhere != 1 else ''}"
            line += f"; {tests} no device here can run are left to the other hosts"
        return line

    # ------------------------------------------------------------------ claiming

    def take(self, worker: WorkerHandle) -> list[Job]:
        """Tests from the queue for ``worker``'s device, under its slot's lease ([] for none now)."""
        ctl = self.ctl
        assert ctl.leasing is not None
        lease = ctl.leasing.leases.get(worker.slot.id)
        if lease is None:
            return []
        device = worker.device.name
        try:
            size = self.claim_size.get(device, 1)
            among = 0 if self.each else self._among  # in each mode a device's tests are its own
            claims = self.queue.claim(self.uid, self.host, self.holder_id, lease.token, device, size, among)
        except LeaseLost as exc:
            trace(f"shared: {worker.slot.id} lease lost: {exc}")
            return []
        except ShareError as exc:
            ctl.problems.append(f"shared run {self.uid}: could not claim tests for {device}: {exc}")
            return []
        trace(f"shared: {worker.slot.id} claimed {len(claims)} of {size}")
        if not claims:
            # Newer than the last look at the queue: what it counted as queued was taken since.
            # Left as it was, a host whose workers just finished for want of tests read it as
            # tests come back, and started a fresh worker in every slot at the end of the run.
            self._queued = 0
        jobs = []
        for claim in claims:
            job = self.jobs.get((claim.nodeid, device))
            if job is None:  # not routed here; cannot happen unless the routes changed
                self._give_back([claim])
                continue
            self.claims[self.key(claim.nodeid, device)] = claim
            jobs.append(dataclasses.replace(job, eligible=frozenset([device])))
        return jobs

    def key(self, nodeid: str, device: str) -> tuple[str, str]:
        """A claim's key: in load mode a test is claimed once (a retry after a crash may run on
        another device here), in each mode once per device."""
        return (nodeid, device if self.each else "")

    def _claim_key(self, nodeid: str, device: str) -> tuple[str, str]:
        """The key of the claim a test run on ``device`` (its first device) reports to."""
        return self._gang_keys.get((nodeid, device)) or self.key(nodeid, device)

    def _pop_claim(self, nodeid: str, device: str) -> Claim | None:
        key = self._claim_key(nodeid, device)
        claim = self.claims.pop(key, None)
        if claim is not None:
            self._gang_keys.pop((nodeid, device), None)
            self._started.discard(key)
        return claim

    def _claim_sizes(self) -> dict[str, int]:
        """How many tests one claim takes, per device: about CLAIM_SECONDS of its work."""
        known: dict[str, list[float]] = {}
        for (_, device), job in self.jobs.items():
            if not job.guessed:
                known.setdefault(device, []).append(job.estimate)
        devices = {device for _, device in self.jobs}
        sizes = {}
        for device in devices:
            mean = statistics.fmean(known[device]) if device in known else DEFAULT_ESTIMATE
            sizes[device] = max(1, min(CLAIM_MOST, int(CLAIM_SECONDS / max(mean, 1e-3))))
        return sizes

    def may_have_more(self) -> bool:
        """Whether the run may still give this host work: tests queued, or claimed by hosts that
        may die and give them back. Asked of the database at most every LOOK_AGAIN seconds."""
        now = time.monotonic()
        if now - self._looked >= self._look_again():
            self._looked = now
            try:
                self.queue.recover(self.uid)
                progress = self.queue.progress(self.uid, unrunnable=False)
            except ShareError:
                return self._more  # the database is away for a moment: as before
            mine = len(self.claims)
            self._more = progress.queued > 0 or progress.claimed > mine
            trace(f"shared: {progress.queued} queued, {progress.claimed} claimed ({mine} here)")
            self._queued = progress.queued
            hosts = sum(1 for h in progress.hosts if h.alive and h.left is None)
            self._among = max(1, hosts) * len(self.ctl.slots)
        return self._more

    def tick(self, wait: float | None) -> float:
        """From the run loop, every LOOK_AGAIN seconds: tell the queue which claimed tests started,
        and offer idle workers what came back to the queue. Returns how long the loop may wait."""
        now = time.monotonic()
        if now >= self._ticked + self._look_again():  # sooner once this host has become idle
            self._ticked = now
            self._mark_started()
            ctl = self.ctl
            if any(w.wants_work for w in ctl.alive_workers()):
                ctl.feeder.feed_idle()
            if self.may_have_more() and self._queued and self.gangs_elsewhere and ctl.phase is Phase.RUNNING:
                # A host that had claimed them may have died: they may be queued again.
                ctl.gangs.add(self.gangs_elsewhere)
                self.gangs_elsewhere = []
                ctl.gangs.start()
            if self.may_have_more() and self._queued and ctl.phase is Phase.RUNNING:
                # Tests came back (a host died) after this host's workers finished: a fresh worker
                # in each free slot claims what its device can run.
                for slot in ctl.free_slots():
                    trace(f"shared: {slot.id} restarts for tests back in the queue")
                    fresh = ctl.start_worker(slot, fresh=True)
                    ctl.give_imports(fresh, ctl.planned_for(fresh))
        left = max(0.0, self._ticked + self._look_again() - now)
        return left if wait is None else min(wait, left)

    def _look_again(self) -> float:
        if any(w.assigned for w in self.ctl.alive_workers()):
            self._idle_since = None
            return LOOK_AGAIN
        now = time.monotonic()
        if self._idle_since is None:
            self._idle_since = now
        return min(LOOK_AGAIN, max(LOOK_AGAIN_IDLE, (now - self._idle_since) / 2))

    def waiting(self) -> bool:
        """Whether this host waits for tests that may still come back to the queue (claimed by
        hosts that may die): with an idle worker, or a free slot to start one in when they do."""
        # Any worker that may still take tests: also one starting or just started, that has not
        # asked yet (its slot's lease came back after the run was frozen or cut off). Or none:
        # every worker was told to finish with its last test, just as another host died.
        idle = any(not w.winding_down and not w.assigned for w in self.ctl.alive_workers())
        return (idle or bool(self.ctl.free_slots())) and self.may_have_more()

    def _mark_started(self) -> None:
        """Tell the queue which claimed tests started (a host that dies is blamed for those)."""
        if not self.claims:
            return
        by_token: dict[int, list[Claim]] = {}
        for worker in self.ctl.alive_workers():
            started = worker.board.read().started - worker.reported
            for job in list(worker.assigned)[: max(0, started)]:
                key = self._claim_key(job.nodeid, worker.device.name)
                claim = self.claims.get(key)
                if claim is not None and key not in self._started:
                    self._started.add(key)
                    by_token.setdefault(claim.token, []).append(claim)
        for token, claims in by_token.items():
            # The lease may be gone (its results will be refused), or the database away a moment.
            with contextlib.suppress(ShareError):
                self.queue.mark_started(self.holder_id, token, claims)

    # ------------------------------------------------------------------ completing

    def complete(self, results: Sequence[Result]) -> set[str]:
        """Store the final results of claimed tests with their fence checks; returns the node ids
        whose results were refused (their claim went back to the queue: not to be shown)."""
        by_token: dict[tuple[int, tuple[int, ...]], list[tuple[Claim, Result]]] = {}
        refused: set[str] = set()
        attempts: list[Result] = []
        # The queue writes its rows itself: with the worker names the store keeps (host/gw0).
        stored = self.ctl.recorder.as_stored(results)
        for result, kept in zip(results, stored, strict=True):
            # An attempt that runs again (a rerun, a DeviceError) keeps the claim.
            again = result.outcome in ("rerun", "device_error")
            claim = None if again else self._pop_claim(result.nodeid, result.device)
            if claim is None:
                attempts.append(result)  # an attempt, another device's copy, or not a queued test
                continue
            fences = self._gang_fences.pop(claim.item, ())
            by_token.setdefault((claim.token, fences), []).append((claim, kept))
        self.ctl.recorder.results(attempts)
        for (token, also), finished in by_token.items():
            try:
                done = self.queue.complete(self.uid, self.holder_id, token, finished, also)
                accepted = {c.item for c in done}
            except LeaseLost:
                accepted = set()
            except ShareError as exc:
                self.ctl.problems.append(f"shared run {self.uid}: results not stored: {exc}")
                accepted = set()
            for claim, _ in finished:
                if claim.item not in accepted:
                    refused.add(claim.nodeid)
            self._crashed_here([claim for claim, _ in finished if claim.item not in accepted])
        return refused

    def _crashed_here(self, refused: Sequence[Claim]) -> None:
        """Of refused results, those the queue ended as crashed on this host (it was unreachable
        while running them, past the retry budget): the run's verdict for them, to show here."""
        if not refused:
            return
        try:
            fates = self.queue.fates([c.item for c in refused])
        except ShareError:
            return
        for claim in refused:
            state, outcome, host = fates.get(claim.item, ("", None, None))
            if state == "done" and outcome == "crashed" and host == self.host:
                self.crashed_here[claim.nodeid] = (
                    f"shared run {self.uid}: host {self.host} could not be reached for longer than its "
                    f"lease's ttl while it ran this test (frozen, or cut off from the share), and the "
                    f"queue recorded it as crashed on {claim.device} (attempt {claim.attempt}; "
                    "--rack-retry-crashed allows more); its result here came too late to count"
                )

    def give_back(self, job: Job) -> bool:
        """A claimed test no device here can run now (its device was quarantined or lost): back to
        the queue for the other hosts. False when it was not a claimed test."""
        return not self.give_back_all([job])

    def give_back_all(self, jobs: Sequence[Job]) -> list[Job]:
        """``give_back`` for many tests, in one call to the queue per lease; returns the jobs
        that were not claimed tests (they stay this host's)."""
        claims, kept = [], []
        for job in jobs:
            mine = [c for d in job.eligible if (c := self._pop_claim(job.nodeid, d)) is not None]
            claims.extend(mine)
            if not mine:
                kept.append(job)
        self._give_back(claims)
        return kept

    def _give_back(self, claims: Sequence[Claim]) -> None:
        by_token: dict[int, list[Claim]] = {}
        for claim in claims:
            by_token.setdefault(claim.token, []).append(claim)
        for token, some in by_token.items():
            with contextlib.suppress(ShareError):  # the lease is gone: the queue takes them back
                self.queue.unclaim(self.holder_id, token, some)

    def leave(self) -> None:
        """The end of this host's part: what it still claims goes back, and it leaves the run."""
        self._give_back(list(self.claims.values()))
        self.claims.clear()
        try:
            self.finished_run = self.queue.leave(self.uid, self.host)
            if self.finished_run:
                outcomes = self.queue.progress(self.uid, unrunnable=False).outcomes
                self.outcome = "tests_failed" if any(o in FAILING for o in outcomes) else "ok"
        except ShareError as exc:
            self.ctl.problems.append(f"shared run {self.uid}: could not leave the run: {exc}")
