"""One run over many hosts (``pytest --rack-run ID``): the shared run queue's contract, its
plain data, and the waiting ``testrack report --run ID --wait`` does.

Every host runs the same command with its own rack. The first to come creates the run (no
leader election: ``INSERT ... ON CONFLICT DO NOTHING``); the others join and must have
collected the same tests. Each host says which tests each of its devices can run (routing stays
in the host), then claims work for a device it holds a lease on and writes results, each in one
transaction that checks the lease's token. A result is stored in the same transaction, so it is
neither lost nor counted twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from testrack.share.clock import SYSTEM_CLOCK, Clock
from testrack.share.errors import RunFinished, TestSetMismatch
from testrack.share.text import clock_time
from testrack.store.base import Result

MODES = ("load", "each")


@dataclasses.dataclass(frozen=True)
class QueuedTest:
    nodeid: str
    estimate: float = 0.0
    """Seconds, from the history (longest first)."""


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """What a host brings to a shared run: its collected tests and its settings."""

    uid: str
    """The ``--rack-run`` ID (a CI pipeline id, say)."""
    mode: str
    tests: tuple[QueuedTest, ...]
    retry_budget: int = 0
    """``--rack-retry-crashed``: how often a test whose host died may run again."""
    rack: str = ""
    command: str = ""
    started: float = 0.0

    def digest(self) -> str:
        return digest(t.nodeid for t in self.tests)


def guided(n: int, left: int, among: int) -> int:
    """How many of ``left`` queued tests one claim takes, asked for ``n``, with ``among`` slots
    sharing the queue (0: as asked). Guided self-scheduling: big claims while the queue is long
    (few round trips), then smaller ones, so that the hosts finish within a test of each other
    instead of one claim's worth. The PostgreSQL queue computes the same in SQL."""
    if among < 1:
        return n
    return min(n, max(1, math.ceil(left / (2 * among))))


def digest(nodeids: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(nodeids)).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class JoinedRun:
    uid: str
    store_run_id: int
    """The run's id in the results store (the same database)."""
    created: bool
    """True for the host that created the run."""
    mode: str


@dataclasses.dataclass(frozen=True)
class Claim:
    """A test a host took for one of its devices, under a lease's token."""

    item: int
    nodeid: str
    device: str
    attempt: int
    token: int


@dataclasses.dataclass(frozen=True)
class HostView:
    name: str
    joined: float
    left: float | None
    alive: bool


@dataclasses.dataclass(frozen=True)
class Unrunnable:
    """A queued test no live host in the run can run."""

    nodeid: str
    device: str | None
    routes: tuple[str, ...]
    """``host:device`` that could run it, all stopped or gone."""

    def reason(self) -> str:
        where = f"{self.nodeid} on {self.device}" if self.device else self.nodeid
        if not self.routes:
            return f"{where}: no host that joined the run has a device that can run it"
        could = ", ".join(route.replace(":", "'s ", 1) for route in self.routes)
        return f"{where}: no live host can run it (only {could} could, and those hosts stopped or left)"


@dataclasses.dataclass(frozen=True)
class RunProgress:
    uid: str
    total: int
    queued: int
    claimed: int
    done: int
    outcomes: Mapping[str, int]
    hosts: tuple[HostView, ...]
    unrunnable: tuple[Unrunnable, ...]
    finished: float | None

    @property
    def complete(self) -> bool:
        """Every test has a final result."""
        return self.done == self.total


