#!/usr/bin/env python3
"""testrack against pytest-xdist on the shared benchmark workloads, in one run, as ratios.

Usage: python bench/compare.py [--workloads W0,W1,W2,W3,W4,W5,W6] [--runs 3] [--out table.md]
                                [--timeline docs/w2-timeline.png]

Generates the workloads with ../shared/bench/gen.py (under .peerbench/), writes a rack file
for each device workload (one device per address of its devices.json, with the workload's
PEERBENCH_DEVICE in the device's env), then times each runner with ../shared/bench/pb.py:
the classic xdist recipe and testrack, label by label, in the same run. The Python running
this script must have testrack and pytest-xdist installed. Prints and writes a markdown table
of median wall times, ideal times and ratios; exits 1 when a target ratio is missed.

W2's testrack rows: "first run" keeps no history (--rack-store memory), "with history" reads
and writes a store that the warm-up run has already filled. Its ideal is the lower bound
max(total work / devices, longest test) plus "start", the wall time testrack needs for one
trivial test on one local slot (W0), i.e. the cost of starting pytest and a worker.

W6 (20,000 tests of 10 ms on 64 slots) is measured against max(sleep bound, CPU floor): the
floor is the CPU time of serial pytest on a copy of W6 without the sleep ("W6F"), divided by
the cores. Every row shows its CPU time per run (user + sys of the whole process tree); W6's
CPU target is 1.3 x the floor's CPU, and local:4 against local:64 shows what many slots cost.

A test that sleeps costs the CPU more than one that does not, in any runner: after 10 ms
away the caches are cold (and on a VM the CPU may have been given to someone else), and the
test's work takes longer. So the floor is also shown with what the sleep costs plain pytest:
serial pytest on four of W6's files with the sleep ("W6S") and without it ("W6SF"), their CPU
difference per test, times W6's tests, added to the floor ("with the sleep" in the table).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
ROOT = HERE.parent
SHARED = Path(os.environ.get("PEERBENCH_SHARED", ROOT.parent / "shared" / "bench"))

from install import warn_if_editable  # noqa: E402

#: (workload, label, runner, extra pytest args, ideal expression, target ratio to the ideal)
PLAN: list[tuple[str, str, str, str, str, float | None]] = [
    ("W0", "serial", "plain", "", "serial", None),
    ("W0", "start", "testrack", "--rack local:1", "serial", None),
    ("W1", "each-n3", "xdist", "-n 3 --dist each", "6", None),
    ("W1", "each", "testrack", "--rack rack.toml --rack-mode=each", "6", 1.05),
    ("W1", "load-n3", "xdist", "-n 3 --dist load", "2", None),
    ("W1", "load", "testrack", "--rack rack.toml --rack-mode=load", "2", 1.15),
    ("W2", "load-n4", "xdist", "-n 4 --dist load", "bound", None),
    ("W2", "worksteal-n4", "xdist", "-n 4 --dist worksteal", "bound", None),
    ("W2", "loadfile-n4", "xdist", "-n 4 --dist loadfile", "bound", None),
    ("W2", "first-run", "testrack", "--rack rack.toml --rack-store memory", "bound + start", None),
    (
        "W2",
        "with-history",
        "testrack",
        "--rack rack.toml --rack-store .testrack/bench.sqlite",
        "bound + start",
        1.05,
    ),
    (
        "W2",
        "random-order",
        "testrack",
        "--rack rack.toml --rack-store .testrack/bench.sqlite --rack-random --rack-seed 1",
        "bound + start",
        None,
    ),
    ("W3", "serial", "plain", "", "serial", None),
    ("W3", "n2", "xdist", "-n 2", "serial", None),
    ("W3", "local2", "testrack", "--rack local:2", "serial", 1.0),
    ("W3", "local2-eager", "testrack", "--rack local:2 --rack-collect eager", "serial", None),
    ("W4", "serial", "plain", "", "serial", None),
    ("W4", "n2", "xdist", "-n 2", "ref('n2')", None),
    ("W4", "local2", "testrack", "--rack local:2", "ref('n2')", 0.6),
    ("W4", "local2-eager", "testrack", "--rack local:2 --rack-collect eager", "ref('n2')", None),
    ("W5", "each-n3-dev1", "xdist", "-n 3 --dist each", "", None),
    ("W5", "each-dev1", "testrack", "--rack rack.toml --rack-mode=each", "", None),
    ("W6F", "serial", "plain", "", "", None),
    ("W6S", "serial", "plain", "", "", None),
    ("W6SF", "serial", "plain", "", "", None),
    ("W6", "n64", "xdist", "-n 64", "max(sleep_bound, floor)", None),
    ("W6", "local64", "testrack", "--rack local:64 --rack-store memory", "max(sleep_bound, floor)", 1.3),
    ("W6", "local4", "testrack", "--rack local:4 --rack-store memory", "max(sleep_bound, floor)", None),
]

#: W6's CPU target: a run's CPU time against the floor's (serial pytest on W6 without the sleep).
W6_CPU_TARGET = 1.3
#: W1's start-up target (issue 13): at most this much over the device time plus plain pytest's
#: own wall time for one trivial test (W0), in the same run.
W1_START_MARGIN = 0.2


def write_racks(workloads: Path) -> None:
    """A rack.toml beside each devices.json: the classic list of addresses, made devices."""
    sys.path.insert(0, str(ROOT / "src"))
    from testrack.rack import Device, dump_rack

    for devices_json in workloads.glob("W*/devices.json"):
        addresses = json.loads(devices_json.read_text())
        devices = [
            Device(f"dev-{i + 1}", "sim", a, env={"PEERBENCH_DEVICE": a}) for i, a in enumerate(addresses)
        ]
        devices_json.with_name("rack.toml").write_text(dump_rack(devices))


def write_sleepless(workloads: Path) -> None:
    """W6F: W6's files with the sleep removed, whose serial CPU time is W6's CPU floor."""
    source, target = workloads / "W6", workloads / "W6F"
    if not source.is_dir():
        return
    target.mkdir(exist_ok=True)
    for path in source.glob("*.py"):
        (target / path.name).write_text(path.read_text().replace("time.sleep(0.01)", "pass"))
    meta = json.loads((source / "meta.json").read_text())
    (target / "meta.json").write_text(json.dumps(dict(meta, name="W6F", desc="W6 without the sleep")))


#: The sample of W6 that shows what the sleep costs plain pytest: its first files.
SAMPLE_FILES = 4


def write_sample(workloads: Path) -> None:
    """W6S and W6SF: W6's first files with and without the sleep, for plain pytest's sleep cost."""
    for name, source in (("W6S", workloads / "W6"), ("W6SF", workloads / "W6F")):
        if not source.is_dir():
            continue
        target = workloads / name
        target.mkdir(exist_ok=True)
        every = sorted(source.glob("test_*.py"))
        files = every[:SAMPLE_FILES]
        for path in files:
            (target / path.name).write_text(path.read_text())
        tests = json.loads((source / "meta.json").read_text())["tests"] // len(every) * len(files)
        desc = f"{len(files)} files of W6 {'with' if name == 'W6S' else 'without'} the sleep"
        (target / "meta.json").write_text(json.dumps({"name": name, "desc": desc, "tests": tests}))


def sleep_cost(results: Path, workloads: Path) -> float | None:
    """CPU seconds the sleep adds to one test under serial plain pytest (W6S against W6SF)."""
    runs = [results / w / "plain-serial" / "result.json" for w in ("W6S", "W6SF")]
    if not all(path.exists() for path in runs):
        return None
    with_sleep, without = (cpu_per_run(json.loads(path.read_text())) for path in runs)
    tests = json.loads((workloads / "W6S" / "meta.json").read_text()).get("tests")
    if with_sleep is None or without is None or not tests:
        return None
    return max(0.0, with_sleep - without) / tests


def sleeping_floor(results: Path, workloads: Path, floor_cpu: float | None) -> tuple[float, float] | None:
    """What the sleep costs plain pytest per test, and W6's floor with it (CPU seconds)."""
    per_test = sleep_cost(results, workloads)
    if floor_cpu is None or per_test is None:
        return None
    tests = json.loads((workloads / "W6" / "meta.json").read_text())["tests"]
    return per_test, floor_cpu + per_test * tests


