"""``testrack last``, ``failing``, ``slowest`` and ``history``: the store, read back;
and ``testrack trust``, which forgets or lists the device identities it pinned.

Each command is a pure function from a store to plain data (what ``--json``
prints) plus a formatter for people. Output is plain text, one fact per line,
so it greps and diffs well.
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testrack.store import Pin, Result, Run, SQLiteStore, Store, StoreError, find_store
from testrack.store.base import FAILING, last_run


class HistoryError(Exception):
    """Nothing to show, and why (the message names the store and the next step)."""


def open_for_reading(path: Path | None, cwd: Path) -> SQLiteStore:
    """The store named with ``--store``, or the nearest ``.testrack/results.sqlite`` above ``cwd``."""
    if path is None:
        path = find_store(cwd)
        if path is None:
            raise HistoryError(
                f"no testrack results in {cwd} or its parents: run pytest with a rack first "
                "(results go to <rootdir>/.testrack/results.sqlite), or name a store with --store PATH"
            )
    elif not path.is_file():
        raise HistoryError(f"--store {path}: no such file; give the path of a results.sqlite")
    try:
        return SQLiteStore(path)
    except StoreError as exc:
        raise HistoryError(str(exc)) from None


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
    }


# ---------------------------------------------------------------------------------- last


def last(store: Store) -> dict[str, Any]:
    run = _last(store)
    results = store.results(run.id)
    devices: dict[str, Counter[str]] = {}
    for result in results:
        devices.setdefault(result.device, Counter())[result.outcome] += 1
    return {
        "run": _run_dict(run),
        "results": len(results),
        "outcomes": dict(Counter(r.outcome for r in results)),
        "devices": {name: dict(counts) for name, counts in sorted(devices.items())},
    }


def format_last(data: dict[str, Any]) -> list[str]:
    run = data["run"]
    took = f"{run['finished'] - run['started']:.2f} s" if run["finished"] else "did not finish"
    outcome = run["outcome"] or "interrupted (no end recorded)"
    lines = [
        f"run {run['id']}: {_when(run['started'])}, {took}, {run['mode']} mode on {run['rack']}",
        f"command: {run['command']}",
        f"outcome: {outcome}; {data['results']} results: {_counts(data['outcomes'])}",
    ]
    lines += [f"{name}: {_counts(counts)}" for name, counts in data["devices"].items()]
    return lines


def _counts(counts: dict[str, int]) -> str:
    if not counts:
        return "none"
    return ", ".join(f"{n} {o}" for o, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


# ---------------------------------------------------------------------------------- failing


def failing(store: Store) -> dict[str, Any]:
    run = _last(store)
    failed = [r for r in store.results(run.id) if r.outcome in FAILING]
    return {"run": _run_dict(run), "failing": [_result_dict(r) for r in failed]}


def format_failing(data: dict[str, Any]) -> list[str]:
    rows = data["failing"]
    if not rows:
        return [f"nothing failed in run {data['run']['id']}"]
    lines = [f"{len(rows)} failing in run {data['run']['id']} (rerun them with pytest --rack-failed):"]
    for row in rows:
        why = f": {row['message']}" if row["message"] else ""
        lines.append(f"{row['nodeid']} on {row['device']}: {row['outcome']}{why}")
    return lines


# ---------------------------------------------------------------------------------- slowest


def slowest(store: Store, count: int) -> dict[str, Any]:
    run = _last(store)
    results = sorted(store.results(run.id), key=lambda r: r.duration, reverse=True)[:count]
    return {"run": _run_dict(run), "slowest": [_result_dict(r) for r in results]}


def format_slowest(data: dict[str, Any]) -> list[str]:
    rows = data["slowest"]
    width = max((len(r["nodeid"]) for r in rows), default=0)
    lines = [f"slowest tests of run {data['run']['id']}:"]
    lines += [f"{r['duration']:9.3f} s  {r['nodeid'].ljust(width)}  {r['device']}" for r in rows]
    return lines


# ---------------------------------------------------------------------------------- history


def history(store: Store, nodeid: str, limit: int) -> dict[str, Any]:
    rows = store.history(nodeid, limit)
    if not rows:
        known = _similar(store, nodeid)
        hint = f"; did you mean {', '.join(known)}?" if known else "; give the node id as pytest -v prints it"
        raise HistoryError(f"no recorded result for {nodeid}{hint}")
    return {
        "nodeid": nodeid,
        "results": [dict(_result_dict(r), run=run.id, run_started=run.started) for run, r in rows],
    }


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
    lines = [f"{data['nodeid']}: {len(rows)} results, {_counts(dict(outcomes))}"]
    for row in rows:
        lines.append(
            f"run {row['run']:>4}  {_when(row['run_started'])}  {row['device']:<16} "
            f"{row['outcome']:<9} {row['duration']:8.3f} s"
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
