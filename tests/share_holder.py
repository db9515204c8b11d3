"""A real holder process for the share's fault tests (run as ``python tests/share_holder.py``).

``hold``: take the slots, say so on stdout, heartbeat, and "use the device" every 20 ms (a line
in its own log, stamped *before* it asks whether its lease is still valid) until it finds the
lease gone; then say so and exit. ``cycle``: take a random slot, use it (a start and an end line
in its own log), give it back, N times.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

from testrack.share import Holder, HolderInfo, LeaseLost, SlotKey
from testrack.share.postgres import PostgresShare
from testrack.share.processes import this_host
from testrack.share.sqlite import SQLiteShare


def say(**event: object) -> None:
    print(json.dumps(event), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["hold", "cycle"])
    parser.add_argument("--share", required=True)
    parser.add_argument("--slots", required=True, help="device:index,...")
    parser.add_argument("--ttl", type=float, default=15.0)
    parser.add_argument("--log", required=True)
    parser.add_argument("--run", default=f"run-{os.getpid()}")
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--hold", type=float, default=0.005)
    args = parser.parse_args()
    slots = [SlotKey(d, int(i)) for d, i in (s.rsplit(":", 1) for s in args.slots.split(","))]
    backend = (
        PostgresShare(args.share) if args.share.startswith("postgresql://") else SQLiteShare(Path(args.share))
    )
    holder = Holder(backend, HolderInfo(args.run, this_host(), os.getpid(), "fault-test"), ttl=args.ttl)
    lost: list[object] = []
    holder.start_heartbeat(lambda leases: lost.extend(leases))
    with open(args.log, "a", buffering=1) as log:
        if args.mode == "hold":
            lease = holder.acquire(slots)
            say(event="granted", token=lease.token, pid=os.getpid(), at=time.monotonic())
            while True:
                stamp = time.monotonic()
                if lease.valid_at(stamp):  # the worker's question before each test
                    log.write(f"use {lease.token} {stamp:.6f}\n")
                    time.sleep(0.02)
                    continue
                try:
                    holder.check(lease)
                except LeaseLost as exc:
                    say(event="lost", at=time.monotonic(), why=str(exc))
                    return 0
        for _ in range(args.cycles):
            slot = random.choice(slots)
            lease = holder.acquire([slot])
            log.write(f"start {slot.device}:{slot.index} {lease.token} {time.monotonic():.6f}\n")
            time.sleep(args.hold)
            log.write(f"end {slot.device}:{slot.index} {lease.token} {time.monotonic():.6f}\n")
            holder.release(lease)
        holder.close()
        say(event="done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
