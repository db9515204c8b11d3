"""Is a holder's process still there? (The SQLite share's fast death signal, on one host.)"""

from __future__ import annotations

import os
import socket


def this_host() -> str:
    return socket.gethostname()


def process_start(pid: int) -> str:
    """When ``pid`` started, in clock ticks since boot (Linux), or "" where the OS does not say:
    a pid reused by another program has another start time."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return fields[19]  # field 22 of stat(5): starttime
    except (OSError, IndexError):
        return ""


def process_alive(pid: int, started: str) -> bool:
    """Whether the process ``pid`` that started at ``started`` still runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    if not started:
        return True
    now = process_start(pid)
    if now and now != started:
        return False
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False