def sleep_rows(
    results: Path, workloads: Path, floor_cpu: float, per_test: float, sleeping_cpu: float
) -> list[str]:
    """The lines under the table: W6's floor with the sleep, and each W6 row's wall time against
    max(sleep bound, that floor over the cores)."""
    meta = json.loads((workloads / "W6" / "meta.json").read_text())
    cores = os.cpu_count() or 1
    rows = [
        f"W6's floor with the sleep: plain pytest spends {per_test * 1e3:.2f} ms more CPU on a "
        f"test that sleeps 10 ms than on one that does not (W6S against W6SF), so serial pytest "
        f"would spend {sleeping_cpu:.1f} s of CPU on W6, {sleeping_cpu / floor_cpu:.2f}x the "
        f"floor: {sleeping_cpu / cores:.2f} s on {cores} cores."
    ]
    bound = max(float(meta["sleep_bound"]), sleeping_cpu / cores)
    for name, label, runner, *_ in PLAN:
        path = results / "W6" / f"{runner}-{label}" / "result.json"
        if name == "W6" and path.exists():
            wall = json.loads(path.read_text())["median_s"]
            rows.append(f"- W6 {runner} {label}: {wall:.2f} s, {wall / bound:.2f}x that bound.")
    return rows


def start_rows(results: Path, missed: list[str]) -> list[str]:
    """W1's start-up target, under the table: each testrack row against the device time plus
    plain pytest's wall time for one trivial test (W0) plus the margin."""
    plain_file = results / "W0" / "plain-serial" / "result.json"
    if not plain_file.exists():
        return []
    plain = json.loads(plain_file.read_text())["median_s"]
    rows = [
        f"W1's start-up target: the device time plus plain pytest's one trivial test ({plain:.2f} s) "
        f"plus {W1_START_MARGIN} s."
    ]
    for name, label, runner, _extra, ideal, _target in PLAN:
        path = results / "W1" / f"{runner}-{label}" / "result.json"
        if name != "W1" or runner != "testrack" or not path.exists():
            continue
        wall, bound = json.loads(path.read_text())["median_s"], float(ideal) + plain + W1_START_MARGIN
        ok = "met" if wall <= bound else "MISSED"
        if ok == "MISSED":
            missed.append(f"W1 {label} start-up")
        rows.append(f"- W1 testrack {label}: {wall:.2f} s against {bound:.2f} s ({ok}).")
    return rows


