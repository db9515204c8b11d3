"""A host of a shared run, as a real process, for the queue's fault tests
(``python tests/share_host.py``): it joins run ``--run`` with its devices, and for each device
holds a lease, claims tests, "runs" each for ``--seconds`` and writes its result, until the run
has nothing left. It says what it does on stdout, one JSON object a line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

from testrack.share import DeviceSpec, Holder, HolderInfo, SlotKey
from testrack.share.pgqueue import PostgresQueue
from testrack.share.postgres import PostgresShare
from testrack.share.queue import QueuedTest, RunPlan
from testrack.store import Result

_print = threading.Lock()


def say(**event: object) -> None:
    with _print:
        print(json.dumps(event), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--share", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--devices", required=True)
    parser.add_argument("--tests", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=0.05)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--budget", type=int, default=0)
    parser.add_argument("--ttl", type=float, default=15.0)
    args = parser.parse_args()
    share = PostgresShare(args.share)
    queue = PostgresQueue(share)
    devices = args.devices.split(",")
    share.register_devices([DeviceSpec(d) for d in devices])
    holder = Holder(share, HolderInfo(args.run, args.host, os.getpid(), "host-test"), ttl=args.ttl)
    holder.start_heartbeat(lambda lost: say(event="lost", tokens=[lease.token for lease in lost]))
    tests = tuple(QueuedTest(f"t.py::test_{i:03d}", 1.0) for i in range(args.tests))
    joined = queue.open_run(
        RunPlan(args.run, "load", tests, args.budget, "rack", "pytest"), args.host, holder.id
    )
    queue.add_routes(args.run, args.host, {d: [t.nodeid for t in tests] for d in devices})
    say(event="joined", created=joined.created, store_run=joined.store_run_id)

    def work(device: str) -> None:
        lease = holder.acquire([SlotKey(device)])
        while True:
            claims = queue.claim(args.run, args.host, holder.id, lease.token, device, args.batch)
            if not claims:
                progress = queue.progress(args.run)
                if progress.queued == 0 and progress.claimed == 0:
                    break
                time.sleep(0.1)
                continue
            for claim in claims:
                queue.mark_started(holder.id, lease.token, [claim])
                say(event="started", nodeid=claim.nodeid, device=device)
                began = time.time()
                time.sleep(args.seconds)
                result = Result(claim.nodeid, device, args.host, "passed", args.seconds, began, time.time())
                accepted = queue.complete(args.run, holder.id, lease.token, [(claim, result)])
                say(event="done", nodeid=claim.nodeid, accepted=bool(accepted))
        holder.release(lease)

    threads = [threading.Thread(target=work, args=(d,)) for d in devices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    finished = queue.leave(args.run, args.host)
    say(event="left", finished=finished, reconnections=share.reconnections)
    holder.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
