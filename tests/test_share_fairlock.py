"""FairLock: threads get the share's connection in the order they asked, so a busy run loop
cannot starve the heartbeat."""

from __future__ import annotations

import threading
import time

import pytest

from testrack.share.fairlock import FairLock


def test_waiting_threads_are_served_in_arrival_order_even_against_a_busy_thread() -> None:
    """While the busy thread takes and releases the lock back to back, three waiters that queued
    in turn get it in that order, each before the busy thread's next turn but one."""
    lock = FairLock()
    order: list[str] = []
    stop = threading.Event()
    turns = {"busy": 0}

    def busy() -> None:
        while not stop.is_set():
            with lock:
                turns["busy"] += 1

    def waiter(name: str) -> None:
        with lock:
            order.append(f"{name}@{turns['busy']}")

    lock.acquire()
    runner = threading.Thread(target=busy)
    runner.start()
    deadline = time.monotonic() + 10
    while lock._next_ticket < 2 and time.monotonic() < deadline:  # the busy thread has queued
        time.sleep(0.001)
    waiters = []
    for name in ("heartbeat", "check", "release"):
        ticket = lock._next_ticket
        thread = threading.Thread(target=waiter, args=(name,))
        thread.start()
        while lock._next_ticket == ticket and time.monotonic() < deadline:
            time.sleep(0.001)
        waiters.append(thread)
    lock.release()
    for thread in waiters:
        thread.join(10)
    stop.set()
    runner.join(10)
    names = [entry.split("@")[0] for entry in order]
    turns_seen = [int(entry.split("@")[1]) for entry in order]
    assert names == ["heartbeat", "check", "release"]
    assert turns_seen[-1] <= 3, order  # the busy thread got at most one turn in between each


def test_it_is_reentrant_and_refuses_a_release_by_another_thread() -> None:
    lock = FairLock()
    with lock, lock:
        failure: list[BaseException] = []
        thread = threading.Thread(target=lambda: _release(lock, failure))
        thread.start()
        thread.join()
        assert isinstance(failure[0], RuntimeError)
    acquired = threading.Event()
    threading.Thread(target=lambda: (lock.acquire(), acquired.set(), lock.release())).start()
    assert acquired.wait(5)


def _release(lock: FairLock, failure: list[BaseException]) -> None:
    with pytest.raises(RuntimeError, match="release of a FairLock this thread does not hold") as info:
        lock.release()
    failure.append(info.value)