def cpu_per_run(data: dict[str, object]) -> float | None:
    """User + sys seconds of one run (the harness measures its whole window, warm-up included)."""
    machine = data.get("machine")
    if not isinstance(machine, dict) or "own_cpu_s" not in machine:
        return None
    return float(machine["own_cpu_s"]) / (int(data["runs"]) + int(data["warmup"]))  # type: ignore[call-overload]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workloads", default="W0,W1,W2,W3,W4,W5,W6", help="comma-separated workload ids")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path(".peerbench"), help="where workloads and results go")
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    parser.add_argument("--timeline", type=Path, help="draw W2's per-device timelines into this PNG")
    args = parser.parse_args(argv)
    if not (SHARED / "pb.py").is_file():
        print(
            f"error: no benchmark harness at {SHARED}; set PEERBENCH_SHARED to ../shared/bench",
            file=sys.stderr,
        )
        return 2
    wanted = set(args.workloads.split(","))
    warn_if_editable(ROOT, "bench,postgresql")
    workloads = (args.dir / "workloads").resolve()
    results = (args.dir / "results-compare").resolve()
    subprocess.run(
        [sys.executable, str(SHARED / "gen.py"), str(workloads)], check=True, stdout=subprocess.DEVNULL
    )
    write_racks(workloads)
    write_sleepless(workloads)
    write_sample(workloads)
    for workload in workloads.glob("W*"):  # the "with history" rows' store (never made silently)
        (workload / ".testrack").mkdir(exist_ok=True)
    if "W6" in wanted:
        wanted.update(("W6F", "W6S", "W6SF"))
    env = dict(
        os.environ,
        PEERBENCH_WORKLOADS=str(workloads),
        PEERBENCH_RESULTS=str(results),
        PEERBENCH_PY=sys.executable,
    )
    env.setdefault("PEERBENCH_IDLE_WAIT", "60")
    subprocess.run(
        [
            sys.executable,
            str(SHARED / "pb.py"),
            "env",
            f"{sys.executable} -m pip list 2>/dev/null | grep -iE '^(testrack|pytest) '",
        ],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    pytest = f"{shlex.quote(sys.executable)} -m pytest -q -p no:cacheprovider"
    if importlib.util.find_spec("pytest_randomly") is not None:
        # pytest-randomly shuffles every runner (testrack then follows its seed and gives up the
        # history-based order): the rows compare schedulers, so keep it out of all of them.
        pytest += " -p no:randomly"
    if importlib.util.find_spec("pytest_rerunfailures") is not None:
        # pytest-rerunfailures (installed for tests/test_plugins.py) starts a server thread in
        # every runner's controller and opens a connection from every worker; no workload uses
        # it, and a CI job that does not would not install it: keep it out of all of them.
        pytest += " -p no:rerunfailures"
    for workload, label, runner, extra, ideal, _target in PLAN:
        if workload not in wanted:
            continue
        command = f"{pytest} {extra}".strip()
        if workload == "W5":
            command = f"PEERBENCH_CRASH_ON=1 {command}"
        options = ["--runs", str(args.runs), "--warmup", "1"]
        if ideal:
            options += ["--ideal", ideal]
        if workload == "W5":
            options += ["--ignore-failure"]
        pb_run = [sys.executable, str(SHARED / "pb.py"), "run", workload, f"{runner}-{label}", *options]
        if subprocess.run([*pb_run, "--", command], env=env).returncode:
            print(
                f"error: the harness failed on {workload}/{runner}-{label}; its message is above, the "
                f"runner's output in {results / workload / (runner + '-' + label)}",
                file=sys.stderr,
            )
            return 2
    if args.timeline and "W2" in wanted:
        from timeline import plot

        labels = [f"{runner}-{label}" for w, label, runner, *_ in PLAN if w == "W2"]
        plot(results, "W2", labels, args.timeline)
        print(f"timeline: {args.timeline}")
    table, missed = summarize(results, workloads, wanted)
    print(table)
    if args.out:
        args.out.write_text(table)
    return 1 if missed else 0


def summarize(results: Path, workloads: Path, wanted: set[str]) -> tuple[str, list[str]]:
    rows = [
        "| workload | runner | command | median s | CPU s | ideal s | ratio to ideal | target "
        "| result (last run) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    missed = []
    start_file = results / "W0" / "testrack-start" / "result.json"
    start = json.loads(start_file.read_text())["median_s"] if start_file.exists() else None
    floor_file = results / "W6F" / "plain-serial" / "result.json"
    floor_cpu = cpu_per_run(json.loads(floor_file.read_text())) if floor_file.exists() else None
    extra: dict[str, object] = {"start": start} if start is not None else {}
    if floor_cpu is not None:
        extra["floor"] = floor_cpu / (os.cpu_count() or 1)
    sleeping = sleeping_floor(results, workloads, floor_cpu)
    sleeping_cpu = sleeping[1] if sleeping else None
    rows_after = []
    if sleeping and floor_cpu and "W6" in wanted:
        rows_after = sleep_rows(results, workloads, floor_cpu, *sleeping)
    if "W1" in wanted:
        rows_after += start_rows(results, missed)
    for workload in sorted(wanted):
        medians: dict[str, float] = {}
        found = []
        for w, label, runner, _extra, ideal, target in PLAN:
            if w != workload:
                continue
            path = results / workload / f"{runner}-{label}" / "result.json"
            if not path.exists():
                continue
            data = json.loads(path.read_text())
            medians[label] = data["median_s"]
            found.append((label, runner, data, ideal, target))
        meta = json.loads((workloads / workload / "meta.json").read_text())
        for label, runner, data, ideal, target in found:
            value = _ideal(ideal, dict(meta, **extra), medians)
            ratio = data["median_s"] / value if value else None
            ok = "" if target is None or ratio is None else ("met" if ratio <= target else "MISSED")
            if ok == "MISSED":
                missed.append(f"{workload} {label}")
            cpu = cpu_per_run(data)
            shown_cpu = "" if cpu is None else f"{cpu:.1f}"
            if workload == "W6" and runner == "testrack" and cpu is not None and floor_cpu:
                cpu_ok = cpu <= W6_CPU_TARGET * floor_cpu
                shown_cpu += f" ({cpu / floor_cpu:.2f}x floor, {'met' if cpu_ok else 'MISSED'}"
                if sleeping_cpu:
                    shown_cpu += f"; {cpu / sleeping_cpu:.2f}x with the sleep"
                shown_cpu += ")"
                if not cpu_ok:
                    missed.append(f"{workload} {label} CPU")
            summary = data["per_run"][-1]["summary"].replace("|", "/")
            command = data["command"].split(" -p no:cacheprovider")[-1].replace("-p no:randomly", "").strip()
            command = command or "pytest"
            shown_ideal = "" if value is None else f"{value:.2f}"
            shown_ratio = "" if ratio is None else f"{ratio:.2f}"
            shown_target = "" if target is None else f"<= {target} ({ok})"
            rows.append(
                f"| {workload} | {runner} | `{command}` | {data['median_s']:.2f} | {shown_cpu} "
                f"| {shown_ideal} | {shown_ratio} | {shown_target} | {summary} |"
            )
    return "\n".join(rows + (["", *rows_after] if rows_after else [])) + "\n", missed


def _ideal(expr: str, meta: dict[str, object], medians: dict[str, float]) -> float | None:
    if not expr:
        return None
    names = dict(meta, ref=lambda label: medians[label], min=min, max=max, cores=os.cpu_count())
    if "serial" in medians:
        names["serial"] = medians["serial"]
    try:
        return float(eval(expr, {"__builtins__": {}}, names))
    except (KeyError, NameError, TypeError, ZeroDivisionError):
        return None


if __name__ == "__main__":
    sys.exit(main())
