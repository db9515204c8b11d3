"""What testrack tells the user about a test it could not run normally, in one place.

Each function returns the text of one report: it names the device and what
happened, and says what to do about it. Kept apart from the run loop so the
words can be read (and tested) together.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from testrack.rack import Rack
from testrack.scheduling import Requirement, describe_requirements
from testrack.scheduling.requests import Shortfall


def unmatched(requirements: Iterable[Requirement], rack: Rack) -> str:
    return (
        f"no device in the rack can run this test: it needs {describe_requirements(requirements)}, "
        f"and the rack ({rack.source}) has {rack.describe_kinds()}. Add a matching device to the "
        "rack or change the test's @pytest.mark.device marker."
    )


def unsatisfiable(short: Shortfall, rack: Rack) -> str:
    """A multi-device test no set of the rack's devices can serve: which roles fall short, by how much."""
    described = [role.describe() for role in short.roles]
    if len(described) == 1:
        needs = described[0]
    else:
        needs = f"{short.needed} different devices for {', '.join(described[:-1])} and {described[-1]}"
    count = len(short.matching)
    if count == 0:
        has = "none that matches"
    else:
        has = f"only {count} that match{'es' if count == 1 else ''} ({', '.join(short.matching)})"
    return (
        f"no set of devices in the rack can run this test: it needs {needs}, and the rack "
        f"({rack.source}) has {has}; its devices are {rack.describe_kinds()}. Add matching devices "
        "to the rack or change the test's @pytest.mark.devices marker."
    )


def failed_elsewhere(devices: Iterable[str], rack: Rack) -> str:
    return (
        f"--rack-failed: this test failed last time on {', '.join(sorted(devices))}, which this rack "
        f"({rack.source}) cannot run it on; add --rack-failed-anywhere to run it on any matching device"
    )


def crash(slot: str, device: str, how: str, output: str, retries_allowed: bool, timed_out: bool) -> str:
    retry = (
        "it was retried as often as --rack-retry-crashed allows"
        if retries_allowed
        else "it was not retried: a crashing test could take down another device; "
        "--rack-retry-crashed N allows N retries on other devices"
    )
    what = "stacks of the worker's threads" if timed_out else "last output of the worker"
    return (
        f"worker {slot} on device {device} {how} while running this test ({retry}).\n"
        f"{what}:\n{output or '(none)'}"
    )


def import_crash(slot: str, device: str, how: str, output: str) -> str:
    return (
        f"worker {slot} on device {device} {how} while importing this file\n"
        f"last output of the worker:\n{output or '(none)'}"
    )


def no_device_left(devices: Iterable[str], why: Mapping[str, str]) -> str:
    """Why nothing could run a test; each device's own reason is in the summary, said once there."""
    names = sorted(devices)
    return (
        f"no working device left to run this test: it can run on {', '.join(names)}, and "
        f"{_what_became(names, why)} (the reasons are in the testrack summary below)"
    )


def _what_became(names: list[str], why: Mapping[str, str]) -> str:
    """``a is quarantined; b has no worker left``: each device out of the run, and how."""
    quarantined = [n for n in names if why.get(n, "").startswith("quarantined")]
    gone = [n for n in names if n not in quarantined]
    parts = []
    if quarantined:
        parts.append(f"{', '.join(quarantined)} {'is' if len(quarantined) == 1 else 'are'} quarantined")
    if gone:
        parts.append(f"{', '.join(gone)} {'has' if len(gone) == 1 else 'have'} no worker left")
    return "; ".join(parts)


def no_set_left(devices: Iterable[str], why: Mapping[str, str], needed: int) -> str:
    """Why a test on several devices cannot run any more: too few of its devices still work."""
    names = sorted(devices)
    out = _what_became([n for n in names if n in why], why)
    working = [n for n in names if n not in why]
    return (
        f"no set of working devices left for this test: it needs {needed} at once among "
        f"{', '.join(names)}; {out or 'some are out of the run'}, so only "
        f"{', '.join(working) or 'none'} can take part (the reasons are in the testrack summary below)"
    )


def trim_stacks(dump: str) -> str:
    """A faulthandler dump, each thread's stack cut where pytest's and pluggy's frames begin."""
    out: list[str] = []
    skipping = False
    for line in dump.splitlines():
        if not line.startswith("  File "):
            skipping = False
            out.append(line)
        elif not skipping and ("/_pytest/" in line or "/pluggy/" in line):
            skipping = True
            out.append("  ... (pytest's own frames)")
        elif not skipping:
            out.append(line)
    return "\n".join(out)


def plugin_timeout(output: str) -> str | None:
    """pytest-timeout's thread method prints the stacks between two ``+++ Timeout +++`` lines
    before it ends the process: that part of a dead worker's output, if it is there."""
    lines = output.splitlines()
    marks = [i for i, line in enumerate(lines) if line.startswith("+") and " Timeout " in line]
    if not marks:
        return None
    return "\n".join(lines[marks[0] : marks[-1] + 1])
