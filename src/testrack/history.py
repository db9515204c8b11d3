"""``testrack last``, ``failing``, ``slowest`` and ``history``: the store, read back;
and ``testrack trust``, which forgets or lists the device identities it pinned.

Each command is a pure function from a store to plain data (what ``--json``
prints) plus a formatter for people. Output is plain text, one fact per line,
so it greps and diffs well.
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from testrack.store import DEFAULT_PATH, Pin, Result, Run, SQLiteStore, Store, StoreError, find_store
from testrack.store.base import EnvironmentRecord, Trouble, failing_results, last_run
from testrack.store.sqlite import describe


class HistoryError(Exception):
    """Nothing to show, and why (the message names the store and the next step)."""


def open_for_reading(path: Path | str | None, cwd: Path, *, write: bool = False) -> Store:
    """The store named with ``--store``, or the nearest ``.testrack/results.sqlite`` above ``cwd``.

    Opened read-only (``testrack last`` works on a store this user may not write) unless
    ``write`` (``testrack trust DEVICE``). A store from an older testrack is brought up to date
    first when this user may write it; the next run would do the same.
    """
    if isinstance(path, str):  # a postgresql:// URL (see testrack.store.location)
        from testrack.store.postgres import PostgresStore

        try:
            return PostgresStore(path)
        except StoreError as exc:
            raise HistoryError(str(exc).replace("--rack-store", "--store")) from None
    given = path is not None
    if path is None:
        path = find_store(cwd)
        if path is None:
            raise HistoryError(
                f"no testrack results in {cwd} or its parents: run pytest with a rack first "
                "(results go to <rootdir>/.testrack/results.sqlite), or name a store with --store PATH"
            )
    elif path.is_dir():
        inside = path / DEFAULT_PATH
        what = f"--store {inside}" if inside.is_file() else "the path of a results store file"
        raise HistoryError(f"--store {path} is a directory; give {what}")
    elif not path.is_file():
        raise HistoryError(f"--store {path}: no such file; give the path of a results.sqlite")
    try:
        if write:
            return SQLiteStore(path, make_directory=False)
        try:
            return SQLiteStore(path, read_only=True)
        except StoreError as exc:
            if exc.trouble is not Trouble.OLDER:
                raise
            try:
                SQLiteStore(path, make_directory=False).close()  # migrates it
            except StoreError as cannot:
                if cannot.trouble is not Trouble.READ_ONLY:
                    raise
                raise HistoryError(
                    f"{describe(Trouble.OLDER, path, exc.cause)}, and this user cannot write it "
                    f"({cannot.cause}), so it cannot be brought up to date; run pytest (or this command) "
                    "once as a user who can write it"
                ) from None
            return SQLiteStore(path, read_only=True)
    except StoreError as exc:
        raise HistoryError(store_problem(exc, given)) from None


def store_problem(exc: StoreError, given: bool = True) -> str:
    """What the ``testrack`` commands say about a store they cannot use: the cause and the fix,
    naming their own option (``--store``). ``given``: the user named the file."""
    path = Path(exc.path) if exc.path else Path("results.sqlite")
    what = describe(exc.trouble, path, exc.cause)
    match exc.trouble:
        case Trouble.DAMAGED:
            aside = f"{path}.damaged"
            fix = (
                f"move it aside (mv {path} {aside}; sqlite3 {aside} .recover may rescue its history): "
                "the next pytest run starts a new store"
            )
        case Trouble.NOT_A_STORE if given:
            what = f"--store {path} is not a testrack results store ({exc.cause})"
            fix = "give the path of a results store (a run keeps it in <rootdir>/.testrack/results.sqlite)"
        case Trouble.NOT_A_STORE:
            fix = "move it away (the next pytest run starts a new store there), or name one with --store PATH"
        case Trouble.READ_ONLY:
            fix = "this command changes the store: run it as a user who can write it, or make it writable"
        case Trouble.UNREADABLE:
            fix = "make it readable for this user, or run this as its owner"
        case Trouble.NEWER:
            fix = "upgrade testrack to read it"
        case _:
            fix = "name another store with --store PATH"
    return f"{what}; {fix}"


def _last(store: Store) -> Run:
    run = last_run(store)
    if run is None:
        raise HistoryError("the store holds no run yet: run pytest with a rack first")
    return run


def resolve_run(store: Store, spec: str | int | None = "last") -> Run:
    """The run a RUN argument names: an integer is the store's run id, ``last`` (or None) the
    newest run, any other text a run's uid (the ``testrunuid``; a shared run's id later)."""
    if spec is None or spec == "last":
        return _last(store)
    text = str(spec).strip()
    runs = store.runs()
    if text.isdigit():
        for run in runs:
            if run.id == int(text):
                return run
        # A uid is hex: its start may be all digits (about 2 % of uids, for 8 characters).
        digits = [run for run in runs if len(text) >= 6 and run.uid.startswith(text)]
        if len(digits) == 1:
            return digits[0]
        newest = runs[0].id if runs else None
        hint = f"runs are numbered 1 to {newest}" if newest else "the store holds no run yet"
        raise HistoryError(f"no run {text} in the store ({hint}); `testrack last` shows the newest")
    matches = [run for run in runs if run.uid == text or (len(text) >= 6 and run.uid.startswith(text))]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise HistoryError(f"run {text!r} is ambiguous ({len(matches)} runs start with it); give more of it")
    raise HistoryError(f"no run {text!r} in the store: give a run number, `last`, or a run's uid")


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return datetime.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")


def _run_dict(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "uid": run.uid,
        "started": run.started,
        "finished": run.finished,
        "mode": run.mode,
        "rack": run.rack,
        "command": run.command,
        "outcome": run.outcome,
        "revision": run.revision,
        "seed": run.seed,
    }


def _result_dict(result: Result) -> dict[str, Any]:
    return {
        "nodeid": result.nodeid,
        "device": result.device,
        "worker": result.worker,
        "outcome": result.outcome,
        "duration": round(result.duration, 6),
        "started": result.started,
        "stopped": result.stopped,
        "position": result.position,
        "message": result.message,
        "role": result.role,
    }


# ---------------------------------------------------------------------------------- last


def last(store: Store, run: str | None = None) -> dict[str, Any]:
    """The run ``run`` names (default: the newest), its outcome and its results per device."""
    found = resolve_run(store, run)
    results = store.results(found.id)
    devices: dict[str, Counter[str]] = {}
    for result in results:
        devices.setdefault(result.device, Counter())[result.outcome] += 1
    outcomes = outcomes_once(results)
    return {
        "run": _run_dict(found),
        "results": sum(outcomes.values()),
        "outcomes": dict(outcomes),
        "devices": {name: dict(counts) for name, counts in sorted(devices.items())},
        "environments": {
            e.name: {"implementation": e.implementation, "version": e.version, "installed": e.installed}
            for e in store.environments(found.id)
        },
    }


def outcomes_once(results: Iterable[Result]) -> Counter[str]:
    """Outcomes as pytest counts them: a test on several devices is a result on each of its
    devices (one attempt: same worker and times), counted once."""
    return Counter({(r.nodeid, r.worker, r.started, r.stopped): r.outcome for r in results}.values())


def format_last(data: dict[str, Any]) -> list[str]:
    run = data["run"]
    took = f"{run['finished'] - run['started']:.2f} s" if run["finished"] else "did not finish"
    lines = [
        f"run {run['id']}: {_when(run['started'])}, {took}, {run['mode']} mode on {run['rack']}",
        f"command: {run['command']}",
        f"outcome: {run_outcome(run['outcome'])}; {plural(data['results'], 'result')}: "
        f"{counts(data['outcomes'])}",
    ]
    if run.get("seed") is not None:  # what repeats its order
        lines.insert(2, f"random order, seed {run['seed']}: pytest --rack-seed {run['seed']} runs it again")
    environments = data.get("environments", {})
    for name, per_device in data["devices"].items():
        lines.append(f"{name}{environment_text(environments.get(name))}: {counts(per_device)}")
    return lines


#: pytest's exit codes, by the name a run's outcome is stored under, in words.
_EXIT_WORDS = {
    "ok": ("passed", 0),
    "tests_failed": ("tests failed", 1),
    "interrupted": ("interrupted", 2),
    "internal_error": ("internal error", 3),
    "usage_error": ("usage error", 4),
    "no_tests_collected": ("no tests collected", 5),
}


def run_outcome(outcome: str | None) -> str:
    """A run's stored outcome in words, with pytest's exit code."""
    if outcome is None:
        return "did not finish (no end recorded: killed, or still running)"
    if outcome in _EXIT_WORDS:
        words, code = _EXIT_WORDS[outcome]
        return f"{words} (exit code {code})"
    return outcome.replace("_", " ")


#: The order and words of pytest's summary line (``KNOWN_TYPES`` in ``_pytest/terminal.py``),
#: then testrack's own outcomes; anything else follows in alphabetical order.
_ORDER = (
    "failed", "passed", "skipped", "deselected", "xfailed", "xpassed", "warnings", "error",
    "crashed", "timeout", "unmatched", "device_error",
)  # fmt: skip
_NOUNS = {"error": "error", "warnings": "warning", "device_error": "device error"}
_WORDS = {"timeout": "timed out"}


def counts(by_outcome: dict[str, int]) -> str:
    """``{"passed": 670, "failed": 1}`` as pytest says it: ``1 failed, 670 passed``."""
    if not by_outcome:
        return "none"
    rank = {name: i for i, name in enumerate(_ORDER)}
    ordered = sorted(by_outcome.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))
    parts = []
    for outcome, count in ordered:
        if outcome in _NOUNS:
            parts.append(plural(count, _NOUNS[outcome]))
        else:
            parts.append(f"{count} {_WORDS.get(outcome, outcome)}")
    return ", ".join(parts)


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``1 test``, ``2 tests`` (``many``: the plural when it is not noun + s)."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"


# ---------------------------------------------------------------------------------- failing


def failing(store: Store) -> dict[str, Any]:
    """Every (test, device) pair still failing: its latest result on that device, over all runs,
    is a failure. ``run`` is the newest run; each row says the run it last failed in."""
    run = _last(store)
    rows = [dict(_result_dict(r), run=r.run_id) for r in failing_results(store)]
    return {"run": _run_dict(run), "failing": rows}


def format_failing(data: dict[str, Any]) -> list[str]:
    rows = data["failing"]
    if not rows:
        return [
            f"nothing is failing: every test passed or was skipped where it last ran (newest run: "
            f"{data['run']['id']})"
        ]
    tests = len({row["nodeid"] for row in rows})
    devices = len({row["device"] for row in rows})
    lines = [
        f"{plural(len(rows), 'failing result')}: {plural(tests, 'test')} on {plural(devices, 'device')}, "
        "each failing until it passes there (rerun them with pytest --rack-failed):"
    ]
    for row in rows:
        why = f": {row['message']}" if row["message"] else ""
        outcome = _WORDS.get(row["outcome"], row["outcome"])
        lines.append(f"{row['nodeid']} on {row['device']}: {outcome} in run {row['run']}{why}")
    return lines


# ---------------------------------------------------------------------------------- slowest


def slowest(store: Store, count: int) -> dict[str, Any]:
    run = _last(store)
    results = sorted(store.results(run.id), key=lambda r: r.duration, reverse=True)[:count]
    return {"run": _run_dict(run), "slowest": [_result_dict(r) for r in results]}


def format_slowest(data: dict[str, Any]) -> list[str]:
    rows = data["slowest"]
    width = max((len(r["nodeid"]) for r in rows), default=0)
    lines = [f"slowest {plural(len(rows), 'test')} of run {data['run']['id']}:"]
    lines += [f"{r['duration']:9.3f} s  {r['nodeid'].ljust(width)}  {r['device']}" for r in rows]
    return lines


# ---------------------------------------------------------------------------------- history


def history(store: Store, nodeid: str, limit: int) -> dict[str, Any]:
    rows = store.history(nodeid, limit)
    if not rows:
        known = _similar(store, nodeid)
        hint = f"; did you mean {', '.join(known)}?" if known else "; give the node id as pytest -v prints it"
        raise HistoryError(f"no recorded result for {nodeid}{hint}")
    environments: dict[int, dict[str, EnvironmentRecord]] = {}
    for run, _ in rows:
        if run.id not in environments:
            environments[run.id] = {e.name: e for e in store.environments(run.id)}
    return {
        "nodeid": nodeid,
        "results": [
            dict(
                _result_dict(r),
                run=run.id,
                run_started=run.started,
                environment=_environment_dict(environments[run.id].get(r.device)),
            )
            for run, r in rows
        ],
    }


def _environment_dict(env: EnvironmentRecord | None) -> dict[str, str] | None:
    """Which interpreter and which packages ran a result (an environment's, else None)."""
    if env is None:
        return None
    return {"implementation": env.implementation, "version": env.version, "installed": env.installed}


def environment_text(env: dict[str, str] | None) -> str:
    return f" ({env['implementation']} {env['version']}, packages {env['installed']})" if env else ""


def _similar(store: Store, nodeid: str) -> Sequence[str]:
    name = nodeid.split("::")[-1]
    seen: dict[str, None] = {}
    for run in store.runs(limit=3):
        for result in store.results(run.id):
            if name and name in result.nodeid:
                seen[result.nodeid] = None
    return list(seen)[:3]


def format_history(data: dict[str, Any]) -> list[str]:
    rows = data["results"]
    outcomes = Counter(r["outcome"] for r in rows)
    lines = [f"{data['nodeid']}: {plural(len(rows), 'result')}, {counts(dict(outcomes))}"]
    for row in rows:
        where = row["device"] + (f" as {row['role']}" if row.get("role") else "")
        lines.append(
            f"run {row['run']:>4}  {_when(row['run_started'])}  {where:<16} "
            f"{row['outcome']:<9} {row['duration']:8.3f} s{environment_text(row.get('environment'))}"
        )
    return lines


# ---------------------------------------------------------------------------------- trust


def _pin_dict(pin: Pin) -> dict[str, Any]:
    return {"device": pin.device, "identity": pin.identity, "pinned": pin.pinned, "run_id": pin.run_id}


def forget(store: Store, device: str) -> dict[str, Any]:
    """Unpin ``device``: the next run pins the identity it reports then."""
    pin = store.pinned_identity(device)
    if pin is None or not store.forget_identity(device):
        pinned = ", ".join(p.device for p in store.identities()) or "none"
        raise HistoryError(f"no identity is pinned for {device}; pinned devices: {pinned}")
    return {"device": device, "forgot": _pin_dict(pin)}


def format_forget(data: dict[str, Any]) -> list[str]:
    pin = data["forgot"]
    return [
        f"{data['device']}: forgot the pinned identity {pin['identity']} ({_pinned(pin)}); "
        "the next run will pin whatever it reports"
    ]


def pins(store: Store) -> dict[str, Any]:
    return {"pins": [_pin_dict(pin) for pin in store.identities()]}


def format_pins(data: dict[str, Any]) -> list[str]:
    rows = data["pins"]
    if not rows:
        return ["no identity is pinned; the next run pins the identity each device reports"]
    device_width = max(len(row["device"]) for row in rows)
    identity_width = max(len(row["identity"]) for row in rows)
    return [
        f"{row['device'].ljust(device_width)}  {row['identity'].ljust(identity_width)}  {_pinned(row)}"
        for row in rows
    ]


def _pinned(pin: dict[str, Any]) -> str:
    run = f" in run {pin['run_id']}" if pin["run_id"] is not None else ""
    return f"pinned {_when(pin['pinned'])}{run}"
