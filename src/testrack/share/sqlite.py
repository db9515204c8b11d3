"""The embedded share: one SQLite file per user, for runs on one machine (the default).

``$XDG_STATE_HOME/testrack/share.sqlite``, else ``~/.local/state/testrack/share.sqlite``.
Every operation is one ``BEGIN IMMEDIATE`` transaction that reads the share's rows and lets
:mod:`testrack.share.rules` decide (the tables are small: devices, holders, leases, waiters).
A holder on this host whose process is gone is dead at once; any holder that stops renewing
is dead after its ttl. Waiters poll every 0.1 s (SQLite has no notifications).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from testrack.share import rules, sql, text
from testrack.share.clock import SYSTEM_CLOCK, Clock
from testrack.share.errors import SchemaError, ShareUnavailable
from testrack.share.fairlock import FairLock
from testrack.share.model import (
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
from testrack.share.processes import process_alive, process_start, this_host
from testrack.share.state import ShareState

Q = sql.queries("testrack.share", "sqlite")
MIGRATIONS = sql.migrations("testrack.share", "sqlite")
SCHEMA_VERSION = len(MIGRATIONS)
#: How often a waiter looks again.
POLL_SECONDS = 0.1
#: Grants older than this are forgotten (they only feed the device-time fairness).
KEEP_GRANTS_SECONDS = 24 * 3600.0


def default_path(environ: Mapping[str, str] = os.environ) -> Path:
    """The user's share: ``$XDG_STATE_HOME/testrack/share.sqlite`` or ``~/.local/state/...``."""
    state = environ.get("XDG_STATE_HOME") or str(
        Path(environ.get("HOME") or Path.home()) / ".local" / "state"
    )
    return Path(state) / "testrack" / "share.sqlite"


