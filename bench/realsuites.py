#!/usr/bin/env python3
"""Real projects' test suites: does ``--rack local:2`` give the same outcome as plain pytest?

For each named suite (default: attrs click werkzeug) this script

1. prepares it once with its recipe (``RECIPES/NAME.sh DIR VENV``, see the recipes' README):
   ``WORKDIR/NAME/`` gets the unpacked sdist, ``WORKDIR/NAME-venv/`` the venv, and
   ``WORKDIR/NAME.prepared.json`` records the recipe's two printed lines (source dir and
   pytest command).  A suite with that marker is reused as it is;
2. installs this testrack checkout into the suite's venv (``pip install -e REPO``);
3. runs the suite's command from its source dir twice, plainly and with
   ``--rack local:2`` (plus ``--testrack-args``), each with ``--junitxml``;
4. compares the two runs: exit code, counts per outcome and the exact (classname, name) ids
   per outcome from the junit XML files, and the outcome counts of pytest's final summary line.

Outcomes from junit XML: each ``<testcase>`` counts once per ``<failure>`` (failed),
``<error>`` (error), ``<skipped type="pytest.xfail">`` (xfailed), ``<skipped
message="xfail-marked test passes unexpectedly">`` (xpassed), other ``<skipped>`` (skipped), or
as passed if it has none of these.  A (classname, name) appearing several times counts each
time.  Junit cannot tell a non-strict XPASS from a pass, nor a pass followed by a teardown error
from a setup error; that is why the final summary line ("1 failed, 1376 passed, ... in 8.4s")
is compared too.  ``warnings`` are shown but not compared.

The plain run is made after testrack is installed, so testrack is loaded but inactive there:
a plugin that disturbs runs without ``--rack`` shows up as a broken plain run (exit 2) or as a
note that the plain outcome differs from the recipes' README.

Before each run ``.hypothesis`` and ``.pytest_cache`` are removed from the source dir, so that
no run replays examples saved by an earlier one.

Exit status: 0 all compared suites identical (with --plain-only: all plain runs completed),
1 a suite differs (including a testrack run that crashed), 2 a suite could not be prepared,
installed or run plainly (takes precedence).

Usage::

    python3 bench/realsuites.py                      # all suites, cache in ./.realsuites
    python3 bench/realsuites.py click --workdir /work/realsuites --json /tmp/rs.json
    python3 bench/realsuites.py --plain-only         # no testrack install, plain runs only
    python3 bench/realsuites.py attrs --testrack-args="--rack-mode load"

Standard library only; Python 3.10+.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SUITES = ("attrs", "click", "werkzeug")
DEFAULT_RECIPES = Path(os.environ.get("TESTRACK_REALSUITES_RECIPES", "/work/shared/bench/realsuites"))
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
SHORT = {
    "passed": "p",
    "failed": "f",
    "error": "E",
    "skipped": "s",
    "xfailed": "xf",
    "xpassed": "xp",
}
# Compared between the two runs' final summary lines; "deselected" and "warnings" are only
# shown (pytest-xdist, for one, deselects in its workers and so never reports "deselected").
SUMMARY_KEYS = OUTCOMES
SUMMARY_NOTES = ("deselected", "warnings")
# Plain outcome measured on this project's 2-core machine (recipes' README); only a hint.
BASELINE = {
    "attrs": {"passed": 1376, "failed": 1, "skipped": 8, "xfailed": 1},
    "click": {"passed": 2434, "skipped": 24, "xfailed": 1},
    "werkzeug": {"passed": 977, "skipped": 4},
    # this project's own recipes (bench/recipes, --recipes bench/recipes)
    "more-itertools": {"passed": 765},
    "networkx": {"passed": 6766, "skipped": 81, "xfailed": 1},
}
PYTEST_EXIT = {
    0: "ok",
    1: "tests failed",
    2: "interrupted",
    3: "internal error",
    4: "usage error",
    5: "no tests collected",
}
PER_RUN_STATE = (".hypothesis", ".pytest_cache")
NOISE = re.compile(r"^WARNING: Location '.*' is ignored")


class SuiteError(Exception):
    """An expected failure of one suite (recipe, install, run); the message says what to do."""


# --------------------------------------------------------------------------- small helpers


def tail(text: str, n: int = 25) -> str:
    lines = [ln for ln in text.splitlines() if not NOISE.match(ln)]
    return "\n".join("    | " + ln for ln in lines[-n:]) or "    | (no output)"


def file_tail(path: Path, n: int = 25) -> str:
    try:
        return tail(path.read_text(errors="replace"), n)
    except OSError as exc:
        return f"    | (cannot read {path}: {exc})"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fmt_counts(counts: dict[str, int] | None) -> str:
    if counts is None:
        return "-"
    parts = [f"{counts[k]}{SHORT[k]}" for k in OUTCOMES if counts.get(k)]
    return " ".join(parts) or "0"


def fmt_id(test_id: tuple[str, str]) -> str:
    classname, name = test_id
    return f"{classname}::{name}" if classname else name


def kill_group(proc: subprocess.Popen[Any]) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_logged(cmd: list[str], cwd: Path | None, log: Path, timeout: float) -> tuple[int | None, float]:
    """Run ``cmd`` with stdout+stderr to ``log``; (exit code or None on timeout, wall s)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log, "wb") as out:
        out.write(f"$ (cd {cwd or os.getcwd()} && {shlex.join(cmd)})\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(
                cmd,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            raise SuiteError(f"cannot start {cmd[0]}: {exc}") from None
        try:
            code: int | None = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            code = None
        except KeyboardInterrupt:
            kill_group(proc)
            raise
    return code, time.monotonic() - start


# --------------------------------------------------------------------------- preparation


@dataclasses.dataclass
class Prepared:
    name: str
    src: Path
    venv: Path
    command: list[str]  # absolute pytest path first

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


def prepare(name: str, args: argparse.Namespace) -> Prepared:
    recipe = args.recipes / f"{name}.sh"
    workdir: Path = args.workdir
    target = workdir / name
    venv = workdir / f"{name}-venv"
    marker = workdir / f"{name}.prepared.json"

    if args.reprepare:
        for path in (marker, target, venv):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

    if marker.exists():
        try:
            info = json.loads(marker.read_text())
            src, cmdline = Path(info["src"]), info["command"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SuiteError(f"unreadable marker {marker} ({exc}); rerun with --reprepare") from None
        if info.get("recipe_sha256") != sha256(recipe):
            print(
                f"  note: {recipe} changed since {name} was prepared; --reprepare to prepare it again",
                file=sys.stderr,
            )
        print(f"  {name}: reusing {src}", file=sys.stderr)
    else:
        if target.exists() and any(target.iterdir()):
            raise SuiteError(
                f"{target} is not empty but has no marker {marker.name} (an interrupted "
                f"preparation?); remove it or rerun with --reprepare"
            )
        target.mkdir(parents=True, exist_ok=True)
        log = workdir / f"{name}.prepare.log"
        print(f"  {name}: preparing with {recipe} (log {log}) ...", file=sys.stderr)
        start = time.monotonic()
        try:
            proc = subprocess.run(
                ["bash", str(recipe), str(target), str(venv)],
                capture_output=True,
                text=True,
                timeout=args.prepare_timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise SuiteError(f"recipe {recipe} did not finish in {args.prepare_timeout:.0f} s") from None
        log.write_text(f"# stdout\n{proc.stdout}\n# stderr\n{proc.stderr}")
        if proc.returncode != 0:
            raise SuiteError(
                f"recipe {recipe} failed (exit {proc.returncode}); its stderr ends with:\n"
                f"{tail(proc.stderr)}\n  fix the cause, then rerun with --reprepare"
            )
        lines = proc.stdout.strip().splitlines()
        if len(lines) != 2:
            raise SuiteError(
                f"recipe {recipe} printed {len(lines)} lines instead of 2 (src dir, command):\n"
                f"{tail(proc.stdout)}"
            )
        src, cmdline = Path(lines[0].strip()), lines[1].strip()
        marker.write_text(
            json.dumps(
                {
                    "suite": name,
                    "recipe": str(recipe),
                    "recipe_sha256": sha256(recipe),
                    "src": str(src),
                    "command": cmdline,
                    "venv": str(venv.resolve()),
                    "prepared_at": datetime.datetime.now().isoformat(timespec="seconds"),
                    "prepare_seconds": round(time.monotonic() - start, 1),
                },
                indent=2,
            )
            + "\n"
        )
        print(f"  {name}: prepared in {time.monotonic() - start:.0f} s: {src}", file=sys.stderr)

    command = shlex.split(cmdline)
    if not command or command[0] != "pytest":
        raise SuiteError(f"{name}: the recipe's command {cmdline!r} does not start with 'pytest'")
    pytest_bin = venv / "bin" / "pytest"
    if not src.is_dir() or not pytest_bin.exists():
        raise SuiteError(
            f"{name}: prepared suite is incomplete ({src} or {pytest_bin} missing); rerun with --reprepare"
        )
    return Prepared(name, src, venv.resolve(), [str(venv.resolve() / "bin" / "pytest"), *command[1:]])


def testrack_installed(p: Prepared) -> str | None:
    proc = subprocess.run(
        [
            str(p.python),
            "-c",
            "import importlib.metadata as m\n"
            "try: print(m.version('testrack'))\nexcept m.PackageNotFoundError: pass",
        ],
        capture_output=True,
        text=True,
    )
    return proc.stdout.strip() or None


def install_testrack(p: Prepared, args: argparse.Namespace) -> None:
    log = args.workdir / f"{p.name}.install.log"
    cmd = [str(p.python), "-m", "pip", "install", "-q", "-e", str(REPO_ROOT)]
    print(f"  {p.name}: pip install -e {REPO_ROOT} ...", file=sys.stderr)
    code, _ = run_logged(cmd, None, log, args.prepare_timeout)
    if code != 0:
        raise SuiteError(
            f"installing testrack into {p.venv} failed "
            f"({'timeout' if code is None else f'exit {code}'}; log {log}):\n{file_tail(log)}"
        )


# --------------------------------------------------------------------------- junit + summary


@dataclasses.dataclass
class Outcomes:
    counts: dict[str, int]
    # (classname, name) -> list of outcomes, one per <testcase> occurrence / child element
    by_id: dict[tuple[str, str], list[str]]

    def ids(self, outcome: str) -> collections.Counter[tuple[str, str]]:
        return collections.Counter(
            {tid: outs.count(outcome) for tid, outs in self.by_id.items() if outcome in outs}
        )


def testcase_outcomes(tc: ET.Element) -> list[str]:
    found = []
    for child in tc:
        if child.tag == "failure":
            found.append("failed")
        elif child.tag == "error":
            found.append("error")
        elif child.tag == "skipped":
            if child.get("type") == "pytest.xfail":
                found.append("xfailed")
            elif child.get("message") == "xfail-marked test passes unexpectedly":
                found.append("xpassed")
            else:
                found.append("skipped")
    return found or ["passed"]


def parse_junit(path: Path) -> Outcomes:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise SuiteError(f"cannot read junit XML {path}: {exc}") from None
    counts = dict.fromkeys(OUTCOMES, 0)
    by_id: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    for tc in root.iter("testcase"):
        test_id = (tc.get("classname", ""), tc.get("name", ""))
        for outcome in testcase_outcomes(tc):
            counts[outcome] += 1
            by_id[test_id].append(outcome)
    for outs in by_id.values():
        outs.sort()
    return Outcomes(counts, dict(by_id))


_SUMMARY_LINE = re.compile(r"^=*\s*(?P<body>(?:\d+ \w+(?:, )?)+|no tests ran) in [\d.]+s\b")
_SUMMARY_ITEM = re.compile(r"(\d+) (\w+)")


def parse_summary(log: Path) -> dict[str, int] | None:
    """Counts from pytest's last summary line ("1 failed, 3 passed, 2 warnings in 1.2s")."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        m = _SUMMARY_LINE.match(line.strip())
        if m:
            counts: dict[str, int] = {}
            for num, word in _SUMMARY_ITEM.findall(m.group("body")):
                key = {"errors": "error", "warning": "warnings"}.get(word, word)
                counts[key] = counts.get(key, 0) + int(num)
            return counts
    return None


# --------------------------------------------------------------------------- runs


@dataclasses.dataclass
class Run:
    side: str
    command: list[str]
    exit_code: int | None
    wall: float
    junit: Path
    log: Path
    outcomes: Outcomes | None = None
    summary: dict[str, int] | None = None
    problem: str | None = None  # why this run is unusable, if it is

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "command": self.command,
            "exit_code": self.exit_code,
            "wall_seconds": round(self.wall, 2),
            "junit": str(self.junit),
            "log": str(self.log),
            "problem": self.problem,
            "summary_line_counts": self.summary,
        }
        if self.outcomes:
            data["counts"] = self.outcomes.counts
            data["ids"] = {
                o: sorted(fmt_id(t) for t in self.outcomes.ids(o).elements())
                for o in OUTCOMES
                if o != "passed"
            }
        return data


def run_side(p: Prepared, side: str, extra: list[str], args: argparse.Namespace) -> Run:
    out = args.workdir / "runs"
    junit, log = out / f"{p.name}.{side}.xml", out / f"{p.name}.{side}.log"
    junit.unlink(missing_ok=True)
    for state in PER_RUN_STATE:
        shutil.rmtree(p.src / state, ignore_errors=True)
    cmd = [*p.command, *extra, f"--junitxml={junit}"]
    print(f"  {p.name}: {side} run ...", file=sys.stderr, flush=True)
    code, wall = run_logged(cmd, p.src, log, args.timeout)
    run = Run(side, cmd, code, wall, junit, log, summary=parse_summary(log))
    if code is None:
        run.problem = f"timed out after {args.timeout:.0f} s"
    elif code not in (0, 1):
        run.problem = f"pytest exit code {code} ({PYTEST_EXIT.get(code, 'unknown')})"
    if junit.exists():
        try:
            run.outcomes = parse_junit(junit)
        except SuiteError as exc:
            run.problem = run.problem or str(exc)
    else:
        run.problem = run.problem or "no junit XML written"
    if run.problem:
        run.problem += f"; log {log}:\n{file_tail(log)}"
    return run


def compare(plain: Run, rack: Run) -> list[str]:
    """Human-readable differences (empty: identical)."""
    if rack.problem:
        return [f"testrack run unusable: {rack.problem}"]
    assert plain.outcomes and rack.outcomes
    diffs = []
    if plain.exit_code != rack.exit_code:
        diffs.append(f"exit code: plain {plain.exit_code}, testrack {rack.exit_code}")
    for o in OUTCOMES:
        a, b = plain.outcomes.counts[o], rack.outcomes.counts[o]
        if a != b:
            diffs.append(f"{o}: plain {a}, testrack {b}")
    if plain.summary is not None:
        if rack.summary is None:
            diffs.append("testrack run has no pytest summary line")
        else:
            for key in SUMMARY_KEYS:
                a, b = plain.summary.get(key, 0), rack.summary.get(key, 0)
                if a != b:
                    diffs.append(f"summary line {key}: plain {a}, testrack {b}")
    return diffs


def notes(plain: Run, rack: Run) -> list[str]:
    """Differences that do not make the outcome differ."""
    if plain.summary is None or rack.summary is None:
        return []
    a, b = plain.summary, rack.summary
    return [
        f"summary line {key}: plain {a.get(key, 0)}, testrack {b.get(key, 0)}"
        for key in SUMMARY_NOTES
        if a.get(key, 0) != b.get(key, 0)
    ]


def differing_ids(plain: Run, rack: Run) -> list[dict[str, Any]]:
    if not (plain.outcomes and rack.outcomes):
        return []
    a, b = plain.outcomes.by_id, rack.outcomes.by_id
    rows = []
    for tid in sorted(set(a) | set(b)):
        pa, pb = a.get(tid, []), b.get(tid, [])
        if pa != pb:
            rows.append({"id": fmt_id(tid), "plain": pa, "testrack": pb})
    return rows


def fmt_outs(outs: list[str]) -> str:
    if not outs:
        return "(absent)"
    c = collections.Counter(outs)
    return ",".join(o if n == 1 else f"{o}x{n}" for o, n in sorted(c.items()))


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Compare real projects' test suites under plain pytest and under '--rack local:2'.",
        epilog="Exit 0: identical (or plain runs fine with --plain-only); 1: a suite differs; "
        "2: a suite could not be prepared/installed/run plainly.",
    )
    ap.add_argument(
        "suites",
        nargs="*",
        default=list(DEFAULT_SUITES),
        help=f"suite names (default: {' '.join(DEFAULT_SUITES)})",
    )
    ap.add_argument(
        "--workdir",
        type=Path,
        default=Path(".realsuites"),
        help="where suites are prepared and reused (default: ./.realsuites)",
    )
    ap.add_argument(
        "--recipes",
        type=Path,
        default=DEFAULT_RECIPES,
        help=f"directory of NAME.sh recipes (default: $TESTRACK_REALSUITES_RECIPES or {DEFAULT_RECIPES})",
    )
    ap.add_argument(
        "--testrack-args",
        default="",
        metavar="ARGS",
        help="extra arguments for the testrack run, one shell-quoted string "
        "(write --testrack-args='-x ...' when it starts with '-')",
    )
    ap.add_argument("--rack", default="local:2", help="value of --rack (default: local:2)")
    ap.add_argument("--plain-only", action="store_true", help="only the plain run; testrack is not installed")
    ap.add_argument(
        "--no-install",
        action="store_true",
        help="do not (re)install testrack into the suites' venvs",
    )
    ap.add_argument(
        "--reprepare",
        action="store_true",
        help="delete the suites' prepared dirs and venvs and run the recipes again",
    )
    ap.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON here")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per pytest run (default: 1800)")
    ap.add_argument(
        "--prepare-timeout",
        type=float,
        default=1800,
        help="seconds per recipe / pip install (default: 1800)",
    )
    args = ap.parse_args(argv)
    args.workdir = args.workdir.resolve()
    args.recipes = args.recipes.resolve()
    try:
        args.extra = ["--rack", args.rack, *shlex.split(args.testrack_args)]
    except ValueError as exc:
        ap.error(f"--testrack-args: {exc}")
    if not args.recipes.is_dir():
        ap.error(f"recipes directory {args.recipes} does not exist (use --recipes)")
    known = sorted(p.stem for p in args.recipes.glob("*.sh"))
    unknown = [s for s in args.suites if s not in known]
    if unknown:
        ap.error(
            f"no recipe for {', '.join(unknown)} in {args.recipes} (known: {', '.join(known) or 'none'})"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    for var in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS"):
        if os.environ.get(var):
            print(f"note: {var}={os.environ[var]!r} is set and applies to both runs", file=sys.stderr)

    results: dict[str, dict[str, Any]] = {}
    rows = []
    status = 0
    for name in args.suites:
        res: dict[str, Any] = {"suite": name}
        results[name] = res
        plain = rack = None
        try:
            p = prepare(name, args)
            res.update(src=str(p.src), venv=str(p.venv))
            if args.plain_only:
                version = testrack_installed(p)
                if version:
                    print(
                        f"  note: testrack {version} is installed in {p.venv}; the plain run loads it",
                        file=sys.stderr,
                    )
            elif not args.no_install:
                install_testrack(p, args)
            plain = run_side(p, "plain", [], args)
            res["plain"] = plain.to_json()
            if plain.problem:
                raise SuiteError(f"plain run unusable: {plain.problem}")
            if not args.plain_only:
                rack = run_side(p, "testrack", args.extra, args)
                res["testrack"] = rack.to_json()
        except SuiteError as exc:
            print(f"ERROR {name}: {exc}", file=sys.stderr)
            res["error"] = str(exc)
            status = 2
        except KeyboardInterrupt:
            print(f"\ninterrupted during {name}", file=sys.stderr)
            return 130

        if plain and plain.outcomes and not plain.problem:
            base = BASELINE.get(name)
            if base is not None:
                expected = {o: base.get(o, 0) for o in OUTCOMES}
                res["plain_matches_readme"] = expected == plain.outcomes.counts
                if expected != plain.outcomes.counts:
                    print(
                        f"  note: {name} plain outcome {fmt_counts(plain.outcomes.counts)} "
                        f"differs from the README's {fmt_counts(expected)}",
                        file=sys.stderr,
                    )
        identical = "n/a" if args.plain_only else "-"
        if plain and rack and not plain.problem:
            diffs = compare(plain, rack)
            res["identical"] = not diffs
            res["differences"] = diffs
            res["differing_ids"] = differing_ids(plain, rack)
            res["notes"] = notes(plain, rack)
            identical = "yes" if not diffs else "NO"
            if diffs:
                status = max(status, 1)
        elif "error" in res:
            identical = "error"
        rows.append(
            (
                name,
                fmt_counts(plain.outcomes.counts if plain and plain.outcomes else None),
                fmt_counts(rack.outcomes.counts if rack and rack.outcomes else None),
                f"{plain.wall:.1f}" if plain else "-",
                f"{rack.wall:.1f}" if rack else "-",
                identical,
            )
        )

    header = ("suite", "plain", "testrack", "plain s", "rack s", "identical")
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    print()
    for r in (header, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print("(p passed, f failed, E error, s skipped, xf xfailed, xp xpassed)")
    for name, res in results.items():
        plain_ids = res.get("plain", {}).get("ids", {})
        bad = [f"{o}: {i}" for o in ("failed", "error", "xpassed") for i in plain_ids.get(o, [])]
        if bad:
            print(f"\n{name}: not passing under plain pytest:")
            for line in bad:
                print(f"  {line}")
        if res.get("notes"):
            print(f"\n{name}: notes (not compared): " + "; ".join(res["notes"]))
        if res.get("differences"):
            print(f"\n{name}: DIFFERS")
            for d in res["differences"]:
                print(f"  {d}")
            ids = res.get("differing_ids", [])
            for row in ids[:50]:
                print(f"  {row['id']}: plain {fmt_outs(row['plain'])}, testrack {fmt_outs(row['testrack'])}")
            if len(ids) > 50:
                print(f"  ... and {len(ids) - 50} more ids (see --json)")

    if args.json:
        payload = {
            "repo": str(REPO_ROOT),
            "workdir": str(args.workdir),
            "recipes": str(args.recipes),
            "plain_only": args.plain_only,
            "testrack_args": args.extra,
            "python": sys.version.split()[0],
            "exit_status": status,
            "finished_at": datetime.datetime.now().isoformat(timespec="seconds"),
            "suites": results,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nJSON written to {args.json}")
    return status


if __name__ == "__main__":
    sys.exit(main())
