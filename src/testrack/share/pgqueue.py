"""The shared run queue on PostgreSQL (see :mod:`testrack.share.queue`), on the share's own
connection, so a claim or a result and its lease's fence check are one transaction."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from testrack.share import sql
from testrack.share.errors import HostNameTaken, LeaseLost, QueueError
from testrack.share.postgres import PostgresShare
from testrack.share.queue import (
    MODES,
    Claim,
    HostView,
    JoinedRun,
    RunPlan,
    RunProgress,
    Unrunnable,
    refuse_finished,
    refuse_mismatch,
)
from testrack.store import postgres as store_sql
from testrack.store.base import Result, RunInfo

if TYPE_CHECKING:
    import psycopg

Q = sql.queries("testrack.share", "postgresql")
STORE = store_sql.Q


class PostgresQueue:
    """Implements :class:`~testrack.share.queue.RunQueue` on a :class:`PostgresShare`."""

    def __init__(self, share: PostgresShare) -> None:
        self.share = share  # its tables, the store's included, are migrated when it opens

    def open_run(self, plan: RunPlan, host: str, holder_id: int, devices: Sequence[str] = ()) -> JoinedRun:
        if plan.mode not in MODES:
            raise QueueError(f"run {plan.uid}: mode {plan.mode!r} is not one of {', '.join(MODES)}")
        now = self.share.now_param()

        def run(conn: psycopg.Connection[Any]) -> JoinedRun:
            with conn.transaction():
                info = RunInfo(plan.uid, plan.started, plan.mode, plan.rack, plan.command)
                store_run = _store_run(conn, info)
                params = {
                    "uid": plan.uid, "mode": plan.mode, "digest": plan.digest(),
                    "test_count": len(plan.tests), "retry_budget": plan.retry_budget,
                    "store_run_id": store_run, "now": now,
                }  # fmt: skip
                created = conn.execute(Q["queue_create_run"], params).fetchone() is not None
                if created:
                    conn.execute(
                        Q["queue_add_tests"],
                        {
                            "run": plan.uid,
                            "idxs": list(range(len(plan.tests))),
                            "nodeids": [t.nodeid for t in plan.tests],
                            "estimates": [t.estimate for t in plan.tests],
                        },
                    )
                    if plan.mode == "load":
                        conn.execute(Q["queue_add_load_items"], {"run": plan.uid})
                else:
                    self._check_join(conn, plan, host, devices)
                taken = conn.execute(Q["queue_host"], {"run": plan.uid, "host": host, "now": now}).fetchone()
                if taken is not None and taken[1] is None and taken[2] and taken[0] != holder_id:
                    raise HostNameTaken(
                        f"run {plan.uid} already has a live host named {host}: give this one another "
                        "name with --rack-host NAME (names are unique within a run)"
                    )
                conn.execute(
                    Q["queue_join_host"], {"run": plan.uid, "host": host, "holder_id": holder_id, "now": now}
                )
                mode = plan.mode
                return JoinedRun(plan.uid, int(store_run), created, mode)

        return self.share.call(run)

    def _check_join(
        self, conn: psycopg.Connection[Any], plan: RunPlan, host: str, devices: Sequence[str]
    ) -> None:
        uid, mode, digest, _count, _budget, _store, _created, finished = (
            conn.execute(Q["queue_run"], {"uid": plan.uid}).fetchone() or (None,) * 8
        )
        if finished is not None and mode == plan.mode == "each" and devices:
            params = {"run": uid, "devices": list(devices)}
            had = {row[0] for row in conn.execute(Q["queue_devices_of_run"], params)}
            if set(devices) - had:  # a late host of the run, with devices that have not run it
                conn.execute(Q["queue_reopen_run"], {"run": uid})
                finished = None
        if finished is not None:
            outcomes = dict(conn.execute(Q["queue_outcomes"], {"run": uid}).fetchall())
            raise refuse_finished(plan.uid, float(finished), outcomes)
        if mode != plan.mode:
            raise QueueError(
                f"run {plan.uid} runs in {mode} mode, this host asked for {plan.mode}: every host of a "
                "run uses the same --rack-mode"
            )
        if digest != plan.digest():
            theirs = [row[1] for row in conn.execute(Q["queue_test_ids"], {"run": uid})]
            raise refuse_mismatch(plan.uid, host, theirs, [t.nodeid for t in plan.tests])

    def add_routes(self, run: str, host: str, routes: Mapping[str, Sequence[str]]) -> None:
        def go(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction():
                ids = {nodeid: idx for idx, nodeid in conn.execute(Q["queue_test_ids"], {"run": run})}
                pairs = dict.fromkeys(
                    (device, ids[nodeid])
                    for device, nodeids in routes.items()
                    for nodeid in nodeids
                    if nodeid in ids
                )
                params = {
                    "run": run,
                    "host": host,
                    "devices": [device for device, _ in pairs],
                    "idxs": [idx for _, idx in pairs],
                }
                conn.execute(Q["queue_add_routes"], params)
                mode = (conn.execute(Q["queue_run"], {"uid": run}).fetchone() or ("", ""))[1]
                if mode == "each":
                    conn.execute(Q["queue_add_each_items"], {"run": run, "host": host})

        self.share.call(go)

    def claim(
        self, run: str, host: str, holder_id: int, token: int, device: str, n: int, among: int = 0
    ) -> list[Claim]:
        now = self.share.now_param()
        batch = uuid.uuid4().hex  # names this claim, so that a retry after a lost answer gets the same tests

        def go(conn: psycopg.Connection[Any]) -> list[Claim]:
            with conn.transaction():
                self._fence(conn, holder_id, token, now, f"claim tests for {device}")
                params = {
                    "run": run, "device": device, "n": n, "holder_id": holder_id, "host": host,
                    "token": token, "batch": batch, "among": among,
                }  # fmt: skip
                rows = conn.execute(Q["queue_claimed_batch"], params).fetchall()
                if not rows:
                    rows = conn.execute(Q["queue_claim"], params).fetchall()
            return [Claim(int(item), nodeid, device, int(attempt), token) for item, nodeid, attempt in rows]

        claims = self.share.call(go)
        if len(claims) < n and self.recover(
            run
        ):  # tests of a dead host came back: claim again, longest first
            self.unclaim(holder_id, token, claims)
            return self.claim(run, host, holder_id, token, device, n, among)
        return claims

    def mark_started(self, holder_id: int, token: int, claims: Sequence[Claim]) -> None:
        if not claims:
            return
        now = self.share.now_param()
        params = {"items": [c.item for c in claims], "token": token}

        def go(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction():
                self._fence(conn, holder_id, token, now, "mark tests started")
                conn.execute(Q["queue_mark_started"], params)

        self.share.call(go)

    def claim_test(
        self, run: str, host: str, holder_id: int, tokens: Sequence[int], nodeid: str, device: str
    ) -> Claim | None:
        now = self.share.now_param()
        params = {
            "run": run, "nodeid": nodeid, "device": device, "holder_id": holder_id, "host": host,
            "token": tokens[0], "batch": uuid.uuid4().hex,
        }  # fmt: skip

        def go(conn: psycopg.Connection[Any]) -> Claim | None:
            with conn.transaction():
                for token in tokens:
                    self._fence(conn, holder_id, token, now, f"claim {nodeid} on {device}")
                row = conn.execute(Q["queue_claim_test"], params).fetchone()
            if row is None:
                return None
            return Claim(int(row[0]), row[1], device, int(row[2]), tokens[0])

        return self.share.call(go)

    def complete(
        self,
        run: str,
        holder_id: int,
        token: int,
        finished: Sequence[tuple[Claim, Result]],
        also: Sequence[int] = (),
    ) -> list[Claim]:
        if not finished:
            return []
        now = self.share.now_param()

        def go(conn: psycopg.Connection[Any]) -> list[Claim]:
            with conn.transaction():
                for fence in (token, *also):
                    self._fence(conn, holder_id, fence, now, "write results")
                items = [c.item for c, _ in finished]
                params = {"items": items, "outcomes": [r.outcome for _, r in finished], "token": token}
                closed = {row[0] for row in conn.execute(Q["queue_finish_items"], params)}
                earlier = {
                    row[0]
                    for row in conn.execute(Q["queue_already_finished"], {"items": items, "token": token})
                }
                store_run = conn.execute(Q["queue_run"], {"uid": run}).fetchone()
                assert store_run is not None
                rows = [store_sql.result_row(int(store_run[5]), r) for c, r in finished if c.item in closed]
                if rows:
                    conn.cursor().executemany(STORE["add_result"], rows)
            accepted = closed | earlier
            return [c for c, _ in finished if c.item in accepted]

        return self.share.call(go)

    def unclaim(self, holder_id: int, token: int, claims: Sequence[Claim]) -> None:
        if claims:
            params = {"items": [c.item for c in claims], "token": token}
            self.share.call(lambda conn: conn.execute(Q["queue_unclaim"], params))

    def recover(self, run: str) -> list[tuple[str, str]]:
        params = {"run": run, "now": self.share.now_param()}

        def go(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
            with conn.transaction():
                return [
                    (nodeid, outcome) for _item, nodeid, outcome in conn.execute(Q["queue_recover"], params)
                ]

        return self.share.call(go)

    def leave(self, run: str, host: str) -> bool:
        params = {"run": run, "host": host, "now": self.share.now_param()}

        def go(conn: psycopg.Connection[Any]) -> bool:
            with conn.transaction():
                conn.execute(Q["queue_leave"], params)
                return conn.execute(Q["queue_finish_run_if_done"], params).fetchone() is not None

        return self.share.call(go)

    def rejoin(self, run: str, host: str, holder_id: int) -> None:
        params = {"run": run, "host": host, "holder_id": holder_id, "now": self.share.now_param()}
        self.share.call(lambda conn: conn.execute(Q["queue_join_host"], params))

    def fates(self, items: Sequence[int]) -> dict[int, tuple[str, str | None, str | None]]:
        params = {"items": list(items)}
        rows = self.share.call(lambda conn: conn.execute(Q["queue_fates"], params).fetchall())
        return {int(item): (state, outcome, host) for item, state, outcome, host in rows}

    def progress(self, run: str, unrunnable: bool = True) -> RunProgress:
        params = {"run": run, "now": self.share.now_param()}

        def go(conn: psycopg.Connection[Any]) -> RunProgress:
            with conn.transaction():
                conn.execute(Q["queue_finish_run_if_done"], params)
                row = conn.execute(Q["queue_run"], {"uid": run}).fetchone()
                if row is None:
                    raise QueueError(f"there is no shared run {run} in the share {self.share.location}")
                counts = dict(conn.execute(Q["queue_counts"], params).fetchall())
                outcomes = dict(conn.execute(Q["queue_outcomes"], params).fetchall())
                hosts = tuple(HostView(*h) for h in conn.execute(Q["queue_hosts"], params))
                stuck = _unrunnable(conn, run, hosts) if unrunnable and counts.get("queued") else ()
            total = sum(counts.values())
            return RunProgress(
                run, total, counts.get("queued", 0), counts.get("claimed", 0), counts.get("done", 0),
                outcomes, hosts, stuck, row[7],
            )  # fmt: skip

        return self.share.call(go)

    def _fence(
        self, conn: psycopg.Connection[Any], holder_id: int, token: int, now: float | None, what: str
    ) -> None:
        if (
            conn.execute(Q["queue_fence"], {"token": token, "holder_id": holder_id, "now": now}).fetchone()
            is None
        ):
            raise LeaseLost((), token, f"cannot {what}: the lease is no longer this holder's")


def _store_run(conn: psycopg.Connection[Any], info: RunInfo) -> int:
    return store_sql.begin_run(conn, store_sql.run_params(info))


def _unrunnable(conn: psycopg.Connection[Any], run: str, hosts: Sequence[HostView]) -> tuple[Unrunnable, ...]:
    """Queued tests no live host of the run has a route for, with the hosts that had one.

    Worked out here from three reads of one table each, not in one SQL join: a run's rows are
    new when this is asked, so the planner's statistics say the run is empty, and the join it
    then chose (nested loops over every test and item) took minutes on a share of 20 runs,
    holding the connection the heartbeat needs."""
    live = {h.name for h in hosts if h.alive and h.left is None}
    routes: dict[int, list[tuple[str, str]]] = {}
    for idx, device, host in conn.execute(Q["queue_routes_of_run"], {"run": run}):
        routes.setdefault(idx, []).append((device, host))
    stuck: dict[int, tuple[str | None, tuple[str, ...]]] = {}
    for idx, device in conn.execute(Q["queue_queued_items"], {"run": run}):
        could = [(d, h) for d, h in routes.get(idx, ()) if device is None or d == device]
        if not any(h in live for _, h in could):
            stuck[idx] = (device, tuple(sorted({f"{h}:{d}" for d, h in could})))
    if not stuck:
        return ()
    names = dict(conn.execute(Q["queue_test_names"], {"run": run, "idx": sorted(stuck)}).fetchall())
    return tuple(Unrunnable(names[idx], device, hosts_) for idx, (device, hosts_) in sorted(stuck.items()))
