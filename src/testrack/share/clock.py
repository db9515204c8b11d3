"""One indirection for time, so that leases, heartbeats and expiries can be tested with a
clock the test drives (as pytest's ``timing.py`` does for pytest's own durations).

Wall time (:meth:`Clock.time`) is what is stored and compared between processes; monotonic
time (:meth:`Clock.monotonic`) is what a holder measures its own deadlines with, because it
never jumps when somebody sets the system clock.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Where the share library gets every time it uses."""

    @property
    def driven(self) -> bool:
        """True for a test clock: a PostgreSQL share then uses this clock, not the server's."""

    def time(self) -> float:
        """Wall time in seconds since the epoch."""

    def monotonic(self) -> float:
        """Seconds on a clock that only moves forward (for local deadlines)."""

    def sleep(self, seconds: float) -> None: ...

    def nap(self, seconds: float) -> None:
        """Wait a little while other threads or processes act (a poll): real time, even on a
        driven clock, which it does not move."""


class SystemClock:
    """The real clock."""

    driven = False

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def nap(self, seconds: float) -> None:
        self.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


class DrivenClock:
    """A clock that moves only when a test says so: :meth:`advance`.

    ``sleep`` advances it (a test's own pause); ``nap`` (a poll waiting for others) does not.
    """

    driven = True

    def __init__(self, start: float = 1_000_000.0) -> None:
        self._now = start
        self._origin = start
        self._changed = threading.Condition()

    def time(self) -> float:
        with self._changed:
            return self._now

    def monotonic(self) -> float:
        with self._changed:
            return self._now - self._origin

    def advance(self, seconds: float) -> None:
        with self._changed:
            self._now += seconds
            self._changed.notify_all()

    def sleep(self, seconds: float) -> None:
        """Advance by ``seconds`` (the sleeper is the only one waiting for time to pass)."""
        if seconds > 0:
            self.advance(seconds)

    def nap(self, seconds: float) -> None:
        """A short real pause (at most 10 ms); the driven time stays where it is."""
        if seconds > 0:
            time.sleep(min(seconds, 0.01))
