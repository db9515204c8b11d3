"""The share on PostgreSQL, for runs on many hosts (``--rack-share postgresql://...``).

Hot paths are single calls of the functions in ``sql/postgresql/migrations/0001_leases.sql``;
views (``status``, the waiting line, give-back advice, ``release``) read the share into a
:class:`~testrack.share.state.ShareState` and ask the same rules as the other backends.

Each holder holds a session advisory lock on this backend's connection, so the holder dies
with its process. When the connection breaks (the server restarted), the next call
reconnects, takes the holders' locks again, drops their queued requests (the Holder asks
again) and retries once; the holders' next heartbeat re-asserts their leases by token. Waiters
LISTEN on the same connection and are woken by releases; a dead or frozen holder sends no
notice, so they also look again every poll.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from testrack.share import rules, sql, text
from testrack.share.clock import SYSTEM_CLOCK, Clock
from testrack.share.errors import LeaseLost, NotHolder, ShareError, ShareUnavailable
from testrack.share.fairlock import FairLock
from testrack.share.model import (
    DEFAULT_TTL,
    DeviceSpec,
    Grant,
    HolderInfo,
    HolderKind,
    LeaseView,
    QuarantineView,
    ShareStatus,
    SlotKey,
    WaitState,
)
from testrack.share.pgschema import connect, first_line, migrate
from testrack.share.secrets import redact
from testrack.share.state import ShareState
from testrack.store import postgres as store_sql

if TYPE_CHECKING:
    import psycopg

Q = sql.queries("testrack.share", "postgresql")
MIGRATIONS = sql.migrations("testrack.share", "postgresql")
CHANNEL = "testrack_share"
#: Longest a waiter keeps the shared connection at a time.
NOTIFY_SLICE = 0.05
T = TypeVar("T")


class PostgresShare:
    """Implements :class:`~testrack.share.backend.ShareBackend` on a PostgreSQL database."""

    def __init__(self, url: str, clock: Clock = SYSTEM_CLOCK, reconnect_for: float = DEFAULT_TTL) -> None:
        self.url = url
        self.clock = clock
        self.location = redact(url)
        self.reconnect_for = reconnect_for
        self.reconnections = 0
        self._lock = FairLock()  # the heartbeat gets its turn however busy the run loop is
        self._holders: set[int] = set()
        self._listening = False
        self._slot_ids: dict[SlotKey, int] = {}
        self._slot_keys: dict[int, SlotKey] = {}
        self._conn = connect(url, "the share")
        migrate(self._conn, "share", MIGRATIONS, self.location)
        # A shared run's results commit with their fence check: the store's tables live here too.
        migrate(self._conn, "store", store_sql.MIGRATIONS, self.location)

    # -- the contract --------------------------------------------------------------------

    def register_devices(self, devices: Sequence[DeviceSpec]) -> list[str]:
        def run(conn: psycopg.Connection[Any]) -> list[str]:
            warnings = []
            with conn.transaction():
                known = {row[0]: DeviceSpec(*row) for row in conn.execute(Q["devices"])}
                for device in devices:
                    old = known.get(device.name)
                    if old is not None and device.address and old.address and old.address != device.address:
                        warnings.append(text.address_warning(self.location, device, old.address))
                    params = {"name": device.name, "capacity": device.capacity, "address": device.address}
                    conn.execute(Q["upsert_device"], params)
                    conn.execute(Q["add_slots"], params)
            self._load_slots(conn)
            return warnings

        return self.call(run)

    def add_holder(self, info: HolderInfo, ttl: float) -> int:
        def run(conn: psycopg.Connection[Any]) -> int:
            params = {
                "run": info.run, "host": info.host, "pid": info.pid, "label": info.label,
                "kind": info.kind.value, "priority": info.priority, "ttl": ttl, "now": self.now_param(),
            }  # fmt: skip
            holder_id = int(_one(conn.execute(Q["add_holder"], params)))
            self._holders.add(holder_id)
            self._own_holders(conn)
            conn.execute(Q["forget_the_dead"], {"now": self.now_param()})
            return holder_id

        return self.call(run)

    def remove_holder(self, holder_id: int) -> None:
        def run(conn: psycopg.Connection[Any]) -> None:
            conn.execute(Q["remove_holder"], {"holder_id": holder_id, "now": self.now_param()})
            if holder_id in self._holders:
                self._holders.discard(holder_id)
                conn.execute(Q["unlock_holder"], {"holder_id": holder_id})
                self._own_holders(conn)

        self.call(run)

    def request(self, holder_id: int, slots: Sequence[SlotKey], priority: int) -> tuple[int, Grant | None]:
        def run(conn: psycopg.Connection[Any]) -> tuple[int, Grant | None]:
            ids = self._ids_of(conn, slots)
            params = {"holder_id": holder_id, "slots": ids, "priority": priority, "now": self.now_param()}
            request_id, status, token, granted, expires = _row(conn.execute(Q["request"], params))
            return int(request_id), self._grant(status, token, granted, expires, slots)

        return self.call(run)

    def try_grant(self, request_id: int) -> Grant | None:
        def run(conn: psycopg.Connection[Any]) -> Grant | None:
            status, token, granted, expires = _row(
                conn.execute(Q["try_grant"], {"request_id": request_id, "now": self.now_param()})
            )
            if status != "granted":
                return self._grant(status, token, granted, expires, ())
            slots = self._slots_of_token(conn, int(token))
            return Grant(int(token), slots, float(granted), float(expires))

        return self.call(run)

    def cancel(self, request_id: int) -> None:
        self.call(lambda conn: conn.execute(Q["cancel"], {"request_id": request_id}))

    def renew(self, holder_id: int, tokens: Sequence[int]) -> list[int] | None:
        def run(conn: psycopg.Connection[Any]) -> list[int] | None:
            kept = _one(
                conn.execute(
                    Q["renew"], {"holder_id": holder_id, "tokens": list(tokens), "now": self.now_param()}
                )
            )
            return None if kept is None else [int(t) for t in kept]

        return self.call(run)

    def release(self, holder_id: int, token: int) -> bool:
        return bool(
            self.call(
                lambda conn: _one(
                    conn.execute(
                        Q["release"], {"holder_id": holder_id, "token": token, "now": self.now_param()}
                    )
                )
            )
        )

    def give_back(self, holder_id: int, token: int) -> bool:
        def run(conn: psycopg.Connection[Any]) -> bool:
            state, now = self._state(conn, grants_for=24 * 3600.0)
            return state.give_back(holder_id, token, now)

        return self.call(run)

    def wait_state(self, request_id: int) -> WaitState:
        def run(conn: psycopg.Connection[Any]) -> WaitState:
            state, now = self._state(conn)
            return state.wait_state(request_id, now)

        return self.call(run)

    def wait_for_change(self, timeout: float, slots: Sequence[SlotKey] = ()) -> None:
        """Wait for a release of one of ``slots`` (of anything, if none are named), in short slices:
        the connection is shared with the heartbeat and the run loop, which must not wait for a
        waiter's whole poll. Releases of other slots do not wake this waiter."""
        wanted = {str(self._slot_ids[s]) for s in slots if s in self._slot_ids}

        def listen(conn: psycopg.Connection[Any]) -> None:
            if not self._listening:
                conn.execute(f"LISTEN {CHANNEL}")
                self._listening = True

        def slice_(conn: psycopg.Connection[Any]) -> bool:
            left = min(NOTIFY_SLICE, max(0.0, end - SYSTEM_CLOCK.monotonic()))
            for notice in conn.notifies(timeout=left, stop_after=1):
                freed = set(notice.payload.split(",")) if notice.payload else set()
                if not wanted or not freed or wanted & freed:
                    return True
            return False

        self.call(listen)
        end = SYSTEM_CLOCK.monotonic() + (min(timeout, 0.01) if self.clock.driven else timeout)
        while not self.call(slice_) and SYSTEM_CLOCK.monotonic() < end:
            SYSTEM_CLOCK.nap(0.001)  # let another thread have the connection

    def status(self) -> ShareStatus:
        def run(conn: psycopg.Connection[Any]) -> ShareStatus:
            state, now = self._state(conn)
            return state.status(now)

        return self.call(run)

    def force_release(self, device: str, holder: str | None, user: str) -> list[LeaseView]:
        def run(conn: psycopg.Connection[Any]) -> list[LeaseView]:
            state, now = self._state(conn)
            chosen = state.release_candidates(device, holder, user, now)
            freed = []
            for view in chosen:
                params = {"slot_id": self._slot_ids[view.slot], "token": view.token, "now": self.now_param()}
                if _one(conn.execute(Q["force_release"], params)):
                    freed.append(view)
                    continue
                owner = conn.execute(Q["lease_owner"], params).fetchone()
                if owner is not None:  # still there: row security kept it
                    whoami = _one(conn.execute("SELECT current_user"))
                    raise NotHolder(
                        f"{device}: the database role {whoami} may not release {view.holder.label}'s lease "
                        f"(it belongs to the role {owner[0]}); ask its holder, or an admin of the share"
                    )
            if freed:
                conn.execute(Q["notify"], {"slots": ",".join(str(self._slot_ids[v.slot]) for v in freed)})
            return freed

        return self.call(run)

    def set_quarantine(self, device: str, reason: str, run: str) -> None:
        params = {"device": device, "reason": reason, "run": run, "now": self.now_param()}
        self.call(lambda conn: conn.execute(Q["set_quarantine"], params))

    def clear_quarantine(self, device: str) -> bool:
        return bool(self.call(lambda conn: conn.execute(Q["clear_quarantine"], {"device": device}).rowcount))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def grant_records(self) -> list[rules.GrantRecord]:
        return self.call(lambda conn: self._state(conn, grants_for=1e12)[0].records)

    # -- helpers ------------------------------------------------------------------------

    def now_param(self) -> float | None:
        """The caller's time for a driven (test) clock; else None: the server's clock decides."""
        return self.clock.time() if self.clock.driven else None

    def _grant(
        self, status: str, token: Any, granted: Any, expires: Any, slots: Sequence[SlotKey]
    ) -> Grant | None:
        if status == "gone":
            raise LeaseLost(
                (), 0, "the request was dropped: its holder missed its heartbeats or was found dead"
            )
        if status != "granted":
            return None
        return Grant(int(token), tuple(slots), float(granted), float(expires))

    def _own_holders(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(Q["own_holders"], {"holders": ",".join(map(str, sorted(self._holders)))})

    def _load_slots(self, conn: psycopg.Connection[Any]) -> None:
        for slot_id, device, index in conn.execute(Q["slots"]):
            key = SlotKey(device, index)
            self._slot_ids[key] = slot_id
            self._slot_keys[slot_id] = key

    def _ids_of(self, conn: psycopg.Connection[Any], slots: Sequence[SlotKey]) -> list[int]:
        if any(slot not in self._slot_ids for slot in slots):
            self._load_slots(conn)
            missing = [slot for slot in slots if slot not in self._slot_ids]
            if missing:
                state, _ = self._state(conn)
                state.check_slots(missing)  # raises UnknownDevice, naming the devices there are
        return [self._slot_ids[slot] for slot in slots]

    def _slots_of_token(self, conn: psycopg.Connection[Any], token: int) -> tuple[SlotKey, ...]:
        rows = conn.execute("SELECT slot_id FROM testrack.share_leases WHERE token = %s", (token,)).fetchall()
        if any(row[0] not in self._slot_keys for row in rows):
            self._load_slots(conn)
        return tuple(sorted(self._slot_keys[row[0]] for row in rows))

    def _state(
        self, conn: psycopg.Connection[Any], grants_for: float | None = None
    ) -> tuple[ShareState, float]:
        """The whole share at one moment (one repeatable-read transaction), and that moment."""
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            now = float(_one(conn.execute(Q["now"], {"now": self.now_param()})))
            server_start, locked = _row(conn.execute(Q["state_liveness"]))
            locked_ids = set(locked)
            uptime = now - float(server_start)

            def gone(holder: rules.HolderRow) -> bool:
                return uptime > holder.ttl and holder.id % 2147483647 not in locked_ids

            state = ShareState(self.location, process_gone=gone)
            state.devices = {row[0]: DeviceSpec(*row) for row in conn.execute(Q["devices"])}
            self._load_slots(conn)
            state.quarantines = {row[0]: QuarantineView(*row) for row in conn.execute(Q["state_quarantines"])}
            for hid, run, host, pid, label, kind, priority, ttl, started, expires in conn.execute(
                Q["state_holders"]
            ):
                info = HolderInfo(run, host, pid, label, HolderKind(kind), priority)
                state.holders[hid] = rules.HolderRow(hid, info, ttl, started, expires)
            for slot_id, token, holder_id, granted, expires in conn.execute(Q["state_leases"]):
                slot = self._slot_keys[slot_id]
                state.leases[slot] = rules.LeaseRow(slot, token, holder_id, granted, expires)
            for rid, holder_id, priority, slot_ids, since in conn.execute(Q["state_requests"]):
                slots = tuple(sorted(self._slot_keys[s] for s in slot_ids))
                state.waiters[rid] = rules.WaiterRow(rid, holder_id, priority, slots, since)
            if grants_for is not None:
                rows = conn.execute(Q["state_grants"], {"since": now - grants_for, "now": now})
                state.records = [rules.GrantRecord(*row) for row in rows]
        return state, now

    def call(self, operation: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``operation`` on the connection; if the connection broke, reconnect and retry once.
        A database error becomes a ShareError that names the share and the fix."""
        import psycopg

        with self._lock:
            try:
                return operation(self._conn)
            except psycopg.OperationalError as exc:
                if not self._conn.closed and not self._conn.broken:
                    raise self._explain(exc) from None
                self._reconnect(exc)
            except psycopg.Error as exc:
                raise self._explain(exc) from None
            try:
                return operation(self._conn)
            except psycopg.Error as exc:
                raise self._explain(exc) from None

    def _explain(self, exc: BaseException) -> ShareError:
        import psycopg

        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            return ShareError(
                f"the share {self.location}: this database role lacks a privilege ({first_line(exc)}); the "
                "share's admin grants them with roles.sql (see docs/sharing.md, Roles and grants)"
            )
        return ShareUnavailable(f"the share {self.location}: {first_line(exc)}")

    def _reconnect(self, cause: BaseException) -> None:
        """A new connection within reconnect_for seconds, with the holders' locks taken again."""
        real = SYSTEM_CLOCK  # the server comes back in real time, whatever clock the tests drive
        deadline = real.monotonic() + self.reconnect_for
        last: BaseException = cause
        while True:
            try:
                conn = connect(self.url, "the share")
                for holder_id in sorted(self._holders):
                    conn.execute(Q["relock_holder"], {"holder_id": holder_id})
                conn.execute(Q["drop_requests_of"], {"holders": sorted(self._holders)})
                self._own_holders(conn)
                if self._listening:
                    conn.execute(f"LISTEN {CHANNEL}")
            except ShareUnavailable as exc:
                last = exc
                if real.monotonic() >= deadline:
                    raise ShareUnavailable(
                        f"lost the connection to the share {self.location} and could not connect again "
                        f"within {self.reconnect_for:.0f} s ({first_line(last)})"
                    ) from None
                real.nap(0.2)
                continue
            self._conn.close()
            self._conn = conn
            self.reconnections += 1
            return


def _row(cursor: Any) -> Any:
    row = cursor.fetchone()
    if row is None:  # pragma: no cover - the functions always return a row
        raise ShareUnavailable("the share returned no row where one was expected")
    return row


def _one(cursor: Any) -> Any:
    return _row(cursor)[0]
