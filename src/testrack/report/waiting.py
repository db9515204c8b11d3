"""``testrack report --run ID --wait``: the one step of a CI pipeline that waits for a run spread
over many hosts (``pytest --rack-run ID``) and gives its verdict.

It waits on the shared run's queue until every test has its final result, or until the tests
left have had no live host to run them for ``--timeout`` seconds (then it names them and why);
then it prints the run's outcome over every host's devices, writes the files asked for, and
exits with the run's code, as pytest would have for the whole run on one machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from typing import TYPE_CHECKING

from testrack import history
from testrack.report import command
from testrack.share import location
from testrack.share.errors import QueueError, ShareError
from testrack.share.queue import RunProgress, format_stuck, wait_for_run
from testrack.store.base import FAILING, Result

if TYPE_CHECKING:
    from testrack.share.pgqueue import PostgresQueue


def run(args: argparse.Namespace) -> tuple[list[str], int]:
    uid = str(args.run_spec)
    if uid == "last" or uid.isdigit():
        raise command.ReportError(
            f"--wait waits for a shared run: give --run the ID every host ran with (pytest --rack-run ID), "
            f"not {uid!r}"
        )
    setting = location.resolve(args.share)
    if not setting.postgres:
        raise command.ReportError(
            f"--wait reads the shared run's queue from its PostgreSQL share, and {setting.describe()} is "
            "not one: give --share postgresql://USER@HOST/DB (or set TESTRACK_SHARE) as the hosts did"
        )
    from testrack.share.pgqueue import PostgresQueue
    from testrack.share.postgres import PostgresShare  # psycopg is needed only here

    try:
        share = PostgresShare(setting.spec)
    except ShareError as exc:
        raise command.ReportError(str(exc)) from None
    try:
        queue = PostgresQueue(share)
        _wait_for_a_host(queue, uid, args.timeout, share.location)
        outcome = wait_for_run(queue, uid, args.timeout, on_progress=_Progress(uid))
    except ShareError as exc:
        raise command.ReportError(str(exc)) from None
    finally:
        share.close()
    if outcome.stuck:
        print("\n".join(format_stuck(outcome, args.timeout)), file=sys.stderr)
    if getattr(args, "store", None) is None:
        args.store = setting.spec  # the hosts stored their results in the share's database
    store = command.open_store(args)
    try:
        chosen = command.choose_run(store, args)
        results = [r for r in store.results(chosen.id) if r.outcome != "rerun"]
        lines = summary(uid, outcome.progress, results)
        if args.html is not None or args.junitxml is not None:
            lines.extend(command.write(store, chosen, args))
    finally:
        store.close()
    failed = bool(outcome.stuck) or any(r.outcome in FAILING for r in results)
    return lines, 1 if failed else 0


def _wait_for_a_host(queue: PostgresQueue, uid: str, timeout: float, where: str) -> None:
    """A pipeline may start the waiting step with the hosts: wait for the first to create the run."""
    deadline = time.monotonic() + timeout
    said = False
    while True:
        try:
            queue.progress(uid)
            return
        except QueueError:
            if time.monotonic() >= deadline:
                raise command.ReportError(
                    f"no shared run {uid} in the share {where} after {timeout:.0f} s (--timeout): start "
                    f"the hosts with pytest --rack-run {uid} against this share"
                ) from None
        if not said:
            print(f"testrack: waiting for the first host of {uid} to start it", file=sys.stderr, flush=True)
            said = True
        time.sleep(1.0)


def summary(uid: str, progress: RunProgress, results: list[Result]) -> list[str]:
    """The run's outcome in pytest's words, then each device's (each host's devices together)."""
    hosts = ", ".join(h.name for h in progress.hosts) or "none"
    lines = [f"{uid}: {history.counts(dict(history.outcomes_once(results)))} (hosts: {hosts})"]
    devices: dict[str, Counter[str]] = {}
    for result in results:
        devices.setdefault(result.device, Counter())[result.outcome] += 1
    lines.extend(f"  {name}: {history.counts(dict(counts))}" for name, counts in sorted(devices.items()))
    return lines


class _Progress:
    """A line on stderr whenever the run's counts change, so a CI log shows it moving."""

    def __init__(self, uid: str) -> None:
        self.uid = uid
        self.last: tuple[int, int, int] | None = None

    def __call__(self, progress: RunProgress) -> None:
        now = (progress.done, progress.claimed, progress.queued)
        if now == self.last:
            return
        self.last = now
        live = sum(1 for h in progress.hosts if h.alive)
        print(
            f"testrack: waiting for {self.uid}: {progress.done}/{progress.total} done, "
            f"{progress.claimed} running, {progress.queued} queued; {history.plural(live, 'live host')}",
            file=sys.stderr,
            flush=True,
        )
