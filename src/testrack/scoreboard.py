"""A few bytes each worker keeps up to date in memory the controller can read: what runs now.

Reports travel in batches, so when a worker dies the controller may not have the
reports of its last few tests. Before each test the worker writes here which test
it starts (its place in the worker's sequence and its id) and when; after each test
it counts it finished. From that the controller knows, without one message per test:

- which test was running when a worker died (the one to report), and which ones had
  finished but whose reports died with it (to run again);
- when the test now running started, to enforce its time limit to the millisecond;
- what each slot is doing, for the live view.

The controller writes one field the other way: until when the worker may start a test
(a lease's expiry on a shared rack), so a worker frozen and woken past it asks first.

The memory is a shared mapping of an anonymous file (``memfd``), inherited by forked
workers and passed by descriptor to spawned ones. Writes are a seqlock: the worker bumps
``started`` last, the reader retries when it changed under it.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import struct
import tempfile
import time

SIZE = 1024
_HEAD = struct.Struct("<QQddI")  # started, finished, started_at, valid_until, id length
_ID_MAX = SIZE - _HEAD.size


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What a worker was doing when the board was read."""

    started: int
    """Tests this worker process has started (the running one included)."""
    finished: int
    """Tests whose protocol (setup, call, teardown) has ended."""
    started_at: float
    """``time.monotonic()`` when the last started test started."""
    nodeid: str
    """The last started test."""

    @property
    def running(self) -> bool:
        return self.started > self.finished


class Scoreboard:
    """One worker's board; the controller makes it, the worker opens it by descriptor."""

    def __init__(self, fd: int | None = None) -> None:
        if fd is None:
            fd = _anonymous_file()
            os.ftruncate(fd, SIZE)
        self.fd = fd
        self._map = mmap.mmap(fd, SIZE)

    # -------------------------------------------------------------- the worker's side

    def start(self, nodeid: str) -> None:
        started, finished, _, until, _ = _HEAD.unpack_from(self._map)
        raw = nodeid.encode("utf-8", "replace")[:_ID_MAX]
        self._map[_HEAD.size : _HEAD.size + len(raw)] = raw
        _HEAD.pack_into(self._map, 0, started, finished, time.monotonic(), until, len(raw))
        struct.pack_into("<Q", self._map, 0, started + 1)  # published last

    def finish(self) -> None:
        (finished,) = struct.unpack_from("<Q", self._map, 8)
        struct.pack_into("<Q", self._map, 8, finished + 1)

    def may_start(self) -> bool:
        """False when the controller set a deadline for starting tests and it has passed."""
        until: float = struct.unpack_from("<d", self._map, 24)[0]
        return until == 0.0 or time.monotonic() < until

    # -------------------------------------------------------------- the controller's side

    def read(self) -> Snapshot:
        while True:
            started, finished, started_at, _, length = _HEAD.unpack_from(self._map)
            raw = bytes(self._map[_HEAD.size : _HEAD.size + min(length, _ID_MAX)])
            (again,) = struct.unpack_from("<Q", self._map, 0)
            if again == started:
                return Snapshot(started, finished, started_at, raw.decode("utf-8", "replace"))

    def allow_until(self, deadline: float) -> None:
        """Let the worker start tests until ``deadline`` (monotonic; 0: no limit)."""
        struct.pack_into("<d", self._map, 24, deadline)

    def close(self) -> None:
        self._map.close()
        os.close(self.fd)


def _anonymous_file() -> int:
    if hasattr(os, "memfd_create"):
        return os.memfd_create("testrack-scoreboard")
    with tempfile.TemporaryFile() as f:  # pragma: no cover - systems without memfd
        return os.dup(f.fileno())
