"""``testrack status``, ``testrack reserve`` and ``testrack release``: the share, for a person
at the bench.

They are listed in :data:`SHARE_COMMANDS` as plain (name, help, add_arguments, run, epilog)
tuples, which ``testrack.cli`` turns into its commands. Each takes ``--share`` (default as a
run: ``TESTRACK_SHARE``, else the user's SQLite share) and ``--json``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
from collections.abc import Callable
from typing import Any

from testrack import options
from testrack.share import location, text
from testrack.share.backend import ShareBackend
from testrack.share.errors import ShareError
from testrack.share.holder import Holder
from testrack.share.model import PERSON_PRIORITY, HolderInfo, HolderKind, SlotKey
from testrack.share.processes import this_host

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600}


def parse_duration(value: str) -> float:
    """``90s``, ``30m``, ``2h`` as seconds (the argparse type of ``--for``)."""
    match = _DURATION.match(value)
    if not match or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a duration; give a number with s, m or h, for example --for 30m"
        )
    return float(match[1]) * _UNIT[match[2]]


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--share",
        metavar="URL|PATH",
        help=f"the share: a postgresql:// URL or an SQLite file (default: ${location.ENV}, else "
        f"{text.home_relative(location.resolve(environ={}).spec)})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _open(args: argparse.Namespace) -> ShareBackend:
    from testrack.cli import CliError

    setting = location.resolve(args.share)
    if setting.off:
        raise CliError("--share off: there is no share to look at; name one with --share URL|PATH")
    try:
        backend = location.open_share(setting)
    except ShareError as exc:
        raise CliError(str(exc)) from None
    assert backend is not None
    return backend


def _print(args: argparse.Namespace, data: dict[str, Any], lines: list[str]) -> None:
    print(json.dumps(data, indent=2) if args.json else "\n".join(lines))


def _guarded(run: Callable[[argparse.Namespace, ShareBackend], int]) -> Callable[[argparse.Namespace], int]:
    """Open the share, run, close it; a ShareError becomes the one-line CliError."""

    def command(args: argparse.Namespace) -> int:
        from testrack.cli import CliError

        backend = _open(args)
        try:
            return run(args, backend)
        except ShareError as exc:
            raise CliError(str(exc)) from None
        finally:
            backend.close()

    return command


# -- testrack status -----------------------------------------------------------------------


def _run_status(args: argparse.Namespace, backend: ShareBackend) -> int:
    status = backend.status()
    _print(args, text.status_data(status), text.format_status(status))
    return 0


# -- testrack reserve ----------------------------------------------------------------------


def _add_reserve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("device", metavar="DEVICE", help="the device's name, as testrack status shows it")
    parser.add_argument(
        "--for", dest="duration", type=parse_duration, default=3600.0, metavar="DURATION",
        help="how long: 90s, 30m, 2h (default: 1h)",
    )  # fmt: skip
    parser.add_argument(
        "--wait", type=options.seconds(60, zero=True), default=None, metavar="SECONDS",
        help="give up after waiting this long for the device (default: wait until it is free)",
    )  # fmt: skip
    _add_common(parser)


def _run_reserve(args: argparse.Namespace, backend: ShareBackend) -> int:
    import sys

    user = getpass.getuser()
    device = {d.name: d for d in backend.status().devices}.get(args.device)
    slots = [SlotKey(args.device, i) for i in range(device.capacity if device else 1)]
    info = HolderInfo(f"reserve:{user}", this_host(), os.getpid(), user, HolderKind.PERSON, PERSON_PRIORITY)
    holder = Holder(backend, info, ttl=args.duration)
    lease = holder.acquire(
        slots,
        wait=args.wait,
        on_wait=lambda state: print(text.format_waiting(state), file=sys.stderr),
        wait_option="--wait",
    )
    # No holder.close(): the reservation outlives this command, until --for ends or a release.
    data = {
        "device": args.device,
        "slots": [s.index for s in lease.slots],
        "holder": user,
        "token": lease.token,
        "since": lease.grant.granted,
        "until": lease.grant.expires,
    }
    line = (
        f"reserved {args.device} for {user} until {text.clock_time(lease.grant.expires)} "
        f"({text.duration(args.duration)}); give it back with: testrack release {args.device}"
    )
    _print(args, data, [line])
    return 0


# -- testrack release ----------------------------------------------------------------------


def _add_release(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("device", metavar="DEVICE", help="the device's name, as testrack status shows it")
    parser.add_argument("--force", action="store_true", help="release someone else's lease (needs --holder)")
    parser.add_argument(
        "--holder", metavar="NAME",
        help="with --force: the holder you expect (its name or run, as testrack status shows it)",
    )  # fmt: skip
    _add_common(parser)


def _run_release(args: argparse.Namespace, backend: ShareBackend) -> int:
    from testrack.cli import CliError

    if args.force and not args.holder:
        raise CliError(
            "--force needs --holder NAME: the holder testrack status shows, so that you free what you meant"
        )
    if args.holder and not args.force:
        raise CliError("--holder NAME goes with --force (releasing someone else's lease); add --force")
    freed = backend.force_release(args.device, args.holder, getpass.getuser())
    data = {
        "released": [
            {"device": v.slot.device, "slot": v.slot.index, "holder": v.holder.label, "run": v.holder.run,
             "host": v.holder.host, "since": v.granted}
            for v in freed
        ]
    }  # fmt: skip
    lines = [
        f"released {v.slot}: held by {v.holder.label} ({v.holder.describe()}) "
        f"since {text.clock_time(v.granted)}"
        for v in freed
    ]
    _print(args, data, lines)
    return 0


_RESERVE_EPILOG = (
    "The reservation is a lease of every slot of DEVICE that needs no process to keep it: it ends\n"
    "when --for runs out or with testrack release DEVICE. It waits in the share's queue like any\n"
    f"run, at priority {PERSON_PRIORITY} (runs default to 0), and runs give the device back after their\n"
    "current test."
)

#: (name, help, add_arguments, run, epilog) for testrack.cli.COMMANDS.
SHARE_COMMANDS: tuple[
    tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str], ...
] = (
    ("status", "show every device of the share: holder, run, host, since, who waits, quarantine", _add_common,
     _guarded(_run_status), ""),
    ("reserve", "take a device out of automated use for a while (a lease that expires)", _add_reserve,
     _guarded(_run_reserve), _RESERVE_EPILOG),
    ("release", "give back a device you reserved (or, with --force --holder NAME, someone else's lease)",
     _add_release, _guarded(_run_release), ""),
)  # fmt: skip
