"""A timeline for debugging the engine: ``TESTRACK_TRACE=FILE`` appends one line per event.

Each line is ``<unix time> <pid> <event>``; controller and workers write to the
same file, so ``sort -n FILE`` shows who waited for whom.
"""

from __future__ import annotations

import os
import time

_PATH = os.environ.get("TESTRACK_TRACE")


def trace(event: str) -> None:
    if _PATH:
        with open(_PATH, "a", encoding="utf-8") as f:
            f.write(f"{time.time():.4f} {os.getpid()} {event}\n")