class RunQueue(Protocol):
    """The shared run queue. Holder ids and tokens are those of the share the queue lives in."""

    def open_run(self, plan: RunPlan, host: str, holder_id: int, devices: Sequence[str] = ()) -> JoinedRun:
        """Create the run or join it. TestSetMismatch (naming the difference), RunFinished, and
        HostNameTaken (a live host of the run already has this name) refuse. In each mode, a
        finished run is opened again for a host that brings ``devices`` it has not had (a host
        that started late: every device runs every test); a retry of a host is still refused."""

    def add_routes(self, run: str, host: str, routes: Mapping[str, Sequence[str]]) -> None:
        """Which tests each of the host's devices can run (device name -> node ids). In each mode
        this queues every (test, device) pair."""

    def claim(
        self, run: str, host: str, holder_id: int, token: int, device: str, n: int, among: int = 0
    ) -> list[Claim]:
        """Up to ``n`` queued tests ``device`` can run, longest first, under the lease ``token``
        (LeaseLost if it is not this holder's live lease). [] when nothing is left for it now.
        ``among``: how many device slots share the queue; then at most :func:`guided` of them."""

    def mark_started(self, holder_id: int, token: int, claims: Sequence[Claim]) -> None:
        """These claimed tests started running (a host that dies now is blamed for them). Fenced
        by ``token`` like every write: LeaseLost, and nothing marked, when the lease is gone. (A
        host woken after its ttl must not blame itself, after the fact, for tests that ran and
        ended while it still held its lease: their results were refused, and they run again.)"""

    def claim_test(
        self, run: str, host: str, holder_id: int, tokens: Sequence[int], nodeid: str, device: str
    ) -> Claim | None:
        """Claim one named test, queued for ``device`` (a test on several devices: the label of
        the set, which the host routed it to), in one transaction fenced by every lease in
        ``tokens`` (the set's devices; the claim is the first one's): all of them are this
        holder's, or LeaseLost and nothing is claimed. None: another host has it, or had it."""

    def complete(
        self,
        run: str,
        holder_id: int,
        token: int,
        finished: Sequence[tuple[Claim, Result]],
        also: Sequence[int] = (),
    ) -> list[Claim]:
        """Store the results and close their claims, in one transaction fenced by ``token`` (and
        the leases in ``also``: a test's other devices): LeaseLost if a lease is gone (nothing
        is stored). Returns the claims accepted; a claim that went back to the queue meanwhile
        is refused (its result must not be shown)."""

    def unclaim(self, holder_id: int, token: int, claims: Sequence[Claim]) -> None:
        """Give back claimed tests that did not start (a give-back, a quarantine, the end)."""

    def recover(self, run: str) -> list[tuple[str, str]]:
        """Requeue tests whose lease is gone (their host died, froze or lost the device); a test
        that was running on a host that died counts as an attempt and, past the retry budget,
        gets the final result ``crashed``. Returns (node id, ``queued`` | ``crashed``)."""

    def leave(self, run: str, host: str) -> bool:
        """The host is done with the run; True if that finished the run."""

    def rejoin(self, run: str, host: str, holder_id: int) -> None:
        """The host's holder changed (its old one was found dead): the run's host row names the new one."""

    def fates(self, items: Sequence[int]) -> dict[int, tuple[str, str | None, str | None]]:
        """Each item's state, final outcome and the host that claimed it last."""

    def progress(self, run: str, unrunnable: bool = True) -> RunProgress:
        """Where the run stands; ``unrunnable=False`` skips working out which queued tests no
        live host can run (a host's own loop does not need it)."""


def mismatch_message(run: str, host: str, theirs: Iterable[str], mine: Iterable[str], limit: int = 5) -> str:
    """Why a host may not join: the tests it has that the run lacks, and the other way round."""
    theirs_set, mine_set = set(theirs), set(mine)
    extra = sorted(mine_set - theirs_set)
    missing = sorted(theirs_set - mine_set)

    def some(names: list[str]) -> str:
        shown = ", ".join(names[:limit])
        return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")

    parts = []
    if extra:
        parts.append(
            f"{len(extra)} test{'s' if len(extra) != 1 else ''} the run does not have ({some(extra)})"
        )
    if missing:
        parts.append(f"lacks {len(missing)} it has ({some(missing)})")
    return (
        f"host {host} collected other tests than run {run}: {' and '.join(parts)}; every host of a run must "
        "collect the same tests (same checkout, same arguments, -k and -m), or use another --rack-run ID"
    )


def refuse_mismatch(run: str, host: str, theirs: Iterable[str], mine: Iterable[str]) -> TestSetMismatch:
    return TestSetMismatch(mismatch_message(run, host, theirs, mine))


def refuse_finished(run: str, finished: float, outcomes: Mapping[str, int]) -> RunFinished:
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items())) or "no tests"
    return RunFinished(
        f"run {run} finished at {clock_time(finished)} ({counts}); a finished run is not run again: "
        "give a new --rack-run ID (to rerun only what failed, add --rack-failed)"
    )


@dataclasses.dataclass(frozen=True)
class WaitOutcome:
    progress: RunProgress
    stuck: tuple[Unrunnable, ...]
    """Empty when every test has a final result; else the tests no live host could run for the
    whole ``timeout``."""


def wait_for_run(
    queue: RunQueue,
    run: str,
    timeout: float,
    clock: Clock = SYSTEM_CLOCK,
    on_progress: Callable[[RunProgress], None] | None = None,
    poll: float = 1.0,
) -> WaitOutcome:
    """What ``testrack report --run ID --wait`` waits for: every test has a final result, or
    nothing is running and the tests left have had no live host to run them for ``timeout`` s."""
    stuck_since: dict[tuple[str, str | None], float] = {}
    while True:
        queue.recover(run)
        progress = queue.progress(run)
        if on_progress is not None:
            on_progress(progress)
        if progress.complete:
            return WaitOutcome(progress, ())
        now = clock.monotonic()
        current = {(u.nodeid, u.device): u for u in progress.unrunnable}
        stuck_since = {key: stuck_since.get(key, now) for key in current}
        if (
            progress.claimed == 0
            and len(current) == progress.queued
            and all(now - since >= timeout for since in stuck_since.values())
        ):
            return WaitOutcome(progress, tuple(current.values()))
        clock.nap(poll)


def format_stuck(outcome: WaitOutcome, timeout: float) -> list[str]:
    """The lines ``report --wait`` prints when it stops waiting without every result."""
    n = len(outcome.stuck)
    lines = [
        f"run {outcome.progress.uid}: {n} test{'s' if n != 1 else ''} had no live host to run "
        f"{'them' if n != 1 else 'it'} for {timeout:.0f} s (--timeout):"
    ]
    lines.extend(f"  {u.reason()}" for u in outcome.stuck)
    return lines