class SQLiteShare:
    """Implements :class:`~testrack.share.backend.ShareBackend` on one SQLite file."""

    def __init__(self, path: Path, clock: Clock = SYSTEM_CLOCK) -> None:
        self.path = path
        self.clock = clock
        self.location = str(path)
        self.host = this_host()
        self._lock = FairLock()  # the heartbeat gets its turn however busy the run loop is
        self._alive_cache: dict[tuple[int, str], bool] = {}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise ShareUnavailable(
                f"{path}: not a usable testrack share ({exc}); move it away (a new one is made on the "
                "next run), or choose another with --rack-share PATH (or --rack-share off)"
            ) from None
        except OSError as exc:
            raise ShareUnavailable(
                f"cannot use the share {path} ({exc.strerror}); make {path.parent} writable, choose "
                "another with --rack-share PATH, or run without leases with --rack-share off"
            ) from None

    def _migrate(self) -> None:
        with self._transaction():
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise SchemaError(
                    f"{self.path}: written by a newer testrack (share schema v{version}; this one knows up "
                    f"to v{SCHEMA_VERSION}); upgrade testrack, or choose another share with --rack-share"
                )
            for script in MIGRATIONS[version:]:
                for statement in _statements(script):
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- the contract --------------------------------------------------------------------

    def register_devices(self, devices: Sequence[DeviceSpec]) -> list[str]:
        warnings = []
        with self._transaction():
            known = {row[0]: DeviceSpec(*row) for row in self._db.execute(Q["devices"])}
            for device in devices:
                old = known.get(device.name)
                if old is not None and device.address and old.address and old.address != device.address:
                    warnings.append(text.address_warning(self.location, device, old.address))
                self._db.execute(
                    Q["upsert_device"],
                    {"name": device.name, "capacity": device.capacity, "address": device.address},
                )
        return warnings

    def add_holder(self, info: HolderInfo, ttl: float) -> int:
        with self._transaction():
            now = self.clock.time()
            started = process_start(info.pid) if info.host == self.host else ""
            cursor = self._db.execute(
                Q["insert_holder"],
                {
                    "run": info.run, "host": info.host, "pid": info.pid, "pid_start": started,
                    "label": info.label, "kind": info.kind.value, "priority": info.priority,
                    "ttl": ttl, "now": now,
                },
            )  # fmt: skip
            self._db.execute(Q["forget_old_grants"], {"before": now - KEEP_GRANTS_SECONDS})
            self._forget_the_dead(self._state(), now)
            return int(cursor.lastrowid or 0)

    def remove_holder(self, holder_id: int) -> None:
        with self._transaction():
            state = self._state()
            now = self.clock.time()
            for slot, lease in list(state.leases.items()):
                if lease.holder_id == holder_id:
                    self._free(slot, lease, now)
            self._db.execute(Q["delete_requests_of"], {"holder_id": holder_id})
            self._db.execute(Q["delete_holder"], {"holder_id": holder_id})

    def request(self, holder_id: int, slots: Sequence[SlotKey], priority: int) -> tuple[int, Grant | None]:
        with self._transaction():
            state = self._state()
            state.check_slots(slots)
            now = self.clock.time()
            cursor = self._db.execute(
                Q["insert_request"], {"holder_id": holder_id, "priority": priority, "now": now}
            )
            request_id = int(cursor.lastrowid or 0)
            for slot in slots:
                self._db.execute(
                    Q["insert_request_slot"],
                    {"request_id": request_id, "device": slot.device, "slot": slot.index},
                )
            state.waiters[request_id] = rules.WaiterRow(request_id, holder_id, priority, tuple(slots), now)
            return request_id, self._try(state, request_id, now)

    def try_grant(self, request_id: int) -> Grant | None:
        with self._transaction():
            return self._try(self._state(), request_id, self.clock.time())

    def cancel(self, request_id: int) -> None:
        with self._transaction():
            self._db.execute(Q["delete_request"], {"request_id": request_id})

    def renew(self, holder_id: int, tokens: Sequence[int]) -> list[int] | None:
        with self._transaction():
            state = self._state(with_waiters=False)
            now = self.clock.time()
            if not state.alive(holder_id, now):
                return None
            holder = state.holders[holder_id]
            self._db.execute(Q["renew_holder"], {"holder_id": holder_id, "now": now})
            kept = []
            for token in tokens:
                cursor = self._db.execute(
                    Q["renew_lease"],
                    {"holder_id": holder_id, "token": token, "now": now, "expires": now + holder.ttl},
                )
                if cursor.rowcount:
                    kept.append(token)
            return kept

    def release(self, holder_id: int, token: int) -> bool:
        with self._transaction():
            state = self._state(with_waiters=False)
            now = self.clock.time()
            mine = [
                (s, lease)
                for s, lease in state.leases.items()
                if lease.token == token and lease.holder_id == holder_id
            ]
            for slot, lease in mine:
                self._free(slot, lease, now)
            return bool(mine) and all(lease.expires >= now for _, lease in mine)

    def give_back(self, holder_id: int, token: int) -> bool:
        with self._transaction():
            now = self.clock.time()
            state = self._state(with_records_since=now - KEEP_GRANTS_SECONDS)
            return state.give_back(holder_id, token, now)

    def wait_state(self, request_id: int) -> WaitState:
        with self._transaction():
            return self._state().wait_state(request_id, self.clock.time())

    def wait_for_change(self, timeout: float, slots: Sequence[SlotKey] = ()) -> None:
        self.clock.nap(min(timeout, POLL_SECONDS))

    def status(self) -> ShareStatus:
        with self._transaction():
            return self._state().status(self.clock.time())

    def force_release(self, device: str, holder: str | None, user: str) -> list[LeaseView]:
        with self._transaction():
            state = self._state()
            now = self.clock.time()
            chosen = state.release_candidates(device, holder, user, now)
            for view in chosen:
                self._free(view.slot, state.leases[view.slot], now)
            return chosen

    def set_quarantine(self, device: str, reason: str, run: str) -> None:
        with self._transaction():
            self._db.execute(
                Q["set_quarantine"],
                {"device": device, "reason": reason, "run": run, "now": self.clock.time()},
            )

    def clear_quarantine(self, device: str) -> bool:
        with self._transaction():
            return self._db.execute(Q["clear_quarantine"], {"device": device}).rowcount > 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def grant_records(self) -> list[rules.GrantRecord]:
        with self._transaction():
            return self._state(with_records_since=0.0).records

    # -- inside a transaction ----------------------------------------------------------

    def _state(self, with_waiters: bool = True, with_records_since: float | None = None) -> ShareState:
        state = ShareState(self.location, process_gone=self._process_gone)
        db = self._db
        state.devices = {row[0]: DeviceSpec(*row) for row in db.execute(Q["devices"])}
        state.quarantines = {row[0]: QuarantineView(*row) for row in db.execute(Q["quarantines"])}
        for hid, run, host, pid, pid_start, label, kind, priority, ttl, started, expires in db.execute(
            Q["holders"]
        ):
            info = HolderInfo(run, host, pid, label, HolderKind(kind), priority)
            state.holders[hid] = rules.HolderRow(hid, info, ttl, started, expires, pid_start)
        for device, index, token, holder_id, granted, expires in db.execute(Q["leases"]):
            slot = SlotKey(device, index)
            state.leases[slot] = rules.LeaseRow(slot, token, holder_id, granted, expires)
        if with_waiters:
            slots: dict[int, list[SlotKey]] = {}
            heads: dict[int, tuple[int, int, float]] = {}
            for rid, holder_id, priority, since, device, index in db.execute(Q["requests"]):
                heads[rid] = (holder_id, priority, since)
                slots.setdefault(rid, []).append(SlotKey(device, index))
            for rid, (holder_id, priority, since) in heads.items():
                state.waiters[rid] = rules.WaiterRow(rid, holder_id, priority, tuple(slots[rid]), since)
        if with_records_since is not None:
            state.records = [
                rules.GrantRecord(*row)
                for row in db.execute(Q["grants_since"], {"since": with_records_since})
            ]
        return state

    def _forget_the_dead(self, state: ShareState, now: float) -> None:
        """Dead holders' requests, and the holders themselves once none of their leases lives."""
        for holder_id in state.holders:
            if state.alive(holder_id, now):
                continue
            self._db.execute(Q["delete_requests_of"], {"holder_id": holder_id})
            live = [
                lease
                for lease in state.leases.values()
                if lease.holder_id == holder_id and state.live_lease(lease.slot, now)
            ]
            if not live:
                self._db.execute(Q["delete_holder"], {"holder_id": holder_id})

    def _process_gone(self, holder: rules.HolderRow) -> bool:
        """A holder on this host whose process no longer runs (or is another program now)."""
        if holder.info.host != self.host:
            return False
        return not process_alive(holder.info.pid, holder.pid_start)

    def _try(self, state: ShareState, request_id: int, now: float) -> Grant | None:
        if not state.grantable(request_id, now):  # LeaseLost if its holder is dead (cleaned up later)
            return None
        waiter = state.waiters.pop(request_id)
        holder = state.holders[waiter.holder_id]
        for slot in waiter.slots:
            stale = state.leases.get(slot)
            if stale is not None:
                self._free(slot, stale, now)
        cursor = self._db.execute(
            Q["insert_grant"], {"run": holder.info.run, "slots": len(waiter.slots), "now": now}
        )
        token = int(cursor.lastrowid or 0)
        expires = now + holder.ttl
        for slot in waiter.slots:
            self._db.execute(
                Q["insert_lease"],
                {
                    "device": slot.device,
                    "slot": slot.index,
                    "token": token,
                    "holder_id": holder.id,
                    "now": now,
                    "expires": expires,
                },
            )
        self._db.execute(Q["delete_request"], {"request_id": request_id})
        return Grant(token, waiter.slots, now, expires)

    def _free(self, slot: SlotKey, lease: rules.LeaseRow, now: float) -> None:
        self._db.execute(Q["delete_lease"], {"device": slot.device, "slot": slot.index})
        self._db.execute(Q["end_grant"], {"token": lease.token, "released": min(now, lease.expires)})

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT: one whole step, this thread's until it ends."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise ShareUnavailable(
                    f"the share {self.path} is busy or locked ({exc}); try again"
                ) from None
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")


def _statements(script: str) -> Iterator[str]:
    """The statements of a migration file (they hold no ';' inside)."""
    for part in script.split(";"):
        lines = [line for line in part.splitlines() if not line.strip().startswith("--")]
        statement = "\n".join(lines).strip()
        if statement:
            yield statement
